"""Extraction from encoded objects: what a file gives is what the dataset in memory gives.

The extraction reads an object's elements as encoded (``encoded_item.EncodedItem``: values
decoded by pydicom's converters, sequence items split without building a pydicom Dataset
each). Every object here is written in each transfer syntax a unit may use, with sequences and
items of defined and of undefined length, in two character sets, read back by ``dcmread`` and
extracted: the records must equal those extracted from the dataset before it was written.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicom_nodes.datasets.dose_extract import exposures_in
from dose.plausibility import QaPatterns
from dose.record import ExposureRecord
from tests.dose_factories import Exposure, mg_image, rdsr

STUDY = "1.2.826.0.1.3680043.8.498.4242"
QA = QaPatterns(patient=("*PHANTOM*",), protocol=("*QC*",))


def _text_item(concept: str, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = concept, "DCM", concept
    item.ConceptNameCodeSequence = Sequence([name])
    item.TextValue = text
    return item


def image_in(charset: str) -> Dataset:
    ds = mg_image(
        Exposure(view="MLO", magnified=True, acquired="20260301093012+0100"), study_uid=STUDY
    )
    ds.SpecificCharacterSet = charset
    ds.CommentsOnRadiationDose = "glandularité 35 %"
    ds.ProtocolName = "Galactographie gauche"
    ds.PatientName = "Lévêque^Zoé"
    return ds


def legacy_image(charset: str) -> Dataset:
    ds = mg_image(Exposure(view="ML", magnified=True), study_uid=STUDY, legacy_codes=True)
    ds.SpecificCharacterSet = charset
    ds.PatientAge = "052Y"
    return ds


def report_in(charset: str) -> Dataset:
    exposures = [
        Exposure(laterality="L", view="CC", acquired="20260301093012+0100"),
        Exposure(laterality="R", view="ML", magnified=True, kvp=31.0, agd_mgy=2.5),
    ]
    ds = rdsr(exposures, study_uid=STUDY)
    ds.SpecificCharacterSet = charset
    ds.StudyDescription = "Galactographie QC"  # matches a QA pattern
    for event in ds.ContentSequence:
        event.ContentSequence.append(_text_item("125203", "Galactographie, côté gauche"))
        event.ContentSequence.append(_text_item("121106", "commentaire: dose élevée"))
    hologic = ds.ContentSequence[1].ContentSequence
    for item in hologic:
        if item.ConceptNameCodeSequence[0].CodeValue == "113736":  # Hologic's µAs spelling
            item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = "uAs"
    return ds


def _undefined_lengths(ds: Dataset) -> None:
    for element in ds.iterall():
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True


def encoded(ds: Dataset, syntax: str, *, undefined: bool) -> Dataset:
    """``ds`` written as a file in ``syntax`` and read back (headers only, as imports do)."""
    copy = Dataset(ds)
    copy.file_meta = ds.file_meta.copy()
    copy.file_meta.TransferSyntaxUID = syntax
    if undefined:
        _undefined_lengths(copy)
    buffer = io.BytesIO()
    copy.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer, stop_before_pixels=True)


def records(ds: Dataset) -> list[ExposureRecord]:
    return exposures_in(ds, station_ae="MAMMO", qa=QA)


OBJECTS: dict[str, Callable[[str], Dataset]] = {
    "image": image_in,
    "legacy image": legacy_image,
    "rdsr": report_in,
}


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192"])
@pytest.mark.parametrize("undefined", [False, True], ids=["defined lengths", "undefined lengths"])
@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian],
    ids=["explicit LE", "implicit LE", "explicit BE"],
)
@pytest.mark.parametrize("kind", list(OBJECTS))
def test_a_file_gives_the_records_of_its_dataset(
    kind: str, syntax: str, undefined: bool, charset: str
) -> None:
    original = OBJECTS[kind](charset)
    expected = records(original)
    assert expected and all(r.review_reasons is not None for r in expected)
    assert records(encoded(original, syntax, undefined=undefined)) == expected


def test_the_report_records_hold_what_the_units_wrote() -> None:
    """The equality above compares like with like: this is what both hold."""
    left, right = records(encoded(report_in("ISO_IR 192"), ExplicitVRLittleEndian, undefined=False))
    assert left.acquisition_protocol == "Galactographie, côté gauche"
    assert left.qa_reason == "protocol matches '*QC*'"
    assert left.timezone_offset_from_utc == "+0100"
    assert right.exposure_uas == pytest.approx(80000.0)
    assert any("'uAs' read as UCUM 'uA.s'" in reason for reason in right.review_reasons)
    assert right.view_modifier_codes == ("399163009",)


def test_a_files_content_tree_is_read_without_pydicom_datasets() -> None:
    """The fast path is the one taken: after the extraction the content tree of a file with
    defined lengths is still encoded in pydicom's dataset (pydicom never parsed it)."""
    ds = encoded(report_in("ISO_IR 192"), ExplicitVRLittleEndian, undefined=False)
    assert len(records(ds)) == 2
    assert isinstance(ds.get_item(0x0040A730), RawDataElement)
