"""Fetch every study matching some filters into the study table, paging concurrently.

``fetch_studies`` (a DataFrame) and ``fetch_studies_arrow`` (the ``pyarrow.Table``) page the
study list with ``limit=100``. Each page goes from its response bytes to an Arrow array of
wire studies at once (``viewerkit.frame.read_page``: orjson and one C++ conversion); all
pages are flattened into the study table once, at the end (``flatten_studies``), so the
per-page cost stays small and nothing is concatenated repeatedly.

Partitioned concurrent paging
-----------------------------
The list is keyset-paged, so one filter's pages can only be fetched one after another. The
filter space is therefore split into disjoint partitions, severity x viewer status x
cancelled (12, less the dimensions the caller fixed), each paged by its own cursor chain,
the chains running concurrently on a thread pool (threads, not asyncio, so it works inside a
running Jupyter loop). Every study has exactly one severity, one viewer status and one
cancelled flag, so the partitions cover the filter exactly once. The result is de-duplicated
by study ID keeping the newest ``updated_at`` (a study changed mid-fetch can show up in two
partitions), and sorted like the API lists (newest ``created_at`` first, ties by study ID,
descending), so on an unchanging server it equals the sequential fetch.

Partitions are skewed (most studies are normal, complete, not cancelled), so the fetch takes
about the largest partition's page count x the latency. When every worker is busy, the chain
with the most pages done goes first, so the largest partition never waits for a slot.

No sub-partitioning: the API has no user or customer list, so splitting a partition by
assignee (or customer) from a roster cannot prove it misses no study (a study assigned to a
user the roster lacks would be lost), and ``studyDescription`` is a contains match, whose
values are neither disjoint nor known. Completeness wins over speed.

A study that changes partition while the fetch runs (its severity, status or cancelled flag
changed) may be seen twice (the newest copy is kept) or, if it moves into a partition already
paged past its position, missed; a later fetch or cache refresh sees it.

>>> import viewerkit.fetch as f
>>> len(f.study_partitions({"severity": "stat"}))
4
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from viewerkit.client import _stop_retrying_when
from viewerkit.errors import ApiError, Reason, ValidationError
from viewerkit.frame import flatten_studies, read_page, to_pandas
from viewerkit.schema import (
    MAX_PAGE_LIMIT,
    NOT_GIVEN,
    SEVERITIES,
    VIEWER_STATUSES,
    NotGiven,
    list_query_params,
)

if TYPE_CHECKING:
    import pandas as pd

    from viewerkit.client import Client

__all__ = ["fetch_studies", "fetch_studies_arrow", "study_partitions", "newest_per_study"]


# The partition dimensions, each value list ordered so the usually-largest partition
# (normal, complete, not cancelled) is started first.
_DIMENSIONS: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("severity", SEVERITIES),
    ("study_viewer_status", tuple(reversed(VIEWER_STATUSES))),
    ("is_cancelled", (False, True)),
)
_POLL_SECONDS = 0.2  # how often the waiting thread wakes, so Ctrl-C is handled promptly


def study_partitions(filters: dict[str, Any]) -> list[dict[str, Any]]:
    """Disjoint filter sets that together select exactly what ``filters`` selects.

    ``filters`` are ``list_studies`` keyword arguments (absent or ``NOT_GIVEN`` = no filter).
    Each dimension the caller did not fix (severity, viewer status, cancelled) is split
    into its values.

    >>> [p["is_cancelled"] for p in study_partitions({"severity": "high",
    ...                                               "study_viewer_status": "complete"})]
    [False, True]
    """
    given = {k: v for k, v in filters.items() if v is not NOT_GIVEN}
    free = [(name, values) for name, values in _DIMENSIONS if name not in given]
    return [
        {**given, **dict(zip((n for n, _ in free), combo, strict=True))}
        for combo in itertools.product(*(values for _, values in free))
    ]


def newest_per_study(table: pa.Table) -> pa.Table:
    """One row per study ID (the newest ``updated_at``), in list order (newest ``created_at``
    first, ties by study ID descending). Vectorised: two sorts and a run-start mask.

    >>> from viewerkit.frame import studies_to_arrow
    >>> t = studies_to_arrow([
    ...     {"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1", "updatedAt": "2026-01-01T00:00:00Z"},
    ...     {"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1", "updatedAt": "2026-02-01T00:00:00Z"},
    ... ])
    >>> newest_per_study(t).column("updated_at").to_pylist()[0].month
    2
    """
    if table.num_rows <= 1:
        return table
    keep: pa.Array | None = None  # row positions to keep; None: every row
    ids = table.column("study_id")
    if pc.count_distinct(ids).as_py() < table.num_rows:
        by_id = pc.sort_indices(
            table.select(["study_id", "updated_at"]),
            sort_keys=[("study_id", "ascending"), ("updated_at", "descending")],
        )
        sorted_ids = ids.take(by_id).combine_chunks()
        first = np.ones(len(sorted_ids), dtype=bool)
        first[1:] = pc.not_equal(sorted_ids[1:], sorted_ids[:-1]).to_numpy(zero_copy_only=False)
        keep = by_id.filter(pa.array(first))
    keys = table.select(["created_at", "study_id"])
    if keep is not None:
        keys = keys.take(keep)
    order = pc.sort_indices(keys, sort_keys=[("created_at", "descending"), ("study_id", "descending")])
    # one take of the whole table, whatever was dropped and reordered
    return table.take(order if keep is None else keep.take(order))


@dataclass
class _Chain:
    """One partition's cursor chain."""

    order: int
    filters: dict[str, Any]
    cursor: str | NotGiven = NOT_GIVEN
    pages: int = 0
    pages_read: list[pa.StructArray] = field(default_factory=list)


