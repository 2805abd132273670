"""The X-Ray Radiation Dose SR builder (dose.md §5; PS3.16 TID 10001/10002/10003/10005)."""

from __future__ import annotations

import datetime as dt
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_nodes.datasets import rdsr
from dicom_nodes.datasets.identity import Patient

CC = rdsr.CodedConcept("399162004", "SCT", "cranio-caudal")
ML = rdsr.CodedConcept("399260004", "SCT", "medio-lateral")
MAG = rdsr.CodedConcept("399163009", "SCT", "magnification")


def event(
    n: int, laterality: str = "L", agd_mgy: float = 1.25, **changes: object
) -> rdsr.IrradiationEvent:
    values: dict[str, object] = dict(
        irradiation_event_uid=f"1.2.3.4.{n}",
        datetime_started=dt.datetime(2026, 1, 15, 10, n, 0),
        laterality=laterality,
        view=CC,
        view_modifiers=(),
        kvp=29.0,
        exposure_uas=75500,
        tube_current_ma=160.0,
        exposure_time_ms=471.9,
        focal_spot_mm=0.3,
        anode="TUNGSTEN",
        filter_material="RHODIUM",
        filter_thickness_min_mm=0.05,
        filter_thickness_max_mm=0.05,
        compressed_thickness_mm=45.0,
        compression_force_n=95.0,
        hvl_mm_al=0.5476,
        esak_mgy=4.19,
        reference_point="113865",
        agd_mgy=agd_mgy,
    )
    values.update(changes)
    return rdsr.IrradiationEvent(**values)  # type: ignore[arg-type]


def context() -> rdsr.DoseReportContext:
    return rdsr.DoseReportContext(
        study_instance_uid="1.2.3.9",
        patient=Patient(name="Müller^Anna", id="P1"),
        accession_number="A1",
        model_name="SIM",
        device_serial_number="S1",
        station_name="MG_SIM",
        device_observer_uid="1.2.3.8",
        dose_sources=("automated", "image"),
        content_datetime=dt.datetime(2026, 1, 15, 11, 0, 0),
    )


def concept(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def children(item: Dataset, code: str) -> list[Dataset]:
    return [c for c in item.ContentSequence if concept(c) == code]


def only(item: Dataset, code: str) -> Dataset:
    (found,) = children(item, code)
    return found


def num(item: Dataset) -> tuple[float, str]:
    measured = item.MeasuredValueSequence[0]
    return float(measured.NumericValue), str(measured.MeasurementUnitsCodeSequence[0].CodeValue)


def value_code(item: Dataset) -> str:
    return str(item.ConceptCodeSequence[0].CodeValue)


def roundtrip(ds: Dataset) -> Dataset:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def test_root_is_tid_10001_for_mammography() -> None:
    ds = roundtrip(rdsr.build_rdsr(context(), [event(1)]))
    assert ds.SOPClassUID == rdsr.XRAY_RADIATION_DOSE_SR
    assert ds.Modality == "SR"
    assert ds.ValueType == "CONTAINER"
    assert concept(ds) == "113701"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "10001"
    assert "RelationshipType" not in ds
    procedure = only(ds, "121058")
    assert value_code(procedure) == "71651007"
    assert value_code(only(procedure, "363703001")) == "261004008"
    assert value_code(only(ds, "121005")) == "121007"
    assert only(ds, "121012").UID == "1.2.3.8"
    scope = only(ds, "113705")
    assert value_code(scope) == "113014"
    assert only(scope, "110180").UID == "1.2.3.9"
    assert sorted(value_code(i) for i in children(ds, "113854")) == ["113856", "113866"]
    assert only(ds, "113809").DateTime == "20260115100100"
    assert only(ds, "113810").DateTime == "20260115100100"  # + 471.9 ms, DT to the second
    assert ds.PatientName == "Müller^Anna"


def test_accumulated_agd_per_breast_with_laterality() -> None:
    events = [event(1, "L", 1.0), event(2, "L", 2.5), event(3, "R", 0.75)]
    ds = rdsr.build_rdsr(context(), events)
    accumulated = only(ds, "113702")
    assert value_code(only(accumulated, "113764")) == "113622"
    meanings = {i.ConceptNameCodeSequence[0].CodeMeaning for i in children(accumulated, "111637")}
    assert meanings == {"Accumulated Average Glandular Dose"}  # PS3.16 Annex D
    per_side = {
        value_code(only(item, "272741003")): num(item) for item in children(accumulated, "111637")
    }
    assert per_side == {"7771000": (3.5, "mGy"), "24028007": (0.75, "mGy")}


def test_one_tid_10003_per_event_with_every_item() -> None:
    events = [
        event(1),
        event(2, view=ML, view_modifiers=(MAG,), focal_spot_mm=0.1, comment="repeat: motion"),
    ]
    ds = roundtrip(rdsr.build_rdsr(context(), events))
    containers = children(ds, "113706")
    assert len(containers) == 2
    second = containers[1]
    assert only(second, "113769").UID == "1.2.3.4.2"
    assert only(second, "111526").DateTime == "20260115100200"
    assert value_code(only(second, "113721")) == "113611"
    assert value_code(only(second, "113764")) == "113622"
    region = only(second, "123014")
    assert value_code(region) == "76752008"
    assert value_code(only(region, "272741003")) == "7771000"
    view = only(second, "111031")
    assert value_code(view) == "399260004"
    assert value_code(only(view, "111032")) == "399163009"
    assert num(only(second, "111634")) == (0.5476, "mm")
    assert num(only(second, "111636")) == (4.19, "mGy")
    assert value_code(only(second, "113780")) == "113865"
    assert num(only(second, "111631")) == (1.25, "mGy")
    assert num(only(second, "113733")) == (29.0, "kV")
    assert num(only(second, "113736")) == (75500.0, "uA.s")
    assert num(only(second, "113734")) == (160.0, "mA")
    assert num(only(second, "113824")) == (471.9, "ms")
    assert num(only(second, "113766")) == (0.1, "mm")
    assert value_code(only(second, "111632")) == "26194003"
    filters = only(second, "113771")
    assert value_code(only(filters, "113772")) == "113653"
    assert value_code(only(filters, "113757")) == "59801003"
    assert num(only(filters, "113758")) == (0.05, "mm")
    assert num(only(filters, "113773")) == (0.05, "mm")
    assert num(only(second, "111633")) == (45.0, "mm")
    assert num(only(second, "111647")) == (95.0, "N")
    assert only(second, "121106").TextValue == "repeat: motion"
    assert children(containers[0], "121106") == []


@pytest.mark.parametrize(
    ("anode", "code"),
    [("MOLYBDENUM", "71128006"), ("RHODIUM", "59801003"), ("TUNGSTEN", "26194003")],
)
def test_anode_codes(anode: str, code: str) -> None:
    ds = rdsr.build_rdsr(context(), [event(1, anode=anode)])
    assert value_code(only(only(ds, "113706"), "111632")) == code


def test_surface_reference_point() -> None:
    ds = rdsr.build_rdsr(context(), [event(1, reference_point="113964")])
    assert value_code(only(only(ds, "113706"), "113780")) == "113964"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"laterality": "B"}, "laterality"),
        ({"anode": "COPPER"}, "anode"),
        ({"filter_material": "TIN"}, "filter"),
        ({"reference_point": "1"}, "reference point"),
    ],
)
def test_bad_events_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(rdsr.DoseReportError, match=message):
        event(1, **change)


