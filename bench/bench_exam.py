"""The exam end to end (issue 4 §6): auto demo wall time, controller start-up, memory.

Figures (2-core machine):
- wall time of ``galacto demo --auto --json --time-scale 60`` (median of 3; goal < 15 s), with
  the share that is simulated physics (the two injections: 0.8 mL at 0.3 mL/min = 160 s of
  pump time, 2.67 s at ×60) and the rest (imports, simulators, DICOM, SQLite, waits);
- start-up to ready of ``galacto serve`` (process start to its endpoints line), on an empty
  database and on one holding 200 finished exams' journal entries;
- the controller's memory: resident set of the ``galacto serve`` process at ready and its peak
  (VmHWM) after a whole scripted exam driven through its console.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from acquisition.commands.demo import ALL_CLEAR, INJECTIONS_ML, SCRIPT_VIEWS
from acquisition.exam.model import ExamOrder, Patient
from acquisition.exam_machine import ExamState
from acquisition.journal import Journal
from simulators.room import SimulatedRoom
from tests.integration.test_crash_restart import Bench
from tests.serve_process import ServeProcess, write_config

RUNS = 3
TIME_SCALE = 60.0
DEMO = (sys.executable, "-m", "acquisition", "demo", "--auto", "--json")
PHYSICS_S = (0.5 + 0.3) / 0.3 * 60.0 / TIME_SCALE


def settings(room: SimulatedRoom, data: Path) -> dict[str, object]:
    """The room's controller settings, with a journal key (serve refuses to run without)."""
    return {**room.controller_settings(data), "site.journal_key": "bench-journal-key"}


def _demo_wall_s() -> tuple[float, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="galacto-bench-") as data_dir:
        started = time.monotonic()
        result = subprocess.run(
            [*DEMO, "--time-scale", str(TIME_SCALE), "--data-dir", data_dir],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        wall = time.monotonic() - started
    return wall, json.loads(result.stdout.splitlines()[-1])


def _memory_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def _fill_journal(database: Path, exams: int) -> None:
    """A journal holding ``exams`` closed exams of ~60 entries each."""
    with Journal(database) as journal:
        for n in range(exams):
            exam_id = f"BENCH{n:05d}"
            patient = Patient("BENCH^P", exam_id, "", "F")
            order = ExamOrder(exam_id, exam_id, f"1.2.3.{n}", patient, "L")
            journal.append("exam-opened", {"order": order.to_json()}, exam_id=exam_id)
            for i in range(58):
                journal.append("command", {"command": "x", "i": i}, exam_id=exam_id)
            payload = {"event": "close", "from": "completed", "to": "idle"}
            journal.append("transition", payload, exam_id=exam_id)


def _median_start_s(serve: ServeProcess) -> float:
    """Process start to the endpoints line, median of RUNS starts and clean stops."""
    starts = []
    for _ in range(RUNS):
        serve.start()
        starts.append(serve.started_in_s)
        serve.stop()
    return statistics.median(starts)


def _scripted_exam_over_the_console(bench: Bench) -> None:
    """The scripted exam of the demo, driven through the console as a technologist would."""
    bench.open_order()
    bench.command("answer-checklist", answers=ALL_CLEAR, override=None)
    for phase, views in SCRIPT_VIEWS.items():
        if phase is not ExamState.PRE_CONTRAST:
            volume = INJECTIONS_ML[0 if phase is ExamState.POST_INJECTION_1 else 1]
            bench.inject(volume, phase)
        bench.image(phase, views)
        key = "pre" if phase is ExamState.PRE_CONTRAST else "post"
        wanted = len(views)
        bench.wait_for(lambda s, k=key, n=wanted: _taken(s, k) == n, f"{phase.value} exposures")
        if phase is ExamState.PRE_CONTRAST:
            bench.command("finish-pre-contrast")
            bench.command("confirm-cannulation")
    bench.command("complete")


def _taken(state: dict[str, Any], key: str) -> int:
    facts = state["facts"]
    return int(facts["pre_contrast_exposures" if key == "pre" else "post_injection_exposures"])


def _serve_figures() -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="galacto-bench-") as tmp:
        data = Path(tmp)
        with SimulatedRoom(time_scale=TIME_SCALE) as room:
            config = write_config(
                data / "galacto.toml",
                {**room.controller_settings(data), "site.journal_key": "bench-journal-key"},
            )
            order = room.schedule_order("L")
            with ServeProcess(config, data / "serve.log") as serve:
                figures["start_empty_s"] = _median_start_s(serve)
                bench = Bench(room, serve, data / "galacto.db", order.accession_number)
                bench.start()
                figures["rss_ready_mb"] = _memory_kb(serve.pid)["VmRSS"] / 1024
                _scripted_exam_over_the_console(bench)
                memory = _memory_kb(serve.pid)
                figures["rss_after_exam_mb"] = memory["VmRSS"] / 1024
                figures["peak_rss_mb"] = memory["VmHWM"] / 1024
                serve.stop()
    with tempfile.TemporaryDirectory(prefix="galacto-bench-") as tmp:
        data = Path(tmp)
        with SimulatedRoom(time_scale=TIME_SCALE) as room:
            config = write_config(
                data / "galacto.toml",
                {**room.controller_settings(data), "site.journal_key": "bench-journal-key"},
            )
            _fill_journal(data / "galacto.db", 200)
            with ServeProcess(config, data / "serve.log") as serve:
                figures["start_200_exams_s"] = _median_start_s(serve)
    return figures


def main() -> None:
    walls = []
    for _ in range(RUNS):
        wall, final = _demo_wall_s()
        walls.append(wall)
    wall = statistics.median(walls)
    runs = ", ".join(f"{w:.2f}" for w in walls)
    print(f"auto demo at x{TIME_SCALE:g}: wall {wall:.2f} s (runs {runs}; goal < 15 s)")
    print(
        f"  simulated physics {PHYSICS_S:.2f} s ({PHYSICS_S / wall:.0%}); in-demo exam "
        f"{final['wall_time_s']:.2f} s; the rest is interpreter start, imports and set-up"
    )
    figures = _serve_figures()
    print(f"galacto serve start-up to ready: {figures['start_empty_s']:.2f} s (empty database)")
    print(f"  with 200 closed exams in the journal: {figures['start_200_exams_s']:.2f} s")
    print(
        f"controller memory (galacto serve alone): {figures['rss_ready_mb']:.0f} MB at ready, "
        f"{figures['rss_after_exam_mb']:.0f} MB after the scripted exam, peak "
        f"{figures['peak_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
