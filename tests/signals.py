"""A signal sent to one worker thread of another process, as the kernel may deliver it.

The kernel gives a process-directed signal (``kill``) to any thread that does not block it.
Tests that a process still stops when a SIGTERM lands on a thread other than its main one send
it there on purpose with Linux's ``tgkill(2)`` (no Python wrapper: by syscall number).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

import pytest

_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())

#: Mark a test that needs :func:`signal_a_worker_thread`.
needs_tgkill = pytest.mark.skipif(
    sys.platform != "linux" or _SYS_TGKILL is None, reason="tgkill(2) by syscall number"
)


def signal_a_worker_thread(pid: int, signum: int) -> int:
    """Send ``signum`` to the newest thread of process ``pid`` that is not its main thread;
    that thread's id."""
    assert _SYS_TGKILL is not None
    workers = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert workers, f"process {pid} runs no worker thread"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_TGKILL, pid, workers[-1], signum) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {workers[-1]}) failed")
    return workers[-1]
