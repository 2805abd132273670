"""The composition root: the only place that names simulators, and only as strings.

``acquisition`` never imports ``simulators``; a simulator is loaded by module name when a
command (``galacto sim …``, ``galacto demo``) asks for one.
"""

from __future__ import annotations

import importlib
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from pydicom.dataset import Dataset

from acquisition.dose_policy import qa_patterns
from acquisition.settings import Config, ConfigError, InjectorSettings, reserved_calling_aes
from device_drivers.driver import NewEraInjector
from device_drivers.limits import InjectorLimits
from device_drivers.link import LinkTiming
from dicom_nodes.hospital.outbox import PACS, RIS
from dicom_nodes.hospital.scu import Peer
from dicom_nodes.network import Timeouts, client_tls_context
from dicom_nodes.unit_facing.admission import RejectionHook
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.received_objects import QuarantineItem, ReceivedObjects
from dicom_nodes.unit_facing.server import UnitFacingServer
from dicom_nodes.unit_facing.worklist_store import WorklistStore
from dose.record import ExposureSink

# Sub-commands of `galacto`, each a module exposing register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "acquisition.commands.serve",
    "acquisition.commands.inject",
    "acquisition.commands.demo",
    "acquisition.commands.worklist",
    "acquisition.commands.dose",
    "acquisition.commands.journal",
    "acquisition.commands.quarantine",
    "acquisition.commands.users",
    "simulators.commands",
)


def simulator(name: str) -> ModuleType:
    """Load a simulator module by name (``"injector"``, ``"unit"``, ``"ris"``, ``"pacs"``)."""
    return importlib.import_module(f"simulators.{name}")


def dicom_timeouts(config: Config) -> Timeouts:
    d = config.dicom
    return Timeouts(
        connection_s=d.connection_timeout_s,
        acse_s=d.acse_timeout_s,
        dimse_s=d.dimse_timeout_s,
        network_s=d.network_timeout_s,
    )


def unit_facing_server(
    config: Config,
    worklist: WorklistStore,
    mpps_store: SqliteMppsStore,
    dose_sink: ExposureSink,
    *,
    on_stored: Callable[[Path, Dataset], None] | None = None,
    on_mpps: Callable[[str, str, str, int], None] | None = None,
    received_objects: ReceivedObjects | None = None,
    on_quarantined: Callable[[QuarantineItem], None] | None = None,
    on_rejected: RejectionHook | None = None,
) -> UnitFacingServer:
    """MWL, MPPS and Storage SCPs toward the unit, from the ``[dicom]`` settings."""
    d = config.dicom
    return UnitFacingServer(
        worklist,
        mpps_store,
        dose_sink,
        ae_title=d.ae_title,
        host=d.host,
        port=d.port,
        allowed_calling_aes=allowed_calling_aes(config),
        timeouts=dicom_timeouts(config),
        max_pdu=d.max_pdu,
        storage_dir=d.storage_dir,
        tls_certificate=d.tls_certificate,
        tls_private_key=d.tls_private_key,
        tls_ca=d.tls_ca,
        fsync_objects=d.fsync_objects,
        worklist_max_results=d.worklist_max_results,
        uid_prefix=config.site.uid_root,
        on_stored=on_stored,
        on_mpps=on_mpps,
        qa_patterns=qa_patterns(config),
        received_objects=received_objects,
        on_quarantined=on_quarantined,
        max_associations=d.max_associations,
        max_associations_per_calling_ae=d.max_associations_per_calling_ae,
        reserved_calling_aes=reserved_calling_aes(d),
        on_rejected=on_rejected,
    )


