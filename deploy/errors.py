"""Errors raised by the deploy room."""

from __future__ import annotations

from engine.errors import MirageError


class ServiceError(MirageError, RuntimeError):
    """An embedded service could not be found, started or reached (names which and why)."""
