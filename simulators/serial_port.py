"""The transport of a serial simulator: a real pseudo-terminal or ``socket://``, and its I/O thread.

A simulated serial device (the injector today; any other tomorrow) owns a :class:`SerialPort` and
implements :class:`PortDevice`: the port hands it the bytes the host wrote, gives it a turn at
every loop (for its timers) and writes what it sends, each chunk when it is due (a late reply,
a byte trickled out). The port keeps the byte-exact transcript of the wire (RX/TX hex lines with
real timestamps) and can vanish and come back, as a USB adapter unplugged and plugged again does.

Thread model: one I/O thread per port owns the descriptors; everything runs under the lock the
device shares with the port, and the condition is notified after every loop turn.

:class:`InProcessPort` is the same for a host in the same process (``injsim://``): no descriptor
and no thread, the host's reads give the device its turns.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, Protocol

import serial

log = logging.getLogger(__name__)

_READ_SIZE = 4096
#: How often a blocked in-process read gives the device a turn.
_SERVICE_S = 0.02
#: How long an action handed to the I/O thread may take.
_IN_LOOP_S = 5.0


class SerialPortError(Exception):
    """The port cannot do what was asked (closed, already serving, its thread stuck)."""


class TranscriptLine(NamedTuple):
    """One chunk on the wire: real seconds since serving started, ``RX``/``TX``, hex bytes."""

    t_s: float
    direction: str
    hex: str


class PortDevice(Protocol):
    """What a simulated device does for its port (every call on the I/O thread, under the lock)."""

    def received(self, data: bytes) -> None:
        """Bytes the host wrote."""

    def service(self) -> None:
        """A turn of the loop: the device's timers (called after every wake-up)."""

    def poll_timeout_s(self) -> float:
        """How soon the device wants its next :meth:`service` at the latest."""

    def host_connected(self) -> None:
        """A host connected (a socket client; a pty is connected as soon as it is open)."""

    def link_lost(self) -> None:
        """The host can no longer reach the device (the socket dropped, the port vanished)."""

    def port_restored(self) -> None:
        """The port came back after vanishing (the device powers up again)."""


