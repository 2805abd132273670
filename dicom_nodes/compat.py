"""pynetdicom's internals, in one place (issue 13 §7).

galacto uses pynetdicom's public API everywhere but here. Four things need its insides, each
for a reason measured or observed, each watched by a canary test (``tests/integration/
test_compat.py``) that fails loudly, naming what changed, when an upgrade moves them. The pin
``pynetdicom>=3.0.4,<3.1`` in pyproject.toml is there for this module: raise it only once those
canaries pass on the new version.

1. **The association's socket** (``assoc.dul.socket``: an ``AssociationSocket`` holding the
   ``socket.socket``). pynetdicom never sets TCP_NODELAY: every request/response whose message
   spans several PDUs then waits on the peer's 40 ms delayed ACK (dicom.md §2). And its
   ``recv`` reads 4 KiB at a time; a large read per PDU receives images 7–15 % faster.
   :func:`association_socket`, :func:`replace_recv`, :func:`close_socket`. And its
   ``_shutdown_socket`` closes only after a successful ``shutdown``, never on a connection
   the peer reset: :func:`close_even_when_reset`.
2. **The DIMSE response queue** (``assoc.dimse.msg_queue``). pynetdicom's reactor can take a
   response meant for the caller of ``send_*`` and drop it as unexpected (a race of its pause
   flag, measured under CPU load: about 1 MPPS N-SET in 2,400). :func:`keep_responses_from_reactor`
   swaps in a queue whose non-blocking get only returns requests.
3. **The MWL fast path** (``assoc.dul.to_provider_queue``, ``assoc.dul.send_pdu``, the C-FIND-RSP
   message encoder). Each pending C-FIND response costs pynetdicom ~0.4 ms to encode;
   :class:`FastPendingSender` encodes the command set once per request and sends pre-encoded
   identifiers as P-DATA PDUs. :func:`mwl_fast_path` probes it once at start-up; when the probe
   fails, the worklist SCP answers through pynetdicom's public generator instead
   (:func:`decode_identifier`), a WARNING is logged once and the controller journals the switch.
4. **Where received datasets are written** (``pynetdicom.dimse_messages.NamedTemporaryFile``, a
   message's ``_data_set_file``). With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom writes each
   incoming C-STORE dataset to a temporary file in the system's temporary folder (patient data
   outside the data folder, a copy instead of a rename) and leaves a cut-off one open and in
   place. :func:`receive_into` and :func:`discard_partial_dataset`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pynetdicom
import pynetdicom.dimse
import pynetdicom.dimse_messages
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

log = logging.getLogger(__name__)

#: The pynetdicom releases these internals were read from (the pin in pyproject.toml).
TESTED_VERSIONS = ("3.0",)


# -- 1. the association's socket --------------------------------------------------------------


def association_socket(assoc: Any) -> socket.socket | None:
    """The TCP (or TLS) socket of an association, once connected; None before or after."""
    dul_socket = assoc.dul.socket
    if dul_socket is None:
        return None
    return cast(socket.socket | None, dul_socket.socket)


def replace_recv(assoc: Any, read: Callable[[Any, int], bytearray]) -> None:
    """Have the association read each PDU with ``read(sock, nr_bytes)`` (same contract as
    ``AssociationSocket.recv``: all the bytes, or what came before the peer closed)."""
    owner = weakref.ref(assoc.dul.socket)

    def recv(nr_bytes: int) -> bytearray:
        # A weak reference, looked up at each call: a strong one would make a reference cycle
        # that keeps a dropped association's socket (and its descriptor) open until the
        # garbage collector runs.
        return read(owner().socket, nr_bytes)  # type: ignore[union-attr]

    assoc.dul.socket.recv = recv


def close_socket(assoc: Any) -> None:
    """Close an association's socket (pynetdicom 3.0.4 may leave a requestor's open when the
    peer drops the connection during negotiation), whatever state its connection is in."""
    dul_socket = assoc.dul.socket
    if dul_socket is not None:
        _shut_down_and_close(dul_socket.socket)
        dul_socket.close()


def close_even_when_reset(assoc: Any) -> None:
    """Have the association's socket closed however its connection ended.

    pynetdicom's ``AssociationSocket._shutdown_socket`` calls ``shutdown`` then ``close`` in one
    ``try``: on a connection the peer reset (a process killed, a cable pulled) ``shutdown``
    fails with ENOTCONN and the descriptor is never closed. It then lives as long as anything
    keeps the association — a traceback, a log record of pynetdicom's own ``LOGGER.exception``,
    a reference cycle until the garbage collector runs — and a controller that meets many
    resets runs out of descriptors. The replacement closes in any case.
    """
    owner = weakref.ref(assoc.dul.socket)  # a strong one would be a reference cycle (above)

    def shutdown_socket() -> None:
        dul_socket = owner()
        if dul_socket is not None:
            _shut_down_and_close(dul_socket.socket)

    assoc.dul.socket._shutdown_socket = shutdown_socket


def _shut_down_and_close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # ENOTCONN once reset: closed all the same
    sock.close()


# -- 2. the DIMSE response queue ------------------------------------------------------------------


class _ResponsesForTheCaller(queue.Queue[Any]):
    """pynetdicom's DIMSE message queue, except that a *non-blocking* get — the association
    reactor's poll — only ever returns requests (an N-EVENT-REPORT, a C-STORE sub-operation).

    Why: pynetdicom pauses its reactor around each ``send_*`` with a checkpoint Event and an
    ``_is_paused`` flag that the reactor raises just *before* waiting on the Event. If the
    reactor has just passed the Event when ``send_*`` clears it, ``send_*`` sees the stale flag,
    sends, and the reactor's next ``get_msg(block=False)`` can take the response and drop it as
    an "unexpected" message: the caller then waits for its DIMSE timeout. With this queue the
    response stays for the caller's blocking get; ordering is unchanged (the head is never
    skipped).
    """

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            return super().get(block, timeout)
        with self.not_empty:
            if not self._qsize() or not _is_request(self.queue[0]):
                raise queue.Empty
            item = self._get()
            self.not_full.notify()
            return item


def _is_request(item: tuple[Any, Any]) -> bool:
    _context_id, primitive = item
    return primitive is not None and bool(getattr(primitive, "is_valid_request", False))


def keep_responses_from_reactor(assoc: Association) -> None:
    """Install :class:`_ResponsesForTheCaller` on an established requestor association.

    Swapped first, then whatever reached the old queue meanwhile is moved to the front, in order
    (the DUL thread looks the queue up on every put).
    """
    replacement = _ResponsesForTheCaller()
    old, assoc.dimse.msg_queue = assoc.dimse.msg_queue, replacement
    early = []
    while True:
        try:
            early.append(old.get_nowait())
        except queue.Empty:
            break
    with replacement.mutex:
        replacement.queue.extendleft(reversed(early))
        replacement.unfinished_tasks += len(early)
        if early:
            replacement.not_empty.notify(len(early))


# -- 3. the MWL fast path -------------------------------------------------------------------------

#: P-DATA primitives allowed to wait for the DUL thread before the sender pauses: keeps memory
#: flat and lets a C-CANCEL stop the answer promptly.
_SEND_QUEUE_HIGH_WATER = 16
_SEND_QUEUE_POLL_S = 0.0002


def _command_set(request_message_id: int, sop_class_uid: str, status: int) -> bytes:
    """The encoded command set of a C-FIND-RSP with a data set (PS3.7 §6.3.1: implicit VR LE)."""
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = request_message_id
    rsp.AffectedSOPClassUID = sop_class_uid
    rsp.Status = status
    rsp.Identifier = BytesIO(b"\x00")  # marks "a data set follows"
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    command = encode(message.command_set, True, True)
    if command is None:
        raise ValueError("pynetdicom could not encode the C-FIND-RSP command set")
    return bytes(command)


class FastPendingSender:
    """Sends the pending C-FIND responses of one request from pre-encoded identifiers: the
    command set encoded once, one P-DATA primitive per match carrying both PDVs (PS3.8 §9.3.5
    allows several PDVs in one PDU). A response larger than the peer's maximum PDU goes through
    ``DIMSEServiceProvider.send_msg``, which fragments. Not seen by this shortcut:
    ``EVT_DIMSE_SENT`` for pending responses."""

    def __init__(self, event: evt.Event, status: int) -> None:
        assoc = event.assoc
        self._context_id = int(event.context.context_id)
        self._dimse = assoc.dimse
        self._queue = assoc.dul.to_provider_queue
        self._assoc = assoc
        self._rsp = C_FIND()
        self._rsp.MessageIDBeingRespondedTo = event.request.MessageID
        self._rsp.AffectedSOPClassUID = event.request.AffectedSOPClassUID
        self._rsp.Status = status
        command = _command_set(
            int(event.request.MessageID or 0), str(event.request.AffectedSOPClassUID), status
        )
        # pynetdicom wants each PDV as a [context ID, data] list; data starts with the
        # message control header (PS3.8 §E.2): 0x03 command, last fragment.
        self._command_pdv: list[Any] = [self._context_id, b"\x03" + command]
        # PDV list length of one P-DATA-TF: per PDV item 4 (length) + 1 (context) + data.
        self._overhead = 2 * 5 + len(self._command_pdv[1]) + 1
        self._max_pdv_list = int(self._dimse.maximum_pdu_size or 0)

    def send(self, identifier: bytes) -> None:
        """Queue one pending response carrying ``identifier`` for the DUL to send."""
        if self._max_pdv_list and self._overhead + len(identifier) > self._max_pdv_list:
            self._rsp.Identifier = BytesIO(identifier)
            self._dimse.send_msg(self._rsp, self._context_id)  # fragments as needed
            return
        while self._queue.qsize() > _SEND_QUEUE_HIGH_WATER and self._assoc.is_established:
            time.sleep(_SEND_QUEUE_POLL_S)
        pdata = P_DATA()
        pdata.presentation_data_value_list = cast(
            Any,
            [self._command_pdv, [self._context_id, b"\x02" + identifier]],  # 0x02: data, last
        )
        self._assoc.dul.send_pdu(pdata)


def decode_identifier(identifier: bytes, *, explicit_vr: bool) -> Dataset:
    """A pre-encoded identifier as a Dataset, for pynetdicom's public path (the fallback)."""
    return read_dataset(BytesIO(identifier), not explicit_vr, True)


