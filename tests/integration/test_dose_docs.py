"""The `galacto dose mgd` examples of docs/dose.md run as written and print what it shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.integration.test_records_cli import galacto

DOSE_MD = Path(__file__).resolve().parents[2] / "docs" / "dose.md"


def console_examples() -> list[tuple[list[str], list[str]]]:
    """(argv after `galacto`, expected lines) of each `$ galacto dose mgd` console block."""
    examples = []
    for block in re.findall(r"```console\n(.*?)```", DOSE_MD.read_text(), re.S):
        lines = block.splitlines()
        if lines and lines[0].startswith("$ galacto dose mgd"):
            examples.append((shlex.split(lines[0][len("$ galacto ") :]), lines[1:]))
    return examples


@pytest.mark.parametrize(("argv", "expected"), console_examples(), ids=lambda v: " ".join(v)[:40])
def test_the_calculator_examples_of_the_docs(argv: list[str], expected: list[str]) -> None:
    result = galacto(*argv)
    shown = (result.stdout or result.stderr).splitlines()
    assert shown == expected
    assert result.returncode == (0 if result.stdout else 2)


def test_the_docs_have_calculator_examples() -> None:
    assert len(console_examples()) >= 2
