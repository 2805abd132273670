"""The exam reported outward: one MPPS toward the RIS, the dose report toward the PACS.

:class:`ExamReporting` is the :class:`~acquisition.exam.model.ExamReporter` of the controller
(dicom.md §1; IHE RAD-6/7, IHE REM). Its :meth:`~ExamReporting.sync` is **idempotent**: it
compares what the exam is with what the durable outbox already holds and enqueues only the
difference, so it can run after every transition, every new exposure, every tick and at
start-up, and a crash anywhere between a journal entry and an enqueue is repaired by the next
call. What it enqueues:

* the MPPS N-CREATE IN PROGRESS, once, when the exam is opened (its SOP Instance UID was chosen
  and journaled with the exam: a restart continues that MPPS, never creates another);
* an N-SET with the complete Performed Series Sequence (one series per phase) whenever the
  images the exam holds differ from those of the last N-SET enqueued;
* when the exam is completed or discontinued: the identity of the order as it stands then
  (``order-at-close``, journaled once: :mod:`acquisition.hospital_identity`); the exam's objects,
  held until then, released to the forwarder (coerced to that identity); the exam's X-Ray
  Radiation Dose SR (every exposure of the exam, whatever it lacks; the accumulated AGD per
  breast is the one total of :mod:`dose.totals`; its SOP Instance UID derived from the MPPS UID,
  so that a second build after a crash is the same object), queued for the PACS; then the final
  N-SET COMPLETED or DISCONTINUED (CID 9301 reason) with the Radiation Dose module, the contrast
  given (Billing Supplies and Devices) and every object received in its Performed Series.

The final N-SET is **held** in the outbox until the PACS has stored (and, with storage
commitment, committed) every object it lists, at most ``pacs.mpps_hold_max_s``: a RIS must not
learn of images the PACS cannot give it yet (IHE RAD-7 after RAD-8/RAD-10). While it is held, an
object of the exam that arrives late is added to it (the unit may send its dose report after
its own step is closed).

Each enqueue is journaled as a ``dicom-out`` entry after the outbox holds it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from acquisition.dose_log import DoseLog
from acquisition.exam.model import (
    PHASE_STEPS,
    ExamOrder,
    ExamSnapshot,
    exam_exposures,
    phase_sps_id,
)
from acquisition.exam_machine import ExamState
from acquisition.forwarding import Forwarder
from acquisition.hospital_identity import (
    ORDER_AT_CLOSE,
    mpps_start,
    order_at_close,
    pps_id,
    requested_step,
    study_id,
)
from acquisition.journal import Journal
from dicom_nodes.datasets import codes, mpps_builders
from dicom_nodes.datasets.coercion import StudyIdentity, coerce
from dicom_nodes.datasets.mpps_builders import (
    ContrastUse,
    ExposureDose,
    MppsExam,
    PerformedSeries,
    RadiationDose,
)
from dicom_nodes.datasets.rdsr import (
    ANODE_CODES,
    CALCULATED_AGD_COMMENT,
    FILTER_MATERIAL_CODES,
    LATERALITY_CODES,
    REFERENCE_POINT_CODES,
    XRAY_RADIATION_DOSE_SR,
    CodedConcept,
    DoseReportContext,
    DoseReportError,
    IrradiatingDevice,
    IrradiationEvent,
    build_rdsr,
)
from dicom_nodes.datasets.uids import derived_uid
from dicom_nodes.hospital.dicom_outbox import DicomOutbox, Kind
from dicom_nodes.hospital.outbox import Message, State
from dicom_nodes.hospital.ris_orders import StoredOrder
from dicom_nodes.implementation import stamp_file_meta
from dose import plausibility
from dose.record import Source
from dose.totals import left_out_reason, per_breast_totals
from storage.files import write_dataset_durably

log = logging.getLogger(__name__)

#: Where the controller keeps the objects it creates, under ``dicom.storage_dir``.
CREATED_DIR = "created"
DOSE_REPORT_SERIES_NUMBER = 900

_VIEW_MEANINGS = {c.value: c.meaning for c in (*codes.VIEWS, *codes.VIEW_MODIFIERS)}
_FINAL_STATUSES = (mpps_builders.COMPLETED, mpps_builders.DISCONTINUED)


@dataclass(frozen=True)
class ReportingSettings:
    """Who the controller is toward the hospital."""

    station_ae: str  #: Performed Station AE Title: the controller's own AE toward the RIS
    uid_root: str
    storage_dir: Path
    retrieve_ae: str = ""  #: where the images can be retrieved: the PACS they are sent to
    station_name: str = ""
    institution: str = ""
    ris: bool = True  #: report the MPPS (a RIS is configured)
    pacs: bool = True  #: queue the dose report (a PACS is configured)
    #: Longest wait of the final MPPS for the PACS to store what it lists (pacs.mpps_hold_max_s).
    mpps_hold_max_s: float = 600.0


class ExamReporting:
    """Keeps the outbox in step with the exam (see the module docstring)."""

    def __init__(
        self,
        journal: Journal,
        dose_log: DoseLog,
        outbox: DicomOutbox | None,
        settings: ReportingSettings,
        *,
        clock: Any = None,
        forwarder: Forwarder | None = None,
        ris_order: Callable[[ExamOrder], StoredOrder | None] | None = None,
    ) -> None:
        self._journal = journal
        self._dose_log = dose_log
        self._outbox = outbox
        self.settings = settings
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._forwarder = forwarder  #: releases the exam's held objects at its end
        self._ris_order = ris_order  #: the RIS order as the controller's copy knows it now

    # ------------------------------------------------------------------ the one entry point

    def sync(self, view: ExamSnapshot) -> None:
        order = view.order
        if order is None or not order.mpps_instance_uid:
            return  # an exam journaled before the controller reported MPPS
        ris = self._outbox is not None and self.settings.ris
        messages = self._outbox.messages(order.mpps_instance_uid) if ris and self._outbox else []
        if ris and not any(m.kind == Kind.MPPS_CREATE for m in messages):
            dataset = mpps_builders.build_mpps_in_progress(self.mpps_exam(order))
            self._enqueue_mpps(order, Kind.MPPS_CREATE, dataset)
        final = _final_set(messages)
        if final is not None and final.state != State.PENDING:
            return  # a final state is final (sent, or failed for good)
        series = self.performed_series(view)
        if view.state.is_final:
            identity = self.identity_at_close(view)
            if self._forwarder is not None and self.settings.pacs:
                self._forwarder.forward_study(order.study_instance_uid)
            report = self.dose_report(view, identity)
            if report is not None:
                series.append(report)
            if ris:
                self._enqueue_final(view, series, final)
            return
        last_set = _last_set(messages)
        if ris and _referenced(series) != _referenced_in(last_set):
            dataset = mpps_builders.build_mpps_update(
                self.mpps_exam(order), series, dose=self.radiation_dose(view)
            )
            self._enqueue_mpps(order, Kind.MPPS_SET, dataset)

    # ------------------------------------------------------------------ MPPS content

    def mpps_exam(self, order: ExamOrder) -> MppsExam:
        """The exam as its MPPS reports it (scheduled: the RIS step; else unscheduled)."""
        steps = (requested_step(order),) if order.scheduled else ()
        return MppsExam(
            mpps_instance_uid=order.mpps_instance_uid,
            pps_id=pps_id(order),
            study_id=study_id(order),
            station_ae=self.settings.station_ae,
            started_at=mpps_start(order),
            patient=order.patient,
            steps=steps,
            study_instance_uid=order.study_instance_uid,
            station_name=self.settings.station_name,
            performed_protocol_codes=(codes.MAMMARY_DUCTOGRAM,),
            uid_root=self.settings.uid_root,
        )

    def _rows(self, view: ExamSnapshot) -> list[dict[str, Any]]:
        """The dose-log rows this exam noted."""
        return exam_exposures(self._dose_log, _order_of(view).study_instance_uid, view.exposure_ids)

    def performed_series(self, view: ExamSnapshot) -> list[PerformedSeries]:
        """One Performed Series item per series of the exam's images (one per phase), plus
        the unit's own dose reports, in the order they arrived."""
        order = _order_of(view)
        by_series: dict[str, list[tuple[str, str]]] = {}
        phase_of: dict[str, str] = {}
        for row in self._rows(view):
            series_uid, sop_class = row.get("series_instance_uid"), row.get("sop_class_uid")
            if not series_uid or not sop_class or not row.get("sop_instance_uid"):
                continue
            images = by_series.setdefault(series_uid, [])
            for sop_instance in self._dose_log.image_uids(int(row["id"])):
                if (sop_class, sop_instance) not in images:
                    images.append((sop_class, sop_instance))
            phase_of.setdefault(series_uid, _phase_name(order, row.get("sps_id")))
        series = [
            PerformedSeries(
                series_instance_uid=uid,
                protocol_name=f"Galactography {phase_of[uid]}",
                description=f"Galactography {phase_of[uid]}",
                retrieve_ae_title=self.settings.retrieve_ae,
                images=tuple(images),
            )
            for uid, images in by_series.items()
        ]
        reports: dict[str, list[str]] = {}
        for series_uid, sop_uid in self._received_dose_reports(order):
            reports.setdefault(series_uid, []).append(sop_uid)
        series += [
            PerformedSeries(
                series_instance_uid=series_uid,
                protocol_name="Dose report",
                description="X-Ray Radiation Dose SR of the unit",
                retrieve_ae_title=self.settings.retrieve_ae,
                non_images=tuple((XRAY_RADIATION_DOSE_SR, uid) for uid in uids),
            )
            for series_uid, uids in reports.items()
        ]
        return series

    def _received_dose_reports(self, order: ExamOrder) -> list[tuple[str, str]]:
        found = []
        for entry in self._journal.entries(exam_id=order.exam_id):
            p = entry.payload
            if entry.kind == "dicom-in" and p.get("sop_class_uid") == XRAY_RADIATION_DOSE_SR:
                found.append((str(p.get("series_instance_uid", "")), str(p["sop_instance_uid"])))
        return found

    def radiation_dose(self, view: ExamSnapshot) -> RadiationDose:
        """The MPPS Radiation Dose module (PS3.3 C.4.16): one item per complete exposure."""
        items = []
        rows = self._rows(view)
        for row in rows:
            kvp, ma, ms = row.get("kvp"), row.get("tube_current_ma"), row.get("exposure_time_ms")
            if kvp is None or ma is None or ms is None:
                continue
            items.append(
                ExposureDose(
                    kvp=float(kvp),
                    tube_current_ua=float(ma) * 1000.0,
                    exposure_time_ms=round(float(ms)),
                    filter_type="STRIP",
                    filter_material=str(row.get("filter_material") or ""),
                )
            )
        missing = len(rows) - len(items)
        comments = (
            f"{missing} exposure(s) without readable kV, mA or time are counted, not itemised"
            if missing
            else ""
        )
        return RadiationDose(exposures=tuple(items), total_exposures=len(rows), comments=comments)

    # ------------------------------------------------------------------ the dose report

    def dose_report_uid(self, order: ExamOrder) -> str:
        return derived_uid(self.settings.uid_root, order.mpps_instance_uid, "rdsr")

    def dose_report_path(self, order: ExamOrder) -> Path:
        uid = self.dose_report_uid(order)
        return self.settings.storage_dir / CREATED_DIR / order.study_instance_uid / f"{uid}.dcm"

    def identity_at_close(self, view: ExamSnapshot) -> StudyIdentity:
        """The identity the exam's objects carry: journaled once when the exam has ended
        (``order-at-close``), with the RIS order as the controller's copy knows it then."""
        order = _order_of(view)
        for entry in self._journal.entries(exam_id=order.exam_id):
            if entry.kind == ORDER_AT_CLOSE:
                return StudyIdentity.from_json(entry.payload["identity"])
        stored = None
        if order.scheduled and order.ris_item is not None and self._ris_order is not None:
            stored = self._ris_order(order)
        payload = order_at_close(order, stored)
        self._journal.append(ORDER_AT_CLOSE, payload, exam_id=order.exam_id, now=self._clock())
        if payload["status"] not in ("as opened", "unscheduled"):
            log.warning("the exam ended on a RIS order %s since it opened", payload["status"])
        return StudyIdentity.from_json(payload["identity"])

    def dose_report(
        self, view: ExamSnapshot, identity: StudyIdentity | None = None
    ) -> PerformedSeries | None:
        """Write (once) and queue the exam's RDSR (coerced to ``identity`` like every object
        of the exam); its series item, or None without events."""
        order = _order_of(view)
        path = self.dose_report_path(order)
        uid = self.dose_report_uid(order)
        series_uid = derived_uid(self.settings.uid_root, order.mpps_instance_uid, "rdsr-series")
        if not path.exists():
            rows = self._rows(view)
            if not rows:
                return None
            try:
                ds, left_out = exam_dose_report(
                    rows,
                    self._report_context(order),
                    uid_root=self.settings.uid_root,
                    sop_instance_uid=uid,
                    series_instance_uid=series_uid,
                )
            except DoseReportError:
                log.exception("the exam's dose report could not be built")
                return None
            if identity is not None:
                coerce(ds, identity)
            stamp_file_meta(ds)
            write_dataset_durably(ds, path)
            self._journal.append(
                "dose-report",
                {
                    "sop_instance_uid": uid,
                    "events": len(rows),
                    "left_out_of_accumulated_agd": left_out,
                },
                exam_id=order.exam_id,
                now=self._clock(),
            )
        if self._outbox is not None and self.settings.pacs and not self._outbox.messages(uid):
            self._outbox.enqueue_store(path)
            self._journal_out(order, Kind.C_STORE, uid)
        return PerformedSeries(
            series_instance_uid=series_uid,
            protocol_name="Dose report",
            description="X-Ray Radiation Dose SR of the exam",
            retrieve_ae_title=self.settings.retrieve_ae,
            non_images=((XRAY_RADIATION_DOSE_SR, uid),),
        )

    def _report_context(self, order: ExamOrder) -> DoseReportContext:
        opened = mpps_start(order)
        return DoseReportContext(
            study_instance_uid=order.study_instance_uid,
            patient=order.patient,
            accession_number=order.accession,
            study_id=study_id(order),
            study_date=opened.strftime("%Y%m%d"),
            study_time=opened.strftime("%H%M%S"),
            study_description=order.requested_procedure_description,
            manufacturer="galacto",
            model_name="galacto acquisition controller",
            station_name=self.settings.station_name,
            institution_name=self.settings.institution,
            device_observer_uid=derived_uid(self.settings.uid_root, "device", "controller"),
            dose_sources=(),  # exam_dose_report names them from the rows
            performed_procedure_step_uid=order.mpps_instance_uid,
            uid_prefix=self.settings.uid_root.rstrip(".") + ".",
            content_datetime=self._clock().astimezone().replace(tzinfo=None),
            series_number=DOSE_REPORT_SERIES_NUMBER,
        )

    # ------------------------------------------------------------------ enqueueing

    def _enqueue_final(
        self, view: ExamSnapshot, series: list[PerformedSeries], held: Message | None
    ) -> None:
        """Enqueue the final N-SET, held until the PACS holds what it lists; or, while it is
        still held, bring it up to date with what arrived since (a late dose report)."""
        order = _order_of(view)
        listed = _referenced_in(Dataset.from_json(held.payload_json or "{}")) if held else None
        if listed is not None and listed == _referenced(series):
            return
        exam = self.mpps_exam(order)
        ended = self._clock().astimezone().replace(tzinfo=None)
        ended = max(ended, exam.started_at)
        dose = self.radiation_dose(view)
        given = sum(c.delivered_ml for c in view.contrast)
        contrast = ContrastUse(round(given, 3)) if given > 0 else None
        if view.state is ExamState.COMPLETED:
            dataset = mpps_builders.build_mpps_completed(
                exam, series, ended, dose=dose, contrast=contrast
            )
        else:
            reason = _reason(view.discontinuation_reason)
            dataset = mpps_builders.build_mpps_discontinued(
                exam, series, ended, reason=reason, dose=dose, contrast=contrast
            )
        assert self._outbox is not None
        awaits = sorted(_referenced(series)) if self.settings.pacs else []
        if held is not None:
            if self._outbox.update_pending(held.id, dataset, awaits=awaits):
                self._journal_out(order, Kind.MPPS_SET, order.mpps_instance_uid, "updated")
            return
        self._outbox.enqueue_mpps_set(
            order.mpps_instance_uid, dataset, awaits=awaits, hold_s=self.settings.mpps_hold_max_s
        )
        self._journal_out(order, Kind.MPPS_SET, order.mpps_instance_uid, _status(dataset))

    def _enqueue_mpps(self, order: ExamOrder, kind: str, dataset: Dataset) -> None:
        assert self._outbox is not None
        if kind == Kind.MPPS_CREATE:
            self._outbox.enqueue_mpps_create(order.mpps_instance_uid, dataset)
        else:
            self._outbox.enqueue_mpps_set(order.mpps_instance_uid, dataset)
        self._journal_out(order, kind, order.mpps_instance_uid, _status(dataset))

    def _journal_out(self, order: ExamOrder, kind: str, uid: str, status: str = "") -> None:
        payload = {"kind": kind, "sop_instance_uid": uid}
        if status:
            payload["status"] = status
        self._journal.append("dicom-out", payload, exam_id=order.exam_id, now=self._clock())


