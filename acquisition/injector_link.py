"""The controller's injector link: its driver, connected, retried, re-initialised.

The driver is made from ``injector.url`` (or given by the caller, who then owns it). The link
is tried at start-up and, while it is down, again every :data:`RECONNECT_S` by the controller's
tick; a simulated injector is logged and journaled when its link comes up (issue 13 §2). An
admin may re-initialise a driver that will not reconnect (issue 14 §1): journaled, refused
while an injection runs. One lock orders the tick's retries and an admin's re-initialisation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from acquisition import wiring
from acquisition.exam.model import ExamError, operator_origin
from acquisition.exam.service import ExamService
from acquisition.journal import Journal, JournalError
from acquisition.settings import InjectorSettings
from device_drivers.base import InjectorABC, InjectorState
from device_drivers.errors import DriverError

log = logging.getLogger(__name__)

#: How often a lost injector link is tried again.
RECONNECT_S = 5.0


class InjectorLink:
    """The injector driver of a controller and the state of its link."""

    def __init__(
        self,
        settings: InjectorSettings,
        journal: Journal,
        *,
        driver: InjectorABC | None = None,
    ) -> None:
        self.settings = settings
        self._journal = journal
        self._given = driver is not None
        self.driver: InjectorABC | None = driver
        if driver is None and settings.url:
            self.driver = wiring.driver_from(settings)
        self.connected = False
        self._next_try_s = 0.0
        self._lock = threading.RLock()
        #: Told of the new driver after a re-initialisation (the console's backend).
        self.on_replaced: list[Callable[[InjectorABC], None]] = []

    @property
    def reinitialisable(self) -> bool:
        """A driver galacto made from the configuration (one given by a caller is not ours)."""
        return bool(self.settings.url) and not self._given

    def connect(self) -> None:
        """Try the link once (a failure is logged; :meth:`retry` tries again)."""
        with self._lock:
            driver = self.driver
            if driver is None or self.connected:
                return
            try:
                info = driver.connect()
            except DriverError as exc:
                log.error(
                    "injector link not established (%s); retrying every %.0f s", exc, RECONNECT_S
                )
                return
            self.connected = True
            log.info("injector link up: %s, state %s", info, driver.state.name)
            if driver.simulated:
                log.warning("SIMULATED INJECTOR at %s: not for a patient", self.settings.url)
                payload = {"url": self.settings.url, "version": info.version}
                try:
                    self._journal.append("injector-simulated", payload)
                except JournalError as exc:  # the link is up all the same; the exam reports
                    log.error("injector-simulated not journaled: %s", exc)

    def retry(self) -> None:
        """Try a link that is down again, at most every :data:`RECONNECT_S`."""
        if self.driver is None or self.connected:
            return
        now = time.monotonic()
        if now < self._next_try_s:
            return
        self._next_try_s = now + RECONNECT_S
        self.connect()

    def reinitialise(self, exam: ExamService, operator: str) -> None:
        """Close the driver and make a new one from the configuration, attached to the exam and
        connected (retried by the tick when the device does not answer yet): journaled first;
        refused while an injection runs."""
        if not self.reinitialisable:
            raise ValueError("no injector is configured to re-initialise")
        with self._lock:
            old = self.driver
            if exam.snapshot().state.is_injecting or (
                old is not None and old.state in (InjectorState.INJECTING, InjectorState.HOLD)
            ):
                raise ExamError("not while an injection runs: STOP it first")
            payload: dict[str, Any] = {
                "url": self.settings.url,
                "state_before": None if old is None else old.state.value,
                **operator_origin(operator),
            }
            self._journal.append("injector-reinitialised", payload, operator=operator)
            exam.attach_injector(None)
            if old is not None:
                old.close()
            self.driver = new = wiring.driver_from(self.settings)
            self.connected = False
            for listener in self.on_replaced:
                listener(new)
            exam.attach_injector(new)
            self.connect()

    def close(self) -> None:
        """Close a driver galacto made (one given by a caller is the caller's to close)."""
        if self.driver is not None and not self._given:
            close = getattr(self.driver, "close", None)
            if close is not None:
                close()
            self.driver = None
