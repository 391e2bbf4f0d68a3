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

Active refresh reads and single studies
---------------------------------------
:func:`fetch_active` reads what an active cache refresh needs (the open studies, the new
ones, and the new state of cached open studies that left the open list), and
:func:`retrieve_studies` reads given studies by the cheapest path: paging the partitions
they are likely in, newest first, down to a cutoff chosen by a cost model, and single
retrieves for the rest. Every concurrent read runs on :class:`viewerkit.runner.Runner`.

A study that changes partition while the fetch runs (its severity, status or cancelled flag
changed) may be seen twice (the newest copy is kept) or, if it moves into a partition already
paged past its position, missed; a later fetch or cache refresh sees it.

>>> import viewerkit.fetch as f
>>> len(f.study_partitions({"severity": "stat"}))
4
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from viewerkit.client import CursorTrail
from viewerkit.errors import (
    ApiError,
    ApiStatusError,
    AuthenticationError,
    NotFound,
    Reason,
    ValidationError,
)
from viewerkit.frame import (
    ResponseProblems,
    check_metadata_shape,
    concat_studies,
    empty_studies,
    flatten_studies,
    from_pandas,
    metadata_shape,
    newest_per_study,
    oldest_created_at,
    read_page,
    select_studies,
    studies_to_arrow,
    to_pandas,
)
from viewerkit.runner import Progress, Runner, run_all
from viewerkit.schema import (
    MAX_PAGE_LIMIT,
    NOT_GIVEN,
    RULES,
    SEVERITIES,
    MetadataShape,
    NotGiven,
    StudyFetchFilterArgs,
    StudyFilters,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from viewerkit.client import Client

__all__ = [
    "fetch_studies",
    "fetch_studies_arrow",
    "study_partitions",
    "retrieve_studies",
    "retrieve_studies_arrow",
    "fetch_active",
    "fetch_new_studies",
    "ActiveRead",
    "CLOSED_PARTITIONS",
    "NEW_STUDY_MARGIN",
]


#: The partitions of the closed studies (complete x severity, not cancelled; cancelled):
#: where a study that left the open list is.
CLOSED_PARTITIONS: tuple[StudyFilters, ...] = (
    *(
        StudyFilters(study_viewer_status="complete", is_cancelled=False, severity=severity)
        for severity in SEVERITIES
    ),
    StudyFilters(is_cancelled=True),
)

#: Active reads page the unfiltered list back to this long before the newest cached study,
#: so a study committed with a slightly older createdAt than one already seen is not missed.
NEW_STUDY_MARGIN = timedelta(minutes=10)

#: Estimated cost of one list page (100 studies) in single-study retrieves.
_PAGE_COST = 3.0


def study_partitions(filters: StudyFilters | Mapping[str, Any]) -> list[dict[str, Any]]:
    """Disjoint single-value filter sets that together select exactly what ``filters``
    selects (see ``StudyFilters.partitions``), as ``list_studies`` keyword arguments.

    ``filters`` is a ``StudyFilters`` or its keyword arguments (``NOT_GIVEN`` = off). Each
    dimension the caller did not fix (severity, viewer status, cancelled) is split into its
    values, and each given several values into those.

    >>> [p["is_cancelled"] for p in study_partitions({"severity": "high",
    ...                                               "study_viewer_status": "complete"})]
    [False, True]
    """
    if not isinstance(filters, StudyFilters):
        filters = StudyFilters.of(None, {k: v for k, v in filters.items() if v is not NOT_GIVEN})
    return [part.given() for part in filters.partitions()]


# --- page chains ------------------------------------------------------------------------------


@dataclass
class _Chain:
    """One partition's cursor chain; it ends with the list, or with the first page that
    reaches back past ``down_to`` (a created_at)."""

    order: int
    filters: StudyFilters
    down_to: datetime | None = None
    cursor: str | NotGiven = NOT_GIVEN
    pages: int = 0
    pages_read: list[pa.StructArray] = field(default_factory=list)
    trail: CursorTrail = field(default_factory=lambda: CursorTrail("list_studies"))

    def __hash__(self) -> int:
        return self.order


def _read_page(client: Client, chain: _Chain) -> tuple[pa.StructArray, str | None, bool]:
    body = client.list_studies_raw(chain.filters, limit=MAX_PAGE_LIMIT, cursor=chain.cursor)
    return read_page(body)


def _page_chains(
    client: Client,
    partitions: Sequence[StudyFilters],
    *,
    workers: int,
    progress: Progress,
    down_to: datetime | None = None,
    desc: str = "fetching studies",
) -> list[pa.StructArray]:
    """Page every partition's chain, at most ``workers`` pages in flight; the wire pages of
    all chains. When every worker is busy, the chain with the most pages done goes first,
    so the largest partition never waits for a slot."""
    chains = [_Chain(order, filters, down_to) for order, filters in enumerate(partitions)]
    workers = max(1, min(workers, len(chains)))
    with Runner(workers, progress=progress, desc=desc, unit="studies", count_tasks=False) as runner:
        for chain in chains:
            runner.submit(chain, _read_page, client, chain, priority=-chain.order)
        for outcome in runner.outcomes():
            chain = outcome.key
            assert outcome.result is not None
            studies, cursor, has_more = outcome.result
            chain.pages_read.append(studies)
            chain.pages += 1
            runner.advance(len(studies))
            next_cursor = chain.trail.follow(cursor, has_more, len(studies))
            if next_cursor is None:
                continue
            if chain.down_to is not None:
                # an empty page that says there is more is followed (the trail refuses a
                # chain of them): stopping would miss what the next pages hold
                oldest = oldest_created_at(studies)
                if oldest is not None and oldest < chain.down_to:
                    continue
            chain.cursor = next_cursor
            runner.submit(
                chain, _read_page, client, chain, priority=chain.pages * len(chains) - chain.order
            )
    return [page for chain in chains for page in chain.pages_read]


def _workers(client: Client, concurrency: int) -> int:
    return max(1, min(concurrency, getattr(client, "max_concurrency", concurrency)))


# --- the fetch --------------------------------------------------------------------------------


def fetch_studies_arrow(
    client: Client,
    filters: StudyFilters | None = None,
    /,
    *,
    concurrency: int = 8,
    progress: Progress = True,
    partitioned: bool = True,
    problems: ResponseProblems | None = None,
    metadata: MetadataShape = "columns",
    **filter_args: Unpack[StudyFetchFilterArgs],
) -> pa.Table:
    """Every study matching the filters as the study table (``STUDY_SCHEMA`` + ``meta.*``).

    Filters are those of ``Client.list_studies`` (keywords or one ``StudyFilters``; ``None``
    for ``assigned_to`` / ``express_customer_id`` selects studies with none), and severity,
    viewer status and cancelled may take several values (``severity=["stat", "high"]``);
    bad values raise ``ValidationError`` before any request. ``concurrency`` caps pages in flight (and never exceeds the client's
    ``max_concurrency``); ``partitioned=False`` pages the filter as one sequential chain.
    ``progress`` shows a tqdm bar of studies fetched. ``metadata``: ``"columns"`` (default,
    one ``meta.<key>`` string column per key; warns ``ManyMetadataKeysWarning`` past
    ``schema.MANY_METADATA_KEYS`` keys) or ``"map"`` (one ``metadata`` map column: a stable
    schema for free-form keys, null and ``{}`` apart; see ``viewerkit.frame``).

    What is guaranteed: every study that matches the filters and does not change while the
    fetch runs is in the table once, in its state as read. A study changed while the fetch
    runs is there in its newest state read, or, if the change moved it into a partition the
    fetch had already paged past (a severity, status or cancellation change), it may be
    missing; nothing compares the result with an earlier one. ``StudyCache.refresh``
    (full) retrieves every cached study a read missed, so it records such a move as a
    change, never as a deletion.

    A value outside the contract (a time that is not a time ...) raises one
    ``ResponseValidationError`` listing every such value of the whole fetch; with
    ``problems`` (a ``viewerkit.frame.ResponseProblems``) they are noted there instead, for
    a caller that reads more and raises once.

    Ctrl-C cancels the pages not yet sent,
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
    chosen = StudyFilters.of(filters, filter_args)
    _check_concurrency(concurrency)
    check_metadata_shape(metadata)
    # one chain per partition; unpartitioned, still one per value of a filter given several
    partitions = chosen.partitions() if partitioned else chosen.partitions(split=())
    pages = _page_chains(
        client, partitions, workers=_workers(client, concurrency), progress=progress
    )
    # each page was only parsed to wire Study structs; flatten them all at once
    table = flatten_studies(pages, problems=problems, metadata=metadata)
    return newest_per_study(table).combine_chunks()


def _concurrency_cases(concurrency: object) -> list[dict[str, Any]]:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        return [{"field": "concurrency", "value": concurrency, "reason": Reason.OUT_OF_RANGE,
                 "detail": "a whole number, 1 or more"}]
    return []


def _check_concurrency(concurrency: object) -> None:
    cases = _concurrency_cases(concurrency)
    if cases:
        raise ValidationError.from_cases("bad fetch options", cases)


def fetch_studies(
    client: Client,
    filters: StudyFilters | None = None,
    /,
    *,
    concurrency: int = 8,
    progress: Progress = True,
    partitioned: bool = True,
    compact: bool = False,
    metadata: MetadataShape = "columns",
    **filter_args: Unpack[StudyFetchFilterArgs],
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
      field assigned_to: must be usr_ + 32 lowercase hex, or None (null on the command line) for none (got 'bob')
    """
    return to_pandas(
        fetch_studies_arrow(
            client,
            StudyFilters.of(filters, filter_args),
            concurrency=concurrency,
            progress=progress,
            partitioned=partitioned,
            metadata=metadata,
        ),
        compact=compact,
    )


# --- given studies ----------------------------------------------------------------------------


def retrieve_studies_arrow(
    client: Client,
    study_ids: str | Iterable[str] | pa.Array | pa.ChunkedArray | pd.Series,
    *,
    known: pa.Table | None = None,
    partitions: Sequence[StudyFilters] | None = None,
    concurrency: int = 8,
    progress: Progress = True,
    problems: ResponseProblems | None = None,
    metadata: MetadataShape = "columns",
    unread: dict[str, ApiError] | None = None,
) -> pa.Table:
    """The current state of the given studies, as the study table (list order), read by the
    cheapest path. A study the API answers 404 for (unknown, or gone) is absent from the
    result; every other failure raises (``viewerkit.errors.ApiError``), unless ``unread`` is
    given: then a study whose single retrieve still fails after the client's retries (a 5xx,
    a lost connection, a 4xx other than 401) is left out and its error put in ``unread``
    (study ID -> error), so that one bad study does not sink a read of thousands (the bulk
    engine reports such a row as failed, not sent). A refused key (401, 403) always raises.
    ``metadata``: the table's metadata shape, as in :func:`fetch_studies_arrow`.

    Without ``known`` each study is retrieved singly, ``concurrency`` at a time. With
    ``known``, a study table holding the last known state of these studies and of the
    studies around them (e.g. the cache), a cost model may choose to page ``partitions``
    (default: every partition of the list; the active refresh passes
    :data:`CLOSED_PARTITIONS`), newest first, down to the ``created_at`` where one more page
    costs more than the single retrieves it saves (a page counted as ``_PAGE_COST``
    retrieves); the studies paging did not find are then retrieved singly. So the result is
    complete whichever path is taken.

    >>> from viewerkit import Client
    >>> with Client(api_key="sk-x", base_url="http://127.0.0.1:9") as client:
    ...     retrieve_studies_arrow(client, []).num_rows
    0
    """
    ids = pc.unique(_study_ids(study_ids, concurrency))
    check_metadata_shape(metadata)
    if len(ids) == 0:
        return empty_studies(metadata)
    collected = problems if problems is not None else ResponseProblems()
    workers = _workers(client, concurrency)
    tables: list[pa.Table] = []
    remaining = ids
    if known is not None:
        chains = list(partitions) if partitions is not None else StudyFilters().partitions()
        cutoff = _paging_cutoff(known, ids, chains, workers)
        if cutoff is not None:
            pages = _page_chains(
                client, chains, workers=workers, progress=progress, down_to=cutoff,
                desc="paging recent studies",
            )
            paged = flatten_studies(pages, problems=collected, metadata=metadata)
            found = newest_per_study(select_studies(paged, ids))
            tables.append(found)
            remaining = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=found.column("study_id"))))
    tables.append(
        _retrieve_each(client, remaining.to_pylist(), workers, progress, collected, metadata, unread)
    )
    if problems is None:  # this read is the whole read: its values outside the contract, once
        collected.raise_if_any("retrieve_studies")
    return newest_per_study(concat_studies(tables))


