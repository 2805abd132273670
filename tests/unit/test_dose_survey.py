"""The survey vocabulary: NHSBSP view codes, element symbols, bands, exclusions."""

from __future__ import annotations

import pytest

from dose.levels import VIEW_NAMES
from dose.survey import (
    NHSBSP_VIEWS,
    VIEW_MEANINGS,
    NhsbspViewCodes,
    band_label,
    element_symbol,
    nhsbsp_excluded,
)


def test_every_view_has_a_meaning_and_an_nhsbsp_code() -> None:
    assert set(VIEW_MEANINGS) == set(VIEW_NAMES.values()) == set(NHSBSP_VIEWS)
    assert NHSBSP_VIEWS["MLO"] == "OB"  # the survey form's name for the oblique


def test_repeats_of_a_view_are_numbered_within_an_exam() -> None:
    codes = NhsbspViewCodes()
    got = [codes.next_code(side, view) for side, view in (
        ("R", "CC"), ("R", "MLO"), ("R", "CC"), ("L", "CC"), ("R", "CC"), ("B", "CC"), ("R", None),
    )]  # fmt: skip
    assert got == ["RCC", "ROB", "RCC2", "LCC", "RCC3", None, None]
    assert NhsbspViewCodes().next_code("R", "CC") == "RCC"  # a new exam starts again


@pytest.mark.parametrize(
    ("material", "symbol"),
    [("TUNGSTEN", "W"), ("rhodium", "Rh"), ("MOLYBDENUM", "Mo"), ("SILVER", "Ag"),
     ("ALUMINUM", "Al"), ("ALUMINIUM", "Al"), ("UNOBTAINIUM", "UNOBTAINIUM"), (None, None)],
)  # fmt: skip
def test_element_symbols(material: str | None, symbol: str | None) -> None:
    assert element_symbol(material) == symbol


def test_bands_and_exclusions() -> None:
    assert band_label(50) == "50–59 mm"
    assert band_label(None) == "unknown"
    assert nhsbsp_excluded("R CC Biopsy Scout", "CC") is not None
    assert nhsbsp_excluded("Galactography", "CC") is None
