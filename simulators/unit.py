"""The simulated mammography unit: MWL SCU, MPPS SCU (one MPPS per step), Storage SCU.

It behaves toward the controller as a digital mammography unit does in IHE Scheduled Workflow
(dicom.md §1): it queries the worklist for its station (RAD-5), reports each step it performs
by MPPS N-CREATE / N-SET (RAD-6/7), and stores its MG For Presentation images with the full
dose header and, optionally, an X-Ray Radiation Dose SR (RAD-8, IHE REM).

State is explicit (:class:`UnitState`), randomness comes from one seeded ``random.Random``,
UIDs are deterministic for a seed, and there are no delays. Faults (:class:`Fault`) are
armed one at a time and act once on the next operation they concern.

What it does not model: the technologist's console, image processing, For Processing images,
tomosynthesis, storage commitment, the unit's own SCP roles, retries with back-off (a failed
send is reported to the caller, who decides), network faults other than a dropped association.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.pdu import P_DATA_TF

from dicom_nodes import compat
from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.identity import get_patient
from dicom_nodes.datasets.rdsr import CodedConcept, build_rdsr
from dicom_nodes.datasets.references import sop_reference
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, close_unestablished, make_ae
from simulators.unit_images import (
    MG_FOR_PRESENTATION,
    MPPS_SOP_CLASS,
    SIMULATED_PATIENT,
    ContrastAdministration,
    SeriesInfo,
    StudyContext,
    UidSource,
    add_pre_exposure_rows,
    add_zero_for_other_breast,
    build_mg_image,
    dose_report_context,
    irradiation_event,
    to_legacy_codes,
)
from simulators.unit_physics import VENDORS, VIEW_CODES, Exposure, View, expose

log = logging.getLogger(__name__)

MWL_FIND = "1.2.840.10008.5.1.4.31"
XRAY_RADIATION_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
SUCCESS = 0x0000
PENDING = frozenset({0xFF00, 0xFF01})
NO_RESPONSE = -1  # the association ended without a DIMSE response


class UnitError(RuntimeError):
    """The simulated unit could not reach the controller or was refused."""


class Fault(enum.Enum):
    """Faults the unit can be told to commit (each acts once)."""

    DROP_MID_STORE = "drop-mid-store"  # the network drops during the next image's C-STORE
    DUPLICATE_NSET = "duplicate-nset"  # the next IN PROGRESS N-SET is sent twice
    NSET_AFTER_COMPLETED = "nset-after-completed"  # another N-SET after COMPLETED
    EXPOSURE_OUTSIDE_STEP = "exposure-outside-step"  # next image: no request, no MPPS
    WRONG_PATIENT = "wrong-patient"  # next image carries another patient's identity
    MALFORMED_DATASET = "malformed-dataset"  # next image has unreadable dose values
    ZERO_DOSE = "zero-dose"  # next exposure reports an AGD of 0 everywhere


FAULT_NAMES = tuple(f.value for f in Fault)


class Quirk(enum.Enum):
    """Lasting habits of real units that the controller must read correctly (dose.md §1)."""

    LEGACY_CODES = "legacy-codes"  # SNOMED-RT (SRT) instead of SNOMED CT codes
    PRE_EXPOSURE = "pre-exposure"  # RDSR events list a pre-exposure KVP and tube current too
    BOTH_BREASTS_ACCUMULATED = "both-breasts-accumulated"  # TID 10005 lists 0 mGy for the other


QUIRK_NAMES = tuple(q.value for q in Quirk)


# --- What the unit got from the worklist and what it did ---------------------------------------


@dataclass(frozen=True)
class WorklistStep:
    """One Scheduled Procedure Step as returned by the controller's MWL SCP."""

    dataset: Dataset

    def _sps(self) -> Dataset:
        items = self.dataset.get("ScheduledProcedureStepSequence") or [Dataset()]
        return items[0]

    def _text(self, ds: Dataset, keyword: str) -> str:
        value = ds.get(keyword)
        return "" if value is None else str(value)

    @property
    def sps_id(self) -> str:
        return self._text(self._sps(), "ScheduledProcedureStepID")

    @property
    def sps_description(self) -> str:
        return self._text(self._sps(), "ScheduledProcedureStepDescription")

    @property
    def study_instance_uid(self) -> str:
        return self._text(self.dataset, "StudyInstanceUID")

    @property
    def protocol_codes(self) -> tuple[CodedConcept, ...]:
        items = self._sps().get("ScheduledProtocolCodeSequence") or []
        return tuple(
            CodedConcept(
                self._text(i, "CodeValue"),
                self._text(i, "CodingSchemeDesignator"),
                self._text(i, "CodeMeaning"),
            )
            for i in items
            if self._text(i, "CodeValue")
        )

    def study_context(self, pps_uid: str = "", pps_id: str = "") -> StudyContext:
        """The patient/study/request attributes the images copy (Request Attributes Sequence)."""
        ds = self.dataset
        return StudyContext(
            study_instance_uid=self.study_instance_uid,
            patient=get_patient(ds),
            accession_number=self._text(ds, "AccessionNumber"),
            referring_physician_name=self._text(ds, "ReferringPhysicianName"),
            study_description=self._text(ds, "RequestedProcedureDescription"),
            requested_procedure_id=self._text(ds, "RequestedProcedureID"),
            requested_procedure_description=self._text(ds, "RequestedProcedureDescription"),
            scheduled_procedure_step_id=self.sps_id,
            scheduled_procedure_step_description=self.sps_description,
            scheduled_protocol_codes=self.protocol_codes,
            performed_procedure_step_uid=pps_uid,
            performed_procedure_step_id=pps_id,
        )

    def planned_views(self) -> list[View]:
        """Views named by the step's protocol codes (CID 4014), else CC and 90° ML.

        MWL has no laterality key: the side comes from the requested procedure text
        (dicom.md §3); left when it does not say.
        """
        text = (
            self._text(self.dataset, "RequestedProcedureDescription") + " " + self.sps_description
        ).lower()
        side = "R" if "right" in text and "left" not in text else "L"
        magnified = "post" in text or "mag" in text
        by_code = {code: name for name, (code, _) in VIEW_CODES.items()}
        names = [by_code[c.value] for c in self.protocol_codes if c.value in by_code]
        return [View(side, n, magnified) for n in (names or ["CC", "ML"])]


