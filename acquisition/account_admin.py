"""Managing the console accounts, journaled: one way for ``galacto users`` and the admin's page.

Each change is checked, then journaled (``user-added``, ``user-disabled``,
``user-password-changed``, with who did it: the OS user for the command line, the admin's
account, client address and session for the console), then made. A change the journal cannot
record is not made (:class:`~acquisition.journal.JournalError`). No password, nor its hash, is
ever journaled.
"""

from __future__ import annotations

from dataclasses import dataclass

from acquisition.accounts import (
    Account,
    AccountError,
    Accounts,
    check_password,
    check_role,
    check_username,
)
from acquisition.exam.model import operator_origin
from acquisition.journal import Journal


@dataclass(frozen=True)
class AdminContext:
    """Where a change is made and by whom (an :class:`~acquisition.exam.model.Operator`)."""

    accounts: Accounts
    journal: Journal | None
    by: str

    def record(self, kind: str, payload: dict[str, object]) -> None:
        if self.journal is not None:
            self.journal.append(kind, {**payload, **operator_origin(self.by)}, operator=self.by)


def add_user(context: AdminContext, username: str, role: str, password: str) -> Account:
    check_username(username)
    check_role(role)
    check_password(password, username)
    if context.accounts.get(username) is not None:
        raise AccountError(f"the user {username} exists already")
    context.record("user-added", {"username": username, "role": role})
    return context.accounts.add(username, role, password)


def disable_user(context: AdminContext, username: str) -> Account:
    account = _existing(context, username)
    context.record("user-disabled", {"username": username, "role": account.role})
    return context.accounts.disable(username)


def change_password(context: AdminContext, username: str, password: str) -> Account:
    account = _existing(context, username)
    check_password(password, username)
    context.record("user-password-changed", {"username": username, "role": account.role})
    return context.accounts.set_password(username, password)


def _existing(context: AdminContext, username: str) -> Account:
    account = context.accounts.get(username)
    if account is None:
        raise AccountError(f"no user {username}")
    return account
