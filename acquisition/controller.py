"""The controller: every part of galacto assembled from one configuration (``galacto serve``).

:class:`Controller` owns the stores (one SQLite file: journal, dose log, worklist, unit MPPS,
RIS orders, outbox), the injector driver, the unit-facing SCPs, the outbox sender, the RIS
worklist refresher, the exam service and its reporting, and the technologists' console.

Start-up order is the crash-recovery order (issue 4 §3):

1. the stores are opened (migrations applied);
2. the injector link is re-established and its state read back (``connect()``) **before** the
   exam service is built, so the exam resumes against a known injector (a link that does not
   come up leaves the injector unhealthy: injections are refused, imaging goes on, and the
   controller keeps trying to connect; an injector that fails later stops the exam in FAULT,
   and the acknowledgement re-establishes it);
3. the exam service replays the journal (state, facts, an interrupted injection → FAULT) and
   its reporting enqueues what a crash may have kept from the outbox;
4. every object kept under ``dicom.storage_dir`` is queued for the PACS again (idempotent by
   SOP Instance UID: a crash between a store and its forward loses nothing);
5. the outbox sender, the RIS refresher, the SCPs and the console start.

A tick thread (every :data:`TICK_S`, and at once after each object or exposure arrives) reads
new exposures into the exam (:meth:`ExamService.note_exposures`) and retries the injector link.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from acquisition import wiring
from acquisition.accounts import Accounts
from acquisition.alerts import outbox_alerts
from acquisition.dose_log import DoseLog
from acquisition.dose_policy import dose_policy
from acquisition.exam.model import (
    PHASE_STEPS,
    ExamOrder,
    JournalUnavailable,
    phase_sps_id,
)
from acquisition.exam.service import ExamService
from acquisition.exam_machine import ExamState, Limits
from acquisition.exam_reporting import ExamReporting, ReportingSettings
from acquisition.forwarding import Forwarder, contrast_administration
from acquisition.hospital_identity import ForwardingIdentity, mismatch
from acquisition.injector_link import InjectorLink
from acquisition.journal import Journal, JournalError, Witness
from acquisition.settings import Config, ConfigError
from device_drivers.base import InjectorABC
from dicom_nodes.datasets.contrast import ContrastAdministration
from dicom_nodes.hospital.dicom_outbox import DicomOutbox
from dicom_nodes.hospital.outbox import PACS, RIS, RetryPolicy
from dicom_nodes.hospital.outbox import Message as OutboxMessage
from dicom_nodes.hospital.ris_orders import (
    RisOrderStore,
    StoredOrder,
    WorklistRefresher,
    todays_query,
)
from dicom_nodes.network import server_tls_context
from dicom_nodes.unit_facing.mpps_scp import MODALITY_PERFORMED_PROCEDURE_STEP
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.received_objects import QuarantineItem, ReceivedObjects
from dicom_nodes.unit_facing.server import UnitFacingServer
from dicom_nodes.unit_facing.worklist_store import WorklistStore
from dose.record import ExposureRecord
from storage import FreeSpace, WriteFailures
from storage.writer import Database, shared

log = logging.getLogger(__name__)

#: How often the controller looks for new exposures and retries the injector link.
TICK_S = 0.5
#: Every this many ticks the exam's reporting is brought up to date even without news.
REPORT_EVERY_TICKS = 20
#: How long the database's writer and connections stay without use before they are let go (the
#: controller closes them at stop; meanwhile an exposure never waits for a connection).
IDLE_S = 60.0
#: How long a message that failed for good stays on the console.
FAILED_ALERT_S = 24 * 3600.0


@dataclass(frozen=True)
class Endpoints:
    """Where the controller listens (the demo prints these as one JSON line)."""

    ae_title: str
    host: str
    port: int
    injector_url: str
    database: str
    console: str

    def as_json(self) -> dict[str, Any]:
        scp = {"host": self.host, "port": self.port, "ae_title": self.ae_title}
        return {
            "mwl_scp": scp,
            "mpps_scp": dict(scp),
            "storage_scp": dict(scp),
            "injector_url": self.injector_url,
            "database": self.database,
            "console": self.console,
        }


class _NotifyingSink:
    """The dose log as the SCPs' exposure sink, waking the tick once a record is durable."""

    def __init__(self, dose_log: DoseLog, wake: threading.Event) -> None:
        self._dose_log = dose_log
        self._wake = wake

    def record(self, exposures: Sequence[ExposureRecord]) -> None:
        self._dose_log.record(exposures)
        self._wake.set()