def retrieve_studies(
    client: Client,
    study_ids: str | Iterable[str] | pa.Array | pa.ChunkedArray | pd.Series,
    *,
    known: pa.Table | pd.DataFrame | None = None,
    partitions: Sequence[StudyFilters] | None = None,
    concurrency: int = 8,
    progress: Progress = True,
    compact: bool = False,
    metadata: MetadataShape = "columns",
) -> pd.DataFrame:
    """The current state of the given studies as a DataFrame (``to_pandas`` of
    :func:`retrieve_studies_arrow`, see there; dtypes as ``fetch_studies``). A study the API
    answers 404 for is absent.

    >>> from viewerkit import Client
    >>> with Client(api_key="sk-x", base_url="http://127.0.0.1:9") as client:
    ...     len(retrieve_studies(client, []))
    0
    """
    if isinstance(known, pd.DataFrame):
        known = from_pandas(known)
    return to_pandas(
        retrieve_studies_arrow(
            client, study_ids, known=known, partitions=partitions, concurrency=concurrency,
            progress=progress, metadata=metadata,
        ),
        compact=compact,
    )


def _study_ids(study_ids: object, concurrency: object) -> pa.Array:
    """The study IDs to read as one string array, every bad one (and a bad concurrency)
    reported at once with its position, before anything is sent. One ID may be given
    alone."""
    if isinstance(study_ids, str):
        study_ids = [study_ids]
    if isinstance(study_ids, pa.ChunkedArray):
        study_ids = study_ids.combine_chunks()
    if isinstance(study_ids, pd.Series):
        study_ids = study_ids.to_list()
    if not isinstance(study_ids, pa.Array):
        study_ids = list(study_ids) if isinstance(study_ids, Iterable) else [study_ids]
    rule = RULES["study_id"]
    failures = [f.case() for f in rule.check_column(study_ids, "study_ids", nullable=False)]
    failures += _concurrency_cases(concurrency)
    if failures:
        raise ValidationError.from_cases("retrieve_studies", failures)
    return study_ids if isinstance(study_ids, pa.Array) else pa.array(study_ids, pa.string())


