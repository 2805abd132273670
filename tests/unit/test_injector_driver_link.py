"""The link against a scripted peer on a real pty: correlation, retries, drains, port loss.

The peer answers with exact bytes chosen by each test, so that each rule of
injector-protocol.md §5 is pinned down independently of the simulator.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from device_drivers.codec import Alarm, Decoder, Prompt, Role, encode_safe
from device_drivers.errors import DriverTimeoutError, LinkLostError, ReplyMismatchError
from device_drivers.link import Link, LinkEventKind, LinkTiming, Shape
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(30)

FAST = LinkTiming(reply_timeout_s=0.3, inter_byte_timeout_s=0.1, drain_quiet_s=0.05)

Script = Callable[[bytes, int], list[bytes]]  # (request data, index) -> raw bytes to send


class ScriptedPump:
    """The far end of a pty: decodes Safe frames and answers what ``script`` says."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="scripted-pump")
        self._thread.start()

    def _serve(self) -> None:
        import select

        decoder = Decoder(Role.PUMP, safe=True)
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.master, 1024)
            except OSError:
                return
            for frame in decoder.feed(data):
                self.requests.append(frame.data)
                for chunk in self.script(frame.data, len(self.requests) - 1):
                    os.write(self.master, chunk)

    def send(self, raw: bytes) -> None:
        os.write(self.master, raw)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def reply(text: str) -> bytes:
    return encode_safe(text.encode())


def answer_status(data: bytes, index: int) -> list[bytes]:
    return [reply("00S")]


@pytest.fixture
def pump_and_link(request: pytest.FixtureRequest) -> Iterator[tuple[ScriptedPump, Link]]:
    script: Script = getattr(request, "param", answer_status)
    pump = ScriptedPump(script)
    link = Link(pump.path, timing=FAST)
    link.safe = True
    try:
        yield pump, link
    finally:
        link.close()
        pump.close()


def with_script(script: Script) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("pump_and_link", [script], indirect=True)


def test_round_trip_sends_the_worked_frame(pump_and_link: tuple[ScriptedPump, Link]) -> None:
    pump, link = pump_and_link
    got = link.status()
    assert got.prompt is Prompt.STOPPED and got.alarm is None
    assert pump.requests == [b"0"]
    assert [e.reply for e in link.exchanges] == [b"00S"]


@with_script(lambda data, i: [encode_safe(data), reply("00S4.699")])
def test_echo_of_our_own_bytes_is_ignored(pump_and_link: tuple[ScriptedPump, Link]) -> None:
    _, link = pump_and_link
    assert link.query("DIA", Shape.NUMBER).data == "4.699"
    assert link.stats.echoes == 1


@with_script(lambda data, i: [reply("00A?S")])
def test_alarm_reply_answers_and_is_an_event(pump_and_link: tuple[ScriptedPump, Link]) -> None:
    _, link = pump_and_link
    got = link.query("DIA", Shape.NUMBER)
    assert got.alarm is Alarm.STALLED
    event = link.events.get(timeout=1)
    assert event.kind is LinkEventKind.ALARM and event.solicited


def test_unsolicited_alarm_is_an_event(pump_and_link: tuple[ScriptedPump, Link]) -> None:
    pump, link = pump_and_link
    pump.send(reply("00A?B"))
    event = link.events.get(timeout=1)
    assert event.reply is not None and event.reply.alarm is Alarm.AIR
    assert not event.solicited
    assert link.status().prompt is Prompt.STOPPED  # and it never became a reply


@with_script(lambda data, i: [reply("00S0.500ML")] if i == 0 else [reply("00S4.699")])
def test_wrong_shape_fails_fast_then_the_query_is_retried(
    pump_and_link: tuple[ScriptedPump, Link],
) -> None:
    _pump, link = pump_and_link
    started = time.monotonic()
    with pytest.raises(ReplyMismatchError):
        link.transact("DIA", shape=Shape.NUMBER)
    assert time.monotonic() - started < FAST.reply_timeout_s
    assert link.query("DIA", Shape.NUMBER).data == "4.699"
    assert link.stats.drains == 1


