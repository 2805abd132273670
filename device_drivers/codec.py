"""The injector wire protocol as pure functions: framing, CRC, grammar, numbers. No I/O.

New Era Pump Systems RS-232 protocol (NE-500/1000/1600 family), Basic and Safe mode, plus the
galacto ``X…`` extension commands; see ``docs/injector-protocol.md``.

Safe mode frame::

    STX(0x02) LEN DATA... CRC_HI CRC_LO ETX(0x03)     LEN = len(DATA) + 4

CRC-16/XMODEM over DATA (``binascii.crc_hqx(DATA, 0)``). There is no byte stuffing, so STX and
ETX may occur inside the CRC: the decoder is length-driven and, on any inconsistency, drops
exactly one byte and rescans for STX.

Basic mode: host -> pump ``DATA CR``; pump -> host ``STX DATA ETX``.

Both ends use this module: the driver (host role) and the simulator (pump role).
"""

from __future__ import annotations

import binascii
import enum
import math
import re
from dataclasses import dataclass

from device_drivers.errors import DeviceRefusedError

STX = 0x02
ETX = 0x03
CR = 0x0D

#: Smallest legal LEN byte: one data byte + LEN + CRC(2) + ETX.
MIN_LEN = 5
#: Largest data a Safe frame can carry (LEN is one byte).
MAX_DATA = 255 - 4
#: The receive buffer never holds more than this; older bytes are dropped.
MAX_BUFFER = 1024


class ProtocolError(ValueError):
    """A value cannot be expressed on the wire, or a reply does not follow the grammar."""


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM: poly 0x1021, init 0, not reflected, no final XOR."""
    return binascii.crc_hqx(data, 0)


def encode_safe(data: bytes) -> bytes:
    """Frame ``data`` for Safe mode."""
    if not 1 <= len(data) <= MAX_DATA:
        raise ProtocolError(f"Safe-mode data must be 1..{MAX_DATA} bytes, got {len(data)}")
    crc = crc16_xmodem(data)
    return bytes((STX, len(data) + 4)) + data + bytes((crc >> 8, crc & 0xFF, ETX))


def encode_basic_request(data: bytes) -> bytes:
    """A Basic-mode command from the host: ``DATA CR``."""
    return data + b"\r"


def encode_basic_reply(data: bytes) -> bytes:
    """A Basic-mode reply from the pump: ``STX DATA ETX``."""
    return bytes((STX,)) + data + bytes((ETX,))


# --------------------------------------------------------------------------------------------
# Numbers: at most 4 digits and one decimal point, at most 3 decimals ("4.699", "26.59", "1000").


def format_number(value: float) -> str:
    """Format ``value`` the way the pump accepts it, with the most precision that fits.

    Raises :class:`ProtocolError` when the value is negative or needs more than 4 integer digits.
    """
    if math.isnan(value) or value < 0:
        raise ProtocolError(f"not a wire number: {value!r}")
    for decimals in (3, 2, 1, 0):
        text = f"{value:.{decimals}f}"
        if len(text.replace(".", "")) <= 4:
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            return text or "0"
    raise ProtocolError(f"{value!r} needs more than 4 digits")


_NUMBER = re.compile(r"\d{1,4}|\d{0,3}\.\d{1,3}|\d{1,4}\.")


def parse_number(text: str) -> float:
    """Parse a wire number; raise :class:`ProtocolError` if it breaks the 4-digit format."""
    if not _NUMBER.fullmatch(text) or len(text.replace(".", "")) > 4:
        raise ProtocolError(f"not a wire number: {text!r}")
    return float(text)


# --------------------------------------------------------------------------------------------
# Grammar.


class Prompt(enum.Enum):
    """The pump's state letter after the address."""

    INFUSING = "I"
    WITHDRAWING = "W"
    STOPPED = "S"
    PAUSED = "P"
    TIMED_PAUSE = "T"
    USER_WAIT = "U"
    PURGING = "X"


class Alarm(enum.Enum):
    """The letter after ``A?`` in an alarm reply (core, then galacto extensions)."""

    RESET = "R"
    STALLED = "S"
    COMMS_TIMEOUT = "T"
    PROGRAM_ERROR = "E"
    OUT_OF_RANGE = "O"
    OVER_PRESSURE = "P"
    AIR = "B"
    OCCLUSION = "C"
    SYRINGE_DETACHED = "D"


class ReplyError(enum.Enum):
    """Error markers in the data after the prompt."""

    UNKNOWN_COMMAND = "?"
    NOT_APPLICABLE = "?NA"
    OUT_OF_RANGE = "?OOR"
    INVALID_PACKET = "?COM"
    IGNORED = "?IGN"


