"""MIRAGE bedside monitor: the one ``mirage`` command that reaches every room of the project."""

__version__ = "0.1.0"
