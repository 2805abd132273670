"""A control room for the console tests: real journal, dose log, worklist and RIS order files,
the injector simulator on a real pty behind the real driver, an ExamService, the console's
accounts (one per role, :data:`PASSWORD`) on a clock the test owns, and the console served on
a loopback port chosen by the kernel. The helpers log in and send what the page sends."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2

from acquisition.accounts import Accounts
from acquisition.console import ConsoleBackend, ConsoleServer
from acquisition.console.dose_desk import DoseDesk
from acquisition.dose_log import DoseLog
from acquisition.dose_policy import DEFAULT_LEVELS
from acquisition.exam.service import ExamService
from acquisition.exam_machine import ExamState, Limits
from acquisition.journal import Journal
from device_drivers.driver import NewEraInjector
from device_drivers.limits import InjectorLimits
from dicom_nodes.datasets.dose_extract import from_image_header
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.hospital.mwl_scu import WorklistItem, WorklistQuery, WorklistResult
from dicom_nodes.hospital.ris_orders import RisOrderStore
from dicom_nodes.unit_facing.worklist_store import WorklistStore
from dose.check import DanceTables
from dose.levels import load_levels
from dose.policy import DosePolicy
from dose.tables import load_hvl_table
from simulators.injector import InjectorSimulator
from simulators.room import UNIT_HVL_TABLE
from simulators.unit_images import StudyContext, sample_mg_image
from tests.injector_clock import simulated_injector
from tests.integration.test_injector_driver import FAST_LIMITS, FAST_TIMING

#: Every test account's password; the accounts are named after their role.
PASSWORD = "correct horse battery"
USERS = {"tech1": "technologist", "phys1": "physicist", "admin1": "admin"}
#: A cheap Argon2id for the tests' many logins (the product's parameters are tested elsewhere).
TEST_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SESSION_IDLE_S = 900.0
TIME_SCALE = 120.0  # 0.1 mL at 0.3 mL/min (20 s) takes ~0.2 s
HTTP_TIMEOUT_S = 20.0
ACC = "ACC0077"
STUDY_UID = "1.2.826.0.1.3680043.8.498.77"
ORDER = WorklistItem(
    patient=Patient(name="ROE^MARY", id="P0077", birth_date="19800304", sex="F"),
    accession_number=ACC,
    requested_procedure_id="RP77",
    requested_procedure_description="Galactography right",
    requested_procedure_codes=(),
    study_instance_uid=STUDY_UID,
    sps_id="RIS-SPS-77",
    sps_description="Galactography",
    sps_start_date="20261125",
    sps_start_time="093000",
    station_ae="UNIT",
    modality="MG",
    protocol_codes=(),
    allergies=("latex",),
)


#: The controller's checks as the demo configures them: the published levels, and the HVL
#: table of the simulated unit (its images carry no HVL).
POLICY = DosePolicy(
    tables=DanceTables(hvl=(load_hvl_table(UNIT_HVL_TABLE),)),
    levels=load_levels([DEFAULT_LEVELS]),
)


class Clock:
    """Wall-clock seconds that move only when the test says (the sessions' idle time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Login:
    """A logged-in page: its cookie and its CSRF token."""

    user: str
    role: str
    cookie: str
    csrf: str

    def headers(self, *, csrf: bool = True) -> dict[str, str]:
        headers = {"Cookie": self.cookie}
        if csrf:
            headers["X-CSRF-Token"] = self.csrf
        return headers


@dataclass
class Room:
    journal: Journal
    dose_log: DoseLog
    orders: RisOrderStore
    sim: InjectorSimulator
    driver: NewEraInjector
    exam: ExamService
    backend: ConsoleBackend
    server: ConsoleServer
    accounts: Accounts
    clock: Clock
    journal_path: Path
    tech: Login | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def login(self, user: str = "tech1", password: str = PASSWORD) -> Login:
        return login(self.url, user, password)

    def expose(
        self, phase: ExamState, seed: int, view: str = "CC", magnified: bool = False, **header: Any
    ) -> None:
        """The unit's image for one exposure of ``phase`` reaches the dose log (as the storage
        SCP would record it; ``header`` changes its attributes); the exam is not told: call
        ``exam.note_exposures()``."""
        order = self.exam.order
        assert order is not None
        study = StudyContext(
            study_instance_uid=order.study_instance_uid,
            accession_number=order.accession,
            scheduled_procedure_step_id=self.exam.sps_id(phase),
        )
        image = sample_mg_image(
            seed=seed, laterality=order.side, view=view, magnified=magnified, study=study
        )
        for keyword, value in header.items():
            setattr(image, keyword, value)
        self.dose_log.record([from_image_header(image, station_ae="UNIT")])


@contextlib.contextmanager
def console_room(
    tmp_path: Path,
    *,
    with_orders: bool = True,
    time_scale: float | None = None,
    limits: InjectorLimits = FAST_LIMITS,
) -> Iterator[Room]:
    """The console over a real ExamService. The injector is in process on the conversation's
    clock, or (``time_scale`` given: the browser watches it run) on a pty in scaled real time."""
    with (
        Journal(tmp_path / "journal.db") as journal,
        DoseLog(tmp_path / "dose.db", policy=POLICY) as dose_log,
        simulated_injector(tmp_path, real_wire=time_scale is not None, time_scale=time_scale) as (
            sim,
            url,
        ),
        closing(NewEraInjector(url, limits=limits, timing=FAST_TIMING)) as driver,
    ):
        driver.connect()
        orders = RisOrderStore(tmp_path / "galacto.db")
        if with_orders:
            result = WorklistResult(items=(ORDER,), truncated=False, final_status=0)
            orders.apply(result, WorklistQuery(station_ae="UNIT"), time.time())
        worklist = WorklistStore(tmp_path / "worklist.db")
        clock = Clock()
        accounts = Accounts(tmp_path / "galacto.db", hasher=TEST_HASHER, clock=clock)
        for user, role in USERS.items():
            accounts.add(user, role, PASSWORD)
        desk = DoseDesk(
            tmp_path / "dose.db",
            dose_log,
            journal,
            pseudonym_secret="test-pseudonym-secret",
        )
        with (
            closing(accounts),
            ExamService(
                journal,
                worklist,
                station_ae="UNIT",
                limits=Limits(),
                dose_log=dose_log,
                injector=driver,
            ) as exam,
        ):
            backend = ConsoleBackend(
                exam,
                dose_log,
                orders=orders,
                injector=driver,
                outbox_counts=lambda: {"pending": 0, "sent": 2},
            )
            with ConsoleServer(
                backend,
                accounts=accounts,
                journal=journal,
                session_idle_s=SESSION_IDLE_S,
                dose_desk=desk,
            ) as server:
                room = Room(
                    journal, dose_log, orders, sim, driver, exam, backend, server, accounts,
                    clock, tmp_path / "journal.db",
                )  # fmt: skip
                room.tech = room.login()
                yield room


def request(
    url: str,
    method: str = "GET",
    path: str = "/api/state",
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with a timeout: (status, headers, body); 4xx and 5xx are returned."""
    req = urllib.request.Request(
        url.rstrip("/") + path, data=body, headers=headers or {}, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def login(url: str, user: str, password: str = PASSWORD) -> Login:
    body = json.dumps({"username": user, "password": password}).encode()
    status, headers, raw = request(
        url, "POST", "/api/session", body=body, headers={"Content-Type": "application/json"}
    )
    assert status == 200, raw
    document = json.loads(raw)
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    return Login(document["user"], document["role"], cookie, document["csrf_token"])


def command(
    url: str,
    name: str,
    args: dict[str, Any] | None = None,
    as_: Login | None = None,
    *,
    csrf: bool = True,
) -> tuple[int, dict[str, Any]]:
    """POST one command as the page does (``as_``: who; None: no session at all)."""
    body = json.dumps({"args": args or {}}).encode()
    headers = {"Content-Type": "application/json"}
    if as_ is not None:
        headers.update(as_.headers(csrf=csrf))
    status, _, raw = request(url, "POST", f"/api/command/{name}", body=body, headers=headers)
    return status, json.loads(raw)


def state(url: str, as_: Login) -> dict[str, Any]:
    status, _, raw = request(url, headers=as_.headers(csrf=False))
    assert status == 200, raw
    return dict(json.loads(raw))


class EventStream:
    """``GET /api/events`` read as a browser's EventSource would, with a deadline on every
    read: ``next()`` gives each event as (id, name, data)."""

    def __init__(
        self, url: str, as_: Login, *, last_event_id: int | None = None, timeout_s: float = 10.0
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s
        )
        headers = as_.headers(csrf=False)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.connection.request("GET", "/api/events", headers=headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("Content-Type", "")

    def next(self) -> tuple[int | None, str, dict[str, Any]]:
        event_id: int | None = None
        name, data = "message", ""
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError("the stream ended")
            text = line.decode("utf-8").rstrip("\n")
            if not text:
                if data:
                    return event_id, name, json.loads(data)
                continue
            field, _, value = text.partition(": ")
            if field == "id":
                event_id = int(value)
            elif field == "event":
                name = value
            elif field == "data":
                data += value

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
