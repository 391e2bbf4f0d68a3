"""The study table: API JSON bytes -> Arrow -> pandas, and a row back to an API body.

This is the one flattening every path uses (fetch, cache, bulk, triage). A list page goes
from its response bytes to an Arrow table with ``orjson`` plus one C++ conversion
(``pa.array`` over the wire ``Study`` struct type); no per-study Python objects are built
beyond what JSON parsing needs, and ``pd.json_normalize`` is never used.

Column rules (see ``viewerkit.schema.STUDY_SCHEMA``): the four references (``assignedTo``,
``createdByUser``, ``createdByApiKey``, ``expressCustomer``) become prefixed columns, and an
absent or null reference gives nulls in all its columns; ``metadata`` becomes one string column
``meta.<key>`` per key seen (exact spelling, sorted after the fixed columns), null where a
study lacks the key (a null map and ``{}`` both give nulls). For servers whose metadata keys
are free-form, the ``metadata="map"`` shape keeps all of it in one ``metadata`` column of
type ``map<string, string>`` instead: a stable schema whatever the keys, null and ``{}``
kept apart, and every operation here (conform, concat, compare, to/from pandas, the API
body) takes either shape; in pandas it is a column of dicts (``None`` for null). The
``columns`` shape warns (``ManyMetadataKeysWarning``) past ``schema.MANY_METADATA_KEYS``
distinct keys. Timestamps are ``timestamp[ms, UTC]``; ``severity`` and
``study_viewer_status`` are dictionary columns over their FIXED dictionaries, so every table,
whatever rows it holds, has identical types.

>>> body = b'{"studies": [{"studyId": "stu_' + b'a' * 32 + b'", "studyInstanceUid": "1.2",'
>>> body += b' "severity": "stat", "metadata": {"Site Name": "North"}}],'
>>> body += b' "cursor": null, "hasMore": false}'
>>> table, cursor, has_more = page_to_arrow(body)
>>> table.num_rows, cursor, has_more, table.column_names[-1]
(1, None, False, 'meta.Site Name')
>>> to_pandas(table)["severity"].cat.categories.tolist()
['normal', 'high', 'stat']
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from viewerkit.errors import ApiError, Reason, ResponseValidationError, ValidationError
from viewerkit.schema import (
    CREATE_FIELDS,
    MANY_METADATA_KEYS,
    META_PREFIX,
    METADATA_COLUMN,
    METADATA_MAP_TYPE,
    METADATA_SHAPES,
    REFERENCE_USER_FIELDS,
    RULES,
    SEVERITIES,
    SEVERITY_TYPE,
    STUDY_SCHEMA,
    UPDATE_FIELDS,
    VIEWER_STATUS_TYPE,
    VIEWER_STATUSES,
    MetadataShape,
    study_table_failures,
)

__all__ = [
    "page_to_arrow",
    "read_page",
    "flatten_studies",
    "studies_to_arrow",
    "conform",
    "concat_studies",
    "empty_studies",
    "to_pandas",
    "from_pandas",
    "study_to_api_body",
    "parse_times",
    "ResponseProblems",
    "ManyMetadataKeysWarning",
    "metadata_shape",
    "check_metadata_shape",
    "metadata_table",
]

_TIMESTAMP: Final = pa.timestamp("ms", tz="UTC")
_USER_TYPE: Final = pa.struct([(wire, pa.string()) for _, wire in REFERENCE_USER_FIELDS])
_API_KEY_TYPE: Final = pa.struct(
    [("apiKeyId", pa.string()), ("description", pa.string()), ("isViewerEnabled", pa.bool_())]
)
_CUSTOMER_TYPE: Final = pa.struct(
    [("expressCustomerId", pa.string()), ("expressCustomerName", pa.string())]
)
_METADATA_TYPE: Final = METADATA_MAP_TYPE

#: The wire ``Study`` as an Arrow struct; keys a study lacks become nulls, unknown keys are ignored.
_WIRE_STUDY_TYPE: Final = pa.struct(
    [
        ("studyId", pa.string()),
        ("studyInstanceUid", pa.string()),
        ("studyDescription", pa.string()),
        ("severity", pa.string()),
        ("studyViewerStatus", pa.string()),
        ("isCancelled", pa.bool_()),
        ("cancelledAt", pa.string()),
        ("createdAt", pa.string()),
        ("updatedAt", pa.string()),
        ("assignedTo", _USER_TYPE),
        ("createdByUser", _USER_TYPE),
        ("createdByApiKey", _API_KEY_TYPE),
        ("expressCustomer", _CUSTOMER_TYPE),
        ("metadata", _METADATA_TYPE),
    ]
)

# wire path (top-level field, nested field or None) -> study table column
_SCALAR_COLUMNS: Final = (
    ("studyId", "study_id"),
    ("studyInstanceUid", "study_instance_uid"),
    ("studyDescription", "study_description"),
    ("severity", "severity"),
    ("studyViewerStatus", "study_viewer_status"),
    ("isCancelled", "is_cancelled"),
    ("createdAt", "created_at"),
    ("updatedAt", "updated_at"),
    ("cancelledAt", "cancelled_at"),
)
_REFERENCE_COLUMNS: Final = (
    ("assignedTo", [(wire, f"assigned_to_{suffix}") for suffix, wire in REFERENCE_USER_FIELDS]),
    (
        "createdByUser",
        [(wire, f"created_by_user_{suffix}") for suffix, wire in REFERENCE_USER_FIELDS],
    ),
    (
        "createdByApiKey",
        [
            ("apiKeyId", "created_by_api_key_id"),
            ("description", "created_by_api_key_description"),
            ("isViewerEnabled", "created_by_api_key_is_viewer_enabled"),
        ],
    ),
    (
        "expressCustomer",
        [
            ("expressCustomerId", "express_customer_id"),
            ("expressCustomerName", "express_customer_name"),
        ],
    ),
)
_TIMESTAMP_COLUMNS: Final = ("created_at", "updated_at", "cancelled_at")
_FIXED_DICTIONARIES: Final = {
    "severity": (SEVERITY_TYPE, pa.array(SEVERITIES, pa.string())),
    "study_viewer_status": (VIEWER_STATUS_TYPE, pa.array(VIEWER_STATUSES, pa.string())),
}


def page_to_arrow(body: bytes) -> tuple[pa.Table, str | None, bool]:
    """One list page's JSON body -> (studies table, next cursor, has more).

    The table is conformed (``STUDY_SCHEMA`` then sorted ``meta.*`` columns). Same as
    ``read_page`` then ``flatten_studies``.

    >>> table, cursor, more = page_to_arrow(b'{"studies": [], "cursor": null, "hasMore": false}')
    >>> table.num_rows, table.schema.equals(STUDY_SCHEMA), cursor, more
    (0, True, None, False)
    """
    wire, cursor, has_more = read_page(body)
    return flatten_studies(wire), cursor, has_more


def read_page(body: bytes) -> tuple[pa.StructArray, str | None, bool]:
    """One list page's JSON body -> (its studies as an Arrow array of the wire ``Study``
    struct, next cursor, has more). The cheap per-page step: ``orjson`` and one C++
    conversion; many pages' arrays are flattened at once by ``flatten_studies``.

    >>> wire, cursor, more = read_page(b'{"studies": [{"studyId": "x"}], "cursor": "c", "hasMore": true}')
    >>> len(wire), cursor, more
    (1, 'c', True)
    """
    try:
        page = orjson.loads(body)
        studies = page["studies"]
        cursor = page.get("cursor")
        has_more = bool(page.get("hasMore", False))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ApiError(
            f"the list page is not a Page object ({type(exc).__name__})", call="list_studies"
        ) from None
    if not isinstance(studies, list) or not (cursor is None or isinstance(cursor, str)):
        raise ApiError("the list page is not a Page object", call="list_studies")
    return _wire_array(studies, "list_studies"), cursor, has_more


def _wire_array(studies: list[dict[str, Any]], call: str) -> pa.StructArray:
    try:
        return pa.array(studies, type=_WIRE_STUDY_TYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ApiError(f"a study does not have the Study shape: {exc}", call=call) from None


def studies_to_arrow(
    studies: list[dict[str, Any]],
    *,
    call: str = "retrieve_study",
    problems: ResponseProblems | None = None,
    metadata: MetadataShape = "columns",
) -> pa.Table:
    """Already-parsed wire ``Study`` dicts (e.g. single retrieves) -> a conformed study table.
    ``call`` names the API call they came from in errors about their values; ``problems``
    and ``metadata`` (the table's metadata shape) as in :func:`flatten_studies`.

    >>> studies_to_arrow([{"studyId": "stu_" + "0" * 32, "studyInstanceUid": "1.2",
    ...                    "assignedTo": None}]).column("assigned_to_email").to_pylist()
    [None]
    """
    return flatten_studies(_wire_array(studies, call), call=call, problems=problems, metadata=metadata)


class ResponseProblems:
    """The values outside the contract found over one whole read that flattens several
    times (e.g. paged partitions, then single retrieves), to raise them once at its end.

    Give the same instance to every :func:`flatten_studies` / :func:`studies_to_arrow` of
    the read: those then leave a time that is not a time null and note it here instead of
    raising; call :meth:`raise_if_any` when the read is done. A value seen twice (a study
    read in two partitions) is reported once.

    >>> problems = ResponseProblems()
    >>> table = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "createdAt": "teatime"}],
    ...                          problems=problems)
    >>> table.column("created_at").to_pylist(), len(problems)
    ([None], 1)
    >>> problems.raise_if_any("fetch_studies")
    Traceback (most recent call last):
    ...
    viewerkit.errors.ResponseValidationError: fetch_studies stu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: 1 value outside the contract
      study stu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, field created_at: must be an ISO 8601 / RFC 3339 time (got 'teatime')
    """

    def __init__(self) -> None:
        self._cases: list[dict[str, Any]] = []
        self._seen: set[tuple[Any, str, Any]] = set()

    def __len__(self) -> int:
        return len(self._cases)

    def __repr__(self) -> str:
        return f"ResponseProblems({len(self._cases)} values)"

    def add(self, cases: list[dict[str, Any]]) -> None:
        """Note cases (dicts as in ``ResponseValidationError.from_cases``)."""
        for case in cases:
            key = (case["study_id"], case["field"], case["value"])
            if key not in self._seen:
                self._seen.add(key)
                self._cases.append(case)

    def raise_if_any(self, call: str) -> None:
        """Raise one ``ResponseValidationError`` (naming ``call``) listing every case noted;
        nothing when there is none."""
        if self._cases:
            raise ResponseValidationError.from_cases(call, self._cases)


def flatten_studies(
    wire: pa.StructArray | pa.ChunkedArray | list[pa.StructArray],
    *,
    call: str = "list_studies",
    problems: ResponseProblems | None = None,
    metadata: MetadataShape = "columns",
) -> pa.Table:
    """Wire ``Study`` struct arrays (from ``read_page``; one, chunked, or a list of them)
    -> one conformed study table, in their order.

    Times are read by :func:`parse_times` (every ISO 8601 / RFC 3339 spelling, to the UTC
    millisecond). The times that are not times, over all the arrays, raise ONE
    ``ResponseValidationError`` naming ``call`` whose ``failure_cases`` list each study,
    field and value; with ``problems`` (a :class:`ResponseProblems` shared by a read that
    flattens several times) they are noted there and left null instead, for the read to
    raise once at its end. An unknown severity or viewer status is an ``ApiError`` naming
    ``call`` and the study. ``metadata``: the table's metadata shape (module docstring);
    ``"columns"`` warns ``ManyMetadataKeysWarning`` past ``MANY_METADATA_KEYS`` keys.

    >>> a, _, _ = read_page(b'{"studies": [{"studyId": "a", "metadata": {"k": "1"}}]}')
    >>> b, _, _ = read_page(b'{"studies": [{"studyId": "b"}]}')
    >>> flatten_studies([a, b]).column("meta.k").to_pylist()
    ['1', None]
    """
    if isinstance(wire, pa.ChunkedArray):
        wire = wire.chunks
    if isinstance(wire, list):
        wire = pa.concat_arrays(wire) if wire else pa.array([], type=_WIRE_STUDY_TYPE)
    # StructArray.flatten merges the parent's validity into the children, so a null study
    # or a null reference gives nulls in every column taken from it.
    fields = dict(zip((f.name for f in _WIRE_STUDY_TYPE), wire.flatten(), strict=True))
    columns: dict[str, pa.Array] = {name: fields[key] for key, name in _SCALAR_COLUMNS}
    for key, parts in _REFERENCE_COLUMNS:
        reference: pa.StructArray = fields[key]
        children = dict(zip((f.name for f in reference.type), reference.flatten(), strict=True))
        for wire_name, name in parts:
            columns[name] = children[wire_name]
    cases: list[dict[str, Any]] = []
    for name in _TIMESTAMP_COLUMNS:
        text = columns[name]
        columns[name], bad = parse_times(text)
        if len(bad):
            at = pa.array(bad)
            cases += [
                {"study_id": study_id, "field": name, "value": value, "reason": Reason.NOT_ISO_TIME,
                 "row": row}
                for row, study_id, value in zip(
                    bad.tolist(), columns["study_id"].take(at).to_pylist(), text.take(at).to_pylist(),
                    strict=True,
                )
            ]
    if cases:
        cases.sort(key=lambda case: case["row"])  # in the order the studies were read
        for case in cases:
            del case["row"]
        if problems is None:
            raise ResponseValidationError.from_cases(call, cases)
        problems.add(cases)
    for name, (_, dictionary) in _FIXED_DICTIONARIES.items():
        values = columns[name]
        unknown = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=dictionary)))
        if pc.any(unknown).as_py():
            row = pc.index(unknown, True).as_py()
            raise ApiError(
                f"unknown {name} {values[row].as_py()!r}: expected one of "
                f"{', '.join(dictionary.to_pylist())}",
                call=call,
                study=columns["study_id"][row].as_py(),
            )
    check_metadata_shape(metadata)
    if metadata == "map":
        columns[METADATA_COLUMN] = fields["metadata"]
    else:
        columns.update(_metadata_columns(fields["metadata"]))
        warn_many_metadata_keys(len(columns) - len(STUDY_SCHEMA))
    return conform(pa.table(columns))


class ManyMetadataKeysWarning(UserWarning):
    """The study table grew more ``meta.*`` columns than ``schema.MANY_METADATA_KEYS``:
    memory and time grow with rows x keys; ``metadata="map"`` keeps them in one column."""


def warn_many_metadata_keys(keys: int) -> None:
    """Warn (``ManyMetadataKeysWarning``) when a ``columns``-shaped table holds more than
    ``MANY_METADATA_KEYS`` metadata keys."""
    if keys > MANY_METADATA_KEYS:
        warnings.warn(
            f"the studies hold {keys:,} distinct metadata keys, one column each; for free-form "
            'keys pass metadata="map" (one map column, a stable schema)',
            ManyMetadataKeysWarning,
            stacklevel=3,
        )


def metadata_table(studies: pd.DataFrame | pa.Table) -> pd.DataFrame:
    """The studies' metadata as a DataFrame with one column per key under its plain name
    (``site``, not ``meta.site``), on the same index as ``studies`` (a DataFrame) or
    0..n-1 (an Arrow table); strings, missing where a study lacks the key. Either shape
    (``meta.*`` columns or the ``metadata`` map) gives the same table, so ``query`` and
    attribute access work without backticks.

    >>> df = to_pandas(studies_to_arrow([
    ...     {"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1", "metadata": {"site": "North"}},
    ...     {"studyId": "stu_" + "b" * 32, "studyInstanceUid": "2", "metadata": {"site": "South"}}]))
    >>> df.query("`meta.site` == 'North'")["study_instance_uid"].tolist()
    ['1']
    >>> df[metadata_table(df).site == "South"]["study_instance_uid"].tolist()
    ['2']
    """
    if isinstance(studies, pa.Table):
        index: pd.Index = pd.RangeIndex(studies.num_rows)
        names = studies.column_names
        if METADATA_COLUMN in names:
            maps = studies.column(METADATA_COLUMN).combine_chunks()
        else:
            meta = [n for n in names if n.startswith(META_PREFIX)]
            return pd.DataFrame(
                {n[len(META_PREFIX):]: studies.column(n).to_pandas() for n in meta}, index=index
            )
    else:
        index = studies.index
        if METADATA_COLUMN in studies.columns:
            maps = pa.array(studies[METADATA_COLUMN].tolist(), METADATA_MAP_TYPE, from_pandas=True)
        else:
            meta = [c for c in studies.columns if isinstance(c, str) and c.startswith(META_PREFIX)]
            table = studies[meta].copy()
            table.columns = [c[len(META_PREFIX):] for c in meta]
            return table
    columns = _metadata_columns(maps)
    expanded = pa.table({name[len(META_PREFIX):]: columns[name] for name in sorted(columns)})
    frame: pd.DataFrame = expanded.to_pandas() if columns else pd.DataFrame(index=range(len(maps)))
    frame.index = index
    return frame


def check_metadata_shape(metadata: object) -> None:
    """Refuse a metadata shape other than ``"columns"`` or ``"map"`` (``ValidationError``,
    field ``metadata``).

    >>> check_metadata_shape("map")
    """
    if metadata not in METADATA_SHAPES:
        raise ValidationError.one(
            "metadata", "metadata", metadata, Reason.NOT_A_CHOICE,
            detail='"columns" (one meta.<key> column per key) or "map" (one map column)',
        )


def metadata_shape(table: pa.Table | pd.DataFrame) -> MetadataShape:
    """The metadata shape of a study table: ``"map"`` when it has the ``metadata`` column,
    else ``"columns"`` (a table with no metadata at all is ``columns``-shaped).

    >>> metadata_shape(empty_studies())
    'columns'
    """
    names = table.column_names if isinstance(table, pa.Table) else list(table.columns)
    return "map" if METADATA_COLUMN in names else "columns"


# --- times: ISO 8601 / RFC 3339 text -> timestamp[ms, UTC] -------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS: Final = timedelta(milliseconds=1)
# a block of rows this small that fails the vectorised cast is read row by row
_LEAF_ROWS: Final = 16
# the forms Arrow's cast reads: up to 9 fraction digits, Z or an offset
_REGULAR: Final = r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,9})?(?:Z|[+-]\d\d(?::?\d\d)?)$"
_REGULAR_RE: Final = re.compile(_REGULAR)
# fraction digits past milliseconds are cut (the study table holds ms), a comma becomes a dot
_FRACTION: Final = (r"(:\d\d)[.,](\d{1,3})\d*", r"\1.\2")
_LONG_FRACTION: Final = r"(?:\.\d{4}|,\d)"
# a time of day with no zone designator at the end: the contract's times are UTC
_NO_ZONE: Final = r"[T ]\d\d(?::?\d\d(?::?\d\d(?:\.\d+)?)?)?$"
_LEAP_SECOND: Final = re.compile(r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d):60(?:\.\d+)?(.*)$")
# fromisoformat reads an offset's minutes past 59 (``+05:60`` as six hours): not a time
_BAD_OFFSET_MINUTES: Final = re.compile(r"[+-]\d\d:?[6-9]\d(?::?\d\d(?:\.\d+)?)?$")
_NANOS: Final = pa.timestamp("ns", tz="UTC")


def parse_times(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """ISO 8601 / RFC 3339 text -> (``timestamp[ms, UTC]`` array, positions of the values
    that are not a time), vectorised.

    Read: any number of fraction digits (cut, not rounded, to milliseconds: the instant's
    floor), a ``.`` or ``,`` before them; the zone ``Z`` or ``z``, any offset (``+05:30``,
    ``-0800``, ``+05``, ``-00:00``), or none, which means UTC (the contract's times are UTC);
    ``T``, ``t`` or a space between date and time; and every other form Python's
    ``datetime.fromisoformat`` reads (``20261127T163043Z``, ``2026-W48-5``, a date alone:
    its midnight UTC). A leap second ``23:59:60`` (UTC) is read as ``23:59:59.999`` of the
    same day, so the order of times is kept and the day is right; a ``:60`` at any other
    minute is not a time. Surrounding whitespace is not part of a time.

    Vectorised: the form of the first value picks the path. The contract's form
    (``.197Z``) is one C++ cast of the whole array; up to 9 fraction digits with ``Z`` or
    an offset (a .NET server writes 7) one cast at ns and a floor; otherwise the rows in
    those forms take that cast and the others are rewritten by vectorised string kernels
    (upper case, fraction cut to ms, ``Z`` added) and cast. Only the rows in a small block
    that still fails a cast are read one at a time, in Python.
    Nulls stay null and are not reported; a value that is not a time is null in the result
    and its position (``int64``) is in the second array.

    >>> times, bad = parse_times(pa.array(["2026-11-27T16:30:43.1972345Z",
    ...                                    "2026-11-27t22:00:43.1+05:30", None, "yesterday"]))
    >>> [t.isoformat() if t else t for t in times.to_pylist()], bad.tolist()
    (['2026-11-27T16:30:43.197000+00:00', '2026-11-27T16:30:43.100000+00:00', None, None], [3])
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type != pa.string():  # large_string (pandas), dictionary, ...
        values = values.cast(pa.string())
    no_bad = np.empty(0, dtype=np.int64)
    valid = pc.drop_null(values)
    if len(valid) == 0:
        return pa.nulls(len(values), _TIMESTAMP), no_bad
    # a failed cast costs about a microsecond a value: try one only where it should succeed
    first = _REGULAR_RE.match(valid[0].as_py())
    if first:
        # the contract's own form (ms or fewer digits), or up to 9 digits
        casts = [_TIMESTAMP, _NANOS] if len(first.group(1) or ".") <= 4 else [_NANOS]
        for unit in casts:
            try:
                return _floor_ms(pc.cast(values, unit)), no_bad
            except pa.ArrowInvalid:
                pass
    regular = pc.fill_null(pc.match_substring_regex(values, _REGULAR), False).to_numpy(zero_copy_only=False)
    given = pc.is_valid(values).to_numpy(zero_copy_only=False)
    millis = np.zeros(len(values), dtype=np.int64)
    read = np.zeros(len(values), dtype=bool)
    for rows, rewrite in ((np.flatnonzero(regular), False), (np.flatnonzero(given & ~regular), True)):
        if len(rows):
            part = values.take(pa.array(rows))
            _read_blocks(_normal_times(part) if rewrite else part, values, rows, millis, read)
    bad = np.flatnonzero(given & ~read).astype(np.int64)
    return pa.array(millis, type=_TIMESTAMP, mask=~read), bad


def _floor_ms(nanos: pa.Array) -> pa.Array:
    """ns -> ms, the floor (a cast truncates toward zero, wrong before 1970)."""
    if nanos.type == _TIMESTAMP:
        return nanos
    low = pc.min(nanos).as_py()
    if low is None or low >= datetime(1970, 1, 1, tzinfo=timezone.utc):
        return pc.cast(nanos, _TIMESTAMP, safe=False)
    return pc.floor_temporal(nanos, unit="millisecond").cast(_TIMESTAMP)


def _cast_ms(part: pa.Array) -> pa.Array:
    """The vectorised cast of one block: ms, else ns then the floor."""
    try:
        return pc.cast(part, _TIMESTAMP)
    except pa.ArrowInvalid:
        return _floor_ms(pc.cast(part, _NANOS))


def _normal_times(values: pa.Array) -> pa.Array:
    """Spellings Arrow's cast does not read, rewritten vectorised into ones it reads:
    upper case (``t``, ``z``), fraction cut to ms, ``Z`` added where there is no zone."""
    normal = pc.ascii_upper(values)
    if pc.any(pc.match_substring_regex(normal, _LONG_FRACTION)).as_py():
        normal = pc.replace_substring_regex(normal, _FRACTION[0], _FRACTION[1])
    zoneless = pc.fill_null(pc.match_substring_regex(normal, _NO_ZONE), False)
    if pc.any(zoneless).as_py():
        normal = pc.if_else(zoneless, pc.binary_join_element_wise(normal, "Z", ""), normal)
    return normal


def _read_blocks(
    part: pa.Array, values: pa.Array, rows: np.ndarray, millis: np.ndarray, read: np.ndarray
) -> None:
    """Cast ``part`` (the rows ``rows`` of ``values``) into ``millis`` / ``read``, halving
    the blocks that fail until they are small, then reading those rows one at a time."""
    blocks = [(0, len(part))]
    while blocks:
        start, length = blocks.pop()
        try:
            parsed = _cast_ms(part.slice(start, length)).cast(pa.int64())
        except pa.ArrowInvalid:
            if length > _LEAF_ROWS:
                half = length // 2
                blocks += [(start + half, length - half), (start, half)]
                continue
            for at in rows[start : start + length].tolist():
                ms = _one_time_in_ms(values.slice(at, 1))
                if ms is not None:
                    millis[at], read[at] = ms, True
            continue
        where = rows[start : start + length]
        millis[where] = pc.fill_null(parsed, 0).to_numpy(zero_copy_only=False)
        read[where] = pc.is_valid(parsed).to_numpy(zero_copy_only=False)


def _one_time_in_ms(value: pa.Array) -> int | None:
    """One value (a 1-row array) the block casts did not read: rewritten and cast alone,
    else ``_time_in_ms``."""
    normal = _normal_times(value)
    try:
        ms: int | None = _cast_ms(normal).cast(pa.int64())[0].as_py()
        return ms
    except pa.ArrowInvalid:
        text = normal[0].as_py()
        return None if text is None else _time_in_ms(text)


def _time_in_ms(text: str) -> int | None:
    """One normalised time (see ``_normal_times``) that the cast did not read -> ms since
    the epoch (floor), or None when it is not a time: the leap second, else what
    ``datetime.fromisoformat`` reads (naive: UTC)."""
    leap = _LEAP_SECOND.match(text)
    if leap:
        try:
            moment = pc.cast(pa.array([f"{leap.group(1)}:59.999{leap.group(2)}"]), _TIMESTAMP)
        except pa.ArrowInvalid:
            return None
        ms: int = moment.cast(pa.int64())[0].as_py()
        # a leap second is only ever 23:59:60 UTC
        return ms if ms % 86_400_000 == 86_399_999 else None
    if _BAD_OFFSET_MINUTES.search(text):
        return None
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return (parsed - _EPOCH) // _ONE_MS
    except (ValueError, OverflowError):
        return None


def _parse_timestamps(strings: pa.Array) -> pa.Array:
    """Text -> timestamp[ms, UTC] (see ``parse_times``); a value that is not a time raises
    ``pa.ArrowInvalid`` naming the first few (for tables users give, e.g. ``from_pandas``)."""
    times, bad = parse_times(strings)
    if len(bad):
        shown = ", ".join(repr(strings[int(at)].as_py()) for at in bad[:3])
        raise pa.ArrowInvalid(f"{len(bad)} values are not ISO 8601 times: {shown}")
    return times


def _metadata_columns(metadata: pa.MapArray) -> dict[str, pa.Array]:
    """A map column -> one string column per key seen, null where a row lacks the key.

    Linear in the number of pairs plus (rows x distinct keys), the size of the output.
    """
    n = len(metadata)
    pairs = metadata.cast(pa.list_(pa.struct([metadata.type.key_field, metadata.type.item_field])))
    flat = pc.list_flatten(pairs)  # respects nulls and slicing, unlike MapArray.keys
    if len(flat) == 0:
        return {}
    keys, items = flat.flatten()
    items = items.cast(pa.string())
    rows = pc.list_parent_indices(pairs).to_numpy()
    encoded = pc.dictionary_encode(keys)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(encoded.dictionary) + 1))
    columns: dict[str, pa.Array] = {}
    for code, key in enumerate(encoded.dictionary.to_pylist()):
        positions = order[bounds[code] : bounds[code + 1]]
        take = np.full(n, -1, dtype=np.int64)
        take[rows[positions]] = positions  # a key repeated within one map: the last one wins
        indices = pa.array(take, mask=take < 0)
        columns[META_PREFIX + key] = items.take(indices)
    return columns


