"""Severity and turnaround KPIs of the study table, each a tidy DataFrame.

Every KPI takes the study table (``fetch_studies`` / ``StudyCache.load``: one row per study,
the columns of ``viewerkit.schema.STUDY_SCHEMA``) and works on whole columns at once (numpy
over the timestamp and code arrays; no Python loop over studies).

Rules every KPI follows:

- **Hours.** Durations are float hours; column names carry the unit (``median_h``).
- **Turnaround** runs from ``created_at`` to completion. Completion comes from the cache's
  change history (``StudyCache.history()``) where a refresh saw the study incomplete and a
  later one saw it complete: the ``updated_at`` recorded in that first complete observation,
  bounded above by its ``observed_at`` (for a study reopened and completed again, the last
  such transition). Otherwise it is the ``updated_at`` of a complete
  study, which can only overstate it (any later edit moves ``updated_at``). Results count
  which rows used which source (``from_history``, ``from_updated_at``).
- **Within target** means turnaround <= target: a study finished exactly at its target is
  within it. An open study is *past target* once its age is strictly greater than the target.
- **Cancelled** studies never count as completed; turnaround counts them separately.
- **Windows** are half-open, ``start <= t < end``, in UTC (naive times are taken as UTC;
  either end may be ``None``). Each event is placed by its own time: arrivals by
  ``created_at`` (volume, backlog, overdue, customer volume, cancellation rates), completions
  by completion time (turnaround, completed work, within target), cancellations counted by
  turnaround by ``cancelled_at``.
- **Now.** Anything relative to the present (ages, "open now") takes ``now=`` (default: the
  current time), so results are reproducible. Studies created after ``now`` are not open yet.
- **Missing references.** Studies without an assignee or customer form their own group
  (``assigned_to_user_id`` / ``express_customer_id`` null, shown as ``(unassigned)`` /
  ``(no customer)``). Severity groups always list all three severities, empty or not.
- **Percentiles.** P90 interpolates linearly between the closest ranks (numpy's default).

>>> import pandas as pd
>>> t = pd.Timestamp("2026-11-02 08:00", tz="UTC")
>>> studies = pd.DataFrame({
...     "study_id": ["stu_a", "stu_b"], "severity": ["stat", "stat"],
...     "study_viewer_status": ["complete", "complete"], "is_cancelled": [False, False],
...     "created_at": [t, t], "updated_at": [t + pd.Timedelta("30min"), t + pd.Timedelta("2h")],
... })
>>> turnaround(studies).query("severity == 'stat'")[["completed", "median_h", "within_target"]]
   completed  median_h  within_target
2          2      1.25              1
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Final, Literal, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from viewerkit.errors import ValidationError
from viewerkit.schema import SEVERITIES

__all__ = [
    "AGE_BANDS",
    "SLA",
    "SlaTargets",
    "Window",
    "backlog",
    "cancellations",
    "customers",
    "overdue",
    "turnaround",
    "volume",
    "with_completion",
    "workload",
]

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS
_MONDAY_MS: Final = 4 * DAY_MS  # 1970-01-05, the first Monday after the epoch
_FREQ_MS: Final = {"h": HOUR_MS, "D": DAY_MS, "W": WEEK_MS}

#: Age bands of the open backlog, youngest first (left-closed: 1 h exactly is "1-4 h").
AGE_BANDS: Final = ("< 1 h", "1-4 h", "4-12 h", "12-24 h", "24-48 h", "> 48 h")
_AGE_EDGES_H: Final = np.array([1.0, 4.0, 12.0, 24.0, 48.0])

UNASSIGNED: Final = "(unassigned)"
NO_CUSTOMER: Final = "(no customer)"

Moment: TypeAlias = "str | datetime | pd.Timestamp | None"
Window: TypeAlias = "tuple[Moment, Moment] | None"
Hours: TypeAlias = "float | int | timedelta"
By: TypeAlias = "str | Sequence[str]"
Freq: TypeAlias = 'Literal["h", "D", "W"]'


# --- SLA targets ------------------------------------------------------------------------------


def _as_timedelta(value: Hours, what: str) -> pd.Timedelta:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, timedelta)):
        raise ValidationError(f"SLA target {what} must be hours (a number) or a timedelta, got {value!r}")
    td = pd.Timedelta(value) if isinstance(value, timedelta) else pd.Timedelta(hours=float(value))
    if td <= pd.Timedelta(0):
        raise ValidationError(f"SLA target {what} must be positive, got {value!r}")
    return td


def _severity_targets(targets: Mapping[str, Hours], what: str) -> dict[str, pd.Timedelta]:
    unknown = sorted(set(targets) - set(SEVERITIES))
    if unknown:
        raise ValidationError(
            f"SLA {what}: unknown severity {', '.join(unknown)} (expected {', '.join(SEVERITIES)})"
        )
    return {sev: _as_timedelta(targets[sev], f"{what} {sev}") for sev in SEVERITIES if sev in targets}


@dataclass(frozen=True)
class SlaTargets:
    """Turnaround targets per severity, with optional overrides per express customer.

    Numbers are hours; timedeltas are accepted too. ``customers`` maps an
    ``express_customer_id`` to the severities whose target differs for that customer.

    >>> sla = SLA.with_targets(normal=12).for_customer("cus_1", stat=0.5)
    >>> sla.target("normal"), sla.target("stat", "cus_1"), sla.target("stat", "cus_2")
    (Timedelta('0 days 12:00:00'), Timedelta('0 days 00:30:00'), Timedelta('0 days 01:00:00'))
    >>> print(SLA)
    stat 1 h, high 4 h, normal 24 h
    """

    stat: Hours = timedelta(hours=1)
    high: Hours = timedelta(hours=4)
    normal: Hours = timedelta(hours=24)
    customers: Mapping[str, Mapping[str, Hours]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for sev in SEVERITIES:
            object.__setattr__(self, sev, _as_timedelta(getattr(self, sev), sev))
        object.__setattr__(
            self,
            "customers",
            {str(cid): _severity_targets(t, f"for customer {cid}") for cid, t in self.customers.items()},
        )

    def target(self, severity: str, customer_id: str | None = None) -> pd.Timedelta:
        """The target of one severity, for one customer when it has its own."""
        if severity not in SEVERITIES:
            raise ValidationError(f"unknown severity {severity!r} (expected {', '.join(SEVERITIES)})")
        own = self.customers.get(customer_id, {}) if customer_id is not None else {}
        return pd.Timedelta(own.get(severity, getattr(self, severity)))

    def with_targets(self, **hours: Hours) -> SlaTargets:
        """A copy with other default targets for the severities given."""
        return SlaTargets(**{**self._defaults(), **_severity_targets(hours, "override")},
                          customers=self.customers)

    def for_customer(self, customer_id: str, **hours: Hours) -> SlaTargets:
        """A copy where one customer has its own targets for the severities given."""
        merged = {**self.customers.get(customer_id, {}), **_severity_targets(hours, customer_id)}
        return SlaTargets(**self._defaults(), customers={**self.customers, customer_id: merged})

    def table(self) -> pd.DataFrame:
        """The targets as a table: ``express_customer_id`` (null for the default), ``severity``,
        ``target_h``."""
        rows: list[tuple[str | None, str, float]] = [
            (None, sev, self.target(sev) / pd.Timedelta(hours=1)) for sev in SEVERITIES
        ]
        for cid, own in self.customers.items():
            rows += [(cid, sev, pd.Timedelta(td) / pd.Timedelta(hours=1)) for sev, td in own.items()]
        return pd.DataFrame(rows, columns=["express_customer_id", "severity", "target_h"])

    def _defaults(self) -> dict[str, Hours]:
        return {sev: getattr(self, sev) for sev in SEVERITIES}

    def _hours(self, severity: str) -> float:
        return float(pd.Timedelta(getattr(self, severity)) / pd.Timedelta(hours=1))

    def __str__(self) -> str:
        text = ", ".join(f"{sev} {self._hours(sev):g} h" for sev in reversed(SEVERITIES))
        if self.customers:
            text += f" ({len(self.customers)} customer(s) with their own targets)"
        return text


#: The default targets: stat 1 h, high 4 h, normal 24 h.
SLA: Final = SlaTargets()


def _resolve_sla(sla: SlaTargets | Mapping[str, Hours] | None) -> SlaTargets:
    if sla is None:
        return SLA
    if isinstance(sla, SlaTargets):
        return sla
    if isinstance(sla, Mapping):
        return SLA.with_targets(**dict(sla))
    raise ValidationError(f"sla must be SlaTargets, a mapping of severity to hours, or None, not {sla!r}")


# --- column access ----------------------------------------------------------------------------


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _ms(series: pd.Series) -> np.ndarray:
    """Epoch milliseconds as float64, NaN where null (float64 holds them exactly)."""
    if len(series) == 0:
        return np.empty(0, dtype=np.float64)
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        series = pd.to_datetime(series, utc=True)
    ints = series.to_numpy(dtype="datetime64[ms]").view(np.int64)
    out = ints.astype(np.float64)
    out[ints == np.iinfo(np.int64).min] = np.nan
    return out


def _equals(series: pd.Series, value: str) -> np.ndarray:
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = list(series.cat.categories)
        if value not in cats:
            return np.zeros(len(series), dtype=bool)
        return np.asarray(series.cat.codes.to_numpy() == cats.index(value))
    return np.asarray((series == value).fillna(False).to_numpy(dtype=bool))


def _severity_codes(series: pd.Series) -> np.ndarray:
    """0 normal, 1 high, 2 stat, -1 null or unknown."""
    if isinstance(series.dtype, pd.CategoricalDtype) and tuple(series.cat.categories) == SEVERITIES:
        return np.asarray(series.cat.codes.to_numpy(), dtype=np.int64)
    cat = pd.Categorical(series.astype(object), categories=list(SEVERITIES))
    return np.asarray(cat.codes, dtype=np.int64)


def _moment_ms(value: Moment, what: str) -> float | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be a time, got {value!r}") from exc
    if pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    # via datetime64[ms], not nanoseconds: a window may reach past 2262 ("everything until 9999")
    return float(ts.asm8.astype("datetime64[ms]").astype(np.int64))


def _window(window: Window) -> tuple[float, float]:
    if window is None:
        return -np.inf, np.inf
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValidationError(f"window must be (start, end), got {window!r}")
    start, end = _moment_ms(window[0], "window start"), _moment_ms(window[1], "window end")
    lo = -np.inf if start is None else start
    hi = np.inf if end is None else end
    if lo >= hi:
        raise ValidationError(f"window start must be before its end, got {window!r}")
    return lo, hi


def _now_ms(now: Moment) -> float:
    value = _moment_ms(now if now is not None else pd.Timestamp.now(tz="UTC"), "now")
    assert value is not None
    return value


def _inside(ms: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray((ms >= window[0]) & (ms < window[1]))


def _timestamps(ms: np.ndarray) -> pd.Series:
    ints = np.where(np.isnan(ms), np.iinfo(np.int64).min, ms).astype(np.int64)
    return pd.Series(ints.view("datetime64[ms]")).dt.tz_localize("UTC")


# pandas' default string dtype: Arrow-backed "str" on pandas 3, object on pandas 2
_TEXT_DTYPE: Final[Any] = "str" if int(pd.__version__.split(".")[0]) >= 3 else object


def _text(values: pd.Series | list[Any]) -> pd.Series:
    """Strings in pandas' default string dtype, nulls kept null (never the text "None")."""
    if _TEXT_DTYPE is not object and isinstance(values, pd.Series) and values.dtype == _TEXT_DTYPE:
        return values
    series = values.astype(object) if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    series = series.where(series.notna(), None)
    return series if _TEXT_DTYPE is object else series.astype(_TEXT_DTYPE)


