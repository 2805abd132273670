"""Render the configuration reference and the commented default TOML from the declarations.

``python -m acquisition.settings_docs`` rewrites ``config/default.toml`` and
``docs/configuration.md``; ``tests/unit/test_settings.py`` fails when either is stale.
"""

from __future__ import annotations

import itertools
import json
import sys
import typing
from pathlib import Path
from typing import Any

from acquisition.settings import SettingInfo, iter_settings

ROOT = Path(__file__).resolve().parent.parent
TOML_PATH = ROOT / "config" / "default.toml"
MARKDOWN_PATH = ROOT / "docs" / "configuration.md"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _type_label(info: SettingInfo) -> str:
    if typing.get_origin(info.type) is tuple:
        return "list of strings"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[info.type]


def _bounds(info: SettingInfo) -> str:
    parts = []
    if info.choices is not None:
        parts.append("one of " + ", ".join(f"`{c}`" for c in info.choices))
    if info.minimum is not None:
        parts.append(f"≥ {info.minimum:g}")
    if info.maximum is not None and info.type is str:
        parts.append(f"at most {info.maximum:g} characters")
    elif info.maximum is not None:
        parts.append(f"≤ {info.maximum:g}")
    return "; ".join(parts)


def render_toml() -> str:
    lines = [
        "# galacto default configuration: every setting, with its default and meaning.",
        "# Generated from acquisition/settings.py by `python -m acquisition.settings_docs`.",
        "# Precedence: command line (--set section.name=value)",
        "# > environment (GALACTO_SECTION_NAME)",
        "# > this file > built-in defaults.",
    ]
    for section, infos in itertools.groupby(iter_settings(), key=lambda i: i.section):
        lines += ["", f"[{section}]"]
        for info in infos:
            bounds = _bounds(info)
            lines.append(f"# {info.help}" + (f" ({bounds})" if bounds else ""))
            lines.append(f"{info.name} = {_toml_value(info.default)}")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `acquisition/settings.py` by `python -m acquisition.settings_docs`;",
        "a test fails when this page and the declarations disagree.",
        "",
        "Values come from, in increasing precedence: the defaults below, a TOML file",
        "(`--config FILE`; `config/default.toml` lists every setting), the environment",
        "(`GALACTO_<SECTION>_<NAME>`), and the command line (`--set section.name=value`, and each",
        "command's own flags). A bad value stops start-up with a message naming the setting and",
        "where the value came from, e.g.",
        "`injector.baud: expected one of 300, 1200, 2400, 9600, 19200, got '1234' "
        "(from environment GALACTO_INJECTOR_BAUD)`.",
        "Secrets are redacted (`***`) wherever the effective configuration is logged; set them",
        "from the environment, never in a committed file.",
    ]
    header = ["| setting | type | default | environment | meaning |", "|---|---|---|---|---|"]
    for section, infos in itertools.groupby(iter_settings(), key=lambda i: i.section):
        lines += ["", f"## [{section}]", "", *header]
        for info in infos:
            bounds = _bounds(info)
            secret = " **Secret.**" if info.secret else ""
            meaning = info.help + (f" ({bounds})" if bounds else "") + secret
            lines.append(
                f"| `{info.key}` | {_type_label(info)} | `{_toml_value(info.default)}` | "
                f"`{info.env}` | {meaning} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    TOML_PATH.write_text(render_toml(), encoding="utf-8")
    MARKDOWN_PATH.write_text(render_markdown(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
