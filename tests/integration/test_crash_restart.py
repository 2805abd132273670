"""Crash safety (issue 4 §3): `galacto serve` killed with SIGKILL at many points of the exam.

The controller runs as its own process (``galacto serve --config FILE``) and is driven through
its console's HTTP API, as the technologist would; the injector (on a real pty), RIS, PACS and
unit simulators live in the test process and outlive every kill. After each kill the service is
started again on the same files and must resume in the same state, with its journal intact and
nothing lost: no exposure, no journal entry, no outbound message; no injection started twice;
the RIS MPPS continued, never re-created.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from acquisition.commands.demo import ALL_CLEAR
from acquisition.console.client import ConsoleClient
from acquisition.exam.model import INTERRUPTED_BY_RESTART, phase_sps_id
from acquisition.exam_machine import ExamState
from acquisition.journal import Journal
from simulators.room import SimulatedRoom, offered_step, perform
from simulators.unit import SimulatedUnit
from tests.serve_process import ServeProcess, write_config
from tests.waiting import wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.xdist_group("serve-process")]

OPERATOR = "T. Technologist"
JOURNAL_KEY = "crash-test-journal-key"
TIME_SCALE = 60.0
WAIT_S = 60.0
S = ExamState


@dataclass
class Bench:
    """One room, one data directory, the serve process and the unit (kept across kills)."""

    room: SimulatedRoom
    serve: ServeProcess
    database: Path
    accession: str
    unit: SimulatedUnit | None = None

    @property
    def console(self) -> ConsoleClient:
        return self.serve.console

    def start(self) -> None:
        endpoints = self.serve.start()
        scp = endpoints["storage_scp"]
        if self.unit is None:
            self.unit = self.room.unit(scp["host"], scp["port"], scp["ae_title"])
        else:  # the same unit (its UIDs go on), the controller's new port
            self.unit.address = (scp["host"], scp["port"])

    def restart_after_kill(self) -> None:
        self.serve.kill()
        self.start()

    def state(self) -> dict[str, Any]:
        return self.console.state()

    def exam_state(self) -> str:
        return str(self.state()["exam"]["state"])

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> None:
        wait_until(lambda: predicate(self.state()), WAIT_S, what)

    def command(self, name: str, **args: Any) -> None:
        self.console.command(name, **args)

    def journal_entries(self) -> int:
        with closing(sqlite3.connect(self.database)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0])

    def journal_kinds(self, kind: str) -> list[int]:
        with closing(sqlite3.connect(self.database)) as conn:
            rows = conn.execute("SELECT seq FROM journal WHERE kind = ?", (kind,)).fetchall()
        return [int(row[0]) for row in rows]

    def exposures(self) -> list[tuple[str, str]]:
        with closing(sqlite3.connect(self.database)) as conn:
            rows = conn.execute(
                "SELECT sop_instance_uid, phase FROM exposure WHERE accession = ? ORDER BY id",
                (self.accession,),
            ).fetchall()
        return [(str(uid), str(phase)) for uid, phase in rows]

    # -- the technologist's steps --------------------------------------------------------------

    def open_order(self) -> None:
        def listed(state: dict[str, Any]) -> bool:
            if not any(o["accession"] == self.accession for o in state["orders"]):
                self.command("refresh-orders")
                return False
            return True

        self.wait_for(listed, "the RIS order on the console")
        self.command("select-order", accession=self.accession, side="L")

    def image(self, phase: ExamState, views: tuple[str, ...]) -> None:
        assert self.unit is not None
        exam_id = self.state()["exam"]["order"]["exam_id"]
        sps_id = phase_sps_id(exam_id, phase)
        found: list[Any] = []

        def offered() -> bool:
            assert self.unit is not None
            step = offered_step(self.unit, sps_id)
            found.append(step)
            return step is not None

        wait_until(offered, WAIT_S, f"the {phase.value} step on the unit's worklist")
        performed = perform(self.unit, found[-1], views)
        assert all(image.sent_status == 0 for image in performed.images)

    def inject(self, volume_ml: float, then: ExamState) -> None:
        self.command("confirm-air-purge")
        self.command("start-injection", volume_ml=volume_ml, rate_ml_min=0.3)
        self.wait_for(lambda s: s["exam"]["state"] == then.value, f"{then.value}")


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    with SimulatedRoom(time_scale=TIME_SCALE) as room:
        database = tmp_path / "galacto.db"
        settings = {**room.controller_settings(tmp_path), "site.journal_key": JOURNAL_KEY}
        config = write_config(tmp_path / "galacto.toml", settings)
        order = room.schedule_order("L")
        with ServeProcess(config, tmp_path / "serve.log") as serve:
            bench = Bench(room, serve, database, order.accession_number)
            bench.start()
            yield bench
            serve.stop()


def exposures_counted(phase: ExamState, count: int) -> Callable[[dict[str, Any]], bool]:
    key = "pre_contrast_exposures" if phase is S.PRE_CONTRAST else "post_injection_exposures"
    return lambda state: state["facts"][key] == count


def test_killed_after_every_step_the_exam_resumes_and_nothing_is_lost(bench: Bench) -> None:
    b = bench
    steps: list[tuple[str, Callable[[], None], ExamState, Callable[[dict[str, Any]], bool]]] = [
        ("select the order", b.open_order, S.CHECKLIST, lambda s: True),
        (
            "answer the checklist",
            lambda: b.command("answer-checklist", answers=ALL_CLEAR, override=None),
            S.PRE_CONTRAST,
            lambda s: True,
        ),
        (
            "pre-contrast CC and ML",
            lambda: b.image(S.PRE_CONTRAST, ("L-CC", "L-ML")),
            S.PRE_CONTRAST,
            exposures_counted(S.PRE_CONTRAST, 2),
        ),
        (
            "finish pre-contrast",
            lambda: b.command("finish-pre-contrast"),
            S.CANNULATION,
            lambda s: True,
        ),
        (
            "confirm cannulation",
            lambda: b.command("confirm-cannulation"),
            S.CANNULATION,
            lambda s: s["facts"]["cannulation_confirmed"],
        ),
        (
            "injection 1",
            lambda: b.inject(0.5, S.POST_INJECTION_1),
            S.POST_INJECTION_1,
            lambda s: s["facts"]["injections_started"] == 1,
        ),
        (
            "post-injection 1 CC and ML magnified",
            lambda: b.image(S.POST_INJECTION_1, ("L-CC-MAG", "L-ML-MAG")),
            S.POST_INJECTION_1,
            exposures_counted(S.POST_INJECTION_1, 2),
        ),
        (
            "injection 2",
            lambda: b.inject(0.3, S.POST_INJECTION_2),
            S.POST_INJECTION_2,
            lambda s: s["facts"]["injections_started"] == 2,
        ),
        (
            "post-injection 2 ML magnified",
            lambda: b.image(S.POST_INJECTION_2, ("L-ML-MAG",)),
            S.POST_INJECTION_2,
            exposures_counted(S.POST_INJECTION_2, 1),
        ),
        ("complete", lambda: b.command("complete"), S.COMPLETED, lambda s: True),
    ]
    for name, action, expected, resumed in steps:
        action()
        before_kill = b.journal_entries()
        b.restart_after_kill()
        b.wait_for(
            lambda s, e=expected, r=resumed: s["exam"]["state"] == e.value and r(s),  # type: ignore[misc]
            f"the exam resumed in {expected.value} after a kill after '{name}'",
        )
        assert b.journal_entries() >= before_kill, f"journal entries lost by the kill after {name}"
        with Journal(b.database, key=JOURNAL_KEY.encode()) as journal:
            result = journal.verify()
        assert result.ok, f"after '{name}': {result}"

    # Nothing lost, nothing twice.
    phases = [phase for _, phase in b.exposures()]
    assert phases == ["pre-contrast"] * 2 + ["post-injection-1"] * 2 + ["post-injection-2"]
    assert len(b.journal_kinds("injection-started")) == 2
    assert b.room.injector.snapshot().run_count == 2, "an injection was started twice"
    ris, pacs = b.room.ris, b.room.pacs
    assert ris.wait_for(lambda: any(m.is_final for m in ris.mpps_instances()), WAIT_S)
    instances = ris.mpps_instances()
    assert len(instances) == 1, "the RIS MPPS was re-created after a restart"
    assert instances[0].status == "COMPLETED"
    creates = [m for m in ris.mpps_messages() if m.operation == "N-CREATE"]
    assert creates and all(m.status_code in (0x0000, 0x0111) for m in creates)
    image_uids = {uid for uid, _ in b.exposures()}
    assert pacs.wait_for(
        lambda: image_uids <= {o.sop_instance_uid for o in pacs.received()}, WAIT_S
    ), "an image was not forwarded to the PACS"
    assert pacs.wait_for(lambda: len(pacs.received()) >= 9, WAIT_S), "a dose report is missing"


def test_killed_during_an_injection_it_is_never_started_again(bench: Bench) -> None:
    b = bench
    b.open_order()
    b.command("answer-checklist", answers=ALL_CLEAR, override=None)
    b.image(S.PRE_CONTRAST, ("L-CC", "L-ML"))
    b.wait_for(exposures_counted(S.PRE_CONTRAST, 2), "the pre-contrast exposures")
    b.command("finish-pre-contrast")
    b.command("confirm-cannulation")
    b.command("confirm-air-purge")
    b.command("start-injection", volume_ml=1.0, rate_ml_min=0.3)  # 200 s, 3.3 s at x60
    injector = b.room.injector
    wait_until(lambda: injector.snapshot().infused_ml > 0.05, WAIT_S, "contrast flowing")
    b.restart_after_kill()

    b.wait_for(lambda s: s["exam"]["state"] == S.FAULT.value, "FAULT after the restart")
    # The pump stopped itself (Safe-mode watchdog) and nobody started it again.
    wait_until(lambda: injector.snapshot().prompt.name != "INFUSING", WAIT_S, "the pump stopped")
    assert injector.snapshot().run_count == 1
    assert injector.snapshot().infused_ml < 1.0
    with Journal(b.database, key=JOURNAL_KEY.encode()) as journal:
        ended = [e for e in journal.entries() if e.kind == "injection-ended"]
        assert journal.verify().ok
    assert len(ended) == 1
    assert ended[0].payload["reason"].startswith(INTERRUPTED_BY_RESTART)
    assert ended[0].payload["delivered_ml"] == 1.0  # the programmed volume, counted as given

    refused = b.state()["actions"]["start-injection"]
    assert not refused["allowed"]
    b.command("acknowledge-fault", reason="interrupted by a restart")
    assert b.exam_state() == S.POST_INJECTION_1.value
    b.command("discontinue", reason_code="110501")
    ris = b.room.ris
    assert ris.wait_for(lambda: any(m.is_final for m in ris.mpps_instances()), WAIT_S)
    (mpps,) = ris.mpps_instances()
    assert mpps.discontinuation_reason is not None
    assert mpps.discontinuation_reason.value == "110501"
    assert injector.snapshot().run_count == 1
