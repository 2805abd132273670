"""`galacto demo`: the controller in a simulated room, on one machine.

The controller runs as ``galacto serve`` would, with its database under ``--data-dir`` (default:
a new temporary directory), beside the simulated injector (on a real pseudo-terminal), RIS, PACS
and mammography unit, all on loopback. On start it prints one JSON line with its endpoints.

Without ``--auto`` the demo serves until Ctrl-C: open the console URL, log in with one of the
accounts the endpoints line lists (``console_users``: one per role, made for the data folder),
select the RIS order and run the exam; the simulated unit performs each phase the controller
offers on its worklist. ``--set console.port=8080`` puts the console on that port.

``--auto`` runs the scripted exam headless: the patient from the RIS worklist, the checklist,
pre-contrast left CC and ML, injection 1 (0.5 mL at 0.3 mL/min), CC and ML magnification,
injection 2 (0.3 mL), ML magnification, complete; it waits until the RIS holds the final MPPS and
the PACS every object, prints the per-exposure table and the per-breast total (``--json``: one
final JSON object instead) and exits 0; 1 when a step of the script failed (the reason on
stderr). ``--time-scale`` makes the simulated injections run faster than real time.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from acquisition import wiring
from acquisition.accounts import ROLES, Accounts
from acquisition.cli import EXIT_OK, EXIT_USAGE, Termination, configure_logging, load_config
from acquisition.controller import Controller
from acquisition.exam.model import ExamError, exam_exposures
from acquisition.exam.service import ExamService
from acquisition.exam_machine import ExamState, Refused
from acquisition.settings import parse_override
from dicom_nodes.datasets import codes
from dose.totals import per_breast_totals
from storage.files import create_private_file, open_private

DEFAULT_TIME_SCALE = 20.0
EXIT_FAILED = 1
OPERATOR = "demo technologist"
ALL_CLEAR = {"pregnancy_possible": False, "contrast_allergy": False, "active_mastitis": False}
ALL_CLEAR |= {"no_discharge": False}
#: The scripted exam (issue 4 §4): (phase, views the unit takes), injections between phases.
SCRIPT_VIEWS = {
    ExamState.PRE_CONTRAST: ("L-CC", "L-ML"),
    ExamState.POST_INJECTION_1: ("L-CC-MAG", "L-ML-MAG"),
    ExamState.POST_INJECTION_2: ("L-ML-MAG",),
}
INJECTIONS_ML = (0.5, 0.3)
RATE_ML_MIN = 0.3
#: Deadline of each wait of the script that does not depend on the injection's length.
STEP_TIMEOUT_S = 60.0
#: The demo's own journal key, in its data folder (a demo only).
DEMO_KEY_FILE = "journal.key"
#: The demo's console accounts (one per role) and their passwords, in its data folder.
DEMO_USERS_FILE = "console-users.json"

_SYMBOLS = {"TUNGSTEN": "W", "MOLYBDENUM": "Mo", "RHODIUM": "Rh", "SILVER": "Ag", "ALUMINUM": "Al"}
_VIEW_NAMES = {codes.VIEW_CC.value: "CC", codes.VIEW_ML.value: "ML", codes.VIEW_MLO.value: "MLO"}


class DemoError(RuntimeError):
    """A step of the scripted exam did not happen in time."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the controller with the simulated unit, injector, RIS and PACS",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--auto", action="store_true", help="run the scripted exam and exit")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        help=f"simulated injector seconds per real second (default {DEFAULT_TIME_SCALE:g})",
    )
    parser.add_argument("--json", action="store_true", help="one final JSON object (with --auto)")
    parser.add_argument("--data-dir", metavar="DIR", help="database and objects (default: temp)")
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the simulated equipment (default: a new one per run, so that a run over "
        "an earlier --data-dir never reuses the unit's UIDs)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.time_scale <= 0:
        print("galacto demo: --time-scale must be > 0", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level or "WARNING")
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="galacto-demo-")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    room_module = wiring.simulator("room")
    wiring.simulator("injsim").register()  # injsim:// URLs open in the demo (simulators.md)
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    # Interactive: a signal from the start-up on is a clean stop (the scripted run keeps the
    # default: SIGTERM ends it at once).
    termination = None if args.auto else Termination()
    with room_module.SimulatedRoom(time_scale=args.time_scale, seed=seed) as room:
        # what the user set (--set console.port=8080) wins over the room's choices
        chosen = {parse_override(text)[0] for text in args.overrides or ()}
        settings = {k: v for k, v in room.controller_settings(data_dir).items() if k not in chosen}
        config = load_config(args, **settings)
        if not config.site.journal_key:  # the demo's own key, kept with its data
            config = load_config(args, **settings, **demo_journal(data_dir))
        users = demo_accounts(Path(config.database.path), data_dir)
        order = room.schedule_order("L")
        with Controller(config) as controller:
            endpoints = controller.endpoints()
            print(json.dumps({**endpoints.as_json(), "console_users": users}), flush=True)
            unit = room.unit(endpoints.host, endpoints.port, endpoints.ae_title)
            if termination is not None:
                autopilot = room_module.UnitAutopilot(unit, injector=room.injector)
                return _serve(termination, autopilot, endpoints.console)
            started = time.monotonic()
            try:
                result = ScriptedExam(controller, room, room_module, unit, args.time_scale).run(
                    order.accession_number
                )
            except DemoError as exc:
                print(f"galacto demo: {exc}", file=sys.stderr)
                return EXIT_FAILED
            result["wall_time_s"] = round(time.monotonic() - started, 2)
            _print_result(result, as_json=args.json)
            return EXIT_OK


