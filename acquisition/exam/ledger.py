"""The exam's ledger: journal first, then fold, then publish (style.md §4).

:class:`ExamLedger` is the only writer of the open exam's record. :meth:`ExamLedger.append`
journals an entry (durable on return), folds it into the :class:`~acquisition.exam.record.
ExamRecord` and publishes a fresh :class:`~acquisition.exam.model.ExamSnapshot`; a refusal and a
transition are entries like any other, a transition then moves the worklist step of the phase
and lets the reporter catch up. A journal that cannot be written is a logging fault: the entry
is not applied, ``on_failure`` is told (the service stops a running injection first) and the
step stops with :class:`~acquisition.exam.model.JournalUnavailable`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from acquisition.exam.model import ExamReporter, ExamSnapshot, JournalUnavailable, operator_origin
from acquisition.exam.record import ExamRecord
from acquisition.exam.worklist import PhaseWorklist
from acquisition.exam_machine import ExamEvent, ExamFacts, ExamState, Refused, next_state
from acquisition.journal import Entry, Journal, JournalError

log = logging.getLogger(__name__)


class ExamLedger:
    """The open exam's record, written only through its journal (see the module docstring).

    ``facts(record, injector_healthy)`` gives the interlocks' facts of a record (the service's
    limits and syringe); ``injector_healthy()`` is read live; ``on_failure(exc, on_driver_thread)``
    hears each failed journal write. Not thread-safe by itself: the service's lock guards it.
    """

    def __init__(
        self,
        journal: Journal,
        record: ExamRecord,
        *,
        clock: Callable[[], dt.datetime],
        steps: PhaseWorklist,
        reporter: ExamReporter | None,
        changed: threading.Condition,
        facts: Callable[[ExamRecord, bool], ExamFacts],
        injector_healthy: Callable[[], bool],
        on_failure: Callable[[Exception, bool], None],
    ) -> None:
        self._journal = journal
        self.record = record
        self._clock = clock
        self._steps = steps
        self._reporter = reporter
        self._changed = changed
        self._facts = facts
        self._injector_healthy = injector_healthy
        self._on_failure = on_failure
        #: Why the journal could not be written (None when it can): commands are refused.
        self.journal_fault: str | None = None
        self.published = self._snapshot()

    @property
    def exam_id(self) -> str | None:
        order = self.record.order
        return None if order is None else order.exam_id

    def facts(self) -> ExamFacts:
        return self._facts(self.record, self._injector_healthy())

    # ------------------------------------------------------------------ entries

    def append(
        self,
        kind: str,
        payload: Mapping[str, Any],
        operator: str | None,
        exam_id: str | None = None,
    ) -> Entry:
        """Journal one entry (durable on return), fold it into the record, publish. An
        :class:`~acquisition.exam.model.Operator` adds where the command came from."""
        try:
            entry = self._journal.append(
                kind,
                {**payload, **operator_origin(operator)},
                exam_id=exam_id or self.exam_id,
                operator=operator,
                now=self._clock(),
            )
        except JournalError as exc:
            self.failed(exc)
            raise JournalUnavailable(
                f"the journal cannot be written ({exc}): the exam is paused"
            ) from exc
        self.record.apply(entry)
        self.published = self._snapshot()
        return entry

    def append_unfolded(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        attached: bool,
        on_driver_thread: bool = False,
    ) -> None:
        """Journal an entry the record does not fold: of the open exam (``attached``: an
        injector event) or of none (an exposure of no open exam). ``on_driver_thread``: it is
        written from the injector driver's own thread (see ``on_failure``)."""
        exam_id = self.exam_id if attached else None
        try:
            self._journal.append(kind, payload, exam_id=exam_id, now=self._clock())
        except JournalError as exc:
            self.failed(exc, on_driver_thread=on_driver_thread)
            raise JournalUnavailable(f"the journal cannot be written ({exc})") from exc

    def failed(self, exc: Exception, *, on_driver_thread: bool = False) -> None:
        """A logging fault: commands are refused until the journal can be written again."""
        if self.journal_fault is None:
            log.critical("journal write failed: %s; commands refused until it recovers", exc)
        self.journal_fault = str(exc)
        self._on_failure(exc, on_driver_thread)

    def _snapshot(self) -> ExamSnapshot:
        record = self.record
        return ExamSnapshot(
            record.state,
            record.order,
            self._facts(record, False),
            self.journal_fault,
            tuple(record.contrast),
            frozenset(record.noted_exposures),
            record.discontinuation_reason,
            record.fault_reason,
            (record.injection_running or {}).get("started_at"),
        )

    def view(self) -> ExamSnapshot | None:
        """The published snapshot of the open exam (None when no exam is open)."""
        published = self.published
        return published if published.order is not None else None

    # ------------------------------------------------------------------ the machine

    def refuse(
        self,
        event: ExamEvent,
        reason: str,
        operator: str | None,
        details: Mapping[str, str] | None = None,
    ) -> NoReturn:
        """Journal the refusal of ``event`` and raise it as :class:`Refused`."""
        state = self.record.state
        payload = {"event": event.value, "state": state.value, "reason": reason, **(details or {})}
        self.append("refusal", payload, operator)
        log.info("%s refused in %s: %s", event.value, state.value, reason)
        raise Refused(event, state, reason, details)

    def check(self, event: ExamEvent, facts: ExamFacts, operator: str | None) -> ExamState:
        """The machine's decision on ``event``; a refusal is journaled and raised."""
        try:
            return next_state(self.record.state, event, facts)
        except Refused as refused:
            self.refuse(event, refused.reason, operator)

    def transition(
        self, event: ExamEvent, target: ExamState, operator: str | None, **detail: Any
    ) -> None:
        """Journal the transition, move the phase's worklist step, let the reporter catch up."""
        before = self.record.state
        payload = {"event": event.value, "from": before.value, "to": target.value, **detail}
        self.append("transition", payload, operator)
        self._steps.sync(self.record.order, before, target)
        self.report()
        self._changed.notify_all()
        log.info("exam: %s -> %s (%s)", before.value, target.value, event.value)

    def transition_checked(self, event: ExamEvent, operator: str | None, **detail: Any) -> None:
        target = self.check(event, self.facts(), operator)
        self.transition(event, target, operator, **detail)

    # ------------------------------------------------------------------ outward

    def report(self) -> None:
        """Let the reporter enqueue what the outbox lacks. Its failure never stops the exam:
        the outbox is durable and the next sync (every transition, every tick) catches up."""
        view = self.view()
        if self._reporter is None or view is None:
            return
        try:
            self._reporter.sync(view)
        except Exception:
            log.exception("exam reporting failed; retried at the next sync")

    def sync_reporter(self) -> None:
        """Like :meth:`report`, but a failure is raised (closing an exam needs its report)."""
        view = self.view()
        if self._reporter is not None and view is not None:
            self._reporter.sync(view)

    def restore_worklist(self) -> None:
        """Offer only the current phase's step (a crash or a failed write may have come
        between a transition and its worklist change)."""
        order = self.record.order
        if order is not None:
            self._steps.restore(order, self.record.state)
