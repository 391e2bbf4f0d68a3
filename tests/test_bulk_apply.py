"""Bulk preview and apply against real sandbox servers: the final state equals the plan,
each planned change is made exactly once (counted from the sandbox's audit), conflicts,
undo, no-op reruns, and validation that sends nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytest
from raw_api import changed_entries, list_all_raw

from viewerkit import Client, fetch_users
from viewerkit.bulk import DELETE, EMPTY, UNASSIGN, Plan, runs, undo
from viewerkit.bulk.apply import preview_plan
from viewerkit.errors import AuthenticationError, ValidationError
from viewerkit.sandbox.server import Sandbox

WRITES = ("PATCH", "POST")


def _state(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    sandbox.set_faults(fail_rate=0.0, rate_limit=None)
    return {s["studyId"]: s for s in list_all_raw(sandbox)}


def _client(sandbox: Sandbox, **options: Any) -> Client:
    return Client(api_key=sandbox.api_key, base_url=sandbox.base_url, **options)


def _listed_users(sandbox: Sandbox) -> list[str]:
    with _client(sandbox) as client:
        return sorted(fetch_users(client, progress=False)["user_id"].astype(str))


def _holds(study: dict[str, Any], row: dict[str, Any]) -> bool:
    """Does the wire study hold every field the plan row sets?"""
    for name, value in row.items():
        if value is None or name in ("study_id", "study_instance_uid", "note"):
            continue
        if name == "assigned_to":
            held = (study.get("assignedTo") or {}).get("userId")
            if held != (None if value == UNASSIGN else value):
                return False
        elif name == "action":
            if bool(study["isCancelled"]) != (value == "cancel"):
                return False
        elif name.startswith("meta."):
            held = (study.get("metadata") or {}).get(name[5:])
            if held != (None if value == DELETE else value):
                return False
        elif name == "metadata":
            if study.get("metadata") != ({} if value == EMPTY else None):
                return False
        else:
            wire = {"severity": "severity", "study_viewer_status": "studyViewerStatus",
                    "study_description": "studyDescription"}[name]
            if study[wire] != value:
                return False
    return True


def _mixed_plan(studies: list[dict[str, Any]], users: list[str]) -> tuple[Plan, dict[str, int]]:
    """A plan of mixed changes over ``studies`` and, per study, how many changing requests
    (update, cancel / uncancel) it needs."""
    rows, needed = [], {}
    for i, study in enumerate(studies):
        row: dict[str, Any] = {"study_id": study["studyId"], "note": f"row {i}"}
        kind = i % 8
        if kind == 0:
            row["severity"] = {"normal": "high", "high": "stat", "stat": "normal"}[study["severity"]]
        elif kind == 1:
            row["study_viewer_status"] = "complete" if study["studyViewerStatus"] == "incomplete" else "incomplete"
        elif kind == 2:
            row["assigned_to"] = users[i % len(users)]
        elif kind == 3:
            row["meta.batch"] = f"b{i}"
        elif kind == 4:
            row["action"] = "uncancel" if study["isCancelled"] else "cancel"
        elif kind == 5:
            row["severity"] = study["severity"]  # already so: a no-op
        elif kind == 6:
            row["study_description"] = f"Re-read {i}"
            row["action"] = "cancel"
        else:
            row["assigned_to"] = UNASSIGN
            row["meta.batch"] = DELETE
        rows.append(row)
        updates = any(
            not _holds(study, {k: v}) for k, v in row.items() if k not in ("action", "note", "study_id")
        )
        action = "action" in row and not _holds(study, {"action": row["action"]})
        needed[study["studyId"]] = int(updates) + int(action)
    return Plan(pd.DataFrame(rows)), needed


def test_thousand_mixed_changes_under_failures_and_a_rate_limit_end_in_the_plan_each_made_once(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=1_100, seed=11)
    before = list(_state(sandbox).values())[:1_000]
    users = _listed_users(sandbox)[:20]
    plan, needed = _mixed_plan(before, users)
    audit_start = len(sandbox.audit())
    sandbox.set_faults(fail_rate=0.1, rate_limit=100)
    with _client(sandbox, max_concurrency=8) as client:
        result = plan.apply(client, journal=tmp_path / "j.sqlite", progress=False)
    counts = result.counts()
    assert counts["failed"] == counts["conflict"] == counts["skipped"] == 0, result.frame[result.frame.status != "applied"]
    assert counts["applied"] == sum(1 for n in needed.values() if n)
    assert counts["noop"] == sum(1 for n in needed.values() if not n)
    assert result.frame["note"].tolist() == [f"row {i}" for i in range(1_000)]  # input columns kept
    after = _state(sandbox)
    records: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in plan.frame.to_dict("records")]
    wrong = [r["study_id"] for r in records if not _holds(after[r["study_id"]], r)]
    assert wrong == []
    made = changed_entries(sandbox, audit_start)
    per_study = Counter[str]()
    for (study_id, _), n in made.items():
        per_study[study_id] += n
    assert {k: v for k, v in per_study.items()} == {k: v for k, v in needed.items() if v}
    assert max(made.values()) == 1
    faults = Counter(r["fault"]["when"] for r in sandbox.requests() if r["fault"])
    assert faults["after"] > 0 and faults["before"] > 0  # answers were lost after commits


def test_a_lost_answer_is_read_back_and_the_row_applied_without_another_write(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=20, seed=12)
    studies = list(_state(sandbox).values())
    target = studies[0]
    new = "stat" if target["severity"] != "stat" else "normal"
    plan = Plan({"study_id": [target["studyId"], studies[1]["studyId"]], "severity": [new, "high"],
                 "study_description": [None, "after lost answers"]})
    audit_start = len(sandbox.audit())
    with _client(sandbox, max_retries=2) as client:
        preview = plan.preview(client, progress=False)
        sandbox.fail_next(3, method="PATCH", path=f"/v1/viewer/studies/{target['studyId']}", when="after", how="drop")
        seq = sandbox.requests()[-1]["seq"]
        result = preview.apply(journal=tmp_path / "j.sqlite", progress=False, concurrency=1)
    assert result.frame["status"].tolist() == ["applied", "applied"]
    mine = [r for r in sandbox.requests(since=seq) if r["path"].endswith(target["studyId"])]
    methods = [r["method"] for r in mine]
    # the re-check read, three tries all lost after commit, the read-back: no write after it
    assert methods[-1] == "GET" and methods.count("PATCH") == 3
    assert changed_entries(sandbox, audit_start)[(target["studyId"], "update")] == 1


def test_an_edit_between_preview_and_apply_is_a_conflict_and_is_kept(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=30, seed=13)
    studies = list(_state(sandbox).values())[:4]
    plan = Plan({"study_id": [s["studyId"] for s in studies], "severity": ["stat", "stat", "high", "high"]})
    with _client(sandbox) as client, _client(sandbox) as colleague:
        preview = plan.preview(client, progress=False)
        colleague.update_study(studies[0]["studyId"], severity="normal" if studies[0]["severity"] != "normal" else "high")
        colleague.update_study(studies[1]["studyId"], study_description="edited, not planned")
        result = preview.apply(journal=tmp_path / "j.sqlite", progress=False)
        kept = client.retrieve_study(studies[0]["studyId"])["severity"]
        frame = result.frame
        assert frame["status"].iloc[0] == "conflict" and "severity" in frame["error"].iloc[0]
        assert kept != "stat"  # the colleague's edit is not overwritten
        assert frame["status"].iloc[1] in ("applied", "noop")  # another field's edit is no conflict
        forced = plan.preview(client, progress=False)
        colleague.update_study(studies[0]["studyId"], severity="high" if kept != "high" else "normal")
        assert forced.apply(journal=tmp_path / "j.sqlite", force=True, progress=False).frame["status"].iloc[0] == "applied"
        assert client.retrieve_study(studies[0]["studyId"])["severity"] == "stat"


def test_a_second_apply_of_the_same_plan_is_all_noop_and_sends_no_write(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=60, seed=14)
    studies = list(_state(sandbox).values())[:40]
    plan, _ = _mixed_plan(studies, _listed_users(sandbox))
    with _client(sandbox) as client:
        first = plan.apply(client, journal=tmp_path / "j.sqlite", progress=False)
        assert first.counts()["applied"] > 0
        seq = sandbox.requests()[-1]["seq"]
        second = plan.apply(client, journal=tmp_path / "j.sqlite", progress=False)
    assert set(second.frame["status"]) == {"noop"}
    assert [r for r in sandbox.requests(since=seq) if r["method"] in WRITES] == []
    assert runs(tmp_path / "j.sqlite")["rows"].tolist() == [40, 40]


def test_undo_after_a_partial_run_restores_our_studies_and_leaves_later_edits_alone(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=40, seed=15)
    initial = _state(sandbox)
    studies = list(initial.values())[:8]
    ids = [s["studyId"] for s in studies]
    unknown_user = "usr_" + "0" * 32  # the server refuses it: that row fails
    plan = Plan({
        "study_id": ids,
        "severity": ["stat"] * 8,
        "meta.ward": ["7B"] * 8,
        "assigned_to": [unknown_user, None, None, None, None, None, None, None],
        "action": [None, "cancel", None, None, None, None, None, None],
    })
    with _client(sandbox) as client, _client(sandbox) as colleague:
        result = plan.preview(client, progress=False, users=pd.DataFrame({"user_id": [unknown_user], "email": ["x@y.z"]})).apply(
            journal=tmp_path / "j.sqlite", progress=False,
        )
        assert result.frame["status"].iloc[0] == "failed"
        applied = result.frame.index[result.frame["status"] == "applied"].tolist()
        assert len(applied) >= 5
        # later edits by a colleague: one of our planned fields, one other field, one other study
        theirs: Literal["normal", "high"] = "normal" if initial[ids[2]]["severity"] != "normal" else "high"
        colleague.update_study(ids[2], severity=theirs)
        colleague.update_study(ids[3], study_description="colleague's words")
        other = list(initial)[20]
        colleague.update_study(other, study_description="not ours")
        undone = undo(client, tmp_path / "j.sqlite", result.run_id, progress=False)
    statuses = dict(zip(undone.frame["study_id"], undone.frame["status"], strict=True))
    assert statuses[ids[2]] == "conflict"
    now = _state(sandbox)
    assert now[ids[2]]["severity"] == theirs
    assert now[ids[3]]["studyDescription"] == "colleague's words"
    assert now[other]["studyDescription"] == "not ours"
    for study_id in ids:
        if study_id == ids[2]:
            continue
        was, is_ = initial[study_id], now[study_id]
        assert (is_["severity"], is_["metadata"], is_["isCancelled"], is_.get("assignedTo")) == (
            was["severity"], was["metadata"], was["isCancelled"], was.get("assignedTo")
        ), study_id
    listed = runs(tmp_path / "j.sqlite")
    assert listed["kind"].tolist() == ["apply", "undo"] and listed["undo_of"].iloc[1] == result.run_id


def test_metadata_null_and_empty_stay_apart_through_apply_and_undo(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=10, seed=16)
    a, b = list(_state(sandbox))[:2]
    with _client(sandbox) as client:
        client.update_study(a, metadata=None)
        client.update_study(b, metadata={"site": "North"})
        result = Plan({"study_id": [a, b], "metadata": ["!empty", "!null"]}).apply(
            client, journal=tmp_path / "j.sqlite", progress=False)
        assert result.counts()["applied"] == 2
        assert client.retrieve_study(a)["metadata"] == {} and client.retrieve_study(b).get("metadata") is None
        undo(client, tmp_path / "j.sqlite", progress=False)
        assert client.retrieve_study(a).get("metadata") is None
        assert client.retrieve_study(b)["metadata"] == {"site": "North"}


def test_validation_names_row_and_field_of_every_problem_and_sends_nothing(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=10, seed=17)
    ids = list(_state(sandbox))
    plan = Plan(pd.DataFrame({
        "study_id": [ids[0], "stu_bad", ids[1], ids[1], ids[2], ids[3]],
        "severity": ["urgent", "stat", "high", "high", None, None],
        "action": [None, None, None, None, "close", None],
        "assigned_to": [None, None, None, None, None, "nobody@example.org"],
    }, index=[2, 3, 4, 5, 6, 7]))
    audit_start = len(sandbox.audit())
    seq = sandbox.requests()[-1]["seq"] if sandbox.requests() else 0
    with _client(sandbox) as client, pytest.raises(ValidationError) as raised:
        plan.apply(client, journal=tmp_path / "j.sqlite", progress=False)
    cases = raised.value.failure_cases
    assert {(r, f) for r, f in zip(cases["row"], cases["field"], strict=True)} >= {
        (2, "severity"), (3, "study_id"), (4, "study_id"), (5, "study_id"), (6, "action"),
    }
    assert sandbox.audit()[audit_start:] == []
    assert [r for r in sandbox.requests(since=seq) if r["method"] in WRITES] == []
    # the server's view: a user the roster lacks, metadata over 50 pairs after the merge
    with _client(sandbox) as client:
        client.update_study(ids[4], metadata={f"k{i}": "v" for i in range(50)})
        seq = sandbox.requests()[-1]["seq"]
        server_view = Plan(pd.DataFrame({"study_id": [ids[3], ids[4]], "assigned_to": ["nobody@example.org", None],
                                         "meta.extra": [None, "one too many"]}, index=[2, 3]))
        with pytest.raises(ValidationError) as raised:
            server_view.apply(client, journal=tmp_path / "j.sqlite", progress=False)
    cases = raised.value.failure_cases
    assert {(r, f) for r, f in zip(cases["row"], cases["field"], strict=True)} == {(2, "assigned_to"), (3, "metadata")}
    assert [r for r in sandbox.requests(since=seq) if r["method"] in WRITES] == []


def test_emails_resolve_through_the_user_list_and_the_preview_shows_before_and_after(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=20, seed=18)
    studies = list(_state(sandbox).values())
    listed = set(_listed_users(sandbox))
    with_assignee = [s for s in studies if (s.get("assignedTo") or {}).get("userId") in listed]
    person = with_assignee[0]["assignedTo"]
    target = next(s for s in studies if (s.get("assignedTo") or {}).get("userId") != person["userId"])
    plan = Plan({"study_id": [target["studyId"], with_assignee[0]["studyId"]],
                 "assigned_to": [person["email"].upper(), person["email"]]})
    with _client(sandbox) as client:
        preview = plan.preview(client, progress=False, tz="Europe/Berlin")
        assert preview.counts() == {"noop": 1, "update": 1}
        frame = preview.to_frame()
        assert frame["after"].iloc[0] == {"assigned_to": person["userId"]}
        assert "Europe/Berlin" in preview._repr_html_() and "background" in preview._repr_html_()
        result = preview.apply(journal=tmp_path / "j.sqlite", progress=False)
    assert result.frame["assigned_to"].iloc[0] == person["email"].upper()  # the input as given
    assert result.frame["after"].iloc[0] == {"assigned_to": person["userId"]}
    out = result.to_csv(tmp_path / "result.csv")
    assert "applied" in out.read_text()
    assert len(result.failed_plan()) == 0


def test_a_refused_key_stops_the_run_and_nothing_more_is_sent(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=20, seed=19)
    ids = list(_state(sandbox))[:10]
    journal = tmp_path / "j.sqlite"
    with _client(sandbox) as client, Client(api_key="sk-revoked", base_url=sandbox.base_url) as revoked:
        preview = preview_plan(Plan({"study_id": ids, "study_description": ["re-read"] * 10}), client,
                               progress=False, recheck=False)
        preview._client = revoked  # the key is revoked between the preview and the apply
        seq = sandbox.requests()[-1]["seq"]
        with pytest.raises(AuthenticationError):
            preview.apply(journal=journal, concurrency=1, progress=False)
    assert len([r for r in sandbox.requests(since=seq) if r["method"] in WRITES]) == 1
    assert runs(journal)["counts"].iloc[0] == {"applied": 0, "noop": 0, "conflict": 0, "failed": 1, "skipped": 9}


def test_two_runs_sharing_a_journal_never_overwrite_each_other_unseen(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    """Two analysts (two triage boards on one cache) preview the same studies for different
    radiologists and confirm at once. The API has no conditional write; the shared journal
    lets the second run see the first one's claim: its rows are conflicts, not overwrites."""
    import threading
    import time

    sandbox = make_sandbox(studies=40, seed=17)
    studies = [s["studyId"] for s in list(_state(sandbox).values())[:8]]
    first_to, second_to = _listed_users(sandbox)[:2]
    journal = tmp_path / "triage.sqlite"
    with _client(sandbox) as one, _client(sandbox) as other:
        first = Plan({"study_id": studies, "assigned_to": first_to}).preview(one, progress=False)
        second = Plan({"study_id": studies, "assigned_to": second_to}).preview(other, progress=False)
        audit_start = len(sandbox.audit())
        sandbox.set_faults(latency_ms=150)  # the first run takes a while: the second starts meanwhile
        results: dict[str, Any] = {}
        running = threading.Thread(target=lambda: results.setdefault(
            "first", first.apply(journal=journal, concurrency=1, progress=False)))
        running.start()
        while not (journal.exists() and len(runs(journal))):  # the first run's rows are journaled
            time.sleep(0.01)
        results["second"] = second.apply(journal=journal, progress=False)
        running.join(60)
        sandbox.set_faults(latency_ms=0)
    first_result, second_result = results["first"], results["second"]
    assert first_result.counts()["applied"] == len(studies)
    assert set(second_result.frame["status"]) == {"conflict"}
    assert second_result.frame["error"].str.contains("another run of this journal").all()
    updates = [e for e in sandbox.audit()[audit_start:] if e["operation"] == "update" and e["outcome"] == "changed"]
    assert len(updates) == len(studies)  # the second run wrote nothing
    assert {(s["assignedTo"] or {}).get("userId") for s in _state(sandbox).values() if s["studyId"] in studies} \
        == {first_to}


