"""A small client of the console's HTTP API (docs/console.md), for scripts and tests.

``ConsoleClient(url).command("start-injection", "J. Tech", volume_ml=0.5, rate_ml_min=0.3)``
posts one command as the page does; :class:`ConsoleRefused` carries the service's reason when
the exam refused it (HTTP 409), :class:`ConsoleClientError` any other failure.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any


class ConsoleClientError(RuntimeError):
    """The console answered with an error, or did not answer."""


class ConsoleRefused(ConsoleClientError):
    """The exam refused the command (HTTP 409); ``reason`` is the service's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConsoleClient:
    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def state(self) -> dict[str, Any]:
        """The console's snapshot (``GET /api/state``)."""
        return self._call(urllib.request.Request(f"{self.url}/api/state"))

    def command(self, name: str, operator: str, **args: Any) -> dict[str, Any]:
        """Post one command; the snapshot after it."""
        body = json.dumps({"operator": operator, "args": args}).encode()
        request = urllib.request.Request(
            f"{self.url}/api/command/{name}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        answer = self._call(request)
        return dict(answer.get("state") or {})

    def _call(self, request: urllib.request.Request) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as exc:
            try:
                document = json.load(exc)
            except ValueError:
                document = {}
            finally:
                exc.close()
            if exc.code == 409:
                raise ConsoleRefused(str(document.get("refused", ""))) from None
            raise ConsoleClientError(f"HTTP {exc.code}: {document.get('error', '')}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException: the answer was cut off (the service stopped while sending it)
            raise ConsoleClientError(f"console at {self.url} not reachable: {exc}") from exc
