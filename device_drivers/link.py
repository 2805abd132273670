"""The injector link: the serial port, one reader thread, one command in flight.

injector-protocol.md §1, §4 and §5 (rules 2 and 3). The port is always opened with
``serial.serial_for_url`` so that the URL decides what is on the other end: a device path, a pty
path, ``socket://HOST:PORT`` or ``spy://…`` (passed through untouched).

Replies carry no sequence number, so each request declares the :class:`Shape` of the reply it
expects and the reader thread correlates by address and shape:

- an alarm packet (``nnA?x``) is always reported on :attr:`Link.events`; if a request is pending
  it is also that request's reply (the device did not execute it), otherwise it is an
  unsolicited Auto-Alarm;
- a reply for another address or of another shape fails the request at once
  (:class:`ReplyMismatchError`); the next request first drains the line;
- our own bytes echoed back are ignored; bytes that never form a frame are dropped by the codec.

pyserial 3.5 ignores ``inter_byte_timeout`` on Linux, so the link keeps its own deadlines with
``time.monotonic()``: the reply deadline, and the inter-byte gap after which the decoder drops a
partial frame (``Decoder.expire``).
"""

from __future__ import annotations

import enum
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import serial

from device_drivers.codec import (
    Command,
    Decoder,
    Frame,
    ProtocolError,
    Reply,
    ReplyError,
    Role,
    encode_safe,
    parse_reply,
)
from device_drivers.errors import (
    DeviceRefusedError,
    DriverError,
    DriverTimeoutError,
    LinkLostError,
    ReplyMismatchError,
)

log = logging.getLogger(__name__)

#: Consecutive empty reads (select readable, read() empty) tolerated before the port is lost.
_EMPTY_READS_TOLERATED = 3


@dataclass(frozen=True)
class LinkTiming:
    """Deadlines of the link (``acquisition.settings.InjectorSettings`` maps onto it)."""

    reply_timeout_s: float = 1.0
    inter_byte_timeout_s: float = 0.5
    #: After a timeout or mismatch, the next request waits for this much silence first.
    drain_quiet_s: float = 0.15
    #: How often the reader thread wakes up when the line is idle.
    read_poll_s: float = 0.02
    write_timeout_s: float = 1.0
    #: Queries are re-sent at most this many times (rule 2).
    query_retries: int = 2


#: A wire number: at most 4 digits, at least one, one optional decimal point.
_NUM = r"(?:\d{1,4}\.?\d{0,3}|\.\d{1,3})"


class Shape(enum.Enum):
    """The shape of the reply data a request expects (after the address and prompt)."""

    STATUS = re.compile(r"")  # a set command or an action: status only
    NUMBER = re.compile(rf"{_NUM}")  # DIA, SAF, XPR
    NUMBER_UNIT = re.compile(rf"{_NUM}(UM|MM|UH|MH|UL|ML)")  # RAT, VOL
    DIS = re.compile(rf"I{_NUM}W{_NUM}(UL|ML)")  # infused/withdrawn
    VERSION = re.compile(r"[A-Za-z][A-Za-z0-9]*V\d+(\.\d+)*")  # NE1000V3.928
    WORD = re.compile(r"INF|WDR")  # DIR
    LIMITS = re.compile(rf"{_NUM}[ ,]{_NUM}[ ,]{_NUM}")  # XPL query: "w a t"
    EVENT = re.compile(r"(\d{1,16},\d{1,12})?")  # XEV: "code,ms" or empty
    IDENTITY = re.compile(r"[A-Z][A-Z0-9-]{0,31}")  # XID: "GALACTO-SIM"

    def matches(self, reply: Reply) -> bool:
        """An error marker or an alarm fits any shape (they replace the data)."""
        if reply.alarm is not None or reply.error is not None:
            return True
        pattern: re.Pattern[str] = self.value
        return pattern.fullmatch(reply.data) is not None


class LinkEventKind(enum.Enum):
    ALARM = "alarm"  # an alarm packet (solicited: it was the reply to a request)
    LOST = "lost"  # the port went away


@dataclass(frozen=True)
class LinkEvent:
    kind: LinkEventKind
    monotonic_s: float
    reply: Reply | None = None
    solicited: bool = False
    detail: str = ""


@dataclass
class LinkStats:
    """Counters for diagnostics, the soak test and the benchmark."""

    requests: int = 0
    replies: int = 0
    timeouts: int = 0
    mismatches: int = 0
    strays: int = 0
    echoes: int = 0
    unparsable: int = 0
    alarms: int = 0
    drains: int = 0
    retries: int = 0


