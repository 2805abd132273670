"""The abstract injector and the values it reports (style.md §2; injector-protocol.md §6).

An :class:`InjectorABC` is what the exam sequencer talks to; :class:`~device_drivers.driver.
NewEraInjector` is the implementation for the New Era protocol with the galacto extensions.
Long actions return an :class:`InjectionStatus`, a future-like object with a mandatory timeout
(ophyd ``status.py``).
"""

from __future__ import annotations

import abc
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from device_drivers.errors import DriverTimeoutError
from device_drivers.events import InjectorEvent

#: What each syringe holds (injector-protocol.md §9): one injection, and one loading, is never more.
SYRINGE_CAPACITY_ML: dict[str, float] = {"1ml": 1.0, "3ml": 3.0}


class InjectorState(enum.Enum):
    """Controller-side injector states (injector-protocol.md §6)."""

    NOT_READY = "not_ready"
    READY = "ready"
    ARMED = "armed"
    INJECTING = "injecting"
    HOLD = "hold"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ERROR = "error"


@dataclass(frozen=True)
class DeviceInfo:
    """What ``connect()`` learnt about the device."""

    version: str
    address: int
    has_pressure: bool
    has_arming: bool
    has_hold: bool
    has_event_queue: bool
    #: The other end is galacto's simulator (``injsim://``, or it answered ``XID``).
    simulated: bool = False

    @property
    def is_plain_pump(self) -> bool:
        """A New Era pump without the injector extensions (no pressure, air or arming)."""
        return not (self.has_pressure or self.has_arming)

    @property
    def missing(self) -> tuple[str, ...]:
        """Human names of the injector capabilities this device lacks."""
        table = (
            (self.has_pressure, "line pressure (XPR/XPL)"),
            (self.has_arming, "arming (XAR/XDA) and air detection"),
            (self.has_hold, "hold/resume (XHD/XRS)"),
            (self.has_event_queue, "event queue (XEV)"),
        )
        return tuple(name for present, name in table if not present)


@dataclass(frozen=True)
class Progress:
    """A snapshot of the injection, as last polled from the device."""

    state: InjectorState
    delivered_ml: float
    target_ml: float
    pressure_kpa: float | None
    baseline_kpa: float | None
    rate_ml_min: float
    elapsed_s: float


@dataclass(frozen=True)
class RecordedEvent:
    """One injector event with its DICOM code (CID 71) and when it was seen."""

    event: InjectorEvent
    at: datetime
    monotonic_s: float
    source: str  # "alarm", "device" (XEV), "driver"
    detail: str = ""

    @property
    def code(self) -> str:
        return self.event.code

    @property
    def meaning(self) -> str:
        return self.event.meaning


@dataclass(frozen=True)
class InjectionResult:
    """How an injection ended.

    ``confirmed`` is False when the pump could not be reached to confirm the stop (the link was
    lost, or the STP went unanswered): the motor was stopped by the pump's own watchdog at the
    latest, ``delivered_ml`` is the last polled figure, and ``acknowledge()`` reads the pump's
    counter back once the link returns (``last_result`` is then corrected and confirmed).
    """

    completed: bool
    delivered_ml: float
    reason: str
    event: InjectorEvent
    confirmed: bool = True

    @property
    def label(self) -> str:
        return "completed" if self.completed else "aborted"


@dataclass(frozen=True)
class InjectorFault:
    """Why the injector is in ERROR: the CID 71 event that ended the injection (or the alarm
    outside one), the reason in words, and the injection's last figures when one was running."""

    event: InjectorEvent
    reason: str
    at: datetime
    delivered_ml: float | None = None
    pressure_kpa: float | None = None


