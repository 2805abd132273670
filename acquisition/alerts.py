"""What the technologist must be told about the messages to the hospital (the console's alerts).

:func:`outbox_alerts` turns the outbox's stuck and failed messages into one sentence per
destination: stuck longer than ``pacs.stuck_alert_s`` (galacto keeps trying), and failed for good
within the last ``failed_window_s`` (never retried; the journal lists them).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dicom_nodes.hospital.outbox import Outbox


def outbox_alerts(
    outbox: Outbox,
    stuck_alert_s: float,
    failed_window_s: float,
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """One line per destination with stuck messages, and one per destination with failed ones
    (an unreadable outbox is an alert of its own)."""
    out = []
    try:
        stuck = outbox.stuck(stuck_alert_s)
        failed = outbox.failed(clock() - failed_window_s)
    except Exception as exc:
        return [f"outbox not readable: {exc}"]
    for destination in dict.fromkeys(m.destination for m in stuck):
        mine = [m for m in stuck if m.destination == destination]
        age_min = (clock() - mine[0].created_at_s) / 60.0
        out.append(
            f"{len(mine)} message(s) to the {destination.upper()} not delivered for "
            f"{age_min:.0f} min ({mine[0].last_error or 'not answered yet'}). galacto keeps "
            f"trying; ask the {destination.upper()} administrator."
        )
    for destination in dict.fromkeys(m.destination for m in failed):
        mine = [m for m in failed if m.destination == destination]
        out.append(
            f"{len(mine)} message(s) to the {destination.upper()} failed for good and are "
            f"not retried ({mine[-1].last_error or 'refused'}). Ask the "
            f"{destination.upper()} administrator; the journal lists them."
        )
    return out
