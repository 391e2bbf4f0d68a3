"""StudyFilters: one definition of the study list's filters, shared by the client, the
fetcher and the CLI; checked once, every problem at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from viewerkit import Client, ValidationError
from viewerkit.errors import Reason
from viewerkit.fetch import fetch_studies_arrow
from viewerkit.frame import in_list_order
from viewerkit.sandbox.server import Sandbox
from viewerkit.schema import (
    FILTER_NAMES,
    NOT_GIVEN,
    StudyFetchFilterArgs,
    StudyFilterArgs,
    StudyFilters,
    list_query_params,
)

USER = "usr_" + "1" * 32


def offline() -> Client:
    # nothing listens on port 9: a request would be an ApiConnectionError, not a ValidationError
    return Client(api_key="sk-unused", base_url="http://127.0.0.1:9", max_retries=0)


def test_one_definition_of_the_six_filters() -> None:
    assert tuple(StudyFilterArgs.__annotations__) == FILTER_NAMES
    assert tuple(StudyFetchFilterArgs.__annotations__) == FILTER_NAMES
    assert tuple(StudyFilters.__dataclass_fields__) == FILTER_NAMES


def test_keywords_and_a_filters_value_mean_the_same() -> None:
    by_keywords = list_query_params(assigned_to=None, severity="stat", is_cancelled=False)
    by_value = StudyFilters(assigned_to=None, severity="stat", is_cancelled=False).query_params()
    assert by_keywords == by_value == {"assignedTo": "null", "isCancelled": "false", "severity": "stat"}
    assert StudyFilters.of(None, {"severity": "high"}) == StudyFilters(severity="high")


def test_every_problem_of_a_list_call_is_reported_at_once_before_sending() -> None:
    with offline() as client, pytest.raises(ValidationError) as caught:
        client.list_studies(severity="urgent", assigned_to="bob", limit=500, cursor="")  # type: ignore[arg-type]
    cases = caught.value.failure_cases
    assert cases["field"].tolist() == ["assigned_to", "severity", "limit", "cursor"]
    assert cases["reason"].tolist() == [
        Reason.NOT_USER_ID, Reason.NOT_SEVERITY, Reason.OUT_OF_RANGE, Reason.NOT_CURSOR
    ]


def test_a_typo_in_a_filter_name_or_both_forms_at_once_is_refused() -> None:
    with offline() as client:
        with pytest.raises(ValidationError, match="severty") as caught:
            client.list_studies(severty="stat")  # type: ignore[call-arg]
        assert caught.value.failure_cases["reason"].tolist() == [Reason.NOT_A_CHOICE]
        with pytest.raises(ValidationError, match="not both"):
            client.list_studies(StudyFilters(severity="stat"), severity="high")
        with pytest.raises(ValidationError, match="must be a StudyFilters"):
            client.list_studies({"severity": "stat"})  # type: ignore[arg-type]


def test_several_values_are_for_the_fetcher_not_for_one_list_call() -> None:
    filters = StudyFilters(
        severity=["stat", "high", "stat"],
        study_viewer_status=np.array(["incomplete"]),  # type: ignore[arg-type]
    )
    assert filters.severity == ("high", "stat")  # the contract's order, once each
    assert filters.study_viewer_status == "incomplete"  # one value is the value
    assert not filters.single
    with pytest.raises(ValidationError, match="one value per filter") as caught:
        filters.query_params()
    assert caught.value.failure_cases["field"].tolist() == ["severity"]
    with offline() as client, pytest.raises(ValidationError, match="one value per filter"):
        client.list_studies(severity=["stat", "high"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("severity", [], Reason.EMPTY),
        ("severity", ["stat", "urgent"], Reason.NOT_SEVERITY),
        ("study_viewer_status", pd.Series(["done"]), Reason.NOT_VIEWER_STATUS),
        ("is_cancelled", "yes", Reason.NOT_BOOLEAN),
        ("is_cancelled", [True, None], Reason.REQUIRED),
        ("assigned_to", ["usr_" + "1" * 32], Reason.NOT_USER_ID),  # one value only
        ("study_description", "", Reason.EMPTY),
    ],
)
def test_bad_values_name_field_and_reason(field: str, value: object, reason: Reason) -> None:
    with pytest.raises(ValidationError) as caught:
        StudyFilters(**{field: value})  # type: ignore[arg-type]
    assert caught.value.failure_cases["field"].tolist()[0] == field
    assert caught.value.failure_cases["reason"].tolist()[0] is reason


def test_numpy_values_are_taken_as_their_python_values() -> None:
    filters = StudyFilters(is_cancelled=np.bool_(True), severity=np.str_("stat"))  # type: ignore[arg-type]
    assert filters.is_cancelled is True
    assert filters.query_params() == {"isCancelled": "true", "severity": "stat"}


def test_partitions_split_what_is_off_and_what_holds_several_values() -> None:
    parts = StudyFilters(severity=("stat", "high"), assigned_to=None).partitions()
    assert len(parts) == 2 * 2 * 2
    assert all(p.single and p.assigned_to is None for p in parts)
    assert {(p.severity, p.study_viewer_status, p.is_cancelled) for p in parts} == {
        (s, v, c) for s in ("high", "stat") for v in ("incomplete", "complete") for c in (False, True)
    }
    # the usually-largest partition (complete, not cancelled) first
    assert (parts[0].study_viewer_status, parts[0].is_cancelled) == ("complete", False)
    assert [p.severity for p in StudyFilters(severity=["stat", "normal"]).partitions(split=())] == [
        "normal", "stat"
    ]


def test_from_text_reads_a_command_line() -> None:
    assert StudyFilters.from_text(
        assigned_to="null", express_customer_id=None, is_cancelled="true", severity=("stat",),
        study_viewer_status=(), study_description="knee",
    ) == StudyFilters(assigned_to=None, is_cancelled=True, severity="stat", study_description="knee")
    assert StudyFilters.from_text(assigned_to=USER).assigned_to == USER
    assert StudyFilters.from_text(is_cancelled=False).is_cancelled is False
    with pytest.raises(ValidationError, match="is_cancelled"):
        StudyFilters.from_text(is_cancelled="maybe")


def test_fetch_with_several_severities_is_the_union_of_single_fetches(sandbox: Sandbox) -> None:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        both = fetch_studies_arrow(client, severity=["stat", "high"], progress=False)
        one_chain_each = fetch_studies_arrow(
            client, severity=("high", "stat"), partitioned=False, progress=False
        )
        stat = fetch_studies_arrow(client, severity="stat", progress=False)
        high = fetch_studies_arrow(client, StudyFilters(severity="high"), progress=False)
        everything = fetch_studies_arrow(client, progress=False)
    union = in_list_order(pa.concat_tables([stat, high.select(stat.column_names)]))
    assert both.num_rows == union.num_rows > 0
    assert both.column("study_id").equals(union.column("study_id"))
    assert one_chain_each.column("study_id").equals(union.column("study_id"))
    expected = everything.filter(
        pc.is_in(everything.column("severity").cast(pa.string()), value_set=pa.array(["stat", "high"]))
    )
    assert both.column("study_id").equals(expected.column("study_id"))


def test_not_given_in_a_keyword_mapping_is_off() -> None:
    assert list_query_params(severity=NOT_GIVEN, limit=NOT_GIVEN) == {}


def test_a_description_filter_too_long_for_a_url_is_refused_naming_the_field() -> None:
    with offline() as client:
        with pytest.raises(ValidationError, match="study_description") as caught:
            client.list_studies(study_description="x" * 200_000)
        assert caught.value.failure_cases["reason"].tolist() == [Reason.TOO_LONG]
        with pytest.raises(ValidationError, match="study_description"):
            fetch_studies_arrow(client, study_description="é" * 30_000, progress=False)


def test_a_misspelt_name_and_a_bad_value_are_both_reported() -> None:
    with pytest.raises(ValidationError) as caught:
        StudyFilters.of(None, {"severty": "stat", "severity": "x"})
    assert caught.value.failure_cases["field"].tolist() == ["severty", "severity"]


def test_a_table_is_not_several_values() -> None:
    with pytest.raises(ValidationError, match="severity"):
        StudyFilters(severity=pd.DataFrame({"stat": [1]}))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="severity"):
        StudyFilters(severity=pa.table({"stat": [1]}))
