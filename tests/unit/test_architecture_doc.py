"""docs/architecture.md tells the truth: its package diagram is the import graph's."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "scripts/architecture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_diagram_is_the_import_graph() -> None:
    arch = generator()
    page = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    assert arch.in_doc(page) == arch.render(), (
        "docs/architecture.md is out of date: run python scripts/architecture.py --write"
    )


def test_the_packages_depend_one_way() -> None:
    edges = generator().edges()
    assert not {(a, b) for a, b in edges if (b, a) in edges}
    assert not any(a in ("dose", "storage") for a, _ in edges)  # the leaves


def test_the_generator_sees_an_import(tmp_path: Path) -> None:
    arch = generator()
    assert "dicom_nodes.hospital.outbox" in arch.imports(ROOT / "dicom_nodes/hospital/mpps_scu.py")
    assert arch.box("dicom_nodes.hospital.outbox") == "dicom_nodes.hospital"
    assert arch.box("acquisition.exam.service") == "acquisition"
