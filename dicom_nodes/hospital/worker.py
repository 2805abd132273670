"""The one background thread of an SCU that works in rounds (the outbox, the RIS refresher).

A :class:`Worker` runs :meth:`Worker.work` in a loop on its own thread: each round returns how
long to wait before the next (None: go on at once); :meth:`Worker.wake` ends a wait early, and
:meth:`Worker.stop` stops after the round in flight.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Worker:
    """A thread of rounds (see the module docstring); subclasses give :meth:`work`."""

    #: The thread's name (diagnostics, the tests' leak check).
    thread_name = "worker"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def work(self) -> float | None:
        """One round; the seconds to wait before the next (None: at once)."""
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (a long round checks it between its steps)."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the thread (work left by an earlier run is resumed by the rounds)."""
        if self._thread is not None:
            raise RuntimeError(f"the {self.thread_name} is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the round in flight (bounded by the peer's timeouts)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the %s did not stop within %.0f s", self.thread_name, timeout_s)
            self._thread = None

    def wake(self) -> None:
        """Start the next round now rather than at the end of the wait."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait_s = self.work()
            if wait_s is not None:
                self._wake.wait(wait_s)
                self._wake.clear()
