"""MPPS SCP over loopback: PS3.4 Annex F statuses, table-driven; persistence; dose records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt

from acquisition.dose_log import DoseLog
from dicom_nodes.network import NODELAY_HANDLERS
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.server import UnitFacingServer
from tests.dose_factories import MPPS_SOP_CLASS, Exposure, mpps_create, mpps_set, scu_ae

STUDY = "1.2.826.0.1.3680043.8.498.1"
UID_ROOT = "1.2.826.0.1.3680043.10.1466"


@dataclass
class Peer:
    host: str
    port: int
    store: SqliteMppsStore
    dose_log: DoseLog


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """One server for the module: every test uses its own instance UIDs."""
    tmp_path = tmp_path_factory.mktemp("mpps")
    store = SqliteMppsStore(tmp_path / "galacto.sqlite")
    dose_log = DoseLog(tmp_path / "galacto.sqlite")
    server = UnitFacingServer(
        None, store, dose_log, port=0, storage_dir=tmp_path / "objects", uid_prefix=UID_ROOT
    )
    host, port = server.start()
    try:
        yield Peer(host, port, store, dose_log)
    finally:
        server.stop()
        dose_log.close()
        store.close()


def _status(result: tuple[Dataset, Any]) -> Dataset:
    status = result[0]
    assert "Status" in status, "no response (association aborted?)"
    return status


class Session:
    """One association; N-CREATE / N-SET answer their status Dataset."""

    def __init__(self, peer: Peer) -> None:
        self.ae: Any = scu_ae(MPPS_SOP_CLASS)
        self.assoc = self.ae.associate(
            peer.host, peer.port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS
        )
        assert self.assoc.is_established

    def create(self, ds: Dataset, uid: str | None) -> Dataset:
        return _status(self.assoc.send_n_create(ds, MPPS_SOP_CLASS, uid))

    def set(self, ds: Dataset, uid: str) -> Dataset:
        return _status(self.assoc.send_n_set(ds, MPPS_SOP_CLASS, uid))

    def close(self) -> None:
        self.assoc.release()
        self.ae.shutdown()


def _without(keyword: str) -> Callable[[Dataset], Dataset]:
    def change(ds: Dataset) -> Dataset:
        del ds[keyword]
        return ds

    return change


def _emptied(keyword: str) -> Callable[[Dataset], Dataset]:
    def change(ds: Dataset) -> Dataset:
        ds[keyword].value = ""
        return ds

    return change


def _step_without_study_uid(ds: Dataset) -> Dataset:
    del ds.ScheduledStepAttributesSequence[0].StudyInstanceUID
    return ds


def _identity() -> Callable[[Dataset], Dataset]:
    return lambda ds: ds


CREATE_CASES = {
    "valid": (_identity(), 0x0000),
    "status COMPLETED": (
        lambda ds: (setattr(ds, "PerformedProcedureStepStatus", "COMPLETED"), ds)[1],
        0x0106,
    ),
    "type 2 missing (Patient ID)": (_without("PatientID"), 0x0120),
    "type 1 missing (Modality)": (_without("Modality"), 0x0120),
    "type 1 empty (Performed Station AE)": (_emptied("PerformedStationAETitle"), 0x0121),
    "step item lacks Study Instance UID": (_step_without_study_uid, 0x0120),
}


@pytest.mark.parametrize(("change", "expected"), CREATE_CASES.values(), ids=CREATE_CASES.keys())
def test_n_create_status(peer: Peer, change: Callable[[Dataset], Dataset], expected: int) -> None:
    session = Session(peer)
    try:
        uid = generate_uid()
        status = session.create(change(mpps_create(study_uid=STUDY)), uid)
    finally:
        session.close()
    assert status.Status == expected
    assert peer.store.messages(uid) == [("N-CREATE", expected)]
    assert (peer.store.get(uid) is not None) == (expected == 0)


def test_duplicate_instance(peer: Peer) -> None:
    session = Session(peer)
    uid = generate_uid()
    try:
        first = session.create(mpps_create(study_uid=STUDY), uid)
        second = session.create(mpps_create(study_uid=STUDY), uid)
    finally:
        session.close()
    assert (first.Status, second.Status) == (0x0000, 0x0111)


def _set_status(status: str, **extra: Any) -> Callable[[list[Exposure]], Dataset]:
    def build(exposures: list[Exposure]) -> Dataset:
        ds = mpps_set(exposures, status=status)
        for keyword, value in extra.items():
            if value is None:
                del ds[keyword]
            else:
                setattr(ds, keyword, value)
        return ds

    return build


def _not_created(exposures: list[Exposure]) -> Dataset:
    ds = mpps_set(exposures)
    ds.CommentsOnThePerformedProcedureStep = "not created at N-CREATE"
    return ds


def _no_series(exposures: list[Exposure]) -> Dataset:
    ds = mpps_set(exposures, status="COMPLETED")
    ds.PerformedSeriesSequence = []
    return ds


# (N-SETs applied in order after a valid N-CREATE) → status of each
SET_CASES: dict[str, list[tuple[Callable[[list[Exposure]], Dataset], int]]] = {
    "in progress then completed": [
        (_set_status("IN PROGRESS"), 0x0000),
        (_set_status("COMPLETED"), 0x0000),
    ],
    "discontinued is final too": [
        (_set_status("DISCONTINUED"), 0x0000),
        (_set_status("IN PROGRESS"), 0x0110),
    ],
    "after completed: A710": [
        (_set_status("COMPLETED"), 0x0000),
        (_set_status("COMPLETED"), 0x0110),
    ],
    "attribute not created at N-CREATE": [(_not_created, 0x0105)],
    "identity attribute changed": [(_set_status("IN PROGRESS", PatientID="OTHER"), 0x0106)],
    "identity attribute echoed unchanged": [(_set_status("IN PROGRESS", PatientID="PID1"), 0)],
    "unknown status value": [(_set_status("PAUSED"), 0x0106)],
    "completed without end time": [
        (_set_status("COMPLETED", PerformedProcedureStepEndTime=None), 0x0121)
    ],
    "completed without a series": [(_no_series, 0x0121)],
}


@pytest.mark.parametrize("steps", SET_CASES.values(), ids=SET_CASES.keys())
def test_n_set_status(peer: Peer, steps: list[tuple[Callable[..., Dataset], int]]) -> None:
    exposures = [Exposure(), Exposure(laterality="L")]
    uid = generate_uid()
    session = Session(peer)
    try:
        assert session.create(mpps_create(study_uid=STUDY), uid).Status == 0
        statuses = [session.set(build(exposures), uid) for build, _ in steps]
    finally:
        session.close()
    assert [s.Status for s in statuses] == [expected for _, expected in steps]
    for status, (_, expected) in zip(statuses, steps, strict=True):
        if expected == 0x0110:
            assert status.ErrorID == 0xA710
            assert status.ErrorComment == "Performed Procedure Step Object may no longer be updated"
    assert peer.store.messages(uid) == [("N-CREATE", 0)] + [("N-SET", e) for _, e in steps]


def test_n_set_unknown_instance(peer: Peer) -> None:
    session = Session(peer)
    try:
        status = session.set(mpps_set([Exposure()]), generate_uid())
    finally:
        session.close()
    assert status.Status == 0x0112


def test_refused_n_set_leaves_state_unchanged(peer: Peer) -> None:
    uid = generate_uid()
    session = Session(peer)
    try:
        session.create(mpps_create(study_uid=STUDY), uid)
        session.set(_set_status("COMPLETED", PerformedProcedureStepEndTime=None)([Exposure()]), uid)
    finally:
        session.close()
    instance = peer.store.get(uid)
    assert instance is not None
    assert instance.status == "IN PROGRESS"
    assert len(instance.dataset.PerformedSeriesSequence) == 0


def test_radiation_dose_module_becomes_exposure_rows(peer: Peer) -> None:
    exposures = [Exposure(tube_current_ma=95.0), Exposure(laterality="L", tube_current_ma=105.0)]
    uid = generate_uid()
    session = Session(peer)
    try:
        session.create(mpps_create(study_uid=STUDY, accession="ACC-DOSE"), uid)
        session.set(mpps_set(exposures), uid)
        assert session.set(mpps_set(exposures, status="COMPLETED"), uid).Status == 0
    finally:
        session.close()
    rows = peer.dose_log.list_exposures(accession="ACC-DOSE")
    assert [row["sop_instance_uid"] for row in rows] == [e.sop_instance_uid for e in exposures]
    assert [row["tube_current_ma"] for row in rows] == [pytest.approx(95.0), pytest.approx(105.0)]
    assert all(row["sources"] == "mpps" and row["unknown_step"] == 0 for row in rows)
    instance = peer.store.get(uid)
    assert instance is not None and instance.status == "COMPLETED"


def test_instance_uid_assigned_when_the_scu_sends_none(peer: Peer) -> None:
    responses: list[Dataset] = []
    ae: Any = scu_ae(MPPS_SOP_CLASS)
    capture = (evt.EVT_DIMSE_RECV, lambda event: responses.append(event.message.command_set))
    assoc = ae.associate(
        peer.host, peer.port, ae_title="GALACTO", evt_handlers=[*NODELAY_HANDLERS, capture]
    )
    try:
        status, _ = assoc.send_n_create(mpps_create(study_uid=STUDY), MPPS_SOP_CLASS, None)
    finally:
        assoc.release()
        ae.shutdown()
    assert status.Status == 0
    uid = str(responses[-1].AffectedSOPInstanceUID)
    assert uid.startswith(UID_ROOT + ".")
    instance = peer.store.get(uid)
    assert instance is not None and instance.status == "IN PROGRESS"
    assert peer.store.messages(uid) == [("N-CREATE", 0)]


def test_a_value_longer_than_its_vr_is_refused_in_n_create_and_n_set(peer: Peer) -> None:
    """0106H with an Error Comment naming the attribute; nothing kept (a 70 KB LO)."""
    uid = generate_uid()
    session = Session(peer)
    try:
        created = mpps_create(study_uid=STUDY)
        created.PerformedProcedureStepDescription = "x" * 70_000
        status = session.create(created, uid)
        assert (status.Status, status.ErrorComment) == (
            0x0106,
            "value too long: (0040,0254) PerformedProcedureStepDescription",
        )
        assert peer.store.get(uid) is None
        assert session.create(mpps_create(study_uid=STUDY), uid).Status == 0
        modification = Dataset()
        modification.PerformedProcedureStepDescription = "y" * 70_000
        status = session.set(modification, uid)
        assert status.Status == 0x0106 and "too long" in status.ErrorComment
    finally:
        session.close()
    instance = peer.store.get(uid)
    assert instance is not None
    assert len(str(instance.dataset.PerformedProcedureStepDescription)) <= 64