def empty_studies(metadata: MetadataShape = "columns") -> pa.Table:
    """A study table with no rows and no ``meta.*`` columns (``metadata="map"``: with the
    ``metadata`` map column).

    >>> empty_studies().schema.equals(STUDY_SCHEMA)
    True
    >>> empty_studies("map").column_names[-1]
    'metadata'
    """
    check_metadata_shape(metadata)
    if metadata == "map":
        return STUDY_SCHEMA.append(pa.field(METADATA_COLUMN, METADATA_MAP_TYPE)).empty_table()
    return STUDY_SCHEMA.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Give a study table its canonical shape and types.

    The ``STUDY_SCHEMA`` columns in order (a missing one becomes all-null), then the
    ``meta.*`` columns sorted by name, as strings, or the ``metadata`` map column (both is a
    ``ValidationError``); other columns are dropped. ``severity``
    and ``study_viewer_status`` get their fixed dictionaries; timestamps become ms, UTC.

    >>> t = conform(pa.table({"study_id": ["stu_" + "1" * 32], "study_instance_uid": ["1"],
    ...                       "meta.b": ["x"], "meta.a": [None], "extra": [1]}))
    >>> t.column_names[-2:], t.schema.field("severity").type == SEVERITY_TYPE
    (['meta.a', 'meta.b'], True)
    """
    n = table.num_rows
    fields: list[pa.Field] = []
    arrays: list[pa.ChunkedArray | pa.Array] = []
    for field in STUDY_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            if field.name in _FIXED_DICTIONARIES:
                column = _fixed_dictionary(column, field.name)
            elif field.name in _TIMESTAMP_COLUMNS:
                column = _timestamps(column)
            elif column.type != field.type:
                column = column.cast(field.type)
            arrays.append(column)
        else:
            arrays.append(pa.nulls(n, field.type))
        fields.append(field)
    meta = sorted(c for c in table.column_names if c.startswith(META_PREFIX))
    if METADATA_COLUMN in table.column_names:
        if meta:
            raise ValidationError.one(
                "study table", METADATA_COLUMN, f"{len(meta)} meta.* columns", Reason.CONFLICT,
                detail="a study table holds metadata as meta.* columns or as one map column, "
                "not both",
            )
        column = table.column(METADATA_COLUMN)
        if column.type != METADATA_MAP_TYPE:
            column = column.cast(METADATA_MAP_TYPE)
        arrays.append(column)
        fields.append(pa.field(METADATA_COLUMN, METADATA_MAP_TYPE))
    for name in meta:
        column = table.column(name)
        if column.type != pa.string():
            column = column.cast(pa.string())
        arrays.append(column)
        fields.append(pa.field(name, pa.string()))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _timestamps(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if column.type == _TIMESTAMP:
        return column
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pa.chunked_array([_parse_timestamps(c) for c in column.chunks], _TIMESTAMP)
    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        # a naive timestamp in the study table is UTC
        column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
    return column.cast(_TIMESTAMP, safe=False)


def _fixed_dictionary(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """Re-encode ``column`` over its fixed dictionary; unknown values are a ValidationError
    naming each row (position) and value, by the enum's rule (``schema.RULES``)."""
    arrow_type, dictionary = _FIXED_DICTIONARIES[name]
    if column.type == arrow_type and all(
        c.dictionary.equals(dictionary) for c in column.chunks
    ):
        return column
    values = column.cast(pa.string()) if pa.types.is_dictionary(column.type) else column
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    indices = pc.index_in(values, value_set=dictionary)
    unknown = pc.and_(pc.is_null(indices), pc.is_valid(values))
    if pc.any(unknown).as_py():
        failures = RULES[name].check_column(values, name)
        raise ValidationError.from_cases("study table", [f.case() for f in failures])
    chunks = [
        pa.DictionaryArray.from_arrays(
            c.cast(pa.int8()), dictionary, ordered=arrow_type.ordered
        )
        for c in indices.chunks
    ]
    return pa.chunked_array(chunks, arrow_type)


