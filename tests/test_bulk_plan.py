"""The bulk plan (issue 9): a table of studies and fields, its markers, and its offline
checks, every problem at once with the row and field named. (Nothing here talks to a
server: a plan is checked before anything is sent; apply's tests run against the sandbox.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from viewerkit import ValidationError
from viewerkit.bulk import (
    CLEAR,
    DELETE,
    EMPTY,
    UNASSIGN,
    Plan,
    cancel,
    complete,
    set_severity,
    uncancel,
)
from viewerkit.errors import Reason

A, B, C = ("stu_" + c * 32 for c in "abc")
USER = "usr_" + "1" * 32


def cases(plan: Plan, **kwargs: object) -> list[list[object]]:
    with pytest.raises(ValidationError) as caught:
        plan.validate(**kwargs)  # type: ignore[arg-type]
    return caught.value.failure_cases[["row", "field", "reason"]].values.tolist()


def test_an_empty_cell_leaves_a_field_whatever_its_dtype() -> None:
    frame = pd.DataFrame(
        {"study_id": [A, B, C], "severity": ["stat", None, np.nan], "study_description": ["", "CT", pd.NA],
         "action": [None, None, "cancel"]}
    )
    plan = Plan(frame).validate()
    assert plan.counts() == {"severity": 1, "study_description": 1, "action": 1}
    assert plan.frame["severity"].tolist() == ["stat", None, None]
    assert plan.frame["study_description"].tolist() == [None, "CT", None]


def test_every_problem_at_once_with_the_row_label_and_field() -> None:
    frame = pd.DataFrame(
        {
            "study_id": [A, "stu_1", None, A, None],
            "study_instance_uid": [None, None, "01.2", None, None],
            "severity": ["urgent", "stat", None, None, "high"],
            "study_viewer_status": [None, "done", None, None, None],
            "study_description": ["   ", None, None, None, None],
            "assigned_to": ["bob", None, UNASSIGN, None, None],
            "action": [None, "delete", None, "cancel", None],
        },
        index=["r1", "r2", "r3", "r4", "r5"],
    )
    assert cases(Plan(frame)) == [
        ["r1", "study_id", Reason.DUPLICATE],
        ["r1", "severity", Reason.NOT_SEVERITY],
        ["r1", "study_description", Reason.BLANK],
        ["r1", "assigned_to", Reason.NOT_USER_ID],
        ["r2", "study_id", Reason.NOT_STUDY_ID],
        ["r2", "study_viewer_status", Reason.NOT_VIEWER_STATUS],
        ["r2", "action", Reason.NOT_A_CHOICE],
        ["r3", "study_instance_uid", Reason.NOT_DICOM_UID],
        ["r4", "study_id", Reason.DUPLICATE],
        ["r5", "study_id", Reason.REQUIRED],
    ]


def test_metadata_markers_and_limits() -> None:
    frame = pd.DataFrame(
        {
            "study_id": [A, B, C, "stu_" + "d" * 32],
            "meta.site": ["North", DELETE, "x" * 1001, None],
            "meta.": [None, None, None, "v"],
            "metadata": [None, CLEAR, None, "{}"],
        }
    )
    assert cases(Plan(frame)) == [
        [1, "metadata", Reason.CONFLICT],
        [2, "meta.site", Reason.METADATA_VALUE_TOO_LONG],
        [3, "meta.", Reason.BAD_METADATA_KEY],
        [3, "metadata", Reason.NOT_A_CHOICE],
    ]
    ok = Plan({"study_id": [A, B], "metadata": [CLEAR, EMPTY]}).validate()
    assert ok.counts() == {"metadata": 2}


def test_more_than_fifty_keys_set_in_one_row_is_refused() -> None:
    row = {"study_id": A, **{f"meta.k{i}": "v" for i in range(51)}}
    assert cases(Plan([row])) == [[0, "metadata", Reason.TOO_MANY_PAIRS]]
    row = {"study_id": A, **{f"meta.k{i}": DELETE for i in range(60)}}
    Plan([row]).validate()  # deleting many keys sets none


def test_a_row_that_changes_nothing_is_refused() -> None:
    assert cases(Plan({"study_id": [A, B], "severity": ["stat", None]})) == [[1, "plan", Reason.EMPTY]]
    with pytest.raises(ValidationError, match="study_id or study_instance_uid"):
        Plan({"severity": ["stat"]})


def test_users_unknown_to_the_roster_are_refused_and_emails_resolve() -> None:
    users = pd.DataFrame({"user_id": [USER], "email": ["Dr.Lee@example.org"]})
    plan = Plan({"study_id": [A, B, C], "assigned_to": ["dr.lee@example.org", "usr_" + "2" * 32, "x@y.org"]})
    assert cases(plan, users=users) == [
        [1, "assigned_to", Reason.NOT_A_CHOICE],
        [2, "assigned_to", Reason.NOT_A_CHOICE],
    ]
    with pytest.raises(ValidationError):
        plan.with_user_ids(users)
    resolved = Plan({"study_id": [A, B], "assigned_to": ["DR.LEE@example.org", UNASSIGN]}).with_user_ids(users)
    assert resolved.frame["assigned_to"].tolist() == [USER, UNASSIGN]


def test_a_csv_plan_names_rows_by_their_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.csv"
    path.write_text(
        "study_id,severity,note\n"
        f"{A},stat,bump\n"
        f"{B},,nothing\n"
        f"{C},urgent,typo\n",
        encoding="utf-8",
    )
    plan = Plan.from_csv(path)
    assert list(plan.frame.index) == [2, 3, 4] and plan.frame["note"].tolist() == ["bump", "nothing", "typo"]
    assert cases(plan) == [[3, "plan", Reason.EMPTY], [4, "severity", Reason.NOT_SEVERITY]]
    with pytest.raises(ValidationError, match="no such file"):
        Plan.from_csv(tmp_path / "missing.csv")


def test_the_builders_name_studies_by_id_uid_or_table() -> None:
    studies = pd.DataFrame({"study_id": [A, B], "severity": ["high", "normal"]}, index=[10, 11])
    assert set_severity(studies, "stat").frame.to_dict("list") == {"study_id": [A, B], "severity": ["stat", "stat"]}
    assert list(set_severity(studies, "stat").frame.index) == [10, 11]
    mixed = cancel([A, "1.2.840.5"]).frame
    assert mixed[["study_id", "study_instance_uid", "action"]].values.tolist() == [
        [A, None, "cancel"], [None, "1.2.840.5", "cancel"]]
    assert uncancel(A).counts() == {"action": 1} and complete([A]).counts() == {"study_viewer_status": 1}
    with pytest.raises(ValidationError) as caught:
        set_severity([A], "urgent").validate()  # type: ignore[arg-type]
    assert caught.value.failure_cases["field"].tolist() == ["severity"]


def test_emails_resolve_leniently_against_only_the_users_the_studies_name() -> None:
    seen = pd.DataFrame({"user_id": [USER, "usr_" + "3" * 32], "email": ["dr.lee@example.org", None]})
    plan = Plan({"study_id": [A, B, C], "assigned_to": ["DR.LEE@example.org", "new@example.org", UNASSIGN]})
    assert plan.with_user_ids(seen, strict=False).frame["assigned_to"].tolist() == [
        USER, "new@example.org", UNASSIGN]  # the unknown email is left for the server to refuse
    with pytest.raises(ValidationError):
        plan.with_user_ids(seen)
