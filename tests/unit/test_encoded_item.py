"""EncodedItem: an object read from its encoded elements reads as pydicom's Dataset does.

Every element of a dose report (its whole content tree) and of an image header, written in
each transfer syntax a unit may use and read back by ``dcmread``, must give through
:class:`~dicom_nodes.datasets.encoded_item.EncodedItem` the value pydicom's Dataset gives.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_nodes.datasets.encoded_item import EncodedItem
from tests.unit.test_dose_extract_encodings import OBJECTS, encoded


def _same(item: EncodedItem, ds: Dataset) -> int:
    """Compare every element of ``ds`` with ``item`` (recursively); how many were compared."""
    compared = 0
    for element in ds:
        keyword = element.keyword
        if not keyword:
            continue
        assert keyword in item
        if element.VR == "SQ":
            items = item.get(keyword)
            assert len(items) == len(element.value)
            for mine, theirs in zip(items, element.value, strict=True):
                compared += _same(EncodedItem.of(mine), theirs)
            continue
        assert _plain(item.get(keyword)) == _plain(element.value), keyword
        assert _plain(item[keyword].value) == _plain(element.value), keyword
        compared += 1
    return compared


def _plain(value: Any) -> Any:
    if type(value).__name__ == "MultiValue" or isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if value is not None else None


@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian],
    ids=["explicit LE", "implicit LE", "explicit BE"],
)
@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
@pytest.mark.parametrize("kind", list(OBJECTS))
def test_every_element_reads_as_pydicom_reads_it(kind: str, syntax: str, undefined: bool) -> None:
    original = OBJECTS[kind]("ISO_IR 192")
    ds = encoded(original, syntax, undefined=undefined)
    reference = encoded(original, syntax, undefined=undefined)
    assert _same(EncodedItem.of(ds), reference) > 20


def test_absent_and_unknown_keywords() -> None:
    item = EncodedItem.of(
        encoded(OBJECTS["image"]("ISO_IR 100"), ExplicitVRLittleEndian, undefined=False)
    )
    assert "ContentSequence" not in item
    assert item.get("ContentSequence", "absent") == "absent"
    with pytest.raises(KeyError):
        item["ContentSequence"]
    with pytest.raises(KeyError, match="no DICOM keyword"):
        item.get("NotADicomKeyword")
    assert EncodedItem.of(item) is item
