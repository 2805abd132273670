"""`galacto dose mgd|alerts|ack`, run the way physicists run them: a real subprocess."""

from __future__ import annotations

import getpass
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from acquisition.accounts import Accounts
from acquisition.commands.dose_checks import Acknowledger, IdentityError, acknowledger
from acquisition.dose_log import DoseLog
from acquisition.dose_policy import DEFAULT_LEVELS
from acquisition.journal import Journal
from dicom_nodes.datasets.dose_extract import from_image_header
from dose.levels import load_levels
from dose.policy import DosePolicy
from tests.dose_factories import Exposure, mg_image
from tests.integration.test_records_cli import galacto

ONE_LINE = re.compile(r"^\w+=\S+ outside \[[^\]]+\] of .+\n$")


def mgd(*args: str) -> Any:
    return galacto("dose", "mgd", *args)


def test_mgd_json_has_the_contract_keys_and_the_published_figure() -> None:
    # dose.md: g(0.50 mm Al, 4.5 cm) = 0.285, s(W/Rh) = 1.042, c = 1 at 50 %
    result = mgd("--kerma", "5", "--hvl", "0.5", "--thickness", "45", "--target", "W",
                 "--filter", "Rh", "--glandularity", "50", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"mgd_mgy", "g", "c", "s", "glandularity_pct", "basis"} <= set(doc)
    assert doc["mgd_mgy"] == pytest.approx(5 * 0.285 * 1.042)
    assert (doc["g"], doc["c"], doc["s"], doc["glandularity_pct"]) == (
        pytest.approx(0.285),
        1.0,
        1.042,
        50.0,
    )
    assert "by construction" in doc["basis"]


def test_mgd_by_age_gives_the_typical_glandularity() -> None:
    # dose.md: age 40-49, 5 cm → 49 %
    result = mgd("--kerma", "5", "--hvl", "0.5", "--thickness", "50", "--target", "Mo",
                 "--filter", "Rh", "--age", "45", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["glandularity_pct"] == pytest.approx(49)
    assert doc["c"] == 1.0 and "no c table brackets 49 % glandularity" in doc["basis"]


def test_mgd_text() -> None:
    result = mgd("--kerma", "4", "--hvl", "0.4", "--thickness", "40", "--target", "Mo",
                 "--filter", "Mo")  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first == "MGD 1.044 mGy = K 4 mGy × g 0.261 × c 1 × s 1"  # 4 × 0.261 × 1 × 1


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (("--hvl", "0.25"), "hvl=0.25 outside [0.3, 0.6] of Dance 2000 g (mm Al)\n"),
        (("--thickness", "128"), "thickness=128 outside [20, 110] of Dance 2000 g (mm)\n"),
        (("--kerma", "0"), "kerma=0 outside [0.01, 100] of plausible incident air kerma (mGy)\n"),
        (("--kerma", "-3"), "kerma=-3 outside [0.01, 100] of plausible incident air kerma (mGy)\n"),
        (("--target", "Cu"), "target=Cu outside [Mo, W] of Dance 2000 s factors (Mo, Rh, W)\n"),
        (("--filter", "Al"),
         "filter=Al outside [Rh, Ag] of Dance 2000 s factors for target W (Rh, Ag)\n"),
    ],
)  # fmt: skip
def test_mgd_refuses_with_one_line_and_exit_2(changes: tuple[str, str], line: str) -> None:
    args = {"--kerma": "5", "--hvl": "0.5", "--thickness": "45", "--target": "W", "--filter": "Rh"}
    args[changes[0]] = changes[1]
    result = mgd(*(part for pair in args.items() for part in pair))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == line
    assert ONE_LINE.match(result.stderr)


@pytest.fixture
def alerting_db(tmp_path: Path) -> Path:
    db = tmp_path / "galacto.db"
    policy = DosePolicy(levels=load_levels([DEFAULT_LEVELS]))
    with DoseLog(db, policy=policy) as log:
        # 2.6 mGy at 45 mm: above EUREF acceptable (2.0 mGy at 40 mm PMMA); and an absurd one
        log.record([from_image_header(mg_image(Exposure(agd_mgy=2.6), study_uid="1.2.3"))])
        absurd = mg_image(Exposure(), study_uid="1.2.3")
        absurd.CompressionForce = -20
        log.record([from_image_header(absurd)])
    Journal(db).close()
    return db


def alerts(db: Path, *extra: str) -> list[dict[str, Any]]:
    result = galacto("dose", "alerts", "--database", str(db), "--json", *extra)
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)["alerts"]
    return found


