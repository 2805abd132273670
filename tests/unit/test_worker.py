"""The background thread of rounds (dicom_nodes/hospital/worker.py)."""

from __future__ import annotations

import threading

import pytest

from dicom_nodes.hospital.worker import Worker


class Counter(Worker):
    thread_name = "counter"

    def __init__(self, wait_s: float | None) -> None:
        super().__init__()
        self.wait_s = wait_s
        self.rounds = 0
        self.round_done = threading.Condition()

    def work(self) -> float | None:
        with self.round_done:
            self.rounds += 1
            self.round_done.notify_all()
        return self.wait_s

    def wait_rounds(self, count: int) -> bool:
        with self.round_done:
            return self.round_done.wait_for(lambda: self.rounds >= count, 5.0)


def test_a_wake_ends_the_wait_and_stop_ends_the_thread() -> None:
    worker = Counter(wait_s=3600.0)
    worker.start()
    try:
        assert worker.wait_rounds(1)
        worker.wake()
        assert worker.wait_rounds(2)  # long before the hour
        with pytest.raises(RuntimeError, match="already running"):
            worker.start()
    finally:
        worker.stop(5.0)
    assert worker.stopping
    assert not any(t.name == "counter" for t in threading.enumerate())


def test_none_means_at_once() -> None:
    worker = Counter(wait_s=None)
    worker.start()
    try:
        assert worker.wait_rounds(50)
    finally:
        worker.stop(5.0)
