"""The console's views: the parts of the state document that are read, not commanded.

Pure functions of what the exam, the injector and the dose log hold: a dose alert beside its
exposure, the injector's status in plain words and its events, the patient banner (name, birth
date and age, two identifiers), open alerts per breast, the pseudonymised document a physicist
or an admin sees, and the next safe actions after a fault. :class:`~acquisition.console.backend.
ConsoleBackend` assembles them into the document.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any

from acquisition.exam.model import ExamOrder, ExamSnapshot
from acquisition.exam_machine import ExamEvent, ExamState, next_state
from device_drivers.base import InjectorState, RecordedEvent

S, E = ExamState, ExamEvent

#: A DICOM DA value (YYYYMMDD).
DICOM_DATE = re.compile(r"\d{8}")


def optional_float(value: Any) -> float | None:
    """A finite number, or None (absent, NaN or infinite)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def is_date(text: str) -> bool:
    if not DICOM_DATE.fullmatch(text):
        return False
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def alert_view(alert: Mapping[str, Any]) -> dict[str, Any]:
    """One alert beside its exposure: the level, the value, the limit, its state."""
    return {
        "id": alert["id"],
        "level": alert["level_name"],
        "value_mgy": optional_float(alert["value_mgy"]),
        "limit_mgy": optional_float(alert["limit_mgy"]),
        "detail": alert["detail"],
        "state": alert["state"],
    }


# ---------------------------------------------------------------------- the injector in words

NOT_CONNECTED = "not connected"
FAULT = "fault"
#: The injector's events the page lists (newest first).
EVENTS_SHOWN = 20

#: The driver's states in the technologist's words: one name for each thing to know.
_STATUS: dict[InjectorState, str] = {
    InjectorState.NOT_READY: "ready",  # connected and well, no injection programmed yet
    InjectorState.READY: "ready",
    InjectorState.COMPLETED: "ready",
    InjectorState.ARMED: "armed",
    InjectorState.INJECTING: "injecting",
    InjectorState.HOLD: "held",
    InjectorState.ABORTED: FAULT,
    InjectorState.ERROR: FAULT,
}


def injector_status(state: InjectorState | None, link_up: bool) -> str:
    """``ready``, ``not connected``, ``armed``, ``injecting``, ``held`` or ``fault``: a lost
    link is "not connected" whatever the driver's state, an error is "fault"."""
    if state is InjectorState.ERROR:
        return FAULT
    if not link_up or state is None:
        return NOT_CONNECTED
    return _STATUS[state]


def event_view(event: RecordedEvent) -> dict[str, Any]:
    return {
        "code": event.code,
        "meaning": event.meaning,
        "at": event.at.isoformat(timespec="milliseconds"),
        "source": event.source,
        "detail": event.detail,
    }


# ---------------------------------------------------------------------- the patient banner


def patient_banner(order: ExamOrder, today: dt.date | None = None) -> dict[str, Any]:
    """Two identifiers and what the technologist checks them against: the name, the birth
    date (ISO 8601) and the age, the ID, the sex, the side and the accession."""
    birth = birth_date(order.patient.birth_date)
    today = today or dt.date.today()
    age = None
    if birth is not None and birth <= today:
        age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return {
        "name": order.patient.name.replace("^", " ").strip(),
        "family_name": order.patient.name.split("^")[0],
        "patient_id": order.patient.id,
        "birth_date": birth.isoformat() if birth else None,
        "age_years": age,
        "sex": order.patient.sex or None,
        "side": order.side,
        "accession": order.accession,
    }


def birth_date(text: str) -> dt.date | None:
    if not is_date(text or ""):
        return None
    return dt.datetime.strptime(text, "%Y%m%d").date()


def injection_started(exam: ExamSnapshot) -> str | None:
    """When the last injection started (UTC ISO 8601): the running one, or the last given."""
    if exam.injection_started is not None:
        return exam.injection_started
    return exam.contrast[-1].started_at if exam.contrast else None


