"""The exam's X-Ray Radiation Dose SR keeps every exposure, honestly (issue 9 §6).

Exposures reach a real dose log from vendor-like objects, several lacking fields (no focal spot,
no AGD, no kerma, no laterality), one with absurd values and one with a NaN. The exam's report is
built from those rows the way the controller builds it, then checked: dciodvfy and dsrdump find
no error, every row is an event, the reference point and the Device UID appear only where the
unit gave them, the Dance figure appears as a system-calculated AGD only where the unit gave
none, and a round trip through ``dose_extract`` gives back the same exposures.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from acquisition.dose_log import DoseLog
from acquisition.exam_reporting import derived_uid, exam_dose_report
from dicom_nodes.datasets.dose_extract import from_image_header, from_mpps, from_rdsr
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.datasets.rdsr import DoseReportContext
from tests.dose_factories import Exposure, mg_image, mpps_create, mpps_set, rdsr
from tests.interop.test_dciodvfy import dciodvfy, dsrdump_errors

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed"),
    pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK not installed"),
]

STUDY = "1.2.826.0.1.3680043.8.498.9101"
UID_ROOT = "1.2.826.0.1.3680043.10.1466"
GALACTO_OBSERVER = UID_ROOT + ".77.1"
UNIT_DEVICE_UID = "1.2.826.0.1.3680043.8.498.555"

#: Values the round trip must give back unchanged, event by event.
ROUND_TRIP_FIELDS = (
    "irradiation_event_uid",
    "laterality",
    "view_code",
    "view_modifier_codes",
    "kvp",
    "exposure_uas",
    "tube_current_ma",
    "exposure_time_ms",
    "focal_spot_mm",
    "anode",
    "filter_material",
    "filter_thickness_mm",
    "compressed_thickness_mm",
    "compression_force_n",
    "hvl_mm_al",
    "esak_mgy",
    "esak_reference_point",
    "agd_reported_mgy",
    "manufacturer",
    "model",
    "device_serial",
    "device_uid",
)


def _raw(ds: Dataset, keyword: str, value: bytes) -> None:
    tag = Tag(keyword)
    ds._dict[tag] = RawDataElement(tag, "DS", len(value), value, 0, False, True)


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("exam-rdsr") / "galacto.sqlite"
    full = Exposure(laterality="L", view="CC", hvl_mm_al=0.5, thickness_mm=45, agd_mgy=1.48)
    hologic = Exposure(laterality="L", view="ML", magnified=True, agd_mgy=2.6)
    no_agd = Exposure(laterality="R", view="CC", hvl_mm_al=0.5, thickness_mm=45)
    absurd = Exposure(laterality="R", view="MLO")
    nan = Exposure(laterality="R", view="CC")
    bare = Exposure()
    with DoseLog(path) as log:
        ds = mg_image(full, study_uid=STUDY)
        ds.DeviceUID = UNIT_DEVICE_UID  # the unit names itself: the only Device UID kept
        log.record([from_image_header(ds)])
        ds = mg_image(hologic, study_uid=STUDY)  # the Hologic image: no focal spot
        del ds.FocalSpots
        log.record([from_image_header(ds)])
        log.record(from_rdsr(rdsr([hologic], study_uid=STUDY)))
        ds = mg_image(no_agd, study_uid=STUDY)
        del ds.OrganDose  # the unit gave no AGD: the Dance figure is written, marked calculated
        log.record([from_image_header(ds)])
        ds = mg_image(absurd, study_uid=STUDY)
        _raw(ds, "OrganDose", b"1000000 ")
        _raw(ds, "EntranceDoseInmGy", b"-5")
        _raw(ds, "CompressionForce", b"-20 ")
        log.record([from_image_header(ds)])
        ds = mg_image(nan, study_uid=STUDY)
        _raw(ds, "EntranceDoseInmGy", b"NaN ")
        log.record([from_image_header(ds)])
        ds = mg_image(bare, study_uid=STUDY)  # no laterality, no time, no view, no kerma
        for keyword in ("ImageLaterality", "AcquisitionDateTime", "ViewCodeSequence",
                        "EntranceDoseInmGy", "HalfValueLayer", "BodyPartThickness"):  # fmt: skip
            delattr(ds, keyword)
        log.record([from_image_header(ds)])
        mpps = mpps_create(study_uid=STUDY)  # an MPPS item that names no image
        for element in mpps_set([Exposure(), Exposure()]):
            mpps[element.tag] = element
        mpps.PerformedSeriesSequence[0].ReferencedImageSequence = []
        log.record(from_mpps(mpps, mpps_instance_uid=generate_uid())[:1])
        yield log.list_exposures(study=STUDY)


@pytest.fixture(scope="module")
def report(rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = DoseReportContext(
        study_instance_uid=STUDY,
        patient=Patient(name="Test^Patient", id="PID1"),
        accession_number="ACC1",
        study_id="EXAM1",
        manufacturer="galacto",
        model_name="galacto acquisition controller",
        station_name="GALACTO",
        device_observer_uid=GALACTO_OBSERVER,
        content_datetime=dt.datetime(2026, 11, 25, 11, 0, 0),
    )
    ds, left_out = exam_dose_report(
        rows,
        context,
        uid_root=UID_ROOT,
        sop_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
    )
    assert left_out == 5  # absurd, NaN (implausible); no AGD ×2 (calculated, MPPS); no side
    path = tmp_path_factory.mktemp("report") / "exam-rdsr.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def concept(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def children(item: Dataset, code: str) -> list[Dataset]:
    return [c for c in item.get("ContentSequence", []) if concept(c) == code]


def events_by_uid(ds: Dataset) -> dict[str, Dataset]:
    return {only(e, "113769").UID: e for e in children(ds, "113706")}


def event_uid(row: dict[str, Any]) -> str:
    """The row's Irradiation Event UID, or the one the report derives for it."""
    return str(
        row["irradiation_event_uid"]
        or derived_uid(UID_ROOT, str(row["sop_instance_uid"] or row["id"]), "event")
    )