def concat_studies(tables: Iterable[pa.Table]) -> pa.Table:
    """Stack study tables; the ``meta.*`` columns are the union, null where a table lacks one
    (a ``metadata`` map column likewise; tables of the two shapes are a ``ValidationError``).

    One concatenation for all tables (no repeated pairwise concat).

    >>> a = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "metadata": {"x": "1"}}])
    >>> b = studies_to_arrow([{"studyId": "stu_" + "b" * 32, "metadata": {"y": "2"}}])
    >>> concat_studies([a, b]).select(["meta.x", "meta.y"]).to_pydict()
    {'meta.x': ['1', None], 'meta.y': [None, '2']}
    """
    conformed = [conform(t) for t in tables]
    if not conformed:
        return empty_studies()
    meta = sorted({c for t in conformed for c in t.column_names if c.startswith(META_PREFIX)})
    extra = [pa.field(m, pa.string()) for m in meta]
    if any(METADATA_COLUMN in t.column_names for t in conformed):
        if meta:
            raise ValidationError.one(
                "concat_studies", METADATA_COLUMN, f"{len(meta)} meta.* columns", Reason.CONFLICT,
                detail="the tables hold metadata in different shapes (meta.* columns and a map)",
            )
        extra = [pa.field(METADATA_COLUMN, METADATA_MAP_TYPE)]
    schema = pa.schema([*STUDY_SCHEMA, *extra])
    filled = []
    for t in conformed:
        # the missing meta columns added at once, not one append (a new table) at a time:
        # linear in the columns, whatever the number of distinct keys
        index = {name: at for at, name in enumerate(t.column_names)}
        columns = [
            t.column(index[field.name]) if field.name in index else pa.nulls(t.num_rows, field.type)
            for field in schema
        ]
        filled.append(pa.Table.from_arrays(columns, schema=schema))
    return pa.concat_tables(filled)


