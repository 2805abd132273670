"""The console as `galacto serve` assembles it (in process): the admin re-initialises the
injector driver and sees the room without a patient's identity. The simulated room (injector on
a pty, RIS, PACS) stands around the controller."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from acquisition import settings
from acquisition.accounts import Accounts
from acquisition.controller import Controller
from simulators.room import SimulatedRoom
from tests.console_room import PASSWORD, command, login, request
from tests.serve_process import JOURNAL_KEY
from tests.waiting import wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("serve-process")]


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    with SimulatedRoom(time_scale=20.0, seed=7) as room:
        overrides = {**room.controller_settings(tmp_path), "site.journal_key": JOURNAL_KEY}
        config = settings.load(None, environ={}, overrides=overrides)
        with Accounts(config.database.path) as accounts:
            accounts.add("admin1", "admin", PASSWORD)
            accounts.add("tech1", "technologist", PASSWORD)
        with Controller(config) as running:
            yield running


def test_the_admin_reinitialises_the_injector_driver(controller: Controller) -> None:
    url = controller.console.url
    wait_until(lambda: controller.injector is not None and controller.injector.link_up, 20.0)
    before = controller.injector
    tech = login(url, "tech1")
    status, document = command(url, "reinitialise-injector", {}, tech)
    assert status == 403 and document["required_role"] == "admin"

    admin = login(url, "admin1")
    status, document = command(url, "reinitialise-injector", {}, admin)
    assert status == 200, document
    assert controller.injector is not before and controller.console.backend.injector is (
        controller.injector
    )
    wait_until(lambda: controller.injector.link_up, 20.0, "the new driver's link")
    status, _, raw = request(url, headers=admin.headers())
    state = json.loads(raw)
    assert state["injector"]["status"] == "ready" and state["patient"] is None
    assert controller.journal is not None
    (entry,) = [e for e in controller.journal.entries() if e.kind == "injector-reinitialised"]
    assert entry.operator == "admin1" and entry.payload["console"]["role"] == "admin"
