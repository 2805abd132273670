"""The console over HTTP(S): one page, a JSON API behind logins, and live updates (docs/console.md).

:class:`ConsoleServer` serves :class:`~acquisition.console.backend.ConsoleBackend` with the
standard library's :class:`~http.server.ThreadingHTTPServer` on a daemon thread (a thread per
connection: a control room has a handful of pages open; docs/console.md says why no framework).

Every request is checked in this order, and every refusal is journaled (``console-rejected``,
repeats collapsed) with the user, the client address and the session:

1. ``Host`` must name this console and ``Origin``, when present, be one of its origins (403):
   another web site open in the same browser can neither drive the exam (CSRF) nor read it (DNS
   rebinding);
2. a POST must be ``application/json`` (415);
3. except for the page, ``/api/injection`` and ``POST /api/session`` (the login), a session
   cookie of a logged-in user (401), whose role may do it (403 ``{"error", "required_role"}``);
4. a state-changing request carries the session's CSRF token in ``X-CSRF-Token`` (403).

**STOP never waits for a login**: ``POST /api/command/stop-injection`` passes only steps 1 and
2 and goes straight to the exam service, which sends ``STP`` before it takes its lock or writes
the journal. It is journaled with the session of the cookie when this process has seen it (an
in-memory lookup, no database), else with the client address and "no session".

Requests are logged at DEBUG only, and never with their bodies.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.cookies
import importlib.resources
import ipaddress
import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from acquisition.account_admin import AdminContext, add_user, change_password, disable_user
from acquisition.accounts import (
    ADMIN,
    PHYSICIST,
    TECHNOLOGIST,
    AccountError,
    Accounts,
    Session,
    csrf_token,
    token_sha256,
)
from acquisition.console.auth import (
    COMMAND_ROLES,
    DOSE_READERS,
    NO_SESSION,
    ROOM_VIEWERS,
    LoginThrottle,
    Operator,
    RejectionJournal,
)
from acquisition.console.backend import ConsoleBackend
from acquisition.console.dose_desk import DeskError, DoseDesk
from acquisition.console.events import EventHub, Subscription
from acquisition.exam.model import ExamError
from acquisition.exam_machine import Refused
from acquisition.journal import Journal, JournalError
from storage import DatabaseOpenError

log = logging.getLogger(__name__)

PAGE_RESOURCE = "console.html"
COMMAND_PREFIX = "/api/command/"
STOP_COMMAND = "stop-injection"
MAX_BODY_BYTES = 64 * 1024
#: How long one connection may sit idle (a slow or stuck client holds one thread at most this).
CONNECTION_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
SESSION_COOKIE = "galacto_session"
CSRF_HEADER = "X-CSRF-Token"
#: How often an open event stream checks that its session is still open.
STREAM_SESSION_CHECK_S = 5.0

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = ("", "0.0.0.0", "::")
_ALERT_ACK = re.compile(r"/api/dose/alerts/(\d{1,12})/acknowledge")
_USER_ACTION = re.compile(r"/api/users/([^/]{1,64})/(disable|password)")


def load_page() -> str:
    """The console page, as shipped beside this module."""
    package = importlib.resources.files(__package__ or "acquisition.console")
    return package.joinpath(PAGE_RESOURCE).read_text(encoding="utf-8")


def content_security_policy(page: str) -> str:
    """A CSP that allows the page's own inline ``<script>`` and ``<style>`` blocks (by their
    SHA-256) and same-origin fetches, and nothing else: no external asset, no framing."""

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digests = (hashlib.sha256(block.encode("utf-8")).digest() for block in blocks)
        return " ".join(f"'sha256-{base64.b64encode(d).decode('ascii')}'" for d in digests)

    return (
        "default-src 'none'; "
        f"script-src {hashes('script')}; "
        f"style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


#: The physicist's report is a generated page of its own: its inline style and SVG only, no
#: script, sandboxed.
REPORT_CSP = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Refusal(Exception):
    """A request answered with an error before it reached the backend (journaled)."""

    def __init__(
        self,
        status: int,
        document: dict[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        journal_user: str | None = None,
    ) -> None:
        super().__init__(document.get("error", ""))
        self.status = status
        self.document = document
        self.headers = dict(headers or {})
        #: the user the journal names (a failed login: the account tried, or "unknown user")
        self.journal_user = journal_user


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the session (None: none) and the client address."""

    session: Session | None
    token: str | None
    client: str

    @property
    def user(self) -> str | None:
        return self.session.username if self.session else None

    @property
    def role(self) -> str | None:
        return self.session.role if self.session else None

    def origin(self) -> dict[str, Any]:
        """What the journal records of the caller beside the operator's name."""
        return {
            "client": self.client,
            "session": self.session.id if self.session else NO_SESSION,
            "role": self.role,
        }

    def operator(self) -> Operator:
        return Operator(self.user or NO_SESSION, self.origin())