def only(item: Dataset, code: str) -> Dataset:
    (found,) = children(item, code)
    return found


def comment(event: Dataset) -> str:
    return str(only(event, "121106").TextValue)


def test_the_report_is_valid_and_every_exposure_is_an_event(
    rows: list[dict[str, Any]], report: Path
) -> None:
    errors, warnings = dciodvfy(report)
    for warning in sorted(set(warnings)):
        print(f"exam RDSR: {warning}")
    assert errors == []
    assert dsrdump_errors(report) == []
    ds = dcmread(report)
    assert len(rows) == 7
    assert len(children(ds, "113706")) == len(rows)


def test_values_are_left_out_where_unknown_never_the_event(
    rows: list[dict[str, Any]], report: Path
) -> None:
    ds = dcmread(report)
    by_sop = {r["sop_instance_uid"]: r for r in rows}
    events = events_by_uid(ds)
    hologic = next(r for r in rows if r["sources"] == "image_header,rdsr")
    hologic_event = events[event_uid(hologic)]
    assert children(hologic_event, "113766") == []  # no focal spot: left out, the event kept
    assert concept(only(hologic_event, "113780")) == "113780"  # its RDSR gave the RP
    header_only = [r for r in by_sop.values() if r["sources"] == "image_header" and r["esak_mgy"]]
    for row in header_only:  # an image's Entrance Dose has no reference point: none written
        assert children(events[event_uid(row)], "113780") == []
    bare = next(r for r in rows if r["laterality"] is None and r["sources"] == "image_header")
    bare_event = events[event_uid(bare)]
    assert children(bare_event, "111526") == [] and children(bare_event, "111031") == []
    assert only(bare_event, "123014").get("ContentSequence", []) == []  # breast, no side