def _severity_labels(codes: np.ndarray) -> pd.Categorical:
    dtype = pd.CategoricalDtype(list(SEVERITIES), ordered=True)
    return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int64), dtype=dtype)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(len(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _user_name(first: Any, last: Any, email: Any, user_id: Any) -> str:
    parts = [p for p in (first, last) if isinstance(p, str) and p]
    if parts:
        return " ".join(parts)
    for p in (email, user_id):
        if isinstance(p, str) and p:
            return p
    return UNASSIGNED


# --- the prepared study table -----------------------------------------------------------------


def _strings(series: pd.Series) -> pa.Array:
    """A string column as an Arrow array (zero-copy for pandas' Arrow-backed ``str``)."""
    array = pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.large_string())
    return array


def _history_completion(history: pd.DataFrame, study_ids: pd.Series, done: np.ndarray) -> np.ndarray:
    """Per study, the completion time the history saw (ms), NaN where it saw no transition.

    Only the studies in ``done`` are looked up. String IDs are hashed once each, in Arrow.
    """
    out = np.full(len(study_ids), np.nan)
    if len(history) == 0 or not done.any():
        return out
    seen = ~_equals(_column(history, "change"), "gone")
    h = history.loc[seen]
    observed = _ms(h["observed_at"])
    updated = _ms(_column(h, "updated_at"))
    complete = _equals(_column(h, "study_viewer_status"), "complete")
    encoded = pc.dictionary_encode(_strings(h["study_id"]))
    codes = np.asarray(encoded.indices.fill_null(-1), dtype=np.int64)
    last_incomplete = np.full(len(encoded.dictionary), -np.inf)
    inc = ~complete & (codes >= 0) & ~np.isnan(observed)
    np.maximum.at(last_incomplete, codes[inc], observed[inc])
    transition = complete & (codes >= 0)
    before = last_incomplete[codes[transition]]  # -inf: never seen incomplete, no transition
    transition[transition] = np.isfinite(before) & (observed[transition] > before)
    rows = np.flatnonzero(transition)
    rows = rows[np.lexsort((observed[rows], codes[rows]))]
    first_codes, first = np.unique(codes[rows], return_index=True)
    when = np.fmin(updated[rows[first]], observed[rows[first]])
    wanted = np.flatnonzero(done)
    pos = pc.index_in(_strings(study_ids.take(wanted)), value_set=encoded.dictionary.take(pa.array(first_codes)))
    pos_np = np.asarray(pos.fill_null(-1), dtype=np.int64)
    found = pos_np >= 0
    out[wanted[found]] = when[pos_np[found]]
    return out


def with_completion(studies: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """The study table with the completion of each study resolved once, for several KPIs.

    Adds ``completed_at`` (UTC; NaT for open or cancelled studies) and ``completion_source``
    (``"history"`` or ``"updated_at"``, null where not completed) by the rule in the module
    notes. KPIs given such a table and no ``history`` use these columns as they are, so a
    report over a large table matches history against the studies once, not once per KPI.

    >>> import pandas as pd
    >>> t = pd.Timestamp("2026-11-02 08:00", tz="UTC")
    >>> one = pd.DataFrame({"study_id": ["stu_a"], "severity": ["high"], "is_cancelled": [False],
    ...     "study_viewer_status": ["complete"], "created_at": [t], "updated_at": [t + pd.Timedelta("9h")]})
    >>> seen = pd.DataFrame({"observed_at": [t + pd.Timedelta("1h"), t + pd.Timedelta("4h")],
    ...     "change": ["new", "changed"], "study_id": ["stu_a", "stu_a"],
    ...     "study_viewer_status": ["incomplete", "complete"],
    ...     "updated_at": [t, t + pd.Timedelta("3h")]})
    >>> with_completion(one, seen)[["completed_at", "completion_source"]].to_dict("records")
    [{'completed_at': Timestamp('2026-11-02 11:00:00+0000', tz='UTC'), 'completion_source': 'history'}]
    """
    s = _Studies(studies, history)
    source = np.where(s.from_history, 0, np.where(np.isnan(s.completed_at), -1, 1))
    completed_at = _timestamps(s.completed_at)
    completed_at.index = studies.index
    return studies.assign(
        completed_at=completed_at,
        completion_source=pd.Categorical.from_codes(source, dtype=pd.CategoricalDtype(["history", "updated_at"])),
    )


class _Studies:
    """The study table as arrays, computed once per KPI call."""

    def __init__(self, studies: pd.DataFrame, history: pd.DataFrame | None) -> None:
        if not isinstance(studies, pd.DataFrame):
            raise ValidationError(f"studies must be a pandas DataFrame, not {type(studies).__name__}")
        self.frame = studies.reset_index(drop=True)
        self.n = len(self.frame)
        self.history = history

    @cached_property
    def severity(self) -> np.ndarray:
        return _severity_codes(_column(self.frame, "severity"))

    @cached_property
    def created(self) -> np.ndarray:
        return _ms(_column(self.frame, "created_at"))

    @cached_property
    def updated(self) -> np.ndarray:
        return _ms(_column(self.frame, "updated_at"))

    @cached_property
    def is_cancelled(self) -> np.ndarray:
        col = _column(self.frame, "is_cancelled")
        return np.asarray(col.fillna(False).to_numpy(dtype=bool)) if self.n else np.zeros(0, bool)

    @cached_property
    def cancelled_at(self) -> np.ndarray:
        """When a cancelled study was cancelled (``updated_at`` if ``cancelled_at`` is null)."""
        at = _ms(_column(self.frame, "cancelled_at"))
        at = np.where(np.isnan(at), self.updated, at)
        return np.where(self.is_cancelled, at, np.nan)

    @cached_property
    def complete(self) -> np.ndarray:
        return _equals(_column(self.frame, "study_viewer_status"), "complete")

    @cached_property
    def open(self) -> np.ndarray:
        return np.asarray(~self.complete & ~self.is_cancelled & (self.severity >= 0))

    @cached_property
    def _completion(self) -> tuple[np.ndarray, np.ndarray]:
        done = self.complete & ~self.is_cancelled & (self.severity >= 0) & ~np.isnan(self.created)
        if self.history is None and {"completed_at", "completion_source"} <= set(self.frame.columns):
            at = np.where(done, _ms(self.frame["completed_at"]), np.nan)
            return at, done & _equals(self.frame["completion_source"], "history")
        seen = (
            _history_completion(self.history, _column(self.frame, "study_id"), done)
            if self.history is not None
            else np.full(self.n, np.nan)
        )
        from_history = done & ~np.isnan(seen)
        at = np.where(from_history, seen, np.where(done, self.updated, np.nan))
        return at, from_history

    @property
    def completed_at(self) -> np.ndarray:
        return self._completion[0]

    @property
    def from_history(self) -> np.ndarray:
        return self._completion[1]

    @cached_property
    def turnaround_h(self) -> np.ndarray:
        return np.asarray((self.completed_at - self.created) / HOUR_MS)

    def target_h(self, sla: SlaTargets) -> np.ndarray:
        base = np.array([sla._hours(sev) for sev in SEVERITIES] + [np.nan])
        hours: np.ndarray = base[self.severity]  # -1 picks the NaN
        if sla.customers:
            codes, uniques = pd.factorize(_column(self.frame, "express_customer_id"))
            index = {cid: i for i, cid in enumerate(uniques)}
            for cid, own in sla.customers.items():
                if cid not in index:
                    continue
                mine = codes == index[cid]
                for sev, td in own.items():
                    hours[mine & (self.severity == SEVERITIES.index(sev))] = pd.Timedelta(td) / pd.Timedelta(hours=1)
        return hours


# --- grouping ---------------------------------------------------------------------------------

_DIMENSIONS: Final = ("severity", "week", "assignee", "customer")


def _dimensions(by: By, allowed: Sequence[str]) -> list[str]:
    dims = [by] if isinstance(by, str) else list(by)
    bad = [d for d in dims if d not in allowed]
    if not dims or bad or len(set(dims)) != len(dims):
        raise ValidationError(f"by must be one or more of {', '.join(allowed)}, got {by!r}")
    return dims


def _floor(ms: np.ndarray, freq: str) -> np.ndarray:
    step = _FREQ_MS[freq]
    offset = _MONDAY_MS if freq == "W" else 0
    return np.floor((ms - offset) / step) * step + offset


def _reference_keys(s: _Studies, rows: np.ndarray, who: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Group codes (for ``rows``) and labels of assignees or customers, sorted by label."""
    if who == "assignee":
        id_col, fields = "assigned_to_user_id", ["first_name", "last_name", "email"]
        prefix, label, missing = "assigned_to_", "assignee", UNASSIGNED
    else:
        id_col, fields = "express_customer_id", ["name"]
        prefix, label, missing = "express_customer_", "customer", NO_CUSTOMER
    all_codes, found = pd.factorize(_column(s.frame, id_col))
    width = len(found) + 1  # the last code is "none": no assignee / no customer
    sub = all_codes[rows]
    sub = np.where(sub < 0, width - 1, sub)
    used = np.flatnonzero(np.bincount(sub, minlength=width))
    remap = np.full(width, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    codes = remap[sub]
    first = pd.Series(codes).drop_duplicates()  # the first row of each group, for its labels
    firsts = np.empty(len(used), dtype=np.int64)
    firsts[first.to_numpy()] = rows[first.index.to_numpy()]
    extra = {f: _column(s.frame, prefix + f).take(firsts).astype(object).tolist() for f in fields}
    key_ids: list[str | None] = [str(found[int(u)]) if u < len(found) else None for u in used]
    if who == "assignee":
        names = [
            _user_name(fn, ln, em, uid) if uid is not None else missing
            for fn, ln, em, uid in zip(extra["first_name"], extra["last_name"], extra["email"], key_ids, strict=True)
        ]
    else:
        names = [
            (nm if isinstance(nm, str) and nm else cid) if cid is not None else missing
            for nm, cid in zip(extra["name"], key_ids, strict=True)
        ]
    order = sorted(range(len(key_ids)), key=lambda i: (key_ids[i] is None, names[i], key_ids[i] or ""))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    keys = pd.DataFrame(
        {
            id_col: _text([key_ids[i] for i in order]),
            label: _text([names[i] for i in order]),
        }
    )
    return rank[codes] if len(codes) else codes.astype(np.int64), keys


def _group(s: _Studies, by: By, rows: np.ndarray, when_ms: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Group code per study (-1 outside ``rows`` or unknown) and the key table of all groups.

    Severity lists all three severities; other dimensions list the values met in ``rows``.
    Several dimensions give every combination, in the order of ``by``.
    """
    dims = _dimensions(by, _DIMENSIONS)
    codes = np.zeros(s.n, dtype=np.int64)
    valid = np.zeros(s.n, dtype=bool)
    valid[rows] = True
    keys = pd.DataFrame(index=range(1))
    for dim in dims:
        dim_codes = np.full(s.n, -1, dtype=np.int64)
        if dim == "severity":
            dim_codes = s.severity.copy()
            dim_keys = pd.DataFrame({"severity": _severity_labels(np.arange(len(SEVERITIES)))})
        elif dim == "week":
            assert when_ms is not None
            weeks = _floor(when_ms[rows], "W")
            known = ~np.isnan(weeks)
            starts = np.unique(weeks[known])
            dim_codes[rows[known]] = np.searchsorted(starts, weeks[known])
            dim_keys = pd.DataFrame({"week": _timestamps(starts)})
        else:
            dim_codes[rows], dim_keys = _reference_keys(s, rows, dim)
        valid &= dim_codes >= 0
        codes = codes * len(dim_keys) + dim_codes
        left = keys.iloc[np.repeat(np.arange(len(keys)), len(dim_keys))].reset_index(drop=True)
        right = dim_keys.iloc[np.tile(np.arange(len(dim_keys)), len(keys))].reset_index(drop=True)
        keys = pd.concat([left, right], axis=1)
    return np.where(valid, codes, -1), keys.reset_index(drop=True)


def _counts(codes: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    picked = codes[mask & (codes >= 0)]
    return np.bincount(picked, minlength=n).astype(np.int64)


def _duration_stats(codes: np.ndarray, mask: np.ndarray, hours: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """count, median, P90 and mean of ``hours`` per group, over the rows in ``mask``."""
    sel = mask & (codes >= 0) & ~np.isnan(hours)
    c, v = codes[sel], hours[sel]
    count = np.bincount(c, minlength=n).astype(np.int64)
    total = np.bincount(c, weights=v, minlength=n)
    result = {"count": count, "mean": _div(total, count.astype(np.float64))}
    median, p90 = np.full(n, np.nan), np.full(n, np.nan)
    result.update(median=median, p90=p90)
    small = np.int16 if n < 2**15 else np.int64  # int16 keys sort by radix, in linear time
    by_group = v[np.argsort(c.astype(small), kind="stable")]
    ends = np.cumsum(count)
    starts = ends - count
    filled = np.flatnonzero(count)
    if len(filled) <= 2_000:
        # a selection per group (linear) beats sorting every value when groups are few
        for g in filled:
            median[g], p90[g] = np.quantile(by_group[starts[g] : ends[g]], (0.5, 0.9))
        return result
    order = np.lexsort((v, c))
    ordered = v[order]
    for out, q in ((median, 0.5), (p90, 0.9)):
        pos = starts[filled] + q * (count[filled] - 1)
        lo, hi = np.floor(pos).astype(np.int64), np.ceil(pos).astype(np.int64)
        out[filled] = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    return result


def _rows(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask)


# --- the KPIs ---------------------------------------------------------------------------------


def turnaround(
    studies: pd.DataFrame,
    by: By = "severity",
    *,
    sla: SlaTargets | Mapping[str, Hours] | None = None,
    history: pd.DataFrame | None = None,
    window: Window = None,
) -> pd.DataFrame:
    """Turnaround (created -> complete) of the studies completed in the window, per group.

    ``by``: ``"severity"``, ``["severity", "week"]`` (the Monday-starting UTC week of
    completion; a cancelled study counts in the week of its cancellation), ``"assignee"``,
    ``"customer"``, or any combination of these.

    Columns: the group keys, then ``completed``, ``median_h``, ``p90_h``, ``mean_h``,
    ``within_target`` (turnaround <= its severity's target, per customer where set),
    ``within_target_share`` (0-1, NaN for an empty group), ``breached``, ``from_history`` and
    ``from_updated_at`` (where each completion time came from, see the module notes) and
    ``cancelled`` (studies cancelled in the window, left out of the figures).

    >>> import pandas as pd
    >>> t = pd.Timestamp("2026-11-02", tz="UTC")
    >>> one = pd.DataFrame({"severity": ["high"], "study_viewer_status": ["complete"],
    ...     "is_cancelled": [False], "created_at": [t], "updated_at": [t + pd.Timedelta("4h")]})
    >>> turnaround(one)[["severity", "completed", "median_h", "within_target_share"]]
      severity  completed  median_h  within_target_share
    0   normal          0       NaN                  NaN
    1     high          1       4.0                  1.0
    2     stat          0       NaN                  NaN
    """
    s = _Studies(studies, history)
    targets = s.target_h(_resolve_sla(sla))
    win = _window(window)
    done = _inside(s.completed_at, win)
    cancelled = s.is_cancelled & (s.severity >= 0) & _inside(s.cancelled_at, win)
    when = np.where(done, s.completed_at, s.cancelled_at)
    codes, keys = _group(s, by, _rows(done | cancelled), when)
    n = len(keys)
    hours = s.turnaround_h
    stats = _duration_stats(codes, done, hours, n)
    within = done & (hours <= targets)
    breached = done & (hours > targets)
    out = keys.assign(
        completed=stats["count"],
        median_h=stats["median"],
        p90_h=stats["p90"],
        mean_h=stats["mean"],
        within_target=_counts(codes, within, n),
    )
    out["within_target_share"] = _div(out["within_target"].to_numpy(np.float64), stats["count"].astype(np.float64))
    out["breached"] = _counts(codes, breached, n)
    out["from_history"] = _counts(codes, done & s.from_history, n)
    out["from_updated_at"] = _counts(codes, done & ~s.from_history, n)
    out["cancelled"] = _counts(codes, cancelled, n)
    return out


def backlog(
    studies: pd.DataFrame,
    *,
    now: Moment = None,
    sla: SlaTargets | Mapping[str, Hours] | None = None,
    window: Window = None,
) -> pd.DataFrame:
    """Open studies (incomplete, not cancelled) at ``now``, by severity and age band.

    Every severity x age band cell is listed (18 rows), empty or not. Columns: ``severity``,
    ``age_band`` (ordered: ``AGE_BANDS``; bands are closed on the left, so 4 h exactly is
    "4-12 h"), ``open``, ``past_target`` (age strictly over the target). With a window, only
    studies created in it count.

    >>> import pandas as pd
    >>> now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
    >>> one = pd.DataFrame({"severity": ["stat"], "study_viewer_status": ["incomplete"],
    ...     "is_cancelled": [False], "created_at": [now - pd.Timedelta("90min")]})
    >>> b = backlog(one, now=now)
    >>> b[b.open > 0].to_dict("records")
    [{'severity': 'stat', 'age_band': '1-4 h', 'open': 1, 'past_target': 1}]
    """
    s = _Studies(studies, None)
    at = _now_ms(now)
    targets = s.target_h(_resolve_sla(sla))
    age = (at - s.created) / HOUR_MS
    is_open = s.open & (age >= 0) & _inside(s.created, _window(window))
    band = np.searchsorted(_AGE_EDGES_H, age, side="right")
    cell = np.where(is_open, s.severity * len(AGE_BANDS) + band, -1)
    n = len(SEVERITIES) * len(AGE_BANDS)
    return pd.DataFrame(
        {
            "severity": _severity_labels(np.repeat(np.arange(len(SEVERITIES)), len(AGE_BANDS))),
            "age_band": pd.Categorical(list(AGE_BANDS) * len(SEVERITIES), categories=list(AGE_BANDS), ordered=True),
            "open": _counts(cell, is_open, n),
            "past_target": _counts(cell, is_open & (age > targets), n),
        }
    )


def overdue(
    studies: pd.DataFrame,
    *,
    now: Moment = None,
    sla: SlaTargets | Mapping[str, Hours] | None = None,
    window: Window = None,
) -> pd.DataFrame:
    """The open studies past their target at ``now``, most overdue first.

    Columns: ``study_id``, ``study_instance_uid``, ``study_description``, ``severity``,
    ``assigned_to_user_id``, ``assignee``, ``express_customer_id``, ``customer``,
    ``created_at``, ``age_h``, ``target_h``, ``overdue_h`` (age minus target). Ties keep the
    older study first, then the smaller study ID.

    >>> import pandas as pd
    >>> now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
    >>> two = pd.DataFrame({"study_id": ["stu_a", "stu_b"], "severity": ["stat", "high"],
    ...     "study_viewer_status": ["incomplete"] * 2, "is_cancelled": [False] * 2,
    ...     "created_at": [now - pd.Timedelta("3h"), now - pd.Timedelta("10h")]})
    >>> overdue(two, now=now)[["study_id", "age_h", "overdue_h"]].to_dict("records")
    [{'study_id': 'stu_b', 'age_h': 10.0, 'overdue_h': 6.0}, {'study_id': 'stu_a', 'age_h': 3.0, 'overdue_h': 2.0}]
    """
    s = _Studies(studies, None)
    at = _now_ms(now)
    targets = s.target_h(_resolve_sla(sla))
    age = (at - s.created) / HOUR_MS
    late = s.open & (age >= 0) & (age > targets) & _inside(s.created, _window(window))
    rows = _rows(late)
    late_by = age[rows] - targets[rows]
    ids = _column(s.frame, "study_id").take(rows).astype(object).to_numpy()
    order = np.lexsort((ids.astype(str), s.created[rows], -late_by))
    rows, late_by = rows[order], late_by[order]
    who_codes, who = _reference_keys(s, rows, "assignee")
    cust_codes, cust = _reference_keys(s, rows, "customer")
    def text(name: str) -> pd.Series:
        return _text(_column(s.frame, name).take(rows).reset_index(drop=True))

    return pd.DataFrame(
        {
            "study_id": text("study_id"),
            "study_instance_uid": text("study_instance_uid"),
            "study_description": text("study_description"),
            "severity": _severity_labels(s.severity[rows]),
            "assigned_to_user_id": _text(who["assigned_to_user_id"].take(who_codes).reset_index(drop=True)),
            "assignee": _text(who["assignee"].take(who_codes).reset_index(drop=True)),
            "express_customer_id": _text(cust["express_customer_id"].take(cust_codes).reset_index(drop=True)),
            "customer": _text(cust["customer"].take(cust_codes).reset_index(drop=True)),
            "created_at": _timestamps(s.created[rows]),
            "age_h": age[rows],
            "target_h": targets[rows],
            "overdue_h": late_by,
        }
    )


def volume(studies: pd.DataFrame, *, freq: Freq = "D", window: Window = None) -> pd.DataFrame:
    """Arrivals (by ``created_at``) per period and severity, with each severity's share.

    ``freq``: ``"h"``, ``"D"`` or ``"W"`` (weeks start Monday 00:00 UTC). Every period from
    the window's start (or the first arrival) to its end (or the last arrival) is listed, with
    a row per severity: ``period`` (start, UTC), ``severity``, ``arrivals``, ``share`` (of the
    period's arrivals, 0-1, NaN for an empty period). The share of stat over time is
    ``volume(...).query("severity == 'stat'")``.

    >>> import pandas as pd
    >>> t = pd.Timestamp("2026-11-02 09:00", tz="UTC")
    >>> two = pd.DataFrame({"severity": ["stat", "normal"], "created_at": [t, t]})
    >>> volume(two).query("severity == 'stat'")[["arrivals", "share"]].to_dict("records")
    [{'arrivals': 1, 'share': 0.5}]
    """
    if freq not in _FREQ_MS:
        raise ValidationError(f"freq must be one of {', '.join(_FREQ_MS)}, got {freq!r}")
    s = _Studies(studies, None)
    win = _window(window)
    arrived = _inside(s.created, win) & (s.severity >= 0)
    periods = _floor(s.created, freq)
    step = _FREQ_MS[freq]
    have = periods[arrived]
    first = _floor(np.array([win[0]]), freq)[0] if np.isfinite(win[0]) else (have.min() if len(have) else np.nan)
    last = _floor(np.array([win[1] - 1]), freq)[0] if np.isfinite(win[1]) else (have.max() if len(have) else np.nan)
    k = len(SEVERITIES)
    count = 0 if np.isnan(first) or np.isnan(last) else int((last - first) // step) + 1
    # only arrivals get a period index (a null created_at would not survive the int cast)
    index = np.where(arrived, (periods - first) // step, 0).astype(np.int64) if count else np.zeros(s.n, np.int64)
    cell = np.where(arrived, index * k + s.severity, -1)
    arrivals = _counts(cell, arrived, count * k).reshape(count, k)
    totals = arrivals.sum(axis=1, keepdims=True).astype(np.float64)
    share = _div(arrivals.ravel().astype(np.float64), np.repeat(totals.ravel(), k))
    return pd.DataFrame(
        {
            "period": _timestamps(np.repeat(first + step * np.arange(count, dtype=np.float64), k)),
            "severity": _severity_labels(np.tile(np.arange(k), count)),
            "arrivals": arrivals.ravel(),
            "share": share,
        }
    )


def workload(
    studies: pd.DataFrame,
    *,
    now: Moment = None,
    sla: SlaTargets | Mapping[str, Hours] | None = None,
    history: pd.DataFrame | None = None,
    window: Window = None,
) -> pd.DataFrame:
    """Per assignee: open now by severity, completed in the window, median turnaround, breaches.

    Columns: ``assigned_to_user_id`` (null for unassigned work), ``assignee``,
    ``open_normal``, ``open_high``, ``open_stat``, ``open`` (open at ``now``, whenever
    created: the window bounds completions only), ``completed`` (completed in the window),
    ``median_h``, ``breached`` (completed past target). Busiest first: most open, then most
    completed, then by name.

    >>> import pandas as pd
    >>> now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
    >>> one = pd.DataFrame({"severity": ["stat"], "study_viewer_status": ["incomplete"],
    ...     "is_cancelled": [False], "created_at": [now], "assigned_to_email": ["a@x.org"]})
    >>> workload(one, now=now)[["assignee", "open_stat", "completed"]].to_dict("records")
    [{'assignee': '(unassigned)', 'open_stat': 1, 'completed': 0}]
    """
    s = _Studies(studies, history)
    at = _now_ms(now)
    targets = s.target_h(_resolve_sla(sla))
    win = _window(window)
    is_open = s.open & (s.created <= at)
    done = _inside(s.completed_at, win)
    codes, keys = _group(s, "assignee", _rows(is_open | done))
    n = len(keys)
    out = keys.copy()
    for i, sev in enumerate(SEVERITIES):
        out[f"open_{sev}"] = _counts(codes, is_open & (s.severity == i), n)
    out["open"] = _counts(codes, is_open, n)
    stats = _duration_stats(codes, done, s.turnaround_h, n)
    out["completed"] = stats["count"]
    out["median_h"] = stats["median"]
    out["breached"] = _counts(codes, done & (s.turnaround_h > targets), n)
    out = out.sort_values(["open", "completed", "assignee"], ascending=[False, False, True], kind="stable")
    return out.reset_index(drop=True)


def customers(
    studies: pd.DataFrame,
    *,
    sla: SlaTargets | Mapping[str, Hours] | None = None,
    history: pd.DataFrame | None = None,
    window: Window = None,
) -> pd.DataFrame:
    """Per express customer: volume, share within target, cancellation rate.

    Columns: ``express_customer_id`` (null for studies without one), ``customer``,
    ``arrivals`` (created in the window), ``completed`` (completed in the window),
    ``within_target``, ``within_target_share`` (of completed; targets per customer where
    set), ``cancelled`` (of the arrivals, cancelled now), ``cancellation_rate`` (cancelled /
    arrivals). Largest first.

    >>> import pandas as pd
    >>> t = pd.Timestamp("2026-11-02", tz="UTC")
    >>> two = pd.DataFrame({"severity": ["normal"] * 2, "study_viewer_status": ["incomplete"] * 2,
    ...     "is_cancelled": [True, False], "created_at": [t, t],
    ...     "express_customer_id": ["cus_1", "cus_1"], "express_customer_name": ["North", "North"]})
    >>> customers(two)[["customer", "arrivals", "cancellation_rate"]].to_dict("records")
    [{'customer': 'North', 'arrivals': 2, 'cancellation_rate': 0.5}]
    """
    s = _Studies(studies, history)
    targets = s.target_h(_resolve_sla(sla))
    win = _window(window)
    arrived = _inside(s.created, win) & (s.severity >= 0)
    done = _inside(s.completed_at, win)
    codes, keys = _group(s, "customer", _rows(arrived | done))
    n = len(keys)
    out = keys.assign(arrivals=_counts(codes, arrived, n), completed=_counts(codes, done, n))
    out["within_target"] = _counts(codes, done & (s.turnaround_h <= targets), n)
    out["within_target_share"] = _div(out["within_target"].to_numpy(np.float64), out["completed"].to_numpy(np.float64))
    out["cancelled"] = _counts(codes, arrived & s.is_cancelled, n)
    out["cancellation_rate"] = _div(out["cancelled"].to_numpy(np.float64), out["arrivals"].to_numpy(np.float64))
    out = out.sort_values(["arrivals", "completed", "customer"], ascending=[False, False, True], kind="stable")
    return out.reset_index(drop=True)


def cancellations(studies: pd.DataFrame, by: By = "severity", *, window: Window = None) -> pd.DataFrame:
    """Cancellation rate of the studies created in the window, and time to cancellation.

    ``by``: ``"severity"``, ``"customer"`` or ``["severity", "customer"]``. Columns: the group
    keys, ``arrivals``, ``cancelled``, ``cancellation_rate`` (0-1, NaN for an empty group),
    ``median_to_cancel_h``, ``p90_to_cancel_h``, ``mean_to_cancel_h`` (``created_at`` to
    ``cancelled_at``).

    >>> import pandas as pd
    >>> t = pd.Timestamp("2026-11-02", tz="UTC")
    >>> two = pd.DataFrame({"severity": ["stat", "stat"], "is_cancelled": [True, False],
    ...     "created_at": [t, t], "cancelled_at": [t + pd.Timedelta("2h"), pd.NaT]})
    >>> cancellations(two).loc[2, ["cancellation_rate", "median_to_cancel_h"]].tolist()
    [0.5, 2.0]
    """
    _dimensions(by, ("severity", "customer"))
    s = _Studies(studies, None)
    arrived = _inside(s.created, _window(window)) & (s.severity >= 0)
    codes, keys = _group(s, by, _rows(arrived))
    n = len(keys)
    gone = arrived & s.is_cancelled
    stats = _duration_stats(codes, gone, (s.cancelled_at - s.created) / HOUR_MS, n)
    out = keys.assign(arrivals=_counts(codes, arrived, n), cancelled=_counts(codes, gone, n))
    out["cancellation_rate"] = _div(out["cancelled"].to_numpy(np.float64), out["arrivals"].to_numpy(np.float64))
    out["median_to_cancel_h"] = stats["median"]
    out["p90_to_cancel_h"] = stats["p90"]
    out["mean_to_cancel_h"] = stats["mean"]
    return out

