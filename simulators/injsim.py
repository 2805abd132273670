"""``injsim://NAME``: the driver against the simulated pump in the same process, no pty.

As python-can's virtual bus and pyserial's own ``loop://`` do, a pyserial URL handler
(:mod:`simulators.protocol_injsim`, found through ``serial.protocol_handler_packages``) opens an
in-process line to an :class:`~simulators.injector.InjectorSimulator`. The driver is the real
driver and its link the real link: only the transport differs. What the host writes is handed to
the simulator's wire at once, and what the simulator sends is read back when it is due; there is
no I/O thread: the host's reads give the simulator its turns (timers, the real-time watchdog).

Only the tests and ``galacto sim`` / ``galacto demo`` call :func:`register`: a controller never
finds ``injsim://`` unless one of them put it there.

URL: ``injsim://NAME[?option=value&…]``. ``NAME`` is a simulator :func:`add`-ed under that name
(a test that holds it and owns its clock), or else one made from the options and kept under that
name for the life of the process (a device left powered: reopening the URL finds the same pump):

* ``clock=manual``: simulated time moves only by :meth:`~InjectorSimulator.advance` (default:
  real time × ``time_scale``); ``step_s=S``: and ``S`` simulated seconds per chunk the host
  writes (the pump's time follows the conversation, never the wall clock);
* ``time_scale=X``, ``seed=N``, ``syringe=1ml|3ml``, ``plain=1``, ``fault=SPEC`` (repeatable).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable

import serial

from simulators.injector import InjectorSimulator
from simulators.injector_faults import InjectorSimError
from simulators.injector_physics import SimParams
from simulators.serial_port import PortDevice, TranscriptLine

SCHEME = "injsim"
#: The package in which pyserial finds ``protocol_injsim``.
HANDLER_PACKAGE = "simulators"
#: How often a blocked read gives the simulator a turn.
_SERVICE_S = 0.02

_simulators: dict[str, InjectorSimulator] = {}
_registry_lock = threading.Lock()


def register() -> None:
    """Let ``serial.serial_for_url`` open ``injsim://`` URLs (idempotent)."""
    if HANDLER_PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(HANDLER_PACKAGE)


def add(name: str, simulator: InjectorSimulator) -> str:
    """Make ``simulator`` the one ``injsim://NAME`` opens; return that URL."""
    with _registry_lock:
        if name in _simulators:
            raise InjectorSimError(f"{SCHEME}://{name} is taken")
        _simulators[name] = simulator
    return f"{SCHEME}://{name}"


def remove(name: str) -> None:
    with _registry_lock:
        _simulators.pop(name, None)


