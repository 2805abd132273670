"""Values the pump cannot honour are refused, never rounded (issue 8, layer 1): properties.

Over every volume and rate the interlocks accept, the wire value is never 0, parses back within
the pump's resolution (3 decimals of mL and of mL/min) and is read back as the same value; every
value below a minimum is refused by the exam's interlock and by the driver's own check. (The
page's own check is held to the machine's in tests/integration/test_console_browser.py.)
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from acquisition.exam_machine import ExamEvent, ExamFacts, ExamState, Limits, Refused, next_state
from device_drivers.codec import parse_number
from device_drivers.driver import NewEraInjector
from device_drivers.errors import LimitError
from device_drivers.limits import InjectorLimits
from device_drivers.quantities import RATE_UNIT, VOLUME_UNIT, WireQuantity, wire_quantity
from simulators.injector import wire_value

EXAM = Limits()
DRIVER = InjectorLimits()
#: Half the last digit of a wire number with 3 decimals.
RESOLUTION = 0.0005

volumes = st.floats(EXAM.min_volume_ml, EXAM.max_volume_per_injection_ml)
rates = st.floats(EXAM.min_rate_ml_min, EXAM.max_rate_ml_min)


def machine_refusal(volume_ml: float, rate_ml_min: float) -> str | None:
    """The start-injection interlock with every other fact satisfied."""
    facts = ExamFacts(
        checklist_passed=True,
        pre_contrast_exposures=1,
        cannulation_confirmed=True,
        air_purge_confirmed=True,
        injector_healthy=True,
        requested_volume_ml=volume_ml,
        requested_rate_ml_min=rate_ml_min,
        limits=EXAM,
    )
    try:
        next_state(ExamState.CANNULATION, ExamEvent.START_INJECTION, facts)
    except Refused as refused:
        return refused.reason
    return None


def driver_refusal(volume_ml: float, rate_ml_min: float) -> str | None:
    driver = NewEraInjector("/dev/null", limits=DRIVER)  # no I/O before connect()
    try:
        driver.check_limits("3ml", rate_ml_min, volume_ml)
    except LimitError as exc:
        return str(exc)
    return None


def test_the_exam_and_the_driver_share_the_defaults() -> None:
    assert (EXAM.min_volume_ml, EXAM.min_rate_ml_min) == (0.05, 0.05)
    assert (DRIVER.min_volume_ml, DRIVER.min_rate_ml_min) == (0.05, 0.05)
    assert EXAM.max_injection_s == DRIVER.max_injection_s == 600.0


@given(volume_ml=volumes, rate_ml_min=rates)
def test_every_accepted_value_goes_on_the_wire_within_resolution_and_never_as_0(
    volume_ml: float, rate_ml_min: float
) -> None:
    assume(machine_refusal(volume_ml, rate_ml_min) is None)
    assert driver_refusal(volume_ml, rate_ml_min) is None
    for value, unit in ((volume_ml, VOLUME_UNIT), (rate_ml_min, RATE_UNIT)):
        quantity = wire_quantity(value, unit, "value")
        on_wire = parse_number(quantity.number)
        assert on_wire > 0
        assert abs(on_wire - value) <= RESOLUTION + 1e-12
        assert abs(on_wire - value) <= 0.01 * value + 1e-12
        # the pump reads it back in its own fixed-point form: the same decimal, the same unit
        assert quantity.matches(wire_value(on_wire) + unit)


@given(volume_ml=st.floats(0.0, EXAM.min_volume_ml, exclude_max=True), rate_ml_min=rates)
def test_every_volume_below_the_minimum_is_refused_by_the_exam_and_the_driver(
    volume_ml: float, rate_ml_min: float
) -> None:
    assert "below the minimum" in (machine_refusal(volume_ml, rate_ml_min) or "")
    assert "below the minimum" in (driver_refusal(volume_ml, rate_ml_min) or "")


@given(volume_ml=volumes, rate_ml_min=st.floats(0.0, EXAM.min_rate_ml_min, exclude_max=True))
def test_every_rate_below_the_minimum_is_refused_by_the_exam_and_the_driver(
    volume_ml: float, rate_ml_min: float
) -> None:
    assert "below the minimum" in (machine_refusal(volume_ml, rate_ml_min) or "")
    assert "below the minimum" in (driver_refusal(volume_ml, rate_ml_min) or "")


@given(volume_ml=volumes, rate_ml_min=rates)
def test_the_duration_bound_is_the_same_for_the_exam_and_the_driver(
    volume_ml: float, rate_ml_min: float
) -> None:
    too_long = volume_ml / rate_ml_min * 60.0 > EXAM.max_injection_s * (1 + 1e-9)
    machine, driver = (
        machine_refusal(volume_ml, rate_ml_min),
        driver_refusal(volume_ml, rate_ml_min),
    )
    assert (machine is not None) == (driver is not None) == too_long


def test_the_duration_bound_is_inclusive() -> None:
    assert machine_refusal(0.5, 0.05) is None  # 600 s exactly (0.5 / 0.05 * 60 is 600.0000001)
    assert driver_refusal(0.5, 0.05) is None
    assert "600 s" in (machine_refusal(0.51, 0.05) or "")


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(0.0004, "ML", "0 on the wire"), (0.0104, "ML", "0.01 mL on the wire"), (0.0001, "MM", "0")],
)
def test_a_value_the_wire_cannot_carry_is_refused(value: float, unit: str, expected: str) -> None:
    with pytest.raises(LimitError, match=expected):
        wire_quantity(value, unit, "volume")


@pytest.mark.parametrize(
    ("sent", "read", "same"),
    [
        (WireQuantity("0.3", "MM"), "0.300MM", True),
        (WireQuantity("0.3", "MM"), "300.0UM", False),  # the same flow, not the same value
        (WireQuantity("0.3", "MM"), "0.301MM", False),  # "close to" is not the value
        (WireQuantity("0.5", "ML"), "0.500ML", True),
        (WireQuantity("0.5", "ML"), "0.500UL", False),
        (WireQuantity("0", "ML"), "0.000ML", False),  # 0 is never accepted
        (WireQuantity("0.5", "ML"), "garbage", False),
    ],
)
def test_a_read_back_is_the_same_decimal_and_unit_or_nothing(
    sent: WireQuantity, read: str, same: bool
) -> None:
    assert sent.matches(read) is same
