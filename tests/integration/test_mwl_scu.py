"""Our MWL SCU against a real loopback worklist SCP stood up here (pynetdicom, no mocks)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from dicom_nodes.hospital.mwl_scu import (
    WorklistError,
    WorklistQuery,
    check_date_range,
    find_worklist,
)
from dicom_nodes.hospital.scu import AssociationError, Peer
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts
from tests.waiting import eventually

FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def order(n: int, name: bytes = b"DOE^JANE", charset: str | list[str] = "ISO_IR 100") -> Dataset:
    """A response identifier as a RIS would encode it (raw bytes in the given charset)."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = f"PID{n:04d}"
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "F"
    ds.Allergies = ["IODINE", "LATEX"]
    ds.PregnancyStatus = 1
    ds.MedicalAlerts = "ASTHMA"
    ds.AccessionNumber = f"ACC{n:04d}"
    ds.RequestedProcedureID = f"RP{n}"
    ds.RequestedProcedureDescription = "Galactography right"
    ds.RequestedProcedureCodeSequence = Sequence([code_item("18102001", "SCT", "Ductogram")])
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1466.99.{n}"
    sps = Dataset()
    sps.ScheduledStationAETitle = "GALACTO"
    sps.ScheduledProcedureStepStartDate = "20261125"
    sps.ScheduledProcedureStepStartTime = "093000"
    sps.Modality = "MG"
    sps.ScheduledProcedureStepID = f"SPS{n}"
    sps.ScheduledProcedureStepDescription = "Pre-contrast"
    sps.ScheduledProtocolCodeSequence = Sequence([code_item("399162004", "SCT", "cranio-caudal")])
    sps.RequestedContrastAgent = "Iohexol 300"
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


@dataclass
class WorklistScp:
    """A minimal real MWL SCP: answers every query with ``orders``; records what it saw."""

    orders: list[Dataset]
    wait_for_cancel_after: int | None = None
    failure_status: int | None = None
    queries: list[Dataset] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def handle_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        self.queries.append(event.identifier)
        if self.failure_status is not None:
            yield self.failure_status, None
            return
        for count, ds in enumerate(self.orders, start=1):
            yield 0xFF00, ds
            # is_cancelled consumes the C-CANCEL it reports (pynetdicom).
            if count == self.wait_for_cancel_after and eventually(
                lambda: event.is_cancelled, 5, poll_s=0.005
            ):
                self.cancelled.set()
                yield 0xFE00, None
                return
        yield 0x0000, None


@pytest.fixture
def scp() -> Iterator[WorklistScp]:
    state = WorklistScp(orders=[order(1)])
    ae = AE("RIS")
    ae.add_supported_context(ModalityWorklistInformationFind)
    handlers: list[Any] = [(evt.EVT_C_FIND, state.handle_find), *NODELAY_HANDLERS]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    state.port = server.server_address[1]
    try:
        yield state
    finally:
        ae.shutdown()


def peer(port: int) -> Peer:
    return Peer("127.0.0.1", port, "RIS", calling_ae="GALACTO", timeouts=FAST)


def test_an_item_carries_every_return_key(scp: WorklistScp) -> None:
    result = find_worklist(peer(scp.port), WorklistQuery(station_ae="GALACTO"))
    assert not result.truncated
    (item,) = result.items
    assert item.patient.name == "DOE^JANE"
    assert item.patient.id == "PID0001"
    assert item.accession_number == "ACC0001"
    assert item.allergies == ("IODINE", "LATEX")
    assert item.pregnancy_status == 1
    assert item.medical_alerts == ("ASTHMA",)
    assert item.sps_id == "SPS1"
    assert item.sps_start is not None and item.sps_start.hour == 9
    assert [c.value for c in item.protocol_codes] == ["399162004"]
    assert [c.value for c in item.requested_procedure_codes] == ["18102001"]
    assert item.requested_contrast_agent == "Iohexol 300"
    assert item.as_dict()["sps_start"] == "2026-11-25T09:30:00"