@dataclass(frozen=True)
class Reply:
    """One decoded pump response: ``address(2 digits) status [data]``."""

    address: int
    prompt: Prompt | None
    alarm: Alarm | None
    error: ReplyError | None
    data: str

    @property
    def is_alarm(self) -> bool:
        return self.alarm is not None


def _ascii(data: bytes, what: str) -> str:
    """The text of a frame's data; :class:`ProtocolError` when it is not ASCII."""
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"non-ASCII {what} {data!r}") from exc


_REPLY = re.compile(
    r"(?P<addr>\d\d)(?:A\?(?P<alarm>[A-Z])|(?P<prompt>[IWSPTUX]))(?P<data>.*)", re.S
)
_ERRORS = sorted(ReplyError, key=lambda e: -len(e.value))


def parse_reply(data: bytes) -> Reply:
    """Parse the data of one reply frame; :class:`ProtocolError` when it breaks the grammar."""
    text = _ascii(data, "reply")
    m = _REPLY.fullmatch(text)
    if m is None:
        raise ProtocolError(f"reply does not follow the grammar: {text!r}")
    alarm = None
    if m["alarm"] is not None:
        try:
            alarm = Alarm(m["alarm"])
        except ValueError as exc:
            raise ProtocolError(f"unknown alarm letter in {text!r}") from exc
    prompt = Prompt(m["prompt"]) if m["prompt"] is not None else None
    payload = m["data"]
    error = None
    if payload.startswith("?"):
        for candidate in _ERRORS:
            if payload == candidate.value:
                error = candidate
                break
        else:
            raise ProtocolError(f"unknown error marker in {text!r}")
        payload = ""
    return Reply(int(m["addr"]), prompt, alarm, error, payload)


def format_reply(
    address: int,
    *,
    prompt: Prompt | None = None,
    alarm: Alarm | None = None,
    error: ReplyError | None = None,
    data: str = "",
) -> bytes:
    """The data of a reply frame (pump side)."""
    if (prompt is None) == (alarm is None):
        raise ProtocolError("a reply carries exactly one of prompt or alarm")
    status = f"A?{alarm.value}" if alarm is not None else prompt.value  # type: ignore[union-attr]
    tail = error.value if error is not None else data
    return f"{address:02d}{status}{tail}".encode("ascii")


@dataclass(frozen=True)
class Command:
    """One host command: ``[address] [NAME [args]]``. An empty name is a status query."""

    name: str = ""
    args: str = ""
    address: int | None = None

    def encode_data(self) -> bytes:
        if self.address is not None and not 0 <= self.address <= 99:
            raise ProtocolError(f"address must be 0..99, got {self.address}")
        if self.args and not self.name:
            raise ProtocolError("arguments without a command name")
        addr = "" if self.address is None else str(self.address)
        return f"{addr}{self.name}{self.args}".encode("ascii")


_COMMAND = re.compile(r"(?P<addr>\d{1,2})?(?P<name>[A-Z]{3})?(?P<args>.*)", re.S)


def parse_command(data: bytes) -> Command:
    """Parse the data of one host command (pump side)."""
    text = _ascii(data, "command")
    m = _COMMAND.fullmatch(text)
    if m is None or (m["name"] is None and m["args"]):
        raise ProtocolError(f"command does not follow the grammar: {text!r}")
    return Command(
        name=m["name"] or "",
        args=m["args"] or "",
        address=int(m["addr"]) if m["addr"] is not None else None,
    )


# --------------------------------------------------------------------------------------------
# Decoding a byte stream.


class Role(enum.Enum):
    HOST = "host"  # decodes pump replies
    PUMP = "pump"  # decodes host commands


@dataclass(frozen=True)
class Frame:
    """The data of one frame and how it was framed."""

    data: bytes
    safe: bool


