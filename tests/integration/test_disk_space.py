"""The free-space interlock (issue 12 §8): checked, against the real file systems, before an exam
opens and before each injection; below `database.min_free_mb` they are refused with the reason,
journaled, and the console says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from acquisition.exam_machine import ExamState, Refused
from tests.exam_room import OPERATOR, exam_room

pytestmark = pytest.mark.timeout(120)


def test_no_exam_and_no_injection_below_the_free_space_minimum(tmp_path: Path) -> None:
    with exam_room(tmp_path, overrides={"database.min_free_mb": 10**12}) as room:
        with pytest.raises(Refused, match=r"not enough disk space: only .* database\.path"):
            room.open_order()
        assert room.exam.state is ExamState.IDLE
        assert any("Disk space low" in line for line in room.controller.alerts())
        room.controller.free_space.min_free_mb = 1  # IT freed space
        assert room.controller.alerts() == []
        room.to_cannulation()
        room.controller.free_space.min_free_mb = 10**12  # the disk filled meanwhile
        room.exam.confirm_air_purge(OPERATOR)
        with pytest.raises(Refused, match="not enough disk space"):
            room.exam.start_injection(0.3, 0.3, OPERATOR)
        assert room.injector_sim.snapshot().run_count == 0
        refusals = [e for e in room.journal.entries() if e.kind == "refusal"]
        assert "not enough disk space" in refusals[-1].payload["reason"]
        room.controller.free_space.min_free_mb = 1
        room.inject(0.3, ExamState.POST_INJECTION_1)
        assert room.injector_sim.snapshot().run_count == 1
