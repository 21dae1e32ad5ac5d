"""Nursing dashboard: live ward view of MIRAGE alerts with acknowledgement (``mirage dashboard``)."""
