"""The controller's injector link (acquisition/injector_link.py) against the simulated pump in
process (``injsim://``): up and journaled, down and retried no more often than RECONNECT_S,
re-initialised by an admin (journaled first, refused while injecting), closed when ours."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from acquisition import injector_link, settings
from acquisition.exam.model import ExamError
from acquisition.injector_link import InjectorLink
from acquisition.journal import Journal
from device_drivers.base import InjectorABC
from tests.injector_clock import simulated_injector

pytestmark = pytest.mark.timeout(60)


def injector_settings(url: str) -> settings.InjectorSettings:
    return settings.load(None, environ={}, overrides={"injector.url": url}).injector


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "galacto.db", key=b"k" * 32) as opened:
        yield opened


@dataclass
class Exam:
    """What the link asks of the exam: is an injection running, and take this driver."""

    injecting: bool = False
    attached: list[InjectorABC | None] = field(default_factory=list)

    def snapshot(self) -> Any:
        injecting = self.injecting

        class State:
            is_injecting = injecting

        class Snapshot:
            state = State()

        return Snapshot()

    def attach_injector(self, driver: InjectorABC | None) -> None:
        self.attached.append(driver)


def kinds(journal: Journal) -> list[str]:
    return [entry.kind for entry in journal.entries()]


def test_a_simulated_link_comes_up_and_is_journaled(tmp_path: Path, journal: Journal) -> None:
    with simulated_injector(tmp_path) as (_, url):
        link = InjectorLink(injector_settings(url), journal)
        assert link.reinitialisable and not link.connected
        link.connect()
        assert link.connected and link.driver is not None and link.driver.link_up
        link.connect()  # once up, nothing more
        assert kinds(journal) == ["injector-simulated"]
        link.close()
        assert link.driver is None


def test_a_link_that_is_down_is_tried_again_at_most_every_reconnect_s(
    tmp_path: Path, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = InjectorLink(injector_settings(str(tmp_path / "no-such-pty")), journal)
    tries: list[float] = []
    driver = link.driver
    assert driver is not None
    real_connect = driver.connect

    def counted() -> Any:
        tries.append(1)
        return real_connect()

    monkeypatch.setattr(driver, "connect", counted)
    link.connect()
    assert not link.connected and len(tries) == 1
    monkeypatch.setattr(injector_link, "RECONNECT_S", 3600.0)
    link.retry()
    link.retry()
    assert len(tries) == 2  # the first retry is due at once, the next an hour later
    link.close()
    assert kinds(journal) == []


def test_reinitialised_journaled_first_and_refused_while_injecting(
    tmp_path: Path, journal: Journal
) -> None:
    with simulated_injector(tmp_path) as (_, url):
        link = InjectorLink(injector_settings(url), journal)
        link.connect()
        old = link.driver
        replaced: list[InjectorABC] = []
        link.on_replaced.append(replaced.append)

        with pytest.raises(ExamError, match="not while an injection runs"):
            link.reinitialise(Exam(injecting=True), "admin1")  # type: ignore[arg-type]
        assert link.driver is old and "injector-reinitialised" not in kinds(journal)

        exam = Exam()
        link.reinitialise(exam, "admin1")  # type: ignore[arg-type]
        assert link.driver is not old and replaced == [link.driver]
        assert exam.attached == [None, link.driver]
        assert link.connected and link.driver is not None and link.driver.link_up
        assert old is not None and not old.link_up  # the old driver was closed
        (entry,) = [e for e in journal.entries() if e.kind == "injector-reinitialised"]
        assert entry.operator == "admin1" and entry.payload["url"] == url
        link.close()


def test_a_driver_given_by_the_caller_is_neither_reinitialised_nor_closed(
    tmp_path: Path, journal: Journal
) -> None:
    with simulated_injector(tmp_path) as (_, url):
        given = injector_link.wiring.driver_from(injector_settings(url))
        link = InjectorLink(injector_settings(url), journal, driver=given)
        link.connect()
        assert not link.reinitialisable
        with pytest.raises(ValueError, match="no injector is configured"):
            link.reinitialise(Exam(), "admin1")  # type: ignore[arg-type]
        link.close()
        assert given.link_up  # still the caller's
        given.close()
