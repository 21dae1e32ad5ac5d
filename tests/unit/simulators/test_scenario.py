"""Scenario files, cohorts, the simulate writer and the replay plan (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.config import LEADS
from simulators.cohort import build_cohort
from simulators.errors import ScenarioError
from simulators.scenario import builtin_names, load_scenario, parse_scenario
from simulators.simulate import simulate
from stream.core.schema import LabResult, decode_chunk
from stream.tools.replay import ReplayPlan, resolve_source, scenario_from_data

SMALL = {"name": "small", "duration_s": 6, "fs": 250, "seed": 3, "beds": 3,
         "labs": {"presentation_s": [-7200, -3600]},
         "bed": [{"id": "b-1", "territory": "inferior", "mi_onset_s": -600}, {"id": "b-2", "mi": False, "confounders": ["lbbb"]}]}


def test_builtin_scenarios_load_and_demo_has_early_mi_confounder_and_labs() -> None:
    assert {"quick", "ward", "demo"} <= set(builtin_names())
    quick = load_scenario("quick")
    assert quick.beds == 4 and quick.duration_s == 60
    ward = load_scenario("ward")
    assert ward.beds == 32 and ward.duration_s == 1800
    demo = build_cohort(load_scenario("demo"))
    truth = [b.truth for b in demo]
    assert len(demo) == 8
    mi = [t for t in truth if t.mi]
    assert len(mi) >= 4 and all(t.mi_onset_s is not None and t.mi_onset_s <= 0 for t in mi)
    assert any(t.confounders and t.confounders[0] in ("lbbb", "early_repol") for t in truth)
    assert all(b.labs and min(d.reported_s for d in b.labs) <= 0 for b in demo)  # results in the record at start


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, needle", [
    ("beds = 2\nduration_s = [", "not valid TOML"),
    ("beds = 2\ncolour = 3\n", "colour"),
    ("[cohort]\nterritories = [\"apical\"]\n", "apical"),
    ("[cohort]\nst_mv = [0.4, 0.1]\n", "min is greater than max"),
    ("duration_s = -5\n", "-5"),
    ("[noise]\npowerline_hz = 55\n", "55"),
    ("[[bed]]\nid = \"a\"\n[[bed]]\nid = \"a\"\n", "not unique"),
    ("[[bed]]\nmi = false\nterritory = \"inferior\"\n", "mi = false"),
    ("[recorded]\ndata = \"nowhere\"\n", "does not exist"),
])
def test_scenario_errors_name_the_file_and_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    msg = str(exc.value)
    assert msg.startswith(str(p)) and needle in msg, msg


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="nope.toml: scenario file does not exist"):
        load_scenario(tmp_path / "nope.toml")


def test_json_scenarios_are_accepted(tmp_path: Path) -> None:
    p = _write(tmp_path, json.dumps(SMALL), "s.json")
    sc = load_scenario(p)
    assert sc.name == "small" and sc.beds == 3 and sc.bed[0].territory == "inferior"


def test_cohort_is_deterministic_and_follows_explicit_beds() -> None:
    a, b = build_cohort(parse_scenario(SMALL)), build_cohort(parse_scenario(SMALL))
    assert [x.truth for x in a] == [y.truth for y in b]
    assert [x.labs for x in a] == [y.labs for y in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.read(500), y.read(500), equal_nan=True)
    t = [x.truth for x in a]
    assert t[0].bed_id == "b-1" and t[0].mi and t[0].territory == "inferior" and t[0].mi_onset_s == -600
    assert t[1].label == "LBBB" and not t[1].mi
    assert t[2].bed_id == "bed-03"
    other = build_cohort(parse_scenario({**SMALL, "seed": 4}))
    assert [x.patient_id for x in other] != [x.patient_id for x in a]


def test_simulate_writes_a_dataset_the_readers_accept(tmp_path: Path) -> None:
    from engine.data.manifest import read_manifest
    from engine.data.wfdb_io import read_record

    sc = parse_scenario(SMALL)
    res = simulate(sc, tmp_path / "out", plots=False)
    assert res.records == 3 and res.mi == 1
    items = read_manifest(tmp_path / "out")
    assert [it.label for it in items] == [1, 0, int(build_cohort(sc)[2].truth.mi)]
    assert items[0].labs  # latest results joined by record
    rec = read_record(items[0].path)
    assert rec.leads == LEADS and rec.fs == 250 and rec.signal.shape == (12, 1500)
    fresh = build_cohort(sc)[0].read(1500)
    assert np.nanmax(np.abs(rec.signal - fresh)) <= 0.0006  # 1 uV quantisation
    # The written folder replays as a recorded source with the same truth and timed labs.
    beds = build_cohort(scenario_from_data(tmp_path / "out"))
    assert [b.truth.mi for b in beds] == [it.label == 1 for it in items]
    assert beds[0].truth.bed_id == "b-1" and beds[0].truth.mi_onset_s == -600
    assert [round(d.reported_s, 3) for d in beds[0].labs] == [round(d.reported_s, 3) for d in build_cohort(sc)[0].labs]


def test_replay_plan_sends_every_sample_in_order_then_end_of_stream() -> None:
    sc = parse_scenario({**SMALL, "duration_s": 3.3, "fs": 333})  # fs * chunk_s is not an integer
    beds = build_cohort(sc)
    plan = ReplayPlan(beds, start_ns=10**18, chunk_s=0.5)
    chunks, labs, k = [], [], 0
    while not plan.done:
        for m in plan.tick(k):
            (chunks if m.kind == "chunk" else labs).append((k, m))
        k += 1
    assert len(chunks) == plan.total_chunks
    by_bed: dict[str, list] = {}
    for _, m in chunks:
        c = decode_chunk(m.value)
        assert m.key.decode() == c.bed_id
        by_bed.setdefault(c.bed_id, []).append(c)
    for b in beds:
        cs = by_bed[b.bed_id]
        assert [c.seq for c in cs] == list(range(len(cs)))
        assert cs[-1].end_of_stream and cs[-1].n_samples == 0 and not any(c.end_of_stream for c in cs[:-1])
        assert sum(c.n_samples for c in cs) == b.n_samples == round(3.3 * 333)
        for prev, nxt in zip(cs, cs[1:]):
            assert nxt.start_ns == pytest.approx(prev.end_ns, abs=2)
        assert cs[0].start_ns == 10**18 and cs[0].leads == LEADS
    want = sum(len(b.labs) for b in beds)
    assert len(labs) == want > 0
    # Results reported before the stream started go out in the first tick, ahead of any chunk.
    assert all(k == 0 for k, m in labs if LabResult.from_bytes(m.value).reported_ns <= 10**18)


def test_resolve_source_accepts_names_files_and_folders(tmp_path: Path) -> None:
    assert resolve_source("quick").name == "quick"
    with pytest.raises(ScenarioError):
        resolve_source(tmp_path / "missing.toml")


def test_ptbxl_folder_as_recorded_source(ptbxl_dir: Path) -> None:
    sc = scenario_from_data(ptbxl_dir, beds=2, per_bed=2, mi_only=True, limit=4)
    beds = build_cohort(sc)
    assert len(beds) == 2 and all(b.truth.mi and b.truth.mi_onset_s == 0.0 for b in beds)
    assert all("+" in b.truth.record for b in beds)
    b = beds[0]
    assert b.n_samples == 2 * 5000 and b.fs == 500
    x = np.concatenate([b.read(3000) for _ in range(4)], axis=1)
    assert x.shape == (12, 10000) and b.read(10).shape == (12, 0)


def test_simulate_cli_reports_scenario_errors_and_writes_output(tmp_path: Path, capsys) -> None:
    from simulators.cli import simulate_main

    bad = _write(tmp_path, "beds = \"four\"\n")
    assert simulate_main(["--scenario", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "'four'" in err
    good = _write(tmp_path, json.dumps({**SMALL, "duration_s": 2}), "g.json")
    assert simulate_main(["--scenario", str(good), "--out", str(tmp_path / "o"), "--beds", "2", "--no-plots", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["records"] == 2 and summary["samples"] == 2 * 500
    assert (tmp_path / "o" / "manifest.csv").read_text().count("\n") == 3


def test_cli_help_explains(capsys) -> None:
    from simulators.cli import simulate_main
    from stream.tools.replay_cli import replay_main

    for fn in (replay_main, simulate_main):
        with pytest.raises(SystemExit) as exc:
            fn(["--help"])
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--speed" in out and "Ctrl-C" in out and "manifest.csv" in out
