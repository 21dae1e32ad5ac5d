"""Scenario files: which beds, which patients, how long, with what noise and labs (TOML or JSON).

A scenario is either a *synthetic cohort* (``beds = N`` drawn from ``[cohort]`` probabilities,
with optional explicit ``[[bed]]`` tables that fix bed by bed) or a *recorded* one (``[recorded]``
pointing at a WFDB folder in PTB-XL layout or with a ``manifest.csv``). Every field, its default
and an example are documented in ``docs/SIMULATORS.md``; the shipped examples live in
``simulators/scenarios/``. Any problem is a :class:`ScenarioError` that names the file.

Parsing is strict: unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from simulators.errors import ScenarioError, SimulatorError
from simulators.labs import LabSchedule
from simulators.mi import CONFOUNDERS, TERRITORIES
from simulators.noise import NoiseSpec

BUILTIN_DIR = Path(__file__).parent / "scenarios"


@dataclass(frozen=True)
class CohortSpec:
    """How random synthetic beds are drawn."""

    mi_prevalence: float = 0.3
    mi_onset_s: tuple[float, float] = (-3600.0, 0.0)  # uniform range, s relative to stream start
    territories: tuple[str, ...] = ("anterior", "inferior", "lateral")
    st_mv: tuple[float, float] = (0.15, 0.35)
    hr_bpm: tuple[float, float] = (55.0, 95.0)
    confounders: dict[str, float] = field(default_factory=dict)  # name -> probability (non-MI beds)


@dataclass(frozen=True)
class LabsSpec:
    """Whether beds get labs, when patients presented, and the draw schedule."""

    enabled: bool = True
    presentation_s: tuple[float, float] = (-7200.0, 0.0)
    schedule: LabSchedule = field(default_factory=LabSchedule)


@dataclass(frozen=True)
class BedSpec:
    """An explicit bed. ``None`` fields are drawn from the cohort like a random bed's."""

    id: str | None = None
    patient_id: str | None = None
    mi: bool | None = None
    territory: str | None = None
    mi_onset_s: float | None = None
    st_mv: float | None = None
    confounders: tuple[str, ...] | None = None
    hr_bpm: float | None = None
    presentation_s: float | None = None
    labs: bool | None = None
    records: tuple[str, ...] = ()  # recorded beds: WFDB record paths (relative to the scenario file)