# ---------------------------------------------------------------------- helpers


def _order_of(view: ExamSnapshot) -> ExamOrder:
    if view.order is None:
        raise ValueError("no exam is open")
    return view.order


def _phase_name(order: ExamOrder, sps_id: str | None) -> str:
    for state in PHASE_STEPS:
        if sps_id == phase_sps_id(order.exam_id, state):
            return state.value
    return "unscheduled"


def _reason(code_value: str | None) -> codes.Code:
    for code in codes.DISCONTINUATION_REASONS:
        if code.value == code_value:
            return code
    return codes.DISCONTINUED_UNSPECIFIED


def _final_set(messages: Sequence[Message]) -> Message | None:
    """The final N-SET (COMPLETED or DISCONTINUED) of an MPPS, if one was enqueued."""
    for message in messages:
        if message.kind != Kind.MPPS_SET or not message.payload_json:
            continue
        if _status(Dataset.from_json(message.payload_json)) in _FINAL_STATUSES:
            return message
    return None


def _last_set(messages: Sequence[Message]) -> Dataset | None:
    for message in reversed(messages):
        if message.kind == Kind.MPPS_SET and message.payload_json:
            return Dataset.from_json(message.payload_json)
    return None


def _status(dataset: Dataset) -> str:
    return str(dataset.get("PerformedProcedureStepStatus", "") or "")


