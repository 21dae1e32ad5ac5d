"""``mirage demo --json`` end to end: services, worker subprocess, replay, alerts, summary line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KEYS = {"windows", "alerts", "beds_alerted", "beds_with_mi", "p50_latency_ms", "p99_latency_ms"}


def run_demo(*args: str, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-m", "mirage", "demo", "--json", *args], capture_output=True, text=True,
                          timeout=400, env={**os.environ, **(env or {})}, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last)


def test_demo_json_with_a_crafted_predictor(tmp_path: Path) -> None:
    """The whole path with a model whose answer is known: every bed has troponin -> every bed alerts;
    the audit trail kept during the demo holds every alert event and its hash chain verifies."""
    db = tmp_path / "audit.sqlite"
    out = run_demo("--duration", "20", "--speed", "5", "--beds", "3", "--predictor", "test_worker:make_predictor",
                   "--audit-db", str(db), env={"PYTHONPATH": str(Path(__file__).parent)})
    assert KEYS <= set(out)
    # 3 beds x 20 s: windows at 0, 2, ..., 10 s -> 6 per bed
    assert out["windows"] == 18 and out["chunks"] == 3 * 41
    assert out["beds_alerted"] == ["bed-01", "bed-02", "bed-03"]
    assert out["beds_with_mi"] == ["bed-01", "bed-02"]
    assert out["alerts"] == 6  # a start and a discharge end per bed
    assert 0 < out["p50_latency_ms"] <= out["p99_latency_ms"] < 10_000
    assert out["audit_db"] == str(db) and out["audit_rows"] == 6
    verify = subprocess.run([sys.executable, "-m", "mirage", "audit", "verify", "--db", str(db)], capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    assert verify.returncode == 0 and "intact over 6 row(s)" in verify.stdout, verify.stdout + verify.stderr


def test_demo_json_with_the_shipped_checkpoint(tmp_path: Path) -> None:
    ckpt = REPO / "engine" / "checkpoints" / "mirage-default.pt"
    if not ckpt.exists():
        pytest.skip(f"shipped checkpoint {ckpt} not present yet")
    out = run_demo("--duration", "30", "--speed", "4", "--audit-db", str(tmp_path / "audit.sqlite"))
    assert KEYS <= set(out)
    assert out["windows"] == 8 * 11 and out["beds_with_mi"] == ["bed-01", "bed-02", "bed-04", "bed-07"]
    assert out["p50_latency_ms"] is not None and out["p99_latency_ms"] >= out["p50_latency_ms"]
    assert out["audit_rows"] >= out["alerts"] > 0  # every alert shown is in the trail
    # The shipped model must find MI in the built-in cohort (what the README's main command shows).
    assert set(out["beds_alerted"]) & set(out["beds_with_mi"])
