"""The simulated RIS against real pynetdicom SCUs on loopback (no mocks)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
)

from dicom_nodes.datasets import codes
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from simulators.ris import SimulatedRis
from simulators.ris_orders import CURATED_PATIENTS, generate_orders

TIMEOUT_S = 10.0
FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)
TODAY = dt.date(2026, 3, 2)


def scu() -> AE:
    ae = make_ae("GALACTO", FAST)
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    return ae


@pytest.fixture
def ris() -> Iterator[SimulatedRis]:
    with SimulatedRis(orders=len(CURATED_PATIENTS) + 4, day=TODAY, timeouts=FAST) as sim:
        yield sim


@pytest.fixture
def assoc(ris: SimulatedRis) -> Iterator[Any]:
    host, port = ris.address
    association = scu().associate(host, port, ae_title="RIS", evt_handlers=NODELAY_HANDLERS)
    assert association.is_established
    try:
        yield association
    finally:
        association.release()


def broad_query(**top_level: Any) -> Dataset:
    """A unit's broad worklist query: station, modality, date; plus some return keys."""
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.PatientName = ""
    query.PatientID = ""
    query.AccessionNumber = ""
    query.Allergies = ""
    query.PregnancyStatus = None
    query.RequestedProcedureDescription = ""
    query.RequestedProcedureCodeSequence = []
    query.AdmissionID = ""  # requested but unknown to the RIS: returned zero-length
    sps = Dataset()
    sps.ScheduledStationAETitle = "GALACTO"
    sps.Modality = "MG"
    sps.ScheduledProcedureStepStartDate = f"{TODAY:%Y%m%d}"
    sps.ScheduledProcedureStepStartTime = ""
    sps.ScheduledProcedureStepID = ""
    sps.RequestedContrastAgent = ""
    query.ScheduledProcedureStepSequence = [sps]
    for keyword, value in top_level.items():
        setattr(query, keyword, value)
    return query


def find(assoc: Any, query: Dataset) -> tuple[list[Dataset], int]:
    """Every Pending identifier and the final status."""
    found, final = [], None
    for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
        assert "Status" in status, "no response within the DIMSE timeout"
        if status.Status in (0xFF00, 0xFF01):
            found.append(identifier)
        else:
            final = int(status.Status)
    assert final is not None
    return found, final


def test_broad_query_returns_todays_orders_with_decoded_names(
    ris: SimulatedRis, assoc: Any
) -> None:
    found, final = find(assoc, broad_query())
    assert final == 0x0000
    assert len(found) == len(ris.orders())
    by_id = {ds.PatientID: ds for ds in found}
    for patient in CURATED_PATIENTS:
        answer = by_id[patient.patient_id]
        charset = answer.SpecificCharacterSet
        assert ([charset] if isinstance(charset, str) else list(charset)) == list(
            patient.character_set
        )
        assert str(answer.PatientName) == patient.name
    assert str(by_id["GAL-0002"].PatientName) == "Łukasiewicz^Zofia"
    assert by_id["GAL-0004"].PatientName.ideographic == "山田^花子"
    assert "Iodinated contrast" in by_id["GAL-0002"].Allergies
    assert by_id["GAL-0004"].PregnancyStatus == 2


def test_only_requested_keys_are_returned_and_unknown_ones_zero_length(assoc: Any) -> None:
    found, _final = find(assoc, broad_query())
    answer = found[0]
    assert "MedicalAlerts" not in answer  # held by the RIS but not asked for
    assert "AdmissionID" in answer and answer.AdmissionID in (None, "")
    sps = answer.ScheduledProcedureStepSequence[0]
    assert set(sps.dir()) == {
        "ScheduledStationAETitle",
        "Modality",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepID",
        "RequestedContrastAgent",
    }
    assert "Iohexol" in sps.RequestedContrastAgent
    code = codes.Code.from_item(answer.RequestedProcedureCodeSequence[0])
    assert code.same_concept(codes.DUCTOGRAPHY) or code.same_concept(codes.MAMMARY_DUCTOGRAM)
    side = "right" if "right" in answer.RequestedProcedureDescription else "left"
    assert side in code.meaning  # MWL has no laterality key: the side is in the text


