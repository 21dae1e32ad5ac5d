"""MIRAGE alert -> IHE PCD-04 "Report Alert" message (HL7 v2.6 ORU^R40^ORU_R40).

Follows IHE Patient Care Device Technical Framework Vol. 2 (PCD TF-2), transaction PCD-04, and
the Alarm Communication Management (ACM) profile: one alarm per message, one ``OBR`` whose
OBR-4 is ``196616^MDC_EVT_ALARM^MDC``, and the facets of that alarm as ``OBX`` segments told
apart by OBX-4 (dotted sub-id ``<mds>.<vmd>.<channel>.<metric>.<facet>``)::

    MSH  ... ORU^R40^ORU_R40 ... 2.6 ... AL^NE ... MSH-21 IHE_PCD_ACM_001
    PID  patient: PID-3 pseudonymous id from the alert, PID-5 a pseudonym name (name type S)
    PV1  inpatient, assigned location = the bed
    OBR  placer/filler = alert id, OBR-4 MDC_EVT_ALARM, OBR-7 alert start time
    OBX 1.0.0.0.1  alarm identity (CWE), OBX-5 alarm text, OBX-8 = priority ~ source type
    OBX 1.0.0.0.2  alarm source: MI probability (NM, unit 1), the largest ST change of an
                   ``st_change`` alarm (NM, uV) or the technical condition
    OBX 1.0.0.0.3  68481^MDC_ATTR_EVENT_PHASE  start | update | end
    OBX 1.0.0.0.4  68482^MDC_ATTR_ALARM_STATE  active | inactive
    OBX 1.0.0.0.5  68483^MDC_ATTR_ALARM_INACTIVATION_STATE  enabled
    OBX 1.0.0.0.6  68484^MDC_ATTR_ALARM_PRIORITY  PH | PM | PL
    OBX 1.0.0.0.7  68485^MDC_ATTR_ALERT_TYPE  SP (physiological) | ST (technical)
    OBX 1.0.0.0.8  st_change only: the deviating leads, ``~``-repeated (ST), and per lead
    OBX 1.0.1.n.1  its ST change from the patient's baseline (NM, uV), OBX-3 ``ST_DELTA_<lead>``

OBX-8 (abnormal flags, PCD TF-2 table "Abnormal Flags, Alert Priority / Alert Source") carries
the priority (PH high / PM medium / PL low) and the source type (SP physiological / ST
technical) repeated with ``~``. MIRAGE level 2 -> PH, level 1 -> PM. MI suspicion has no
MDC event code, so its identity is a local code (coding system ``99MIRAGE``, the HL7 convention
for site-local tables); technical conditions map to local codes the same way.

PID-5 (patient name) is required in v2.6. MIRAGE only ever knows a pseudonymous patient id, so it
sends a pseudonym, as HL7 table 0200 provides: family name ``MIRAGE-`` + the first 12 hex digits of
the SHA-256 of the patient id, name type code ``S`` (pseudonym), e.g. ``MIRAGE-3F1A9C0D2B7E^^^^^^S``.
It is stable per patient and reveals nothing the id does not.

ACK^R41 (PCD TF-2 "ORA^R41") is parsed by :func:`parse_ack`: MSA-1 ``AA``/``CA`` = accepted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from engine.config import LEADS
from stream.core.schema import Alert
from stream.errors import WireError

SEG = "\r"
ENCODING_CHARS = "^~\\&"
MSH21_ACM = "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4.4^ISO"
OBR4_ALARM = "196616^MDC_EVT_ALARM^MDC"
LOCAL_CS = "99MIRAGE"
PRIORITY = {2: "PH", 1: "PM", 0: "PL"}
SOURCE_TYPE = {"mi": "SP", "st": "SP", "technical": "ST"}
PHASE_STATE = {"start": "active", "update": "active", "end": "inactive"}
ACCEPTED_ACKS = ("AA", "CA")

FACET_EVENT_PHASE = "68481^MDC_ATTR_EVENT_PHASE^MDC"
FACET_ALARM_STATE = "68482^MDC_ATTR_ALARM_STATE^MDC"
FACET_INACTIVATION = "68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC"
FACET_PRIORITY = "68484^MDC_ATTR_ALARM_PRIORITY^MDC"
FACET_ALERT_TYPE = "68485^MDC_ATTR_ALERT_TYPE^MDC"
MI_PROBABILITY = "MI_PROB^MI probability (MIRAGE)^" + LOCAL_CS
UNIT_ONE = "262656^MDC_DIM_DIMLESS^MDC"
UNIT_UV = "4275^MDC_DIM_MICRO_VOLT^MDC"
ST_MAX_CHANGE = "ST_MAX_DELTA^Largest ST change from baseline (MIRAGE)^" + LOCAL_CS
ST_LEADS = "ST_LEADS^Leads with ST change (MIRAGE)^" + LOCAL_CS


@dataclass(frozen=True)
class Endpoint:
    """MSH sender/receiver identity (MSH-3..6). PCD TF-2 asks for an EUI-64 in MSH-3."""

    sending_app: str = "MIRAGE^0000000000000001^EUI-64"
    sending_facility: str = ""
    receiving_app: str = "ACM"
    receiving_facility: str = ""


_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(text: str) -> str:
    """HL7 v2 escaping (HL7 v2.6 ch. 2.7) of a free-text value; control characters dropped."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(text))
    for raw, esc in _ESCAPES:
        text = text.replace(raw, esc)
    return text


