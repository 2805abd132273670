"""The console's live updates: one producer, a queue per page (``GET /api/events``, SSE).

:class:`EventHub` has one thread that reads the room's state document every
:data:`STATE_PERIOD_S` and publishes it when it changed (the ``time`` field aside), and it
receives the injector's figures from the driver after each poll of a running injection
(:meth:`~device_drivers.base.InjectorABC.subscribe_progress`: at the driver's poll rate) and
publishes each as a ``sample``. Every event carries a sequence number (the SSE ``id``) and the
server's time. A subscriber that hears nothing for :data:`HEARTBEAT_S` gets a ``heartbeat``, so
a page hears something at least every second and knows the stream is alive.

The samples of the running injection are kept (:data:`TRACE_MAX` at most): a page that connects
during an injection gets the whole trace so far, and one that reconnects with
``Last-Event-ID`` gets the samples it missed. The state is sent whole on every connection.

One state document is read per period however many pages are open, and only while one is
(the thread starts with the first subscriber). Each page gets the view of its role
(``views(document)``: the admin's is without the patient's identity).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import itertools
import json
import logging
import math
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from device_drivers.base import InjectorABC, InjectorState, Progress

log = logging.getLogger(__name__)

STATE_PERIOD_S = 0.25
HEARTBEAT_S = 0.5
#: Samples kept of the running injection (600 s at 10 polls a second).
TRACE_MAX = 6000
#: Events a slow page may have waiting; beyond, it is dropped (its EventSource reconnects).
QUEUE_MAX = 2000


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``data`` per role (``None`` key: the same for every role)."""

    seq: int
    name: str
    data: Mapping[str | None, dict[str, Any]]

    def wire(self, role: str) -> bytes:
        """The event as it goes on the wire (``id``, ``event``, one ``data`` line)."""
        data = {"seq": self.seq, **(self.data.get(role) or self.data.get(None) or {})}
        body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return f"id: {self.seq}\nevent: {self.name}\ndata: {body}\n\n".encode()


class Subscription:
    """One page's stream of events (see :meth:`EventHub.subscribe`)."""

    def __init__(self, hub: EventHub, role: str) -> None:
        self.hub = hub
        self.role = role
        self.queue: queue.Queue[Event | None] = queue.Queue(QUEUE_MAX)
        self.dropped = False

    def next(self, timeout_s: float = HEARTBEAT_S) -> Event | None:
        """The next event; a heartbeat when nothing came for ``timeout_s``; None once the hub
        stopped or dropped this subscriber."""
        if self.dropped:
            return None
        try:
            event = self.queue.get(timeout=timeout_s)
        except queue.Empty:
            return self.hub.heartbeat()
        return event

    def close(self) -> None:
        self.hub.unsubscribe(self)


class EventHub:
    """See the module docstring. ``snapshot()`` reads the state document, ``views(doc)`` gives
    it per role, ``injector()`` the driver in use now (it may be re-initialised)."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        views: Callable[[dict[str, Any]], Mapping[str, dict[str, Any]]],
        injector: Callable[[], InjectorABC | None],
        *,
        state_period_s: float = STATE_PERIOD_S,
    ) -> None:
        self._snapshot = snapshot
        self._views = views
        self._injector = injector
        self._period_s = state_period_s
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self._state: Event | None = None
        self._state_key = ""
        self._trace: collections.deque[Event] = collections.deque(maxlen=TRACE_MAX)
        self._injecting = False
        self._injection = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._watched: InjectorABC | None = None
        self._unsubscribe: Callable[[], None] = lambda: None

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, role: str, last_event_id: int | None = None) -> Subscription:
        """A new page: the current state first, then the running injection's samples (those
        after ``last_event_id`` when it reconnects), then everything as it happens."""
        sub = Subscription(self, role)
        self._start()
        if self._state is None:
            self._refresh_state()
        with self._lock:
            if self._state is not None:
                sub.queue.put_nowait(self._state)
            for sample in self._trace:
                if last_event_id is None or sample.seq > last_event_id:
                    if sub.queue.full():
                        break
                    sub.queue.put_nowait(sample)
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def heartbeat(self) -> Event:
        return Event(next(self._seq), "heartbeat", {None: self._stamp({})})

    def wake(self) -> None:
        """Read the state now (after a command, say) rather than at the next period."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5.0)
        self._unsubscribe()
        with self._lock:
            subscribers, self._subscribers = self._subscribers, set()
        for sub in subscribers:
            sub.dropped = True
            with contextlib.suppress(queue.Full):
                sub.queue.put_nowait(None)

    # ------------------------------------------------------------------ producing

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="console-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._watch_injector()
            try:
                self._refresh_state()
            except Exception:  # the snapshot reports its own parts' errors; this is a bug
                log.exception("console: the state could not be read for the live updates")
            self._wake.wait(self._period_s)
            self._wake.clear()

    def _watch_injector(self) -> None:
        injector = self._injector()
        if injector is self._watched:
            return
        self._unsubscribe()
        self._watched = injector
        self._unsubscribe = (
            injector.subscribe_progress(self._on_progress)
            if injector is not None
            else (lambda: None)
        )

    def _refresh_state(self) -> None:
        """Read the state document and publish it if it changed. One refresh at a time (the
        hub's thread and a first subscriber's may both read): otherwise both could find the
        same new state and publish it twice, or an older read be published after a newer."""
        with self._refreshing:
            document = self._snapshot()
            key = json.dumps({k: v for k, v in document.items() if k != "time"}, sort_keys=True)
            if key == self._state_key:
                return
            views: dict[str | None, dict[str, Any]] = {
                role: self._stamp({"state": view}) for role, view in self._views(document).items()
            }
            with self._lock:
                self._state_key = key
                self._state = Event(next(self._seq), "state", views)
                self._publish_locked(self._state)

    def _on_progress(self, progress: Progress) -> None:
        """On the driver's monitor thread: hand the figures on, nothing more."""
        delivering = progress.state in (InjectorState.INJECTING, InjectorState.HOLD)
        with self._lock:
            if delivering and not self._injecting:
                self._injection += 1
                self._trace.clear()
            self._injecting = delivering
            sample = {
                "injection": self._injection,
                "state": progress.state.value,
                "elapsed_s": round(progress.elapsed_s, 3),
                "delivered_ml": _finite(progress.delivered_ml),
                "target_ml": _finite(progress.target_ml),
                "pressure_kpa": _finite(progress.pressure_kpa),
                "baseline_kpa": _finite(progress.baseline_kpa),
                "rate_ml_min": _finite(progress.rate_ml_min),
            }
            event = Event(next(self._seq), "sample", {None: self._stamp(sample)})
            self._trace.append(event)
            self._publish_locked(event)
        self._wake.set()  # the injector's state may have changed: the state follows at once

    def _publish_locked(self, event: Event) -> None:
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except queue.Full:  # a page that stopped reading: it reconnects with its last id
                sub.dropped = True
                self._subscribers.discard(sub)

    def _stamp(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"time": _now(), **data}
