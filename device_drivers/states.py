"""The controller-side injector state machine (injector-protocol.md §6), as a table, and what
the device's alarms and events mean for it (CID 71 codes)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from device_drivers.base import InjectorState
from device_drivers.codec import Alarm
from device_drivers.errors import StateError
from device_drivers.events import InjectorEvent

S = InjectorState
E = InjectorEvent


class Trigger(enum.Enum):
    CONFIGURE = "configure"
    ARM = "arm"
    DISARM = "disarm"
    ARM_TIMEOUT = "arm timeout"
    START = "start"
    VOLUME_REACHED = "volume reached"
    HOLD = "hold"
    RESUME = "resume"
    HOLD_TIMEOUT = "hold timeout"
    OPERATOR_STOP = "operator stop"
    FAULT = "fault"
    REPORTED = "reported"
    ACKNOWLEDGE = "acknowledge"
    ACKNOWLEDGE_UNCONFIGURED = "acknowledge (never configured)"


T = Trigger

TRANSITIONS: dict[tuple[Trigger, InjectorState], InjectorState] = {
    # Syringe, rate and volume set and read back.
    (T.CONFIGURE, S.NOT_READY): S.READY,
    (T.CONFIGURE, S.READY): S.READY,
    (T.CONFIGURE, S.COMPLETED): S.READY,
    # Arming needs a healthy link, no pending alarm and the pressure limits programmed.
    (T.ARM, S.READY): S.ARMED,
    # After a completed injection the same settings may be re-armed (second injection).
    (T.ARM, S.COMPLETED): S.ARMED,
    (T.DISARM, S.ARMED): S.READY,
    # Arming lapses when not started in time (device and driver both time it).
    (T.ARM_TIMEOUT, S.ARMED): S.READY,
    (T.START, S.ARMED): S.INJECTING,
    # The device stopped by itself with the programmed volume delivered.
    (T.VOLUME_REACHED, S.INJECTING): S.COMPLETED,
    (T.HOLD, S.INJECTING): S.HOLD,
    (T.RESUME, S.HOLD): S.INJECTING,
    # A hold longer than the maximum aborts the injection.
    (T.HOLD_TIMEOUT, S.HOLD): S.ABORTED,
    # Operator stop and every fault while delivering: STP first, then ABORTED(reason).
    (T.OPERATOR_STOP, S.INJECTING): S.ABORTED,
    (T.OPERATOR_STOP, S.HOLD): S.ABORTED,
    (T.FAULT, S.INJECTING): S.ABORTED,
    (T.FAULT, S.HOLD): S.ABORTED,
    # A fault outside an injection (alarm, link loss) needs the operator's acknowledgement.
    (T.FAULT, S.NOT_READY): S.ERROR,
    (T.FAULT, S.READY): S.ERROR,
    (T.FAULT, S.ARMED): S.ERROR,
    (T.FAULT, S.COMPLETED): S.ERROR,
    (T.FAULT, S.ERROR): S.ERROR,
    # ABORTED is reported, then held as ERROR until acknowledged.
    (T.REPORTED, S.ABORTED): S.ERROR,
    (T.ACKNOWLEDGE, S.ERROR): S.READY,
    (T.ACKNOWLEDGE_UNCONFIGURED, S.ERROR): S.NOT_READY,
}


def next_state(trigger: Trigger, state: InjectorState) -> InjectorState:
    """The state after ``trigger`` in ``state``; :class:`StateError` if not allowed."""
    try:
        return TRANSITIONS[(trigger, state)]
    except KeyError:
        raise StateError(
            f"cannot {trigger.value} while the injector is {state.value.replace('_', ' ')}"
        ) from None


# ------------------------------------------------------------------------------------------
# What alarms and device events mean.


@dataclass(frozen=True)
class AlarmMeaning:
    event: InjectorEvent  # recorded when the alarm is seen
    termination: InjectorEvent  # the reason an injection it interrupts is aborted
    text: str


ALARMS: dict[Alarm, AlarmMeaning] = {
    Alarm.RESET: AlarmMeaning(E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "power reset"),
    Alarm.STALLED: AlarmMeaning(
        E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "motor stalled"
    ),
    Alarm.COMMS_TIMEOUT: AlarmMeaning(
        E.TERMINATED_COMM_LOSS, E.TERMINATED_COMM_LOSS, "safe-mode watchdog expired"
    ),
    Alarm.PROGRAM_ERROR: AlarmMeaning(
        E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "program error"
    ),
    Alarm.OUT_OF_RANGE: AlarmMeaning(
        E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "phase out of range"
    ),
    Alarm.OVER_PRESSURE: AlarmMeaning(
        E.TERMINATED_PRESSURE, E.TERMINATED_PRESSURE, "pressure above termination limit"
    ),
    Alarm.AIR: AlarmMeaning(E.AIR_DETECTED, E.TERMINATED_AIR, "air detected"),
    Alarm.OCCLUSION: AlarmMeaning(E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "occlusion"),
    Alarm.SYRINGE_DETACHED: AlarmMeaning(
        E.SYRINGE_DETACHED, E.TERMINATED_CONSUMABLE_REMOVAL, "syringe detached"
    ),
}

#: Device events (XEV) that end an injection, with the termination reported.
TERMINATING_EVENTS: dict[InjectorEvent, InjectorEvent] = {
    E.TERMINATED_OPERATOR: E.TERMINATED_OPERATOR,
    E.TERMINATED_PRESSURE: E.TERMINATED_PRESSURE,
    E.TERMINATED_FLOW: E.TERMINATED_FLOW,
    E.TERMINATED_EXCESSIVE_PAUSE: E.TERMINATED_EXCESSIVE_PAUSE,
    E.TERMINATED_COMM_LOSS: E.TERMINATED_COMM_LOSS,
    E.TERMINATED_INJECTOR_FAILURE: E.TERMINATED_INJECTOR_FAILURE,
    E.TERMINATED_AIR: E.TERMINATED_AIR,
    E.AIR_DETECTED: E.TERMINATED_AIR,
    E.TERMINATED_BY_SCANNER: E.TERMINATED_BY_SCANNER,
    E.TERMINATED_CONSUMABLE_REMOVAL: E.TERMINATED_CONSUMABLE_REMOVAL,
    E.SYRINGE_DETACHED: E.TERMINATED_CONSUMABLE_REMOVAL,
    E.TERMINATED_HOLD_TIMEOUT: E.TERMINATED_HOLD_TIMEOUT,
    E.EQUIPMENT_FAILURE: E.TERMINATED_INJECTOR_FAILURE,
}
