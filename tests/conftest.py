"""Shared fixtures: strict pydicom, and a guard that fails a test leaking threads or files."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

import pydicom.config
import pytest

from tests.waiting import eventually

pydicom.config.settings.reading_validation_mode = pydicom.config.WARN
pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE
pydicom.config.settings.INVALID_KEYWORD_BEHAVIOR = "RAISE"

LEAK_GRACE_S = 5.0


def _fd_targets() -> dict[str, str]:
    targets = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    return targets


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves threads running or file descriptors open behind it."""
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    threads_before = set(threading.enumerate())
    targets_before = _fd_targets()
    yield
    leaked: list[threading.Thread] = []
    opened: dict[str, str] = {}

    def settled() -> bool:
        nonlocal leaked, opened
        leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        # A descriptor is left open when a number now names what it did not name before.
        opened = {fd: t for fd, t in _fd_targets().items() if targets_before.get(fd) != t}
        if leaked or opened:
            # pynetdicom keeps some closed associations' sockets in reference cycles: what the
            # garbage collector frees is not a leak of ours.
            gc.collect()
        return not leaked and not opened

    eventually(settled, LEAK_GRACE_S)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"
    assert not opened, f"{len(opened)} file descriptor(s) left open: {_described(opened)}"


def _described(opened: dict[str, str]) -> dict[str, str]:
    """Each leaked descriptor with, for a socket, its line of /proc/net (its local and remote
    addresses in hex, its state): which peer it talked to is the first clue to whose it is."""
    described = dict(opened)
    for fd, target in opened.items():
        if not target.startswith("socket:["):
            continue
        inode = target.removeprefix("socket:[").removesuffix("]")
        for table in ("tcp", "tcp6", "unix"):
            with contextlib.suppress(OSError), open(f"/proc/net/{table}") as lines:
                found = [line.split() for line in lines if f" {inode} " in line]
                if found:
                    described[fd] = f"{target} {table} {' '.join(found[0][1:4])}"
    return described


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: the test owns long-lived resources")


#: Modules whose tests are slow — each over a second, or a subprocess (the CLI, ``galacto
#: serve``), a pty, a browser, a long exam over loopback, scaled real time, or a server started
#: and stopped per test (a pynetdicom or HTTP server takes up to its 0.5 s poll to stop) — so
#: that ``make unit`` (``-m "not slow and not interop"``) runs the pure and quick in-process
#: tests in under a minute. ``make test`` runs everything. A test may also carry
#: ``@pytest.mark.slow`` itself.
SLOW_MODULES = frozenset(
    {
        "associations",
        "audit_cli",
        "console",
        "console_access",
        "console_browser",
        "crash_restart",
        "data_keeping",
        "demo_cli",
        "dose_audit",
        "dose_checks_cli",
        "dose_import",
        "exam_room",
        "fuzz",
        "hospital_integration",
        "inject_cli",
        "injection_safety",
        "injector_driver",
        "injector_faults",
        "injector_sim",
        "injector_sim_cli",
        "injector_sim_faults",
        "injector_soak",
        "mpps_scu",
        "mwl_scp",
        "mwl_scu",
        "mwl_scu_ris",
        "outbox",
        "pacs_sim",
        "records_cli",
        "ris_sim",
        "ris_sim_cli",
        "serial_port",
        "serve_cli",
        "sigkill_campaign",
        "storage_scp",
        "unit_facing_server",
        "unit_sim",
        "unit_sim_server",
        "worklist_cli",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem.removeprefix("test_")
        if item.path.parent.name in ("integration", "fuzz") and module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With GALACTO_REQUIRE_PEERS=1 (CI), a test skipped for a missing peer fails instead.

    `make test` installs DCMTK, dicom3tools and openssl when it runs as root; in CI an interop
    test that skipped would be a green run that never talked to the peer.
    """
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("GALACTO_REQUIRE_PEERS") != "1" or not report.skipped:
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    if "not installed" in reason:
        report.outcome = "failed"
        report.longrepr = f"required peer missing (GALACTO_REQUIRE_PEERS=1): {reason}"