@dataclass
class AcquiredImage:
    """An image the unit created, with the exposure behind it."""

    exposure: Exposure
    dataset: Dataset
    irradiation_event_uid: str
    sent_status: int | None = None

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


@dataclass
class PerformedStep:
    """One MPPS instance of the unit and what belongs to it."""

    sop_instance_uid: str
    pps_id: str
    step: WorklistStep | None
    attributes: Dataset
    series_instance_uid: str
    #: When the step began: its series' Series Date/Time.
    started_at: dt.datetime | None = None
    status: str = "IN PROGRESS"
    images: list[AcquiredImage] = field(default_factory=list)
    rdsr: Dataset | None = None
    responses: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class UnitState:
    """Everything the simulated unit knows (inspectable by tests and the control surface)."""

    worklist: list[WorklistStep] = field(default_factory=list)
    performed: dict[str, PerformedStep] = field(default_factory=dict)
    unscheduled_images: list[AcquiredImage] = field(default_factory=list)
    armed_faults: list[Fault] = field(default_factory=list)
    store_statuses: list[tuple[str, int]] = field(default_factory=list)
    exposure_count: int = 0


# --- The unit ------------------------------------------------------------------------------------


class SimulatedUnit:
    """A digital mammography unit talking DICOM to the controller on loopback."""

    def __init__(
        self,
        controller_host: str,
        controller_port: int,
        controller_ae: str,
        *,
        ae_title: str = "MG_SIM",
        station_ae: str | None = None,
        seed: int = 0,
        send_rdsr: bool = True,
        full_size: bool = False,
        vendor: str = "w-rh",
        timeouts: Timeouts | None = None,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
        tls: ssl.SSLContext | None = None,
        quirks: Iterable[Quirk | str] = (),
    ) -> None:
        self.address = (controller_host, controller_port)
        self.controller_ae = controller_ae
        self.ae_title = ae_title
        self.station_ae = ae_title if station_ae is None else station_ae
        self.send_rdsr_enabled = send_rdsr
        self.full_size = full_size
        self.profile = VENDORS[vendor]
        self.timeouts = timeouts or Timeouts(connection_s=3, acse_s=5, dimse_s=15, network_s=30)
        self.clock = clock
        self.tls = tls
        self.quirks = frozenset(Quirk(q) for q in quirks)
        self.seed = seed
        self.rng = random.Random(seed)
        self.uids = UidSource(seed)
        self.device_observer_uid = self.uids.next("device")
        self.serial_number = f"SIM-{seed:04d}"
        self.state = UnitState()
        self._lock = threading.RLock()

    def describe(self) -> str:
        return (
            f"simulated {self.profile.model_name} {self.ae_title} → "
            f"{self.controller_ae}@{self.address[0]}:{self.address[1]}"
        )

    # -- faults ----------------------------------------------------------------------------------
    def arm_fault(self, fault: Fault | str) -> None:
        """Arm a fault; it acts once, on the next operation it concerns."""
        with self._lock:
            self.state.armed_faults.append(Fault(fault))

    def _take_fault(self, fault: Fault) -> bool:
        with self._lock:
            if fault in self.state.armed_faults:
                self.state.armed_faults.remove(fault)
                return True
            return False

    # -- associations ----------------------------------------------------------------------------
    def _associate(self, contexts: Iterable[str], handlers: Sequence[Any] = ()) -> Association:
        ae = make_ae(self.ae_title, self.timeouts)
        for uid in contexts:
            ae.add_requested_context(uid)
        assoc = ae.associate(
            self.address[0],
            self.address[1],
            ae_title=self.controller_ae,
            evt_handlers=[*NODELAY_HANDLERS, *handlers],
            tls_args=(self.tls, self.address[0]) if self.tls is not None else None,
        )
        if not assoc.is_established:
            close_unestablished(assoc)
            raise UnitError(
                f"no association with {self.controller_ae} at {self.address[0]}:{self.address[1]}"
                + (" (rejected)" if assoc.is_rejected else "")
            )
        return assoc

    # -- MWL (RAD-5) -----------------------------------------------------------------------------
    def worklist_query(self, sps_date: str | None = None) -> Dataset:
        """The C-FIND identifier a unit sends: its station, MG, today (dicom.md §3)."""
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "AccessionNumber",
            "ReferringPhysicianName",
            "RequestingPhysician",
            "RequestedProcedurePriority",
            "RequestedProcedureID",
            "RequestedProcedureDescription",
            "StudyInstanceUID",
            "Allergies",
            "MedicalAlerts",
        ):
            setattr(ds, keyword, "")
        ds.PregnancyStatus = None
        ds.PatientWeight = None
        ds.RequestedProcedureCodeSequence = []
        sps = Dataset()
        sps.ScheduledStationAETitle = self.station_ae
        sps.ScheduledProcedureStepStartDate = (
            self.clock().strftime("%Y%m%d") if sps_date is None else sps_date
        )
        sps.ScheduledProcedureStepStartTime = ""
        sps.Modality = "MG"
        sps.ScheduledPerformingPhysicianName = ""
        sps.ScheduledProcedureStepDescription = ""
        sps.ScheduledProcedureStepID = ""
        sps.ScheduledProcedureStepStatus = ""
        sps.ScheduledProcedureStepLocation = ""
        sps.ScheduledStationName = ""
        sps.ScheduledProtocolCodeSequence = []
        ds.ScheduledProcedureStepSequence = [sps]
        return ds

    def poll_worklist(self, sps_date: str | None = None) -> list[WorklistStep]:
        """MWL C-FIND against the controller; the result replaces the unit's worklist."""
        assoc = self._associate([MWL_FIND])
        steps: list[WorklistStep] = []
        try:
            for status, identifier in assoc.send_c_find(self.worklist_query(sps_date), MWL_FIND):
                code = _status_code(status)
                if code in PENDING and identifier is not None:
                    steps.append(WorklistStep(identifier))
                elif code != SUCCESS:
                    raise UnitError(f"worklist query failed: status 0x{code & 0xFFFF:04X}")
        finally:
            _finish(assoc)
        with self._lock:
            self.state.worklist = steps
        log.info("worklist: %d step(s) for %s", len(steps), self.station_ae)
        return steps

    # -- MPPS (RAD-6/7) --------------------------------------------------------------------------
    def start_step(self, step: WorklistStep) -> PerformedStep:
        """N-CREATE IN PROGRESS (PS3.4 F.7.2.1), with every attribute N-SET will fill later."""
        now = self.clock()
        pps_uid = self.uids.next("pps")
        pps_id = f"PPS{len(self.state.performed) + 1:04d}"
        attributes = build_mpps_in_progress(step, pps_id, self.ae_title, now)
        performed = PerformedStep(
            pps_uid,
            pps_id,
            step,
            attributes,
            series_instance_uid=self.uids.next("series"),
            started_at=now,
        )
        status = self._n_create(pps_uid, attributes)
        performed.responses.append(("N-CREATE", status))
        if status != SUCCESS:
            raise UnitError(f"MPPS N-CREATE refused: status 0x{status:04X}")
        with self._lock:
            self.state.performed[pps_uid] = performed
        return performed

    def _n_create(self, pps_uid: str, attributes: Dataset) -> int:
        assoc = self._associate([MPPS_SOP_CLASS])
        try:
            status, _ = assoc.send_n_create(attributes, MPPS_SOP_CLASS, pps_uid)
        finally:
            _finish(assoc)
        return _status_code(status)

    def _n_set(self, pps_uid: str, modifications: Dataset, times: int = 1) -> list[int]:
        assoc = self._associate([MPPS_SOP_CLASS])
        try:
            statuses = [
                _status_code(assoc.send_n_set(modifications, MPPS_SOP_CLASS, pps_uid)[0])
                for _ in range(times)
            ]
        finally:
            _finish(assoc)
        return statuses

    def update_step(self, performed: PerformedStep) -> list[int]:
        """N-SET IN PROGRESS with the complete Performed Series Sequence so far."""
        mods = Dataset()
        mods.PerformedSeriesSequence = self._performed_series(performed)
        times = 2 if self._take_fault(Fault.DUPLICATE_NSET) else 1
        statuses = self._n_set(performed.sop_instance_uid, mods, times)
        performed.responses += [("N-SET", s) for s in statuses]
        return statuses

    def complete_step(
        self, performed: PerformedStep, *, discontinue_reason: CodedConcept | None = None
    ) -> int:
        """Final N-SET: COMPLETED (or DISCONTINUED with a CID 9301 reason) + Radiation Dose."""
        now = self.clock()
        mods = build_mpps_final(
            performed,
            self._performed_series(performed),
            now,
            discontinue_reason=discontinue_reason,
        )
        statuses = [self._n_set(performed.sop_instance_uid, mods)[0]]
        if statuses[0] == SUCCESS:
            performed.status = str(mods.PerformedProcedureStepStatus)
        if self._take_fault(Fault.NSET_AFTER_COMPLETED):
            again = Dataset()
            again.PerformedProcedureStepDescription = "late change after completion"
            statuses += self._n_set(performed.sop_instance_uid, again)
        performed.responses += [("N-SET", s) for s in statuses]
        if statuses[0] != SUCCESS:
            raise UnitError(f"MPPS final N-SET refused: status 0x{statuses[0]:04X}")
        return statuses[0]

    def _performed_series(self, performed: PerformedStep) -> list[Dataset]:
        items = [performed_series_item(performed)]
        if performed.rdsr is not None:
            items.append(rdsr_series_item(performed.rdsr))
        return items

    # -- Acquisition -----------------------------------------------------------------------------
    def acquire(
        self,
        performed: PerformedStep | None,
        views: Sequence[View | str],
        *,
        thickness_mm: float = 45.0,
        glandularity_pct: float = 40.0,
        contrast: ContrastAdministration | None = None,
    ) -> list[AcquiredImage]:
        """Expose each view and build its image (not sent). ``None``: an unscheduled exposure."""
        images = []
        for raw in views:
            view = raw if isinstance(raw, View) else View.parse(raw)
            images.append(
                self._acquire_one(performed, view, thickness_mm, glandularity_pct, contrast)
            )
        return images

    def _acquire_one(
        self,
        performed: PerformedStep | None,
        view: View,
        thickness_mm: float,
        glandularity_pct: float,
        contrast: ContrastAdministration | None,
    ) -> AcquiredImage:
        with self._lock:
            self.state.exposure_count += 1
            when = self.clock()
            exposure = expose(
                self.profile,
                view,
                thickness_mm=thickness_mm,
                glandularity_pct=glandularity_pct,
                rng=self.rng,
                when=when,
            )
            if self._take_fault(Fault.ZERO_DOSE):
                exposure = replace(exposure, agd_mgy=0.0)
            outside = performed is None or self._take_fault(Fault.EXPOSURE_OUTSIDE_STEP)
            study = self._study_for(performed)
            if outside:  # same patient and study, but no request and no MPPS to point at
                study = replace(
                    study,
                    requested_procedure_id="",
                    scheduled_procedure_step_id="",
                    scheduled_procedure_step_description="",
                    scheduled_protocol_codes=(),
                    performed_procedure_step_uid="",
                    performed_procedure_step_id="",
                )
            if self._take_fault(Fault.WRONG_PATIENT):
                wrong = replace(study.patient, id="WRONG-0001", name="WRONG^PATIENT")
                study = replace(study, patient=wrong)
            series_uid = (
                performed.series_instance_uid
                if performed is not None and not outside
                else self.uids.next("series")
            )
            number = len(performed.images) + 1 if performed is not None else 1
            event_uid = self.uids.next("event")
            ds = build_mg_image(
                exposure,
                study,
                SeriesInfo(
                    series_uid,
                    series_number=len(self.state.performed) or 1,
                    instance_number=number,
                    series_description="Galactography",
                    protocol_name=study.scheduled_procedure_step_description or "Unscheduled",
                    started=performed.started_at if performed is not None and not outside else None,
                ),
                profile=self.profile,
                sop_instance_uid=self.uids.next("sop"),
                irradiation_event_uid=event_uid,
                frame_of_reference_uid=self.uids.next("for"),
                contrast=contrast,
                full_size=self.full_size,
                device_serial_number=self.serial_number,
                station_name=self.ae_title,
                pixel_seed=self.seed + self.state.exposure_count,
            )
            if Quirk.LEGACY_CODES in self.quirks:
                to_legacy_codes(ds)
            if self._take_fault(Fault.MALFORMED_DATASET):
                malform(ds)
            image = AcquiredImage(exposure, ds, event_uid)
            if performed is not None and not outside:
                performed.images.append(image)
            else:
                self.state.unscheduled_images.append(image)
            return image

    def _study_for(self, performed: PerformedStep | None) -> StudyContext:
        if performed is None or performed.step is None:
            return StudyContext(
                study_instance_uid=self.uids.next("study"),
                patient=replace(SIMULATED_PATIENT, id="UNSCHEDULED"),
            )
        return performed.step.study_context(performed.sop_instance_uid, performed.pps_id)

    # -- Storage (RAD-8) -------------------------------------------------------------------------
    def send_images(self, images: Sequence[AcquiredImage]) -> list[int]:
        """C-STORE each image in one association; the status of each (NO_RESPONSE if dropped)."""
        dropper = _Dropper() if self._take_fault(Fault.DROP_MID_STORE) else None
        handlers = [(evt.EVT_PDU_SENT, dropper.on_pdu_sent)] if dropper else []
        assoc = self._associate([MG_FOR_PRESENTATION], handlers)
        if dropper is not None:
            dropper.armed = True  # the first image's C-STORE is cut
        statuses: list[int] = []
        lost = False  # once a response is missing, the association is not to be trusted
        try:
            for image in images:
                status = NO_RESPONSE
                if not lost and assoc.is_established:
                    status = _status_code(assoc.send_c_store(image.dataset))
                lost = lost or status == NO_RESPONSE
                image.sent_status = status
                statuses.append(status)
                with self._lock:
                    self.state.store_statuses.append((image.sop_instance_uid, status))
        finally:
            if lost:
                assoc.abort()
            else:
                _finish(assoc)
        return statuses

    def build_rdsr(self, performed: PerformedStep) -> Dataset:
        """The unit's RDSR for one performed step (every exposure of the step)."""
        if performed.step is None or not performed.images:
            raise UnitError("an RDSR needs a performed step with at least one exposure")
        study = performed.step.study_context(performed.sop_instance_uid, performed.pps_id)
        context = dose_report_context(
            study,
            self.profile,
            device_observer_uid=self.device_observer_uid,
            serial=self.serial_number,
            station_name=self.ae_title,
        )
        events = [
            irradiation_event(i.exposure, i.irradiation_event_uid, performed.step.sps_description)
            for i in performed.images
        ]
        ds = build_rdsr(
            context,
            events,
            sop_instance_uid=self.uids.next("rdsr"),
            series_instance_uid=self.uids.next("rdsr-series"),
        )
        if Quirk.PRE_EXPOSURE in self.quirks:
            add_pre_exposure_rows(ds)
        if Quirk.BOTH_BREASTS_ACCUMULATED in self.quirks:
            add_zero_for_other_breast(ds)
        if Quirk.LEGACY_CODES in self.quirks:
            to_legacy_codes(ds)
        return ds

    def send_rdsr(self, performed: PerformedStep) -> int:
        """Build and C-STORE the step's RDSR; it is then listed in the Performed Series."""
        ds = self.build_rdsr(performed)
        performed.rdsr = ds
        assoc = self._associate([XRAY_RADIATION_DOSE_SR])
        try:
            status = _status_code(assoc.send_c_store(ds))
        finally:
            _finish(assoc)
        with self._lock:
            self.state.store_statuses.append((str(ds.SOPInstanceUID), status))
        return status

    # -- A whole step ----------------------------------------------------------------------------
    def perform_step(
        self,
        step: WorklistStep,
        views: Sequence[View | str] | None = None,
        *,
        thickness_mm: float = 45.0,
        glandularity_pct: float = 40.0,
        contrast: ContrastAdministration | None = None,
    ) -> PerformedStep:
        """N-CREATE, expose, store images (and RDSR), N-SET COMPLETED: one step end to end."""
        performed = self.start_step(step)
        images = self.acquire(
            performed,
            views if views is not None else step.planned_views(),
            thickness_mm=thickness_mm,
            glandularity_pct=glandularity_pct,
            contrast=contrast,
        )
        self.send_images(images)
        self.update_step(performed)
        if self.send_rdsr_enabled:
            self.send_rdsr(performed)
        self.complete_step(performed)
        return performed


