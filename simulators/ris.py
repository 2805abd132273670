"""A simulated RIS: Modality Worklist SCP with demo galactography orders, and an MPPS SCP.

What it models
--------------
- **Modality Worklist** (PS3.4 Annex K) over the demo orders of :mod:`simulators.ris_orders`
  (today's galactography orders, non-ASCII names with their Specific Character Set, allergies,
  pregnancy status, medical alerts, requested contrast agent). Matching, the return-key
  selection and the refusal of malformed identifiers are those of
  :mod:`dicom_nodes.unit_facing.mwl_matching` (PS3.4 §C.2.2.2, §K.2.2); values on keys it does not
  match on
  are answered Pending FF01 (Table K.4-1). C-CANCEL is honoured between responses (Cancel FE00).
- **MPPS** (PS3.4 Annex F) through :class:`dicom_nodes.unit_facing.mpps_scp.MppsSCP`, so the RIS
enforces
  the same rules as the controller (0106H, 0110H + A710, 0111H, 0112H, 0120H/0121H) with an
  in-memory store that records every N-CREATE / N-SET as received and the status answered.
- **Faults** (mutable at run time through ``ris.faults``): a delay before each worklist
  response and before each MPPS answer; ``down()``/``up()`` (stops listening, comes back on the
  same port).

What it does NOT model
----------------------
No HL7 side, no order changes driven by MPPS (a completed step stays SCHEDULED in the
worklist), no combined date-time matching (no SOP Class Extended Negotiation), no
case-insensitive name matching, no persistence (everything is lost at ``stop()``), no calling-AE
allow-list, no TLS. Orders are for one day; more than 36 orders wrap around the day's slots.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)

from dicom_nodes.datasets.codes import Code, CodeError
from dicom_nodes.network import Timeouts, make_ae
from dicom_nodes.unit_facing.mpps_scp import MppsSCP
from dicom_nodes.unit_facing.mpps_store import MppsInstance, ReceivedMessage
from dicom_nodes.unit_facing.mwl_matching import (
    QueryError,
    ReturnKeys,
    WorklistQuery,
    column_values,
    parse_query,
    requested_keys,
    select_return_keys,
)

from .dicom_peer import SimulatedPeer
from .pacs import wait_until
from .ris_orders import DemoOrder, generate_orders, worklist_item

log = logging.getLogger(__name__)

#: C-FIND statuses (PS3.4 Table K.4-1).
STATUS_PENDING = 0xFF00
STATUS_PENDING_UNSUPPORTED_KEYS = 0xFF01
STATUS_CANCELLED = 0xFE00

FINAL_STATES = frozenset({"COMPLETED", "DISCONTINUED"})


@dataclass
class RisFaults:
    """Fault controls; tests and the CLI change them while the RIS runs."""

    #: Pause before each C-FIND Pending response (lets a client's C-CANCEL arrive mid-query).
    find_response_delay_s: float = 0.0
    #: Pause before each MPPS N-CREATE / N-SET is processed.
    mpps_delay_s: float = 0.0
    #: Forget each MPPS right after its N-CREATE was accepted (its N-SETs then get 0112H): a
    #: RIS that keeps losing what it is sent.
    lose_created_mpps: bool = False


@dataclass
class RisMpps:
    """What the RIS knows of one MPPS instance (merged state and every accepted message)."""

    sop_instance_uid: str
    status: str
    calling_ae: str
    dataset: Dataset
    messages: list[ReceivedMessage] = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def created(self) -> Dataset | None:
        """The attributes of the accepted N-CREATE."""
        for message in self.messages:
            if message.operation == "N-CREATE" and message.status_code == 0:
                return message.dataset
        return None

    @property
    def discontinuation_reason(self) -> Code | None:
        """The CID 9301 reason of a DISCONTINUED step (PS3.3 C.4.14), if one was given."""
        items = self.dataset.get("PerformedProcedureStepDiscontinuationReasonCodeSequence")
        if not items:
            return None
        try:
            return Code.from_item(items[0])
        except CodeError:
            return None


class _RisMppsStore:
    """:class:`dicom_nodes.unit_facing.mpps_store.MppsStore` in memory, notifying the RIS of each
    change."""

    def __init__(self, changed: threading.Condition) -> None:
        self._changed = changed
        self.instances: dict[str, RisMpps] = {}
        self.messages: list[ReceivedMessage] = []

    def get(self, sop_instance_uid: str) -> MppsInstance | None:
        with self._changed:
            known = self.instances.get(sop_instance_uid)
            if known is None:
                return None
            return MppsInstance(
                known.sop_instance_uid,
                known.status,
                known.calling_ae,
                copy.deepcopy(known.dataset),
            )

    def save(
        self,
        instance: MppsInstance,
        *,
        created: bool,
        step_totals: dict[str, Any] | None = None,
    ) -> None:
        with self._changed:
            uid = instance.sop_instance_uid
            if created and uid in self.instances:
                raise KeyError(f"MPPS instance {uid} exists")
            known = self.instances.setdefault(
                uid, RisMpps(uid, instance.status, instance.calling_ae, instance.dataset)
            )
            known.status = instance.status
            known.dataset = copy.deepcopy(instance.dataset)
            self._changed.notify_all()

    def log_message(self, message: ReceivedMessage) -> None:
        message = dataclasses.replace(message, dataset=copy.deepcopy(message.dataset))
        with self._changed:
            self.messages.append(message)
            known = self.instances.get(message.sop_instance_uid or "")
            if known is not None:
                known.messages.append(message)
            self._changed.notify_all()


@dataclass(frozen=True)
class _WorklistEntry:
    order: DemoOrder
    item: Dataset
    values: dict[str, str]  #: normalised matching-key values (mwl_matching.column_values)


class SimulatedRis(SimulatedPeer):
    """MWL SCP + MPPS SCP; see the module docstring for what it models."""

    def __init__(
        self,
        ae_title: str = "RIS",
        seed: int = 0,
        orders: int = 0,
        station_ae: str = "GALACTO",
        *,
        day: dt.date | None = None,
        faults: RisFaults | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        super().__init__(ae_title, timeouts if timeouts is not None else Timeouts(dimse_s=10.0))
        self.seed = seed
        self.station_ae = station_ae
        self.day = day
        self.faults = faults if faults is not None else RisFaults()
        self._changed = threading.Condition(threading.RLock())
        self._entries: list[_WorklistEntry] = []
        self._next_number = 1  #: order number of the next generated order (never reused)
        self._supported: ReturnKeys = {}
        self._queries = 0
        self._cancelled_queries = 0
        self._mpps_store = _RisMppsStore(self._changed)
        self._mpps = MppsSCP(self._mpps_store)
        self.add_orders(orders)

    # -- orders -------------------------------------------------------------------------------

    def add_orders(self, count: int) -> list[DemoOrder]:
        """Schedule ``count`` more demo orders (deterministic with the seed)."""
        with self._changed:
            first = self._next_number
            new = generate_orders(
                count,
                seed=self.seed + first - 1,
                station_ae=self.station_ae,
                day=self.day,
                first_number=first,
            )
            self._next_number += count
            for order in new:
                self._add(order)
        return new

    def add_order(self, order: DemoOrder) -> None:
        """Schedule one order built by the caller."""
        with self._changed:
            self._add(order)

    def _add(self, order: DemoOrder) -> None:
        item = worklist_item(order)
        self._entries.append(_WorklistEntry(order, item, column_values(item)))
        if not self._supported:
            self._supported = requested_keys(item)
        self._changed.notify_all()

    def withdraw_order(self, accession_number: str) -> bool:
        """Remove an order from the worklist (cancelled at the RIS); False if unknown."""
        with self._changed:
            kept = [e for e in self._entries if e.order.accession_number != accession_number]
            removed = len(kept) != len(self._entries)
            self._entries = kept
            self._changed.notify_all()
        return removed

    def orders(self) -> list[DemoOrder]:
        with self._changed:
            return [entry.order for entry in self._entries]

    def worklist(self) -> list[Dataset]:
        """Every worklist item as the RIS holds it (copies)."""
        with self._changed:
            return [copy.deepcopy(entry.item) for entry in self._entries]

    # -- life cycle -----------------------------------------------------------------------------

    kind = "RIS"

    def _build_ae(self) -> AE:
        ae = make_ae(self.ae_title, self.timeouts)
        ae.add_supported_context(ModalityWorklistInformationFind)
        for uid in self._mpps.contexts:
            ae.add_supported_context(uid)
        ae.add_supported_context(Verification)
        return ae

    def _handlers(self) -> list[Any]:
        return [
            (evt.EVT_C_FIND, _handle_find, [self]),
            (evt.EVT_N_CREATE, _handle_mpps, [self, self._mpps.handle_create]),
            (evt.EVT_N_SET, _handle_mpps, [self, self._mpps.handle_set]),
        ]

    def forget_mpps(self, sop_instance_uid: str) -> bool:
        """Fault: lose an MPPS instance (a RIS restored from a backup, a purge): its next N-SET
        is answered 0112H (no such instance). False if it was not known."""
        with self._changed:
            return self._mpps_store.instances.pop(sop_instance_uid, None) is not None

    # -- queries for tests ------------------------------------------------------------------------

    def mpps_instances(self) -> list[RisMpps]:
        """Every MPPS instance created, in order of creation."""
        with self._changed:
            return list(self._mpps_store.instances.values())

    def mpps(self, sop_instance_uid: str) -> RisMpps | None:
        with self._changed:
            return self._mpps_store.instances.get(sop_instance_uid)

    def mpps_messages(self) -> list[ReceivedMessage]:
        """Every N-CREATE / N-SET received, refused ones included, in order."""
        with self._changed:
            return list(self._mpps_store.messages)

    def queries(self) -> int:
        """How many C-FIND requests arrived."""
        with self._changed:
            return self._queries

    def cancelled_queries(self) -> int:
        """How many C-FIND requests the client cancelled before the last match."""
        with self._changed:
            return self._cancelled_queries

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``predicate()`` is true; False on timeout (see :func:`wait_until`)."""
        return wait_until(self._changed, predicate, timeout_s)

    # -- Modality Worklist (PS3.4 K.4.1.3) --------------------------------------------------------

    def _find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        with self._changed:
            self._queries += 1
            entries = list(self._entries)
            supported = self._supported
            self._changed.notify_all()
        try:
            query = parse_query(event.identifier, supported_keys=supported or None)
        except QueryError as exc:
            log.info("worklist query refused: %s", exc)
            yield exc.status, None
            return
        pending = STATUS_PENDING_UNSUPPORTED_KEYS if query.unsupported else STATUS_PENDING
        yield from self._answer(event, query, entries, pending)

    def _answer(
        self,
        event: evt.Event,
        query: WorklistQuery,
        entries: list[_WorklistEntry],
        pending: int,
    ) -> Iterator[tuple[int, Dataset | None]]:
        for entry in entries:
            if not query.matches(entry.values):
                continue
            delay_s = self.faults.find_response_delay_s
            if delay_s and self._stopping.wait(delay_s):
                return
            if event.is_cancelled:
                with self._changed:
                    self._cancelled_queries += 1
                    self._changed.notify_all()
                yield STATUS_CANCELLED, None
                return
            yield pending, select_return_keys(query.return_keys, entry.item)


def _handle_find(event: evt.Event, ris: SimulatedRis) -> Iterator[tuple[int, Dataset | None]]:
    return ris._find(event)


def _handle_mpps(
    event: evt.Event,
    ris: SimulatedRis,
    handler: Callable[[evt.Event], tuple[int | Dataset, Dataset | None]],
) -> tuple[int | Dataset, Dataset | None]:
    delay_s = ris.faults.mpps_delay_s
    if delay_s:
        ris.pause(delay_s)
    answer = handler(event)
    if ris.faults.lose_created_mpps and event.event is evt.EVT_N_CREATE:
        ris.forget_mpps(str(getattr(event.request, "AffectedSOPInstanceUID", "")))
    return answer
