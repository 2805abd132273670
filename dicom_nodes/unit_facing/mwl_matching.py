"""Modality Worklist matching: PS3.4 Annex K with the C-FIND rules of PS3.4 §C.2.2.2.

Pure and reusable: galacto's own MWL SCP runs it against indexed SQLite columns, the RIS
simulator against the Datasets it holds. A request Identifier becomes a :class:`WorklistQuery`
(:func:`parse_query`): one :class:`Condition` per matching key that carries a value, plus the
tree of requested return keys. The query renders a SQL ``WHERE`` clause over the store's
columns (indexed, so most work is done there) and then decides exactly in Python
(:meth:`WorklistQuery.matches`) over the same normalised values.

Choices where the standard leaves room (and why):

- Matching is **case-sensitive** for every VR, Person Name included. §C.2.2.2.1 and
  §C.2.2.2.4 leave PN matching to the implementation (it *may* ignore case, accents ...);
  literal matching is what SQLite's ``GLOB`` and DCMTK's ``wlmscpfs`` do, and it never
  silently widens a selection. Person names are compared after dropping trailing empty
  components (``Doe^Jane^^`` equals ``Doe^Jane``), which PS3.5 §6.2 says carry no meaning.
- A wildcard value consisting only of ``*`` matches everything, empty values included
  (§C.2.2.2.4); any other value never matches an empty attribute.
- TM range bounds given with less precision are completed: a lower bound ``10`` means
  10:00:00.000000, an upper bound ``11`` means up to 11:59:59.999999.
- Combined date-time matching (§C.2.2.2.5) applies to SPS Start Date + Time only when the
  association negotiated it (SOP Class Extended Negotiation, byte 2).
- Several values in a non-UID matching key are refused: without Extended Negotiation of
  Multiple Value Matching (which we do not offer) their meaning is undefined (§C.2.2.2.8,
  note 4); lists are defined for UIDs only (§C.2.2.2.2). A Scheduled Procedure Step Sequence
  with more than one item is refused too (§C.2.2.2.6 asks for a single item).
- A date or time that is not one (``20261345``, ``2026-11-25``, ``25``), a range with more than
  one ``-``, or a range whose first value is after its second is refused (A900H with an Error
  Comment naming the key, never the value): it could only ever match nothing, and an empty
  worklist would look like "no order" to the technologist.
- Matching keys with a value that this SCP does not match on are reported to the caller
  (:attr:`WorklistQuery.unsupported`) so that it answers Pending ``FF01`` (PS3.4 Table K.4-1,
  "one or more Optional Keys were not supported"); they are then treated as return keys.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

#: PS3.4 §C.2.2.2.4: VRs for which ``*`` and ``?`` are wildcards.
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})

SPECIFIC_CHARACTER_SET = 0x00080005
SPS_SEQUENCE = 0x00400100
_ITEM_TAGS_NOT_KEYS = frozenset({SPECIFIC_CHARACTER_SET, 0x00080201})  # charset, TZ offset

#: Requested return keys: tag -> None for a plain attribute, or the requested keys of a
#: sequence's item (an empty dict asks for every attribute of the item, §C.2.2.2.6).
ReturnKeys = dict[int, "ReturnKeys | None"]


class QueryError(ValueError):
    """A request Identifier this SCP cannot process; ``status`` is the C-FIND failure."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


#: PS3.4 Table K.4-1 failure statuses used for bad identifiers.
STATUS_IDENTIFIER_DOES_NOT_MATCH = 0xA900
STATUS_UNABLE_TO_PROCESS = 0xC001


@dataclass(frozen=True)
class MatchKey:
    """A matching key this SCP supports, and the store column that holds its value."""

    keyword: str
    vr: str
    in_sps: bool
    column: str

    @property
    def tag(self) -> int:
        tag = tag_for_keyword(self.keyword)
        assert tag is not None
        return int(tag)


