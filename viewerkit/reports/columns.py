"""The one place every report reads the study table: checked whole, then as numpy arrays.

Every KPI, ``deadlines``, ``with_completion``, the figures' tables and ``render`` read the
study table (and the cache's change history) through :class:`StudyColumns`, so every report
agrees on what it accepts and what a missing column, a null or a bad cell means.

**What a report accepts**

- The study table as ``fetch_studies`` / ``StudyCache.load`` give it (ordered categorical
  ``severity``, categorical ``study_viewer_status``, boolean ``is_cancelled``,
  ``datetime64[ms, UTC]`` times, text IDs and names), edited or not, with any index.
- The same table after a round trip through CSV or Excel (``write_studies`` then
  ``pd.read_csv`` with default dtypes, ``dtype=str`` or ``dtype=object``), read to the same
  numbers:

  - ``severity``, ``study_viewer_status`` (and ``completion_source``, the history's
    ``change``): the contract's values, as text or categorical, spelled as the contract
    spells them. Enums are case-sensitive, as the API is: ``"STAT"`` and ``"urgent"`` are
    refused, not guessed at.
  - ``is_cancelled``: booleans, the text ``true`` / ``false`` in any case (``"True"``,
    ``"FALSE"``), or ``1`` / ``0`` (numbers or text).
  - times (``created_at``, ``updated_at``, ``cancelled_at``, ``completed_at``, the history's
    ``observed_at``): datetimes, or ISO 8601 text with or without a zone
    (``2026-11-02 08:00:00+00:00``, ``2026-11-02T08:00Z``, ``2026-11-02``); naive is UTC.
  - a null cell (None, NaN, NaT, pandas' NA, or empty or blank text: an empty CSV cell) is
    null. A null severity is a study of unknown severity (no KPI counts it; ``deadlines``
    gives it no target), a null status is not complete, a null ``is_cancelled`` is not
    cancelled, a null time is no time (a study without ``created_at`` is never open nor
    an arrival).
  - other columns (IDs, names, descriptions) are labels, taken as they are.

- Anything else raises ``ValidationError`` before any number is computed, listing every
  problem at once: one failure case per bad cell (``row``: the table's index label;
  ``field``: the column; the value; reason ``NOT_SEVERITY``, ``NOT_VIEWER_STATUS``,
  ``NOT_BOOLEAN``, ``NOT_A_TIME`` or ``NOT_A_CHOICE``), one per column the report needs and
  the table lacks (``MISSING_COLUMN``, row None; the detail names a column of a near spelling,
  e.g. ``Created At``) and one per column it needs that appears twice (``DUPLICATE``).

**Which columns a report needs** (``needed_columns``; the others it reads are optional):

=================  =========================================================================
backlog, deadlines ``severity``, ``study_viewer_status``, ``is_cancelled``, ``created_at``
overdue            those, ``study_id``, ``assigned_to_user_id``, ``express_customer_id``
volume             ``severity``, ``created_at``
turnaround         ``severity``, ``study_viewer_status``, ``is_cancelled``, ``created_at``,
                   ``updated_at`` (also ``with_completion``)
workload           those and ``assigned_to_user_id``
customers          those and ``express_customer_id``
cancellations      ``severity``, ``is_cancelled``, ``created_at``, ``cancelled_at``
report             all of the above (``report_tables``, ``report_figures``, ``render``, ...)
=================  =========================================================================

Grouping by assignee or customer adds ``assigned_to_user_id`` / ``express_customer_id``; a
change history adds ``study_id``; SLA targets with customer overrides add
``express_customer_id``. Optional columns: ``cancelled_at`` (turnaround's cancellations; when
null, ``updated_at`` stands in), ``completed_at`` and ``completion_source`` (from
``with_completion``), and the label columns (``study_instance_uid``, ``study_description``,
assignee and customer names), shown null when absent. An optional column that is present is
checked like a needed one.

Arrays: times are epoch milliseconds as float64 (NaN where null: float64 holds every
millisecond of years 1-9999 exactly); severities are codes 0 normal, 1 high, 2 stat, -1 null.

>>> import pandas as pd
>>> one = pd.DataFrame({"severity": ["stat"], "study_viewer_status": ["incomplete"],
...     "is_cancelled": ["False"], "created_at": ["1970-01-01T01:00Z"]})
>>> cols = StudyColumns(one, "backlog")
>>> cols.severity.tolist(), cols.created.tolist(), cols.open.tolist()
([2], [3600000.0], [True])
>>> StudyColumns(one.assign(severity="STAT"), "backlog")
Traceback (most recent call last):
viewerkit.errors.ValidationError: bad study table for backlog: 1 problem
  row 0, field severity: must be one of normal, high, stat, the contract spells it 'stat' (got 'STAT')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from viewerkit.errors import Reason, ValidationError
from viewerkit.rules import Choice
from viewerkit.schema import RULES, SEVERITIES, VIEWER_STATUSES, ViewerStatus

__all__ = [
    "CHANGES",
    "COMPLETION_SOURCES",
    "HISTORY_COLUMNS",
    "REPORT_COLUMNS",
    "TEXT_DTYPE",
    "StudyColumns",
    "arrow_strings",
    "equals",
    "needed_columns",
    "severity_codes",
    "severity_labels",
    "text",
    "timestamps",
]

#: pandas' default string dtype: Arrow-backed "str" on pandas 3, object on pandas 2.
TEXT_DTYPE: Final[Any] = "str" if int(pd.__version__.split(".")[0]) >= 3 else object

#: Where ``with_completion`` found a completion time.
COMPLETION_SOURCES: Final = ("history", "updated_at")
#: The history's kinds of change (``StudyCache.history()``).
CHANGES: Final = ("new", "changed", "gone")

_OPEN_WORK: Final = ("severity", "study_viewer_status", "is_cancelled", "created_at")
_COMPLETION: Final = (*_OPEN_WORK, "updated_at")

#: The columns each report needs, before options add theirs (``needed_columns``).
REPORT_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "deadlines": _OPEN_WORK,
    "backlog": _OPEN_WORK,
    "overdue": (*_OPEN_WORK, "study_id", "assigned_to_user_id", "express_customer_id"),
    "volume": ("severity", "created_at"),
    "turnaround": _COMPLETION,
    "with_completion": _COMPLETION,
    "workload": (*_COMPLETION, "assigned_to_user_id"),
    "customers": (*_COMPLETION, "express_customer_id"),
    "cancellations": ("severity", "is_cancelled", "created_at", "cancelled_at"),
    "report": (*_COMPLETION, "cancelled_at", "study_id", "assigned_to_user_id", "express_customer_id"),
}

#: The change history's columns the completion rule reads (``StudyCache.history()``).
HISTORY_COLUMNS: Final = ("observed_at", "change", "study_id", "study_viewer_status", "updated_at")

_GROUP_COLUMNS: Final = {"assignee": "assigned_to_user_id", "customer": "express_customer_id"}


def needed_columns(
    report: str,
    *,
    by: Sequence[str] = (),
    history: bool = False,
    customer_targets: bool = False,
) -> tuple[str, ...]:
    """The study table's columns ``report`` needs (a key of ``REPORT_COLUMNS``), with those
    its options add: grouping ``by`` assignee or customer, a change ``history`` (matched by
    ``study_id``), SLA targets with customer overrides.

    >>> needed_columns("volume"), needed_columns("backlog", customer_targets=True)[-1]
    (('severity', 'created_at'), 'express_customer_id')
    """
    extra = [_GROUP_COLUMNS[d] for d in by if d in _GROUP_COLUMNS]
    if history:
        extra.append("study_id")
    if customer_targets:
        extra.append("express_customer_id")
    return tuple(dict.fromkeys((*REPORT_COLUMNS[report], *extra)))


# --- how each typed column is read ------------------------------------------------------------


@dataclass(frozen=True)
class _Enum:
    choices: tuple[str, ...]
    reason: Reason
    dtype: pd.CategoricalDtype


@dataclass(frozen=True)
class _Flag:
    pass


@dataclass(frozen=True)
class _Time:
    pass


def _enum(rule: Any, *, ordered: bool = False) -> _Enum:
    assert isinstance(rule, Choice)
    return _Enum(rule.choices, rule.reason, pd.CategoricalDtype(list(rule.choices), ordered=ordered))


_FLAG: Final = _Flag()
_TIME: Final = _Time()
_FLAG_DTYPE: Final = pd.BooleanDtype()

#: How each typed column is read; every other column is a label, taken as it is.
_KINDS: Final[Mapping[str, _Enum | _Flag | _Time]] = {
    "severity": _enum(RULES["severity"], ordered=True),
    "study_viewer_status": _enum(RULES["study_viewer_status"]),
    "completion_source": _enum(Choice("completion_source", COMPLETION_SOURCES, Reason.NOT_A_CHOICE)),
    "change": _enum(Choice("change", CHANGES, Reason.NOT_A_CHOICE)),
    "is_cancelled": _FLAG,
    "created_at": _TIME,
    "updated_at": _TIME,
    "cancelled_at": _TIME,
    "completed_at": _TIME,
    "observed_at": _TIME,
}

_TRUE: Final = pa.array(["true", "1"])
_FALSE: Final = pa.array(["false", "0"])
_FLAG_DETAIL: Final = "or the text true / false (any case), or 1 / 0"
_TIME_DETAIL: Final = "e.g. 2026-11-02 08:00:00+00:00"


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _arrow(values: pd.Series | pd.Index) -> pa.Array:
    """A column as one Arrow array; a column of mixed Python types as its cells' text."""
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        cells = np.asarray(values.astype(str), dtype=object)  # mixed: str(True) is "True"
        cells[np.asarray(pd.isna(values))] = None
        array = pa.array(cells, type=pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    return array


def _mask(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _present(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Where a cell holds something (not null, NaN or blank text), and the array trimmed."""
    if _is_text(array.type):
        array = pc.utf8_trim_whitespace(array)
        return _mask(pc.greater(pc.utf8_length(array), 0)), array
    return ~_mask(pc.is_null(array, nan_is_null=True)), array


def _read_enum(series: pd.Series, kind: _Enum) -> tuple[np.ndarray, np.ndarray]:
    """Codes into ``kind.choices`` (-1 null) and where a present cell is none of them."""
    n = len(series)
    if isinstance(series.dtype, pd.CategoricalDtype):
        raw = np.asarray(series.cat.codes.to_numpy(), dtype=np.int64)
        if tuple(series.cat.categories) == kind.choices:  # the study table's own dtype
            return raw, np.zeros(n, dtype=bool)
        # the categories are read once; unused bad categories are no problem
        cat_codes, cat_bad = _read_enum(pd.Series(series.cat.categories), kind)
        lookup = np.append(cat_codes, -1)  # code -1 (null) picks the appended -1
        bad = np.append(cat_bad, False)[raw] if cat_bad.any() else np.zeros(n, dtype=bool)
        return lookup[raw], bad
    array = _arrow(series)
    if not _is_text(array.type):
        return np.full(n, -1, dtype=np.int64), _present(array)[0]
    found = pc.index_in(array, value_set=pa.array(kind.choices, array.type))
    codes = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    unknown = (codes < 0) & ~_mask(pc.is_null(array))
    if not unknown.any():
        return codes, unknown
    return codes, unknown & _present(array)[0]  # blank text is null, not a bad value


def _read_flag(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The booleans (False where null) and where a present cell is not a boolean."""
    n = len(series)
    if series.dtype == np.bool_:
        return np.asarray(series.to_numpy(), dtype=bool), np.zeros(n, dtype=bool)
    if isinstance(series.dtype, pd.BooleanDtype):
        return np.asarray(series.fillna(False).to_numpy(dtype=bool)), np.zeros(n, dtype=bool)
    array = _arrow(series)
    present, array = _present(array)
    if pa.types.is_boolean(array.type):
        return _mask(array), np.zeros(n, dtype=bool)
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        yes, no = _mask(pc.equal(array, 1)), _mask(pc.equal(array, 0))
    elif _is_text(array.type):
        folded = pc.utf8_lower(array)
        yes = _mask(pc.is_in(folded, value_set=_TRUE.cast(array.type)))
        no = _mask(pc.is_in(folded, value_set=_FALSE.cast(array.type)))
    else:
        yes = no = np.zeros(n, dtype=bool)
    return yes, present & ~yes & ~no


def _epoch_ms(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    ints = np.asarray(values.to_numpy(dtype="datetime64[ms]")).view(np.int64)
    out = ints.astype(np.float64)
    out[ints == np.iinfo(np.int64).min] = np.nan
    return out


def _read_time(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ms (NaN where null) and where a present cell is not a time."""
    n = len(series)
    if n == 0:
        return np.empty(0, dtype=np.float64), np.zeros(0, dtype=bool)
    if isinstance(series.dtype, pd.DatetimeTZDtype) or series.dtype.kind == "M":
        return _epoch_ms(series), np.zeros(n, dtype=bool)  # naive datetime64 is UTC
    array = _arrow(series)
    present, array = _present(array)
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        # datetimes in an object column; naive ones are UTC
        zone = array.type.tz if pa.types.is_timestamp(array.type) else None
        ms = pc.cast(array.cast(pa.timestamp("ms", zone), safe=False), pa.int64()).cast(pa.float64())
        return np.asarray(ms.fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64), np.zeros(n, bool)
    if not _is_text(array.type):
        return np.full(n, np.nan), present  # numbers are not times (no guessing at a unit)
    parsed = pd.to_datetime(array.to_numpy(zero_copy_only=False), utc=True, format="ISO8601", errors="coerce")
    ms = _epoch_ms(parsed)
    bad = present & np.isnan(ms)
    return ms, bad


_READERS: Final[Mapping[type, Callable[[pd.Series, Any], tuple[np.ndarray, np.ndarray]]]] = {
    _Enum: _read_enum,
    _Flag: lambda series, _: _read_flag(series),
    _Time: lambda series, _: _read_time(series),
}


def _sound(dtype: Any, kind: _Enum | _Flag | _Time) -> bool:
    """Whether a column of this dtype holds only values of this kind (or nulls)."""
    if isinstance(kind, _Enum):
        return isinstance(dtype, pd.CategoricalDtype) and set(dtype.categories) <= set(kind.choices)
    if isinstance(kind, _Flag):
        return bool(dtype == np.bool_) or isinstance(dtype, pd.BooleanDtype)
    return isinstance(dtype, pd.DatetimeTZDtype) or getattr(dtype, "kind", "") == "M"


# --- the study table as arrays ----------------------------------------------------------------


def _spelling(name: object) -> str:
    return re.sub(r"[\s\-.]+", "_", str(name).strip().lower())


class StudyColumns:
    """The study table (or the change history) checked whole, its typed columns as arrays.

    ``report`` names the caller in errors; ``needs`` are the columns it cannot do without
    (default: ``REPORT_COLUMNS[report]``), ``reads`` the optional columns it reads when
    present (see the module notes). ``field`` is ``"studies"``, or ``"history"`` for the
    cache's change history. Raises ``ValidationError``: ``field`` with
    ``Reason.WRONG_TYPE`` when the table is not a DataFrame; else every missing or
    duplicated needed column and every bad cell of the columns read, at once. Columns in
    the study table's own dtypes hold no bad cell and are converted when first used.
    ``frame`` is the table with a fresh 0..n-1 index; ``source`` the table as given.
    """

    def __init__(
        self,
        studies: pd.DataFrame,
        report: str,
        needs: Iterable[str] | None = None,
        reads: Iterable[str] = (),
        *,
        field: str = "studies",
    ) -> None:
        what = f"bad {'study table' if field == 'studies' else 'change history'} for {report}"
        if not isinstance(studies, pd.DataFrame):
            raise ValidationError.one(
                what, field, type(studies).__name__, Reason.WRONG_TYPE,
                detail="expected a pandas DataFrame (fetch_studies, StudyCache.load)"
                if field == "studies" else "expected a pandas DataFrame",
            )
        needed = tuple(dict.fromkeys(REPORT_COLUMNS[report] if needs is None else needs))
        optional = tuple(c for c in dict.fromkeys(reads) if c not in needed)
        self.source = studies
        self.frame = studies.reset_index(drop=True)
        self.n = len(self.frame)
        self._values: dict[str, np.ndarray] = {}
        self._absent: set[str] = set()
        self._retyped: dict[str, _Enum | _Flag | _Time] = {}
        self._deferred: dict[str, _Enum | _Flag | _Time] = {}
        names = list(studies.columns)
        cases: list[dict[str, Any]] = []
        to_read: list[str] = []
        for name in (*needed, *optional):
            count = names.count(name)
            if count == 1:
                to_read.append(name)
            elif count > 1:
                cases.append({"field": name, "value": name, "reason": Reason.DUPLICATE,
                              "detail": "the table has this column more than once"})
            elif name in optional:
                self._absent.add(name)
            else:
                near = [c for c in names if _spelling(c) == name]
                detail = f"{report} needs it" + (f"; the table has {near[0]!r}" if near else "")
                cases.append({"field": name, "value": None, "reason": Reason.MISSING_COLUMN, "detail": detail})
        for name in to_read:
            cases += self._read(name)
        if cases:
            raise ValidationError.from_cases(what, cases)

    def _read(self, name: str) -> list[dict[str, Any]]:
        """Read one column into ``_values``; its failure cases. A column whose dtype admits
        no bad cell (the study table's own dtypes) is converted when first used."""
        kind = _KINDS.get(name)
        series = self.frame[name]
        if kind is None:
            return []  # a label: taken as it is
        if _sound(series.dtype, kind):
            self._deferred[name] = kind
            return []
        values, bad = _READERS[type(kind)](series, kind)
        self._values[name] = values
        self._retyped[name] = kind
        return self._cases(name, kind, series, bad)

    def _cases(
        self, name: str, kind: _Enum | _Flag | _Time, series: pd.Series, bad: np.ndarray
    ) -> list[dict[str, Any]]:
        """One failure case per bad cell (row: the index label of the table given)."""
        detail: str | None
        if isinstance(kind, _Enum):
            reason = kind.reason
            detail = f"allowed: {', '.join(kind.choices)}" if reason is Reason.NOT_A_CHOICE else None
        elif isinstance(kind, _Flag):
            reason, detail = Reason.NOT_BOOLEAN, _FLAG_DETAIL
        else:
            reason, detail = Reason.NOT_A_TIME, _TIME_DETAIL
        rows = np.flatnonzero(bad)
        if not len(rows):
            return []
        labels = self.source.index[rows].tolist()
        cells = series.take(rows).astype(object).tolist()
        cases = []
        for row, value in zip(labels, cells, strict=True):
            said = detail
            if isinstance(kind, _Enum) and isinstance(value, str) and value.strip().lower() in kind.choices:
                said = f"the contract spells it {value.strip().lower()!r}"
            cases.append({"row": row, "field": name, "value": value, "reason": reason, "detail": said})
        return cases

    def _typed(self, name: str, kind: _Enum | _Flag | _Time, values: np.ndarray) -> pd.Series:
        """A column read from another dtype, in the study table's dtype (original index)."""
        if isinstance(kind, _Enum):
            typed: Any = pd.Categorical.from_codes(values, dtype=kind.dtype)
        elif isinstance(kind, _Flag):
            typed = pd.array(values, dtype=_FLAG_DTYPE)
        else:
            typed = timestamps(values).array
        return pd.Series(typed, index=self.source.index, name=name)

    # -- the arrays ----------------------------------------------------------------------

    def values(self, name: str) -> np.ndarray:
        """A typed column's array (codes, booleans or epoch ms); for an absent optional
        column, all null (-1, False or NaN). A column neither needed nor read is a bug."""
        if name in self._values:
            return self._values[name]
        if name in self._deferred:
            kind = self._deferred.pop(name)
            self._values[name] = _READERS[type(kind)](self.frame[name], kind)[0]
            return self._values[name]
        if name in self._absent:
            kind = _KINDS[name]
            if isinstance(kind, _Enum):
                return np.full(self.n, -1, dtype=np.int64)
            if isinstance(kind, _Flag):
                return np.zeros(self.n, dtype=bool)
            return np.full(self.n, np.nan)
        raise LookupError(f"{name!r} was neither needed nor read: declare it")

    def has(self, name: str) -> bool:
        """Whether the column is in the table (needed, or an optional one present)."""
        return name in self.frame.columns and name not in self._absent

    def text(self, name: str) -> pd.Series:
        """A label column (IDs, names): the column, or all nulls when the table lacks it."""
        if name in self.frame.columns:
            return self.frame[name]
        return pd.Series([None] * self.n, index=self.frame.index, dtype=object)

    def table(self) -> pd.DataFrame:
        """The table as given (same index), its typed columns read from text, objects or
        numbers (a CSV, ...) in the study table's dtypes: reading it again costs nothing."""
        if not self._retyped:
            return self.source
        return self.source.assign(**{
            name: self._typed(name, kind, self._values[name]) for name, kind in self._retyped.items()
        })

    @property
    def severity(self) -> np.ndarray:
        """Severity codes: 0 normal, 1 high, 2 stat, -1 null."""
        return self.values("severity")

    @property
    def created(self) -> np.ndarray:
        """``created_at`` in epoch ms, NaN where null."""
        return self.values("created_at")

    @property
    def updated(self) -> np.ndarray:
        """``updated_at`` in epoch ms, NaN where null."""
        return self.values("updated_at")

    @property
    def is_cancelled(self) -> np.ndarray:
        """``is_cancelled``, False where null."""
        return self.values("is_cancelled")

    @cached_property
    def cancelled_at(self) -> np.ndarray:
        """When a cancelled study was cancelled (``updated_at`` if ``cancelled_at`` is null)."""
        at = self.values("cancelled_at")
        at = np.where(np.isnan(at), self.updated, at)
        return np.where(self.is_cancelled, at, np.nan)

    def status_is(self, status: ViewerStatus) -> np.ndarray:
        """Where ``study_viewer_status`` is ``status`` (False where null)."""
        return np.asarray(self.values("study_viewer_status") == VIEWER_STATUSES.index(status))

    @cached_property
    def complete(self) -> np.ndarray:
        """Where ``study_viewer_status`` is complete."""
        return self.status_is("complete")

    @cached_property
    def open(self) -> np.ndarray:
        """Open work: incomplete, not cancelled, of a known severity (whenever created)."""
        return np.asarray(~self.complete & ~self.is_cancelled & (self.severity >= 0))

    def open_at(self, now_ms: float) -> np.ndarray:
        """Open at ``now_ms``: open, and created at or before it (a null ``created_at``
        never is)."""
        with np.errstate(invalid="ignore"):
            return np.asarray(self.open & (self.created <= now_ms))


# --- single columns and arrays back into report columns ---------------------------------------


def severity_codes(severity: pd.Series | Sequence[Any]) -> np.ndarray:
    """A severity column as codes: 0 normal, 1 high, 2 stat, -1 null (int64).

    Raises ``ValidationError`` (field ``severity``, ``Reason.NOT_SEVERITY``, row the
    position) for a value outside the contract.

    >>> severity_codes(pd.Series(["stat", None, "normal"])).tolist()
    [2, -1, 0]
    """
    series = severity if isinstance(severity, pd.Series) else pd.Series(list(severity), dtype=object)
    frame = pd.DataFrame({"severity": series.reset_index(drop=True)})
    return StudyColumns(frame, "severity codes", needs=("severity",)).severity


def equals(series: pd.Series, value: str) -> np.ndarray:
    """``series == value`` as a bool array, False where null (categorical codes compared)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = list(series.cat.categories)
        if value not in cats:
            return np.zeros(len(series), dtype=bool)
        return np.asarray(series.cat.codes.to_numpy() == cats.index(value))
    return np.asarray((series == value).fillna(False).to_numpy(dtype=bool))


def severity_labels(codes: np.ndarray) -> pd.Categorical:
    """Severity codes back into the ordered categorical of the study table."""
    dtype = pd.CategoricalDtype(list(SEVERITIES), ordered=True)
    return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int64), dtype=dtype)


def timestamps(ms: np.ndarray) -> pd.Series:
    """Epoch milliseconds (NaN for null) as a ``datetime64[ms, UTC]`` Series."""
    ints = np.where(np.isnan(ms), np.iinfo(np.int64).min, ms).astype(np.int64)
    return pd.Series(ints.view("datetime64[ms]")).dt.tz_localize("UTC")


def text(values: pd.Series | list[Any]) -> pd.Series:
    """Strings in pandas' default string dtype, nulls kept null (never the text "None")."""
    if TEXT_DTYPE is not object and isinstance(values, pd.Series) and values.dtype == TEXT_DTYPE:
        return values
    series = values.astype(object) if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    series = series.where(series.notna(), None)
    return series if TEXT_DTYPE is object else series.astype(TEXT_DTYPE)


def arrow_strings(series: pd.Series) -> pa.Array:
    """A string column as an Arrow array (zero-copy for pandas' Arrow-backed ``str``)."""
    array = pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.large_string())
    return array
