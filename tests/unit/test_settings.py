"""Configuration: precedence, validation messages naming the setting, docs kept complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from acquisition.settings import ConfigError, iter_settings, load, redacted
from acquisition.settings_docs import MARKDOWN_PATH, TOML_PATH, render_markdown, render_toml

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_load_without_a_file() -> None:
    config = load(environ={})
    assert config.injector.baud == 19200
    assert config.injector.safe_timeout_s == 2


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[injector]\nbaud = 9600\naddress = 3\nsyringe = "3ml"\n')
    env = {"GALACTO_INJECTOR_BAUD": "2400", "GALACTO_INJECTOR_ADDRESS": "4"}
    config = load(file, environ=env, overrides={"injector.baud": "1200"})
    assert config.injector.baud == 1200  # command line
    assert config.injector.address == 4  # environment
    assert config.injector.syringe == "3ml"  # file
    assert config.injector.rate_ml_min == 0.3  # default


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"env": {"GALACTO_INJECTOR_BAUD": "1234"}}, "injector.baud: expected one of"),
        ({"env": {"GALACTO_INJECTOR_ADDRESS": "x"}}, "injector.address: expected an integer"),
        ({"file": "[injector]\nrate_ml_min = 5.0\n"}, "injector.rate_ml_min: must be at most"),
        ({"file": "[injector]\nnope = 1\n"}, "injector.nope: unknown setting"),
        (
            {"file": '[dicom]\nstation_name = "Radiology room 4, east wing"\n'},
            "dicom.station_name: must be at most 16 characters",
        ),
        ({"env": {"GALACTO_RIS_AE_TITLE": "A" * 17}}, "ris.ae_title: must be at most 16"),
        ({"file": "[injector\n"}, "not valid TOML"),
        ({"overrides": {"pacs.storage_commitment": "maybe"}}, "pacs.storage_commitment"),
        (
            {"overrides": {"injector.pressure_warning_kpa": "200"}},
            "injector.pressure_warning_kpa < injector.pressure_adjustment_kpa",
        ),
    ],
)
def test_bad_value_names_the_setting(tmp_path: Path, source: dict, message: str) -> None:
    path = None
    if "file" in source:
        path = tmp_path / "bad.toml"
        path.write_text(source["file"])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load(path, environ=source.get("env", {}), overrides=source.get("overrides"))


def test_env_origin_is_named() -> None:
    with pytest.raises(ConfigError, match="from environment GALACTO_INJECTOR_BAUD"):
        load(environ={"GALACTO_INJECTOR_BAUD": "7"})


def test_secrets_are_redacted() -> None:
    config = load(environ={"GALACTO_SITE_PSEUDONYM_SECRET": "hunter2"})
    assert config.site.pseudonym_secret == "hunter2"
    assert redacted(config)["site.pseudonym_secret"] == "***"
    assert "hunter2" not in repr(redacted(config))


def test_list_setting_from_env() -> None:
    config = load(environ={"GALACTO_DICOM_ALLOWED_CALLING_AES": "MG01, MG02"})
    assert config.dicom.allowed_calling_aes == ("MG01", "MG02")


def test_every_setting_is_declared_with_help() -> None:
    infos = list(iter_settings())
    assert len({i.key for i in infos}) == len(infos)
    assert all(i.help.strip() for i in infos)


def test_configuration_reference_is_complete_and_current() -> None:
    text = MARKDOWN_PATH.read_text(encoding="utf-8")
    for info in iter_settings():
        assert f"`{info.key}`" in text, f"{info.key} missing from docs/configuration.md"
    assert text == render_markdown(), (
        "docs/configuration.md is stale: python -m acquisition.settings_docs"
    )


def test_default_toml_is_complete_current_and_loads() -> None:
    assert TOML_PATH.read_text(encoding="utf-8") == render_toml(), (
        "config/default.toml is stale: python -m acquisition.settings_docs"
    )
    load(TOML_PATH, environ={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[dicom]\nallowed_calling_aes = "MG_SIM"\n', "dicom.allowed_calling_aes: expected a list"),
        ('[dicom]\nfsync_objects = "yes"\n', "dicom.fsync_objects: expected true or false"),
        ("[dicom]\nfsync_objects = 1\n", "dicom.fsync_objects: expected true or false"),
        ('[dicom]\nport = "104"\n', "dicom.port: expected an integer"),
        ("[dicom]\nallowed_calling_aes = [1, 2]\n", "dicom.allowed_calling_aes: expected a list"),
    ],
)
def test_a_toml_value_of_the_wrong_type_is_named_not_coerced(
    tmp_path: Path, text: str, message: str
) -> None:
    file = tmp_path / "c.toml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load(file, environ={})
    assert str(file) in str(info.value)
    assert "\n" not in str(info.value)


def test_text_from_the_environment_and_the_command_line_is_still_parsed() -> None:
    config = load(
        environ={"GALACTO_DICOM_ALLOWED_CALLING_AES": "MG_SIM, MG2"},
        overrides={"dicom.fsync_objects": "yes", "dicom.port": "104"},
    )
    assert config.dicom.allowed_calling_aes == ("MG_SIM", "MG2")
    assert config.dicom.fsync_objects is True
    assert config.dicom.port == 104


def test_a_file_that_is_not_utf8_gets_one_line_naming_it(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_bytes('[site]\nname = "Radiologie Hôpital"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load(file, environ={})
    message = str(info.value)
    assert str(file) in message and "not UTF-8" in message and "line 2" in message
    assert "\n" not in message


def test_the_witness_must_not_sit_beside_the_database(tmp_path: Path) -> None:
    overrides = {
        "database.path": str(tmp_path / "galacto.db"),
        "site.journal_witness": str(tmp_path / "witness.log"),
    }
    with pytest.raises(ConfigError, match=r"site\.journal_witness: must be in another folder"):
        load(environ={}, overrides=overrides)
    overrides["site.journal_witness"] = str(tmp_path / "elsewhere" / "witness.log")
    assert load(environ={}, overrides=overrides).site.journal_witness


def test_reserved_slots_must_leave_room_for_the_others() -> None:
    with pytest.raises(ConfigError, match=r"dicom\.max_associations: must exceed the 8 slots"):
        load(environ={}, overrides={"dicom.max_associations": "8"})


def test_the_fallback_character_set_must_be_a_defined_term() -> None:
    assert load(environ={}, overrides={"ris.fallback_character_set": "ISO_IR 192"})
    with pytest.raises(ConfigError, match=r"ris\.fallback_character_set: not a Specific"):
        load(environ={}, overrides={"ris.fallback_character_set": "UTF-8"})