def _finish(assoc: Association) -> None:
    """Release an association that still stands; close the socket of one the peer dropped
    (a controller killed mid-exchange), which pynetdicom may otherwise leave open."""
    if assoc.is_established:
        assoc.release()
    else:
        close_unestablished(assoc)


def _status_code(status: Dataset | None) -> int:
    if status is None or "Status" not in status:
        return NO_RESPONSE
    return int(status.Status)


class _Dropper:
    """Shuts the socket down once the first P-DATA PDU of a C-STORE has left: a dropped link."""

    def __init__(self) -> None:
        self.armed = False

    def on_pdu_sent(self, event: evt.Event) -> None:
        if not self.armed or not isinstance(event.pdu, P_DATA_TF):
            return
        self.armed = False
        sock = compat.association_socket(event.assoc)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def malform(ds: Dataset) -> None:
    """Make the dose header unreadable the way broken units do (text where numbers belong)."""
    for tag, vr, value in (
        (Tag(0x0018, 0x0060), "DS", b"twenty9 "),  # KVP
        (Tag(0x0040, 0x0316), "DS", b"n/a "),  # Organ Dose
        (Tag(0x0018, 0x11A0), "DS", b"--"),  # Body Part Thickness
    ):
        ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


# --- MPPS datasets --------------------------------------------------------------------------

