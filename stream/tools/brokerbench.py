"""``mirage bench broker``: the embedded broker's CPU under a fixed ECG-like message flow.

Why it exists: in ``mirage bench load`` at 200 beds the embedded broker (Tansu, in-memory) took
a growing share of the 2-core host during each trial, and failing trials failed late. This bench
isolates the broker: one producer sends ``--rate`` messages/s of ``--size`` bytes (keyed over
``--keys`` beds, like the simulated gateways), one consumer-group member reads them back as the
worker does, and the broker's CPU is sampled every second. Each configuration runs on a fresh
broker (its cost depends on what it already holds). The first configuration is the baseline;
the JSON line last reports each one's broker CPU over its last 10 s as a ratio to it.

Measured on the project's machine (docs/BENCHMARKS.md): the broker's CPU grows linearly with
the data it holds while a consumer fetches (produce alone stays flat), and fewer, larger
stored batches (a longer producer ``linger_ms``) slow that growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class BrokerRun:
    """One configuration on a fresh broker."""

    linger_ms: int
    fetch_max_wait_ms: int
    rate: int
    size: int
    duration_s: float
    produced: int
    consumed: int
    broker_cpu_per_10s: list[float]  # mean broker CPU % of one core over each 10 s
    broker_cpu_first10s_percent: float
    broker_cpu_last10s_percent: float
    growth_percent_per_min: float  # slope of the per-second broker CPU, % of a core per minute


async def _one(linger_ms: int, fetch_max_wait_ms: int, rate: int, size: int, keys: int, partitions: int,
               duration_s: float) -> BrokerRun:
    import psutil
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from deploy.services import EmbeddedServices

    topic = "bench-broker"
    svc = EmbeddedServices(topics={topic: partitions})
    try:
        await asyncio.to_thread(svc.start)  # inside: a failed start must not leave a broker running
        assert svc.broker is not None
        broker = psutil.Process(svc.broker.pid)
        prod = AIOKafkaProducer(bootstrap_servers=svc.bootstrap, acks="all", linger_ms=linger_ms, enable_idempotence=False)
        cons = AIOKafkaConsumer(topic, bootstrap_servers=svc.bootstrap, group_id="bench-broker", auto_offset_reset="earliest",
                                fetch_max_wait_ms=fetch_max_wait_ms, session_timeout_ms=6000, heartbeat_interval_ms=1000)
        await prod.start()
        await cons.start()
        got = [0]

        async def consume() -> None:
            while True:
                batch = await cons.getmany(timeout_ms=100)
                got[0] += sum(len(v) for v in batch.values())

        reader = asyncio.create_task(consume())
        payload = os.urandom(size)
        broker.cpu_percent(None)
        cpu: list[tuple[float, float]] = []
        t0 = time.monotonic()
        next_sample, sent = t0 + 1.0, 0
        while (now := time.monotonic()) - t0 < duration_s:
            due = int((now - t0) * rate)
            while sent < due:
                await prod.send(topic, payload, key=f"bed-{sent % keys:04d}".encode())
                sent += 1
            if now >= next_sample:
                cpu.append((now - t0, broker.cpu_percent(None)))
                next_sample += 1.0
            await asyncio.sleep(0.005)
        await prod.flush()
        deadline = time.monotonic() + 10.0
        while got[0] < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await prod.stop()
        await cons.stop()
    finally:
        await asyncio.to_thread(svc.stop)
    ts = np.array([t for t, _ in cpu])
    cs = np.array([c for _, c in cpu])
    per10 = [round(float(cs[(ts > k) & (ts <= k + 10)].mean()), 1) for k in range(0, int(duration_s), 10)
             if ((ts > k) & (ts <= k + 10)).any()]
    slope = float(np.polyfit(ts, cs, 1)[0]) * 60.0 if len(ts) >= 2 else 0.0
    return BrokerRun(linger_ms, fetch_max_wait_ms, rate, size, duration_s, sent, got[0], per10,
                     round(float(cs[ts <= 10].mean()), 1) if (ts <= 10).any() else 0.0,
                     round(float(cs[ts >= ts[-1] - 10].mean()), 1) if len(ts) else 0.0, round(slope, 1))


def run(lingers: list[int], fetch_waits: list[int], rate: int, size: int, keys: int, partitions: int, duration_s: float,
        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every (linger, fetch wait) pair on a fresh broker; the first is the baseline."""
    runs: list[BrokerRun] = []
    for linger in lingers:
        for wait in fetch_waits:
            r = asyncio.run(_one(linger, wait, rate, size, keys, partitions, duration_s))
            runs.append(r)
            say(f"linger {linger:4d} ms, fetch wait {wait:4d} ms: broker CPU per 10 s {r.broker_cpu_per_10s} % "
                f"(+{r.growth_percent_per_min} %/min), {r.produced} sent, {r.consumed} read")
    base = runs[0].broker_cpu_last10s_percent or 1e-9
    return {"rate": rate, "size": size, "keys": keys, "partitions": partitions, "duration_s": duration_s,
            "baseline": {"linger_ms": runs[0].linger_ms, "fetch_max_wait_ms": runs[0].fetch_max_wait_ms},
            "runs": [dict(asdict(r), last10s_ratio_to_baseline=round(r.broker_cpu_last10s_percent / base, 2)) for r in runs]}


def _ints(text: str, flag: str, p: argparse.ArgumentParser, lo: int, hi: int) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        p.error(f"{flag} {text!r} must be comma-separated integers")
    if not vals or any(not lo <= v <= hi for v in vals):
        p.error(f"{flag} {text!r}: every value must be in [{lo}, {hi}]")
    return vals


def bench_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="mirage bench broker",
        description="The embedded broker's (Tansu) CPU over time under a fixed flow of ECG-chunk-sized messages, one fresh "
                    "broker per configuration; the first configuration is the baseline. Default: 400 messages/s of 4.2 KB "
                    "(200 beds sending 0.5 s chunks), 4 partitions, 60 s, producer linger 5 and 50 ms, each with consumer fetch "
                    "wait 20 and 100 ms.")
    p.add_argument("--linger-ms", default="5,50", help="producer linger_ms values, comma-separated (default 5,50)")
    p.add_argument("--fetch-max-wait-ms", default="20,100",
                   help="consumer fetch_max_wait_ms values, comma-separated (default 20,100: the worker's old and new default)")
    p.add_argument("--rate", type=int, default=400, help="messages per second (default 400)")
    p.add_argument("--size", type=int, default=4200, help="message bytes (default 4200: 8 leads x 250 int16 samples + header)")
    p.add_argument("--keys", type=int, default=200, help="distinct keys (beds, default 200)")
    p.add_argument("--partitions", type=int, default=4, help="topic partitions (default 4)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per configuration (default 60)")
    args = p.parse_args(argv)
    lingers = _ints(args.linger_ms, "--linger-ms", p, 0, 1000)
    waits = _ints(args.fetch_max_wait_ms, "--fetch-max-wait-ms", p, 1, 5000)
    if args.rate < 1 or args.size < 1 or args.keys < 1 or args.partitions < 1 or args.duration < 2:
        p.error(f"--rate {args.rate}, --size {args.size}, --keys {args.keys}, --partitions {args.partitions} must be >= 1 "
                f"and --duration {args.duration} >= 2")
    out = run(lingers, waits, args.rate, args.size, args.keys, args.partitions, args.duration)
    print(json.dumps(out))
    return 0
