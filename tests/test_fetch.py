"""The fetcher against a real sandbox server: complete, exact, equal on every path."""

from __future__ import annotations

import _thread
import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from raw_api import list_all_raw

import viewerkit as vk
from viewerkit import Client
from viewerkit.errors import ApiConnectionError, ServerError, ValidationError
from viewerkit.fetch import fetch_studies, fetch_studies_arrow, study_partitions
from viewerkit.frame import conform, newest_per_study, studies_to_arrow
from viewerkit.sandbox.server import Sandbox
from viewerkit.schema import NOT_GIVEN, REFERENCE_USER_FIELDS, STUDY_SCHEMA

# -- an independent reading of the API: raw JSON pages via httpx, flattened by hand -------


def _when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.timezone.utc)
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


def expected_row(study: dict[str, Any], meta_keys: list[str]) -> dict[str, Any]:
    """The study table row of one wire study, written out field by field."""
    row: dict[str, Any] = {
        "study_id": study["studyId"],
        "study_instance_uid": study["studyInstanceUid"],
        "study_description": study.get("studyDescription"),
        "severity": study.get("severity"),
        "study_viewer_status": study.get("studyViewerStatus"),
        "is_cancelled": study.get("isCancelled"),
        "created_at": _when(study.get("createdAt")),
        "updated_at": _when(study.get("updatedAt")),
        "cancelled_at": _when(study.get("cancelledAt")),
    }
    for prefix, key in (("assigned_to", "assignedTo"), ("created_by_user", "createdByUser")):
        user = study.get(key) or {}
        for suffix, wire in REFERENCE_USER_FIELDS:
            row[f"{prefix}_{suffix}"] = user.get(wire)
    api_key = study.get("createdByApiKey") or {}
    row["created_by_api_key_id"] = api_key.get("apiKeyId")
    row["created_by_api_key_description"] = api_key.get("description")
    row["created_by_api_key_is_viewer_enabled"] = api_key.get("isViewerEnabled")
    customer = study.get("expressCustomer") or {}
    row["express_customer_id"] = customer.get("expressCustomerId")
    row["express_customer_name"] = customer.get("expressCustomerName")
    metadata = study.get("metadata") or {}
    for key in meta_keys:
        row["meta." + key] = metadata.get(key)
    return row


def assert_table_is_the_api_answer(table: pa.Table, studies: list[dict[str, Any]]) -> None:
    meta_keys = sorted({k for s in studies for k in (s.get("metadata") or {})})
    assert table.column_names == [*STUDY_SCHEMA.names, *("meta." + k for k in meta_keys)]
    assert table.schema.equals(conform(table).schema)
    rows = table.to_pylist()
    assert len(rows) == len(studies)
    assert len({r["study_id"] for r in rows}) == len(rows)
    for row, study in zip(rows, studies, strict=True):
        assert row == expected_row(study, meta_keys), study["studyId"]


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(sandbox: Sandbox) -> Iterator[Client]:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        yield c


