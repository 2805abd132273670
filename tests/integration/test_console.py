"""The console's HTTP API over real HTTP, against a real ExamService (docs/console.md).

The service runs on real journal, dose-log, worklist and RIS-order files with the injector
simulator on a pty behind the real driver; requests go through urllib to a loopback port.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from acquisition.commands.demo import ALL_CLEAR
from acquisition.console import ConsoleBackend
from acquisition.exam.model import CHECKLIST
from acquisition.exam_machine import ExamState
from dicom_nodes.datasets.codes import DISCONTINUED_EXTRAVASATION
from tests.console_room import (
    ACC,
    ORDER,
    Room,
    command,
    console_room,
    request,
    state,
)

pytestmark = pytest.mark.timeout(60)

S = ExamState
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    with console_room(tmp_path) as room:
        yield room


def test_a_simulated_injector_is_shown_as_such(room: Room) -> None:
    assert state(room.url, room.tech)["injector"]["simulated"] is True
    page = (Path(__file__).resolve().parents[2] / "acquisition/console/console.html").read_text()
    assert ">SIMULATED INJECTOR<" in page and "inj.simulated" in page


def journal_kinds(room: Room, kind: str) -> list[dict[str, object]]:
    return [{"operator": e.operator, **e.payload} for e in room.journal.entries() if e.kind == kind]


def open_checklist(room: Room) -> None:
    status, doc = command(room.url, "select-order", {"accession": ACC, "side": "R"}, room.tech)
    assert status == 200, doc


def test_state_shows_exam_injector_orders_and_the_reasons_buttons_are_disabled(
    room: Room,
) -> None:
    status, headers, raw = request(room.url, headers=room.tech.headers())
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-store"
    doc = json.loads(raw)

    assert doc["exam"] == {
        "state": "idle",
        "injecting": False,
        "final": False,
        "journal_fault": None,
        "order": None,
        "fault": None,
    }
    assert doc["injector"]["present"] and doc["injector"]["link"] == "ok"
    assert doc["injector"]["state"] == room.driver.state.value
    assert doc["injector"]["status"] == "ready"  # connected and idle: not "NOT READY"
    (order,) = doc["orders"]
    assert order["accession"] == ACC
    assert order["patient_name"] == "ROE^MARY" and order["patient_id"] == "P0077"
    assert order["birth_date"] == "19800304"
    assert order["procedure"] == "Galactography right"
    assert order["scheduled"] == "2026-11-25 09:30"
    assert order["alerts"] == ["allergy: latex"]
    assert {(c["item"], c["blocking"]) for c in doc["checklist"]} == set(CHECKLIST.items())
    assert DISCONTINUED_EXTRAVASATION.value in {c["value"] for c in doc["discontinuation_reasons"]}
    assert doc["outbox"] == {"pending": 0, "sent": 2}
    assert doc["facts"]["limits"]["max_injections"] == 2
    assert doc["exposures"] == [] and doc["agd_totals_mgy"] == {}

    actions = doc["actions"]
    assert actions["select-order"] == {"allowed": True, "reason": None}
    assert actions["register-unscheduled"]["allowed"]
    assert actions["pass-checklist"] == {"allowed": False, "reason": "not allowed in idle"}
    assert actions["stop-injection"] == {"allowed": False, "reason": "no injection is running"}
    assert actions["acknowledge-fault"]["reason"] == "there is no fault to acknowledge"


def test_the_page_is_one_self_contained_file(room: Room) -> None:
    status, headers, raw = request(room.url, path="/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    page = raw.decode("utf-8")
    # no CDN, no external asset (the SVG namespace is a name, not something fetched)
    fetched = page.replace('"http://www.w3.org/2000/svg"', "")
    assert "http://" not in fetched and "https://" not in fetched
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    for element_id in ("exam-state", "injector-state", "btn-stop", "btn-confirm-injection"):
        assert f'id="{element_id}"' in page
    assert request(room.url, path="/nowhere")[0] == 404


def test_a_command_is_accepted_journaled_and_answered_with_the_new_state(room: Room) -> None:
    status, doc = command(room.url, "select-order", {"accession": ACC, "side": "R"}, room.tech)

    assert status == 200
    assert doc["ok"] is True
    assert doc["state"]["exam"]["state"] == "checklist"
    assert doc["state"]["exam"]["order"]["accession"] == ACC
    assert doc["state"]["exam"]["order"]["side"] == "R"
    assert room.exam.state is S.CHECKLIST
    (opened,) = journal_kinds(room, "command")
    assert opened["command"] == "select-order" and opened["operator"] == "tech1"
    assert (
        opened["console"]["role"] == "technologist" and opened["console"]["client"] == "127.0.0.1"
    )
    assert opened["console"]["session"] != "no session"
    assert state(room.url, room.tech)["actions"]["answer-checklist"]["allowed"]


def test_a_refusal_is_409_with_the_machines_reason_and_is_journaled(room: Room) -> None:
    status, doc = command(room.url, "pass-checklist", {}, room.tech)

    assert status == 409
    assert doc == {"ok": False, "refused": "not allowed in idle"}
    (refusal,) = journal_kinds(room, "refusal")
    assert refusal["reason"] == "not allowed in idle" and refusal["operator"] == "tech1"
    assert room.exam.state is S.IDLE


def test_a_checklist_with_a_blocking_answer_is_recorded_not_passed(room: Room) -> None:
    open_checklist(room)
    answers = {**ALL_CLEAR, "pregnancy_possible": True}

    status, doc = command(
        room.url, "answer-checklist", {"answers": answers, "override": None}, room.tech
    )

    assert status == 200
    assert doc["state"]["exam"]["state"] == "checklist"
    assert doc["state"]["checklist_result"] == {"passed": False, "blocking": ["pregnancy_possible"]}
    reason = doc["state"]["actions"]["pass-checklist"]["reason"]
    assert "physician override" in reason

    override = {"physician": "DR^WHO", "reason": "negative test this morning"}
    status, doc = command(
        room.url, "answer-checklist", {"answers": answers, "override": override}, room.tech
    )
    assert status == 200
    assert doc["state"]["exam"]["state"] == "pre-contrast"
    assert [c["passed"] for c in journal_kinds(room, "checklist")] == [False, True]


def test_exposures_and_per_breast_totals_follow_the_dose_log(room: Room) -> None:
    open_checklist(room)
    command(room.url, "answer-checklist", {"answers": ALL_CLEAR}, room.tech)
    room.expose(S.PRE_CONTRAST, seed=1)

    (row,) = state(room.url, room.tech)["exposures"]
    assert row["phase"] is None  # logged, not yet noted by the exam
    assert room.exam.note_exposures() == 1

    doc = state(room.url, room.tech)
    (row,) = doc["exposures"]
    logged = room.dose_log.list_exposures(ACC)[0]
    assert row["phase"] == "pre-contrast"
    assert row["laterality"] == "R" and row["view"] == "CC"
    assert row["kvp"] == logged["kvp"]
    assert row["mas"] == pytest.approx(logged["exposure_uas"] / 1000)
    assert row["agd_reported_mgy"] == logged["agd_reported_mgy"]
    assert doc["agd_totals_mgy"] == {"L": 0.0, "R": pytest.approx(logged["agd_reported_mgy"])}
    assert doc["facts"]["pre_contrast_exposures"] == 1
    assert doc["actions"]["finish-pre-contrast"]["allowed"]


def test_an_alert_shows_beside_its_exposure_at_once(room: Room) -> None:
    open_checklist(room)
    command(room.url, "answer-checklist", {"answers": ALL_CLEAR}, room.tech)
    room.expose(S.PRE_CONTRAST, seed=1)
    room.expose(S.PRE_CONTRAST, seed=2, view="ML", CompressionForce=-20)  # no unit can do this
    room.expose(S.PRE_CONTRAST, seed=3, view="ML", magnified=True)

    doc = state(room.url, room.tech)  # logged, not yet noted by the exam: already checked and shown
    normal, absurd, magnified = doc["exposures"]
    assert normal["alerts"] == [] and not normal["implausible"]
    assert normal["dance_check"] == "agrees"
    assert normal["agd_computed_mgy"] == pytest.approx(normal["agd_reported_mgy"], rel=1e-3)
    assert "EUREF acceptable" in normal["levels"]
    (alert,) = absurd["alerts"]
    assert (alert["level"], alert["state"]) == ("plausibility", "open")
    assert "compression_force_n -20 N outside [0, 300] N" in alert["detail"]
    assert absurd["implausible"]
    assert "implausible: compression_force_n -20 N outside [0, 300] N" in absurd["review"]
    assert magnified["levels"] == "Local level, magnified views: no level set"
    right = doc["agd_totals"]["R"]
    assert right["left_out"] == 1 and right["left_out_reasons"] == {"implausible": 1}
    assert doc["agd_totals_mgy"]["R"] == pytest.approx(
        normal["agd_reported_mgy"] + magnified["agd_reported_mgy"]
    )
    assert "1 event left out: 1 implausible" in doc["agd_totals"]["text"]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("launch", {}, "unknown command 'launch'"),
        ("select-order", {"accession": ACC}, "missing argument(s): side"),
        ("select-order", {"accession": ACC, "side": "both"}, "side must be L or R"),
        ("select-order", {"accession": "NOPE", "side": "L"}, "no current RIS order"),
        ("close", {"now": True}, "unknown argument(s): now"),
        ("start-injection", {"volume_ml": "a lot", "rate_ml_min": 0.3}, "number"),
        ("start-injection", {"volume_ml": 0.3, "rate_ml_min": -1}, "positive"),
        (
            "register-unscheduled",
            {"name": "X", "patient_id": "1", "side": "L", "birth_date": "1975"},
            "birth_date",
        ),
        ("answer-checklist", {"answers": {"pregnancy_possible": "no"}}, "true or false"),
    ],
)
def test_bad_input_is_400_and_changes_nothing(
    room: Room, name: str, args: dict[str, object], message: str
) -> None:
    status, doc = command(room.url, name, args, room.tech)

    assert status == 400, doc
    assert doc["ok"] is False and message in doc["error"]
    assert room.exam.state is S.IDLE
    assert journal_kinds(room, "command") == []


def test_an_unknown_checklist_item_is_400_from_the_service(room: Room) -> None:
    open_checklist(room)
    status, doc = command(room.url, "answer-checklist", {"answers": {"tattoo": True}}, room.tech)
    assert status == 400
    assert "unknown checklist items: tattoo" in doc["error"]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b"[1, 2]", b'{"operator": "t", "args": {}}', b'{"args": []}'],
    ids=["syntax", "not-utf8", "not-an-object", "free-text-operator", "args-not-an-object"],
)
def test_a_malformed_body_is_400(room: Room, body: bytes) -> None:
    headers = {**JSON, **room.tech.headers()}
    status, _, raw = request(room.url, "POST", "/api/command/close", body=body, headers=headers)
    assert status == 400
    assert json.loads(raw)["ok"] is False
    assert journal_kinds(room, "command") == []


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_post_that_is_not_json_is_415(room: Room, content_type: str | None) -> None:
    body = json.dumps({"args": {"accession": ACC, "side": "L"}}).encode()
    headers = room.tech.headers()
    if content_type is not None:
        headers["Content-Type"] = content_type
    status, _, raw = request(
        room.url, "POST", "/api/command/select-order", body=body, headers=headers
    )
    assert status == 415
    assert json.loads(raw)["ok"] is False
    assert room.exam.state is S.IDLE
    (rejected,) = journal_kinds(room, "console-rejected")
    assert (rejected["status"], rejected["operator"], rejected["client"]) == (
        415,
        "tech1",
        "127.0.0.1",
    )
    assert rejected["session"] != "no session"


def test_a_json_content_type_with_parameters_is_accepted(room: Room) -> None:
    body = json.dumps({"args": {"accession": ACC, "side": "R"}}).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", **room.tech.headers()}
    status, _, _ = request(
        room.url, "POST", "/api/command/select-order", body=body, headers=headers
    )
    assert status == 200


def test_a_foreign_origin_is_403_and_the_consoles_own_origins_are_not(room: Room) -> None:
    body = json.dumps({"args": {"accession": ACC, "side": "R"}}).encode()
    path = "/api/command/select-order"
    logged_in = {**JSON, **room.tech.headers()}
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{room.server.port + 1}"):
        headers = {**logged_in, "Origin": origin}
        assert request(room.url, "POST", path, body=body, headers=headers)[0] == 403
        assert request(room.url, headers={**logged_in, "Origin": origin})[0] == 403
        # STOP keeps the Origin check too
        stop = request(room.url, "POST", "/api/command/stop-injection", body=b"{}",
                       headers={**JSON, "Origin": origin})  # fmt: skip
        assert stop[0] == 403
    assert room.exam.state is S.IDLE
    assert journal_kinds(room, "command") == []
    assert {r["status"] for r in journal_kinds(room, "console-rejected")} == {403}

    own = room.url.rstrip("/")
    assert request(room.url, headers={**logged_in, "Origin": own})[0] == 200
    localhost = {"Origin": f"http://localhost:{room.server.port}"}
    assert request(room.url, "POST", path, body=body, headers={**logged_in, **localhost})[0] == 200
    assert room.exam.state is S.CHECKLIST


def test_a_foreign_host_is_403(room: Room) -> None:
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends Host: evil.example."""
    headers = {"Host": f"evil.example:{room.server.port}", **room.tech.headers()}
    status, _, raw = request(room.url, headers=headers)
    assert status == 403
    assert b"ROE" not in raw