@pytest.mark.parametrize(
    ("changes", "expected_ids"),
    [
        ({"AccessionNumber": f"A{TODAY:%y%m%d}00003"}, {"GAL-0003"}),
        ({"PatientName": "Müller*"}, {"GAL-0001"}),
        ({"PatientName": "Łukasiewicz^Zofia"}, {"GAL-0002"}),
        ({"PatientID": "GAL-000?"}, {f"GAL-000{n}" for n in range(1, 10)}),
    ],
    ids=["accession", "wildcard-latin1", "utf8-name", "question-mark"],
)
def test_matching_selects_the_right_orders(
    assoc: Any, changes: dict[str, str], expected_ids: set[str]
) -> None:
    found, final = find(assoc, broad_query(**changes))
    assert final == 0x0000
    assert {ds.PatientID for ds in found} == expected_ids


def test_date_and_station_mismatches_return_nothing(assoc: Any) -> None:
    query = broad_query()
    query.ScheduledProcedureStepSequence[
        0
    ].ScheduledProcedureStepStartDate = f"{TODAY + dt.timedelta(days=1):%Y%m%d}-"
    assert find(assoc, query) == ([], 0x0000)
    query = broad_query()
    query.ScheduledProcedureStepSequence[0].ScheduledStationAETitle = "OTHER"
    assert find(assoc, query) == ([], 0x0000)


def test_time_range_narrows_the_day(assoc: Any) -> None:
    query = broad_query()
    query.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime = "0800-0859"
    found, _final = find(assoc, query)
    times = sorted(
        ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime for ds in found
    )
    assert times == ["080000", "082000", "084000"]


def test_withdrawn_and_added_orders_change_the_answer(ris: SimulatedRis, assoc: Any) -> None:
    withdrawn = ris.orders()[0].accession_number
    assert ris.withdraw_order(withdrawn)
    assert not ris.withdraw_order(withdrawn)
    [added] = ris.add_orders(1)
    found, _final = find(assoc, broad_query())
    accessions = [ds.AccessionNumber for ds in found]
    assert withdrawn not in accessions
    assert added.accession_number in accessions
    assert len(set(accessions)) == len(accessions) == len(ris.orders())


def test_c_cancel_stops_the_answer(ris: SimulatedRis, assoc: Any) -> None:
    ris.faults.find_response_delay_s = 0.05
    context_id = next(
        cx.context_id
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == ModalityWorklistInformationFind
    )
    statuses = []
    for status, _identifier in assoc.send_c_find(
        broad_query(), ModalityWorklistInformationFind, msg_id=7
    ):
        assert "Status" in status
        statuses.append(int(status.Status))
        if len(statuses) == 1:
            assoc.send_c_cancel(7, context_id)
    assert statuses[-1] == 0xFE00
    assert len(statuses) - 1 < len(ris.orders())
    assert ris.wait_for(lambda: ris.cancelled_queries() == 1, TIMEOUT_S)


@pytest.mark.parametrize(
    ("changes", "pending"),
    [
        ({}, 0xFF00),
        ({"RequestedProcedureDescription": "Galactography*"}, 0xFF01),
        ({"AdmissionID": ""}, 0xFF01),
    ],
    ids=["supported", "unsupported-matching-key", "unsupported-return-key"],
)
def test_pending_status_tells_about_unsupported_keys(
    ris: SimulatedRis, assoc: Any, changes: dict[str, str], pending: int
) -> None:
    query = broad_query(**changes)
    if "AdmissionID" not in changes:
        del query.AdmissionID
    responses = [
        int(status.Status)
        for status, _identifier in assoc.send_c_find(query, ModalityWorklistInformationFind)
    ]
    # The unsupported key's value is ignored for matching: every order of the day comes back.
    assert responses == [pending] * len(ris.orders()) + [0x0000]


def test_orders_are_deterministic_with_the_seed() -> None:
    def fingerprint(seed: int) -> list[tuple[str, str, str, str]]:
        return [
            (o.study_instance_uid, o.side, o.procedure_code.value, o.indication)
            for o in generate_orders(30, seed=seed, day=TODAY)
        ]

    assert fingerprint(3) == fingerprint(3)
    assert fingerprint(3) != fingerprint(4)


# -- MPPS --------------------------------------------------------------------------------------


