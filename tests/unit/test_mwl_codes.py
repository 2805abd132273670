"""Code constants (PS3.16) and the Code Sequence item round trip (PS3.3 §8.8)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.codes import Code, CodeError


@pytest.mark.parametrize(
    ("code", "value", "scheme"),
    [
        (codes.DUCTOGRAPHY, "111139", "DCM"),
        (codes.MAMMARY_DUCTOGRAM, "18102001", "SCT"),
        (codes.VIEW_CC, "399162004", "SCT"),
        (codes.VIEW_ML, "399260004", "SCT"),
        (codes.MODIFIER_MAGNIFICATION, "399163009", "SCT"),
        (codes.RIGHT_BREAST, "73056007", "SCT"),
        (codes.IOHEXOL, "109218004", "SCT"),
        (codes.DISCONTINUED_INCORRECT_SIDE, "110512", "DCM"),
        (codes.DISCONTINUED_EXTRAVASATION, "95384003", "SCT"),
    ],
)
def test_constants_carry_the_standard_values(code: Code, value: str, scheme: str) -> None:
    assert (code.value, code.scheme) == (value, scheme)
    assert code.meaning


def test_item_round_trip() -> None:
    item = codes.VIEW_MLO.to_dataset()
    assert (item.CodeValue, item.CodingSchemeDesignator) == ("399368009", "SCT")
    assert Code.from_item(item) == codes.VIEW_MLO


@pytest.mark.parametrize(
    ("legacy", "expected"),
    [
        ("R-10242", codes.VIEW_CC),
        ("R-10226", codes.VIEW_MLO),
        ("R-10224", codes.VIEW_ML),
        ("R-102D6", codes.MODIFIER_MAGNIFICATION),
    ],
)
def test_legacy_srt_codes_are_read_as_sct(legacy: str, expected: Code) -> None:
    item = Dataset()
    item.CodeValue = legacy
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "legacy"
    read = Code.from_item(item)
    assert (read.value, read.scheme) == (expected.value, expected.scheme)
    assert Code(legacy, "SRT", "x").same_concept(expected)


def test_long_code_values_use_long_code_value() -> None:
    item = Code("1" * 20, "99LOCAL", "long").to_dataset()
    assert "CodeValue" not in item
    assert item.LongCodeValue == "1" * 20
    assert Code.from_item(item).value == "1" * 20


def test_item_without_value_is_refused() -> None:
    item = Dataset()
    item.CodeMeaning = "nothing"
    with pytest.raises(CodeError):
        Code.from_item(item)


def test_cid_9301_is_complete() -> None:
    values = {code.value for code in codes.DISCONTINUATION_REASONS}
    assert {f"1105{n:02d}" for n in range(17)} <= values
    assert "95384003" in values
