"""The simulated pump's end of the wire: a byte stream in, frames to the pump, replies out.

:class:`PumpWire` sits between a transport (the pty or socket of :mod:`simulators.serial_port`,
or the in-process port of ``injsim://``) and the pure :class:`~simulators.injector_pump.
InjectorPump`. It decodes the host's bytes one at a time (so that a bad packet is answered where
it ends), answers a complete Safe packet whose CRC fails with ``?COM``, discards a partial packet
after the 0.5 s inter-byte gap, sends the pump's Auto-Alarms at once, and plays the link faults
(domain/injector-protocol.md §8) on the way out: no reply, a dead TX line, a late reply, a
partial frame, a trickle, garbage, bit flips, a wrong length byte, a missing ETX, a duplicate, a
wrong address, a reply of the wrong shape, the host's bytes echoed. Time is given (``now``, in
seconds of the transport's clock); nothing here reads a clock.
"""

from __future__ import annotations

import binascii
import logging
import random
from collections.abc import Callable
from typing import Protocol

from device_drivers.codec import ETX, STX, Decoder, Frame, ReplyError, Role, encode_safe
from simulators.injector_faults import LINK_FAULTS
from simulators.injector_pump import EventKind, InjectorPump, PumpReply

log = logging.getLogger(__name__)

#: Faults that act once on the wire's next matching exchange.
#: (Every link fault but those that last — no reply ever, a vanished port — and those acted on
#: elsewhere: the CRC that spells STX/ETX, the alarm interleaved by the pump.)
WIRE_ONE_SHOTS = frozenset(LINK_FAULTS) - {
    "no_reply_forever",
    "stx_etx_in_crc",
    "auto_alarm_interleaved",
    "port_vanish",
}


class Transport(Protocol):
    """Where the wire's bytes go."""

    def send(self, data: bytes, delay_s: float = 0.0, gap_s: float = 0.0) -> None:
        """Write ``data`` after ``delay_s`` and at least ``gap_s`` after the previous write."""


