"""Who may associate with the unit-facing server, and how many at once (issue 12 §3).

Real pynetdicom associations over loopback: every refusal is an A-ASSOCIATE-RJ with the reason
the standard gives it, idle associations are dropped, and however many associations other
callers hold, the unit still gets in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from acquisition.dose_log import DoseLog
from dicom_nodes.network import Timeouts
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.server import UnitFacingServer
from dicom_nodes.unit_facing.worklist_store import WorklistStore
from tests.dose_factories import scu_ae
from tests.waiting import eventually

VERIFICATION = "1.2.840.10008.1.1"
UNIT = "MG_SIM"


class Room:
    """The server, and the associations the test opened (all released at the end)."""

    def __init__(self, server: UnitFacingServer) -> None:
        self.server = server
        self.rejections: list[tuple[str, str, str, str, int]] = []
        self._opened: list[tuple[Any, Any]] = []

    def associate(self, calling: str, called: str = "GALACTO") -> Any:
        ae: Any = scu_ae(VERIFICATION, ae_title=calling)
        host, port = self.server.address
        assoc = ae.associate(host, port, ae_title=called)
        self._opened.append((ae, assoc))
        return assoc

    def close(self) -> None:
        for ae, assoc in self._opened:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()


@pytest.fixture
def room_factory(tmp_path: Path) -> Iterator[Callable[..., Room]]:
    db = tmp_path / "galacto.db"
    worklist, mpps, dose_log = WorklistStore(db), SqliteMppsStore(db), DoseLog(db)
    rooms: list[Room] = []

    def make(**options: Any) -> Room:
        holder: list[Room] = []
        server = UnitFacingServer(
            worklist,
            mpps,
            dose_log,
            port=0,
            storage_dir=tmp_path / "objects",
            reserved_calling_aes=(UNIT,),
            on_rejected=lambda *report: holder[0].rejections.append(report),
            **options,
        )
        room = Room(server)
        holder.append(room)
        rooms.append(room)
        server.start()
        return room

    yield make
    for room in rooms:
        room.close()
        room.server.stop()
    dose_log.close()
    mpps.close()


def rejection(assoc: Any) -> tuple[int, int, int]:
    assert assoc.is_rejected, "the association was not rejected"
    rj = assoc.acceptor.primitive
    return int(rj.result), int(rj.result_source), int(rj.diagnostic)


def test_a_called_ae_title_that_is_not_ours_is_rejected(room_factory: Any) -> None:
    room = room_factory()
    assert rejection(room.associate(UNIT, called="SOMEONE_ELSE")) == (1, 1, 7)
    assert room.associate(UNIT).is_established
    ((calling, called, _address, why, count),) = room.rejections
    assert (calling, called, count) == (UNIT, "SOMEONE_ELSE", 1) and "not ours" in why


def test_a_calling_ae_title_not_allowed_is_rejected(room_factory: Any) -> None:
    room = room_factory(allowed_calling_aes=(UNIT,))
    assert rejection(room.associate("INTRUDER")) == (1, 1, 3)
    assert room.associate(UNIT).is_established
    assert room.rejections[0][0] == "INTRUDER"


def test_one_calling_ae_cannot_lock_the_unit_out(room_factory: Any) -> None:
    """Ten idle associations from one caller: its quota stops it, the unit gets in."""
    room = room_factory(max_associations=12, max_associations_per_calling_ae=4)
    held = [room.associate("ROGUE") for _ in range(10)]
    assert [a.is_established for a in held] == [True] * 4 + [False] * 6
    assert rejection(held[-1]) == (2, 3, 2)  # transient, local limit exceeded
    unit = room.associate(UNIT)
    assert unit.is_established and unit.send_c_echo().Status == 0
    # the rejections of one caller for one reason are reported once, not six times
    assert [(r[0], r[4]) for r in room.rejections] == [("ROGUE", 1)]


def test_many_callers_together_leave_the_unit_its_slots(room_factory: Any) -> None:
    room = room_factory(max_associations=6, max_associations_per_calling_ae=2)
    others = [room.associate(f"OTHER{i}") for i in range(6)]
    assert sum(a.is_established for a in others) == 4  # 6 - 2 kept for the unit
    assert rejection(others[-1]) == (2, 3, 2)
    assert [room.associate(UNIT).is_established for _ in range(3)] == [True, True, False]


def test_a_released_association_frees_its_slot(room_factory: Any) -> None:
    room = room_factory(max_associations=4, max_associations_per_calling_ae=1)
    first = room.associate("ROGUE")
    assert first.is_established and room.associate("ROGUE").is_rejected
    first.release()
    assert eventually(lambda: room.server.admission.admitted().get("ROGUE", 0) == 0, 10.0)
    assert room.associate("ROGUE").is_established


def test_an_idle_association_is_dropped_and_its_slot_freed(room_factory: Any) -> None:
    room = room_factory(
        max_associations=3,
        max_associations_per_calling_ae=1,
        timeouts=Timeouts(network_s=0.5),
    )
    idle = room.associate("ROGUE")
    assert idle.is_established
    assert eventually(lambda: not idle.is_established, 10.0), "the idle association stayed"
    assert idle.is_aborted
    assert eventually(lambda: room.associate("ROGUE").is_established, 10.0)
