"""Canaries of pynetdicom's internals (dicom_nodes/compat.py): each fails loudly, naming what an
upgrade moved, before the controller misbehaves. Raise the pin (pyproject.toml) only once they
pass on the new version."""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynetdicom
import pynetdicom.dimse_messages
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_nodes import compat
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from dicom_nodes.unit_facing.mwl_scp import WorklistSCP
from dicom_nodes.unit_facing.worklist_store import WorklistStore
from tests.integration.test_mwl_scp import make_step, query
from tests.waiting import wait_until

TIMEOUTS = Timeouts(connection_s=5, acse_s=5, dimse_s=10, network_s=10)
UPGRADE = "pynetdicom changed an internal galacto relies on (dicom_nodes/compat.py): "


@pytest.fixture
def association() -> Iterator[Any]:
    """An established association to a Verification SCP on loopback, as our SCUs open them."""
    scp = AE("ECHOSCP")
    scp.add_supported_context(Verification)
    opened: list[Any] = []
    server = scp.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: opened.append(event.assoc))],
    )
    ae = make_ae("GALACTO", TIMEOUTS)
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", server.server_address[1], ae_title="ECHOSCP", evt_handlers=NODELAY_HANDLERS
    )
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()
        scp.shutdown()


def test_the_association_socket_is_where_compat_looks(association: Any) -> None:
    sock = compat.association_socket(association)
    assert isinstance(sock, socket.socket), UPGRADE + "assoc.dul.socket.socket is not a socket"
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), (
        UPGRADE + "TCP_NODELAY was not set from EVT_CONN_OPEN"
    )
    assert callable(association.dul.socket.recv), UPGRADE + "AssociationSocket.recv is gone"


def test_a_replaced_recv_is_the_one_pynetdicom_reads_with(association: Any) -> None:
    reads: list[int] = []

    def counting(sock: Any, nr_bytes: int) -> bytearray:
        reads.append(nr_bytes)
        return bytearray(sock.recv(nr_bytes, socket.MSG_WAITALL))

    compat.replace_recv(association, counting)
    assert association.send_c_echo().Status == 0x0000
    assert reads, UPGRADE + "the DUL no longer reads PDUs through AssociationSocket.recv"


def test_the_dimse_response_queue_is_swapped_and_still_used(association: Any) -> None:
    compat.keep_responses_from_reactor(association)  # as dicom_nodes.hospital.scu.associate
    assert isinstance(association.dimse.msg_queue, compat._ResponsesForTheCaller), (
        UPGRADE + "assoc.dimse.msg_queue could not be swapped"
    )
    assert isinstance(association.dimse.msg_queue, queue.Queue)
    assert association.send_c_echo().Status == 0x0000, (
        UPGRADE + "the DIMSE provider no longer reads responses from assoc.dimse.msg_queue"
    )


def test_the_fast_mwl_path_probe_passes_on_the_pinned_version() -> None:
    assert compat.probe_mwl_fast_path() is None, UPGRADE + str(compat.probe_mwl_fast_path())


def test_the_probe_sees_a_missing_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(DULServiceProvider, "send_pdu")
    assert "DULServiceProvider.send_pdu" in str(compat.probe_mwl_fast_path())
    monkeypatch.undo()
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assert "3.1.0" in str(compat.probe_mwl_fast_path())


def serve_worklist(store: WorklistStore, *, fast: bool | None) -> tuple[Any, int]:
    scp = WorklistSCP(store, max_results=3, fast=fast)
    ae = make_ae("GALACTO", TIMEOUTS)
    for context in scp.contexts:
        ae.add_supported_context(context.abstract_syntax, context.transfer_syntax)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=scp.handlers() + NODELAY_HANDLERS
    )
    return ae, server.server_address[1]


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_the_public_path_gives_the_fast_path_s_answers(tmp_path: Path, syntax: str) -> None:
    store = WorklistStore(tmp_path / "db.sqlite")
    store.publish_many([make_step(n) for n in range(5)])
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.ScheduledProcedureStepSequence = [Dataset()]
    identifier.ScheduledProcedureStepSequence[0].ScheduledStationAETitle = "UNIT1"
    identifier.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID = ""
    answers = []
    for fast in (True, False):
        ae, port = serve_worklist(store, fast=fast)
        try:
            answers.append(query(port, identifier, transfer_syntax=syntax))
        finally:
            ae.shutdown()
    fast_answer, public_answer = answers
    assert [s for s, _ in fast_answer] == [0xFF00, 0xFF00, 0xFF00, 0xA700]  # capped at 3
    assert public_answer == fast_answer
    store.close()


