"""The console's accounts, sessions, login throttle and rejection journal, without HTTP."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from acquisition.accounts import AccountError, Accounts, csrf_token
from acquisition.console.auth import LoginThrottle, RejectionJournal
from tests.console_room import PASSWORD, TEST_HASHER, Clock


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    clock = Clock()
    store = Accounts(tmp_path / "galacto.db", hasher=TEST_HASHER, clock=clock)
    store.clock = clock  # type: ignore[attr-defined]
    return store


def test_passwords_are_argon2id_with_the_rfc_9106_parameters(tmp_path: Path) -> None:
    with Accounts(tmp_path / "galacto.db") as accounts:  # the product's hasher
        accounts.add("tech1", "technologist", PASSWORD)
        assert accounts.authenticate("tech1", PASSWORD) is not None
    with closing(sqlite3.connect(tmp_path / "galacto.db")) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM console_user").fetchone()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in stored


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("<b>x</b>", PASSWORD, "user name"),
        ("a" * 33, PASSWORD, "user name"),
        ("Tech", PASSWORD, "user name"),  # lower case only: one spelling per person
        ("tech9", "short", "10 to 1024"),
        ("tech9", "tech9", "10 to 1024"),
        ("longername", "LongerName", "must not be the user name"),
    ],
)
def test_bad_names_and_passwords_are_refused(
    accounts: Accounts, name: str, password: str, message: str
) -> None:
    with accounts, pytest.raises(AccountError, match=message):
        accounts.add(name, "technologist", password)


def test_sessions_keep_only_a_hash_and_end_with_the_account(
    accounts: Accounts, tmp_path: Path
) -> None:
    with accounts:
        account = accounts.add("tech1", "technologist", PASSWORD)
        token, session = accounts.open_session(account, "127.0.0.1")
        assert accounts.session(token, 900, touch=True)[0] == session
        with closing(sqlite3.connect(tmp_path / "galacto.db")) as conn:
            dump = "\n".join(conn.iterdump())
        assert token not in dump and csrf_token(token) not in dump
        assert csrf_token(token) != csrf_token(token + "x")

        accounts.set_password("tech1", "a brand new passphrase")
        assert accounts.session(token, 900, touch=True) == (None, "password changed")
        token, _ = accounts.open_session(account, "127.0.0.1")
        accounts.disable("tech1")
        assert accounts.session(token, 900, touch=True) == (None, "account disabled")
        assert accounts.authenticate("tech1", "a brand new passphrase") is None


def test_a_session_expires_after_the_idle_time_and_activity_extends_it(
    accounts: Accounts,
) -> None:
    clock: Clock = accounts.clock  # type: ignore[attr-defined]
    with accounts:
        account = accounts.add("tech1", "technologist", PASSWORD)
        token, _ = accounts.open_session(account, "127.0.0.1")
        clock.advance(80)
        assert accounts.session(token, 100, touch=True)[0] is not None  # activity
        clock.advance(80)
        assert accounts.session(token, 100, touch=False)[0] is not None  # reading is not
        clock.advance(30)
        assert accounts.session(token, 100, touch=True) == (None, "expired")
        assert accounts.session(token, 100, touch=True) == (None, "expired")  # it stays ended


def test_the_throttle_locks_after_the_free_failures_and_doubles() -> None:
    now = [0.0]
    throttle = LoginThrottle(free=3, base_s=10, max_s=60, clock=lambda: now[0])
    for _ in range(3):
        throttle.failed("client:a", "user:x")
    assert throttle.retry_after_s("client:a", "user:x") == 0
    throttle.failed("client:a", "user:x")
    assert throttle.retry_after_s("client:b", "user:x") == 10  # the name is locked too
    throttle.failed("client:a", "user:x")
    assert throttle.retry_after_s("client:a") == 20
    for _ in range(5):
        throttle.failed("client:a")
    assert throttle.retry_after_s("client:a") == 60  # at most max_s
    now[0] = 61.0
    assert throttle.retry_after_s("client:a") == 0
    throttle.succeeded("user:x")
    assert throttle.retry_after_s("user:x") == 0


def test_rejections_are_journaled_each_and_a_flood_is_counted() -> None:
    written: list[dict[str, object]] = []
    now = [0.0]
    journal = RejectionJournal(written.append, window_s=60, burst=3, clock=lambda: now[0])
    rejected = {"client": "10.1.1.1", "method": "POST", "path": "/api/x", "status": 403}
    for _ in range(10):
        journal.rejected(dict(rejected))
    journal.rejected({**rejected, "client": "10.1.1.2"})  # another key: written
    assert len(written) == 4
    now[0] = 61.0
    journal.rejected(dict(rejected))
    assert written[-1]["repeated"] == 7  # the seven collapsed in the last window


def test_an_unknown_name_is_checked_against_a_hash_of_the_default_parameters() -> None:
    """The dummy hash costs what a real one costs: the same Argon2id parameters as the
    accounts' default hasher (a weaker one would tell an unknown name by its quick answer)."""
    import argon2

    from acquisition.accounts import DUMMY_HASH

    profile = argon2.profiles.RFC_9106_LOW_MEMORY
    assert argon2.extract_parameters(DUMMY_HASH) == profile
    assert not argon2.PasswordHasher.from_parameters(profile).check_needs_rehash(DUMMY_HASH)
