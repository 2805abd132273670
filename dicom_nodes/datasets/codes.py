"""Coded concepts galacto writes and reads (PS3.3 §8.8 Code Sequence Macro, PS3.16 CIDs).

Every constant here is taken from pydicom's copy of the PS3.16 code dictionary
(``pydicom.sr.codedict.codes``), so values and meanings are the standard's, not retyped.
A :class:`Code` is a small frozen value; :meth:`Code.to_dataset` writes one Code Sequence
item and :meth:`Code.from_item` reads one back, translating legacy SNOMED-RT (``SRT``)
designators to their SNOMED CT (``SCT``) equivalents so that older units that still send
``R-10242`` for a cranio-caudal view compare equal to ``399162004``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.sr._snomed_dict import mapping as _snomed_mapping
from pydicom.sr.codedict import codes as _codes
from pydicom.sr.coding import Code as _PydicomCode

#: PS3.3 Table 8.8-1: Code Value (SH) holds at most 16 characters; longer ones go to
#: Long Code Value (0008,0119).
_SHORT_CODE_VALUE_MAX = 16

#: SNOMED-RT code value -> SNOMED CT code value (PS3.16 Annex O mapping, via pydicom).
_SRT_TO_SCT: dict[str, str] = _snomed_mapping["SRT"]


class CodeItem(Protocol):
    """A Code Sequence item: a pydicom Dataset, or anything read like one."""

    def get(self, keyword: str, default: Any = None) -> Any: ...


class CodeError(ValueError):
    """A Code Sequence item without a usable code value, designator or meaning."""


@dataclass(frozen=True)
class Code:
    """One coded concept: value, coding scheme designator, meaning (PS3.3 §8.8)."""

    value: str
    scheme: str
    meaning: str

    @classmethod
    def from_pydicom(cls, code: _PydicomCode) -> Code:
        """Adopt a code from pydicom's PS3.16 dictionary."""
        return cls(code.value, code.scheme_designator, code.meaning)

    @classmethod
    def from_item(cls, item: CodeItem) -> Code:
        """Read one Code Sequence item; legacy ``SRT`` codes come back as ``SCT``.

        Code Value, Long Code Value and URN Code Value are all accepted (PS3.3 §8.8).
        """
        value = str(
            item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or ""
        )
        scheme = str(item.get("CodingSchemeDesignator", "") or "")
        meaning = str(item.get("CodeMeaning", "") or "")
        if not value or not scheme:
            raise CodeError("code sequence item lacks a code value or a coding scheme designator")
        return cls(value, scheme, meaning).canonical()

    def canonical(self) -> Code:
        """The SNOMED CT form of a legacy SNOMED-RT code; any other code unchanged."""
        if self.scheme in ("SRT", "SNM3") and self.value in _SRT_TO_SCT:
            return Code(_SRT_TO_SCT[self.value], "SCT", self.meaning)
        return self

    def same_concept(self, other: Code) -> bool:
        """Equal value and scheme once legacy designators are translated (meaning ignored)."""
        mine, theirs = self.canonical(), other.canonical()
        return (mine.value, mine.scheme) == (theirs.value, theirs.scheme)

    def to_pydicom(self) -> _PydicomCode:
        """The same code as pydicom's ``Code`` (for its SR helpers)."""
        return _PydicomCode(self.value, self.scheme, self.meaning)

    def to_dataset(self) -> Dataset:
        """One Code Sequence item (Basic Code Sequence Macro, PS3.3 Table 8.8-1)."""
        item = Dataset()
        if len(self.value) > _SHORT_CODE_VALUE_MAX:
            item.LongCodeValue = self.value
        else:
            item.CodeValue = self.value
        item.CodingSchemeDesignator = self.scheme
        item.CodeMeaning = self.meaning
        return item


def code_sequence(codes: Iterable[Code]) -> list[Dataset]:
    """Items for a Code Sequence attribute, in the given order."""
    return [code.to_dataset() for code in codes]


def codes_from_sequence(items: Iterable[Dataset]) -> tuple[Code, ...]:
    """Read every item of a Code Sequence attribute (legacy codes canonicalised)."""
    return tuple(Code.from_item(item) for item in items)


_p = Code.from_pydicom

# -- procedure (Requested Procedure Code Sequence, Scheduled Protocol Code Sequence) ------
DUCTOGRAPHY = _p(_codes.DCM.Ductography)  # 111139 DCM
MAMMARY_DUCTOGRAM = _p(_codes.SCT.MammaryDuctogram)  # 18102001 SCT

