"""Severity and turnaround KPIs of the study table, each a tidy DataFrame.

Every KPI takes the study table (``fetch_studies`` / ``StudyCache.load``: one row per study,
the columns of ``viewerkit.schema.STUDY_SCHEMA``; or the same table back from a CSV or Excel
file) and works on whole columns at once (numpy over the timestamp and code arrays; no
Python loop over studies). What a KPI accepts, which columns each needs, and the
``ValidationError`` for anything else (every problem at once, before any number is
computed) are set out once, in ``viewerkit.reports.columns``.

Rules every KPI follows:

- **Hours.** Durations are float hours; column names carry the unit (``median_h``).
- **Turnaround** runs from ``created_at`` to completion. Completion comes from the cache's
  change history (``StudyCache.history()``) where a refresh saw the study incomplete and a
  later one saw it complete: the ``updated_at`` recorded in that first complete observation,
  bounded above by its ``observed_at`` (for a study reopened and completed again, the last
  such transition). Otherwise it is the ``updated_at`` of a complete
  study, which can only overstate it (any later edit moves ``updated_at``). Results count
  which rows used which source (``from_history``, ``from_updated_at``).
- **Targets, windows, now** follow ``viewerkit.reports.sla``: ``sla=`` takes ``SlaTargets``,
  a mapping of severity to hours, or None; *within target* means turnaround <= target (a
  study finished exactly at its target is within it), and an open study is *past target*
  once its age is strictly greater than the target; windows are half-open UTC
  ``(start, end)``; ``now=`` defaults to the current time, and studies created after it are
  not open yet.
- **Periods** (days, weeks, hours) are local to ``tz=`` (default UTC; see
  ``viewerkit.reports.sla.report_timezone``): a day runs from local midnight to local
  midnight (23 or 25 hours across a daylight-saving change), a week from Monday 00:00 local
  time. The tables that bucket by period (``volume``; ``turnaround`` by week) give each
  period's start as a time in that zone and flag a period the data cannot fill,
  ``partial``: it began before the window's start, or ends after the window's end or
  after ``now`` (the current day or week).
- **Cancelled** studies never count as completed; turnaround counts them separately.
- **Windows place events by their own time:** arrivals by ``created_at`` (volume, backlog,
  overdue, customer volume, cancellation rates), completions by completion time
  (turnaround, completed work, within target), cancellations counted by turnaround by
  ``cancelled_at``.
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

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Final, Literal, TypeAlias
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from viewerkit.errors import Reason, ValidationError
from viewerkit.reports.columns import (
    CHANGES,
    COMPLETION_SOURCES,
    HISTORY_COLUMNS,
    StudyColumns,
    arrow_strings,
    needed_columns,
    severity_labels,
    text,
    timestamps,
)
from viewerkit.reports.sla import (
    DAY_MS,
    HOUR_MS,
    SLA,
    Moment,
    SlaLike,
    SlaTargets,
    TimeZoneLike,
    Window,
    now_ms,
    past_target,
    report_timezone,
    resolve_sla,
    window_ms,
)
from viewerkit.schema import SEVERITIES
from viewerkit.staffing import TARGET_ROLE, severity_weights

__all__ = [
    "AGE_BANDS",
    "By",
    "Freq",
    "SLA",
    "SlaTargets",
    "Window",
    "backlog",
    "cancellations",
    "count_created",
    "customers",
    "overdue",
    "turnaround",
    "volume",
    "with_completion",
    "workload",
]

WEEK_MS: Final = 7 * DAY_MS
_MONDAY_MS: Final = 4 * DAY_MS  # 1970-01-05, the first Monday after the epoch
_FREQ_MS: Final = {"h": HOUR_MS, "D": DAY_MS, "W": WEEK_MS}
_KPI_ERROR: Final = "bad KPI arguments"

#: Age bands of the open backlog, youngest first (left-closed: 1 h exactly is "1-4 h").
AGE_BANDS: Final = ("< 1 h", "1-4 h", "4-12 h", "12-24 h", "24-48 h", "> 48 h")
_AGE_EDGES_H: Final = np.array([1.0, 4.0, 12.0, 24.0, 48.0])

#: The columns ``with_completion`` adds, read by the KPIs of completed work when present.
_RESOLVED: Final = ("completed_at", "completion_source")

UNASSIGNED: Final = "(unassigned)"
NO_CUSTOMER: Final = "(no customer)"

By: TypeAlias = "str | Sequence[str]"
Freq: TypeAlias = 'Literal["h", "D", "W"]'


def _inside(ms: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray((ms >= window[0]) & (ms < window[1]))


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


def _history_completion(history: StudyColumns, study_ids: pd.Series, done: np.ndarray) -> np.ndarray:
    """Per study, the completion time the history saw (ms), NaN where it saw no transition.

    Only the studies in ``done`` are looked up. String IDs are hashed once each, in Arrow.
    """
    out = np.full(len(study_ids), np.nan)
    if history.n == 0 or not done.any():
        return out
    seen = history.values("change") != CHANGES.index("gone")
    observed = history.values("observed_at")[seen]
    updated = history.values("updated_at")[seen]
    complete = history.status_is("complete")[seen]
    encoded = pc.dictionary_encode(arrow_strings(history.text("study_id")[seen]))
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
    pos = pc.index_in(arrow_strings(study_ids.take(wanted)), value_set=encoded.dictionary.take(pa.array(first_codes)))
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
    s = _Studies(studies, "with_completion", history, reads=_RESOLVED)
    source = np.where(s.from_history, 0, np.where(np.isnan(s.completed_at), -1, 1))
    completed_at = timestamps(s.completed_at)
    completed_at.index = studies.index
    return s.table().assign(
        completed_at=completed_at,
        completion_source=pd.Categorical.from_codes(source, dtype=pd.CategoricalDtype(["history", "updated_at"])),
    )


class _Studies(StudyColumns):
    """The study table as arrays, checked for what ``report`` needs (``columns.needed_columns``
    with the options given), with each study's completion resolved from ``history``."""

    def __init__(
        self,
        studies: pd.DataFrame,
        report: str,
        history: pd.DataFrame | None = None,
        *,
        by: Sequence[str] = (),
        sla: SlaTargets | None = None,
        reads: Sequence[str] = (),
    ) -> None:
        needs = needed_columns(report, by=by, history=history is not None,
                               customer_targets=sla is not None and bool(sla.customers))
        super().__init__(studies, report, needs, reads)
        self.history = None
        if history is not None:  # an empty history needs no columns
            needs_history = HISTORY_COLUMNS if isinstance(history, pd.DataFrame) and len(history) else ()
            self.history = StudyColumns(history, report, needs_history, field="history")

    @cached_property
    def _completion(self) -> tuple[np.ndarray, np.ndarray]:
        done = self.complete & ~self.is_cancelled & (self.severity >= 0) & ~np.isnan(self.created)
        if self.history is None and self.has("completed_at") and self.has("completion_source"):
            at = np.where(done, self.values("completed_at"), np.nan)
            return at, done & (self.values("completion_source") == COMPLETION_SOURCES.index("history"))
        seen = (
            _history_completion(self.history, self.text("study_id"), done)
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
        customer_ids = self.text("express_customer_id") if sla.customers else None
        return sla.hours_per_study(self.severity, customer_ids)


# --- grouping ---------------------------------------------------------------------------------

_DIMENSIONS: Final = ("severity", "week", "assignee", "customer")


def _dimensions(by: By, allowed: Sequence[str]) -> list[str]:
    """``by`` as a list of dimensions; every bad one reported at once (field ``by``)."""
    allowed_text = f"allowed: {', '.join(allowed)}"
    if not isinstance(by, (str, Sequence)):
        raise ValidationError.one(_KPI_ERROR, "by", by, Reason.WRONG_TYPE,
                                  detail=f"expected a dimension or a list of them, {allowed_text}")
    dims = [by] if isinstance(by, str) else list(by)
    if not dims:
        raise ValidationError.one(_KPI_ERROR, "by", by, Reason.EMPTY, detail=allowed_text)
    cases: list[dict[str, Any]] = [
        {"field": "by", "value": d, "reason": Reason.NOT_A_CHOICE, "detail": allowed_text}
        for d in dims if not isinstance(d, str) or d not in allowed
    ]
    seen: set[object] = set()
    for d in dims:
        if d in seen:
            cases.append({"field": "by", "value": d, "reason": Reason.DUPLICATE})
        seen.add(d)
    if cases:
        raise ValidationError.from_cases(_KPI_ERROR, cases)
    return dims


def _floor(ms: np.ndarray, freq: str) -> np.ndarray:
    step = _FREQ_MS[freq]
    offset = _MONDAY_MS if freq == "W" else 0
    return np.floor((ms - offset) / step) * step + offset


_UTC_KEYS: Final = frozenset({"UTC", "Etc/UTC"})
_QUARTER_HOUR_MS: Final = HOUR_MS // 4


def _is_utc(tz: ZoneInfo) -> bool:
    return tz.key in _UTC_KEYS


def _wall_ms(ms: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """Instants (epoch ms, no NaN) as ``tz``'s wall-clock time, counted like epoch ms."""
    utc = pd.DatetimeIndex(ms.astype(np.int64).astype("datetime64[ms]")).tz_localize("UTC")
    return np.asarray(utc.tz_convert(tz).tz_localize(None).as_unit("ms").asi8, dtype=np.int64)


def _from_wall(wall: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """Local period starts (wall-clock ms) as instants (epoch ms, float): a start that falls
    twice (clocks turned back) is the first, one that never happens (clocks turned forward
    past it) is the first moment after the gap."""
    local = pd.DatetimeIndex(wall.astype(np.int64).astype("datetime64[ms]"))
    aware = local.tz_localize(tz, ambiguous=np.ones(len(wall), dtype=bool), nonexistent="shift_forward")
    return np.asarray(aware.as_unit("ms").asi8, dtype=np.float64)


def local_floor(ms: np.ndarray, freq: str, tz: ZoneInfo) -> np.ndarray:
    """The start (epoch ms) of the local period of ``tz`` holding each instant (``freq``:
    ``"h"``, ``"D"``, ``"W"`` weeks from Monday); NaN stays NaN. The HTML report's tables
    use it too.

    >>> from zoneinfo import ZoneInfo
    >>> noon = pd.Timestamp("2026-11-30 12:00", tz="UTC").value / 1e6
    >>> pd.Timestamp(local_floor(np.array([noon]), "D", ZoneInfo("America/New_York"))[0], unit="ms", tz="UTC")
    Timestamp('2026-11-30 05:00:00+0000', tz='UTC')
    """
    if _is_utc(tz):
        return _floor(ms, freq)
    out = np.full(len(ms), np.nan)
    known = ~np.isnan(ms)
    if not known.any():
        return out
    wall = _wall_ms(ms[known], tz)
    if freq == "h":  # the hour of each instant's own offset: a repeated hour is two hours
        out[known] = ms[known] - wall % HOUR_MS
        return out
    starts, inverse = np.unique(_floor(wall.astype(np.float64), freq), return_inverse=True)
    out[known] = _from_wall(starts, tz)[inverse]
    return out


def local_periods(first: float, last: float, freq: str, tz: ZoneInfo) -> np.ndarray:
    """Every period start from the period ``first`` to the period ``last`` (both starts,
    epoch ms), then the end of the last: one more value than there are periods.

    >>> from zoneinfo import ZoneInfo
    >>> day = 86_400_000.0
    >>> (local_periods(0.0, 2 * day, "D", ZoneInfo("UTC")) / day).tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    step = _FREQ_MS[freq]
    if _is_utc(tz):
        return first + step * np.arange(int((last - first) // step) + 2, dtype=np.float64)
    if freq == "h":
        grid = np.arange(first, last + 2 * HOUR_MS, _QUARTER_HOUR_MS, dtype=np.float64)
        starts = np.unique(local_floor(grid, "h", tz))
        return starts[: int(np.searchsorted(starts, last, side="right")) + 1]
    walls = _floor(_wall_ms(np.array([first, last]), tz).astype(np.float64), freq)
    return _from_wall(np.arange(walls[0], walls[1] + 2 * step, step), tz)


def _period_column(starts: np.ndarray, tz: ZoneInfo) -> pd.Series:
    """Period starts (epoch ms) as times in ``tz`` (UTC stays ``datetime64[ms, UTC]``)."""
    column = timestamps(starts)
    return column if _is_utc(tz) else column.dt.tz_convert(tz)


def _partial(starts: np.ndarray, ends: np.ndarray, window: tuple[float, float], at: float) -> np.ndarray:
    """Periods the data cannot fill: begun before the window, or ending after it or after now."""
    return np.asarray((starts < window[0]) | (ends > min(window[1], at)))


def _reference_keys(s: _Studies, rows: np.ndarray, who: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Group codes (for ``rows``) and labels of assignees or customers, sorted by label."""
    if who == "assignee":
        id_col, fields = "assigned_to_user_id", ["first_name", "last_name", "email"]
        prefix, label, missing = "assigned_to_", "assignee", UNASSIGNED
    else:
        id_col, fields = "express_customer_id", ["name"]
        prefix, label, missing = "express_customer_", "customer", NO_CUSTOMER
    all_codes, found = pd.factorize(s.text(id_col))
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
    extra = {f: s.text(prefix + f).take(firsts).astype(object).tolist() for f in fields}
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
            id_col: text([key_ids[i] for i in order]),
            label: text([names[i] for i in order]),
        }
    )
    return rank[codes] if len(codes) else codes.astype(np.int64), keys


def _group(
    s: _Studies, by: By, rows: np.ndarray, when_ms: np.ndarray | None = None, tz: ZoneInfo | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
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
            dim_keys = pd.DataFrame({"severity": severity_labels(np.arange(len(SEVERITIES)))})
        elif dim == "week":
            assert when_ms is not None and tz is not None
            weeks = local_floor(when_ms[rows], "W", tz)
            known = ~np.isnan(weeks)
            starts = np.unique(weeks[known])
            dim_codes[rows[known]] = np.searchsorted(starts, weeks[known])
            dim_keys = pd.DataFrame({"week": _period_column(starts, tz)})
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
    sla: SlaLike = None,
    history: pd.DataFrame | None = None,
    window: Window = None,
    now: Moment = None,
    tz: TimeZoneLike = "UTC",
) -> pd.DataFrame:
    """Turnaround (created -> complete) of the studies completed in the window, per group.

    ``by``: ``"severity"``, ``["severity", "week"]`` (the week of completion, Monday 00:00
    to Monday 00:00 in ``tz``; a cancelled study counts in the week of its cancellation),
    ``"assignee"``, ``"customer"``, or any combination of these.

    Columns: the group keys, then ``completed``, ``median_h``, ``p90_h``, ``mean_h``,
    ``within_target`` (turnaround <= its severity's target, per customer where set),
    ``within_target_share`` (0-1, NaN for an empty group), ``breached``, ``from_history`` and
    ``from_updated_at`` (where each completion time came from, see the module notes) and
    ``cancelled`` (studies cancelled in the window, left out of the figures). By week, the
    ``week`` column is the week's start in ``tz``, and a last column ``partial`` flags a
    week begun before the window's start or ending after its end or after ``now`` (default:
    the current time): a week that is not over yet.

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
    zone = report_timezone(tz)
    dims = _dimensions(by, _DIMENSIONS)
    targets_of = resolve_sla(sla)
    win, at = window_ms(window), now_ms(now)
    s = _Studies(studies, "turnaround", history, by=dims, sla=targets_of, reads=("cancelled_at", *_RESOLVED))
    targets = s.target_h(targets_of)
    done = _inside(s.completed_at, win)
    cancelled = s.is_cancelled & (s.severity >= 0) & _inside(s.cancelled_at, win)
    when = np.where(done, s.completed_at, s.cancelled_at)
    codes, keys = _group(s, dims, _rows(done | cancelled), when, zone)
    n = len(keys)
    hours = s.turnaround_h
    stats = _duration_stats(codes, done, hours, n)
    within = done & (hours <= targets)
    breached = done & past_target(hours, targets)
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
    if "week" in dims:
        starts = np.asarray(pd.DatetimeIndex(out["week"]).as_unit("ms").asi8, dtype=np.float64)
        # a week lasts 7 days +- an hour: half a day past its start plus 7 days is the next week
        ends = local_floor(starts + WEEK_MS + DAY_MS / 2, "W", zone)
        out["partial"] = _partial(starts, ends, win, at)
    return out


def backlog(
    studies: pd.DataFrame,
    *,
    now: Moment = None,
    sla: SlaLike = None,
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
    at, targets_of, win = now_ms(now), resolve_sla(sla), window_ms(window)
    s = _Studies(studies, "backlog", sla=targets_of)
    targets = s.target_h(targets_of)
    age = (at - s.created) / HOUR_MS
    is_open = s.open_at(at) & _inside(s.created, win)
    band = np.searchsorted(_AGE_EDGES_H, age, side="right")
    cell = np.where(is_open, s.severity * len(AGE_BANDS) + band, -1)
    n = len(SEVERITIES) * len(AGE_BANDS)
    return pd.DataFrame(
        {
            "severity": severity_labels(np.repeat(np.arange(len(SEVERITIES)), len(AGE_BANDS))),
            "age_band": pd.Categorical(list(AGE_BANDS) * len(SEVERITIES), categories=list(AGE_BANDS), ordered=True),
            "open": _counts(cell, is_open, n),
            "past_target": _counts(cell, is_open & past_target(age, targets), n),
        }
    )


def overdue(
    studies: pd.DataFrame,
    *,
    now: Moment = None,
    sla: SlaLike = None,
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
    ...     "created_at": [now - pd.Timedelta("3h"), now - pd.Timedelta("10h")],
    ...     "assigned_to_user_id": [None] * 2, "express_customer_id": [None] * 2})
    >>> overdue(two, now=now)[["study_id", "age_h", "overdue_h"]].to_dict("records")
    [{'study_id': 'stu_b', 'age_h': 10.0, 'overdue_h': 6.0}, {'study_id': 'stu_a', 'age_h': 3.0, 'overdue_h': 2.0}]
    """
    at, targets_of, win = now_ms(now), resolve_sla(sla), window_ms(window)
    s = _Studies(studies, "overdue", sla=targets_of)
    targets = s.target_h(targets_of)
    age = (at - s.created) / HOUR_MS
    late = s.open_at(at) & past_target(age, targets) & _inside(s.created, win)
    rows = _rows(late)
    late_by = age[rows] - targets[rows]
    ids = s.text("study_id").take(rows).astype(object).to_numpy()
    order = np.lexsort((ids.astype(str), s.created[rows], -late_by))
    rows, late_by = rows[order], late_by[order]
    who_codes, who = _reference_keys(s, rows, "assignee")
    cust_codes, cust = _reference_keys(s, rows, "customer")
    def study_text(name: str) -> pd.Series:
        return text(s.text(name).take(rows).reset_index(drop=True))

    return pd.DataFrame(
        {
            "study_id": study_text("study_id"),
            "study_instance_uid": study_text("study_instance_uid"),
            "study_description": study_text("study_description"),
            "severity": severity_labels(s.severity[rows]),
            "assigned_to_user_id": text(who["assigned_to_user_id"].take(who_codes).reset_index(drop=True)),
            "assignee": text(who["assignee"].take(who_codes).reset_index(drop=True)),
            "express_customer_id": text(cust["express_customer_id"].take(cust_codes).reset_index(drop=True)),
            "customer": text(cust["customer"].take(cust_codes).reset_index(drop=True)),
            "created_at": timestamps(s.created[rows]),
            "age_h": age[rows],
            "target_h": targets[rows],
            "overdue_h": late_by,
        }
    )


def volume(
    studies: pd.DataFrame,
    *,
    freq: Freq = "D",
    window: Window = None,
    now: Moment = None,
    tz: TimeZoneLike = "UTC",
) -> pd.DataFrame:
    """Arrivals (by ``created_at``) per period and severity, with each severity's share.

    ``freq``: ``"h"``, ``"D"`` or ``"W"``: hours, days or weeks (Monday 00:00 start) of
    ``tz``'s local time (default UTC; a local day lasts 23 or 25 hours across a
    daylight-saving change). Every period from the window's start (or the first arrival)
    to its end (or the last arrival) is listed, with a row per severity: ``period`` (its
    start, a time in ``tz``), ``severity``, ``arrivals``, ``share`` (of the period's
    arrivals, 0-1, NaN for an empty period), ``partial`` (True for a period the data cannot
    fill: begun before the window's start, or ending after the window's end or after
    ``now``, default the current time; the day still under way is partial). The share of
    stat over time is ``volume(...).query("severity == 'stat'")``.

    >>> import pandas as pd
    >>> t = pd.Timestamp("2026-11-02 09:00", tz="UTC")
    >>> two = pd.DataFrame({"severity": ["stat", "normal"], "created_at": [t, t]})
    >>> volume(two).query("severity == 'stat'")[["arrivals", "share", "partial"]].to_dict("records")
    [{'arrivals': 1, 'share': 0.5, 'partial': False}]
    >>> volume(two, tz="Asia/Tokyo", now=t)["period"].iloc[0]
    Timestamp('2026-11-02 00:00:00+0900', tz='Asia/Tokyo')
    """
    zone = report_timezone(tz)
    if freq not in _FREQ_MS:
        raise ValidationError.one(_KPI_ERROR, "freq", freq, Reason.NOT_A_CHOICE,
                                  detail=f"allowed: {', '.join(_FREQ_MS)}")
    win, at = window_ms(window), now_ms(now)
    s = _Studies(studies, "volume")
    arrived = _inside(s.created, win) & (s.severity >= 0)
    have = s.created[arrived]
    lo = win[0] if np.isfinite(win[0]) else (have.min() if len(have) else np.nan)
    hi = win[1] - 1 if np.isfinite(win[1]) else (have.max() if len(have) else np.nan)
    k = len(SEVERITIES)
    if np.isnan(lo) or np.isnan(hi):
        bounds = np.zeros(1)
    else:
        first, last = local_floor(np.array([lo, hi]), freq, zone)
        bounds = local_periods(first, last, freq, zone)
    count = len(bounds) - 1
    # only arrivals get a period index (a null created_at would not survive the int cast)
    if _is_utc(zone):  # periods of one length: arithmetic, twice as fast as a search
        step = _FREQ_MS[freq]
        index = np.where(arrived, (_floor(s.created, freq) - bounds[0]) // step, 0).astype(np.int64)
    else:
        index = np.searchsorted(bounds, np.where(arrived, s.created, bounds[0]), side="right") - 1
    cell = np.where(arrived, index * k + s.severity, -1)
    arrivals = _counts(cell, arrived, count * k).reshape(count, k)
    totals = arrivals.sum(axis=1, keepdims=True).astype(np.float64)
    share = _div(arrivals.ravel().astype(np.float64), np.repeat(totals.ravel(), k))
    starts, ends = bounds[:-1], bounds[1:]
    return pd.DataFrame(
        {
            "period": _period_column(np.repeat(starts, k), zone),
            "severity": severity_labels(np.tile(np.arange(k), count)),
            "arrivals": arrivals.ravel(),
            "share": share,
            "partial": np.repeat(_partial(starts, ends, win, at), k),
        }
    )


def count_created(studies: pd.DataFrame, *, window: Window = None) -> int:
    """How many studies were created in the window (all of them for None): the "812 of
    20,000" a report over part of a cache states.

    >>> import pandas as pd
    >>> t = pd.Timestamp("2026-11-02 09:00", tz="UTC")
    >>> two = pd.DataFrame({"created_at": [t, t - pd.Timedelta(days=30)]})
    >>> count_created(two, window=("2026-10-20", None))
    1
    """
    win = window_ms(window)
    cols = StudyColumns(studies, "count_created", ("created_at",))
    return int(_inside(cols.created, win).sum())


def workload(
    studies: pd.DataFrame,
    *,
    now: Moment = None,
    sla: SlaLike = None,
    history: pd.DataFrame | None = None,
    window: Window = None,
    users: pd.DataFrame | None = None,
    weights: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Per assignee: open now by severity, completed in the window, median turnaround, breaches.

    Columns: ``assigned_to_user_id`` (null for unassigned work), ``assignee``,
    ``open_normal``, ``open_high``, ``open_stat``, ``open`` (open at ``now``, whenever
    created: the window bounds completions only), ``open_load`` (float: the open counts
    weighted by severity with ``viewerkit.SEVERITY_WEIGHTS``, the one set of weights the
    roster and the bulk engine's balancing use; ``weights`` overrides some, as
    ``viewerkit.severity_weights``), ``completed`` (completed in the window),
    ``median_h``, ``breached`` (completed past target). Busiest first: most open, then most
    completed, then by name.

    ``users`` (the Viewer user list: ``viewerkit.fetch_users`` or ``StudyCache.load_users``)
    adds every listed radiologist (``clinic_role`` ``"Radiologist"``, the roster's rule)
    without work in the table, with zeros: the people who could take work are on the
    report too, not only those who have some.

    >>> import pandas as pd
    >>> now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
    >>> one = pd.DataFrame({"severity": ["stat"], "study_viewer_status": ["incomplete"],
    ...     "is_cancelled": [False], "created_at": [now], "updated_at": [now], "assigned_to_user_id": [None]})
    >>> workload(one, now=now)[["assignee", "open_stat", "open_load", "completed"]].to_dict("records")
    [{'assignee': '(unassigned)', 'open_stat': 1, 'open_load': 4.0, 'completed': 0}]
    """
    resolved = severity_weights(weights)
    at, targets_of, win = now_ms(now), resolve_sla(sla), window_ms(window)
    s = _Studies(studies, "workload", history, sla=targets_of, reads=_RESOLVED)
    targets = s.target_h(targets_of)
    is_open = s.open_at(at)
    done = _inside(s.completed_at, win)
    codes, keys = _group(s, "assignee", _rows(is_open | done))
    n = len(keys)
    out = keys.copy()
    for i, sev in enumerate(SEVERITIES):
        out[f"open_{sev}"] = _counts(codes, is_open & (s.severity == i), n)
    out["open"] = _counts(codes, is_open, n)
    out["open_load"] = np.sum([out[f"open_{sev}"].to_numpy() * resolved[sev] for sev in SEVERITIES],
                              axis=0, dtype=np.float64)
    stats = _duration_stats(codes, done, s.turnaround_h, n)
    out["completed"] = stats["count"]
    out["median_h"] = stats["median"]
    out["breached"] = _counts(codes, done & past_target(s.turnaround_h, targets), n)
    if users is not None:
        out = _with_idle_radiologists(out, users)
    out = out.sort_values(["open", "completed", "assignee"], ascending=[False, False, True], kind="stable")
    return out.reset_index(drop=True)


def _with_idle_radiologists(out: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """``out`` plus a zero row for each listed radiologist it lacks."""
    needed = [c for c in ("user_id", "clinic_role", "first_name", "last_name", "email") if c not in users]
    if needed:
        raise ValidationError.from_cases(
            "workload", [{"field": f"users.{c}", "value": None, "reason": Reason.MISSING_COLUMN} for c in needed]
        )
    radiologists = users[(users["clinic_role"] == TARGET_ROLE).fillna(False).to_numpy(dtype=bool)]
    idle = radiologists[~radiologists["user_id"].isin(out["assigned_to_user_id"].dropna())]
    if idle.empty:
        return out
    names = [
        _user_name(fn, ln, em, uid)
        for fn, ln, em, uid in zip(idle["first_name"].astype(object), idle["last_name"].astype(object),
                                   idle["email"].astype(object), idle["user_id"].astype(object), strict=True)
    ]
    zeros = pd.DataFrame({"assigned_to_user_id": text(idle["user_id"].astype(object).tolist()),
                          "assignee": text(names)})
    for column in out.columns[2:]:
        zeros[column] = np.nan if column == "median_h" else 0
        zeros[column] = zeros[column].astype(out[column].dtype)
    return pd.concat([out, zeros], ignore_index=True)


def customers(
    studies: pd.DataFrame,
    *,
    sla: SlaLike = None,
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
    ...     "is_cancelled": [True, False], "created_at": [t, t], "updated_at": [t, t],
    ...     "express_customer_id": ["cus_1", "cus_1"], "express_customer_name": ["North", "North"]})
    >>> customers(two)[["customer", "arrivals", "cancellation_rate"]].to_dict("records")
    [{'customer': 'North', 'arrivals': 2, 'cancellation_rate': 0.5}]
    """
    targets_of, win = resolve_sla(sla), window_ms(window)
    s = _Studies(studies, "customers", history, sla=targets_of, reads=_RESOLVED)
    targets = s.target_h(targets_of)
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
    dims = _dimensions(by, ("severity", "customer"))
    win = window_ms(window)
    s = _Studies(studies, "cancellations", by=dims, reads=("updated_at",))
    arrived = _inside(s.created, win) & (s.severity >= 0)
    codes, keys = _group(s, dims, _rows(arrived))
    n = len(keys)
    gone = arrived & s.is_cancelled
    stats = _duration_stats(codes, gone, (s.cancelled_at - s.created) / HOUR_MS, n)
    out = keys.assign(arrivals=_counts(codes, arrived, n), cancelled=_counts(codes, gone, n))
    out["cancellation_rate"] = _div(out["cancelled"].to_numpy(np.float64), out["arrivals"].to_numpy(np.float64))
    out["median_to_cancel_h"] = stats["median"]
    out["p90_to_cancel_h"] = stats["p90"]
    out["mean_to_cancel_h"] = stats["mean"]
    return out