def demo_journal(data_dir: Path) -> dict[str, str]:
    """The demo's journal key (made once, kept in ``<data-dir>/journal.key``, 0600: a demo
    only — a site keeps its key away from the database) and its witness file."""
    key_file = data_dir / DEMO_KEY_FILE
    if create_private_file(key_file):
        with open_private(key_file, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32))
    return {
        "site.journal_key": key_file.read_text(encoding="ascii").strip(),
        "site.journal_witness": str(data_dir / "witness" / "journal-heads.log"),
    }


def demo_accounts(database: Path, data_dir: Path) -> list[dict[str, str]]:
    """One console account per role for this data folder (made once, their passwords kept in
    ``<data-dir>/console-users.json``, 0600: a demo only — a site makes its accounts with
    ``galacto users add``)."""
    users_file = data_dir / DEMO_USERS_FILE
    if users_file.exists():
        users: list[dict[str, str]] = json.loads(users_file.read_text(encoding="utf-8"))
    else:
        users = [
            {"username": f"demo-{role}", "password": secrets.token_urlsafe(12), "role": role}
            for role in ROLES
        ]
    with Accounts(database) as accounts:
        for user in users:
            if accounts.get(user["username"]) is None:
                accounts.add(user["username"], user["role"], user["password"])
    if create_private_file(users_file):
        with open_private(users_file, "w", encoding="utf-8") as out:
            json.dump(users, out, indent=1)
    return users


def _serve(termination: Termination, autopilot: Any, console_url: str) -> int:
    autopilot.start()
    print(
        f"galacto demo: console on {console_url} — log in as demo-technologist (its password "
        "is in the console_users of the line above), select the RIS order and run the exam; "
        "the simulated unit performs each phase offered on the worklist. Ctrl-C stops.",
        flush=True,
    )
    try:
        termination.wait()
    finally:
        autopilot.stop()
    return EXIT_OK


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; :class:`DemoError` naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


