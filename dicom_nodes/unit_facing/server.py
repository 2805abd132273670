"""The unit-facing server: MWL + MPPS + Storage (+ Verification) on one AE and one port.

What the mammography unit sees of the controller (dicom.md §1): its worklist provider,
Performed Procedure Step Manager and image/dose-report store. One pynetdicom AE carries all
presentation contexts; every association request is admitted or rejected by
:class:`~dicom_nodes.unit_facing.admission.Admission` (called AE title, allowed calling AE titles,
limits per
calling AE with slots kept for the unit); TLS is on when a certificate and key are given (mutual TLS
with a CA); every accepted socket gets TCP_NODELAY; the maximum PDU is advertised as
configured; incoming C-STORE datasets are received in chunks straight to disk. pynetdicom's
identifier logging is off (``make_ae``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae, server_tls_context
from dicom_nodes.unit_facing.admission import Admission, AssociationPolicy, RejectionHook
from dicom_nodes.unit_facing.mpps_scp import MppsSCP, StepResolver, has_scheduled_step
from dicom_nodes.unit_facing.mpps_store import MppsStore
from dicom_nodes.unit_facing.mwl_scp import MWL_FIND_UID, WorklistSCP
from dicom_nodes.unit_facing.mwl_scp import TRANSFER_SYNTAXES as WORKLIST_TRANSFER_SYNTAXES
from dicom_nodes.unit_facing.received_objects import QuarantineItem, ReceivedObjects
from dicom_nodes.unit_facing.storage_scp import StorageSCP
from dicom_nodes.unit_facing.worklist_store import WorklistStore
from dose.plausibility import QaPatterns
from dose.record import ExposureRecord, ExposureSink

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"


class ServerError(RuntimeError):
    """The unit-facing server could not start."""


def published_step_resolver(worklist_store: WorklistStore) -> StepResolver:
    """An exposure belongs to a known step when its SPS ID was offered on our worklist."""

    def resolve(record: ExposureRecord) -> bool:
        return record.sps_id is not None and worklist_store.was_published(record.sps_id)

    return resolve


class UnitFacingServer:
    """MWL, MPPS and Storage SCPs toward the mammography unit, on one AE and port."""

    def __init__(
        self,
        worklist_store: WorklistStore | None,
        mpps_store: MppsStore,
        dose_sink: ExposureSink,
        *,
        ae_title: str = "GALACTO",
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_calling_aes: Sequence[str] = (),
        timeouts: Timeouts | None = None,
        max_pdu: int = 262144,
        storage_dir: str | Path = "var/objects",
        tls_certificate: str = "",
        tls_private_key: str = "",
        tls_ca: str = "",
        step_resolver: StepResolver | None = None,
        fsync_objects: bool = True,
        worklist_max_results: int = 5000,
        uid_prefix: str | None = None,
        on_stored: Callable[[Path, Dataset], None] | None = None,
        on_mpps: Callable[[str, str, str, int], None] | None = None,
        qa_patterns: QaPatterns | None = None,
        received_objects: ReceivedObjects | None = None,
        on_quarantined: Callable[[QuarantineItem], None] | None = None,
        max_associations: int = 32,
        max_associations_per_calling_ae: int = 8,
        reserved_calling_aes: Sequence[str] = (),
        on_rejected: RejectionHook | None = None,
    ) -> None:
        self._address = (host, port)
        self._ae: AE = make_ae(ae_title, timeouts or Timeouts(), max_pdu=max_pdu)
        self.admission = Admission(
            AssociationPolicy.of(
                [ae_title],
                allowed_calling_aes,
                max_associations=max_associations,
                max_per_calling_ae=max_associations_per_calling_ae,
                reserved=reserved_calling_aes,
            ),
            on_rejected,
        )
        # pynetdicom's own limit stays above ours: Admission decides, with the right reason.
        self._ae.maximum_associations = 2 * max_associations
        self._tls = (tls_certificate, tls_private_key, tls_ca)
        self.worklist_scp = (
            None
            if worklist_store is None
            else WorklistSCP(worklist_store, max_results=worklist_max_results)
        )
        if step_resolver is None:
            step_resolver = (
                has_scheduled_step
                if worklist_store is None
                else published_step_resolver(worklist_store)
            )
        self.mpps_scp = MppsSCP(
            mpps_store,
            dose_sink,
            step_resolver=step_resolver,
            uid_prefix=uid_prefix,
            on_message=on_mpps,
            qa_patterns=qa_patterns,
        )
        self.storage_scp = StorageSCP(
            dose_sink,
            storage_dir,
            step_resolver=step_resolver,
            fsync_objects=fsync_objects,
            objects=received_objects,
            on_stored=on_stored,
            qa_patterns=qa_patterns,
            on_quarantined=on_quarantined,
        )
        self._ae.add_supported_context(VERIFICATION)
        for uid in self.mpps_scp.contexts:
            self._ae.add_supported_context(uid)
        for uid in self.storage_scp.contexts:
            self._ae.add_supported_context(uid, list(self.storage_scp.transfer_syntaxes))
        if self.worklist_scp is not None:
            self._ae.add_supported_context(MWL_FIND_UID, list(WORKLIST_TRANSFER_SYNTAXES))
        self._extra_handlers: list[Any] = []
        self._server: ThreadedAssociationServer | None = None
        self._bound: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` once started."""
        if self._bound is None:
            raise ServerError("not started")
        return self._bound

    def add_service(self, contexts: Sequence[Any], handlers: Sequence[Any]) -> None:
        """Serve one more service on the same AE and port (e.g. the Storage Commitment
        N-EVENT-REPORT of the archive); before :meth:`start`."""
        if self._server is not None:
            raise ServerError("services are added before start()")
        for context in contexts:
            self._ae.add_supported_context(
                context.abstract_syntax,
                context.transfer_syntax,
                scu_role=context.scu_role,
                scp_role=context.scp_role,
            )
        self._extra_handlers.extend(handlers)

    def handlers(self) -> list[Any]:
        """Every SCP's event handlers, plus TCP_NODELAY on each accepted socket."""
        handlers: list[Any] = [*NODELAY_HANDLERS, *self.admission.handlers()]
        handlers += self._extra_handlers
        handlers += self.mpps_scp.handlers() + self.storage_scp.handlers()
        if self.worklist_scp is not None:
            handlers += list(self.worklist_scp.handlers())
        return handlers

    def start(self) -> tuple[str, int]:
        """Listen; return the bound ``(host, port)`` (port 0 picks a free one)."""
        if self._server is not None:
            raise ServerError("already started")
        certificate, key, ca = self._tls
        ssl_context = server_tls_context(certificate, key, ca) if certificate else None
        try:
            server = self._ae.start_server(
                self._address,
                block=False,
                evt_handlers=self.handlers(),
                ssl_context=ssl_context,
            )
        except OSError as exc:
            raise ServerError(f"cannot listen on {self._address[0]}:{self._address[1]}") from exc
        if server is None:  # only a blocking start_server returns None
            raise ServerError("pynetdicom returned no server")
        self._server = server
        host, port = server.server_address[:2]
        self._bound = (str(host), int(port))
        log.info("unit-facing SCP %s listening on %s:%d", self._ae.ae_title, host, port)
        return self._bound

    def stop(self) -> None:
        """Stop listening and close every association (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            self._bound = None
        self._ae.shutdown()

    def __enter__(self) -> UnitFacingServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
