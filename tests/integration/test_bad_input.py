"""Malformed input of every kind, published to the real chunks and labs topics of a running worker.

Each bad message must reach the dead-letter topic unchanged (same key, same value) with its
reason in the ``mirage-reason`` header, the dead-letter counter must count it (the worker's
stats and Prometheus ``mirage_deadletters_total{reason=...}``), and beds sending good data in
between must be unaffected: every one of their windows is scored and their alerts come out.

Kinds tried (docs/RELIABILITY.md has the table with the measured outcome):
empty, garbage, truncated, future format version, unknown flags, zero / too many / inconsistent
lead counts, NaN / Inf / zero / absurd sampling rates, a rate the window grid cannot use, NaN /
Inf / negative gains, absurd sample counts, a message over the size limit, duplicate lead names,
non-printable bed ids; labs that are not JSON, not an object, miss a field, carry a string value,
an unknown LOINC code, an unknown unit, NaN / Infinity / implausible values, or are over 64 KB.
Duplicate and out-of-order chunks are not poison: they are dropped and counted, not dead-lettered;
NaN samples (a lead off, every lead off) are not poison either: scored, with quality flags.
Chunks stamped decades away from the wall clock (1970, 2199) are in a separate test: reason
``bad_timestamp`` (more than 30 days from the worker's clock; stream/worker/app.py MAX_CLOCK_SKEW_S).
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
from typing import Any

import numpy as np
import pytest
from test_faults import collect, metric, scrape

from engine.config import PRESETS
from stream.core.schema import Alert, EcgChunk, encode_chunk
from stream.settings import Settings

pytestmark = [pytest.mark.integration]

CFG = PRESETS["tiny"]
FS = 500
N = 500
LEADS8 = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
LIMIT = 256 * 1024  # max_message_bytes of this worker (the broker takes 1 MB)


def _chunk(bed: str = "bed-x", seq: int = 0, t0: int = 0, leads: tuple[str, ...] = LEADS8, n: int = N, fs: float = FS,
           amp: float = 0.3, missing: tuple[str, ...] = ()) -> bytes:
    t = np.arange(n) / fs
    x = amp * np.sin(2 * np.pi * 5 * (t + seq))[None, :] * np.linspace(0.5, 1.5, len(leads))[:, None]
    for lead in missing:  # NaN on the wire = the missing-sample code (lead off)
        x[leads.index(lead)] = np.nan
    return encode_chunk(EcgChunk(bed, f"pat-{bed}", seq, t0 + int(seq * n / fs * 1e9), fs, leads, x.astype(np.float32)))


def _patch(data: bytes, fmt: str, offset: int, value: Any) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def bad_chunks(t0: int) -> list[tuple[str, bytes, str]]:
    """(name, message value, expected dead-letter reason). Header offsets: stream/core/schema.py."""
    ok = _chunk("bed-poison", 0, t0)
    dup = _chunk("bed-poison", 0, t0, leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V5"))
    rng = np.random.default_rng(5)
    return [
        ("empty", b"", "truncated"),
        ("garbage", rng.integers(0, 256, 200, dtype=np.uint8).tobytes(), "bad_magic"),
        ("truncated", ok[:-7], "bad_length"),
        ("future_version", _patch(ok, "<B", 4, 2), "bad_version"),
        ("unknown_flags", _patch(ok, "<B", 5, 0x80), "bad_flags"),
        ("zero_leads", _patch(ok, "<B", 6, 0), "bad_lead_count"),
        ("seventeen_leads", _patch(ok, "<B", 6, 17), "bad_lead_count"),
        ("lead_count_disagrees", _patch(ok, "<B", 6, 7), "bad_length"),
        ("rate_nan", _patch(ok, "<f", 8, math.nan), "bad_rate"),
        ("rate_inf", _patch(ok, "<f", 8, math.inf), "bad_rate"),
        ("rate_zero", _patch(ok, "<f", 8, 0.0), "bad_rate"),
        ("rate_absurd", _patch(ok, "<f", 8, 1e6), "bad_rate"),
        ("rate_off_grid", _chunk("bed-odd", 0, t0, fs=333.3, n=333), "unsupported_rate"),
        ("gain_nan", _patch(ok, "<f", 12, math.nan), "bad_gain"),
        ("gain_inf", _patch(ok, "<f", 12, math.inf), "bad_gain"),
        ("gain_negative", _patch(ok, "<f", 12, -1.0), "bad_gain"),
        ("samples_absurd", _patch(ok, "<I", 32, 50_000_000), "too_many_samples"),
        ("over_size_limit", _chunk("bed-huge", 0, t0, leads=LEADS8 + ("III", "aVR", "aVL", "aVF"), n=12_000), "too_large"),
        ("duplicate_leads", dup, "duplicate_lead"),
        ("bed_id_control_char", ok.replace(b"bed-poison", b"bed-\x07oison", 1), "bad_id"),
    ]


def bad_labs() -> list[tuple[str, bytes, str]]:
    def lab(**kw: Any) -> bytes:
        base = {"patient_id": "pat-bad", "loinc": "89579-7", "value": 12.0, "unit": "ng/L", "observed_ns": 1}
        base.update(kw)
        return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()

    return [
        ("lab_not_json", b"troponin high!", "bad_json"),
        ("lab_not_object", b"[1, 2, 3]", "bad_json"),
        ("lab_missing_field", lab(observed_ns=...), "missing_field"),
        ("lab_string_value", lab(value="high"), "bad_field"),
        ("lab_unknown_loinc", lab(loinc="0000-0"), "bad_lab"),
        ("lab_unknown_unit", lab(unit="furlong"), "bad_lab"),
        ("lab_nan", lab(value=math.nan), "bad_lab"),  # json.dumps writes NaN
        ("lab_infinity", lab(value=math.inf), "bad_lab"),
        ("lab_implausible", lab(value=-5.0), "bad_lab"),
        ("lab_over_64k", lab(unit="ng/L" + " " * 70_000), "too_large"),
    ]


@pytest.fixture(scope="module")
def live(services, tmp_path_factory: pytest.TempPathFactory):
    """One real worker (tiny random-init checkpoint, threshold 0: every bed alerts) for this module."""
    import uuid

    import torch

    from deploy.services import create_topics, free_port
    from engine.checkpoint import save_checkpoint
    from engine.model import Mirage
    from stream.tools.demo import WorkerProcess

    tmp = tmp_path_factory.mktemp("bad-input")
    torch.manual_seed(0)
    ckpt = tmp / "tiny.pt"
    save_checkpoint(ckpt, Mirage(CFG), CFG, threshold=0.0, metrics={})
    u = uuid.uuid4().hex[:8]
    s = Settings(bootstrap_servers=services.bootstrap, redis_url=services.redis_url, topic_chunks=f"chunks-{u}",
                 topic_labs=f"labs-{u}", topic_alerts=f"alerts-{u}", topic_deadletter=f"dl-{u}", consumer_group=f"g-{u}",
                 max_batch=8, cooldown_s=0.0, checkpoint=str(ckpt), max_message_bytes=LIMIT, metrics_port=free_port())
    create_topics(services.bootstrap, {s.topic_chunks: 2, s.topic_labs: 1, s.topic_alerts: 1, s.topic_deadletter: 1})
    worker = WorkerProcess(s, tmp / "w")
    try:
        asyncio.run(worker.wait_ready(120))
        yield s, worker
    finally:
        worker.stop()


async def test_every_malformed_message_is_dead_lettered_with_its_reason_and_good_beds_carry_on(live) -> None:
    from aiokafka import AIOKafkaProducer

    s, worker = live
    t0 = time.time_ns()
    chunks, labs = bad_chunks(t0), bad_labs()
    before = worker.read()
    good = ("bed-good-a", "bed-good-b")
    # NaN samples are not poison: a lead off (V3) or every lead off flows on with quality flags
    nan_beds = {"bed-nan-v3": ("V3",), "bed-nan-all": LEADS8}
    prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all", max_request_size=1024 * 1024)
    await prod.start()
    try:
        bad_iter = iter(chunks)
        for seq in range(14):
            for bed in good:
                await prod.send(s.topic_chunks, _chunk(bed, seq, t0), key=bed.encode())
            for bed, missing in nan_beds.items():
                await prod.send(s.topic_chunks, _chunk(bed, seq, t0, missing=missing), key=bed.encode())
            # poison in between good chunks, on the good beds' keys (same partitions) and others
            for _ in range(2):
                item = next(bad_iter, None)
                if item is not None:
                    key = good[seq % 2] if seq % 3 else item[0]
                    await prod.send(s.topic_chunks, item[1], key=key.encode() if isinstance(key, str) else key)
            if seq == 6:  # a duplicate and an out-of-order chunk: dropped and counted, not poison
                await prod.send(s.topic_chunks, _chunk(good[0], 6, t0), key=good[0].encode())
                await prod.send(s.topic_chunks, _chunk(good[0], 2, t0), key=good[0].encode())
        for name, value, _ in labs:
            await prod.send(s.topic_labs, value, key=name.encode())
        await prod.flush()
        expected = len(chunks) + len(labs)
        dls = await collect(s, s.topic_deadletter, lambda xs: len(xs) >= expected, 90)
        alerts = await collect(s, s.topic_alerts, lambda xs: {a.bed_id for a in map(Alert.from_bytes, (x.value for x in xs))
                                                              if a.alert_type == "mi"} >= set(good) | {"bed-nan-v3"}, 60)
        deadline = time.monotonic() + 30
        while worker.read().get("windows", 0) - before.get("windows", 0) < (len(good) + len(nan_beds)) * 3:
            assert time.monotonic() < deadline, worker.read()
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.2)
        st = worker.read()
        text = await scrape(s.metrics_port)
    finally:
        await prod.stop()
    assert worker.proc.poll() is None, "a malformed message stopped the worker"
    # every bad message is there once, byte for byte, with its reason and source topic
    by_value: dict[bytes, Any] = {bytes(r.value or b""): r for r in dls}
    assert len(dls) == expected, [dict(r.headers).get("mirage-reason") for r in dls]
    reasons: dict[str, int] = {}
    for name, value, reason in chunks + labs:
        rec = by_value.get(value)
        assert rec is not None, f"{name} never reached the dead-letter topic"
        h = dict(rec.headers)
        assert h["mirage-reason"].decode() == reason, (name, h["mirage-reason"], h["mirage-detail"])
        src = s.topic_labs if name.startswith("lab_") else s.topic_chunks
        assert h["mirage-source-topic"].decode() == src and int(h["mirage-source-offset"]) >= 0
        assert len(h["mirage-detail"]) <= 500
        reasons[reason] = reasons.get(reason, 0) + 1
    # counted: stats and Prometheus, per reason
    assert st["deadletters"] - before.get("deadletters", 0) == expected
    for reason, n in reasons.items():
        assert metric(text, f'mirage_deadletters_total{{reason="{reason}"}}') >= n, reason
    assert metric(text, 'mirage_chunks_total{result="duplicate"}') >= 1
    assert metric(text, 'mirage_chunks_total{result="out_of_order"}') >= 1
    # the good beds: every window (0-4 s starts over 14 s) scored once, in order, and alerted
    for bed in good:
        assert st["scored_seqs"][bed] == [0, 1, 2], (bed, st["scored_seqs"].get(bed))
    mi = [a for a in map(Alert.from_bytes, (x.value for x in alerts)) if a.alert_type == "mi"]
    started = {a.bed_id for a in mi if a.phase == "start"}
    assert set(good) <= started
    # NaN beds: every window scored, a finite probability, the missing lead named on the alert
    for bed in nan_beds:
        assert st["scored_seqs"][bed] == [0, 1, 2], (bed, st["scored_seqs"].get(bed))
    assert all(a.probability is None or math.isfinite(a.probability) for a in mi)
    v3 = [a for a in mi if a.bed_id == "bed-nan-v3" and a.phase == "start"]
    assert v3 and "missing:V3" in v3[0].quality_flags, [a.quality_flags for a in v3]
    print("\nMEASURED bad_input: " + json.dumps({"dead_letters": len(dls), "kinds": len(chunks) + len(labs),
                                                 "reasons": reasons, "good_windows": {b: st["scored_seqs"][b] for b in good}}))


async def test_chunks_stamped_decades_away_are_dead_lettered(live) -> None:
    from aiokafka import AIOKafkaProducer

    s, worker = live
    far = {"bed-1970": 0, "bed-2200": int(7.25e18)}  # Unix epoch; about 2199
    prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all")
    await prod.start()
    try:
        for bed, t0 in far.items():
            await prod.send_and_wait(s.topic_chunks, _chunk(bed, 0, t0), key=bed.encode())
        dls = await collect(s, s.topic_deadletter, lambda xs: {bytes(r.key or b"") for r in xs
                                                               if dict(r.headers)["mirage-reason"] == b"bad_timestamp"} >= {b.encode() for b in far}, 20)
    finally:
        await prod.stop()
    keys = {bytes(r.key or b"") for r in dls if dict(r.headers)["mirage-reason"] == b"bad_timestamp"}
    assert keys == {b.encode() for b in far}
