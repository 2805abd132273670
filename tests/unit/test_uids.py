"""Every instance UID galacto makes is under the site's root (dicom_nodes/datasets/uids.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from pydicom.uid import UID

from dicom_nodes.datasets.uids import derived_uid, new_uid, uid_prefix
from dicom_nodes.implementation import GALACTO_UID_ROOT, IMPLEMENTATION_CLASS_UID

ROOT = Path(__file__).resolve().parents[2]
SITE = "1.2.826.0.1.3680043.10.9999"
#: Where the controller's code lives (the simulators stand for other makers' equipment and
#: name their UIDs under their own roots, each saying so beside it).
OURS = ("acquisition", "device_drivers", "dicom_nodes", "dose", "storage")


def test_uids_are_under_the_given_root_and_valid() -> None:
    uid = new_uid(SITE)
    assert uid.startswith(SITE + ".") and UID(uid).is_valid
    assert new_uid(SITE + ".").startswith(SITE + ".") and new_uid(SITE) != uid
    assert derived_uid(SITE, "a", "b") == derived_uid(SITE, "a", "b") != derived_uid(SITE, "a")
    assert new_uid(None).startswith(GALACTO_UID_ROOT + ".")
    assert uid_prefix(None) == GALACTO_UID_ROOT + "."


def test_the_implementation_class_uid_is_a_constant_of_the_software() -> None:
    assert f"{GALACTO_UID_ROOT}.0.1" == IMPLEMENTATION_CLASS_UID


def test_only_the_uid_module_calls_generate_uid() -> None:
    callers = []
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "dicom_nodes/datasets/uids.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "generate_uid":
                    callers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not callers, f"make instance UIDs with dicom_nodes.datasets.uids: {callers}"
