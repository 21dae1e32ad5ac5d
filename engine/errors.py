"""Errors raised by the engine room. Messages always carry the offending value."""

from __future__ import annotations


class MirageError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(MirageError, ValueError):
    """A configuration value is invalid (names the field and the value)."""


class CheckpointError(MirageError, ValueError):
    """A checkpoint file is missing, corrupt or from an incompatible version (names the file)."""


class SignalError(MirageError, ValueError):
    """An ECG signal cannot be used: wrong shape, unknown lead, bad rate, non-finite values."""


class LabError(MirageError, ValueError):
    """A lab result cannot be used: unknown LOINC code, unit that cannot be converted, bad value."""


class DatasetError(MirageError, ValueError):
    """A dataset folder or manifest is malformed (names the file and the row)."""


class StateError(MirageError, ValueError):
    """A saved state (e.g. a bed's ST baseline) is malformed and cannot be restored (names the field)."""