@pytest.fixture(scope="module")
def everything(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list_all_raw(sandbox)


# -- completeness and exactness ---------------------------------------------------------


def test_every_study_appears_once_with_each_field_as_the_api_returned(
    client: Client, everything: list[dict[str, Any]]
) -> None:
    assert len(everything) == 2000
    table = fetch_studies_arrow(client, progress=False)
    assert_table_is_the_api_answer(table, everything)
    # the sandbox world exercises the edge cases this test is meant to cover
    assert table.column("assigned_to_user_id").null_count > 0
    assert table.column("express_customer_id").null_count > 0
    assert len([c for c in table.column_names if c.startswith("meta.")]) > 0


def _filter_cases(everything: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assignee = next(s["assignedTo"]["userId"] for s in everything if s.get("assignedTo"))
    customer = next(
        s["expressCustomer"]["expressCustomerId"] for s in everything if s.get("expressCustomer")
    )
    word = everything[0]["studyDescription"].split()[0].upper()  # contains, case-insensitive
    return [
        {"severity": "stat"},
        {"study_viewer_status": "incomplete"},
        {"is_cancelled": True},
        {"is_cancelled": False, "severity": "high"},
        {"assigned_to": None},
        {"assigned_to": assignee},
        {"express_customer_id": None},
        {"express_customer_id": customer, "study_viewer_status": "complete"},
        {"study_description": word},
        {"study_description": word, "assigned_to": None, "severity": "normal"},
        {"severity": "normal", "study_viewer_status": "complete", "is_cancelled": False},
    ]


def _wire(filters: dict[str, Any]) -> dict[str, str]:
    names = {
        "assigned_to": "assignedTo",
        "express_customer_id": "expressCustomerId",
        "is_cancelled": "isCancelled",
        "severity": "severity",
        "study_description": "studyDescription",
        "study_viewer_status": "studyViewerStatus",
    }
    encode: Callable[[Any], str] = lambda v: (  # noqa: E731
        "null" if v is None else ("true" if v is True else "false" if v is False else v)
    )
    return {names[k]: encode(v) for k, v in filters.items()}


def test_filters_select_exactly_what_the_api_lists_partitioned_and_sequential(
    sandbox: Sandbox, client: Client, everything: list[dict[str, Any]]
) -> None:
    for filters in _filter_cases(everything):
        expected = list_all_raw(sandbox, _wire(filters))
        assert expected, filters  # a filter that selects nothing would prove little
        partitioned = fetch_studies_arrow(client, progress=False, **filters)
        sequential = fetch_studies_arrow(client, progress=False, partitioned=False, **filters)
        assert_table_is_the_api_answer(partitioned, expected)
        assert partitioned.equals(sequential), filters


def test_partitioned_and_sequential_fetches_are_equal_at_every_concurrency(
    client: Client,
) -> None:
    sequential = fetch_studies_arrow(client, progress=False, partitioned=False)
    for concurrency in (1, 3, 8, 32):
        assert fetch_studies_arrow(client, progress=False, concurrency=concurrency).equals(
            sequential
        )


def test_a_filter_that_selects_nothing_gives_an_empty_study_table(
    client: Client, everything: list[dict[str, Any]]
) -> None:
    table = fetch_studies_arrow(
        client, progress=False, study_description="no study is described like this"
    )
    assert table.num_rows == 0
    assert table.schema.equals(STUDY_SCHEMA)


def test_partitions_cover_each_combination_once() -> None:
    everything = study_partitions({})
    assert len(everything) == 12
    keys = {(p["severity"], p["study_viewer_status"], p["is_cancelled"]) for p in everything}
    assert len(keys) == 12
    fixed = study_partitions({"severity": "stat", "is_cancelled": True, "assigned_to": None})
    assert fixed == [
        {"severity": "stat", "is_cancelled": True, "assigned_to": None,
         "study_viewer_status": status}
        for status in ("complete", "incomplete")
    ]
    assert study_partitions({"severity": NOT_GIVEN}) == everything


# -- the DataFrame and Parquet ---------------------------------------------------------


def test_parquet_round_trip_preserves_schema_and_every_value(
    client: Client, tmp_path: Path
) -> None:
    table = fetch_studies_arrow(client, progress=False)
    path = tmp_path / "studies.parquet"
    pq.write_table(table, path)
    read = pq.read_table(path)
    assert read.schema.equals(table.schema)
    assert read.equals(table)
    metadata = [c for c in table.column_names if c.startswith("meta.")]
    assert metadata and read.select(metadata).equals(table.select(metadata))


def test_fetched_dataframe_has_the_documented_dtypes(client: Client) -> None:
    df = fetch_studies(client, progress=False, severity="stat")
    default_string = pd.Series(["x"]).dtype
    assert list(df.columns[: len(STUDY_SCHEMA)]) == STUDY_SCHEMA.names
    assert df["severity"].dtype == pd.CategoricalDtype(["normal", "high", "stat"], ordered=True)
    assert df["study_viewer_status"].dtype == pd.CategoricalDtype(["incomplete", "complete"])
    for name in ("created_at", "updated_at", "cancelled_at"):
        assert str(df[name].dtype) == "datetime64[ms, UTC]"
    assert df["is_cancelled"].dtype == np.dtype(bool)
    assert df["created_by_api_key_is_viewer_enabled"].dtype == pd.BooleanDtype()
    for name in ("study_id", "study_description", "assigned_to_email", "express_customer_name"):
        assert df[name].dtype == default_string
    assert all(df[c].dtype == default_string for c in df.columns if c.startswith("meta."))
    assert set(df["severity"]) == {"stat"}


# -- faults, bad input, Ctrl-C -----------------------------------------------------------


def test_fetch_under_failures_drops_and_rate_limit_equals_the_fault_free_fetch(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=3000, seed=11)
    sent: list[int] = []  # requests put on the wire, retries included
    http = httpx.Client(timeout=30.0, event_hooks={"request": [lambda _: sent.append(1)]})
    with http, Client(
        api_key=server.api_key, base_url=server.base_url, max_retries=12, http_client=http
    ) as c:
        clean = fetch_studies_arrow(c, progress=False)
        clean_sequential = fetch_studies_arrow(c, progress=False, partitioned=False)
        clean_requests = len(sent)
        server.set_faults(fail_rate=0.1, rate_limit=40)
        partitioned = fetch_studies_arrow(c, progress=False)
        sequential = fetch_studies_arrow(c, progress=False, partitioned=False)
    assert clean.num_rows == 3000
    assert clean_sequential.equals(clean)
    # the faults did bite: the same two fetches needed retries
    assert len(sent) - clean_requests > clean_requests
    assert partitioned.equals(clean)
    assert sequential.equals(clean)


def _nothing_listens() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"severity": "urgent"}, "severity"),
        ({"study_viewer_status": "done"}, "study_viewer_status"),
        ({"is_cancelled": "yes"}, "is_cancelled"),
        ({"assigned_to": "usr_BAD"}, "assigned_to"),
        ({"express_customer_id": "cus_" + "0" * 31}, "express_customer_id"),
        ({"study_description": ""}, "study_description"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_bad_filter_values_raise_validation_error_before_any_request(
    filters: dict[str, Any], field: str
) -> None:
    # Nothing listens at this URL: a request would end in ApiConnectionError, not this.
    with Client(api_key="sk-unused", base_url=_nothing_listens(), max_retries=0) as c:
        with pytest.raises(ValidationError) as caught:
            fetch_studies(c, progress=False, **filters)
        assert caught.value.failure_cases is not None
        assert caught.value.failure_cases["field"].tolist() == [field]
        with pytest.raises(ApiConnectionError):
            fetch_studies(c, progress=False)


def _new_threads(before: set[threading.Thread], grace_s: float = 5.0) -> list[threading.Thread]:
    """Threads started since ``before`` and still running after ``grace_s`` seconds of
    joining them (tqdm's own monitor aside: it lives as long as the process). A worker that
    ends a moment after the interrupt reaches the main thread (a loaded machine delivers
    it late) is not left running; one still alive after the grace is."""
    left = [t for t in threading.enumerate() if t not in before and t.name != "tqdm_monitor"]
    deadline = time.monotonic() + grace_s
    for thread in left:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t for t in left if t.is_alive()]