#: Columns unique to each study: never worth a categorical.
_UNIQUE_COLUMNS: Final = frozenset({"study_id", "study_instance_uid"})


def _compact_columns(table: pa.Table) -> pa.Table:
    """Dictionary-encode every string column whose values repeat (distinct <= half the rows)."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if (
            pa.types.is_string(field.type)
            and field.name not in _UNIQUE_COLUMNS
            and table.num_rows > 0
            and pc.count_distinct(column, mode="all").as_py() * 2 <= table.num_rows
        ):
            column = column.dictionary_encode()
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def to_pandas(table: pa.Table, *, compact: bool = False) -> pd.DataFrame:
    """A study table -> the DataFrame users get, with the same dtypes on every path.

    ``compact=True`` turns every string column whose values repeat (references, names,
    descriptions, most metadata) into an unordered categorical: about a quarter of the
    memory for a large table, at the price that assigning a value not yet among a column's
    categories needs ``.cat.add_categories`` first. Off by default, so cells edit freely.

    ``severity``: ordered categorical ``normal < high < stat`` (all three categories always);
    ``study_viewer_status``: categorical ``incomplete``, ``complete``; timestamps
    ``datetime64[ms, UTC]``; strings the installed pandas' default string dtype (pandas 3:
    ``str``); ``is_cancelled`` ``bool`` (``boolean`` only if a value is missing);
    ``created_by_api_key_is_viewer_enabled`` ``boolean`` (nullable: the reference is optional);
    ``metadata`` (the map shape) ``object``: a dict per study, ``None`` where it is null.

    >>> df = to_pandas(empty_studies())
    >>> str(df["created_at"].dtype), df["severity"].cat.ordered
    ('datetime64[ms, UTC]', True)
    """
    table = conform(table)
    if compact:
        table = _compact_columns(table)
    boolean = pd.BooleanDtype()
    frame: pd.DataFrame = table.to_pandas(
        types_mapper={pa.bool_(): boolean}.get, coerce_temporal_nanoseconds=False,
        maps_as_pydicts="strict",  # the metadata map shape: a dict per row, None for null
    )
    if not frame["is_cancelled"].isna().any():
        frame["is_cancelled"] = frame["is_cancelled"].astype(bool)
    for name in ("severity", "study_viewer_status"):
        _, dictionary = _FIXED_DICTIONARIES[name]
        dtype = pd.CategoricalDtype(dictionary.to_pylist(), ordered=name == "severity")
        column = frame[name] if frame[name].dtype == dtype else frame[name].astype(dtype)
        # Arrow hands the codes over zero-copy and read-only, so an analyst's
        # df.loc[rows, "severity"] = "stat" would fail: give the column codes of its own
        codes = np.array(column.cat.codes, dtype=np.int8, copy=True)
        frame[name] = pd.Series(pd.Categorical.from_codes(codes, dtype=dtype), index=frame.index)
    for name in _TIMESTAMP_COLUMNS:
        if str(frame[name].dtype) != "datetime64[ms, UTC]":
            frame[name] = frame[name].astype("datetime64[ms, UTC]")
    return frame


def from_pandas(df: pd.DataFrame) -> pa.Table:
    """A study DataFrame (e.g. from ``to_pandas``, edited) -> a conformed study table.

    The table is checked first, whole columns at a time, by the contract's rule table
    (``schema.STUDY_COLUMNS``): ``study_id`` and ``study_instance_uid`` (present, never null),
    the writable fields (``study_description`` not empty or blank, ``severity`` and
    ``study_viewer_status`` in their enums, ``assigned_to_user_id`` and
    ``express_customer_id`` IDs; null allowed) and the metadata limits (``meta.*`` columns,
    or the ``metadata`` column of dicts of the map shape, ``None`` for null). Every
    failure is reported at once: a ``ValidationError`` whose ``failure_cases`` name the
    DataFrame's row label (``row``) and the column (``field``). A column that cannot take
    its study-table type (e.g. ``created_at`` text that is not a time) is a ``WRONG_TYPE``
    case naming the column.

    >>> df = to_pandas(studies_to_arrow([{"studyId": "stu_" + "c" * 32,
    ...                                   "studyInstanceUid": "1.2", "severity": "high"}]))
    >>> from_pandas(df).equals(studies_to_arrow([{"studyId": "stu_" + "c" * 32,
    ...                                           "studyInstanceUid": "1.2", "severity": "high"}]))
    True
    >>> df.loc[0, "study_description"] = "   "
    >>> from_pandas(df)
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: from_pandas: 1 problem
      row 0, field study_description: must not be blank (only whitespace) (got '   ')
    """
    # only the study table's columns are converted: conform drops the others, and a column of
    # the user's own (notes of mixed types) must not stop the conversion
    kept = [c for c in df.columns if isinstance(c, str) and (
        STUDY_SCHEMA.get_field_index(c) >= 0 or c.startswith(META_PREFIX))]
    try:
        table: pa.Table | None = _arrow_columns(df, kept)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        table = None  # a column of mixed objects: the checks read the DataFrame itself
    # rows of the converted table are the DataFrame's rows, in order
    failures = study_table_failures(df if table is None else table)
    if failures:
        labels = df.index.take([f.row for f in failures if f.row is not None]).tolist()
        at = iter(labels)
        cases = [f.case() if f.row is None else f.case(row=next(at)) for f in failures]
        raise ValidationError.from_cases("from_pandas", cases)
    try:
        if table is None:
            table = _arrow_columns(df, kept)
        return conform(table)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        cases = [
            {"row": None, "field": name, "value": str(df[name].dtype),
             "reason": Reason.WRONG_TYPE, "detail": f"expected {STUDY_SCHEMA.field(name).type}"}
            for name in _unconvertible_columns(df)
        ]
        if not cases:
            raise
        raise ValidationError.from_cases("from_pandas", cases) from None


def _arrow_columns(df: pd.DataFrame, kept: list[str]) -> pa.Table:
    """The ``kept`` columns of ``df`` (and a ``metadata`` column of the map shape) as Arrow."""
    table = pa.Table.from_pandas(df[kept], preserve_index=False)
    if METADATA_COLUMN in df.columns:
        # pyarrow would read dicts as a struct of their keys: the map shape is built as a map
        table = table.append_column(
            pa.field(METADATA_COLUMN, METADATA_MAP_TYPE),
            pa.array(df[METADATA_COLUMN].tolist(), METADATA_MAP_TYPE, from_pandas=True),
        )
    return table


def _unconvertible_columns(df: pd.DataFrame) -> list[str]:
    """The study-table columns of ``df`` that do not convert to their type (the slow path,
    taken only after a conversion failed)."""
    bad = []
    for name in df.columns:
        if not isinstance(name, str) or STUDY_SCHEMA.get_field_index(name) < 0:
            continue
        try:
            conform(pa.Table.from_pandas(df[[name]], preserve_index=False))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            bad.append(name)
    return bad


_BODY_FIELDS: Final = {
    "study_instance_uid": "studyInstanceUid",
    "study_description": "studyDescription",
    "severity": "severity",
    "study_viewer_status": "studyViewerStatus",
    "assigned_to_user_id": "assignedTo",
    "express_customer_id": "expressCustomerId",
}
_CALL_FIELDS: Final = {"create": CREATE_FIELDS, "update": UPDATE_FIELDS}


def study_to_api_body(
    row: pd.Series | Mapping[str, Any], *, call: Literal["create", "update"] | None = None
) -> dict[str, Any]:
    """A study row (DataFrame row or dict) -> the API's create/update body, camelCase.

    ``assignedTo`` comes from ``assigned_to_user_id`` (``None`` unassigns); ``metadata`` is
    rebuilt from the non-null ``meta.*`` cells, or in the map shape is the row's ``metadata``
    as it is (``None`` stays null, which clears the map in an update; ``{}`` stays ``{}``).
    Only fields whose column is in ``row`` are given; ``call`` keeps just the fields that
    call accepts.

    >>> row = {"study_id": "stu_" + "d" * 32, "severity": "stat", "assigned_to_user_id": None,
    ...        "meta.site": "North", "meta.bed": float("nan")}
    >>> study_to_api_body(row, call="update")
    {'severity': 'stat', 'assignedTo': None, 'metadata': {'site': 'North'}}
    """
    body: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    has_meta = False
    for name, value in row.items():
        if name in _BODY_FIELDS:
            body[_BODY_FIELDS[name]] = _plain(value)
        elif name == METADATA_COLUMN:  # the map shape: the map as it is, null kept null
            pairs = _plain(value)
            body["metadata"] = None if pairs is None else {str(k): str(v) for k, v in dict(pairs).items()}
        elif isinstance(name, str) and name.startswith(META_PREFIX):
            has_meta = True
            plain = _plain(value)
            if plain is not None:
                metadata[name[len(META_PREFIX) :]] = str(plain)
    if has_meta:
        body["metadata"] = metadata
    if call is not None:
        allowed = _CALL_FIELDS[call]
        body = {k: v for k, v in body.items() if k in allowed}
    return body


def _plain(value: Any) -> Any:
    """A pandas/numpy/Arrow cell -> a JSON-ready Python value (missing -> None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


# --- table operations: order, de-duplication, comparison -------------------------------------


def in_list_order(table: pa.Table) -> pa.Table:
    """Rows in the API's list order: newest ``created_at`` first, ties by ``study_id``
    descending (the contract's order; the fetcher and the cache return tables in it).

    >>> t = studies_to_arrow([
    ...     {"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1", "createdAt": "2026-01-01T00:00:00Z"},
    ...     {"studyId": "stu_" + "b" * 32, "studyInstanceUid": "2", "createdAt": "2026-02-01T00:00:00Z"},
    ... ])
    >>> [s[4] for s in in_list_order(t).column("study_id").to_pylist()]
    ['b', 'a']
    """
    order = pc.sort_indices(
        table.select(["created_at", "study_id"]),
        sort_keys=[("created_at", "descending"), ("study_id", "descending")],
    )
    return table.take(order)


def newest_per_study(table: pa.Table, *, by: str = "updated_at") -> pa.Table:
    """One row per study ID (the newest ``by``: ``updated_at``, or e.g. a history's
    ``observed_at``), in list order (see :func:`in_list_order`). Vectorised: two sorts and a
    run-start mask; a study read twice (e.g. seen in two partitions while it changed) keeps
    its newest state.

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
            table.select(["study_id", by]),
            sort_keys=[("study_id", "ascending"), (by, "descending")],
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


def select_studies(table: pa.Table, study_ids: pa.Array | pa.ChunkedArray | list[str]) -> pa.Table:
    """The rows of ``table`` whose ``study_id`` is among ``study_ids`` (table order kept).

    >>> t = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1"}])
    >>> select_studies(t, ["stu_" + "b" * 32]).num_rows
    0
    """
    if isinstance(study_ids, list):
        study_ids = pa.array(study_ids, pa.string())
    return table.filter(pc.is_in(table.column("study_id"), value_set=study_ids))


def drop_empty_meta(table: pa.Table) -> pa.Table:
    """Drop the ``meta.*`` columns no study has a value in (a key the last study holding it
    lost), as a fresh fetch would not have them.

    >>> t = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "metadata": {"k": "v"}}])
    >>> drop_empty_meta(t.set_column(t.num_columns - 1, "meta.k", pa.nulls(1, pa.string()))).column_names[-1]
    'express_customer_name'
    """
    empty = [
        name
        for name in table.column_names
        if name.startswith(META_PREFIX) and table.column(name).null_count == len(table)
    ]
    return table.drop_columns(empty) if empty else table


def _compared_table(studies: object, side: str) -> tuple[pa.Table, set[str]]:
    """A side of a comparison as a conformed study table, and the columns it was given with.
    Not a table, or a study in it twice, is a ValidationError."""
    if isinstance(studies, pd.DataFrame):
        given, table = {str(c) for c in studies.columns}, from_pandas(studies)
    elif isinstance(studies, pa.Table):
        given, table = set(studies.column_names), conform(studies)
    else:
        raise ValidationError.one(
            "compare_studies", side, type(studies).__name__, Reason.WRONG_TYPE,
            detail="a study table: a pandas DataFrame or a pyarrow Table",
        )
    ids = table.column("study_id")
    if pc.count_distinct(ids).as_py() < len(ids):
        counts = pc.value_counts(ids)
        twice = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        raise ValidationError.from_cases(
            "compare_studies",
            [{"field": f"{side}.study_id", "value": study_id, "reason": Reason.DUPLICATE,
              "detail": "each table must hold a study at most once"}
             for study_id in twice.to_pylist()],
        )
    return table, given


def _cells_differ(before: pa.ChunkedArray, after: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row: do the two cells differ? A null against a value differs; two nulls do not."""
    if pa.types.is_dictionary(before.type):
        before = before.cast(before.type.value_type)
    if pa.types.is_dictionary(after.type):
        after = after.cast(after.type.value_type)
    one_null = pc.xor(pc.is_null(before), pc.is_null(after))
    return pc.or_(one_null, pc.fill_null(pc.not_equal(before, after), False))


