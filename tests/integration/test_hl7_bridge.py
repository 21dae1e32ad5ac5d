"""HL7 bridge against the real broker and MLLP receivers started by the test.

The receivers are asyncio servers speaking MLLP that answer ACK^R41; one rejects / hangs up
first to prove the bridge retries with backoff and never drops an alert.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import hl7
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from deploy.services import create_topics_async
from stream.consumers.hl7.bridge import Hl7Bridge
from stream.consumers.hl7.mllp import MllpClient, Outbox, frame, read_frame
from stream.consumers.hl7.pcd04 import build_ack
from stream.core.schema import Alert
from stream.settings import Settings

pytestmark = pytest.mark.integration

S = 1_000_000_000


class MllpReceiver:
    """A minimal alarm manager: records every ORU^R40 and answers per ``script`` then ``AA``.

    ``script`` items: ``"AE"``/``"AR"`` answer that code; ``"drop"`` closes the connection unanswered;
    ``"wrong-id"`` accepts with another message's control id (which must not count as delivered).
    """

    def __init__(self, script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.received: list[str] = []
        self.accepted: list[str] = []
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> "MllpReceiver":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                msg = await read_frame(reader)
                self.received.append(msg)
                action = self.script.pop(0) if self.script else "AA"
                if action == "drop":
                    break
                if action == "wrong-id":  # an ACK that answers some other message
                    writer.write(frame(build_ack(msg.replace("ORU^R40^ORU_R40|", "ORU^R40^ORU_R40|X"), "AA",
                                                 now_ns=time.time_ns())))
                    await writer.drain()
                    continue
                writer.write(frame(build_ack(msg, action, now_ns=time.time_ns())))
                await writer.drain()
                if action == "AA":
                    self.accepted.append(msg)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _alert(i: int, phase: str, bed: str = "B1", alert_type: str = "mi") -> Alert:
    t = 1_795_000_000 * S + i * S
    return Alert(alert_id=f"{alert_type}-{bed}-{i // 10}", alert_type=alert_type,
                 kind="mi_suspected" if alert_type == "mi" else "leads_off", phase=phase, bed_id=bed,
                 patient_id=f"P-{bed}", probability=0.91 if alert_type == "mi" else None, threshold_start=0.5,
                 threshold_end=0.3, window_start_ns=t - 10 * S, window_end_ns=t, window_seq=i, model_name="mirage",
                 model_version="1", checkpoint_sha="abc", level=2 if alert_type == "mi" else 1, emitted_ns=t)


async def _publish(settings: Settings, alerts: list[Alert], raw: list[bytes] = ()) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await prod.start()
    try:
        for a in alerts:
            await prod.send_and_wait(settings.topic_alerts, a.to_bytes(), key=a.bed_id.encode())
        for r in raw:
            await prod.send_and_wait(settings.topic_alerts, r, key=b"junk")
    finally:
        await prod.stop()


async def _until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def settings(services, unique) -> Settings:
    return Settings(bootstrap_servers=services.bootstrap, topic_alerts=f"alerts-{unique}", session_timeout_s=6.0)


async def test_bridge_delivers_every_alert_as_oru_r40(settings: Settings, unique: str, tmp_path: Path) -> None:
    await create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 1})
    rx = await MllpReceiver().start()
    bridge = Hl7Bridge(settings, MllpClient("127.0.0.1", rx.port, ack_timeout_s=5), Outbox(tmp_path / "o.sqlite"),
                       group=f"hl7-{unique}", backoff_base_s=0.05, backoff_cap_s=0.5)
    alerts = [_alert(0, "start"), _alert(1, "update"), _alert(2, "end"),
              _alert(3, "start", bed="B2", alert_type="technical")]
    await bridge.start()
    try:
        # a duplicate (replayed) event and an undecodable message: the first is sent once, the second logged+counted
        await _publish(settings, alerts + [alerts[0]], raw=[b"not json"])
        await _until(lambda: len(rx.accepted) == 4 and bridge.metrics.invalid._value.get() == 1, 60, "4 accepted messages")
        await asyncio.sleep(0.5)
    finally:
        await bridge.stop()
        await rx.stop()
    assert len(rx.received) == 4
    msgs = [hl7.parse(m) for m in rx.accepted]
    assert [str(m.segment("MSH")[10]) for m in msgs] == [a.event_id for a in alerts]
    phases = [str(next(s for s in m.segments("OBX") if "EVENT_PHASE" in str(s[3]))[5]) for m in msgs]
    assert phases == ["start", "update", "end", "start"]
    types = [str(next(s for s in m.segments("OBX") if "ALERT_TYPE" in str(s[3]))[5]) for m in msgs]
    assert types == ["SP", "SP", "SP", "ST"]
    assert str(msgs[3].segment("PV1")[3]) == "^^B2"
    assert bridge.outbox.pending_count() == 0 and bridge.outbox.sent_count() == 4
    assert bridge.metrics.sent._value.get() == 4


async def test_bridge_retries_rejects_and_hangups_then_delivers(settings: Settings, unique: str, tmp_path: Path) -> None:
    await create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 1})
    rx = await MllpReceiver(script=["AE", "drop", "AR", "wrong-id"]).start()
    bridge = Hl7Bridge(settings, MllpClient("127.0.0.1", rx.port, ack_timeout_s=5), Outbox(tmp_path / "o.sqlite"),
                       group=f"hl7-{unique}", backoff_base_s=0.05, backoff_cap_s=0.3)
    alerts = [_alert(0, "start"), _alert(1, "end")]
    await bridge.start()
    try:
        await _publish(settings, alerts)
        await _until(lambda: len(rx.accepted) == 2, 60, "delivery after retries")
    finally:
        await bridge.stop()
        await rx.stop()
    # the start event was tried 5 times (AE, hang-up, AR, wrong ACK, AA) before the end event went out: order kept
    ids = [str(hl7.parse(m).segment("MSH")[10]) for m in rx.received]
    assert ids == [alerts[0].event_id] * 5 + [alerts[1].event_id]
    failures = {s.labels["reason"]: s.value for s in next(iter(bridge.metrics.failures.collect())).samples
                if s.name.endswith("_total")}
    assert failures == {"rejected": 2.0, "transport": 2.0}
    assert rx.connections >= 2  # reconnected after the hang-up


async def test_outbox_survives_receiver_outage_and_bridge_restart(settings: Settings, unique: str, tmp_path: Path) -> None:
    await create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 1})
    from deploy.services import free_port

    port = free_port()  # nobody listens yet: the alarm manager is down
    outbox_path = tmp_path / "o.sqlite"
    bridge = Hl7Bridge(settings, MllpClient("127.0.0.1", port, connect_timeout_s=1), Outbox(outbox_path),
                       group=f"hl7-{unique}", backoff_base_s=0.05, backoff_cap_s=0.2)
    alerts = [_alert(0, "start"), _alert(1, "update")]
    await bridge.start()
    try:
        await _publish(settings, alerts)
        await _until(lambda: bridge.outbox.pending_count() == 2 and bridge.metrics.failures.labels("transport")._value.get() >= 2,
                     60, "failed attempts while the receiver is down")
    finally:
        await bridge.stop()
        bridge.outbox.close()
    # restart: same outbox and group; the receiver is back
    rx = await MllpReceiver().start(port)
    bridge2 = Hl7Bridge(settings, MllpClient("127.0.0.1", port), Outbox(outbox_path), group=f"hl7-{unique}",
                        backoff_base_s=0.05, backoff_cap_s=0.2)
    await bridge2.start()
    try:
        await _until(lambda: len(rx.accepted) == 2, 30, "delivery after restart")
        await asyncio.sleep(1.0)  # committed offsets: nothing is read (and sent) twice
    finally:
        await bridge2.stop()
        await rx.stop()
    assert [str(hl7.parse(m).segment("MSH")[10]) for m in rx.received] == [a.event_id for a in alerts]
    assert bridge2.outbox.pending_count() == 0


async def test_cli_bridge_forwards_and_stops_cleanly(settings: Settings, unique: str, tmp_path: Path) -> None:
    import os
    import signal
    import sys

    await create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 1})
    rx = await MllpReceiver().start()
    env = {**os.environ, "MIRAGE_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "MIRAGE_TOPIC_ALERTS": settings.topic_alerts}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mirage", "hl7-bridge", "--host", "127.0.0.1", "--port", str(rx.port),
        "--outbox", str(tmp_path / "cli-outbox.sqlite"), "--group", f"hl7-cli-{unique}", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await _publish(settings, [_alert(0, "start", bed="B9")])
        await _until(lambda: len(rx.accepted) == 1, 60, "the CLI bridge to deliver")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        await rx.stop()
    assert proc.returncode == 0, out.decode()[-2000:]
    assert str(hl7.parse(rx.accepted[0]).segment("PV1")[3]) == "^^B9"
    assert "hl7 bridge stopped" in out.decode()


async def test_mllp_over_tls_verifies_the_receiver(tmp_path: Path) -> None:
    """MLLP over TLS: a client trusting the receiver's CA gets its ACK; one that does not is refused."""
    import shutil
    import ssl
    import subprocess

    from stream.consumers.hl7.mllp import MllpError, tls_context
    from stream.consumers.hl7.pcd04 import build_oru_r40

    if not shutil.which("openssl"):
        pytest.skip("openssl command not found (needed to make a test certificate)")
    cert, key = tmp_path / "rx.pem", tmp_path / "rx.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert), str(key))
    rx = MllpReceiver()
    rx.server = await asyncio.start_server(rx._handle, "127.0.0.1", 0, ssl=server_ctx)
    port = rx.server.sockets[0].getsockname()[1]
    msg = build_oru_r40(_alert(0, "start"), "tls-1", now_ns=time.time_ns())
    try:
        good = MllpClient("127.0.0.1", port, ssl_context=tls_context(cafile=str(cert)))
        ack = await good.send(msg)
        await good.close()
        assert ack.accepted and ack.control_id == "tls-1" and rx.accepted == [msg]
        untrusting = MllpClient("127.0.0.1", port, ssl_context=tls_context(), connect_timeout_s=3)
        with pytest.raises(MllpError, match="cannot connect"):
            await untrusting.send(msg)
        assert len(rx.received) == 1
    finally:
        await rx.stop()


