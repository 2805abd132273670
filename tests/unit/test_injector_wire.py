"""The simulated pump's end of the wire (simulators/injector_wire.py) on its own: bytes in,
bytes out to a list, time given by the test."""

from __future__ import annotations

import random

from device_drivers.codec import encode_basic_request, encode_safe
from simulators.injector_pump import InjectorPump
from simulators.injector_wire import PumpWire


class Recorder:
    """A transport that keeps what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, float, float]] = []
        self.port_faults: list[str] = []

    def send(self, data: bytes, delay_s: float = 0.0, gap_s: float = 0.0) -> None:
        self.sent.append((data, delay_s, gap_s))

    def out(self) -> bytes:
        return b"".join(data for data, _, _ in self.sent)


def wire(**pump_kwargs: object) -> tuple[PumpWire, InjectorPump, Recorder]:
    rng = random.Random(0)
    pump = InjectorPump(rng=rng, power_up_alarm=False, **pump_kwargs)  # type: ignore[arg-type]
    transport = Recorder()
    return (
        PumpWire(pump, transport, rng=rng, on_port_fault=transport.port_faults.append),
        pump,
        transport,
    )


def test_a_request_split_across_chunks_is_answered_once_whole() -> None:
    w, _, t = wire()
    frame = encode_basic_request(b"0VER")
    w.receive(frame[:2], now=0.0)
    assert t.sent == [] and w.pending == 2
    w.receive(frame[2:], now=0.1)
    assert t.out() == b"\x0200SNE1000X1V3.928\x03"


def test_a_bad_crc_is_answered_com_where_the_packet_ends() -> None:
    w, _, t = wire()
    w.receive(encode_safe(b"0SAF2"), now=0.0)  # Safe mode
    t.sent.clear()
    bad = bytearray(encode_safe(b"0RUN"))
    bad[-2] ^= 0x01
    w.receive(bytes(bad), now=0.0)
    assert t.out() == encode_safe(b"00S?COM")


def test_a_partial_packet_is_discarded_after_the_inter_byte_gap() -> None:
    w, pump, t = wire()
    w.receive(b"\x02\x08", now=10.0)
    w.expire(now=10.0 + pump.params.inter_byte_timeout_s / 2)
    assert w.pending == 2
    w.expire(now=10.0 + pump.params.inter_byte_timeout_s)
    assert w.pending == 0 and t.sent == []


def test_link_faults_act_on_the_next_reply_only() -> None:
    w, pump, t = wire()
    pump.add_fault("wrong_address")
    pump.add_fault("late_reply")
    w.dispatch_events()
    w.receive(encode_basic_request(b"0"), now=0.0)
    ((data, delay_s, _),) = t.sent
    assert data == b"\x0201S\x03" and delay_s == pump.params.late_reply_s
    t.sent.clear()
    w.receive(encode_basic_request(b"0"), now=0.0)
    assert t.sent == [(b"\x0200S\x03", 0.0, 0.0)]


def test_a_dead_tx_line_sends_nothing_and_a_port_fault_is_handed_on() -> None:
    w, pump, t = wire()
    pump.add_fault("port_vanish")
    pump.add_fault("no_reply_forever")
    w.dispatch_events()
    assert t.port_faults == ["port_vanish"]
    w.receive(encode_basic_request(b"0XAR"), now=0.0)
    assert t.sent == [] and pump.state.armed  # executed, never answered
