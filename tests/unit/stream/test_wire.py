"""Wire format v1: round trips (property-based) and hostile input (fuzz) for chunks and lab results."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core.schema import (
    Alert,
    EcgChunk,
    LabResult,
    decode_chunk,
    encode_chunk,
    make_alert_id,
)
from stream.errors import WireError

LEAD_NAMES = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=40).filter(str.isprintable)


@st.composite
def chunks(draw) -> EcgChunk:
    n_leads = draw(st.integers(1, 12))
    n = draw(st.integers(0, 300))
    gain = draw(st.sampled_from([0.5, 1.0, 2.5, 4.88]))
    counts = draw(st.lists(st.integers(-32767, 32767), min_size=n_leads * n, max_size=n_leads * n))
    samples = np.array(counts, dtype=np.float64).reshape(n_leads, n) * gain / 1000.0
    if n and draw(st.booleans()):
        samples[draw(st.integers(0, n_leads - 1)), draw(st.integers(0, n - 1))] = np.nan
    return EcgChunk(draw(ids), draw(ids), draw(st.integers(0, 2**64 - 1)), draw(st.integers(-(2**63), 2**63 - 1)),
                    draw(st.sampled_from([100.0, 250.0, 257.0, 500.0, 1000.0])), tuple(LEAD_NAMES[:n_leads]),
                    samples.astype(np.float32), draw(st.booleans()), gain)


@given(chunks())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_chunk_round_trip(chunk: EcgChunk) -> None:
    out = decode_chunk(encode_chunk(chunk))
    assert (out.bed_id, out.patient_id, out.seq, out.start_ns, out.fs, out.leads, out.end_of_stream) == (
        chunk.bed_id, chunk.patient_id, chunk.seq, chunk.start_ns, chunk.fs, chunk.leads, chunk.end_of_stream)
    assert out.samples.shape == chunk.samples.shape
    np.testing.assert_array_equal(np.isnan(out.samples), np.isnan(chunk.samples))
    ok = ~np.isnan(chunk.samples)
    # quantisation: half a count
    assert np.all(np.abs(out.samples[ok] - chunk.samples[ok]) <= chunk.gain_uv / 2000.0 + 1e-6)


def test_encoding_is_compact_versus_json() -> None:
    rng = np.random.default_rng(0)
    c = EcgChunk("bed-7", "p-7", 1, 0, 500.0, tuple(LEAD_NAMES), rng.normal(0, 0.5, (12, 250)).astype(np.float32))
    binary = encode_chunk(c)
    as_json = json.dumps({"samples": np.round(c.samples, 3).tolist()}).encode()
    assert len(binary) < len(as_json) / 2.5
    assert len(binary) == 36 + 2 + 5 + 2 + 3 + sum(1 + len(n) for n in LEAD_NAMES) + 12 * 250 * 2


@given(st.binary(max_size=2048))
@settings(max_examples=400, deadline=None)
def test_random_bytes_never_escape_as_anything_but_wire_error(data: bytes) -> None:
    try:
        decode_chunk(data)
    except WireError as exc:
        assert exc.reason and isinstance(exc.detail, str)


@given(chunks(), st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_truncated_or_corrupted_chunks_are_rejected_or_valid(chunk: EcgChunk, data) -> None:
    raw = bytearray(encode_chunk(chunk))
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(WireError):
        decode_chunk(bytes(raw[:cut]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    try:
        out = decode_chunk(bytes(raw))
        assert out.samples.shape[0] == len(out.leads)
    except WireError:
        pass


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b"XXXX" + b[4:], "bad_magic"),
        (lambda b: b[:4] + bytes([9]) + b[5:], "bad_version"),
        (lambda b: b[:6] + bytes([0]) + b[7:], "bad_lead_count"),
        (lambda b: b[:8] + struct.pack("<f", float("nan")) + b[12:], "bad_rate"),
        (lambda b: b[:8] + struct.pack("<f", 1e9) + b[12:], "bad_rate"),
        (lambda b: b[:8] + struct.pack("<f", 0.0) + b[12:], "bad_rate"),
        (lambda b: b[:12] + struct.pack("<f", float("inf")) + b[16:], "bad_gain"),
        (lambda b: b + b"\x00\x00", "bad_length"),
        (lambda b: b[:-1], "bad_length"),
    ],
)
def test_specific_rejections_name_the_reason(mutate, reason: str) -> None:
    c = EcgChunk("bed-1", "p-1", 5, 10, 500.0, ("I", "II"), np.zeros((2, 10), np.float32))
    with pytest.raises(WireError) as err:
        decode_chunk(mutate(encode_chunk(c)))
    assert err.value.reason == reason


def test_huge_message_rejected_before_parsing() -> None:
    with pytest.raises(WireError) as err:
        decode_chunk(b"\x00" * 100, max_bytes=50)
    assert err.value.reason == "too_large" and "100" in str(err.value)


def test_duplicate_lead_names_rejected() -> None:
    c = EcgChunk("b", "p", 0, 0, 500.0, ("I", "I"), np.zeros((2, 3), np.float32))
    with pytest.raises(WireError, match="duplicate_lead"):
        decode_chunk(encode_chunk(c))


# ---- lab results -----------------------------------------------------------------------------

def _lab(**kw) -> bytes:
    base = {"patient_id": "p-1", "loinc": "89579-7", "value": 34.0, "unit": "ng/L", "observed_ns": 1_700_000_000_000_000_000}
    base.update(kw)
    return json.dumps(base).encode()


def test_lab_round_trip_and_unit_conversion() -> None:
    lab = LabResult.from_bytes(_lab(value=0.034, unit="ng/mL"))
    assert lab.canonical_value() == pytest.approx(34.0)
    assert LabResult.from_bytes(lab.to_bytes()) == lab
    creat = LabResult.from_bytes(_lab(loinc="2160-0", value=88.42, unit="umol/L"))
    assert creat.canonical_value() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("payload", "reason", "named"),
    [
        (_lab(loinc="0000-0"), "bad_lab", "0000-0"),
        (_lab(unit="furlongs"), "bad_lab", "furlongs"),
        (_lab(value=-5.0), "bad_lab", "-5.0"),
        (b"{not json", "bad_json", ""),
        (b"[1,2]", "bad_json", "list"),
        (json.dumps({"loinc": "89579-7"}).encode(), "missing_field", "patient_id"),
        (_lab(value="high"), "bad_field", "high"),
        (_lab(observed_ns=True), "bad_field", "True"),
        (b"\xff\xfe", "bad_json", ""),
    ],
)
def test_bad_lab_results_are_rejected_with_reason(payload: bytes, reason: str, named: str) -> None:
    with pytest.raises(WireError) as err:
        LabResult.from_bytes(payload)
    assert err.value.reason == reason
    assert named in str(err.value)


def test_lab_nan_and_inf_rejected() -> None:
    for bad in (b"NaN", b"Infinity", b"1e999"):
        payload = _lab().replace(b"34.0", bad)
        with pytest.raises(WireError):
            LabResult.from_bytes(payload)


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_lab_parser_fuzz(data: bytes) -> None:
    try:
        LabResult.from_bytes(data)
    except WireError:
        pass


@given(st.dictionaries(st.sampled_from(["patient_id", "loinc", "value", "unit", "observed_ns", "reported_ns", "bed_id"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)), max_size=7))
@settings(max_examples=300, deadline=None)
def test_lab_parser_structured_fuzz(obj: dict) -> None:
    try:
        LabResult.from_bytes(json.dumps(obj).encode())
    except WireError:
        pass


# ---- alerts ------------------------------------------------------------------------------------

def test_alert_ids_are_deterministic_and_round_trip() -> None:
    a1 = make_alert_id("mi", "mi_suspected", "bed-3", "p-3", 123)
    assert a1 == make_alert_id("mi", "mi_suspected", "bed-3", "p-3", 123)
    assert a1 != make_alert_id("mi", "mi_suspected", "bed-3", "p-3", 124)
    alert = Alert(a1, "mi", "mi_suspected", "start", "bed-3", "p-3", 0.93, 0.6, 0.4, 0, 123, 7, "mirage", "v", "sha",
                  labs=[{"loinc": "89579-7", "value": 40.0, "age_s": 300.0}], top_leads=["II", "III", "aVF"])
    back = Alert.from_bytes(alert.to_bytes())
    assert back == alert and back.event_id == f"{a1}:start:7"


def test_alert_rejects_unknown_phase() -> None:
    with pytest.raises(WireError, match="phase"):
        Alert("x", "mi", "k", "begin", "b", "p", None, None, None, 0, 0, 0, "m", "v", "s")