class _HttpServer(ThreadingHTTPServer):
    """Tracks its connections and their threads, so that ``stop()`` ends them all."""

    daemon_threads = True
    block_on_close = False  # ConsoleServer.stop() joins the threads it knows

    def __init__(
        self,
        address: tuple[str, int],
        console: ConsoleServer,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.console = console
        self.tls = tls
        self._lock = threading.Lock()
        self._live: dict[threading.Thread, socket.socket] = {}
        super().__init__(address, _Handler)
        if tls is not None:
            # The handshake happens in the connection's own thread, under its timeout: a
            # client that never completes it cannot stall the accepting thread.
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_one,
            args=(request, client_address),
            name="console-http-request",
            daemon=True,
        )
        with self._lock:
            self._live[thread] = request
        thread.start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._live.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a closed tab, a failed TLS handshake) is not an error;
        anything else is logged with its traceback instead of printed to stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError | ssl.SSLError):
            log.debug("console: client went away: %s", error)
        else:
            log.error("console: request failed", exc_info=error)

    def end_connections(self, timeout_s: float) -> None:
        """Shut every open connection down (an event stream, a slow client) and wait."""
        with self._lock:
            live = dict(self._live)
        for sock in live.values():
            with contextlib.suppress(OSError):  # already closed by its thread
                sock.shutdown(socket.SHUT_RDWR)
        for thread in live:
            thread.join(timeout_s)


class _Ipv6HttpServer(_HttpServer):
    address_family = socket.AF_INET6


