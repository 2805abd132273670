"""The console's STOP and its live trace (issue 14): how fast STOP stops, how many samples a
second reach a page.

In a console room (the real ExamService, journal and dose log in SQLite files, the injector
simulator on a pty in scaled real time behind the real driver at its default 0.2 s poll, the
console on loopback with a page's event stream open):

- **STOP latency**: from the moment ``POST /api/command/stop-injection`` (no session, as the
  login page sends it) leaves the client to the moment the simulated pump's motor is stopped
  (its prompt is no longer infusing), and to the HTTP answer (the stop journaled); median and
  worst of :data:`STOPS` injections;
- **trace samples a second**: the ``sample`` events the page's stream received during a 0.5 mL
  injection, over the injection's elapsed time on the driver's clock.

``python -m bench console``
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from acquisition.commands.demo import ALL_CLEAR
from acquisition.exam_machine import ExamState
from device_drivers.codec import Prompt
from device_drivers.limits import InjectorLimits
from tests.console_room import ACC, EventStream, Room, command, console_room, request

STOPS = 5
TIME_SCALE = 20.0
S = ExamState


def _to_injection(room: Room, volume_ml: float) -> None:
    tech = room.tech
    if room.exam.state is S.IDLE:
        command(room.url, "select-order", {"accession": ACC, "side": "R"}, tech)
        command(room.url, "answer-checklist", {"answers": ALL_CLEAR}, tech)
        room.expose(S.PRE_CONTRAST, seed=1)
        room.exam.note_exposures()
        command(room.url, "finish-pre-contrast", {}, tech)
        command(room.url, "confirm-cannulation", {}, tech)
    command(room.url, "confirm-air-purge", {"loaded_ml": 1.0}, tech)
    status, document = command(
        room.url, "start-injection", {"volume_ml": volume_ml, "rate_ml_min": 0.3}, tech
    )
    if status != 200:
        raise RuntimeError(f"the injection did not start: {document}")


def _wait(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the room did not get there")
        time.sleep(0.002)


def _stop_once(room: Room) -> tuple[float, float]:
    """(to the motor stopped, to the HTTP answer) in seconds, for one STOP."""
    _to_injection(room, 0.2)
    _wait(lambda: room.sim.snapshot().prompt is Prompt.INFUSING)
    _wait(lambda: room.driver.progress().delivered_ml > 0.01)
    stopped: list[float] = []

    def watch() -> None:
        while room.sim.snapshot().prompt is Prompt.INFUSING:
            time.sleep(0.0005)
        stopped.append(time.perf_counter())

    watcher = threading.Thread(target=watch)
    watcher.start()
    sent = time.perf_counter()
    status, _, _ = request(
        room.url,
        "POST",
        "/api/command/stop-injection",
        body=b"{}",
        headers={"Content-Type": "application/json"},
    )
    answered = time.perf_counter()
    watcher.join(timeout=30)
    if status != 200 or not stopped:
        raise RuntimeError(f"STOP answered {status}")
    _wait(lambda: not room.exam.state.is_injecting)
    return stopped[0] - sent, answered - sent


def _samples_per_second(room: Room) -> tuple[int, float]:
    assert room.tech is not None
    with EventStream(room.url, room.tech) as stream:
        stream.next()  # the state
        _to_injection(room, 0.5)
        samples = []
        while True:
            _, name, data = stream.next()
            if name == "sample" and data["state"] in ("injecting", "hold"):
                samples.append(data)
            if name == "state" and not data["state"]["exam"]["injecting"] and samples:
                break
    span = samples[-1]["elapsed_s"] - samples[0]["elapsed_s"]
    return len(samples), span


def main() -> None:
    limits = InjectorLimits(baseline_window_s=0.1)  # the product's poll interval (0.2 s)
    with (
        tempfile.TemporaryDirectory(prefix="galacto-bench-") as tmp,
        console_room(Path(tmp), time_scale=TIME_SCALE, limits=limits) as room,
    ):
        count, span = _samples_per_second(room)
    stops: list[tuple[float, float]] = []
    for _ in range(STOPS):  # each STOP in a room of its own: at most 2 injections per exam
        with (
            tempfile.TemporaryDirectory(prefix="galacto-bench-") as tmp,
            console_room(Path(tmp), time_scale=TIME_SCALE, limits=limits) as room,
        ):
            assert room.tech is not None
            with EventStream(room.url, room.tech):  # a page is watching
                stops.append(_stop_once(room))
    motor = [m * 1000 for m, _ in stops]
    answer = [a * 1000 for _, a in stops]
    print(f"STOP to the motor stopped: median {statistics.median(motor):.1f} ms, "
          f"worst {max(motor):.1f} ms ({STOPS} stops, no session)")  # fmt: skip
    print(f"STOP to the HTTP answer:   median {statistics.median(answer):.1f} ms, "
          f"worst {max(answer):.1f} ms")  # fmt: skip
    print(f"trace: {count} samples over {span:.2f} s of injection = {count / span:.2f} a second "
          f"(driver poll {limits.heartbeat_s} s)")  # fmt: skip


if __name__ == "__main__":
    main()