def allowed_calling_aes(config: Config) -> tuple[str, ...]:
    """Who may associate with our SCPs: ``dicom.allowed_calling_aes`` and, when that list is
    given, the PACS (it calls back with Storage Commitment results). Empty: anyone — which
    is refused on an address other than loopback without ``dicom.allow_any_calling_ae``."""
    d = config.dicom
    if not d.allowed_calling_aes:
        if not d.allow_any_calling_ae and not is_loopback(d.host):
            raise ConfigError(
                f"dicom.allowed_calling_aes: empty while dicom.host is {d.host!r}, not loopback:"
                " any device on the network could associate; list the unit's AE title (and"
                " others allowed), or set dicom.allow_any_calling_ae = true"
            )
        return ()
    extra = (config.pacs.ae_title,) if config.pacs.host else ()
    return tuple(dict.fromkeys((*d.allowed_calling_aes, *extra)))


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (an IP literal or ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def console_tls(config: Config) -> ssl.SSLContext | None:
    """The console's HTTPS context (TLS 1.2 at least), or None without a certificate."""
    console = config.console
    if not console.tls_certificate:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(console.tls_certificate, console.tls_private_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"console.tls_certificate / console.tls_private_key: cannot be loaded: {exc}"
        ) from exc
    return context


def limits_from(settings: InjectorSettings) -> InjectorLimits:
    """Map the validated settings onto the driver's plain values."""
    return InjectorLimits(
        max_rate_ml_min=settings.max_rate_ml_min,
        min_rate_ml_min=settings.min_rate_ml_min,
        min_volume_ml=settings.min_volume_ml,
        max_injection_s=settings.max_injection_s,
        max_volume_per_injection_ml=settings.max_volume_per_injection_ml,
        max_volume_per_session_ml=settings.max_volume_per_exam_ml,
        pressure_warning_kpa=settings.pressure_warning_kpa,
        pressure_adjustment_kpa=settings.pressure_adjustment_kpa,
        pressure_termination_kpa=settings.pressure_termination_kpa,
        pressure_ceiling_kpa=settings.pressure_ceiling_kpa,
        baseline_window_s=settings.baseline_window_s,
        arm_timeout_s=settings.arm_timeout_s,
        max_hold_s=settings.max_hold_s,
        safe_timeout_s=settings.safe_timeout_s,
        poll_interval_s=settings.poll_interval_s,
        extravasation_drop_kpa=settings.extravasation_drop_kpa,
    )


def timing_from(settings: InjectorSettings) -> LinkTiming:
    return LinkTiming(
        reply_timeout_s=settings.reply_timeout_s,
        inter_byte_timeout_s=settings.inter_byte_timeout_s,
    )


def driver_from(settings: InjectorSettings) -> NewEraInjector:
    """The driver for the configured injector (no I/O until ``connect()``)."""
    return NewEraInjector(
        settings.url,
        baud=settings.baud,
        address=settings.address,
        limits=limits_from(settings),
        timing=timing_from(settings),
    )


def hospital_destinations(config: Config) -> dict[str, Peer]:
    """The outbox's peers from the ``[ris]`` and ``[pacs]`` settings: the RIS's MPPS manager
    and the PACS, with the ``[dicom]`` timeouts and TLS."""
    timeouts = dicom_timeouts(config)
    tls = (
        client_tls_context(
            config.dicom.tls_ca, config.dicom.tls_certificate, config.dicom.tls_private_key
        )
        if config.dicom.tls_certificate
        else None
    )
    calling = config.dicom.ae_title
    peers: dict[str, Peer] = {}
    if config.ris.host:
        # the MPPS manager may be another host than the worklist provider (IHE SWF)
        peers[RIS] = Peer(
            config.ris.mpps_host or config.ris.host,
            config.ris.mpps_port or config.ris.port,
            config.ris.mpps_ae_title or config.ris.ae_title,
            calling_ae=calling,
            timeouts=timeouts,
            tls=tls,
            max_pdu=config.dicom.max_pdu,
        )
    if config.pacs.host:
        peers[PACS] = Peer(
            config.pacs.host,
            config.pacs.port,
            config.pacs.ae_title,
            calling_ae=calling,
            timeouts=timeouts,
            tls=tls,
            max_pdu=config.dicom.max_pdu,
        )
    return peers
