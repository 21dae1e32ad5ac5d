"""Replay into the real embedded broker: every chunk of every bed arrives, in order per bed; labs too."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from topic_reader import collect

from simulators.scenario import parse_scenario
from stream.core.schema import LabResult, decode_chunk
from stream.settings import Settings

pytestmark = pytest.mark.integration

SCENARIO = {"name": "it", "duration_s": 7.2, "fs": 250, "seed": 5, "beds": 5,
            "labs": {"presentation_s": [-7200, -3600]},
            "bed": [{"id": "bed-a", "territory": "inferior", "mi_onset_s": -900}, {"id": "bed-b", "mi": False}]}


def _settings(services, unique: str) -> Settings:
    from deploy.services import create_topics

    s = Settings(bootstrap_servers=services.bootstrap).replace(topic_chunks=f"chunks-{unique}", topic_labs=f"labs-{unique}")
    create_topics(services.bootstrap, {s.topic_chunks: 3, s.topic_labs: 2})
    return s


async def _consume(settings: Settings, n_chunks: int, n_labs: int, timeout: float = 30.0) -> tuple[list, list]:
    chunks = await collect(settings, settings.topic_chunks, lambda got: len(got) >= n_chunks, timeout)
    labs = await collect(settings, settings.topic_labs, lambda got: len(got) >= n_labs, timeout)
    return chunks, labs


def test_replay_delivers_every_chunk_in_order_per_bed(services, unique) -> None:
    from simulators.cohort import build_cohort
    from stream.tools.replay import replay

    settings = _settings(services, unique)
    sc = parse_scenario(SCENARIO)
    source = build_cohort(sc)  # a second, identical cohort: what the replay must reproduce
    res = asyncio.run(replay(sc, settings, speed=0, chunk_s=0.5))
    assert res.beds == 5 and not res.interrupted
    assert res.samples == sum(b.n_samples for b in source)
    assert res.labs == sum(len(b.labs) for b in source) > 0
    chunks, labs = asyncio.run(_consume(settings, res.chunks, res.labs))
    assert len(chunks) == res.chunks and len(labs) == res.labs
    per_bed: dict[str, list] = {}
    for m in chunks:
        c = decode_chunk(m.value)
        assert m.key == c.bed_id.encode()
        per_bed.setdefault(c.bed_id, []).append(c)
    assert set(per_bed) == {b.bed_id for b in source}
    for b in source:
        cs = per_bed[b.bed_id]  # one partition per key: consumption order is production order
        assert [c.seq for c in cs] == list(range(len(cs)))
        assert cs[-1].end_of_stream and not any(c.end_of_stream for c in cs[:-1])
        assert sum(c.n_samples for c in cs) == b.n_samples
        assert all(n.start_ns == pytest.approx(p.end_ns, abs=2) for p, n in zip(cs, cs[1:]))
        assert cs[0].start_ns == res.start_ns and cs[0].patient_id == b.patient_id
        assert res.per_bed_chunks[b.bed_id] == len(cs)
    sent = sorted((LabResult.from_bytes(m.value) for m in labs), key=lambda r: (r.patient_id, r.reported_ns, r.loinc))
    want = sorted(((b.patient_id, d) for b in source for d in b.labs), key=lambda x: (x[0], x[1].reported_s, x[1].loinc))
    assert [(r.patient_id, r.loinc, r.value) for r in sent] == [(p, d.loinc, d.value) for p, d in want]
    assert all(m.key == LabResult.from_bytes(m.value).patient_id.encode() for m in labs)
    truth = {t.bed_id: t for t in res.truth}
    assert truth["bed-a"].mi and truth["bed-a"].mi_onset_s == -900 and not truth["bed-b"].mi


def test_replay_keeps_real_time_and_stops_on_request(services, unique) -> None:
    from stream.tools.replay import replay

    settings = _settings(services, unique)
    short = parse_scenario({**SCENARIO, "duration_s": 2.0, "beds": 2, "bed": []})
    t0 = time.monotonic()
    res = asyncio.run(replay(short, settings, speed=1.0, chunk_s=0.5))
    assert time.monotonic() - t0 >= 1.8  # paced by the virtual clock, not as fast as possible
    assert res.chunks == 2 * (4 + 1)

    long = parse_scenario({**SCENARIO, "duration_s": 120.0, "beds": 2, "bed": []})

    async def stopped():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)
        return await replay(long, settings, speed=1.0, stop=stop)

    t0 = time.monotonic()
    res = asyncio.run(stopped())
    assert res.interrupted and time.monotonic() - t0 < 10
    assert 0 < res.chunks < 2 * 240


def test_cli_replays_a_simulated_folder(services, unique, tmp_path: Path, capsys) -> None:
    from simulators.cli import simulate_main
    from stream.tools.replay_cli import replay_main

    settings = _settings(services, unique)
    scen = tmp_path / "s.json"
    scen.write_text(json.dumps({**SCENARIO, "duration_s": 3.0, "beds": 2}))
    assert simulate_main(["--scenario", str(scen), "--out", str(tmp_path / "ds"), "--no-plots", "--no-progress"]) == 0
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f'topic_chunks = "{settings.topic_chunks}"\ntopic_labs = "{settings.topic_labs}"\n')
    capsys.readouterr()
    rc = replay_main(["--data", str(tmp_path / "ds"), "--bootstrap", services.bootstrap, "--config", str(cfg), "--speed", "0",
                      "--no-progress", "--truth-out", str(tmp_path / "truth.csv")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["beds"] == 2 and summary["samples"] == 2 * 750 and summary["mi_beds"] == 1
    assert summary["chunks"] == 2 * (6 + 1)
    chunks, labs = asyncio.run(_consume(settings, summary["chunks"], summary["labs"]))
    assert len(chunks) == summary["chunks"] and len(labs) == summary["labs"] > 0
    assert (tmp_path / "truth.csv").read_text().count("\n") == 3
