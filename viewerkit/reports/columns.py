"""The study table's columns as numpy arrays, and arrays back into report columns.

Internal to ``viewerkit.reports`` (public to the package, not re-exported): ``sla`` and
``kpis`` both read the study table through these, so every report agrees on what a
missing column, a null time or an unknown severity means. Times are epoch milliseconds
as float64 (NaN where null: float64 holds every millisecond of years 1-9999 exactly);
severities are codes 0 normal, 1 high, 2 stat, -1 null or unknown.

>>> import pandas as pd
>>> one = pd.DataFrame({"severity": ["stat"], "study_viewer_status": ["incomplete"],
...     "is_cancelled": [False], "created_at": [pd.Timestamp("1970-01-01 01:00", tz="UTC")]})
>>> cols = StudyColumns(one)
>>> cols.severity.tolist(), cols.created.tolist(), cols.open.tolist()
([2], [3600000.0], [True])
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from viewerkit.errors import Reason, ValidationError
from viewerkit.schema import SEVERITIES, ViewerStatus

__all__ = [
    "TEXT_DTYPE",
    "StudyColumns",
    "arrow_strings",
    "column",
    "epoch_ms",
    "equals",
    "severity_codes",
    "severity_labels",
    "text",
    "timestamps",
]

#: pandas' default string dtype: Arrow-backed "str" on pandas 3, object on pandas 2.
TEXT_DTYPE: Final[Any] = "str" if int(pd.__version__.split(".")[0]) >= 3 else object


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """The column, or all nulls when the table lacks it (hand-made tables may)."""
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def epoch_ms(series: pd.Series) -> np.ndarray:
    """Epoch milliseconds as float64, NaN where null (naive times are taken as UTC)."""
    if len(series) == 0:
        return np.empty(0, dtype=np.float64)
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        series = pd.to_datetime(series, utc=True)
    ints = series.to_numpy(dtype="datetime64[ms]").view(np.int64)
    out = ints.astype(np.float64)
    out[ints == np.iinfo(np.int64).min] = np.nan
    return out


def equals(series: pd.Series, value: str) -> np.ndarray:
    """``series == value`` as a bool array, False where null (categorical codes compared)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = list(series.cat.categories)
        if value not in cats:
            return np.zeros(len(series), dtype=bool)
        return np.asarray(series.cat.codes.to_numpy() == cats.index(value))
    return np.asarray((series == value).fillna(False).to_numpy(dtype=bool))


def severity_codes(series: pd.Series) -> np.ndarray:
    """0 normal, 1 high, 2 stat, -1 null or unknown (int64)."""
    if isinstance(series.dtype, pd.CategoricalDtype) and tuple(series.cat.categories) == SEVERITIES:
        return np.asarray(series.cat.codes.to_numpy(), dtype=np.int64)
    # a lookup, not pd.Categorical(values, categories): pandas 3 warns on values outside them
    return np.asarray(pd.Index(SEVERITIES).get_indexer(pd.Index(series.astype(object))), dtype=np.int64)


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


class StudyColumns:
    """The study table's columns as arrays, each read once, when first asked for.

    Raises ``ValidationError`` (field ``studies``, ``Reason.WRONG_TYPE``) when ``studies``
    is not a DataFrame. ``frame`` is the table with a fresh 0..n-1 index.
    """

    def __init__(self, studies: pd.DataFrame) -> None:
        if not isinstance(studies, pd.DataFrame):
            raise ValidationError.one(
                "bad study table", "studies", type(studies).__name__, Reason.WRONG_TYPE,
                detail="expected a pandas DataFrame (fetch_studies, StudyCache.load)",
            )
        self.frame = studies.reset_index(drop=True)
        self.n = len(self.frame)

    def column(self, name: str) -> pd.Series:
        """The column, or all nulls when the table lacks it."""
        return column(self.frame, name)

    @cached_property
    def severity(self) -> np.ndarray:
        """Severity codes: 0 normal, 1 high, 2 stat, -1 null or unknown."""
        return severity_codes(self.column("severity"))

    @cached_property
    def created(self) -> np.ndarray:
        """``created_at`` in epoch ms, NaN where null."""
        return epoch_ms(self.column("created_at"))

    @cached_property
    def updated(self) -> np.ndarray:
        """``updated_at`` in epoch ms, NaN where null."""
        return epoch_ms(self.column("updated_at"))

    @cached_property
    def is_cancelled(self) -> np.ndarray:
        """``is_cancelled``, False where null."""
        col = self.column("is_cancelled")
        return np.asarray(col.fillna(False).to_numpy(dtype=bool)) if self.n else np.zeros(0, bool)

    @cached_property
    def cancelled_at(self) -> np.ndarray:
        """When a cancelled study was cancelled (``updated_at`` if ``cancelled_at`` is null)."""
        at = epoch_ms(self.column("cancelled_at"))
        at = np.where(np.isnan(at), self.updated, at)
        return np.where(self.is_cancelled, at, np.nan)

    def status_is(self, status: ViewerStatus) -> np.ndarray:
        """Where ``study_viewer_status`` is ``status`` (False where null)."""
        return equals(self.column("study_viewer_status"), status)

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
