"""Values longer than their VR allows (PS3.5 Table 6.2-1), found without trusting the sender.

A unit (or anyone on the network) may send a 70 KB Long String: kept as is it would reach the
database, the journal, the RIS and the PACS. :func:`overlong_elements` names every element of a
dataset, at any depth, with a value longer than its VR's maximum. The table is pydicom's
(``pydicom.valuerep.MAX_VALUE_LEN``) completed with the VRs it leaves out: AS, DA, DT, TM (16,
which admits the legacy ``HH:MM:SS.frac`` form) and PN (64 characters per component group). A
value is measured as decoded text (characters, after the padding space), each value of a
multi-valued element on its own. An element of a length-limited VR larger than
:data:`LARGEST_CHECKED_BYTES` in all is not even decoded: no legitimate header value of the
objects we accept comes near it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import MAX_VALUE_LEN

MAX_LENGTHS: dict[str, int] = {**MAX_VALUE_LEN, "AS": 4, "DA": 8, "DT": 26, "TM": 16}
PN_GROUP_MAX = 64
LARGEST_CHECKED_BYTES = 1024 * 1024


def _limit(vr: str) -> int | None:
    return PN_GROUP_MAX if vr == "PN" else MAX_LENGTHS.get(vr)


def _too_long(vr: str, value: object) -> bool:
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    limit = _limit(vr)
    assert limit is not None
    for one in values:
        if one is None:
            continue
        text = str(one).rstrip(" \x00")
        parts = text.split("=") if vr == "PN" else [text]
        if any(len(part) > limit for part in parts):
            return True
    return False


class Overlong(NamedTuple):
    """An element whose value exceeds its VR's maximum; ``str()`` names it
    ``(gggg,eeee) Keyword`` (never its value)."""

    tag: int
    name: str

    def __str__(self) -> str:
        return self.name


def overlong_elements(ds: Dataset) -> list[Overlong]:
    """Every element, at any depth, whose value exceeds its VR's maximum."""
    return list(_walk(ds))


def _walk(ds: Dataset) -> Iterator[Overlong]:
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = _vr(tag, raw)
        if vr == "SQ":
            for item in ds[tag].value or []:
                yield from _walk(item)
            continue
        if _limit(vr) is None:
            continue
        if isinstance(raw, RawDataElement) and raw.length > LARGEST_CHECKED_BYTES:
            yield _name(tag)
            continue
        if _too_long(vr, ds[tag].value):
            yield _name(tag)


def _vr(tag: int, raw: DataElement | RawDataElement | None) -> str:
    """The element's VR; the dictionary's for implicit VR and for UN (PS3.5 6.2.2)."""
    vr = str(raw.VR) if raw is not None and raw.VR else ""
    if vr in ("", "UN"):
        try:
            return str(dictionary_VR(tag))
        except KeyError:
            return vr
    return vr


def _name(tag: int) -> Overlong:
    return Overlong(int(tag), f"{Tag(tag)} {keyword_for_tag(tag) or 'private'}")
