"""DICOM nodes: SCPs toward the mammography unit, SCUs toward the RIS and PACS.

Three sub-packages, whose names say what they are (one-way: neither of the first two imports
the other; ``datasets`` imports neither):

- :mod:`dicom_nodes.unit_facing`: the MWL, MPPS and Storage SCPs the unit talks to, on one AE
  and one port (:class:`UnitFacingServer`), and what they keep;
- :mod:`dicom_nodes.hospital`: the SCUs toward the RIS and the PACS (:class:`Peer`), the local
  copy of the RIS worklist, and the durable outbox with its senders (:class:`DicomOutbox`);
- :mod:`dicom_nodes.datasets`: the datasets galacto builds and reads (pure functions).

Shared by all three: :mod:`~dicom_nodes.network` (timeouts, TCP_NODELAY, TLS),
:mod:`~dicom_nodes.status` (DIMSE status tables), :mod:`~dicom_nodes.implementation` (who galacto
is on the wire) and :mod:`~dicom_nodes.compat`, the one module that touches pynetdicom's
internals.
"""

import logging

from dicom_nodes.hospital.dicom_outbox import DicomOutbox
from dicom_nodes.hospital.ris_orders import RisOrderStore
from dicom_nodes.hospital.scu import Peer
from dicom_nodes.implementation import IMPLEMENTATION_CLASS_UID
from dicom_nodes.network import Timeouts
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.received_objects import ReceivedObjects
from dicom_nodes.unit_facing.server import UnitFacingServer
from dicom_nodes.unit_facing.worklist_store import WorklistStore

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "DicomOutbox",
    "Peer",
    "ReceivedObjects",
    "RisOrderStore",
    "SqliteMppsStore",
    "Timeouts",
    "UnitFacingServer",
    "WorklistStore",
]
