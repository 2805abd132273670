"""The unit's own steps, as its MPPS tells them: *Complete* waits for the unit to close.

A unit reports each phase step it performs by MPPS (N-CREATE IN PROGRESS … N-SET COMPLETED) to
the controller. While one of the exam's steps is still IN PROGRESS on the unit, the exam is not
complete: the unit may still expose, store images or send its dose report, and the final MPPS
toward the RIS would miss them. The controller reads the unit's MPPS store
(:meth:`dicom_nodes.unit_facing.mpps_store.SqliteMppsStore.in_progress`); *Complete* is then
refused with
:func:`busy_refusal` unless the technologist gives a reason to override (journaled): a unit
that never closes its step (a crash, a unit without MPPS) must not hold the room.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Refusal code of a *Complete* while a unit step is still in progress.
UNIT_STEP_IN_PROGRESS = "unit-step-in-progress"


def busy_refusal(steps: Sequence[str]) -> str:
    """Why *Complete* is refused while ``steps`` are in progress on the unit."""
    if len(steps) == 1:
        return f"the unit's step {steps[0]} is still in progress: close the patient on the unit"
    return (
        f"the unit's steps {', '.join(steps)} are still in progress: close the patient on the unit"
    )
