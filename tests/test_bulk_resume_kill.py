"""The apply process killed with SIGKILL at random points, again and again, then resumed:
the final state equals the plan, no change is made twice, and the resumed result's counts
equal the sandbox audit's."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from raw_api import changed_entries, list_all_raw

from viewerkit import Client
from viewerkit.bulk import resume
from viewerkit.bulk.journal import Journal
from viewerkit.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parent.parent

#: applies the plan, or resumes the journal's run once one was started
APPLY_OR_RESUME = """
import sys
from viewerkit import Client
from viewerkit.bulk import Plan, resume
from viewerkit.bulk.journal import Journal

plan_csv, journal = sys.argv[1], sys.argv[2]
with Journal(journal) as j:
    started = bool(j.run_ids())
with Client(max_concurrency=8) as client:
    if started:
        result = resume(client, journal, concurrency=8, progress=False)
    else:
        result = Plan.from_csv(plan_csv).apply(client, journal=journal, concurrency=8, progress=False)
print(result.counts(), flush=True)
"""


def _requests_sent(journal: Path) -> int:
    """How many requests the journal records (0 before it exists)."""
    if not journal.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(journal, timeout=5)) as db:
            return int(db.execute("SELECT count(*) FROM requests").fetchone()[0])
    except sqlite3.OperationalError:  # no table yet
        return 0


def _plan_rows(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, study in enumerate(studies):
        row: dict[str, Any] = {"study_id": study["studyId"]}
        if i % 4 == 0:
            row["severity"] = {"normal": "high", "high": "stat", "stat": "normal"}[study["severity"]]
        elif i % 4 == 1:
            row["meta.shift"] = f"night {i}"
        elif i % 4 == 2:
            row["action"] = "uncancel" if study["isCancelled"] else "cancel"
        else:
            row["study_description"] = f"checked {i}"
            row["action"] = "cancel"
        rows.append(row)
    return rows


def _holds(study: dict[str, Any], row: dict[str, Any]) -> bool:
    checks = {
        "severity": lambda v: study["severity"] == v,
        "meta.shift": lambda v: (study.get("metadata") or {}).get("shift") == v,
        "action": lambda v: bool(study["isCancelled"]) == (v == "cancel"),
        "study_description": lambda v: study["studyDescription"] == v,
    }
    return all(checks[k](v) for k, v in row.items() if k != "study_id" and isinstance(v, str))


def _apply_script(
    sandbox: Sandbox, tmp_path: Path, studies: int
) -> tuple[dict[str, Any], list[dict[str, Any]], Path, Path, Path, dict[str, str]]:
    """The sandbox's studies, a plan of changes to the first ``studies`` written as CSV, the
    journal path, the apply-or-resume script and its environment (key and URL from it)."""
    before = {s["studyId"]: s for s in list_all_raw(sandbox)}
    rows = _plan_rows(list(before.values())[:studies])
    plan_csv, journal = tmp_path / "plan.csv", tmp_path / "j.sqlite"
    pd.DataFrame(rows).to_csv(plan_csv, index=False)
    script = tmp_path / "apply_or_resume.py"
    script.write_text(APPLY_OR_RESUME)
    env = dict(os.environ, AVARA_API_KEY=sandbox.api_key, AVARA_BASE_URL=sandbox.base_url,
               PYTHONPATH=str(ROOT))
    return before, rows, plan_csv, journal, script, env


def test_resume_after_repeated_sigkill_applies_each_change_once(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=320, seed=41, latency_ms=20)
    before, rows, plan_csv, journal, script, env = _apply_script(sandbox, tmp_path, 300)
    audit_start = len(sandbox.audit())
    rng = random.Random(9)
    kills = 0
    for _ in range(7):
        sent = _requests_sent(journal)
        process = subprocess.Popen([sys.executable, str(script), str(plan_csv), str(journal)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # a random point once this process sends (a process that never gets there is
        # killed where it is, after the deadline)
        deadline = time.monotonic() + 20
        while process.poll() is None and _requests_sent(journal) <= sent and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        _, err = process.communicate()
        assert process.returncode in (0, -signal.SIGKILL), err.decode()
        if process.returncode == 0:
            break
    assert kills >= 5
    with Journal(journal) as j:
        assert len(j.run_ids()) == 1  # every process after the first resumed the same run
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        result = resume(client, journal, progress=False)
    after = {s["studyId"]: s for s in list_all_raw(sandbox)}
    assert [r["study_id"] for r in rows if not _holds(after[r["study_id"]], r)] == []
    made = changed_entries(sandbox, audit_start)
    assert made and max(made.values()) == 1  # no change made twice
    changed_studies = {study_id for study_id, _ in made}
    counts = result.counts()
    assert counts["failed"] == counts["conflict"] == counts["skipped"] == 0
    assert counts["applied"] == len(changed_studies)
    assert counts["noop"] == len(rows) - len(changed_studies)
    applied = set(result.frame.loc[result.frame["status"] == "applied", "study_id"])
    assert applied == changed_studies


def test_ctrl_c_lets_the_requests_in_flight_finish_and_resume_completes_the_run(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=130, seed=42, latency_ms=30)
    before, rows, plan_csv, journal, script, env = _apply_script(sandbox, tmp_path, 120)
    audit_start = len(sandbox.audit())
    process = subprocess.Popen([sys.executable, str(script), str(plan_csv), str(journal)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while process.poll() is None and _requests_sent(journal) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode != 0 and b"KeyboardInterrupt" in err
    with Journal(journal) as j:
        (run_id,) = j.run_ids()
        statuses = Counter(r.status for r in j.rows(run_id))
        assert j.run(run_id).finished_at is None  # interrupted
    assert statuses["pending"] > 0 and statuses["sending"] <= 8  # at most the requests in flight
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        result = resume(client, journal, progress=False)
    assert result.counts()["applied"] + result.counts()["noop"] == len(rows)
    after = {s["studyId"]: s for s in list_all_raw(sandbox)}
    assert [r["study_id"] for r in rows if not _holds(after[r["study_id"]], r)] == []
    assert max(changed_entries(sandbox, audit_start).values()) == 1
