"""``mirage audit``: keep the audit trail of alert decisions (``run``), read it (``query``), check it (``verify``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TextIO

from stream.consumers.audit import AuditConsumer, AuditRecord, AuditStore
from stream.errors import AuditError, SettingsError
from stream.settings import Settings

log = logging.getLogger(__name__)


def parse_time(text: str) -> int:
    """ISO 8601 date/time -> Unix epoch ns; a time without an offset is UTC."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-24T10:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1e6)) * 1000


def format_ns(ns: int) -> str:
    """Unix epoch ns -> ``2026-11-24T10:00:00.123Z``."""
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage audit",
        description="The audit trail of alert decisions: every event on the alerts topic (MI and technical) with "
                    "its window, probability, thresholds, policy state, model version and the labs it used, kept "
                    "append-only in SQLite (UPDATE/DELETE refused by triggers, rows hash-chained). See docs/AUDIT.md.")
    sub = p.add_subparsers(dest="action", required=True, metavar="{run,query,verify,plot}")
    run = sub.add_parser("run", help="consume the alerts topic into the audit database (until Ctrl-C)",
                         description="Consume the alerts topic with its own consumer group and append every event to "
                                     "the database; offsets are committed only after the rows are on disk, so a "
                                     "restart re-reads (and deduplicates) instead of losing events.")
    run.add_argument("--db", required=True, help="SQLite file of the audit trail (created if missing)")
    run.add_argument("--group", default="mirage-audit", help="consumer group (default mirage-audit)")
    run.add_argument("--stats-every", type=float, default=60.0, metavar="S", help="log counts every S seconds (0 = off)")
    run.add_argument("--config", default=None, help="settings TOML file (else $MIRAGE_CONFIG and $MIRAGE_* variables)")
    q = sub.add_parser("query", help="print audit rows (filters combine with AND)",
                       description="Print the recorded alert events, oldest window first. Times filter the end of "
                                   "the window the decision was made on; --until is exclusive.")
    q.add_argument("--db", required=True, help="SQLite file of the audit trail")
    q.add_argument("--bed", default=None, help="only this bed")
    q.add_argument("--since", type=parse_time, default=None, metavar="ISO", help="window end at or after this time (UTC if no offset)")
    q.add_argument("--until", type=parse_time, default=None, metavar="ISO", help="window end before this time")
    q.add_argument("--type", choices=("mi", "st", "technical"), default=None, help="only MI, ST-change or technical alerts")
    q.add_argument("--alert-id", default=None, help="only the events of this alert episode")
    q.add_argument("--limit", type=int, default=None, help="at most N rows")
    q.add_argument("--json", action="store_true", help="one JSON object per line (the full alert and its provenance)")
    v = sub.add_parser("verify", help="check the hash chain (detects edited, inserted or removed rows)",
                       description="Recompute the SHA-256 chain over all rows; exit 0 if intact, 1 naming the first bad row.")
    v.add_argument("--db", required=True, help="SQLite file of the audit trail")
    pl = sub.add_parser("plot", help="draw a timeline of alert episodes per bed (PNG)",
                        description="One row per bed, one bar per alert episode from its start to its end (open "
                                    "episodes run to their last event): MI in red, technical alarms in blue/grey; "
                                    "hatched where the episode reached level 2.")
    pl.add_argument("--db", required=True, help="SQLite file of the audit trail")
    pl.add_argument("--out", required=True, help="PNG file to write")
    pl.add_argument("--bed", default=None, help="only this bed")
    pl.add_argument("--since", type=parse_time, default=None, metavar="ISO", help="window end at or after this time")
    pl.add_argument("--until", type=parse_time, default=None, metavar="ISO", help="window end before this time")
    return p


def print_table(records: list[AuditRecord], out: TextIO) -> None:
    """Human-readable rows: one line per event."""
    head = f"{'window end (UTC)':<24} {'bed':<10} {'type':<9} {'kind':<14} {'phase':<6} {'lvl':>3} {'prob':>6} " \
           f"{'thr s/e':>9} {'seq':>6} {'model':<14} {'labs':>4}  flags / advisories"
    print(head, file=out)
    for r in records:
        a = r.alert
        prob = "-" if a.probability is None else f"{a.probability:.3f}"
        thr = "-" if a.threshold_start is None else f"{a.threshold_start:.2f}/{a.threshold_end:.2f}"
        notes = ", ".join(a.quality_flags + a.advisories)
        print(f"{format_ns(a.window_end_ns):<24} {a.bed_id[:10]:<10} {a.alert_type:<9} {a.kind[:14]:<14} {a.phase:<6} "
              f"{a.level:>3} {prob:>6} {thr:>9} {a.window_seq:>6} {(a.model_version or a.model_name)[:14]:<14} "
              f"{len(a.labs):>4}  {notes}", file=out)
    print(f"{len(records)} row(s)", file=out)


@dataclass
class Episode:
    """One alert episode reconstructed from its events (for the timeline)."""

    alert_id: str
    bed_id: str
    alert_type: str
    kind: str
    start_ns: int
    end_ns: int
    level: int
    ended: bool


