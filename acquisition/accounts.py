"""Console accounts and their sessions: who may use the console, and in which role (issue 14).

Three roles (docs/console.md, "Roles"): a **technologist** runs exams and the injector, a
**physicist** reads the dose pages (pseudonymised) and acknowledges dose alerts, an **admin**
manages the accounts and re-initialises an injector driver that will not reconnect.

Passwords are hashed with Argon2id (argon2-cffi, RFC 9106 low-memory profile: 64 MiB, 3 passes);
a hash made with weaker parameters is re-made at the next successful login. An unknown name is
checked against a dummy hash, so that it takes as long as a wrong password: the answer (and its
time) never tells which names exist. At most :data:`CONCURRENT_HASHES` hashes run at once (each
takes 64 MiB).

A session is a random 256-bit token in an HttpOnly cookie; the store keeps only its SHA-256,
never the token, so that whoever reads the database cannot take a session over. The CSRF token
of a session is derived from the token (an HMAC), so it is not stored either. A session ends
when its user logs out, after ``console.session_idle_s`` without activity, or when the account
is disabled or its password changed (from the console or from ``galacto users`` in another
process: every request reads the account again).

The store follows the house pattern (:class:`storage.writer.Store`): its own
``sqlite_utils.Migrations`` set, every write through the file's one writer thread (shared with
the controller's other stores), reads on the calling thread's read connection, the database
file 0600.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import argon2
import sqlite_utils

from storage.writer import Database, Store

#: The roles, in the order the docs list them.
TECHNOLOGIST = "technologist"
PHYSICIST = "physicist"
ADMIN = "admin"
ROLES: tuple[str, ...] = (TECHNOLOGIST, PHYSICIST, ADMIN)

#: A user name: lower-case letters, digits, ``.``, ``_`` and ``-``, starting with a letter or a
#: digit, at most 32 characters (it is shown on every page and in every journal entry).
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
#: Argon2 hashes running at once (each holds 64 MiB); the others wait their turn.
CONCURRENT_HASHES = 2
#: How stale a session's last activity may be in the database (it is exact in memory).
TOUCH_WRITE_S = 15.0

#: The hash an unknown user name is checked against, so that it costs what a wrong password
#: costs: Argon2id with the default profile (RFC 9106 low memory) of a random password that was
#: thrown away — no password matches it, and no account has it.
DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$+LRKWqUlM7nn/UGAetYqjQ$"
    "Ak7JRKAVUjlHVDYDn2fdYE56Mz1nsGMyheLEXa59KUo"
)

MIGRATIONS = sqlite_utils.Migrations("acquisition.accounts")


@MIGRATIONS()
def create_accounts(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE console_user (
            username TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('technologist', 'physicist', 'admin')),
            password_hash TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
            created_utc TEXT NOT NULL,
            password_changed_utc TEXT NOT NULL,
            last_login_utc TEXT
        ) STRICT
        """
    )
    db.execute(
        """
        CREATE TABLE console_session (
            id TEXT PRIMARY KEY,
            token_sha256 TEXT NOT NULL UNIQUE,
            username TEXT NOT NULL REFERENCES console_user(username),
            client TEXT NOT NULL,
            started_s REAL NOT NULL,
            last_seen_s REAL NOT NULL,
            ended_s REAL,
            end_reason TEXT
        ) STRICT
        """
    )
    db.execute("CREATE INDEX console_session_open ON console_session (ended_s, username)")


class AccountError(ValueError):
    """A name, role or password that cannot be used, or an account that does not exist."""


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    disabled: bool
    created_utc: str
    password_changed_utc: str
    last_login_utc: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "username": self.username,
            "role": self.role,
            "disabled": self.disabled,
            "created_utc": self.created_utc,
            "password_changed_utc": self.password_changed_utc,
            "last_login_utc": self.last_login_utc,
        }


@dataclass(frozen=True)
class Session:
    """An open session: ``id`` is its public name (journal, logs), never the token."""

    id: str
    username: str
    role: str
    client: str
    started_s: float
    last_seen_s: float


