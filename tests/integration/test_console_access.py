"""Who may use the console, over real HTTP without the page (issue 14; docs/console.md).

Every role × every command and read: 401 without a session, 403 with the wrong role (naming
the role needed), 403 without the CSRF token; the login's contract, its throttle, the idle
expiry that changes nothing, an account disabled from the command line, and STOP with no
session while an injection runs. The console runs over a real ExamService (journal, dose log,
RIS orders in SQLite files; the injector simulator behind the real driver).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acquisition.accounts import ROLES
from acquisition.commands.demo import ALL_CLEAR
from acquisition.console import ConsoleServer
from acquisition.console.auth import ANY_ONE, COMMAND_ROLES, DOSE_READERS, ROOM_VIEWERS
from acquisition.exam_machine import ExamState
from device_drivers.limits import InjectorLimits
from tests.console_room import (
    ACC,
    ORDER,
    PASSWORD,
    SESSION_IDLE_S,
    USERS,
    EventStream,
    Login,
    Room,
    command,
    console_room,
    request,
    state,
)
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(90)

S = ExamState
JSON = {"Content-Type": "application/json"}
USER_OF = {role: user for user, role in USERS.items()}
READS = {
    "/api/state": ROOM_VIEWERS,
    "/api/dose/exposures": DOSE_READERS,
    "/api/dose/alerts": DOSE_READERS,
    "/api/users": ("admin",),
}


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    with console_room(tmp_path) as room:
        yield room


def entries(room: Room, kind: str) -> list[dict[str, Any]]:
    return [
        {"operator": e.operator, "exam_id": e.exam_id, **e.payload}
        for e in room.journal.entries()
        if e.kind == kind
    ]


def post(room: Room, path: str, document: Any, as_: Login | None = None, **headers: str) -> Any:
    sent = {**JSON, **(as_.headers() if as_ else {}), **headers}
    status, answer_headers, raw = request(
        room.url, "POST", path, body=json.dumps(document).encode(), headers=sent
    )
    return status, answer_headers, json.loads(raw) if raw else None


# ---------------------------------------------------------------------------------- the login


def test_the_root_is_the_login_page_and_needs_no_session(room: Room) -> None:
    status, headers, raw = request(room.url, path="/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    page = raw.decode()
    assert 'id="login-form"' in page and 'id="login-password"' in page
    assert 'type="password"' in page and 'id="operator"' not in page  # no free-text operator


def test_a_login_answers_user_role_and_csrf_token_with_a_strict_cookie(room: Room) -> None:
    status, headers, document = post(
        room, "/api/session", {"username": "phys1", "password": PASSWORD}
    )
    assert status == 200
    assert set(document) == {"user", "role", "csrf_token"}
    assert (document["user"], document["role"]) == ("phys1", "physicist")
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("galacto_session=")
    attributes = {part.strip() for part in cookie.split(";")[1:]}
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= attributes
    (entry,) = [e for e in entries(room, "console-login") if e["operator"] == "phys1"]
    assert entry["role"] == "physicist" and entry["client"] == "127.0.0.1"
    assert PASSWORD not in json.dumps([e.payload for e in room.journal.entries()])

    again = Login("phys1", "physicist", cookie.split(";")[0], document["csrf_token"])
    status, _, raw = request(room.url, path="/api/session", headers=again.headers(csrf=False))
    assert status == 200 and json.loads(raw)["csrf_token"] == document["csrf_token"]


def test_a_wrong_password_and_an_unknown_user_get_the_same_401(room: Room) -> None:
    wrong = post(room, "/api/session", {"username": "tech1", "password": "not the password"})
    unknown = post(room, "/api/session", {"username": "nobody", "password": PASSWORD})
    assert wrong[0] == unknown[0] == 401
    assert wrong[2] == unknown[2] == {"error": "invalid-credentials"}
    assert "Set-Cookie" not in wrong[1] and "Set-Cookie" not in unknown[1]
    rejected = entries(room, "console-rejected")
    assert [(r["path"], r["status"], r["operator"]) for r in rejected] == [
        ("/api/session", 401, "tech1"),
        ("/api/session", 401, "unknown user"),  # never what was typed: it may be a password
    ]


def test_repeated_failures_are_429_with_retry_after_even_for_the_right_password(
    room: Room,
) -> None:
    statuses = []
    for _ in range(10):
        status, headers, document = post(
            room, "/api/session", {"username": "admin1", "password": "guess, guess"}
        )
        statuses.append(status)
        if status == 429:
            break
    assert statuses[0] == 401 and statuses[-1] == 429
    assert int(headers["Retry-After"]) > 0 and document["error"] == "too-many-attempts"
    status, headers, _ = post(room, "/api/session", {"username": "admin1", "password": PASSWORD})
    assert status == 429 and int(headers["Retry-After"]) > 0
    assert any(r["status"] == 429 for r in entries(room, "console-rejected"))


# ---------------------------------------------------------------------------------- the roles


CASES = [(name, role) for name in COMMAND_ROLES for role in (*ROLES, None)]


@pytest.mark.parametrize(("name", "role"), CASES, ids=[f"{n}-{r}" for n, r in CASES])
def test_every_role_and_every_command(room: Room, name: str, role: str | None) -> None:
    """401 without a session (STOP excepted), 403 naming the role needed, else the command
    reaches the exam (which may refuse it: 400/409). Nothing moves the idle exam."""
    who = None if role is None else room.login(USER_OF[role])
    status, document = command(room.url, name, {}, who)
    needed = COMMAND_ROLES[name]
    if needed == ANY_ONE:
        assert status == 409 and document["refused"] == "no injection is running"
    elif who is None:
        assert status == 401 and document["error"] == "not-logged-in"
    elif role != needed:
        assert status == 403
        assert document["error"] == "forbidden" and document["required_role"] == needed
    else:
        assert status in (200, 400, 409), document
    assert room.exam.state is S.IDLE
    if status in (401, 403):
        (rejected,) = entries(room, "console-rejected")
        assert rejected["path"] == f"/api/command/{name}" and rejected["status"] == status
        assert rejected["client"] == "127.0.0.1"
        assert rejected["session"] == ("no session" if who is None else rejected["session"])
        assert rejected["operator"] == (None if who is None else who.user)


@pytest.mark.parametrize("path", READS)
def test_every_role_and_every_read(room: Room, path: str) -> None:
    assert request(room.url, path=path)[0] == 401
    for role in ROLES:
        status, _, raw = request(room.url, path=path, headers=room.login(USER_OF[role]).headers())
        if role in READS[path]:
            assert status == 200, raw
        else:
            assert status == 403 and json.loads(raw)["required_role"] == READS[path][0]


@pytest.mark.parametrize("csrf", [None, "0" * 64], ids=["missing", "wrong"])
def test_a_command_without_its_csrf_token_is_403_and_changes_nothing(
    room: Room, csrf: str | None
) -> None:
    assert room.tech is not None
    headers = {**JSON, "Cookie": room.tech.cookie}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    body = json.dumps({"args": {"accession": ACC, "side": "R"}}).encode()
    status, _, raw = request(
        room.url, "POST", "/api/command/select-order", body=body, headers=headers
    )
    assert status == 403 and json.loads(raw)["error"] == "csrf"
    assert room.exam.state is S.IDLE and entries(room, "command") == []
    # the token of another session is no better
    other = room.login("tech1")
    headers["X-CSRF-Token"] = other.csrf
    again = request(room.url, "POST", "/api/command/select-order", body=body, headers=headers)
    assert again[0] == 403
    rejected = entries(room, "console-rejected")
    assert [r["status"] for r in rejected] == [403, 403]
    assert {r["operator"] for r in rejected} == {"tech1"}
    assert "no session" not in {r["session"] for r in rejected}


def test_logging_out_ends_the_session(room: Room) -> None:
    assert room.tech is not None
    unsafe = request(room.url, "DELETE", "/api/session", headers=room.tech.headers(csrf=False))
    assert unsafe[0] == 403  # a logout is state-changing: it needs the token too
    status, headers, _ = request(room.url, "DELETE", "/api/session", headers=room.tech.headers())
    assert status == 200 and "Max-Age=0" in headers["Set-Cookie"]
    assert request(room.url, headers=room.tech.headers())[0] == 401
    assert [e["operator"] for e in entries(room, "console-logout")] == ["tech1"]


def test_an_expired_session_changes_nothing_and_a_new_login_resumes_the_exam(room: Room) -> None:
    tech = room.tech
    assert tech is not None
    assert command(room.url, "select-order", {"accession": ACC, "side": "R"}, tech)[0] == 200
    room.clock.advance(SESSION_IDLE_S - 5)
    assert state(room.url, tech)["exam"]["state"] == "checklist"  # reading is not activity
    room.clock.advance(10)

    status, document = command(room.url, "answer-checklist", {"answers": ALL_CLEAR}, tech)
    assert status == 401 and document["reason"] == "expired"
    assert room.exam.state is S.CHECKLIST
    assert [e["command"] for e in entries(room, "command")] == ["select-order"]

    again = room.login()
    document = state(room.url, again)
    assert document["exam"]["state"] == "checklist"
    assert document["patient"]["patient_id"] == ORDER.patient.id
    assert command(room.url, "answer-checklist", {"answers": ALL_CLEAR}, again)[0] == 200
    assert room.exam.state is S.PRE_CONTRAST


def test_activity_keeps_a_session_open(room: Room) -> None:
    tech = room.tech
    assert tech is not None
    for _ in range(4):
        room.clock.advance(SESSION_IDLE_S * 0.6)
        assert request(room.url, path="/api/session", headers=tech.headers())[0] == 200


def test_an_account_disabled_meanwhile_is_out_at_once(room: Room) -> None:
    tech = room.tech
    assert tech is not None
    room.accounts.disable("tech1")  # as `galacto users disable tech1` does, from elsewhere
    status, document = command(room.url, "select-order", {"accession": ACC, "side": "R"}, tech)
    assert status == 401 and document["reason"] == "account disabled"
    assert room.exam.state is S.IDLE
    status, _, _ = post(room, "/api/session", {"username": "tech1", "password": PASSWORD})
    assert status == 401


def test_the_admin_sees_the_room_without_the_patient(room: Room) -> None:
    assert command(room.url, "select-order", {"accession": ACC, "side": "R"}, room.tech)[0] == 200
    admin = room.login("admin1")
    status, _, raw = request(room.url, headers=admin.headers())
    assert status == 200
    document = json.loads(raw)
    assert document["exam"]["state"] == "checklist" and document["injector"]["present"]
    assert document["patient"] is None and document["orders"] == []
    text = raw.decode()
    for identifier in ("ROE", ORDER.patient.id, ACC, ORDER.patient.birth_date):
        assert identifier not in text


def test_the_admin_manages_accounts_journaled(room: Room) -> None:
    admin = room.login("admin1")
    new = {"username": "tech2", "role": "technologist", "password": "another long passphrase"}
    assert post(room, "/api/users", new, room.tech)[0] == 403
    status, _, document = post(room, "/api/users", new, admin)
    assert status == 200 and document["user"]["role"] == "technologist"
    tech2 = room.login("tech2", "another long passphrase")
    status, _, document = post(room, "/api/users", {**new, "password": "short"}, admin)
    assert status == 400 and "10 to 1024 characters" in document["error"]

    assert post(room, "/api/users/tech2/disable", {}, admin)[0] == 200
    assert request(room.url, headers=tech2.headers())[0] == 401
    status, _, raw = request(room.url, path="/api/users", headers=admin.headers())
    users = {u["username"]: u for u in json.loads(raw)["users"]}
    assert users["tech2"]["disabled"] and not users["tech1"]["disabled"]
    (added,) = entries(room, "user-added")
    assert added["username"] == "tech2" and added["operator"] == "admin1"
    assert added["console"]["role"] == "admin"
    assert [e["username"] for e in entries(room, "user-disabled")] == ["tech2"]


# ---------------------------------------------------------------------------------- the physicist


def test_the_physicist_reads_pseudonymised_doses_and_acknowledges_an_alert(room: Room) -> None:
    assert command(room.url, "select-order", {"accession": ACC, "side": "R"}, room.tech)[0] == 200
    assert command(room.url, "answer-checklist", {"answers": ALL_CLEAR}, room.tech)[0] == 200
    room.expose(S.PRE_CONTRAST, seed=1)
    room.expose(S.PRE_CONTRAST, seed=2, view="ML", CompressionForce=-20)  # an alert
    physicist = room.login("phys1")

    status, _, raw = request(room.url, path="/api/dose/exposures", headers=physicist.headers())
    assert status == 200
    table = json.loads(raw)
    assert table["total"] == 2 and len(table["rows"]) == 2
    assert {row["laterality"] for row in table["rows"]} == {"R"}
    assert len({row["exam_key"] for row in table["rows"]}) == 1
    for identifier in (ACC, ORDER.patient.id, "ROE", ORDER.study_instance_uid):
        assert identifier not in raw.decode()
    flagged = request(
        room.url, path="/api/dose/exposures?flagged=1&view=ML", headers=physicist.headers()
    )
    assert json.loads(flagged[2])["total"] == 1
    bad = request(room.url, path="/api/dose/exposures?view=XX", headers=physicist.headers())
    assert bad[0] == 400

    status, _, raw = request(room.url, path="/api/dose/alerts", headers=physicist.headers())
    (alert,) = json.loads(raw)["alerts"]
    assert alert["open"] and alert["level"] == "plausibility"
    path = f"/api/dose/alerts/{alert['id']}/acknowledge"
    assert post(room, path, {"reason": "x"}, room.tech)[0] == 403
    assert post(room, path, {"reason": "  "}, physicist)[0] == 400
    status, _, document = post(room, path, {"reason": "a phantom, left on by mistake"}, physicist)
    assert status == 200 and document["alert"]["acknowledged_by"] == "phys1"
    assert post(room, path, {"reason": "twice"}, physicist)[0] == 400
    (ack,) = entries(room, "dose-alert-acknowledged")
    assert ack["operator"] == "phys1" and ack["identified_as"] == "console account"
    assert ack["console"]["role"] == "physicist"

    status, headers, raw = request(room.url, path="/api/dose/report", headers=physicist.headers())
    assert status == 200 and raw.startswith(b"<!DOCTYPE html>")
    assert "sandbox" in headers["Content-Security-Policy"]


# ---------------------------------------------------------------------------------- STOP


@pytest.fixture
def live_room(tmp_path: Path) -> Iterator[Room]:
    """The pump on a pty in scaled real time, the driver at its default poll rate (0.2 s)."""
    limits = InjectorLimits(baseline_window_s=0.1)
    with console_room(tmp_path, time_scale=20.0, limits=limits) as room:
        yield room


def to_injection(room: Room, volume_ml: float) -> None:
    tech = room.tech
    assert command(room.url, "select-order", {"accession": ACC, "side": "R"}, tech)[0] == 200
    assert command(room.url, "answer-checklist", {"answers": ALL_CLEAR}, tech)[0] == 200
    room.expose(S.PRE_CONTRAST, seed=1)
    assert room.exam.note_exposures() == 1
    for name in ("finish-pre-contrast", "confirm-cannulation", "confirm-air-purge"):
        assert command(room.url, name, {}, tech)[0] == 200
    args = {"volume_ml": volume_ml, "rate_ml_min": 0.3}
    assert command(room.url, "start-injection", args, tech)[0] == 200


@pytest.mark.slow
def test_stop_with_no_session_while_injecting(live_room: Room) -> None:
    room = live_room
    to_injection(room, 1.0)  # 200 s of pump time, 10 s here
    status, _, raw = request(room.url, path="/api/injection")  # the login page's view
    public = json.loads(raw)
    assert status == 200 and public["injecting"] and public["side"] == "R"
    for identifier in ("ROE", ORDER.patient.id, ACC):
        assert identifier not in raw.decode()

    eventually(lambda: room.driver.progress().delivered_ml > 0.02, 20.0)
    status, document = command(room.url, "stop-injection", {}, None)  # no cookie, no token
    assert status == 200, document
    assert room.exam.wait_for_state(S.POST_INJECTION_1, 20.0)
    assert 0 < room.exam.facts().volume_given_ml < 1.0
    stop = [e for e in entries(room, "command") if e["command"] == "stop-injection"]
    assert stop[0]["operator"] == "no session"
    assert stop[0]["console"] == {"client": "127.0.0.1", "session": "no session", "role": None}


@pytest.mark.slow
def test_a_logged_in_stop_is_journaled_with_its_session(live_room: Room) -> None:
    room = live_room
    to_injection(room, 1.0)
    physicist = room.login("phys1")  # any role may stop
    status, _ = command(room.url, "stop-injection", {}, physicist, csrf=False)
    assert status == 200
    assert room.exam.wait_for_state(S.POST_INJECTION_1, 20.0)
    stop = [e for e in entries(room, "command") if e["command"] == "stop-injection"]
    assert stop[0]["operator"] == "phys1" and stop[0]["console"]["role"] == "physicist"


# ---------------------------------------------------------------------------------- live updates


@pytest.mark.slow
def test_every_poll_of_the_injection_reaches_the_page_at_least_4_a_second(
    live_room: Room,
) -> None:
    """Counted, not timed: each of the driver's polls of the running injection is one sample
    (the pump's DIS queries are counted in its transcript), and over the injection's own
    elapsed time (the driver's clock, in the samples) there are at least 4 a second."""
    room = live_room
    assert room.tech is not None
    with EventStream(room.url, room.tech) as stream:
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        _, name, data = stream.next()
        assert name == "state" and data["state"]["exam"]["state"] == "idle"
        dis_before = room.sim.wire_bytes("RX").count(b"DIS")
        to_injection(room, 0.5)  # 100 s of pump time: 5 s here
        samples: list[dict[str, Any]] = []
        ids: list[int] = []
        while True:
            event_id, name, data = stream.next()
            assert event_id is not None and data["seq"] == event_id and data["time"]
            ids.append(event_id)
            if name == "sample":
                samples.append(data)
            if name == "state" and data["state"]["exam"]["state"] == "post-injection-1":
                break
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    injecting = [s for s in samples if s["state"] in ("injecting", "hold")]
    span_s = injecting[-1]["elapsed_s"] - injecting[0]["elapsed_s"]
    assert span_s > 3.0
    assert len(injecting) >= 4 * span_s, (len(injecting), span_s)
    polls = room.sim.wire_bytes("RX").count(b"DIS") - dis_before
    # one sample for every poll: the read-back before RUN and the final read are no poll
    assert len(samples) >= polls - 2
    assert samples[-1]["delivered_ml"] == pytest.approx(0.5, abs=0.02)
    assert all(s["pressure_kpa"] is not None for s in injecting[2:])


@pytest.mark.slow
def test_a_page_that_reconnects_gets_the_samples_it_missed(live_room: Room) -> None:
    room = live_room
    assert room.tech is not None
    to_injection(room, 0.5)
    with EventStream(room.url, room.tech) as stream:
        seen: list[int] = []
        while len(seen) < 5:
            event_id, name, _ = stream.next()
            if name == "sample":
                assert event_id is not None
                seen.append(event_id)
    with EventStream(room.url, room.tech, last_event_id=seen[2]) as again:
        _, name, _ = again.next()
        assert name == "state"  # the state, whole, first
        _, name, data = again.next()
        assert name == "sample" and data["seq"] == seen[3]  # then what came after the last id
    assert room.exam.wait_for_state(S.POST_INJECTION_1, 30.0)


def test_the_stream_beats_when_nothing_happens_and_needs_a_room_role(room: Room) -> None:
    assert room.tech is not None
    with EventStream(room.url, room.tech) as stream:
        names = [stream.next()[1] for _ in range(4)]
    assert names[0] == "state" and set(names[1:]) == {"heartbeat"}
    with EventStream(room.url, room.login("phys1")) as refused:
        assert refused.status == 403


# ---------------------------------------------------------------------------------- the journal


def test_journal_list_names_the_users_clients_and_sessions(room: Room) -> None:
    assert command(room.url, "select-order", {"accession": ACC, "side": "R"}, room.tech)[0] == 200
    command(room.url, "close", {}, room.login("phys1"))  # 403, journaled
    database = room.journal_path
    listed = subprocess.run(
        [sys.executable, "-m", "acquisition", "journal", "list", "--database", str(database),
         "--exam", ACC, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    (opened,) = [e for e in lines if e["kind"] == "command"]
    assert opened["payload"]["command"] == "select-order"
    assert (opened["user"], opened["client"]) == ("tech1", "127.0.0.1")
    assert opened["session"] not in (None, "no session")
    assert {e["exam_id"] for e in lines if e["kind"] == "transition"} == {ACC}
    text = subprocess.run(
        [sys.executable, "-m", "acquisition", "journal", "list", "--database", str(database)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "console-login" in text and "phys1" in text and "console-rejected" in text


# ---------------------------------------------------------------------------------- HTTPS


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "console.key", tmp_path / "console.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_the_console_over_https_marks_its_cookie_secure(room: Room, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    with ConsoleServer(room.backend, accounts=room.accounts, tls=context) as server:
        assert server.url.startswith("https://127.0.0.1:")
        body = json.dumps({"username": "tech1", "password": PASSWORD}).encode()
        req = urllib.request.Request(
            server.url + "api/session", data=body, headers=JSON, method="POST"
        )
        with urllib.request.urlopen(req, timeout=20, context=client) as response:
            assert response.status == 200
            assert "Secure" in response.headers["Set-Cookie"]
            assert "max-age" in response.headers["Strict-Transport-Security"]
        plain = urllib.request.Request(server.url.replace("https", "http"))
        with pytest.raises(OSError):
            urllib.request.urlopen(plain, timeout=20)


def test_login_through_the_client_and_its_relogin(room: Room) -> None:
    from acquisition.console.client import ConsoleClient, ConsoleClientError

    client = ConsoleClient(room.url, username="tech1", password=PASSWORD, timeout_s=20)
    assert client.state()["exam"]["state"] == "idle"
    room.clock.advance(SESSION_IDLE_S + 1)  # expired: the client logs in again once
    assert client.command("select-order", accession=ACC, side="R")["exam"]["state"] == "checklist"
    with pytest.raises(ConsoleClientError) as refused:
        ConsoleClient(room.url, username="tech1", password="wrong one!", timeout_s=20).state()
    assert refused.value.status == 401
    eventually(lambda: room.exam.state is S.CHECKLIST, 5.0)
