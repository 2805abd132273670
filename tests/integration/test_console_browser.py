"""The console page in a real browser: headless Chromium driven by Selenium (docs/console.md).

A technologist's whole pass through the page, against a real ExamService with the injector
simulator on a pty: pick the RIS order, answer the checklist, watch an exposure arrive, confirm
cannulation and air purge, start an injection with the two-step confirmation, stop it with the
STOP button, complete and close. Every wait is a WebDriverWait with a deadline.
"""

from __future__ import annotations

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
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from acquisition.commands.demo import ALL_CLEAR
from acquisition.exam_machine import ExamState
from tests.console_room import ACC, ORDER, Room, console_room
from tests.unit.test_injection_limits import EXAM as EXAM_LIMITS
from tests.unit.test_injection_limits import machine_refusal

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.xdist_group("browser"),
    pytest.mark.skipif(CHROMIUM is None, reason="not installed: chromium"),
    pytest.mark.skipif(
        not os.access(CHROMEDRIVER, os.X_OK), reason="not installed: chromium (chromium-driver)"
    ),
]

S = ExamState
WAIT_S = 20.0
#: Slow enough that a 1 mL injection at 0.3 mL/min runs ~10 s: time to press STOP.
TIME_SCALE = 20.0


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    with console_room(tmp_path, time_scale=TIME_SCALE) as room:
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
        "--window-size=1400,1000",
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
    """The console as a technologist sees it; every wait has a deadline."""

    def __init__(self, driver: WebDriver, room: Room) -> None:
        self.driver = driver
        self.room = room
        # The page re-renders from each poll: an element found a moment ago may be replaced.
        self.wait = WebDriverWait(
            driver,
            WAIT_S,
            poll_frequency=0.05,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )

    def open(self) -> None:
        self.driver.get(self.room.url)
        self.until(lambda: self.text("#conn-state") == "live", "the page never polled")

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
        """Click once the button is enabled (the page enables it from the polled state)."""

        def clicked() -> bool:
            element = self.find(css)  # found again on each try: it may have been re-rendered
            if not element.is_enabled():
                return False
            element.click()
            return True

        self.until(clicked, f"{css} stayed disabled")

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def exposure_rows(self) -> list[list[str]]:
        """The cells of the exposures table, read in one go (the table may be re-rendered)."""
        rows = self.driver.execute_script(
            "return [...document.querySelectorAll('#exposures tbody tr')]"
            ".map((tr) => [...tr.cells].map((td) => td.textContent));"
        )
        return [list(row) for row in rows]


