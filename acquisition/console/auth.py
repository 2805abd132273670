"""Who may do what at the console, and who did it (docs/console.md, "Roles" and "Sessions").

- :data:`COMMAND_ROLES`: the role each console command needs. STOP needs none: it never waits
  for a login (:data:`ANY_ONE`).
- :class:`~acquisition.exam.model.Operator` (re-exported): the name the exam service journals
  as the operator, carrying where the command came from (client address, session).
- :class:`LoginThrottle`: repeated failed logins (per client address and per user name) are
  answered 429 with ``Retry-After`` for a while that doubles with each further failure.
- :class:`RejectionJournal`: every rejected request is journaled, but a flood of the same one
  (same client, method, path and status) is collapsed into one entry a minute with its count:
  the journal is written durably (fsync) and must not become a way to slow the exam down.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from acquisition.accounts import ADMIN, PHYSICIST, ROLES, TECHNOLOGIST
from acquisition.exam.model import Operator

#: STOP's "role": anyone, logged in or not.
ANY_ONE = "any"
#: The operator a STOP without a session is journaled under.
NO_SESSION = "no session"

#: The role each command of ``POST /api/command/<name>`` needs.
COMMAND_ROLES: dict[str, str] = {
    "select-order": TECHNOLOGIST,
    "register-unscheduled": TECHNOLOGIST,
    "answer-checklist": TECHNOLOGIST,
    "pass-checklist": TECHNOLOGIST,
    "finish-pre-contrast": TECHNOLOGIST,
    "confirm-cannulation": TECHNOLOGIST,
    "confirm-air-purge": TECHNOLOGIST,
    "start-injection": TECHNOLOGIST,
    "stop-injection": ANY_ONE,
    "acknowledge-fault": TECHNOLOGIST,
    "reset-injector": TECHNOLOGIST,
    "reinitialise-injector": ADMIN,
    "complete": TECHNOLOGIST,
    "discontinue": TECHNOLOGIST,
    "close": TECHNOLOGIST,
    "refresh-orders": TECHNOLOGIST,
}

#: Who reads the room's state (``/api/state``, ``/api/events``): the technologist in full, the
#: admin without the patient's identity (to see the injector he may re-initialise).
ROOM_VIEWERS = (TECHNOLOGIST, ADMIN)
DOSE_READERS = (PHYSICIST,)

assert set(COMMAND_ROLES.values()) <= {*ROLES, ANY_ONE}
__all__ = ["COMMAND_ROLES", "LoginThrottle", "Operator", "RejectionJournal"]


@dataclass
class _Failures:
    count: int = 0
    locked_until_s: float = 0.0
    last_s: float = 0.0


class LoginThrottle:
    """Failed logins per key (a client address, a user name): after :attr:`free` failures
    each further one locks the key for ``base_s`` × 2ⁿ seconds (at most ``max_s``). A success
    clears the key; a key quiet for ``forget_s`` is forgotten."""

    def __init__(
        self,
        *,
        free: int = 5,
        base_s: float = 30.0,
        max_s: float = 900.0,
        forget_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base_s, self.max_s, self.forget_s = free, base_s, max_s, forget_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, _Failures] = {}

    def retry_after_s(self, *keys: str) -> int:
        """Seconds until these keys may try again (0: now)."""
        now = self._clock()
        with self._lock:
            waits = [
                f.locked_until_s - now for k in keys if (f := self._failures.get(k)) is not None
            ]
        wait = max(waits, default=0.0)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            self._forget(now)
            for key in keys:
                f = self._failures.setdefault(key, _Failures())
                f.count += 1
                f.last_s = now
                if f.count > self.free:
                    f.locked_until_s = now + min(
                        self.max_s, self.base_s * 2 ** (f.count - self.free - 1)
                    )

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _forget(self, now: float) -> None:
        stale = [k for k, f in self._failures.items() if now - f.last_s > self.forget_s]
        for key in stale:
            del self._failures[key]


class RejectionJournal:
    """Journal rejected requests, collapsing floods (see the module docstring).

    ``append(payload)`` writes one ``console-rejected`` entry (the controller's journal). In a
    window of ``window_s`` the first ``burst`` rejections of a key (client, method, path,
    status, user) are each written at once; the next ones are counted, and their number goes
    into the key's next entry after the window (``repeated``)."""

    def __init__(
        self,
        append: Callable[[dict[str, Any]], None],
        *,
        window_s: float = 60.0,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._append = append
        self._window_s = window_s
        self._burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (window start, written in it, suppressed in it)
        self._windows: dict[tuple[str, ...], tuple[float, int, int]] = {}

    def rejected(self, payload: dict[str, Any]) -> None:
        key = tuple(str(payload.get(k)) for k in ("client", "method", "path", "status", "user"))
        now = self._clock()
        with self._lock:
            started, written, suppressed = self._windows.get(key, (-math.inf, 0, 0))
            if now - started >= self._window_s:
                started, written, carried = now, 0, suppressed
            else:
                carried = 0
            if written >= self._burst:
                self._windows[key] = (started, written, suppressed + 1)
                return
            self._windows[key] = (started, written + 1, 0 if carried else suppressed)
            if len(self._windows) > 10_000:  # many clients: keep the newest windows only
                for old in sorted(self._windows, key=lambda k: self._windows[k][0])[:5000]:
                    del self._windows[old]
        self._append({**payload, "repeated": carried} if carried else payload)
