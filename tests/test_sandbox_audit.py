"""The sandbox's write audit: one entry per write request handled, whatever its outcome, so
that a doubled request shows (the bulk engine's tests and benchmark count from it)."""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from viewerkit import Client
from viewerkit.runner import run_all
from viewerkit.sandbox.server import Sandbox
from viewerkit.sandbox.store import Store
from viewerkit.schema import Severity

STUDIES = "/v1/viewer/studies"
AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UNKNOWN_STUDY = "stu_" + "0" * 32


@pytest.fixture
def server(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(studies=30, seed=5)


@pytest.fixture
def raw(server: Sandbox) -> Iterator[httpx.Client]:
    """Plain httpx: sends what viewerkit's client would refuse before sending."""
    with httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {server.api_key}"},
        trust_env=False,
        timeout=30.0,
    ) as http:
        yield http


@pytest.fixture
def client(server: Sandbox) -> Iterator[Client]:
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        yield c


def open_study(raw: httpx.Client) -> dict[str, Any]:
    studies = raw.get(STUDIES, params={"limit": 100}).json()["studies"]
    study: dict[str, Any] = next(s for s in studies if not s["isCancelled"])
    return study


def outcomes(server: Sandbox, study_id: str) -> list[tuple[str, str]]:
    return [(e["operation"], e["outcome"]) for e in server.audit(study_id)]


def assert_one_entry_per_handled_write(server: Sandbox) -> None:
    """The audit agrees with the request log: each write request the API handled has exactly
    one entry (same status), and a request not handled has none."""
    writes = [
        r for r in server.requests()
        if (r["method"], r["path"]) in {("POST", STUDIES), ("POST", f"{STUDIES}/cancel"),
                                        ("POST", f"{STUDIES}/uncancel")}
        or (r["method"] == "PATCH" and r["path"].startswith(STUDIES + "/"))
    ]
    api = {e["request"]: e for e in server.audit(source="api")}
    assert len(api) == len(server.audit(source="api"))  # no request has two entries
    assert sorted(api) == [r["seq"] for r in writes if r["handled"] is not None]
    for r in writes:
        if r["handled"] is not None:
            entry = api[r["seq"]]
            assert (entry["method"], entry["path"], entry["status"]) == (r["method"], r["path"], r["handled"])
            assert entry["fault"] == r["fault"]


def test_a_noop_update_gives_a_noop_entry(server: Sandbox, client: Client, raw: httpx.Client) -> None:
    study = open_study(raw)
    study_id = study["studyId"]
    same = client.update_study(study_id, severity=study["severity"])
    assert same["updatedAt"] == study["updatedAt"]
    other: Severity = "stat" if study["severity"] != "stat" else "high"
    changed = client.update_study(study_id, severity=other, study_description=study["studyDescription"])
    entries = server.audit(study_id)
    assert [(e["outcome"], e["fields"], e["changed_fields"]) for e in entries] == [
        ("noop", ["severity"], []),
        ("changed", ["severity", "studyDescription"], ["severity"]),
    ]
    noop, change = entries
    assert (noop["source"], noop["operation"], noop["method"], noop["status"]) == ("api", "update", "PATCH", 200)
    assert noop["path"] == f"{STUDIES}/{study_id}" and noop["study_instance_uid"] is None
    assert noop["fault"] is None and AT.match(noop["at"]) and AT.match(change["at"])
    assert change["at"] == changed["updatedAt"]  # a change's time is the study's new updatedAt
    assert noop["seq"] < change["seq"]
    assert_one_entry_per_handled_write(server)


def test_a_repeated_cancel_gives_changed_then_noop(server: Sandbox, client: Client, raw: httpx.Client) -> None:
    study = open_study(raw)
    first = client.cancel_study(study["studyId"])
    again = client.cancel_study(study_instance_uid=study["studyInstanceUid"])
    assert (first.changed, again.changed) == (True, False)
    entries = server.audit(study["studyId"])
    assert [(e["operation"], e["outcome"], e["changed_fields"]) for e in entries] == [
        ("cancel", "changed", ["isCancelled"]),
        ("cancel", "noop", []),
    ]
    # named by ID, then identified by its UID
    assert [(e["study_id"], e["study_instance_uid"]) for e in entries] == [
        (study["studyId"], None),
        (study["studyId"], study["studyInstanceUid"]),
    ]
    cancelled = client.retrieve_study(study["studyId"])
    assert entries[0]["at"] == cancelled["updatedAt"] == cancelled["cancelledAt"]
    client.uncancel_study(study["studyId"])
    client.uncancel_study(study["studyId"])
    assert outcomes(server, study["studyId"])[2:] == [("uncancel", "changed"), ("uncancel", "noop")]


