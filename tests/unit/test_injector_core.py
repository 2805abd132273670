"""The driver's shared core (device_drivers/core.py) without a link: its transitions, its event
record and how it reads a reply."""

from __future__ import annotations

import pytest

from device_drivers.base import InjectionStatus, InjectorState, RecordedEvent
from device_drivers.codec import Alarm, Prompt, Reply, ReplyError
from device_drivers.core import DriverCore, Injection
from device_drivers.errors import (
    CapabilityError,
    DeviceRefusedError,
    LimitError,
    StateError,
)
from device_drivers.events import InjectorEvent
from device_drivers.limits import InjectorLimits
from device_drivers.states import Trigger
from device_drivers.supervision import DeliverySupervisor

S = InjectorState


def test_a_transition_off_the_table_is_an_internal_error() -> None:
    core = DriverCore(InjectorLimits())
    core.go(Trigger.CONFIGURE, S.READY)
    assert core.state is S.READY
    with pytest.raises(StateError, match="internal"):
        core.go(Trigger.START, S.INJECTING)  # START leaves ARMED only
    assert core.state is S.READY
    with pytest.raises(StateError, match="not connected"):
        _ = core.link


def test_every_event_reaches_every_subscriber_and_the_injection() -> None:
    core = DriverCore(InjectorLimits())
    heard: list[RecordedEvent] = []

    def broken(event: RecordedEvent) -> None:
        raise RuntimeError("a subscriber that fails")

    core.subscribers += [broken, heard.append]
    core.state = S.INJECTING
    supervisor = DeliverySupervisor(0.5, 0.3, grace_s=0.1)
    core.injection = Injection(0.5, 0.3, 0.0, InjectionStatus(), supervisor, polled_s=0.0)
    core.record(InjectorEvent.PRESSURE_WARNING, "driver", "80 kPa")
    assert [e.event for e in heard] == [InjectorEvent.PRESSURE_WARNING]
    assert core.events == heard
    assert InjectorEvent.PRESSURE_WARNING in core.injection.recorded


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (ReplyError.OUT_OF_RANGE, LimitError),
        (ReplyError.NOT_APPLICABLE, StateError),
        (ReplyError.UNKNOWN_COMMAND, CapabilityError),
        (ReplyError.INVALID_PACKET, DeviceRefusedError),
    ],
)
def test_a_refusal_is_raised_as_what_it_means(error: ReplyError, raised: type[Exception]) -> None:
    core = DriverCore(InjectorLimits())
    with pytest.raises(raised):
        core.checked(Reply(0, Prompt.STOPPED, None, error, ""), "RUN")
    ok = Reply(0, Prompt.STOPPED, None, None, "")
    assert core.checked(ok, "RUN") is ok


def test_an_alarm_reply_is_not_an_execution() -> None:
    core = DriverCore(InjectorLimits())
    with pytest.raises(DeviceRefusedError, match="motor stalled"):
        core.checked(Reply(0, None, Alarm.STALLED, None, ""), "RUN")
