"""Modality Worklist SCP toward the unit: C-FIND on 1.2.840.10008.5.1.4.31 (PS3.4 Annex K).

Compose it onto any AE (``dicom_nodes/unit_facing/server.py`` puts every unit-facing SCP on one
port)::

    scp = WorklistSCP(store, max_results=settings.dicom.worklist_max_results)
    for context in scp.contexts:
        ae.add_supported_context(context.abstract_syntax, context.transfer_syntax)
    ae.start_server(address, evt_handlers=scp.handlers() + NODELAY_HANDLERS)

Statuses (PS3.4 Table K.4-1) and why:

- ``FF00`` pending per match; ``FF01`` instead when the request carried a value on a key we
  do not match on, or asked for a return key we do not support (both then ignored);
- ``0000`` after the last match; ``FE00`` when the unit sends C-CANCEL (checked between
  responses);
- ``A700`` *Out of resources* after ``max_results`` pending responses when more steps
  match, with an Error Comment asking to refine the query. Annex K has no "partial result"
  warning (``B001`` exists only for Query/Retrieve), ``0000`` would claim a complete list
  the unit does not have, and a refusal without any item would leave the technologist with
  nothing: the first matches (by SPS start) followed by A700 is the honest answer;
- ``A900`` for an Identifier that does not fit the SOP Class (a sequence where a plain
  attribute belongs, several SPS items), ``C000`` for one that cannot be decoded, ``C001``
  for a matching request we cannot process (several values in a non-UID key).

Speed: pynetdicom spends ~0.3 ms encoding the command set and ~0.1 ms the identifier of each
C-FIND response. Within one request every pending response has the same command set, and
the identifiers were encoded when the steps were published, so the fast path
(:class:`dicom_nodes.compat.FastPendingSender`, pynetdicom's internals) encodes the command set
once and hands the DUL one P-DATA primitive per match. Its probe runs once at start-up
(:func:`dicom_nodes.compat.mwl_fast_path`); when it fails, the pending responses go through
pynetdicom's public generator, decoded from the pre-encoded identifiers (slower, the same
answers). The final status always goes through pynetdicom's normal path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from contextlib import closing
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from dicom_nodes import compat
from dicom_nodes.unit_facing.mwl_matching import QueryError, WorklistQuery, parse_query
from dicom_nodes.unit_facing.worklist_store import LATIN1, SUPPORTED_KEYS, WorklistStore

log = logging.getLogger(__name__)

MWL_FIND_UID = str(ModalityWorklistInformationFind)
TRANSFER_SYNTAXES = (str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian))

#: C-FIND statuses this SCP answers with (PS3.4 Table K.4-1, PS3.7 Annex C).
STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_PENDING_UNSUPPORTED_KEYS = 0xFF01
STATUS_CANCEL = 0xFE00
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_DECODE = 0xC000

#: SOP Class Extended Negotiation for MWL (PS3.4 §K.3.1): byte 2 is combined date-time
#: matching. Bytes 3 and 4 (fuzzy semantic PN matching, timezone adjustment) are refused.
_COMBINED_DATETIME_BYTE = 1

#: P-DATA primitives allowed to wait for the DUL thread before the handler pauses: keeps
#: memory flat and lets a C-CANCEL stop the answer promptly.
_SEND_QUEUE_HIGH_WATER = 16
_SEND_QUEUE_POLL_S = 0.0002
_ERROR_COMMENT_MAX = 64  # (0000,0902) is LO


def negotiate_extended(app_info: dict[str, bytes]) -> dict[str, bytes]:
    """Answer SOP Class Extended Negotiation for the MWL SOP Class (PS3.4 §K.3.1).

    Accepts combined date-time matching when proposed; every other byte answered 0.
    Other SOP classes are not answered here (the composing server merges answers).
    """
    proposed = app_info.get(MWL_FIND_UID)
    if not proposed:
        return {}
    accepted = bytearray(len(proposed))
    if len(proposed) > _COMBINED_DATETIME_BYTE and proposed[_COMBINED_DATETIME_BYTE] == 1:
        accepted[_COMBINED_DATETIME_BYTE] = 1
    return {MWL_FIND_UID: bytes(accepted)}


def combined_datetime_negotiated(assoc: Any) -> bool:
    """True if this association accepted combined date-time matching for MWL."""
    accepted: dict[str, bytes] = assoc.acceptor.sop_class_extended
    info = accepted.get(MWL_FIND_UID, b"")
    return len(info) > _COMBINED_DATETIME_BYTE and info[_COMBINED_DATETIME_BYTE] == 1


def status_dataset(status: int, comment: str) -> Dataset:
    """A status with an Error Comment (0000,0902); the comment never names a patient."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:_ERROR_COMMENT_MAX]
    return ds