def _referenced(series: Iterable[PerformedSeries]) -> set[str]:
    return {uid for s in series for _, uid in (*s.images, *s.non_images)}


_REFERENCE_SEQUENCES = (
    "ReferencedImageSequence",
    "ReferencedNonImageCompositeSOPInstanceSequence",
)


def _referenced_in(dataset: Dataset | None) -> set[str]:
    if dataset is None:
        return set()
    found = set()
    for item in dataset.get("PerformedSeriesSequence", []):
        for keyword in _REFERENCE_SEQUENCES:
            for ref in item.get(keyword, []):
                found.add(str(ref.ReferencedSOPInstanceUID))
    return found


#: Where a row's values came from → Source of Dose Information (CID 10021) of the report.
_SOURCE_OF_DOSE = {
    Source.IMAGE_HEADER.value: "image",  # 113866 Copied From Image Attributes
    Source.RDSR.value: "automated",  # 113856 Automated Data Collection (the unit's RDSR)
    Source.MPPS.value: "mpps",  # 113858 MPPS Content
}
_SOURCE_NAMES = {
    Source.IMAGE_HEADER.value: "image header",
    Source.RDSR.value: "the unit's RDSR",
    Source.MPPS.value: "MPPS",
}


def exam_dose_report(
    rows: Sequence[dict[str, Any]],
    context: DoseReportContext,
    *,
    uid_root: str,
    sop_instance_uid: str,
    series_instance_uid: str,
) -> tuple[Dataset, int]:
    """The exam's X-Ray Radiation Dose SR from its dose-log rows, and how many events are left
    out of its accumulated AGD (issue 9 §6): every row an event; the accumulated AGD per
    breast is the one total of :mod:`dose.totals`; galacto the observer, the unit the
    irradiating device of each event."""
    events = [event_from_row(row, uid_root) for row in rows]
    totals = per_breast_totals(rows)
    ds = build_rdsr(
        dataclasses.replace(context, dose_sources=dose_sources(rows, events)),
        events,
        sop_instance_uid=sop_instance_uid,
        series_instance_uid=series_instance_uid,
        accumulated_agd_mgy={s: t.agd_mgy for s, t in totals.breasts.items() if t.events},
    )
    left_out = sum(t.left_out_count for t in totals.breasts.values()) + totals.without_laterality
    return ds, left_out