def hl7_ts(ns: int) -> str:
    """HL7 DTM with milliseconds and UTC offset, e.g. ``20261124101500.123+0000``."""
    t = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc)
    return t.strftime("%Y%m%d%H%M%S") + f".{t.microsecond // 1000:03d}+0000"


def pseudonym_name(patient_id: str) -> str:
    """PID-5 (XPN) of a pseudonymised patient: ``MIRAGE-<12 hex of SHA-256(id)>^^^^^^S`` (table 0200 S)."""
    token = hashlib.sha256(str(patient_id).encode("utf-8")).hexdigest()[:12].upper()
    return f"MIRAGE-{token}^^^^^^S"


def priority_of(alert: Alert) -> str:
    return PRIORITY.get(int(alert.level), "PH" if alert.level > 2 else "PL")


def alarm_identity(alert: Alert) -> tuple[str, str]:
    """(OBX-3 CWE, OBX-5 alarm text) of the alert."""
    if alert.alert_type == "mi":
        return f"MI_SUSPECTED^Myocardial infarction suspected^{LOCAL_CS}", "MI suspected (MIRAGE decision support)"
    if alert.alert_type == "st":
        leads = ", ".join(alert.top_leads)
        return f"ST_CHANGE^ST segment change from baseline^{LOCAL_CS}", "ST change from baseline" + (f" in {leads}" if leads else "")
    code = re.sub(r"[^A-Za-z0-9_]", "_", alert.kind).upper() or "TECHNICAL"
    text = alert.kind.replace("_", " ")
    return f"{code}^{escape(text)}^{LOCAL_CS}", f"Technical alert: {text}"


