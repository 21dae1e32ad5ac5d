"""ST-segment measurement and monitoring (issue #19): ST per lead, its baseline and the ST-change alarm.

Pure cores, no I/O: :func:`measure_st` turns one (12, T) window into an :class:`StMeasurement`;
:class:`StBaseline` keeps a bed's reference ST; :class:`StChangePolicy` turns ST changes into
``st_change`` alarm events. ``mirage measure`` (:mod:`engine.st.cli`) runs them on records.
"""

from engine.st.alarm import KIND_ST_CHANGE, StChangeConfig, StChangeEvent, StChangePolicy, deviating_leads
from engine.st.baseline import StBaseline, StBaselineSettings
from engine.st.measure import DEFAULT_ST, StMeasurement, StSettings, measure_st

__all__ = ["DEFAULT_ST", "KIND_ST_CHANGE", "StBaseline", "StBaselineSettings", "StChangeConfig", "StChangeEvent", "StChangePolicy",
           "StMeasurement", "StSettings", "deviating_leads", "measure_st"]