@dataclass(frozen=True)
class RecordedSpec:
    """Replay recorded WFDB records: a folder (PTB-XL layout or manifest) split over the beds."""

    data: Path
    records: tuple[str, ...] = ()  # subset by record id; empty = all
    per_bed: int = 1  # records concatenated per bed
    loop: bool = False  # repeat a bed's records to fill duration_s
    mi_only: bool = False
    limit: int = 0  # 0 = no limit on records read


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario (see module docstring)."""

    name: str
    path: Path | None = None
    duration_s: float = 60.0
    fs: float = 500.0
    seed: int = 0
    beds: int = 4
    bed_prefix: str = "bed-"
    cohort: CohortSpec = field(default_factory=CohortSpec)
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    labs: LabsSpec = field(default_factory=LabsSpec)
    bed: tuple[BedSpec, ...] = ()
    recorded: RecordedSpec | None = None


def _num(where: str, key: str, v: Any, *, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not (lo <= v <= hi):
        raise SimulatorError(f"{where}{key} = {v!r} must be a number in [{lo}, {hi}]")
    return float(v)


def _range(where: str, key: str, v: Any, *, lo: float = -math.inf, hi: float = math.inf) -> tuple[float, float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        x = _num(where, key, v, lo=lo, hi=hi)
        return (x, x)
    if not isinstance(v, list) or len(v) != 2:
        raise SimulatorError(f"{where}{key} = {v!r} must be a number or a [min, max] pair")
    a, b = (_num(where, key, x, lo=lo, hi=hi) for x in v)
    if a > b:
        raise SimulatorError(f"{where}{key} = {v!r}: min is greater than max")
    return (a, b)


def _strs(where: str, key: str, v: Any, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise SimulatorError(f"{where}{key} = {v!r} must be a list of strings")
    if allowed is not None:
        bad = [x for x in v if x not in allowed]
        if bad:
            raise SimulatorError(f"{where}{key}: unknown value(s) {bad}; choose from {list(allowed)}")
    return tuple(v)


def _check_keys(where: str, table: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SimulatorError(f"{where or 'top level'} must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SimulatorError(f"{where or 'top level: '}unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return table


def _noise(where: str, t: dict[str, Any], base: NoiseSpec) -> NoiseSpec:
    names = {f.name for f in fields(NoiseSpec)}
    _check_keys(where, t, names)
    values: dict[str, Any] = {}
    for k, v in t.items():
        if k == "lead_off_mode":
            values[k] = str(v)
        elif k == "lead_off_s":
            values[k] = _range(where, k, v, lo=0.0)
        else:
            values[k] = _num(where, k, v, lo=0.0)
    return NoiseSpec(**{**base.__dict__, **values})


def _cohort(t: dict[str, Any]) -> CohortSpec:
    w = "[cohort] "
    _check_keys(w, t, {f.name for f in fields(CohortSpec)})
    kw: dict[str, Any] = {}
    if "mi_prevalence" in t:
        kw["mi_prevalence"] = _num(w, "mi_prevalence", t["mi_prevalence"], lo=0.0, hi=1.0)
    if "mi_onset_s" in t:
        kw["mi_onset_s"] = _range(w, "mi_onset_s", t["mi_onset_s"])
    if "territories" in t:
        kw["territories"] = _strs(w, "territories", t["territories"], tuple(TERRITORIES))
        if not kw["territories"]:
            raise SimulatorError(f"{w}territories must not be empty")
    if "st_mv" in t:
        kw["st_mv"] = _range(w, "st_mv", t["st_mv"], lo=0.01, hi=2.0)
    if "hr_bpm" in t:
        kw["hr_bpm"] = _range(w, "hr_bpm", t["hr_bpm"], lo=20.0, hi=250.0)
    if "confounders" in t:
        c = _check_keys("[cohort.confounders] ", t["confounders"], set(CONFOUNDERS))
        kw["confounders"] = {k: _num("[cohort.confounders] ", k, v, lo=0.0, hi=1.0) for k, v in c.items()}
        if sum(kw["confounders"].values()) > 1.0:
            raise SimulatorError(f"[cohort.confounders] probabilities {kw['confounders']} add up to more than 1")
    return CohortSpec(**kw)


def _labs(t: dict[str, Any]) -> LabsSpec:
    w = "[labs] "
    _check_keys(w, t, {"enabled", "presentation_s", "initial_h", "repeat_h", "turnaround_min", "troponin"})
    sched: dict[str, Any] = {}
    if "initial_h" in t:
        sched["initial_h"] = tuple(_num(w, "initial_h", x, lo=0.0) for x in (t["initial_h"] if isinstance(t["initial_h"], list) else [t["initial_h"]]))
    if "repeat_h" in t:
        sched["repeat_h"] = _range(w, "repeat_h", t["repeat_h"], lo=0.1)
    if "turnaround_min" in t:
        sched["turnaround_min"] = _range(w, "turnaround_min", t["turnaround_min"], lo=0.0)
    if "troponin" in t:
        sched["troponin"] = str(t["troponin"])
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SimulatorError(f"{w}enabled = {enabled!r} must be true or false")
    pres = _range(w, "presentation_s", t["presentation_s"]) if "presentation_s" in t else (-7200.0, 0.0)
    return LabsSpec(enabled=enabled, presentation_s=pres, schedule=LabSchedule(**sched))


def _bed(i: int, t: dict[str, Any], base: Path) -> BedSpec:
    w = f"[[bed]] #{i + 1} "
    _check_keys(w, t, {f.name for f in fields(BedSpec)})
    kw: dict[str, Any] = {}
    for k in ("id", "patient_id", "territory"):
        if k in t:
            if not isinstance(t[k], str) or not t[k] or not t[k].isprintable():
                raise SimulatorError(f"{w}{k} = {t[k]!r} must be a non-empty printable string")
            kw[k] = t[k]
    if "territory" in kw and kw["territory"] not in TERRITORIES:
        raise SimulatorError(f"{w}territory = {kw['territory']!r}; choose one of {sorted(TERRITORIES)}")
    for k in ("mi", "labs"):
        if k in t:
            if not isinstance(t[k], bool):
                raise SimulatorError(f"{w}{k} = {t[k]!r} must be true or false")
            kw[k] = t[k]
    if "mi_onset_s" in t:
        kw["mi_onset_s"] = _num(w, "mi_onset_s", t["mi_onset_s"])
    if "presentation_s" in t:
        kw["presentation_s"] = _num(w, "presentation_s", t["presentation_s"])
    if "st_mv" in t:
        kw["st_mv"] = _num(w, "st_mv", t["st_mv"], lo=0.01, hi=2.0)
    if "hr_bpm" in t:
        kw["hr_bpm"] = _num(w, "hr_bpm", t["hr_bpm"], lo=20.0, hi=250.0)
    if "confounders" in t:
        kw["confounders"] = _strs(w, "confounders", t["confounders"], CONFOUNDERS)
    if "records" in t:
        kw["records"] = tuple(str((base / r).resolve()) for r in _strs(w, "records", t["records"]))
    if kw.get("mi") is False and ("territory" in kw or "mi_onset_s" in kw):
        raise SimulatorError(f"{w}has mi = false but sets territory / mi_onset_s")
    return BedSpec(**kw)


def _recorded(t: dict[str, Any], base: Path) -> RecordedSpec:
    w = "[recorded] "
    _check_keys(w, t, {f.name for f in fields(RecordedSpec)})
    if "data" not in t or not isinstance(t["data"], str):
        raise SimulatorError(f"{w}needs data = \"folder\" (PTB-XL layout or a folder with manifest.csv)")
    data = (base / t["data"]).resolve()
    if not data.exists():
        raise SimulatorError(f"{w}data folder {data} does not exist")
    kw: dict[str, Any] = {"data": data}
    if "records" in t:
        kw["records"] = _strs(w, "records", t["records"])
    for k in ("per_bed", "limit"):
        if k in t:
            v = t[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if k == "per_bed" else 0):
                raise SimulatorError(f"{w}{k} = {v!r} must be an integer >= {1 if k == 'per_bed' else 0}")
            kw[k] = v
    for k in ("loop", "mi_only"):
        if k in t:
            if not isinstance(t[k], bool):
                raise SimulatorError(f"{w}{k} = {t[k]!r} must be true or false")
            kw[k] = t[k]
    return RecordedSpec(**kw)


def parse_scenario(data: dict[str, Any], path: Path | None = None, name: str | None = None) -> Scenario:
    """Build a :class:`Scenario` from parsed TOML/JSON data, or raise :class:`SimulatorError`."""
    top = {"name", "duration_s", "fs", "seed", "beds", "bed_prefix", "cohort", "noise", "labs", "bed", "recorded"}
    _check_keys("", data, top)
    base = path.parent if path is not None else Path.cwd()
    kw: dict[str, Any] = {"name": str(data.get("name") or name or (path.stem if path else "scenario")), "path": path}
    if "duration_s" in data:
        kw["duration_s"] = _num("", "duration_s", data["duration_s"], lo=0.5, hi=7 * 24 * 3600)
    if "fs" in data:
        kw["fs"] = _num("", "fs", data["fs"], lo=50.0, hi=10000.0)
    for k, lo in (("seed", 0), ("beds", 0)):
        if k in data:
            v = data[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise SimulatorError(f"{k} = {v!r} must be an integer >= {lo}")
            kw[k] = v
    if "bed_prefix" in data:
        kw["bed_prefix"] = str(data["bed_prefix"])
    if "cohort" in data:
        kw["cohort"] = _cohort(data["cohort"])
    if "noise" in data:
        kw["noise"] = _noise("[noise] ", data["noise"], NoiseSpec())
    if "labs" in data:
        kw["labs"] = _labs(data["labs"])
    if "bed" in data:
        if not isinstance(data["bed"], list):
            raise SimulatorError("bed must be an array of tables ([[bed]])")
        kw["bed"] = tuple(_bed(i, t, base) for i, t in enumerate(data["bed"]))
        ids = [b.id for b in kw["bed"] if b.id]
        if len(set(ids)) != len(ids):
            raise SimulatorError(f"[[bed]] ids are not unique: {ids}")
        kw["beds"] = max(kw.get("beds", 0), len(kw["bed"]))
    if "recorded" in data:
        kw["recorded"] = _recorded(data["recorded"], base)
    if kw.get("beds", Scenario.beds) < 1:
        raise SimulatorError("beds must be >= 1")
    return Scenario(**kw)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file (``.toml`` or ``.json``); a bare name looks in the built-in scenarios.

    Raises:
        ScenarioError: the file is missing, not valid TOML/JSON, or describes an invalid scenario;
            the message starts with the file path.
    """
    p = Path(path)
    if not p.exists() and not p.suffix and (BUILTIN_DIR / f"{p.name}.toml").exists():
        p = BUILTIN_DIR / f"{p.name}.toml"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(p, f"scenario file does not exist (built-in scenarios: {builtin_names()})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(p, f"cannot read scenario file: {exc}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(p, f"not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'}: {exc}") from None
    try:
        return parse_scenario(data, p.resolve())
    except SimulatorError as exc:
        raise ScenarioError(p, str(exc)) from None


def builtin_names() -> list[str]:
    """Names of the shipped scenarios (``quick``, ``ward``, ``demo``)."""
    return sorted(q.stem for q in BUILTIN_DIR.glob("*.toml"))


def scenario_help() -> str:
    """Help text of a ``--scenario`` argument (files or the built-in names)."""
    return f"a scenario file (.toml or .json) or a built-in name ({', '.join(builtin_names())})"


def with_overrides(sc: Scenario, *, fs: float | None = None, duration_s: float | None = None, seed: int | None = None,
                   beds: int | None = None) -> Scenario:
    """``sc`` with the given fields replaced (None keeps the scenario's own value)."""
    changes = {k: v for k, v in (("fs", fs), ("duration_s", duration_s), ("seed", seed), ("beds", beds)) if v is not None}
    return dataclasses.replace(sc, **changes) if changes else sc
