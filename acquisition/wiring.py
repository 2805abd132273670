"""The composition root: the only place that names simulators, and only as strings.

``acquisition`` never imports ``simulators``; a simulator is loaded by module name when a
command (``galacto sim …``, ``galacto demo``) asks for one.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from acquisition.dose_log import DoseLog
from acquisition.settings import Config
from dicom_nodes.mpps_store import SqliteMppsStore
from dicom_nodes.network import Timeouts
from dicom_nodes.server import UnitFacingServer
from dicom_nodes.worklist_store import WorklistStore

# Sub-commands of `galacto`, each a module exposing register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "acquisition.commands.inject",
    "acquisition.commands.demo",
    "acquisition.commands.worklist",
    "acquisition.commands.dose",
    "acquisition.commands.journal",
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
    config: Config, worklist: WorklistStore, mpps_store: SqliteMppsStore, dose_log: DoseLog
) -> UnitFacingServer:
    """MWL, MPPS and Storage SCPs toward the unit, from the ``[dicom]`` settings."""
    d = config.dicom
    return UnitFacingServer(
        worklist,
        mpps_store,
        dose_log,
        ae_title=d.ae_title,
        host=d.host,
        port=d.port,
        allowed_calling_aes=d.allowed_calling_aes,
        timeouts=dicom_timeouts(config),
        max_pdu=d.max_pdu,
        storage_dir=d.storage_dir,
        tls_certificate=d.tls_certificate,
        tls_private_key=d.tls_private_key,
        tls_ca=d.tls_ca,
        fsync_objects=d.fsync_objects,
        worklist_max_results=d.worklist_max_results,
        uid_prefix=config.site.uid_root,
    )
