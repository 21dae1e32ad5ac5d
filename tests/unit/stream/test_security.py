"""Security settings reach every client, secrets stay secret, services bind loopback, sizes are capped.

* Kafka security (SASL PLAIN / SCRAM-SHA-256/512, TLS with a CA and a client certificate) must
  produce the same, correct keyword arguments for aiokafka (producer, consumer, admin) and for
  faust's worker consumer, because a worker talks to the broker through both.
* Secrets (``sasl_password``, ``redis_password``, ``dashboard_token`` and a password inside the
  Redis URL) never appear in ``--help`` output, in logs, in ``repr(settings)`` or in
  :meth:`stream.settings.Settings.redacted` (OWASP logging cheat sheet: never log credentials).
* The metrics endpoint and the dashboard bind loopback unless told otherwise.
* Every consumer has a message size limit: the chunk, lab and alert parsers refuse oversized
  values before parsing, and the alert consumers bound their fetches.

TLS material is generated with the ``openssl`` command (the test skips, with the reason, where
it is missing); nothing here opens a network connection except the loopback metrics server.
"""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from mirage.cli import COMMANDS, main
from stream.core.schema import Alert, LabResult, decode_chunk
from stream.errors import SettingsError, WireError
from stream.kafka import consumer, faust_app, faust_credentials, producer
from stream.settings import SECRET_FIELDS, Settings

SASL_PW = "sasl-Secret-7f3a9c"
REDIS_PW = "redis-Secret-51e0d2"
TOKEN = "dash-Token-0123456789abcdef"
SECRETS = (SASL_PW, REDIS_PW, TOKEN)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA and a client certificate + key signed by it (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to generate test certificates")
    d = tmp_path_factory.mktemp("tls")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "client.key", "client.csr", "client.pem"))

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=mirage-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=mirage-worker")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2")
    return {"ca": ca, "cert": cert, "key": key}


def _worker_consumer(settings: Settings):
    """The aiokafka consumer faust's worker really builds from these settings."""
    app = faust_app(settings)
    thread = app.consumer._new_consumer_thread()
    return thread._create_worker_consumer(app.transport)


# -- SASL / TLS -> client kwargs ---------------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_plaintext_reaches_aiokafka_and_faust_alike(mechanism: str) -> None:
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, sasl_username="svc-worker",
                 sasl_password=SASL_PW)
    kw = s.kafka_client_kwargs()
    assert kw["security_protocol"] == "SASL_PLAINTEXT" and kw["sasl_mechanism"] == mechanism
    assert kw["sasl_plain_username"] == "svc-worker" and kw["sasl_plain_password"] == SASL_PW
    assert "ssl_context" not in kw  # no TLS was asked for
    creds = faust_credentials(s)
    assert creds.username == "svc-worker" and creds.password == SASL_PW
    assert str(creds.mechanism.value) == mechanism and creds.ssl_context is None
    prod, cons, fc = producer(s), consumer(s, "t", group_id=None), _worker_consumer(s)
    try:
        for client in (prod.client, cons._client, fc._client):
            assert client._security_protocol == "SASL_PLAINTEXT"
            assert client._sasl_mechanism == mechanism
            assert client._sasl_plain_username == "svc-worker" and client._sasl_plain_password == SASL_PW
    finally:
        await fc.stop()
        await cons.stop()
        await prod.stop()


async def test_sasl_ssl_with_a_ca_file_verifies_the_broker(tls_files: dict[str, Path]) -> None:
    s = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
                 sasl_password=SASL_PW, ssl_cafile=str(tls_files["ca"]))
    kw = s.kafka_client_kwargs()
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname  # broker certificate and name checked
    assert ctx.cert_store_stats()["x509_ca"] == 1  # exactly our CA was loaded
    creds = faust_credentials(s)
    assert isinstance(creds.ssl_context, ssl.SSLContext) and creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert str(creds.mechanism.value) == "SCRAM-SHA-512"
    prod, fc = producer(s), _worker_consumer(s)
    try:
        for client in (prod.client, fc._client):
            assert client._security_protocol == "SASL_SSL" and client._sasl_mechanism == "SCRAM-SHA-512"
            assert isinstance(client._ssl_context, ssl.SSLContext)
            assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
    finally:
        await fc.stop()
        await prod.stop()


async def test_mutual_tls_loads_the_client_certificate(tls_files: dict[str, Path]) -> None:
    import faust

    s = Settings(security_protocol="SSL", ssl_cafile=str(tls_files["ca"]), ssl_certfile=str(tls_files["cert"]),
                 ssl_keyfile=str(tls_files["key"]))
    kw = s.kafka_client_kwargs()
    assert kw["security_protocol"] == "SSL" and "sasl_mechanism" not in kw and "sasl_plain_password" not in kw
    assert kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials)
    fc = _worker_consumer(s)
    try:
        assert fc._client._security_protocol == "SSL" and isinstance(fc._client._ssl_context, ssl.SSLContext)
    finally:
        await fc.stop()
    # a key that does not exist is a clear error at start-up, not a silent plaintext connection
    bad = s.replace(ssl_keyfile=str(tls_files["key"].with_name("missing.key")))
    with pytest.raises((OSError, ssl.SSLError)):
        bad.kafka_client_kwargs()


