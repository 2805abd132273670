"""The Dance model against the published values of the dose brief (dose.md §3, §4).

Every number here is copied from the tables of ``/work/shared/domain/dose.md`` (Dance et al.
2000; EUREF), not from galacto's code: if a value in ``dose/`` were mistyped, these fail.
"""

from __future__ import annotations

import itertools

import pytest

from dose import dance
from dose.check import calculate
from dose.tables import CTables

# dose.md §3: g (mGy per mGy), rows HVL mm Al, columns compressed thickness cm.
THICKNESS_CM = (2, 3, 4, 4.5, 5, 6, 7, 8, 9, 10, 11)
G_TABLE = {
    0.30: (0.390, 0.274, 0.207, 0.183, 0.164, 0.135, 0.114, 0.098, 0.0859, 0.0763, 0.0687),
    0.35: (0.433, 0.309, 0.235, 0.208, 0.187, 0.154, 0.130, 0.112, 0.0981, 0.0873, 0.0783),
    0.40: (0.473, 0.342, 0.261, 0.232, 0.209, 0.172, 0.145, 0.126, 0.1106, 0.0986, 0.0887),
    0.45: (0.509, 0.374, 0.289, 0.258, 0.232, 0.192, 0.163, 0.140, 0.1233, 0.1096, 0.0988),
    0.50: (0.543, 0.406, 0.318, 0.285, 0.258, 0.214, 0.177, 0.154, 0.1357, 0.1207, 0.1088),
    0.55: (0.573, 0.437, 0.346, 0.311, 0.287, 0.236, 0.202, 0.175, 0.1543, 0.1375, 0.1240),
    0.60: (0.587, 0.466, 0.374, 0.339, 0.310, 0.261, 0.224, 0.195, 0.1723, 0.1540, 0.1385),
}
G_CELLS = [
    (hvl, t, value)
    for hvl, row in G_TABLE.items()
    for t, value in zip(THICKNESS_CM, row, strict=True)
]

# dose.md §3: s by target/filter.
S_FACTORS = {
    ("Mo", "Mo"): 1.000,
    ("Mo", "Rh"): 1.017,
    ("Rh", "Rh"): 1.061,
    ("Rh", "Al"): 1.044,
    ("W", "Rh"): 1.042,
    ("W", "Ag"): 1.042,
}

# dose.md §3: typical glandularity (%) by thickness (cm), Dance 2000.
TYPICAL = {
    "50-64": {2: 100, 3: 72, 4: 50, 5: 33, 6: 21, 7: 12, 8: 7, 9: 4, 10: 3, 11: 3},
    "40-49": {2: 100, 3: 82, 4: 65, 5: 49, 6: 35, 7: 24, 8: 14, 9: 8, 10: 5, 11: 5},
}


@pytest.mark.parametrize(("hvl", "thickness_cm", "g"), G_CELLS, ids=lambda v: f"{v:g}")
def test_every_g_cell(hvl: float, thickness_cm: float, g: float) -> None:
    factor = dance.g_factor(hvl, thickness_cm * 10)
    assert factor.value == pytest.approx(g, abs=1e-9)
    doubtful = (hvl, thickness_cm) == (0.60, 2)  # "the 0.60 / 2 cm cell is doubtful"
    assert (dance.DOUBTFUL_G_CELL in factor.flags) is doubtful


@pytest.mark.parametrize(("pair", "s"), S_FACTORS.items(), ids=str)
def test_every_s_factor(pair: tuple[str, str], s: float) -> None:
    assert dance.s_factor(*pair).value == pytest.approx(s, abs=1e-9)


@pytest.mark.parametrize(("pair", "why"), [(("W", "Al"), "2009"), (("Rh", "Ag"), "not covered")])
def test_combinations_without_a_factor_are_not_guessed(pair: tuple[str, str], why: str) -> None:
    factor = dance.s_factor(*pair)
    assert factor.value is None and why in factor.reason


@pytest.mark.parametrize("thickness_mm", [20, 45, 53, 110])
def test_c_is_one_at_50_percent_glandularity_without_any_table(thickness_mm: float) -> None:
    choice = CTables().choose(0.5, thickness_mm, glandularity_pct=50)
    assert choice.factor.value == 1.0
    assert "by construction" in choice.factor.flags[0]


@pytest.mark.parametrize(
    ("group", "thickness_cm", "pct"),
    [(g, t, pct) for g, row in TYPICAL.items() for t, pct in row.items()],
)
def test_every_typical_glandularity(group: str, thickness_cm: float, pct: float) -> None:
    assert dance.typical_glandularity_pct(thickness_cm * 10, group) == pytest.approx(pct)


def test_typical_glandularity_between_the_centimetres() -> None:
    # 4.5 cm, age 50-64: midway between 50 % (4 cm) and 33 % (5 cm)
    assert dance.typical_glandularity_pct(45, "50-64") == pytest.approx(41.5)


def test_g_is_bilinear_between_the_cells() -> None:
    # HVL 0.525, 5.5 cm: the mean of 0.258, 0.214, 0.287, 0.236 (the four corners)
    expected = (0.258 + 0.214 + 0.287 + 0.236) / 4
    assert dance.g_factor(0.525, 55).value == pytest.approx(expected)


# K·g·c·s worked by hand from the tables above (c = 1: no c table, or 50 % glandular).
PRODUCTS = [
    # K mGy, HVL, thickness mm, target, filter, MGD mGy
    (5.0, 0.50, 45, "W", "Rh", 5.0 * 0.285 * 1.042),  # 1.484850
    (4.0, 0.40, 40, "Mo", "Rh", 4.0 * 0.261 * 1.017),  # 1.061748
    (10.0, 0.35, 60, "Mo", "Mo", 10.0 * 0.154 * 1.000),  # 1.540000
    (3.0, 0.55, 70, "Rh", "Al", 3.0 * 0.202 * 1.044),  # 0.632664
    (8.0, 0.45, 110, "W", "Ag", 8.0 * 0.0988 * 1.042),  # 0.823597
    (6.0, 0.525, 55, "Rh", "Rh", 6.0 * ((0.258 + 0.214 + 0.287 + 0.236) / 4) * 1.061),
]


@pytest.mark.parametrize(("k", "hvl", "t", "target", "filt", "mgd"), PRODUCTS)
def test_k_g_c_s_products(
    k: float, hvl: float, t: float, target: str, filt: str, mgd: float
) -> None:
    result = calculate(
        kerma_mgy=k, hvl_mm_al=hvl, thickness_mm=t, target=target, filter_material=filt
    )
    assert result.mgd_mgy == pytest.approx(mgd, rel=1e-9)
    assert result.c == 1.0


def test_the_inverse_square_example_of_the_brief() -> None:
    # SID 700 mm, RP 42 mm above the support, 60 mm breast: (658 / 640)² = 1.05704
    assert dance.inverse_square_factor(700 - 42, 700 - 60) == pytest.approx(1.05704, abs=5e-6)


def test_the_g_table_axes_are_the_briefs() -> None:
    assert dance.DANCE_2000_G.hvls_mm_al == tuple(G_TABLE)
    assert dance.DANCE_2000_G.thicknesses_cm == THICKNESS_CM
    assert len(list(itertools.chain(*dance.DANCE_2000_G.values))) == len(G_CELLS)
