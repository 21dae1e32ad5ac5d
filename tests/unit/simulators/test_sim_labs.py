"""The lab simulator: reference baselines, infarct kinetics, draw schedule and turnaround."""

from __future__ import annotations

import numpy as np
import pytest

from engine.labs import LAB_BY_LOINC, lab_feature
from simulators.errors import SimulatorError
from simulators.labs import CKMB, KINETICS, TNI, TNT, LabPatient, LabSchedule, bateman, simulate_labs
from stream.core.schema import LabResult

HOUR = 3600.0


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("loinc", [TNI, TNT])
def test_troponin_crosses_99th_percentile_within_3h_of_onset(seed: int, loinc: str) -> None:
    """Documented: above the 99th percentile within ~1-3 h of onset, even for a small infarct."""
    p = LabPatient.draw(np.random.default_rng(seed), mi_onset_s=0.0, size=0.3)
    url = lab_feature(loinc).upper_reference
    assert p.true_value(loinc, -60.0) < url  # before onset: normal
    crossed = next(t for t in np.arange(0, 6 * HOUR, 60.0) if p.true_value(loinc, t) > url)
    assert crossed <= 3 * HOUR


def test_troponin_peaks_at_12_to_24h_and_falls_slowly_ckmb_falls_faster() -> None:
    hours = np.arange(0, 240, 0.25)
    tn = np.array([bateman(h, *KINETICS[TNI]) for h in hours])
    ck = np.array([bateman(h, *KINETICS[CKMB]) for h in hours])
    assert 10 <= hours[np.argmax(tn)] <= 24
    assert tn[hours == 96][0] > 0.2  # still well above baseline on day 4
    assert ck[hours == 72][0] < 0.05  # CK-MB back to baseline by ~3 days
    p = LabPatient.draw(np.random.default_rng(1), mi_onset_s=0.0)
    assert p.true_value(TNI, 96 * HOUR) > 10 * lab_feature(TNI).upper_reference
    assert p.true_value(CKMB, 96 * HOUR) < 2 * p.baseline[CKMB] + 1


def test_reference_baselines_match_published_distributions() -> None:
    rng = np.random.default_rng(0)
    tni = np.array([LabPatient.draw(rng).baseline[TNI] for _ in range(2000)])
    assert 2.0 < np.median(tni) < 4.5
    assert np.all(tni <= lab_feature(TNI).upper_reference)  # reference patients are below the URL
    k = np.array([LabPatient.draw(rng).baseline["2823-3"] for _ in range(500)])
    assert 4.0 < k.mean() < 4.4


def test_schedule_and_turnaround() -> None:
    p = LabPatient.draw(np.random.default_rng(3), mi_onset_s=-2 * HOUR)
    sched = LabSchedule(troponin="I")
    draws = simulate_labs(p, sched, presentation_s=0.0, until_s=30 * HOUR, seed=3)
    times = sorted({d.observed_s for d in draws})
    assert times[:3] == [0.0, 1 * HOUR, 3 * HOUR]
    gaps = np.diff(times[2:])
    assert len(gaps) >= 2 and np.all((gaps >= 6 * HOUR) & (gaps <= 8 * HOUR))
    for d in draws:
        assert 45 * 60 <= d.reported_s - d.observed_s <= 60 * 60
    first = {d.loinc for d in draws if d.observed_s == 0.0}
    assert first == set(LAB_BY_LOINC) - {TNT}  # full panel with the site's troponin I
    assert {d.loinc for d in draws if d.observed_s == 1 * HOUR} == {TNI}
    assert [d.reported_s for d in draws] == sorted(d.reported_s for d in draws)
    rising = [d.value for d in draws if d.loinc == TNI][:3]
    assert rising[0] < rising[1] < rising[2]


def test_results_are_valid_wire_messages() -> None:
    p = LabPatient.draw(np.random.default_rng(4), mi_onset_s=-5 * HOUR)
    for d in simulate_labs(p, LabSchedule(troponin="both"), -HOUR, 20 * HOUR, seed=4):
        msg = LabResult("SIM-X", d.loinc, d.value, d.unit, int(d.observed_s * 1e9), int(d.reported_s * 1e9))
        back = LabResult.from_bytes(msg.to_bytes())
        assert back.canonical_value() == pytest.approx(d.value)


def test_same_seed_same_results() -> None:
    def run(seed: int) -> list:
        p = LabPatient.draw(np.random.default_rng(seed), mi_onset_s=0.0)
        return simulate_labs(p, LabSchedule(), 0.0, 24 * HOUR, seed=seed)

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_bad_schedule_names_the_value() -> None:
    with pytest.raises(SimulatorError, match="'X'"):
        LabSchedule(troponin="X")
    with pytest.raises(SimulatorError, match=r"\(9.0, 2.0\)"):
        LabSchedule(repeat_h=(9.0, 2.0))