def test_alerts_name_the_exposure_level_value_and_state(alerting_db: Path) -> None:
    found = alerts(alerting_db)
    assert [(a["level_id"], a["state"]) for a in found] == [
        ("euref-acceptable", "open"),
        ("implausible", "open"),
    ]
    assert found[0]["value_mgy"] == pytest.approx(2.6) and found[0]["limit_mgy"] == 2.0
    assert all(a["sop_instance_uid"] for a in found)
    text = galacto("dose", "alerts", "--database", str(alerting_db))
    assert "EUREF acceptable" in text.stdout and "2 alert(s), 2 open" in text.stderr


def test_ack_journals_the_os_user_and_the_reason(alerting_db: Path) -> None:
    first = alerts(alerting_db)[0]
    result = galacto(
        "dose", "ack", str(first["id"]), "--database", str(alerting_db),
        "--reason", "dense 45 mm breast, repeat avoided",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    who = getpass.getuser()
    assert f"acknowledged by {who}" in result.stdout
    (acked,) = [a for a in alerts(alerting_db) if a["id"] == first["id"]]
    assert (acked["state"], acked["acknowledged_by"], acked["acknowledgement_reason"]) == (
        "acknowledged",
        who,
        "dense 45 mm breast, repeat avoided",
    )
    assert [a["id"] for a in alerts(alerting_db, "--open")] != [first["id"]]
    with Journal(alerting_db) as journal:
        (entry,) = [e for e in journal.entries() if e.kind == "dose-alert-acknowledged"]
        assert journal.verify().ok
    assert entry.operator == who
    assert entry.payload["alert_id"] == first["id"]
    assert entry.payload["reason"] == "dense 45 mm breast, repeat avoided"
    again = galacto("dose", "ack", str(first["id"]), "--database", str(alerting_db),
                    "--reason", "twice")  # fmt: skip
    assert again.returncode == 2 and f"already acknowledged by {who}" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("999", "--reason", "x"), "no alert 999"),
        (("1", "--reason", "   "), "the reason must be a non-empty line"),
        (("1", "--reason", "x", "--user", "alice"), "alice: wrong user name or password"),
    ],
)
def test_ack_refusals_exit_2(alerting_db: Path, args: tuple[str, ...], message: str) -> None:
    result = galacto("dose", "ack", *args, "--database", str(alerting_db))
    assert result.returncode == 2 and message in result.stderr
    assert {a["state"] for a in alerts(alerting_db)} == {"open"}


PASSWORD = "correct horse battery"


def test_the_user_needs_the_password_and_the_physicist_role(tmp_path: Path) -> None:
    with Accounts(tmp_path / "galacto.db") as accounts:
        accounts.add("pat", "physicist", PASSWORD)
        accounts.add("rt", "technologist", PASSWORD)
        assert acknowledger("pat", io.StringIO(f"{PASSWORD}\n"), accounts) == Acknowledger(
            "pat", "console account"
        )
        with pytest.raises(IdentityError, match="wrong user name or password"):
            acknowledger("pat", io.StringIO("guess\n"), accounts)
        with pytest.raises(IdentityError, match="wrong user name or password"):
            acknowledger("nobody", io.StringIO(f"{PASSWORD}\n"), accounts)
        with pytest.raises(IdentityError, match="does not hold the physicist role"):
            acknowledger("rt", io.StringIO(f"{PASSWORD}\n"), accounts)
        accounts.disable("pat")
        with pytest.raises(IdentityError, match="wrong user name or password"):
            acknowledger("pat", io.StringIO(f"{PASSWORD}\n"), accounts)
        assert acknowledger(None, io.StringIO(""), accounts).how == "OS user"


def test_ack_as_a_console_account_journals_the_account(alerting_db: Path) -> None:
    with Accounts(alerting_db) as accounts:
        accounts.add("pat", "physicist", PASSWORD)
    first = alerts(alerting_db)[0]
    args = ("dose", "ack", str(first["id"]), "--database", str(alerting_db),
            "--reason", "phantom left on the table", "--user", "pat")  # fmt: skip
    wrong = galacto(*args, input="guess\n")
    assert wrong.returncode == 2 and "wrong user name or password" in wrong.stderr
    result = galacto(*args, input=f"{PASSWORD}\n")
    assert result.returncode == 0, result.stderr
    assert "acknowledged by pat" in result.stdout
    (acked,) = [a for a in alerts(alerting_db) if a["id"] == first["id"]]
    assert acked["acknowledged_by"] == "pat"
    with Journal(alerting_db) as journal:
        (entry,) = [e for e in journal.entries() if e.kind == "dose-alert-acknowledged"]
    assert entry.operator == "pat" and entry.payload["identified_as"] == "console account"
