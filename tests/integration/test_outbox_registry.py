"""The outbox knows no message kind: it sends what its registered senders send (issue 13 §5).

A sender of our own making (a C-ECHO per message, against a Verification SCP on loopback) is
registered with the bare queue: the queue opens the association, hands each message to it,
records the outcome, keeps the order the sender asks for and leaves out of the alerts what the
sender says is internal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_nodes.hospital.dicom_outbox import DicomOutbox
from dicom_nodes.hospital.outbox import Message, Outbox, OutboxError, Outcome, SendResult, State
from dicom_nodes.hospital.scu import Peer, status_of
from dicom_nodes.network import Timeouts

FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)


class EchoSender:
    """Sends each message as one C-ECHO; remembers what it sent, in order."""

    destination = "pacs"

    def __init__(self, *, ordered: bool = False, alerted: bool = True) -> None:
        self.ordered = ordered
        self.alerted = alerted
        self.sent: list[int] = []
        self.rounds = 0

    def send(self, assoc: Association, message: Message) -> SendResult:
        status = status_of(assoc.send_c_echo())
        self.sent.append(message.id)
        return Outcome.DONE, status, None, None

    def contexts(self, messages: Sequence[Message]) -> list[PresentationContext]:
        return [build_context(Verification)]

    def before_round(self, now_s: float) -> None:
        self.rounds += 1

    def handlers(self) -> list[tuple[Any, ...]]:
        return []


@pytest.fixture
def echo_peer() -> Iterator[Peer]:
    ae = AE("ECHOSCP")
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield Peer("127.0.0.1", server.server_address[1], "ECHOSCP", timeouts=FAST)
    finally:
        ae.shutdown()


def test_the_queue_sends_a_kind_only_through_its_registered_sender(
    tmp_path: Path, echo_peer: Peer
) -> None:
    outbox = Outbox(tmp_path / "db.sqlite", {"pacs": echo_peer})
    with pytest.raises(OutboxError, match="no sender"):
        outbox.enqueue("c_store", "pacs", Verification, "1.2.3")
    sender = EchoSender()
    outbox.register(["c_store"], sender)
    outbox.enqueue("c_store", "pacs", Verification, "1.2.3")
    outbox.enqueue("c_store", "pacs", Verification, "1.2.3")  # once per SOP Instance UID
    assert outbox.run_once() == 1
    assert sender.rounds == 1
    (message,) = outbox.messages()
    assert (message.state, message.last_status) == (State.SENT, 0x0000)
    assert sender.sent == [message.id]


def test_a_kind_has_one_sender(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "db.sqlite", {})
    outbox.register(["mpps_set"], EchoSender())
    with pytest.raises(ValueError, match="already registered"):
        outbox.register(["mpps_set"], EchoSender())


def test_an_ordered_sender_s_messages_leave_one_instance_at_a_time_in_order(
    tmp_path: Path, echo_peer: Peer
) -> None:
    outbox = Outbox(tmp_path / "db.sqlite", {"pacs": echo_peer})
    sender = EchoSender(ordered=True)
    outbox.register(["mpps_create", "mpps_set"], sender)
    outbox.enqueue("mpps_create", "pacs", Verification, "1.2.3")
    outbox.enqueue("mpps_set", "pacs", Verification, "1.2.3")
    outbox.enqueue("mpps_set", "pacs", Verification, "1.2.3")
    # the N-SETs become sendable only as the one before them is sent, all in one association
    assert outbox.run_once() == 3
    assert sender.sent == [m.id for m in outbox.messages()]


def test_failures_of_an_internal_kind_are_not_alerted(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    outbox = Outbox(db, {"pacs": Peer("127.0.0.1", 9, "X")}, clock=lambda: 100.0)
    outbox.register(["c_store"], EchoSender())
    outbox.register(["commitment"], EchoSender(alerted=False))
    outbox.enqueue("c_store", "pacs", Verification, "1.2.3")
    outbox.enqueue("commitment", "pacs", Verification, "1.2.4")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE outbox_messages SET state = 'failed'")
    conn.close()
    assert [m.sop_instance_uid for m in outbox.failed(0.0)] == ["1.2.3"]


def test_the_dicom_outbox_registers_its_three_senders(tmp_path: Path) -> None:
    outbox = DicomOutbox(tmp_path / "db.sqlite", {})
    assert sorted(outbox.senders) == ["c_store", "commitment", "mpps_create", "mpps_set"]
    assert outbox.senders["mpps_create"] is outbox.senders["mpps_set"] is outbox.mpps
    assert outbox.settled_states == ("sent", "committed")
    committed = DicomOutbox(tmp_path / "db.sqlite", {}, storage_commitment=True)
    assert committed.settled_states == ("committed",)
