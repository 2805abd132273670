"""A physicist's acknowledgement of a dose alert: one way for ``galacto dose ack`` and the
physicist's page (issue 9 §5, issue 14).

The journal first (``dose-alert-acknowledged``, with who and how they were identified: the OS
user, or a console account holding the physicist role), then the alert's row: an
acknowledgement that is not journaled did not happen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from acquisition.dose_log import ALERT_OPEN, AlertStateError, DoseLog
from acquisition.exam.model import operator_origin
from acquisition.journal import Journal

#: The longest reason kept (one line of text).
MAX_REASON = 500


class AcknowledgementError(ValueError):
    """The alert cannot be acknowledged (unknown, acknowledged already, no reason)."""


def clean_reason(reason: object) -> str:
    """One line of text, at most :data:`MAX_REASON` characters (:class:`AcknowledgementError`)."""
    text = " ".join(reason.split()) if isinstance(reason, str) else ""
    if not text or any(ord(c) < 0x20 for c in text) or len(text) > MAX_REASON:
        raise AcknowledgementError(
            f"the reason must be a non-empty line of text of at most {MAX_REASON} characters"
        )
    return text


def acknowledge(
    dose_log: DoseLog,
    journal: Journal,
    alert_id: int,
    *,
    user: str,
    reason: str,
    identified_as: str,
) -> Mapping[str, Any]:
    """Acknowledge an open alert as ``user`` (an :class:`~acquisition.exam.model.Operator`
    adds where it came from); the alert as it was. :class:`~acquisition.journal.JournalError`
    when the journal cannot be written (nothing is changed)."""
    text = clean_reason(reason)
    alert = dose_log.alert(alert_id)
    if alert is None:
        raise AcknowledgementError(f"no alert {alert_id}")
    if alert["state"] != ALERT_OPEN:
        raise AcknowledgementError(
            f"alert {alert_id} was already acknowledged by {alert['acknowledged_by']} at "
            f"{alert['acknowledged_at']}"
        )
    payload = {
        "alert_id": alert["id"],
        "sop_instance_uid": alert["sop_instance_uid"],
        "level_id": alert["level_id"],
        "value_mgy": alert["value_mgy"],
        "limit_mgy": alert["limit_mgy"],
        "reason": text,
        "identified_as": identified_as,
        **operator_origin(user),
    }
    journal.append("dose-alert-acknowledged", payload, operator=user)
    try:
        dose_log.acknowledge_alert(alert_id, user=str(user), reason=text)
    except AlertStateError as exc:  # acknowledged meanwhile by someone else
        raise AcknowledgementError(str(exc)) from exc
    return alert
