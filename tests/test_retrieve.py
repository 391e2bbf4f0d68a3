"""fetch.retrieve_studies: given studies by the cheapest path, complete whichever path."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import viewerkit.fetch as fetch_module
from viewerkit import Client
from viewerkit.errors import ValidationError
from viewerkit.fetch import CLOSED_PARTITIONS, fetch_studies_arrow, retrieve_studies
from viewerkit.frame import in_list_order, select_studies
from viewerkit.sandbox.server import Sandbox

MISSING = "stu_" + "0" * 32


@pytest.fixture(scope="module")
def everything(sandbox: Sandbox) -> pa.Table:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        return fetch_studies_arrow(client, progress=False)


def _pick(table: pa.Table, step: int) -> list[str]:
    return [str(s) for s in table.column("study_id").to_pylist()[::step]]


@pytest.mark.parametrize("page_cost", [0.0, 1e9], ids=["paged", "retrieved"])
def test_the_result_is_the_current_state_whichever_path(
    sandbox: Sandbox, everything: pa.Table, monkeypatch: pytest.MonkeyPatch, page_cost: float
) -> None:
    monkeypatch.setattr(fetch_module, "_PAGE_COST", page_cost)
    retrieved: list[str] = []
    real = fetch_module._retrieve_each

    def spy(client: Client, study_ids: list[str], *args: Any) -> Any:
        retrieved.extend(study_ids)
        return real(client, study_ids, *args)

    monkeypatch.setattr(fetch_module, "_retrieve_each", spy)
    wanted = _pick(everything, 37)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        got = retrieve_studies(client, [*wanted, wanted[0], MISSING], known=everything, progress=False)
    assert got.equals(in_list_order(select_studies(everything, wanted)))
    if page_cost == 0.0:
        # paging found every known study; only the unknown one was retrieved (a 404)
        assert retrieved == [MISSING]
    else:
        assert sorted(retrieved) == sorted({*wanted, MISSING})


def test_without_a_known_table_each_study_is_retrieved(sandbox: Sandbox, everything: pa.Table) -> None:
    wanted = _pick(everything, 211)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        got = retrieve_studies(client, pa.array(wanted), progress=False)
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
    retrieved: list[str] = []
    real = fetch_module._retrieve_each
    monkeypatch.setattr(
        fetch_module, "_retrieve_each",
        lambda client, ids, *args: (retrieved.extend(ids), real(client, ids, *args))[1],
    )
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        got = retrieve_studies(
            client, wanted, known=everything, partitions=CLOSED_PARTITIONS, progress=False
        )
    assert got.equals(in_list_order(select_studies(everything, wanted)))
    assert retrieved == []


def test_unknown_studies_are_absent_and_bad_options_refused_before_sending() -> None:
    with Client(api_key="sk-unused", base_url="http://127.0.0.1:9", max_retries=0) as client:
        assert retrieve_studies(client, []).num_rows == 0
        with pytest.raises(ValidationError, match="concurrency"):
            retrieve_studies(client, [MISSING], concurrency=0)