def _retrieve_each(
    client: Client,
    study_ids: list[str],
    workers: int,
    progress: Progress,
    problems: ResponseProblems | None = None,
    metadata: MetadataShape = "columns",
    unread: dict[str, ApiError] | None = None,
) -> pa.Table:
    """Retrieve studies one by one, concurrently; those answering 404 are left out, and
    with ``unread`` those that keep failing (see :func:`retrieve_studies_arrow`)."""
    if not study_ids:
        return empty_studies(metadata)

    def retrieve(study_id: str) -> dict[str, Any] | None:
        try:
            return client.retrieve_study(study_id)
        except NotFound:
            return None

    outcomes = run_all(
        retrieve, study_ids, workers=min(workers, len(study_ids)), progress=progress,
        desc="retrieving studies", unit="study",
        errors="raise" if unread is None else "collect", fatal=(AuthenticationError,),
    )
    for outcome in outcomes:
        error = outcome.error
        if error is not None:
            refused = isinstance(error, ApiStatusError) and error.status_code == 403  # the key may not read
            if unread is None or refused or not isinstance(error, ApiError):
                raise error
            unread[str(outcome.key)] = error
    found = [outcome.result for outcome in outcomes if outcome.result is not None]
    if not found:
        return empty_studies(metadata)
    return studies_to_arrow(found, call="retrieve_study", problems=problems, metadata=metadata)


