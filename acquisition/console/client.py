"""A small client of the console's HTTP API (docs/console.md), for scripts and tests.

``ConsoleClient(url, username="tech1", password=...)`` logs in on its first call (and again
when its session has ended: a restart that lost it, the idle time) and then sends what the page
sends: the session cookie and the CSRF token. ``command("start-injection", volume_ml=0.5,
rate_ml_min=0.3)`` posts one command; :class:`ConsoleRefused` carries the service's reason when
the exam refused it (HTTP 409), :class:`ConsoleClientError` any other failure (``status``: the
HTTP status, 0 when there was no answer). ``stop()`` sends STOP with no session at all.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

SESSION_COOKIE = "galacto_session"


class ConsoleClientError(RuntimeError):
    """The console answered with an error, or did not answer."""

    def __init__(self, message: str, status: int = 0, document: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.document = document or {}


class ConsoleRefused(ConsoleClientError):
    """The exam refused the command (HTTP 409); ``reason`` is the service's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 409)
        self.reason = reason


class ConsoleClient:
    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        self.token: str | None = None
        self.csrf: str | None = None
        self.role: str | None = None

    # ------------------------------------------------------------------ the session

    def login(self) -> dict[str, Any]:
        """``POST /api/session``; keeps the cookie and the CSRF token."""
        if self.username is None or self.password is None:
            raise ConsoleClientError("no user name and password to log in with")
        body = json.dumps({"username": self.username, "password": self.password}).encode()
        request = self._request("/api/session", "POST", body)
        document, headers = self._call(request)
        cookie = headers.get("Set-Cookie", "")
        prefix = f"{SESSION_COOKIE}="
        self.token = cookie.split(";", 1)[0].removeprefix(prefix) if cookie else None
        self.csrf = str(document["csrf_token"])
        self.role = str(document["role"])
        return document

    def logout(self) -> None:
        if self.token is not None:
            self._call(self._request("/api/session", "DELETE"))
        self.token = self.csrf = None

    # ------------------------------------------------------------------ the API

    def state(self) -> dict[str, Any]:
        """The console's snapshot (``GET /api/state``)."""
        return self._authenticated(lambda: self._request("/api/state"))

    def command(self, name: str, **args: Any) -> dict[str, Any]:
        """Post one command; the snapshot after it."""
        body = json.dumps({"args": args}).encode()
        answer = self._authenticated(lambda: self._request(f"/api/command/{name}", "POST", body))
        return dict(answer.get("state") or {})

    def stop(self) -> dict[str, Any]:
        """STOP with no session and no CSRF token, as the login page sends it."""
        request = self._request("/api/command/stop-injection", "POST", b"{}", session=False)
        return self._call(request)[0]

    # ------------------------------------------------------------------ plumbing

    def _authenticated(self, make: Any) -> dict[str, Any]:
        if self.token is None:
            self.login()
        try:
            return self._call(make())[0]
        except ConsoleClientError as exc:
            if exc.status != 401 or self.password is None:
                raise
        self.login()  # the session ended (a restart, the idle time): once more
        return self._call(make())[0]

    def _request(
        self, path: str, method: str = "GET", body: bytes | None = None, *, session: bool = True
    ) -> urllib.request.Request:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if session and self.token is not None:
            headers["Cookie"] = f"{SESSION_COOKIE}={self.token}"
            if method != "GET" and self.csrf is not None:
                headers["X-CSRF-Token"] = self.csrf
        return urllib.request.Request(self.url + path, data=body, method=method, headers=headers)

    def _call(self, request: urllib.request.Request) -> tuple[dict[str, Any], Any]:
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout_s, context=self.ssl_context
            ) as response:
                return dict(json.load(response)), response.headers
        except urllib.error.HTTPError as exc:
            try:
                document = json.load(exc)
            except ValueError:
                document = {}
            finally:
                exc.close()
            if exc.code == 409:
                raise ConsoleRefused(str(document.get("refused", ""))) from None
            raise ConsoleClientError(
                f"HTTP {exc.code}: {document.get('error', '')}", exc.code, document
            ) from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException: the answer was cut off (the service stopped while sending it)
            raise ConsoleClientError(f"console at {self.url} not reachable: {exc}") from exc