def test_refused_writes_give_refused_entries_and_change_nothing(server: Sandbox, raw: httpx.Client) -> None:
    study = open_study(raw)
    study_id = study["studyId"]
    # viewerkit's client refuses these before sending: plain httpx sends them
    assert raw.patch(f"{STUDIES}/{study_id}", json={"severity": "urgent"}).status_code == 400
    assert raw.patch(f"{STUDIES}/{UNKNOWN_STUDY}", json={"severity": "stat"}).status_code == 404
    assert raw.post(f"{STUDIES}/cancel", json={"studyInstanceUid": "1.2.3.999"}).status_code == 404
    taken = {"severity": "stat", "studyDescription": "CT", "studyInstanceUid": study["studyInstanceUid"]}
    assert raw.post(STUDIES, json=taken).status_code == 409
    assert httpx.patch(server.base_url + f"{STUDIES}/{study_id}", json={"severity": "stat"},
                       trust_env=False).status_code == 401
    assert raw.get(f"{STUDIES}/{study_id}").json() == study
    entries = server.audit()
    assert [(e["operation"], e["outcome"], e["status"]) for e in entries] == [
        ("update", "refused", 400),
        ("update", "refused", 404),
        ("cancel", "refused", 404),
        ("create", "refused", 409),
        ("update", "refused", 401),
    ]
    assert [(e["study_id"], e["study_instance_uid"]) for e in entries] == [
        (study_id, None),
        (UNKNOWN_STUDY, None),
        (None, "1.2.3.999"),  # no study has that UID
        (study_id, study["studyInstanceUid"]),  # the study the create collided with
        (study_id, None),  # from the path: the body of an unauthenticated request is not read
    ]
    assert entries[0]["fields"] == ["severity"] and entries[3]["fields"] == [
        "severity", "studyDescription", "studyInstanceUid"
    ]
    assert all(e["changed_fields"] == [] and AT.match(e["at"]) for e in entries)
    assert server.audit(outcome="changed") == []
    assert_one_entry_per_handled_write(server)


@pytest.mark.parametrize("operation", ["update", "cancel"])
def test_an_answer_dropped_after_commit_is_one_changed_entry_and_the_retry_a_noop(
    server: Sandbox, client: Client, raw: httpx.Client, operation: str
) -> None:
    study = open_study(raw)
    study_id = study["studyId"]
    if operation == "update":
        server.fail_next(1, method="PATCH", path=f"{STUDIES}/*", when="after", how="drop")
        other: Severity = "stat" if study["severity"] != "stat" else "normal"
        assert client.update_study(study_id, severity=other)["severity"] == other
    else:
        server.fail_next(1, method="POST", path=f"{STUDIES}/cancel", when="after", how="drop")
        assert client.cancel_study(study_id).success
    dropped = {"when": "after", "how": "drop", "source": "fail_next"}
    entries = server.audit(study_id)
    assert [(e["operation"], e["outcome"], e["fault"]) for e in entries] == [
        (operation, "changed", dropped),  # handled and committed; the client never saw the answer
        (operation, "noop", None),  # the client's retry
    ]
    log = {r["seq"]: r for r in server.requests()}
    assert log[entries[0]["request"]]["status"] == "dropped"
    assert log[entries[1]["request"]]["status"] == 200
    assert_one_entry_per_handled_write(server)


def test_a_request_failed_before_handling_has_no_entry(
    server: Sandbox, client: Client, raw: httpx.Client
) -> None:
    study = open_study(raw)
    server.fail_next(2, method="POST", path=f"{STUDIES}/cancel", when="before", how="503")
    assert client.cancel_study(study["studyId"]).changed is True
    assert [(e["outcome"], e["fault"]) for e in server.audit()] == [("changed", None)]
    tries = [r for r in server.requests() if r["path"] == f"{STUDIES}/cancel"]
    assert [(r["status"], r["handled"]) for r in tries] == [(503, None), (503, None), (200, 200)]
    assert server.audit()[0]["request"] == tries[-1]["seq"]
    assert_one_entry_per_handled_write(server)


def test_200_concurrent_updates_give_exactly_200_entries(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=100, seed=6)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        studies = list(client.iter_studies())
        # each study twice to the same new description, at once: one of the two changes it
        targets = [s["studyId"] for s in studies] * 2
        run_all(lambda study_id: client.update_study(study_id, study_description="Reread"),
                targets, workers=16, progress=False)
    entries = server.audit()
    assert len(entries) == 200
    assert len({e["seq"] for e in entries}) == 200
    per_study = Counter((e["study_id"], e["outcome"]) for e in entries)
    assert per_study == Counter({(s["studyId"], o): 1 for s in studies for o in ("changed", "noop")})
    assert_one_entry_per_handled_write(server)


