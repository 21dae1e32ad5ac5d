"""PCD-04 ORU^R40 messages parsed by the independent ``hl7`` package; MLLP framing; outbox; backoff."""

from __future__ import annotations

import asyncio
import random

import hl7
import pytest

from stream.consumers.hl7.mllp import END, START, Outbox, backoff_s, frame, read_frame
from stream.consumers.hl7.pcd04 import build_ack, build_oru_r40, escape, parse_ack
from stream.core.schema import Alert
from stream.errors import WireError

S = 1_000_000_000
T0 = 1_795_000_000 * S  # 2026-11-18


def make_alert(phase: str = "start", *, alert_type: str = "mi", kind: str = "mi_suspected", level: int = 2,
               prob: float | None = 0.93, bed: str = "ICU-7", flags: list[str] | None = None) -> Alert:
    return Alert(alert_id=f"{alert_type}-0123456789abcdef0123", alert_type=alert_type, kind=kind, phase=phase,
                 bed_id=bed, patient_id="PSEUDO-42", probability=prob, threshold_start=0.5, threshold_end=0.3,
                 window_start_ns=T0 - 10 * S, window_end_ns=T0, window_seq=17, model_name="mirage",
                 model_version="1", checkpoint_sha="abc", level=level, quality_flags=flags or [], emitted_ns=T0 + S)


def obx_by_subid(msg: hl7.Message) -> dict[str, hl7.Segment]:
    return {str(seg[4]): seg for seg in msg.segments("OBX")}


def test_mi_start_message_structure() -> None:
    a = make_alert()
    text = build_oru_r40(a, a.event_id, now_ns=T0 + 2 * S)
    msg = hl7.parse(text)
    assert [str(s[0]) for s in msg] == ["MSH", "PID", "PV1", "OBR"] + ["OBX"] * 7
    msh = msg.segment("MSH")
    assert str(msh[9]) == "ORU^R40^ORU_R40"
    assert str(msh[10]) == a.event_id
    assert str(msh[12]) == "2.6"
    assert str(msh[15]) == "AL" and str(msh[16]) == "NE"
    assert str(msh[21]).startswith("IHE_PCD_ACM_001")
    assert str(msh[7]).startswith("20261118")  # message time in UTC
    assert str(msg.segment("PID")[3]).startswith("PSEUDO-42")
    assert str(msg.segment("PV1")[3]) == "^^ICU-7"
    obr = msg.segment("OBR")
    assert str(obr[4]) == "196616^MDC_EVT_ALARM^MDC"
    assert str(obr[2]).startswith(a.alert_id)
    obx = obx_by_subid(msg)
    assert set(obx) == {f"1.0.0.0.{i}" for i in range(1, 8)}
    ident = obx["1.0.0.0.1"]
    assert str(ident[3]).startswith("MI_SUSPECTED^")
    assert [str(r) for r in ident[8]] == ["PH", "SP"]  # priority ~ source type (repetitions)
    assert str(obx["1.0.0.0.2"][2]) == "NM" and float(str(obx["1.0.0.0.2"][5])) == pytest.approx(0.93)
    assert "MDC_ATTR_EVENT_PHASE" in str(obx["1.0.0.0.3"][3]) and str(obx["1.0.0.0.3"][5]) == "start"
    assert str(obx["1.0.0.0.4"][5]) == "active"
    assert str(obx["1.0.0.0.6"][5]) == "PH"
    assert "MDC_ATTR_ALERT_TYPE" in str(obx["1.0.0.0.7"][3]) and str(obx["1.0.0.0.7"][5]) == "SP"
    assert all(str(s[11]) == "F" for s in msg.segments("OBX"))
    assert str(ident[18]).startswith("ICU-7")  # source bed as equipment instance


@pytest.mark.parametrize("phase,state", [("start", "active"), ("update", "active"), ("end", "inactive")])
def test_phase_and_alarm_state(phase: str, state: str) -> None:
    msg = hl7.parse(build_oru_r40(make_alert(phase), "c1", now_ns=T0))
    obx = obx_by_subid(msg)
    assert str(obx["1.0.0.0.3"][5]) == phase
    assert str(obx["1.0.0.0.4"][5]) == state


def test_level_one_is_medium_priority() -> None:
    obx = obx_by_subid(hl7.parse(build_oru_r40(make_alert(level=1), "c1", now_ns=T0)))
    assert [str(r) for r in obx["1.0.0.0.1"][8]] == ["PM", "SP"]
    assert str(obx["1.0.0.0.6"][5]) == "PM"


def test_technical_alert_is_st_with_quality_flags() -> None:
    a = make_alert(alert_type="technical", kind="leads_off", level=1, prob=None, flags=["missing:V3", "flat:V4"])
    msg = hl7.parse(build_oru_r40(a, a.event_id, now_ns=T0))
    obx = obx_by_subid(msg)
    assert str(obx["1.0.0.0.1"][3]).startswith("LEADS_OFF^leads off^99MIRAGE")
    assert [str(r) for r in obx["1.0.0.0.1"][8]] == ["PM", "ST"]
    assert str(obx["1.0.0.0.7"][5]) == "ST"
    assert [str(r) for r in obx["1.0.0.0.2"][5]] == ["missing:V3", "flat:V4"]


def test_missing_probability_on_discharge_end_leaves_value_empty() -> None:
    obx = obx_by_subid(hl7.parse(build_oru_r40(make_alert("end", prob=None), "c1", now_ns=T0)))
    assert str(obx["1.0.0.0.2"][5]) == ""


