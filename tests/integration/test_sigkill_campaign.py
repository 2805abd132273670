"""The SIGKILL campaign as a test: `galacto serve` killed at random moments of a whole exam.

A killer thread SIGKILLs the service at seeded random moments (0.3–2.5 s apart) and starts it
again on the same files, while a technologist who knows only what the console shows drives the
exam to its end — whatever step the kill interrupted: a console command, an image in flight, an
injection. The simulated unit resends an image that got no answer, under the same SOP Instance
UID, as a real unit does. At the end nothing is lost and nothing is twice:

- every image the unit got a success for is in the dose log exactly once, with its file;
- every injection the journal started ran once on the pump (never started again by a restart);
- the journal verifies, and the RIS holds one MPPS for the exam.

``GALACTO_SIGKILL_KILLS`` (default 6) and ``GALACTO_SIGKILL_SEED`` set the campaign; the figures
in docs/reliability.md come from longer runs of this test.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from acquisition.commands.demo import ALL_CLEAR
from acquisition.console.client import ConsoleClientError, ConsoleRefused
from acquisition.exam.model import phase_sps_id
from acquisition.exam_machine import ExamState
from acquisition.journal import Journal
from simulators.room import SimulatedRoom, offered_step
from simulators.unit import AcquiredImage, PerformedStep, SimulatedUnit, UnitError
from simulators.unit_physics import View
from tests.serve_process import JOURNAL_KEY, ServeProcess, write_config

KILLS = int(os.environ.get("GALACTO_SIGKILL_KILLS", "6"))
SEED = int(os.environ.get("GALACTO_SIGKILL_SEED", "20261125"))
pytestmark = [pytest.mark.timeout(120 + 25 * KILLS), pytest.mark.xdist_group("serve-process")]

S = ExamState
OPERATOR = "K. Campaign"
VIEWS = {
    S.PRE_CONTRAST: ("L-CC", "L-ML"),
    S.POST_INJECTION_1: ("L-CC-MAG", "L-ML-MAG"),
    S.POST_INJECTION_2: ("L-ML-MAG",),
}
DEADLINE_S = 60.0 + 20.0 * KILLS
UNIT_HAS_NO_OPEN_STEP = "the unit shows no open step: an N-CREATE cut off by a restart"
#: What a kill can do to a step in progress: the step is tried again from what the console shows.
INTERRUPTED = (ConsoleClientError, UnitError, OSError, TimeoutError, KeyError, ValueError)


class Campaign:
    def __init__(self, room: SimulatedRoom, serve: ServeProcess, database: Path) -> None:
        self.room, self.serve, self.database = room, serve, database
        self.accession = room.schedule_order("L").accession_number
        self.lock = threading.Lock()  # held while the service is being killed and restarted
        self.unit: SimulatedUnit | None = None
        self.images: dict[str, list[AcquiredImage]] = {}  # per SPS ID, acquired once
        self.performed: dict[str, PerformedStep] = {}  # the unit's step of each SPS ID
        self.closed: set[str] = set()  # SPS IDs whose unit step is closed (MPPS COMPLETED)
        self.kills = 0
        self.restart_s: list[float] = []
        self.last_seen = ""  # the exam's state and facts as the console last showed them

    # -- the service ------------------------------------------------------------------------
    def start(self) -> None:
        endpoints = self.serve.start()
        scp = endpoints["storage_scp"]
        if self.unit is None:
            self.unit = self.room.unit(scp["host"], scp["port"], scp["ae_title"])
        self.unit.address = (scp["host"], scp["port"])

    def killer(self, stop: threading.Event) -> None:
        rng = random.Random(SEED)
        while self.kills < KILLS and not stop.wait(rng.uniform(0.3, 2.5)):
            with self.lock:
                self.serve.kill()
                self.kills += 1
                started = time.monotonic()
                self.start()
                self.restart_s.append(time.monotonic() - started)

    def state(self) -> dict[str, Any]:
        with self.lock:
            console = self.serve.console
        return console.state()

    def command(self, name: str, **args: Any) -> None:
        with self.lock:
            console = self.serve.console
        with contextlib.suppress(
            ConsoleRefused
        ):  # the state moved on: it got through before a kill
            console.command(name, **args)

    # -- the technologist -------------------------------------------------------------------
    def advance(self) -> bool:
        """One step toward the end of the exam, from what the console shows; True when done."""
        s = self.state()
        state, facts = S(s["exam"]["state"]), s["facts"]
        self.last_seen = f"{state.value} {facts}"
        if state is S.IDLE:
            if not any(o["accession"] == self.accession for o in s["orders"]):
                self.command("refresh-orders")
                time.sleep(0.2)
                return False
            self.command("select-order", accession=self.accession, side="L")
        elif state is S.CHECKLIST:
            self.command("answer-checklist", answers=ALL_CLEAR, override=None)
        elif state is S.PRE_CONTRAST:
            if facts["pre_contrast_exposures"] < 2:
                self.image(s, state)
            else:
                self.command("finish-pre-contrast")
        elif state is S.CANNULATION:
            if not facts["cannulation_confirmed"]:
                self.command("confirm-cannulation")
            else:
                self.inject(0.5)
        elif state in (S.POST_INJECTION_1, S.POST_INJECTION_2):
            wanted = len(VIEWS[state])
            if facts["post_injection_exposures"] < wanted:
                self.image(s, state)
            elif facts["injections_started"] < 2:
                self.inject(0.3)
            else:
                self.close_steps()  # close the patient on the unit first
                self.complete()
        elif state is S.FAULT:
            self.command("acknowledge-fault", reason="interrupted by a restart")
        elif state is S.COMPLETED:
            return True
        else:
            time.sleep(0.1)  # injecting: the pump runs
        return False

    def complete(self) -> None:
        """*Complete*. The controller refuses it while it holds one of the unit's steps in
        progress; a kill after it stored an N-CREATE and before it answered leaves one the
        unit never knew it opened (the unit starts the step again under a new UID). Seeing no
        patient open on the unit, the technologist completes with a reason, as the console
        allows (journaled as an override)."""
        with self.lock:
            console = self.serve.console
        try:
            console.command("complete")
        except ConsoleRefused as refused:
            if "still in progress" not in refused.reason or set(self.performed) - self.closed:
                return  # the state moved on, or the unit still has a step to close
            with contextlib.suppress(ConsoleRefused):
                console.command("complete", override_reason=UNIT_HAS_NO_OPEN_STEP)

    def inject(self, volume_ml: float) -> None:
        self.command("confirm-air-purge")
        self.command("start-injection", volume_ml=volume_ml, rate_ml_min=0.3)

    def image(self, s: dict[str, Any], phase: ExamState) -> None:
        """The unit images the phase once; an image without an answer is sent again."""
        assert self.unit is not None
        sps_id = phase_sps_id(s["exam"]["order"]["exam_id"], phase)
        if sps_id not in self.images:
            step = offered_step(self.unit, sps_id)
            if step is None:
                time.sleep(0.2)
                return
            performed = self.unit.start_step(step)
            self.performed[sps_id] = performed
            self.images[sps_id] = self.unit.acquire(
                performed, [View.parse(v) for v in VIEWS[phase]]
            )
        self.close_steps()  # sends again what got no answer, closes what all got one
        time.sleep(0.2)  # the controller reads them into the exam

    def close_steps(self) -> None:
        """The unit closes each step whose images all got an answer (MPPS COMPLETED): the
        controller refuses *Complete* while one is still in progress. An image still without an
        answer is sent again first — a kill after the controller stored it and before it
        answered lets the exam move on while the unit still waits. A COMPLETED that got through
        before a kill is answered 0110H when sent again: closed all the same."""
        assert self.unit is not None
        for sps_id, performed in self.performed.items():
            if sps_id in self.closed:
                continue
            unanswered = [i for i in self.images[sps_id] if i.sent_status != 0]
            if unanswered and set(self.unit.send_images(unanswered)) != {0}:
                continue
            try:
                self.unit.complete_step(performed)
            except UnitError as exc:
                if "0x0110" not in str(exc):
                    raise
            self.closed.add(sps_id)


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[Campaign]:
    with SimulatedRoom(time_scale=60.0, seed=SEED % 1000) as room:
        settings = {**room.controller_settings(tmp_path), "site.journal_key": JOURNAL_KEY}
        settings["site.journal_witness"] = str(tmp_path / "witness" / "heads.log")
        config = write_config(tmp_path / "galacto.toml", settings)
        with ServeProcess(config, tmp_path / "serve.log") as serve:
            run = Campaign(room, serve, tmp_path / "galacto.db")
            run.start()
            yield run
            serve.stop()


def test_random_kills_during_an_exam_lose_nothing_and_repeat_nothing(campaign: Campaign) -> None:
    c = campaign
    stop = threading.Event()
    killer = threading.Thread(target=c.killer, args=(stop,), name="sigkill-campaign")
    killer.start()
    deadline = time.monotonic() + DEADLINE_S
    interrupted = 0
    try:
        while True:
            assert time.monotonic() < deadline, (
                f"the exam did not end ({c.kills} kills, seed {SEED}); last seen: {c.last_seen}"
            )
            try:
                if c.advance() and c.kills >= KILLS:
                    break
            except INTERRUPTED:
                interrupted += 1
                time.sleep(0.1)
    finally:
        stop.set()
        killer.join(timeout=60)
    assert c.kills == KILLS

    acknowledged = {i.sop_instance_uid for images in c.images.values() for i in images}
    assert all(i.sent_status == 0 for images in c.images.values() for i in images)
    with closing(sqlite3.connect(c.database)) as conn:
        logged = [
            r[0]
            for r in conn.execute(
                "SELECT sop_instance_uid FROM exposure WHERE accession = ?", (c.accession,)
            )
        ]
        started = conn.execute(
            "SELECT COUNT(*) FROM journal WHERE kind = 'injection-started'"
        ).fetchone()[0]
    assert sorted(logged) == sorted(acknowledged), "an acknowledged image lost, or logged twice"
    objects = c.database.parent / "objects"
    assert all(any(objects.glob(f"*/{uid}.dcm")) for uid in acknowledged)
    assert c.room.injector.snapshot().run_count == started, "an injection started twice"
    with Journal(c.database, key=JOURNAL_KEY.encode()) as journal:
        assert journal.verify().ok
    ris = c.room.ris
    assert ris.wait_for(lambda: any(m.is_final for m in ris.mpps_instances()), 60.0)
    assert len([m for m in ris.mpps_instances() if m.is_final]) == 1
    print(
        f"\nSIGKILL campaign: {c.kills} kills, {interrupted} steps interrupted, "
        f"{len(acknowledged)} images, {started} injections; restart to ready "
        f"max {max(c.restart_s):.2f} s"
    )
