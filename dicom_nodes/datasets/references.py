"""SOP Instance references (PS3.3 Table 10-11, SOP Instance Reference Macro).

One item names an object by its SOP Class UID and SOP Instance UID: the Referenced Image and
Non-Image sequences of an MPPS's Performed Series, the Referenced Study Sequence of its
Scheduled Step, the Referenced Performed Procedure Step Sequence of images and SRs, and the
Referenced (or Failed) SOP Sequence of a Storage Commitment request or result all carry it.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset

#: Modality Performed Procedure Step SOP Class (PS3.4 F.7), named by the Referenced Performed
#: Procedure Step Sequence of images and SRs.
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"


def sop_reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """One item: Referenced SOP Class UID and Referenced SOP Instance UID."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def sop_references(pairs: Iterable[tuple[str, str]]) -> list[Dataset]:
    """One item per ``(SOP Class UID, SOP Instance UID)``, in order."""
    return [sop_reference(sop_class, sop_instance) for sop_class, sop_instance in pairs]
