"""`galacto users add|list|disable|passwd`: the console accounts (docs/console.md, "Accounts").

- ``add NAME --role {technologist,physicist,admin} [--password-stdin]``: a new account;
- ``list [--json]``: every account, its role, whether it is disabled, its last login;
- ``disable NAME``: the account can no longer log in, and its open sessions end at once (the
  running service reads the account at every request);
- ``passwd NAME [--password-stdin]``: a new password; the account's sessions end.

The password is read from the terminal twice (not echoed), or with ``--password-stdin`` as one
line from standard input (for scripts; never on the command line, where ``ps`` shows it). Each
change is journaled with the OS user who made it. Exit codes: 0 done, 2 a bad name, role or
password, an unknown user, or a database or journal that cannot be written.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from acquisition.account_admin import AdminContext, add_user, change_password, disable_user
from acquisition.accounts import ROLES, AccountError, Accounts
from acquisition.cli import EXIT_OK, EXIT_USAGE, add_database_option, database_config, os_user
from acquisition.exam.model import Operator
from acquisition.journal import Journal, JournalError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "users",
        help="the console accounts: add, list, disable, change a password",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="a new console account")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=run_add)
    listing = sub.add_parser("list", help="the accounts")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.set_defaults(func=run_list)
    disable = sub.add_parser("disable", help="disable an account (its sessions end)")
    disable.add_argument("name", metavar="NAME")
    disable.set_defaults(func=run_disable)
    passwd = sub.add_parser("passwd", help="change an account's password (its sessions end)")
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    passwd.set_defaults(func=run_passwd)
    for action in (add, listing, disable, passwd):
        add_database_option(action)


def _fail(message: str) -> int:
    print(f"galacto users: {message}", file=sys.stderr)
    return EXIT_USAGE


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def _change(args: argparse.Namespace, change: Any) -> int:
    config = database_config(args)
    path = Path(config.database.path)
    key = config.site.journal_key.encode() or None
    who = Operator(os_user(), {"os_user": os_user(), "via": "galacto users"})
    try:
        with Accounts(path) as accounts, Journal(path, key=key) as journal:
            account = change(AdminContext(accounts, journal, who))
    except AccountError as exc:
        return _fail(str(exc))
    except JournalError as exc:
        return _fail(f"not done: the journal cannot be written ({exc})")
    state = "disabled" if account.disabled else "enabled"
    print(f"{account.username} ({account.role}, {state})")
    return EXIT_OK


def run_add(args: argparse.Namespace) -> int:
    try:
        password = _read_password(args)
    except AccountError as exc:
        return _fail(str(exc))
    return _change(args, lambda ctx: add_user(ctx, args.name, args.role, password))


def run_disable(args: argparse.Namespace) -> int:
    return _change(args, lambda ctx: disable_user(ctx, args.name))


def run_passwd(args: argparse.Namespace) -> int:
    try:
        password = _read_password(args)
    except AccountError as exc:
        return _fail(str(exc))
    return _change(args, lambda ctx: change_password(ctx, args.name, password))


def run_list(args: argparse.Namespace) -> int:
    config = database_config(args)
    path = Path(config.database.path)
    if not path.exists():
        return _fail(f"no database at {path} (database.path)")
    with Accounts(path) as accounts:
        listed = accounts.list()
    if args.json:
        print(json.dumps({"users": [a.as_json() for a in listed]}, indent=1))
        return EXIT_OK
    rows = [("user", "role", "state", "last login (UTC)", "password changed (UTC)")]
    for a in listed:
        state = "disabled" if a.disabled else "enabled"
        rows.append(
            (a.username, a.role, state, a.last_login_utc or "never", a.password_changed_utc)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK
