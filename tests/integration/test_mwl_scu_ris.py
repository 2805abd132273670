"""Our MWL SCU and the local RIS order store against the simulated RIS (real MWL SCP)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_nodes.hospital.mwl_scu import WorklistQuery, find_worklist
from dicom_nodes.hospital.ris_orders import RisOrderStore, WorklistRefresher, todays_query
from dicom_nodes.hospital.scu import Peer
from dicom_nodes.network import Timeouts
from simulators.ris import SimulatedRis

FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)
DAY = dt.date.today()


@pytest.fixture
def ris() -> Iterator[SimulatedRis]:
    with SimulatedRis(orders=6, day=DAY, timeouts=FAST) as sim:
        yield sim


def peer(ris: SimulatedRis) -> Peer:
    host, port = ris.address
    return Peer(host, port, "RIS", calling_ae="GALACTO", timeouts=FAST)


def test_broad_query_returns_every_order_with_names_decoded(ris: SimulatedRis) -> None:
    result = find_worklist(peer(ris), WorklistQuery.broad("GALACTO", DAY, DAY))
    by_accession = {i.accession_number: i for i in result.items}
    assert set(by_accession) == {o.accession_number for o in ris.orders()}
    for order in ris.orders():
        item = by_accession[order.accession_number]
        assert item.patient.name == order.patient.name
        assert item.sps_id == order.sps_id
        assert item.study_instance_uid == order.study_instance_uid
        assert item.sps_start == order.start
    assert any(not i.patient.name.isascii() for i in result.items)


def test_patient_query_finds_one_patient(ris: SimulatedRis) -> None:
    wanted = ris.orders()[2]
    query = WorklistQuery.patient(patient_id=wanted.patient.patient_id)
    (item,) = find_worklist(peer(ris), query).items
    assert item.accession_number == wanted.accession_number


def test_a_capped_query_cancels_at_the_ris(ris: SimulatedRis) -> None:
    ris.faults.find_response_delay_s = 0.02
    result = find_worklist(peer(ris), WorklistQuery(station_ae="GALACTO"), max_results=2)
    assert result.truncated and len(result.items) == 2
    assert ris.wait_for(lambda: ris.cancelled_queries() == 1, 5)


def test_refresh_upserts_and_marks_withdrawn_orders(ris: SimulatedRis, tmp_path: Path) -> None:
    store = RisOrderStore(tmp_path / "galacto.db")
    refresher = WorklistRefresher(store, peer(ris), lambda: todays_query("GALACTO"))
    first = refresher.refresh_once()
    assert (first.received, first.added, first.disappeared) == (6, 6, 0)
    withdrawn = ris.orders()[0]
    ris.withdraw_order(withdrawn.accession_number)
    second = refresher.refresh_once()
    assert (second.added, second.disappeared) == (0, 1)
    active = {o.item.accession_number for o in store.orders()}
    assert withdrawn.accession_number not in active and len(active) == 5
    everything = store.orders(include_disappeared=True)
    (gone,) = [o for o in everything if o.disappeared]
    assert gone.item.accession_number == withdrawn.accession_number
    ris.add_order(withdrawn)
    third = refresher.refresh_once()
    assert third.reappeared == 1 and len(store.orders()) == 6


def test_a_capped_refresh_marks_nothing(ris: SimulatedRis, tmp_path: Path) -> None:
    store = RisOrderStore(tmp_path / "galacto.db")
    full = WorklistRefresher(store, peer(ris), lambda: todays_query("GALACTO"))
    full.refresh_once()
    capped = WorklistRefresher(store, peer(ris), lambda: todays_query("GALACTO"), max_results=2)
    summary = capped.refresh_once()
    assert summary.truncated and summary.disappeared == 0
    assert len(store.orders()) == 6


def test_orders_outside_the_queried_days_are_not_marked(ris: SimulatedRis, tmp_path: Path) -> None:
    store = RisOrderStore(tmp_path / "galacto.db")
    WorklistRefresher(store, peer(ris), lambda: todays_query("GALACTO")).refresh_once()
    tomorrow = DAY + dt.timedelta(days=1)
    other_day = WorklistRefresher(
        store, peer(ris), lambda: WorklistQuery.broad("GALACTO", tomorrow, tomorrow)
    )
    assert other_day.refresh_once().disappeared == 0
    assert len(store.orders()) == 6


def test_the_refresher_thread_survives_an_outage_and_stops(
    ris: SimulatedRis, tmp_path: Path
) -> None:
    store = RisOrderStore(tmp_path / "galacto.db")
    refresher = WorklistRefresher(
        store, peer(ris), lambda: todays_query("GALACTO"), interval_s=30.0
    )
    refresher.start()
    try:
        assert refresher.wait_for_refreshes(1, 10)
        assert refresher.last_error is None and len(store.orders()) == 6
        ris.down()
        refresher.wake()
        assert refresher.wait_for_refreshes(2, 10)
        assert refresher.last_error is not None and "RIS@127.0.0.1" in refresher.last_error
        assert len(store.orders()) == 6  # kept while the RIS is away
    finally:
        refresher.stop()