def _partition_mask(known: pa.Table, filters: StudyFilters) -> pa.Array:
    """Which rows of ``known`` a partition's filters select (severity, status, cancelled)."""
    mask = pa.repeat(pa.scalar(True), len(known))
    given = filters.given()
    for name in ("severity", "study_viewer_status"):
        if name in given:
            same = pc.equal(known.column(name).cast(pa.string()), given[name])
            mask = pc.and_(mask, pc.fill_null(same, False))
    if "is_cancelled" in given:
        cancelled = pc.fill_null(known.column("is_cancelled"), False)
        mask = pc.and_(mask, cancelled if given["is_cancelled"] else pc.invert(cancelled))
    return mask


def _paging_cutoff(
    known: pa.Table, ids: pa.Array, partitions: Sequence[StudyFilters], workers: int
) -> datetime | None:
    """The created_at down to which paging ``partitions`` is cheaper than retrieving, or
    None to retrieve every study.

    For each candidate cutoff (a candidate's created_at, newest first): the page rounds are
    the longest chain's pages to reach it (or all pages over the workers, if more), times
    the page cost; the retrieve rounds are the candidates older than it over the workers.
    Candidates not in ``known`` have no created_at and are always retrieved.
    """
    candidates = select_studies(known, ids).column("created_at")
    created = np.sort(candidates.cast(pa.int64()).fill_null(0).to_numpy())[::-1]  # newest first
    n = len(created)
    if n == 0:
        return None
    known_created = known.column("created_at").cast(pa.int64()).fill_null(0)
    # studies each chain must page through to reach each candidate's created_at
    pages = []
    for filters in partitions:
        values = np.sort(known_created.filter(_partition_mask(known, filters)).to_numpy())
        pages.append(np.ceil((len(values) - np.searchsorted(values, created, "left") + 1) / 100.0))
    per_chain = np.vstack(pages)
    page_rounds = np.maximum(per_chain.max(axis=0), np.ceil(per_chain.sum(axis=0) / workers))
    retrieve_rounds = np.ceil((n - np.arange(1, n + 1)) / workers)
    costs = page_rounds * _PAGE_COST + retrieve_rounds
    best = int(np.argmin(costs))
    if costs[best] >= np.ceil(n / workers):
        return None
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=int(created[best]))