def episodes(records: list[AuditRecord]) -> list[Episode]:
    """Group events by ``alert_id``: from the condition's start (technical) or the first decision (MI) to the end event."""
    out: dict[str, Episode] = {}
    for r in records:
        a = r.alert
        # A technical alert's window is the condition's period; an MI decision is made at its window's end.
        begin = a.window_start_ns if a.alert_type == "technical" else a.window_end_ns
        ep = out.get(a.alert_id)
        if ep is None:
            ep = out[a.alert_id] = Episode(a.alert_id, a.bed_id, a.alert_type, a.kind, begin, a.window_end_ns, a.level, False)
        ep.start_ns = min(ep.start_ns, begin)
        ep.end_ns = max(ep.end_ns, a.window_end_ns)
        ep.level = max(ep.level, a.level)
        ep.ended = ep.ended or a.phase == "end"
    return sorted(out.values(), key=lambda e: (e.bed_id, e.start_ns))


_COLORS = {"mi_suspected": "tab:red", "st_change": "tab:orange", "no_data": "tab:gray", "leads_off": "tab:blue", "poor_signal": "tab:cyan",
           "backend_failed": "tab:purple", "falling_behind": "tab:olive"}


def plot_timeline(eps: list[Episode], path: str) -> None:
    """Write the per-bed episode timeline as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    beds = sorted({e.bed_id for e in eps})
    t0 = min((e.start_ns for e in eps), default=0)
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.45 * max(1, len(beds))))
    for e in eps:
        y = beds.index(e.bed_id)
        width = max((e.end_ns - e.start_ns) / 60e9, 0.05)  # minutes; a lone event stays visible
        ax.barh(y + (0.18 if e.alert_type == "technical" else -0.18), width, left=(e.start_ns - t0) / 60e9, height=0.32,
                color=_COLORS.get(e.kind, "tab:brown"), hatch="//" if e.level >= 2 else None,
                alpha=1.0 if e.ended else 0.55, edgecolor="black", linewidth=0.4)
    ax.set_yticks(range(len(beds)), beds)
    ax.invert_yaxis()
    ax.set_xlabel(f"minutes after {format_ns(t0) if eps else '-'}")
    ax.set_title(f"Alert episodes from the audit trail ({len(eps)}; faded = still open, hatched = level 2)")
    kinds = sorted({e.kind for e in eps})
    ax.legend(handles=[Patch(color=_COLORS.get(k, "tab:brown"), label=k) for k in kinds], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from aiokafka.errors import KafkaError

    with AuditStore(args.db) as store:
        consumer = AuditConsumer(settings, store, group=args.group)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await consumer.start()
        except KafkaError as exc:
            log.critical("cannot reach the broker at %s: %s", settings.bootstrap_servers, exc)
            await consumer.stop()
            return 1
        log.info("audit consumer on %s (group %s) writing %s", settings.topic_alerts, args.group, args.db)
        reporter = asyncio.create_task(_report(consumer, args.stats_every))
        try:
            await consumer.run(stop)
        except (AuditError, KafkaError) as exc:
            # Exit non-zero so the service manager restarts it; uncommitted offsets are re-read.
            log.critical("audit consumer stopped: %s", exc)
            return 1
        finally:
            reporter.cancel()
            await consumer.stop()
            log.info("audit consumer stopped: %s", consumer.stats())
    return 0


async def _report(consumer: AuditConsumer, every_s: float) -> None:
    while every_s > 0:
        await asyncio.sleep(every_s)
        log.info("audit: %s", consumer.stats())


def audit_main(argv: list[str]) -> int:
    """Entry of ``mirage audit``; returns the exit status (2 = bad input or unreadable database)."""
    args = build_parser().parse_args(argv)
    try:
        if args.action == "run":
            return asyncio.run(_run(args, Settings.load(args.config)))
        with AuditStore(args.db, create=False) as store:
            if args.action == "verify":
                n = store.verify()
                print(f"{args.db}: hash chain intact over {n} row(s), {store.count('audit_rejects')} rejected message(s)")
                return 0
            if args.action == "plot":
                eps = episodes(store.query(bed_id=args.bed, since_ns=args.since, until_ns=args.until))
                plot_timeline(eps, args.out)
                print(f"wrote {args.out}: {len(eps)} episode(s) on {len({e.bed_id for e in eps})} bed(s)")
                return 0
            records = store.query(bed_id=args.bed, since_ns=args.since, until_ns=args.until, alert_type=args.type,
                                  alert_id=args.alert_id, limit=args.limit)
        if args.json:
            for r in records:
                print(json.dumps(r.to_dict(), separators=(",", ":")))
        else:
            print_table(records, sys.stdout)
        return 0
    except (AuditError, SettingsError) as exc:
        print(f"mirage audit: {exc}", file=sys.stderr)
        return 1 if args.action == "verify" and "hash chain" in str(exc) else 2
