"""What the technologists' console shows and the commands it sends (docs/console.md).

:class:`ConsoleBackend` is the console without HTTP: :meth:`~ConsoleBackend.snapshot` is a
JSON-serialisable view of the exam, the injector, the exam's exposures and the RIS orders;
:meth:`~ConsoleBackend.command` turns one operator command (a name and JSON arguments) into a
call on :class:`~acquisition.exam.service.ExamService`. It keeps no exam state of its own: every
command goes to the service, which journals it and may refuse it (:class:`~acquisition.exam_machine.
Refused` and :class:`~acquisition.exam.model.ExamError` propagate); bad arguments are a
:class:`ValueError` raised before the service is called.

Which commands are allowed now is asked of the machine itself (:func:`~acquisition.exam_machine.
next_state` with the service's facts), so a disabled button shows the reason the service would
give. Each part of the snapshot is read on its own: a failing read (the RIS order store, the
outbox, the injector link) shows as an error in that part and never hides the exam state.
Patient data goes to the page only, never to the log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from acquisition.accounts import ADMIN, TECHNOLOGIST
from acquisition.console import views
from acquisition.dose_log import DoseLog
from acquisition.exam.model import (
    CHECKLIST,
    ExamSnapshot,
    Patient,
    PhysicianOverride,
    checklist_blockers,
    service_refusal,
)
from acquisition.exam.service import ExamService
from acquisition.exam_machine import ExamEvent, ExamFacts, ExamState, Refused, next_state
from device_drivers.base import InjectorABC, InjectorState
from device_drivers.errors import DriverError
from dicom_nodes.datasets.codes import DISCONTINUATION_REASONS, VIEW_MODIFIERS, VIEWS
from dicom_nodes.hospital.mwl_scu import WorklistItem
from dicom_nodes.hospital.ris_orders import RisOrderStore
from dose.totals import per_breast_totals

log = logging.getLogger(__name__)

S, E = ExamState, ExamEvent

LINK_LOST = "link lost"

#: What the technologist reads beside each checklist item (True = the condition is present).
CHECKLIST_LABELS: dict[str, str] = {
    "pregnancy_possible": "Pregnancy possible",
    "contrast_allergy": "Allergy to iodinated contrast",
    "active_mastitis": "Active mastitis or breast abscess",
    "no_discharge": "No discharge at the time of the exam",
    "premedication_documented": "Premedication for the allergy documented",
    "nipple_squeezed_beforehand": "Nipple squeezed beforehand",
    "deodorant_powder_lotion": "Deodorant, talcum powder or lotion on the breast",
    "jewelry_not_removed": "Jewelry not removed",
    "prior_breast_surgery": "Prior breast surgery",
    "hormone_use": "Hormone use",
    "lactation": "Lactation",
    "nipple_retraction": "Nipple retraction",
}

#: Short names of the CID 4014 views and CID 4015 modifiers the exposures table shows.
_VIEW_NAMES = dict(
    zip(
        (code.value for code in VIEWS),
        ("CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM"),
        strict=True,
    )
)
_MODIFIER_NAMES = dict(zip((code.value for code in VIEW_MODIFIERS), ("mag", "spot"), strict=True))

#: Commands that are fed to the machine as one event, for the "allowed now" view.
_EVENT_OF: dict[str, ExamEvent] = {
    "select-order": E.SELECT_ORDER,
    "register-unscheduled": E.REGISTER_UNSCHEDULED,
    "pass-checklist": E.PASS_CHECKLIST,
    "finish-pre-contrast": E.FINISH_PRE_CONTRAST,
    "start-injection": E.START_INJECTION,
    "acknowledge-fault": E.ACKNOWLEDGE_FAULT,
    "complete": E.COMPLETE,
    "discontinue": E.DISCONTINUE,
    "close": E.CLOSE,
}

#: Every console command, in the order the page lists them.
COMMANDS: tuple[str, ...] = (
    "select-order",
    "register-unscheduled",
    "answer-checklist",
    "pass-checklist",
    "finish-pre-contrast",
    "confirm-cannulation",
    "confirm-air-purge",
    "start-injection",
    "stop-injection",
    "acknowledge-fault",
    "reset-injector",
    "reinitialise-injector",
    "complete",
    "discontinue",
    "close",
    "refresh-orders",
)

_LO_MAX = 64  # DICOM LO / PN component group length
_REASON_MAX = 200


class ConsoleBackend:
    """The console's view of the room and its commands; thread-safe (the service is)."""

    def __init__(
        self,
        exam: ExamService,
        dose_log: DoseLog,
        *,
        orders: RisOrderStore | None = None,
        injector: InjectorABC | None = None,
        outbox_counts: Callable[[], dict[str, int]] | None = None,
        refresh_orders: Callable[[], None] | None = None,
        site_name: str = "",
        alerts: Callable[[], list[str]] | None = None,
        reinitialise_injector: Callable[[str], None] | None = None,
        pressure_limits_kpa: Mapping[str, float] | None = None,
    ) -> None:
        self.site_name = site_name
        self.exam = exam
        self.dose_log = dose_log
        self.orders = orders
        self.injector = injector
        self._outbox_counts = outbox_counts
        self._refresh_orders = refresh_orders
        self._alerts = alerts  # beyond the exam: objects held in quarantine, disk space
        self._reinitialise = reinitialise_injector
        #: The pressure limits above the baseline (warning, adjustment, termination) and the
        #: absolute ceiling, for the trace's lines: given, or the driver's own.
        self._pressure_limits = dict(pressure_limits_kpa) if pressure_limits_kpa else None
        self._lock = threading.Lock()
        # The last checklist answered here: (exam ID, passed, blocking items). Feedback for the
        # page only; the journal holds the record.
        self._last_checklist: tuple[str | None, bool, list[str]] | None = None
        self._handlers: dict[str, Callable[[Mapping[str, Any], str], None]] = {
            "select-order": self._select_order,
            "register-unscheduled": self._register_unscheduled,
            "answer-checklist": self._answer_checklist,
            "pass-checklist": self._no_args(exam.pass_checklist),
            "finish-pre-contrast": self._no_args(exam.finish_pre_contrast),
            "confirm-cannulation": self._no_args(exam.confirm_cannulation),
            "confirm-air-purge": self._confirm_air_purge,
            "start-injection": self._start_injection,
            "stop-injection": self._no_args(exam.stop_injection),
            "acknowledge-fault": self._acknowledge_fault,
            "reset-injector": self._no_args(exam.reset_injector),
            "reinitialise-injector": self._no_args(self._reinitialise_injector),
            "complete": self._complete,
            "discontinue": self._discontinue,
            "close": self._no_args(exam.close_exam),
            "refresh-orders": self._no_args(lambda _op: self._refresh()),
        }
        assert tuple(self._handlers) == COMMANDS

    # ------------------------------------------------------------------ the view

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as plain JSON values."""
        errors: list[str] = []
        exam = self.exam.snapshot()  # never waits for a command in progress
        state, facts, order = exam.state, exam.facts, exam.order
        if exam.journal_fault is not None:
            errors.append(
                f"The journal cannot be written ({exam.journal_fault}): the injector was "
                "stopped and commands are refused until it can be written again."
            )
        if self._alerts is not None:
            errors.extend(self._alerts())
        study = order.study_instance_uid if order is not None else None
        snapshot: dict[str, Any] = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "site": self.site_name,
            "exam": {
                "state": state.value,
                "injecting": state.is_injecting,
                "final": state.is_final,
                "journal_fault": exam.journal_fault,
                "order": None if order is None else order.to_json(),
                "fault": self._fault_view(exam),
            },
            "patient": None if order is None else views.patient_banner(order),
            "timers": {"injection_started": views.injection_started(exam), "last_exposure": None},
            "facts": self._facts_view(facts),
            "max_volume_ml_now": self._max_volume_ml(facts),
            "injection_limits": self._injection_limits(facts),
            "actions": self._actions(state, facts),
            "injector": self._injector_view(),
            "checklist": [
                {"item": item, "label": CHECKLIST_LABELS.get(item, item), "blocking": blocking}
                for item, blocking in CHECKLIST.items()
            ],
            "checklist_result": self._checklist_result(order.exam_id if order else None),
            "discontinuation_reasons": [
                {"value": code.value, "scheme": code.scheme, "meaning": code.meaning}
                for code in sorted(DISCONTINUATION_REASONS, key=lambda code: code.meaning)
            ],
            "orders_available": self.orders is not None,
            "orders_refreshable": self._refresh_orders is not None,
            "outbox": None,
            "exposures": [],
            "agd_totals_mgy": {},
            "agd_totals": None,
            "open_alerts": {},
            "orders": [],
            "errors": errors,
        }
        if study is not None:
            try:
                # This exam's rows, and those just logged that no exam has read yet (an
                # earlier exam of the same order keeps its own).
                rows = [
                    row
                    for row in self.dose_log.list_exposures(study=study)
                    if int(row["id"]) in exam.exposure_ids or row.get("phase") is None
                ]
                alerts: dict[int, list[dict[str, Any]]] = {}
                for alert in self.dose_log.alerts(exposure_ids=[int(r["id"]) for r in rows]):
                    alerts.setdefault(int(alert["exposure_id"]), []).append(views.alert_view(alert))
                snapshot["exposures"] = [
                    {**self._exposure_view(row), "alerts": alerts.get(int(row["id"]), [])}
                    for row in rows
                ]
                totals = per_breast_totals(rows)
                snapshot["agd_totals_mgy"] = totals.agd_mgy
                snapshot["agd_totals"] = {**totals.as_json(), "text": totals.describe()}
                snapshot["open_alerts"] = views.open_alerts_per_breast(snapshot["exposures"], rows)
                logged = [str(row["created_at"]) for row in rows if row.get("created_at")]
                snapshot["timers"]["last_exposure"] = max(logged, default=None)
            except Exception as exc:
                errors.append(f"dose log not readable: {exc}")
                log.warning("console: dose log not readable: %s", type(exc).__name__)
        if self.orders is not None:
            try:
                snapshot["orders"] = [self._order_view(o.item) for o in self.orders.orders()]
            except Exception as exc:
                errors.append(f"RIS orders not readable: {exc}")
                log.warning("console: RIS orders not readable: %s", type(exc).__name__)
        if self._outbox_counts is not None:
            try:
                snapshot["outbox"] = dict(self._outbox_counts())
            except Exception as exc:
                errors.append(f"outbox not readable: {exc}")
                log.warning("console: outbox not readable: %s", type(exc).__name__)
        return snapshot

    @staticmethod
    def _facts_view(facts: ExamFacts) -> dict[str, Any]:
        view = dataclasses.asdict(facts)
        view["fault_phase"] = facts.fault_phase.value if facts.fault_phase else None
        del view["requested_volume_ml"]  # properties of one start, not of the exam
        del view["requested_rate_ml_min"]
        if view["syringe_left_ml"] is not None:
            view["syringe_left_ml"] = round(view["syringe_left_ml"], 6)
        return view

    def _max_volume_ml(self, facts: ExamFacts) -> float:
        """The largest volume the limits and the syringe allow for the next injection (0 when
        none): what is left in it since the last air purge, or before any its nominal size
        (no 3 mL injection is offered from a 1 mL syringe)."""
        limits = facts.limits
        left = limits.max_volume_per_exam_ml - facts.volume_given_ml
        most = min(limits.max_volume_per_injection_ml, left)
        syringe = facts.syringe_left_ml
        most = min(most, self.exam.syringe_ml if syringe is None else syringe)
        return round(max(0.0, most), 6)

    def _injection_limits(self, facts: ExamFacts) -> dict[str, Any]:
        """What the page checks a volume and a rate against before it sends them (the machine
        checks them again, and the driver once more)."""
        limits = facts.limits
        left = facts.syringe_left_ml
        return {
            "min_volume_ml": limits.min_volume_ml,
            "min_rate_ml_min": limits.min_rate_ml_min,
            "max_rate_ml_min": limits.max_rate_ml_min,
            "max_injection_s": limits.max_injection_s,
            "max_volume_ml_now": self._max_volume_ml(facts),
            "syringe_left_ml": None if left is None else round(left, 6),
            "syringe_nominal_ml": self.exam.syringe_ml,
        }

    def _fault_view(self, exam: ExamSnapshot) -> dict[str, Any] | None:
        """Why the exam is in FAULT and what the technologist may do next: the CID 71 code and
        its text, the reason, the pump's last pressure and the delivered volume."""
        if exam.state is not S.FAULT:
            return None
        fault = None
        if self.injector is not None:
            try:
                fault = self.injector.fault
            except DriverError:
                fault = None
        interrupted = exam.facts.fault_phase is not None and exam.facts.fault_phase.is_injecting
        last = exam.contrast[-1] if interrupted and exam.contrast else None
        code = fault.event.code if fault is not None else None
        meaning = fault.event.meaning if fault is not None else None
        if fault is None and last is not None and last.event_codes:
            code = last.event_codes[-1]
        delivered = last.delivered_ml if last is not None else None
        if delivered is None and fault is not None:
            delivered = fault.delivered_ml
        reason = exam.fault_reason or (fault.reason if fault is not None else "")
        return {
            "reason": reason,
            "code": code,
            "meaning": meaning,
            "detail": fault.reason if fault is not None else None,
            "pressure_kpa": views.optional_float(fault.pressure_kpa) if fault is not None else None,
            "delivered_ml": views.optional_float(delivered),
            "next_actions": views.fault_next_actions(exam, code, reason),
        }

    def _actions(self, state: ExamState, facts: ExamFacts) -> dict[str, dict[str, Any]]:
        """Each command: allowed now, or the reason it would be refused."""

        def verdict(reason: str | None) -> dict[str, Any]:
            return {"allowed": reason is None, "reason": reason}

        def machine(event: ExamEvent, probe: ExamFacts) -> str | None:
            try:
                next_state(state, event, probe)
            except Refused as refused:
                return refused.reason
            return None

        actions: dict[str, dict[str, Any]] = {}
        for command, event in _EVENT_OF.items():
            probe = facts
            if event is E.START_INJECTION:
                # Ask with the largest volume the limits leave, so that "allowed" means some
                # volume can be given; the volume typed in is checked again on start.
                volume = max(self._max_volume_ml(facts), facts.limits.min_volume_ml)
                probe = dataclasses.replace(facts, requested_volume_ml=volume)
                probe = dataclasses.replace(
                    probe, requested_rate_ml_min=facts.limits.max_rate_ml_min
                )
            elif event is E.DISCONTINUE:
                # The reason is chosen with the command; ask whether one would be accepted.
                probe = dataclasses.replace(facts, discontinuation_reason="reason")
            actions[command] = verdict(machine(event, probe))

        for command in ("answer-checklist", "confirm-cannulation", "confirm-air-purge"):
            actions[command] = verdict(service_refusal(command, state))
        actions["stop-injection"] = verdict(service_refusal("stop-injection", state))
        not_reset = service_refusal("reset-injector", state)
        if not_reset is None and (
            self.injector is None or self.injector.state is not InjectorState.ERROR
        ):
            not_reset = "the injector is not in error"
        actions["reset-injector"] = verdict(not_reset)
        not_reinitialised = None
        if self._reinitialise is None:
            not_reinitialised = "no injector is configured to re-initialise"
        elif state.is_injecting:
            not_reinitialised = "not while an injection runs: STOP it first"
        actions["reinitialise-injector"] = verdict(not_reinitialised)
        if self.orders is None:
            actions["select-order"] = verdict("no RIS worklist is configured")
        actions["refresh-orders"] = verdict(
            None if self._refresh_orders is not None else "no RIS worklist is configured"
        )
        return {command: actions[command] for command in COMMANDS}

    def _injector_view(self) -> dict[str, Any]:
        """The injector: ``status`` in plain words (:func:`views.injector_status`), the driver's own
        ``state``, its figures, its recent events and the pressure limits of the trace."""
        injector = self.injector
        view: dict[str, Any] = {
            "present": injector is not None,
            "link": "none",
            "status": views.NOT_CONNECTED,
            "state": None,
            "progress": None,
            "simulated": False,
            "events": [],
            "pressure_limits_kpa": self._pressure_limits_view(),
        }
        if injector is None:
            return view
        view["simulated"] = injector.simulated  # shown as SIMULATED INJECTOR
        view["events"] = [views.event_view(e) for e in injector.events[-views.EVENTS_SHOWN :]][::-1]
        try:
            progress = injector.progress()
            link_up = injector.link_up
        except DriverError:
            progress, link_up = None, False
        if progress is None or not link_up:
            view["link"] = LINK_LOST
            view["state"] = progress.state.value if progress is not None else None
            view["status"] = views.injector_status(
                None if progress is None else progress.state, False
            )
            return view
        view["link"] = "ok"
        view["state"] = progress.state.value
        view["status"] = views.injector_status(progress.state, True)
        view["progress"] = {
            "delivered_ml": views.optional_float(progress.delivered_ml),
            "target_ml": views.optional_float(progress.target_ml),
            "pressure_kpa": views.optional_float(progress.pressure_kpa),
            "baseline_kpa": views.optional_float(progress.baseline_kpa),
            "rate_ml_min": views.optional_float(progress.rate_ml_min),
            "elapsed_s": views.optional_float(progress.elapsed_s),
        }
        view["injecting"] = progress.state in (InjectorState.INJECTING, InjectorState.HOLD)
        return view

    def _pressure_limits_view(self) -> dict[str, float] | None:
        if self._pressure_limits is not None:
            return self._pressure_limits
        limits = getattr(self.injector, "limits", None)
        if limits is None:
            return None
        return {
            "warning": limits.pressure_warning_kpa,
            "adjustment": limits.pressure_adjustment_kpa,
            "termination": limits.pressure_termination_kpa,
            "ceiling": limits.pressure_ceiling_kpa,
        }

    # ------------------------------------------------------------------ views per role

    def views(self, document: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The state document as each role that reads it sees it."""
        return {role: self.view_for(role, document) for role in (TECHNOLOGIST, ADMIN)}

    @staticmethod
    def view_for(role: str, document: dict[str, Any]) -> dict[str, Any]:
        """The technologist's document is whole; anyone else's has no patient identity and
        no worklist (the admin sees the room and the injector he may re-initialise)."""
        if role == TECHNOLOGIST:
            return document
        return views.pseudonymous_view(document)

    def injection_view(self) -> dict[str, Any]:
        """What the login page shows without a login: whether an injection runs, the
        injector's figures, the breast. No patient identity."""
        exam = self.exam.snapshot()
        injector = self._injector_view()
        return {
            "exam_state": exam.state.value,
            "injecting": exam.state.is_injecting or bool(injector.get("injecting")),
            "side": exam.order.side if exam.order is not None else None,
            "injector": {key: injector[key] for key in ("status", "simulated", "progress", "link")},
        }

    @staticmethod
    def _exposure_view(row: Mapping[str, Any]) -> dict[str, Any]:
        uas = row.get("exposure_uas")
        view = _VIEW_NAMES.get(row.get("view_code") or "", row.get("view_code") or "")
        modifiers = [
            _MODIFIER_NAMES.get(code, code)
            for code in (row.get("view_modifier_codes") or "").split(",")
            if code
        ]
        flags = [reason.strip() for reason in (row.get("review_reasons") or "").split(";")]
        flags = [flag for flag in flags if flag]
        if row.get("unknown_step"):
            flags.insert(0, "not tied to a known worklist step")
        flags += [f"implausible: {f}" for f in (row.get("plausibility") or "").split("; ") if f]
        if row.get("dance_check") == "disagrees":
            flags.append(
                f"Dance check disagrees: {row.get('agd_computed_mgy') or 0:.3f} mGy by the model"
            )
        if row.get("qa_reason"):
            flags.append(f"physics/QA: {row['qa_reason']}")
        return {
            "id": row.get("id"),
            "acquired": row.get("acquisition_datetime"),
            "phase": row.get("phase"),
            "view": " ".join([view, *modifiers]).strip(),
            "laterality": row.get("laterality"),
            "kvp": views.optional_float(row.get("kvp")),
            "mas": None if uas is None else views.optional_float(uas / 1000.0),
            "anode": row.get("anode"),
            "filter": row.get("filter_material"),
            "thickness_mm": views.optional_float(row.get("compressed_thickness_mm")),
            "agd_reported_mgy": views.optional_float(row.get("agd_reported_mgy")),
            "agd_computed_mgy": views.optional_float(row.get("agd_computed_mgy")),
            "dance_check": row.get("dance_check"),
            "implausible": bool(row.get("plausibility")),
            "levels": row.get("level_comparison") or "",
            "sources": row.get("sources"),
            "review": flags,
        }

    def _order_view(self, item: WorklistItem) -> dict[str, Any]:
        start = item.sps_start
        side = self.exam.order_side(item)
        return {
            "accession": item.accession_number,
            "sps_id": item.sps_id,
            "side": side.side,
            "side_evidence": list(side.evidence),
            "patient_name": item.patient.name,
            "patient_id": item.patient.id,
            "birth_date": item.patient.birth_date,
            "sex": item.patient.sex,
            "procedure": item.requested_procedure_description or item.sps_description,
            "scheduled": start.isoformat(sep=" ", timespec="minutes") if start else None,
            "alerts": [
                *(f"allergy: {allergy}" for allergy in item.allergies),
                *item.medical_alerts,
                *([f"premedication: {item.pre_medication}"] if item.pre_medication else []),
            ],
        }

    def _checklist_result(self, exam_id: str | None) -> dict[str, Any] | None:
        with self._lock:
            last = self._last_checklist
        if last is None or exam_id is None or last[0] != exam_id:
            return None
        return {"passed": last[1], "blocking": last[2]}

    # ------------------------------------------------------------------ commands

    def command(self, name: str, args: Mapping[str, Any], operator: str) -> None:
        """Run one operator command.

        :class:`ValueError` for an unknown command, bad arguments or a missing operator;
        :class:`~acquisition.exam_machine.Refused` and :class:`~acquisition.exam.model.ExamError`
        from the service.
        """
        handler = self._handlers.get(name)
        if handler is None:
            raise ValueError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
        if not isinstance(operator, str) or not operator.strip():
            raise ValueError("the operator's name is required")
        if not isinstance(args, Mapping):
            raise ValueError("args must be a JSON object")
        handler(args, operator)

    @staticmethod
    def _no_args(call: Callable[[str], None]) -> Callable[[Mapping[str, Any], str], None]:
        def handler(args: Mapping[str, Any], operator: str) -> None:
            _expect(args, ())
            call(operator)

        return handler

    def _select_order(self, args: Mapping[str, Any], operator: str) -> None:
        _expect(args, ("accession", "side"), ("sps_id", "side_override_reason"))
        accession = _text(args, "accession")
        sps_id = _text(args, "sps_id", required=False)
        override = _text(args, "side_override_reason", required=False)
        side = _side(args)
        if self.orders is None:
            raise ValueError("no RIS worklist is configured: register the patient instead")
        matches = [
            stored.item
            for stored in self.orders.orders()
            if stored.item.accession_number == accession
            and (not sps_id or stored.item.sps_id == sps_id)
        ]
        if not matches:
            raise ValueError("no current RIS order has that accession number")
        if len(matches) > 1:
            raise ValueError("several RIS orders have that accession number: give sps_id")
        self.exam.select_order(matches[0], side, operator, side_override_reason=override)

    def _register_unscheduled(self, args: Mapping[str, Any], operator: str) -> None:
        _expect(args, ("name", "patient_id", "side"), ("birth_date", "sex"))
        name = _text(args, "name")
        if len(name) > 3 * _LO_MAX or "\\" in name:
            raise ValueError("name must be a DICOM person name (FAMILY^GIVEN, no backslash)")
        patient_id = _text(args, "patient_id")
        if len(patient_id) > _LO_MAX or "\\" in patient_id:
            raise ValueError(f"patient_id must be at most {_LO_MAX} characters, no backslash")
        birth_date = _text(args, "birth_date", required=False).replace("-", "")
        if birth_date and not views.is_date(birth_date):
            raise ValueError("birth_date must be a date, YYYYMMDD or YYYY-MM-DD")
        sex = _text(args, "sex", required=False) or "F"
        if sex not in ("F", "M", "O"):
            raise ValueError("sex must be F, M or O")
        side = _side(args)
        patient = Patient(name=name, id=patient_id, birth_date=birth_date, sex=sex)
        self.exam.register_unscheduled(patient, side, operator)

    def _answer_checklist(self, args: Mapping[str, Any], operator: str) -> None:
        _expect(args, ("answers",), ("override",))
        answers = args["answers"]
        if not isinstance(answers, Mapping) or not all(
            isinstance(key, str) and isinstance(value, bool) for key, value in answers.items()
        ):
            raise ValueError("answers must map checklist items to true or false")
        override = None
        raw = args.get("override")
        if raw is not None:
            if not isinstance(raw, Mapping):
                raise ValueError("override must be {physician, reason} or null")
            _expect(raw, ("physician", "reason"))
            physician = _text(raw, "physician", required=False)
            reason = _text(raw, "reason", required=False)
            if physician or reason:
                if not (physician and reason):
                    raise ValueError("a physician override needs the physician and the reason")
                override = PhysicianOverride(physician=physician, reason=reason)
        passed = self.exam.answer_checklist(dict(answers), operator, override)
        with self._lock:
            self._last_checklist = (self.exam.exam_id, passed, checklist_blockers(answers))
        if passed:
            self.exam.pass_checklist(operator)

    def _confirm_air_purge(self, args: Mapping[str, Any], operator: str) -> None:
        _expect(args, (), ("loaded_ml",))
        loaded_ml = None if args.get("loaded_ml") is None else _positive(args, "loaded_ml")
        self.exam.confirm_air_purge(operator, loaded_ml=loaded_ml)

    def _start_injection(self, args: Mapping[str, Any], operator: str) -> None:
        _expect(args, ("volume_ml", "rate_ml_min"))
        volume_ml = _positive(args, "volume_ml")
        rate_ml_min = _positive(args, "rate_ml_min")
        self.exam.start_injection(volume_ml, rate_ml_min, operator)

    def _acknowledge_fault(self, args: Mapping[str, Any], operator: str) -> None:
        _expect(args, ("reason",))
        reason = _text(args, "reason")
        if len(reason) > _REASON_MAX:
            raise ValueError(f"reason must be at most {_REASON_MAX} characters")
        self.exam.acknowledge_fault(operator, reason)

    def _complete(self, args: Mapping[str, Any], operator: str) -> None:
        _expect(args, (), ("override_reason",))
        override = _text(args, "override_reason", required=False)
        self.exam.complete(operator, override_reason=override)

    def _discontinue(self, args: Mapping[str, Any], operator: str) -> None:
        _expect(args, ("reason_code",))
        self.exam.discontinue(_text(args, "reason_code"), operator)

    def _reinitialise_injector(self, operator: str) -> None:
        if self._reinitialise is None:
            raise ValueError("no injector is configured")
        self._reinitialise(operator)

    def _refresh(self) -> None:
        if self._refresh_orders is None:
            raise ValueError("no RIS worklist is configured")
        self._refresh_orders()


# ---------------------------------------------------------------------- argument checks


def _expect(
    args: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    missing = [key for key in required if key not in args]
    if missing:
        raise ValueError(f"missing argument(s): {', '.join(missing)}")
    unknown = sorted(set(args) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"unknown argument(s): {', '.join(map(str, unknown))}")


def _text(args: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = args.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    value = value.strip()
    if required and not value:
        raise ValueError(f"{key} is required")
    if any(ord(char) < 0x20 for char in value):
        raise ValueError(f"{key} must not contain control characters")
    return value


def _side(args: Mapping[str, Any]) -> str:
    side = _text(args, "side").upper()
    if side not in ("L", "R"):
        raise ValueError("side must be L or R (the breast with the discharge)")
    return side


def _positive(args: Mapping[str, Any], key: str) -> float:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{key} must be a positive number")
    return number
