"""`galacto inject`: one injection through the real driver, with live progress.

Connects, configures, arms, injects and prints progress; ``--json`` prints one JSON object per
line (progress, events, and a final result). Exit codes: 0 completed, 3 aborted by a fault,
2 bad arguments (limits included), no link or a device that cannot inject; 130 when the operator
interrupts (Ctrl-C or SIGTERM), after the injector has been stopped (``STP``).
Works against any device speaking the protocol (docs/injector-protocol.md).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from acquisition.cli import EXIT_ABORTED, EXIT_OK, EXIT_USAGE, load_config
from acquisition.settings import InjectorSettings
from acquisition.wiring import driver_from
from device_drivers.base import InjectionResult, InjectorState, Progress, RecordedEvent
from device_drivers.driver import NewEraInjector
from device_drivers.errors import (
    CapabilityError,
    DriverError,
    DriverTimeoutError,
    LimitError,
    LinkLostError,
)

EXIT_INTERRUPTED = 130
#: How often progress is printed.
PROGRESS_PERIOD_S = 0.5


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inject",
        help="run one injection on the injector (progress, events, result)",
        description="Connect to the injector, configure, arm, inject, report.",
    )
    parser.add_argument("--url", help="injector serial URL (default: injector.url)")
    parser.add_argument("--volume-ml", type=float, help="volume (default: injector.volume_ml)")
    parser.add_argument(
        "--rate-ml-min", type=float, help="rate in mL/min (default: injector.rate_ml_min)"
    )
    parser.add_argument("--syringe", choices=("1ml", "3ml"), help="syringe (injector.syringe)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


class ProgressPrinter:
    """Human lines or JSON lines on stdout, from the main and the monitor thread."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.started_s = time.monotonic()
        self.peak_pressure_kpa: float | None = None
        self.events_seen = 0
        self._lock = threading.Lock()

    def _out(self, obj: dict[str, Any], text: str) -> None:
        with self._lock:
            print(json.dumps(obj) if self.as_json else text, flush=True)

    def progress(self, p: Progress) -> None:
        t_s = round(time.monotonic() - self.started_s, 2)
        pressure = None if p.pressure_kpa is None else round(p.pressure_kpa, 1)
        if pressure is not None:
            self.peak_pressure_kpa = max(pressure, self.peak_pressure_kpa or 0.0)
        shown = "—" if pressure is None else f"{pressure:.0f} kPa"
        self._out(
            {
                "t_s": t_s,
                "state": p.state.value,
                "delivered_ml": round(p.delivered_ml, 3),
                "pressure_kpa": pressure,
            },
            f"{t_s:7.1f} s  {p.state.value:<10} {p.delivered_ml:6.3f} / {p.target_ml:.3f} mL"
            f"  {shown}",
        )

    def event(self, e: RecordedEvent) -> None:
        self.events_seen += 1
        detail = f" ({e.detail})" if e.detail else ""
        self._out(
            {"event": e.code, "meaning": e.meaning},
            f"event {e.event.scheme} {e.code}: {e.meaning}{detail}",
        )

    def result(self, result: str, delivered_ml: float, reason: str) -> None:
        self._out(
            {"result": result, "delivered_ml": round(delivered_ml, 3), "reason": reason},
            f"{result}: {delivered_ml:.3f} mL delivered ({reason})",
        )

    def error(self, message: str) -> None:
        print(f"galacto inject: {message}", file=sys.stderr, flush=True)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the injection like Ctrl-C does."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    config = load_config(
        args,
        **{
            "injector.url": args.url,
            "injector.volume_ml": args.volume_ml,
            "injector.rate_ml_min": args.rate_ml_min,
            "injector.syringe": args.syringe,
        },
    )
    settings = config.injector
    out = ProgressPrinter(args.json)
    if not settings.url:
        out.error("no injector URL (--url or injector.url)")
        return EXIT_USAGE
    try:
        driver = driver_from(settings)
        driver.check_limits(settings.syringe, settings.rate_ml_min, settings.volume_ml)
    except LimitError as exc:
        out.error(str(exc))
        return EXIT_USAGE
    with _sigterm_as_interrupt(), driver:
        return inject_once(driver, settings, out)


def inject_once(driver: NewEraInjector, settings: InjectorSettings, out: ProgressPrinter) -> int:
    try:
        driver.connect()
    except (LinkLostError, DriverTimeoutError) as exc:
        out.error(f"no link to the injector: {exc}")
        return EXIT_USAGE
    except DriverError as exc:
        out.error(f"the injector did not come up: {exc}")
        return EXIT_USAGE
    driver.subscribe(out.event)
    try:
        driver.configure(settings.syringe, settings.rate_ml_min, settings.volume_ml)
        driver.arm()
        status = driver.start()
    except (LimitError, CapabilityError) as exc:
        out.error(str(exc))
        return EXIT_USAGE
    except DriverError as exc:
        out.error(f"injection not started: {exc}")
        out.result("aborted", 0.0, str(exc))
        return EXIT_ABORTED
    out.started_s = time.monotonic()
    expected_s = settings.volume_ml / settings.rate_ml_min * 60
    give_up_s = time.monotonic() + 2 * expected_s + settings.max_hold_s + 30
    try:
        while not status.done:
            out.progress(driver.progress())
            if time.monotonic() > give_up_s:
                driver.stop("injection overran its expected duration")
                break
            try:
                status.wait(PROGRESS_PERIOD_S)
            except DriverTimeoutError:
                continue
    except KeyboardInterrupt:
        try:
            driver.stop("operator interrupt")
        except DriverError as exc:
            out.error(f"STP not confirmed: {exc}")
        _report(out, driver.last_result, driver)
        return EXIT_INTERRUPTED
    out.progress(driver.progress())
    return _report(out, status.result, driver)


def _report(out: ProgressPrinter, result: InjectionResult | None, driver: NewEraInjector) -> int:
    if result is None:
        out.result("aborted", driver.progress().delivered_ml, driver.reason or "unknown")
        return EXIT_ABORTED
    out.result(result.label, result.delivered_ml, result.reason)
    if result.completed and driver.state is InjectorState.COMPLETED:
        return EXIT_OK
    return EXIT_ABORTED