class ScriptedExam:
    """The technologist of the scripted exam (issue 4 §4), against a running controller."""

    def __init__(
        self, controller: Controller, room: Any, room_module: Any, unit: Any, time_scale: float
    ) -> None:
        self.controller = controller
        self.room = room
        self.room_module = room_module
        self.unit = unit
        self.time_scale = time_scale
        assert controller.exam is not None
        self.exam: ExamService = controller.exam

    def run(self, accession: str) -> dict[str, Any]:
        try:
            return self._run(accession)
        except (Refused, ExamError) as exc:
            raise DemoError(f"the exam refused a step of the script: {exc}") from exc

    def _run(self, accession: str) -> dict[str, Any]:
        exam = self.exam
        if exam.state is not ExamState.IDLE:
            raise DemoError(
                f"an exam is still open in this --data-dir ({exam.state.value}): finish it in "
                "the console (galacto demo without --auto), or use another --data-dir"
            )
        exam.select_order(self.ris_order(accession), "L", OPERATOR)
        if not exam.answer_checklist(ALL_CLEAR, OPERATOR):
            raise DemoError("the checklist did not pass")
        exam.pass_checklist(OPERATOR)
        self._image(ExamState.PRE_CONTRAST)
        exam.finish_pre_contrast(OPERATOR)
        exam.confirm_cannulation(OPERATOR)
        for number, volume_ml in enumerate(INJECTIONS_ML, start=1):
            exam.confirm_air_purge(OPERATOR)
            exam.start_injection(volume_ml, RATE_ML_MIN, OPERATOR)
            phase = ExamState.POST_INJECTION_1 if number == 1 else ExamState.POST_INJECTION_2
            length_s = volume_ml / RATE_ML_MIN * 60.0 / self.time_scale
            if not exam.wait_for_state(phase, length_s + STEP_TIMEOUT_S):
                raise DemoError(f"injection {number} did not end in {phase.value}")
            self._image(phase)
        exam.complete(OPERATOR)
        order = exam.order
        assert order is not None
        self._wait_for_delivery(order.mpps_instance_uid, order.study_instance_uid)
        result = self._result(order.accession)
        exam.close_exam(OPERATOR)  # the room is free for the next patient
        return result

    def ris_order(self, accession: str) -> Any:
        """The RIS order ``accession`` once the controller's worklist refresh has brought it."""
        orders = self.controller.orders
        refresher = self.controller.refresher
        if orders is None or refresher is None:
            raise DemoError("the controller has no RIS configured")

        def listed() -> bool:
            refresher.wake()
            return any(o.item.accession_number == accession for o in orders.orders())

        wait_until(listed, STEP_TIMEOUT_S, "the order on the RIS worklist")
        return next(o.item for o in orders.orders() if o.item.accession_number == accession)

    def _image(self, phase: ExamState) -> None:
        """The unit performs the phase's step once the controller offers it."""
        sps_id = self.exam.sps_id(phase)
        found: list[Any] = []

        def offered() -> bool:
            step = self.room_module.offered_step(self.unit, sps_id)
            if step is not None:
                found.append(step)
            return bool(found)

        wait_until(offered, STEP_TIMEOUT_S, f"the {phase.value} step on the unit's worklist")
        views = SCRIPT_VIEWS[phase]
        # The unit knows nothing of the injections: the controller completes the Contrast/Bolus
        # module of the post-contrast images it forwards (acquisition/forwarding.py).
        self.room_module.perform(self.unit, found[0], views)

        def counted() -> bool:
            facts = self.exam.facts()
            taken = (
                facts.pre_contrast_exposures
                if phase is ExamState.PRE_CONTRAST
                else facts.post_injection_exposures
            )
            return taken >= len(views)

        wait_until(counted, STEP_TIMEOUT_S, f"the {phase.value} exposures in the dose log")

    def _wait_for_delivery(self, mpps_uid: str, study_uid: str) -> None:
        """Until the RIS holds the final MPPS and every message of *this* exam is delivered
        (an earlier exam's failed message in the same --data-dir is not this exam's)."""
        ris, outbox = self.room.ris, self.controller.outbox
        assert outbox is not None

        def delivered() -> bool:
            mine = [m for m in outbox.messages() if _of_exam(m, mpps_uid, study_uid)]
            failed = [m for m in mine if m.state == "failed"]
            if failed:
                raise DemoError(
                    f"{len(failed)} message(s) of the exam failed for good: {failed[0].last_error}"
                )
            mpps = ris.mpps(mpps_uid)
            return (
                mpps is not None and mpps.is_final and not any(m.state == "pending" for m in mine)
            )

        wait_until(delivered, STEP_TIMEOUT_S, "the RIS and the PACS to hold everything")

    def _result(self, accession: str) -> dict[str, Any]:
        """This exam's exposures (an earlier exam of the same order in the same --data-dir
        has its own) and their reported AGD per breast."""
        view = self.exam.view()
        assert view is not None and view.order is not None
        order = view.order
        rows = exam_exposures(self.controller.dose_log, order.study_instance_uid, view.exposure_ids)
        totals = per_breast_totals(rows)
        exposures = [_exposure(row) for row in rows]
        contrast_ml = sum(c.delivered_ml for c in view.contrast)
        return {
            "exam": {
                "accession": accession,
                "exam_id": order.exam_id,
                "status": view.state.value,
            },
            "exposures": exposures,
            "agd_total_mgy": {side: round(t.agd_mgy, 3) for side, t in totals.breasts.items()},
            "agd_total": totals.as_json(),
            "agd_total_text": totals.describe(),
            "alerts": [
                {k: a[k] for k in ("id", "sop_instance_uid", "level_name", "value_mgy", "state")}
                for a in self.controller.dose_log.alerts(study=order.study_instance_uid)
            ],
            "objects_at_pacs": len(self.room.pacs.received()),
            "contrast_ml": round(contrast_ml, 3),
        }


