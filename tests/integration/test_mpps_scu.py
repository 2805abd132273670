"""Our MPPS SCU, through the durable outbox, against the simulated RIS (its MPPS SCP enforces
PS3.4 F.7: 0106H, 0110H + A710, 0111H, 0112H, 0120H/0121H)."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.datasets.identity import RequestedStep as ScheduledStep
from dicom_nodes.datasets.mpps_builders import (
    ExposureDose,
    MppsExam,
    PerformedSeries,
    RadiationDose,
    build_mpps_completed,
    build_mpps_discontinued,
    build_mpps_in_progress,
    build_mpps_update,
)
from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox
from dicom_nodes.hospital.mpps_scu import new_mpps_uid
from dicom_nodes.hospital.outbox import RetryPolicy, State
from dicom_nodes.hospital.scu import Peer
from dicom_nodes.network import Timeouts
from simulators.ris import SimulatedRis

FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)
MG = "1.2.840.10008.5.1.4.1.1.1.2"
RDSR = "1.2.840.10008.5.1.4.1.1.88.67"
START = dt.datetime(2026, 11, 25, 9, 30, 0)


class Clock:
    def __init__(self) -> None:
        self.now_s = 2_000_000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def ris() -> Iterator[SimulatedRis]:
    with SimulatedRis(timeouts=FAST) as sim:
        yield sim


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox(tmp_path: Path, ris: SimulatedRis, clock: Clock) -> Iterator[Outbox]:
    host, port = ris.address
    peer = Peer(host, port, "RIS", calling_ae="GALACTO", timeouts=FAST)
    with Outbox(
        tmp_path / "galacto.db",
        {"ris": peer},
        retry=RetryPolicy(2.0, 60.0),
        rng=random.Random(3),
        clock=clock,
    ) as box:
        yield box


def exam(uid: str | None = None) -> MppsExam:
    return MppsExam(
        mpps_instance_uid=uid or new_mpps_uid("1.2.826.0.1.3680043.10.1466"),
        pps_id="PPS0001",
        study_id="S0001",
        station_ae="GALACTO",
        started_at=START,
        patient=Patient(name="Müller^Anna", id="GAL-0001", birth_date="19700101", sex="F"),
        steps=(
            ScheduledStep(
                study_instance_uid=generate_uid(),
                accession_number="ACC0001",
                requested_procedure_id="RP1",
                requested_procedure_description="Galactography right",
                sps_id="SPS1",
                sps_description="Galactography",
                protocol_codes=(codes.VIEW_CC, codes.VIEW_ML),
            ),
        ),
    )


def phase(name: str, images: int, rdsr: bool = False) -> PerformedSeries:
    return PerformedSeries(
        series_instance_uid=generate_uid(),
        protocol_name=name,
        images=tuple((MG, generate_uid()) for _ in range(images)),
        non_images=((RDSR, generate_uid()),) if rdsr else (),
    )


DOSE = RadiationDose(
    exposures=(ExposureDose(28.0, 100000.0, 1200, "STRIP", "RHODIUM"),) * 2,
    entrance_dose_mgy=4.2,
)


def drain(outbox: Outbox, rounds: int = 10) -> None:
    for _ in range(rounds):
        if not outbox.run_once():
            return


def operations(ris: SimulatedRis) -> list[tuple[str, int]]:
    return [(m.operation, m.status_code) for m in ris.mpps_messages()]


def test_one_exam_one_mpps_created_then_completed(outbox: Outbox, ris: SimulatedRis) -> None:
    the_exam = exam()
    pre = phase("Pre-contrast", 2)
    outbox.enqueue_mpps_create(the_exam.mpps_instance_uid, build_mpps_in_progress(the_exam))
    outbox.enqueue_mpps_set(
        the_exam.mpps_instance_uid, build_mpps_update(the_exam, [pre], dose=DOSE)
    )
    post = phase("Post-injection 1", 2, rdsr=True)
    outbox.enqueue_mpps_set(
        the_exam.mpps_instance_uid,
        build_mpps_completed(the_exam, [pre, post], START + dt.timedelta(minutes=40), dose=DOSE),
    )
    drain(outbox)
    assert [m.state for m in outbox.messages(the_exam.mpps_instance_uid)] == [State.SENT] * 3
    assert operations(ris) == [("N-CREATE", 0), ("N-SET", 0), ("N-SET", 0)]
    mpps = ris.mpps(the_exam.mpps_instance_uid)
    assert mpps is not None and mpps.status == "COMPLETED"
    created = mpps.created
    assert created is not None
    assert "PerformedProcedureStepDiscontinuationReasonCodeSequence" in created
    assert [s.ProtocolName for s in mpps.dataset.PerformedSeriesSequence] == [
        "Pre-contrast",
        "Post-injection 1",
    ]
    assert mpps.dataset.TotalNumberOfExposures == 2
    assert str(mpps.dataset.PatientName) == "Müller^Anna"


def test_discontinued_carries_the_cid_9301_reason(outbox: Outbox, ris: SimulatedRis) -> None:
    the_exam = exam()
    outbox.enqueue_mpps_create(the_exam.mpps_instance_uid, build_mpps_in_progress(the_exam))
    outbox.enqueue_mpps_set(
        the_exam.mpps_instance_uid,
        build_mpps_discontinued(
            the_exam, [], START + dt.timedelta(minutes=5), reason=codes.DISCONTINUED_EXTRAVASATION
        ),
    )
    drain(outbox)
    mpps = ris.mpps(the_exam.mpps_instance_uid)
    assert mpps is not None and mpps.status == "DISCONTINUED"
    reason = mpps.discontinuation_reason
    assert reason is not None and (reason.value, reason.scheme) == ("95384003", "SCT")


def test_an_outage_keeps_the_order_create_before_sets(
    outbox: Outbox, ris: SimulatedRis, clock: Clock
) -> None:
    the_exam = exam()
    pre = phase("Pre-contrast", 1)
    ris.down()
    outbox.enqueue_mpps_create(the_exam.mpps_instance_uid, build_mpps_in_progress(the_exam))
    outbox.enqueue_mpps_set(the_exam.mpps_instance_uid, build_mpps_update(the_exam, [pre]))
    outbox.enqueue_mpps_set(
        the_exam.mpps_instance_uid,
        build_mpps_completed(the_exam, [pre], START + dt.timedelta(minutes=30)),
    )
    for _ in range(3):
        outbox.run_once()
        clock.advance(120)
    create, *sets = outbox.messages(the_exam.mpps_instance_uid)
    assert create.attempts == 3 and all(s.attempts == 0 for s in sets)
    ris.up()
    clock.advance(120)
    drain(outbox)
    assert operations(ris) == [("N-CREATE", 0), ("N-SET", 0), ("N-SET", 0)]


def test_a_710_after_the_final_state_is_terminal_and_never_retried(
    outbox: Outbox, ris: SimulatedRis, clock: Clock
) -> None:
    the_exam = exam()
    pre = phase("Pre-contrast", 1)
    outbox.enqueue_mpps_create(the_exam.mpps_instance_uid, build_mpps_in_progress(the_exam))
    outbox.enqueue_mpps_set(
        the_exam.mpps_instance_uid,
        build_mpps_completed(the_exam, [pre], START + dt.timedelta(minutes=30)),
    )
    late_update = build_mpps_update(the_exam, [pre, phase("late", 1)])  # after COMPLETED
    outbox.enqueue_mpps_set(the_exam.mpps_instance_uid, late_update)
    drain(outbox)
    late = outbox.messages(the_exam.mpps_instance_uid)[-1]
    assert late.state == State.FAILED and late.last_status == 0x0110
    assert late.attempts == 1
    clock.advance(3600)
    assert outbox.run_once() == 0
    assert operations(ris)[-1] == ("N-SET", 0x0110)
    assert len(ris.mpps_messages()) == 3


def test_an_n_create_resent_after_a_crash_is_accepted_as_done(
    outbox: Outbox, ris: SimulatedRis, tmp_path: Path
) -> None:
    the_exam = exam()
    outbox.enqueue_mpps_create(the_exam.mpps_instance_uid, build_mpps_in_progress(the_exam))
    drain(outbox)
    # The database as a crash right after the N-CREATE response would leave it:
    with sqlite3.connect(tmp_path / "galacto.db") as conn:
        conn.execute("UPDATE outbox_messages SET state = 'pending'")
    conn.close()
    outbox.enqueue_mpps_set(
        the_exam.mpps_instance_uid,
        build_mpps_completed(the_exam, [phase("Pre-contrast", 1)], START + dt.timedelta(minutes=9)),
    )
    drain(outbox)
    assert operations(ris) == [("N-CREATE", 0), ("N-CREATE", 0x0111), ("N-SET", 0)]
    assert [m.state for m in outbox.messages(the_exam.mpps_instance_uid)] == [
        State.SENT,
        State.SENT,
    ]


def test_a_malformed_n_create_is_terminal(outbox: Outbox, ris: SimulatedRis) -> None:
    the_exam = exam()
    broken = build_mpps_in_progress(the_exam)
    del broken.PerformedProcedureStepID
    outbox.enqueue_mpps_create(the_exam.mpps_instance_uid, broken)
    drain(outbox)
    (message,) = outbox.messages(the_exam.mpps_instance_uid)
    assert message.state == State.FAILED and message.last_status == 0x0120