def test_a_whole_pass_through_the_console(room: Room, browser: WebDriver) -> None:
    page = Page(browser, room)
    page.open()
    page.until_state(S.IDLE)
    page.type("#operator", "tech1")

    # The RIS order, on the right breast.
    page.until(
        lambda: browser.find_elements(By.CSS_SELECTOR, f'#orders tbody tr[data-accession="{ACC}"]'),
        "the RIS order is not listed",
    )
    page.find("#side-R").click()
    page.click(f'#orders tbody tr[data-accession="{ACC}"] button.select-order')
    page.until_state(S.CHECKLIST)
    assert page.text("#exam-patient") == "ROE MARY · R"
    assert page.text("#order-accession") == ACC

    # The checklist: blocking items answered "no", one recorded item ticked.
    for item in ("pregnancy_possible", "contrast_allergy", "active_mastitis", "no_discharge"):
        page.find(f"#chk-{item}-no").click()
    page.find("#chk-jewelry_not_removed").click()
    page.click("#btn-pass-checklist")
    page.until_state(S.PRE_CONTRAST)
    assert not page.find("#btn-finish-pre-contrast").is_enabled()
    assert "pre-contrast exposure" in page.text("#why-finish-pre-contrast")

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
    assert "EUREF acceptable" in row[11] and row[12] == "—"  # levels, no alert
    assert f"{logged['agd_reported_mgy']:.3f} mGy" in page.text("#agd-R")

    page.click("#btn-finish-pre-contrast")
    page.until_state(S.CANNULATION)
    page.click("#btn-confirm-cannulation")
    page.until(lambda: page.text("#fact-cannulation") == "confirmed", "cannulation")
    page.click("#btn-confirm-air-purge")
    page.until(lambda: page.text("#fact-air-purge") == "confirmed", "air purge")

    # A rate the limits refuse: the page refuses it itself (the banner says why), nothing is
    # sent, nothing is injected.
    page.type("#inj-volume", "1")
    page.type("#inj-rate", "5")
    page.click("#btn-start-injection")
    page.until(lambda: page.find("#banner").is_displayed(), "no banner for the refusal")
    assert "Start injection refused" in page.text("#banner-text")
    assert "the rate 5 mL/min is above the maximum of 1 mL/min" in page.text("#banner-text")
    assert not page.find("#inj-confirm").is_displayed()
    assert room.sim.run_count == 0 and room.exam.state is S.CANNULATION

    # Two steps: the first click only shows what would be injected.
    page.type("#inj-rate", "0.3")
    page.click("#btn-start-injection")
    page.until(lambda: page.find("#inj-confirm").is_displayed(), "no confirmation step")
    assert page.text("#inj-confirm-text") == "Confirm: inject 1 mL at 0.3 mL/min — right breast"
    assert room.exam.state is S.CANNULATION and room.sim.run_count == 0
    page.click("#btn-confirm-injection")

    page.until_state(S.INJECTION_1)
    page.until(lambda: page.text("#injector-state") == "INJECTING", "injector state not shown")
    assert page.find("#btn-stop").is_displayed()
    assert not page.find("#inj-confirm").is_displayed()
    page.until(
        lambda: (
            page.text("#injector-volume").endswith("/ 1.00 mL")
            and not page.text("#injector-volume").startswith("0.00")
        ),
        "the delivered volume never moved",
    )
    assert page.text("#injector-pressure").endswith("kPa")

    page.find("#btn-stop").click()
    page.until_state(S.POST_INJECTION_1)
    page.until(lambda: not page.find("#btn-stop").is_displayed(), "STOP still shown")
    given = room.exam.facts().volume_given_ml
    assert 0 < given < 1.0
    assert room.sim.run_count == 1
    assert page.text("#fact-injections").startswith("1 of at most 2")

    # Images after the injection, then complete and close.
    assert not page.find("#btn-complete").is_enabled()
    assert "no post-injection exposure" in page.text("#why-complete")
    room.expose(S.POST_INJECTION_1, seed=2, view="ML", CompressionForce=-20)  # implausible
    room.exam.note_exposures()
    page.until(lambda: len(page.exposure_rows()) == 2, "the second exposure is not shown")
    second = page.exposure_rows()[1]
    assert second[12].startswith("⚠ plausibility: (open, alert ")  # beside the exposure
    assert "compression_force_n -20 N outside [0, 300] N" in second[13]
    assert "1 event(s) left out" in page.text("#agd-R")
    page.click("#btn-complete")
    page.until_state(S.COMPLETED)
    page.click("#btn-close")
    page.until_state(S.IDLE)
    assert not page.find("#banner").is_displayed()


