"""The MWL SCP on real loopback associations, queried by a pynetdicom SCU."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.identity import unflatten_patient
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from dicom_nodes.unit_facing.mwl_scp import (
    MWL_FIND_UID,
    STATUS_CANCEL,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PENDING,
    STATUS_PENDING_UNSUPPORTED_KEYS,
    WorklistSCP,
)
from dicom_nodes.unit_facing.worklist_store import ScheduledStep, WorklistStore

TIMEOUTS = Timeouts(connection_s=5, acse_s=5, dimse_s=10, network_s=10)


def make_step(n: int, **overrides: Any) -> ScheduledStep:
    values: dict[str, Any] = {
        "sps_id": f"SPS{n}",
        "sps_start_date": "20261125",
        "sps_start_time": f"{8 + n % 10:02d}{n % 60:02d}00",
        "station_ae": "UNIT1",
        "sps_description": "Pre-contrast",
        "protocol_codes": (codes.VIEW_CC, codes.VIEW_ML),
        "requested_procedure_id": f"RP{n}",
        "requested_procedure_codes": (codes.DUCTOGRAPHY,),
        "study_instance_uid": f"1.2.826.0.1.3680043.10.2.{n}",
        "accession_number": f"ACC{n}",
        "patient_name": f"Doe^Jane{n}",
        "patient_id": f"P{n}",
        "patient_sex": "F",
    }
    values.update(overrides)
    return ScheduledStep(**unflatten_patient(values))  # the patient from its flat keys


@dataclass
class Served:
    store: WorklistStore
    port: int


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers = []

    def start(steps: list[ScheduledStep], max_results: int = 5000) -> Served:
        store = WorklistStore(tmp_path / f"db{len(servers)}.sqlite")
        store.publish_many(steps)
        scp = WorklistSCP(store, max_results=max_results)
        ae = make_ae("GALACTO", TIMEOUTS)
        for context in scp.contexts:
            ae.add_supported_context(context.abstract_syntax, context.transfer_syntax)
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=scp.handlers() + NODELAY_HANDLERS
        )
        servers.append(server)
        return Served(store, server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()


def query_raw(
    port: int,
    identifier: Dataset,
    *,
    transfer_syntax: str = ImplicitVRLittleEndian,
    combined_datetime: bool = False,
    max_pdu: int = 262144,
) -> list[tuple[Dataset, Dataset | None]]:
    """Every (status dataset, identifier) of one C-FIND, final response included."""
    ae = make_ae("UNIT1", TIMEOUTS, max_pdu=max_pdu)
    ae.requested_contexts = [build_context(MWL_FIND_UID, [transfer_syntax])]
    ext_neg = []
    if combined_datetime:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = MWL_FIND_UID
        item.service_class_application_information = b"\x00\x01"
        ext_neg.append(item)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="GALACTO", ext_neg=ext_neg, evt_handlers=NODELAY_HANDLERS
    )
    assert assoc.is_established
    try:
        return list(assoc.send_c_find(identifier, MWL_FIND_UID))
    finally:
        assoc.release()


def query(port: int, identifier: Dataset, **options: Any) -> list[tuple[int, Dataset | None]]:
    """Every (status code, identifier) of one C-FIND, final response included."""
    return [(int(status.Status), found) for status, found in query_raw(port, identifier, **options)]


def unit_query(
    *, station: str = "UNIT1", date: str = "20261125", time: str = "", charset: str = ""
) -> Dataset:
    """The keys a mammography unit sends (dicom.md §3)."""
    q = Dataset()
    if charset:
        q.SpecificCharacterSet = charset
    q.AccessionNumber = ""
    q.PatientName = ""
    q.PatientID = ""
    q.PatientBirthDate = ""
    q.PatientSex = ""
    q.StudyInstanceUID = ""
    q.RequestedProcedureID = ""
    sps = Dataset()
    sps.Modality = "MG"
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = time
    sps.ScheduledProcedureStepID = ""
    sps.ScheduledProcedureStepDescription = ""
    code = Dataset()
    code.CodeValue = ""
    code.CodingSchemeDesignator = ""
    code.CodeMeaning = ""
    sps.ScheduledProtocolCodeSequence = [code]
    q.ScheduledProcedureStepSequence = [sps]
    return q


def pending(responses: list[tuple[int, Dataset | None]]) -> list[Dataset]:
    return [ds for status, ds in responses if status in (0xFF00, 0xFF01) and ds is not None]


def test_unit_query_gets_its_items_with_only_the_requested_keys(serve: Any) -> None:
    served = serve([make_step(n, station_ae="UNIT2" if n % 2 else "UNIT1") for n in range(10)])
    responses = query(served.port, unit_query())
    assert responses[-1][0] == 0x0000
    items = pending(responses)
    assert sorted(
        ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID for ds in items
    ) == [f"SPS{n}" for n in (0, 2, 4, 6, 8)]
    first = items[0]
    requested = {e.keyword for e in unit_query()} | {"SpecificCharacterSet"}
    assert {e.keyword for e in first} == requested
    assert first.SpecificCharacterSet == "ISO_IR 192"
    assert first["PatientBirthDate"].is_empty  # requested, no value: zero-length
    sps = first.ScheduledProcedureStepSequence[0]
    assert {e.keyword for e in sps} == {
        e.keyword for e in unit_query().ScheduledProcedureStepSequence[0]
    }
    views = [codes.Code.from_item(i) for i in sps.ScheduledProtocolCodeSequence]
    assert views == [codes.VIEW_CC, codes.VIEW_ML]


def test_explicit_vr_context_answers_the_same(serve: Any) -> None:
    served = serve([make_step(1, patient_name="Ñúñez^María")])
    implicit = pending(query(served.port, unit_query()))
    explicit = pending(query(served.port, unit_query(), transfer_syntax=ExplicitVRLittleEndian))
    assert implicit == explicit
    assert str(explicit[0].PatientName) == "Ñúñez^María"


@pytest.mark.parametrize(
    ("charset", "name", "expected_charset"),
    [
        ("ISO_IR 100", "Müller^Anna", "ISO_IR 100"),  # fits Latin-1: answered in it
        ("ISO_IR 100", "Παπαδοπούλου^Ελένη", "ISO_IR 192"),  # does not fit: UTF-8
        ("ISO_IR 192", "Müller^Anna", "ISO_IR 192"),
        ("", "山田^花子", "ISO_IR 192"),
    ],
)
def test_character_sets(serve: Any, charset: str, name: str, expected_charset: str) -> None:
    served = serve([make_step(1, patient_name=name)])
    [item] = pending(query(served.port, unit_query(charset=charset)))
    assert item.SpecificCharacterSet == expected_charset
    assert str(item.PatientName) == name


def test_query_by_name_in_latin1(serve: Any) -> None:
    served = serve([make_step(1, patient_name="Müller^Anna"), make_step(2)])
    q = unit_query(charset="ISO_IR 100")
    q.PatientName = "Müller*"
    [item] = pending(query(served.port, q))
    assert item.PatientID == "P1"


def test_cap_sends_the_first_matches_then_out_of_resources(serve: Any) -> None:
    served = serve([make_step(n) for n in range(12)], max_results=5)
    responses = query_raw(served.port, unit_query())
    assert len(responses) == 6
    assert all(int(status.Status) == STATUS_PENDING for status, _ in responses[:5])
    final, identifier = responses[-1]
    assert int(final.Status) == STATUS_OUT_OF_RESOURCES
    assert identifier is None
    assert "refine the query" in final.ErrorComment


def test_c_cancel_stops_the_answer(serve: Any) -> None:
    steps = [make_step(n) for n in range(1500)]
    served = serve(steps)
    ae = make_ae("UNIT1", TIMEOUTS)
    ae.add_requested_context(MWL_FIND_UID)
    assoc = ae.associate(
        "127.0.0.1", served.port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS
    )
    assert assoc.is_established
    statuses = []
    try:
        responses = assoc.send_c_find(unit_query(), MWL_FIND_UID, msg_id=7)
        for status, _ in responses:
            statuses.append(int(status.Status))
            if len(statuses) == 1:
                context_id = assoc.accepted_contexts[0].context_id
                assoc.send_c_cancel(7, context_id)
    finally:
        assoc.release()
    assert statuses[-1] == STATUS_CANCEL
    assert len(statuses) - 1 < len(steps)


def test_combined_datetime_only_when_negotiated(serve: Any) -> None:
    served = serve(
        [
            make_step(1, sps_start_date="20261124", sps_start_time="150000"),
            make_step(2, sps_start_date="20261125", sps_start_time="140000"),
        ]
    )
    q = unit_query(date="20261124-20261125", time="1200-1300")
    assert pending(query(served.port, q)) == []
    combined = pending(query(served.port, q, combined_datetime=True))
    assert [ds.RequestedProcedureID for ds in combined] == ["RP1"]


def test_unsupported_matching_key_gives_ff01(serve: Any) -> None:
    served = serve([make_step(1)])
    q = unit_query()
    q.ReferringPhysicianName = "Smith^*"
    responses = query(served.port, q)
    assert [s for s, _ in responses] == [STATUS_PENDING_UNSUPPORTED_KEYS, 0x0000]
    plain = query(served.port, unit_query())
    assert [s for s, _ in plain] == [STATUS_PENDING, 0x0000]


def test_two_sps_items_do_not_match_the_sop_class(serve: Any) -> None:
    served = serve([make_step(1)])
    q = unit_query()
    q.ScheduledProcedureStepSequence.append(Dataset())
    assert [s for s, _ in query(served.port, q)] == [0xA900]


def test_small_peer_pdu_falls_back_to_fragmenting(serve: Any) -> None:
    served = serve([make_step(n, sps_description="x" * 60) for n in range(3)])
    full = Dataset()
    full.ScheduledProcedureStepSequence = []  # every SPS attribute
    full.PatientName = ""
    items = pending(query(served.port, full, max_pdu=256))
    assert len(items) == 3
    assert items[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription == "x" * 60


def test_withdrawn_step_is_no_longer_offered(serve: Any) -> None:
    served = serve([make_step(1), make_step(2)])
    served.store.withdraw("SPS1")
    items = pending(query(served.port, unit_query()))
    assert [ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID for ds in items] == [
        "SPS2"
    ]


def test_republished_step_is_answered_with_its_new_values(serve: Any) -> None:
    served = serve([make_step(1)])
    q = unit_query()  # a subset of the keys: answered from trimmed, cached identifiers
    assert [str(ds.PatientName) for ds in pending(query(served.port, q))] == ["Doe^Jane1"]
    served.store.publish(make_step(1, patient_name="Roe^Janet"))
    assert [str(ds.PatientName) for ds in pending(query(served.port, q))] == ["Roe^Janet"]


@pytest.mark.parametrize(
    ("date", "why"),
    [
        ("20261345", "not a valid DA"),
        ("2026-11-25", "not a DA value or range"),
        ("20261126-20261125", "range is reversed"),
    ],
)
def test_an_invalid_matching_date_is_refused_with_a_comment(
    serve: Any, date: str, why: str
) -> None:
    """A900H with an Error Comment naming the key: not an empty list that looks like
    "no order today"."""
    served = serve([make_step(1)])
    q = unit_query()
    q.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate = date
    ((status, found),) = query_raw(served.port, q)
    assert int(status.Status) == 0xA900 and found is None
    assert status.ErrorComment == f"ScheduledProcedureStepStartDate: {why}"
