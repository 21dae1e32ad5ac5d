"""Kafka client factories, all configured from :class:`stream.settings.Settings`.

One place builds every client the stream room uses, so bootstrap servers, SASL (PLAIN,
SCRAM-SHA-256/512) and TLS apply everywhere alike:

* :func:`producer` - an aiokafka producer with ``acks="all"`` (an alert is only "produced" when
  the in-sync replicas have it) and gzip (the one codec that needs no extras);
* :func:`consumer` - an aiokafka consumer (alert readers, the demo, tests);
* :func:`faust_app` - a faust-streaming ``App`` whose broker credentials come from the same
  settings, and whose consumer overrides faust's hard-coded ``fetch_max_wait_ms=1500``
  (faust 0.15.3, ``AIOKafkaConsumerThread._create_worker_consumer``). A broker that holds every
  fetch for the full wait (Tansu does; Kafka does when a partition has no new data) otherwise
  adds up to 1.5 s to the latency of every chunk; with ``Settings.fetch_max_wait_ms`` at 20 ms
  the measured p50 dropped from ~350 ms to ~13 ms (/work/shared/ENVIRONMENT.md). The default is
  100 ms: on Tansu each held fetch costs the broker CPU that grows with what it stores, and at
  200 beds 20 ms made the broker the host's bottleneck (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from typing import Any

from stream.settings import Settings

log = logging.getLogger(__name__)


def faust_broker_url(settings: Settings) -> str:
    """``kafka://h1:p1;h2:p2`` from the comma-separated bootstrap servers."""
    hosts = [h.strip() for h in settings.bootstrap_servers.split(",") if h.strip()]
    return "kafka://" + ";".join(hosts)


def faust_credentials(settings: Settings) -> Any | None:
    """faust credentials (SASL and/or TLS) for ``Settings.security_protocol``, or None for PLAINTEXT."""
    import faust

    proto = settings.security_protocol.upper()
    ctx = None
    if proto in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ctx = create_ssl_context(cafile=settings.ssl_cafile or None, certfile=settings.ssl_certfile or None,
                                 keyfile=settings.ssl_keyfile or None)
    if proto.startswith("SASL"):
        return faust.SASLCredentials(username=settings.sasl_username, password=settings.sasl_password,
                                     ssl_context=ctx, mechanism=settings.sasl_mechanism)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def producer(settings: Settings, **overrides: Any) -> Any:
    """An (unstarted) ``AIOKafkaProducer`` for alerts and dead letters."""
    from aiokafka import AIOKafkaProducer

    kw: dict[str, Any] = dict(settings.kafka_client_kwargs(), acks="all", compression_type="gzip",
                              max_request_size=max(settings.max_message_bytes + 65536, 1048576), linger_ms=0)
    kw.update(overrides)
    return AIOKafkaProducer(**kw)


def consumer(settings: Settings, *topics: str, **overrides: Any) -> Any:
    """An (unstarted) ``AIOKafkaConsumer`` with the settings' security and fetch wait."""
    from aiokafka import AIOKafkaConsumer

    kw: dict[str, Any] = dict(settings.kafka_client_kwargs(), fetch_max_wait_ms=settings.fetch_max_wait_ms,
                              fetch_min_bytes=max(1, settings.fetch_min_bytes),
                              session_timeout_ms=int(settings.session_timeout_s * 1000),
                              heartbeat_interval_ms=max(100, int(settings.session_timeout_s * 1000 / 3)))
    kw.update(overrides)
    return AIOKafkaConsumer(*topics, **kw)


def _faust_classes(fetch_max_wait_ms: int, fetch_min_bytes: int = 1) -> tuple[type, type]:
    """(App subclass, Transport subclass) whose worker consumer uses ``fetch_max_wait_ms`` and ``fetch_min_bytes``."""
    import faust
    from faust.transport.drivers import aiokafka as drv

    class FastFetchConsumerThread(drv.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer_ = super()._create_worker_consumer(transport)
            # aiokafka reads this when it builds its Fetcher in start(), after construction.
            consumer_._fetch_max_wait_ms = fetch_max_wait_ms
            consumer_._fetch_min_bytes = max(1, fetch_min_bytes)
            return consumer_

    class FastFetchConsumer(drv.Consumer):
        def _new_consumer_thread(self) -> Any:
            return FastFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class FastFetchTransport(drv.Transport):
        Consumer = FastFetchConsumer

    class MirageApp(faust.App):
        """faust App with the fast-fetch transport and awaitable stop hooks (producers, Redis)."""

        stop_hooks: list[Any]

        def _new_transport(self) -> Any:
            return FastFetchTransport(self.conf.broker_consumer, self)

        async def on_stop(self) -> None:
            for hook in list(getattr(self, "stop_hooks", [])):
                try:
                    await hook()
                except Exception as exc:  # keep stopping the rest
                    log.warning("stop hook %r failed: %s", hook, exc)
            await super().on_stop()

    return MirageApp, FastFetchTransport


def faust_app(settings: Settings, app_id: str | None = None, **conf: Any) -> Any:
    """A faust ``App`` for the worker: group id = ``consumer_group``, manual commits, short timeouts.

    ``broker_session_timeout`` comes from the settings (faust's 60 s default makes a worker take
    ~30 s to join a group on brokers that wait half the session timeout per join).
    """
    app_cls, _ = _faust_classes(settings.fetch_max_wait_ms, settings.fetch_min_bytes)
    session = float(settings.session_timeout_s)
    kw: dict[str, Any] = dict(
        broker=faust_broker_url(settings),
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.1, session / 3),
        broker_request_timeout=max(30.0, session * 2),
        broker_commit_every=200,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        producer_acks=-1,
        stream_wait_empty=False,
        store="memory://",
    )
    kw.update(conf)
    app = app_cls(app_id or settings.consumer_group, **kw)
    app.stop_hooks = []
    return app