@with_script(lambda data, i: [reply("01S4.699")] if i == 0 else [reply("00S4.699")])
def test_reply_for_another_address_is_not_ours(pump_and_link: tuple[ScriptedPump, Link]) -> None:
    pump, link = pump_and_link
    assert link.query("DIA", Shape.NUMBER).data == "4.699"
    assert pump.requests == [b"0DIA", b"0DIA"]


@with_script(lambda data, i: [])
def test_silence_is_retried_twice_then_times_out(
    pump_and_link: tuple[ScriptedPump, Link],
) -> None:
    pump, link = pump_and_link
    with pytest.raises(DriverTimeoutError):
        link.query("DIA", Shape.NUMBER)
    assert pump.requests == [b"0DIA"] * 3


@with_script(lambda data, i: [reply("00S"), reply("00S")] if i == 0 else [reply("00S4.699")])
def test_duplicate_reply_does_not_shift_the_next_one(
    pump_and_link: tuple[ScriptedPump, Link],
) -> None:
    _pump, link = pump_and_link
    link.status()
    # the duplicate arrives with nothing pending: a stray, never the reply to DIA
    eventually(lambda: link.stats.strays != 0, 1)
    assert link.stats.strays == 1
    assert link.query("DIA", Shape.NUMBER).data == "4.699"


@with_script(lambda data, i: [b"\x02\x0c00S2", b"\xff\x00garbage"] if i == 0 else [reply("00S")])
def test_partial_frame_and_garbage_then_recovery(pump_and_link: tuple[ScriptedPump, Link]) -> None:
    pump, link = pump_and_link
    assert link.status().prompt is Prompt.STOPPED
    assert len(pump.requests) == 2


def run_not_answered_first(data: bytes, index: int) -> list[bytes]:
    if data == b"0RUN" and index == 0:
        return []  # executed, but the reply is lost
    return [reply("00I")]


@with_script(run_not_answered_first)
def test_run_is_never_resent_when_the_status_check_shows_it_ran(
    pump_and_link: tuple[ScriptedPump, Link],
) -> None:
    pump, link = pump_and_link
    assert link.execute("RUN", done=lambda: link.status().prompt is Prompt.INFUSING) is None
    assert pump.requests.count(b"0RUN") == 1
    assert pump.requests == [b"0RUN", b"0"]


def test_port_loss_is_reported(pump_and_link: tuple[ScriptedPump, Link]) -> None:
    pump, link = pump_and_link
    link.status()
    pump.close()
    event = link.events.get(timeout=2)
    assert event.kind is LinkEventKind.LOST
    assert link.lost
    with pytest.raises(LinkLostError):
        link.status()


def test_cannot_open_is_link_lost() -> None:
    with pytest.raises(LinkLostError):
        Link("socket://127.0.0.1:1", timing=FAST)


@with_script(lambda data, i: [reply("00A?S"), reply("00S4.699")])
def test_auto_alarm_just_before_the_reply_is_not_the_reply(
    pump_and_link: tuple[ScriptedPump, Link],
) -> None:
    _, link = pump_and_link
    got = link.query("DIA", Shape.NUMBER)
    assert got.alarm is None and got.data == "4.699"
    event = link.events.get(timeout=1)
    assert event.reply is not None and event.reply.alarm is Alarm.STALLED
    assert not event.solicited


@with_script(lambda data, i: [reply("00A?S"), reply("00A?S")])
def test_auto_alarm_then_alarm_reply(pump_and_link: tuple[ScriptedPump, Link]) -> None:
    _, link = pump_and_link
    assert link.query("DIA", Shape.NUMBER).alarm is Alarm.STALLED
    first, second = link.events.get(timeout=1), link.events.get(timeout=1)
    assert (first.solicited, second.solicited) == (False, True)
