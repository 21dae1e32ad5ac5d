"""Errors raised by the simulators room. Messages name the file, field and offending value."""

from __future__ import annotations

from engine.errors import MirageError


class SimulatorError(MirageError, ValueError):
    """A simulator parameter is invalid (names the parameter and the value)."""


class ScenarioError(SimulatorError):
    """A scenario file is missing, unreadable or invalid. The message starts with the file path."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class SourceError(SimulatorError):
    """A recorded source (WFDB folder, manifest, record) cannot be read (names the path)."""
