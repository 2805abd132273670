"""Reference levels (issue 9 §5): the published defaults, PMMA-equivalence, site overrides,
the one per-breast total and the policy that raises alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from acquisition.dose_policy import DEFAULT_LEVELS
from dose.levels import NO_LEVEL_SET, LevelError, LevelSet, load_levels
from dose.policy import IMPLAUSIBLE_ALERT, DosePolicy
from dose.totals import IMPLAUSIBLE, NO_AGD, QA, per_breast_totals

CC, MLO, ML = "399162004", "399368009", "399260004"
MAG = "399163009"


@pytest.fixture(scope="module")
def shipped() -> LevelSet:
    return load_levels([DEFAULT_LEVELS])


def exposure(**values: Any) -> dict[str, Any]:
    return {"view_code": CC, "compressed_thickness_mm": 45.0, **values}


def by_id(comparisons: list[Any]) -> dict[str, Any]:
    return {c.level.id: c for c in comparisons}


def test_every_shipped_level_names_its_source_and_year(shipped: LevelSet) -> None:
    assert {level.id for level in shipped.levels} >= {
        "euref-acceptable",
        "euref-achievable",
        "uk-ndrl",
        "local-magnified",
        "local-exam-breast",
    }
    for level in shipped.levels:
        assert len(level.source) > 20
        assert level.year is not None or level.source.startswith("site setting")
    assert shipped.equivalence is not None and "Dance" in shipped.equivalence.source


def test_a_45_mm_breast_is_compared_with_the_40_mm_pmma_level(shipped: LevelSet) -> None:
    # dose.md §4: 40 mm PMMA ≙ 45 mm breast; EUREF at 40 mm PMMA: acceptable 2.0, achievable 1.6
    found = by_id(shipped.compare_exposure(exposure(), 1.9))
    acceptable, achievable = found["euref-acceptable"], found["euref-achievable"]
    assert acceptable.limit_mgy == pytest.approx(2.0)
    assert achievable.limit_mgy == pytest.approx(1.6)
    assert not acceptable.above and achievable.above
    assert acceptable.describe() == (
        "EUREF acceptable: 1.900 ≤ 2.000 mGy (45 mm breast ≙ 40 mm PMMA)"
    )


@pytest.mark.parametrize(
    ("thickness_mm", "acceptable_mgy"),
    [
        (21, 1.0),  # 20 mm PMMA
        (53, 2.5),  # 45 mm PMMA
        (60, 3.0),  # 50 mm PMMA
        (90, 6.5),  # 70 mm PMMA
        (49, 2.25),  # halfway between 45 (2.0) and 53 (2.5) mm breast
    ],
)
def test_pmma_levels_by_equivalent_breast(
    shipped: LevelSet, thickness_mm: float, acceptable_mgy: float
) -> None:
    found = by_id(shipped.compare_exposure(exposure(compressed_thickness_mm=thickness_mm), 1.0))
    assert found["euref-acceptable"].limit_mgy == pytest.approx(acceptable_mgy)


@pytest.mark.parametrize("thickness_mm", [15, 95])
def test_no_euref_level_outside_the_equivalence_table(
    shipped: LevelSet, thickness_mm: float
) -> None:
    found = by_id(shipped.compare_exposure(exposure(compressed_thickness_mm=thickness_mm), 1.0))
    assert "euref-acceptable" not in found


@pytest.mark.parametrize(("view", "thickness_mm", "applies"), [
    (MLO, 55, True), (MLO, 50, True), (MLO, 61, False), (MLO, 45, False), (CC, 55, False),
])  # fmt: skip
def test_the_uk_drl_applies_only_to_its_band_and_view(
    shipped: LevelSet, view: str, thickness_mm: float, applies: bool
) -> None:
    row = exposure(view_code=view, compressed_thickness_mm=thickness_mm)
    found = by_id(shipped.compare_exposure(row, 2.6))
    assert ("uk-ndrl" in found) is applies
    if applies:
        assert found["uk-ndrl"].above and found["uk-ndrl"].limit_mgy == 2.5


def test_magnified_views_have_no_published_level(shipped: LevelSet) -> None:
    row = exposure(view_code=ML, view_modifier_codes=MAG, magnification_factor=1.8)
    (only,) = shipped.compare_exposure(row, 5.0)
    assert only.level.id == "local-magnified" and only.limit_mgy is None and not only.above
    assert only.describe() == f"Local level, magnified views: {NO_LEVEL_SET}"


def test_a_site_file_overrides_by_id_adds_and_disables(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[[level]]\nid = "local-magnified"\nmgy = 6.0\n'
        '[[level]]\nid = "euref-achievable"\nenabled = false\n'
        '[[level]]\nid = "local-exam-breast"\nmgy = 12.0\n'
        '[[level]]\nid = "site-cc"\nname = "Site CC"\nscope = "exposure"\ncompare = "fixed"\n'
        'views = "contact"\nview_names = ["CC"]\nmgy = 1.5\nsource = "our physics committee 2026"\n'
    )
    levels = load_levels([DEFAULT_LEVELS, site])
    mag = levels.compare_exposure(exposure(view_modifier_codes=MAG), 6.5)
    assert [(c.level.id, c.limit_mgy, c.above) for c in mag] == [("local-magnified", 6.0, True)]
    contact = by_id(levels.compare_exposure(exposure(), 1.9))
    assert "euref-achievable" not in contact
    assert contact["site-cc"].above
    (exam,) = levels.compare_exam_breast(12.5)
    assert exam.above and exam.limit_mgy == 12.0


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('[[level]]\nid = "x"\nname = "X"\nscope = "week"\ncompare = "fixed"\nsource = "s"\n',
         "scope must be"),
        ('[[level]]\nid = "local-magnified"\nmgy = -1.0\n', "mgy must be positive"),
        ('[[level]]\nid = "local-magnified"\ncolour = "red"\n', "unknown key"),
        ('[[level]]\nid = "uk-ndrl"\nthickness_mm = [60, 50]\n', "thickness_mm must be"),
        ('[[level]]\nid = "uk-ndrl"\nview_names = ["XX"]\n', "view_names must list"),
        ('[[level]]\nname = "no id"\n', "has no id"),
        ("[levels]\n", "unknown table"),
    ],
)  # fmt: skip
def test_a_bad_level_file_is_refused_naming_the_level(tmp_path: Path, text: str, why: str) -> None:
    site = tmp_path / "site.toml"
    site.write_text(text)
    with pytest.raises(LevelError, match=why):
        load_levels([DEFAULT_LEVELS, site])


# ------------------------------------------------------------------------------ totals


def test_one_total_per_breast_leaves_out_what_cannot_be_trusted() -> None:
    rows = [
        {"laterality": "L", "agd_reported_mgy": 1.2, "plausibility": ""},
        {"laterality": "L", "agd_reported_mgy": 1.3, "plausibility": None},
        {"laterality": "L", "agd_reported_mgy": 1e8, "plausibility": "agd_reported_mgy 1e+08"},
        {"laterality": "L", "agd_reported_mgy": None, "plausibility": ""},
        {"laterality": "L", "agd_reported_mgy": 0.9, "qa_reason": "protocol matches '*QC *'"},
        {"laterality": "R", "agd_reported_mgy": 2.0},
        {"laterality": "B", "agd_reported_mgy": 2.0},
    ]
    totals = per_breast_totals(rows)
    left, right = totals.breasts["L"], totals.breasts["R"]
    assert left.agd_mgy == pytest.approx(2.5) and left.events == 2
    assert left.left_out == {IMPLAUSIBLE: 1, NO_AGD: 1, QA: 1}
    assert left.describe() == (
        "2.500 mGy (2 events; 3 events left out: 1 implausible, 1 no reported AGD, 1 physics/QA)"
    )
    assert right.describe() == "2.000 mGy (1 event)"
    assert totals.without_laterality == 1
    assert totals.agd_mgy == {"L": pytest.approx(2.5), "R": 2.0}


# ------------------------------------------------------------------------------ policy


CLINICAL = {
    "id": 1,
    "laterality": "L",
    "view_code": CC,
    "compressed_thickness_mm": 45.0,
    "esak_mgy": 5.0,
    "hvl_mm_al": 0.5,
    "hvl_source": "reported",
    "anode": "TUNGSTEN",
    "filter_material": "RHODIUM",
}
DANCE = 5.0 * 0.285 * 1.042  # 1.48485 mGy (dose.md: g 0.50 mm Al / 4.5 cm, s W/Rh)


def test_policy_alerts_above_an_alert_level_only(shipped: LevelSet) -> None:
    policy = DosePolicy(levels=shipped)
    above = policy.assess({**CLINICAL, "agd_reported_mgy": 2.2})  # EUREF acceptable 2.0
    assert [a.level_id for a in above.alerts] == ["euref-acceptable"]
    assert above.alerts[0].limit_mgy == pytest.approx(2.0)
    assert "EUREF achievable: 2.200 > 1.600 mGy" in above.level_comparison
    assert above.check.verdict == "disagrees"  # 2.2 mGy is 1.48 × the Dance figure
    between = policy.assess({**CLINICAL, "agd_reported_mgy": 1.8})  # above achievable only
    assert between.alerts == () and between.plausibility == ()


def test_policy_flags_a_unit_error_as_implausible_and_raises_one_alert(shipped: LevelSet) -> None:
    policy = DosePolicy(levels=shipped)
    assessed = policy.assess({**CLINICAL, "agd_reported_mgy": DANCE * 100})
    assert assessed.check.verdict == "unit suspected"
    (finding,) = assessed.plausibility
    assert finding.startswith("unit suspected: reported AGD 148.5 mGy is 100 × the Dance figure")
    assert [a.level_id for a in assessed.alerts] == [IMPLAUSIBLE_ALERT]
    assert assessed.comparisons == () and "not compared: implausible" in assessed.level_comparison


def test_policy_compares_the_dance_figure_when_the_unit_gave_no_agd(shipped: LevelSet) -> None:
    assessed = DosePolicy(levels=shipped).assess(dict(CLINICAL))
    assert assessed.columns()["agd_computed_mgy"] == pytest.approx(DANCE)
    assert "compared with the Dance figure: the unit reported no AGD" in assessed.level_comparison
    assert by_id(list(assessed.comparisons))["euref-acceptable"].value_mgy == pytest.approx(DANCE)


def test_policy_leaves_qa_exposures_out_of_the_levels(shipped: LevelSet) -> None:
    row = {**CLINICAL, "agd_reported_mgy": 9.0, "qa_reason": "patient ID or name matches 'QA*'"}
    assessed = DosePolicy(levels=shipped).assess(row)
    assert assessed.alerts == () and assessed.comparisons == ()
    assert "physics/QA" in assessed.level_comparison


def test_policy_says_when_no_level_applies(shipped: LevelSet) -> None:
    row = {**CLINICAL, "compressed_thickness_mm": 100.0, "agd_reported_mgy": 3.0}  # > 90 mm
    assessed = DosePolicy(levels=shipped).assess(row)
    assert assessed.level_comparison == "no reference level applies to this view and thickness"
