"""Every KPI of viewerkit.reports against numbers worked out by hand on small tables.

The tables go through Arrow and viewerkit.frame.to_pandas, so they have exactly the dtypes
fetch_studies and StudyCache.load give (ordered categorical severity, Arrow strings,
datetime64[ms, UTC]). T0 is Monday 2026-11-02 00:00 UTC; durations are in hours.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from viewerkit.errors import ValidationError
from viewerkit.frame import to_pandas
from viewerkit.reports import (
    AGE_BANDS,
    SLA,
    SlaTargets,
    backlog,
    cancellations,
    customers,
    overdue,
    turnaround,
    volume,
    with_completion,
    workload,
)
from viewerkit.schema import STUDY_SCHEMA

T0 = pd.Timestamp("2026-11-02 00:00", tz="UTC")  # a Monday
NORTH, SOUTH = "cus_" + "a" * 32, "cus_" + "b" * 32  # express customers


def h(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


def study(sid: str, severity: str, created: float, *, done: float | None = None, cancelled: float | None = None,
          updated: float | None = None, user: str | None = None, customer: str | None = None,
          **extra: Any) -> dict[str, Any]:
    """One study row; times in hours after T0. ``done`` marks it complete at that time."""
    row: dict[str, Any] = {
        "study_id": sid,
        "study_instance_uid": "1.2.3." + str(abs(hash(sid)) % 10_000),
        "study_description": f"desc {sid}",
        "severity": severity,
        "study_viewer_status": "complete" if done is not None else "incomplete",
        "is_cancelled": cancelled is not None,
        "created_at": h(created),
        "updated_at": h(updated if updated is not None else (cancelled if cancelled is not None else (done if done is not None else created))),
        "cancelled_at": h(cancelled) if cancelled is not None else None,
    }
    if user is not None:
        row["assigned_to_user_id"] = user
        row["assigned_to_email"] = f"{user}@example.org"
    if customer is not None:
        row["express_customer_id"] = customer
        row["express_customer_name"] = {NORTH: "North", SOUTH: "South"}.get(customer)
    row.update(extra)
    return row


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return to_pandas(pa.Table.from_pylist(rows, schema=STUDY_SCHEMA))


def history(rows: list[tuple[float, str, str, str, float]]) -> pd.DataFrame:
    """Observations (observed_at h, change, study_id, status, updated_at h), as
    StudyCache.history() gives them: observed_at, change, then the study columns."""
    states = table([
        {"study_id": sid, "study_instance_uid": "1.2", "severity": "normal", "study_viewer_status": status,
         "is_cancelled": False, "created_at": T0, "updated_at": h(upd)}
        for _, _, sid, status, upd in rows
    ])
    heads = pd.DataFrame({
        "observed_at": pd.Series([h(o) for o, *_ in rows], dtype="datetime64[ms, UTC]"),
        "change": pd.Series([c for _, c, *_ in rows], dtype="str"),
    })
    return pd.concat([heads, states], axis=1)


def row_of(frame: pd.DataFrame, **keys: Any) -> dict[Hashable, Any]:
    mask = np.ones(len(frame), dtype=bool)
    for k, v in keys.items():
        mask &= (frame[k].astype(str) == v).to_numpy()
    picked = frame[mask]
    assert len(picked) == 1, f"expected one row for {keys}, got {len(picked)}"
    return picked.iloc[0].to_dict()


def same(a: Any, b: float) -> bool:
    return (isinstance(a, float) and math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


EMPTY = to_pandas(STUDY_SCHEMA.empty_table())


# --- turnaround -------------------------------------------------------------------------------

TURNAROUND_ROWS = [
    study("stu_s1", "stat", 0, done=0.5),
    study("stu_s2", "stat", 0, done=1.0),  # exactly at the 1 h target: within
    study("stu_s3", "stat", 0, done=3.0),
    study("stu_s4", "stat", 0, done=3.0),  # a tie with s3
    study("stu_s5", "stat", 0, done=5.0),
    study("stu_h1", "high", 0, done=2.0),
    study("stu_h2", "high", 0, done=1.5, cancelled=1.0),  # complete but cancelled: left out
    study("stu_n1", "normal", 0),  # open: not completed
]


def test_turnaround_by_severity_matches_hand_worked_figures() -> None:
    result = turnaround(table(TURNAROUND_ROWS))
    assert list(result["severity"].astype(str)) == ["normal", "high", "stat"]
    stat = row_of(result, severity="stat")
    # sorted [0.5, 1, 3, 3, 5]: median = 3; P90 at rank 0.9*4 = 3.6 -> 3 + 0.6*(5-3) = 4.2
    assert stat["completed"] == 5
    assert stat["median_h"] == pytest.approx(3.0)
    assert stat["p90_h"] == pytest.approx(4.2)
    assert stat["mean_h"] == pytest.approx(12.5 / 5)
    assert (stat["within_target"], stat["breached"]) == (2, 3)  # 0.5 and 1.0 (at target) within
    assert stat["within_target_share"] == pytest.approx(0.4)
    assert (stat["from_history"], stat["from_updated_at"], stat["cancelled"]) == (0, 5, 0)
    high = row_of(result, severity="high")
    assert (high["completed"], high["median_h"], high["p90_h"], high["within_target"], high["cancelled"]) == (1, 2.0, 2.0, 1, 1)
    normal = row_of(result, severity="normal")  # an empty group stays, with NaN figures
    assert normal["completed"] == 0 and normal["cancelled"] == 0
    assert math.isnan(normal["median_h"]) and math.isnan(normal["within_target_share"])


def test_a_study_completed_exactly_at_its_target_is_within_target() -> None:
    rows = [study("stu_a", "high", 0, done=4.0), study("stu_b", "normal", 0, done=24.0),
            study("stu_c", "normal", 0, done=24.0 + 1 / 3600)]  # one second late
    result = turnaround(table(rows))
    assert row_of(result, severity="high")["within_target"] == 1
    normal = row_of(result, severity="normal")
    assert (normal["within_target"], normal["breached"]) == (1, 1)


def test_completion_comes_from_the_history_where_it_saw_the_transition() -> None:
    rows = [
        study("stu_h1", "normal", 0, done=30.0),  # edited later: updated_at 30 h overstates
        study("stu_h2", "normal", 0, done=20.0),  # first seen already complete: no transition
        study("stu_h3", "normal", 0, done=8.0),
        study("stu_h4", "normal", 0, done=12.0),  # "gone" rows are not observations of a change
        study("stu_h5", "normal", 0, done=7.0),  # reopened, then completed again
    ]
    seen = history([
        (5, "new", "stu_h1", "incomplete", 0), (10, "changed", "stu_h1", "complete", 9),
        (2, "new", "stu_h2", "complete", 2),
        # recorded updated_at 8 h is after the observation at 6 h: bounded by observed_at
        (1, "new", "stu_h3", "incomplete", 0), (6, "changed", "stu_h3", "complete", 8),
        (1, "new", "stu_h4", "incomplete", 0), (3, "gone", "stu_h4", "complete", 2.5),
        (1, "new", "stu_h5", "incomplete", 0), (2, "changed", "stu_h5", "complete", 2),
        (3, "changed", "stu_h5", "incomplete", 3), (7, "changed", "stu_h5", "complete", 6.5),
        (1, "new", "stu_other", "incomplete", 0), (2, "changed", "stu_other", "complete", 2),
    ])
    resolved = with_completion(table(rows), seen).set_index("study_id")
    expect = {"stu_h1": (9, "history"), "stu_h2": (20, "updated_at"), "stu_h3": (6, "history"),
              "stu_h4": (12, "updated_at"), "stu_h5": (6.5, "history")}
    for sid, (hours, source) in expect.items():
        assert resolved.loc[sid, "completed_at"] == h(hours), sid
        assert resolved.loc[sid, "completion_source"] == source, sid
    normal = row_of(turnaround(table(rows), history=seen), severity="normal")
    # sorted [6, 6.5, 9, 12, 20]: median 9; P90 at rank 3.6 -> 12 + 0.6*8 = 16.8; all within 24 h
    assert (normal["completed"], normal["from_history"], normal["from_updated_at"]) == (5, 3, 2)
    assert normal["median_h"] == pytest.approx(9.0)
    assert normal["p90_h"] == pytest.approx(16.8)
    assert normal["mean_h"] == pytest.approx(53.5 / 5)
    # without the history, h1's 30 h would be a breach
    assert row_of(turnaround(table(rows)), severity="normal")["breached"] == 1
    assert normal["breached"] == 0
    # a table resolved once gives the same figures as passing the history
    again = row_of(turnaround(with_completion(table(rows), seen)), severity="normal")
    assert again["median_h"] == normal["median_h"] and again["from_history"] == 3


def test_turnaround_window_includes_its_start_and_excludes_its_end() -> None:
    result = turnaround(table(TURNAROUND_ROWS), window=(h(1), h(3)))
    stat = row_of(result, severity="stat")
    assert stat["completed"] == 1 and stat["median_h"] == 1.0  # 1 h in; 3 h (twice) out
    high = row_of(result, severity="high")
    assert (high["completed"], high["cancelled"]) == (1, 1)  # cancelled at 1 h: in


def test_turnaround_by_severity_and_week_lists_every_severity_per_week() -> None:
    # completed at 1 h (week of T0) and at 170 h, 171 h (Monday 2026-11-09 02:00, 03:00)
    rows = [study("stu_a", "stat", 0, done=1.0), study("stu_b", "stat", 160, done=170.0),
            study("stu_c", "normal", 160, done=171.0)]
    result = turnaround(table(rows), ["severity", "week"])
    assert list(result.columns[:2]) == ["severity", "week"]
    next_week = T0 + pd.Timedelta(days=7)
    assert list(zip(result["severity"].astype(str), result["week"], strict=True)) == [
        ("normal", T0), ("normal", next_week), ("high", T0), ("high", next_week), ("stat", T0), ("stat", next_week)]
    assert list(result["completed"]) == [0, 1, 0, 0, 1, 1]
    assert row_of(result, severity="stat", week=str(next_week))["median_h"] == 10.0
    assert row_of(result, severity="normal", week=str(next_week))["median_h"] == 11.0
    assert math.isnan(row_of(result, severity="high", week=str(T0))["median_h"])


def test_turnaround_groups_by_week_of_completion_monday_start() -> None:
    # completions on Sunday 23:00 and Monday 00:00 fall in different weeks
    rows = [study("stu_a", "stat", 166, done=167.0), study("stu_b", "stat", 167, done=168.0)]
    result = turnaround(table(rows), ["severity", "week"])
    stat = result[result["severity"].astype(str) == "stat"]
    assert list(stat["week"]) == [T0, T0 + pd.Timedelta(days=7)]
    assert list(stat["completed"]) == [1, 1]
    assert result["week"].dtype == "datetime64[ms, UTC]"


def test_turnaround_by_assignee_and_customer_keeps_missing_ones_as_their_own_group() -> None:
    rows = [study("stu_a", "stat", 0, done=1, user="usr_b", customer=NORTH),
            study("stu_b", "stat", 0, done=3, user="usr_b", customer=NORTH),
            study("stu_c", "high", 0, done=2),
            study("stu_d", "high", 0, done=6, user="usr_a")]
    by_user = turnaround(table(rows), "assignee")
    assert list(by_user["assignee"]) == ["usr_a@example.org", "usr_b@example.org", "(unassigned)"]
    assert list(by_user["completed"]) == [1, 2, 1]
    assert list(by_user["median_h"]) == [6.0, 2.0, 2.0]
    assert list(by_user["within_target"]) == [0, 1, 1]
    assert pd.isna(by_user["assigned_to_user_id"].iloc[2])
    by_customer = turnaround(table(rows), "customer")
    assert list(by_customer["customer"]) == ["North", "(no customer)"]
    assert list(by_customer["completed"]) == [2, 2]
    assert list(by_customer["median_h"]) == [2.0, 4.0]


def test_sla_targets_can_be_overridden_per_call_and_per_customer() -> None:
    rows = [study("stu_a", "stat", 0, done=2, customer=NORTH), study("stu_b", "stat", 0, done=2, customer=SOUTH)]
    assert row_of(turnaround(table(rows)), severity="stat")["within_target"] == 0
    assert row_of(turnaround(table(rows), sla={"stat": 2}), severity="stat")["within_target"] == 2
    north_relaxed = SLA.for_customer(NORTH, stat=timedelta_hours(2))
    assert row_of(turnaround(table(rows), sla=north_relaxed), severity="stat")["within_target"] == 1
    by_customer = customers(table(rows), sla=north_relaxed).set_index("customer")
    assert by_customer.loc["North", "within_target_share"] == 1.0
    assert by_customer.loc["South", "within_target_share"] == 0.0
    assert list(north_relaxed.table()["target_h"]) == [24.0, 4.0, 1.0, 2.0]
    with pytest.raises(ValidationError, match="urgent"):
        turnaround(table(rows), sla={"urgent": 1})
    with pytest.raises(ValidationError, match="positive"):
        SlaTargets(stat=0)


def timedelta_hours(hours: float) -> pd.Timedelta:
    return pd.Timedelta(hours=hours)


# --- backlog and overdue ----------------------------------------------------------------------

NOW = h(100)
BACKLOG_ROWS = [
    study("stu_b01", "stat", 100 - 0.5),  # < 1 h, not past
    study("stu_b02", "stat", 100 - 1, customer=NORTH),  # exactly 1 h: band 1-4 h, at target: not past
    study("stu_b03", "stat", 100 - 2, customer=NORTH),  # 1-4 h, past by 1 h
    study("stu_b04", "high", 100 - 4),  # exactly 4 h: band 4-12 h, at target: not past
    study("stu_b05", "high", 100 - 13, user="usr_a"),  # 12-24 h, past by 9 h
    study("stu_b06", "normal", 100 - 24),  # 24-48 h, at target: not past
    study("stu_b07", "normal", 100 - 49),  # > 48 h, past by 25 h
    study("stu_b09", "normal", 100 - 48),  # exactly 48 h: band > 48 h, past by 24 h
    study("stu_b08", "normal", 100 - 48),  # a tie with b09: the smaller ID first
    study("stu_b10", "normal", 0, done=1),  # complete: not open
    study("stu_b11", "normal", 0, cancelled=1),  # cancelled: not open
    study("stu_b12", "stat", 101),  # created after now: not open yet
]


def test_backlog_counts_open_studies_per_severity_and_age_band() -> None:
    result = backlog(table(BACKLOG_ROWS), now=NOW)
    assert len(result) == 18
    assert list(result["age_band"].cat.categories) == list(AGE_BANDS)
    cells = {(str(r.severity), str(r.age_band)): (r.open, r.past_target) for r in result.itertuples()}
    expect = {("stat", "< 1 h"): (1, 0), ("stat", "1-4 h"): (2, 1), ("high", "4-12 h"): (1, 0),
              ("high", "12-24 h"): (1, 1), ("normal", "24-48 h"): (1, 0), ("normal", "> 48 h"): (3, 3)}
    for cell, counts in cells.items():
        assert counts == expect.get(cell, (0, 0)), cell


def test_backlog_uses_customer_targets_and_window_on_creation() -> None:
    relaxed = SLA.for_customer(NORTH, stat=3)
    result = backlog(table(BACKLOG_ROWS), now=NOW, sla=relaxed)
    assert row_of(result, severity="stat", age_band="1-4 h")["past_target"] == 0
    windowed = backlog(table(BACKLOG_ROWS), now=NOW, window=(h(52), h(99)))  # created 52 <= t < 99
    # in: b03 (98 h), b04 (96), b05 (87), b06 (76), b08 and b09 (52, the start); out: b01, b02 (99,
    # the end), b07 (51)
    assert windowed["open"].sum() == 6
    assert row_of(windowed, severity="stat", age_band="1-4 h")["open"] == 1


def test_overdue_lists_past_target_studies_most_overdue_first() -> None:
    result = overdue(table(BACKLOG_ROWS), now=NOW)
    assert list(result["study_id"]) == ["stu_b07", "stu_b08", "stu_b09", "stu_b05", "stu_b03"]
    assert list(result["overdue_h"]) == [25.0, 24.0, 24.0, 9.0, 1.0]
    assert list(result["age_h"]) == [49.0, 48.0, 48.0, 13.0, 2.0]
    assert list(result["target_h"]) == [24.0, 24.0, 24.0, 4.0, 1.0]
    assert list(result["assignee"]) == ["(unassigned)"] * 3 + ["usr_a@example.org", "(unassigned)"]
    assert list(result["customer"])[-1] == "North"
    assert result["created_at"].dtype == "datetime64[ms, UTC]"


# --- volume -----------------------------------------------------------------------------------

VOLUME_ROWS = [study("stu_v1", "stat", 1), study("stu_v2", "stat", 5), study("stu_v3", "normal", 23.5),
               study("stu_v4", "high", 49), study("stu_v5", "normal", -0.25)]  # v5: Sunday 23:45


def test_volume_per_day_lists_empty_days_and_the_severity_mix() -> None:
    result = volume(table(VOLUME_ROWS), freq="D", window=(T0, h(72)))
    assert list(result.columns) == ["period", "severity", "arrivals", "share", "partial"]
    assert len(result) == 3 * 3  # days 0, 1, 2; v5 is before the window
    day0 = result[result["period"] == T0].set_index(result[result["period"] == T0]["severity"].astype(str))
    assert list(day0["arrivals"]) == [1, 0, 2]
    assert same(day0.loc["stat", "share"], 2 / 3) and same(day0.loc["normal", "share"], 1 / 3)
    day1 = result[result["period"] == h(24)]
    assert list(day1["arrivals"]) == [0, 0, 0] and day1["share"].isna().all()
    day2 = result[result["period"] == h(48)]
    assert list(day2["arrivals"]) == [0, 1, 0] and list(day2["share"]) == [0.0, 1.0, 0.0]


def test_volume_weeks_start_on_monday_and_hours_respect_window_end() -> None:
    weekly = volume(table(VOLUME_ROWS), freq="W")
    assert sorted(set(weekly["period"])) == [T0 - pd.Timedelta(days=7), T0]
    assert weekly.groupby("period")["arrivals"].sum().tolist() == [1, 4]
    hourly = volume(table(VOLUME_ROWS), freq="h", window=(T0, h(5)))
    assert len(hourly) == 5 * 3  # hours 0-4; the 5 h arrival is at the excluded end
    assert hourly["arrivals"].sum() == 1
    with pytest.raises(ValidationError, match="freq"):
        volume(table(VOLUME_ROWS), freq="M")  # type: ignore[arg-type]


# --- workload, customers, cancellations -------------------------------------------------------


def test_workload_per_assignee_open_now_completed_median_and_breaches() -> None:
    rows = [
        study("stu_w1", "stat", 9, user="usr_a", assigned_to_first_name="Ann", assigned_to_last_name="Lee"),
        study("stu_w2", "normal", 1, user="usr_a", assigned_to_first_name="Ann", assigned_to_last_name="Lee"),
        study("stu_w3", "high", 0, done=5, user="usr_a", assigned_to_first_name="Ann", assigned_to_last_name="Lee"),
        study("stu_w4", "normal", 0, done=2, user="usr_a", assigned_to_first_name="Ann", assigned_to_last_name="Lee"),
        study("stu_w5", "stat", 0, done=0.5, user="usr_b"),
        study("stu_w6", "high", 3),
        study("stu_w7", "stat", 11, user="usr_b"),  # created after now: not open yet
    ]
    result = workload(table(rows), now=h(10))
    assert list(result["assignee"]) == ["Ann Lee", "(unassigned)", "usr_b@example.org"]
    ann, nobody, b = (result.iloc[i].to_dict() for i in range(3))
    assert (ann["open_normal"], ann["open_high"], ann["open_stat"], ann["open"]) == (1, 0, 1, 2)
    assert (ann["completed"], ann["median_h"], ann["breached"]) == (2, 3.5, 1)  # (5 + 2) / 2; 5 h > 4 h
    assert (nobody["open_high"], nobody["open"], nobody["completed"]) == (1, 1, 0)
    assert pd.isna(nobody["assigned_to_user_id"]) and math.isnan(nobody["median_h"])
    assert (b["open"], b["completed"], b["median_h"], b["breached"]) == (0, 1, 0.5, 0)


def test_customers_volume_within_target_and_cancellation_rate() -> None:
    rows = [
        study("stu_c1", "stat", 0, done=0.5, customer=NORTH),
        study("stu_c2", "stat", 0, done=2, customer=NORTH),
        study("stu_c3", "normal", 0, cancelled=5, customer=NORTH),
        study("stu_c4", "high", 0, done=1),
    ]
    result = customers(table(rows))
    assert list(result["customer"]) == ["North", "(no customer)"]
    north, none = result.iloc[0].to_dict(), result.iloc[1].to_dict()
    assert (north["arrivals"], north["completed"], north["within_target"], north["cancelled"]) == (3, 2, 1, 1)
    assert north["within_target_share"] == 0.5 and north["cancellation_rate"] == pytest.approx(1 / 3)
    assert (none["arrivals"], none["within_target_share"], none["cancellation_rate"]) == (1, 1.0, 0.0)


def test_cancellations_rate_and_time_to_cancel_by_severity_and_customer() -> None:
    rows = [
        study("stu_x1", "stat", 0, cancelled=2, customer=NORTH),
        study("stu_x2", "stat", 0, customer=NORTH),
        study("stu_x3", "normal", 0, cancelled=1),
        study("stu_x4", "normal", 0, cancelled=4),
        study("stu_x5", "normal", 0, done=3),
    ]
    by_sev = cancellations(table(rows))
    stat, high, normal = (row_of(by_sev, severity=s) for s in ("stat", "high", "normal"))
    assert (stat["arrivals"], stat["cancelled"], stat["cancellation_rate"], stat["median_to_cancel_h"]) == (2, 1, 0.5, 2.0)
    assert (normal["arrivals"], normal["cancelled"]) == (3, 2)
    assert normal["cancellation_rate"] == pytest.approx(2 / 3)
    assert normal["median_to_cancel_h"] == 2.5 and normal["p90_to_cancel_h"] == pytest.approx(3.7)  # 1 + 0.9*3
    assert high["arrivals"] == 0 and math.isnan(high["cancellation_rate"])
    by_cust = cancellations(table(rows), "customer")
    assert list(by_cust["customer"]) == ["North", "(no customer)"]
    assert list(by_cust["cancellation_rate"]) == [0.5, pytest.approx(2 / 3)]
    both = cancellations(table(rows), ["severity", "customer"])
    assert len(both) == 3 * 2
    assert row_of(both, severity="normal", customer="(no customer)")["cancelled"] == 2


# --- edge cases: empty, one study, all cancelled ----------------------------------------------


def test_every_kpi_is_correct_on_an_empty_table() -> None:
    tat = turnaround(EMPTY)
    assert list(tat["severity"].astype(str)) == ["normal", "high", "stat"] and tat["completed"].sum() == 0
    assert len(turnaround(EMPTY, "assignee")) == 0 and len(turnaround(EMPTY, ["severity", "week"])) == 0
    bl = backlog(EMPTY, now=NOW)
    assert len(bl) == 18 and bl["open"].sum() == 0
    od = overdue(EMPTY, now=NOW)
    assert len(od) == 0 and "overdue_h" in od.columns
    assert len(volume(EMPTY)) == 0 and list(volume(EMPTY).columns) == ["period", "severity", "arrivals", "share", "partial"]
    assert len(volume(EMPTY, window=(T0, h(48)))) == 2 * 3
    assert len(workload(EMPTY, now=NOW)) == 0 and "open_stat" in workload(EMPTY, now=NOW).columns
    assert len(customers(EMPTY)) == 0 and "cancellation_rate" in customers(EMPTY).columns
    assert cancellations(EMPTY)["arrivals"].sum() == 0
    assert len(with_completion(EMPTY, history([]).iloc[0:0])) == 0


def test_every_kpi_is_correct_for_one_open_study_without_assignee_or_customer() -> None:
    one = table([study("stu_one", "high", 95)])  # 5 h old at NOW: past its 4 h target
    assert turnaround(one)["completed"].sum() == 0
    assert row_of(backlog(one, now=NOW), severity="high", age_band="4-12 h") == {
        "severity": "high", "age_band": "4-12 h", "open": 1, "past_target": 1}
    assert overdue(one, now=NOW)["overdue_h"].tolist() == [1.0]
    assert workload(one, now=NOW)[["assignee", "open_high"]].values.tolist() == [["(unassigned)", 1]]
    assert customers(one)[["customer", "arrivals"]].values.tolist() == [["(no customer)", 1]]
    assert volume(one)["arrivals"].tolist() == [0, 1, 0]
    assert row_of(cancellations(one), severity="high")["cancellation_rate"] == 0.0


def test_all_cancelled_studies_count_as_cancelled_and_never_as_completed_or_open() -> None:
    rows = [study("stu_k1", "stat", 0, done=0.5, cancelled=1), study("stu_k2", "normal", 0, cancelled=3)]
    tat = turnaround(table(rows))
    assert tat["completed"].sum() == 0 and tat["cancelled"].tolist() == [1, 0, 1]
    assert backlog(table(rows), now=NOW)["open"].sum() == 0
    assert len(overdue(table(rows), now=NOW)) == 0
    assert workload(table(rows), now=NOW)["open"].sum() == 0
    assert customers(table(rows))["cancellation_rate"].tolist() == [1.0]
    assert cancellations(table(rows))["cancellation_rate"].tolist()[::2] == [1.0, 1.0]


def test_bad_arguments_fail_with_a_clear_validation_error() -> None:
    with pytest.raises(ValidationError, match="field by: is not one of the allowed values"):
        turnaround(table(TURNAROUND_ROWS), by="radiologist")
    with pytest.raises(ValidationError, match="with start before end"):
        turnaround(table(TURNAROUND_ROWS), window=(h(5), h(1)))
    with pytest.raises(ValidationError, match="field by: is not one of the allowed values"):
        cancellations(table(TURNAROUND_ROWS), by="week")


def test_plain_string_columns_and_naive_times_give_the_same_result() -> None:
    plain = pd.DataFrame({
        "severity": ["stat", "stat"], "study_viewer_status": ["complete", "complete"],
        "is_cancelled": [False, False], "created_at": [pd.Timestamp("2026-11-02 00:00")] * 2,
        "updated_at": [pd.Timestamp("2026-11-02 00:30"), pd.Timestamp("2026-11-02 02:00")],
    })
    assert row_of(turnaround(plain), severity="stat")["median_h"] == 1.25
    assert row_of(turnaround(plain, window=("2026-11-02 01:00", None)), severity="stat")["completed"] == 1


def test_volume_skips_a_study_without_created_at() -> None:
    rows = table([study("stu_v1", "stat", 1), study("stu_v2", "normal", 30)])
    rows.loc[1, "created_at"] = pd.NaT  # a hand-made table may lack a creation time
    result = volume(rows, freq="D")  # warnings are errors here: no NaN -> int cast
    assert list(result["arrivals"]) == [0, 0, 1]
    assert list(result["period"]) == [T0] * 3


def test_sla_targets_accept_numpy_numbers() -> None:
    sla = SLA.with_targets(stat=np.int64(2), high=np.float64(5.5))
    assert sla.target("stat") == pd.Timedelta(hours=2) and sla.target("high") == pd.Timedelta(hours=5.5)
    assert SLA.for_customer(NORTH, normal=np.int32(12)).target("normal", NORTH) == pd.Timedelta(hours=12)
    with pytest.raises(ValidationError, match="hours"):
        SLA.with_targets(stat=np.bool_(True))  # type: ignore[arg-type]


def test_a_window_may_reach_beyond_the_nanosecond_range() -> None:
    # "everything": 0001 to 9999 lies outside pandas' nanosecond timestamps (1677-2262)
    everything = ("0001-01-01", "9999-12-31")
    stat = row_of(turnaround(table(TURNAROUND_ROWS), window=everything), severity="stat")
    assert (stat["completed"], stat["median_h"]) == (5, 3.0)
    assert backlog(table(BACKLOG_ROWS), now=NOW, window=("1900-01-01", "2300-01-01"))["open"].sum() == 9


def test_open_work_counts_whatever_the_window_while_completions_respect_it() -> None:
    from viewerkit.reports import report_tables

    rows = [
        study("stu_o1", "stat", 0, user="usr_a"),  # open for 3 weeks: must still show
        study("stu_o2", "normal", 500, user="usr_a"),  # open, created in the window
        study("stu_o3", "high", 0, done=2, user="usr_a"),  # completed before the window
        study("stu_o4", "high", 490, done=495, user="usr_a"),  # completed in the window
    ]
    now, window = h(504), (h(480), h(504))  # a one-day report, three weeks after stu_o1
    load = workload(table(rows), now=now, window=window).iloc[0]
    assert (load["open_stat"], load["open_normal"], load["open"]) == (1, 1, 2)
    assert (load["completed"], load["median_h"]) == (1, 5.0)
    tables = report_tables(table(rows), now=now, window=window)
    assert tables["backlog"]["open"].sum() == 2
    assert row_of(tables["backlog"], severity="stat", age_band="> 48 h")["past_target"] == 1
    assert list(tables["overdue"]["study_id"]) == ["stu_o1"]
    assert tables["turnaround"]["completed"].sum() == 1
