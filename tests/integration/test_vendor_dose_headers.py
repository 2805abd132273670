"""Vendor-like dose headers over real C-STORE to a running controller (issue 9, tests).

A controller (``galacto serve``'s object graph: dose log, journal, unit-facing SCPs, tick) is
sent what real units send: a GE header with Organ Dose in dGy, a Hologic image and its RDSR
with the Exposure unit spelled ``uAs``, a Siemens magnification view lacking fields, a Fuji
header with no HVL (served by the physicist's table of that unit), a GE header with mGy written
into the dGy field, absurd values, and a phantom. The rows, their flags, the alerts and the
journal are asserted.

The AGDs of the GE, Hologic and Fuji headers were worked by hand from the dose brief's tables
(dose.md §1, §3: g at table cells, s by target/filter, the inverse-square example (658/640)²),
not produced by galacto's model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from acquisition import settings
from acquisition.controller import Controller
from acquisition.dose_log import DoseLog
from acquisition.dose_policy import DEFAULT_LEVELS
from dicom_nodes.datasets.dose_extract import from_image_header
from dose.levels import load_levels
from dose.policy import DosePolicy
from dose.totals import per_breast_totals
from tests.dose_factories import (
    MG_FOR_PRESENTATION,
    XRAY_RDSR,
    Exposure,
    mg_image,
    rdsr,
    scu_ae,
)
from tests.serve_process import JOURNAL_KEY
from tests.waiting import eventually, wait_until

STUDY = "1.2.826.0.1.3680043.8.498.9001"

# GE, Rh/Rh, 50 mm, HVL 0.45 reported, K (0040,8302) 6.0 mGy at the surface:
#   g(0.45 mm Al, 5 cm) = 0.232, s(Rh/Rh) = 1.061 → 6.0 × 0.232 × 1.061 = 1.476912 mGy
GE_AGD = 6.0 * 0.232 * 1.061
# Hologic, W/Rh, 60 mm MLO, SID 700, RDSR 111636 5.0 mGy at 4.2 cm above the support,
# HVL 0.55: K = 5.0 × (658/640)² = 5.0 × 1.05704 (dose.md §1); g(0.55, 6 cm) = 0.236,
# s(W/Rh) = 1.042 → 1.29979 mGy
HOLOGIC_K = 5.0 * (658 / 640) ** 2
HOLOGIC_AGD = HOLOGIC_K * 0.236 * 1.042
# Fuji, W/Rh 28 kV, 45 mm, no HVL: the unit's table gives 0.50 mm Al at 28 kV; K 8.0 mGy:
#   g(0.50, 4.5 cm) = 0.285, s = 1.042 → 2.37576 mGy, above EUREF acceptable 2.0 mGy
#   (40 mm PMMA ≙ 45 mm breast)
FUJI_AGD = 8.0 * 0.285 * 1.042
# GE writing mGy into the dGy field: 1.37 "dGy" read as 137 mGy; the header's own numbers
# give K 6.378 mGy, Rh/Rh, HVL 0.45, 50 mm → 6.378 × 0.232 × 1.061 = 1.570 mGy
GE_WRONG_UNIT_DANCE = 6.378 * 0.232 * 1.061

FUJI_HVL_TABLE = """
[unit]
manufacturer = "FUJIFILM Corporation"
model = "FDR MS-3500"
measured = "2026-02-01 annual survey"

