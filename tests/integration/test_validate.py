"""``mirage validate`` against the real broker, Redis and worker: the live windows equal the offline ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream.settings import Settings
from stream.tools.validate import ValidateOptions, validate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def val_settings(services, unique) -> Settings:
    from deploy.services import create_topics

    s = Settings(bootstrap_servers=services.bootstrap, redis_url=services.redis_url, topic_chunks=f"vchunks-{unique}",
                 topic_labs=f"vlabs-{unique}", topic_alerts=f"valerts-{unique}", topic_deadletter=f"vdl-{unique}",
                 consumer_group=f"vg-{unique}")
    create_topics(services.bootstrap, {s.topic_chunks: 2, s.topic_labs: 1, s.topic_alerts: 1, s.topic_deadletter: 1})
    return s


def test_validate_a_scenario_through_the_live_worker(val_settings: Settings, tmp_path: Path) -> None:
    """quick.toml, 24 s per bed at 8x: every window the worker scored is rebuilt offline bit for bit,
    with the same labs (troponin via the labs topic and Redis), and scored to the same probability."""
    out = validate(ValidateOptions(scenario="quick", duration_s=24.0, speed=8.0, timeout_s=240), tmp_path, val_settings)
    # 4 beds x windows ending at 10, 12, ..., 24 s
    assert out["live_windows"] == out["offline_windows"] == 4 * 8 == out["windows"]
    assert out["windows_missing_live"] == 0
    assert out["windows_signal_identical"] == out["windows"]
    assert out["windows_labs_identical"] >= out["windows"] - 2  # a lab may race its chunk (two topics)
    assert out["parity_max_abs_diff"] is not None and out["parity_max_abs_diff"] <= 1e-4 and out["parity_ok"]
    assert out["parity_max_abs_diff_live_labs"] <= 1e-4
    assert out["records"] == 4 and out["mi_beds"] == 2
    for key in ("sensitivity", "specificity", "ppv", "false_alerts_per_bed_day", "median_alert_delay_s"):
        assert key in out
    rows = {r["bed_id"]: r for r in out["per_bed"]}
    assert all(r["windows"] == 8 for r in rows.values())
    assert len(rows["bed-01"]["timeline"]) == 8
    data = json.loads((tmp_path / "validate.json").read_text())
    assert data["windows"] == 32 and isinstance(data["alerts"], list)
    assert (tmp_path / "report.html").exists() and (tmp_path / "timelines.png").exists()


def test_validate_real_ptbxl_records(val_settings: Settings, ptbxl_dir: Path, tmp_path: Path) -> None:
    """Four real PTB-XL records looped to 14 s: windows 0 of each bed are the records themselves."""
    out = validate(ValidateOptions(data=str(ptbxl_dir), beds=4, duration_s=14.0, speed=8.0, timeout_s=240), tmp_path, val_settings)
    assert out["beds"] == 4 and out["windows"] == 4 * 3
    assert out["windows_signal_identical"] == out["windows"]
    assert out["parity_max_abs_diff"] <= 1e-4


def test_validate_cli_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "mirage", "validate", "--help"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0 and "--scenario" in proc.stdout and "parity" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "mirage", "validate", "--scenario", "quick"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "--out" in bad.stderr