# -- views, CID 4014 (View Code Sequence (0054,0220)) --------------------------------------
VIEW_CC = _p(_codes.cid4014.CranioCaudal)  # 399162004
VIEW_MLO = _p(_codes.cid4014.MedioLateralObliqueProjection)  # 399368009
VIEW_ML = _p(_codes.cid4014.MedioLateralProjection)  # 399260004, the 90° lateral
VIEW_LM = _p(_codes.cid4014.LateroMedial)  # 399352003
VIEW_LMO = _p(_codes.cid4014.LateroMedialOblique)  # 399099002
VIEW_XCCL = _p(_codes.cid4014.CranioCaudalExaggeratedLaterally)  # 399192008
VIEW_XCCM = _p(_codes.cid4014.CranioCaudalExaggeratedMedially)  # 399101009
VIEWS: tuple[Code, ...] = (
    VIEW_CC,
    VIEW_MLO,
    VIEW_ML,
    VIEW_LM,
    VIEW_LMO,
    VIEW_XCCL,
    VIEW_XCCM,
)

# -- view modifiers, CID 4015 (View Modifier Code Sequence (0054,0222)) --------------------
MODIFIER_MAGNIFICATION = _p(_codes.cid4015.Magnification)  # 399163009
MODIFIER_SPOT_COMPRESSION = _p(_codes.cid4015.SpotCompression)  # 399055006
VIEW_MODIFIERS: tuple[Code, ...] = (MODIFIER_MAGNIFICATION, MODIFIER_SPOT_COMPRESSION)

# -- anatomy and laterality (Anatomic Region Sequence, CID 4031 / CID 244) -----------------
BREAST = _p(_codes.SCT.Breast)  # 76752008
RIGHT_BREAST = _p(_codes.SCT.RightBreast)  # 73056007
LEFT_BREAST = _p(_codes.SCT.LeftBreast)  # 80248007
LATERALITY_RIGHT = _p(_codes.SCT.Right)  # 24028007
LATERALITY_LEFT = _p(_codes.SCT.Left)  # 7771000
LATERALITY_BOTH = _p(_codes.SCT.RightAndLeft)  # 51440002

#: Image Laterality (0020,0062) value -> the breast it names.
BREAST_BY_LATERALITY: dict[str, Code] = {"R": RIGHT_BREAST, "L": LEFT_BREAST, "B": BREAST}

# -- contrast (Contrast/Bolus Agent Sequence, Administration Route Sequence) ---------------
IOHEXOL = _p(_codes.SCT.Iohexol)  # 109218004
#: No intraductal route code exists; intraluminal is the nearest concept (dicom.md §5).
ROUTE_INTRALUMINAL = _p(_codes.SCT.IntraluminalRoute)  # 37737002

# -- CID 9301 Modality PPS Discontinuation Reasons (Discontinuation Reason Code Sequence) --
_cid9301 = _codes.cid9301
DISCONTINUED_DOCTOR_CANCELED = _p(_cid9301.DoctorCanceledProcedure)  # 110500
DISCONTINUED_EQUIPMENT_FAILURE = _p(_cid9301.EquipmentFailure)  # 110501
DISCONTINUED_INCORRECT_PROCEDURE = _p(_cid9301.IncorrectProcedureOrdered)  # 110502
DISCONTINUED_ALLERGIC_TO_CONTRAST = _p(_cid9301.PatientAllergicToMediaContrast)  # 110503
DISCONTINUED_PATIENT_DIED = _p(_cid9301.PatientDied)  # 110504
DISCONTINUED_PATIENT_REFUSED = _p(_cid9301.PatientRefusedToContinueProcedure)  # 110505
DISCONTINUED_TAKEN_FOR_TREATMENT = _p(_cid9301.PatientTakenForTreatmentOrSurgery)  # 110506
DISCONTINUED_DID_NOT_ARRIVE = _p(_cid9301.PatientDidNotArrive)  # 110507
DISCONTINUED_PATIENT_PREGNANT = _p(_cid9301.PatientPregnant)  # 110508
DISCONTINUED_CHARGING_CHANGE = _p(_cid9301.ChangeOfProcedureForCorrectCharging)  # 110509
DISCONTINUED_DUPLICATE_ORDER = _p(_cid9301.DuplicateOrder)  # 110510
DISCONTINUED_NURSING_UNIT_CANCEL = _p(_cid9301.NursingUnitCancel)  # 110511
DISCONTINUED_INCORRECT_SIDE = _p(_cid9301.IncorrectSideOrdered)  # 110512
DISCONTINUED_UNSPECIFIED = _p(_cid9301.DiscontinuedForUnspecifiedReason)  # 110513
DISCONTINUED_WRONG_WORKLIST_ENTRY = _p(_cid9301.IncorrectWorklistEntrySelected)  # 110514
DISCONTINUED_PATIENT_CONDITION = _p(_cid9301.PatientConditionPreventedContinuing)  # 110515
DISCONTINUED_EQUIPMENT_CHANGE = _p(_cid9301.EquipmentChange)  # 110516
DISCONTINUED_EXTRAVASATION = _p(_cid9301.InjectionSiteExtravasation)  # 95384003 SCT

#: Every CID 9301 reason, for validating a reason received in an MPPS N-SET.
DISCONTINUATION_REASONS: tuple[Code, ...] = tuple(
    _p(getattr(_cid9301, name)) for name in _cid9301.dir()
)
