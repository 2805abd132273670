"""The simulated unit against a minimal loopback controller (pynetdicom SCP, real sockets).

The stand-in controller answers the worklist with prepared steps, keeps MPPS instances with
the final-state rule of PS3.4 F.7.2.2 (0110H + A710 after COMPLETED) and keeps stored objects.
tests/integration/test_unit_sim_server.py runs the same unit against the real UnitFacingServer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import _config, evt

from dicom_nodes.datasets.rdsr import CodedConcept
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from simulators.unit import (
    MWL_FIND,
    NO_RESPONSE,
    SUCCESS,
    XRAY_RADIATION_DOSE_SR,
    Fault,
    SimulatedUnit,
    WorklistStep,
)
from simulators.unit_images import MG_FOR_PRESENTATION, MPPS_SOP_CLASS, sample_contrast
from tests.waiting import eventually

CONTROLLER_AE = "GALACTO"


def worklist_item(sps_id: str, description: str, procedure: str = "Galactography left") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Nuñez^María"
    ds.PatientID = "P0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC0001"
    ds.RequestedProcedureID = "RP0001"
    ds.RequestedProcedureDescription = procedure
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1466.7.1"
    ds.ReferringPhysicianName = ""
    sps = Dataset()
    sps.ScheduledStationAETitle = "MG_SIM"
    sps.ScheduledProcedureStepStartDate = "20260115"
    sps.Modality = "MG"
    sps.ScheduledProcedureStepID = sps_id
    sps.ScheduledProcedureStepDescription = description
    view = Dataset()
    view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = (
        "399162004",
        "SCT",
        "cranio-caudal",
    )
    sps.ScheduledProtocolCodeSequence = [view]
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


@dataclass
class Controller:
    """What the stand-in controller saw."""

    steps: list[Dataset]
    queries: list[Dataset] = field(default_factory=list)
    mpps: dict[str, Dataset] = field(default_factory=dict)
    mpps_log: list[tuple[str, int]] = field(default_factory=list)
    stored: dict[str, Dataset] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        with self.lock:
            self.queries.append(event.identifier)
        for step in self.steps:
            yield 0xFF00, step
        yield 0x0000, None

    def on_create(self, event: evt.Event) -> tuple[int, Dataset | None]:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            if uid in self.mpps:
                status = 0x0111
            else:
                self.mpps[uid] = event.attribute_list
                status = 0x0000
            self.mpps_log.append(("N-CREATE", status))
        return status, event.attribute_list if status == 0 else None

    def on_set(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        uid = str(event.request.RequestedSOPInstanceUID)
        with self.lock:
            current = self.mpps.get(uid)
            if current is None:
                status: int | Dataset = 0x0112
            elif current.PerformedProcedureStepStatus in ("COMPLETED", "DISCONTINUED"):
                status = Dataset()
                status.Status = 0x0110
                status.ErrorComment = "Performed Procedure Step Object may no longer be updated"
                status.ErrorID = 0xA710
            else:
                for elem in event.modification_list:
                    current[elem.tag] = elem
                status = 0x0000
            code = status if isinstance(status, int) else int(status.Status)
            self.mpps_log.append(("N-SET", code))
        return status, None

    def on_store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self.lock:
            self.stored[str(ds.SOPInstanceUID)] = ds
        return 0x0000


@pytest.fixture
def controller() -> Iterator[Controller]:
    state = Controller(steps=[worklist_item("SPS-PRE", "Pre-contrast")])
    ae = make_ae(CONTROLLER_AE, Timeouts(connection_s=3, acse_s=5, dimse_s=10, network_s=10))
    for uid in (MWL_FIND, MPPS_SOP_CLASS, MG_FOR_PRESENTATION, XRAY_RADIATION_DOSE_SR):
        ae.add_supported_context(uid)
    handlers: list[Any] = [
        (evt.EVT_C_FIND, state.on_find),
        (evt.EVT_N_CREATE, state.on_create),
        (evt.EVT_N_SET, state.on_set),
        (evt.EVT_C_STORE, state.on_store),
        *NODELAY_HANDLERS,
    ]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    state.port = server.server_address[1]
    try:
        yield state
    finally:
        server.shutdown()
        ae.shutdown()


def make_unit(controller: Controller, **kwargs: Any) -> SimulatedUnit:
    return SimulatedUnit("127.0.0.1", controller.port, CONTROLLER_AE, seed=7, **kwargs)


def test_poll_worklist_sends_the_keys_a_unit_sends(controller: Controller) -> None:
    unit = make_unit(controller)
    steps = unit.poll_worklist("20260115")
    assert [s.sps_id for s in steps] == ["SPS-PRE"]
    assert str(steps[0].dataset.PatientName) == "Nuñez^María"
    (query,) = controller.queries
    sps = query.ScheduledProcedureStepSequence[0]
    assert sps.ScheduledStationAETitle == "MG_SIM"
    assert sps.Modality == "MG"
    assert sps.ScheduledProcedureStepStartDate == "20260115"
    for key in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"):
        assert key in query and not query[key].value


def test_planned_views_from_the_step() -> None:
    left = WorklistStep(worklist_item("S1", "Post-injection 1"))
    assert [(v.laterality, v.name, v.magnified) for v in left.planned_views()] == [
        ("L", "CC", True)
    ]
    right = WorklistStep(worklist_item("S2", "Pre-contrast", "Galactography right"))
    assert [(v.laterality, v.name, v.magnified) for v in right.planned_views()] == [
        ("R", "CC", False)
    ]


def test_perform_step_end_to_end(controller: Controller) -> None:
    unit = make_unit(controller)
    (step,) = unit.poll_worklist("20260115")
    performed = unit.perform_step(step, ["L-CC", "L-ML-MAG"], thickness_mm=50)

    assert performed.status == "COMPLETED"
    assert [s for _, s in performed.responses] == [SUCCESS] * 3  # create, set, final set
    mpps = controller.mpps[performed.sop_instance_uid]
    assert mpps.PerformedProcedureStepStatus == "COMPLETED"
    assert mpps.PerformedProcedureStepEndDate
    assert mpps.ScheduledStepAttributesSequence[0].ScheduledProcedureStepID == "SPS-PRE"
    assert mpps.TotalNumberOfExposures == 2
    assert len(mpps.ExposureDoseSequence) == 2
    assert float(mpps.ExposureDoseSequence[1].KVP) == performed.images[1].exposure.kvp
    image_series, dose_series = mpps.PerformedSeriesSequence
    assert [r.ReferencedSOPInstanceUID for r in image_series.ReferencedImageSequence] == [
        i.sop_instance_uid for i in performed.images
    ]
    (rdsr_ref,) = dose_series.ReferencedNonImageCompositeSOPInstanceSequence
    assert rdsr_ref.ReferencedSOPClassUID == XRAY_RADIATION_DOSE_SR

    # three objects stored: two images and the RDSR, all readable
    assert set(controller.stored) == {
        *(i.sop_instance_uid for i in performed.images),
        rdsr_ref.ReferencedSOPInstanceUID,
    }
    image = controller.stored[performed.images[1].sop_instance_uid]
    assert image.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPS-PRE"
    assert (
        image.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID
        == performed.sop_instance_uid
    )
    assert image.ViewCodeSequence[0].ViewModifierCodeSequence[0].CodeValue == "399163009"
    agd_mgy = performed.images[1].exposure.agd_mgy
    assert float(image.OrganDose) * 100 == pytest.approx(agd_mgy, rel=1e-5)
    assert image.IrradiationEventUID == performed.images[1].irradiation_event_uid


def test_a_series_has_one_series_date_and_time(controller: Controller) -> None:
    """Series Date/Time is when the step's series began, the same on each of its images
    (dcentvfy's check), however many seconds apart they were acquired."""
    ticks = itertools.count()
    start = dt.datetime(2026, 1, 15, 18, 51, 46)
    unit = make_unit(controller, clock=lambda: start + dt.timedelta(seconds=next(ticks)))
    (step,) = unit.poll_worklist("20260115")
    performed = unit.perform_step(step, ["L-CC", "L-ML-MAG"])
    images = [controller.stored[i.sop_instance_uid] for i in performed.images]
    assert len({i.AcquisitionDateTime for i in images}) == 2
    assert {(i.SeriesDate, i.SeriesTime) for i in images} == {
        (start.strftime("%Y%m%d"), performed.started_at.strftime("%H%M%S"))  # type: ignore[union-attr]
    }
    assert performed.attributes.PerformedProcedureStepStartTime.startswith(images[0].SeriesTime)


def test_same_seed_same_objects(controller: Controller) -> None:
    first = make_unit(controller).acquire(None, ["L-CC"])[0].dataset
    second = make_unit(controller).acquire(None, ["L-CC"])[0].dataset
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert first.ExposureInuAs == second.ExposureInuAs


def test_no_rdsr_when_disabled(controller: Controller) -> None:
    unit = make_unit(controller, send_rdsr=False)
    (step,) = unit.poll_worklist("20260115")
    performed = unit.perform_step(step, ["L-CC"])
    assert len(controller.stored) == 1
    assert len(controller.mpps[performed.sop_instance_uid].PerformedSeriesSequence) == 1


def test_post_contrast_images_carry_the_contrast(controller: Controller) -> None:
    unit = make_unit(controller)
    (step,) = unit.poll_worklist("20260115")
    performed = unit.perform_step(step, ["L-CC-MAG"], contrast=sample_contrast())
    image = controller.stored[performed.images[0].sop_instance_uid]
    assert image.ContrastBolusRoute == "INTRADUCTAL"
    assert image.ContrastBolusAgentSequence[0].CodeValue == "109218004"


def test_discontinued_step(controller: Controller) -> None:
    unit = make_unit(controller)
    (step,) = unit.poll_worklist("20260115")
    performed = unit.start_step(step)
    unit.send_images(unit.acquire(performed, ["L-CC"]))
    reason = CodedConcept("95384003", "SCT", "Injection site extravasation")
    unit.complete_step(performed, discontinue_reason=reason)
    mpps = controller.mpps[performed.sop_instance_uid]
    assert mpps.PerformedProcedureStepStatus == "DISCONTINUED"
    code = mpps.PerformedProcedureStepDiscontinuationReasonCodeSequence[0].CodeValue
    assert code == "95384003"


# --- Faults --------------------------------------------------------------------------------------


def _orphans(sop_instance_uid: str) -> list[Path]:
    """Temp files pynetdicom opened for a chunked C-STORE of this instance and never removed."""
    found = []
    for path in Path(tempfile.gettempdir()).glob("tmp*.dcm"):
        with contextlib.suppress(OSError), path.open("rb") as f:
            if sop_instance_uid.encode() in f.read(1024):
                found.append(path)
    return found


def collect_cut_store_files(sop_instance_uid: str) -> None:
    """Close and remove what pynetdicom keeps of a C-STORE cut mid-dataset.

    pynetdicom 3.0.4 with STORE_RECV_CHUNKED_DATASET opens a NamedTemporaryFile(delete=False)
    when the command set arrives; when the association drops before the dataset ends, the
    file stays open in a reference cycle until garbage collection and stays on disk for good.
    That is the server's to clean up (reported); this test checks only the unit's behaviour.
    """
    if not _config.STORE_RECV_CHUNKED_DATASET:  # set process-wide by the Storage SCP
        return

    def collected() -> list[Path]:
        gc.collect()
        return _orphans(sop_instance_uid)

    if eventually(collected, 5.0, poll_s=0.05):
        for path in _orphans(sop_instance_uid):
            path.unlink()


def test_fault_drop_mid_store_then_resend(controller: Controller) -> None:
    unit = make_unit(controller)
    images = unit.acquire(None, ["L-CC", "L-ML"])
    unit.arm_fault(Fault.DROP_MID_STORE)
    assert unit.send_images(images) == [NO_RESPONSE, NO_RESPONSE]
    assert controller.stored == {}
    assert unit.send_images(images) == [SUCCESS, SUCCESS]  # the fault acted once
    assert set(controller.stored) == {i.sop_instance_uid for i in images}
    collect_cut_store_files(images[0].sop_instance_uid)  # when chunked receive is on


def test_fault_duplicate_nset(controller: Controller) -> None:
    unit = make_unit(controller)
    (step,) = unit.poll_worklist("20260115")
    performed = unit.start_step(step)
    unit.acquire(performed, ["L-CC"])
    unit.arm_fault("duplicate-nset")
    assert unit.update_step(performed) == [SUCCESS, SUCCESS]
    assert controller.mpps_log.count(("N-SET", 0)) == 2


def test_fault_nset_after_completed_gets_a710(controller: Controller) -> None:
    unit = make_unit(controller, send_rdsr=False)
    (step,) = unit.poll_worklist("20260115")
    unit.arm_fault(Fault.NSET_AFTER_COMPLETED)
    performed = unit.perform_step(step, ["L-CC"])
    assert performed.responses[-1] == ("N-SET", 0x0110)
    assert performed.status == "COMPLETED"


def test_fault_exposure_outside_step(controller: Controller) -> None:
    unit = make_unit(controller)
    (step,) = unit.poll_worklist("20260115")
    performed = unit.start_step(step)
    unit.arm_fault(Fault.EXPOSURE_OUTSIDE_STEP)
    (stray,) = unit.acquire(performed, ["L-CC"])
    assert unit.send_images([stray]) == [SUCCESS]
    stored = controller.stored[stray.sop_instance_uid]
    assert "RequestAttributesSequence" not in stored
    assert stored.ReferencedPerformedProcedureStepSequence == []
    assert stored.PatientID == "P0001"  # the patient on the table, just no step
    assert performed.images == [] and unit.state.unscheduled_images == [stray]


def test_fault_wrong_patient(controller: Controller) -> None:
    unit = make_unit(controller)
    (step,) = unit.poll_worklist("20260115")
    performed = unit.start_step(step)
    unit.arm_fault(Fault.WRONG_PATIENT)
    wrong, right = unit.acquire(performed, ["L-CC", "L-ML"])
    unit.send_images([wrong, right])
    assert controller.stored[wrong.sop_instance_uid].PatientID == "WRONG-0001"
    assert controller.stored[right.sop_instance_uid].PatientID == "P0001"
    request = controller.stored[wrong.sop_instance_uid].RequestAttributesSequence[0]
    assert request.ScheduledProcedureStepID == "SPS-PRE"


def test_fault_malformed_dataset(controller: Controller) -> None:
    unit = make_unit(controller)
    unit.arm_fault(Fault.MALFORMED_DATASET)
    (bad,) = unit.acquire(None, ["L-CC"])
    assert unit.send_images([bad]) == [SUCCESS]  # this stand-in accepts anything
    raw = BytesIO()
    controller.stored[bad.sop_instance_uid].save_as(raw, enforce_file_format=True)
    raw.seek(0)
    with pytest.raises(ValueError):
        float(dcmread(raw).KVP)


def test_unknown_fault_is_refused() -> None:
    unit = SimulatedUnit("127.0.0.1", 9, CONTROLLER_AE)
    with pytest.raises(ValueError):
        unit.arm_fault("set-fire")


def _events(rdsr: Dataset) -> list[Dataset]:
    return [i for i in rdsr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "113706"]


def _values(item: Dataset, code: str) -> list[float]:
    return [
        float(row.MeasuredValueSequence[0].NumericValue)
        for row in item.ContentSequence
        if row.ConceptNameCodeSequence[0].CodeValue == code
    ]


def test_quirk_pre_exposure_rows(controller: Controller) -> None:
    unit = make_unit(controller, quirks=["pre-exposure"])
    (step,) = unit.poll_worklist("20260115")
    performed = unit.perform_step(step, ["L-CC", "L-ML"])
    assert performed.rdsr is not None
    stored = controller.stored[str(performed.rdsr.SOPInstanceUID)]
    for event, image in zip(_events(stored), performed.images, strict=True):
        main_kv = image.exposure.kvp
        assert _values(event, "113733") == [main_kv - 2, main_kv]
        assert len(_values(event, "113734")) == 2


def test_quirk_both_breasts_accumulated(controller: Controller) -> None:
    unit = make_unit(controller, quirks=["both-breasts-accumulated"])
    (step,) = unit.poll_worklist("20260115")
    performed = unit.perform_step(step, ["L-CC"])
    assert performed.rdsr is not None
    accumulated = next(
        i
        for i in performed.rdsr.ContentSequence
        if i.ConceptNameCodeSequence[0].CodeValue == "113702"
    )
    per_side = {
        row.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning: float(
            row.MeasuredValueSequence[0].NumericValue
        )
        for row in accumulated.ContentSequence
        if row.ConceptNameCodeSequence[0].CodeValue == "111637"
    }
    assert per_side["Right"] == 0.0
    assert per_side["Left"] == pytest.approx(performed.images[0].exposure.agd_mgy, rel=1e-5)


def test_fault_zero_dose(controller: Controller) -> None:
    unit = make_unit(controller)
    (step,) = unit.poll_worklist("20260115")
    unit.arm_fault(Fault.ZERO_DOSE)
    performed = unit.perform_step(step, ["L-CC", "L-ML"])
    zero, normal = (controller.stored[i.sop_instance_uid] for i in performed.images)
    assert float(zero.OrganDose) == 0.0 and float(normal.OrganDose) > 0
    assert float(zero.EntranceDoseInmGy) > 0  # the kerma was real; only the AGD is missing
    assert performed.rdsr is not None
    agd = [_values(e, "111631") for e in _events(performed.rdsr)]
    assert agd == [[0.0], [pytest.approx(performed.images[1].exposure.agd_mgy, rel=1e-5)]]


def test_unknown_quirk_is_refused() -> None:
    with pytest.raises(ValueError):
        SimulatedUnit("127.0.0.1", 9, CONTROLLER_AE, quirks=["left-handed"])