def _of_exam(message: Any, mpps_uid: str, study_uid: str) -> bool:
    """An outbox message of the exam: its MPPS, or a file kept under its study's folder."""
    if message.sop_instance_uid == mpps_uid:
        return True
    return bool(message.file_path) and Path(message.file_path).parent.name == study_uid


def _exposure(row: dict[str, Any]) -> dict[str, Any]:
    modifiers = str(row.get("view_modifier_codes") or "").split(",")
    view = _VIEW_NAMES.get(str(row.get("view_code")), str(row.get("view_code") or "?"))
    if codes.MODIFIER_MAGNIFICATION.value in modifiers:
        view += " MAG"
    uas = row.get("exposure_uas")
    return {
        "phase": row.get("phase"),
        "view": view,
        "laterality": row.get("laterality"),
        "kvp": row.get("kvp"),
        "mas": None if uas is None else round(float(uas) / 1000.0, 1),
        "target": row.get("anode"),
        "filter": row.get("filter_material"),
        "thickness_mm": row.get("compressed_thickness_mm"),
        "agd_mgy": row.get("agd_reported_mgy"),
        "agd_computed_mgy": row.get("agd_computed_mgy"),
        "dance_check": row.get("dance_check"),
        "plausibility": row.get("plausibility") or "",
        "sop_instance_uid": row.get("sop_instance_uid"),
        "review": row.get("review_reasons") or "",
    }


def _print_result(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    header = (
        "phase",
        "view",
        "lat",
        "kV",
        "mAs",
        "target/filter",
        "thick mm",
        "AGD mGy",
        "Dance mGy",
        "check",
    )
    lines = [header]
    for e in result["exposures"]:
        target = f"{_SYMBOLS.get(e['target'], '?')}/{_SYMBOLS.get(e['filter'], '?')}"
        lines.append(
            (
                str(e["phase"]),
                e["view"],
                str(e["laterality"]),
                _num(e["kvp"], 0),
                _num(e["mas"], 1),
                target,
                _num(e["thickness_mm"], 0),
                _num(e["agd_mgy"], 3),
                _num(e["agd_computed_mgy"], 3),
                str(e["dance_check"] or "—"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    exam = result["exam"]
    print(
        f"\nAGD per breast: {result['agd_total_text']} · {len(result['alerts'])} alert(s) · exam "
        f"{exam['exam_id']} {exam['status']} · {result['contrast_ml']} mL contrast · "
        f"{result['objects_at_pacs']} objects at the PACS · {result['wall_time_s']} s",
        flush=True,
    )


def _num(value: Any, digits: int) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}"
