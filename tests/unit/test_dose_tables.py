"""The physicist's tables: a unit's HVL by kV and target/filter, and the c tables (dose.md §3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dose import dance
from dose.tables import (
    CTables,
    TableError,
    hvl_table_for,
    load_c_table,
    load_c_tables,
    load_hvl_table,
)
from simulators.room import UNIT_HVL_TABLE

HVL_TOML = """
[unit]
manufacturer = "Acme"
model = "Mammo 3000"
serial = "SN42"
measured = "2026-01-15 annual survey"

[hvl_mm_al."W/Rh"]
"25" = 0.50
"30" = 0.55
"35" = 0.60

[hvl_mm_al."Mo/Mo"]
"28" = 0.36
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_hvl_is_linear_in_kv_between_the_points_measured(tmp_path: Path) -> None:
    table = load_hvl_table(write(tmp_path, "acme.toml", HVL_TOML))
    assert table.hvl_mm_al("TUNGSTEN", "RHODIUM", 25) == pytest.approx(0.50)
    assert table.hvl_mm_al("W", "Rh", 27.5) == pytest.approx(0.525)
    assert table.hvl_mm_al("W", "Rh", 33) == pytest.approx(0.58)
    assert table.hvl_mm_al("MOLYBDENUM", "MOLYBDENUM", 28) == pytest.approx(0.36)


@pytest.mark.parametrize(
    ("anode", "filt", "kv", "why"),
    [
        ("W", "Rh", 24, "24 kV is outside [25, 35] kV"),
        ("W", "Rh", 36, "outside [25, 35] kV"),
        ("Mo", "Mo", 29, "outside [28, 28] kV"),
        ("W", "Ag", 28, "has no W/Ag row"),
    ],
)
def test_hvl_is_never_extrapolated(
    tmp_path: Path, anode: str, filt: str, kv: float, why: str
) -> None:
    table = load_hvl_table(write(tmp_path, "acme.toml", HVL_TOML))
    with pytest.raises(dance.OutsideTableError, match=re.escape(why)):
        table.hvl_mm_al(anode, filt, kv)


def test_a_table_serves_its_unit_and_a_serial_beats_the_model(tmp_path: Path) -> None:
    one = load_hvl_table(write(tmp_path, "one.toml", HVL_TOML))
    model = load_hvl_table(
        write(tmp_path, "model.toml", HVL_TOML.replace('serial = "SN42"', 'serial = ""'))
    )
    assert hvl_table_for([model, one], " acme ", "MAMMO 3000", "SN42") is one
    assert hvl_table_for([model, one], "Acme", "Mammo 3000", "SN7") is model
    assert hvl_table_for([one], "Acme", "Mammo 3000", "SN7") is None
    assert hvl_table_for([model, one], "Other", "Mammo 3000", "SN42") is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (("[unit]", "[device]"), "a \\[unit\\] table"),
        (('"W/Rh"', '"W/Xx"'), "not a target/filter"),
        (('"25" = 0.50', '"25" = 5.0'), "is no HVL"),
        (('"25" = 0.50', '"kv" = 0.5'), "must be a kV"),
        (('"25" = 0.50', '"25" = "half"'), "expected a finite number"),
        (('model = "Mammo 3000"', "model = 3"), "model must be a non-empty string"),
        (('[hvl_mm_al."Mo/Mo"]', "[hvl_mm_al"), "not valid TOML"),
    ],
)
def test_a_bad_hvl_table_is_refused_with_the_reason(
    tmp_path: Path, change: tuple[str, str], why: str
) -> None:
    path = write(tmp_path, "bad.toml", HVL_TOML.replace(*change))
    with pytest.raises(TableError, match=why):
        load_hvl_table(path)


def test_the_demo_units_table_is_the_fit_the_simulator_uses() -> None:
    table = load_hvl_table(UNIT_HVL_TABLE)
    for kv in range(25, 36):
        assert table.hvl_mm_al("W", "Rh", kv) == dance.estimate_hvl("W", "Rh", kv).mm_al


# --------------------------------------------------------------------------------- c


def c_toml(kind: str, value: str, name: str, c: float) -> str:
    key = "glandularity_pct" if kind == "glandularity" else "age_group"
    return f"""
name = "{name}"
kind = "{kind}"
{key} = {value}
source = "test table (values made up for the test)"
hvl_mm_al = [0.30, 0.60]
thickness_cm = [2, 11]
values = [[{c}, {c}], [{c}, {c + 0.1}]]
"""