def open_alerts_per_breast(
    exposures: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> dict[str, int]:
    """How many alerts are open per breast among the exam's exposures."""
    side = {int(row["id"]): row.get("laterality") or "" for row in rows}
    counts: dict[str, int] = {}
    for exposure in exposures:
        opened = sum(1 for alert in exposure["alerts"] if alert["state"] == "open")
        if opened:
            key = side.get(int(exposure["id"]), "")
            counts[key] = counts.get(key, 0) + opened
    return counts


#: What stays of the exam's order for a role that may not see the patient's identity (a list
#: of what is kept, not of what is taken: a field added to the order later stays hidden).
_ANONYMOUS_ORDER_KEYS = (
    "side",
    "requested_procedure_description",
    "scheduled",
    "ris_sps_description",
    "opened_at",
)


def pseudonymous_view(document: dict[str, Any]) -> dict[str, Any]:
    """The state document without the patient's identity, the worklist or the UIDs."""
    view = dict(document)
    exam = dict(view["exam"])
    if exam.get("order"):
        exam["order"] = {k: exam["order"].get(k) for k in _ANONYMOUS_ORDER_KEYS}
    view["exam"] = exam
    view["patient"] = None
    view["orders"] = []
    view["errors"] = [e for e in view["errors"] if "RIS" not in e]
    return view


# ---------------------------------------------------------------------- what to do after a fault

#: What the technologist may do about a fault, by the CID 71 code of its cause (procedure.md:
#: extravasation stops the exam and it is rescheduled; air mimics filling defects).
_FAULT_ADVICE: dict[str, str] = {
    "130156": "The line pressure passed the termination limit: check the cannula's position "
    "and the line for a kink or a clot before any further injection.",
    "130157": "The flow passed its termination limit: check the injector before any further "
    "injection.",
    "130159": "The injector's link was lost: check its cable and power. Acknowledging reopens "
    "the link and reads back what the pump really gave.",
    "130175": "Air was detected: purge the line again (a new air-purge confirmation) before "
    "any further injection; bubbles mimic filling defects.",
    "130176": "Air was detected: purge the line again (a new air-purge confirmation) before "
    "any further injection; bubbles mimic filling defects.",
    "130164": "The syringe came off: reattach it and purge the line before any further injection.",
    "130179": "The syringe came off: reattach it and purge the line before any further injection.",
    "130269": "The injection was held too long and is over; start a new one only if filling "
    "was incomplete.",
    "130158": "The injection paused too long and is over; start a new one only if filling was "
    "incomplete.",
    "110501": "The injector reported an equipment failure: check it before any further injection.",
}
_EXTRAVASATION_ADVICE = (
    "Suspected extravasation: do not inject again; take the images that are needed and "
    "discontinue with Injection Site Extravasation (the exam is rescheduled in 7-14 days)."
)
_CONTROLLER_STOP_ADVICE = (
    "The injector gave more, or ran longer, than programmed: do not inject again with it; "
    "discontinue with Equipment failure and have the injector checked."
)
_INJECTOR_FAILURE_ADVICE = (
    "The injector failed (motor stalled, syringe empty, occlusion…): check the syringe and the "
    "line before any further injection."
)


def fault_next_actions(exam: ExamSnapshot, code: str | None, reason: str) -> list[str]:
    """The steps open to the technologist in FAULT: acknowledge (and where it leads), the
    advice for the cause, and what the exam allows after it."""
    after = next_state(S.FAULT, E.ACKNOWLEDGE_FAULT, exam.facts)
    steps = [
        "Acknowledge the fault: the injector is reset (its link reopened if lost) and the exam "
        f"returns to {after.value}."
    ]
    if code == "130160":
        if "extravasation" in reason:
            steps.append(_EXTRAVASATION_ADVICE)
        elif "controller stop" in reason:
            steps.append(_CONTROLLER_STOP_ADVICE)
        else:
            steps.append(_INJECTOR_FAILURE_ADVICE)
    elif code in _FAULT_ADVICE:
        steps.append(_FAULT_ADVICE[code])
    elif "journal" in reason:
        steps.append("Tell IT: the journal could not be written for a while.")
    if after in (S.POST_INJECTION_1, S.POST_INJECTION_2):
        steps.append(
            "Then take the post-injection images, give the second injection if one is left "
            "(with its own air-purge confirmation), complete, or discontinue with a reason."
        )
    else:
        steps.append("Then carry on from there, or discontinue with a reason.")
    return steps
