"""Fault names, triggers and the seeded random schedule of the injector simulator.

A fault is written ``NAME`` (fire now), ``NAME@t=S`` (S simulated seconds after serving starts),
``NAME@after=N`` (once N commands have been received: it acts from command N+1 on) or
``NAME@volume=ML`` (when the infused counter reaches ML). The semantics of each name are listed in
``simulators/injector.py`` and ``docs/_parts/injector-simulator.md``
(domain/injector-protocol.md §8).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass

#: Device and physics faults.
DEVICE_FAULTS: tuple[str, ...] = (
    "reset",
    "stall",
    "pressure_ramp",
    "occlusion",
    "air",
    "syringe_detached",
    "extravasation",
    "syringe_empty",
    "under_delivery",
    "oor",
    "na",
    "hold_timeout",
    "arm_timeout",
    "watchdog",
)

#: Link faults.
LINK_FAULTS: tuple[str, ...] = (
    "no_reply",
    "no_reply_forever",
    "late_reply",
    "partial_frame",
    "trickle",
    "garbage",
    "bitflip_reply",
    "bitflip_request",
    "wrong_length",
    "missing_etx",
    "stx_etx_in_crc",
    "duplicate_reply",
    "wrong_address",
    "wrong_shape",
    "auto_alarm_interleaved",
    "echo",
    "port_vanish",
)

FAULT_NAMES: tuple[str, ...] = DEVICE_FAULTS + LINK_FAULTS

#: Faults a random schedule leaves out unless named: they end the session for good.
NOT_RANDOM_BY_DEFAULT: frozenset[str] = frozenset({"no_reply_forever"})


class InjectorSimError(Exception):
    """Base of the injector simulator's errors."""


class FaultSyntaxError(InjectorSimError, ValueError):
    """A fault text does not follow ``NAME[@t=S|@after=N|@volume=ML]``."""


class Trigger(enum.Enum):
    NOW = "now"
    TIME = "t"
    AFTER = "after"
    VOLUME = "volume"


@dataclass(frozen=True)
class FaultSpec:
    """One fault and when it fires."""

    name: str
    trigger: Trigger = Trigger.NOW
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in FAULT_NAMES:
            raise FaultSyntaxError(
                f"unknown fault {self.name!r}; known faults: {', '.join(FAULT_NAMES)}"
            )
        if self.value < 0 or self.value != self.value:
            raise FaultSyntaxError(f"fault {self.name!r}: trigger value must be >= 0")

    def __str__(self) -> str:
        if self.trigger is Trigger.NOW:
            return self.name
        value = int(self.value) if self.trigger is Trigger.AFTER else self.value
        return f"{self.name}@{self.trigger.value}={value}"


def parse_fault(text: str) -> FaultSpec:
    """``"stall@volume=0.2"`` → ``FaultSpec("stall", Trigger.VOLUME, 0.2)``."""
    name, sep, when = text.strip().partition("@")
    if not sep:
        return FaultSpec(name)
    key, eq, raw = when.partition("=")
    try:
        trigger = Trigger(key)
    except ValueError:
        trigger = Trigger.NOW
        eq = ""
    if not eq or trigger is Trigger.NOW:
        raise FaultSyntaxError(
            f"bad fault trigger in {text!r}: use NAME, NAME@t=S, NAME@after=N or NAME@volume=ML"
        )
    try:
        value = int(raw) if trigger is Trigger.AFTER else float(raw)
    except ValueError as exc:
        raise FaultSyntaxError(f"bad trigger value in {text!r}") from exc
    return FaultSpec(name, trigger, float(value))


def random_schedule(
    rng: random.Random, count: int, within_s: float, names: Iterable[str] | None = None
) -> list[FaultSpec]:
    """``count`` faults at seeded simulated times in ``[0, within_s)``, sorted by time."""
    if count < 0 or within_s <= 0:
        raise FaultSyntaxError("a random schedule needs count >= 0 and within_s > 0")
    pool = (
        [n for n in FAULT_NAMES if n not in NOT_RANDOM_BY_DEFAULT] if names is None else list(names)
    )
    for name in pool:
        if name not in FAULT_NAMES:
            raise FaultSyntaxError(f"unknown fault {name!r}")
    if not pool and count:
        raise FaultSyntaxError("no fault names to choose from")
    specs = [
        FaultSpec(rng.choice(pool), Trigger.TIME, rng.uniform(0, within_s)) for _ in range(count)
    ]
    return sorted(specs, key=lambda spec: spec.value)