#: Radiation Dose module attributes created empty at N-CREATE so that the final N-SET may set them
#: (PS3.4 F.7.2.2.1: only attributes created by the N-CREATE may be set).
RADIATION_DOSE_KEYWORDS = (
    "TotalNumberOfExposures",
    "DistanceSourceToDetector",
    "DistanceSourceToEntrance",
    "EntranceDoseInmGy",
    "OrganDose",
    "OrganExposed",
    "CommentsOnRadiationDose",
    "ExposureDoseSequence",
)


def build_mpps_in_progress(
    step: WorklistStep, pps_id: str, station_ae: str, now: dt.datetime
) -> Dataset:
    """The N-CREATE Attribute List (PS3.4 Table F.7.2-1; dicom.md §4)."""
    src = step.dataset
    ds = Dataset()
    ds.SpecificCharacterSet = src.get("SpecificCharacterSet", "ISO_IR 192")
    item = Dataset()
    item.StudyInstanceUID = step.study_instance_uid
    item.ReferencedStudySequence = []
    item.AccessionNumber = src.get("AccessionNumber", "")
    item.RequestedProcedureID = src.get("RequestedProcedureID", "")
    item.RequestedProcedureDescription = src.get("RequestedProcedureDescription", "")
    item.ScheduledProcedureStepID = step.sps_id
    item.ScheduledProcedureStepDescription = step.sps_description
    item.ScheduledProtocolCodeSequence = [
        _code(c.value, c.scheme, c.meaning) for c in step.protocol_codes
    ]
    ds.ScheduledStepAttributesSequence = [item]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, src.get(keyword, ""))
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = pps_id
    ds.PerformedStationAETitle = station_ae
    ds.PerformedStationName = station_ae
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = now.strftime("%Y%m%d")
    ds.PerformedProcedureStepStartTime = now.strftime("%H%M%S")
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = step.sps_description
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "MG"
    ds.StudyID = ""
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = []
    for keyword in RADIATION_DOSE_KEYWORDS:
        setattr(ds, keyword, [] if keyword.endswith("Sequence") else None)
    return ds


