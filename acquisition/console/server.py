"""The console over HTTP: one page, one state document, one command endpoint (docs/console.md).

:class:`ConsoleServer` serves :class:`~acquisition.console.backend.ConsoleBackend` with the
standard library's :class:`~http.server.ThreadingHTTPServer` on a daemon thread:

- ``GET /`` — the page (one self-contained HTML file: inline CSS and JavaScript, no external
  assets; a Content-Security-Policy allows only those inline blocks, by hash, and same-origin
  requests);
- ``GET /api/state`` — :meth:`ConsoleBackend.snapshot` as JSON;
- ``POST /api/command/<name>`` — body ``{"operator": ..., "args": {...}}`` as
  ``application/json``: 200 ``{"ok": true, "state": ...}``; 409 ``{"ok": false, "refused":
  reason, …details}`` when the exam refused it (a wrong side adds ``"code":
  "laterality-mismatch"``, ``"order_side"``, ``"chosen_side"``); 400 for bad input; 415 for
  another content type.

Every request whose ``Host`` is not one of the console's own names, or whose ``Origin`` (when
present) is not one of its own origins, is answered 403: another web site open in the same
browser can neither drive the exam (CSRF) nor read the patient data (DNS rebinding). There is no
authentication yet: the console listens on loopback by default. Requests are logged at DEBUG
only, and never with their bodies.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.resources
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from acquisition.console.backend import ConsoleBackend
from acquisition.exam.model import ExamError
from acquisition.exam_machine import Refused

log = logging.getLogger(__name__)

PAGE_RESOURCE = "console.html"
COMMAND_PREFIX = "/api/command/"
MAX_BODY_BYTES = 64 * 1024
#: How long one connection may sit idle (a slow or stuck client holds one thread at most this).
CONNECTION_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = ("", "0.0.0.0", "::")


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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _HttpServer(ThreadingHTTPServer):
    """Tracks its connections and their threads, so that ``stop()`` ends them all."""

    daemon_threads = True
    block_on_close = False  # ConsoleServer.stop() joins the threads it knows

    def __init__(self, address: tuple[str, int], backend: ConsoleBackend, page: str) -> None:
        self.backend = backend
        self.page = page.encode("utf-8")
        self.csp = content_security_policy(page)
        self.origins: frozenset[str] = frozenset()
        self.hosts: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._live: dict[threading.Thread, socket.socket] = {}
        super().__init__(address, _Handler)

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
        """A client that went away (the page's poll deadline, a closed tab) is not an error;
        anything else is logged with its traceback instead of printed to stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.debug("console: client went away: %s", error)
        else:
            log.error("console: request failed", exc_info=error)

    def end_connections(self, timeout_s: float) -> None:
        """Shut every open connection down (an idle keep-alive or a slow client) and wait."""
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
    """The technologists' console on ``http://host:port/`` (port 0: any free port).

    ``allowed_origins`` adds origins (``http://name:port``) that may use the console besides
    its own address; a console bound to every interface needs them, since its own address
    names no host a browser would use.
    """

    def __init__(
        self,
        backend: ConsoleBackend,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self.backend = backend
        self.host = host
        self.port = port
        self.allowed_origins = tuple(o.rstrip("/").lower() for o in allowed_origins)
        if host in _WILDCARDS and not self.allowed_origins:
            raise ValueError(
                "a console listening on every interface needs allowed_origins "
                "(the http://name:port the technologists' browsers use)"
            )
        self._page = load_page()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Bind and serve on a daemon thread; returns the bound (host, port)."""
        if self._server is not None:
            raise RuntimeError("the console is already serving")
        cls = _Ipv6HttpServer if ":" in self.host else _HttpServer
        server = cls((self.host, self.port), self.backend, self._page)
        host, port = server.server_address[:2]
        host = str(host)
        names = {_url_host(host)}
        if _is_loopback(host):
            names.update(_LOOPBACK_NAMES)
        origins = {f"http://{name}:{port}" for name in names} | set(self.allowed_origins)
        if port == 80:
            origins |= {f"http://{name}" for name in names}
        server.origins = frozenset(origins)
        server.hosts = frozenset(urlsplit(origin).netloc for origin in origins)
        self._server = server
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
        """``http://host:port/`` once started."""
        if self._server is None:
            raise RuntimeError("the console is not serving")
        return f"http://{_url_host(self.host)}:{self.port}/"

    def stop(self) -> None:
        """Stop serving, end open connections, release the port (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
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


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads
    server_version = "galacto-console"
    sys_version = ""
    timeout = CONNECTION_TIMEOUT_S

    # ------------------------------------------------------------------ routes

    def do_GET(self) -> None:
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if path == "/":
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8", page=True)
        elif path == "/api/state":
            try:
                snapshot = self.server.backend.snapshot()
            except Exception:
                log.exception("console: the state could not be read")
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, _error("the state is not readable"))
                return
            self._json(HTTPStatus.OK, snapshot)
        elif path.startswith(COMMAND_PREFIX):
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, _error("commands are POSTed"))
        else:
            self._json(HTTPStatus.NOT_FOUND, _error("no such page"))

    def do_POST(self) -> None:
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if not path.startswith(COMMAND_PREFIX):
            status = HTTPStatus.METHOD_NOT_ALLOWED if path in ("/", "/api/state") else 404
            self._json(status, _error("only commands are POSTed"))
            return
        name = path[len(COMMAND_PREFIX) :]
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, _error("send application/json"))
            return
        body = self._body()
        if body is None:
            return
        operator, args = body
        backend = self.server.backend
        try:
            backend.command(name, args, operator)
        except Refused as refused:
            refusal = {"ok": False, "refused": refused.reason, **refused.details}
            self._json(HTTPStatus.CONFLICT, refusal)
            return
        except (ValueError, ExamError) as exc:  # ChecklistError is both
            self._json(HTTPStatus.BAD_REQUEST, _error(str(exc)))
            return
        except Exception:
            log.exception("console: command %s failed", name)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, _error(f"{name} failed: see the log"))
            return
        self._json(HTTPStatus.OK, {"ok": True, "state": backend.snapshot()})

    def do_PUT(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, _error("GET or POST"))

    do_DELETE = do_PATCH = do_PUT

    # ------------------------------------------------------------------ checks

    def _allowed(self) -> bool:
        """403 unless Host names this console and Origin, if any, is one of its origins."""
        host = (self.headers.get("Host") or "").lower()
        if host not in self.server.hosts:
            self._json(HTTPStatus.FORBIDDEN, _error("this console does not answer to that Host"))
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin.rstrip("/").lower() not in self.server.origins:
            self._json(HTTPStatus.FORBIDDEN, _error("requests from other origins are refused"))
            return False
        return True

    def _body(self) -> tuple[str, dict[str, Any]] | None:
        """The command body's operator and args, or None after answering 4xx."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(HTTPStatus.LENGTH_REQUIRED, _error("Content-Length is required"))
            return None
        if not 0 <= length <= MAX_BODY_BYTES:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _error("the body is too large"))
            return None
        try:
            document = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._json(HTTPStatus.BAD_REQUEST, _error("the body is not JSON"))
            return None
        if not isinstance(document, dict):
            self._json(HTTPStatus.BAD_REQUEST, _error('send {"operator": ..., "args": {...}}'))
            return None
        operator = document.get("operator")
        args = document.get("args", {})
        if not isinstance(operator, str) or not operator.strip():
            self._json(HTTPStatus.BAD_REQUEST, _error("the operator's name is required"))
            return None
        if not isinstance(args, dict):
            self._json(HTTPStatus.BAD_REQUEST, _error("args must be a JSON object"))
            return None
        return operator, args

    # ------------------------------------------------------------------ responses

    def _json(self, status: int, document: Any) -> None:
        body = json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str, *, page: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if page:
            self.send_header("Content-Security-Policy", self.server.csp)
            self.send_header("X-Frame-Options", "DENY")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines at DEBUG only (the paths carry no patient data; bodies never logged)."""
        log.debug("console %s: %s", self.address_string(), format % args)


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}
