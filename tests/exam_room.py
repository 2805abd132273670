"""The real controller in the simulated room, for the end-to-end exam tests (issue 4 §5).

:func:`exam_room` starts :class:`simulators.room.SimulatedRoom` (injector simulator on a real
pty, RIS and PACS simulators on loopback), builds the configuration the way ``galacto serve``
does (``acquisition.settings.load``) with every port chosen by the kernel and the database and
objects under the test's directory, starts :class:`acquisition.controller.Controller` without
its console, and builds the simulated unit toward the controller's unit-facing SCPs.

:class:`Room` plays the technologist: open the RIS order, pass the checklist, image a phase (the
unit finds the phase's step on the controller's worklist and performs it: MPPS, images, RDSR),
inject, and wait for what the RIS and the PACS hold. The steps come from
:class:`acquisition.commands.demo.ScriptedExam` and its constants where they fit; every wait has
a deadline and fails naming what it waited for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from acquisition import settings
from acquisition.commands import demo
from acquisition.commands.demo import ALL_CLEAR, OPERATOR, ScriptedExam
from acquisition.controller import Controller
from acquisition.dose_log import DoseLog
from acquisition.exam.model import ExamOrder
from acquisition.exam.service import ExamService
from acquisition.exam_machine import ExamState, Refused
from acquisition.journal import Entry, Journal
from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox
from simulators import room as room_module
from simulators.injector import InjectorSimulator
from simulators.pacs import ReceivedObject, SimulatedPacs
from simulators.ris import RisMpps, SimulatedRis
from simulators.room import SimulatedRoom
from simulators.unit import PerformedStep, SimulatedUnit, WorklistStep
from tests.injector_clock import conversation_clock
from tests.serve_process import JOURNAL_KEY
from tests.waiting import wait_until

S = ExamState
TIME_SCALE = 120.0  # 0.5 mL at 0.3 mL/min (100 s simulated) takes ~0.8 s
WAIT_S = 20.0  # deadline of every wait on the controller, the unit or a peer
RATE_ML_MIN = demo.RATE_ML_MIN
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
XRAY_RADIATION_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
#: The driver's timings made fast enough for a test (tests/integration/test_exam_service.py).
FAST_INJECTOR = {
    "injector.baseline_window_s": 0.1,
    "injector.poll_interval_s": 0.05,
    "injector.reply_timeout_s": 0.5,
}


@dataclass
class Room:
    """The controller, its simulated equipment, and the technologist's steps."""

    sim_room: SimulatedRoom
    controller: Controller
    unit: SimulatedUnit
    time_scale: float
    data_dir: Path

    # ------------------------------------------------------------------ what is in the room

    @property
    def exam(self) -> ExamService:
        assert self.controller.exam is not None
        return self.controller.exam

    @property
    def journal(self) -> Journal:
        journal: Journal = self.controller.journal
        return journal

    @property
    def dose_log(self) -> DoseLog:
        dose_log: DoseLog = self.controller.dose_log
        return dose_log

    @property
    def outbox(self) -> Outbox:
        assert self.controller.outbox is not None
        return self.controller.outbox

    @property
    def ris(self) -> SimulatedRis:
        return self.sim_room.ris

    @property
    def pacs(self) -> SimulatedPacs:
        return self.sim_room.pacs

    @property
    def injector_sim(self) -> InjectorSimulator:
        return self.sim_room.injector

    @property
    def database(self) -> Path:
        return self.controller.database

    @property
    def order(self) -> ExamOrder:
        order = self.exam.order
        assert order is not None, "no exam is open"
        return order

    def last_order(self) -> ExamOrder:
        """The order of the exam opened last, open or closed (from its ``exam-opened`` entry)."""
        opened = self.journal.last("exam-opened")
        assert opened is not None, "no exam was ever opened"
        return ExamOrder.from_json(opened.payload["order"])

    def script(self) -> ScriptedExam:
        """The demo's scripted technologist, on this room."""
        return ScriptedExam(self.controller, self.sim_room, room_module, self.unit, self.time_scale)

    # ------------------------------------------------------------------ the technologist

    def open_order(self, side: str = "L") -> ExamOrder:
        """Schedule an order at the RIS, wait until the controller lists it, open its exam."""
        accession = self.sim_room.schedule_order(side).accession_number
        item = self.script().ris_order(accession)
        return self.exam.select_order(item, side, OPERATOR)

    def pass_checklist(self) -> None:
        assert self.exam.answer_checklist(ALL_CLEAR, OPERATOR)
        self.exam.pass_checklist(OPERATOR)

    def offered(self, phase: ExamState) -> WorklistStep:
        """The phase's step, once the controller's worklist offers it to the unit."""
        sps_id = self.exam.sps_id(phase)
        found: list[WorklistStep] = []

        def offered() -> bool:
            step = room_module.offered_step(self.unit, sps_id)
            if step is not None:
                found.append(step)
            return bool(found)

        wait_until(offered, WAIT_S, f"the {phase.value} step on the unit's worklist")
        return found[0]

    def perform(self, step: WorklistStep, views: Sequence[str]) -> PerformedStep:
        """The unit performs ``step`` (MPPS, images, RDSR), offered now or not. Like a real unit
        it knows nothing of the injections: the controller completes the Contrast/Bolus module
        of the post-contrast images it forwards."""
        return room_module.perform(self.unit, step, views)

    def image(
        self, phase: ExamState, views: Sequence[str] | None = None
    ) -> tuple[WorklistStep, PerformedStep]:
        """The unit performs the phase's step; returns once the exam has counted every view."""
        views = tuple(views or demo.SCRIPT_VIEWS[phase])
        before = self.counted(phase)
        step = self.offered(phase)
        performed = self.perform(step, views)
        wait_until(
            lambda: self.counted(phase) >= before + len(views),
            WAIT_S,
            f"the {phase.value} exposures counted by the exam",
        )
        return step, performed

    def counted(self, phase: ExamState) -> int:
        """Exposures the exam counts in ``phase`` (the facts its interlocks read)."""
        facts = self.exam.facts()
        if phase is S.PRE_CONTRAST:
            return facts.pre_contrast_exposures
        return facts.post_injection_exposures if self.exam.state is phase else 0

    def to_cannulation(self, side: str = "L") -> ExamOrder:
        """Open an order, pass the checklist, take the pre-contrast images, confirm the
        cannulation and the air purge: ready for the first injection."""
        order = self.open_order(side)
        self.pass_checklist()
        self.image(S.PRE_CONTRAST)
        self.exam.finish_pre_contrast(OPERATOR)
        self.exam.confirm_cannulation(OPERATOR)
        self.exam.confirm_air_purge(OPERATOR)
        return order

    def inject(
        self, volume_ml: float, expected: ExamState, rate_ml_min: float = RATE_ML_MIN
    ) -> None:
        """Start an injection (air purge already confirmed); wait until the exam is in
        ``expected`` (its post-injection phase, or FAULT)."""
        self.exam.start_injection(volume_ml, rate_ml_min, OPERATOR)
        length_s = volume_ml / rate_ml_min * 60.0 / self.time_scale
        reached = self.exam.wait_for_state(expected, length_s + WAIT_S)
        assert reached, f"the exam is in {self.exam.state.value}, not {expected.value}"

    # ------------------------------------------------------------------ what came out

    def entries(self, kind: str | None = None, exam_id: str | None = None) -> list[Entry]:
        return [e for e in self.journal.entries(exam_id=exam_id) if kind in (None, e.kind)]

    def wait_for_final_mpps(self, mpps_uid: str | None = None) -> RisMpps:
        uid = mpps_uid or self.order.mpps_instance_uid

        def final() -> bool:
            mpps = self.ris.mpps(uid)
            return mpps is not None and mpps.is_final

        assert self.ris.wait_for(final, WAIT_S), f"the RIS holds no final MPPS {uid}"
        mpps = self.ris.mpps(uid)
        assert mpps is not None
        return mpps

    def wait_for_outbox_drained(self) -> None:
        """Every outbox message sent (none pending, none failed)."""

        def drained() -> bool:
            counts = self.outbox.counts()
            return not counts.get("pending") and not counts.get("failed")

        assert self.outbox.wait_for(drained, WAIT_S), f"outbox: {self.outbox.counts()}"

    def pacs_objects(self, sop_class_uid: str | None = None) -> list[ReceivedObject]:
        return [o for o in self.pacs.received() if sop_class_uid in (None, o.sop_class_uid)]

    def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        wait_until(predicate, WAIT_S, what)


