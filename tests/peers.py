"""Helpers for the external peers (DCMTK servers) that cannot bind port 0 themselves."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.waiting import eventually


def free_port() -> int:
    """A port that was free a moment ago (callers retry on the rare bind race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something accepts connections on loopback ``port`` now."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until ``process`` accepts connections on ``port``; False if it exits or times out."""
    eventually(lambda: process.poll() is not None or accepts(port), timeout_s)
    return process.poll() is None and accepts(port)


@contextmanager
def dcmtk_server(argv: Callable[[int], list[str]]) -> Iterator[int]:
    """Run a DCMTK server (``argv(port)``) with ``TCP_NODELAY=1`` until the block ends.

    DCMTK cannot bind port 0: a free port is picked and the start retried on a bind race.
    Yields the port it listens on; the process is terminated (killed if it hangs) afterwards.
    """
    env = {**os.environ, "TCP_NODELAY": "1"}
    for _attempt in range(3):
        port = free_port()
        process = subprocess.Popen(
            argv(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if wait_listening(port, process, 10):
            break
        process.kill()
        process.communicate(timeout=10)
    else:
        raise RuntimeError(f"{argv(0)[0]} did not start listening")
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=10)
