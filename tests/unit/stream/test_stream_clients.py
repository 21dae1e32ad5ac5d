"""Kafka client factories: broker URL, credentials, and faust's fetch wait really overridden."""

from __future__ import annotations

import faust
import pytest

from stream.kafka import consumer, faust_app, faust_broker_url, faust_credentials, producer
from stream.settings import Settings


def test_broker_url_lists_every_bootstrap_server() -> None:
    assert faust_broker_url(Settings(bootstrap_servers="a:1, b:2")) == "kafka://a:1;b:2"


def test_credentials_follow_the_security_protocol() -> None:
    assert faust_credentials(Settings()) is None
    sasl = faust_credentials(Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                                      sasl_username="u", sasl_password="p"))
    assert isinstance(sasl, faust.SASLCredentials) and sasl.username == "u" and sasl.password == "p"
    assert str(sasl.mechanism.value) == "SCRAM-SHA-256"
    assert isinstance(faust_credentials(Settings(security_protocol="SSL")), faust.SSLCredentials)


async def test_faust_worker_consumer_uses_the_configured_fetch_wait() -> None:
    app = faust_app(Settings(fetch_max_wait_ms=17, fetch_min_bytes=4096, consumer_group="g-test"))
    thread = app.consumer._new_consumer_thread()
    ak = thread._create_worker_consumer(app.transport)
    try:
        assert ak._fetch_max_wait_ms == 17  # faust 0.15.3 hard-codes 1500
        assert ak._fetch_min_bytes == 4096
        assert ak._group_id == "g-test" and ak._enable_auto_commit is False
    finally:
        await ak.stop()


async def test_producer_and_consumer_take_security_and_timeouts() -> None:
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p", fetch_max_wait_ms=12,
                 fetch_min_bytes=0)
    prod = producer(s)
    assert prod.client._sasl_plain_username == "u" and prod._compression_type == "gzip"
    cons = consumer(s, "t", group_id=None)
    try:
        assert cons._fetch_max_wait_ms == 12 and cons._client._security_protocol == "SASL_PLAINTEXT"
        assert cons._fetch_min_bytes == 1  # 0 means "at once" too; aiokafka needs >= 1
    finally:
        await cons.stop()
        await prod.stop()


@pytest.mark.parametrize("proto", ["PLAINTEXT", "SASL_PLAINTEXT"])
async def test_settings_kwargs_reach_the_producer(proto: str) -> None:
    s = Settings(security_protocol=proto, sasl_username="u", sasl_password="p")
    prod = producer(s)
    assert prod.client._security_protocol == proto
    await prod.stop()