def probe_mwl_fast_path() -> str | None:
    """Why the MWL fast path cannot be used with the installed pynetdicom (None: it can).

    Checks, without a peer, every internal :class:`FastPendingSender` touches: the DUL's
    provider queue and ``send_pdu``, the DIMSE provider's ``send_msg`` and
    ``maximum_pdu_size``, P-DATA's PDV list, and that the C-FIND-RSP command set it encodes
    decodes back to what it was given.
    """
    version = ".".join(pynetdicom.__version__.split(".")[:2])
    if version not in TESTED_VERSIONS:
        return f"pynetdicom {pynetdicom.__version__} is not a version the fast path was read from"
    init_names = DULServiceProvider.__init__.__code__.co_names
    checks = {
        "DULServiceProvider.to_provider_queue": "to_provider_queue" in init_names,
        "DULServiceProvider.send_pdu": callable(getattr(DULServiceProvider, "send_pdu", None)),
        "DIMSEServiceProvider.send_msg": callable(
            getattr(pynetdicom.dimse.DIMSEServiceProvider, "send_msg", None)
        ),
        "DIMSEServiceProvider.maximum_pdu_size": isinstance(
            getattr(pynetdicom.dimse.DIMSEServiceProvider, "maximum_pdu_size", None), property
        ),
        "P_DATA.presentation_data_value_list": hasattr(P_DATA(), "presentation_data_value_list"),
    }
    missing = [name for name, present in checks.items() if not present]
    if missing:
        return f"pynetdicom {pynetdicom.__version__} has no {', '.join(missing)}"
    try:
        encoded = _command_set(7, "1.2.840.10008.5.1.4.31", 0xFF00)
        command = read_dataset(BytesIO(encoded), True, True)
        if (command.MessageIDBeingRespondedTo, command.Status, command.CommandDataSetType) != (
            7,
            0xFF00,
            0x0001,
        ):
            return "the C-FIND-RSP command set it encodes is not the one asked for"
    except Exception as exc:  # whatever an upgrade broke
        return f"the C-FIND-RSP command set cannot be encoded: {exc!r}"
    return None