async def test_bridge_forwards_st_change_alerts(settings: Settings, unique: str, tmp_path: Path) -> None:
    """Issue #19: an st_change episode (start, end) reaches the alarm manager as physiological ORU^R40s."""
    from engine.st import StChangeConfig, StChangeEvent
    from stream.core.schema import make_alert_id
    from stream.core.st import st_change_alert

    await create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 1})
    t = 1_795_000_000 * S
    aid = make_alert_id("st", "st_change", "B7", "P-B7", t)
    d = [0.0, 150.0, 170.0, 0.0, 0.0, 160.0] + [0.0] * 6
    alerts = [st_change_alert(StChangeEvent(phase, aid, 1, leads, np.array(d), peak, seq, t + seq * S),
                              bed_id="B7", patient_id="P-B7", window_start_ns=t + (seq - 10) * S,
                              vector={"j60_uv": d, "delta_uv": d}, config=StChangeConfig(), model_name="mirage",
                              model_version="1", checkpoint_sha="abc", emitted_ns=t + seq * S)
              for phase, leads, peak, seq in (("start", ("II", "III", "aVF"), 170.0, 30), ("end", (), 0.0, 60))]
    rx = await MllpReceiver().start()
    bridge = Hl7Bridge(settings, MllpClient("127.0.0.1", rx.port, ack_timeout_s=5), Outbox(tmp_path / "o.sqlite"),
                       group=f"hl7-{unique}", backoff_base_s=0.05, backoff_cap_s=0.5)
    await bridge.start()
    try:
        await _publish(settings, alerts)
        await _until(lambda: len(rx.accepted) == 2, 60, "2 accepted messages")
    finally:
        await bridge.stop()
        await rx.stop()
    msgs = [hl7.parse(m) for m in rx.accepted]
    assert [str(m.segment("MSH")[10]) for m in msgs] == [a.event_id for a in alerts]
    obx = [{str(s[4]): s for s in m.segments("OBX")} for m in msgs]
    assert str(obx[0]["1.0.0.0.1"][3]).startswith("ST_CHANGE^") and str(obx[0]["1.0.0.0.7"][5]) == "SP"
    assert str(obx[0]["1.0.0.0.2"][5]) == "170.0" and str(obx[0]["1.0.0.0.8"][5]) == "II~III~aVF"
    assert [str(o["1.0.0.0.3"][5]) for o in obx] == ["start", "end"]
    assert str(msgs[0].segment("OBR")[2]) == str(msgs[1].segment("OBR")[2]) == f"{aid}^MIRAGE"