def dose_sources(
    rows: Sequence[dict[str, Any]], events: Sequence[IrradiationEvent]
) -> tuple[str, ...]:
    """The report's Sources of Dose Information: the unit's data by where it came from, and
    "calculated" (113940) when an event carries galacto's Dance figure."""
    found = {
        _SOURCE_OF_DOSE[s]
        for row in rows
        for s in str(row.get("sources") or "").split(",")
        if s in _SOURCE_OF_DOSE
    }
    if any(event.agd_calculated for event in events):
        found.add("calculated")
    order = ("automated", "image", "mpps", "calculated")
    return tuple(source for source in order if source in found)


def _number(row: dict[str, Any], name: str) -> float | None:
    value = row.get(name)
    return None if value is None else float(value)


def _coded(row: dict[str, Any], name: str, known: Any, notes: list[str]) -> str | None:
    value = row.get(name)
    if value in (None, ""):
        return None
    if value not in known:
        notes.append(f"{name} {value!r} has no code in the report: left out")
        return None
    return str(value)


def event_from_row(row: dict[str, Any], uid_root: str) -> IrradiationEvent:
    """One dose-log row as an RDSR irradiation event (issue 9 §6): what the row lacks is left
    out, never the event; an implausible value is written as received, with a comment; the
    Dance figure appears as the AGD only when the unit reported none, marked calculated."""
    sources = [s for s in str(row.get("sources") or "").split(",") if s]
    notes = [f"values from {', '.join(_SOURCE_NAMES.get(s, s) for s in sources)}"]
    started = None
    if row.get("acquisition_datetime"):
        try:
            started = dt.datetime.fromisoformat(str(row["acquisition_datetime"]))
        except ValueError:
            notes.append(f"acquisition date/time {row['acquisition_datetime']!r} not readable")
    modifiers = [m for m in str(row.get("view_modifier_codes") or "").split(",") if m]
    event_uid = row.get("irradiation_event_uid") or derived_uid(
        uid_root, str(row.get("sop_instance_uid") or row["id"]), "event"
    )
    agd, calculated = _number(row, "agd_reported_mgy"), False
    if agd is None and row.get("agd_computed_mgy") is not None:
        agd, calculated = float(row["agd_computed_mgy"]), True
        notes.insert(
            0,
            f"{CALCULATED_AGD_COMMENT} by galacto (Dance, K·g·c·s; the unit reported none): "
            f"{row.get('agd_computed_basis') or ''}",
        )
    findings = plausibility.split(row.get("plausibility"))
    if findings:
        notes.append(f"implausible as received: {'; '.join(findings)}")
    why = left_out_reason(row)
    if why is not None and not calculated:
        notes.append(f"left out of the accumulated AGD ({why})")
    elif calculated:
        notes.append("left out of the accumulated AGD (the unit's AGD only)")
    if row.get("qa_reason"):
        notes.append(f"physics/QA exposure: {row['qa_reason']}")
    laterality = _coded(row, "laterality", LATERALITY_CODES, notes)
    anode = _coded(row, "anode", ANODE_CODES, notes)
    filter_material = _coded(row, "filter_material", FILTER_MATERIAL_CODES, notes)
    point = _coded(row, "esak_reference_point", REFERENCE_POINT_CODES, notes)
    device = IrradiatingDevice(
        manufacturer=str(row.get("manufacturer") or ""),
        model_name=str(row.get("model") or ""),
        serial_number=str(row.get("device_serial") or ""),
        device_uid=str(row.get("device_uid") or ""),
    )
    return IrradiationEvent(
        irradiation_event_uid=str(event_uid),
        datetime_started=None if started is None else started.replace(tzinfo=None),
        laterality=laterality,
        view=_concept(str(row["view_code"])) if row.get("view_code") else None,
        view_modifiers=tuple(_concept(m) for m in modifiers),
        kvp=_number(row, "kvp"),
        exposure_uas=_number(row, "exposure_uas"),
        tube_current_ma=_number(row, "tube_current_ma"),
        exposure_time_ms=_number(row, "exposure_time_ms"),
        focal_spot_mm=_number(row, "focal_spot_mm"),
        anode=anode,
        filter_material=filter_material,
        filter_thickness_min_mm=_number(row, "filter_thickness_mm"),
        filter_thickness_max_mm=_number(row, "filter_thickness_mm"),
        compressed_thickness_mm=_number(row, "compressed_thickness_mm"),
        compression_force_n=_number(row, "compression_force_n"),
        distance_source_to_detector_mm=_number(row, "distance_source_to_detector_mm"),
        hvl_mm_al=_number(row, "hvl_mm_al"),
        esak_mgy=_number(row, "esak_mgy"),
        reference_point=point,
        agd_mgy=agd,
        agd_calculated=calculated,
        acquisition_protocol=str(row.get("acquisition_protocol") or "")
        or f"Galactography {row.get('phase') or ''}".strip(),
        comment="; ".join(notes),
        device=device,
    )


def _concept(value: str) -> CodedConcept:
    return CodedConcept(value, "SCT", _VIEW_MEANINGS.get(value, value))