[hvl_mm_al."W/Rh"]
"26" = 0.48
"28" = 0.50
"30" = 0.52
"""
SITE_LEVELS = '[[level]]\nid = "local-exam-breast"\nmgy = 8.0\n'


def vendor_image(
    exposure: Exposure,
    manufacturer: str,
    model: str,
    *,
    anode: str = "TUNGSTEN",
    filt: str = "RHODIUM",
    esak_mgy: float | None = None,
    organ_dose_dgy: float | None = None,
    drop: tuple[str, ...] = (),
    patient_id: str = "PID1",
    **values: Any,
) -> Dataset:
    ds = mg_image(exposure, study_uid=STUDY, accession="VEND1")
    ds.Manufacturer, ds.ManufacturerModelName = manufacturer, model
    ds.AnodeTargetMaterial, ds.FilterMaterial = anode, filt
    ds.PatientID = patient_id
    if esak_mgy is not None:
        ds.EntranceDoseInmGy = f"{esak_mgy:.6g}"
    if organ_dose_dgy is not None:
        ds.OrganDose = f"{organ_dose_dgy:.8g}"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    for keyword in drop:
        delattr(ds, keyword)
    return ds


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    data = tmp_path_factory.mktemp("vendors")
    (data / "fuji.toml").write_text(FUJI_HVL_TABLE)
    (data / "levels.toml").write_text(SITE_LEVELS)
    config = settings.load(
        None,
        environ={},
        overrides={
            "database.path": str(data / "galacto.db"),
            "dicom.storage_dir": str(data / "objects"),
            "dicom.port": 0,
            "site.journal_key": JOURNAL_KEY,
            "dose.hvl_tables": [str(data / "fuji.toml")],
            "dose.reference_levels_file": str(data / "levels.toml"),
        },
    )
    with Controller(config, console=False) as running:
        yield running


@pytest.fixture(scope="module")
def sent(controller: Controller) -> dict[str, Any]:
    """Every vendor's objects, stored once over one association; their statuses by name."""
    ge = Exposure(laterality="R", view="CC", thickness_mm=50, hvl_mm_al=0.45, kvp=29)
    hologic = Exposure(
        laterality="L", view="MLO", thickness_mm=60, hvl_mm_al=0.55, esak_mgy=5.0,
        agd_mgy=HOLOGIC_AGD, exposure_uas=120000.0, kvp=30,
    )  # fmt: skip
    siemens = Exposure(laterality="L", view="ML", magnified=True, agd_mgy=2.1)
    fuji = Exposure(laterality="R", view="CC", thickness_mm=45, kvp=28)
    ge_wrong = Exposure(laterality="R", view="MLO", thickness_mm=50, hvl_mm_al=0.45, kvp=29)
    absurd = Exposure(laterality="R", view="CC")
    phantom = Exposure(laterality="L", view="CC", thickness_mm=45, agd_mgy=3.5)
    objects: dict[str, tuple[Exposure, Dataset]] = {
        "ge": (ge, vendor_image(
            ge, "GE MEDICAL SYSTEMS", "Senographe Essential", anode="RHODIUM",
            esak_mgy=6.0, organ_dose_dgy=GE_AGD / 100.0,
        )),
        "hologic": (hologic, vendor_image(
            hologic, "HOLOGIC, Inc.", "Selenia Dimensions",
            esak_mgy=HOLOGIC_K, organ_dose_dgy=HOLOGIC_AGD / 100.0,
            DistanceSourceToEntrance=640, drop=("HalfValueLayer",),
        )),
        "siemens": (siemens, vendor_image(
            siemens, "SIEMENS", "Mammomat Revelation",
            drop=("HalfValueLayer", "FocalSpots", "DistanceSourceToDetector",
                  "DistanceSourceToEntrance", "CompressionForce", "EntranceDoseInmGy"),
        )),
        "fuji": (fuji, vendor_image(
            fuji, "FUJIFILM Corporation", "FDR MS-3500",
            esak_mgy=8.0, organ_dose_dgy=FUJI_AGD / 100.0, drop=("HalfValueLayer",),
        )),
        "ge_wrong_unit": (ge_wrong, vendor_image(
            ge_wrong, "GE MEDICAL SYSTEMS", "Senographe Essential", anode="RHODIUM",
            esak_mgy=6.378, organ_dose_dgy=1.37,  # 1.37 mGy, written into the dGy field
        )),
        "absurd": (absurd, vendor_image(
            absurd, "SIEMENS", "Mammomat Revelation",
            organ_dose_dgy=1e6, esak_mgy=-5.0, HalfValueLayer=5, CompressionForce=-20,
        )),
        "phantom": (phantom, vendor_image(
            phantom, "FUJIFILM Corporation", "FDR MS-3500", patient_id="PHANTOM-PMMA45",
            esak_mgy=12.0, drop=("HalfValueLayer",),
        )),
    }  # fmt: skip
    hologic_rdsr = rdsr([hologic], study_uid=STUDY, accession="VEND1")
    hologic_rdsr.Manufacturer, hologic_rdsr.ManufacturerModelName = (
        "HOLOGIC, Inc.",
        "Selenia Dimensions",
    )
    for item in hologic_rdsr.ContentSequence[0].ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "113736":  # Exposure, as Hologic spells
            item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = "uAs"
    endpoints = controller.endpoints()
    ae: Any = scu_ae(MG_FOR_PRESENTATION, XRAY_RDSR)
    assoc = ae.associate(endpoints.host, endpoints.port, ae_title=endpoints.ae_title)
    statuses: dict[str, int] = {}
    try:
        assert assoc.is_established
        for name, (_, ds) in objects.items():
            statuses[name] = int(assoc.send_c_store(ds).Status)
        statuses["hologic_rdsr"] = int(assoc.send_c_store(hologic_rdsr).Status)
    finally:
        assoc.release()
        ae.shutdown()
    rows = {row["sop_instance_uid"]: row for row in controller.dose_log.list_exposures(study=STUDY)}
    return {
        "statuses": statuses,
        "rows": {name: rows[exposure.sop_instance_uid] for name, (exposure, _) in objects.items()},
        "all_rows": list(rows.values()),
    }