def test_an_unscheduled_patient_and_a_checklist_that_does_not_pass(
    room: Room, browser: WebDriver
) -> None:
    page = Page(browser, room)
    browser.get(room.url)
    browser.execute_script("localStorage.clear()")
    page.open()
    page.until_state(S.IDLE)

    page.type("#reg-family", "DOE")
    page.type("#reg-given", "JANE")
    page.type("#reg-patient-id", "LOCAL-1")
    page.find("#side-L").click()

    # No operator: nothing is sent.
    page.find("#btn-register").click()
    page.until(lambda: page.find("#banner").is_displayed(), "no banner without an operator")
    assert "Enter your name" in page.text("#banner-text")
    assert room.exam.state is S.IDLE

    page.type("#operator", "tech2")
    page.find("#btn-register").click()
    page.until_state(S.CHECKLIST)
    assert page.text("#exam-patient") == "DOE JANE · L"
    assert page.text("#order-exam-id").endswith("(unscheduled)")
    assert not page.find("#banner").is_displayed()  # the success cleared it

    # Pregnancy possible, no override: recorded, not passed, the reason shown.
    page.find("#chk-pregnancy_possible-yes").click()
    for item in ("contrast_allergy", "active_mastitis", "no_discharge"):
        page.find(f"#chk-{item}-no").click()
    page.click("#btn-pass-checklist")
    page.until(lambda: "NOT passed" in page.text("#checklist-result"), "no checklist result")
    assert "Pregnancy possible" in page.text("#checklist-result")
    assert room.exam.state is S.CHECKLIST
    assert browser.execute_script("return localStorage.getItem('galacto.console.operator')") == (
        "tech2"
    )

    # Discontinue: two steps, with a CID 9301 reason.
    options = browser.find_elements(By.CSS_SELECTOR, "#discontinue-reason option")
    pregnant = next(o for o in options if o.text == "Patient pregnant")
    pregnant.click()
    page.click("#btn-discontinue")
    page.until(lambda: page.find("#discontinue-confirm").is_displayed(), "no confirmation")
    assert room.exam.state is S.CHECKLIST
    page.click("#btn-confirm-discontinue")
    page.until_state(S.DISCONTINUED)


def to_cannulation(room: Room) -> None:
    """The steps before an injection, through the service (the page follows by its poll)."""
    room.exam.select_order(ORDER, "R", "tech1")
    assert room.exam.answer_checklist(ALL_CLEAR, "tech1")
    room.exam.pass_checklist("tech1")
    room.expose(S.PRE_CONTRAST, seed=1)
    room.exam.note_exposures()
    room.exam.finish_pre_contrast("tech1")
    room.exam.confirm_cannulation("tech1")


def test_a_volume_the_pump_cannot_honour_is_refused_and_a_fault_says_why(
    room: Room, browser: WebDriver
) -> None:
    page = Page(browser, room)
    page.open()
    page.type("#operator", "tech1")
    to_cannulation(room)
    page.until_state(S.CANNULATION)
    page.type("#purge-loaded-ml", "0.6")
    page.click("#btn-confirm-air-purge")
    page.until(lambda: page.text("#fact-air-purge") == "confirmed", "air purge")
    page.until(lambda: "at most 0.60 mL now" in page.text("#inj-max"), "the syringe-aware limit")

    # 0.0004 mL: the page refuses it itself, nothing is sent, nothing starts.
    page.type("#inj-volume", "0.0004")
    page.type("#inj-rate", "0.3")
    page.click("#btn-start-injection")
    page.until(lambda: page.find("#banner").is_displayed(), "no banner for the refusal")
    assert "0.0004 mL is below the minimum of 0.05 mL" in page.text("#banner-text")
    assert not page.find("#inj-confirm").is_displayed()
    assert room.sim.run_count == 0 and room.exam.state is S.CANNULATION
    commands = [e.payload["command"] for e in room.journal.entries() if e.kind == "command"]
    assert "start-injection" not in commands

    # A pump that ignores its volume: the controller stops it; the page says why and what next.
    room.sim.add_fault("ignore_volume")
    page.type("#inj-volume", "0.2")
    page.click("#btn-start-injection")
    page.click("#btn-confirm-injection")
    page.until_state(S.FAULT)
    page.until(lambda: page.find("#fault-panel").is_displayed(), "no fault panel")
    page.until(lambda: "130160" in page.text("#fault-code"), "no CID 71 code")
    assert "Terminated: unspecified injector failure" in page.text("#fault-code")
    assert page.text("#fault-reason") == "controller stop: over-delivery"
    assert page.text("#fault-pressure").endswith("kPa")
    assert float(page.text("#fault-delivered").split()[0]) > 0.2
    assert "Acknowledge the fault" in page.text("#fault-next")


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
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
        Page(browser, room).open()
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