class Decoder:
    """Incremental decoder: ``feed(bytes) -> [Frame]``.

    Safe frames are accepted in both modes (the reply to ``SAF`` comes in the new mode, and a
    Safe-framed ``SAF`` must be accepted in Basic mode). In Basic mode the host also accepts
    ``STX printable… ETX`` and the pump ``printable… CR``.

    Resynchronisation: any frame that fails (LEN < 5, no ETX at the end, bad CRC) costs exactly
    one byte, then the scan resumes at the next STX. A frame whose declared length has not yet
    arrived is kept until :meth:`expire` (the link calls it after the inter-byte gap), which
    drops its first byte and rescans what follows. The buffer never exceeds ``MAX_BUFFER``.
    """

    def __init__(self, role: Role, *, safe: bool = False) -> None:
        self.role = role
        self.safe = safe
        self._buf = bytearray()
        self.dropped_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        if len(self._buf) > MAX_BUFFER:
            excess = len(self._buf) - MAX_BUFFER
            del self._buf[:excess]
            self.dropped_bytes += excess
        return self._scan()

    def expire(self) -> list[Frame]:
        """No more bytes are coming for a partial frame: drop it byte by byte and rescan."""
        frames: list[Frame] = []
        while self._buf:
            del self._buf[:1]
            self.dropped_bytes += 1
            frames += self._scan()
        return frames

    def reset(self) -> None:
        self.dropped_bytes += len(self._buf)
        self._buf.clear()

    def _drop(self, count: int) -> None:
        del self._buf[:count]
        self.dropped_bytes += count

    def _scan(self) -> list[Frame]:
        frames: list[Frame] = []
        buf = self._buf
        while buf:
            if self.role is Role.PUMP and not self.safe and buf[0] != STX:
                # Basic-mode command: printable bytes up to CR.
                end = buf.find(CR)
                stx = buf.find(STX)
                if stx != -1 and (end == -1 or stx < end):
                    self._drop(stx)
                    continue
                if end == -1:
                    if any(not 0x20 <= b < 0x7F for b in buf):
                        self._drop(1)
                        continue
                    break
                line = bytes(buf[:end])
                self._drop(end + 1)
                if all(0x20 <= b < 0x7F for b in line):
                    frames.append(Frame(line, safe=False))
                continue
            start = buf.find(STX)
            if start == -1:
                self._drop(len(buf))
                break
            if start:
                self._drop(start)
            if len(buf) < 2:
                break
            if self.role is Role.HOST and not self.safe and 0x20 <= buf[1] < 0x7F:
                result = self._basic_reply()
            else:
                result = self._safe_frame()
            if result is None:
                break
            if isinstance(result, Frame):
                frames.append(result)
        return frames

    def _safe_frame(self) -> Frame | bool | None:
        """Frame, False (dropped one byte), or None (need more bytes)."""
        buf = self._buf
        length = buf[1]
        if length < MIN_LEN:
            self._drop(1)
            return False
        total = length + 1
        if len(buf) < total:
            return None
        data = bytes(buf[2 : total - 3])
        crc = (buf[total - 3] << 8) | buf[total - 2]
        if buf[total - 1] != ETX or crc16_xmodem(data) != crc:
            self._drop(1)
            return False
        self._drop(total)
        return Frame(data, safe=True)

    def _basic_reply(self) -> Frame | bool | None:
        buf = self._buf
        for i in range(1, len(buf)):
            b = buf[i]
            if b == ETX:
                data = bytes(buf[1:i])
                self._drop(i + 1)
                return Frame(data, safe=False)
            if not 0x20 <= b < 0x7F:
                self._drop(1)
                return False
        return None


# ------------------------------------------------------------------------------------------
# Reply data of the core commands (the driver reads them back).

#: What galacto's own simulator answers to ``XID`` (a real device answers ``?``): a driver that
#: reads it is not talking to a patient's injector.
SIMULATOR_IDENTITY = "GALACTO-SIM"
#: ``VOL``/``DIS`` units → mL per unit; ``RAT`` units → mL/min per unit.
_UNIT_ML = {"UL": 0.001, "ML": 1.0}
_RATE_ML_MIN = {"UM": 0.001, "MM": 1.0, "UH": 0.001 / 60, "MH": 1.0 / 60}
_NUMBER_UNIT = re.compile(r"(?P<number>[\d.]+)(?P<unit>[A-Z]{2})")
_DIS = re.compile(r"I(?P<infused>[\d.]+)W(?P<withdrawn>[\d.]+)(?P<unit>UL|ML)")


def parse_rate_ml_min(data: str) -> float:
    """``"300.0UM"`` → 0.3."""
    m = _NUMBER_UNIT.fullmatch(data)
    if m is None or m["unit"] not in _RATE_ML_MIN:
        raise DeviceRefusedError(f"not a rate: {data!r}")
    return parse_number(m["number"]) * _RATE_ML_MIN[m["unit"]]


def parse_infused_ml(data: str) -> float:
    """``DIS`` reply ``"I0.020W0.000ML"`` → 0.02 (infused)."""
    m = _DIS.fullmatch(data)
    if m is None:
        raise DeviceRefusedError(f"not a DIS reply: {data!r}")
    return parse_number(m["infused"]) * _UNIT_ML[m["unit"]]
