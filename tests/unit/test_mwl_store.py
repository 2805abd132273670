"""The worklist store: publish/withdraw, durable rows, pre-encoded identifiers that equal
what pydicom would encode, and queries that use the indexes."""

from __future__ import annotations

import sqlite3
import tempfile
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom.dsutils import encode

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.identity import unflatten_patient
from dicom_nodes.unit_facing.mwl_matching import ReturnKeys, parse_query, select_return_keys
from dicom_nodes.unit_facing.worklist_store import (
    LATIN1,
    SUPPORTED_KEYS,
    UTF8,
    InvalidStepError,
    ScheduledStep,
    WorklistStore,
    build_identifier,
    covers,
    encode_step,
    explicit_to_implicit,
    trim_identifier,
)


def make_step(n: int = 1, **overrides: object) -> ScheduledStep:
    values: dict[str, object] = {
        "sps_id": f"SPS{n}",
        "sps_start_date": "20261125",
        "sps_start_time": f"{8 + n % 10:02d}1500",
        "station_ae": "UNIT1",
        "sps_description": "Galactography right, pre-contrast",
        "protocol_codes": (codes.VIEW_CC, codes.VIEW_ML, codes.MODIFIER_MAGNIFICATION),
        "requested_procedure_id": f"RP{n}",
        "requested_procedure_description": "Galactography right",
        "requested_procedure_codes": (codes.DUCTOGRAPHY,),
        "study_instance_uid": f"1.2.826.0.1.3680043.10.1.{n}",
        "accession_number": f"ACC{n}",
        "patient_name": f"Doe^Jane{n}",
        "patient_id": f"P{n}",
        "patient_birth_date": "19800101",
        "patient_sex": "F",
        "patient_weight_kg": 61.5,
        "pregnancy_status": 1,
        "allergies": ("Iodine",),
        "requested_contrast_agent": "Iohexol 300 mg/mL",
    }
    values.update(overrides)
    return ScheduledStep(**unflatten_patient(values))  # the patient from its flat keys


@pytest.fixture
def store(tmp_path: Path) -> WorklistStore:
    return WorklistStore(tmp_path / "galacto.db")


def test_publish_get_withdraw(store: WorklistStore) -> None:
    step = make_step(1)
    store.publish(step)
    store.publish(make_step(2))
    assert store.count() == 2
    assert store.get("SPS1") == step
    store.publish(make_step(1, sps_status="ARRIVED"))  # republish replaces
    assert store.count() == 2
    assert store.get("SPS1") == make_step(1, sps_status="ARRIVED")
    assert store.withdraw("SPS1") is True
    assert store.withdraw("SPS1") is False
    assert store.get("SPS1") is None
    assert store.count() == 1


def test_rows_survive_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    WorklistStore(tmp_path / "db.sqlite").publish(make_step(7))
    again = WorklistStore(tmp_path / "db.sqlite")
    assert again.get("SPS7") == make_step(7)
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize(
    "bad",
    [
        {"sps_start_date": "2026-11-25"},
        {"station_ae": "A" * 17},
        {"sps_id": ""},
        {"patient_id": "x" * 65},
    ],
)
def test_invalid_steps_are_refused_and_nothing_is_written(
    store: WorklistStore, bad: dict[str, object]
) -> None:
    with pytest.raises(InvalidStepError):
        store.publish_many([make_step(1), make_step(2, **bad)])
    assert store.count() == 0


# -- pre-encoded identifiers ---------------------------------------------------------------

_names = st.sampled_from(
    ["Doe^Jane", "Müller^Anna", "Ñúñez^María", "Ελληνική^Κατερίνα", "山田^花子"]
)


@settings(max_examples=40, deadline=None)
@given(name=_names, description=st.text(max_size=20).filter(lambda s: "\\" not in s))
def test_implicit_reframing_equals_pydicom(name: str, description: str) -> None:
    step = make_step(3, patient_name=name, sps_description=description.strip())
    identifier = build_identifier(step, UTF8)
    encoded = encode_step(step)
    assert encoded.utf8 == (encode(identifier, True, True), encode(identifier, False, True))
    assert explicit_to_implicit(encoded.utf8[1]) == encoded.utf8[0]


@pytest.mark.parametrize(
    ("name", "latin1_expected"),
    [("Doe^Jane", True), ("Müller^Anna", True), ("Ñúñez^María", True), ("山田^花子", False)],
)
def test_latin1_form_exists_when_every_character_fits(name: str, latin1_expected: bool) -> None:
    step = make_step(4, patient_name=name)
    encoded = encode_step(step)
    if not latin1_expected:
        assert encoded.latin1 is None
        return
    assert encoded.latin1 is not None
    reference = build_identifier(step, LATIN1)
    assert encoded.latin1 == (encode(reference, True, True), encode(reference, False, True))


def _subtrees(keys: ReturnKeys) -> st.SearchStrategy[ReturnKeys]:
    """Random subsets of a return-key tree (sequences keep a random subset of their items'
    keys, or ask for everything with an empty dict)."""
    entries = []
    for tag, sub in keys.items():
        if sub:
            entries.append(st.tuples(st.just(tag), st.one_of(st.just({}), _subtrees(sub))))
        else:
            entries.append(st.tuples(st.just(tag), st.just(sub)))
    return st.lists(st.one_of(*entries), unique_by=lambda e: e[0]).map(dict)


