"""The MPPS rule engine without a network: Table F.7.2-1 requirements, N-SET merging."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicom_nodes.status import MppsStatus
from dicom_nodes.unit_facing.mpps_scp import (
    REQUIREMENTS,
    Refusal,
    Requirement,
    check_n_create,
    merge_n_set,
)
from tests.dose_factories import Exposure, mpps_create, mpps_set

STUDY = "1.2.3"


def _code(refusal: Refusal) -> int:
    status = refusal.status
    return int(status.Status) if isinstance(status, Dataset) else int(status)


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=lambda r: r.keyword)
def test_every_required_attribute_is_checked(requirement: Requirement) -> None:
    ds = mpps_create(study_uid=STUDY)
    del ds[requirement.keyword]
    with pytest.raises(Refusal) as refused:
        check_n_create(ds)
    assert _code(refused.value) == MppsStatus.MISSING_ATTRIBUTE


def test_valid_create_passes() -> None:
    check_n_create(mpps_create(study_uid=STUDY))


def test_n_set_replaces_sequences_whole_and_keeps_the_rest() -> None:
    current = mpps_create(study_uid=STUDY)
    first = merge_n_set(current, mpps_set([Exposure(), Exposure()]))
    second = merge_n_set(first, mpps_set([Exposure()]))
    assert len(second.ExposureDoseSequence) == 1
    assert len(second.PerformedSeriesSequence[0].ReferencedImageSequence) == 1
    assert second.PatientID == "PID1"
    assert len(current.PerformedSeriesSequence) == 0  # the stored state is not mutated


def test_refusal_carries_attribute_identifier_list() -> None:
    modifications = Dataset()
    modifications.CommentsOnThePerformedProcedureStep = "x"
    with pytest.raises(Refusal) as refused:
        merge_n_set(mpps_create(study_uid=STUDY), modifications)
    status = refused.value.status
    assert isinstance(status, Dataset)
    assert status.Status == MppsStatus.NO_SUCH_ATTRIBUTE
    assert status.AttributeIdentifierList == 0x00400280