def _fetch_page(
    client: Client, chain: _Chain, stop: threading.Event
) -> tuple[pa.StructArray, str | None, bool]:
    with _stop_retrying_when(stop):
        body = client.list_studies_raw(**chain.filters, limit=MAX_PAGE_LIMIT, cursor=chain.cursor)
    return read_page(body)


def fetch_studies_arrow(
    client: Client,
    *,
    assigned_to: str | None | NotGiven = NOT_GIVEN,
    express_customer_id: str | None | NotGiven = NOT_GIVEN,
    is_cancelled: bool | NotGiven = NOT_GIVEN,
    severity: str | NotGiven = NOT_GIVEN,
    study_description: str | NotGiven = NOT_GIVEN,
    study_viewer_status: str | NotGiven = NOT_GIVEN,
    concurrency: int = 8,
    progress: bool = True,
    partitioned: bool = True,
) -> pa.Table:
    """Every study matching the filters as the study table (``STUDY_SCHEMA`` + ``meta.*``).

    Filters are those of ``Client.list_studies`` (``None`` for ``assigned_to`` /
    ``express_customer_id`` selects studies with none); bad values raise ``ValidationError``
    before any request. ``concurrency`` caps pages in flight (and never exceeds the client's
    ``max_concurrency``); ``partitioned=False`` pages the filter as one sequential chain.
    ``progress`` shows a tqdm bar of studies fetched. Ctrl-C cancels the pages not yet sent,
    waits for those in flight (which no longer retry), and re-raises ``KeyboardInterrupt``;
    no thread is left running.

    >>> from viewerkit import Client
    >>> with Client(api_key="sk-x", base_url="http://127.0.0.1:9") as client:
    ...     fetch_studies_arrow(client, severity="urgent")
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: bad study list filters: 1 problem
      field severity: must be one of normal, high, stat (got 'urgent')
    """
    filters: dict[str, Any] = {
        "assigned_to": assigned_to,
        "express_customer_id": express_customer_id,
        "is_cancelled": is_cancelled,
        "severity": severity,
        "study_description": study_description,
        "study_viewer_status": study_viewer_status,
    }
    list_query_params(**filters)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValidationError.from_cases(
            "bad fetch options",
            [{"row": None, "field": "concurrency", "value": concurrency,
              "reason": Reason.OUT_OF_RANGE, "detail": "a whole number, 1 or more"}],
        )
    given = {k: v for k, v in filters.items() if v is not NOT_GIVEN}
    partitions = study_partitions(given) if partitioned else [given]
    workers = min(concurrency, len(partitions), getattr(client, "max_concurrency", concurrency))
    chains = [_Chain(order, p) for order, p in enumerate(partitions)]
    _page_chains(client, chains, workers, progress)
    # each page was only parsed to wire Study structs; flatten them all at once
    table = flatten_studies([page for chain in chains for page in chain.pages_read])
    return newest_per_study(table).combine_chunks()