@dataclass
class StudyChanges:
    """How two study tables differ, by study (from :func:`compare_studies`).

    ``new_ids``: in ``after`` only; ``gone_ids``: in ``before`` only; ``changed_ids``: in
    both, with at least one cell different (every column, ``meta.*`` included);
    ``unchanged``: how many are in both and equal. ``cells`` maps each column to a boolean
    array over the matched studies (``matched_ids``): does that cell differ.
    """

    new_ids: pa.Array
    gone_ids: pa.Array
    changed_ids: pa.Array
    unchanged: int
    matched_ids: pa.Array
    cells: dict[str, pa.Array]
    before_rows: pa.Table = dataclasses.field(repr=False)
    after_rows: pa.Table = dataclasses.field(repr=False)
    #: the map shape's changed metadata as long rows (``DIFF_SCHEMA``), or None
    metadata_rows: pa.Table | None = dataclasses.field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"StudyChanges(new={len(self.new_ids)}, changed={len(self.changed_ids)}, "
            f"gone={len(self.gone_ids)}, unchanged={self.unchanged})"
        )

    def long(self) -> pa.Table:
        """The changed cells as a long table (see :func:`diff_studies`)."""
        parts = []
        before_at = {name: at for at, name in enumerate(self.before_rows.column_names)}
        after_at = {name: at for at, name in enumerate(self.after_rows.column_names)}
        for name, differs in self.cells.items():
            if name == METADATA_COLUMN or not pc.any(differs).as_py():
                continue
            ids = self.matched_ids.filter(differs)
            parts.append(
                pa.table(
                    {
                        "study_id": ids,
                        "field": pa.repeat(pa.scalar(name, pa.string()), len(ids)),
                        "before": _display_strings(self.before_rows, before_at.get(name), differs),
                        "after": _display_strings(self.after_rows, after_at.get(name), differs),
                    },
                    schema=DIFF_SCHEMA,
                )
            )
        if self.metadata_rows is not None and self.metadata_rows.num_rows:
            parts.append(self.metadata_rows)
        if not parts:
            return DIFF_SCHEMA.empty_table()
        table = pa.concat_tables(parts)
        return table.take(pc.sort_indices(table, sort_keys=[("study_id", "ascending")]))


