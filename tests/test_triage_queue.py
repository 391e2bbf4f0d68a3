"""The triage board's model (issue 10), without widgets: filters, sorts, SLA states at their
boundaries, paging, selection across pages and refreshes, and the bulk plan of a selection;
over a real sandbox's study table where the data matters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from viewerkit import Client, ValidationError, fetch_studies
from viewerkit.bulk import UNASSIGN
from viewerkit.errors import Reason
from viewerkit.reports import SLA, deadlines
from viewerkit.sandbox.server import Sandbox
from viewerkit.triage import TriageQueue

NOW = pd.Timestamp("2026-11-02 12:00", tz="UTC")
CUSTOMER = "cus_" + "7" * 32


def study(n: int, severity: str, age: str, **extra: object) -> dict[str, object]:
    return {"study_id": f"stu_{n:032x}", "severity": severity, "study_viewer_status": "incomplete",
            "is_cancelled": False, "created_at": NOW - pd.Timedelta(age), **extra}


@pytest.fixture(scope="module")
def studies(sandbox: Sandbox) -> pd.DataFrame:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        return fetch_studies(client, progress=False)


@pytest.mark.parametrize(
    ("age", "state", "left"),
    [
        ("44min59s", "on time", "15 min left"),  # 15 min 1 s left: not yet the last quarter
        ("45min", "on time", "15 min left"),  # exactly 25 % left is not under it
        ("45min1s", "due soon", "15 min left"),
        ("1h", "due soon", "0 min left"),  # exactly at target: not past it
        ("1h1s", "overdue", "0 min overdue"),  # one second past
        ("3h20min", "overdue", "2 h 20 min overdue"),
    ],
)
def test_sla_states_at_their_boundaries(age: str, state: str, left: str) -> None:
    queue = TriageQueue(pd.DataFrame([study(1, "stat", age)]), now=NOW)
    row = queue.page_table(now=NOW).iloc[0]
    assert (row["sla_state"], row["left"]) == (state, left)
    assert queue.counts(now=NOW)["overdue"] == (state == "overdue")


def test_per_customer_targets_and_the_due_soon_share_are_honoured() -> None:
    table = pd.DataFrame([study(1, "high", "90min", express_customer_id=CUSTOMER), study(2, "high", "90min")])
    queue = TriageQueue(table, sla=SLA.for_customer(CUSTOMER, high=2), due_soon=0.5, now=NOW)
    page = queue.page_table(now=NOW).set_index("study_id")
    shown = {i: (r.sla_state, r.left) for i, r in zip(page.index, page.itertuples(), strict=True)}
    assert shown[f"stu_{1:032x}"] == ("due soon", "30 min left")
    assert shown[f"stu_{2:032x}"] == ("on time", "2 h 30 min left")
    with pytest.raises(ValidationError) as caught:
        TriageQueue(table, due_soon=1.5, page_size=0)
    assert caught.value.failure_cases["field"].tolist() == ["due_soon", "page_size"]


def test_default_order_is_time_left_then_severity_then_oldest() -> None:
    table = pd.DataFrame([
        study(1, "normal", "2h"), study(2, "stat", "30min"), study(3, "stat", "2h"),
        study(4, "high", "3h"), study(5, "high", "3h", created_note="tie"), study(6, "normal", "30h"),
    ])
    queue = TriageQueue(table, now=NOW)
    ids = [int(i[4:], 16) for i in queue.matching_ids(now=NOW)]
    # overdue by 6 h (normal, 30 h) and 1 h (stat, 2 h); then left 30 min (stat); high 1 h
    # left twice (tie: same severity, same age: by ID order is stable); normal 22 h left
    assert ids == [6, 3, 2, 4, 5, 1]
    queue.set_sort("oldest")
    assert [int(i[4:], 16) for i in queue.matching_ids(now=NOW)][:1] == [6]
    queue.set_sort("severity")
    assert [int(i[4:], 16) for i in queue.matching_ids(now=NOW)] == [3, 2, 4, 5, 6, 1]
    with pytest.raises(ValidationError):
        queue.set_sort("priority")


def test_filters_match_an_independent_pandas_computation(studies: pd.DataFrame) -> None:
    now = pd.Timestamp.now(tz="UTC")
    queue = TriageQueue(studies, now=now)
    marks = deadlines(studies, now=now)
    open_ = (studies["study_viewer_status"] == "incomplete") & ~studies["is_cancelled"]
    assert queue.counts(now=now)["matching"] == int(open_.sum())
    assignee = studies.loc[open_, "assigned_to_user_id"].dropna().iloc[0]
    queue.set_filters(severity=["stat", "high"], assignee=[assignee, None], now=now)
    expected = open_ & studies["severity"].isin(["stat", "high"]) & (
        (studies["assigned_to_user_id"] == assignee).fillna(False) | studies["assigned_to_user_id"].isna()
    )
    assert set(queue.matching_ids(now=now)) == set(studies.loc[expected, "study_id"])
    counts = queue.counts(now=now)
    assert counts["stat"] + counts["high"] == counts["matching"] and counts["normal"] == 0
    assert counts["overdue"] == int((expected & marks["overdue"]).sum())
    queue.clear_filters(now=now)
    queue.set_filters(sla="overdue", now=now)
    assert set(queue.matching_ids(now=now)) == set(studies.loc[marks["overdue"], "study_id"])
    word = studies["study_description"].dropna().iloc[0].split()[0]
    queue.set_filters(sla=(), search=word.lower(), cancelled=None, status=(), now=now)
    found = studies["study_description"].fillna("").str.lower().str.contains(word.lower(), regex=False)
    assert set(queue.matching_ids(now=now)) == set(studies.loc[found, "study_id"])
    queue.set_filters(search="", min_age_h=24, max_age_h=48, now=now)
    age = (now - studies["created_at"]).dt.total_seconds() / 3600
    assert set(queue.matching_ids(now=now)) == set(studies.loc[(age >= 24) & (age <= 48), "study_id"])
    customer = studies["express_customer_id"].dropna().iloc[0]
    queue.set_filters(min_age_h=None, max_age_h=None, customer=customer, now=now)
    assert set(queue.matching_ids(now=now)) == set(studies.loc[studies["express_customer_id"] == customer, "study_id"])


def test_bad_filters_are_refused_naming_each_field_and_change_nothing(studies: pd.DataFrame) -> None:
    queue = TriageQueue(studies)
    before = queue.filters
    with pytest.raises(ValidationError) as caught:
        queue.set_filters(severity="urgent", cancelled="yes", min_age_h="old", colour="red")
    assert caught.value.failure_cases["field"].tolist() == ["colour"]
    with pytest.raises(ValidationError) as caught:
        queue.set_filters(severity="urgent", cancelled="yes", min_age_h="old")
    assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [
        ["severity", Reason.NOT_A_CHOICE], ["cancelled", Reason.NOT_BOOLEAN], ["min_age_h", Reason.NOT_A_DURATION]]
    assert queue.filters == before


def test_only_the_page_is_built_and_pages_cover_every_match_once(studies: pd.DataFrame) -> None:
    now = pd.Timestamp.now(tz="UTC")
    queue = TriageQueue(studies, page_size=37, now=now)
    queue.set_filters(status=(), cancelled=None, now=now)  # the whole table: many pages
    assert queue.pages(now=now) == -(-len(studies) // 37)
    seen: list[str] = []
    for page in range(queue.pages(now=now)):
        assert queue.go_to(page, now=now) == page
        table = queue.page_table(now=now)
        assert len(table) <= 37
        seen += table["study_id"].tolist()
    assert seen == queue.matching_ids(now=now)
    assert queue.go_to(10_000, now=now) == queue.pages(now=now) - 1
    shown = queue.page_table(now=now)
    assert str(shown["created_at"].dt.tz) == "UTC"
    berlin = TriageQueue(studies, tz="Europe/Berlin", now=now).page_table(now=now)
    assert str(berlin["created_at"].dt.tz) == "Europe/Berlin"


def test_selection_is_by_id_and_survives_paging_sorting_and_refresh(studies: pd.DataFrame) -> None:
    now = pd.Timestamp.now(tz="UTC")
    queue = TriageQueue(studies, page_size=20, now=now)
    queue.set_filters(status=(), cancelled=None, now=now)  # the whole table: many pages
    first_page = queue.page_table(now=now)["study_id"].tolist()
    assert queue.select_page(now=now) == 20
    queue.go_to(2, now=now)
    third = queue.page_table(now=now)["study_id"].tolist()[:3]
    queue.select(third)
    queue.set_sort("newest")
    assert set(queue.selected_ids(now=now)) == set(first_page) | set(third)
    assert queue.counts(now=now)["selected"] == 23
    # not cancelled only: the selection keeps just the selected studies that still match
    queue.set_filters(cancelled=False, now=now)
    kept = set(queue.selected_ids(now=now))
    cancelled = set(studies.loc[studies["is_cancelled"], "study_id"])
    assert kept == (set(first_page) | set(third)) - cancelled
    first_page = [i for i in first_page if i in kept]
    third = [i for i in third if i in kept]
    # a refresh in which one selected study was cancelled meanwhile and another is gone
    done, gone = first_page[0], first_page[1]
    refreshed = studies.copy()
    refreshed.loc[refreshed["study_id"] == done, "is_cancelled"] = True
    refreshed = refreshed[refreshed["study_id"] != gone]
    queue.refresh(refreshed, now=now)
    assert set(queue.selected_ids(now=now)) == (set(first_page) | set(third)) - {done, gone}
    # narrowing the filter keeps only the selected studies that still match
    severity = studies.set_index("study_id").loc[third[0], "severity"]
    queue.set_filters(severity=severity, now=now)
    assert all(studies.set_index("study_id").loc[queue.selected_ids(now=now), "severity"] == severity)
    assert queue.select_all_matching(now=now) == queue.counts(now=now)["matching"]
    queue.clear_selection()
    assert queue.selected_ids(now=now) == []
    assert queue.select(["stu_" + "f" * 32]) == 0  # not in the table: ignored


def test_the_bulk_plan_of_a_selection(studies: pd.DataFrame) -> None:
    queue = TriageQueue(studies)
    with pytest.raises(ValidationError, match="select studies first"):
        queue.plan("complete")
    chosen = queue.matching_ids()[:5]
    queue.select(chosen)
    user = studies["assigned_to_user_id"].dropna().iloc[0]
    assign = queue.plan("assign", user).frame
    assert set(assign["study_id"]) == set(chosen) and set(assign["assigned_to"]) == {user}
    assert set(queue.plan("unassign").frame["assigned_to"]) == {UNASSIGN}
    assert set(queue.plan("severity", "stat").frame["severity"]) == {"stat"}
    assert set(queue.plan("complete").frame["study_viewer_status"]) == {"complete"}
    assert set(queue.plan("cancel").frame["action"]) == {"cancel"}
    with pytest.raises(ValidationError):
        queue.plan("severity", "urgent")
    with pytest.raises(ValidationError):
        queue.plan("delete")  # type: ignore[arg-type]


def test_a_large_worklist_stays_vectorised() -> None:
    """100,000 studies: the state holds whole-column arrays, and a page is page_size rows."""
    n = 100_000
    rng = np.random.default_rng(1)
    table = pd.DataFrame({
        "study_id": [f"stu_{i:032x}" for i in range(n)],
        "severity": rng.choice(["normal", "high", "stat"], n),
        "study_viewer_status": rng.choice(["incomplete", "complete"], n),
        "is_cancelled": rng.random(n) < 0.03,
        "created_at": NOW - pd.to_timedelta(rng.integers(0, 72 * 3600, n), unit="s"),
        "assigned_to_user_id": rng.choice([f"usr_{i:032x}" for i in range(40)], n),
    })
    queue = TriageQueue(table, now=NOW)
    queue.set_filters(severity="stat", sla="overdue", now=NOW)
    page = queue.page_table(now=NOW)
    assert len(page) == 50 and set(page["sla_state"]) == {"overdue"}
    assert page["left_h"].is_monotonic_increasing


def test_choices_name_assignees_and_customers_as_the_rows_do() -> None:
    now = pd.Timestamp("2026-11-30 12:00", tz="UTC")
    studies = pd.DataFrame({
        "study_id": [f"stu_{n}" for n in range(4)], "severity": ["stat"] * 4,
        "study_viewer_status": ["incomplete"] * 4, "is_cancelled": [False] * 4,
        "created_at": [now - pd.Timedelta(minutes=m) for m in (5, 10, 15, 20)],
        "assigned_to_user_id": ["usr_b", "usr_a", None, "usr_b"],
        "assigned_to_first_name": ["Zoe", None, None, "Zoe"], "assigned_to_last_name": ["Adams", None, None, "Adams"],
        "assigned_to_email": ["zoe@x.example", "ana@x.example", None, "zoe@x.example"],
        "express_customer_id": ["cus_1", None, "cus_2", "cus_1"],
        "express_customer_name": ["Bayfront", None, None, "Bayfront"],
    })
    queue = TriageQueue(studies, now=now)
    assert queue.choices("assignee") == [("(unassigned)", None), ("Zoe Adams", "usr_b"), ("ana@x.example", "usr_a")]
    assert queue.choices("customer") == [("(no customer)", None), ("Bayfront", "cus_1"), ("cus_2", "cus_2")]
    shown = queue.page_table(now=now)
    assert set(shown["assignee"]) == {"Zoe Adams", "ana@x.example", "(unassigned)"}
    with pytest.raises(ValueError, match="'assignee' or 'customer'"):
        queue.choices("severity")  # type: ignore[arg-type]


def test_a_selected_study_that_stops_matching_as_time_passes_is_never_acted_on() -> None:
    now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
    studies = pd.DataFrame({
        "study_id": ["stu_" + c * 32 for c in "abc"], "severity": ["stat", "stat", "normal"],
        "study_viewer_status": ["incomplete"] * 3, "is_cancelled": [False] * 3,
        "created_at": [now - pd.Timedelta("50min"), now - pd.Timedelta("10min"), now - pd.Timedelta("1h")],
    })
    queue = TriageQueue(studies, now=now)
    queue.set_filters(sla=["due soon"], now=now)
    assert queue.select_all_matching(now=now) == 1  # stu_aaa…: 10 min left
    later = now + pd.Timedelta("20min")  # now overdue: no longer "due soon"
    assert queue.matching_ids(later) == []
    assert queue.counts(later)["selected"] == 0 and queue.selected_ids(later) == []
    with pytest.raises(ValidationError, match="select studies first"):
        queue.plan("complete", now=later)
    queue.set_filters(sla=[], min_age_h=0.5, now=now)  # the age filter too
    queue.select(["stu_" + "b" * 32])  # 10 min old: does not match, ignored
    queue.select_all_matching(now=now)
    assert queue.selected_ids(now) == ["stu_" + "a" * 32, "stu_" + "c" * 32]
    assert queue.prune(now) == 0 and queue.prune(now - pd.Timedelta("45min")) == 2


def test_availability_toggles_made_at_once_are_all_kept(tmp_path: Any) -> None:
    import threading

    from viewerkit.triage.availability import Availability

    path = tmp_path / "availability.json"
    users = [f"usr_{n:032x}" for n in range(20)]

    def mark(some: list[str]) -> None:
        board = Availability(path)  # each board its own reader and writer of the one file
        for user in some:
            board.set_available(user, False)

    threads = [threading.Thread(target=mark, args=(users[n::2],)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Availability(path).unavailable() == set(users)
