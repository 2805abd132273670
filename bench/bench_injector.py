"""Injector command round-trip latency: our driver vs nesp-lib, same commands, same pty, one run.

Both clients talk to one simulated NE-1000 (``galacto sim injector --pty``, its own process) on
one pseudo-terminal, one after the other: nesp-lib 2.0.0 first, in Basic mode (the only mode it
runs without a heartbeat thread of its own), then our link in Safe mode (what the product runs:
CRC-checked frames, correlation by address and reply shape, the heartbeat thread alongside).
Printed: median and p99 per command, the ratio ours / nesp-lib, and the wire-time floor at 19200
baud (bytes × 10 bits / baud) for each framing. A pty does not enforce a baud rate, so the measured
times are below that floor: they measure software, the floor is what a real line adds.

``python -m bench injector``
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

from device_drivers.codec import encode_basic_reply, encode_basic_request, encode_safe
from device_drivers.driver import NewEraInjector
from device_drivers.limits import InjectorLimits
from device_drivers.link import Shape

ROUNDS = 400
BAUD = 19200
#: nesp-lib blocks forever on a silent port: give up after this.
NESP_GUARD_S = 60.0

#: (label, request data, typical reply data) — the reply sizes feed the wire-time floor.
COMMANDS: tuple[tuple[str, bytes, bytes], ...] = (
    ("status", b"0", b"00S"),
    ("DIA?", b"0DIA", b"00S4.699"),
    ("RAT?", b"0RAT", b"00S300.0UM"),
    ("VOL?", b"0VOL", b"00S0.500ML"),
    ("DIS", b"0DIS", b"00SI0.000W0.000ML"),
)


def wire_floor_ms(request: bytes, reply: bytes, *, safe: bool) -> float:
    if safe:
        size = len(encode_safe(request)) + len(encode_safe(reply))
    else:
        size = len(encode_basic_request(request)) + len(encode_basic_reply(reply))
    return size * 10 / BAUD * 1000


def time_calls(call: Callable[[], object], rounds: int = ROUNDS) -> list[float]:
    for _ in range(10):  # warm-up
        call()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def measure_nesp_lib(url: str) -> dict[str, list[float]]:
    from nesp_lib import Port, Pump  # a test dependency, not a product one

    results: dict[str, list[float]] = {}
    with Port(url, baud_rate=BAUD) as port:
        pump = Pump(port)  # acknowledges the power-up alarm, leaves Safe mode off
        calls: dict[str, Callable[[], object]] = {
            "status": lambda: pump.status,
            "DIA?": lambda: pump.syringe_diameter_mm,
            "RAT?": lambda: pump.pumping_rate_ml_per_min,
            "VOL?": lambda: pump.pumping_volume_ml,
            "DIS": lambda: pump.volume_infused_ml,
        }
        for label, call in calls.items():
            results[label] = time_calls(call)
    return results


def measure_ours(url: str) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with NewEraInjector(url, baud=BAUD, limits=InjectorLimits()) as driver:
        assert isinstance(driver, NewEraInjector)
        driver.connect()  # Safe mode, SAF 2, heartbeat running
        link = driver.link
        calls: dict[str, Callable[[], object]] = {
            "status": link.status,
            "DIA?": lambda: link.query("DIA", Shape.NUMBER),
            "RAT?": lambda: link.query("RAT", Shape.NUMBER_UNIT),
            "VOL?": lambda: link.query("VOL", Shape.NUMBER_UNIT),
            "DIS": lambda: link.query("DIS", Shape.DIS),
        }
        for label, call in calls.items():
            results[label] = time_calls(call)
    return results


def run_guarded(work: Callable[[], dict[str, list[float]]]) -> dict[str, list[float]] | None:
    box: list[dict[str, list[float]]] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            box.append(work())
        except BaseException as exc:  # reported in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(NESP_GUARD_S)
    if failure:
        raise failure[0]
    return box[0] if box else None


@contextlib.contextmanager
def simulator_process() -> Iterator[str]:
    """``galacto sim injector --pty`` in its own process (as a device would be: no shared GIL)."""
    args = [sys.executable, "-m", "acquisition", "sim", "injector", "--pty"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            if not ready:
                raise RuntimeError("the injector simulator did not start")
            yield str(json.loads(proc.stdout.readline())["url"])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def main() -> None:
    with simulator_process() as url:
        nesp = run_guarded(lambda: measure_nesp_lib(url))
        if nesp is None:
            print(f"nesp-lib did not finish within {NESP_GUARD_S} s (it has no timeouts)")
            return
        ours = measure_ours(url)
    print(f"{ROUNDS} round trips per command over one pty; times in ms")
    print("ours: Safe mode (CRC, shape correlation, heartbeat alongside); nesp-lib: Basic mode")
    header = (
        f"{'command':<8} {'ours med':>9} {'ours p99':>9} {'nesp med':>9} {'nesp p99':>9} "
        f"{'ratio':>6} {'floor safe':>10} {'floor basic':>11}"
    )
    print(header)
    ratios = []
    for label, request, reply in COMMANDS:
        o, n = ours[label], nesp[label]
        ratio = statistics.median(o) / statistics.median(n)
        ratios.append(ratio)
        print(
            f"{label:<8} {statistics.median(o):9.3f} {p99(o):9.3f} {statistics.median(n):9.3f} "
            f"{p99(n):9.3f} {ratio:6.2f} {wire_floor_ms(request, reply, safe=True):10.2f} "
            f"{wire_floor_ms(request, reply, safe=False):11.2f}"
        )
    print(f"median ratio ours/nesp-lib over the commands: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
