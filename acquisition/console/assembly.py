"""The console as the controller assembles it: who may reach it, and its parts put together.

:func:`check_access` is the start-up rule of issue 14 §1 and §4 (docs/console.md, "Who can
reach the console"); :func:`assemble` builds the console's backend, the physicist's dose desk
and the HTTP server from the controller's stores and the configuration. The controller owns
what is passed in and closes it; the server is started by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from acquisition import wiring
from acquisition.accounts import Accounts
from acquisition.console.backend import ConsoleBackend
from acquisition.console.dose_desk import DoseDesk
from acquisition.console.server import ConsoleServer
from acquisition.dose_log import DoseLog
from acquisition.exam.service import ExamService
from acquisition.journal import Journal
from acquisition.settings import Config, ConfigError

ADD_USER = "galacto users add NAME --role {technologist,physicist,admin}"


def check_access(config: Config, active_accounts: int) -> None:
    """Refuse (:class:`ConfigError` naming the settings) a console the network can reach
    without HTTPS and an account, or a console on loopback nobody could log in to (unless
    console.allow_no_users says so)."""
    console = config.console
    if not wiring.is_loopback(console.host):
        missing = []
        if not console.tls_certificate:
            missing.append("HTTPS (console.tls_certificate and console.tls_private_key)")
        if not active_accounts:
            missing.append(f"at least one console account ({ADD_USER})")
        if missing:
            raise ConfigError(
                f"console.host: {console.host!r} is not loopback: a console the network "
                f"can reach needs {' and '.join(missing)}"
            )
    elif not active_accounts and not console.allow_no_users:
        raise ConfigError(
            f"console: no console account, so nobody could log in: add one with `{ADD_USER}` "
            "(for a trial on loopback only: console.allow_no_users = true)"
        )


def assemble(
    config: Config,
    *,
    database: Path,
    exam: ExamService,
    dose_log: DoseLog,
    journal: Journal,
    accounts: Accounts,
    orders: Any,
    injector: Any,
    outbox_counts: Callable[[], dict[str, int]] | None,
    refresh_orders: Callable[[], None] | None,
    alerts: Callable[[], list[str]],
    reinitialise_injector: Callable[[str], None] | None,
) -> ConsoleServer:
    """The console server (not started) over the controller's stores."""
    limits = config.injector
    backend = ConsoleBackend(
        exam,
        dose_log,
        orders=orders,
        injector=injector,
        outbox_counts=outbox_counts,
        refresh_orders=refresh_orders,
        site_name=config.site.name,
        alerts=alerts,
        reinitialise_injector=reinitialise_injector,
        pressure_limits_kpa={
            "warning": limits.pressure_warning_kpa,
            "adjustment": limits.pressure_adjustment_kpa,
            "termination": limits.pressure_termination_kpa,
            "ceiling": limits.pressure_ceiling_kpa,
        },
    )
    reference_levels = config.dose.reference_levels_file
    desk = DoseDesk(
        database,
        dose_log,
        journal,
        pseudonym_secret=config.site.pseudonym_secret,
        settings={"dose.reference_levels_file": reference_levels} if reference_levels else {},
    )
    try:
        return ConsoleServer(
            backend,
            config.console.host,
            config.console.port,
            accounts=accounts,
            journal=journal,
            session_idle_s=config.console.session_idle_s,
            allowed_origins=config.console.allowed_origins,
            tls=wiring.console_tls(config),
            dose_desk=desk,
        )
    except ValueError as exc:  # e.g. every interface without an origin allow-list
        raise ConfigError(f"console.host: {exc}") from exc
