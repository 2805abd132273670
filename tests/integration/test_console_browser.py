"""The console page in a real browser: headless Chromium driven by Selenium (docs/console.md).

At the control room's screen size (1280×800), against a real ExamService with the injector
simulator on a pty: a technologist logs in and runs a whole exam through the guided workflow
(the RIS order, the checklist, an exposure arriving, cannulation and air purge, a refused start,
the two-step start, the live pressure trace, STOP from the keyboard, the post-injection images,
complete and close); the login page stops a running injection without a login; a physicist
logs in and acknowledges an alert; the page greys out when the console goes away. Every wait is
a WebDriverWait with a deadline. Screenshots are kept under ``test-artifacts/console/`` (the
repository's root, ignored by git).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from acquisition.commands.demo import ALL_CLEAR
from acquisition.exam_machine import ExamState
from device_drivers.limits import InjectorLimits
from tests.console_room import ACC, ORDER, PASSWORD, Room, console_room
from tests.unit.test_injection_limits import EXAM as EXAM_LIMITS
from tests.unit.test_injection_limits import machine_refusal

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.xdist_group("browser"),
    pytest.mark.skipif(CHROMIUM is None, reason="not installed: chromium"),
    pytest.mark.skipif(
        not os.access(CHROMEDRIVER, os.X_OK), reason="not installed: chromium (chromium-driver)"
    ),
]

S = ExamState
WAIT_S = 20.0
#: Slow enough that a 1 mL injection at 0.3 mL/min runs ~10 s: time to watch it and STOP it.
TIME_SCALE = 20.0
#: The control room's screen.
WINDOW = (1280, 800)


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    # the driver at its default poll rate (0.2 s): the trace the page draws is the product's
    limits = InjectorLimits(baseline_window_s=0.1)
    with console_room(tmp_path, time_scale=TIME_SCALE, limits=limits) as room:
        yield room


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = Options()
    assert CHROMIUM is not None
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(WAIT_S)
        driver.set_script_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


class Page:
    """The console as its user sees it; every wait has a deadline."""

    def __init__(self, driver: WebDriver, room: Room, name: str) -> None:
        self.driver = driver
        self.room = room
        self.name = name
        self.shots = 0
        # The page re-renders from each event: an element found a moment ago may be replaced.
        self.wait = WebDriverWait(
            driver,
            WAIT_S,
            poll_frequency=0.05,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )

    def open(self) -> None:
        self.driver.get(self.room.url)
        self.until(lambda: self.find("#login-form").is_displayed(), "no login page")

    def login(self, user: str, password: str = PASSWORD) -> None:
        self.type("#login-user", user)
        self.type("#login-password", password)
        self.find("#login-password").send_keys(Keys.ENTER)
        self.until(lambda: self.find("#app-view").is_displayed(), f"{user} not logged in")

    def live(self) -> None:
        self.until(lambda: self.text("#conn-state") == "live", "the page never heard the stream")

    def shot(self, what: str) -> Path:
        """A screenshot kept as a test artefact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        path = ARTIFACTS / f"{self.name}-{self.shots:02d}-{what}.png"
        self.driver.save_screenshot(str(path))
        return path

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text.strip()

    def until(self, condition: Callable[[], object], message: str) -> None:
        self.wait.until(lambda _driver: condition(), message)

    def until_state(self, state: ExamState) -> None:
        wanted = state.value.upper()
        self.until(
            lambda: self.text("#exam-state") == wanted,
            f"the page never showed {wanted} (service: {self.room.exam.state.value})",
        )

    def click(self, css: str) -> None:
        """Click once the button is enabled (the page enables it from the state it heard)."""

        def clicked() -> bool:
            element = self.find(css)  # found again on each try: it may have been re-rendered
            if not element.is_displayed() or not element.is_enabled():
                return False
            element.click()
            return True

        self.until(clicked, f"{css} stayed disabled or hidden")

    def type(self, css: str, text: str) -> None:
        """Type into a field once it is shown (its step may be rendered a moment later)."""
        self.until(lambda: self.find(css).is_displayed(), f"{css} is not shown")
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def unobscured(self, css: str) -> bool:
        """Whether the element's centre, scrolled into view, is the element itself (no sticky
        header over it)."""
        return bool(
            self.driver.execute_script(
                "const el = document.querySelector(arguments[0]);"
                "el.scrollIntoView({block: 'nearest'});"
                "const r = el.getBoundingClientRect();"
                "const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
                "return r.bottom <= window.innerHeight && (hit === el || el.contains(hit));",
                css,
            )
        )

    def exposure_rows(self) -> list[list[str]]:
        rows = self.driver.execute_script(
            "return [...document.querySelectorAll('#exposures tbody tr')]"
            ".map((tr) => [...tr.cells].map((td) => td.textContent));"
        )
        return [list(row) for row in rows]

    def trace(self) -> list[dict[str, object]]:
        return list(self.driver.execute_script("return window.galactoTrace.slice();"))


def age_today(birth: dt.date) -> int:
    today = dt.date.today()
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def test_a_technologist_runs_a_whole_exam_through_the_page(room: Room, browser: WebDriver) -> None:
    page = Page(browser, room, "technologist")
    page.open()
    assert not page.find("#login-injection").is_displayed()
    page.shot("login")
    page.login("tech1")
    page.live()
    page.until_state(S.IDLE)
    assert page.text("#injector-state") == "READY"  # connected and idle: not "NOT READY"
    assert page.text("#next-title").startswith("Select the patient's order")

    # The RIS order, on the right breast.
    page.until(
        lambda: browser.find_elements(By.CSS_SELECTOR, f'#orders tbody tr[data-accession="{ACC}"]'),
        "the RIS order is not listed",
    )
    page.find("#side-R").click()
    page.click(f'#orders tbody tr[data-accession="{ACC}"] button.select-order')
    page.until_state(S.CHECKLIST)
    # The patient banner: two identifiers and what they are checked against.
    banner = page.text("#patient-banner")
    age = age_today(dt.date(1980, 3, 4))
    for shown in ("ROE MARY", f"1980-03-04 ({age} y)", "P0077", "RIGHT breast (R)", ACC):
        assert shown in banner, banner
    assert page.text("#pb-sex") == "F"
    page.shot("checklist")

    for item in ("pregnancy_possible", "contrast_allergy", "active_mastitis", "no_discharge"):
        page.find(f"#chk-{item}-no").click()
    page.find("#chk-jewelry_not_removed").click()
    page.click("#btn-pass-checklist")
    page.until_state(S.PRE_CONTRAST)
    assert page.text("#next-title") == "Take the pre-contrast images on the unit"
    assert not page.find("#btn-finish-pre-contrast").is_enabled()
    assert "○ pre-contrast images: 0" in page.text("#next-checks").replace("\n", " ") or (
        page.find("#next-checks li.open").text == "pre-contrast images: 0"
    )

    # The unit's exposure reaches the dose log; the exam notes it; the page shows it.
    room.expose(S.PRE_CONTRAST, seed=1)
    assert room.exam.note_exposures() == 1
    page.until(
        lambda: [row[2] for row in page.exposure_rows()] == ["pre-contrast"],
        "the exposure is not in the table",
    )
    (logged,) = room.dose_log.list_exposures(ACC)
    (row,) = page.exposure_rows()
    assert row[3] == "R" and row[4] == "CC"
    assert row[9] == f"{logged['agd_reported_mgy']:.3f}"
    assert row[10] == f"{logged['agd_computed_mgy']:.3f} (agrees)"  # the Dance check
    assert f"{logged['agd_reported_mgy']:.3f} mGy" in page.text("#agd-R")
    page.until(lambda: page.text("#timer-exposure") != "—", "no time since the last exposure")

    # Keyboard: the next step's button has the focus; Enter presses it.
    page.until(lambda: page.find("#btn-finish-pre-contrast").is_enabled(), "pre-contrast")
    page.find("#btn-finish-pre-contrast").send_keys(Keys.ENTER)
    page.until_state(S.CANNULATION)
    page.click("#btn-confirm-cannulation")
    page.until(lambda: page.text("#next-title") == "Purge the line of air and confirm", "purge")
    page.click("#btn-confirm-air-purge")
    page.until(lambda: page.text("#next-title") == "Inject", "the injection step")
    checks = page.text("#next-checks")
    for met in (
        "checklist passed",
        "cannulation confirmed",
        "line purged of air",
        "injector ready",
    ):
        assert met in checks
    # Limits that know the syringe: a 1 mL syringe, not the 3 mL per-injection limit.
    assert "at most 1.00 mL now (the syringe holds 1.00 mL)" in page.text("#inj-max")
    assert page.unobscured("#btn-start-injection"), "the header covers Start injection"

    # A rate the limits refuse: the page refuses it itself, nothing is sent.
    page.type("#inj-volume", "1")
    page.type("#inj-rate", "5")
    page.click("#btn-start-injection")
    page.until(lambda: page.find("#banner").is_displayed(), "no banner for the refusal")
    assert "the rate 5 mL/min is above the maximum of 1 mL/min" in page.text("#banner-text")
    assert room.sim.run_count == 0 and room.exam.state is S.CANNULATION

    # Two steps: the first click only shows what would be injected.
    page.type("#inj-rate", "0.3")
    page.click("#btn-start-injection")
    page.until(lambda: page.find("#inj-confirm").is_displayed(), "no confirmation step")
    assert page.text("#inj-confirm-text") == "Confirm: inject 1 mL at 0.3 mL/min — right breast"
    assert room.sim.run_count == 0
    page.click("#btn-confirm-injection")

    page.until_state(S.INJECTION_1)
    page.until(lambda: page.text("#injector-state") == "INJECTING", "injector state not shown")
    assert page.find("#btn-stop").is_displayed()
    # The live trace: the samples reach the page, at least 4 per second of the injection.
    page.until(lambda: len(page.trace()) >= 20, "the trace does not grow")
    trace = page.trace()
    span_s = float(trace[-1]["elapsed_s"]) - float(trace[0]["elapsed_s"])  # type: ignore[arg-type]
    assert len(trace) >= 4 * span_s, (len(trace), span_s)
    page.until(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#trace line.termination"),
        "no termination line on the trace",
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#trace polyline.pressure")
    assert browser.find_elements(By.CSS_SELECTOR, "#trace line.warning")
    assert browser.find_elements(By.CSS_SELECTOR, "#trace line.baseline")
    assert "of 1.000 mL" in page.text("#volume-text")
    page.until(lambda: page.text("#timer-injection") != "—", "no time since the injection")
    page.shot("injecting")

    # STOP from the keyboard.
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    page.until_state(S.POST_INJECTION_1)
    page.until(lambda: not page.find("#btn-stop").is_displayed(), "STOP still shown")
    assert 0 < room.exam.facts().volume_given_ml < 1.0
    assert room.sim.run_count == 1
    page.until(lambda: "130154" in page.text("#injector-events"), "the operator stop is not listed")

    # Images after the injection, then complete and close.
    assert page.text("#next-title") == "Take the post-injection images on the unit"
    room.expose(S.POST_INJECTION_1, seed=2, view="ML", CompressionForce=-20)  # implausible
    room.exam.note_exposures()
    page.until(lambda: len(page.exposure_rows()) == 2, "the second exposure is not shown")
    second = page.exposure_rows()[1]
    assert second[12].startswith("⚠ plausibility: (open, alert ")  # beside the exposure
    page.until(lambda: "1 open alert(s)" in page.text("#agd-R"), "the open alert per breast")
    page.shot("post-injection")
    page.click("#btn-complete")
    page.until_state(S.COMPLETED)
    page.click("#btn-close")
    page.until_state(S.IDLE)
    commands = [e for e in room.journal.entries() if e.kind == "command"]
    assert {e.operator for e in commands} == {"tech1"}
    assert all(e.payload["console"]["session"] != "no session" for e in commands)


def to_cannulation(room: Room) -> None:
    """The steps before an injection, through the service."""
    room.exam.select_order(ORDER, "R", "tech1")
    assert room.exam.answer_checklist(ALL_CLEAR, "tech1")
    room.exam.pass_checklist("tech1")
    room.expose(S.PRE_CONTRAST, seed=1)
    room.exam.note_exposures()
    room.exam.finish_pre_contrast("tech1")
    room.exam.confirm_cannulation("tech1")


def test_the_login_page_stops_a_running_injection(room: Room, browser: WebDriver) -> None:
    page = Page(browser, room, "login-stop")
    to_cannulation(room)
    room.exam.confirm_air_purge("tech1")
    room.exam.start_injection(1.0, 0.3, "tech1")
    page.open()
    page.until(lambda: page.find("#login-injection").is_displayed(), "no running injection")
    assert "right breast" in page.text("#login-injection-text")
    assert "ROE" not in page.text("#login-view")  # no patient identity without a login
    page.shot("injecting")
    page.click("#login-stop")
    assert room.exam.wait_for_state(S.POST_INJECTION_1, WAIT_S)
    page.until(lambda: not page.find("#login-injection").is_displayed(), "still injecting")
    (stop,) = [
        e for e in room.journal.entries() if e.kind == "command" and e.payload["command"] ==
        "stop-injection"
    ]  # fmt: skip
    assert stop.operator == "no session" and stop.payload["console"]["client"] == "127.0.0.1"


def test_a_physicist_acknowledges_an_alert(room: Room, browser: WebDriver) -> None:
    to_cannulation(room)
    room.expose(S.PRE_CONTRAST, seed=2, view="ML", CompressionForce=-20)  # an alert
    (alert,) = room.dose_log.alerts(open_only=True)
    page = Page(browser, room, "physicist")
    page.open()
    page.login("phys1")
    assert not page.find("#tech-view").is_displayed()
    page.until(
        lambda: browser.find_elements(
            By.CSS_SELECTOR, f'#alerts-table tr[data-alert="{alert["id"]}"]'
        ),
        "the open alert is not listed",
    )
    page.until(
        lambda: len(browser.find_elements(By.CSS_SELECTOR, "#dose-table tbody tr")) == 2, "rows"
    )
    text = page.text("#phys-view")
    for identifier in ("ROE", ORDER.patient.id, ACC):  # pseudonymised: no identity
        assert identifier not in text
    assert "compression_force_n -20 N" in text
    page.shot("alerts")
    row = f'#alerts-table tr[data-alert="{alert["id"]}"]'
    page.type(f"{row} input.ack-reason", "phantom test on the clinical protocol")
    page.click(f"{row} button.ack")
    page.until(lambda: "No open alert." in page.text("#alerts-table"), "the alert is still open")
    acknowledged = room.dose_log.alert(alert["id"])
    assert acknowledged is not None and acknowledged["acknowledged_by"] == "phys1"
    assert acknowledged["acknowledgement_reason"] == "phantom test on the clinical protocol"
    assert page.find("#report-link").get_attribute("href").endswith("/api/dose/report")
    page.shot("acknowledged")


def test_the_page_greys_out_when_the_console_is_gone(room: Room, browser: WebDriver) -> None:
    page = Page(browser, room, "offline")
    page.open()
    page.login("tech1")
    page.live()
    room.server.stop()
    page.until(lambda: page.text("#conn-state") == "OFFLINE — state is stale", "still live")
    assert "stale" in (browser.find_element(By.TAG_NAME, "body").get_attribute("class") or "")
    page.shot("offline")


def test_an_unscheduled_patient_and_a_checklist_that_does_not_pass(
    room: Room, browser: WebDriver
) -> None:
    page = Page(browser, room, "unscheduled")
    page.open()
    page.login("tech1")
    page.until_state(S.IDLE)
    page.find("#unscheduled summary").click()
    page.type("#reg-family", "DOE")
    page.type("#reg-given", "JANE")
    page.type("#reg-patient-id", "LOCAL-1")
    page.type("#reg-birth-date", "03122001")
    page.find("#side-L").click()
    page.find("#btn-register").click()
    page.until_state(S.CHECKLIST)
    assert page.text("#pb-name") == "DOE JANE" and page.text("#pb-side") == "LEFT breast (L)"

    page.find("#chk-pregnancy_possible-yes").click()
    for item in ("contrast_allergy", "active_mastitis", "no_discharge"):
        page.find(f"#chk-{item}-no").click()
    page.click("#btn-pass-checklist")
    page.until(lambda: "NOT passed" in page.text("#checklist-result"), "no checklist result")
    assert "Pregnancy possible" in page.text("#checklist-result")
    assert room.exam.state is S.CHECKLIST

    # Discontinue is at hand: two steps, with a CID 9301 reason.
    options = browser.find_elements(By.CSS_SELECTOR, "#discontinue-reason option")
    next(o for o in options if o.text == "Patient pregnant").click()
    page.click("#btn-discontinue")
    page.until(lambda: page.find("#discontinue-confirm").is_displayed(), "no confirmation")
    page.click("#btn-confirm-discontinue")
    page.until_state(S.DISCONTINUED)
    assert page.text("#next-title") == "Close the exam to free the room"


def test_a_volume_the_pump_cannot_honour_is_refused_and_a_fault_says_why(
    room: Room, browser: WebDriver
) -> None:
    page = Page(browser, room, "fault")
    page.open()
    page.login("tech1")
    to_cannulation(room)
    page.until_state(S.CANNULATION)
    page.type("#purge-loaded-ml", "0.6")
    page.click("#btn-confirm-air-purge")
    page.until(lambda: "at most 0.60 mL now" in page.text("#inj-max"), "the syringe-aware limit")

    page.type("#inj-volume", "0.0004")
    page.type("#inj-rate", "0.3")
    page.click("#btn-start-injection")
    page.until(lambda: page.find("#banner").is_displayed(), "no banner for the refusal")
    assert "0.0004 mL is below the minimum of 0.05 mL" in page.text("#banner-text")
    assert room.sim.run_count == 0 and room.exam.state is S.CANNULATION

    room.sim.add_fault("ignore_volume")
    page.type("#inj-volume", "0.2")
    page.click("#btn-start-injection")
    page.click("#btn-confirm-injection")
    page.until_state(S.FAULT)
    page.until(lambda: "130160" in page.text("#fault-code"), "no CID 71 code")
    assert page.text("#injector-state") == "FAULT"
    assert page.text("#fault-reason") == "controller stop: over-delivery"
    assert float(page.text("#fault-delivered").split()[0]) > 0.2
    assert "Acknowledge the fault" in page.text("#fault-next")
    assert page.text("#next-title") == "The injector stopped: read why, then acknowledge"
    page.shot("fault")

    # Acknowledged with what the technologist found: the page asks for it first.
    page.click("#btn-acknowledge-fault")
    page.until(lambda: "Say what you found" in page.text("#banner-text"), "no reason asked")
    assert room.exam.state is S.FAULT
    page.type("#fault-ack-reason", "injector taken out of use")
    page.click("#btn-acknowledge-fault")
    page.until(lambda: page.text("#exam-state") != "FAULT", "the fault is still shown")
    (ack,) = [
        e for e in room.journal.entries()
        if e.kind == "command" and e.payload["command"] == "acknowledge-fault"
    ]  # fmt: skip
    assert ack.payload["reason"] == "injector taken out of use" and ack.operator == "tech1"


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    volume_ml=st.floats(min_value=1e-6, max_value=3.0, allow_nan=False),
    rate_ml_min=st.floats(min_value=1e-6, max_value=1.0, allow_nan=False),
)
def test_the_pages_own_check_refuses_what_the_machine_refuses(
    room: Room, browser: WebDriver, volume_ml: float, rate_ml_min: float
) -> None:
    """The page's validation (before anything is sent) and the machine's interlock agree on
    every volume and rate: every value below a minimum is refused by both."""
    if browser.current_url != room.url:
        browser.get(room.url)
    limits = EXAM_LIMITS
    page_says = browser.execute_script(
        "return injectionRefusal(arguments[0], arguments[1], arguments[2]);",
        volume_ml,
        rate_ml_min,
        {
            "min_volume_ml": limits.min_volume_ml,
            "min_rate_ml_min": limits.min_rate_ml_min,
            "max_rate_ml_min": limits.max_rate_ml_min,
            "max_injection_s": limits.max_injection_s,
            "max_volume_ml_now": limits.max_volume_per_injection_ml,
        },
    )
    machine_says = machine_refusal(volume_ml, rate_ml_min)
    assert (page_says is None) == (machine_says is None), (page_says, machine_says)
    if volume_ml < limits.min_volume_ml or rate_ml_min < limits.min_rate_ml_min:
        assert page_says is not None and "below the minimum" in page_says