class ConsoleServer:
    """The console on ``http(s)://host:port/`` (port 0: any free port).

    ``accounts`` holds the users and sessions; ``journal`` receives the console's own entries
    (logins, rejections, user administration); ``tls`` serves HTTPS; ``allowed_origins`` adds
    origins (``https://name:port``) besides the bound address: the names the browsers use.
    ``dose_desk`` serves the physicist's page (:class:`~acquisition.console.dose_desk.DoseDesk`).
    """

    def __init__(
        self,
        backend: ConsoleBackend,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        accounts: Accounts,
        journal: Journal | None = None,
        session_idle_s: float = 900.0,
        allowed_origins: Iterable[str] = (),
        tls: ssl.SSLContext | None = None,
        dose_desk: DoseDesk | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.backend = backend
        self.host = host
        self.port = port
        self.accounts = accounts
        self.journal = journal
        self.session_idle_s = session_idle_s
        self.tls = tls
        self.dose_desk = dose_desk
        self.throttle = throttle or LoginThrottle()
        self.allowed_origins = tuple(o.rstrip("/").lower() for o in allowed_origins)
        if host in _WILDCARDS and not self.allowed_origins:
            raise ValueError(
                "a console listening on every interface needs allowed_origins "
                "(the https://name:port the technologists' browsers use)"
            )
        self.page = load_page()
        self.page_bytes = self.page.encode("utf-8")
        self.csp = content_security_policy(self.page)
        self.origins: frozenset[str] = frozenset()
        self.hosts: frozenset[str] = frozenset()
        self.events = EventHub(backend.snapshot, backend.views, lambda: backend.injector)
        self.rejections = RejectionJournal(self._record_rejection)
        #: Sessions this process has seen open, by the SHA-256 of their token: STOP is
        #: attributed from here without a database read.
        self._seen: dict[str, Session] = {}
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self) -> tuple[str, int]:
        """Bind and serve on a daemon thread; returns the bound (host, port)."""
        if self._server is not None:
            raise RuntimeError("the console is already serving")
        cls = _Ipv6HttpServer if ":" in self.host else _HttpServer
        server = cls((self.host, self.port), self, self.tls)
        host, port = server.server_address[:2]
        host = str(host)
        names = {_url_host(host)}
        if is_loopback(host):
            names.update(_LOOPBACK_NAMES)
        scheme = "https" if self.tls else "http"
        origins = {f"{scheme}://{name}:{port}" for name in names} | set(self.allowed_origins)
        if (scheme, port) in (("http", 80), ("https", 443)):
            origins |= {f"{scheme}://{name}" for name in names}
        self.origins = frozenset(origins)
        self.hosts = frozenset(urlsplit(origin).netloc for origin in origins)
        self._server = server
        self.stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="console-http"
        )
        self._thread.daemon = True
        self._thread.start()
        self.host, self.port = host, int(port)
        log.info("console serving on %s", self.url)
        return self.host, self.port

    @property
    def url(self) -> str:
        """``http(s)://host:port/`` once started."""
        if self._server is None:
            raise RuntimeError("the console is not serving")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{_url_host(self.host)}:{self.port}/"

    def stop(self) -> None:
        """Stop serving, end open connections and streams, release the port (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self.stopping.set()
        self.events.stop()
        server.shutdown()
        server.end_connections(STOP_TIMEOUT_S)
        server.server_close()
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
        self._server = self._thread = None
        log.info("console stopped")

    def __enter__(self) -> ConsoleServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ sessions

    def caller(self, token: str | None, client: str, *, touch: bool) -> tuple[Caller, str]:
        """Who is asking (the session read from the database: an account disabled meanwhile
        by ``galacto users`` is seen at once) and, without a session, why not."""
        if not token:
            return Caller(None, None, client), "no session"
        session, why = self.accounts.session(token, self.session_idle_s, touch=touch)
        key = token_sha256(token)
        if session is None:
            self._seen.pop(key, None)
            return Caller(None, None, client), why
        self._seen[key] = session
        return Caller(session, token, client), ""

    def stop_caller(self, token: str | None, client: str) -> Caller:
        """STOP's caller, from memory only (never a database read before the STP)."""
        session = self._seen.get(token_sha256(token)) if token else None
        if session is not None and self.accounts.now() - session.last_seen_s > self.session_idle_s:
            session = None
        return Caller(session, token if session else None, client)

    def forget(self, token: str) -> None:
        self._seen.pop(token_sha256(token), None)

    # ------------------------------------------------------------------ the journal

    def _record_rejection(self, payload: dict[str, Any]) -> None:
        self.record("console-rejected", payload, operator=payload.get("user"))

    def record(self, kind: str, payload: dict[str, Any], operator: str | None = None) -> bool:
        """Journal one of the console's own entries; False (logged) when it cannot."""
        if self.journal is None:
            return True
        try:
            self.journal.append(kind, payload, operator=operator)
        except JournalError as exc:
            log.error("console: %s not journaled: %s", kind, exc)
            return False
        return True


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    caller: Caller
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads
    server_version = "galacto-console"
    sys_version = ""
    timeout = CONNECTION_TIMEOUT_S

    @property
    def console(self) -> ConsoleServer:
        return self.server.console

    @property
    def client(self) -> str:
        return str(self.client_address[0])

    # ------------------------------------------------------------------ routes

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PUT(self) -> None:
        self._route("PUT")

    do_PATCH = do_PUT

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        self.caller = Caller(None, None, self.client)
        try:
            self._check_host_and_origin()
            if method == "POST":
                self._check_json()
            if method == "POST" and path == COMMAND_PREFIX + STOP_COMMAND:
                self._stop()  # before any login, lock or journal
                return
            self._dispatch(method, path)
        except Refusal as refusal:
            self._refused(method, path, refusal, self.caller)

    def _dispatch(self, method: str, path: str) -> None:
        """Serve one request (``self.caller`` names who asked, for the journal)."""
        if method == "GET" and path == "/":
            self._send(
                HTTPStatus.OK, self.console.page_bytes, "text/html; charset=utf-8", page=True
            )
            return
        if method == "GET" and path == "/api/injection":
            self._json(HTTPStatus.OK, self.console.backend.injection_view())
            return
        if path == "/api/session":
            if method == "POST":
                self._login()
                return
            if method not in ("GET", "DELETE"):
                raise Refusal(HTTPStatus.METHOD_NOT_ALLOWED, _error("GET, POST or DELETE"))
        routes = self._routes(method, path)
        if routes is None:
            known = path in ("/", "/api/injection", "/api/state", "/api/events") or path.startswith(
                ("/api/command/", "/api/dose/", "/api/users")
            )
            status = HTTPStatus.METHOD_NOT_ALLOWED if known else HTTPStatus.NOT_FOUND
            raise Refusal(status, _error("wrong method" if known else "no such page"))
        roles, handler = routes
        caller = self.caller = self._authenticated(touch=path not in ("/api/state", "/api/events"))
        if roles and caller.role not in roles:
            raise Refusal(
                HTTPStatus.FORBIDDEN,
                {"error": "forbidden", "required_role": roles[0], "allowed_roles": list(roles)},
            )
        if method != "GET":
            self._check_csrf(caller)
        handler(caller)

    def _routes(
        self, method: str, path: str
    ) -> tuple[tuple[str, ...], Callable[[Caller], None]] | None:
        """The roles (empty: any logged-in user) and the handler of an authenticated route."""
        if path == "/api/session":
            return (), self._session if method == "GET" else self._logout
        get = {
            "/api/state": (ROOM_VIEWERS, self._state),
            "/api/events": (ROOM_VIEWERS, self._events),
            "/api/dose/exposures": (DOSE_READERS, self._dose_exposures),
            "/api/dose/alerts": (DOSE_READERS, self._dose_alerts),
            "/api/dose/report": (DOSE_READERS, self._dose_report),
            "/api/users": ((ADMIN,), self._users),
        }
        if method == "GET":
            return get.get(path)
        if method != "POST":
            return None
        if path.startswith(COMMAND_PREFIX):
            name = path[len(COMMAND_PREFIX) :]
            role = COMMAND_ROLES.get(name, TECHNOLOGIST)
            return (role,), lambda caller: self._command(name, caller)
        if path == "/api/users":
            return (ADMIN,), self._add_user
        if match := _USER_ACTION.fullmatch(path):
            user, action = unquote(match[1]), match[2]
            return (ADMIN,), lambda caller: self._user_action(user, action, caller)
        if match := _ALERT_ACK.fullmatch(path):
            alert_id = int(match[1])
            return (PHYSICIST,), lambda caller: self._acknowledge_alert(alert_id, caller)
        return None

    # ------------------------------------------------------------------ checks

    def _check_host_and_origin(self) -> None:
        """403 unless Host names this console and Origin, if any, is one of its origins."""
        host = (self.headers.get("Host") or "").lower()
        if host not in self.console.hosts:
            raise Refusal(HTTPStatus.FORBIDDEN, _error("this console does not answer to that Host"))
        origin = self.headers.get("Origin")
        if origin is not None and origin.rstrip("/").lower() not in self.console.origins:
            raise Refusal(HTTPStatus.FORBIDDEN, _error("requests from other origins are refused"))

    def _check_json(self) -> None:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, _error("send application/json"))

    def _token(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(raw)
        except http.cookies.CookieError:
            return None
        morsel = cookies.get(SESSION_COOKIE)
        return morsel.value if morsel is not None and morsel.value else None

    def _authenticated(self, *, touch: bool) -> Caller:
        caller, why = self.console.caller(self._token(), self.client, touch=touch)
        if caller.session is None:
            raise Refusal(
                HTTPStatus.UNAUTHORIZED,
                {"error": "not-logged-in", "reason": why, "message": "log in first"},
            )
        return caller

    def _check_csrf(self, caller: Caller) -> None:
        sent = self.headers.get(CSRF_HEADER, "")
        assert caller.token is not None
        if not sent or not hmac.compare_digest(sent, csrf_token(caller.token)):
            raise Refusal(
                HTTPStatus.FORBIDDEN,
                {"error": "csrf", "message": f"the {CSRF_HEADER} header is missing or wrong"},
            )

    def _body(self, *, required: bool = True) -> dict[str, Any]:
        """The JSON object sent (400/411/413 otherwise)."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            if not required:
                return {}
            raise Refusal(
                HTTPStatus.LENGTH_REQUIRED, _error("Content-Length is required")
            ) from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _error("the body is too large"))
        raw = self.rfile.read(length)
        if not raw and not required:
            return {}
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise Refusal(HTTPStatus.BAD_REQUEST, _error("the body is not JSON")) from None
        if not isinstance(document, dict):
            raise Refusal(HTTPStatus.BAD_REQUEST, _error("send a JSON object"))
        return document

    # ------------------------------------------------------------------ STOP

    def _stop(self) -> None:
        """STOP: no session, no CSRF token, no body needed; the STP goes out first."""
        with contextlib.suppress(Refusal):
            self._body(required=False)  # whatever was sent with it, the intent is clear
        caller = self.console.stop_caller(self._token(), self.client)
        self._run_command(STOP_COMMAND, {}, caller)

    # ------------------------------------------------------------------ handlers

    def _login(self) -> None:
        body = self._body()
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise Refusal(HTTPStatus.BAD_REQUEST, _error('send {"username": ..., "password": ...}'))
        username = username.strip().lower()
        console = self.console
        keys = (f"client:{self.client}", f"user:{username}")
        wait_s = console.throttle.retry_after_s(*keys)
        if wait_s:
            raise Refusal(
                HTTPStatus.TOO_MANY_REQUESTS,
                {"error": "too-many-attempts", "retry_after_s": wait_s},
                headers={"Retry-After": str(wait_s)},
            )
        account = console.accounts.authenticate(username, password[:4096])
        if account is None:
            console.throttle.failed(*keys)
            known = console.accounts.get(username) is not None
            raise Refusal(
                HTTPStatus.UNAUTHORIZED,
                {"error": "invalid-credentials"},
                journal_user=username if known else "unknown user",
            )
        console.throttle.succeeded(*keys)
        token, session = console.accounts.open_session(account, self.client)
        console.caller(token, self.client, touch=False)  # remembered for STOP
        console.record(
            "console-login",
            {"client": self.client, "session": session.id, "role": session.role},
            operator=session.username,
        )
        secure = "; Secure" if self.server.tls else ""
        cookie = f"{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}"
        self._json(
            HTTPStatus.OK,
            {"user": session.username, "role": session.role, "csrf_token": csrf_token(token)},
            cookie=cookie,
        )

    def _session(self, caller: Caller) -> None:
        assert caller.session is not None and caller.token is not None
        self._json(
            HTTPStatus.OK,
            {
                "user": caller.session.username,
                "role": caller.session.role,
                "csrf_token": csrf_token(caller.token),
                "session_idle_s": self.console.session_idle_s,
            },
        )

    def _logout(self, caller: Caller) -> None:
        assert caller.token is not None
        self.console.accounts.end_session(caller.token)
        self.console.forget(caller.token)
        self.console.record("console-logout", caller.origin(), operator=caller.user)
        secure = "; Secure" if self.server.tls else ""
        cookie = f"{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"
        self._json(HTTPStatus.OK, {"ok": True}, cookie=cookie)

    def _state(self, caller: Caller) -> None:
        backend = self.console.backend
        try:
            document = backend.view_for(str(caller.role), backend.snapshot())
        except Exception:
            log.exception("console: the state could not be read")
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, _error("the state is not readable"))
            return
        self._json(HTTPStatus.OK, document)

    def _command(self, name: str, caller: Caller) -> None:
        body = self._body()
        unknown = sorted(set(body) - {"args"})
        if unknown:
            raise Refusal(
                HTTPStatus.BAD_REQUEST,
                _error(f'unknown key(s) {", ".join(map(str, unknown))}: send {{"args": {{...}}}}'),
            )
        args = body.get("args", {})
        if not isinstance(args, dict):
            raise Refusal(HTTPStatus.BAD_REQUEST, _error("args must be a JSON object"))
        self._run_command(name, args, caller)

    def _run_command(self, name: str, args: dict[str, Any], caller: Caller) -> None:
        backend = self.console.backend
        try:
            backend.command(name, args, caller.operator())
        except Refused as refused:
            refusal = {"ok": False, "refused": refused.reason, **refused.details}
            self._json(HTTPStatus.CONFLICT, refusal)
            return
        except (ValueError, ExamError) as exc:  # ChecklistError is both
            raise Refusal(HTTPStatus.BAD_REQUEST, _error(str(exc))) from None
        except Exception:
            log.exception("console: command %s failed", name)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, _error(f"{name} failed: see the log"))
            return
        finally:
            self.console.events.wake()
        role = caller.role or TECHNOLOGIST
        self._json(HTTPStatus.OK, {"ok": True, "state": backend.view_for(role, backend.snapshot())})

    def _events(self, caller: Caller) -> None:
        """``text/event-stream`` until the client goes, the session ends or the server stops."""
        assert caller.session is not None and caller.token is not None
        last = self.headers.get("Last-Event-ID") or _query(self.path).get("last_event_id", "")
        last_id = int(last) if last.isdigit() else None
        sub: Subscription = self.console.events.subscribe(str(caller.role), last_id)
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")
            checked = time.monotonic()
            while not self.console.stopping.is_set():
                event = sub.next()
                if event is None:
                    return
                self.wfile.write(event.wire(str(caller.role)))
                self.wfile.flush()
                if time.monotonic() - checked > STREAM_SESSION_CHECK_S:
                    checked = time.monotonic()
                    if (
                        self.console.caller(caller.token, self.client, touch=False)[0].session
                        is None
                    ):
                        self.wfile.write(b"event: session-ended\ndata: {}\n\n")
                        return
        except (ConnectionError, TimeoutError, OSError):
            return  # the page went away
        finally:
            sub.close()

    # -- the physicist's page

    def _dose_exposures(self, caller: Caller) -> None:
        desk = self._desk()
        self._json(HTTPStatus.OK, self._desk_call(lambda: desk.exposures(_query(self.path))))

    def _dose_alerts(self, caller: Caller) -> None:
        desk = self._desk()
        self._json(HTTPStatus.OK, self._desk_call(lambda: desk.alerts(_query(self.path))))

    def _dose_report(self, caller: Caller) -> None:
        desk = self._desk()
        page = self._desk_call(lambda: desk.report(_query(self.path)))
        self._send(HTTPStatus.OK, page, "text/html; charset=utf-8", csp=REPORT_CSP)

    def _acknowledge_alert(self, alert_id: int, caller: Caller) -> None:
        desk = self._desk()
        reason = self._body().get("reason")
        alert = self._desk_call(lambda: desk.acknowledge(alert_id, reason, caller.operator()))
        self._json(HTTPStatus.OK, {"ok": True, "alert": alert})

    @staticmethod
    def _desk_call(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except DeskError as exc:
            raise Refusal(HTTPStatus.BAD_REQUEST, _error(str(exc))) from None
        except (JournalError, DatabaseOpenError) as exc:
            raise Refusal(
                HTTPStatus.SERVICE_UNAVAILABLE, _error(f"not available now: {exc}")
            ) from None

    def _desk(self) -> DoseDesk:
        if self.console.dose_desk is None:
            raise Refusal(HTTPStatus.NOT_FOUND, _error("no dose log is served here"))
        return self.console.dose_desk

    # -- the admin's page

    def _users(self, caller: Caller) -> None:
        accounts = self.console.accounts.list()
        self._json(HTTPStatus.OK, {"users": [a.as_json() for a in accounts]})

    def _add_user(self, caller: Caller) -> None:
        body = self._body()
        username, role, password = body.get("username"), body.get("role"), body.get("password")
        if not (isinstance(username, str) and isinstance(role, str) and isinstance(password, str)):
            raise Refusal(HTTPStatus.BAD_REQUEST, _error("send username, role and password"))
        self._administer(lambda: add_user(self._admin_context(caller), username, role, password))

    def _user_action(self, username: str, action: str, caller: Caller) -> None:
        context = self._admin_context(caller)
        if action == "disable":
            self._administer(lambda: disable_user(context, username))
            return
        password = self._body().get("password")
        if not isinstance(password, str):
            raise Refusal(HTTPStatus.BAD_REQUEST, _error("send the new password"))
        self._administer(lambda: change_password(context, username, password))

    def _admin_context(self, caller: Caller) -> AdminContext:
        return AdminContext(self.console.accounts, self.console.journal, caller.operator())

    def _administer(self, action: Callable[[], Any]) -> None:
        try:
            account = action()
        except AccountError as exc:
            raise Refusal(HTTPStatus.BAD_REQUEST, _error(str(exc))) from None
        except JournalError as exc:
            raise Refusal(
                HTTPStatus.SERVICE_UNAVAILABLE,
                _error(f"not done: the journal cannot be written ({exc})"),
            ) from None
        self._json(HTTPStatus.OK, {"ok": True, "user": account.as_json()})

    # ------------------------------------------------------------------ responses

    def _refused(self, method: str, path: str, refusal: Refusal, caller: Caller) -> None:
        """Answer a refusal and journal it (collapsed when it repeats)."""
        journal_user = refusal.journal_user
        if caller.session is None and refusal.status != HTTPStatus.UNAUTHORIZED:
            token = self._token()
            if token:  # a 403/415 from a logged-in page: say whose session it was
                caller = self.console.stop_caller(token, self.client)
        self.console.rejections.rejected(
            {
                "method": method,
                "path": path[:200],
                "status": int(refusal.status),
                "error": str(refusal.document.get("error", ""))[:200],
                "user": journal_user or caller.user,
                **caller.origin(),
            }
        )
        self._json(refusal.status, refusal.document, headers=refusal.headers)

    def _json(
        self,
        status: int,
        document: Any,
        *,
        cookie: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        body = json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", cookie=cookie, headers=headers)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        page: bool = False,
        csp: str | None = None,
        cookie: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if self.server.tls is not None:
            self.send_header("Strict-Transport-Security", "max-age=31536000")
        if page or csp:
            self.send_header("Content-Security-Policy", csp or self.console.csp)
            self.send_header("X-Frame-Options", "DENY")
        if cookie is not None:
            self.send_header("Set-Cookie", cookie)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines at DEBUG only (the paths carry no patient data; bodies never logged)."""
        log.debug("console %s: %s", self.address_string(), format % args)


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _query(path: str) -> dict[str, str]:
    """The query string's parameters, the last value of each."""
    return {key: values[-1] for key, values in parse_qs(urlsplit(path).query).items()}