def build_mpps_final(
    performed: PerformedStep,
    series: list[Dataset],
    now: dt.datetime,
    *,
    discontinue_reason: CodedConcept | None = None,
) -> Dataset:
    """The final N-SET Modification List with the Radiation Dose module (PS3.3 C.4.16)."""
    mods = Dataset()
    mods.PerformedProcedureStepStatus = "DISCONTINUED" if discontinue_reason else "COMPLETED"
    mods.PerformedProcedureStepEndDate = now.strftime("%Y%m%d")
    mods.PerformedProcedureStepEndTime = now.strftime("%H%M%S")
    mods.PerformedSeriesSequence = series
    if discontinue_reason is not None:
        mods.PerformedProcedureStepDiscontinuationReasonCodeSequence = [
            _code(discontinue_reason.value, discontinue_reason.scheme, discontinue_reason.meaning)
        ]
    exposures = [i.exposure for i in performed.images]
    mods.TotalNumberOfExposures = len(exposures)
    mods.ExposureDoseSequence = [exposure_dose_item(e) for e in exposures]
    if exposures:
        last = exposures[-1]
        mods.DistanceSourceToDetector = f"{last.sid_mm:.1f}"
        mods.DistanceSourceToEntrance = f"{last.source_to_entrance_mm:.1f}"
        mods.EntranceDoseInmGy = f"{sum(e.esak_mgy for e in exposures):.4f}"
        mods.OrganDose = f"{sum(e.agd_mgy for e in exposures) / 100.0:.6f}"  # dGy
        mods.OrganExposed = "BREAST"
        mods.CommentsOnRadiationDose = "step totals; Organ Dose is the summed AGD (dGy)"
    return mods


