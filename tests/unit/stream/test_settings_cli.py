"""Settings precedence and errors; the ``mirage`` dispatcher's help."""

from __future__ import annotations

import pytest

from mirage.cli import COMMANDS, main
from stream.errors import SettingsError
from stream.settings import Settings


def test_defaults_then_toml_then_env(tmp_path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text('bootstrap_servers = "kafka-a:9092"\nmax_batch = 16\nredis_ssl = true\n')
    s = Settings.load(cfg, env={"MIRAGE_MAX_BATCH": "8"})
    assert (s.bootstrap_servers, s.max_batch, s.redis_ssl) == ("kafka-a:9092", 8, True)
    assert Settings.load(env={}).topic_alerts == "mirage.alerts"


def test_corrupt_or_unknown_settings_name_the_file_and_key(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("max_batch = [")
    with pytest.raises(SettingsError, match="bad.toml"):
        Settings.load(bad, env={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("max_bach = 3\n")
    with pytest.raises(SettingsError, match="max_bach"):
        Settings.load(unknown, env={})
    with pytest.raises(SettingsError, match="MIRAGE_MAX_BATCH.*lots"):
        Settings.load(env={"MIRAGE_MAX_BATCH": "lots"})
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.load(tmp_path / "missing.toml", env={})


def test_secrets_from_files_are_redacted(tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    s = Settings.load(env={"MIRAGE_SASL_PASSWORD_FILE": str(secret), "MIRAGE_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                           "MIRAGE_SASL_USERNAME": "svc"})
    assert s.sasl_password == "s3cret"
    assert "s3cret" not in repr(s.redacted())
    kw = s.kafka_client_kwargs()
    assert kw["sasl_plain_password"] == "s3cret" and kw["security_protocol"] == "SASL_PLAINTEXT"
    with pytest.raises(SettingsError) as err:
        Settings.load(env={"MIRAGE_REDIS_SSL": "s3cret-typo"})
    assert "redis_ssl" in str(err.value)


def test_top_level_help_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert main(["no-such-command"]) == 2


def test_threads_setting_reaches_cpu_backends_only() -> None:
    from stream.worker.model import backend_opts

    s = Settings.load(env={"MIRAGE_THREADS": "1"})
    assert s.threads == 1
    assert backend_opts(s, "onnxruntime") == {"threads": 1} and backend_opts(s, "torch") == {"threads": 1}
    assert backend_opts(s, "tensorrt") == {}
    assert backend_opts(Settings.load(env={}), "torch") == {}
    with pytest.raises(SettingsError, match="threads=-2"):
        Settings(threads=-2)