# --- active refresh reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveRead:
    """What :func:`fetch_active` read."""

    #: The re-read studies (open now, new, or closed since the cached state), one row each.
    studies: pa.Table
    #: Cached studies the API answered 404 for.
    gone_ids: pa.Array


def fetch_new_studies(
    client: Client,
    since: datetime,
    *,
    progress: Progress = False,
    problems: ResponseProblems | None = None,
    metadata: MetadataShape = "columns",
) -> pa.Table:
    """Studies created since ``since`` (UTC): the unfiltered list, newest first, page by
    page until a page reaches back past ``since`` (so a little more than asked for), as a
    study table of the given metadata shape.

    >>> from viewerkit import Client
    >>> with Client(api_key="sk-x", base_url="http://127.0.0.1:9", max_retries=0) as client:
    ...     fetch_new_studies(client, datetime.now(timezone.utc))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    viewerkit.errors.ApiConnectionError: list_studies: no answer from http://127.0.0.1:9 (...)
    """
    pages = _page_chains(
        client, [StudyFilters()], workers=1, progress=progress, down_to=since,
        desc="reading new studies",
    )
    return newest_per_study(flatten_studies(pages, problems=problems, metadata=metadata))


def fetch_active(
    client: Client, cached: pa.Table, *, concurrency: int = 8, progress: Progress = True
) -> ActiveRead:
    """What an active refresh of ``cached`` (a study table) must re-read: the open studies
    (not cancelled, ``incomplete``), the new ones (since :data:`NEW_STUDY_MARGIN` before
    the newest cached ``created_at``), and the current state of every cached open study the
    open list no longer returns (completed or cancelled since: :func:`retrieve_studies`
    over :data:`CLOSED_PARTITIONS`, or gone: 404). See ``StudyCache.refresh`` for what this
    cannot see. Values outside the contract in any of these reads raise one
    ``ResponseValidationError`` at the end. The read has ``cached``'s metadata shape.
    """
    problems = ResponseProblems()
    metadata = metadata_shape(cached)
    open_now = fetch_studies_arrow(
        client,
        is_cancelled=False,
        study_viewer_status="incomplete",
        concurrency=concurrency,
        progress=progress,
        problems=problems,
        metadata=metadata,
    )
    fresh = [open_now]
    newest = pc.max(cached.column("created_at")).as_py() if len(cached) else None
    if newest is not None:
        since = newest - NEW_STUDY_MARGIN
        fresh.append(
            fetch_new_studies(client, since, progress=progress, problems=problems, metadata=metadata)
        )
    seen = pa.concat_arrays([t.column("study_id").combine_chunks() for t in fresh])
    # cached open studies the open list no longer returns: completed or cancelled since
    was_open = pc.and_(
        pc.invert(pc.fill_null(cached.column("is_cancelled"), False)),
        pc.equal(cached.column("study_viewer_status").cast(pa.string()), "incomplete"),
    )
    was_open_ids = cached.column("study_id").filter(was_open).combine_chunks()
    closed_ids = pc.filter(was_open_ids, pc.invert(pc.is_in(was_open_ids, value_set=seen)))
    closed = retrieve_studies_arrow(
        client, closed_ids, known=cached, partitions=CLOSED_PARTITIONS,
        concurrency=concurrency, progress=progress, problems=problems, metadata=metadata,
    )
    problems.raise_if_any("refresh")
    gone = pc.filter(closed_ids, pc.invert(pc.is_in(closed_ids, value_set=closed.column("study_id"))))
    fresh.append(closed)
    return ActiveRead(newest_per_study(concat_studies(fresh)), gone)
