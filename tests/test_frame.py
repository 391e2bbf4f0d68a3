"""The study table flattening, pinned on hand-written pages (no server needed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from viewerkit.errors import ApiError, ViewerkitError
from viewerkit.frame import (
    concat_studies,
    conform,
    empty_studies,
    from_pandas,
    page_to_arrow,
    studies_to_arrow,
    study_to_api_body,
    to_pandas,
)
from viewerkit.schema import SEVERITY_TYPE, STUDY_SCHEMA, VIEWER_STATUS_TYPE

USER = {
    "userId": "usr_" + "1" * 32,
    "email": "ada@example.org",
    "firstName": "Ada",
    "lastName": "Lovelace",
    "middleName": "B",
    "suffix1": "MD",
    "suffix2": "PhD",
}


def study(n: int, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "studyId": f"stu_{n:032x}",
        "studyInstanceUid": f"1.2.840.{n}",
        "studyDescription": f"CT Chest {n}",
        "severity": "normal",
        "studyViewerStatus": "incomplete",
        "isCancelled": False,
        "cancelledAt": None,
        "createdAt": "2026-11-27T16:30:43.197Z",
        "updatedAt": "2026-11-27T16:31:00.001Z",
    }
    base.update(fields)
    return base


def page(studies: list[dict[str, object]], cursor: str | None = None, more: bool = False) -> bytes:
    return orjson.dumps({"studies": studies, "cursor": cursor, "hasMore": more})


def test_full_study_flattens_to_every_column() -> None:
    full = study(
        1,
        severity="stat",
        studyViewerStatus="complete",
        isCancelled=True,
        cancelledAt="2026-11-28T01:02:03.456Z",
        assignedTo=USER,
        createdByUser={"userId": "usr_" + "2" * 32, "email": "b@example.org"},
        createdByApiKey={
            "apiKeyId": "0b3f6a55-0c6f-4c3e-9a4e-6b1f0c0d9e11",
            "description": "intake",
            "isViewerEnabled": True,
        },
        expressCustomer={"expressCustomerId": "cus_" + "3" * 32, "expressCustomerName": "Acme"},
        metadata={"site": "North"},
    )
    table, cursor, more = page_to_arrow(page([full], cursor="abc", more=True))
    assert (cursor, more) == ("abc", True)
    row = table.to_pylist()[0]
    utc = dt.timezone.utc
    assert row == {
        "study_id": "stu_" + "0" * 31 + "1",
        "study_instance_uid": "1.2.840.1",
        "study_description": "CT Chest 1",
        "severity": "stat",
        "study_viewer_status": "complete",
        "is_cancelled": True,
        "created_at": dt.datetime(2026, 11, 27, 16, 30, 43, 197000, tzinfo=utc),
        "updated_at": dt.datetime(2026, 11, 27, 16, 31, 0, 1000, tzinfo=utc),
        "cancelled_at": dt.datetime(2026, 11, 28, 1, 2, 3, 456000, tzinfo=utc),
        "assigned_to_user_id": USER["userId"],
        "assigned_to_email": "ada@example.org",
        "assigned_to_first_name": "Ada",
        "assigned_to_last_name": "Lovelace",
        "assigned_to_middle_name": "B",
        "assigned_to_suffix1": "MD",
        "assigned_to_suffix2": "PhD",
        "created_by_user_user_id": "usr_" + "2" * 32,
        "created_by_user_email": "b@example.org",
        "created_by_user_first_name": None,
        "created_by_user_last_name": None,
        "created_by_user_middle_name": None,
        "created_by_user_suffix1": None,
        "created_by_user_suffix2": None,
        "created_by_api_key_id": "0b3f6a55-0c6f-4c3e-9a4e-6b1f0c0d9e11",
        "created_by_api_key_description": "intake",
        "created_by_api_key_is_viewer_enabled": True,
        "express_customer_id": "cus_" + "3" * 32,
        "express_customer_name": "Acme",
        "meta.site": "North",
    }


def test_absent_and_null_references_both_give_nulls_in_all_their_columns() -> None:
    absent = study(1)
    null = study(
        2, assignedTo=None, createdByUser=None, createdByApiKey=None, expressCustomer=None,
        metadata=None,
    )
    present = study(3, assignedTo=USER, expressCustomer={"expressCustomerId": "cus_" + "4" * 32})
    table, _, _ = page_to_arrow(page([absent, null, present]))
    reference_columns = [
        c for c in table.column_names
        if c.startswith(("assigned_to_", "created_by_", "express_customer_"))
    ]
    assert len(reference_columns) == 7 + 7 + 3 + 2
    for name in reference_columns:
        assert table.column(name).to_pylist()[:2] == [None, None], name
    assert table.column("assigned_to_suffix2").to_pylist()[2] == "PhD"
    assert table.column("express_customer_name").to_pylist()[2] is None
    assert not [c for c in table.column_names if c.startswith("meta.")]


def test_metadata_keys_keep_their_exact_spelling_and_are_null_where_absent() -> None:
    odd = {"Site Name": "a", "site name": "b", "déjà.vu/x": "c", "": "d", "meta.x": "e"}
    studies = [study(1, metadata=odd), study(2, metadata={"Site Name": "z"}), study(3)]
    table, _, _ = page_to_arrow(page(studies))
    meta = [c for c in table.column_names if c.startswith("meta.")]
    assert meta == sorted("meta." + k for k in odd)
    assert table.column("meta.Site Name").to_pylist() == ["a", "z", None]
    assert table.column("meta.site name").to_pylist() == ["b", None, None]
    assert table.column("meta.déjà.vu/x").to_pylist() == ["c", None, None]
    assert table.column("meta.").to_pylist() == ["d", None, None]
    assert table.column("meta.meta.x").to_pylist() == ["e", None, None]


def test_empty_page_gives_the_study_schema_and_no_rows() -> None:
    table, cursor, more = page_to_arrow(page([]))
    assert table.num_rows == 0 and cursor is None and more is False
    assert table.schema.equals(STUDY_SCHEMA)


def test_a_body_that_is_not_a_page_is_an_api_error() -> None:
    with pytest.raises(ApiError, match="^list_studies: .*not a Page"):
        page_to_arrow(b'{"data": []}')
    with pytest.raises(ApiError, match="^list_studies: .*not a Page"):
        page_to_arrow(b"<html>")
    with pytest.raises(ApiError, match="^list_studies: a study does not have the Study shape"):
        page_to_arrow(page([study(1, isCancelled=[1])]))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"severity": "urgent"}, "unknown severity 'urgent': expected one of normal, high, stat"),
        ({"studyViewerStatus": "done"}, "unknown study_viewer_status 'done'"),
    ],
)
def test_a_value_outside_the_contract_is_an_api_error_naming_the_call_and_study(
    fields: dict[str, object], message: str
) -> None:
    studies = [study(1), study(2, **fields), study(3)]
    with pytest.raises(ApiError) as caught:
        page_to_arrow(page(studies))
    assert str(caught.value).startswith(f"list_studies stu_{2:032x}: {message}")
    with pytest.raises(ApiError, match=f"^retrieve_study stu_{2:032x}: "):
        studies_to_arrow(studies)


def test_a_timestamp_that_is_not_iso_8601_is_an_api_error_naming_the_call_and_study() -> None:
    with pytest.raises(ApiError, match=f"^list_studies stu_{2:032x}: 1 value outside the contract") as caught:
        page_to_arrow(page([study(1), study(2, createdAt="yesterday")]))
    assert f"study stu_{2:032x}, field created_at: must be an ISO 8601" in str(caught.value)


def test_unknown_severity_is_an_error_not_a_silent_null() -> None:
    with pytest.raises(ViewerkitError, match="unknown severity 'urgent'"):
        studies_to_arrow([study(1, severity="urgent")])


def test_dictionaries_are_fixed_whatever_the_rows_hold() -> None:
    only_stat, _, _ = page_to_arrow(page([study(1, severity="stat", studyViewerStatus="complete")]))
    only_normal, _, _ = page_to_arrow(page([study(2)]))
    for table in (only_stat, only_normal, empty_studies()):
        assert table.schema.field("severity").type == SEVERITY_TYPE
        assert table.schema.field("study_viewer_status").type == VIEWER_STATUS_TYPE
    assert only_stat.column("severity").chunk(0).dictionary.to_pylist() == ["normal", "high", "stat"]
    assert only_normal.column("study_viewer_status").chunk(0).dictionary.to_pylist() == [
        "incomplete",
        "complete",
    ]


def test_sub_millisecond_and_offset_timestamps_parse_to_utc_milliseconds() -> None:
    table = studies_to_arrow(
        [
            study(1, createdAt="2026-11-27T16:30:43.197999Z"),
            study(2, createdAt="2026-11-27T17:30:43+01:00"),
            study(3, createdAt="2026-11-27T16:30:43.5Z"),
        ]
    )
    assert table.schema.field("created_at").type == pa.timestamp("ms", tz="UTC")
    utc = dt.timezone.utc
    assert table.column("created_at").to_pylist() == [
        dt.datetime(2026, 11, 27, 16, 30, 43, 197000, tzinfo=utc),
        dt.datetime(2026, 11, 27, 16, 30, 43, tzinfo=utc),
        dt.datetime(2026, 11, 27, 16, 30, 43, 500000, tzinfo=utc),
    ]


def test_concat_takes_the_union_of_metadata_columns() -> None:
    a = studies_to_arrow([study(1, metadata={"b": "1"})])
    b = studies_to_arrow([study(2, metadata={"a": "2"})])
    c = empty_studies()
    both = concat_studies([a, c, b])
    assert both.column_names[-2:] == ["meta.a", "meta.b"]
    assert both.column("meta.a").to_pylist() == [None, "2"]
    assert both.column("meta.b").to_pylist() == ["1", None]
    assert concat_studies([]).schema.equals(STUDY_SCHEMA)


def test_pandas_dtypes_are_the_documented_ones() -> None:
    df = to_pandas(
        studies_to_arrow(
            [study(1, severity="high", metadata={"k": "v"}), study(2, createdByApiKey=None)]
        )
    )
    default_string = pd.Series(["x"]).dtype
    assert df["severity"].dtype == pd.CategoricalDtype(["normal", "high", "stat"], ordered=True)
    assert df["study_viewer_status"].dtype == pd.CategoricalDtype(["incomplete", "complete"])
    assert not df["study_viewer_status"].cat.ordered
    for name in ("created_at", "updated_at", "cancelled_at"):
        assert str(df[name].dtype) == "datetime64[ms, UTC]"
    assert df["is_cancelled"].dtype == np.dtype(bool)
    assert df["created_by_api_key_is_viewer_enabled"].dtype == pd.BooleanDtype()
    for name in df.columns:
        if STUDY_SCHEMA.get_field_index(name) >= 0 and STUDY_SCHEMA.field(name).type == pa.string():
            assert df[name].dtype == default_string, name
    assert df["meta.k"].dtype == default_string
    assert (df["severity"] > "normal").tolist() == [True, False]


def test_pandas_round_trip_gives_back_the_same_table() -> None:
    table = studies_to_arrow(
        [
            study(1, assignedTo=USER, metadata={"a b": "1"}, isCancelled=True,
                  cancelledAt="2026-11-28T00:00:00.001Z"),
            study(2, severity="stat", createdByApiKey={"apiKeyId": "k", "isViewerEnabled": False}),
        ]
    )
    back = from_pandas(to_pandas(table))
    assert back.schema.equals(table.schema)
    assert back.equals(table)
    # a filtered frame (non-default index) converts too
    df = to_pandas(table)
    assert from_pandas(df[df["severity"] == "stat"]).num_rows == 1


def test_parquet_round_trip_preserves_schema_and_values(tmp_path: Path) -> None:
    table = studies_to_arrow([study(1, metadata={"x": "1"}), study(2, assignedTo=USER)])
    path = tmp_path / "studies.parquet"
    pq.write_table(table, path)
    read = pq.read_table(path)
    assert read.schema.equals(table.schema)
    assert read.equals(table)
    assert conform(read).equals(table)


def test_row_becomes_the_api_body() -> None:
    df = to_pandas(
        studies_to_arrow(
            [
                study(1, assignedTo=USER, severity="high", metadata={"site": "N", "bed": "4"}),
                study(2, metadata={"site": "S"}),
            ]
        )
    )
    first, second = (row for _, row in df.iterrows())
    assert study_to_api_body(first, call="update") == {
        "assignedTo": USER["userId"],
        "metadata": {"bed": "4", "site": "N"},
        "severity": "high",
        "studyDescription": "CT Chest 1",
        "studyViewerStatus": "incomplete",
    }
    body = study_to_api_body(second, call="create")
    assert body == {
        "studyInstanceUid": "1.2.840.2",
        "studyDescription": "CT Chest 2",
        "severity": "normal",
        "assignedTo": None,
        "expressCustomerId": None,
        "metadata": {"site": "S"},
    }
    assert all(type(v) in (str, dict, type(None)) for v in body.values())
    assert orjson.loads(orjson.dumps(study_to_api_body(second))) == study_to_api_body(second)


def test_compact_makes_repeated_strings_categoricals_with_the_same_values() -> None:
    studies = [
        study(n, assignedTo=USER if n % 2 else None, metadata={"site": "North", "acc": f"A{n}"})
        for n in range(1, 9)
    ]
    table = studies_to_arrow(studies)
    plain, compact = to_pandas(table), to_pandas(table, compact=True)
    # repeated values (one assignee, one site) become categoricals ...
    assert isinstance(compact["assigned_to_email"].dtype, pd.CategoricalDtype)
    assert isinstance(compact["meta.site"].dtype, pd.CategoricalDtype)
    # ... values unique to each study stay strings
    for name in ("study_id", "study_instance_uid", "study_description", "meta.acc"):
        assert compact[name].dtype == plain[name].dtype, name
    assert compact["severity"].dtype == plain["severity"].dtype
    for name in plain.columns:
        assert compact[name].astype(object).equals(plain[name].astype(object)), name
    # and the compact frame converts back to the very same study table
    assert from_pandas(compact).equals(table)


def test_from_pandas_allows_nulls_wherever_the_study_table_does() -> None:
    # only the identifiers are required: every other column may be null
    table = studies_to_arrow([{"studyId": f"stu_{1:032x}", "studyInstanceUid": "1.2"}])
    df = to_pandas(table)
    assert df.drop(columns=["study_id", "study_instance_uid"]).isna().all().all()
    assert from_pandas(df).equals(table)
