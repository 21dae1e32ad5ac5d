"""``mirage hl7-bridge``: forward alerts to an alarm manager as HL7 v2 ORU^R40 over MLLP."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from stream.errors import SettingsError
from stream.settings import Settings

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage hl7-bridge",
        description="Read alert events from the alerts topic and send each one as an IHE PCD-04 Report Alert "
                    "(HL7 v2.6 ORU^R40) over MLLP to an alarm manager, waiting for its ACK^R41. Messages wait "
                    "in a durable SQLite outbox until accepted (MSA-1 AA/CA), with exponential backoff between "
                    "retries: no alert is dropped silently.")
    p.add_argument("--host", required=True, help="MLLP receiver (alarm manager) host")
    p.add_argument("--port", type=int, required=True, help="MLLP receiver port")
    p.add_argument("--outbox", default=str(Path.home() / ".mirage" / "hl7-outbox.sqlite"),
                   help="SQLite file of the durable outbox (default ~/.mirage/hl7-outbox.sqlite)")
    p.add_argument("--group", default="mirage-hl7-bridge", help="consumer group (offsets committed after the outbox write)")
    p.add_argument("--config", default=None, help="settings TOML file (else $MIRAGE_CONFIG)")
    p.add_argument("--ack-timeout", type=float, default=10.0, metavar="S", help="seconds to wait for each ACK (default 10)")
    p.add_argument("--backoff-base", type=float, default=0.5, metavar="S", help="first retry delay (default 0.5 s, doubles)")
    p.add_argument("--backoff-cap", type=float, default=60.0, metavar="S", help="longest retry delay (default 60 s)")
    p.add_argument("--sending-app", default="MIRAGE^0000000000000001^EUI-64", help="MSH-3 sending application (HD)")
    p.add_argument("--receiving-app", default="ACM", help="MSH-5 receiving application")
    p.add_argument("--tls", action="store_true", help="MLLP over TLS (receiver certificate and host name verified)")
    p.add_argument("--tls-cafile", default=None, help="CA bundle that signed the receiver's certificate (default: system CAs)")
    p.add_argument("--tls-certfile", default=None, help="client certificate for mutual TLS (PEM)")
    p.add_argument("--tls-keyfile", default=None, help="client private key for mutual TLS (PEM)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on 127.0.0.1:PORT (0 = off)")
    return p


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from stream.consumers.hl7.bridge import Hl7Bridge
    from stream.consumers.hl7.mllp import MllpClient, Outbox, tls_context
    from stream.consumers.hl7.pcd04 import Endpoint

    ctx = tls_context(args.tls_cafile, args.tls_certfile, args.tls_keyfile) if args.tls else None
    client = MllpClient(args.host, args.port, ack_timeout_s=args.ack_timeout, ssl_context=ctx)
    bridge = Hl7Bridge(settings, client, Outbox(args.outbox),
                       group=args.group, endpoint=Endpoint(sending_app=args.sending_app, receiving_app=args.receiving_app),
                       backoff_base_s=args.backoff_base, backoff_cap_s=args.backoff_cap)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1", registry=bridge.metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bridge.start()
    stopper = asyncio.create_task(stop.wait())
    try:
        # A loop that dies (e.g. the outbox disk is full) ends the process with an error, so the
        # service manager restarts it: the outbox and the uncommitted offsets lose nothing.
        await asyncio.wait([stopper, *bridge.tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in bridge.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.critical("hl7 bridge loop %s failed: %r", task.get_name(), task.exception())
                return 1
        return 0
    finally:
        stopper.cancel()
        await bridge.stop()
        log.info("hl7 bridge stopped: %s", bridge.stats())
        bridge.outbox.close()


def bridge_main(argv: list[str]) -> int:
    """Entry of ``mirage hl7-bridge``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(args.config)
    except SettingsError as exc:
        print(f"mirage hl7-bridge: {exc}")
        return 2
    return asyncio.run(_serve(args, settings))