def controller_overrides(sim_room: SimulatedRoom, data_dir: Path) -> dict[str, Any]:
    """The settings of a controller in ``sim_room``, with its files under ``data_dir``."""
    return {
        **sim_room.controller_settings(data_dir),
        **FAST_INJECTOR,
        "site.journal_key": JOURNAL_KEY,
    }


@contextlib.contextmanager
def exam_room(
    data_dir: Path,
    *,
    time_scale: float = TIME_SCALE,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> Iterator[Room]:
    """The controller started in a started simulated room; both stopped on the way out.
    ``overrides`` change settings after the room's (e.g. point the RIS elsewhere). The injector
    is in process on the conversation's clock (tests/injector_clock.py); ``time_scale`` only
    sizes the waits on an injection."""
    injector, name = conversation_clock(seed)
    with SimulatedRoom(seed=seed, injector=injector, in_process=name) as sim_room:
        config = settings.load(
            None,
            environ={},
            overrides={**controller_overrides(sim_room, data_dir), **(overrides or {})},
        )
        with Controller(config, console=False) as controller:
            endpoints = controller.endpoints()
            unit = sim_room.unit(endpoints.host, endpoints.port, endpoints.ae_title)
            yield Room(sim_room, controller, unit, time_scale, data_dir)


def journaled_refusal(journal: Journal, action: Callable[[], object]) -> tuple[Refused, Entry]:
    """Run ``action``, which must be refused; the refusal and the one refusal entry it journaled.

    Found among what was journaled after the action began, by kind: other threads (the outbox's
    deliveries, an exposure arriving) journal at the same time, so "the last entry" is not it.
    """
    before = journal.head().seq
    with pytest.raises(Refused) as refused:
        action()
    (entry,) = [e for e in journal.entries(after_seq=before) if e.kind == "refusal"]
    assert entry.payload["reason"] == refused.value.reason
    return refused.value, entry
