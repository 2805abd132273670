"""Is the image's Pixel Data whole? (issue 12 §2) — and what it shows, as a digest (§1).

A C-STORE whose dataset was cut inside its Pixel Data, or an image without Pixel Data, must not
be acknowledged: the unit would delete its good copy. :func:`check_pixel_data` reads only the
element's header and item headers (never the pixels):

- native (uncompressed) Pixel Data must be Rows × Columns × Samples per Pixel × Number of
  Frames × Bits Allocated / 8 bytes long (Bits Allocated 1: that many bits, rounded up to
  bytes), plus the one padding byte of an odd length, and the file must hold all of it;
- encapsulated Pixel Data must be a well-formed fragment sequence (PS3.5 A.4): items
  (FFFE,E000) — a Basic Offset Table, then at least one fragment per frame — ended by a
  Sequence Delimitation Item (FFFE,E0DD), all inside the file.

:func:`pixel_digest` is the SHA-256 of the decoded pixel values (native data in little-endian
byte order, whatever the transfer syntax the unit chose); compressed data is not decoded (that
would need codecs we do not ship): its digest is that of the transfer syntax and the fragments,
so a compressed resend is "the same pixels" only in the same transfer syntax.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

PIXEL_DATA = 0x7FE00010
ITEM = (0xFFFE, 0xE000)
SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)
UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV"}
_UV = b"UV"


class PixelDataError(ValueError):
    """The image's Pixel Data is missing, short, or not a well-formed fragment sequence."""


@dataclass(frozen=True)
class PixelExtent:
    """Where the Pixel Data value is in the file and how it is encoded."""

    value_offset: int
    length: int  # UNDEFINED_LENGTH when encapsulated
    little_endian: bool


def expected_length(header: Dataset) -> int:
    """Bytes of native Pixel Data the header describes (without the padding byte)."""
    try:
        rows, columns = int(header.Rows), int(header.Columns)
        bits = int(header.BitsAllocated)
        samples = int(header.get("SamplesPerPixel", 1) or 1)
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise PixelDataError("Rows, Columns or Bits Allocated missing or unreadable") from exc
    if min(rows, columns, bits, samples, frames) < 1:
        raise PixelDataError("Rows, Columns, Bits Allocated, Samples or Frames not positive")
    return math.ceil(rows * columns * samples * frames * bits / 8)


def _transfer_syntax(header: Dataset) -> UID:
    return UID(str(header.file_meta.TransferSyntaxUID))


def read_header(path: Path, defer_size: str) -> tuple[Dataset, int]:
    """The dataset up to its Pixel Data (``stop_before_pixels``: the pixels are never read)
    and the file offset where reading stopped: the Pixel Data element, if there is one."""
    with path.open("rb") as fp:
        header = dcmread(fp, stop_before_pixels=True, defer_size=defer_size)
        return header, fp.tell()


def locate(path: Path, header: Dataset, start: int) -> PixelExtent | None:
    """The Pixel Data element at file offset ``start`` (None: the file has none there)."""
    syntax = _transfer_syntax(header)
    with path.open("rb") as fp:
        fp.seek(start)
        head = fp.read(12)
    if len(head) < 8:
        return None
    little = syntax.is_little_endian
    order = "<" if little else ">"
    group, element = struct.unpack(f"{order}HH", head[:4])
    if (group << 16) | element != PIXEL_DATA:
        return None
    if syntax.is_implicit_VR:
        (length,) = struct.unpack(f"{order}L", head[4:8])
        return PixelExtent(start + 8, length, little)
    vr = head[4:6]
    if vr in _LONG_VRS or vr == _UV:
        if len(head) < 12:
            raise PixelDataError("Pixel Data element header cut off")
        (length,) = struct.unpack(f"{order}L", head[8:12])
        return PixelExtent(start + 12, length, little)
    (length,) = struct.unpack(f"{order}H", head[6:8])
    return PixelExtent(start + 8, length, little)


def check_pixel_data(path: Path, header: Dataset, start: int) -> None:
    """Raise :class:`PixelDataError` unless the image's Pixel Data is whole (module docstring);
    ``start`` is where :func:`read_header` stopped."""
    syntax = _transfer_syntax(header)
    if syntax == DeflatedExplicitVRLittleEndian:  # the file is compressed as a whole
        whole = dcmread(path)
        if "PixelData" not in whole:
            raise PixelDataError("an image without Pixel Data")
        _check_native_length(len(whole.PixelData), expected_length(header))
        return
    extent = locate(path, header, start)
    if extent is None:
        raise PixelDataError("an image without Pixel Data")
    size = os.path.getsize(path)
    if extent.length != UNDEFINED_LENGTH:
        if syntax.is_encapsulated:
            raise PixelDataError("compressed Pixel Data must be encapsulated (undefined length)")
        _check_native_length(extent.length, expected_length(header))
        if extent.value_offset + extent.length > size:
            raise PixelDataError(
                f"Pixel Data cut off: {size - extent.value_offset} of {extent.length} bytes"
            )
        return
    if not syntax.is_encapsulated:
        raise PixelDataError("native Pixel Data with an undefined length")
    frames = int(header.get("NumberOfFrames", 1) or 1)
    with path.open("rb") as fp:
        fp.seek(extent.value_offset)
        fragments = sum(1 for _ in _fragments(fp, size, extent.little_endian))
    if fragments - 1 < frames:  # the first item is the Basic Offset Table
        raise PixelDataError(f"{max(fragments - 1, 0)} fragment(s) for {frames} frame(s)")


def _check_native_length(actual: int, expected: int) -> None:
    if actual not in (expected, expected + expected % 2):
        raise PixelDataError(f"Pixel Data is {actual} bytes, the header describes {expected}")


def _fragments(fp: BinaryIO, size: int, little: bool) -> list[tuple[int, int]]:
    """(offset, length) of every item up to the Sequence Delimitation Item."""
    order = "<" if little else ">"
    items: list[tuple[int, int]] = []
    while True:
        head = fp.read(8)
        if len(head) < 8:
            raise PixelDataError("encapsulated Pixel Data cut off (no sequence delimiter)")
        group, element, length = struct.unpack(f"{order}HHL", head)
        if (group, element) == SEQUENCE_DELIMITER:
            if length != 0:
                raise PixelDataError("malformed sequence delimiter in Pixel Data")
            return items
        if (group, element) != ITEM or length == UNDEFINED_LENGTH:
            raise PixelDataError(f"malformed fragment item ({group:04X},{element:04X})")
        offset = fp.tell()
        if offset + length > size:
            raise PixelDataError("encapsulated Pixel Data cut off inside a fragment")
        items.append((offset, length))
        fp.seek(length, io.SEEK_CUR)


def pixel_digest(path: Path) -> str:
    """SHA-256 of the decoded pixel values (see the module docstring); "" without pixels."""
    ds = dcmread(path)
    if "PixelData" not in ds:
        return ""
    syntax = _transfer_syntax(ds)
    data: bytes = ds.PixelData
    digest = hashlib.sha256()
    if syntax.is_encapsulated:
        digest.update(str(syntax).encode() + b"\0" + data)
        return digest.hexdigest()
    data = data[: expected_length(ds)]
    if not syntax.is_little_endian and int(ds.BitsAllocated) > 8:
        width = int(ds.BitsAllocated) // 8
        swapped = bytearray(len(data))
        for i in range(width):
            swapped[i::width] = data[width - 1 - i :: width]
        data = bytes(swapped)
    digest.update(data)
    return digest.hexdigest()
