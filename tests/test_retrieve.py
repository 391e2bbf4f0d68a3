"""fetch.retrieve_studies: given studies by the cheapest path, complete whichever path."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import viewerkit.fetch as fetch_module
from viewerkit import Client
from viewerkit.errors import ValidationError
from viewerkit.fetch import (
    CLOSED_PARTITIONS,
    fetch_studies_arrow,
    retrieve_studies,
    retrieve_studies_arrow,
)
from viewerkit.frame import in_list_order, select_studies
from viewerkit.sandbox.server import Sandbox

MISSING = "stu_" + "0" * 32


@pytest.fixture(scope="module")
def everything(sandbox: Sandbox) -> pa.Table:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        return fetch_studies_arrow(client, progress=False)


def _last_request(sandbox: Sandbox) -> int:
    log = sandbox.requests()
    return int(log[-1]["seq"]) if log else 0


def _retrieved(sandbox: Sandbox, since: int) -> list[str]:
    """The study IDs retrieved singly since request ``since`` (from the sandbox's log)."""
    return [
        r["path"].rsplit("/", 1)[1]
        for r in sandbox.requests(since=since)
        if r["method"] == "GET" and r["path"].startswith("/v1/viewer/studies/stu_")
    ]


def _pick(table: pa.Table, step: int) -> list[str]:
    return [str(s) for s in table.column("study_id").to_pylist()[::step]]


@pytest.mark.parametrize("page_cost", [0.0, 1e9], ids=["paged", "retrieved"])
def test_the_result_is_the_current_state_whichever_path(
    sandbox: Sandbox, everything: pa.Table, monkeypatch: pytest.MonkeyPatch, page_cost: float
) -> None:
    monkeypatch.setattr(fetch_module, "_PAGE_COST", page_cost)
    wanted = _pick(everything, 37)
    since = _last_request(sandbox)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        got = retrieve_studies_arrow(client, [*wanted, wanted[0], MISSING], known=everything, progress=False)
    retrieved = _retrieved(sandbox, since)
    assert got.equals(in_list_order(select_studies(everything, wanted)))
    if page_cost == 0.0:
        # paging found every known study; only the unknown one was retrieved (a 404)
        assert retrieved == [MISSING]
    else:
        assert sorted(retrieved) == sorted({*wanted, MISSING})


def test_without_a_known_table_each_study_is_retrieved(sandbox: Sandbox, everything: pa.Table) -> None:
    wanted = _pick(everything, 211)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        got = retrieve_studies_arrow(client, pa.array(wanted), progress=False)
    assert got.equals(in_list_order(select_studies(everything, wanted)))


def test_recent_closed_studies_are_found_by_paging_the_closed_partitions(
    sandbox: Sandbox, everything: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = everything.filter(
        pc.or_(
            pc.equal(everything.column("study_viewer_status").cast(pa.string()), "complete"),
            everything.column("is_cancelled"),
        )
    )
    wanted = _pick(closed.slice(0, 150), 1)  # the newest closed studies: paging is cheaper
    since = _last_request(sandbox)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        got = retrieve_studies_arrow(
            client, wanted, known=everything, partitions=CLOSED_PARTITIONS, progress=False
        )
    assert got.equals(in_list_order(select_studies(everything, wanted)))
    assert _retrieved(sandbox, since) == []
    pages = [r for r in sandbox.requests(since=since) if r["path"] == "/v1/viewer/studies"]
    assert 2 <= len(pages) <= 8  # the newest pages of the four closed partitions, no more


def test_unknown_studies_are_absent_and_bad_options_refused_before_sending() -> None:
    with Client(api_key="sk-unused", base_url="http://127.0.0.1:9", max_retries=0) as client:
        assert retrieve_studies_arrow(client, []).num_rows == 0
        with pytest.raises(ValidationError, match="concurrency"):
            retrieve_studies_arrow(client, [MISSING], concurrency=0)


def test_the_dataframe_form_takes_what_an_analyst_has(sandbox: Sandbox, everything: pa.Table) -> None:
    from viewerkit.frame import to_pandas

    frame = to_pandas(everything)
    wanted = frame["study_id"].iloc[::97]
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        got = retrieve_studies(client, wanted, known=frame, progress=False)
    expected = to_pandas(in_list_order(select_studies(everything, wanted.tolist())))
    assert got.equals(expected)
    assert str(got["severity"].dtype) == "category"


def test_every_bad_id_is_named_with_its_position_before_anything_is_sent(sandbox: Sandbox) -> None:
    import numpy as np

    from viewerkit.errors import Reason

    good = "stu_" + "a" * 32
    since = _last_request(sandbox)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        with pytest.raises(ValidationError) as caught:
            retrieve_studies(client, [good] * 20 + ["bob", np.nan, "STU_" + "A" * 32], concurrency=0)
        cases = caught.value.failure_cases
        assert cases[["row", "field", "reason"]].values.tolist() == [
            [20, "study_ids", Reason.NOT_STUDY_ID],
            [21, "study_ids", Reason.REQUIRED],
            [22, "study_ids", Reason.NOT_STUDY_ID],
            [None, "concurrency", Reason.OUT_OF_RANGE],
        ]
        one = retrieve_studies(client, MISSING, progress=False)  # one ID alone is one ID
    assert one.empty
    assert [r["path"] for r in sandbox.requests(since=since)] == ["/v1/viewer/studies/" + MISSING]


def test_with_unread_a_failing_study_is_set_aside_but_a_refused_key_raises() -> None:
    import httpx

    from viewerkit.errors import ApiStatusError, ServerError

    ids = [f"stu_{n:032x}" for n in range(3)]

    def server(status: int) -> httpx.MockTransport:
        # a 403 (a key that may not read studies) the sandbox cannot answer, so a wire fake
        def answer(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith(ids[1]):
                return httpx.Response(status, json={"error": {"type": "x", "message": "no"}})
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "no such study"}})
        return httpx.MockTransport(answer)

    with httpx.Client(transport=server(500)) as http, Client(
        api_key="sk-x", base_url="http://avara.test", http_client=http, max_retries=0
    ) as client:
        unread: dict[str, Any] = {}
        table = retrieve_studies_arrow(client, ids, progress=False, unread=unread)
        assert table.num_rows == 0 and list(unread) == [ids[1]] and isinstance(unread[ids[1]], ServerError)
    with httpx.Client(transport=server(403)) as http, Client(
        api_key="sk-x", base_url="http://avara.test", http_client=http, max_retries=0
    ) as client, pytest.raises(ApiStatusError) as caught:
        retrieve_studies_arrow(client, ids, progress=False, unread={})
    assert caught.value.status_code == 403