def test_every_object_is_stored_and_every_exposure_logged(sent: dict[str, Any]) -> None:
    assert set(sent["statuses"].values()) == {0x0000}, str(sent["statuses"])
    assert len(sent["all_rows"]) == 7  # the Hologic RDSR merged into its image's row


def test_ge_organ_dose_in_dgy_agrees_with_the_dance_check(sent: dict[str, Any]) -> None:
    row = sent["rows"]["ge"]
    assert row["agd_reported_mgy"] == pytest.approx(GE_AGD)
    assert row["agd_computed_mgy"] == pytest.approx(GE_AGD, rel=1e-6)
    assert (row["dance_g"], row["dance_c"], row["dance_s"]) == (
        pytest.approx(0.232),
        1.0,
        pytest.approx(1.061),
    )
    assert row["dance_check"] == "agrees" and row["plausibility"] == ""
    assert "Entrance Dose in mGy (0040,8302)" in row["agd_computed_basis"]
    assert "c = 1" in row["agd_computed_basis"]
    assert row["alert_flags"] == ""


def test_hologic_uas_is_read_and_the_mapping_recorded(sent: dict[str, Any]) -> None:
    row = sent["rows"]["hologic"]
    assert row["sources"] == "image_header,rdsr"
    assert row["exposure_uas"] == pytest.approx(120000.0)  # 120 mAs, not lost
    assert "exposure_uas: unit 'uAs' read as UCUM 'uA.s' (vendor spelling)" in row["review_reasons"]
    assert (row["esak_mgy"], row["esak_reference_point"]) == (pytest.approx(5.0), "113865")
    assert row["dance_k_mgy"] == pytest.approx(HOLOGIC_K)
    assert row["agd_computed_mgy"] == pytest.approx(HOLOGIC_AGD, rel=1e-6)
    assert row["dance_check"] == "agrees"
    assert "UK national DRL: 1.300 ≤ 2.500 mGy (50–60 mm band)" in row["level_comparison"]


def test_a_view_lacking_fields_is_kept_with_the_reason_there_is_no_check(
    sent: dict[str, Any],
) -> None:
    row = sent["rows"]["siemens"]
    assert row["agd_reported_mgy"] == pytest.approx(2.1)
    assert row["focal_spot_mm"] is None and row["esak_mgy"] is None
    assert row["agd_computed_mgy"] is None
    assert row["agd_computed_basis"] == (
        "not computed: no entrance air kerma (RDSR 111636 or (0040,8302))"
    )
    assert row["level_comparison"] == "Local level, magnified views: no level set"
    assert row["plausibility"] == ""


def test_fuji_hvl_from_the_units_table_and_above_the_euref_level(
    sent: dict[str, Any], controller: Controller
) -> None:
    row = sent["rows"]["fuji"]
    assert row["hvl_mm_al"] is None and row["dance_hvl_mm_al"] == pytest.approx(0.50)
    assert "from the HVL table of FUJIFILM Corporation FDR MS-3500" in row["agd_computed_basis"]
    assert row["agd_computed_mgy"] == pytest.approx(FUJI_AGD, rel=1e-6)
    assert (
        "EUREF acceptable: 2.376 > 2.000 mGy (45 mm breast ≙ 40 mm PMMA)" in row["level_comparison"]
    )
    (alert,) = controller.dose_log.alerts(exposure_ids=[row["id"]])
    assert (alert["level_id"], alert["limit_mgy"]) == ("euref-acceptable", 2.0)
    assert alert["value_mgy"] == pytest.approx(FUJI_AGD)


def test_mgy_in_the_dgy_field_is_unit_suspected(
    sent: dict[str, Any], controller: Controller
) -> None:
    row = sent["rows"]["ge_wrong_unit"]
    assert row["agd_reported_mgy"] == pytest.approx(137.0)  # kept as received
    assert row["agd_computed_mgy"] == pytest.approx(GE_WRONG_UNIT_DANCE, rel=1e-6)
    assert row["dance_check"] == "unit suspected"
    assert (
        "unit suspected: reported AGD 137 mGy is 87.3 × the Dance figure 1.57 mGy"
        in row["plausibility"]
    )
    (alert,) = controller.dose_log.alerts(exposure_ids=[row["id"]])
    assert alert["level_id"] == "implausible" and "unit suspected" in alert["detail"]


