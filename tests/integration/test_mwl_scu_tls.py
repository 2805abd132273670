"""The SCUs over TLS: a real TLS worklist SCP (pynetdicom + ssl), a certificate made here."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from dicom_nodes.hospital.mwl_scu import WorklistQuery, find_worklist
from dicom_nodes.hospital.scu import AssociationError, Peer
from dicom_nodes.network import (
    NODELAY_HANDLERS,
    Timeouts,
    client_tls_context,
    server_tls_context,
)
from tests.integration.test_mwl_scu import WorklistScp, order

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")

FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_scp(tmp_path: Path) -> Iterator[tuple[WorklistScp, Path]]:
    cert, key = self_signed(tmp_path, "ris")
    state = WorklistScp(orders=[order(1, name="Müller^Anna".encode("latin-1"))])
    ae = AE("RIS")
    ae.add_supported_context(ModalityWorklistInformationFind)
    handlers: list[Any] = [(evt.EVT_C_FIND, state.handle_find), *NODELAY_HANDLERS]
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=handlers,
        ssl_context=server_tls_context(str(cert), str(key)),
    )
    state.port = server.server_address[1]
    try:
        yield state, cert
    finally:
        ae.shutdown()


def test_a_query_over_tls_with_the_ca_trusted(tls_scp: tuple[WorklistScp, Path]) -> None:
    scp, cert = tls_scp
    peer = Peer("127.0.0.1", scp.port, "RIS", timeouts=FAST, tls=client_tls_context(ca=str(cert)))
    (item,) = find_worklist(peer, WorklistQuery()).items
    assert item.patient.name == "Müller^Anna"
    assert "(TLS)" in peer.describe()


def test_an_untrusted_certificate_is_refused(
    tls_scp: tuple[WorklistScp, Path], tmp_path: Path
) -> None:
    scp, _cert = tls_scp
    other, _key = self_signed(tmp_path, "other")
    peer = Peer("127.0.0.1", scp.port, "RIS", timeouts=FAST, tls=client_tls_context(ca=str(other)))
    with pytest.raises(AssociationError):
        find_worklist(peer, WorklistQuery())
    assert scp.queries == []
