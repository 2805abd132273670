"""What every SCU of ours toward the hospital shares: the peer, the association, the errors.

Every association opened here has its connection, ACSE, DIMSE and network timeouts set
explicitly (:func:`dicom_nodes.network.make_ae`), TCP_NODELAY on its socket
(:data:`dicom_nodes.network.NODELAY_HANDLERS`), identifier logging off, and optional TLS
(``ae.associate(..., tls_args=(context, hostname))``). Status values are interpreted with
:func:`pynetdicom.status.code_to_category` (PS3.7 Annex C).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from dicom_nodes.compat import keep_responses_from_reactor
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, close_unestablished, make_ae

log = logging.getLogger(__name__)


class ScuError(Exception):
    """Base of every error raised by the SCUs toward the RIS and PACS."""


class AssociationError(ScuError, ConnectionError):
    """No association: the peer is unreachable, rejected us, or aborted."""


class DimseError(ScuError):
    """The association stood but a DIMSE exchange got no valid response (timeout, abort)."""


@dataclass(frozen=True)
class Peer:
    """A remote SCP and how we call it: called/calling AE, timeouts, optional TLS."""

    host: str
    port: int
    ae_title: str
    calling_ae: str = "GALACTO"
    timeouts: Timeouts = field(default_factory=Timeouts)
    tls: ssl.SSLContext | None = None
    tls_hostname: str = ""
    max_pdu: int = 262144

    def describe(self) -> str:
        """``AE@host:port`` as shown in messages and logs (no patient data)."""
        scheme = " (TLS)" if self.tls is not None else ""
        return f"{self.ae_title}@{self.host}:{self.port}{scheme}"


@contextmanager
def associate(
    peer: Peer,
    contexts: Sequence[PresentationContext],
    *,
    evt_handlers: Sequence[tuple[Any, ...]] = (),
) -> Iterator[Association]:
    """An established association with ``peer``, released (or aborted) on exit.

    Raises :class:`AssociationError` naming the peer when the association cannot be
    established (connection refused or timed out, A-ASSOCIATE-RJ, no accepted context).
    """
    ae = make_ae(peer.calling_ae, peer.timeouts, max_pdu=peer.max_pdu)
    ae.requested_contexts = list(contexts)
    tls_args = None
    if peer.tls is not None:
        tls_args = (peer.tls, peer.tls_hostname or peer.host)
    try:
        assoc = ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.ae_title,
            evt_handlers=[*NODELAY_HANDLERS, *evt_handlers],
            tls_args=tls_args,
        )
    except (OSError, ssl.SSLError) as exc:
        raise AssociationError(f"cannot reach {peer.describe()}: {exc}") from exc
    if not assoc.is_established:
        close_unestablished(assoc)
        raise AssociationError(_why_not_established(peer, assoc))
    keep_responses_from_reactor(assoc)
    try:
        yield assoc
    except BaseException:
        if assoc.is_established:
            assoc.abort()
        raise
    else:
        if assoc.is_established:
            assoc.release()


def _why_not_established(peer: Peer, assoc: Association) -> str:
    if assoc.is_rejected:
        primitive = getattr(assoc.acceptor, "primitive", None)
        reason = getattr(primitive, "reason_str", "no reason given")
        return (
            f"association rejected by {peer.describe()} (calling AE {peer.calling_ae!r}): {reason}"
        )
    if assoc.is_aborted and assoc.acceptor.primitive is not None:
        return f"association with {peer.describe()} aborted (no accepted presentation context?)"
    return (
        f"no association with {peer.describe()}: connection refused or timed out "
        f"after {peer.timeouts.connection_s:g} s"
    )


def status_of(response: Dataset) -> int:
    """The Status (0000,0900) of a response; raise :class:`DimseError` if there is none.

    pynetdicom returns an empty Dataset when the DIMSE timeout expired, the peer aborted or
    sent an invalid response (its documented convention for every ``send_*``).
    """
    status = getattr(response, "Status", None)
    if status is None:
        raise DimseError("no valid response (DIMSE timeout, abort or invalid message)")
    return int(status)


def category(status: int) -> str:
    """PS3.7 Annex C category: "Success", "Warning", "Failure", "Cancel", "Pending"."""
    return str(code_to_category(status))
