"""Real-browser end-to-end test of the dashboard (headless Chromium driven by selenium).

``mirage dashboard`` runs as a subprocess against the real broker and Redis. An MI alert start
event is published on the alerts topic (as the worker does); two separate browsers signed in with
the ward token see the bed turn "MI suspected"; acknowledging on the first page turns the bed
"Acknowledged" on the second (through the acks topic). Then the dashboard is restarted: the
second page reconnects by itself and catches up. Screenshots go to ``test-artifacts/``.

ST (issue #19): the worker's per-bed ST view (built by the real :class:`stream.core.st.StTracker`)
is in Redis and the MI alert carries its ST vector; the page shows the current ST of every lead in
uV and mm, a last-hour trend per lead group with the baseline dashed, the MI card names the leads
with the largest ST change, and an ``st_change`` alert is listed on its bed. The ST screenshot is
``test-artifacts/dashboard/4-st.png``; the whole card is ``4-st-card.png`` (copied by hand to
``docs/figures/dashboard_st.png``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
TOKEN = "browser-test-ward-token-42-abcdef"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                "--autoplay-policy=no-user-gesture-required"]


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("headless Chromium and chromedriver are not installed "
                    "(apt-get install -y chromium chromium-driver, or deploy/bootstrap.sh --browser)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e .[dev])")
    return browser, driver


@pytest.fixture
def browsers(tmp_path):
    browser, driver = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    made = []

    def make():
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for flag in CHROME_FLAGS:
            opts.add_argument(flag)
        opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chrome-', dir=tmp_path)}")
        d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
        made.append(d)
        return d

    yield make
    for d in made:
        d.quit()


def _start_dashboard(services, settings_env: dict[str, str], port: int, token_file: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, **settings_env}
    with open(log, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "mirage", "dashboard", "--port", str(port), "--token-file", str(token_file)],
                                env=env, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    from deploy.services import _wait_port

    _wait_port(port, proc, "mirage dashboard", timeout=60)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _login(d, url: str) -> None:
    from selenium.webdriver.common.by import By

    d.get(url + "/")  # redirected to the login form
    assert d.current_url.endswith("/login")
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def _wait_state(d, bed: str, state: str, timeout: float = 60.0):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sel = f'section.bed[data-bed="{bed}"][data-state="{state}"]'
    WebDriverWait(d, timeout, poll_frequency=0.2).until(lambda drv: drv.find_elements(By.CSS_SELECTOR, sel))
    return d.find_element(By.CSS_SELECTOR, sel)


def _publish_alert(bootstrap: str, topic: str, alert) -> None:
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        prod = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await prod.start()
        try:
            await prod.send_and_wait(topic, alert.to_bytes(), key=alert.bed_id.encode())
        finally:
            await prod.stop()

    asyncio.run(run())


def _st_view(bed: str, patient: str, now_ns: int) -> tuple[dict, dict, list]:
    """A bed's ST view after 70 min: a settled hour, then inferior ST rising to +250 uV (real StTracker).

    Returns (dashboard view, the last window's ST vector, st_change events)."""
    from engine.config import LEADS
    from engine.st import StMeasurement
    from stream.core.st import StTracker, st_configs
    from stream.settings import Settings

    tracker = StTracker(*st_configs(Settings()))
    base = np.array([10.0, 20.0, 10.0, -15.0, 0.0, 30.0, 40.0, 60.0, 50.0, 30.0, 15.0, 5.0])
    inferior = [LEADS.index(n) for n in ("II", "III", "aVF")]
    n, hop = 2100, 2  # 70 min of windows
    events, up = [], None
    for k in range(n):
        st = base.copy()
        rise = max(0.0, min(1.0, (k - 1900) / 60))  # from minute 63: +250 uV over 2 min
        st[inferior] += 250.0 * rise
        st[LEADS.index("aVL")] -= 120.0 * rise  # reciprocal depression
        st += 6.0 * np.sin(k / 40.0)
        up = tracker.update(bed, patient, k, now_ns - (n - 1 - k) * hop * 10**9, StMeasurement(st, st, 78.0, 92.0, (), 12, 100.0))
        events += up.events
    return tracker.view(bed), up.vector, events


def test_alert_turns_bed_red_and_ack_shows_on_second_page(services, unique, tmp_path, browsers) -> None:
    from selenium.webdriver.common.by import By

    from deploy.services import create_topics, free_port
    from engine.render import render_paper_png
    from stream.core.schema import Alert

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    alerts_topic, acks_topic = f"alerts-{unique}", f"acks-{unique}"
    create_topics(services.bootstrap, {alerts_topic: 1, acks_topic: 1})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {"MIRAGE_BOOTSTRAP_SERVERS": services.bootstrap, "MIRAGE_REDIS_URL": services.redis_url,
           "MIRAGE_TOPIC_ALERTS": alerts_topic, "MIRAGE_TOPIC_ACKS": acks_topic, "MIRAGE_LOG_LEVEL": "INFO"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dashboard.log"
    proc = _start_dashboard(services, env, port, token_file, log)
    try:
        page1, page2 = browsers(), browsers()
        page1.get(url + "/static/app.js")  # without the token: nothing, not even static files
        assert "EventSource" not in page1.page_source and "unauthorized" in page1.page_source
        _login(page1, url)
        _login(page2, url)
        from selenium.webdriver.support.ui import WebDriverWait

        for p in (page1, page2):  # connected, and the service has read the (empty) topics to their end
            WebDriverWait(p, 60, poll_frequency=0.2).until(lambda d: d.find_element(By.ID, "conn").text == "Live")
            assert p.find_element(By.ID, "empty").is_displayed()

        page1.find_element(By.ID, "sound").click()  # the nurse enables sound (a user gesture)
        WebDriverWait(page1, 10).until(lambda d: d.execute_script("return document.body.dataset.beeps") == "1")
        # the worker's part: an MI alert start event on the alerts topic + its ECG snapshot in Redis
        now = time.time_ns()
        st_view, st_vec, st_events = _st_view("ICU-3", "PSEUDO-3", now)
        alert = Alert(alert_id=f"mi-browser-{unique}", alert_type="mi", kind="mi_suspected", phase="start",
                      bed_id="ICU-3", patient_id="PSEUDO-3", probability=0.94, threshold_start=0.5, threshold_end=0.3,
                      window_start_ns=now - 10 * 10**9, window_end_ns=now, window_seq=12, model_name="mirage",
                      model_version="1", checkpoint_sha="abc", level=2,
                      labs=[{"loinc": "89579-7", "name": "hs-troponin I", "value": 310.0, "unit": "ng/L", "age_s": 1200}],
                      quality_flags=[], top_leads=["V2", "V3", "V4"], emitted_ns=now, st=st_vec)
        t = np.arange(1000) / 100.0
        ecg = np.stack([0.8 * np.sin(2 * np.pi * 1.2 * t + k) for k in range(12)])
        import redis

        r = redis.Redis.from_url(services.redis_url)
        r.set(f"mirage:snapshot:{alert.alert_id}", render_paper_png(ecg, 100.0), ex=600)
        import json

        from stream.core.st import ST_VIEW_KEY, st_change_alert

        r.set(ST_VIEW_KEY.format(bed_id="ICU-3"), json.dumps(st_view), ex=600)
        r.close()
        _publish_alert(services.bootstrap, alerts_topic, alert)
        tech = Alert(alert_id=f"technical-browser-{unique}", alert_type="technical", kind="leads_off", phase="start",
                     bed_id="ICU-4", patient_id="PSEUDO-4", probability=None, threshold_start=None, threshold_end=None,
                     window_start_ns=now - 10 * 10**9, window_end_ns=now, window_seq=3, model_name="mirage",
                     model_version="1", checkpoint_sha="abc", level=1, quality_flags=["missing:V3"], emitted_ns=now)
        _publish_alert(services.bootstrap, alerts_topic, tech)
        from stream.core.st import st_configs
        from stream.settings import Settings

        start = [e for e in st_events if e.phase == "start"][0]
        _publish_alert(services.bootstrap, alerts_topic, st_change_alert(
            start, bed_id="ICU-3", patient_id="PSEUDO-3", window_start_ns=start.window_end_ns - 10 * 10**9, vector=st_vec,
            config=st_configs(Settings())[0], model_name="mirage", model_version="1", checkpoint_sha="abc", emitted_ns=now))

        card1 = _wait_state(page1, "ICU-3", "mi_suspected")
        card2 = _wait_state(page2, "ICU-3", "mi_suspected")
        for card in (card1, card2):
            assert card.find_element(By.CSS_SELECTOR, ".state-label").text == "MI suspected"
            assert card.find_element(By.CSS_SELECTOR, ".prob").text == "94 %"
            assert "Level 2" in card.find_element(By.CSS_SELECTOR, ".level").text
            assert "hs-troponin I" in card.find_element(By.CSS_SELECTOR, ".labs").text
        # a new level-2 alert beeps (WebAudio) where sound is enabled
        WebDriverWait(page1, 10).until(lambda d: d.execute_script("return document.body.dataset.beeps") == "2")
        # a technical alert is shown apart from the MI state: the bed stays "Quiet" with a technical pill
        tech_card = _wait_state(page1, "ICU-4", "quiet")
        WebDriverWait(page1, 10).until(lambda d: "leads off" in tech_card.find_element(By.CSS_SELECTOR, ".tech-pill").text)
        assert tech_card.find_element(By.CSS_SELECTOR, ".state-label").text == "Quiet"
        assert "missing:V3" in tech_card.find_element(By.CSS_SELECTOR, ".techs").text
        assert not tech_card.find_element(By.CSS_SELECTOR, ".mi").is_displayed()
        live = page1.find_element(By.ID, "live")
        assert "MI suspected" in live.get_attribute("textContent") and live.get_attribute("aria-live") == "assertive"
        # the ECG snapshot image loaded (served from Redis through the authenticated endpoint)
        page1.execute_script("arguments[0].scrollIntoView()", card1.find_element(By.CSS_SELECTOR, ".snap img"))
        deadline = time.monotonic() + 20
        while page1.execute_script("const i=arguments[0]; return i.complete ? i.naturalWidth : 0",
                                   card1.find_element(By.CSS_SELECTOR, ".snap img")) == 0:
            assert time.monotonic() < deadline, "ECG snapshot did not load"
            time.sleep(0.2)
        page1.save_screenshot(str(ARTIFACTS / "1-mi-suspected-page1.png"))
        # ST (issue #19): per lead in uV and mm, a last-hour trend per lead group with the baseline, largest changes named
        WebDriverWait(page1, 30, poll_frequency=0.2).until(
            lambda d: card1.find_elements(By.CSS_SELECTOR, '.st-lead[data-lead="III"]'))
        cell = card1.find_element(By.CSS_SELECTOR, '.st-lead[data-lead="III"]').text
        assert "µV" in cell and "mm" in cell and "Δ+" in cell, cell
        assert len(card1.find_elements(By.CSS_SELECTOR, ".st-lead")) == 12
        for group, leads in (("inferior", 3), ("lateral", 4), ("anterior", 4)):
            svg = card1.find_element(By.CSS_SELECTOR, f'svg.st-trend[data-group="{group}"]')
            assert len(svg.find_elements(By.CSS_SELECTOR, "polyline")) == leads
            assert len(svg.find_elements(By.CSS_SELECTOR, "line.baseline")) == leads
        pts = card1.find_element(By.CSS_SELECTOR, 'svg.st-trend[data-group="inferior"] polyline').get_attribute("points")
        assert len(pts.split()) >= 100  # about an hour of 30 s buckets
        assert card1.find_element(By.CSS_SELECTOR, ".st-leads").text.split(",")[0].strip().startswith(("III", "II", "aVF"))
        stc = WebDriverWait(page1, 30, poll_frequency=0.2).until(lambda d: card1.find_elements(By.CSS_SELECTOR, ".stc-item"))
        assert "ST change in II, III, aVF" in stc[0].text
        page1.execute_script("arguments[0].scrollIntoView()", card1.find_element(By.CSS_SELECTOR, ".st-box"))
        page1.save_screenshot(str(ARTIFACTS / "4-st.png"))
        page1.set_window_size(1400, 2600)  # the whole card in one picture
        card1.screenshot(str(ARTIFACTS / "4-st-card.png"))
        page1.set_window_size(1400, 1000)
        page2.save_screenshot(str(ARTIFACTS / "1-mi-suspected-page2.png"))

        page1.find_element(By.ID, "by").send_keys("RN Ada")
        card1.find_element(By.CSS_SELECTOR, "button.ack").click()
        card2 = _wait_state(page2, "ICU-3", "acknowledged", timeout=30)
        assert card2.find_element(By.CSS_SELECTOR, ".state-label").text == "Acknowledged"
        assert "RN Ada" in card2.find_element(By.CSS_SELECTOR, ".acked").text
        _wait_state(page1, "ICU-3", "acknowledged", timeout=30)
        page1.save_screenshot(str(ARTIFACTS / "2-acknowledged-page1.png"))
        page2.save_screenshot(str(ARTIFACTS / "2-acknowledged-page2.png"))

        # restart the service (a network drop for the pages): page 2 reconnects and catches up by itself
        _stop(proc)
        WebDriverWait(page2, 30, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.body.dataset.connected") == "false")
        proc = _start_dashboard(services, env, port, token_file, log)
        WebDriverWait(page2, 60, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.body.dataset.connected") == "true")
        _wait_state(page2, "ICU-3", "acknowledged", timeout=60)
        WebDriverWait(page2, 60, poll_frequency=0.2).until(lambda d: d.find_element(By.ID, "conn").text == "Live")
        page2.save_screenshot(str(ARTIFACTS / "3-after-restart-page2.png"))
    finally:
        _stop(proc)
    assert TOKEN not in log.read_text(), "the token must never be logged"