class PumpWire:
    """The stream side of one simulated pump (see the module docstring).

    ``on_port_fault(name)`` hears a fault of the port itself (``port_vanish``). Not thread-safe:
    its owner serialises the calls.
    """

    def __init__(
        self,
        pump: InjectorPump,
        transport: Transport,
        *,
        rng: random.Random,
        on_port_fault: Callable[[str], None],
    ) -> None:
        self._pump = pump
        self._transport = transport
        self._rng = rng
        self._on_port_fault = on_port_fault
        self._decoder = Decoder(Role.PUMP, safe=pump.safe_mode)
        self._mirror = bytearray()  # raw input not yet consumed, for ?COM detection
        self._one_shot: list[str] = []
        self._last_rx_s = 0.0
        #: ``no_reply_forever`` fired: nothing is ever written again (a dead TX line).
        self.silent = False

    @property
    def pending(self) -> int:
        """Bytes of a partial packet waiting for the rest (or the inter-byte gap)."""
        return self._decoder.pending

    def reset(self) -> None:
        """A partial packet in transit is lost (link lost, host reconnected, pump rebooted)."""
        self._decoder.reset()
        self._mirror.clear()

    # ------------------------------------------------------------------ receiving

    def receive(self, data: bytes, now: float) -> None:
        """Feed the decoder one byte at a time, so that a bad packet is answered where it ends."""
        self._last_rx_s = now
        for i in range(len(data)):
            byte = data[i : i + 1]
            self._mirror += byte
            frames = self._decoder.feed(byte)
            if frames:
                pending = self._decoder.pending
                self._mirror = bytearray(self._mirror[-pending:]) if pending else bytearray()
                for frame in frames:
                    self._on_frame(frame)
            else:
                self._detect_bad_packet()

    def expire(self, now: float) -> None:
        """Discard a partial packet after the inter-byte gap (the pump's 0.5 s)."""
        gap_s = self._pump.params.inter_byte_timeout_s
        if self._decoder.pending and now - self._last_rx_s >= gap_s:
            frames = self._decoder.expire()
            self._mirror.clear()
            for frame in frames:
                self._on_frame(frame)

    def _detect_bad_packet(self) -> None:
        """A complete Safe packet (STX LEN … ETX where LEN says) whose CRC fails → ``?COM``.

        ``_mirror`` holds the input since the last frame; it is scanned like the decoder does
        (drop one byte, rescan for STX) and never grows past one maximal packet.
        """
        mirror = self._mirror
        while True:
            start = mirror.find(STX)
            if start < 0:
                mirror.clear()
                return
            del mirror[:start]
            if len(mirror) < 2:
                return
            length = mirror[1]
            if length >= 5 and len(mirror) < length + 1:
                return
            if length >= 5 and mirror[length] == ETX:
                data = bytes(mirror[2 : length - 2])
                crc = (mirror[length - 2] << 8) | mirror[length - 1]
                if binascii.crc_hqx(data, 0) != crc:
                    log.info("injector simulator: bad packet, answering ?COM")
                    mirror.clear()
                    self._decoder.reset()
                    self.send_reply(self._pump.error_reply(ReplyError.INVALID_PACKET))
                    return
            del mirror[:1]

    def _on_frame(self, frame: Frame) -> None:
        if self._take_one_shot("echo"):
            raw = encode_safe(frame.data) if frame.safe else frame.data + b"\r"
            self._send(raw)
        if self._take_one_shot("bitflip_request"):
            self.send_reply(self._pump.error_reply(ReplyError.INVALID_PACKET))
            return
        reply = self._pump.respond(frame)
        self._decoder.safe = self._pump.safe_mode  # SAF n switches the framing
        self.dispatch_events()  # an Auto-Alarm raised by the command goes out first
        if reply is not None:
            self.send_reply(reply)

    # ------------------------------------------------------------------ sending

    def dispatch_events(self) -> None:
        """Act on what the pump did on its own: Auto-Alarms out at once, a power-up loses the
        partial input, a fault of the wire is armed, a fault of the port handed on."""
        for event in self._pump.events():
            if event.kind is EventKind.AUTO_ALARM:
                self._send(encode_safe(event.data))
            elif event.kind is EventKind.POWER_UP:
                self.reset()
            elif event.name == "no_reply_forever":
                self.silent = True
            elif event.name in WIRE_ONE_SHOTS:
                self._one_shot.append(event.name)
            else:
                self._on_port_fault(event.name)

    def send_reply(self, reply: PumpReply) -> None:
        """Write one reply, through whatever link faults are pending."""
        if self.silent or self._take_one_shot("no_reply"):
            return
        data = reply.data
        if self._take_one_shot("wrong_address"):
            other = (self._pump.params.address + 1) % 100
            data = f"{other:02d}".encode() + data[2:]
        if self._take_one_shot("wrong_shape"):
            head = data[:5] if data[2:4] == b"A?" else data[:3]
            data = head + b"I0.000W0.000ML" if data == head else head
        frame = PumpReply(data, reply.safe).frame()
        if self._take_one_shot("bitflip_reply"):
            lo, hi = (2, len(frame) - 1) if self._pump.safe_mode else (1, len(frame) - 1)
            index = self._rng.randrange(lo, hi)
            flipped = bytearray(frame)
            flipped[index] ^= 1 << self._rng.randrange(8)
            frame = bytes(flipped)
        if self._take_one_shot("wrong_length", safe_only=True):
            frame = frame[:1] + bytes(((frame[1] + 1) & 0xFF,)) + frame[2:]
        if self._take_one_shot("missing_etx"):
            frame = frame[:-1]
        if self._take_one_shot("partial_frame"):
            frame = frame[: len(frame) // 2]
        if self._take_one_shot("duplicate_reply"):
            frame = frame + frame
        p = self._pump.params
        if self._take_one_shot("garbage"):
            count = self._rng.randint(1, p.garbage_max_bytes)
            frame = bytes(self._rng.randrange(256) for _ in range(count)) + frame
        delay_s = p.late_reply_s if self._take_one_shot("late_reply") else 0.0
        if self._take_one_shot("trickle"):
            self._send(frame[:1], delay_s)
            for i in range(1, len(frame)):
                gap_s = self._rng.uniform(p.trickle_min_s, p.trickle_max_s)
                self._send(frame[i : i + 1], gap_s=gap_s)
            return
        self._send(frame, delay_s)

    def _send(self, data: bytes, delay_s: float = 0.0, gap_s: float = 0.0) -> None:
        if not self.silent:
            self._transport.send(data, delay_s, gap_s)

    def _take_one_shot(self, name: str, *, safe_only: bool = False) -> bool:
        if name in self._one_shot and (self._pump.safe_mode or not safe_only):
            self._one_shot.remove(name)
            return True
        return False
