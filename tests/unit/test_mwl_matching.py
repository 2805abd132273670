"""PS3.4 Annex K / §C.2.2.2 matching: the rules, and SQL agreeing with Python."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from dicom_nodes.unit_facing.mwl_matching import (
    STATUS_IDENTIFIER_DOES_NOT_MATCH,
    STATUS_UNABLE_TO_PROCESS,
    QueryError,
    Range,
    SingleValue,
    UidList,
    Wildcard,
    column_values,
    normalize_pn,
    normalize_tm,
    parse_condition,
    parse_query,
    requested_keys,
    select_return_keys,
)
from dicom_nodes.unit_facing.mwl_scp import MWL_FIND_UID, negotiate_extended

# (VR, query value, stored value, matches?) — one rule of §C.2.2.2 per row.
CASES = [
    ("CS", "MG", "MG", True),  # single value
    ("CS", "MG", "CR", False),
    ("CS", "MG", "", False),  # single value never matches an empty attribute
    ("CS", "mg", "MG", False),  # literal: case-sensitive
    ("PN", "Doe^Jane", "Doe^Jane", True),
    ("PN", "doe^jane", "Doe^Jane", False),  # PN is matched literally too (documented choice)
    ("PN", "Doe^Jane^^", "Doe^Jane", True),  # trailing empty components carry no meaning
    ("PN", "Doe*", "Doe^Jane", True),  # wildcard
    ("PN", "D?e^*", "Doe^Jane", True),
    ("PN", "D?e^*", "Dooe^Jane", False),
    ("PN", "Müller*", "Müller^Anna", True),
    ("LO", "P[1]*", "P[1]23", True),  # '[' is literal in DICOM, not a GLOB class
    ("LO", "P[1]*", "P123", False),
    ("AE", "UNIT?", "UNIT1", True),
    ("AE", "UNIT?", "UNIT12", False),
    ("DA", "20261125", "20261125", True),
    ("DA", "20261120-20261125", "20261125", True),  # range, inclusive
    ("DA", "20261120-20261125", "20261126", False),
    ("DA", "20261126-", "20261126", True),  # open upper bound
    ("DA", "-20261120", "20261126", False),  # open lower bound
    ("DA", "-20261120", "", False),  # a range never matches an empty value
    ("TM", "1000-1100", "105959", True),
    ("TM", "1000-11", "115959", True),  # an upper bound covers its whole hour
    ("TM", "1000-1100", "110100", False),
    ("TM", "0930-", "093000", True),
    ("UI", "1.2.3\\1.2.4", "1.2.4", True),  # list of UIDs
    ("UI", "1.2.3\\1.2.4", "1.2.40", False),
]


@pytest.mark.parametrize(("vr", "query_value", "stored", "expected"), CASES)
def test_condition_rules(vr: str, query_value: str, stored: str, expected: bool) -> None:
    condition = parse_condition(vr, query_value, "Key")
    assert condition is not None
    normalised = {"PN": normalize_pn, "TM": normalize_tm}.get(vr, str.strip)(stored)
    assert condition.matches(normalised) is expected


@pytest.mark.parametrize("value", ["", "*", "**", "-"])
def test_universal_values_give_no_condition(value: str) -> None:
    vr = "DA" if value == "-" else "PN"
    assert parse_condition(vr, value, "Key") is None


def test_several_values_in_a_non_uid_key_are_refused() -> None:
    with pytest.raises(QueryError) as caught:
        parse_condition("CS", ["MG", "CR"], "Modality")
    assert caught.value.status == STATUS_UNABLE_TO_PROCESS


def _item(**sps_values: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P1"
    sps = Dataset()
    sps.Modality = "MG"
    sps.ScheduledStationAETitle = "UNIT1"
    sps.ScheduledProcedureStepStartDate = "20261125"
    sps.ScheduledProcedureStepStartTime = "101500"
    for keyword, value in sps_values.items():
        setattr(sps, keyword, value)
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def _query(*, combined: bool = False, **sps_values: str) -> Dataset:
    q = Dataset()
    q.PatientName = ""
    sps = Dataset()
    for keyword, value in sps_values.items():
        setattr(sps, keyword, value)
    q.ScheduledProcedureStepSequence = [sps]
    return q


def test_sequence_matching_uses_the_item_keys() -> None:
    query = parse_query(_query(Modality="MG", ScheduledStationAETitle="UNIT1"))
    assert query.matches_dataset(_item())
    assert not query.matches_dataset(_item(ScheduledStationAETitle="UNIT2"))


def test_date_and_time_are_independent_without_combined_matching() -> None:
    identifier = _query(
        ScheduledProcedureStepStartDate="20261124-20261125",
        ScheduledProcedureStepStartTime="1200-1300",
    )
    # 24 Nov 15:00 is inside the combined range but outside the time range on its own.
    item = _item(
        ScheduledProcedureStepStartDate="20261124", ScheduledProcedureStepStartTime="150000"
    )
    assert not parse_query(identifier).matches_dataset(item)
    assert parse_query(identifier, combined_datetime=True).matches_dataset(item)
    late = _item(
        ScheduledProcedureStepStartDate="20261125", ScheduledProcedureStepStartTime="130100"
    )
    assert not parse_query(identifier, combined_datetime=True).matches_dataset(late)


def test_more_than_one_sps_item_does_not_match_the_sop_class() -> None:
    q = _query()
    q.ScheduledProcedureStepSequence.append(Dataset())
    with pytest.raises(QueryError) as caught:
        parse_query(q)
    assert caught.value.status == STATUS_IDENTIFIER_DOES_NOT_MATCH


def test_a_sequence_where_a_plain_attribute_belongs_is_refused() -> None:
    q = Dataset()
    q.add_new(0x00100010, "SQ", [])  # Patient's Name as a sequence
    with pytest.raises(QueryError):
        parse_query(q)


def test_values_on_keys_we_do_not_match_on_are_reported() -> None:
    q = _query()
    q.ReferringPhysicianName = "Smith*"
    q.PatientSex = "F"  # we do match on this one
    assert parse_query(q).unsupported == ("ReferringPhysicianName",)
    code = Dataset()
    code.CodeValue = "399162004"  # matching inside a code sequence: not supported
    q.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = [code]
    assert parse_query(q).unsupported == ("ReferringPhysicianName", "CodeValue")


def test_requested_keys_tree_and_universal_sequence() -> None:
    q = _query(Modality="MG")
    q.RequestedProcedureCodeSequence = []
    keys = requested_keys(q)
    assert keys[0x00100010] is None
    assert keys[0x00400100] == {0x00080060: None}
    assert keys[0x00321064] == {}  # zero items: every attribute of the item


def test_select_return_keys_returns_only_requested_and_zero_length_missing() -> None:
    item = _item()
    item.SpecificCharacterSet = "ISO_IR 192"
    q = _query(Modality="")
    q.AccessionNumber = ""
    selected = select_return_keys(requested_keys(q), item)
    assert [e.keyword for e in selected] == [
        "SpecificCharacterSet",
        "AccessionNumber",
        "PatientName",
        "ScheduledProcedureStepSequence",
    ]
    assert selected["AccessionNumber"].is_empty
    assert [e.keyword for e in selected.ScheduledProcedureStepSequence[0]] == ["Modality"]


def test_column_values_normalise_names_and_times() -> None:
    item = _item(ScheduledProcedureStepStartTime="1015")
    item.PatientName = "Doe^Jane^^"
    values = column_values(item)
    assert values["patient_name"] == "Doe^Jane"
    assert values["sps_start_time"] == "101500.000000"
    assert values["sps_start_datetime"] == "20261125101500.000000"


# -- the SQL a condition renders selects exactly what its Python check accepts ------------

_ALPHABET = "ab?*[]^-"


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.text(alphabet=_ALPHABET, min_size=1, max_size=6),
    values=st.lists(st.text(alphabet="ab[]^-", max_size=6), max_size=12),
)
def test_sql_agrees_with_python(pattern: str, values: list[str]) -> None:
    condition = parse_condition("LO", pattern, "Key")
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE t (v TEXT NOT NULL)")
        conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
        if condition is None:  # universal
            return
        clause, params = condition.sql("v")
        selected = sorted(r[0] for r in conn.execute(f"SELECT v FROM t WHERE {clause}", params))
    conn.close()
    assert selected == sorted(v for v in values if condition.matches(v))


@settings(max_examples=200, deadline=None)
@given(
    low=st.sampled_from(["", "20261120", "20261125"]),
    high=st.sampled_from(["", "20261125", "20261130"]),
    values=st.lists(st.sampled_from(["", "20261119", "20261120", "20261125", "20261131"])),
)
def test_range_sql_agrees_with_python(low: str, high: str, values: list[str]) -> None:
    condition = Range(low, high)
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (v TEXT NOT NULL)")
        conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
        clause, params = condition.sql("v")
        selected = sorted(r[0] for r in conn.execute(f"SELECT v FROM t WHERE {clause}", params))
    finally:
        conn.close()
    assert selected == sorted(v for v in values if condition.matches(v))


def test_condition_kinds() -> None:
    assert isinstance(parse_condition("SH", "A1", "K"), SingleValue)
    assert isinstance(parse_condition("SH", "A*", "K"), Wildcard)
    assert isinstance(parse_condition("DA", "20260101-", "K"), Range)
    assert isinstance(parse_condition("UI", "1.2", "K"), UidList)


@pytest.mark.parametrize(
    ("proposed", "accepted"),
    [
        (b"\x00\x01", b"\x00\x01"),  # combined date-time matching accepted
        (b"\x01\x01\x01\x01", b"\x00\x01\x00\x00"),  # fuzzy PN and timezone refused
        (b"\x00\x00", b"\x00\x00"),
    ],
)
def test_extended_negotiation_answers(proposed: bytes, accepted: bytes) -> None:
    assert negotiate_extended({MWL_FIND_UID: proposed}) == {MWL_FIND_UID: accepted}
    assert negotiate_extended({"1.2.840.10008.5.1.4.1.2.1.1": proposed}) == {}


@pytest.mark.parametrize(
    ("vr", "value", "why"),
    [
        ("DA", "20261345", "not a valid DA"),  # no 13th month
        ("DA", "20260230", "not a valid DA"),
        ("DA", "2026-11-25", "not a DA value or range"),  # dashed
        ("DA", "2026*", "not a valid DA"),  # no wildcards for DA
        ("DA", "20261126-20261125", "range is reversed"),
        ("DA", "2026-", "not a valid DA"),
        ("TM", "2500", "not a valid TM"),
        ("TM", "1200-1000", "range is reversed"),
        ("TM", "10h30", "not a valid TM"),
    ],
)
def test_an_invalid_date_or_time_is_refused_naming_the_key(vr: str, value: str, why: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_condition(vr, value, "ScheduledProcedureStepStartDate")
    assert info.value.status == 0xA900
    assert str(info.value) == f"ScheduledProcedureStepStartDate: {why}"
    assert value not in str(info.value)