def test_delimiters_in_ids_are_escaped() -> None:
    a = make_alert(bed="Ward|3^A&B~C")
    msg = hl7.parse(build_oru_r40(a, "c1", now_ns=T0))
    assert len(msg.segments("OBX")) == 7
    assert str(msg.segment("PV1")[3]) == "^^" + escape("Ward|3^A&B~C")
    assert msg.unescape(str(msg.segment("PV1")[3][0][2])) == "Ward|3^A&B~C"


def test_bad_control_id_is_refused() -> None:
    with pytest.raises(WireError):
        build_oru_r40(make_alert(), "", now_ns=T0)


def test_ack_roundtrip_and_codes() -> None:
    oru = build_oru_r40(make_alert(), "evt-1", now_ns=T0)
    ack_text = build_ack(oru, "AA", now_ns=T0)
    parsed = hl7.parse(ack_text)
    assert str(parsed.segment("MSH")[9]) == "ACK^R41^ACK"
    assert str(parsed.segment("MSA")[2]) == "evt-1"
    res = parse_ack(ack_text)
    assert res.accepted and res.control_id == "evt-1" and res.message_type == "ACK^R41^ACK"
    assert not parse_ack(build_ack(oru, "AE", "busy", now_ns=T0)).accepted
    assert parse_ack(build_ack(oru, "CA", now_ns=T0)).accepted
    with pytest.raises(WireError):
        parse_ack("MSH|^~\\&|X\r")
    with pytest.raises(WireError):
        parse_ack("hello")


def test_mllp_frame_roundtrip() -> None:
    msg = build_oru_r40(make_alert(), "c1", now_ns=T0)
    data = frame(msg)
    assert data.startswith(START) and data.endswith(END)

    async def read() -> str:
        r = asyncio.StreamReader()
        r.feed_data(b"noise" + data)
        r.feed_eof()
        return await read_frame(r)

    assert asyncio.run(read()) == msg


def test_backoff_grows_exponentially_and_is_capped() -> None:
    rng = random.Random(0)
    delays = [backoff_s(n, 0.5, 30.0, rng) for n in range(1, 10)]
    for n, d in enumerate(delays, start=1):
        assert 0.8 * min(30.0, 0.5 * 2 ** (n - 1)) <= d <= min(30.0, 1.2 * 0.5 * 2 ** (n - 1))
    assert delays[-1] <= 30.0 and delays[3] > delays[0] * 4


def test_outbox_is_durable_idempotent_and_ordered(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    assert box.add("e1", "m1", lane="B1", now=1.0)
    assert box.add("e2", "m2", lane="B1", now=2.0)
    assert box.add("e3", "m3", lane="B2", now=3.0)
    assert not box.add("e1", "m1-again", lane="B1", now=4.0)
    assert [i.event_id for i in box.due(now=5.0)] == ["e1", "e2", "e3"]
    assert box.failed("e1", "refused", next_try=100.0) == 1
    # e2 waits behind e1 (same bed); bed B2 is not held back
    assert [i.event_id for i in box.due(now=5.0)] == ["e3"]
    assert box.next_due() == 3.0
    box.close()
    box = Outbox(path)  # a restart keeps everything undelivered
    assert box.pending_count() == 3
    item = box.due(now=200.0)[0]
    assert item.event_id == "e1" and item.attempts == 1 and item.last_error == "refused" and item.message == "m1"
    box.done("e1", "AA")
    box.done("e3", "AA")
    assert box.pending_count() == 1 and box.sent_count() == 2
    assert box.next_due() == 2.0
    box.close()


# -- issue 18: a strict HL7 v2.6 validator accepts every segment we send -------------------------
STRICT_CASES = {
    "mi start": make_alert(),
    "mi end": make_alert("end", level=1, prob=0.2),
    "technical leads_off (low, per lead)": make_alert(alert_type="technical", kind="leads_off", level=0, prob=None,
                                                      flags=["missing:V3", "ignored:RESP"]),
    "technical no_data level 2": make_alert("update", alert_type="technical", kind="no_data", level=2, prob=None),
    "technical backend_failed end": make_alert("end", alert_type="technical", kind="backend_failed", level=1, prob=None),
}


@pytest.mark.parametrize("case", sorted(STRICT_CASES))
def test_every_segment_passes_hl7apy_strict_validation(case: str) -> None:
    """hl7apy at its strict level (required fields, data types, lengths) over each segment. Before
    issue 18 PID failed: PID-5 (patient name, required in v2.6) was empty."""
    hl7apy = pytest.importorskip("hl7apy", reason="hl7apy (dev extra) is not installed")
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_segment

    assert hl7apy
    a = STRICT_CASES[case]
    text = build_oru_r40(a, a.event_id, now_ns=T0 + 2 * S)
    segments = text.rstrip("\r").split("\r")
    assert [s[:3] for s in segments] == ["MSH", "PID", "PV1", "OBR"] + ["OBX"] * 7
    for seg in segments:
        assert parse_segment(seg, version="2.6", validation_level=VALIDATION_LEVEL.STRICT).validate(), seg


def test_pid5_is_a_stable_pseudonym_of_name_type_s() -> None:
    from stream.consumers.hl7.pcd04 import pseudonym_name

    pid = hl7.parse(build_oru_r40(make_alert(), "c1", now_ns=T0)).segment("PID")
    name = str(pid[5])
    assert name == pseudonym_name("PSEUDO-42") and name.endswith("^^^^^^S") and name.startswith("MIRAGE-")
    assert "PSEUDO-42" not in name and pseudonym_name("PSEUDO-43") != name
