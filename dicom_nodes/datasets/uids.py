"""Instance UIDs galacto makes: every one under the site's root (PS3.5 §9, ``site.uid_root``).

Study, series, SOP, MPPS, irradiation event and commitment transaction UIDs all come from
:func:`new_uid` (random) or :func:`derived_uid` (the same parts give the same UID, so a
restart that builds an object again gives it the same identity). The site's root is the
organisation's; galacto's own root (:data:`~dicom_nodes.implementation.GALACTO_UID_ROOT`) is the
default ``site.uid_root`` and the root of the Implementation Class UID, which names the software
and is a constant (:data:`~dicom_nodes.implementation.IMPLEMENTATION_CLASS_UID`).
"""

from __future__ import annotations

from pydicom.uid import generate_uid

from dicom_nodes.implementation import GALACTO_UID_ROOT


def uid_prefix(uid_root: str | None) -> str:
    """``uid_root`` as the prefix ``generate_uid`` wants (one trailing dot); galacto's own
    root when none is given."""
    return (uid_root or GALACTO_UID_ROOT).rstrip(".") + "."


def new_uid(uid_root: str | None) -> str:
    """A new random UID under ``uid_root``."""
    return str(generate_uid(prefix=uid_prefix(uid_root)))


def derived_uid(uid_root: str | None, *parts: str) -> str:
    """A UID under ``uid_root`` derived from ``parts``: the same parts give the same UID."""
    return str(generate_uid(prefix=uid_prefix(uid_root), entropy_srcs=list(parts)))
