"""Storage SCU toward the PACS: one C-STORE of a kept file, in a syntax the PACS accepted.

The outbox (:mod:`dicom_nodes.hospital.outbox`) sends each file as it is (chunked, never re-encoded)
when the PACS accepted the file's own transfer syntax. For each SOP class it also proposes a
second presentation context with the **lossless** syntaxes galacto can write
(:data:`LOSSLESS_ALTERNATIVES`: Explicit VR Little Endian, JPEG-LS lossless, JPEG 2000
lossless, RLE lossless, Implicit VR Little Endian; PS3.5 Annex A, PS3.8 9.3.2.2). When the
PACS refused the file's own syntax, the object is re-encoded in the syntax the PACS chose from
those — decided from the presentation contexts it accepted, never guessed — with pydicom's own
encoders, **keeping its SOP Instance UID** (the same object, another encoding: PS3.5 8.2). A
mammogram is never converted to a lossy syntax. When the PACS accepted none, the message fails
for good (the console and the journal say so) instead of being retried forever.

Verification is proposed too, so that an association stands even when the PACS accepts
nothing for the objects of a round: each object then gets its own verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_nodes.hospital.outbox import (
    PACS,
    Message,
    Outbox,
    OutboxError,
    Outcome,
    SendResult,
)
from dicom_nodes.hospital.scu import category, status_of

log = logging.getLogger(__name__)

DONE = Outcome.DONE
RETRY = Outcome.RETRY
TERMINAL = Outcome.TERMINAL
#: The outbox's message kind of a C-STORE of a kept file.
C_STORE = "c_store"

#: The lossless syntaxes an object may be re-encoded in, in order of preference.
LOSSLESS_ALTERNATIVES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
    ImplicitVRLittleEndian,
)
#: The alternatives for an object without pixel data (an SR document): native encodings only.
NATIVE_ALTERNATIVES: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: SOP classes without pixel data: the Structured Reporting storage classes (PS3.4 B.5).
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."

#: C-STORE failure ranges that retrying cannot change (PS3.4 Table B.2-1), as (mask, value):
#: A9xxH "Data Set does not match SOP Class" and Cxxx "Cannot understand" — the PACS read the
#: object and refused it. Out of Resources (A7xxH) and everything else is retried.
STORE_TERMINAL_RANGES: tuple[tuple[int, int], ...] = ((0xFF00, 0xA900), (0xF000, 0xC000))


class ConversionError(ValueError):
    """The object cannot be re-encoded in the syntax the PACS accepted."""


def store_outcome(status: int) -> str:
    """Classify a C-STORE response (PS3.4 B.2.3)."""
    if category(status) in ("Success", "Warning"):
        return DONE
    if any(status & mask == value for mask, value in STORE_TERMINAL_RANGES):
        return TERMINAL
    return RETRY


def alternatives_for(sop_class_uid: str) -> tuple[UID, ...]:
    """The lossless syntaxes an object of ``sop_class_uid`` may be re-encoded in."""
    if sop_class_uid.startswith(_SR_PREFIX):
        return NATIVE_ALTERNATIVES
    return LOSSLESS_ALTERNATIVES


def store_contexts(objects: Sequence[tuple[str, str | None]]) -> list[PresentationContext]:
    """The presentation contexts for ``(SOP class, file transfer syntax)`` pairs: the file's
    own syntax, then the alternatives (one context each), and Verification."""
    contexts: list[PresentationContext] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for sop_class, syntax in objects:
        own: list[str | UID] = [syntax] if syntax else list(NATIVE_ALTERNATIVES)
        others: list[str | UID] = [ts for ts in alternatives_for(sop_class) if ts not in own]
        for syntaxes in (own, others):
            key = (sop_class, tuple(syntaxes))
            if syntaxes and key not in seen:
                seen.add(key)
                contexts.append(build_context(sop_class, syntaxes))
    contexts.append(build_context(Verification))
    return contexts


@dataclass(frozen=True)
class StoreResult:
    """The outcome of one C-STORE, and what was done to make it possible (None: nothing)."""

    outcome: str
    status: int | None
    error: str | None = None
    recovery: str | None = None


def send_file(
    assoc: Association, path: Path, sop_class_uid: str, transfer_syntax_uid: str | None
) -> StoreResult:
    """C-STORE the file at ``path``: as it is when the PACS accepted its syntax, else
    re-encoded in the lossless syntax the PACS accepted (see the module docstring)."""
    accepted = [
        UID(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class_uid and cx.transfer_syntax
    ]
    own = UID(transfer_syntax_uid or "")
    if own and own in accepted:
        status = status_of(assoc.send_c_store(path))  # as kept: chunked, never re-encoded
        return StoreResult(store_outcome(status), status)
    target = next((ts for ts in alternatives_for(sop_class_uid) if ts in accepted), None)
    if target is None:
        refused = own.name if own else "its transfer syntax"
        return StoreResult(
            TERMINAL,
            None,
            f"the PACS refused {refused} and accepts no lossless syntax galacto can write for "
            f"{UID(sop_class_uid).name}",
        )
    try:
        dataset = reencode(path, target)
    except ConversionError as exc:
        return StoreResult(TERMINAL, None, str(exc))
    status = status_of(assoc.send_c_store(dataset))
    recovery = f"re-encoded from {own.name} to {target.name} (the PACS refused {own.name})"
    log.info("outbox: object %s", recovery)
    return StoreResult(store_outcome(status), status, None, recovery)


def reencode(path: Path, target: UID) -> Dataset:
    """The object at ``path`` in the lossless syntax ``target``, same SOP Instance UID.

    Raises :class:`ConversionError` for a lossy target, or pixel data pydicom cannot decode
    or encode (its message names the syntaxes, not the patient).
    """
    if target not in LOSSLESS_ALTERNATIVES:
        raise ConversionError(f"{target.name} is not a lossless syntax: a mammogram stays lossless")
    try:
        ds = dcmread(path)
        source = UID(ds.file_meta.TransferSyntaxUID)
        if source.is_compressed:
            ds.decompress(generate_instance_uid=False)
        if target.is_compressed:
            ds.compress(target, generate_instance_uid=False)
        # else: native Explicit VR LE; pynetdicom encodes it as the accepted native syntax
    except (OSError, ValueError, AttributeError, NotImplementedError, RuntimeError) as exc:
        raise ConversionError(f"cannot re-encode the object in {target.name}: {exc}") from exc
    return ds


class StoreSender:
    """The outbox's sender of C-STORE messages (toward the PACS): each kept file as it is when
    the PACS accepted its syntax, else re-encoded losslessly (:func:`send_file`)."""

    destination = PACS
    ordered = False
    alerted = True

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        outbox.register([C_STORE], self)

    def enqueue(self, path: str | Path) -> str:
        """Queue a C-STORE of the DICOM file at ``path``; returns its SOP Instance UID.

        Idempotent by SOP Instance UID: the same instance is queued once (a terminally failed
        one is queued again). The file must stay in place until it is sent (or committed).
        """
        path = Path(path).resolve()
        try:
            meta = read_file_meta_info(path)
            sop_class = str(meta.MediaStorageSOPClassUID)
            sop_instance = str(meta.MediaStorageSOPInstanceUID)
            syntax = str(meta.TransferSyntaxUID)
        except (OSError, AttributeError, ValueError, EOFError, InvalidDicomError) as exc:
            raise OutboxError(
                f"cannot queue {path.name}: not a DICOM file with meta: {exc}"
            ) from exc
        self.outbox.enqueue(
            C_STORE,
            PACS,
            sop_class,
            sop_instance,
            transfer_syntax_uid=syntax,
            file_path=str(path),
        )
        return sop_instance

    def send(self, assoc: Association, message: Message) -> SendResult:
        assert message.file_path is not None
        path = Path(message.file_path)
        if not path.exists():
            raise FileNotFoundError(2, "No such file", message.file_path)
        result = send_file(assoc, path, message.sop_class_uid, message.transfer_syntax_uid)
        return result.outcome, result.status, result.error, result.recovery

    def contexts(self, messages: Sequence[Message]) -> list[PresentationContext]:
        """Files are sent as they are (chunked, no re-encoding) when the PACS accepts their own
        syntax, with lossless alternatives beside it (:func:`store_contexts`)."""
        return store_contexts(
            list(dict.fromkeys((m.sop_class_uid, m.transfer_syntax_uid) for m in messages))
        )

    def before_round(self, now_s: float) -> None:
        """Nothing of its own."""

    def handlers(self) -> list[tuple[Any, ...]]:
        return []