#: PS3.4 Table K.6-1 matching keys (required "R" ones and the optional ones we index).
MATCH_KEYS: tuple[MatchKey, ...] = (
    MatchKey("ScheduledStationAETitle", "AE", True, "station_ae"),
    MatchKey("ScheduledProcedureStepStartDate", "DA", True, "sps_start_date"),
    MatchKey("ScheduledProcedureStepStartTime", "TM", True, "sps_start_time"),
    MatchKey("Modality", "CS", True, "modality"),
    MatchKey("ScheduledPerformingPhysicianName", "PN", True, "performing_physician"),
    MatchKey("ScheduledProcedureStepID", "SH", True, "sps_id"),
    MatchKey("ScheduledProcedureStepStatus", "CS", True, "sps_status"),
    MatchKey("PatientName", "PN", False, "patient_name"),
    MatchKey("PatientID", "LO", False, "patient_id"),
    MatchKey("PatientBirthDate", "DA", False, "patient_birth_date"),
    MatchKey("PatientSex", "CS", False, "patient_sex"),
    MatchKey("AccessionNumber", "SH", False, "accession"),
    MatchKey("RequestedProcedureID", "SH", False, "requested_procedure_id"),
    MatchKey("StudyInstanceUID", "UI", False, "study_uid"),
)
_KEYS_BY_TAG: dict[tuple[bool, int], MatchKey] = {(k.in_sps, k.tag): k for k in MATCH_KEYS}
_START_DATE = _KEYS_BY_TAG[(True, 0x00400002)]
_START_TIME = _KEYS_BY_TAG[(True, 0x00400003)]
#: Column holding SPS Start Date + normalised time, for combined date-time matching.
START_DATETIME_COLUMN = "sps_start_datetime"

# -- value normalisation (the same function feeds the store's columns and the query) -------


def normalize_pn(value: str) -> str:
    """A Person Name without trailing empty components or groups (PS3.5 §6.2)."""
    groups = [group.rstrip("^ ") for group in value.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def normalize_tm(value: str, *, upper: bool = False) -> str:
    """``HHMMSS.ffffff`` from any TM precision; an upper bound is completed with maxima."""
    value = value.strip().replace(":", "")
    if not value:
        return ""
    whole, _, fraction = value.partition(".")
    whole = (whole + "235959"[len(whole) :])[:6] if upper else whole.ljust(6, "0")[:6]
    fraction = (fraction + ("9" if upper else "0") * 6)[:6]
    return f"{whole}.{fraction}"


def _normalize(vr: str, value: str, *, upper: bool = False) -> str:
    if vr == "PN":
        return normalize_pn(value)
    if vr == "TM":
        return normalize_tm(value, upper=upper)
    return value.strip()


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def column_values(identifier: Dataset) -> dict[str, str]:
    """Normalised matching-key values of a worklist item, keyed by store column.

    Includes :data:`START_DATETIME_COLUMN` (date + normalised time) for combined matching.
    """
    sps_items = identifier.get("ScheduledProcedureStepSequence") or [Dataset()]
    sps = sps_items[0]
    values = {}
    for key in MATCH_KEYS:
        source = sps if key.in_sps else identifier
        values[key.column] = _normalize(key.vr, _text(source.get(key.keyword)))
    values[START_DATETIME_COLUMN] = values[_START_DATE.column] + values[_START_TIME.column]
    return values


# -- conditions ----------------------------------------------------------------------------


class Condition(Protocol):
    """One matching rule of §C.2.2.2 applied to one column."""

    def matches(self, actual: str) -> bool: ...

    def sql(self, column: str) -> tuple[str, list[str]]: ...


@dataclass(frozen=True)
class SingleValue:
    """§C.2.2.2.1 single value matching: literal equality, never an empty value."""

    value: str

    def matches(self, actual: str) -> bool:
        return actual == self.value

    def sql(self, column: str) -> tuple[str, list[str]]:
        return f"{column} = ?", [self.value]


@dataclass(frozen=True)
class Wildcard:
    """§C.2.2.2.4 wildcard matching: ``*`` any run of characters, ``?`` one character."""

    pattern: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in self.pattern)
        object.__setattr__(self, "_regex", re.compile("".join(parts), re.DOTALL))

    def matches(self, actual: str) -> bool:
        return self._regex.fullmatch(actual) is not None

    def sql(self, column: str) -> tuple[str, list[str]]:
        # GLOB has the same two wildcards, is case-sensitive and uses indexes for a literal
        # prefix; its only other metacharacter, '[', is escaped as a one-character class.
        return f"{column} GLOB ?", [self.pattern.replace("[", "[[]")]