def test_wrong_methods_are_405(room: Room) -> None:
    headers = {**JSON, **room.tech.headers()}
    assert request(room.url, "GET", "/api/command/close", headers=headers)[0] == 405
    assert request(room.url, "POST", "/api/state", body=b"{}", headers=headers)[0] == 405
    assert request(room.url, "PUT", "/api/state", body=b"{}", headers=headers)[0] == 405


def test_patient_identifiers_never_reach_the_log_at_info(
    room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    open_checklist(room)
    command(room.url, "answer-checklist", {"answers": ALL_CLEAR}, room.tech)
    command(room.url, "select-order", {"accession": ACC, "side": "L"}, room.tech)  # refused: 409
    state(room.url, room.tech)

    assert any(r.name.startswith("acquisition.console") for r in caplog.records)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    identifiers = (ORDER.patient.name, "ROE", ORDER.patient.id, ACC, ORDER.patient.birth_date)
    assert not [message for message in loud if any(i in message for i in identifiers)]


def test_the_console_discontinues_with_a_cid_9301_reason(room: Room) -> None:
    open_checklist(room)
    status, doc = command(room.url, "discontinue", {"reason_code": "999"}, room.tech)
    assert status == 409 and "not a CID 9301 code" in doc["refused"]

    status, doc = command(
        room.url, "discontinue", {"reason_code": DISCONTINUED_EXTRAVASATION.value}, room.tech
    )
    assert status == 200
    assert doc["state"]["exam"]["state"] == "discontinued"
    assert doc["state"]["actions"]["close"]["allowed"]
    status, doc = command(room.url, "close", {}, room.tech)
    assert status == 200 and doc["state"]["exam"]["state"] == "idle"


def test_the_example_in_the_docs_runs(room: Room, capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text("utf-8")
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    refreshed: list[bool] = []
    namespace: dict[str, object] = {
        "exam": room.exam,
        "dose_log": room.dose_log,
        "ris_orders": room.orders,
        "driver": room.driver,
        "outbox": SimpleNamespace(counts=lambda: {"queued": 1}),
        "refresher": SimpleNamespace(wake=lambda: refreshed.append(True)),
        "accounts": room.accounts,
        "journal": room.journal,
    }
    exec(compile(example, "docs/console.md", "exec"), namespace)

    url = capsys.readouterr().out.strip()
    assert url.startswith("http://127.0.0.1:") and url != room.url
    backend = namespace["backend"]
    assert isinstance(backend, ConsoleBackend)
    assert backend.snapshot()["outbox"] == {"queued": 1}
    backend.command("refresh-orders", {}, "tech1")
    assert refreshed == [True]


# ----------------------------------------------------------------------------------------------
# Injection safety over HTTP (issue 8): the machine's refusals, 409, with its reason


def to_cannulation(room: Room, loaded_ml: float | None = None) -> None:
    open_checklist(room)
    assert command(room.url, "answer-checklist", {"answers": ALL_CLEAR}, room.tech)[0] == 200
    room.expose(S.PRE_CONTRAST, seed=1)
    assert room.exam.note_exposures() == 1
    for name in ("finish-pre-contrast", "confirm-cannulation"):
        assert command(room.url, name, {}, room.tech)[0] == 200
    args = {} if loaded_ml is None else {"loaded_ml": loaded_ml}
    status, doc = command(room.url, "confirm-air-purge", args, room.tech)
    assert status == 200, doc


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"volume_ml": 0.0004, "rate_ml_min": 0.3}, "below the minimum of 0.05 mL"),
        ({"volume_ml": 0.5, "rate_ml_min": 0.0001}, "below the minimum of 0.05 mL/min"),
        ({"volume_ml": 0.9, "rate_ml_min": 0.08}, "more than the 600 s allowed"),
        ({"volume_ml": 0.5, "rate_ml_min": 0.3}, "the syringe holds 0.4 mL"),
    ],
    ids=["volume", "rate", "duration", "syringe"],
)
def test_an_injection_the_pump_cannot_honour_is_409_with_the_machines_reason(
    room: Room, args: dict[str, float], reason: str
) -> None:
    to_cannulation(room, loaded_ml=0.4)
    status, doc = command(room.url, "start-injection", args, room.tech)

    assert status == 409, doc
    assert reason in doc["refused"]
    assert room.sim.run_count == 0 and room.exam.state is S.CANNULATION
    assert journal_kinds(room, "refusal")[-1]["reason"] == doc["refused"]


