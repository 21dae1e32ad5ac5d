"""``mirage dashboard``: serve the nursing dashboard (live alerts, acknowledge)."""

from __future__ import annotations

import argparse
import ipaddress
import logging

from stream.errors import SettingsError
from stream.settings import Settings

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage dashboard",
        description="Serve the nursing dashboard: a live grid of beds (quiet / MI suspected / acknowledged / "
                    "ended, technical alerts apart) fed from the alerts topic, with acknowledgement published "
                    "to the acks topic so every open dashboard shows it. Every request needs the ward token "
                    "(Authorization: Bearer, or the login form's HttpOnly cookie).",
        epilog="The token comes from --token-file, $MIRAGE_DASHBOARD_TOKEN_FILE, $MIRAGE_DASHBOARD_TOKEN or "
               "dashboard_token in the settings file (at least 16 characters); it is never logged. "
               "Binds to loopback unless --host says otherwise: put a TLS reverse proxy in front for a ward network.")
    p.add_argument("--host", default=None, help="address to bind (default: settings dashboard_host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: settings dashboard_port, 8080)")
    p.add_argument("--token-file", default=None, help="file holding the ward token (first line)")
    p.add_argument("--config", default=None, help="settings TOML file (else $MIRAGE_CONFIG)")
    p.add_argument("--group", default=None,
                   help="consumer group id of this instance (default: a fresh one, so it reads every alert from the start)")
    p.add_argument("--ended-retention", type=float, default=3600.0, metavar="S",
                   help="seconds an ended MI episode stays shown on its bed (default 3600)")
    return p


def dashboard_main(argv: list[str]) -> int:
    """Entry of ``mirage dashboard``; returns the exit status."""
    args = build_parser().parse_args(argv)
    from aiohttp import web

    from stream.consumers.dashboard.app import create_app
    from stream.consumers.dashboard.auth import load_token

    try:
        settings = Settings.load(args.config)
        token = load_token(args.token_file, settings.dashboard_token)
    except SettingsError as exc:
        print(f"mirage dashboard: {exc}")
        return 2
    host = args.host or settings.dashboard_host
    port = args.port if args.port is not None else settings.dashboard_port
    try:
        if not ipaddress.ip_address(host).is_loopback:
            log.warning("dashboard binds to %s (not loopback): serve it behind TLS", host)
    except ValueError:
        log.warning("dashboard binds to host name %s: serve it behind TLS", host)
    app = create_app(settings, token, group=args.group, ended_retention_s=args.ended_retention)
    log.info("dashboard on http://%s:%d/ (alerts %s, acks %s)", host, port, settings.topic_alerts, settings.topic_acks)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
    return 0
