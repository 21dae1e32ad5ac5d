"""Corrupt or incompatible files -> a clear error that names the file and the problem.

Three kinds of file a person hands to MIRAGE: a checkpoint (``.pt``), a scenario (TOML/JSON)
and a settings file (TOML). Each is tried empty, as binary garbage, truncated, as a directory,
with wrong types and as if written by an incompatible (future) version, through the loader and
through the ``mirage`` command a person would run: the command must exit non-zero with one line
naming the file and the problem, never a traceback. A checkpoint carrying a pickled code payload
must be refused without running it (``torch.load(weights_only=True)``).

The loaders' own unit tests (tests/unit/engine/test_checkpoint.py, test_scenario.py,
test_settings_cli.py) cover the common cases; this file adds the remaining kinds and the
command-line experience.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import PRESETS
from engine.errors import CheckpointError
from mirage.cli import main
from simulators.errors import ScenarioError
from simulators.scenario import load_scenario
from stream.errors import SettingsError
from stream.settings import Settings

CFG = PRESETS["tiny"]
GARBAGE = b"\xff\xfe\x00\x13garbage\x00\x01" * 8


class _Payload:
    """Unpickling this would run a shell command (the classic malicious-checkpoint attack)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: D105
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.model import Mirage

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    save_checkpoint(path, Mirage(CFG), CFG, threshold=0.5, metrics={})
    return path


def _checkpoint_cases(good: Path, d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, regex the error must match after the file name)."""
    cases: dict[str, tuple[Path, str]] = {}
    (d / "empty.pt").write_bytes(b"")
    cases["empty"] = (d / "empty.pt", "corrupt|not a MIRAGE checkpoint")
    (d / "garbage.pt").write_bytes(GARBAGE)
    cases["garbage"] = (d / "garbage.pt", "corrupt|not a MIRAGE checkpoint")
    (d / "half.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated"] = (d / "half.pt", "corrupt")
    (d / "folder.pt").mkdir()
    cases["directory"] = (d / "folder.pt", "cannot be read|directory")
    payload = torch.load(good, weights_only=True)
    torch.save({**payload, "format_version": 7}, d / "future.pt")
    cases["future_version"] = (d / "future.pt", "format_version 7")
    torch.save({**payload, "config": {**payload["config"], "window_s": "ten"}}, d / "badtype.pt")
    cases["wrong_type"] = (d / "badtype.pt", "config|window_s")
    torch.save({"weights": _Payload(d / "PWNED")}, d / "payload.pt")
    cases["pickle_payload"] = (d / "payload.pt", "corrupt|not a MIRAGE checkpoint|unsafe|weights")
    return cases


def test_corrupt_checkpoints_name_the_file_and_never_run_code(good_ckpt: Path, tmp_path: Path) -> None:
    for name, (path, problem) in _checkpoint_cases(good_ckpt, tmp_path).items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        msg = str(err.value)
        assert str(path) in msg, (name, msg)
        assert re.search(problem, msg), (name, msg)
    assert not (tmp_path / "PWNED").exists(), "loading a checkpoint executed code from its pickle"
    assert load_checkpoint(good_ckpt).threshold == 0.5  # the good one still loads


@pytest.mark.parametrize("case", ["empty", "truncated", "directory", "future_version", "pickle_payload"])
def test_worker_refuses_a_corrupt_checkpoint_with_one_clear_line(case: str, good_ckpt: Path, tmp_path: Path, caplog,
                                                                 capsys) -> None:
    path, _ = _checkpoint_cases(good_ckpt, tmp_path)[case]
    with caplog.at_level(logging.INFO):
        # no broker is contacted: the checkpoint is loaded before any client starts
        code = main(["worker", "--checkpoint", str(path), "--bootstrap", "127.0.0.1:1"])
    assert code == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0].getMessage() and errors[0].exc_info is None
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists()


SCENARIOS = {
    "empty_json": ("s.json", b"", "not valid JSON"),
    "binary": ("s.toml", GARBAGE, "cannot read scenario file|not valid TOML"),
    "truncated_toml": ("s.toml", b'beds = 2\n[[bed]]\nid = "a', "not valid TOML"),
    "wrong_type": ("s.toml", b'beds = "four"\n', "beds = 'four'"),
    "future_version": ("s.toml", b"format_version = 3\nbeds = 2\n", "format_version"),
    "bed_wrong_type": ("s.toml", b'[[bed]]\nid = "a"\nst_mv = "lots"\n', "lots"),
}


@pytest.mark.parametrize("case", sorted(SCENARIOS))
def test_corrupt_scenarios_name_the_file_in_the_loader_and_both_commands(case: str, tmp_path: Path, capsys) -> None:
    fname, content, problem = SCENARIOS[case]
    path = tmp_path / fname
    path.write_bytes(content)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and re.search(problem, msg), msg
    for argv in (["simulate", "--scenario", str(path), "--out", str(tmp_path / "out"), "--no-progress"],
                 ["replay", "--scenario", str(path), "--bootstrap", "127.0.0.1:1", "--no-progress"]):
        code = main(argv)
        out = capsys.readouterr()
        assert code != 0, argv
        assert str(path) in out.err and "Traceback" not in out.err + out.out, (argv, out.err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_scenario_directory_is_named(tmp_path: Path) -> None:
    d = tmp_path / "scenario.toml"
    d.mkdir()
    with pytest.raises(ScenarioError, match=f"{d}: cannot read scenario file"):
        load_scenario(d)


SETTINGS = {
    "binary": (GARBAGE, "not valid TOML"),
    "truncated": (b'bootstrap_servers = "kafka:9', "not valid TOML"),
    "wrong_type": (b"max_batch = [1, 2]\n", "max_batch"),
    "future_version": (b"settings_version = 2\n", "unknown setting 'settings_version'"),
    "bad_protocol": (b'security_protocol = "TLSv1.3"\n', "security_protocol='TLSv1.3'"),
}


@pytest.mark.parametrize("case", sorted(SETTINGS) + ["directory"])
def test_corrupt_settings_name_the_file_in_the_loader_and_the_worker(case: str, tmp_path: Path, caplog) -> None:
    path = tmp_path / "mirage.toml"
    if case == "directory":
        path.mkdir()
        problem = "cannot be read"  # was an unhandled IsADirectoryError (traceback) before
    else:
        content, problem = SETTINGS[case]
        path.write_bytes(content)
    with pytest.raises(SettingsError) as err:
        Settings.load(path, env={})
    assert str(path) in str(err.value) or case == "bad_protocol", str(err.value)
    assert problem in str(err.value), str(err.value)
    with caplog.at_level(logging.ERROR):
        assert main(["worker", "--config", str(path)]) == 2
    assert problem in caplog.text and caplog.records[-1].exc_info is None


def test_empty_files_are_valid_defaults_not_errors(tmp_path: Path) -> None:
    """An empty settings or scenario TOML means "all defaults": loading it is not an error."""
    (tmp_path / "s.toml").write_text("")
    assert Settings.load(tmp_path / "s.toml", env={}) == Settings()
    assert load_scenario(tmp_path / "s.toml").beds >= 1