def _page_chains(client: Client, chains: list[_Chain], workers: int, progress: bool) -> None:
    """Page every chain to its end, at most ``workers`` pages in flight."""
    from tqdm.auto import tqdm

    ready = list(chains)
    in_flight: dict[Future[tuple[pa.StructArray, str | None, bool]], _Chain] = {}
    bar = tqdm(total=None, unit=" studies", desc="fetching studies", disable=not progress)
    stop = threading.Event()  # set on Ctrl-C or a failed page: in-flight pages stop retrying
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="viewerkit-fetch")
    try:
        while ready or in_flight:
            while ready and len(in_flight) < workers:
                # the chain with the most pages done (likely the largest partition) first
                ready.sort(key=lambda c: (-c.pages, c.order))
                chain = ready.pop(0)
                in_flight[pool.submit(_fetch_page, client, chain, stop)] = chain
            done, _ = wait(in_flight, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                chain = in_flight.pop(future)
                studies, cursor, has_more = future.result()
                chain.pages_read.append(studies)
                chain.pages += 1
                bar.update(len(studies))
                if has_more:
                    if not cursor:
                        raise ApiError("a page said hasMore but gave no cursor", call="list_studies")
                    chain.cursor = cursor
                    ready.append(chain)
    except BaseException:
        # Ctrl-C or a failed page: send nothing more, let in-flight pages finish (without
        # retrying), re-raise
        stop.set()
        for future in in_flight:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()


def fetch_studies(
    client: Client,
    *,
    assigned_to: str | None | NotGiven = NOT_GIVEN,
    express_customer_id: str | None | NotGiven = NOT_GIVEN,
    is_cancelled: bool | NotGiven = NOT_GIVEN,
    severity: str | NotGiven = NOT_GIVEN,
    study_description: str | NotGiven = NOT_GIVEN,
    study_viewer_status: str | NotGiven = NOT_GIVEN,
    concurrency: int = 8,
    progress: bool = True,
    partitioned: bool = True,
    compact: bool = False,
) -> pd.DataFrame:
    """Every study matching the filters as a DataFrame (``to_pandas`` of
    :func:`fetch_studies_arrow`; see there for the arguments; ``compact=True`` makes
    repeated string columns categoricals, see :func:`viewerkit.frame.to_pandas`).

    >>> from viewerkit import Client
    >>> with Client(api_key="sk-x", base_url="http://127.0.0.1:9") as client:
    ...     fetch_studies(client, assigned_to="bob")
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: bad study list filters: 1 problem
      field assigned_to: must be usr_ + 32 lowercase hex, or None for none (got 'bob')
    """
    return to_pandas(
        fetch_studies_arrow(
            client,
            assigned_to=assigned_to,
            express_customer_id=express_customer_id,
            is_cancelled=is_cancelled,
            severity=severity,
            study_description=study_description,
            study_viewer_status=study_viewer_status,
            concurrency=concurrency,
            progress=progress,
            partitioned=partitioned,
        ),
        compact=compact,
    )