def test_a_study_that_cannot_be_read_fails_its_row_alone_and_nothing_is_sent_for_it(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    sandbox = make_sandbox(studies=30, seed=19)
    studies = [s for s in _state(sandbox).values() if s["severity"] != "stat"][:5]
    ids = [s["studyId"] for s in studies]
    plan = Plan({"study_id": ids, "severity": "stat"})
    with _client(sandbox, max_retries=1) as client:
        sandbox.fail_next(2, method="GET", path=f"/v1/viewer/studies/{ids[1]}", how="503")  # both tries
        preview = plan.preview(client, progress=False)
        assert preview.counts() == {"unread": 1, "update": 4}
        assert "could not read the study, nothing sent" in preview.to_frame()["error"].iloc[1]
        sandbox.fail_next(2, method="GET", path=f"/v1/viewer/studies/{ids[3]}", how="500")  # at the re-check
        audit_start = len(sandbox.audit())
        result = preview.apply(journal=tmp_path / "j.sqlite", progress=False)
    statuses = result.frame["status"].tolist()
    assert statuses == ["applied", "failed", "applied", "failed", "applied"]
    assert result.frame["error"].iloc[3].startswith("could not read the study, nothing sent")
    changed = {e["study_id"] for e in sandbox.audit()[audit_start:] if e["outcome"] == "changed"}
    assert changed == {ids[0], ids[2], ids[4]}  # nothing sent for the two unread studies
    with Client(api_key="sk-wrong", base_url=sandbox.base_url) as refused, pytest.raises(AuthenticationError):
        plan.preview(refused, progress=False)  # a refused key is not an unread study: it raises


def test_a_run_still_sending_cannot_be_resumed_beside_itself(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    import threading
    import time

    from viewerkit.bulk import resume

    sandbox = make_sandbox(studies=30, seed=23)
    studies = [s["studyId"] for s in list(_state(sandbox).values())[:10]]
    journal = tmp_path / "j.sqlite"
    with _client(sandbox) as client:
        preview = Plan({"study_id": studies, "study_description": "resumed?"}).preview(client, progress=False)
        audit_start = len(sandbox.audit())
        sandbox.set_faults(latency_ms=150)
        done: dict[str, Any] = {}
        sending = threading.Thread(target=lambda: done.setdefault(
            "result", preview.apply(journal=journal, concurrency=1, progress=False)))
        sending.start()
        while not (journal.exists() and len(runs(journal))):
            time.sleep(0.01)
        with pytest.raises(ValidationError, match="still running"):
            resume(client, journal, progress=False)
        sending.join(60)
        sandbox.set_faults(latency_ms=0)
        assert done["result"].counts()["applied"] == len(studies)
        assert set(resume(client, journal, progress=False).frame["status"]) == {"applied"}  # finished: a no-op
    updates = [e for e in sandbox.audit()[audit_start:] if e["operation"] == "update" and e["outcome"] == "changed"]
    assert len(updates) == len(studies)  # each sent once
