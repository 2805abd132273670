"""The console's views (acquisition/console/views.py): pure functions of what the exam, the
injector and the dose log hold."""

from __future__ import annotations

import datetime as dt

import pytest

from acquisition.console import views
from acquisition.exam.model import ExamOrder
from device_drivers.base import InjectorState
from dicom_nodes.datasets.identity import unflatten_patient


def order(**changes: str) -> ExamOrder:
    values = {
        "exam_id": "e1",
        "accession": "ACC1",
        "study_instance_uid": "1.2.3",
        "patient_name": "Lévêque^Zoé",
        "patient_id": "PID1",
        "patient_birth_date": "19710312",
        "patient_sex": "F",
        "side": "L",
        **changes,
    }
    return ExamOrder(**unflatten_patient(values))  # the patient from its flat keys


@pytest.mark.parametrize(
    ("today", "age"),
    [(dt.date(2026, 3, 11), 54), (dt.date(2026, 3, 12), 55), (dt.date(2026, 12, 5), 55)],
)
def test_the_banner_gives_two_identifiers_the_birth_date_and_the_age(
    today: dt.date, age: int
) -> None:
    banner = views.patient_banner(order(), today)
    assert banner == {
        "name": "Lévêque Zoé",
        "family_name": "Lévêque",
        "patient_id": "PID1",
        "birth_date": "1971-03-12",
        "age_years": age,
        "sex": "F",
        "side": "L",
        "accession": "ACC1",
    }


@pytest.mark.parametrize("birth", ["", "1971-03-12", "19711345", "2027"])
def test_a_birth_date_that_is_not_a_date_shows_no_age(birth: str) -> None:
    banner = views.patient_banner(order(patient_birth_date=birth), dt.date(2026, 12, 5))
    assert banner["birth_date"] is None and banner["age_years"] is None


def test_a_birth_date_after_today_shows_no_age() -> None:
    banner = views.patient_banner(order(patient_birth_date="20270101"), dt.date(2026, 12, 5))
    assert banner["birth_date"] == "2027-01-01" and banner["age_years"] is None


@pytest.mark.parametrize(
    ("state", "link_up", "status"),
    [
        (InjectorState.NOT_READY, True, "ready"),
        (InjectorState.READY, True, "ready"),
        (InjectorState.ARMED, True, "armed"),
        (InjectorState.INJECTING, True, "injecting"),
        (InjectorState.HOLD, True, "held"),
        (InjectorState.ABORTED, True, "fault"),
        (InjectorState.ERROR, True, "fault"),
        (InjectorState.ERROR, False, "fault"),  # an error is a fault even with the link down
        (InjectorState.INJECTING, False, "not connected"),  # never "injecting" unheard
        (None, True, "not connected"),
    ],
)
def test_the_injector_status_in_plain_words(
    state: InjectorState | None, link_up: bool, status: str
) -> None:
    assert views.injector_status(state, link_up) == status


def test_every_driver_state_has_a_plain_word() -> None:
    words = {views.injector_status(state, True) for state in InjectorState}
    assert words <= {"ready", "armed", "injecting", "held", "fault"}


def test_the_pseudonymous_view_keeps_no_identity() -> None:
    document = {
        "exam": {"state": "pre-contrast", "order": {**order().__dict__, "ris_item": None}},
        "patient": views.patient_banner(order()),
        "orders": [{"patient_name": "Lévêque^Zoé"}],
        "errors": ["RIS orders not readable: PID1", "outbox: 2 stuck"],
    }
    view = views.pseudonymous_view(document)
    assert view["patient"] is None and view["orders"] == []
    assert view["exam"]["order"] == {
        "side": "L",
        "requested_procedure_description": "Galactography",
        "scheduled": True,
        "ris_sps_description": "",
        "opened_at": "",
    }
    assert view["errors"] == ["outbox: 2 stuck"]
    assert "Zoé" not in repr(view) and "PID1" not in repr(view)
    assert document["patient"] is not None  # the technologist's document is untouched


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (1, 1.0), ("2.5", 2.5), (float("nan"), None), (float("inf"), None)],
)
def test_optional_float(value: object, expected: float | None) -> None:
    assert views.optional_float(value) == expected


@pytest.mark.parametrize(
    ("text", "valid"), [("19710312", True), ("19710230", False), ("1971031", False), ("", False)]
)
def test_is_date(text: str, valid: bool) -> None:
    assert views.is_date(text) is valid
