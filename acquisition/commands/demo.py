"""`galacto demo`: the controller beside simulated equipment, on one machine.

Until the exam sequencer and the console exist (issue 4), the demo is the injector demo: the
injector simulator answers on a real pseudo-terminal, one injection runs through the real
driver with live progress, and a summary follows. ``--auto`` runs it headless (the same steps,
no prompt) and exits with the injection's result: 0 completed, 3 aborted.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from acquisition import wiring
from acquisition.cli import EXIT_USAGE, load_config
from acquisition.commands.inject import ProgressPrinter, driver_from, inject_once
from device_drivers.errors import LimitError

DEFAULT_TIME_SCALE = 20.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the controller beside simulated equipment (today: the injector demo)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--auto", action="store_true", help="run headless and exit")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        help=f"simulated seconds per real second (default {DEFAULT_TIME_SCALE:g})",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.time_scale <= 0:
        print("galacto demo: --time-scale must be > 0")
        return EXIT_USAGE
    injector_sim = wiring.simulator("injector")
    with injector_sim.InjectorSimulator(time_scale=args.time_scale) as sim:
        url = sim.serve_pty()
        settings = load_config(args, **{"injector.url": url}).injector
        print(json.dumps({"injector_url": url, "time_scale": args.time_scale}), flush=True)
        out = ProgressPrinter(args.json)
        try:
            driver = driver_from(settings)
        except LimitError as exc:
            out.error(str(exc))
            return EXIT_USAGE
        with driver:
            code = inject_once(driver, settings, out)
            result = driver.last_result
        state = sim.snapshot()
        summary = {
            "summary": {
                "requested_ml": settings.volume_ml,
                "rate_ml_min": settings.rate_ml_min,
                "delivered_ml": round(result.delivered_ml, 3) if result else None,
                "peak_pressure_kpa": out.peak_pressure_kpa,
                "events": out.events_seen,
                "commands_on_the_wire": state.commands_received,
                "exit_code": code,
            }
        }
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            s = summary["summary"]
            print(
                f"\nSummary: {s['delivered_ml']} of {s['requested_ml']} mL at "
                f"{s['rate_ml_min']} mL/min, peak line pressure {s['peak_pressure_kpa']} kPa, "
                f"{s['events']} injector event(s), {s['commands_on_the_wire']} commands on the "
                f"wire (simulated injector on {url}, time x{args.time_scale:g}).",
                flush=True,
            )
        return code
