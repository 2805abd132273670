"""`galacto serve` as a separate process, driven through its console like a technologist would.

:class:`ServeProcess` writes a TOML configuration, makes the technologist's console account
(:data:`CONSOLE_USER`, in the configured database) unless it exists, starts ``python -m
acquisition serve --config FILE``, reads its endpoints line (with a deadline), and can stop it
with SIGTERM or kill it with SIGKILL. Its :attr:`~ServeProcess.console` is logged in as that
technologist. Used by the crash-safety tests and the benchmark.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from acquisition.accounts import Accounts
from acquisition.console.client import ConsoleClient

READY_TIMEOUT_S = 30.0
#: The journal key every test controller runs with (`galacto serve` refuses to run without one;
#: only the test of that refusal sets site.allow_unkeyed_journal).
JOURNAL_KEY = "test-journal-key"
#: The technologist every test controller has (name, password).
CONSOLE_USER = ("tech1", "correct horse battery")


def add_console_user(
    database: Path, name: str = CONSOLE_USER[0], role: str = "technologist",
    password: str = CONSOLE_USER[1],
) -> None:  # fmt: skip
    """The account, in ``database``, unless it exists."""
    with Accounts(database) as accounts:
        if accounts.get(name) is None:
            accounts.add(name, role, password)


def write_config(path: Path, settings: Mapping[str, Any]) -> Path:
    """A TOML file with ``section.name = value`` settings (str, int, float, bool)."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{name} = {json.dumps(value)}" for name, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def read_line(stream: IO[str], timeout_s: float) -> str:
    """One line from a child's stdout, or TimeoutError at the deadline."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    try:
        if not selector.select(timeout_s):
            raise TimeoutError(f"no line within {timeout_s} s")
        return stream.readline()
    finally:
        selector.close()


class ServeProcess:
    """One ``galacto serve`` child process (start, kill, start again on the same data)."""

    def __init__(self, config_path: Path, log_path: Path, *, console_user: bool = True) -> None:
        self.config_path = config_path
        self.console_user = console_user
        self.log_path = log_path
        self.process: subprocess.Popen[str] | None = None
        self.endpoints: dict[str, Any] = {}
        self.started_in_s = 0.0
        self._console: ConsoleClient | None = None

    def start(self) -> dict[str, Any]:
        assert self.process is None, "already running"
        if self.console_user:
            settings = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
            add_console_user(Path(settings["database"]["path"]))
        log = self.log_path.open("a", encoding="utf-8")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "acquisition", "serve", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        assert self.process.stdout is not None
        try:
            line = read_line(self.process.stdout, READY_TIMEOUT_S)
        except TimeoutError:
            self.kill()
            raise
        if not line:
            self.process.wait(timeout=10)
            self.process = None
            raise AssertionError(f"galacto serve exited: {self.log_path.read_text()[-2000:]}")
        self.started_in_s = time.monotonic() - started
        self.endpoints = json.loads(line)
        return self.endpoints

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def console(self) -> ConsoleClient:
        if self._console is None or self._console.url != self.endpoints["console"].rstrip("/"):
            user, password = CONSOLE_USER
            self._console = ConsoleClient(
                self.endpoints["console"], username=user, password=password, timeout_s=30.0
            )
        return self._console

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a power cut or an OOM kill would do."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self) -> int:
        """SIGTERM and wait: the clean stop; its exit code."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        return self._reap()

    def _reap(self) -> int:
        assert self.process is not None
        try:
            code = self.process.wait(timeout=30)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None
        return code

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.kill()
