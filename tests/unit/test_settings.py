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
