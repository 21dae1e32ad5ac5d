"""No patient identifiers and no waveforms in the logs, even at DEBUG.

A real ``mirage worker`` runs with ``MIRAGE_LOG_LEVEL=DEBUG`` (our loggers at DEBUG; the Kafka
clients at WARNING, as the CLI configures them), and ``mirage -v replay`` publishes the ``quick``
scenario (4 beds with their labs) through it; on top, canary messages carry known patient ids
down every other path: a good bed that is scored and alerts, a chunk at a rate the grid cannot
use, a chunk the decoder rejects and a lab the parser rejects (dead letters), a lab that is
stored. Then every line of both processes' output is scanned for

* every patient id (from the replay's ground truth and the canaries), in any case;
* bed-patient pairs (a bed id and its patient id on one line);
* waveform-looking runs of numbers (16 or more numbers in a row) and numpy array reprs.

HIPAA / GDPR: logs are shipped to places that are not access-controlled like the chart; the
pseudonymous patient id is still personal data, and the waveform is the record itself.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_faults import collect, make_settings, started_beds, tiny_checkpoint  # noqa: F401 - fixture

from stream.core.schema import EcgChunk, LabResult, encode_chunk

pytestmark = [pytest.mark.integration]

LEADS8 = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
CANARY = {"good": "pat-CANARY-7731", "odd_rate": "pat-CANARY-5150", "poison": "pat-CANARY-4242", "lab": "pat-CANARY-9001",
          "bad_lab": "pat-CANARY-3117"}
NUMBER_RUN = re.compile(r"(?:[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?[\s,;]+){15,}[-+]?\d")


def _chunk(bed: str, patient: str, seq: int, t0: int, fs: float = 500.0, n: int = 500) -> bytes:
    t = np.arange(n) / fs + seq
    x = (0.3 * np.sin(2 * np.pi * 5 * t))[None, :] * np.linspace(0.5, 1.5, 8)[:, None]
    return encode_chunk(EcgChunk(bed, patient, seq, t0 + int(seq * n / fs * 1e9), fs, LEADS8, x.astype(np.float32)))


async def test_debug_logs_hold_no_patient_id_pair_or_waveform(services, unique: str, tmp_path: Path, tiny_checkpoint: str) -> None:  # noqa: F811 - the imported fixture
    from aiokafka import AIOKafkaProducer

    from stream.tools.demo import WorkerProcess, settings_env

    s = await make_settings(services.bootstrap, services.redis_url, unique, partitions=2, checkpoint=tiny_checkpoint)
    worker = WorkerProcess(s, tmp_path / "w", env={"MIRAGE_LOG_LEVEL": "DEBUG"})
    prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all")
    await prod.start()
    truth_csv = tmp_path / "truth.csv"
    t0 = time.time_ns()
    try:
        await worker.wait_ready(120)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIRAGE_")}
        env.update(settings_env(s))
        replay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mirage", "-v", "replay", "--scenario", "quick", "--duration", "24", "--speed", "0",
            "--truth-out", str(truth_csv), "--no-progress", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        # canaries down every path while the replay runs
        lab = LabResult(CANARY["lab"], "89579-7", 40.0, "ng/L", t0 - 60 * 10**9)
        await prod.send(s.topic_labs, lab.to_bytes(), key=CANARY["lab"].encode())
        bad_lab = lab.to_bytes().replace(b'"ng/L"', b'"furlong"').replace(CANARY["lab"].encode(), CANARY["bad_lab"].encode())
        await prod.send(s.topic_labs, bad_lab, key=CANARY["bad_lab"].encode())
        await prod.send(s.topic_chunks, _chunk("bed-odd", CANARY["odd_rate"], 0, t0, fs=333.3, n=333), key=b"bed-odd")
        await prod.send(s.topic_chunks, _chunk("bed-poison", CANARY["poison"], 0, t0)[:-3], key=b"bed-poison")
        for seq in range(12):
            await prod.send(s.topic_chunks, _chunk("bed-canary", CANARY["good"], seq, t0), key=b"bed-canary")
        await prod.flush()
        out, _ = await asyncio.wait_for(replay.communicate(), 120)
        assert replay.returncode == 0, out.decode(errors="replace")[-2000:]
        with truth_csv.open() as fh:
            truth = [(row["bed_id"], row["patient_id"]) for row in csv.DictReader(fh)]
        beds = {b for b, _ in truth} | {"bed-canary"}
        alerts = await collect(s, s.topic_alerts, lambda xs: started_beds(xs) >= beds, 90)
        await asyncio.sleep(1.5)
        st = worker.read()
    finally:
        await prod.stop()
        await asyncio.to_thread(worker.stop)
    assert started_beds(alerts) >= beds  # tiny model with threshold 0: everything went all the way through
    assert st["deadletters"] >= 3 and st["labs"] >= 1
    logs = worker.logfile.read_text(errors="replace") + "\n" + out.decode(errors="replace")
    lines = logs.splitlines()
    assert any(" DEBUG " in ln for ln in lines), "DEBUG logging was not on"
    assert any("alert mi start" in ln for ln in lines) and any("dead letter" in ln for ln in lines)
    patients = {p for _, p in truth} | set(CANARY.values())
    assert len(patients) == len(truth) + len(CANARY) and all(len(p) >= 6 for p in patients)
    lowered = logs.lower()
    leaks = sorted(p for p in patients if p.lower() in lowered)
    assert not leaks, [ln for ln in lines if any(p.lower() in ln.lower() for p in leaks)][:5]
    pairs = [(b, p) for b, p in truth + [("bed-canary", CANARY["good"])] for ln in lines if b in ln and p in ln]
    assert not pairs
    runs = [ln[:200] for ln in lines if NUMBER_RUN.search(ln) or "array([" in ln]
    assert not runs, runs[:3]
    print(f"\nMEASURED no_phi: lines={len(lines)} debug_lines={sum(' DEBUG ' in ln for ln in lines)} "
          f"patients_checked={len(patients)} leaks=0 number_runs=0")