#: The columns of :func:`diff_studies`: one row per changed cell.
DIFF_SCHEMA: Final = pa.schema(
    [("study_id", pa.string()), ("field", pa.string()), ("before", pa.string()), ("after", pa.string())]
)


def _display_strings(rows: pa.Table, at: int | None, mask: pa.Array) -> pa.Array:
    """The masked cells of column number ``at`` as strings: timestamps ISO 8601 UTC with
    ``Z``, booleans ``true`` / ``false``, null as null (None, a column the table lacks: all
    null)."""
    if at is None:
        return pa.nulls(pc.sum(mask).as_py() or 0, pa.string())
    column = rows.column(at).filter(mask).combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_timestamp(column.type):
        # %S carries the milliseconds of a ms timestamp
        return pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ").cast(pa.string())
    if pa.types.is_boolean(column.type):
        return pc.if_else(column, "true", "false")
    return column.cast(pa.string())


def compare_studies(before: pa.Table | pd.DataFrame | None, after: pa.Table | pd.DataFrame) -> StudyChanges:
    """Compare two study tables (DataFrames or Arrow tables) by ``study_id``: one join, then
    a vectorised comparison of every column of the matched rows (no per-study Python loop).
    ``before=None`` means an empty table. A column of the study schema that one side lacks
    is not compared; a ``meta.*`` column one side lacks counts as empty there. Raises
    ``ValidationError`` when a side is not a table, holds a study twice (``DUPLICATE``, the
    study IDs), or has bad cells (as ``from_pandas``).

    >>> a = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1", "severity": "high"}])
    >>> b = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1", "severity": "stat"},
    ...                       {"studyId": "stu_" + "b" * 32, "studyInstanceUid": "2"}])
    >>> compare_studies(a, b)
    StudyChanges(new=1, changed=1, gone=0, unchanged=0)
    """
    old, old_given = (
        _compared_table(before, "before") if before is not None
        else (empty_studies(), set(STUDY_SCHEMA.names))
    )
    new, new_given = _compared_table(after, "after")
    before_keys = pa.table({"study_id": old.column("study_id"), "before_row": np.arange(len(old))})
    after_keys = pa.table({"study_id": new.column("study_id"), "after_row": np.arange(len(new))})
    joined = after_keys.join(before_keys, "study_id", join_type="full outer")
    ids = joined.column("study_id")
    is_new = pc.is_null(joined.column("before_row"))
    is_gone = pc.is_null(joined.column("after_row"))
    matched = joined.filter(pc.invert(pc.or_(is_new, is_gone)))
    before_rows = old.take(matched.column("before_row"))
    after_rows = new.take(matched.column("after_row"))
    differs: Any = pa.repeat(pa.scalar(False), len(matched))
    cells: dict[str, pa.Array] = {}
    # a fixed column one side was given without is not compared (a table an analyst cut
    # down is not a table whose cells were emptied); a meta.* column one side lacks is: the
    # study table has no column for a key no study holds
    columns = [name for name in STUDY_SCHEMA.names if name in old_given and name in new_given]
    columns += sorted(
        {c for c in (*before_rows.column_names, *after_rows.column_names) if c.startswith(META_PREFIX)}
    )
    metadata_rows = None
    if METADATA_COLUMN in before_rows.column_names or METADATA_COLUMN in after_rows.column_names:
        if any(c.startswith(META_PREFIX) for c in columns):
            raise ValidationError.one(
                "compare_studies", METADATA_COLUMN, "meta.* columns", Reason.CONFLICT,
                detail="the tables hold metadata in different shapes (meta.* columns and a map)",
            )
        # a side given without the map (e.g. a cut-down table) is not compared, as a fixed column
        if METADATA_COLUMN in old_given and METADATA_COLUMN in new_given:
            cells[METADATA_COLUMN], metadata_rows = _map_changes(
                matched.column("study_id").combine_chunks(),
                before_rows.column(METADATA_COLUMN), after_rows.column(METADATA_COLUMN),
            )
            differs = pc.or_(differs, cells[METADATA_COLUMN])
    # columns by position: a name lookup (or column_names, a new list) per column would make
    # many distinct metadata keys quadratic
    before_at = {name: at for at, name in enumerate(before_rows.column_names)}
    after_at = {name: at for at, name in enumerate(after_rows.column_names)}
    for name in columns:
        if name in before_at and name in after_at:
            cell = _cells_differ(
                before_rows.column(before_at[name]), after_rows.column(after_at[name])
            )
        elif name in before_at:  # a meta column only one side has: differs where it has a value
            cell = pc.is_valid(before_rows.column(before_at[name]))
        else:
            cell = pc.is_valid(after_rows.column(after_at[name]))
        cell = cell.combine_chunks() if isinstance(cell, pa.ChunkedArray) else cell
        cells[name] = cell
        differs = pc.or_(differs, cell)
    matched_ids = matched.column("study_id").combine_chunks()
    changed_ids = pc.filter(matched_ids, differs)
    return StudyChanges(
        new_ids=pc.filter(ids, is_new).combine_chunks(),
        gone_ids=pc.filter(ids, is_gone).combine_chunks(),
        changed_ids=changed_ids,
        unchanged=len(matched) - len(changed_ids),
        matched_ids=matched_ids,
        cells=cells,
        before_rows=before_rows,
        after_rows=after_rows,
        metadata_rows=metadata_rows,
    )


