"""roster(users, studies) against the sandbox's users and studies, checked by independent
computations (plain Python over the raw JSON, and pandas over the study table)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from raw_api import list_all_raw
from test_sandbox_users import list_users_raw

import viewerkit
from viewerkit import (
    SEVERITY_WEIGHTS,
    Client,
    Reason,
    ValidationError,
    fetch_studies,
    fetch_users,
    roster,
    severity_weights,
)
from viewerkit.reports import with_completion
from viewerkit.sandbox.server import Sandbox
from viewerkit.staffing import ROSTER_COLUMNS, study_weights

HOURS = {"stat": 1.0, "high": 4.0, "normal": 24.0}  # the default SLA targets


@pytest.fixture(scope="module")
def now(sandbox: Sandbox) -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("ms")


@pytest.fixture(scope="module")
def tables(sandbox: Sandbox) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        return fetch_users(client, progress=False), fetch_studies(client, progress=False)


@pytest.fixture(scope="module")
def raw(sandbox: Sandbox) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return list_users_raw(sandbox), list_all_raw(sandbox)


@pytest.fixture(scope="module")
def table(tables: tuple[pd.DataFrame, pd.DataFrame], now: pd.Timestamp) -> pd.DataFrame:
    users, studies = tables
    return roster(users, studies, now=now)


def test_the_roster_is_every_listed_user_then_every_other_user_the_studies_name(
    table: pd.DataFrame, raw: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    users, studies = raw
    listed = [u["userId"] for u in users]
    named = {s[side]["userId"] for s in studies for side in ("assignedTo", "createdByUser") if s[side]}
    assert list(table.columns) == list(ROSTER_COLUMNS)
    assert table["user_id"].tolist() == listed + sorted(named - set(listed))
    assert table["listed"].tolist() == [True] * len(listed) + [False] * len(named - set(listed))
    assert table["user_id"].is_unique


def test_open_loads_equal_an_independent_count_from_raw_http(
    table: pd.DataFrame, raw: tuple[list[dict[str, Any]], list[dict[str, Any]]], now: pd.Timestamp
) -> None:
    _, studies = raw
    counts: Counter[tuple[str, str]] = Counter()
    for s in studies:
        created = pd.Timestamp(s["createdAt"])
        if s["assignedTo"] and s["studyViewerStatus"] == "incomplete" and not s["isCancelled"] and created <= now:
            counts[(s["assignedTo"]["userId"], s["severity"])] += 1
    assert sum(counts.values()) > 0
    by_user = table.set_index("user_id")
    for label, row in by_user.iterrows():
        user_id = str(label)
        for sev in ("normal", "high", "stat"):
            assert row[f"open_{sev}"] == counts[(user_id, sev)], (user_id, sev)
        expected_open: int = sum(counts[(user_id, sev)] for sev in ("normal", "high", "stat"))
        assert int(row["open"]) == expected_open
        expected_load: float = sum(counts[(user_id, sev)] * SEVERITY_WEIGHTS[sev] for sev in SEVERITY_WEIGHTS)
        assert float(row["open_load"]) == pytest.approx(expected_load)


def test_overdue_completed_and_last_change_equal_a_pandas_computation_on_the_study_table(
    table: pd.DataFrame, tables: tuple[pd.DataFrame, pd.DataFrame], now: pd.Timestamp
) -> None:
    _, studies = tables
    s = studies[studies["assigned_to_user_id"].notna()]
    is_open = (s["study_viewer_status"] == "incomplete") & ~s["is_cancelled"] & (s["created_at"] <= now)
    target = s["severity"].astype(str).map(HOURS).astype(float)
    age_h = (now - s["created_at"]).dt.total_seconds() / 3600
    overdue = (is_open & (age_h > target)).groupby(s["assigned_to_user_id"]).sum()
    done = (s["study_viewer_status"] == "complete") & ~s["is_cancelled"]
    recent = done & (s["updated_at"] >= now - pd.Timedelta(days=7)) & (s["updated_at"] <= now)
    completed = recent.groupby(s["assigned_to_user_id"]).sum()
    last = s.groupby("assigned_to_user_id")["updated_at"].max()
    got = table.set_index("user_id")
    assert overdue.sum() > 0 and completed.sum() > 0
    assert got["overdue"].to_dict() == overdue.reindex(got.index, fill_value=0).astype(int).to_dict()
    assert got["completed"].to_dict() == completed.reindex(got.index, fill_value=0).astype(int).to_dict()
    pd.testing.assert_series_equal(
        got["last_study_change_at"], last.reindex(got.index), check_names=False, check_index_type=False
    )


def test_a_radiologist_with_no_studies_appears_with_zero_load_and_is_a_target(
    table: pd.DataFrame, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, studies = tables
    named = set(studies["assigned_to_user_id"].dropna()) | set(studies["created_by_user_user_id"].dropna())
    fresh = table[(table["clinic_role"] == "Radiologist") & ~table["user_id"].isin(named)]
    assert len(fresh) >= 3
    assert (fresh[["open", "overdue", "completed"]] == 0).all().all()
    assert (fresh["open_load"] == 0.0).all() and fresh["last_study_change_at"].isna().all()
    assert fresh["reassignment_target"].tolist() == fresh["can_manage_studies"].tolist()
    assert fresh["reassignment_target"].any()


def test_users_missing_from_the_user_list_are_kept_flagged_with_their_reference_fields(
    sandbox: Sandbox, table: pd.DataFrame, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    users, studies = tables
    gone = table[~table["listed"]]
    assert 1 <= len(gone) <= 2
    assert (gone["open"] > 0).all()  # their open work still counts, to be handed over
    assert not gone["reassignment_target"].any()
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        for row in gone.to_dict("records"):
            user = client.retrieve_user(row["user_id"])  # revoked: still retrieved
            assert (row["email"], row["first_name"], row["last_name"]) == (
                user["email"], user["firstName"], user["lastName"],
            )
            assert pd.isna(row["clinic_role"]) and pd.isna(row["last_login_at"])
    with_unlisted = roster(users, studies, include_unlisted=True)
    assert with_unlisted.loc[~with_unlisted["listed"], "reassignment_target"].all()


def test_reassignment_targets_are_the_listed_radiologists_who_can_manage_studies(table: pd.DataFrame) -> None:
    rule = table["listed"] & (table["clinic_role"] == "Radiologist") & table["can_manage_studies"].fillna(False)
    assert table["reassignment_target"].tolist() == rule.fillna(False).astype(bool).tolist()
    assert not table.loc[table["clinic_role"] != "Radiologist", "reassignment_target"].any()
    assert (table["clinic_role"] != "Radiologist").any()


def test_target_roles_choose_who_may_be_handed_work(
    tables: tuple[pd.DataFrame, pd.DataFrame], table: pd.DataFrame, now: pd.Timestamp
) -> None:
    users, studies = tables
    managers = users[users["can_manage_studies"].fillna(False).astype(bool)]
    other = sorted(set(managers["clinic_role"].dropna()) - {"Radiologist"})[0]  # e.g. a technologist
    wider = roster(users, studies, now=now, target_roles=("Radiologist", other))
    may = wider["listed"] & wider["clinic_role"].isin(["Radiologist", other]) & wider["can_manage_studies"].fillna(False)
    assert wider["reassignment_target"].tolist() == may.fillna(False).astype(bool).tolist()
    assert wider["reassignment_target"].sum() > table["reassignment_target"].sum()
    only = roster(users, studies, now=now, target_roles=other)  # one role as a plain string
    assert set(only.loc[only["reassignment_target"], "clinic_role"]) == {other}
    assert not roster(users, studies, now=now, target_roles=()).reassignment_target.any()


def test_weights_override_the_shared_severity_weights(
    tables: tuple[pd.DataFrame, pd.DataFrame], table: pd.DataFrame, now: pd.Timestamp
) -> None:
    users, studies = tables
    heavy = roster(users, studies, now=now, weights={"normal": 0, "stat": 10})
    expected = table["open_high"] * 2.0 + table["open_stat"] * 10.0
    assert heavy["open_load"].tolist() == expected.astype(float).tolist()
    assert viewerkit.SEVERITY_WEIGHTS == {"normal": 1.0, "high": 2.0, "stat": 4.0}
    with pytest.raises(TypeError):
        SEVERITY_WEIGHTS["stat"] = 9  # type: ignore[index]  # one shared set: read-only
    assert study_weights(studies["severity"]).sum() == pytest.approx(
        sum(SEVERITY_WEIGHTS[str(s)] for s in studies["severity"])
    )


def test_completed_reads_completed_at_when_the_table_has_it(
    tables: tuple[pd.DataFrame, pd.DataFrame], table: pd.DataFrame, now: pd.Timestamp
) -> None:
    users, studies = tables
    resolved = with_completion(studies)
    assert roster(users, resolved, now=now)["completed"].tolist() == table["completed"].tolist()
    # a completion moved out of the window no longer counts
    moved = resolved.assign(completed_at=resolved["completed_at"] - pd.Timedelta(days=30))
    assert roster(users, moved, now=now)["completed"].sum() == 0


def test_the_roster_reads_a_study_table_back_from_csv(
    tables: tuple[pd.DataFrame, pd.DataFrame], table: pd.DataFrame, now: pd.Timestamp, tmp_path: Any
) -> None:
    users, studies = tables
    path = tmp_path / "studies.csv"
    studies.to_csv(path, index=False)
    again = roster(users, pd.read_csv(path), now=now)
    for name in ("open", "open_load", "overdue", "completed", "listed", "reassignment_target"):
        assert again[name].tolist() == table[name].tolist(), name


@pytest.fixture
def one_study() -> Iterator[pd.DataFrame]:
    now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
    yield pd.DataFrame({
        "severity": ["stat"], "study_viewer_status": ["incomplete"], "is_cancelled": [False],
        "created_at": [now], "updated_at": [now], "assigned_to_user_id": ["usr_a"],
    })


def test_bad_input_is_a_validation_error_naming_the_field(one_study: pd.DataFrame) -> None:
    users = pd.DataFrame({"user_id": ["usr_a"], "clinic_role": ["Radiologist"], "can_manage_studies": [True]})
    cases = [
        (lambda: roster(users.drop(columns="clinic_role"), one_study), "clinic_role", Reason.MISSING_COLUMN),
        (lambda: roster(pd.concat([users, users]), one_study), "user_id", Reason.DUPLICATE),
        (lambda: roster(users, one_study.drop(columns="assigned_to_user_id")), "assigned_to_user_id",
         Reason.MISSING_COLUMN),
        (lambda: roster(users, one_study.assign(severity="urgent")), "severity", Reason.NOT_SEVERITY),
        (lambda: roster(users, one_study, window=pd.Timedelta(hours=-1)), "window", Reason.NOT_POSITIVE),
        (lambda: roster(users, one_study, window="a week"), "window", Reason.NOT_A_DURATION),  # type: ignore[arg-type]
        (lambda: roster(users, one_study, now="teatime"), "now", Reason.NOT_A_TIME),
        (lambda: roster(users, one_study, weights={"stat": -1}), "weights.stat", Reason.OUT_OF_RANGE),
        (lambda: roster(users, one_study, weights={"urgent": 1}), "weights.urgent", Reason.NOT_SEVERITY),
        (lambda: roster(users, one_study, weights={"high": "2"}), "weights.high", Reason.WRONG_TYPE),
        (lambda: roster([1, 2], one_study), "users", Reason.WRONG_TYPE),  # type: ignore[arg-type]
    ]
    for call, field, reason in cases:
        with pytest.raises(ValidationError) as refused:
            call()
        assert refused.value.failure_cases[["field", "reason"]].values.tolist()[0] == [field, reason], field


def test_severity_weights_merge_overrides_in_severity_order() -> None:
    assert severity_weights({"high": 3}) == {"normal": 1.0, "high": 3.0, "stat": 4.0}
    assert list(severity_weights()) == ["normal", "high", "stat"]
    assert study_weights(pd.Series(["high", None, "stat"]), {"stat": 0}).tolist() == [2.0, 0.0, 0.0]
    assert np.issubdtype(study_weights(["normal"]).dtype, np.floating)