def test_the_broad_query_puts_the_matching_keys_in_the_step_item(scp: WorklistScp) -> None:
    import datetime as dt

    query = WorklistQuery.broad("GALACTO", dt.date(2026, 11, 25), dt.date(2026, 11, 26))
    find_worklist(peer(scp.port), query)
    (sent,) = scp.queries
    step = sent.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "GALACTO"
    assert step.Modality == "MG"
    assert step.ScheduledProcedureStepStartDate == "20261125-20261126"
    assert "ScheduledProcedureStepID" in step and step.ScheduledProcedureStepID == ""
    assert "Allergies" in sent and "PregnancyStatus" in sent


@pytest.mark.parametrize(
    ("charset", "raw", "expected"),
    [
        ("ISO_IR 100", "Müller^Anna".encode("latin-1"), "Müller^Anna"),
        ("ISO_IR 192", "Øvergård^Åse".encode(), "Øvergård^Åse"),
        ("ISO_IR 192", "山田^花子".encode(), "山田^花子"),
        ("ISO_IR 144", "Иванова^Анна".encode("iso8859-5"), "Иванова^Анна"),
        (
            ["", "ISO 2022 IR 87"],
            b"Yamada^Hanako=" + "山田^花子".encode("iso2022_jp"),
            "Yamada^Hanako=山田^花子",
        ),
    ],
)
def test_patient_name_is_decoded_per_character_set(
    scp: WorklistScp, charset: str | list[str], raw: bytes, expected: str
) -> None:
    scp.orders = [order(1, name=raw, charset=charset)]
    (item,) = find_worklist(peer(scp.port), WorklistQuery()).items
    assert item.patient.name == expected


def test_a_patient_query_with_a_non_ascii_name_is_sent_as_utf8(scp: WorklistScp) -> None:
    find_worklist(peer(scp.port), WorklistQuery.patient(patient_name="Müller*"))
    (sent,) = scp.queries
    assert sent.SpecificCharacterSet == "ISO_IR 192"
    sent.decode()
    assert sent.PatientName == "Müller*"


def test_the_cap_sends_c_cancel_and_drains(scp: WorklistScp) -> None:
    scp.orders = [order(n) for n in range(1, 51)]
    scp.wait_for_cancel_after = 5
    result = find_worklist(peer(scp.port), WorklistQuery(), max_results=5)
    assert result.truncated
    assert [i.accession_number for i in result.items] == [f"ACC{n:04d}" for n in range(1, 6)]
    assert scp.cancelled.wait(5)
    assert result.final_status == 0xFE00


def test_a_failure_status_raises(scp: WorklistScp) -> None:
    scp.failure_status = 0xA700
    with pytest.raises(WorklistError) as info:
        find_worklist(peer(scp.port), WorklistQuery())
    assert info.value.status == 0xA700


def test_a_rejection_names_the_peer_and_our_calling_ae() -> None:
    ae = AE("RIS")
    ae.require_called_aet = True
    ae.add_supported_context(ModalityWorklistInformationFind)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=NODELAY_HANDLERS)
    try:
        bad = Peer("127.0.0.1", server.server_address[1], "NOTRIS", timeouts=FAST)
        with pytest.raises(AssociationError, match=r"rejected by NOTRIS@127\.0\.0\.1.*'GALACTO'"):
            find_worklist(bad, WorklistQuery())
    finally:
        ae.shutdown()


def test_nobody_listening_raises_association_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AssociationError, match=f"RIS@127.0.0.1:{port}"):
        find_worklist(peer(port), WorklistQuery())


@pytest.mark.parametrize("text", ["2026112", "20261301", "20261126-20261125", "x", "2026-11-25"])
def test_bad_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        check_date_range(text)


@pytest.mark.parametrize("text", ["", "20261125", "20261125-20261126", "-20261125", "20261125-"])
def test_good_dates_pass(text: str) -> None:
    assert check_date_range(text) == text