def _map_pairs(maps: pa.Array, side: str) -> pa.Table:
    """The pairs of a map column as a table ``row`` (position), ``key``, ``<side>`` (value)."""
    lists = maps.cast(pa.list_(pa.struct([maps.type.key_field, maps.type.item_field])))
    keys, items = pc.list_flatten(lists).flatten()
    return pa.table({"row": pc.list_parent_indices(lists).cast(pa.int64()), "key": keys, side: items})


def _map_texts(maps: pa.Array) -> pa.Array:
    """A map column as short display text: null, ``{}``, or ``{3 pairs}``."""
    counts = pc.list_value_length(maps.cast(pa.list_(pa.struct([maps.type.key_field, maps.type.item_field]))))
    text = pc.binary_join_element_wise("{", counts.cast(pa.string()), " pairs}", "")
    return pc.if_else(pc.equal(counts, 0), "{}", text)


def _map_changes(
    ids: pa.Array, before: pa.ChunkedArray, after: pa.ChunkedArray
) -> tuple[pa.Array, pa.Table]:
    """Compare two aligned map columns (the map shape's ``metadata``) without one column per
    key: one join of their pairs on (row, key), linear in the pairs. Returns the per-row
    "differs" mask, and the changes as long rows: ``meta.<key>`` for each key added, removed
    or changed, and ``metadata`` (``{}``, ``{n pairs}`` or null) where null and a map (even
    ``{}``) meet."""
    old, new = before.combine_chunks(), after.combine_chunks()
    joined = _map_pairs(old, "before").join(
        _map_pairs(new, "after"), ["row", "key"], join_type="full outer"
    )
    changed = joined.filter(_cells_differ(joined.column("before"), joined.column("after")))
    changed = changed.take(pc.sort_indices(changed, sort_keys=[("row", "ascending"), ("key", "ascending")]))
    null_differs = pc.xor(pc.is_null(old), pc.is_null(new))
    mask = np.asarray(null_differs.to_numpy(zero_copy_only=False), dtype=bool).copy()
    mask[changed.column("row").to_numpy()] = True
    nullness = pc.indices_nonzero(null_differs)
    rows = pa.table(
        {
            "study_id": ids.take(nullness),
            "field": pa.repeat(pa.scalar(METADATA_COLUMN, pa.string()), len(nullness)),
            "before": _map_texts(old.take(nullness)),
            "after": _map_texts(new.take(nullness)),
        },
        schema=DIFF_SCHEMA,
    )
    pairs = pa.table(
        {
            "study_id": ids.take(changed.column("row")),
            "field": pc.binary_join_element_wise(META_PREFIX, changed.column("key"), ""),
            "before": changed.column("before"),
            "after": changed.column("after"),
        },
        schema=DIFF_SCHEMA,
    )
    return pa.array(mask), pa.concat_tables([rows, pairs])


