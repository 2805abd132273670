"""DIMSE status codes our SCPs answer with, as tables (PS3.7 Annex C, PS3.4 B.2.3 and F.7.2).

Each code is named once here; handlers return these names, and tests and the conformance
statement read the same tables. Interpreting a peer's status goes through
:func:`pynetdicom.status.code_to_category`, never through hand-written ranges.
"""

from __future__ import annotations

from enum import IntEnum

from pydicom.dataset import Dataset


class MppsStatus(IntEnum):
    """N-CREATE / N-SET statuses of the MPPS SCP (PS3.7 C.4.2, C.4.3; PS3.4 Table F.7.2-2)."""

    SUCCESS = 0x0000
    NO_SUCH_ATTRIBUTE = 0x0105  # N-SET of an attribute not created at N-CREATE
    INVALID_ATTRIBUTE_VALUE = 0x0106  # e.g. N-CREATE with a status other than IN PROGRESS
    PROCESSING_FAILURE = 0x0110  # with ErrorID A710: the step is final; without: write failed
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121


class StoreStatus(IntEnum):
    """C-STORE statuses of the Storage SCP (PS3.4 Table B.2-1)."""

    SUCCESS = 0x0000
    #: Stored and logged, but some dose value could not be read (flagged for review).
    WARNING_DATASET_DOES_NOT_MATCH = 0xB007
    OUT_OF_RESOURCES = 0xA700  # disk or database failure: nothing acknowledged
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000  # the header cannot be parsed
    #: Cxxx "Cannot understand" (PS3.4 B.2.3) with our own meanings, each with an Error Comment:
    SOP_INSTANCE_REUSED = 0xC010  # another object is stored under this SOP Instance UID
    PIXEL_DATA_INCOMPLETE = 0xC011  # missing, short or malformed Pixel Data
    VALUE_TOO_LONG = 0xC012  # a value longer than its VR allows


#: PS3.4 Table F.7.2-2: the one specialised N-SET failure of the MPPS SOP class.
FINAL_STATE_ERROR_ID = 0xA710
FINAL_STATE_ERROR_COMMENT = "Performed Procedure Step Object may no longer be updated"


def status_dataset(
    code: int,
    *,
    error_comment: str = "",
    error_id: int | None = None,
    attribute_tags: list[int] | None = None,
) -> Dataset:
    """A status Dataset for a handler's response (PS3.7 C.4: Error Comment, Error ID, tags).

    ErrorComment is LO (64 characters) and must never carry patient identifiers.
    """
    status = Dataset()
    status.Status = int(code)
    if error_comment:
        status.ErrorComment = error_comment[:64]
    if error_id is not None:
        status.ErrorID = error_id
    if attribute_tags:
        status.AttributeIdentifierList = list(attribute_tags)
    return status


def final_state_status() -> Dataset:
    """0110H + A710: N-SET after COMPLETED or DISCONTINUED (PS3.4 F.7.2.2, Table F.7.2-2)."""
    return status_dataset(
        MppsStatus.PROCESSING_FAILURE,
        error_comment=FINAL_STATE_ERROR_COMMENT,
        error_id=FINAL_STATE_ERROR_ID,
    )