def test_implausible_values_are_written_as_received_with_a_comment(
    rows: list[dict[str, Any]], report: Path
) -> None:
    events = events_by_uid(dcmread(report))
    absurd = next(r for r in rows if "agd_reported_mgy 1e+08" in r["plausibility"])
    event = events[event_uid(absurd)]
    assert float(only(event, "111636").MeasuredValueSequence[0].NumericValue) == -5.0
    assert float(only(event, "111647").MeasuredValueSequence[0].NumericValue) == -20.0
    assert float(only(event, "111631").MeasuredValueSequence[0].NumericValue) == 1e8
    assert "implausible as received: " in comment(event)
    assert "agd_reported_mgy 1e+08 mGy outside [0.01, 50] mGy" in comment(event)
    assert "left out of the accumulated AGD (implausible)" in comment(event)
    nan = next(r for r in rows if "esak_mgy NaN" in r["plausibility"])
    nan_event = events[event_uid(nan)]
    assert children(nan_event, "111636") == []  # no number to write
    assert "esak_mgy NaN (not a number) as received" in comment(nan_event)


def test_the_accumulated_agd_is_the_one_total(rows: list[dict[str, Any]], report: Path) -> None:
    ds = dcmread(report)
    accumulated = only(ds, "113702")
    per_side = {
        str(only(item, "272741003").ConceptCodeSequence[0].CodeMeaning): float(
            item.MeasuredValueSequence[0].NumericValue
        )
        for item in children(accumulated, "111637")
    }
    assert per_side == {"Left": pytest.approx(1.48 + 2.6)}  # right: nothing countable


def test_the_dance_figure_only_where_the_unit_gave_no_agd(
    rows: list[dict[str, Any]], report: Path
) -> None:
    ds = dcmread(report)
    events = events_by_uid(ds)
    calculated = [r for r in rows if r["agd_reported_mgy"] is None and r["agd_computed_mgy"]]
    assert len(calculated) == 1
    (row,) = calculated
    event = events[event_uid(row)]
    value = float(only(event, "111631").MeasuredValueSequence[0].NumericValue)
    assert value == pytest.approx(row["agd_computed_mgy"], rel=1e-5)
    assert comment(event).startswith("AGD system calculated by galacto (Dance")
    for other in rows:
        if other["agd_reported_mgy"] is not None:  # the unit's value, never beside ours
            found = children(events[event_uid(other)], "111631")
            assert [float(f.MeasuredValueSequence[0].NumericValue) for f in found] == [
                pytest.approx(other["agd_reported_mgy"])
            ]
            assert "system calculated" not in comment(events[event_uid(other)])
    sources = {str(i.ConceptCodeSequence[0].CodeValue) for i in children(ds, "113854")}
    assert sources == {"113866", "113856", "113858", "113940"}


def test_galacto_observes_and_the_unit_irradiates(rows: list[dict[str, Any]], report: Path) -> None:
    ds = dcmread(report)
    assert only(ds, "121012").UID == GALACTO_OBSERVER  # TID 1002/1004: the recorder
    events = events_by_uid(ds)
    for row in rows:
        device = only(events[event_uid(row)], "113876")  # TID 1021
        assert str(device.ConceptCodeSequence[0].CodeValue) == "113859"  # Irradiating Device
        names = {concept(p): p for p in device.get("ContentSequence", [])}
        if row["manufacturer"]:
            assert names["113878"].TextValue == row["manufacturer"]
            assert names["113879"].TextValue == row["model"]
        uids = [p.UID for p in device.get("ContentSequence", []) if concept(p) == "121012"]
        assert uids == ([UNIT_DEVICE_UID] if row["device_uid"] else [])  # never invented


def test_a_round_trip_gives_back_the_same_exposures(
    rows: list[dict[str, Any]], report: Path, tmp_path: Path
) -> None:
    records = from_rdsr(dcmread(report))
    assert len(records) == len(rows)
    with DoseLog(tmp_path / "again.sqlite") as again:
        again.record(records)
        back = {r["irradiation_event_uid"]: r for r in again.list_exposures()}
    original = {event_uid(r): r for r in rows}
    assert set(original) == set(back)
    for uid, row in original.items():
        for field in ROUND_TRIP_FIELDS[1:]:
            if isinstance(row[field], float):
                assert back[uid][field] == pytest.approx(row[field], rel=1e-5), field
            else:
                assert back[uid][field] == row[field], field
        if "NaN" not in row["plausibility"]:  # a NaN is no number to write: its comment says it
            assert back[uid]["plausibility"] == row["plausibility"]