@pytest.mark.parametrize("field_, value", [("security_protocol", "TLS"), ("security_protocol", "SASL_PLAIN"),
                                           ("sasl_mechanism", "SCRAM-SHA-1"), ("sasl_mechanism", "plaintext")])
def test_misspelt_security_settings_are_refused_not_downgraded(field_: str, value: str) -> None:
    # "TLS" used to give faust no credentials at all (PLAINTEXT) while aiokafka refused it.
    with pytest.raises(SettingsError, match=f"{field_}={value!r}"):
        Settings(**{field_: value})
    with pytest.raises(SettingsError, match=value):
        Settings.load(env={f"MIRAGE_{field_.upper()}": value})


def test_security_settings_are_case_insensitive() -> None:
    s = Settings.load(env={"MIRAGE_SECURITY_PROTOCOL": "sasl_ssl", "MIRAGE_SASL_MECHANISM": "scram-sha-256"})
    assert (s.security_protocol, s.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert type(faust_credentials(s.replace(ssl_cafile=""))).__name__ == "SASLCredentials"


# -- secrets -------------------------------------------------------------------------------------
def _secret_settings(tmp_path: Path) -> Settings:
    pw = tmp_path / "sasl.pw"
    pw.write_text(SASL_PW + "\n")
    return Settings.load(env={"MIRAGE_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "MIRAGE_SASL_USERNAME": "svc",
                              "MIRAGE_SASL_PASSWORD_FILE": str(pw), "MIRAGE_REDIS_PASSWORD": REDIS_PW,
                              "MIRAGE_REDIS_URL": f"redis://:{REDIS_PW}@127.0.0.1:6379/0",
                              "MIRAGE_DASHBOARD_TOKEN": TOKEN})


def test_secrets_are_masked_in_redacted_and_repr(tmp_path: Path) -> None:
    s = _secret_settings(tmp_path)
    assert s.sasl_password == SASL_PW and s.redis_password == REDIS_PW and s.dashboard_token == TOKEN
    red = s.redacted()
    text = repr(red) + repr(s) + str(s)
    for secret in SECRETS:
        assert secret not in text
    assert {red[k] for k in SECRET_FIELDS} == {"***"}
    assert red["redis_url"] == "redis://:***@127.0.0.1:6379/0"  # the address stays readable
    assert Settings(redis_url="redis://127.0.0.1:6379/0").redacted()["redis_url"] == "redis://127.0.0.1:6379/0"
    # a bad value of a secret is reported without echoing it
    with pytest.raises(SettingsError) as err:
        Settings._coerce("sasl_password", object.__new__(type("Unprintable", (), {"__str__": None})), "x")  # type: ignore[arg-type]
    assert SASL_PW not in str(err.value)


def test_dashboard_token_can_come_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    s = Settings.load(env={"MIRAGE_DASHBOARD_TOKEN_FILE": str(f)})
    assert s.dashboard_token == TOKEN and TOKEN not in repr(s.redacted())


def test_no_secret_in_any_help_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``mirage <cmd> --help`` for every command, with every secret set in the environment."""
    pw = tmp_path / "pw"
    pw.write_text(SASL_PW)
    for k, v in {"MIRAGE_SASL_PASSWORD": SASL_PW, "MIRAGE_REDIS_PASSWORD": REDIS_PW, "MIRAGE_DASHBOARD_TOKEN": TOKEN,
                 "MIRAGE_REDIS_URL": f"redis://:{REDIS_PW}@127.0.0.1:1/0", "MIRAGE_SASL_PASSWORD_FILE": str(pw)}.items():
        monkeypatch.setenv(k, v)
    seen = 0
    for name in ["--help", *COMMANDS]:
        args = [name] if name == "--help" else [name, "--help"]
        try:
            main(args)
        except SystemExit as exc:  # argparse exits 0 after printing help
            assert exc.code == 0, name
        out = capsys.readouterr()
        text = out.out + out.err
        assert "usage" in text.lower(), name
        for secret in SECRETS:
            assert secret not in text, f"mirage {name} --help shows a secret"
        seen += 1
    assert seen == len(COMMANDS) + 1


def test_worker_start_up_logs_settings_without_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from stream.cli import worker_main

    monkeypatch.setenv("MIRAGE_SASL_PASSWORD", SASL_PW)
    monkeypatch.setenv("MIRAGE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("MIRAGE_REDIS_PASSWORD", REDIS_PW)
    monkeypatch.setenv("MIRAGE_REDIS_URL", f"redis://:{REDIS_PW}@127.0.0.1:1/0")
    monkeypatch.setenv("MIRAGE_DASHBOARD_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG):
        # the predictor cannot be imported: the worker logs its settings, then refuses to start
        assert worker_main(["--predictor", "no_such_module_here:factory"]) == 2
    assert "settings:" in caplog.text and "'sasl_password': '***'" in caplog.text
    assert "cannot start the worker" in caplog.text
    for secret in SECRETS:
        assert secret not in caplog.text


def test_dashboard_token_errors_do_not_echo_the_token() -> None:
    from stream.consumers.dashboard.auth import load_token

    short = "short-tok-9"
    with pytest.raises(SettingsError) as err:
        load_token(None, short, env={})
    assert short not in str(err.value) and str(len(short)) in str(err.value)


# -- loopback by default ---------------------------------------------------------------------------
def test_services_bind_loopback_by_default(capsys) -> None:
    s = Settings.load(env={})
    assert s.metrics_host == "127.0.0.1" and s.dashboard_host == "127.0.0.1"
    assert s.metrics_port == 0  # metrics off unless asked for
    with pytest.raises(SystemExit):
        main(["dashboard", "--help"])
    assert "127.0.0.1" in capsys.readouterr().out  # the help says where it binds by default


async def test_metrics_server_listens_on_loopback_only() -> None:
    import aiohttp

    from stream.worker.metrics import MetricsServer, StreamMetrics

    server = MetricsServer(StreamMetrics(), lambda: (True, {}), port=0)  # default host
    await server.start()
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        sockets = [sk for site in server._runner.sites for sk in site._server.sockets]  # type: ignore[union-attr]
        assert {sk.getsockname()[0] for sk in sockets} == {"127.0.0.1"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.port}/healthz") as resp:
                assert resp.status == 200
        # not reachable on another address of this machine (when it has one)
        other = _non_loopback_address()
        if other:
            with pytest.raises(OSError):
                socket.create_connection((other, server.port), timeout=0.5).close()
    finally:
        await server.stop()


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sk:
            sk.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            addr = sk.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


# -- message size limits ---------------------------------------------------------------------------
def test_every_parser_refuses_oversized_values_before_parsing() -> None:
    s = Settings(max_message_bytes=4096)
    with pytest.raises(WireError) as err:
        decode_chunk(b"MECG" + b"\0" * 5000, max_bytes=s.max_message_bytes)
    assert err.value.reason == "too_large" and "5004" in err.value.detail
    with pytest.raises(WireError) as err:
        LabResult.from_bytes(b"{" + b" " * (64 * 1024) + b"}")
    assert err.value.reason == "too_large"
    huge_alert = b'{"alert_id": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    with pytest.raises(WireError) as err:
        Alert.from_bytes(huge_alert)
    assert err.value.reason == "too_large"


async def test_every_consumer_bounds_its_fetches(tmp_path: Path) -> None:
    """The alert consumers (dashboard, HL7 bridge, audit/demo via stream.kafka.consumer) and the
    worker's faust consumer never ask the broker for more than the message limit per partition.

    The dashboard and the bridge are started against a closed port: they build their consumer,
    then fail to connect; the consumer they built is inspected."""
    from stream.consumers.dashboard.consumer import DashboardFeed
    from stream.consumers.dashboard.state import WardState
    from stream.consumers.hl7.bridge import Hl7Bridge
    from stream.consumers.hl7.mllp import MllpClient, Outbox

    s = Settings(max_message_bytes=2 * 1024 * 1024, bootstrap_servers="127.0.0.1:1")
    cons = consumer(s, "t", group_id=None)
    fc = _worker_consumer(s)
    feed = DashboardFeed(s, WardState(), lambda _bed: None)
    bridge = Hl7Bridge(s, MllpClient("127.0.0.1", 1), Outbox(tmp_path / "outbox.db"))
    try:
        assert cons._max_partition_fetch_bytes <= s.max_message_bytes
        assert fc._max_partition_fetch_bytes <= s.max_message_bytes
        for service in (feed, bridge):
            with pytest.raises(Exception):  # noqa: B017 - nothing listens on port 1; the client's error type varies
                await service.start()
            assert service._consumer._max_partition_fetch_bytes == s.max_message_bytes, type(service).__name__
    finally:
        for c in (fc, cons, feed._consumer, bridge._consumer, getattr(feed, "_producer", None)):
            if c is not None:
                await c.stop()


async def test_a_dashboard_feed_skips_an_oversized_alert() -> None:
    from stream.consumers.dashboard.consumer import DashboardFeed
    from stream.consumers.dashboard.state import WardState

    changed: list[str] = []
    feed = DashboardFeed(Settings(), WardState(), changed.append)
    assert feed.handle(feed.settings.topic_alerts, b'{"a": "' + b"y" * (2 * 1024 * 1024) + b'"}') is None
    assert feed.counts["invalid"] == 1 and feed.counts["alerts"] == 0 and not changed