@dataclass
class _Pending:
    command: Command
    data: bytes
    shape: Shape
    address: int
    sent_s: float = 0.0
    done: bool = False
    reply: Reply | None = None
    mismatch: str = ""
    #: An alarm packet seen while waiting: the reply, or an Auto-Alarm just before it.
    alarm: Reply | None = None
    alarm_frame: Frame | None = None
    alarm_s: float = 0.0


@dataclass(frozen=True)
class Exchange:
    """One request and the reply matched to it (kept for tests and diagnostics)."""

    request: bytes
    reply: bytes
    sent_monotonic_s: float
    received_monotonic_s: float


def open_port(url: str, baud: int, timing: LinkTiming) -> serial.SerialBase:
    """Open ``url`` with ``serial_for_url`` (8N1); :class:`LinkLostError` if it cannot be."""
    try:
        return serial.serial_for_url(
            url,
            baudrate=baud,
            bytesize=serial.EIGHTBITS,
            parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE,
            timeout=timing.read_poll_s,
            write_timeout=timing.write_timeout_s,
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkLostError(f"cannot open injector port {url!r}: {exc}") from exc


def read_chunk(port: serial.SerialBase) -> bytes:
    """What has arrived, waiting at most the port timeout for the first byte."""
    data = port.read(1)
    if data:  # a frame is usually written at once: take the rest now
        waiting: int = port.in_waiting  # type: ignore[attr-defined]
        if waiting:
            data += port.read(waiting)
    return data


class Link:
    """The port, its reader thread and the request/reply correlation.

    :meth:`transact` is one attempt; :meth:`query`, :meth:`set` and :meth:`execute` add the
    retry rules of injector-protocol.md §5 rule 2.
    """

    def __init__(
        self,
        url: str,
        *,
        baud: int = 19200,
        address: int = 0,
        timing: LinkTiming | None = None,
        on_event: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self._on_event = on_event
        self.baud = baud
        self.address = address
        self.timing = timing or LinkTiming()
        self.events: queue.Queue[LinkEvent] = queue.Queue()
        self.stats = LinkStats()
        self.exchanges: deque[Exchange] = deque(maxlen=10_000)
        self._lock = threading.Lock()  # one command in flight
        self._cond = threading.Condition()  # guards _pending, _lost, the decoder
        self._pending: _Pending | None = None
        self._lost: str = ""
        self._needs_drain = False
        self._last_rx_s = 0.0
        self._closed = False
        self._decoder = Decoder(Role.HOST, safe=False)
        self._port = open_port(url, baud, self.timing)
        self._stop = threading.Event()
        self._reader = self._start_reader()

    # ---------------------------------------------------------------- lifecycle

    def _start_reader(self) -> threading.Thread:
        self._stop.clear()
        thread = threading.Thread(
            target=self._read_loop, args=(self._port,), name=f"injector-link {self.url}"
        )
        thread.daemon = True
        thread.start()
        return thread

    @property
    def lost(self) -> bool:
        return bool(self._lost)

    @property
    def dropped_bytes(self) -> int:
        """Bytes the decoder discarded (garbage, corrupted or partial frames)."""
        return self._decoder.dropped_bytes

    @property
    def safe(self) -> bool:
        return self._decoder.safe

    @safe.setter
    def safe(self, value: bool) -> None:
        with self._cond:
            self._decoder.safe = value

    def reconnect(self, url: str | None = None) -> None:
        """Reopen the port (at ``url`` if given: a pty gets a new path when it comes back)."""
        with self._lock:
            if self._closed:
                raise LinkLostError("the injector link is closed")
            self._shutdown_port()
            if url is not None:
                self.url = url
            try:
                port = open_port(self.url, self.baud, self.timing)
            except LinkLostError as exc:
                with self._cond:
                    self._lost = str(exc)
                raise
            with self._cond:
                self._port = port
                self._lost = ""
                self._decoder = Decoder(Role.HOST, safe=False)
                self._needs_drain = False
            self._reader = self._start_reader()
        log.info("injector link reopened on %s", self.url)

    def close(self) -> None:
        """Stop the reader thread and close the port. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._lost = self._lost or "closed"
            self._cond.notify_all()
        self._shutdown_port()

    def _shutdown_port(self) -> None:
        self._stop.set()
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(timeout=max(1.0, 10 * self.timing.read_poll_s))
        try:
            self._port.close()
        except (serial.SerialException, OSError) as exc:  # pragma: no cover - best effort
            log.debug("closing the injector port: %s", exc)

    # ---------------------------------------------------------------- reader thread

    def _read_loop(self, port: serial.SerialBase) -> None:
        inter_byte_s = self.timing.inter_byte_timeout_s
        empty_reads = 0
        while not self._stop.is_set():
            try:
                data = read_chunk(port)
                empty_reads = 0
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial closing the fd under a blocked read.
                if self._stop.is_set():
                    return
                # "readiness to read but returned no data": a pty reports this once when its
                # other end changes its settings; a vanished device reports it for good.
                if "returned no data" in str(exc) and empty_reads < _EMPTY_READS_TOLERATED:
                    empty_reads += 1
                    time.sleep(self.timing.read_poll_s)
                    continue
                self._mark_lost(f"port error: {exc}")
                return
            now = time.monotonic()
            with self._cond:
                if data:
                    self._last_rx_s = now
                    frames = self._decoder.feed(data)
                elif self._decoder.pending and now - self._last_rx_s > inter_byte_s:
                    frames = self._decoder.expire()
                else:
                    continue
                for frame in frames:
                    self._route(frame, now)

    def _mark_lost(self, why: str) -> None:
        with self._cond:
            self._lost = why
            self._cond.notify_all()
        log.warning("injector link lost: %s", why)
        self._emit(LinkEvent(LinkEventKind.LOST, time.monotonic(), detail=why))

    def _emit(self, event: LinkEvent) -> None:
        self.events.put(event)
        if self._on_event is not None:
            self._on_event()

    def _route(self, frame: Frame, now: float) -> None:
        """Match one frame to the pending request, or route it as an event (under _cond)."""
        pending = self._pending if self._pending is not None and not self._pending.done else None
        if pending is not None and frame.data == pending.data:
            self.stats.echoes += 1
            return
        try:
            reply = parse_reply(frame.data)
        except ProtocolError as exc:
            self.stats.unparsable += 1
            log.debug("injector link: dropped unparsable frame: %s", exc)
            return
        if reply.address != self.address:
            self.stats.strays += 1
            if pending is not None:
                self._fail(pending, f"reply for address {reply.address}")
            return
        if reply.alarm is not None:
            self.stats.alarms += 1
            if pending is None:
                self._emit_alarm(reply, now, solicited=False)
            elif pending.alarm is None:
                # Either the reply (the command was not executed) or an Auto-Alarm written
                # just before the reply: decided by what follows within drain_quiet_s.
                pending.alarm, pending.alarm_frame, pending.alarm_s = reply, frame, now
                self._cond.notify_all()
            else:
                self._emit_alarm(pending.alarm, pending.alarm_s, solicited=False)
                pending.alarm = None
                self._emit_alarm(reply, now, solicited=True)
                self._answer(pending, reply, frame, now)
            return
        if pending is None:
            self.stats.strays += 1
            log.debug("injector link: stray reply %r", frame.data)
            return
        self._release_alarm(pending)
        if not pending.shape.matches(reply):
            self._fail(pending, f"reply {frame.data!r} does not fit {pending.shape.name}")
            return
        self._answer(pending, reply, frame, now)

    def _release_alarm(self, pending: _Pending) -> None:
        """A non-alarm frame followed the alarm: that alarm was an Auto-Alarm."""
        if pending.alarm is not None:
            self._emit_alarm(pending.alarm, pending.alarm_s, solicited=False)
            pending.alarm = None

    def _emit_alarm(self, reply: Reply, at_s: float, *, solicited: bool) -> None:
        self._emit(LinkEvent(LinkEventKind.ALARM, at_s, reply=reply, solicited=solicited))

    def _settle_alarm(self, pending: _Pending, now: float) -> None:
        """Nothing followed the alarm seen while waiting: it is the reply."""
        assert pending.alarm is not None and pending.alarm_frame is not None
        reply, frame = pending.alarm, pending.alarm_frame
        pending.alarm = None
        self._emit_alarm(reply, pending.alarm_s, solicited=True)
        self._answer(pending, reply, frame, now)

    def _answer(self, pending: _Pending, reply: Reply, frame: Frame, now: float) -> None:
        pending.reply = reply
        pending.done = True
        self.stats.replies += 1
        self.exchanges.append(Exchange(pending.data, frame.data, pending.sent_s, now))
        self._cond.notify_all()

    def _fail(self, pending: _Pending, why: str) -> None:
        self._release_alarm(pending)
        self.stats.mismatches += 1
        pending.mismatch = why
        pending.done = True
        self._cond.notify_all()

    # ---------------------------------------------------------------- one attempt

    def transact(self, name: str = "", args: str = "", shape: Shape = Shape.STATUS) -> Reply:
        """Send one command and wait for its reply: one attempt, no retry.

        Raises :class:`DriverTimeoutError`, :class:`ReplyMismatchError` or
        :class:`LinkLostError`. An alarm or error reply is returned, not raised.
        """
        command = Command(name, args, address=self.address)
        data = command.encode_data()
        with self._lock:
            if self._needs_drain:
                self._drain()
            pending = _Pending(command, data, shape, self.address, sent_s=time.monotonic())
            with self._cond:
                self._raise_if_lost()
                self._pending = pending
            try:
                self._port.write(encode_safe(data))
            except (serial.SerialException, OSError) as exc:
                with self._cond:
                    self._pending = None
                self._mark_lost(f"write failed: {exc}")
                raise LinkLostError(f"injector link lost: {exc}") from exc
            self.stats.requests += 1
            deadline = pending.sent_s + self.timing.reply_timeout_s
            quiet_s = self.timing.drain_quiet_s
            with self._cond:
                while not pending.done and not self._lost:
                    now = time.monotonic()
                    if (
                        pending.alarm is not None
                        and min(pending.alarm_s + quiet_s, deadline) <= now
                    ):
                        self._settle_alarm(pending, now)
                        break
                    if now >= deadline:
                        break
                    wake = deadline
                    if pending.alarm is not None:
                        wake = min(wake, pending.alarm_s + quiet_s)
                    self._cond.wait(max(wake - now, 0.001))
                self._pending = None
                self._raise_if_lost()
            if not pending.done:
                self.stats.timeouts += 1
                self._needs_drain = True
                raise DriverTimeoutError(
                    f"no reply to {data!r} within {self.timing.reply_timeout_s} s"
                )
            if pending.mismatch:
                self._needs_drain = True
                raise ReplyMismatchError(f"request {data!r}: {pending.mismatch}")
            assert pending.reply is not None
            return pending.reply

    def _raise_if_lost(self) -> None:
        if self._lost:
            raise LinkLostError(f"injector link lost: {self._lost}")

    def _drain(self) -> None:
        """Wait for the line to be quiet, dropping what arrives (caller holds ``_lock``)."""
        self.stats.drains += 1
        quiet_s = self.timing.drain_quiet_s
        give_up = time.monotonic() + self.timing.reply_timeout_s
        with self._cond:
            while not self._lost:
                now = time.monotonic()
                silent_for = now - self._last_rx_s
                if (silent_for >= quiet_s and not self._decoder.pending) or now >= give_up:
                    break
                self._cond.wait(max(quiet_s - silent_for, self.timing.read_poll_s))
            self._decoder.reset()
        self._needs_drain = False

    # ---------------------------------------------------------------- the retry rules

    def query(self, name: str = "", shape: Shape = Shape.STATUS, args: str = "") -> Reply:
        """A query or status request: re-sent at most ``query_retries`` times.

        A ``?COM`` (the device saw a corrupted packet) is retried like a timeout.
        """
        attempts = self.timing.query_retries + 1
        last: DriverError | None = None
        for attempt in range(attempts):
            if attempt:
                self.stats.retries += 1
            try:
                reply = self.transact(name, args, shape)
            except (DriverTimeoutError, ReplyMismatchError) as exc:
                last = exc
                continue
            if reply.error is ReplyError.INVALID_PACKET:
                last = DeviceRefusedError(f"{name or 'status'}: device reports ?COM")
                continue
            return reply
        assert last is not None
        if isinstance(last, DriverTimeoutError):
            raise last
        what = name or "status"
        raise DriverTimeoutError(f"{what}: no valid reply in {attempts} attempts") from last

    def status(self) -> Reply:
        """The empty command: the device's prompt (or its pending alarm)."""
        return self.query("", Shape.STATUS)

    def set(
        self,
        name: str,
        args: str,
        *,
        readback: Callable[[], bool],
    ) -> Reply | None:
        """A set command, re-sent only after ``readback()`` showed the value is not yet set.

        ``readback`` queries the value (with :meth:`query`) and returns True when it already
        holds what was asked; it runs only when the outcome of the set was uncertain. Returns
        the reply, or None when the read-back showed the value set.
        """
        return self._once_unless(name, args, done=readback)

    def execute(self, name: str, *, done: Callable[[], bool]) -> Reply | None:
        """An action (``RUN``, ``STP``, ``XAR``…): never re-sent without ``done()`` (a status
        check) saying it did not happen. ``RUN`` in particular is never re-sent blindly."""
        return self._once_unless(name, "", done=done)

    def _once_unless(self, name: str, args: str, *, done: Callable[[], bool]) -> Reply | None:
        attempts = self.timing.query_retries + 1
        last: DriverError | None = None
        for attempt in range(attempts):
            if attempt:
                self.stats.retries += 1
                if done():
                    return None  # the first attempt had been executed
            try:
                reply = self.transact(name, args, Shape.STATUS)
            except (DriverTimeoutError, ReplyMismatchError) as exc:
                last = exc
                continue
            if reply.error is ReplyError.INVALID_PACKET:
                last = DeviceRefusedError(f"{name}: device reports ?COM")
                continue
            return reply
        assert last is not None
        if isinstance(last, DriverTimeoutError):
            raise last
        raise DriverTimeoutError(f"{name}: no valid reply in {attempts} attempts") from last
