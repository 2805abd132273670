"""Who may associate, and how many at once (issue 12 §3): no lock-out of the unit.

pynetdicom accepts 10 associations by default, from any calling AE, to any called AE title, and
rejects the eleventh at once — ten idle associations from anywhere lock the mammography unit
out. :class:`Admission` decides every association request itself, from ``EVT_REQUESTED`` (the
hook pynetdicom provides for sending the A-ASSOCIATE-RJ), against an :class:`AssociationPolicy`:

1. the called AE title must be one of ours — else rejected permanent, "called AE title not
   recognised" (PS3.8 Table 9-21: result 1, source 1, reason 7);
2. the calling AE title must be allowed, when a list is given — else permanent, "calling AE
   title not recognised" (1, 1, 3);
3. at most ``max_associations`` at once, at most ``max_per_calling_ae`` from one calling AE
   title, and ``max_per_calling_ae`` slots kept for each reserved calling AE title (the unit):
   the others together hold at most the rest — else rejected transient, "local limit exceeded"
   (2, 3, 2), which tells the caller to try again later.

An idle association is dropped by the AE's network timeout (``dicom.network_timeout_s``), which
frees its slot. Every rejection is reported to ``on_rejected`` (the controller journals it),
at most once per calling AE and reason per :data:`REPORT_EVERY_S`, with the number of
rejections since the last report. AE titles are not authentication: a caller can claim the
unit's title. TLS with client certificates (``dicom.tls_ca``) is what keeps others out.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pynetdicom import evt

log = logging.getLogger(__name__)

#: Repeated rejections of one calling AE for one reason are reported this often at most.
REPORT_EVERY_S = 60.0


@dataclass(frozen=True)
class AssociationPolicy:
    """The rules :class:`Admission` applies (see the module docstring)."""

    called_ae_titles: frozenset[str]
    allowed_calling_aes: frozenset[str] = frozenset()  # empty: any calling AE
    max_associations: int = 32
    max_per_calling_ae: int = 8
    reserved_calling_aes: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        called: Iterable[str],
        allowed: Iterable[str] = (),
        *,
        max_associations: int = 32,
        max_per_calling_ae: int = 8,
        reserved: Iterable[str] = (),
    ) -> AssociationPolicy:
        def titles(values: Iterable[str]) -> frozenset[str]:
            return frozenset(v.strip() for v in values if v.strip())

        policy = cls(
            titles(called),
            titles(allowed),
            max_associations,
            max_per_calling_ae,
            titles(reserved),
        )
        if policy.kept_slots >= max_associations:
            raise ValueError(
                f"{policy.kept_slots} slots kept for {sorted(policy.reserved_calling_aes)} "
                f"leave none of {max_associations}"
            )
        return policy

    @property
    def kept_slots(self) -> int:
        return self.max_per_calling_ae * len(self.reserved_calling_aes)


class Rejection(NamedTuple):
    """An A-ASSOCIATE-RJ: result, source, reason/diagnostic (PS3.8 9.3.4) and why, in words."""

    result: int
    source: int
    diagnostic: int
    why: str


#: (calling AE, called AE, peer address, why, rejections since the last report)
RejectionHook = Callable[[str, str, str, str, int], None]


class Admission:
    """Admits or rejects each association request; bind :meth:`handlers` on the acceptor AE."""

    def __init__(self, policy: AssociationPolicy, on_rejected: RejectionHook | None = None):
        self.policy = policy
        self._on_rejected = on_rejected
        self._lock = threading.Lock()
        self._admitted: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._reports: dict[tuple[str, str], tuple[float, int]] = {}

    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_CONN_CLOSE, self._on_closed)]

    def admitted(self) -> dict[str, int]:
        """Associations held now, per calling AE title."""
        with self._lock:
            counts: dict[str, int] = {}
            for calling in self._admitted.values():
                counts[calling] = counts.get(calling, 0) + 1
            return counts

    def _decide(self, calling: str, called: str, assoc: Any) -> Rejection | None:
        """The rejection for ``assoc``, from ``calling`` to ``called`` (None: admitted, and it
        holds a slot until its connection closes)."""
        p = self.policy
        if called not in p.called_ae_titles:
            return Rejection(1, 1, 7, f"called AE title {called!r} is not ours")
        if p.allowed_calling_aes and calling not in p.allowed_calling_aes:
            return Rejection(1, 1, 3, f"calling AE title {calling!r} is not allowed")
        with self._lock:
            held = list(self._admitted.values())
            mine = sum(1 for c in held if c == calling)
            others = sum(1 for c in held if c not in p.reserved_calling_aes)
            if len(held) >= p.max_associations:
                return Rejection(2, 3, 2, f"all {p.max_associations} associations in use")
            if mine >= p.max_per_calling_ae:
                return Rejection(2, 3, 2, f"{calling!r} already holds {mine} associations")
            shared = p.max_associations - p.kept_slots
            if calling not in p.reserved_calling_aes and others >= shared:
                return Rejection(2, 3, 2, "the remaining associations are kept for the unit")
            self._admitted[assoc] = calling
        return None

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        assert request is not None  # EVT_REQUESTED: the A-ASSOCIATE-RQ has arrived
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        rejection = self._decide(calling, called, assoc)
        if rejection is None:
            return
        address = str(assoc.requestor.address)
        log.warning("association from %s (%s) rejected: %s", calling, address, rejection.why)
        self._report(calling, called, address, rejection.why)  # on record before the peer knows
        assoc.acse.send_reject(rejection.result, rejection.source, rejection.diagnostic)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _on_closed(self, event: evt.Event) -> None:
        with self._lock:
            self._admitted.pop(event.assoc, None)

    def _report(self, calling: str, called: str, address: str, why: str) -> None:
        if self._on_rejected is None:
            return
        key = (calling, why)
        now = time.monotonic()
        with self._lock:
            last, pending = self._reports.get(key, (float("-inf"), 0))
            pending += 1
            if now - last < REPORT_EVERY_S:
                self._reports[key] = (last, pending)
                return
            self._reports[key] = (now, 0)
        try:
            self._on_rejected(calling, called, address, why, pending)
        except Exception:
            log.exception("the rejected association could not be reported")
