"""Helpers for the external peers (DCMTK servers) that cannot bind port 0 themselves."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    """A port that was free a moment ago (callers retry on the rare bind race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until ``process`` accepts connections on ``port``; False if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.02)
    return False