def mpps_create(order_accession: str, status: str = "IN PROGRESS") -> Dataset:
    """An N-CREATE attribute list with every Type 1/2 attribute of PS3.4 Table F.7.2-1."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    step = Dataset()
    step.StudyInstanceUID = generate_uid()
    step.AccessionNumber = order_accession
    step.RequestedProcedureID = "RP00001"
    step.RequestedProcedureDescription = "Galactography right breast"
    step.ScheduledProcedureStepID = "SPS00001"
    step.ScheduledProcedureStepDescription = "Galactography right"
    step.ScheduledProtocolCodeSequence = []
    step.ReferencedStudySequence = []
    ds.ScheduledStepAttributesSequence = [step]
    ds.PatientName = "Müller^Anna"
    ds.PatientID = "GAL-0001"
    ds.PatientBirthDate = "19710312"
    ds.PatientSex = "F"
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "GALACTO"
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = f"{TODAY:%Y%m%d}"
    ds.PerformedProcedureStepStartTime = "081500"
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepDescription = "Galactography"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = None
    ds.PerformedProcedureStepEndTime = None
    ds.Modality = "MG"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = []
    return ds


def final_set(status: str, reason: codes.Code | None = None) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = f"{TODAY:%Y%m%d}"
    ds.PerformedProcedureStepEndTime = "084000"
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ProtocolName = "Galactography"
    series.PerformingPhysicianName = ""
    series.OperatorsName = ""
    series.SeriesDescription = "pre-contrast"
    series.RetrieveAETitle = ""
    series.ReferencedImageSequence = []
    series.ReferencedNonImageCompositeSOPInstanceSequence = []
    ds.PerformedSeriesSequence = [series]
    if reason is not None:
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = [reason.to_dataset()]
    return ds


def test_mpps_lifecycle_is_recorded_and_a_final_step_is_final(
    ris: SimulatedRis, assoc: Any
) -> None:
    uid = generate_uid()
    status, _reply = assoc.send_n_create(mpps_create("A1"), ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0000
    status, _reply = assoc.send_n_set(
        final_set("DISCONTINUED", codes.DISCONTINUED_ALLERGIC_TO_CONTRAST),
        ModalityPerformedProcedureStep,
        uid,
    )
    assert status.Status == 0x0000
    status, _reply = assoc.send_n_set(final_set("COMPLETED"), ModalityPerformedProcedureStep, uid)
    assert (status.Status, status.ErrorID) == (0x0110, 0xA710)
    assert ris.wait_for(lambda: len(ris.mpps_messages()) == 3, TIMEOUT_S)
    [instance] = ris.mpps_instances()
    assert instance.status == "DISCONTINUED" and instance.is_final
    assert instance.discontinuation_reason == codes.DISCONTINUED_ALLERGIC_TO_CONTRAST
    assert instance.created is not None
    assert instance.created.ScheduledStepAttributesSequence[0].AccessionNumber == "A1"
    assert [m.status_code for m in instance.messages] == [0x0000, 0x0000, 0x0110]


@pytest.mark.parametrize(
    ("case", "expected"),
    [("created completed", 0x0106), ("duplicate", 0x0111), ("unknown instance", 0x0112)],
)
def test_mpps_rules_are_enforced(ris: SimulatedRis, assoc: Any, case: str, expected: int) -> None:
    uid = generate_uid()
    if case == "created completed":
        status, _ = assoc.send_n_create(
            mpps_create("A1", status="COMPLETED"), ModalityPerformedProcedureStep, uid
        )
    elif case == "duplicate":
        assoc.send_n_create(mpps_create("A1"), ModalityPerformedProcedureStep, uid)
        status, _ = assoc.send_n_create(mpps_create("A1"), ModalityPerformedProcedureStep, uid)
    else:
        status, _ = assoc.send_n_set(final_set("COMPLETED"), ModalityPerformedProcedureStep, uid)
    assert status.Status == expected
    assert ris.mpps_messages()[-1].status_code == expected


def test_down_refuses_and_up_serves_again_on_the_same_port(ris: SimulatedRis) -> None:
    host, port = ris.address
    ris.down()
    refused = scu().associate(host, port, ae_title="RIS", evt_handlers=NODELAY_HANDLERS)
    assert not refused.is_established
    ris.up()
    assert ris.address == (host, port)
    again = scu().associate(host, port, ae_title="RIS", evt_handlers=NODELAY_HANDLERS)
    try:
        assert again.is_established
        found, final = find(again, broad_query())
        assert (len(found), final) == (len(ris.orders()), 0x0000)
    finally:
        again.release()