_probe_lock = threading.Lock()
_probed: list[str | None] = []


def mwl_fast_path() -> str | None:
    """The start-up probe, run once per process: None when the fast path is used, else why
    the public path is (said once, at WARNING)."""
    with _probe_lock:
        if not _probed:
            why = probe_mwl_fast_path()
            _probed.append(why)
            if why is not None:
                log.warning("MWL answered through pynetdicom's public path (slower): %s", why)
        return _probed[0]


# -- 4. where received datasets are written --------------------------------------------------------
#
# pynetdicom 3.0.4 writes a chunked C-STORE dataset to ``NamedTemporaryFile(delete=False)``. The
# DUL thread of each association decodes its messages, so a temporary-file factory that looks
# the calling thread up here writes each association's datasets into its own folder.
_RECEIVE_DIRS: weakref.WeakKeyDictionary[threading.Thread, Path] = weakref.WeakKeyDictionary()
_real_named_temporary_file = tempfile.NamedTemporaryFile


def _named_temporary_file(*args: Any, **kwargs: Any) -> Any:
    folder = _RECEIVE_DIRS.get(threading.current_thread())
    if folder is not None:
        kwargs.setdefault("dir", folder)
    return _real_named_temporary_file(*args, **kwargs)


pynetdicom.dimse_messages.NamedTemporaryFile = _named_temporary_file


def receive_into(assoc: Any, folder: Path) -> None:
    """Write the datasets this association receives into ``folder`` (call on EVT_CONN_OPEN)."""
    _RECEIVE_DIRS[assoc.dul] = folder


def discard_partial_dataset(event: evt.Event) -> None:
    """Close and remove the temporary file of a C-STORE cut off mid-dataset.

    With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom 3.0.4 writes the incoming dataset to a
    ``NamedTemporaryFile(delete=False)`` and, when the association drops before the message is
    complete, neither closes nor removes it: one open descriptor and one stray file per dropped
    association. Nothing was acknowledged for that object, so nothing is lost by removing it.
    """
    message = getattr(event.assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    with contextlib.suppress(OSError):
        partial.close()
    with contextlib.suppress(OSError):
        Path(partial.name).unlink()
    message._data_set_file = None  # type: ignore[union-attr]


__all__ = [
    "FastPendingSender",
    "association_socket",
    "close_even_when_reset",
    "close_socket",
    "decode_identifier",
    "discard_partial_dataset",
    "keep_responses_from_reactor",
    "mwl_fast_path",
    "probe_mwl_fast_path",
    "receive_into",
    "replace_recv",
]