def test_the_state_shows_the_syringe_aware_limit(room: Room) -> None:
    to_cannulation(room, loaded_ml=0.4)
    doc = state(room.url, room.tech)
    assert doc["max_volume_ml_now"] == 0.4
    assert doc["facts"]["syringe_left_ml"] == 0.4
    assert doc["injection_limits"] == {
        "min_volume_ml": 0.05,
        "min_rate_ml_min": 0.05,
        "max_rate_ml_min": 1.0,
        "max_injection_s": 600.0,
        "max_volume_ml_now": 0.4,
        "syringe_left_ml": 0.4,
        "syringe_nominal_ml": 1.0,
    }


def test_a_side_that_disagrees_with_the_order_is_409_laterality_mismatch(room: Room) -> None:
    status, doc = command(room.url, "select-order", {"accession": ACC, "side": "L"}, room.tech)
    assert status == 409
    assert {k: doc[k] for k in ("code", "order_side", "chosen_side")} == {
        "code": "laterality-mismatch",
        "order_side": "R",
        "chosen_side": "L",
    }
    assert doc["ok"] is False and "right" in doc["refused"]
    assert room.exam.state is S.IDLE
    (order,) = state(room.url, room.tech)["orders"]
    assert order["side"] == "R"

    args = {"accession": ACC, "side": "L", "side_override_reason": "the referral says left"}
    status, doc = command(room.url, "select-order", args, room.tech)
    assert status == 200
    assert doc["state"]["exam"]["order"]["side"] == "L"