@dataclass(frozen=True)
class Range:
    """§C.2.2.2.5 range matching on normalised DA/TM/DT strings; "" is an open bound."""

    low: str
    high: str

    def matches(self, actual: str) -> bool:
        if not actual:
            return False
        return (not self.low or actual >= self.low) and (not self.high or actual <= self.high)

    def sql(self, column: str) -> tuple[str, list[str]]:
        clauses, params = [f"{column} != ''"], []
        if self.low:
            clauses.append(f"{column} >= ?")
            params.append(self.low)
        if self.high:
            clauses.append(f"{column} <= ?")
            params.append(self.high)
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class UidList:
    """§C.2.2.2.2 list of UID matching: any one of the listed UIDs."""

    uids: frozenset[str]

    def matches(self, actual: str) -> bool:
        return actual in self.uids

    def sql(self, column: str) -> tuple[str, list[str]]:
        marks = ", ".join("?" * len(self.uids))
        return f"{column} IN ({marks})", sorted(self.uids)


_DA = re.compile(r"\d{8}")
_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")


def _valid(vr: str, value: str) -> bool:
    """A DA (YYYYMMDD, a real day) or TM (HH[MM[SS[.F{1,6}]]]) value; other VRs: True."""
    if vr == "DA":
        if not _DA.fullmatch(value):
            return False
        try:
            dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            return False
        return True
    if vr == "TM":
        match = _TM.fullmatch(value.replace(":", ""))
        if match is None:
            return False
        hours, minutes, seconds = (int(g or 0) for g in match.groups()[:3])
        return hours < 24 and minutes < 60 and seconds < 61
    return True


def check_range_value(vr: str, text: str, keyword: str) -> tuple[str, str] | None:
    """``(low, high)`` of a DA/TM value (a single value is both; None when universal), or
    :class:`QueryError` (A900H) when it is no date or time, or a reversed range."""
    if text.count("-") > 1:
        raise QueryError(f"{keyword}: not a {vr} value or range", STATUS_IDENTIFIER_DOES_NOT_MATCH)
    low, dash, high = (part.strip() for part in text.partition("-"))
    if not dash:
        high = low
    for bound in (low, high):
        if bound and not _valid(vr, bound):
            raise QueryError(f"{keyword}: not a valid {vr}", STATUS_IDENTIFIER_DOES_NOT_MATCH)
    if not low and not high:
        return None
    if low and high and _normalize(vr, low) > _normalize(vr, high, upper=True):
        raise QueryError(f"{keyword}: range is reversed", STATUS_IDENTIFIER_DOES_NOT_MATCH)
    return low, high


def parse_condition(vr: str, value: Any, keyword: str) -> Condition | None:
    """The rule a key's value asks for, or None for universal matching (§C.2.2.2.3)."""
    if isinstance(value, (MultiValue, list, tuple)):
        values = [_text(v).strip() for v in value if _text(v).strip()]
        if vr == "UI" and values:
            return UidList(frozenset(values))
        if len(values) > 1:
            raise QueryError(f"several values in matching key {keyword}", STATUS_UNABLE_TO_PROCESS)
        value = values[0] if values else ""
    text = _text(value).strip()
    if not text:
        return None
    if vr == "UI":
        return UidList(frozenset(text.split("\\")))
    if vr in ("DA", "TM"):
        bounds = check_range_value(vr, text, keyword)
        if bounds is None:
            return None
        if "-" not in text:
            return SingleValue(_normalize(vr, text))
        low, high = bounds
        return Range(_normalize(vr, low), _normalize(vr, high, upper=True) if high else "")
    if vr == "DT" and "-" in text:
        low, _, high = text.partition("-")
        if not low.strip() and not high.strip():
            return None
        return Range(_normalize(vr, low), _normalize(vr, high, upper=True))
    if vr in WILDCARD_VRS and ("*" in text or "?" in text):
        if set(text) == {"*"}:
            return None
        return Wildcard(_normalize(vr, text))
    return SingleValue(_normalize(vr, text))


