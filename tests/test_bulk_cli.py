"""`viewerkit bulk ...` against real sandbox servers: each command a thin shell over the
library call, its exit status (0 done, 5 rows failed, 6 conflicts), the default journal
under data/journals/, and nothing sent without --apply / confirmation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from raw_api import list_all_raw

from viewerkit import Client, fetch_users
from viewerkit.bulk import Plan, runs
from viewerkit.cli import EXIT_STATUSES, main
from viewerkit.sandbox.server import Sandbox

WRITES = ("PATCH", "POST")


def _run(sandbox: Sandbox, args: list[str], **kwargs: Any) -> Result:
    env = {"AVARA_API_KEY": sandbox.api_key, "AVARA_BASE_URL": sandbox.base_url}
    return CliRunner().invoke(main, ["bulk", *args], env=env, **kwargs)


def _writes(sandbox: Sandbox, since: int) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests(since=since) if r["method"] in WRITES]


def _last_seq(sandbox: Sandbox) -> int:
    found = sandbox.requests()
    return int(found[-1]["seq"]) if found else 0


@pytest.fixture
def server(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(studies=40, seed=51)


def _severity_plan(sandbox: Sandbox, path: Path, n: int = 6) -> list[dict[str, Any]]:
    studies = list_all_raw(sandbox)[:n]
    rows = [{"study_id": s["studyId"], "severity": "stat", "note": f"n{i}"} for i, s in enumerate(studies)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return studies


def test_bulk_exit_statuses_are_documented() -> None:
    assert EXIT_STATUSES[5].startswith("bulk") and EXIT_STATUSES[6].startswith("bulk")
    shown = CliRunner().invoke(main, ["--help"], terminal_width=120).output
    assert "5  bulk: some rows failed" in shown and "6  bulk: some rows were conflicts" in shown


def test_preview_sends_nothing_and_apply_sends_once_then_all_noop(server: Sandbox, tmp_path: Path) -> None:
    plan = tmp_path / "plan.csv"
    studies = _severity_plan(server, plan)
    already = sum(s["severity"] == "stat" for s in studies)
    seq = _last_seq(server)
    shown = _run(server, ["preview", str(plan), "--out", str(tmp_path / "preview.csv")])
    assert shown.exit_code == 0, shown.output
    assert "preview of 6 rows:" in shown.output and "update" in shown.output
    assert _writes(server, seq) == [] and (tmp_path / "preview.csv").exists()
    journal = tmp_path / "j.sqlite"
    declined = _run(server, ["apply", str(plan), "--journal", str(journal)], input="n\n")
    assert declined.exit_code == 1 and _writes(server, seq) == []
    applied = _run(server, ["apply", str(plan), "--journal", str(journal), "--yes", "--reason", "ED",
                            "--out", str(tmp_path / "result.csv")])
    assert applied.exit_code == 0, applied.output
    assert f"applied {6 - already}" in applied.output
    assert len(_writes(server, seq)) == 6 - already
    assert pd.read_csv(tmp_path / "result.csv")["note"].tolist() == [f"n{i}" for i in range(6)]
    seq = _last_seq(server)
    again = _run(server, ["apply", str(plan), "--journal", str(journal), "--yes"])
    assert again.exit_code == 0 and "noop 6" in again.output and _writes(server, seq) == []
    assert runs(journal)["reason"].tolist() == ["ED", None]


def test_apply_journals_under_data_journals_by_default(
    server: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = tmp_path / "plan.csv"
    _severity_plan(server, plan, n=2)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    result = _run(server, ["apply", str(plan), "--yes"])
    assert result.exit_code == 0, result.output
    assert (project / "data" / "journals" / "bulk.sqlite").exists()
    resumed = _run(server, ["resume"])
    assert resumed.exit_code == 0, resumed.output


def test_resume_exits_5_when_rows_failed(server: Sandbox, tmp_path: Path) -> None:
    study = list_all_raw(server)[0]
    new = "stat" if study["severity"] != "stat" else "high"
    journal = tmp_path / "j.sqlite"
    server.fail_next(1, method="PATCH", path=f"/v1/viewer/studies/{study['studyId']}", when="before", how="503")
    with Client(api_key=server.api_key, base_url=server.base_url, max_retries=0) as client:
        first = Plan({"study_id": [study["studyId"]], "severity": [new]}).apply(
            client, journal=journal, progress=False)
    assert first.frame["status"].tolist() == ["failed"]
    resumed = _run(server, ["resume", str(journal)])
    assert resumed.exit_code == 5, resumed.output
    assert "failed 1" in resumed.output


def test_undo_exits_6_on_a_conflict_and_leaves_that_study(server: Sandbox, tmp_path: Path) -> None:
    plan = tmp_path / "plan.csv"
    studies = _severity_plan(server, plan, n=4)
    changed = [s for s in studies if s["severity"] != "stat"]
    journal = tmp_path / "j.sqlite"
    assert _run(server, ["apply", str(plan), "--journal", str(journal), "--yes"]).exit_code == 0
    with Client(api_key=server.api_key, base_url=server.base_url) as colleague:
        colleague.update_study(changed[0]["studyId"], severity="high" if changed[0]["severity"] != "high" else "normal")
    declined = _run(server, ["undo", str(journal)], input="n\n")
    assert declined.exit_code == 1
    undone = _run(server, ["undo", str(journal), "--yes"])
    assert undone.exit_code == 6, undone.output
    now = {s["studyId"]: s for s in list_all_raw(server)}
    assert now[changed[0]["studyId"]]["severity"] != changed[0]["severity"]
    assert all(now[s["studyId"]]["severity"] == s["severity"] for s in changed[1:])


def test_cancel_previews_a_list_and_applies_with_apply(server: Sandbox, tmp_path: Path) -> None:
    studies = [s for s in list_all_raw(server) if not s["isCancelled"]][:3]
    ids = tmp_path / "ids.txt"
    ids.write_text("# a withdrawn batch\n" + "\n".join(s["studyId"] for s in studies) + "\n")
    seq = _last_seq(server)
    shown = _run(server, ["cancel", "--ids", str(ids)])
    assert shown.exit_code == 0 and "cancel 3" in shown.output and _writes(server, seq) == []
    done = _run(server, ["cancel", "--ids", str(ids), "--apply", "--yes", "--journal", str(tmp_path / "j.sqlite")])
    assert done.exit_code == 0, done.output
    now = {s["studyId"]: s for s in list_all_raw(server)}
    assert all(now[s["studyId"]]["isCancelled"] for s in studies)


def test_a_bad_plan_exits_1_naming_row_and_field(server: Sandbox, tmp_path: Path) -> None:
    plan = tmp_path / "plan.csv"
    plan.write_text("study_id,severity\nstu_bad,urgent\n")
    seq = _last_seq(server)
    result = _run(server, ["apply", str(plan), "--yes", "--journal", str(tmp_path / "j.sqlite")])
    assert result.exit_code == 1
    assert "row 2, field study_id" in result.output and "row 2, field severity" in result.output.replace("; ", "\n")
    assert _writes(server, seq) == []


def test_reassign_moves_the_open_studies_of_from_over_to(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    server = make_sandbox(studies=600, seed=52)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        listed = fetch_users(client, progress=False)
    emails = dict(zip(listed["user_id"], listed["email"], strict=True))
    open_ = [s for s in list_all_raw(server)
             if not s["isCancelled"] and s["studyViewerStatus"] == "incomplete"
             and (s.get("assignedTo") or {}).get("userId") in emails]
    load = pd.Series([s["assignedTo"]["userId"] for s in open_]).value_counts()
    leaving = str(load.index[0])
    theirs = {s["studyId"] for s in open_ if s["assignedTo"]["userId"] == leaving}
    targets = [u for u in listed["user_id"] if u != leaving][:2]
    args = ["reassign", "--from", emails[leaving], "--to", f"{emails[targets[0]]},{emails[targets[1]]}"]
    seq = _last_seq(server)
    shown = _run(server, args)
    assert shown.exit_code == 0, shown.output
    assert f"preview of {len(theirs)} rows" in shown.output and _writes(server, seq) == []
    done = _run(server, [*args, "--apply", "--yes", "--journal", str(tmp_path / "j.sqlite")])
    assert done.exit_code == 0, done.output
    now = {s["studyId"]: s for s in list_all_raw(server)}
    assert {now[i]["assignedTo"]["userId"] for i in theirs} <= set(targets)
