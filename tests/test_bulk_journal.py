"""The bulk journal: what it records (who, why, the plan row, the intended change, the
before-image with metadata null and {} apart, each request confirmed), never the API key,
and a row sent without a recorded answer that resume reads back instead of sending again."""

from __future__ import annotations

import getpass
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from raw_api import changed_entries, list_all_raw

from viewerkit import Client
from viewerkit.bulk import Plan, resume, runs, undo
from viewerkit.bulk.apply import preview_plan
from viewerkit.sandbox.server import Sandbox


def _client(sandbox: Sandbox, **options: Any) -> Client:
    return Client(api_key=sandbox.api_key, base_url=sandbox.base_url, **options)


def test_the_journal_never_holds_the_api_key(make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:
    sandbox = make_sandbox(studies=30, seed=31)
    ids = [s["studyId"] for s in list_all_raw(sandbox)][:10]
    journal = tmp_path / "journal.sqlite"
    with _client(sandbox) as client:
        result = Plan({"study_id": ids, "severity": ["stat"] * 10, "meta.key": [sandbox.api_key[:6]] * 10}).apply(
            client, journal=journal, reason="key test", progress=False)
        undo(client, journal, result.run_id, progress=False)
        resume(client, journal, result.run_id, progress=False)
    key = sandbox.api_key.encode()
    files = [p for p in tmp_path.iterdir() if p.name.startswith("journal.sqlite")]
    assert files and all(key not in p.read_bytes() for p in files)


def test_the_journal_records_who_why_the_row_the_change_and_the_before_image(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=20, seed=32)
    a, b, c = [s["studyId"] for s in list_all_raw(sandbox)][:3]
    journal = tmp_path / "j.sqlite"
    with _client(sandbox) as client:
        client.update_study(a, metadata=None)
        client.update_study(b, metadata={})
        plan = Plan(pd.DataFrame({"study_id": [a, b, c], "meta.ward": ["7B", "7B", None],
                                  "action": [None, None, "cancel"], "ticket": ["T-1", "T-2", "T-3"]},
                                 index=[2, 3, 4]))
        result = plan.apply(client, journal=journal, reason="ward move", progress=False)
    assert result.counts()["applied"] == 3
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        user, reason, finished = db.execute("SELECT user, reason, finished_at FROM runs").fetchone()
        rows = db.execute("SELECT label, cells, change, before, status FROM rows ORDER BY position").fetchall()
        unconfirmed = db.execute("SELECT count(*) FROM requests WHERE outcome IS NULL").fetchone()[0]
        steps = db.execute("SELECT step, outcome FROM requests ORDER BY id").fetchall()
    assert (user, reason) == (getpass.getuser(), "ward move") and finished
    labels = [orjson.loads(r[0]) for r in rows]
    assert labels == [2, 3, 4]
    assert orjson.loads(rows[0][1])["ticket"] == "T-1"
    assert orjson.loads(rows[0][2]) == {"meta:ward": "7B"} and orjson.loads(rows[2][2]) == {"isCancelled": True}
    before = [orjson.loads(r[3]) for r in rows]
    assert before[0]["metadata"] is None and before[1]["metadata"] == {}  # null and {} kept apart
    assert all(r[4] == "applied" for r in rows)
    assert unconfirmed == 0 and sorted(steps) == [("cancel", "changed"), ("update", "changed"), ("update", "changed")]
    listed = runs(journal)
    assert listed["counts"].iloc[0]["applied"] == 3 and listed["reason"].iloc[0] == "ward move"


def test_a_row_sent_without_a_recorded_answer_is_read_back_on_resume_and_not_sent_again(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=10, seed=33)
    study = list_all_raw(sandbox)[0]
    path = f"/v1/viewer/studies/{study['studyId']}"
    new = "stat" if study["severity"] != "stat" else "high"
    journal = tmp_path / "j.sqlite"
    audit_start = len(sandbox.audit())
    with _client(sandbox, max_retries=0) as client:
        preview = preview_plan(Plan({"study_id": [study["studyId"]], "severity": [new]}), client,
                               progress=False, recheck=False)
        sandbox.fail_next(1, method="PATCH", path=path, when="after", how="drop")  # committed, answer lost
        sandbox.fail_next(1, method="GET", path=path, when="before", how="503")  # and the read-back fails
        first = preview.apply(journal=journal, progress=False)
        assert first.frame["status"].tolist() == ["failed"] and "outcome unknown" in first.frame["error"].iloc[0]
        seq = sandbox.requests()[-1]["seq"]
        resumed = resume(client, journal, progress=False)
    assert resumed.run_id == first.run_id and resumed.frame["status"].tolist() == ["applied"]
    assert [r["method"] for r in sandbox.requests(since=seq)] == ["GET"]  # read back, nothing re-sent
    assert changed_entries(sandbox, audit_start) == Counter({(study["studyId"], "update"): 1})
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT count(*) FROM requests WHERE outcome IS NULL").fetchone()[0] == 0


def test_a_run_holds_its_studies_from_other_runs_only_while_it_is_alive(tmp_path: Path) -> None:
    """Runs sharing a journal: a running run's studies are conflicts for a new run; an
    interrupted one (its lock released when its process ended) holds nothing, its rows left
    to resume; an applied row counts only when settled after the new run read its studies;
    a run cannot be resumed while it is still running."""
    from viewerkit.bulk.journal import Journal, JournalRow, now_text
    from viewerkit.errors import ValidationError

    def rows(*ids: str) -> list[JournalRow]:
        return [JournalRow(n, n, {}, study, {"severity": "stat"}, {}, None, None, "pending", False, None)
                for n, study in enumerate(ids)]

    def start(j: Journal, run: str, *ids: str, read_at: str) -> dict[str, str]:
        j.start_run(run, kind="apply", base_url="http://x", force=False, columns=[], reason=None,
                    rows=rows(*ids), read_at=read_at, live=j.live_runs())
        return {r.study_id or "": r.status for r in j.rows(run)}

    with Journal(tmp_path / "j.sqlite") as j:
        read = now_text()
        with j.running("run_a"):  # run_a is sending
            assert start(j, "run_a", "stu_1", "stu_2", read_at=read) == {"stu_1": "pending", "stu_2": "pending"}
            assert j.live_runs() == {"run_a"}
            held = start(j, "run_b", "stu_2", "stu_3", read_at=now_text())
            assert held == {"stu_2": "conflict", "stu_3": "pending"}
            assert "run_a" in str(next(r.error for r in j.rows("run_b") if r.study_id == "stu_2"))
            with pytest.raises(ValidationError, match="still running"), j.running("run_a"):
                pass  # a resume of run_a now would send beside it
        # run_a stopped without finishing (its process was killed, Ctrl-C ...): it holds nothing
        assert j.live_runs() == set()
        assert start(j, "run_c", "stu_1", "stu_3", read_at=now_text()) == {"stu_1": "pending", "stu_3": "pending"}
        j.settle("run_c", 0, "applied")  # run_c changed stu_1 ...
        j.finish_run("run_c")
        assert start(j, "run_d", "stu_1", read_at=read) == {"stu_1": "conflict"}  # ... after run_d read it
        assert start(j, "run_e", "stu_1", read_at=now_text()) == {"stu_1": "pending"}  # ... before run_e did
        with j.running("run_e"):  # a resume of run_a while run_e changes stu_1: that row is a conflict
            j.claim("run_a", read_at=now_text(), live=j.live_runs())
        statuses = {r.study_id: r.status for r in j.rows("run_a")}
        assert statuses == {"stu_1": "conflict", "stu_2": "pending"}
    assert not list(tmp_path.glob("*.lock"))  # no lock file left by a run that ended