def simulator(url: str) -> InjectorSimulator:
    """The simulator ``url`` names, made from the URL's options when none was added."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != SCHEME or not parts.netloc:
        raise ValueError(f"expected {SCHEME}://NAME[?options], got {url!r}")
    with _registry_lock:
        found = _simulators.get(parts.netloc)
        if found is None:
            found = _simulators[parts.netloc] = _from_options(parts.query)
        return found


def _from_options(query: str) -> InjectorSimulator:
    options = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False)
    known = {"clock", "step_s", "time_scale", "seed", "syringe", "plain", "fault"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {SCHEME}:// option(s): {', '.join(unknown)}")

    def one(name: str, default: str) -> str:
        return options.get(name, [default])[-1]

    clock = one("clock", "real")
    if clock not in ("real", "manual"):
        raise ValueError(f"clock must be real or manual, not {clock!r}")
    return InjectorSimulator(
        SimParams(syringe=one("syringe", "1ml")),
        seed=int(one("seed", "0")),
        time_scale=float(one("time_scale", "1")),
        plain=one("plain", "0") in ("1", "true", "yes"),
        faults=options.get("fault", []),
        manual_clock=clock == "manual",
        step_per_request_s=float(one("step_s", "0")),
    )


class InProcessPort:
    """Both ends of an in-process line: the simulator sends on one (as on a :class:`~simulators.
    serial_port.SerialPort`), the host reads and writes on the other. Vanishes like a pty."""

    serving = True

    def __init__(
        self, device: PortDevice, lock: threading.RLock, changed: threading.Condition, url: str
    ) -> None:
        self._device = device
        self._lock = lock
        self._changed = changed
        self.url = url
        self.rx_bytes = 0
        self.tx_bytes = 0
        self._transcript: list[TranscriptLine] = []
        self._origin = time.monotonic()
        self._out: deque[tuple[float, bytes, float]] = deque()
        self._inbox = bytearray()  # sent and due: the host's to read
        self._open = True
        self._vanished = False
        self._restore_at: float | None = None

    # ------------------------------------------------------------------ the simulator's end

    @property
    def attached(self) -> bool:
        return self._open and not self._vanished

    connected = attached

    @property
    def queued_bytes(self) -> int:
        return sum(len(chunk) for _, chunk, _ in self._out)

    @property
    def transcript(self) -> list[TranscriptLine]:
        return list(self._transcript)

    def send(self, data: bytes, delay_s: float = 0.0, gap_s: float = 0.0) -> None:
        if not data or not self.attached:
            return
        due = time.monotonic() + delay_s
        if self._out:
            due = max(due, self._out[-1][0] + gap_s)
        self._out.append((due, data, gap_s))
        self._changed.notify_all()

    def vanish(self, restore_after_s: float | None = None) -> None:
        self._vanished = True
        self._out.clear()
        self._inbox.clear()
        self._device.link_lost()
        if restore_after_s is not None:
            self._restore_at = time.monotonic() + restore_after_s
        self._changed.notify_all()

    def restore(self) -> str:
        self._vanished = False
        self._restore_at = None
        self._device.port_restored()
        return self.url

    def restore_if_due(self) -> None:
        if self._restore_at is not None and time.monotonic() >= self._restore_at:
            self.restore()

    def in_loop(self, action: Callable[[], None]) -> None:
        with self._lock:
            action()

    def wake(self) -> None:
        with self._lock:
            self._changed.notify_all()

    def close(self) -> None:
        """The host's end is closed: the host is gone (arming lapses, as on a socket)."""
        with self._lock:
            if not self._open:
                return
            was_attached = self.attached
            self._open = False
            self._out.clear()
            self._inbox.clear()
            if was_attached:
                self._device.link_lost()
            self._changed.notify_all()

    # ------------------------------------------------------------------ the host's end

    def write(self, data: bytes) -> int:
        with self._lock:
            self._check_open()
            self._record("RX", data)
            self._device.received(data)
            self._turn()
            return len(data)

    def in_waiting(self) -> int:
        with self._lock:
            self._check_open()
            self._turn()
            return len(self._inbox)

    def read(self, size: int, timeout_s: float | None) -> bytes:
        """Up to ``size`` bytes, waiting at most ``timeout_s`` (None: until ``size`` came)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            while True:
                self._check_open()
                self._turn()
                if len(self._inbox) >= size or (self._inbox and deadline is not None):
                    data = bytes(self._inbox[:size])
                    del self._inbox[:size]
                    return data
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return b""
                wait_s = _SERVICE_S if deadline is None else min(_SERVICE_S, deadline - now)
                if self._out:
                    wait_s = min(wait_s, max(self._out[0][0] - now, 0.0))
                self._changed.wait(wait_s)

    def reset_input(self) -> None:
        with self._lock:
            self._inbox.clear()

    def _check_open(self) -> None:
        if not self._open:
            raise serial.PortNotOpenError()
        self.restore_if_due()
        if self._vanished:
            raise serial.SerialException(f"{self.url}: the port vanished (EIO)")

    def _turn(self) -> None:
        """The simulator's turn (its timers), then what it sent and is due moves to the host."""
        self._device.service()
        now = time.monotonic()
        while self._out and self._out[0][0] <= now:
            _, chunk, _ = self._out.popleft()
            self._inbox += chunk
            self._record("TX", chunk)
            if self._out and self._out[0][2]:
                # A trickled byte keeps its gap even when the previous write was late.
                next_due, next_chunk, next_gap_s = self._out[0]
                self._out[0] = (max(next_due, now + next_gap_s), next_chunk, 0.0)
        self._changed.notify_all()

    def _record(self, direction: str, data: bytes) -> None:
        if direction == "RX":
            self.rx_bytes += len(data)
        else:
            self.tx_bytes += len(data)
        t_s = round(time.monotonic() - self._origin, 6)
        self._transcript.append(TranscriptLine(t_s, direction, data.hex(" ")))