class _PortEnd:
    """What every end a device sends on keeps: the bytes it has still to write, each when it is
    due, the byte counts and the transcript of the wire."""

    def __init__(
        self, device: PortDevice, lock: threading.RLock, changed: threading.Condition, url: str
    ) -> None:
        self._device = device
        self._lock = lock
        self._changed = changed
        self.url = url
        self.rx_bytes = 0  #: bytes read from the host
        self.tx_bytes = 0  #: bytes written to the host
        self._transcript: list[TranscriptLine] = []
        self._origin = time.monotonic()
        # Bytes to write: (not before this monotonic time, data, gap after the previous write).
        self._out: deque[tuple[float, bytes, float]] = deque()
        self._restore_at: float | None = None

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting to be written (late or trickled replies)."""
        return sum(len(chunk) for _, chunk, _ in self._out)

    @property
    def transcript(self) -> list[TranscriptLine]:
        return list(self._transcript)

    def _queue(self, data: bytes, delay_s: float, gap_s: float) -> None:
        """Queue ``data`` to be written after ``delay_s`` and at least ``gap_s`` after the
        previous write."""
        due = time.monotonic() + delay_s
        if self._out:
            due = max(due, self._out[-1][0] + gap_s)
        self._out.append((due, data, gap_s))

    def _pop_written(self, now: float) -> bytes:
        """Take the chunk at the head of the queue, written at ``now``: a trickled byte behind
        it keeps its gap even when this write was late."""
        _, chunk, _ = self._out.popleft()
        if self._out and self._out[0][2]:
            next_due, next_chunk, next_gap_s = self._out[0]
            self._out[0] = (max(next_due, now + next_gap_s), next_chunk, 0.0)
        return chunk

    def _record(self, direction: str, data: bytes) -> None:
        if direction == "RX":
            self.rx_bytes += len(data)
        else:
            self.tx_bytes += len(data)
        if data:
            t_s = round(time.monotonic() - self._origin, 6)
            self._transcript.append(TranscriptLine(t_s, direction, data.hex(" ")))


class SerialPort(_PortEnd):
    """A pty or a listening socket (one client at a time, reconnects accepted) for ``device``."""

    def __init__(self, device: PortDevice, lock: threading.RLock, changed: threading.Condition):
        super().__init__(device, lock, changed, url="")
        self._thread: threading.Thread | None = None
        self._stop = False
        self._closed = False
        self._wake_r, self._wake_w = -1, -1
        self._requests: deque[Callable[[], None]] = deque()
        self._pty_master: int | None = None
        self._pty_slave: int | None = None
        self._pty_link: str | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._socket_addr: tuple[str, int] | None = None

    # ------------------------------------------------------------------ state

    @property
    def serving(self) -> bool:
        return self._thread is not None

    @property
    def connected(self) -> bool:
        """The port exists (a pty, or a socket with its client)."""
        return self.attached

    @property
    def attached(self) -> bool:
        """A host can reach the device: the pty is open, or a socket client is connected."""
        return self._pty_master is not None or self._client is not None

    # ------------------------------------------------------------------ serving

    def serve_pty(self, link: str | None = None) -> str:
        """Serve on a new pseudo-terminal; return its slave path (or ``link``, a symlink to it)."""
        self._start()
        self._pty_link = link
        self._open_pty()
        return self.url

    def serve_socket(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve ``socket://HOST:PORT`` (port 0 picks a free one), one client at a time."""
        self._start()
        self._open_listener(host, port)
        return self.url

    def send(self, data: bytes, delay_s: float = 0.0, gap_s: float = 0.0) -> None:
        """Write ``data`` after ``delay_s`` and at least ``gap_s`` after the previous write
        (dropped when no host can read it)."""
        if not data or not self.attached:
            return
        self._queue(data, delay_s, gap_s)
        self.wake()

    def vanish(self, restore_after_s: float | None = None) -> None:
        """Close the port (a pty disappears: the host reads EIO; a socket drops and stops
        listening); it comes back by itself after ``restore_after_s`` when given."""
        log.info("simulated port %s vanishes", self.url)
        self._close_port()
        self._device.link_lost()
        if restore_after_s is not None:
            self._restore_at = time.monotonic() + restore_after_s

    def restore(self) -> str:
        """Bring the port back (a new pty path, the same socket port)."""
        if self._pty_master is None and self._listener is None:
            if self._socket_addr is not None:
                self._open_listener(*self._socket_addr)
            else:
                self._open_pty()
        self._restore_at = None
        self._device.port_restored()
        return self.url

    def in_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the I/O thread (it owns the descriptors) and wait for it. Called
        without the lock held."""
        done = threading.Event()
        failures: list[BaseException] = []

        def wrapped() -> None:
            try:
                action()
            except Exception as exc:  # handed back to the caller below
                failures.append(exc)
            finally:
                done.set()

        with self._lock:
            if self._thread is None or self._stop:
                action()
                return
            self._requests.append(wrapped)
        self.wake()
        if not done.wait(_IN_LOOP_S):
            raise SerialPortError("the simulator I/O thread did not answer")
        if failures:
            raise SerialPortError(f"port action failed: {failures[0]}") from failures[0]

    def close(self) -> None:
        """Stop serving and release every descriptor; idempotent. Called without the lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop = True
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._lock:
            self._close_port()
            if self._pty_link is not None and os.path.islink(self._pty_link):
                os.unlink(self._pty_link)
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
            self._changed.notify_all()

    def wake(self) -> None:
        """Cut the I/O thread's wait short (new output, new timers)."""
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"w")

    # ------------------------------------------------------------------ descriptors

    def _start(self) -> None:
        if self._closed:
            raise SerialPortError("the simulator is closed")
        if self._thread is not None:
            raise SerialPortError("the simulator already serves a port")
        self._origin = time.monotonic()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="injector-sim", daemon=True)
        self._thread.start()

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._pty_master, self._pty_slave = master, slave
        path = os.ttyname(slave)
        if self._pty_link is not None:
            tmp = f"{self._pty_link}.tmp{os.getpid()}"
            os.symlink(path, tmp)
            os.replace(tmp, self._pty_link)
            path = self._pty_link
        self.url = path
        log.info("simulator on pty %s", path)

    def _open_listener(self, host: str, port: int) -> None:
        listener = socket.create_server((host, port), reuse_port=False)
        listener.setblocking(False)
        self._listener = listener
        bound_host, bound_port = listener.getsockname()[:2]
        self._socket_addr = (bound_host, bound_port)
        self.url = f"socket://{bound_host}:{bound_port}"
        log.info("simulator listening on %s", self.url)

    def _close_port(self) -> None:
        for fd in (self._pty_master, self._pty_slave):
            if fd is not None:
                os.close(fd)
        self._pty_master = self._pty_slave = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._out.clear()

    # ------------------------------------------------------------------ the I/O thread

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stop:
                    return
                while self._requests:
                    self._requests.popleft()()
                rlist, wlist = self._select_sets()
                timeout = self._poll_timeout()
            try:
                readable, _, _ = select.select(rlist, wlist, [], timeout)
            except (OSError, ValueError):
                continue  # a descriptor was closed under us; rebuild the sets
            with self._lock:
                if self._stop:
                    return
                try:
                    self._service(readable)
                except Exception:
                    log.exception("simulator I/O loop failed")
                    raise
                self._changed.notify_all()

    def _select_sets(self) -> tuple[list[int], list[int]]:
        rlist = [self._wake_r]
        wlist: list[int] = []
        want_write = bool(self._out) and self._out[0][0] <= time.monotonic()
        if self._pty_master is not None:
            rlist.append(self._pty_master)
            if want_write:
                wlist.append(self._pty_master)
        if self._client is not None:
            rlist.append(self._client.fileno())
            if want_write:
                wlist.append(self._client.fileno())
        elif self._listener is not None:
            rlist.append(self._listener.fileno())
        return rlist, wlist

    def _poll_timeout(self) -> float:
        now = time.monotonic()
        timeout = self._device.poll_timeout_s()
        if self._out:
            timeout = min(timeout, max(self._out[0][0] - now, 0.0))
        if self._restore_at is not None:
            timeout = min(timeout, max(self._restore_at - now, 0.0))
        return timeout

    def _service(self, readable: list[int]) -> None:
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        if self._pty_master is not None and self._pty_master in readable:
            try:
                data = os.read(self._pty_master, _READ_SIZE)
            except BlockingIOError:
                data = b""
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if data:
                self._received(data)
        if self._listener is not None and self._listener.fileno() in readable:
            self._accept()
        if self._client is not None and self._client.fileno() in readable:
            self._recv_client()
        self._device.service()
        if self._restore_at is not None and time.monotonic() >= self._restore_at:
            self.restore()
        self._flush()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client
        self._device.host_connected()
        log.info("simulator: host connected")

    def _recv_client(self) -> None:
        assert self._client is not None
        try:
            data = self._client.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            log.info("simulator: host disconnected")
            self._client.close()
            self._client = None
            self._out.clear()
            self._device.link_lost()
            return
        self._received(data)

    def _received(self, data: bytes) -> None:
        self._record("RX", data)
        self._device.received(data)

    def _flush(self) -> None:
        now = time.monotonic()
        while self._out and self._out[0][0] <= now:
            due, chunk, _ = self._out[0]
            try:
                if self._pty_master is not None:
                    written = os.write(self._pty_master, chunk)
                elif self._client is not None:
                    written = self._client.send(chunk)
                else:
                    self._out.clear()
                    return
            except BlockingIOError:
                return
            except OSError as exc:
                log.info("simulator: write failed: %s", exc)
                self._out.clear()
                return
            self._record("TX", chunk[:written])
            if written < len(chunk):
                self._out[0] = (due, chunk[written:], 0.0)
                return
            now = time.monotonic()
            self._pop_written(now)


class InProcessPort(_PortEnd):
    """Both ends of an in-process line: the simulator sends on one (as on a :class:`~simulators.
    serial_port.SerialPort`), the host reads and writes on the other. Vanishes like a pty."""

    serving = True

    def __init__(
        self, device: PortDevice, lock: threading.RLock, changed: threading.Condition, url: str
    ) -> None:
        super().__init__(device, lock, changed, url)
        self._inbox = bytearray()  # sent and due: the host's to read
        self._open = True
        self._vanished = False

    # ------------------------------------------------------------------ the simulator's end

    @property
    def attached(self) -> bool:
        return self._open and not self._vanished

    connected = attached

    def send(self, data: bytes, delay_s: float = 0.0, gap_s: float = 0.0) -> None:
        if not data or not self.attached:
            return
        self._queue(data, delay_s, gap_s)
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
            chunk = self._pop_written(now)
            self._inbox += chunk
            self._record("TX", chunk)
        self._changed.notify_all()
