"""IHE Scheduled Workflow identity end to end, against the simulated RIS and PACS (issue 11).

The controller in the simulated room (tests/exam_room.py): where the MPPS goes, what the unit's
worklist returns of the RIS order, the identity the forwarded objects carry, when the final MPPS
leaves, and how the outbox recovers from a RIS that lost the MPPS or a PACS that refuses a
transfer syntax. The same is proven against Orthanc in tests/interop/test_orthanc.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.ris import SimulatedRis
from tests.exam_room import WAIT_S, exam_room

pytestmark = pytest.mark.timeout(90)


def test_the_mpps_goes_to_its_own_manager_and_the_worklist_to_the_ris(tmp_path: Path) -> None:
    """ris.mpps_host / ris.mpps_port: the MPPS manager split from the worklist provider."""
    with SimulatedRis("MPPS_MGR") as manager:
        host, port = manager.address
        overrides = {"ris.mpps_host": host, "ris.mpps_port": port, "ris.mpps_ae_title": "MPPS_MGR"}
        with exam_room(tmp_path, overrides=overrides) as room:
            order = room.open_order("L")  # listed from the worklist provider, the room's RIS
            assert manager.wait_for(
                lambda: manager.mpps(order.mpps_instance_uid) is not None, WAIT_S
            ), "the MPPS manager got no N-CREATE"
            assert room.ris.mpps_instances() == []
            assert room.ris.queries() >= 1