class WorklistSCP:
    """The MWL C-FIND service over a :class:`WorklistStore`.

    ``max_results`` caps the pending responses of one request (``dicom.worklist_max_results``).
    ``fast``: answer through pynetdicom's internals (:mod:`dicom_nodes.compat`); None: as the
    start-up probe says (:attr:`slow_path_reason` then holds why not).
    """

    def __init__(
        self, store: WorklistStore, *, max_results: int = 5000, fast: bool | None = None
    ) -> None:
        if max_results < 1:
            raise ValueError("max_results must be at least 1")
        self.store = store
        self.max_results = max_results
        #: Why the public path answers (None: the fast path does).
        self.slow_path_reason = (
            compat.mwl_fast_path()
            if fast is None
            else (None if fast else "the fast path was turned off")
        )

    @property
    def contexts(self) -> list[PresentationContext]:
        """Presentation contexts to add to the AE as supported (SCP role)."""
        return [build_context(MWL_FIND_UID, list(TRANSFER_SYNTAXES))]

    def handlers(self) -> list[EventHandlerType]:
        """``evt_handlers`` for ``AE.start_server`` (add ``NODELAY_HANDLERS`` yourself).

        ``EVT_SOP_EXTENDED`` takes one handler per AE: a server that composes several SCPs
        needing it must merge :func:`negotiate_extended` with the others' answers.
        """
        return [
            (evt.EVT_C_FIND, self.handle_find),
            (evt.EVT_SOP_EXTENDED, self.handle_sop_extended),
        ]

    def handle_sop_extended(self, event: evt.Event) -> dict[str, bytes]:
        return negotiate_extended(dict(vars(event)["app_info"]))  # set dynamically by pynetdicom

    def handle_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """``EVT_C_FIND``: the pending responses (through the fast sender, or yielded), then
        the final status."""
        if str(event.request.AffectedSOPClassUID) != MWL_FIND_UID:
            yield 0x0122, None  # SOP Class not supported
            return
        try:
            query = self._parse(event)
        except QueryError as exc:
            log.warning("worklist query refused (0x%04X): %s", exc.status, exc)
            yield status_dataset(exc.status, str(exc)), None
            return
        started = time.perf_counter()
        answer = self._answer(event, query)
        while True:  # the public path's pending responses, then the outcome
            try:
                yield next(answer)
            except StopIteration as done:
                sent, final = done.value
                break
        log.info(
            "worklist query from %s: %d match(es) sent, %s, %.1f ms",
            event.assoc.requestor.ae_title,
            sent,
            "complete" if final is None else "ended early",
            (time.perf_counter() - started) * 1000,
        )
        if final is not None:
            yield final

    def _parse(self, event: evt.Event) -> WorklistQuery:
        try:
            identifier = event.identifier
        except Exception as exc:  # pydicom raises several types for malformed data
            raise QueryError(
                "the request identifier cannot be decoded", STATUS_CANNOT_DECODE
            ) from exc
        return parse_query(
            identifier,
            combined_datetime=combined_datetime_negotiated(event.assoc),
            supported_keys=SUPPORTED_KEYS,
        )

    def _answer(
        self, event: evt.Event, query: WorklistQuery
    ) -> Generator[tuple[int, Dataset], None, tuple[int, tuple[int | Dataset, None] | None]]:
        """Send the pending responses (yielded on the public path); return how many and the
        final status (None: success)."""
        explicit = str(event.context.transfer_syntax) != TRANSFER_SYNTAXES[0]
        latin1 = bool(query.character_sets) and query.character_sets[0] == LATIN1
        status = STATUS_PENDING_UNSUPPORTED_KEYS if query.unsupported else STATUS_PENDING
        fast = compat.FastPendingSender(event, status) if self.slow_path_reason is None else None
        sent = 0
        with closing(self.store.find(query, explicit_vr=explicit, latin1=latin1)) as matches:
            for identifier in matches:
                if event.is_cancelled:
                    return sent, (STATUS_CANCEL, None)
                if not event.assoc.is_established:
                    return sent, None
                if sent == self.max_results:
                    comment = f"More than {self.max_results} matches; refine the query"
                    return sent, (status_dataset(STATUS_OUT_OF_RESOURCES, comment), None)
                if fast is not None:
                    fast.send(identifier)
                else:
                    yield status, compat.decode_identifier(identifier, explicit_vr=explicit)
                sent += 1
        return sent, None