def test_an_empty_report_is_refused() -> None:
    with pytest.raises(rdsr.DoseReportError, match="at least one"):
        rdsr.build_rdsr(context(), [])


def test_ds_values_fit_16_characters() -> None:
    ds = rdsr.build_rdsr(context(), [event(1, agd_mgy=1.0 / 3.0, esak_mgy=1234567.891)])
    for code in ("111631", "111636"):
        value = only(only(ds, "113706"), code).MeasuredValueSequence[0].NumericValue
        assert len(str(value)) <= 16


def test_an_event_knowing_only_its_uid_is_written_without_the_rest() -> None:
    ds = rdsr.build_rdsr(context(), [rdsr.IrradiationEvent(irradiation_event_uid="1.2.3.4.9")])
    container = only(ds, "113706")
    written = {concept(item) for item in container.ContentSequence}
    assert written == {"113764", "113769", "113721", "123014"}  # plane, UID, type, breast
    assert children(ds, "113809") == [] and children(ds, "113810") == []  # no time known
    assert children(only(ds, "113702"), "111637") == []  # no AGD: no accumulated value


def test_no_reference_point_without_a_known_one() -> None:
    ds = rdsr.build_rdsr(context(), [event(1, reference_point=None)])
    container = only(ds, "113706")
    assert num(only(container, "111636")) == (4.19, "mGy")
    assert children(container, "113780") == []


def test_the_irradiating_device_names_only_what_the_unit_said() -> None:
    device = rdsr.IrradiatingDevice(manufacturer="Acme", model_name="Mammo 3000")
    ds = rdsr.build_rdsr(context(), [event(1, device=device)])
    participant = only(only(ds, "113706"), "113876")
    assert value_code(participant) == "113859"  # Irradiating Device (TID 1021)
    properties = {concept(p): p.TextValue for p in participant.ContentSequence}
    assert properties == {"113878": "Acme", "113879": "Mammo 3000"}  # no serial, no UID made up


def test_a_calculated_agd_is_marked_in_its_event() -> None:
    ds = rdsr.build_rdsr(context(), [event(1, agd_calculated=True, comment="values from MPPS")])
    text = only(only(ds, "113706"), "121106").TextValue
    assert text == f"{rdsr.CALCULATED_AGD_COMMENT}; values from MPPS"


def test_the_accumulated_agd_given_is_written_per_breast() -> None:
    ds = rdsr.build_rdsr(
        context(), [event(1, "L", 1.0), event(2, "L", 9.0)], accumulated_agd_mgy={"L": 1.0}
    )
    (left,) = children(only(ds, "113702"), "111637")
    assert num(left) == (1.0, "mGy")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_number_is_refused(value: float) -> None:
    with pytest.raises(rdsr.DoseReportError, match="finite"):
        event(1, esak_mgy=value)
