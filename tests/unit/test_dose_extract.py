"""Dose extraction from image headers, MPPS and RDSR: units converted once, traps avoided."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from dicom_nodes.datasets.dose_extract import from_image_header, from_mpps, from_rdsr, step_totals
from dose.plausibility import QaPatterns, findings
from dose.record import Source
from tests.dose_factories import Exposure, mg_image, mpps_create, mpps_set, rdsr

STUDY = "1.2.3.4"


def test_image_header_values_in_record_units() -> None:
    exposure = Exposure(agd_mgy=1.23, esak_mgy=5.67, view="MLO", laterality="L")
    record = from_image_header(mg_image(exposure, study_uid=STUDY), station_ae="MAMMO")
    assert record.source is Source.IMAGE_HEADER
    assert record.agd_reported_mgy == pytest.approx(1.23)  # 0.0123 dGy × 100
    assert record.esak_mgy == pytest.approx(5.67)  # 8302, not the integer 0302
    assert record.exposure_uas == pytest.approx(80000.0)
    assert record.tube_current_ma == pytest.approx(100.0)
    assert record.exposure_time_ms == pytest.approx(800.0)
    assert record.kvp == pytest.approx(29.0)
    assert record.compressed_thickness_mm == pytest.approx(45.0)
    assert record.compression_force_n == pytest.approx(110.0)
    assert record.hvl_mm_al == pytest.approx(0.52)
    assert record.hvl_source == "reported"
    assert record.filter_thickness_mm == pytest.approx(0.05)
    assert (record.anode, record.filter_material) == ("TUNGSTEN", "RHODIUM")
    assert (record.view_code, record.laterality) == ("399368009", "L")
    assert record.irradiation_event_uid == exposure.irradiation_event_uid
    assert record.sps_id == "SPS1"
    assert record.accession == "ACC1"
    assert record.station_ae == "MAMMO"
    assert record.acquisition_datetime == "2026-11-25T10:15:00"
    assert record.review_reasons == ()


def test_legacy_srt_view_and_magnification_codes_become_sct() -> None:
    exposure = Exposure(view="ML", magnified=True)
    record = from_image_header(mg_image(exposure, study_uid=STUDY, legacy_codes=True))
    assert record.view_code == "399260004"
    assert record.view_modifier_codes == ("399163009",)
    assert record.magnification_factor == pytest.approx(1.8)


def test_entrance_dose_falls_back_to_integer_dgy_and_says_so() -> None:
    ds = mg_image(Exposure(), study_uid=STUDY)
    del ds.EntranceDoseInmGy
    ds.EntranceDose = 1  # dGy
    record = from_image_header(ds)
    assert record.esak_mgy == pytest.approx(100.0)
    assert any("integer dGy" in reason for reason in record.review_reasons)


def test_zero_dose_is_kept_for_the_plausibility_check() -> None:
    record = from_image_header(mg_image(Exposure(agd_mgy=0.0), study_uid=STUDY))
    assert record.agd_reported_mgy == 0.0
    assert "agd_reported_mgy 0 mGy outside [0.01, 50] mGy" in findings(asdict(record))


def test_unparseable_dose_value_is_flagged_not_fatal() -> None:
    exposure = Exposure()
    ds = mg_image(exposure, study_uid=STUDY)
    tag = Tag("OrganDose")
    ds._dict[tag] = RawDataElement(tag, "DS", 4, b"abc ", 0, False, True)  # as read from a file
    record = from_image_header(ds)
    assert record.sop_instance_uid == exposure.sop_instance_uid
    assert record.agd_reported_mgy is None
    assert record.kvp is not None  # the rest of the header is still read
    assert any(r.startswith("unreadable agd_reported_mgy") for r in record.review_reasons)


def test_rdsr_event_values() -> None:
    exposures = [
        Exposure(agd_mgy=1.1, laterality="R"),
        Exposure(agd_mgy=2.2, laterality="L", magnified=True),
    ]
    records = from_rdsr(rdsr(exposures, study_uid=STUDY))
    assert [r.irradiation_event_uid for r in records] == [
        e.irradiation_event_uid for e in exposures
    ]
    first, second = records
    assert first.source is Source.RDSR
    assert first.agd_reported_mgy == pytest.approx(1.1)
    assert first.esak_mgy == pytest.approx(5.67)
    assert first.esak_reference_point == "113865"
    assert first.exposure_uas == pytest.approx(80000.0)
    assert first.anode == "TUNGSTEN"
    assert first.filter_material == "RHODIUM"
    assert first.filter_thickness_mm == pytest.approx(0.05)
    assert (first.laterality, second.laterality) == ("R", "L")
    assert second.view_modifier_codes == ("399163009",)
    assert first.study_instance_uid == STUDY


def test_mpps_items_linked_to_images_by_order_and_ua_converted() -> None:
    exposures = [Exposure(tube_current_ma=90.0), Exposure(tube_current_ma=120.0)]
    merged = mpps_create(study_uid=STUDY)
    for elem in mpps_set(exposures):
        merged[elem.tag] = elem
    uid = generate_uid()
    records = from_mpps(merged, mpps_instance_uid=uid)
    assert [r.sop_instance_uid for r in records] == [e.sop_instance_uid for e in exposures]
    assert [r.tube_current_ma for r in records] == [pytest.approx(90.0), pytest.approx(120.0)]
    assert [r.mpps_item_index for r in records] == [0, 1]
    assert all(r.mpps_instance_uid == uid and r.sps_id == "SPS1" for r in records)
    totals = step_totals(merged)
    assert totals["organ_dose_mgy"] == pytest.approx(2 * 1.23)
    assert totals["total_exposures"] == 2


def test_mpps_items_not_linked_when_counts_differ() -> None:
    exposures = [Exposure(), Exposure()]
    merged = mpps_create(study_uid=STUDY)
    for elem in mpps_set(exposures):
        merged[elem.tag] = elem
    merged.ExposureDoseSequence = merged.ExposureDoseSequence[:1]
    records = from_mpps(merged, mpps_instance_uid=generate_uid())
    assert [r.sop_instance_uid for r in records] == [None, *[e.sop_instance_uid for e in exposures]]


def test_mpps_item_level_organ_dose_is_dgy() -> None:
    merged = mpps_create(study_uid=STUDY)
    for elem in mpps_set([Exposure()]):
        merged[elem.tag] = elem
    merged.ExposureDoseSequence[0].OrganDose = 0.0155  # dGy, a vendor extension
    merged.ExposureDoseSequence[0].EntranceDoseInmGy = 4.4
    (record,) = from_mpps(merged, mpps_instance_uid=generate_uid())
    assert record.agd_reported_mgy == pytest.approx(1.55)
    assert record.esak_mgy == pytest.approx(4.4)


def test_unreadable_mpps_values_are_flagged_and_the_exposure_kept() -> None:
    merged = mpps_create(study_uid=STUDY)
    for elem in mpps_set([Exposure(), Exposure()]):
        merged[elem.tag] = elem
    item = merged.ExposureDoseSequence[1]
    tag = Tag("KVP")
    item._dict[tag] = RawDataElement(tag, "DS", 8, b"twenty9 ", 0, False, True)
    tag = Tag("DistanceSourceToDetector")
    merged._dict[tag] = RawDataElement(tag, "DS", 2, b"--", 0, False, True)
    tag = Tag("OrganDose")
    merged._dict[tag] = RawDataElement(tag, "DS", 4, b"n/a ", 0, False, True)
    first, second = from_mpps(merged, mpps_instance_uid=generate_uid())
    assert first.kvp is not None
    assert second.kvp is None and second.tube_current_ma is not None
    assert any(r.startswith("unreadable kvp") for r in second.review_reasons)
    assert not any("kvp" in r for r in first.review_reasons)
    for record in (first, second):
        assert record.distance_source_to_detector_mm is None
        assert any(
            r.startswith("unreadable distance_source_to_detector_mm") for r in record.review_reasons
        )
    assert step_totals(merged)["organ_dose_mgy"] is None


def test_rdsr_reference_point_given_as_text() -> None:
    ds = rdsr([Exposure()], study_uid=STUDY)
    items = ds.ContentSequence[0].ContentSequence
    reference = next(i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "113780")
    del reference.ConceptCodeSequence
    reference.ValueType = "TEXT"
    reference.TextValue = "15 cm from isocenter toward source"
    (record,) = from_rdsr(ds)
    assert record.esak_reference_point == "15 cm from isocenter toward source"


def test_rdsr_value_in_an_unknown_unit_is_flagged_and_the_event_kept() -> None:
    ds = rdsr([Exposure(), Exposure()], study_uid=STUDY)
    items = ds.ContentSequence[0].ContentSequence
    kvp = next(i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "113733")
    kvp.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = "furlong"
    first, second = from_rdsr(ds)
    assert first.kvp is None
    assert first.agd_reported_mgy is not None  # the rest of the event is read
    assert any(r.startswith("unreadable kvp") for r in first.review_reasons)
    assert second.kvp is not None


def test_a_vendor_spelling_of_a_unit_is_read_and_the_mapping_noted() -> None:
    exposure = Exposure(exposure_uas=120000.0)
    ds = rdsr([exposure], study_uid=STUDY)
    for item in ds.ContentSequence[0].ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "113736":
            item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = "uAs"
    (record,) = from_rdsr(ds)
    assert record.exposure_uas == pytest.approx(120000.0)  # Hologic's uAs: 120 mAs, kept
    assert record.review_reasons == (
        "exposure_uas: unit 'uAs' read as UCUM 'uA.s' (vendor spelling)",
    )


@pytest.mark.parametrize(
    ("values", "age"),
    [
        ({"PatientAge": "038Y"}, 38),
        ({"PatientAge": "030M"}, 2),
        ({"PatientBirthDate": "19880301"}, 38),  # acquired 2026-11-25
        ({"PatientBirthDate": "19881126"}, 37),  # a day before the birthday
        ({"PatientBirthDate": ""}, None),
    ],
)
def test_the_age_at_the_exam_never_the_birth_date(values: dict[str, str], age: int | None) -> None:
    ds = mg_image(Exposure(), study_uid=STUDY)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    record = from_image_header(ds)
    assert record.patient_age_years == age
    assert not any("birth" in name for name in asdict(record))


def test_an_unreadable_age_is_noted() -> None:
    ds = mg_image(Exposure(), study_uid=STUDY)
    tag = Tag("PatientAge")  # as a unit sends it: not checked by pydicom on the way in
    ds._dict[tag] = RawDataElement(tag, "AS", 2, b"38", 0, False, True)
    record = from_image_header(ds)
    assert record.patient_age_years is None
    assert record.review_reasons == ("unreadable patient_age_years: Patient's Age '38' is not AS",)


@pytest.mark.parametrize(
    ("comment", "pct"),
    [("glandularity 30 %", 30.0), ("27.5% glandular", 27.5), ("AEC mode STD", None)],
)
def test_a_glandularity_the_unit_states_is_read(comment: str, pct: float | None) -> None:
    ds = mg_image(Exposure(), study_uid=STUDY)
    ds.CommentsOnRadiationDose = comment
    assert from_image_header(ds).glandularity_pct == pct


def test_physics_exposures_are_recognised_from_every_source() -> None:
    qa = QaPatterns(patient=("*PHANTOM*",), protocol=("*QC *",))
    ds = mg_image(Exposure(), study_uid=STUDY)
    ds.PatientID = "phantom-45mm"
    assert from_image_header(ds, qa=qa).qa_reason == "patient ID or name matches '*PHANTOM*'"
    ds = mg_image(Exposure(), study_uid=STUDY)
    ds.ProtocolName = "Weekly QC flat field"
    assert from_image_header(ds, qa=qa).qa_reason == "protocol matches '*QC *'"
    assert from_image_header(ds).qa_reason is None  # no patterns, no QA
    report = rdsr([Exposure()], study_uid=STUDY)
    report.PatientName = "PHANTOM^CDMAM"
    assert from_rdsr(report, qa=qa)[0].qa_reason == "patient ID or name matches '*PHANTOM*'"
    mpps = mpps_create(study_uid=STUDY)
    mpps.PatientID = "PHANTOM1"
    for element in mpps_set([Exposure()]):
        mpps[element.tag] = element
    records = from_mpps(mpps, mpps_instance_uid=generate_uid(), qa=qa)
    assert {r.qa_reason for r in records} == {"patient ID or name matches '*PHANTOM*'"}


def test_the_units_device_uid_and_protocol_are_kept() -> None:
    ds = mg_image(Exposure(), study_uid=STUDY)
    ds.DeviceUID = "1.2.3.99"
    ds.ProtocolName = "L CC"
    record = from_image_header(ds)
    assert (record.device_uid, record.acquisition_protocol) == ("1.2.3.99", "L CC")
