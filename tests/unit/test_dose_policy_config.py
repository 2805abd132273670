"""The [dose] settings build the controller's checks; a bad file is a named setting error."""

from __future__ import annotations

from pathlib import Path

import pytest

from acquisition.dose_policy import dose_policy, qa_patterns
from acquisition.settings import ConfigError, load
from simulators.room import UNIT_HVL_TABLE


def test_the_default_configuration_has_the_published_levels_and_no_tables() -> None:
    policy = dose_policy(load(None, environ={}))
    assert policy.tolerance_pct == 25.0
    assert policy.tables.hvl == () and policy.tables.c.tables == ()
    assert {"euref-acceptable", "uk-ndrl"} <= {level.id for level in policy.levels.levels}
    assert qa_patterns(load(None, environ={})).patient[0] == "*PHANTOM*"


def test_tables_and_tolerance_come_from_the_settings() -> None:
    config = load(
        None,
        environ={"GALACTO_DOSE_CROSS_CHECK_TOLERANCE": "15"},
        overrides={"dose.hvl_tables": str(UNIT_HVL_TABLE)},
    )
    policy = dose_policy(config)
    assert policy.tolerance_pct == 15.0
    assert [t.model for t in policy.tables.hvl] == ["SIM-MG W/Rh"]


@pytest.mark.parametrize(
    ("setting", "text", "message"),
    [
        (
            "dose.hvl_tables",
            '[unit]\nmodel = "M"\n[hvl_mm_al."W/Rh"]\n"28" = 0.5\n',
            "dose.hvl_tables: .*manufacturer must be a non-empty string",
        ),
        ("dose.c_tables", 'kind = "x"\n', "dose.c_tables: .*kind must be"),
        ("dose.reference_levels_file", "[[level]]\nid = 3\n", "dose.reference_levels_file"),
    ],
)
def test_a_bad_file_names_its_setting(
    tmp_path: Path, setting: str, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        dose_policy(load(None, environ={}, overrides={setting: str(path)}))


def test_a_tolerance_given_as_a_fraction_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"dose\.cross_check_tolerance: must be at least 1"):
        load(None, environ={}, overrides={"dose.cross_check_tolerance": "0.25"})