@settings(max_examples=150, deadline=None)
@given(keys=_subtrees(SUPPORTED_KEYS), explicit=st.booleans())
def test_trimming_equals_selecting_then_encoding(keys: ReturnKeys, explicit: bool) -> None:
    step = make_step(5, patient_name="Müller^Anna")
    full = build_identifier(step, UTF8)
    blob = encode_step(step).utf8[1 if explicit else 0]
    expected = encode(select_return_keys(keys, full), not explicit, True)
    assert trim_identifier(blob, keys, explicit_vr=explicit) == expected


def test_a_full_request_needs_no_trimming() -> None:
    assert covers(SUPPORTED_KEYS)
    partial = dict(SUPPORTED_KEYS)
    del partial[0x00100010]
    assert not covers(partial)


# -- queries -------------------------------------------------------------------------------


def _query(station: str = "UNIT1", date: str = "20261125", charset: str = "") -> Dataset:
    q = Dataset()
    if charset:
        q.SpecificCharacterSet = charset
    q.PatientName = ""
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = ""
    sps.ScheduledProcedureStepID = ""
    q.ScheduledProcedureStepSequence = [sps]
    return q


def _decode(blob: bytes, explicit: bool = False) -> Dataset:
    return read_dataset(BytesIO(blob), not explicit, True)


def test_find_returns_matches_in_start_order(store: WorklistStore) -> None:
    store.publish_many(
        [make_step(n, station_ae="UNIT2" if n % 3 == 0 else "UNIT1") for n in range(1, 10)]
    )
    found = [_decode(b) for b in store.find(parse_query(_query()))]
    times = [ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime for ds in found]
    assert len(found) == 6
    assert times == sorted(times)
    assert all(
        ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "UNIT1" for ds in found
    )


def test_find_answers_latin1_only_when_asked_and_possible(store: WorklistStore) -> None:
    store.publish(make_step(1, patient_name="Müller^Anna"))
    store.publish(make_step(2, patient_name="山田^花子"))
    for explicit in (False, True):
        answers = [
            _decode(b, explicit)
            for b in store.find(
                parse_query(_query(charset=LATIN1)), explicit_vr=explicit, latin1=True
            )
        ]
        assert [(a.SpecificCharacterSet, str(a.PatientName)) for a in answers] == [
            (LATIN1, "Müller^Anna"),
            (UTF8, "山田^花子"),
        ]


def test_selective_query_uses_an_index(store: WorklistStore) -> None:
    where, params = parse_query(_query()).sql()
    conn = sqlite3.connect(store.path)
    try:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN SELECT * FROM worklist_step WHERE {where}", params
            )
        )
    finally:
        conn.close()
    assert "USING INDEX worklist_step_station_date" in plan


def test_trimmed_identifiers_are_cached_per_revision(tmp_path: Path) -> None:
    store = WorklistStore(tmp_path / "db.sqlite", trimmed_cache_size=1)
    store.publish_many([make_step(1), make_step(2)])
    query = parse_query(_query())
    first = list(store.find(query))
    assert list(store.find(query)) == first  # the one-entry cache evicts and refills
    store.publish(make_step(1, patient_name="Roe^Janet"))
    names = [str(_decode(b).PatientName) for b in store.find(query)]
    assert names == ["Roe^Janet", "Doe^Jane2"]


# -- SQL never drops a step that the exact Python check accepts ----------------------------

_step_values = st.fixed_dictionaries(
    {
        "patient_name": st.sampled_from(["Doe^Jane", "Doe^Joan", "Müller^Anna", "doe^jane", ""]),
        "station_ae": st.sampled_from(["UNIT1", "UNIT2", "UNIT10"]),
        "sps_start_date": st.sampled_from(["20261124", "20261125", "20261126"]),
        "sps_start_time": st.sampled_from(["0800", "101500", "115959", "235900", ""]),
        "accession_number": st.sampled_from(["ACC1", "ACC12", "A[1]", ""]),
    }
)


def _key(*values: str) -> st.SearchStrategy[str]:
    """A matching key's value: universal about half the time, so conjunctions still match."""
    return st.one_of(st.just(""), st.sampled_from(values))


_query_values = st.fixed_dictionaries(
    {
        "PatientName": _key("Doe*", "Doe^J?an", "doe^jane", "*", "Müller^Anna"),
        "ScheduledStationAETitle": _key("UNIT1", "UNIT?", "UNIT1*"),
        "ScheduledProcedureStepStartDate": _key(
            "20261125", "20261125-", "-20261124", "20261124-20261125"
        ),
        "ScheduledProcedureStepStartTime": _key("08-11", "1015", "1200-"),
        "AccessionNumber": _key("ACC1*", "A[1]", "A[1]*", "ACC?"),
    }
)


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(_step_values, min_size=1, max_size=12),
    wanted=_query_values,
    combined=st.booleans(),
)
def test_store_finds_exactly_the_reference_matches(
    steps: list[dict[str, str]], wanted: dict[str, str], combined: bool
) -> None:
    q = Dataset()
    q.PatientName = wanted["PatientName"]
    q.AccessionNumber = wanted["AccessionNumber"]
    sps = Dataset()
    for keyword in (
        "ScheduledStationAETitle",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
    ):
        setattr(sps, keyword, wanted[keyword])
    sps.ScheduledProcedureStepID = ""
    q.ScheduledProcedureStepSequence = [sps]
    query = parse_query(q, combined_datetime=combined)
    published = [make_step(n, **values) for n, values in enumerate(steps)]
    expected = {s.sps_id for s in published if query.matches_dataset(build_identifier(s))}
    with tempfile.TemporaryDirectory() as tmp:
        store = WorklistStore(Path(tmp) / "db.sqlite")
        store.publish_many(published)
        found = {
            _decode(b).ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
            for b in store.find(query)
        }
    assert found == expected
