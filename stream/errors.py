"""Errors raised by the stream room. Messages carry the offending value (never waveforms)."""

from __future__ import annotations

from engine.errors import MirageError


class WireError(MirageError, ValueError):
    """A message on a topic cannot be decoded or fails validation. ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SettingsError(MirageError, ValueError):
    """A setting (environment, TOML file) is invalid; names the setting and the value."""


class WindowError(MirageError, ValueError):
    """A window cannot be cut (window/hop not a whole number of samples, resampling mismatch)."""


class PolicyError(MirageError, ValueError):
    """Alert-policy settings are inconsistent (names the values)."""


class AuditError(MirageError, ValueError):
    """The audit trail cannot be opened or written (names the database file and the cause)."""
