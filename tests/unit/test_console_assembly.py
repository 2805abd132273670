"""Who may reach the console (acquisition/console/assembly.check_access, issue 14 §1 and §4)."""

from __future__ import annotations

import pytest

from acquisition import settings
from acquisition.console.assembly import check_access
from acquisition.settings import ConfigError


def config(**overrides: object) -> settings.Config:
    return settings.load(
        None, environ={}, overrides={k.replace("__", "."): v for k, v in overrides.items()}
    )


def test_loopback_with_an_account_starts() -> None:
    check_access(config(console__host="127.0.0.1"), active_accounts=1)


def test_loopback_without_an_account_names_galacto_users_add() -> None:
    with pytest.raises(ConfigError, match="galacto users add NAME --role"):
        check_access(config(console__host="127.0.0.1"), active_accounts=0)
    check_access(config(console__host="::1", console__allow_no_users="true"), active_accounts=0)


@pytest.mark.parametrize("accounts", [0, 1])
def test_off_loopback_needs_https_and_an_account(accounts: int) -> None:
    with pytest.raises(ConfigError, match=r"console.host: '192.0.2.7' is not loopback") as refused:
        check_access(config(console__host="192.0.2.7"), active_accounts=accounts)
    assert "console.tls_certificate" in str(refused.value)
    assert ("at least one console account" in str(refused.value)) == (accounts == 0)


def test_allow_no_users_never_opens_the_network() -> None:
    with pytest.raises(ConfigError, match="at least one console account"):
        check_access(
            config(console__host="192.0.2.7", console__allow_no_users="true"), active_accounts=0
        )