def diff_studies(before: pa.Table | pd.DataFrame, after: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """The cells that differ between two states of the same studies, as a long table: one
    row per changed cell, columns ``study_id``, ``field`` (a study table column, e.g.
    ``severity``, ``assigned_to_user_id``, ``meta.site``), ``before``, ``after`` (strings:
    timestamps ISO 8601 UTC, booleans ``true`` / ``false``; null where the cell is empty),
    sorted by ``study_id``, then field in study table order. Only studies in both tables are
    compared (:func:`compare_studies` tells the new and gone ones). It is the pandas form of
    ``compare_studies(before, after).long()``, the comparison the cache's refresh records in
    its history; for an analyst comparing two snapshots (two loads of the cache, a CSV
    export and the live table). The bulk preview compares a plan's fields with the live state
    row by row instead (``viewerkit.bulk``).

    >>> a = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1", "severity": "high"}])
    >>> b = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1", "severity": "stat",
    ...                        "metadata": {"site": "North"}}])
    >>> diff_studies(a, b)[["field", "before", "after"]].values.tolist()
    [['severity', 'high', 'stat'], ['meta.site', None, 'North']]
    """
    long: pd.DataFrame = compare_studies(before, after).long().to_pandas()
    if len(long):
        long = long.replace({np.nan: None})
    return long


def oldest_created_at(wire: pa.StructArray) -> datetime | None:
    """The oldest ``createdAt`` among wire studies (from :func:`read_page`), or None when
    there is none: how far back a page reached, without flattening it. A value that is not
    a time is skipped (never raised here): the flattening of the read reports it once, with
    the rest.

    >>> wire, _, _ = read_page(b'{"studies": [{"createdAt": "2026-01-02T00:00:00Z"},'
    ...                        b' {"createdAt": "2026-01-01T00:00:00.5Z"}]}')
    >>> oldest_created_at(wire).isoformat()
    '2026-01-01T00:00:00.500000+00:00'
    """
    if len(wire) == 0:
        return None
    # a value that is not a time is left out here: the read's flattening reports it
    created, _ = parse_times(wire.field("createdAt"))
    oldest = pc.min(created).as_py()
    return oldest if isinstance(oldest, datetime) else None