def test_the_audit_survives_a_restart_on_the_same_db(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    server = make_sandbox(studies=10, seed=8, db_path=tmp_path / "kept.db")
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        study_id = next(iter(client.iter_studies()))["studyId"]
        client.cancel_study(study_id)
        client.cancel_study(study_id)
    before = server.audit()
    server.kill()  # a crash: every entry was committed with its write
    server.restart()
    assert server.audit() == before
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        client.uncancel_study(study_id)
    after = server.audit()
    assert after[:2] == before
    assert [(e["seq"], e["operation"], e["outcome"]) for e in after[2:]] == [(3, "uncancel", "changed")]
    assert after[2]["request"] == 1  # the request log restarts with the server


def test_filters_select_by_study_outcome_and_since(server: Sandbox, raw: httpx.Client) -> None:
    a, b = raw.get(STUDIES, params={"limit": 2}).json()["studies"]
    for study in (a, b, a):
        raw.post(f"{STUDIES}/cancel", json={"studyId": study["studyId"]})
    assert [e["seq"] for e in server.audit(a["studyId"])] == [1, 3]
    assert [e["seq"] for e in server.audit(outcome="noop")] == [3]
    assert [e["seq"] for e in server.audit(since=1)] == [2, 3]
    assert [e["seq"] for e in server.audit(a["studyId"], outcome="changed")] == [1]
    assert server.audit(source="live") == []
    with pytest.raises(ValueError, match="outcome must be one of changed, noop, refused"):
        server.audit(outcome="applied")


def test_the_audit_records_field_names_never_values_or_keys(server: Sandbox, client: Client) -> None:
    created = client.create_study(
        severity="high", study_description="CT Private Description", study_instance_uid="1.2.840.55",
        metadata={"accession": "ACC-PRIVATE-VALUE"},
    )
    client.update_study(created["studyId"], metadata={"accession": "ACC-OTHER-PRIVATE"})
    client.reroute_url(created["studyId"])  # stores nothing: no entry, and never its URL
    entries = server.audit(created["studyId"])
    assert [(e["operation"], e["fields"]) for e in entries] == [
        ("create", ["metadata", "severity", "studyDescription", "studyInstanceUid"]),
        ("update", ["metadata"]),
    ]
    text = orjson.dumps(server.audit()).decode()
    for secret in (server.api_key, "PRIVATE", "Private Description", "token=", "http"):
        assert secret not in text


def test_live_mode_changes_are_told_apart_from_api_writes(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=100, seed=9, live=50)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        study_id = next(iter(client.iter_studies()))["studyId"]
        client.cancel_study(study_id)
    deadline = time.monotonic() + 60
    while len(server.audit(source="live")) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    live = server.audit(source="live")
    assert len(live) >= 5
    assert all(e["method"] is None and e["request"] is None and e["status"] is None for e in live)
    api = server.audit(source="api")
    assert [(e["study_id"], e["operation"]) for e in api] == [(study_id, "cancel")]
    assert_one_entry_per_handled_write(server)


def test_a_database_made_before_the_write_audit_keeps_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:  # the earlier audit table: applied changes with values
        conn.execute("DROP TABLE write_audit")
        conn.execute(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, study_id TEXT NOT NULL,"
            " operation TEXT NOT NULL, fields TEXT NOT NULL, at TEXT NOT NULL)"
        )
        conn.executemany(
            "INSERT INTO audit (study_id, operation, fields, at) VALUES (?, ?, ?, ?)",
            [
                ("stu_" + "a" * 32, "create", '{"studyInstanceUid": "1.2", "severity": "stat"}',
                 "2026-01-01T00:00:00.000Z"),
                ("stu_" + "a" * 32, "update", '{"assignedTo": null}', "2026-01-01T00:00:01.000Z"),
                ("stu_" + "a" * 32, "cancel", "{}", "2026-01-01T00:00:02.000Z"),
            ],
        )
    conn.close()
    store = Store(path)
    try:
        entries = store.audit()
        assert [(e["seq"], e["operation"], e["outcome"], e["source"], e["changed_fields"]) for e in entries] == [
            (1, "create", "changed", None, ["severity", "studyInstanceUid"]),
            (2, "update", "changed", None, ["assignedTo"]),
            (3, "cancel", "changed", None, ["isCancelled"]),
        ]
        assert entries[0]["study_instance_uid"] == "1.2"
        assert store.audit("stu_" + "a" * 32, outcome="changed") == entries
    finally:
        store.close()