def check_username(name: str) -> str:
    if not isinstance(name, str) or not USERNAME.fullmatch(name):
        raise AccountError(
            "a user name is 1-32 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or a digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"the role must be one of {', '.join(ROLES)}")
    return role


def check_password(password: str, username: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(
            f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters (a passphrase is best)"
        )
    if password.strip().casefold() == username.casefold():
        raise AccountError("the password must not be the user name")
    return password


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_token(token: str) -> str:
    """The CSRF token of the session whose cookie is ``token`` (derived, never stored)."""
    return hmac.new(token.encode("utf-8"), b"galacto console csrf", hashlib.sha256).hexdigest()


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Accounts(Store):
    """The accounts and sessions in the controller's database (see the module docstring).

    Thread-safe: writes go through the database's one writer, reads use the calling thread's
    connection. ``clock`` gives wall-clock seconds (sessions outlive a restart of the service,
    so their times are not monotonic); tests pass their own.
    """

    migrations = MIGRATIONS

    def __init__(
        self,
        path: str | Path | Database,
        *,
        busy_timeout_s: float = 5.0,
        hasher: argon2.PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._hasher = hasher or argon2.PasswordHasher.from_parameters(
            argon2.profiles.RFC_9106_LOW_MEMORY
        )
        # what an unknown name is checked against: a hash made with the same parameters (the
        # default profile's is made once here, not at every start: a hash takes ~0.1 s)
        self._dummy_hash = (
            self._hasher.hash(secrets.token_urlsafe(16)) if hasher is not None else DUMMY_HASH
        )
        self._hashing = threading.BoundedSemaphore(CONCURRENT_HASHES)
        self._clock = clock
        super().__init__(path, busy_timeout_s=busy_timeout_s)

    def now(self) -> float:
        return self._clock()

    # ------------------------------------------------------------------ accounts

    def add(self, username: str, role: str, password: str) -> Account:
        """A new account (:class:`AccountError` for a bad name, role or password, or a name
        already taken)."""
        check_username(username)
        check_role(role)
        check_password(password, username)
        hashed = self._hash(password)
        now = _utc_now()
        try:
            self.db.run(
                lambda conn: conn.execute(
                    "INSERT INTO console_user (username, role, password_hash, created_utc, "
                    "password_changed_utc) VALUES (?, ?, ?, ?, ?)",
                    (username, role, hashed, now, now),
                )
            )
        except sqlite3.IntegrityError:
            raise AccountError(f"the user {username} exists already") from None
        account = self.get(username)
        assert account is not None
        return account

    def get(self, username: str) -> Account | None:
        row = self._user_row(username)
        return None if row is None else _account(row)

    def _user_row(self, username: str) -> sqlite3.Row | None:
        with self.db.read() as conn:
            row: sqlite3.Row | None = conn.execute(
                "SELECT * FROM console_user WHERE username = ?", (username,)
            ).fetchone()
        return row

    def list(self) -> list[Account]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM console_user ORDER BY username").fetchall()
        return [_account(row) for row in rows]

    def active_count(self) -> int:
        """How many accounts can log in (not disabled)."""
        with self.db.read() as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM console_user WHERE disabled = 0"
            ).fetchone()
        return int(count)

    def disable(self, username: str) -> Account:
        """Disable an account and end its sessions (:class:`AccountError` if unknown)."""
        self._require(username)
        at_s = self._clock()

        def disable(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE console_user SET disabled = 1 WHERE username = ?", (username,))
            _end_sessions(conn, username, "account disabled", at_s)

        self.db.run(disable)
        account = self.get(username)
        assert account is not None
        return account

    def set_password(self, username: str, password: str) -> Account:
        """A new password; every session of the account ends (it logs in again)."""
        self._require(username)
        check_password(password, username)
        hashed, changed, at_s = self._hash(password), _utc_now(), self._clock()

        def set_password(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE console_user SET password_hash = ?, password_changed_utc = ? "
                "WHERE username = ?",
                (hashed, changed, username),
            )
            _end_sessions(conn, username, "password changed", at_s)

        self.db.run(set_password)
        account = self.get(username)
        assert account is not None
        return account

    def authenticate(self, username: str, password: str) -> Account | None:
        """The account, when the name exists, is enabled and the password is right; None
        otherwise, after the same work in every case."""
        row = self._user_row(username)
        stored = row["password_hash"] if row is not None else self._dummy_hash
        with self._hashing:
            try:
                self._hasher.verify(stored, password)
                good = row is not None
            except argon2.exceptions.VerificationError:
                good = False
            except argon2.exceptions.InvalidHashError:  # a damaged row: never a login
                good = False
            rehash = good and self._hasher.check_needs_rehash(stored)
        if not good or row is None or row["disabled"]:
            return None
        if rehash:
            rehashed = self._hash(password)
            self.db.run(
                lambda conn: conn.execute(
                    "UPDATE console_user SET password_hash = ? WHERE username = ?",
                    (rehashed, username),
                )
            )
        return _account(row)

    def _require(self, username: str) -> None:
        if self.get(username) is None:
            raise AccountError(f"no user {username}")

    def _hash(self, password: str) -> str:
        with self._hashing:
            return self._hasher.hash(password)

    # ------------------------------------------------------------------ sessions

    def open_session(self, account: Account, client: str) -> tuple[str, Session]:
        """A new session of ``account`` from ``client``: its token (for the cookie, shown
        once) and the session."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(secrets.token_hex(8), account.username, account.role, client, now, now)
        login_utc = _utc_now()

        def open_session(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO console_session (id, token_sha256, username, client, started_s, "
                "last_seen_s) VALUES (?, ?, ?, ?, ?, ?)",
                (session.id, token_sha256(token), session.username, client, now, now),
            )
            conn.execute(
                "UPDATE console_user SET last_login_utc = ? WHERE username = ?",
                (login_utc, account.username),
            )

        self.db.run(open_session)
        return token, session

    def session(self, token: str, idle_s: float, *, touch: bool) -> tuple[Session | None, str]:
        """The open session of ``token`` and ``""``, or None and why not (``"no session"``,
        ``"expired"``, ``"account disabled"``…). An idle session is ended here. ``touch``:
        this request is the user's activity (it restarts the idle time)."""
        now = self._clock()
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT s.*, u.role, u.disabled FROM console_session s "
                "JOIN console_user u ON u.username = s.username WHERE s.token_sha256 = ?",
                (token_sha256(token),),
            ).fetchone()
        if row is None:
            return None, "no session"
        if row["ended_s"] is not None:
            return None, str(row["end_reason"] or "ended")
        if row["disabled"]:
            return None, "account disabled"
        if now - row["last_seen_s"] > idle_s:
            self._end(row["id"], "expired", row["last_seen_s"] + idle_s)
            return None, "expired"
        last_seen = row["last_seen_s"]
        if touch and now - last_seen >= min(TOUCH_WRITE_S, idle_s / 4):
            self.db.run(
                lambda conn: conn.execute(
                    "UPDATE console_session SET last_seen_s = max(last_seen_s, ?) WHERE id = ?",
                    (now, row["id"]),
                )
            )
            last_seen = now
        session = Session(
            row["id"], row["username"], row["role"], row["client"], row["started_s"], last_seen
        )
        return session, ""

    def end_session(self, token: str, reason: str = "logged out") -> Session | None:
        """End the session of ``token`` (None when there was none open)."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT s.*, u.role FROM console_session s JOIN console_user u "
                "ON u.username = s.username WHERE token_sha256 = ? AND ended_s IS NULL",
                (token_sha256(token),),
            ).fetchone()
        if row is None:
            return None
        self._end(row["id"], reason, self._clock())
        return Session(
            row["id"], row["username"], row["role"], row["client"], row["started_s"],
            row["last_seen_s"],
        )  # fmt: skip

    def _end(self, session_id: str, reason: str, at_s: float) -> None:
        """End one session (once: a session another request ended first keeps its reason)."""
        self.db.run(
            lambda conn: conn.execute(
                "UPDATE console_session SET ended_s = ?, end_reason = ? "
                "WHERE id = ? AND ended_s IS NULL",
                (at_s, reason, session_id),
            )
        )


def _end_sessions(conn: sqlite3.Connection, username: str, reason: str, at_s: float) -> None:
    conn.execute(
        "UPDATE console_session SET ended_s = ?, end_reason = ? "
        "WHERE username = ? AND ended_s IS NULL",
        (at_s, reason, username),
    )


def _account(row: sqlite3.Row) -> Account:
    return Account(
        username=row["username"],
        role=row["role"],
        disabled=bool(row["disabled"]),
        created_utc=row["created_utc"],
        password_changed_utc=row["password_changed_utc"],
        last_login_utc=row["last_login_utc"],
    )
