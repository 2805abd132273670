"""Volumes and rates as the pump receives them: a value it cannot honour is refused, never rounded.

A wire number has at most 4 digits and 3 decimals (``codec.format_number``), so a value is
rounded on its way to the pump. This module decides whether that rounding is acceptable and
checks what the pump reads back (issue 8, layer 1):

- a value whose wire form (number *and* unit: ``VOL … ML``, ``RAT … MM``) is more than 1 % from
  the value asked is refused with the reason (:class:`LimitError`);
- a wire value of 0 is never sent: on this pump ``VOL 0`` means *no volume limit* (a 0.0004 mL
  request once became ``VOL 0`` and emptied the syringe), and ``RAT 0`` is no rate;
- a read-back is accepted only when it is the same decimal number in the same unit as the value
  sent (``0.300MM`` for ``0.3`` ``MM``); "close to" is not the same value, and 0 is never
  accepted.

The limits of one injection are stated here once, in words the technologist reads, and checked
by two layers that do not rely on each other: the exam's interlock and the driver's
``check_limits`` (:func:`range_refusal`, :func:`duration_refusal`).

Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from device_drivers.codec import ProtocolError, format_number, parse_number
from device_drivers.errors import LimitError

#: Volumes go on the wire in mL (``VOL ML``), rates in mL/min (``RAT x MM``).
VOLUME_UNIT = "ML"
RATE_UNIT = "MM"
#: A wire value may differ from the value asked by at most this fraction.
MAX_WIRE_ERROR = 0.01

_UNIT_TEXT = {"ML": "mL", "UL": "µL", "MM": "mL/min", "UM": "µL/min", "MH": "mL/h", "UH": "µL/h"}
_QUANTITY = re.compile(r"(?P<number>[\d.]+)(?P<unit>[A-Z]{2})")


def _decimal(text: str) -> Decimal | None:
    try:
        parse_number(text)  # the 4-digit wire format
        return Decimal(text)
    except (ProtocolError, InvalidOperation):
        return None


@dataclass(frozen=True)
class WireQuantity:
    """A number as sent (``"0.3"``) and its unit (``"MM"``)."""

    number: str
    unit: str

    @property
    def value(self) -> float:
        return parse_number(self.number)

    def matches(self, data: str) -> bool:
        """Whether the pump's read-back ``data`` (``"0.300MM"``) is this very value: the same
        decimal number, the same unit, and not 0."""
        m = _QUANTITY.fullmatch(data)
        if m is None or m["unit"] != self.unit:
            return False
        read, sent = _decimal(m["number"]), _decimal(self.number)
        return read is not None and sent is not None and read == sent != 0

    def __str__(self) -> str:
        return f"{self.number} {_UNIT_TEXT.get(self.unit, self.unit)}"


def wire_quantity(value: float, unit: str, what: str) -> WireQuantity:
    """The wire form of ``value`` in ``unit``; :class:`LimitError` when it would be 0 or more
    than :data:`MAX_WIRE_ERROR` from the value asked."""
    shown = f"{what} {value:g} {_UNIT_TEXT.get(unit, unit)}"
    try:
        number = format_number(value)
    except ProtocolError as exc:
        raise LimitError(f"{shown} cannot be sent to the pump: {exc}") from exc
    quantity = WireQuantity(number, unit)
    on_wire = quantity.value
    if on_wire == 0:
        raise LimitError(f"{shown} would be 0 on the wire (refused, never rounded)")
    error = abs(on_wire - value) / value
    if error > MAX_WIRE_ERROR + 1e-12:
        raise LimitError(
            f"{shown} cannot be sent exactly: {quantity} on the wire is {error:.1%} off "
            f"(at most {MAX_WIRE_ERROR:.0%}; refused, never rounded)"
        )
    return quantity


def range_refusal(what: str, value: float, low: float, high: float, unit: str) -> str | None:
    """Why ``value`` is outside ``[low, high]`` (``"volume 0.0004 mL is below the minimum of
    0.05 mL"``), or None."""
    if not math.isfinite(value):
        return f"{what} {value} {unit} is not a number"
    if value < low:
        return f"{what} {value:g} {unit} is below the minimum of {low:g} {unit}"
    if value > high:
        return f"{what} {value:g} {unit} is above the maximum of {high:g} {unit}"
    return None


#: Relative slack of the duration bound: 0.5 mL at 0.05 mL/min is 600 s, not 600.0000001 s.
_DURATION_SLACK = 1e-9


def duration_refusal(volume_ml: float, rate_ml_min: float, max_s: float) -> str | None:
    """Why ``volume_ml`` at ``rate_ml_min`` would run longer than ``max_s`` (inclusive), or
    None. A bound on duration is also a bound on a rate so slow that the injection would
    outlast the technologist's attention (0.5 mL at 0.0001 mL/min is 83 hours)."""
    duration_s = volume_ml / rate_ml_min * 60.0
    if duration_s > max_s * (1 + _DURATION_SLACK):
        return (
            f"{volume_ml:g} mL at {rate_ml_min:g} mL/min takes {duration_s:.0f} s, more than "
            f"the {max_s:g} s allowed"
        )
    return None


def same_number(sent: str, read: str) -> bool:
    """Whether a plain wire number read back (``DIA``, ``XPL``) is the number sent."""
    a, b = _decimal(sent), _decimal(read)
    return a is not None and a == b