def test_absurd_values_are_flagged_and_alerted(
    sent: dict[str, Any], controller: Controller
) -> None:
    row = sent["rows"]["absurd"]
    for reason in ("agd_reported_mgy 1e+08 mGy", "esak_mgy -5 mGy", "hvl_mm_al 5 mm Al",
                   "compression_force_n -20 N"):  # fmt: skip
        assert reason in row["plausibility"]
    assert [a["level_id"] for a in controller.dose_log.alerts(exposure_ids=[row["id"]])] == [
        "implausible"
    ]


def test_a_phantom_is_flagged_and_left_out_of_levels_and_totals(
    sent: dict[str, Any], controller: Controller
) -> None:
    row = sent["rows"]["phantom"]
    assert row["qa_reason"] == "patient ID or name matches '*PHANTOM*'"
    assert controller.dose_log.alerts(exposure_ids=[row["id"]]) == []
    assert "physics/QA" in row["level_comparison"]


def test_one_total_per_breast_says_what_it_left_out(sent: dict[str, Any]) -> None:
    totals = per_breast_totals(sent["all_rows"])
    right, left = totals.breasts["R"], totals.breasts["L"]
    assert right.agd_mgy == pytest.approx(GE_AGD + FUJI_AGD)
    assert right.left_out == {"implausible": 2}
    assert left.agd_mgy == pytest.approx(HOLOGIC_AGD + 2.1)
    assert left.left_out == {"physics/QA": 1}


def test_every_alert_is_journaled_with_its_exposure(
    sent: dict[str, Any], controller: Controller
) -> None:
    alerts = controller.dose_log.alerts()
    assert {a["level_id"] for a in alerts} == {"euref-acceptable", "implausible"}
    assert len(alerts) == 3

    def journaled() -> list[dict[str, Any]]:
        return [e.payload for e in controller.journal.entries() if e.kind == "dose-alert"]

    wait_until(lambda: len(journaled()) == len(alerts), 10, "every alert in the journal")
    by_id = {p["alert_id"]: p for p in journaled()}
    for alert in alerts:
        entry = by_id[alert["id"]]
        assert entry["sop_instance_uid"] == alert["sop_instance_uid"]
        assert (entry["level_id"], entry["value_mgy"]) == (alert["level_id"], alert["value_mgy"])
    assert eventually(lambda: controller.dose_log.unjournaled_alerts() == [], 10)
    assert controller.journal.verify().ok


def test_the_patients_age_is_kept_and_never_the_birth_date(
    controller: Controller, sent: dict[str, Any]
) -> None:
    exposure = Exposure(laterality="L")
    ds = vendor_image(exposure, "Acme", "Mammo 3000", PatientBirthDate="19880301")
    ds.AcquisitionDateTime = "20260215101500"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    endpoints = controller.endpoints()
    ae: Any = scu_ae(MG_FOR_PRESENTATION)
    assoc = ae.associate(endpoints.host, endpoints.port, ae_title=endpoints.ae_title)
    try:
        assert int(assoc.send_c_store(ds).Status) == 0
    finally:
        assoc.release()
        ae.shutdown()
    (row,) = [
        r for r in controller.dose_log.list_exposures(study=STUDY)
        if r["sop_instance_uid"] == ds.SOPInstanceUID
    ]  # fmt: skip
    assert row["patient_age_years"] == 37
    assert not any("birth" in column for column in row)
    assert "19880301" not in repr(row)


def test_an_alert_raised_before_a_crash_is_journaled_at_the_next_start(tmp_path: Path) -> None:
    database = tmp_path / "galacto.db"
    with DoseLog(database, policy=DosePolicy(levels=load_levels([DEFAULT_LEVELS]))) as log:
        absurd = mg_image(Exposure(), study_uid=STUDY)
        absurd.CompressionForce = -20
        log.record([from_image_header(absurd)])  # the process dies before its tick
        assert len(log.unjournaled_alerts()) == 1
    config = settings.load(
        None,
        environ={},
        overrides={
            "database.path": str(database),
            "dicom.storage_dir": str(tmp_path / "objects"),
            "dicom.port": 0,
            "site.journal_key": JOURNAL_KEY,
        },
    )
    with Controller(config, console=False) as restarted:
        # journaled, then marked so (two commits: the test may look in between)
        wait_until(
            lambda: restarted.dose_log.unjournaled_alerts() == [],
            10,
            "the alert journaled and marked so",
        )
        assert [e.kind for e in restarted.journal.entries()].count("dose-alert") == 1