def test_in_fault_the_state_says_why_the_pump_stopped_and_what_to_do(room: Room) -> None:
    to_cannulation(room)
    room.sim.add_fault("ignore_volume")
    status, doc = command(
        room.url, "start-injection", {"volume_ml": 0.2, "rate_ml_min": 0.3}, room.tech
    )
    assert status == 200, doc
    assert room.exam.wait_for_state(S.FAULT, 20.0)

    fault = state(room.url, room.tech)["exam"]["fault"]
    assert fault["code"] == "130160"
    assert fault["meaning"] == "Terminated: unspecified injector failure"
    assert fault["reason"] == "controller stop: over-delivery"
    assert fault["delivered_ml"] > 0.2
    assert fault["pressure_kpa"] is not None and fault["pressure_kpa"] > 0
    assert any("Acknowledge the fault" in step for step in fault["next_actions"])
    assert state(room.url, room.tech)["actions"]["acknowledge-fault"]["allowed"]
    status, doc = command(room.url, "acknowledge-fault", {}, room.tech)
    assert status == 400 and "missing argument(s): reason" in doc["error"]
    status, doc = command(room.url, "acknowledge-fault", {"reason": "pump replaced"}, room.tech)
    assert status == 200 and doc["state"]["exam"]["state"] != "fault"
    (ack,) = [c for c in journal_kinds(room, "command") if c["command"] == "acknowledge-fault"]
    assert ack["reason"] == "pump replaced"
