"""``galacto sim unit``: run the simulated mammography unit until SIGINT/SIGTERM.

The unit has no DICOM SCP of its own: it is an SCU toward the controller. Its *endpoint* is a
small control surface — a TCP socket speaking JSON lines (one request object per line, one
reply object per line) on ``--listen-host``/``--listen-port`` — plus its AE title. When ready it
prints exactly one JSON line::

    {"host": "127.0.0.1", "port": 40123, "ae_title": "MG_SIM", "protocol": "json-lines",
     "controller": {"host": ..., "port": ..., "ae_title": ...}}

Control commands (``{"cmd": ...}``): ``status``; ``poll`` (``date`` optional, YYYYMMDD or
range); ``perform`` (``sps_id``, optional ``views`` like ``["L-CC", "L-ML-MAG"]``,
``thickness_mm``, ``glandularity_pct``, ``contrast_ml``); ``expose`` (an unscheduled exposure,
``views``); ``fault`` (``name``). Faults act once; ``--quirk`` habits (legacy SRT codes,
pre-exposure rows, both breasts accumulated) last. Replies carry ``"ok": true`` or
``"ok": false, "error": ...``.
With ``--auto`` the unit also polls every ``--poll-s`` seconds and performs each new step with
its planned views.

``galacto sim unit --write-samples DIR`` writes one of each object the unit creates and exits 0.
Exit codes: 0 done, 2 bad arguments or the control port cannot be bound.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import socketserver
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

from dicom_nodes.network import client_tls_context
from simulators.commands import Termination, ae_title_arg, port_arg
from simulators.unit import FAULT_NAMES, QUIRK_NAMES, PerformedStep, SimulatedUnit, UnitError
from simulators.unit_images import (
    ContrastAdministration,
    Injection,
    sample_mg_image,
    sample_rdsr,
)
from simulators.unit_physics import VENDORS, PhysicsError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2

#: The objects ``--write-samples`` writes: file name → builder.
SAMPLES = {
    "mg-pre-contrast-l-cc.dcm": lambda seed, vendor: sample_mg_image(seed=seed, vendor=vendor),
    "mg-pre-contrast-l-ml-mag.dcm": lambda seed, vendor: sample_mg_image(
        seed=seed, vendor=vendor, view="ML", magnified=True
    ),
    "mg-post-contrast-l-cc-mag.dcm": lambda seed, vendor: sample_mg_image(
        seed=seed, vendor=vendor, magnified=True, post_contrast=True
    ),
    "rdsr.dcm": lambda seed, vendor: sample_rdsr(seed=seed, vendor=vendor),
}


def register(sim_subparsers: Any) -> None:
    parser = sim_subparsers.add_parser(
        "unit",
        help="simulated mammography unit: MWL, MPPS and Storage SCU toward the controller",
        description=(
            "Run a simulated digital mammography unit against the controller. Prints one JSON "
            "line with its control endpoint when ready; serves until SIGINT/SIGTERM. "
            "--write-samples DIR writes one of each object it creates and exits."
        ),
    )
    parser.add_argument("--controller-host", default="127.0.0.1")
    parser.add_argument("--controller-port", type=port_arg, default=None)
    parser.add_argument("--controller-ae", type=ae_title_arg, default="GALACTO", metavar="AE")
    parser.add_argument("--ae-title", type=ae_title_arg, default="MG_SIM", metavar="AE")
    parser.add_argument(
        "--station-ae",
        type=ae_title_arg,
        default=None,
        metavar="AE",
        help="Scheduled Station AE Title to query for (default: --ae-title)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for physics jitter and UIDs")
    parser.add_argument("--vendor", choices=sorted(VENDORS), default="w-rh")
    parser.add_argument(
        "--rdsr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send an X-Ray Radiation Dose SR after each step",
    )
    parser.add_argument("--full-size", action="store_true", help="3328x4096 16-bit images")
    parser.add_argument(
        "--quirk",
        action="append",
        choices=QUIRK_NAMES,
        default=[],
        metavar="NAME",
        help=f"a lasting habit of real units (repeatable): {', '.join(QUIRK_NAMES)}",
    )
    parser.add_argument(
        "--fault",
        action="append",
        choices=FAULT_NAMES,
        default=[],
        metavar="NAME",
        help=f"arm a fault at start (repeatable): {', '.join(FAULT_NAMES)}",
    )
    parser.add_argument("--tls-ca", default="", metavar="FILE", help="TLS toward the controller")
    parser.add_argument("--tls-cert", default="", metavar="FILE", help="client certificate")
    parser.add_argument("--tls-key", default="", metavar="FILE", help="client private key")
    parser.add_argument("--listen-host", default="127.0.0.1", help="control surface address")
    parser.add_argument("--listen-port", type=port_arg, default=0, help="0 picks a free port")
    parser.add_argument("--auto", action="store_true", help="poll and perform new steps")
    parser.add_argument("--poll-s", type=float, default=5.0, help="poll period with --auto")
    parser.add_argument(
        "--write-samples",
        type=Path,
        default=None,
        metavar="DIR",
        help="write one MG image of each kind and an RDSR to DIR, then exit",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.write_samples is not None:
        return write_samples(args.write_samples, seed=args.seed, vendor=args.vendor)
    if args.controller_port is None or args.controller_port == 0:
        sys.stderr.write("galacto sim unit: --controller-port is required\n")
        return EXIT_USAGE
    try:
        tls = client_tls_context(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    except (OSError, ssl.SSLError) as exc:
        sys.stderr.write(f"galacto sim unit: cannot load TLS files: {exc}\n")
        return EXIT_USAGE
    unit = SimulatedUnit(
        args.controller_host,
        args.controller_port,
        args.controller_ae,
        ae_title=args.ae_title,
        station_ae=args.station_ae,
        seed=args.seed,
        send_rdsr=args.rdsr,
        full_size=args.full_size,
        vendor=args.vendor,
        tls=tls,
        quirks=args.quirk,
    )
    for name in args.fault:
        unit.arm_fault(name)
    try:
        server = ControlServer((args.listen_host, args.listen_port), unit)
    except OSError as exc:
        sys.stderr.write(f"galacto sim unit: cannot listen: {exc}\n")
        return EXIT_USAGE
    serving = threading.Thread(target=server.serve_forever, name="unit-control", daemon=True)
    serving.start()
    stop = threading.Event()
    poller = None
    if args.auto:
        poller = threading.Thread(
            target=auto_loop, args=(unit, args.poll_s, stop), name="unit-auto", daemon=True
        )
        poller.start()
    host, port = server.server_address[:2]
    endpoint = {
        "host": host,
        "port": port,
        "ae_title": args.ae_title,
        "protocol": "json-lines",
        "controller": {
            "host": args.controller_host,
            "port": args.controller_port,
            "ae_title": args.controller_ae,
        },
    }
    termination = Termination()
    sys.stdout.write(json.dumps(endpoint) + "\n")
    sys.stdout.flush()
    try:
        termination.wait()
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        serving.join(timeout=5)
        if poller is not None:
            poller.join(timeout=30)
    return EXIT_OK


def write_samples(directory: Path, *, seed: int = 0, vendor: str = "w-rh") -> int:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in SAMPLES.items():
        path = directory / name
        build(seed, vendor).save_as(path, enforce_file_format=True)
        written.append(str(path))
    sys.stdout.write(json.dumps({"written": written}) + "\n")
    return EXIT_OK


def auto_loop(unit: SimulatedUnit, period_s: float, stop: threading.Event) -> None:
    """Poll the worklist and perform every step not performed yet (the demo's technologist)."""
    done: set[str] = set()
    while not stop.is_set():
        try:
            for step in unit.poll_worklist():
                if step.sps_id and step.sps_id not in done:
                    done.add(step.sps_id)
                    unit.perform_step(step)
        except (UnitError, PhysicsError, OSError) as exc:
            log.warning("unit auto mode: %s", exc)
        stop.wait(period_s)


# --- Control surface ---------------------------------------------------------------------------


def summary(performed: PerformedStep) -> dict[str, Any]:
    return {
        "pps_uid": performed.sop_instance_uid,
        "sps_id": performed.step.sps_id if performed.step else None,
        "status": performed.status,
        "images": [
            {
                "sop_instance_uid": i.sop_instance_uid,
                "view": i.exposure.view.name,
                "laterality": i.exposure.view.laterality,
                "magnified": i.exposure.view.magnified,
                "agd_mgy": round(i.exposure.agd_mgy, 4),
                "sent_status": i.sent_status,
            }
            for i in performed.images
        ],
        "rdsr": str(performed.rdsr.SOPInstanceUID) if performed.rdsr is not None else None,
        "responses": performed.responses,
    }


def handle_command(unit: SimulatedUnit, request: dict[str, Any]) -> dict[str, Any]:
    """One control request → one reply (never raises for a bad request)."""
    cmd = request.get("cmd")
    try:
        if cmd == "status":
            state = unit.state
            return {
                "ok": True,
                "worklist": [s.sps_id for s in state.worklist],
                "performed": [summary(p) for p in state.performed.values()],
                "armed_faults": [f.value for f in state.armed_faults],
                "exposures": state.exposure_count,
            }
        if cmd == "poll":
            steps = unit.poll_worklist(request.get("date"))
            return {
                "ok": True,
                "steps": [{"sps_id": s.sps_id, "description": s.sps_description} for s in steps],
            }
        if cmd == "perform":
            step = next((s for s in unit.state.worklist if s.sps_id == request.get("sps_id")), None)
            if step is None:
                return {"ok": False, "error": f"no step {request.get('sps_id')!r}: poll first"}
            performed = unit.perform_step(
                step,
                request.get("views"),
                thickness_mm=float(request.get("thickness_mm", 45.0)),
                glandularity_pct=float(request.get("glandularity_pct", 40.0)),
                contrast=_contrast(request.get("contrast_ml")),
            )
            return {"ok": True, **summary(performed)}
        if cmd == "expose":
            images = unit.acquire(None, request.get("views") or ["L-CC"])
            statuses = unit.send_images(images)
            return {
                "ok": True,
                "images": [i.sop_instance_uid for i in images],
                "statuses": statuses,
            }
        if cmd == "fault":
            unit.arm_fault(str(request.get("name")))
            return {"ok": True}
    except (UnitError, PhysicsError, ValueError, TypeError, OSError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": False, "error": f"unknown command {cmd!r}"}


def _contrast(volume_ml: object) -> ContrastAdministration | None:
    if volume_ml is None:
        return None
    volume = float(volume_ml)  # type: ignore[arg-type]
    now = dt.datetime.now()
    start = (now - dt.timedelta(seconds=60)).time().replace(microsecond=0)
    return ContrastAdministration(
        (Injection(volume, start, now.time().replace(microsecond=0), volume / 60.0, 60.0),)
    )


class _ControlHandler(socketserver.StreamRequestHandler):
    server: ControlServer

    def handle(self) -> None:
        for raw in self.rfile:
            line = raw.strip()
            if not line:
                continue
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
            except ValueError as exc:
                reply: dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
            else:
                with self.server.lock:
                    reply = handle_command(self.server.unit, request)
            self.wfile.write((json.dumps(reply) + "\n").encode())
            self.wfile.flush()


class ControlServer(socketserver.ThreadingTCPServer):
    """The unit's JSON-lines control surface; one command at a time."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], unit: SimulatedUnit) -> None:
        self.unit = unit
        self.lock = threading.Lock()
        super().__init__(address, _ControlHandler)
