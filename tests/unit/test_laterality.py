"""The side of an order, from its words (acquisition.laterality; issue 8, layer 4)."""

from __future__ import annotations

import dataclasses

import pytest

from acquisition.laterality import DEFAULT_TERMS, order_side, parse_terms
from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.hospital.mwl_scu import WorklistItem

TERMS = parse_terms(DEFAULT_TERMS)
BLANK = WorklistItem(
    patient=Patient(name="DOE^JANE", id="P1", birth_date="", sex="F"),
    accession_number="A1",
    requested_procedure_id="RP1",
    requested_procedure_description="",
    requested_procedure_codes=(),
    study_instance_uid="1.2.3",
    sps_id="S1",
    sps_description="",
    sps_start_date="",
    sps_start_time="",
    station_ae="GALACTO",
    modality="MG",
    protocol_codes=(),
)


def order(**fields: object) -> WorklistItem:
    return dataclasses.replace(BLANK, **fields)  # type: ignore[arg-type]


def code(meaning: str) -> Code:
    return Code("X1", "99LOCAL", meaning)


@pytest.mark.parametrize(
    ("item", "side"),
    [
        (order(requested_procedure_description="Galactography left breast"), "L"),
        (order(requested_procedure_description="GALACTOGRAPHY RIGHT"), "R"),
        (order(requested_procedure_description="Galaktographie links"), "L"),
        (order(requested_procedure_description="Galaktographie der rechten Brust"), "R"),
        (order(requested_procedure_description="Galactographie du sein droit"), "R"),
        (order(requested_procedure_description="Galactographie gauche"), "L"),
        (order(requested_procedure_codes=(code("Ductography, left breast"),)), "L"),
        (order(protocol_codes=(code("Galactography R"),)), "R"),
        (order(sps_description="Galactography L-CC"), "L"),  # a single letter as a whole token
        (order(sps_description="Galactography MLO"), None),  # not the L of MLO
        (order(sps_description="leftover contrast, Ductography"), None),  # whole words only
        (order(requested_procedure_description="Galactography"), None),
        (order(requested_procedure_description="left", sps_description="right"), None),  # both
    ],
)
def test_the_side_is_found_in_whole_words(item: WorklistItem, side: str | None) -> None:
    assert order_side(item, TERMS).side == side


def test_the_evidence_names_where_each_side_word_was_found() -> None:
    item = order(
        requested_procedure_description="Galactography left breast",
        sps_description="Galactography left",
    )
    found = order_side(item, TERMS)
    assert found.evidence == (
        "Requested Procedure Description: left",
        "Scheduled Procedure Step Description: left",
    )
    both = order_side(order(requested_procedure_description="left", sps_description="R"), TERMS)
    assert both.conflicting and both.side is None


@pytest.mark.parametrize("entry", ["left", "left=X", "=L", "le ft=L", "l3ft=L"])
def test_a_bad_term_is_named(entry: str) -> None:
    with pytest.raises(ValueError, match=entry.split("=", maxsplit=1)[0] or "="):
        parse_terms([entry])


def test_a_word_for_both_sides_is_refused() -> None:
    with pytest.raises(ValueError, match="both sides"):
        parse_terms(["links=L", "links=R"])
