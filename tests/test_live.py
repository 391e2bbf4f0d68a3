"""Live mode: study traffic through the store's own writes, audited, and stopped on request."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from viewerkit.sandbox.live import OPERATION_MIX, start_live
from viewerkit.sandbox.store import Store
from viewerkit.sandbox.synth import generate_world


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "live.db")
    store.insert_world(generate_world(400, seed=5, now=datetime.now(timezone.utc)))
    yield store
    store.close()


def snapshot(store: Store) -> dict[str, tuple]:
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        rows = conn.execute(
            "SELECT study_id, study_viewer_status, assigned_to, severity, is_cancelled, updated_at"
            " FROM studies"
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def audit_kinds(store: Store) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for row in store.audit(outcome="changed"):
        assert row["source"] == "live"
        if row["operation"] != "update":
            kinds[row["operation"]] += 1
        elif "studyViewerStatus" in row["fields"]:  # live mode sets it only to complete
            kinds["complete"] += 1
        elif "severity" in row["fields"]:
            kinds["severity"] += 1
        else:
            kinds["reassign"] += 1
    return kinds


def test_live_traffic_creates_completes_reassigns_and_cancels_through_the_store(store: Store) -> None:
    before = snapshot(store)
    live = start_live(store, rate_per_s=200, seed=3)
    try:
        assert live.wait_for(operations=200, timeout=120)
    finally:
        live.stop()
    after = snapshot(store)

    assert set(live.applied) == set(OPERATION_MIX)
    assert len(after) == len(before) + live.applied["create"]
    new = ("incomplete", None, None, 0)
    completed = [s for s in after if before.get(s, new)[0] == "incomplete" and after[s][0] == "complete"]
    cancelled = [s for s in after if not before.get(s, new)[3] and after[s][3]]
    assert len(completed) == live.applied["complete"]
    assert len(cancelled) == live.applied["cancel"] > 0
    reassigned = {
        row["study_id"] for row in store.audit(outcome="changed") if "assignedTo" in row["changed_fields"]
    }
    assert live.applied["reassign"] > 0
    assert {s for s in before if after[s][1] != before[s][1]} <= reassigned
    # every applied operation left exactly one audit row of its kind
    assert audit_kinds(store) == live.applied


def test_live_changes_keep_the_updated_at_rules(store: Store) -> None:
    before = snapshot(store)
    with start_live(store, rate_per_s=200, seed=4) as live:
        assert live.wait_for(operations=100, timeout=120)
    for study_id, row in snapshot(store).items():
        study = store.get_study(study_id)
        assert study is not None
        assert study["createdAt"] <= study["updatedAt"]
        if study_id in before and row[:4] != before[study_id][:4]:
            assert row[4] > before[study_id][4], study_id
        if study["isCancelled"]:
            assert study["cancelledAt"] is not None


def test_stop_ends_all_changes(store: Store) -> None:
    live = start_live(store, rate_per_s=300, seed=6)
    assert live.wait_for(operations=30, timeout=60)
    live.stop()
    assert not live.running
    frozen_audit, frozen = len(store.audit()), snapshot(store)
    time.sleep(0.5)
    assert len(store.audit()) == frozen_audit
    assert snapshot(store) == frozen
    assert frozen_audit >= 30


def test_live_on_a_world_without_studies_starts_by_creating(tmp_path: Path) -> None:
    store = Store(tmp_path / "empty.db")
    try:
        store.insert_world(generate_world(0, seed=1))
        with start_live(store, rate_per_s=200, seed=1) as live:
            assert live.wait_for(operations=20, timeout=60)
        assert store.count_studies() == live.applied["create"] > 0
        for study_id in store.study_ids():
            study = store.get_study(study_id)
            assert study is not None and study["studyDescription"]
    finally:
        store.close()


def test_rate_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        start_live(store, rate_per_s=0)


def test_running_sandbox_in_live_mode_serves_new_and_changed_studies(make_sandbox: Any) -> None:
    import avara

    sandbox = make_sandbox(studies=300, seed=2, live=60)
    client = avara.Avara(base_url=sandbox.base_url, api_key=sandbox.api_key)
    try:
        first_seen = {s.study_id for s in client.viewer.studies.list(limit=100)}
        # live mode may already have written before that first page (a loaded machine):
        # count only what it does after it
        start = max((r["seq"] for r in sandbox.audit()), default=0)
        deadline = time.monotonic() + 90
        while True:
            audit = sandbox.audit(since=start)
            created = [r["study_id"] for r in audit if r["operation"] == "create"]
            completed = [
                r["study_id"]
                for r in audit
                if r["operation"] == "update" and "studyViewerStatus" in r["changed_fields"]
            ]
            if (len(created) >= 5 and len(completed) >= 3) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(created) >= 5 and len(completed) >= 3, (len(created), len(completed))

        listed = {s.study_id for s in client.viewer.studies.list(limit=100)}
        assert set(created) - first_seen, "every study created live was already served at the start"
        assert set(created) & listed, "no study created live is on the first page"
        for study_id in completed:
            study = client.viewer.studies.retrieve(study_id)
            assert study.study_viewer_status == "complete"
            assert study.created_at is not None and study.updated_at is not None
            assert study.updated_at >= study.created_at
    finally:
        client.close()
