"""The one way a test waits: on a condition, with a deadline, failing with what it waited for.

Everything a test waits on (a simulator's state, a peer's store, a process's output file) is
polled through :func:`wait_until`; nothing sleeps and hopes (GUIDE.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: How often a condition is polled.
POLL_S = 0.02


def wait_until(
    predicate: Callable[[], object], timeout_s: float, what: str = "", *, poll_s: float = POLL_S
) -> None:
    """Return as soon as ``predicate()`` is true; raise :class:`AssertionError` naming ``what``
    after ``timeout_s`` seconds."""
    if not eventually(predicate, timeout_s, poll_s=poll_s):
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")


def eventually(
    predicate: Callable[[], object], timeout_s: float, *, poll_s: float = POLL_S
) -> bool:
    """Whether ``predicate()`` became true within ``timeout_s`` seconds (checked once more at
    the deadline)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(poll_s)
    return True
