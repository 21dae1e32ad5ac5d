"""The MIRAGE network, one layer per file."""

from engine.model.mirage import Mirage, MirageOutput, count_parameters

__all__ = ["Mirage", "MirageOutput", "count_parameters"]