def exposure_dose_item(exposure: Exposure) -> Dataset:
    """One Exposure Dose Sequence (0040,030E) item (PS3.3 C.4.16)."""
    item = Dataset()
    item.RadiationMode = "CONTINUOUS"
    item.KVP = f"{exposure.kvp:.1f}"
    item.XRayTubeCurrentInuA = f"{exposure.tube_current_ma * 1000.0:.1f}"
    item.ExposureTime = round(exposure.exposure_time_ms)
    item.FilterMaterial = exposure.filter_material
    item.CommentsOnRadiationDose = (
        f"{exposure.view.laterality}-{exposure.view.name}"
        f"{'-MAG' if exposure.view.magnified else ''}; {exposure.exposure_uas} uAs; "
        f"AGD {exposure.agd_mgy:.3f} mGy"
    )
    return item


def performed_series_item(performed: PerformedStep) -> Dataset:
    """The image series of a step as a Performed Series Sequence item (PS3.3 C.4.15)."""
    item = Dataset()
    item.PerformingPhysicianName = ""
    item.OperatorsName = ""
    item.ProtocolName = performed.step.sps_description if performed.step else "Unscheduled"
    item.ProtocolName = item.ProtocolName or "Galactography"
    item.SeriesInstanceUID = performed.series_instance_uid
    item.SeriesDescription = "Galactography"
    item.RetrieveAETitle = ""
    item.ReferencedImageSequence = [
        sop_reference(MG_FOR_PRESENTATION, i.sop_instance_uid) for i in performed.images
    ]
    item.ReferencedNonImageCompositeSOPInstanceSequence = []
    return item


def rdsr_series_item(rdsr: Dataset) -> Dataset:
    """The RDSR's series, referenced as a non-image composite instance."""
    item = Dataset()
    item.PerformingPhysicianName = ""
    item.OperatorsName = ""
    item.ProtocolName = "Radiation dose report"
    item.SeriesInstanceUID = rdsr.SeriesInstanceUID
    item.SeriesDescription = "X-Ray Radiation Dose SR"
    item.RetrieveAETitle = ""
    item.ReferencedImageSequence = []
    item.ReferencedNonImageCompositeSOPInstanceSequence = [
        sop_reference(XRAY_RADIATION_DOSE_SR, str(rdsr.SOPInstanceUID))
    ]
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return Code(value, scheme, meaning).to_dataset()  # the one coded-item builder
