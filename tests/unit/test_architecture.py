"""The layering of the house: a forbidden import between packages fails here (style.md §1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("acquisition", "device_drivers", "dicom_nodes", "dose", "simulators", "storage")

# package -> packages it must never import
FORBIDDEN = {
    "acquisition": {"simulators"},
    "device_drivers": {"acquisition", "simulators", "dicom_nodes"},
    "dicom_nodes": {"acquisition", "simulators", "device_drivers"},
    "simulators": {"acquisition"},
    # dose is a leaf: the record, the Dance model, plausibility, levels and totals import
    # nothing of ours, so that every other package may import them
    "dose": {"acquisition", "device_drivers", "dicom_nodes", "simulators", "storage"},
    # a leaf: every package may use it, it uses none of ours
    "storage": {"acquisition", "device_drivers", "dicom_nodes", "simulators", "dose"},
}


def imported_top_level(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def all_modules() -> list[tuple[str, Path]]:
    return [(pkg, p) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


@pytest.mark.parametrize(("package", "path"), all_modules(), ids=str)
def test_no_forbidden_import(package: str, path: Path) -> None:
    bad = sorted(
        (name, line) for name, line in imported_top_level(path) if name in FORBIDDEN[package]
    )
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: {package} must not import these"


# Inside dicom_nodes: the unit-facing SCPs and the hospital-facing SCUs never import each other,
# and the dataset builders import neither (they are pure functions over pydicom datasets).
DICOM_NODES_FORBIDDEN = {
    "dicom_nodes.unit_facing": {"dicom_nodes.hospital"},
    "dicom_nodes.hospital": {"dicom_nodes.unit_facing"},
    "dicom_nodes.datasets": {"dicom_nodes.unit_facing", "dicom_nodes.hospital"},
}


def test_every_dicom_nodes_module_is_in_a_sub_package_or_shared() -> None:
    shared = {"__init__", "compat", "implementation", "network", "status"}
    flat = {p.stem for p in (ROOT / "dicom_nodes").glob("*.py")}
    assert flat <= shared, f"put {sorted(flat - shared)} in unit_facing/, hospital/ or datasets/"


@pytest.mark.parametrize(
    ("sub", "path"),
    [
        (sub, p)
        for sub in DICOM_NODES_FORBIDDEN
        for p in sorted((ROOT / sub.replace(".", "/")).rglob("*.py"))
    ],
    ids=str,
)
def test_no_forbidden_import_inside_dicom_nodes(sub: str, path: Path) -> None:
    bad = sorted(
        m
        for m in imported_modules(path)
        if any(m == f or m.startswith(f + ".") for f in DICOM_NODES_FORBIDDEN[sub])
    )
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: {sub} must not import these"


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom simulators.injector import X\n")
    assert ("simulators", 2) in imported_top_level(module)


def test_every_package_is_checked() -> None:
    assert {pkg for pkg, _ in all_modules()} == set(PACKAGES)


# The exam's rooms (acquisition/exam/): everything but the service is importable without it, and
# the packages that only read the exam (reporting, forwarding) take its model, never its service.
EXAM_ROOMS = ("model", "record", "ledger", "injection", "exposures", "worklist", "opening")
EXAM_READERS = ("acquisition/exam_reporting.py", "acquisition/forwarding.py")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    "path",
    [f"acquisition/exam/{room}.py" for room in EXAM_ROOMS] + list(EXAM_READERS),
)
def test_the_exam_service_is_imported_only_by_those_that_run_it(path: str) -> None:
    assert "acquisition.exam.service" not in imported_modules(ROOT / path)


# No import cycle in the rooms split out of the three big classes (function-level imports count).
ACYCLIC = ("acquisition/exam", "device_drivers", "simulators")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> list[str] | None:
        if node in stack:
            return [*stack[stack.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt, [*stack, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    return next((c for c in (visit(n, []) for n in sorted(graph)) if c), None)


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_rooms() -> None:
    paths = [p for folder in ACYCLIC for p in sorted((ROOT / folder).rglob("*.py"))]
    names = {module_name(p) for p in paths}
    graph = {
        module_name(p): {m for m in imported_modules(p) if m in names and m != module_name(p)}
        for p in paths
    }
    assert find_cycle(graph) is None


def project_graph() -> dict[str, set[str]]:
    """Every module of the project -> the project's modules it imports (function-level and
    ``TYPE_CHECKING`` imports count; ``from package import module`` names the module)."""
    paths = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    names = {module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= from_import(node.module, [alias.name for alias in node.names], names)
            elif isinstance(node, ast.ImportFrom) and node.level:  # relative: resolved
                package = module_name(path).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
                found |= from_import(module, [alias.name for alias in node.names], names)
        graph[module_name(path)] = {m for m in found if m in names and m != module_name(path)}
    return graph


def from_import(module: str, imported: list[str], modules: set[str]) -> set[str]:
    """What ``from module import a, b`` depends on: the submodules it names (a package's
    ``__init__`` importing its own modules is the package pattern, not a cycle), and the module
    itself when it takes anything else from it."""
    submodules = {f"{module}.{name}" for name in imported if f"{module}.{name}" in modules}
    takes_names = len(submodules) < len(imported)
    return submodules | ({module} if takes_names else set())


def test_no_import_cycle_among_the_project_s_modules() -> None:
    assert find_cycle(project_graph()) is None


def private_names_defined(tree: ast.Module) -> set[str]:
    """The ``_names`` a module defines: functions, classes, attributes it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_")}


#: Private attributes of libraries we rely on, each in the one compat module (issue 13 §7).
LIBRARY_PRIVATES_ALLOWED_IN = {"dicom_nodes/compat.py"}


def reaches_into_private(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = private_names_defined(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") or node.attr in own:
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            continue
        found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(("package", "path"), all_modules(), ids=str)
def test_no_module_reaches_into_another_s_private_attributes(package: str, path: Path) -> None:
    if str(path.relative_to(ROOT)) in LIBRARY_PRIVATES_ALLOWED_IN:
        return
    assert not reaches_into_private(path), f"{path.relative_to(ROOT)}: {reaches_into_private(path)}"


def test_the_private_check_sees_a_reach(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f(x):\n    return x._hidden\n\ndef _mine(y):\n    return y._mine\n")
    assert reaches_into_private(module) == ["2: x._hidden"]


#: pynetdicom's internals galacto relies on; only dicom_nodes/compat.py may name them.
PYNETDICOM_INTERNALS = {"dul", "dimse", "msg_queue", "to_provider_queue", "send_pdu"}


@pytest.mark.parametrize(("package", "path"), all_modules(), ids=str)
def test_pynetdicom_s_internals_are_reached_only_from_compat(package: str, path: Path) -> None:
    if path == ROOT / "dicom_nodes/compat.py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    reached = sorted(
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in PYNETDICOM_INTERNALS
    )
    imports = [m for m in imported_modules(path) if m.startswith("pynetdicom.dimse_messages")]
    assert not reached and not imports, f"{path.relative_to(ROOT)}: {reached + imports}"