def test_ctrl_c_stops_the_fetch_and_no_page_reaches_the_sandbox_after_it(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=3000, seed=3)  # ~40 pages
    lock = threading.Lock()
    sent = 0

    def ctrl_c_at_the_15th_page(request: httpx.Request) -> None:
        nonlocal sent
        with lock:
            sent += 1
            if sent == 15:
                _thread.interrupt_main()

    before = set(threading.enumerate())
    http = httpx.Client(timeout=30.0, event_hooks={"request": [ctrl_c_at_the_15th_page]})
    with http, Client(api_key=server.api_key, base_url=server.base_url, http_client=http) as c:
        with pytest.raises(KeyboardInterrupt):
            vk.fetch_studies(c, progress=False, concurrency=4)
        assert not _new_threads(before)  # nothing is left that could send a request later
        received = server.requests()
        # every page sent reached the sandbox and was answered: none is still on its way
        assert len(received) == sent
        assert all(r["status"] == 200 for r in received)
        # after the Ctrl-C, only the pages already in flight (at most 4 with the 15th): none new
        assert 15 <= sent <= 15 + 3
        # and the client still works afterwards
        assert vk.fetch_studies(c, progress=False, severity="stat").shape[0] > 0


def test_ctrl_c_does_not_wait_out_the_in_flight_pages_retries(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    # The rate limit's bucket holds one request: the first page is served, every later
    # request is answered 429 with Retry-After 20 s, which the client would wait out before
    # retrying; the first 429 pauses the whole client, so a worker that had not sent yet
    # waits in that pause without sending. Ctrl-C comes with the first 429.
    server = make_sandbox(studies=300, seed=5, rate_limit=0.05)
    lock = threading.Lock()
    refused = 0

    def ctrl_c_at_the_first_429(response: httpx.Response) -> None:
        nonlocal refused
        if response.status_code == 429:
            with lock:
                refused += 1
                if refused == 1:
                    _thread.interrupt_main()

    before = set(threading.enumerate())
    http = httpx.Client(timeout=30.0, event_hooks={"response": [ctrl_c_at_the_first_429]})
    with http, Client(
        api_key=server.api_key, base_url=server.base_url, http_client=http, max_retries=1
    ) as c:
        with pytest.raises(KeyboardInterrupt):
            vk.fetch_studies(c, progress=False, concurrency=4)
        assert not _new_threads(before)
        # the workers stopped waiting at the Ctrl-C: no retry ever reached the sandbox
        answered = sorted(r["status"] for r in server.requests())
        assert answered[0] == 200 and 1 <= answered.count(429) <= 4 and set(answered) == {200, 429}
        assert answered.count(200) == 1
    # a call outside any fetch still retries as before (a new client: this one keeps the
    # server's 20 s pause, which a call outside a run waits out)
    server.set_faults(rate_limit=None)
    server.fail_next(1, method="GET", path="/v1/viewer/studies", how="503")
    seen = len(server.requests())
    with Client(api_key=server.api_key, base_url=server.base_url, max_retries=1) as fresh:
        assert fresh.list_studies(limit=1)["studies"]
    assert [r["status"] for r in server.requests(since=seen)] == [503, 200]


def test_a_failed_page_stops_the_fetch_and_the_other_pages_retries(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    # The bucket holds one request, which the armed fault fails with 503 after the 300 ms of
    # latency (max_retries=0: that page fails). The three other workers met 429 at once (a
    # 429 skips the latency) with Retry-After 20 s and are waiting to retry (429s do not use
    # up max_retries): the failure stops their wait, else the test would take 20 s and more.
    server = make_sandbox(studies=300, seed=5, rate_limit=0.05, latency_ms=300)
    server.fail_next(1, method="GET", path="/v1/viewer/studies", how="503")
    before = set(threading.enumerate())
    with Client(api_key=server.api_key, base_url=server.base_url, max_retries=0) as c:
        with pytest.raises(ServerError, match="^list_studies: 503"):
            vk.fetch_studies(c, progress=False, concurrency=4)
        assert not _new_threads(before)
    statuses = [r["status"] for r in server.requests()]
    # the failed page's one try and the others' first tries; no retry came after the failure
    assert statuses.count(503) == 1
    assert set(statuses) == {503, 429}
    assert len(statuses) <= 1 + 3


# -- de-duplication ---------------------------------------------------------------------


def test_duplicates_keep_the_newest_update_and_the_list_order() -> None:
    def s(n: int, created: str, updated: str, severity: str = "normal") -> dict[str, Any]:
        return {
            "studyId": f"stu_{n:032x}",
            "studyInstanceUid": f"1.{n}",
            "severity": severity,
            "createdAt": created,
            "updatedAt": updated,
        }

    table = studies_to_arrow(
        [
            s(1, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "normal"),
            s(2, "2026-01-03T00:00:00Z", "2026-01-03T00:00:00Z"),
            s(1, "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z", "stat"),
            s(3, "2026-01-03T00:00:00Z", "2026-01-03T00:00:00Z"),
            s(1, "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z", "high"),
        ]
    )
    result = newest_per_study(table)
    assert result.column("study_id").to_pylist() == [f"stu_{n:032x}" for n in (3, 2, 1)]
    assert result.column("severity").to_pylist() == ["normal", "normal", "stat"]


# -- notebooks and terminals -------------------------------------------------------------


def test_fetch_works_inside_a_running_event_loop(client: Client) -> None:
    import asyncio

    async def in_a_notebook_cell() -> int:
        # what a Jupyter cell does: a plain synchronous call while the kernel's loop runs
        return fetch_studies(client, progress=False, severity="high").shape[0]

    rows = asyncio.run(in_a_notebook_cell())
    assert rows == fetch_studies_arrow(client, progress=False, severity="high").num_rows > 0


def test_progress_bar_counts_the_studies_fetched(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    table = fetch_studies_arrow(client, progress=True, severity="stat")
    err = capsys.readouterr().err
    assert table.num_rows > 100
    assert f"fetching studies: {table.num_rows} studies" in err
    fetch_studies_arrow(client, progress=False, severity="stat")
    assert capsys.readouterr().err == ""
