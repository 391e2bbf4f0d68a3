"""frame.compare_studies / diff_studies: what changed between two states of studies."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa

from viewerkit.frame import (
    compare_studies,
    diff_studies,
    from_pandas,
    studies_to_arrow,
    to_pandas,
)

A, B, C = ("stu_" + ch * 32 for ch in "abc")
USER_1, USER_2 = ("usr_" + ch * 32 for ch in "12")


def study(study_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "studyId": study_id,
        "studyInstanceUid": "1.2." + str(ord(study_id[-1])),
        "studyDescription": "CT Head",
        "severity": "normal",
        "studyViewerStatus": "incomplete",
        "isCancelled": False,
        "createdAt": "2026-11-01T08:00:00.000Z",
        "updatedAt": "2026-11-01T08:00:00.000Z",
    }
    base.update(fields)
    return base


def test_each_kind_of_cell_change_is_one_row_with_readable_before_and_after() -> None:
    before = studies_to_arrow([
        study(A, assignedTo={"userId": USER_1, "email": "a@x"}, metadata={"site": "North"}),
        study(B),
    ])
    after = studies_to_arrow([
        study(
            A,
            severity="stat",
            assignedTo={"userId": USER_2, "email": "b@x"},
            metadata={"bed": "4"},
            updatedAt="2026-11-01T09:30:00.250Z",
        ),
        study(B, isCancelled=True, cancelledAt="2026-11-02T00:00:00Z"),
    ])
    long = diff_studies(before, after)
    assert list(long.columns) == ["study_id", "field", "before", "after"]
    rows = {(r.study_id, r.field): (r.before, r.after) for r in long.itertuples()}
    assert rows == {
        (A, "severity"): ("normal", "stat"),
        (A, "updated_at"): ("2026-11-01T08:00:00.000Z", "2026-11-01T09:30:00.250Z"),
        (A, "assigned_to_user_id"): (USER_1, USER_2),
        (A, "assigned_to_email"): ("a@x", "b@x"),
        (A, "meta.bed"): (None, "4"),
        (A, "meta.site"): ("North", None),
        (B, "is_cancelled"): ("false", "true"),
        (B, "cancelled_at"): (None, "2026-11-02T00:00:00.000Z"),
    }
    # sorted by study, then in study table column order
    assert long["study_id"].tolist() == sorted(long["study_id"].tolist())
    a_fields = long[long["study_id"] == A]["field"].tolist()
    assert a_fields == ["severity", "updated_at", "assigned_to_user_id", "assigned_to_email",
                        "meta.bed", "meta.site"]


def test_equal_tables_have_no_difference_whatever_their_row_order() -> None:
    rows = [study(A, metadata={"k": "v"}), study(B)]
    first = studies_to_arrow(rows)
    second = studies_to_arrow(list(reversed(rows)))
    assert diff_studies(first, second).empty
    changes = compare_studies(first, second)
    assert (len(changes.new_ids), len(changes.changed_ids), len(changes.gone_ids)) == (0, 0, 0)
    assert changes.unchanged == 2


def test_new_and_gone_studies_are_counted_not_diffed() -> None:
    changes = compare_studies(studies_to_arrow([study(A), study(B)]), studies_to_arrow([study(B), study(C)]))
    assert changes.new_ids.to_pylist() == [C]
    assert changes.gone_ids.to_pylist() == [A]
    assert changes.unchanged == 1
    assert diff_studies(studies_to_arrow([study(A)]), studies_to_arrow([study(C)])).empty


def test_nothing_before_makes_everything_new() -> None:
    changes = compare_studies(None, studies_to_arrow([study(A), study(B)]))
    assert sorted(changes.new_ids.to_pylist()) == [A, B]
    assert changes.unchanged == 0


def test_null_against_a_value_differs_but_two_nulls_do_not() -> None:
    before = studies_to_arrow([study(A, studyDescription=None, assignedTo=None)])
    after = studies_to_arrow([study(A, studyDescription="MR Knee", assignedTo=None)])
    assert diff_studies(before, after)[["field", "before", "after"]].values.tolist() == [
        ["study_description", None, "MR Knee"]
    ]


def test_dataframes_edited_by_an_analyst_compare_like_arrow_tables() -> None:
    table = studies_to_arrow([study(A), study(B, metadata={"site": "North"})])
    edited = to_pandas(table)
    edited.loc[edited["study_id"] == A, "severity"] = "high"
    edited.loc[edited["study_id"] == B, "meta.site"] = "South"
    long = diff_studies(to_pandas(table), edited)
    assert long[["study_id", "field", "before", "after"]].values.tolist() == [
        [A, "severity", "normal", "high"],
        [B, "meta.site", "North", "South"],
    ]
    assert diff_studies(table, from_pandas(edited)).equals(long)


def test_compact_categoricals_compare_by_value() -> None:
    table = studies_to_arrow([study(A, assignedTo={"userId": USER_1, "email": "a@x"}), study(B)])
    compact = to_pandas(table, compact=True)
    assert diff_studies(table, compact).empty
    assert isinstance(diff_studies(table, table), pd.DataFrame)
    assert pa.types.is_string(compare_studies(table, table).long().schema.field("before").type)


def test_every_cell_of_the_study_dataframe_can_be_edited_in_place() -> None:
    """Arrow hands categorical codes to pandas read-only; an analyst's .loc assignment on
    severity or viewer status failed with 'assignment destination is read-only'."""
    table = studies_to_arrow([
        study(A, assignedTo={"userId": USER_1, "email": "a@x"}, metadata={"site": "North"}),
        study(B, severity="high", studyViewerStatus="complete", metadata={"site": "South"}),
    ])
    for compact in (False, True):
        frame = to_pandas(table, compact=compact)
        for column in frame.columns:  # every column takes the other row's value
            frame.loc[frame.index[0], column] = frame[column].iloc[1]
        frame.loc[frame.index[1], "severity"] = "stat"
        frame.loc[:, "study_viewer_status"] = "incomplete"
        assert frame["severity"].tolist() == ["high", "stat"]
        assert frame["study_viewer_status"].tolist() == ["incomplete", "incomplete"]
        assert frame["severity"].cat.ordered
        assert table.column("severity").to_pylist() == ["normal", "high"]  # the source is untouched


def test_a_study_twice_on_a_side_is_refused_naming_it() -> None:
    from viewerkit.errors import Reason, ValidationError

    before = to_pandas(studies_to_arrow([study(A), study(B)]))
    after = pd.concat([before, before.iloc[[0]]])
    try:
        diff_studies(before, after)
    except ValidationError as error:
        assert error.failure_cases[["field", "value", "reason"]].values.tolist() == [
            ["after.study_id", A, Reason.DUPLICATE]
        ]
    else:
        raise AssertionError("a duplicated study was compared")


def test_a_column_an_analyst_dropped_is_not_reported_as_emptied() -> None:
    table = to_pandas(studies_to_arrow([
        study(A, assignedTo={"userId": USER_1, "email": "a@x"}), study(B, severity="high"),
    ]))
    cut = table.drop(columns=["assigned_to_email", "created_at"])
    cut.loc[cut["study_id"] == B, "severity"] = "stat"
    long = diff_studies(table, cut)
    assert long[["study_id", "field", "before", "after"]].values.tolist() == [[B, "severity", "high", "stat"]]


def test_what_is_not_a_study_table_is_a_validation_error() -> None:
    import pytest

    from viewerkit.errors import Reason, ValidationError

    with pytest.raises(ValidationError) as caught:
        diff_studies([study(A)], studies_to_arrow([study(A)]))
    assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [["before", Reason.WRONG_TYPE]]