def _bounds(value: str) -> tuple[str, str]:
    """(low, high) of a DA/TM value: a single value is both bounds."""
    if "-" not in value:
        return value, value
    low, _, high = value.partition("-")
    return low.strip(), high.strip()


def _combined_range(date_value: str, time_value: str) -> Range:
    """§C.2.2.2.5: SPS Start Date and Time taken together as one date-time range.

    ``20261125-20261126`` with ``1000-1200`` runs from 25 Nov 10:00 to 26 Nov 12:00:59.999999.
    """
    date_low, date_high = _bounds(date_value)
    time_low, time_high = _bounds(time_value)
    low = date_low + normalize_tm(time_low or "00") if date_low else ""
    high = date_high + normalize_tm(time_high or "23", upper=True) if date_high else ""
    return Range(low, high)


# -- the query -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorklistQuery:
    """A parsed MWL request: conditions on store columns, and the requested return keys."""

    conditions: tuple[tuple[str, Condition], ...]
    return_keys: ReturnKeys
    character_sets: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()

    def sql(self) -> tuple[str, list[str]]:
        """``WHERE`` clause (``1`` when universal) and its parameters."""
        clauses, params = [], []
        for column, condition in self.conditions:
            clause, values = condition.sql(column)
            clauses.append(f"({clause})")
            params.extend(values)
        return (" AND ".join(clauses) or "1"), params

    def matches(self, values: Mapping[str, str]) -> bool:
        """Exact decision over normalised column values (see :func:`column_values`)."""
        return all(condition.matches(values[column]) for column, condition in self.conditions)

    def row_matcher(self, columns: Sequence[str]) -> Callable[[Sequence[str]], bool]:
        """:meth:`matches` for rows whose values come in ``columns`` order (no dict per row)."""
        checks = [
            (columns.index(column), condition.matches) for column, condition in self.conditions
        ]

        def matches(row: Sequence[str]) -> bool:
            return all(check(row[index]) for index, check in checks)

        return matches

    def matches_dataset(self, item: Dataset) -> bool:
        """Exact decision against a complete worklist item Dataset (RIS simulator)."""
        return self.matches(column_values(item))


def requested_keys(identifier: Dataset) -> ReturnKeys:
    """The return-key tree of a request Identifier (§C.2.2.2.6 for sequences)."""
    keys: ReturnKeys = {}
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _ITEM_TAGS_NOT_KEYS or elem.tag.element == 0:
            continue
        if elem.VR == "SQ":
            items = elem.value or []
            keys[tag] = requested_keys(items[0]) if items else {}
        else:
            keys[tag] = None
    return keys


def _check_vrs(keys: ReturnKeys) -> None:
    for tag, sub in keys.items():
        try:
            is_sequence = dictionary_VR(tag) == "SQ"
        except KeyError:
            continue  # private or unknown: not supported, hence not returned
        if (sub is not None) != is_sequence:
            raise QueryError(
                f"attribute {Tag(tag)} has the wrong VR for its definition",
                STATUS_IDENTIFIER_DOES_NOT_MATCH,
            )
        if sub:
            _check_vrs(sub)


