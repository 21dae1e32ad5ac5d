"""Signal conditioning: lead mapping, resampling, filtering and quality checks for 12-lead ECG."""

from __future__ import annotations

from engine.signal.filters import DEFAULT_FILTER, FilterSpec, condition
from engine.signal.leads import LeadMap, canonical_lead, derive_limb_leads, ignored_flags, is_standard_lead, map_leads, to_standard_leads
from engine.signal.quality import QualityReport, QualityThresholds, assess, quality_flags
from engine.signal.resample import resample

__all__ = [
    "DEFAULT_FILTER",
    "FilterSpec",
    "LeadMap",
    "QualityReport",
    "QualityThresholds",
    "assess",
    "canonical_lead",
    "condition",
    "derive_limb_leads",
    "ignored_flags",
    "is_standard_lead",
    "map_leads",
    "quality_flags",
    "resample",
    "to_standard_leads",
]
