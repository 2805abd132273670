"""Fault names, triggers and the seeded random schedule of the injector simulator.

A fault is written ``NAME`` (fire now), ``NAME@t=S`` (S simulated seconds after serving starts),
``NAME@after=N`` (once N commands have been received: it acts from command N+1 on),
``NAME@volume=ML`` (when the infused counter reaches ML) or ``NAME@on=CMD`` (when the pump has
executed the command ``CMD``, e.g. ``RUN``, before its reply is written: ``port_vanish@on=RUN``
cuts the link exactly at the start). The semantics of each name are listed in
``simulators/injector.py`` and ``docs/_parts/injector-simulator.md``
(domain/injector-protocol.md §8).
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Callable, Iterable
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
    # The pump's own safety layers switched off, one at a time, so that the controller's layer
    # behind each is what acts (issue 8): a pump that runs past its volume, one whose counter
    # under-reports (and that stops by it), no pressure supervision, a pause the pump makes by
    # itself, no maximum-hold abort, no end-of-travel stall, no arm timeout.
    "ignore_volume",
    "dis_under_report",
    "pressure_limits_off",
    "self_hold",
    "hold_timeout_off",
    "end_stop_off",
    "arm_timeout_off",
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

#: The faults that switch one of the pump's own safety layers off for the rest of the session.
LAYER_OFF_FAULTS: tuple[str, ...] = DEVICE_FAULTS[DEVICE_FAULTS.index("ignore_volume") :]

#: Faults a random schedule leaves out unless named: they end the session for good, or take
#: away one of the pump's own safety layers (a test of the controller's layer, not a storm).
NOT_RANDOM_BY_DEFAULT: frozenset[str] = frozenset({"no_reply_forever", *LAYER_OFF_FAULTS})


#: A command name of the protocol (three capitals), for ``@on=CMD``.
_COMMAND_NAME = re.compile(r"[A-Z]{3}")


class InjectorSimError(Exception):
    """Base of the injector simulator's errors."""


class FaultSyntaxError(InjectorSimError, ValueError):
    """A fault text does not follow ``NAME[@t=S|@after=N|@volume=ML]``."""


class Trigger(enum.Enum):
    NOW = "now"
    TIME = "t"
    AFTER = "after"
    VOLUME = "volume"
    COMMAND = "on"


@dataclass(frozen=True)
class FaultSpec:
    """One fault and when it fires."""

    name: str
    trigger: Trigger = Trigger.NOW
    value: float = 0.0
    #: With ``Trigger.COMMAND``: the command name (``RUN``, ``STP``, ``XAR``…).
    command: str = ""

    def __post_init__(self) -> None:
        if self.name not in FAULT_NAMES:
            raise FaultSyntaxError(
                f"unknown fault {self.name!r}; known faults: {', '.join(FAULT_NAMES)}"
            )
        if self.value < 0 or self.value != self.value:
            raise FaultSyntaxError(f"fault {self.name!r}: trigger value must be >= 0")
        if (self.trigger is Trigger.COMMAND) != bool(self.command):
            raise FaultSyntaxError(f"fault {self.name!r}: a command is given with @on=CMD only")
        if self.command and not _COMMAND_NAME.fullmatch(self.command):
            raise FaultSyntaxError(f"fault {self.name!r}: {self.command!r} is not a command name")

    def __str__(self) -> str:
        if self.trigger is Trigger.NOW:
            return self.name
        if self.trigger is Trigger.COMMAND:
            return f"{self.name}@on={self.command}"
        value = int(self.value) if self.trigger is Trigger.AFTER else self.value
        return f"{self.name}@{self.trigger.value}={value}"


class FaultSchedule:
    """The faults waiting for their trigger; each ``due_*`` call takes out those now due, in
    the order they were added."""

    def __init__(self) -> None:
        self._pending: list[FaultSpec] = []

    def add(self, spec: FaultSpec) -> None:
        self._pending.append(spec)

    def due_in_time(self, elapsed_s: float, infused_ml: float) -> list[FaultSpec]:
        """``@t=S`` (simulated seconds since serving) and ``@volume=ML`` (the counter)."""
        return self._take(
            lambda f: (
                (f.trigger is Trigger.TIME and elapsed_s >= f.value)
                or (f.trigger is Trigger.VOLUME and infused_ml >= f.value - 1e-12)
            )
        )

    def due_after(self, received: int) -> list[FaultSpec]:
        """``@after=N``: N valid commands received."""
        return self._take(lambda f: f.trigger is Trigger.AFTER and received >= f.value)

    def due_on(self, command: str) -> list[FaultSpec]:
        """``@on=CMD``: the command was executed; the fault fires before its reply."""
        return self._take(lambda f: f.trigger is Trigger.COMMAND and f.command == command)

    def _take(self, due: Callable[[FaultSpec], bool]) -> list[FaultSpec]:
        taken = [f for f in self._pending if due(f)]
        for spec in taken:
            self._pending.remove(spec)
        return taken


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
            f"bad fault trigger in {text!r}: use NAME, NAME@t=S, NAME@after=N, "
            "NAME@volume=ML or NAME@on=CMD"
        )
    if trigger is Trigger.COMMAND:
        return FaultSpec(name, trigger, command=raw.strip().upper())
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