def parse_query(
    identifier: Dataset,
    *,
    combined_datetime: bool = False,
    supported_keys: ReturnKeys | None = None,
) -> WorklistQuery:
    """Turn a C-FIND request Identifier into a :class:`WorklistQuery` (PS3.4 §K.2.2).

    ``combined_datetime``: the association negotiated combined date-time matching.
    ``supported_keys``: this SCP's return keys; values on other keys are reported in
    :attr:`WorklistQuery.unsupported`. Raises :class:`QueryError` for identifiers that
    cannot be processed.
    """
    charsets = identifier.get("SpecificCharacterSet") or ()
    if isinstance(charsets, str):
        charsets = (charsets,)
    keys = requested_keys(identifier)
    _check_vrs(keys)

    sps = Dataset()
    if SPS_SEQUENCE in keys:
        items = identifier.ScheduledProcedureStepSequence
        if len(items) > 1:
            raise QueryError(
                "Scheduled Procedure Step Sequence with more than one item",
                STATUS_IDENTIFIER_DOES_NOT_MATCH,
            )
        sps = items[0] if items else Dataset()

    conditions: list[tuple[str, Condition]] = []
    for key in MATCH_KEYS:
        source = sps if key.in_sps else identifier
        if key.keyword not in source:
            continue
        condition = parse_condition(key.vr, source[key.keyword].value, key.keyword)
        if condition is not None:
            conditions.append((key.column, condition))

    date_value = _text(sps.get("ScheduledProcedureStepStartDate")).strip()
    time_value = _text(sps.get("ScheduledProcedureStepStartTime")).strip()
    if combined_datetime and date_value and time_value and "-" in date_value + time_value:
        conditions = [
            (column, cond)
            for column, cond in conditions
            if column not in (_START_DATE.column, _START_TIME.column)
        ]
        conditions.append((START_DATETIME_COLUMN, _combined_range(date_value, time_value)))

    unsupported = tuple(_unsupported_matching(identifier, sps, supported_keys))
    return WorklistQuery(tuple(conditions), keys, tuple(str(c) for c in charsets), unsupported)


def _unsupported_matching(
    identifier: Dataset, sps: Dataset, supported: ReturnKeys | None
) -> Iterable[str]:
    """Keywords of keys that carry a value we do not match on, at any depth, and of requested
    return keys we do not support."""
    yield from _values_outside_keys(identifier, in_sps=False)
    yield from _values_outside_keys(sps, in_sps=True)
    if supported is not None:
        for tag in _unknown_tags(requested_keys(identifier), supported):
            yield str(Tag(tag))


def _values_outside_keys(dataset: Dataset, *, in_sps: bool | None) -> Iterable[str]:
    """``in_sps`` None: inside some other sequence, where we match on nothing."""
    for elem in dataset:
        tag = int(elem.tag)
        if tag in _ITEM_TAGS_NOT_KEYS or (in_sps is not None and (in_sps, tag) in _KEYS_BY_TAG):
            continue
        if elem.VR == "SQ":
            if tag != SPS_SEQUENCE or in_sps is not False:
                for item in elem.value[:1]:
                    yield from _values_outside_keys(item, in_sps=None)
        elif elem.VM and not (elem.VR in WILDCARD_VRS and set(str(elem.value)) == {"*"}):
            yield elem.keyword or str(elem.tag)


def _unknown_tags(requested: ReturnKeys, supported: ReturnKeys) -> Iterable[int]:
    for tag, sub in requested.items():
        if tag not in supported:
            yield tag
        elif sub and supported[tag]:
            yield from _unknown_tags(sub, supported[tag] or {})


# -- return keys on Datasets (the RIS simulator's path; the SCP trims pre-encoded bytes) ---


def select_return_keys(keys: ReturnKeys, item: Dataset) -> Dataset:
    """Only the requested attributes of ``item``; requested but absent ones zero-length.

    Specific Character Set is always carried over: it tells the unit how to read the rest.
    """
    out = Dataset()
    if "SpecificCharacterSet" in item:
        out.SpecificCharacterSet = item.SpecificCharacterSet
    for tag, sub in keys.items():
        if tag in item:
            elem = item[tag]
            if elem.VR == "SQ" and sub:
                seq = DicomSequence([select_return_keys(sub, child) for child in elem.value])
                out.add(DataElement(tag, "SQ", seq))
            else:
                out.add(elem)
        else:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
            out.add(DataElement(tag, vr, DicomSequence() if vr == "SQ" else None))
    return out