class InjectionStatus:
    """Future-like handle on one injection; ``wait(timeout_s)`` never blocks forever."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: InjectionResult | None = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[InjectionResult], None]] = []

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def result(self) -> InjectionResult | None:
        return self._result

    def wait(self, timeout_s: float) -> InjectionResult:
        """Block until the injection ends; :class:`DriverTimeoutError` after ``timeout_s``."""
        if not self._done.wait(timeout_s):
            raise DriverTimeoutError(f"injection still running after {timeout_s} s")
        assert self._result is not None
        return self._result

    def add_callback(self, callback: Callable[[InjectionResult], None]) -> None:
        """Call ``callback(result)`` when done (at once if already done)."""
        with self._lock:
            if self._result is None:
                self._callbacks.append(callback)
                return
            result = self._result
        callback(result)

    def set_finished(self, result: InjectionResult) -> None:
        """Called once by the driver."""
        with self._lock:
            if self._result is not None:
                return
            self._result = result
            callbacks, self._callbacks = self._callbacks, []
        self._done.set()
        for callback in callbacks:
            callback(result)


class InjectorABC(abc.ABC):
    """A contrast injector as the exam sees it. Units are in the argument names."""

    @abc.abstractmethod
    def connect(self) -> DeviceInfo:
        """Open the link and bring the device to a known, safe, idle state."""

    @abc.abstractmethod
    def configure(self, syringe: str, rate_ml_min: float, volume_ml: float) -> None:
        """Set syringe, rate and volume (checked against the limits: :class:`LimitError`)."""

    @abc.abstractmethod
    def arm(self) -> None: ...

    @abc.abstractmethod
    def disarm(self) -> None: ...

    @abc.abstractmethod
    def start(self) -> InjectionStatus:
        """Start the armed injection; the status completes when it ends, either way."""

    @abc.abstractmethod
    def hold(self) -> None: ...

    @abc.abstractmethod
    def resume(self) -> None: ...

    @abc.abstractmethod
    def stop(self, reason: str = "operator stop") -> None:
        """Operator stop: the motor stops first, then the injection is reported aborted."""

    @abc.abstractmethod
    def acknowledge(self, url: str | None = None) -> None:
        """Leave ERROR after the operator has seen the fault (reopening the link if lost)."""

    @property
    @abc.abstractmethod
    def state(self) -> InjectorState: ...

    @abc.abstractmethod
    def progress(self) -> Progress: ...

    @property
    @abc.abstractmethod
    def events(self) -> list[RecordedEvent]:
        """Every event recorded since ``connect()``, oldest first (a copy)."""

    @property
    @abc.abstractmethod
    def last_result(self) -> InjectionResult | None:
        """How the last injection ended; its volume is corrected upward when a link lost
        during it comes back (``acknowledge``) and the pump says more was given."""

    @property
    @abc.abstractmethod
    def link_up(self) -> bool:
        """The link is open and not lost (connected, and no port loss since)."""

    @property
    @abc.abstractmethod
    def reason(self) -> str:
        """Why the injector is in ERROR (empty otherwise)."""

    @property
    @abc.abstractmethod
    def fault(self) -> InjectorFault | None:
        """Why the injector is in ERROR, with its CID 71 code and last figures (None otherwise)."""

    @abc.abstractmethod
    def new_session(self, given_ml: float = 0.0) -> None:
        """A new exam: the per-exam volume cap counts from ``given_ml`` (0 for a new exam, the
        exam's volume so far when an exam is resumed after a restart)."""

    @abc.abstractmethod
    def subscribe(self, callback: Callable[[RecordedEvent], None]) -> Callable[[], None]:
        """Call ``callback`` for each new event; returns the function that unsubscribes."""

    def subscribe_progress(self, callback: Callable[[Progress], None]) -> Callable[[], None]:
        """Call ``callback`` with the figures of every poll of a running injection (from the
        driver's own thread: it must only hand them on); returns the unsubscribe. A driver
        that cannot report its polls reports none."""
        return lambda: None

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the motor if running, release the port and threads. Idempotent."""

    @abc.abstractmethod
    def describe(self) -> str: ...

    @property
    def simulated(self) -> bool:
        """The other end is a simulator, not a patient's injector (shown and journaled)."""
        return False

    def __enter__(self) -> InjectorABC:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