def test_a_failed_probe_switches_to_the_public_path_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(compat, "_probed", [])
    monkeypatch.delattr(DULServiceProvider, "send_pdu")
    store = WorklistStore(tmp_path / "db.sqlite")
    with caplog.at_level(logging.WARNING, logger="dicom_nodes.compat"):
        first, second = WorklistSCP(store), WorklistSCP(store)
    assert "DULServiceProvider.send_pdu" in str(first.slow_path_reason)
    assert second.slow_path_reason == first.slow_path_reason
    assert caplog.text.count("public path") == 1
    store.close()


def test_received_datasets_are_written_where_compat_says() -> None:
    assert pynetdicom.dimse_messages.NamedTemporaryFile is compat._named_temporary_file, (
        UPGRADE + "dimse_messages no longer creates its files through NamedTemporaryFile"
    )
    message = pynetdicom.dimse_messages.C_STORE_RQ()
    assert hasattr(message, "_data_set_file"), (
        UPGRADE + "a DIMSE message no longer keeps its received file in _data_set_file"
    )


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (SO_LINGER 0), as a killed process's peer sees it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_requestor_socket_reset_by_its_peer_is_closed(association: Any) -> None:
    """pynetdicom's ``_shutdown_socket`` closes only after a shutdown that succeeded; on a
    socket the peer reset, shutdown fails (ENOTCONN) and the descriptor stayed open for as long
    as anything (a traceback, a log record) kept the association: the SIGKILL campaign's leak."""
    sock = compat.association_socket(association)
    assert sock is not None
    server_side = _accepted_socket_of(sock)
    _reset(server_side)
    with contextlib.suppress(Exception):
        association.send_c_echo()
    association.abort()
    wait_until(
        lambda: sock.fileno() == -1,
        5.0,
        UPGRADE + "AssociationSocket._shutdown_socket no longer closes a reset requestor socket",
    )


def test_an_acceptor_socket_reset_by_its_peer_is_closed() -> None:
    """The acceptor's side: socketserver closes an accepted socket when its handler returns,
    whatever pynetdicom's shutdown did; a guard that this stays so."""
    accepted: list[socket.socket] = []

    def on_open(event: evt.Event) -> None:
        sock = compat.association_socket(event.assoc)
        assert sock is not None
        accepted.append(sock)

    scp = make_ae("ECHOSCP", TIMEOUTS)
    scp.add_supported_context(Verification)
    server = scp.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[*NODELAY_HANDLERS, (evt.EVT_CONN_OPEN, on_open)],
    )
    try:
        ae = make_ae("GALACTO", TIMEOUTS)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="ECHOSCP")
        assert assoc.is_established
        wait_until(lambda: accepted, 5.0, "the acceptor's EVT_CONN_OPEN")
        requestor = compat.association_socket(assoc)
        assert requestor is not None
        _reset(requestor)  # the unit's process killed: the acceptor reads an RST
        wait_until(
            lambda: accepted[0].fileno() == -1,
            5.0,
            UPGRADE + "a reset acceptor socket is no longer closed when its association ends",
        )
        assoc.abort()
    finally:
        scp.shutdown()


def _accepted_socket_of(requestor: socket.socket) -> socket.socket:
    """The acceptor's socket of a loopback connection, found among the open sockets of this
    process by its address pair."""
    local, remote = requestor.getsockname(), requestor.getpeername()
    for obj in gc.get_objects():
        if (
            isinstance(obj, socket.socket)
            and obj.fileno() != -1
            and obj.type == socket.SOCK_STREAM
            and obj is not requestor
        ):
            with contextlib.suppress(OSError):
                if obj.getsockname() == remote and obj.getpeername() == local:
                    return obj
    raise AssertionError("no acceptor socket for the association")