class Controller:
    """galacto, assembled (see the module docstring). ``start()`` … ``stop()``."""

    def __init__(
        self, config: Config, *, injector: InjectorABC | None = None, console: bool = True
    ) -> None:
        self.config = config
        self.database = Path(config.database.path)
        self.storage_dir = Path(config.dicom.storage_dir)
        self.free_space = FreeSpace(
            {"database.path": self.database.parent, "dicom.storage_dir": self.storage_dir},
            config.database.min_free_mb,
        )
        self._tick_failures = WriteFailures(log, "the exam's records", self.free_space)
        self._alert_failures = WriteFailures(log, "dose alerts not journaled yet", self.free_space)
        self._with_console = console
        self._given_injector = injector
        self.injector_link: InjectorLink | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._tick_thread: threading.Thread | None = None
        self.console: Any = None
        self.server: UnitFacingServer | None = None
        self.refresher: WorklistRefresher | None = None
        self.exam: ExamService | None = None
        self.outbox: DicomOutbox | None = None
        self.forwarder: Forwarder | None = None
        self.journal: Journal | None = None
        self._unforwarded: set[Path] = set()  # stored, but their queueing failed
        self._opened: list[Any] = []

    # ------------------------------------------------------------------ life cycle

    def start(self) -> Endpoints:
        """Recover, then listen (see the module docstring for the order)."""
        try:
            self._open_stores()
            if self._with_console:
                from acquisition.console import assembly

                assembly.check_access(self.config, self.accounts.active_count())
            self._connect_injector()
            self._build_exam()
            if self.forwarder is not None:
                self.forwarder.forward_kept()
            self._start_network()
        except BaseException:
            self.stop()
            raise
        self._tick_thread = threading.Thread(target=self._tick, name="controller-tick", daemon=True)
        self._tick_thread.start()
        endpoints = self.endpoints()
        log.info("controller ready: unit-facing SCP on %s:%d", endpoints.host, endpoints.port)
        return endpoints

    def stop(self) -> None:
        """Stop everything it started, newest first (idempotent)."""
        self._stop.set()
        self._wake.set()
        if self._tick_thread is not None:
            self._tick_thread.join(timeout=10.0)
            self._tick_thread = None
        if self.console is not None:
            self.console.stop()
            self.console = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.refresher is not None:
            self.refresher.stop()
            self.refresher = None
        if self.exam is not None:
            self.exam.close()
            self.exam = None
        if self.outbox is not None:
            self.outbox.stop()
        if self.journal is not None:
            self.journal.witness_head()  # the head at a clean stop
        if self.injector_link is not None:
            self.injector_link.close()
        while self._opened:
            self._opened.pop().close()

    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def endpoints(self) -> Endpoints:
        assert self.server is not None
        host, port = self.server.address
        return Endpoints(
            ae_title=self.config.dicom.ae_title,
            host=host,
            port=port,
            injector_url=self.config.injector.url,
            database=str(self.database.resolve()),
            console=self.console.url if self.console is not None else "",
        )

    # ------------------------------------------------------------------ assembly

    def _open_stores(self) -> None:
        config = self.config
        # One database object for every store: one writer thread, no contention between
        # the stores for SQLite's write lock (storage.writer).
        db = self._keep(
            shared(self.database, busy_timeout_s=config.database.busy_timeout_s, idle_s=IDLE_S)
        )
        self.journal = self._keep(self._open_journal(db))
        self.accounts = self._keep(Accounts(db))
        self.received = self._keep(ReceivedObjects(db))
        self.dose_log = self._keep(DoseLog(db, policy=dose_policy(config)))
        self.mpps_store = self._keep(SqliteMppsStore(db))
        self.worklist = self._keep(WorklistStore(db))
        self.orders = self._keep(RisOrderStore(db)) if config.ris.host else None
        destinations = wiring.hospital_destinations(config)
        self.outbox = (
            DicomOutbox(
                db,
                destinations,
                storage_commitment=config.pacs.storage_commitment and PACS in destinations,
                uid_root=config.site.uid_root,
                retry=RetryPolicy(config.pacs.retry_initial_s, config.pacs.retry_max_s),
                on_delivery=self._on_delivery,
                on_event=self._on_outbox_event,
            )
            if destinations
            else None
        )
        if self.outbox is not None:
            self._keep(self.outbox)
        if self.outbox is not None and PACS in destinations:
            identity = ForwardingIdentity(
                self.journal, lambda: self.exam.snapshot() if self.exam is not None else None
            )
            self.forwarder = Forwarder(
                self.outbox,
                self.storage_dir,
                self._contrast_for,
                held_for=identity.held_for,
                identity_for=identity.identity_for,
            )

    def _open_journal(self, db: Database) -> Journal:
        """The journal, sealed with the site key (rotated to it from a previous key), its head
        witnessed at start-up (issue 12 §11)."""
        site = self.config.site
        key = site.journal_key.encode() or None
        if key is None and not site.allow_unkeyed_journal:
            raise ConfigError(
                "site.journal_key: not set: without it anyone who can write the database can "
                "rewrite the journal undetected. Set it (GALACTO_SITE_JOURNAL_KEY), or "
                "site.allow_unkeyed_journal = true for a trial"
            )
        if not site.journal_witness:
            log.warning(
                "site.journal_witness not set: a database restored from an older copy would verify"
            )
        witness = Witness(site.journal_witness) if site.journal_witness else None
        journal = Journal(db, key=key, witness=witness)
        try:
            journal.adopt_key([k.encode() for k in site.journal_previous_keys])
        except JournalError as exc:
            journal.close()
            raise ConfigError(f"site.journal_key: {exc}") from exc
        journal.witness_head()
        return journal

    @property
    def injector(self) -> InjectorABC | None:
        """The injector driver (None without one)."""
        return self.injector_link.driver if self.injector_link is not None else None

    def reinitialise_injector(self, operator: str) -> None:
        """An admin's re-initialisation of a driver that will not reconnect (a cable moved to
        another port, a driver stuck): see :meth:`InjectorLink.reinitialise`."""
        if self.exam is None or self.injector_link is None:
            raise ValueError("no injector is configured to re-initialise")
        self.injector_link.reinitialise(self.exam, operator)

    def _keep(self, closable: Any) -> Any:
        self._opened.append(closable)
        return closable

    def _connect_injector(self) -> None:
        assert self.journal is not None
        link = InjectorLink(self.config.injector, self.journal, driver=self._given_injector)
        self.injector_link = link
        link.on_replaced.append(self._on_injector_replaced)
        link.connect()

    def _on_injector_replaced(self, driver: InjectorABC) -> None:
        if self.console is not None:
            self.console.backend.injector = driver

    def _build_exam(self) -> None:
        config = self.config
        assert self.journal is not None
        reporting = ExamReporting(
            self.journal,
            self.dose_log,
            self.outbox,
            ReportingSettings(
                station_ae=config.dicom.ae_title,
                retrieve_ae=config.pacs.ae_title if config.pacs.host else "",
                uid_root=config.site.uid_root,
                storage_dir=self.storage_dir,
                station_name=config.dicom.station_name,
                ris=bool(config.ris.host),
                pacs=bool(config.pacs.host),
                mpps_hold_max_s=config.pacs.mpps_hold_max_s,
            ),
            forwarder=self.forwarder,
            ris_order=self._ris_order,
        )
        injector = config.injector
        self.exam = ExamService(
            self.journal,
            self.worklist,
            station_ae=config.dicom.unit_ae_title,
            limits=Limits(
                max_volume_per_injection_ml=injector.max_volume_per_injection_ml,
                max_volume_per_exam_ml=injector.max_volume_per_exam_ml,
                max_injections=injector.max_injections_per_exam,
                min_volume_ml=injector.min_volume_ml,
                min_rate_ml_min=injector.min_rate_ml_min,
                max_rate_ml_min=injector.max_rate_ml_min,
                max_injection_s=injector.max_injection_s,
            ),
            dose_log=self.dose_log,
            injector=self.injector,
            syringe=injector.syringe,
            reporter=reporting,
            uid_root=config.site.uid_root,
            laterality_terms=config.ris.laterality_terms,
            space_check=self.free_space,
            unit_steps_in_progress=self._unit_steps_in_progress,
        )

    def _start_network(self) -> None:
        config = self.config
        if self.outbox is not None:
            if config.pacs.storage_commitment and config.pacs.commitment_port:
                d = config.dicom
                self.outbox.listen_for_commitment(
                    d.ae_title,
                    d.host,
                    config.pacs.commitment_port,
                    timeouts=wiring.dicom_timeouts(config),
                    # the same policy as the main port: allow-list and TLS
                    allowed_calling_aes=wiring.allowed_calling_aes(config),
                    ssl_context=(
                        server_tls_context(d.tls_certificate, d.tls_private_key, d.tls_ca)
                        if d.tls_certificate
                        else None
                    ),
                )
            self.outbox.start()
        if self.orders is not None and RIS in (self.outbox.destinations if self.outbox else {}):
            assert self.outbox is not None
            peer = dataclasses.replace(  # the worklist provider, not the MPPS manager
                self.outbox.destinations[RIS],
                host=config.ris.host,
                port=config.ris.port,
                ae_title=config.ris.ae_title,
            )
            station = config.ris.station_ae_title
            self.refresher = WorklistRefresher(
                self.orders,
                peer,
                lambda: todays_query(station),
                interval_s=config.ris.refresh_interval_s,
                fallback_character_set=config.ris.fallback_character_set,
            )
            self.refresher.start()
        self.server = wiring.unit_facing_server(
            config,
            self.worklist,
            self.mpps_store,
            _NotifyingSink(self.dose_log, self._wake),
            on_stored=self._on_stored,
            on_mpps=self._on_unit_mpps,
            received_objects=self.received,
            on_quarantined=self._on_quarantined,
            on_rejected=self._on_rejected,
        )
        worklist = self.server.worklist_scp
        if worklist is not None and worklist.slow_path_reason is not None:
            reason = {"reason": worklist.slow_path_reason}
            self.journal_append("mwl-public-path", reason)  # the probe logged it (WARNING)
        commitment = self.outbox is not None and config.pacs.storage_commitment
        if commitment and not config.pacs.commitment_port:
            # The archive's N-EVENT-REPORT association comes to the main port (PS3.4 J.3.3);
            # with pacs.commitment_port, to its own listener, started with the outbox.
            assert self.outbox is not None
            receiver = self.outbox.receiver
            self.server.add_service(receiver.contexts(), receiver.handlers())
        self.server.start()
        if self._with_console:
            self._start_console()

    def _start_console(self) -> None:
        from acquisition.console import assembly

        assert self.exam is not None and self.journal is not None
        self.console = assembly.assemble(
            self.config,
            database=self.database,
            exam=self.exam,
            dose_log=self.dose_log,
            journal=self.journal,
            accounts=self.accounts,
            orders=self.orders,
            injector=self.injector,
            outbox_counts=self.outbox.counts if self.outbox is not None else None,
            refresh_orders=self.refresher.wake if self.refresher is not None else None,
            alerts=self.alerts,
            reinitialise_injector=(
                self.reinitialise_injector
                if self.injector_link is not None and self.injector_link.reinitialisable
                else None
            ),
        )
        self.console.start()

    # ------------------------------------------------------------------ what arrives

    def _on_stored(self, path: Path, header: Dataset) -> None:
        """An object from the unit is durable: journal it, forward it, wake the exam."""
        study = str(header.get("StudyInstanceUID", ""))
        exam_id = self._exam_of_study(study)
        payload = {
            "sop_class_uid": str(header.get("SOPClassUID", "")),
            "sop_instance_uid": str(header.get("SOPInstanceUID", "")),
            "series_instance_uid": str(header.get("SeriesInstanceUID", "")),
            "study_instance_uid": study,
            "file": path.name,
        }
        self._wake.set()
        try:
            if self.forwarder is not None:
                self.forwarder.forward(path, header)
        except Exception:
            log.exception("object not queued for the PACS yet; retried by the tick")
            self._unforwarded.add(path)
        finally:  # the journal entry does not depend on the forward, nor the forward on it
            self.journal_append("dicom-in", payload, exam_id=exam_id)

    def _on_quarantined(self, item: QuarantineItem) -> None:
        """Another object under a stored SOP Instance UID was refused and held: journaled; the
        console shows it until a person decides (``galacto quarantine accept``)."""
        study = next((str(e.get("study_instance_uid") or "") for e in item.exposures), "")
        payload = {
            "quarantine_id": item.id,
            "sop_class_uid": item.sop_class_uid,
            "sop_instance_uid": item.sop_instance_uid,
            "calling_ae": item.calling_ae,
            "reason": item.reason,
        }
        self.journal_append("quarantined", payload, exam_id=self._exam_of_study(study))

    def _on_rejected(self, calling: str, called: str, address: str, why: str, count: int) -> None:
        payload = {
            "calling_ae": calling,
            "called_ae": called,
            "address": address,
            "reason": why,
            "rejections": count,
        }
        self.journal_append("association-rejected", payload)

    def journal_append(self, kind: str, payload: dict[str, Any], **kwargs: Any) -> None:
        """Journal what arrived from outside; a failure is logged (the exam service reports
        a journal that cannot be written on its own)."""
        assert self.journal is not None
        try:
            self.journal.append(kind, payload, **kwargs)
        except JournalError as exc:
            log.error("%s not journaled: %s", kind, exc)

    def alerts(self) -> list[str]:
        """What the technologist must know beyond the exam: held objects, disk space."""
        out = []
        try:
            held = self.received.held_count()
        except Exception as exc:
            held = 0
            out.append(f"quarantine not readable: {exc}")
        if held:
            out.append(
                f"{held} object(s) from the unit refused and held in quarantine: another object "
                "was sent under a SOP Instance UID already stored. The unit keeps its copy; "
                "ask the physicist (galacto quarantine list)."
            )
        exam = self.exam
        if exam is not None:
            order = exam.snapshot().order
            try:
                changed = mismatch(order, self._ris_order(order) if order else None)
            except Exception as exc:
                changed = f"RIS orders not readable: {exc}"
            if changed:
                out.append(changed)
        out += self._outbox_alerts()
        low = self.free_space()
        if low is not None:
            out.append(f"Disk space low: {low}. New exams and injections are refused.")
        for failures in (self._tick_failures, self._alert_failures):
            if failures.current is not None:
                out.append(failures.current)
        return out

    def _outbox_alerts(self) -> list[str]:
        """Messages stuck longer than pacs.stuck_alert_s, and those failed for good (a day)."""
        if self.outbox is None:
            return []
        return outbox_alerts(self.outbox, self.config.pacs.stuck_alert_s, FAILED_ALERT_S)

    def _unit_steps_in_progress(self, order: ExamOrder | None) -> list[str]:
        """The unit's MPPS steps of the exam (its study or its phase steps) still IN PROGRESS."""
        if order is None:
            return []
        sps_ids = [phase_sps_id(order.exam_id, phase) for phase in PHASE_STEPS]
        return list(self.mpps_store.in_progress(order.study_instance_uid, sps_ids))

    def _ris_order(self, order: ExamOrder) -> StoredOrder | None:
        """The exam's RIS order as the local copy of the RIS worklist knows it now."""
        if self.orders is None or not order.scheduled:
            return None
        return self.orders.find(order.accession, order.ris_sps_id)

    def _on_outbox_event(self, event: str, message: OutboxMessage, details: dict[str, Any]) -> None:
        """A recovery or an alert of the outbox: journaled with its exam (outbox-<event>)."""
        payload = {
            "kind": message.kind,
            "destination": message.destination,
            "sop_instance_uid": message.sop_instance_uid,
            **details,
        }
        self.journal_append(f"outbox-{event}", payload, exam_id=self._exam_of(message))

    def _retry_forwards(self) -> None:
        """Objects whose queueing failed on arrival (the outbox busy, a disk error)."""
        forwarder = self.forwarder
        for path in sorted(self._unforwarded):
            if forwarder is None:
                return
            try:
                forwarder.forward(path, dcmread(path, stop_before_pixels=True))
            except Exception as exc:
                log.warning("object still not queued for the PACS: %s", exc)
                return
            self._unforwarded.discard(path)

    def _contrast_for(self, header: Dataset) -> ContrastAdministration | None:
        """The contrast given before a post-contrast image of the open exam (its SPS ID names
        post-injection 1 or 2: the injections up to that one); None for any other object."""
        exam = self.exam
        if exam is None:
            return None
        snapshot = exam.snapshot()
        order = snapshot.order
        if order is None or str(header.get("StudyInstanceUID", "")) != order.study_instance_uid:
            return None
        request = header.get("RequestAttributesSequence") or [Dataset()]
        sps_id = str(request[0].get("ScheduledProcedureStepID", "") or "")
        after = {
            phase_sps_id(order.exam_id, ExamState.POST_INJECTION_1): 1,
            phase_sps_id(order.exam_id, ExamState.POST_INJECTION_2): 2,
        }.get(sps_id)
        if after is None:
            return None
        return contrast_administration([c for c in snapshot.contrast if c.number <= after])

    def _on_unit_mpps(self, operation: str, uid: str, calling_ae: str, status: int) -> None:
        """The unit's MPPS N-CREATE / N-SET, as answered (its content is in the MPPS store)."""
        payload = {
            "operation": operation,
            "sop_class_uid": MODALITY_PERFORMED_PROCEDURE_STEP,
            "sop_instance_uid": uid,
            "calling_ae": calling_ae,
            "status": f"{status:04X}",
        }
        self.journal_append("dicom-in", payload, exam_id=self._exam_of_unit_mpps(uid))
        self._wake.set()

    def _on_delivery(self, message: OutboxMessage, outcome: str, status: int | None) -> None:
        """An outbound message delivered (or failed for good): its outcome in the journal."""
        payload = {
            "kind": message.kind,
            "destination": message.destination,
            "sop_instance_uid": message.sop_instance_uid,
            "outcome": outcome,
            "status": None if status is None else f"{status:04X}",
        }
        self.journal_append("dicom-delivered", payload, exam_id=self._exam_of(message))

    def _exam_of_study(self, study: str) -> str | None:
        """The open exam's ID when ``study`` is its Study Instance UID (else no exam)."""
        exam = self.exam
        order = exam.order if exam is not None else None
        return order.exam_id if order is not None and study == order.study_instance_uid else None

    def _exam_of_unit_mpps(self, uid: str) -> str | None:
        """The open exam, when the unit's MPPS names its study."""
        instance = self.mpps_store.get(uid)
        if instance is None:
            return None
        steps = instance.dataset.get("ScheduledStepAttributesSequence") or [Dataset()]
        return self._exam_of_study(str(steps[0].get("StudyInstanceUID", "") or ""))

    def _exam_of(self, message: OutboxMessage) -> str | None:
        """The open exam an outbound message belongs to: its MPPS, or a file of its study
        (kept under ``<storage_dir>/[forward|created/]<study>/``)."""
        exam = self.exam
        order = exam.order if exam is not None else None
        if order is not None and message.sop_instance_uid == order.mpps_instance_uid:
            return order.exam_id
        return self._exam_of_study(Path(message.file_path or "").parent.name)

    def _tick(self) -> None:
        ticks = 0
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            exam = self.exam
            if exam is None:
                continue
            ticks += 1
            try:
                exam.note_exposures()
                exam.check_injector()
                if ticks % REPORT_EVERY_TICKS == 0:
                    exam.report()  # catches up a reporting that failed (disk full, locked)
                    self._retry_forwards()
                    if self.outbox is not None:
                        self.outbox.alert_stuck(self.config.pacs.stuck_alert_s)
            except JournalUnavailable:
                pass  # the exam service reported it (once) and refuses commands until it heals
            except Exception as exc:  # logged once per episode, not at every tick
                self._tick_failures.failed(exc)
            else:
                self._tick_failures.recovered()
            self._journal_alerts()
            if self.injector_link is not None:
                self.injector_link.retry()

    def _journal_alerts(self) -> None:
        """Journal each dose alert the dose log raised, once (issue 9 §5): the alert row is
        durable with its exposure; its journal entry follows within a tick, and a crash in
        between is caught up at the next one."""
        journal = self.journal
        assert journal is not None
        try:
            for alert in self.dose_log.unjournaled_alerts():
                payload = {
                    "alert_id": alert["id"],
                    **{
                        key: alert[key]
                        for key in (
                            "scope",
                            "exposure_id",
                            "sop_instance_uid",
                            "laterality",
                            "level_id",
                            "level_name",
                            "limit_mgy",
                            "value_mgy",
                            "detail",
                        )
                    },
                }
                exam_id = self._exam_of_study(str(alert["study_instance_uid"] or ""))
                journal.append("dose-alert", payload, exam_id=exam_id)
                self.dose_log.mark_alerts_journaled([alert["id"]])
        except Exception as exc:  # logged once per outage, retried at every tick
            self._alert_failures.failed(exc)
        else:
            self._alert_failures.recovered()