def build_oru_r40(alert: Alert, control_id: str, *, now_ns: int, endpoint: Endpoint = Endpoint(),
                  processing_id: str = "P") -> str:
    """The ORU^R40 message of one alert event, segments joined by carriage returns.

    Args:
        alert: the alert event (any phase, MI or technical).
        control_id: MSH-10, unique per message (the outbox uses the alert's ``event_id``).
        now_ns: message time (MSH-7).
        endpoint: sender/receiver identities.
        processing_id: MSH-11 (``P`` production, ``T`` training, ``D`` debugging).
    """
    if alert.alert_type not in SOURCE_TYPE:
        raise WireError("bad_alert", f"alert_type {alert.alert_type!r} has no HL7 source type")
    if not control_id or len(control_id) > 199:
        raise WireError("bad_control_id", f"control id {control_id!r}")
    prio = priority_of(alert)
    src = SOURCE_TYPE[alert.alert_type]
    start_ts = hl7_ts(alert.window_end_ns)
    event_ts = hl7_ts(alert.emitted_ns or alert.window_end_ns)
    ident, text = alarm_identity(alert)
    bed = escape(alert.bed_id)
    alert_id = escape(alert.alert_id)
    segs = [
        "|".join(["MSH", ENCODING_CHARS, endpoint.sending_app, endpoint.sending_facility, endpoint.receiving_app,
                  endpoint.receiving_facility, hl7_ts(now_ns), "", "ORU^R40^ORU_R40", escape(control_id),
                  processing_id, "2.6", "", "", "AL", "NE", "", "UNICODE UTF-8", "", "", MSH21_ACM]),
        f"PID|||{escape(alert.patient_id)}^^^MIRAGE^PI||{pseudonym_name(alert.patient_id)}",
        f"PV1||I|^^{bed}",
        "|".join(["OBR", "1", f"{alert_id}^MIRAGE", f"{alert_id}^MIRAGE", OBR4_ALARM, "", "", start_ts]),
    ]

    def obx(i: int, vtype: str, ident_: str, facet: int | str, value: str, units: str = "", flags: str = "") -> str:
        # OBX-11 "F" (final), OBX-14 event time, OBX-18 equipment = the source bed; a str facet is a whole sub-id.
        sub_id = f"1.0.0.0.{facet}" if isinstance(facet, int) else facet
        return "|".join(["OBX", str(i), vtype, ident_, sub_id, value, units, "", flags, "", "", "F",
                         "", "", event_ts, "", "", "", f"{bed}^MIRAGE"])

    st_segs: list[str] = []
    if alert.alert_type == "mi":
        prob = "" if alert.probability is None else f"{float(alert.probability):.4f}"
        source = obx(2, "NM", MI_PROBABILITY, 2, prob, UNIT_ONE)
    elif alert.alert_type == "st":
        st = alert.st or {}
        peak = st.get("max_delta_uv")
        source = obx(2, "NM", ST_MAX_CHANGE, 2, "" if peak is None else f"{float(peak):.1f}", UNIT_UV)
        st_segs.append(obx(8, "ST", ST_LEADS, 8, "~".join(escape(lead) for lead in alert.top_leads[:12])))
        delta = st.get("delta_uv") or []
        for k, (lead, d) in enumerate(zip(LEADS, delta), start=1):
            if isinstance(d, (int, float)):
                st_segs.append(obx(8 + len(st_segs), "NM", f"ST_DELTA_{lead}^ST change {lead}^{LOCAL_CS}", f"1.0.1.{k}.1", f"{float(d):.1f}",
                                   UNIT_UV))
    else:
        flags = "~".join(escape(f) for f in alert.quality_flags[:20])
        source = obx(2, "ST", f"QUALITY^Signal quality flags^{LOCAL_CS}", 2, flags)
    segs += [
        obx(1, "ST", ident, 1, escape(text), flags=f"{prio}~{src}"),
        source,
        obx(3, "ST", FACET_EVENT_PHASE, 3, alert.phase),
        obx(4, "ST", FACET_ALARM_STATE, 4, PHASE_STATE[alert.phase]),
        obx(5, "ST", FACET_INACTIVATION, 5, "enabled"),
        obx(6, "ST", FACET_PRIORITY, 6, prio),
        obx(7, "ST", FACET_ALERT_TYPE, 7, src),
        *st_segs,
    ]
    return SEG.join(segs) + SEG


@dataclass(frozen=True)
class AckResult:
    """What the receiver answered: MSA-1 code, MSA-2 control id, MSA-3 text, message type."""

    code: str
    control_id: str
    text: str
    message_type: str

    @property
    def accepted(self) -> bool:
        return self.code in ACCEPTED_ACKS


def parse_ack(message: str) -> AckResult:
    """Parse an ACK (ACK^R41 / ORA^R41 / plain ACK) enough to know whether it accepted.

    Raises:
        WireError: not an HL7 message, or no MSA segment.
    """
    segs = [s for s in re.split(r"\r\n|\r|\n", message) if s]
    if not segs or not segs[0].startswith("MSH") or len(segs[0]) < 8:
        raise WireError("bad_ack", f"reply does not start with MSH: {message[:40]!r}")
    field_sep = segs[0][3]
    msh = segs[0].split(field_sep)
    comp = msh[1][0] if msh[1] else "^"
    mtype = msh[8].split(comp) if len(msh) > 8 else []
    for seg in segs[1:]:
        f = seg.split(field_sep)
        if f[0] == "MSA":
            return AckResult(f[1] if len(f) > 1 else "", f[2] if len(f) > 2 else "", f[3] if len(f) > 3 else "",
                             "^".join(mtype))
    raise WireError("bad_ack", "reply has no MSA segment")


def build_ack(message: str, code: str = "AA", text: str = "", *, now_ns: int) -> str:
    """An ACK^R41 answering ``message`` (what an alarm manager sends; used by tests and demos)."""
    msh = message.split(SEG, 1)[0].split("|")
    control = msh[9] if len(msh) > 9 else ""
    return SEG.join([
        "|".join(["MSH", ENCODING_CHARS, msh[4] if len(msh) > 4 else "", "", msh[2] if len(msh) > 2 else "", "",
                  hl7_ts(now_ns), "", "ACK^R41^ACK", f"ACK{control}"[:199], "P", "2.6"]),
        f"MSA|{code}|{control}|{escape(text)}",
    ]) + SEG