@pytest.fixture
def c_tables(tmp_path: Path) -> CTables:
    return load_c_tables(
        [
            write(tmp_path, "c25.toml", c_toml("glandularity", "25", "c 25 %", 1.2)),
            write(tmp_path, "c75.toml", c_toml("glandularity", "75", "c 75 %", 0.8)),
            write(tmp_path, "c5064.toml", c_toml("age", '"50-64"', "c typical 50-64", 1.05)),
        ]
    )


def test_c_from_the_glandularity_table_and_linear_between_tables(c_tables: CTables) -> None:
    at_25 = c_tables.choose(0.30, 20, glandularity_pct=25)
    assert at_25.factor.value == pytest.approx(1.2)
    assert at_25.glandularity_pct == 25
    assert "c from 'c 25 %'" in at_25.factor.flags[0]
    at_40 = c_tables.choose(0.30, 20, glandularity_pct=40)  # 40 % of the way 25 → 75 is 0.3
    assert at_40.factor.value == pytest.approx(1.2 + (0.8 - 1.2) * 0.3)
    assert "linear between 'c 25 %' and 'c 75 %'" in at_40.factor.flags[0]
    assert c_tables.choose(0.30, 20, glandularity_pct=50).factor.value == 1.0  # by construction


def test_c_without_a_bracketing_table_is_one_and_says_why(c_tables: CTables) -> None:
    choice = c_tables.choose(0.30, 20, glandularity_pct=10)
    assert choice.factor.value == 1.0
    assert "no c table brackets 10 % glandularity (loaded: 25 %, 75 %)" in choice.factor.flags[0]


def test_c_by_age_from_the_typical_breast_table(c_tables: CTables) -> None:
    choice = c_tables.choose(0.30, 40, age_years=55)
    assert choice.factor.value == pytest.approx(1.05)
    assert choice.glandularity_pct == 50  # dose.md: 4 cm, age 50-64 → 50 %
    assert "typical breast, age 50-64" in choice.factor.flags[0]


def test_c_by_age_without_its_table_goes_through_the_typical_glandularity(
    c_tables: CTables,
) -> None:
    # age 45 → 40-49: 4 cm → 65 % (dose.md), between the 25 % and 75 % tables (80 % of the way)
    choice = c_tables.choose(0.30, 40, age_years=45)
    assert choice.glandularity_pct == 65
    assert choice.factor.value == pytest.approx(1.2 + (0.8 - 1.2) * 0.8)
    assert "typical for age 40-49" in choice.factor.flags[0]


@pytest.mark.parametrize(
    ("age", "why"),
    [(None, "age unknown"), (35, "age 35 is outside Dance 2000's typical-breast bands")],
)
def test_c_is_one_for_an_unknown_or_young_age_and_the_basis_says_so(
    c_tables: CTables, age: int | None, why: str
) -> None:
    choice = c_tables.choose(0.30, 40, age_years=age)
    assert choice.factor.value == 1.0
    assert why in choice.factor.flags[0]
    assert choice.glandularity_pct is None


def test_a_c_table_is_never_extrapolated(c_tables: CTables) -> None:
    with pytest.raises(dance.OutsideTableError):
        c_tables.choose(0.62, 40, glandularity_pct=25)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (c_toml("glandularity", "25", "x", 1.2).replace('kind = "glandularity"', ""), "kind"),
        (c_toml("glandularity", "125", "x", 1.2), "within \\[0, 100\\]"),
        (c_toml("age", '"20-29"', "x", 1.2), "age_group must be one of"),
        (c_toml("glandularity", "25", "x", 7.0), "no glandularity correction"),
        (c_toml("glandularity", "25", "x", 1.2).replace("[2, 11]", "[11, 2]"), "increasing"),
        (c_toml("glandularity", "25", "x", 1.2).replace("source", "origin"), "source"),
    ],
)
def test_a_bad_c_table_is_refused(tmp_path: Path, text: str, why: str) -> None:
    with pytest.raises(TableError, match=why):
        load_c_table(write(tmp_path, "c.toml", text))


def test_two_c_tables_for_the_same_glandularity_are_refused(tmp_path: Path) -> None:
    paths = [
        write(tmp_path, f"c{n}.toml", c_toml("glandularity", "25", f"c{n}", 1.2)) for n in (1, 2)
    ]
    with pytest.raises(TableError, match="cover the same glandularity"):
        load_c_tables(paths)
