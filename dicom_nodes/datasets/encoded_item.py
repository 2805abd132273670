"""Datasets read straight from their encoded elements, without a pydicom Dataset per item.

:class:`EncodedItem` is what the dose extraction (:mod:`dicom_nodes.datasets.dose_extract`)
reads an object through: the part of pydicom's Dataset interface it uses, every value decoded
by pydicom's own converters, and the items of a sequence split from its encoded value (PS3.5
§7.5) instead of being built as pydicom Datasets — most of the cost of reading an RDSR's content
tree (tests/unit/test_dose_extract_encodings.py proves the records equal those of the Dataset in
every transfer syntax and character set a unit may use).
"""

from __future__ import annotations

import io
import struct
from collections.abc import MutableSequence
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.values import convert_SQ, convert_value


class EncodedItem:
    """A dataset, or an item of one of its sequences, read straight from its encoded elements.

    It offers the part of pydicom's :class:`~pydicom.dataset.Dataset` interface this module
    reads — ``keyword in item``, ``item.get(keyword)``, ``item[keyword].value`` — and decodes
    each value with pydicom's own converters (:func:`pydicom.values.convert_value`, the
    value's VR from the data dictionary when the transfer syntax is implicit, or the element
    came as UN) the first time it is read. A sequence's items are split from its encoded
    value and their elements read by pydicom's :func:`~pydicom.filereader.data_element_generator`,
    without building a pydicom Dataset for each item: that is most of the cost of reading an
    RDSR's content tree (about 265 items for 4 events: 13 ms through Datasets, 3 ms here).
    What pydicom had already decoded (a value read before, a sequence of undefined length,
    which it parses as it reads the file) is taken as it is; a sequence whose items have
    undefined lengths is left to pydicom (:func:`pydicom.values.convert_SQ`).
    """

    __slots__ = ("_elements", "_encodings", "_implicit", "_little", "_values")

    def __init__(
        self,
        elements: dict[int, RawDataElement | DataElement],
        *,
        implicit: bool,
        little: bool,
        encodings: str | MutableSequence[str],
    ) -> None:
        self._elements = elements
        self._implicit, self._little = implicit, little
        charset = elements.get(_SPECIFIC_CHARACTER_SET)
        self._encodings = encodings
        if charset is not None:  # an item may name its own (PS3.5 §6.1.2.5.4)
            self._encodings = convert_encodings(self._decoded(_SPECIFIC_CHARACTER_SET, charset))
        self._values: dict[int, Any] = {}

    @classmethod
    def of(cls, ds: Dataset | EncodedItem) -> EncodedItem:
        """``ds`` read through its encoded elements (itself if it is one already)."""
        if isinstance(ds, EncodedItem):
            return ds
        implicit, little = ds.original_encoding
        # the tags, not ``for element in ds``: iterating a Dataset decodes every element
        elements = {int(tag): ds.get_item(tag) for tag in ds.keys()}  # noqa: SIM118
        return cls(
            elements,  # type: ignore[arg-type]  # get_item of a key of ds is never None
            implicit=bool(implicit),
            little=little is not False,
            encodings=ds.original_character_set,
        )

    def __contains__(self, keyword: str) -> bool:
        return _tag(keyword) in self._elements

    def get(self, keyword: str, default: Any = None) -> Any:
        tag = _tag(keyword)
        if tag not in self._elements:
            return default
        return self._value(tag)

    def __getitem__(self, keyword: str) -> _Decoded:
        tag = _tag(keyword)
        if tag not in self._elements:
            raise KeyError(keyword)
        return _Decoded(self._value(tag))

    def _value(self, tag: int) -> Any:
        if tag not in self._values:
            self._values[tag] = self._decoded(tag, self._elements[tag])
        return self._values[tag]

    def _decoded(self, tag: int, element: RawDataElement | DataElement) -> Any:
        if not isinstance(element, RawDataElement):
            return element.value  # decoded by pydicom already
        vr = element.VR
        if vr is None or vr == "UN":  # implicit VR, or a known element sent as UN
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = "UN"
        if vr == "SQ":
            return self._items(element.value or b"")
        return convert_value(vr, element, self._encodings)

    def _items(self, encoded: bytes) -> list[EncodedItem] | list[Dataset]:
        """The items of a sequence's encoded value (PS3.5 §7.5: an Item tag, the item's
        length, its elements)."""
        header = struct.Struct("<HHL" if self._little else ">HHL")
        items: list[EncodedItem] = []
        position = 0
        while position < len(encoded):
            group, element, length = header.unpack_from(encoded, position)
            if (group, element) != (0xFFFE, 0xE000) or length == _UNDEFINED_LENGTH:
                # an item of undefined length (or something else): pydicom reads it
                return list(
                    convert_SQ(encoded, self._implicit, self._little, list(self._encodings))
                )
            position += header.size
            body = io.BytesIO(encoded[position : position + length])
            position += length
            elements = {
                int(e.tag): e
                for e in data_element_generator(
                    body, self._implicit, self._little, encoding=self._encodings
                )
            }
            items.append(
                EncodedItem(
                    elements,
                    implicit=self._implicit,
                    little=self._little,
                    encodings=self._encodings,
                )
            )
        return items


class _Decoded:
    """What ``item[keyword]`` gives: the decoded value (as a DataElement's ``.value``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_SPECIFIC_CHARACTER_SET = 0x00080005
_UNDEFINED_LENGTH = 0xFFFFFFFF
_TAGS: dict[str, int] = {}


def _tag(keyword: str) -> int:
    tag = _TAGS.get(keyword)
    if tag is None:
        found = tag_for_keyword(keyword)
        if found is None:
            raise KeyError(f"no DICOM keyword {keyword}")
        tag = _TAGS[keyword] = found
    return tag
