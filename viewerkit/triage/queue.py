"""The triage board's model: the worklist as plain state (filters, sort, page, selection)
over a study table, with no widgets. The board (``viewerkit.triage.board``) only renders it,
so everything an analyst can do is tested here without a browser.

Work is done on whole columns: the study table is read once into numpy arrays (codes for
severity, status, assignee and customer; deadlines in ms), so a filter change, a sort and
one rendered page over 100,000 studies is a few vectorised passes, and only the visible
page becomes a DataFrame.

SLA states (``sla_state``), from ``reports`` SLA targets (per-customer targets honoured),
recomputed at every call from ``now``, without refetching:

- ``overdue``: open and past its target (age strictly over it, as the reports count);
- ``due soon``: less than :data:`DUE_SOON_SHARE` (25 %) of its target left, so a stat study
  (1 h) is due soon in its last 15 minutes, a normal one (24 h) in its last 6 hours;
- ``on time``: otherwise; closed studies have no state.

The default order is PowerScribe's deadline view and PACSonWEB's priority-then-oldest:
time left to target ascending (overdue first), then severity (stat first), then oldest.

>>> import pandas as pd
>>> now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
>>> studies = pd.DataFrame({"study_id": ["stu_" + c * 32 for c in "ab"],
...     "severity": ["normal", "stat"], "study_viewer_status": ["incomplete"] * 2,
...     "is_cancelled": [False] * 2, "created_at": [now - pd.Timedelta("20h"), now - pd.Timedelta("50min")]})
>>> queue = TriageQueue(studies, now=now)
>>> queue.page_table(now=now)[["severity", "sla_state", "left"]].values.tolist()
[['stat', 'due soon', '10 min left'], ['normal', 'due soon', '4 h left']]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import numpy as np
import pandas as pd

from viewerkit.errors import Reason, ValidationError
from viewerkit.reports.sla import HOUR_MS, Moment, SlaLike, deadlines, now_ms, resolve_sla
from viewerkit.schema import SEVERITIES, VIEWER_STATUSES, Severity
from viewerkit.timezones import TimeZoneLike, report_timezone

__all__ = [
    "TriageQueue",
    "QueueFilters",
    "SORTS",
    "DUE_SOON_SHARE",
    "SLA_STATES",
    "UNASSIGNED",
    "NO_CUSTOMER",
]

#: Share of its target under which an open study is "due soon" (25 %: stat's last 15 min).
DUE_SOON_SHARE: Final = 0.25
#: The SLA states, most urgent first; closed studies have none ("").
SLA_STATES: Final = ("overdue", "due soon", "on time")
#: The filter value that selects studies with no assignee / no customer.
UNASSIGNED: Final = None
NO_CUSTOMER: Final = None
#: The sorts the board offers: name -> what it orders by (ties always: severity, oldest).
SORTS: Final[Mapping[str, str]] = {
    "deadline": "time left to target, overdue first",
    "severity": "stat first, then oldest",
    "oldest": "created longest ago first",
    "newest": "created most recently first",
    "assignee": "assignee name, then deadline",
    "customer": "customer name, then deadline",
}
_WHAT: Final = "triage queue"


@dataclass(frozen=True)
class QueueFilters:
    """Which studies the worklist shows; an empty tuple means "any".

    ``severity`` / ``status`` (viewer status) / ``assignee`` (user IDs, None for
    unassigned) / ``customer`` (express customer IDs, None for none): any of the values;
    ``cancelled``: True / False / None (either); ``search``: text the description contains
    (any case); ``min_age_h`` / ``max_age_h``: age in hours at ``now``; ``sla``: SLA states.
    The default is the open worklist: incomplete, not cancelled.
    """

    severity: tuple[str, ...] = ()
    status: tuple[str, ...] = ("incomplete",)
    cancelled: bool | None = False
    assignee: tuple[str | None, ...] = ()
    customer: tuple[str | None, ...] = ()
    search: str = ""
    min_age_h: float | None = None
    max_age_h: float | None = None
    sla: tuple[str, ...] = ()


def _tuple(value: object) -> tuple[Any, ...]:
    if value is None or isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)


def _check_filters(filters: QueueFilters) -> None:
    cases: list[dict[str, Any]] = []
    for name, allowed in (("severity", SEVERITIES), ("status", VIEWER_STATUSES), ("sla", SLA_STATES)):
        for value in getattr(filters, name):
            if value not in allowed:
                cases.append({"field": name, "value": value, "reason": Reason.NOT_A_CHOICE,
                              "detail": ", ".join(allowed)})
    if filters.cancelled not in (True, False, None):
        cases.append({"field": "cancelled", "value": filters.cancelled, "reason": Reason.NOT_BOOLEAN})
    if not isinstance(filters.search, str):
        cases.append({"field": "search", "value": filters.search, "reason": Reason.NOT_TEXT})
    for name in ("min_age_h", "max_age_h"):
        value = getattr(filters, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or math.isnan(value)):
            cases.append({"field": name, "value": value, "reason": Reason.NOT_A_DURATION})
    if cases:
        raise ValidationError.from_cases(_WHAT, cases)


def _display_left(left_h: np.ndarray) -> list[str]:
    """Hours left (negative: past) as short text: "10 min left", "3 h 20 min overdue"."""
    out = []
    for value in left_h.tolist():
        if value != value:  # NaN: closed
            out.append("")
            continue
        minutes = int(round(abs(value) * 60))
        hours, rest = divmod(minutes, 60)
        if hours >= 48:
            text = f"{hours // 24} d {hours % 24} h"
        elif hours:
            text = f"{hours} h" + (f" {rest} min" if rest else "")
        else:
            text = f"{rest} min"
        out.append(f"{text} overdue" if value < 0 else f"{text} left")
    return out


class TriageQueue:
    """The worklist state over one study table (see the module notes).

    ``studies``: the study table (``fetch_studies`` / ``StudyCache.load``); ``sla``: the
    targets (``reports.SLA`` by default; per-customer targets honoured); ``tz``: the time
    zone times are shown in (``viewerkit.timezones.report_timezone``); ``due_soon``: the
    share of a target under which a study is due soon; ``page_size``: rows per page.

    Selection is by study ID, never row position: it survives paging, sorting and
    :meth:`refresh`; a filter change or a refresh keeps only the selected studies that still
    match (an action never reaches a study the analyst cannot see in the list).
    """

    def __init__(
        self,
        studies: pd.DataFrame,
        *,
        sla: SlaLike = None,
        tz: TimeZoneLike = "UTC",
        due_soon: float = DUE_SOON_SHARE,
        page_size: int = 50,
        now: Moment = None,
    ) -> None:
        cases = []
        if isinstance(due_soon, bool) or not isinstance(due_soon, (int, float)) or not 0 <= due_soon <= 1:
            cases.append({"field": "due_soon", "value": due_soon, "reason": Reason.OUT_OF_RANGE,
                          "detail": "a share of the target, 0 to 1"})
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            cases.append({"field": "page_size", "value": page_size, "reason": Reason.OUT_OF_RANGE,
                          "detail": "a whole number, 1 or more"})
        if cases:
            raise ValidationError.from_cases(_WHAT, cases)
        self.sla = resolve_sla(sla)
        self.zone = report_timezone(tz)
        self.due_soon = float(due_soon)
        self.page_size = page_size
        self.filters = QueueFilters()
        self.sort: str = "deadline"
        self.descending = False
        self.page = 0
        self._selected: set[str] = set()
        #: goes up whenever the selection changes (ticks, select all, clear, and studies
        #: dropped because they no longer match): a preview taken at another version is stale
        self.selection_version = 0
        self._load(studies, now)

    # -- the table ---------------------------------------------------------------------------

    def _load(self, studies: pd.DataFrame, now: Moment) -> None:
        if "study_id" not in studies.columns:
            raise ValidationError.one(_WHAT, "study_id", None, Reason.MISSING_COLUMN)
        self.studies = studies.reset_index(drop=True)
        n = len(self.studies)
        marks = deadlines(self.studies, sla=self.sla, now=now)
        self._target_ms = (marks["target_h"].to_numpy(dtype=float)) * HOUR_MS
        created = pd.to_datetime(self.studies["created_at"], utc=True)
        stamps = created.dt.tz_localize(None).to_numpy(dtype="datetime64[ms]")
        self._created_ms = stamps.astype(np.int64).astype(float)
        self._created_ms[np.isnat(stamps)] = np.nan
        self._ids = self.studies["study_id"].astype(str).to_numpy(dtype=object)
        sev = pd.Categorical(self.studies["severity"], categories=list(SEVERITIES))
        self._severity = np.asarray(sev.codes, dtype=np.int64)  # -1 unknown
        status = pd.Categorical(self.studies["study_viewer_status"], categories=list(VIEWER_STATUSES))
        self._status = np.asarray(status.codes, dtype=np.int64)
        self._cancelled = self.studies["is_cancelled"].fillna(False).to_numpy(dtype=bool)
        self._assignee_codes, self._assignee_ids = self._codes("assigned_to_user_id")
        self._customer_codes, self._customer_ids = self._codes("express_customer_id")
        self._assignee_names = self._names(
            self._assignee_codes, self._assignee_ids, "assigned_to_", ("first_name", "last_name", "email"),
            "(unassigned)")
        self._customer_names = self._names(
            self._customer_codes, self._customer_ids, "express_customer_", ("name",), "(no customer)")
        description = self.studies.get("study_description")
        self._description = (
            description.fillna("").astype(str).str.lower().to_numpy(dtype=object)
            if description is not None else np.full(n, "", dtype=object)
        )
        self._search_cache: tuple[str, np.ndarray] | None = None
        # selection kept only for studies that are still there
        kept = self._selected & set(self._ids.tolist())
        if kept != self._selected:  # selected studies gone from the table
            self._selected = kept
            self.selection_version += 1

    def _codes(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        values = self.studies[column] if column in self.studies else pd.Series([None] * len(self.studies))
        codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
        return np.asarray(codes, dtype=np.int64), np.asarray(uniques, dtype=object)

    def _names(
        self, codes: np.ndarray, ids: np.ndarray, prefix: str, fields: tuple[str, ...], missing: str
    ) -> np.ndarray:
        """A display name per code (the extra last one: "none"), from the first row of each
        code: the first and last name (else the email, else the ID) of a user, the name
        (else the ID) of a customer."""
        names = np.empty(len(ids) + 1, dtype=object)
        names[-1] = missing
        if len(ids) == 0:
            return names
        known = codes >= 0
        first = pd.Series(np.flatnonzero(known)).groupby(codes[known]).first()
        columns = {f: self.studies.get(prefix + f) for f in fields}
        for code, row in zip(first.index.tolist(), first.tolist(), strict=True):
            texts = [column.iloc[row] if (column := columns[f]) is not None else None for f in fields]
            texts = [t if isinstance(t, str) and t else None for t in texts]
            if len(fields) > 1:  # a user: "First Last", else the email
                full = " ".join(t for t in texts[:2] if t)
                shown = full or texts[2]
            else:
                shown = texts[0]
            names[code] = shown or str(ids[code])
        return names

    def choices(self, field: Literal["assignee", "customer"]) -> list[tuple[str, str | None]]:
        """The values an ``assignee`` or ``customer`` filter can take, as ``(label, value)``
        pairs for a picker: "(unassigned)" / "(no customer)" first (value None), then each
        one seen in the studies by its display name (a user's first and last name, else email,
        else ID; a customer's name, else ID), sorted by label.

        >>> one = pd.DataFrame({"study_id": ["stu_1"], "severity": ["stat"], "is_cancelled": [False],
        ...     "study_viewer_status": ["incomplete"], "created_at": [pd.Timestamp("2026-11-30", tz="UTC")],
        ...     "assigned_to_user_id": ["usr_1"], "assigned_to_email": ["ana@x.example"]})
        >>> TriageQueue(one).choices("assignee")
        [('(unassigned)', None), ('ana@x.example', 'usr_1')]
        """
        if field not in ("assignee", "customer"):
            raise ValueError(f"choices are for 'assignee' or 'customer', not {field!r}")
        ids, names = ((self._assignee_ids, self._assignee_names) if field == "assignee"
                      else (self._customer_ids, self._customer_names))
        seen = sorted((str(names[code]), str(ids[code])) for code in range(len(ids)))
        return [(str(names[-1]), None), *seen]

    def refresh(self, studies: pd.DataFrame, *, now: Moment = None) -> None:
        """Replace the studies (a new refresh of the cache), keeping filters, sort, page (as
        far as it still exists) and the selected studies that are still there and match."""
        self._load(studies, now)
        self.prune(now)
        self.page = min(self.page, max(self.pages(now) - 1, 0))

    # -- filters and sort ----------------------------------------------------------------------

    def set_filters(self, *, now: Moment = None, **changes: Any) -> QueueFilters:
        """Change some filters (the fields of :class:`QueueFilters`; a single value or a
        list for the tuple ones); back to the first page; the selection keeps only studies
        that still match. Bad values raise ``ValidationError`` naming each field, and the
        filters stay as they were."""
        unknown = [k for k in changes if k not in {f.name for f in dataclasses.fields(QueueFilters)}]
        if unknown:
            raise ValidationError.from_cases(_WHAT, [
                {"field": k, "value": changes[k], "reason": Reason.NOT_A_CHOICE,
                 "detail": "not a filter"} for k in unknown])
        for name in ("severity", "status", "assignee", "customer", "sla"):
            if name in changes:
                changes[name] = _tuple(changes[name])
        filters = dataclasses.replace(self.filters, **changes)
        _check_filters(filters)
        self.filters = filters
        self.page = 0
        self.prune(now)
        return filters

    def clear_filters(self, *, now: Moment = None) -> QueueFilters:
        """Back to the default filters (the open worklist)."""
        self.filters = QueueFilters()
        self.page = 0
        self.prune(now)
        return self.filters

    def set_sort(self, name: str, *, descending: bool = False) -> None:
        """Order by one of :data:`SORTS` (ties: severity, then oldest)."""
        if name not in SORTS:
            raise ValidationError.one(_WHAT, "sort", name, Reason.NOT_A_CHOICE, detail=", ".join(SORTS))
        self.sort, self.descending = name, bool(descending)

    def _left_ms(self, at: float) -> np.ndarray:
        left: np.ndarray = self._created_ms + self._target_ms - at
        return left

    def _open(self) -> np.ndarray:
        is_open: np.ndarray = (self._status == 0) & ~self._cancelled & (self._severity >= 0)
        return is_open

    def _states(self, at: float) -> np.ndarray:
        """Per study: 0 overdue, 1 due soon, 2 on time, 3 closed / unknown."""
        left = self._left_ms(at)
        state = np.full(len(left), 3, dtype=np.int64)
        is_open = self._open() & ~np.isnan(left)
        state[is_open] = 2
        soon = is_open & (left < self.due_soon * self._target_ms)
        state[soon] = 1
        state[is_open & (left < 0)] = 0
        return state

    def _mask(self, at: float) -> np.ndarray:
        f = self.filters
        mask = np.ones(len(self._ids), dtype=bool)
        if f.severity:
            mask &= np.isin(self._severity, [SEVERITIES.index(s) for s in f.severity])
        if f.status:
            mask &= np.isin(self._status, [VIEWER_STATUSES.index(s) for s in f.status])
        if f.cancelled is not None:
            mask &= self._cancelled == f.cancelled
        for wanted, codes, ids in ((f.assignee, self._assignee_codes, self._assignee_ids),
                                   (f.customer, self._customer_codes, self._customer_ids)):
            if wanted:
                lookup = {v: i for i, v in enumerate(ids.tolist())}
                allowed = [lookup[v] for v in wanted if v is not None and v in lookup]
                allowed += [-1] if None in wanted else []
                mask &= np.isin(codes, allowed)
        if f.search:
            mask &= self._search(f.search.lower())
        if f.min_age_h is not None or f.max_age_h is not None:
            age_h = (at - self._created_ms) / HOUR_MS
            if f.min_age_h is not None:
                mask &= age_h >= f.min_age_h
            if f.max_age_h is not None:
                mask &= age_h <= f.max_age_h
        if f.sla:
            states = self._states(at)
            mask &= np.isin(states, [SLA_STATES.index(s) for s in f.sla])
        return mask

    def _search(self, text: str) -> np.ndarray:
        if self._search_cache is None or self._search_cache[0] != text:
            found = pd.Series(self._description).str.contains(text, regex=False).to_numpy(dtype=bool)
            self._search_cache = (text, found)
        return self._search_cache[1]

    def _order(self, positions: np.ndarray, at: float) -> np.ndarray:
        """``positions`` in the current sort's order (np.lexsort: last key first)."""
        if len(positions) == 0:
            return positions
        left = self._left_ms(at)[positions]
        left = np.where(np.isnan(left), np.inf, left)  # closed studies after open ones
        severity = -self._severity[positions]  # stat first
        created = np.nan_to_num(self._created_ms[positions], nan=np.inf)
        if self.sort == "deadline":
            keys = [created, severity, left]
        elif self.sort == "severity":
            keys = [created, severity]
        elif self.sort == "oldest":
            keys = [severity, created]
        elif self.sort == "newest":
            keys = [severity, -created]
        elif self.sort == "assignee":
            names = self._assignee_names[self._assignee_codes[positions]]
            keys = [created, severity, left, _ranks(names)]
        else:
            names = self._customer_names[self._customer_codes[positions]]
            keys = [created, severity, left, _ranks(names)]
        order = np.lexsort(keys)
        if self.descending:
            order = order[::-1]
        ordered: np.ndarray = positions[order]
        return ordered

    def prune(self, now: Moment = None) -> int:
        """Drop from the selection the studies that do not match the filters at ``now``
        (time-based filters, SLA state and age, change as time passes); returns how many
        were dropped. The selection's readers (``counts``, ``selected_ids``,
        ``selected_studies``, ``plan``) prune first, so an action never reaches a study the
        analyst cannot see."""
        if not self._selected:
            return 0
        matching = set(self._ids[self._mask(now_ms(now))].tolist())
        before = len(self._selected)
        self._selected &= matching
        dropped = before - len(self._selected)
        self.selection_version += bool(dropped)
        return dropped

    # -- reading -------------------------------------------------------------------------------

    def matching_positions(self, now: Moment = None) -> np.ndarray:
        """Row positions of the matching studies, in the current order."""
        at = now_ms(now)
        return self._order(np.flatnonzero(self._mask(at)), at)

    def matching_ids(self, now: Moment = None) -> list[str]:
        """The study IDs that match the filters, in the current order."""
        ids: list[str] = self._ids[self.matching_positions(now)].tolist()
        return ids

    def pages(self, now: Moment = None) -> int:
        """How many pages the matching studies fill (at least 1)."""
        return max(1, -(-int(self._mask(now_ms(now)).sum()) // self.page_size))

    def go_to(self, page: int, *, now: Moment = None) -> int:
        """Show page ``page`` (0-based), clamped to the pages there are; returns it."""
        self.page = int(min(max(page, 0), self.pages(now) - 1))
        return self.page

    def counts(self, now: Moment = None) -> dict[str, int]:
        """For the current filters at ``now``: ``matching``, one count per severity
        (``stat``, ``high``, ``normal``), ``overdue``, ``due_within_hour`` (open, not yet
        overdue, with under an hour left), and ``selected``."""
        at = now_ms(now)
        mask = self._mask(at)
        counts = {"matching": int(mask.sum())}
        for code, sev in reversed(list(enumerate(SEVERITIES))):
            counts[sev] = int((mask & (self._severity == code)).sum())
        left = self._left_ms(at)
        is_open = mask & self._open()
        counts["overdue"] = int((is_open & (left < 0)).sum())
        counts["due_within_hour"] = int((is_open & (left >= 0) & (left < HOUR_MS)).sum())
        self.prune(now)
        counts["selected"] = len(self._selected)
        return counts

    def page_table(self, now: Moment = None) -> pd.DataFrame:
        """The visible page as a DataFrame, in order: ``study_id``, ``selected``, ``severity``,
        ``sla_state`` (overdue / due soon / on time / "" for closed), ``left`` (e.g. "10 min
        left", "3 h 20 min overdue"), ``left_h`` (hours; negative once past), ``deadline``
        and ``created_at`` (in the queue's time zone), ``age_h``, ``status``, ``cancelled``,
        ``assignee``, ``customer``, ``description``. Only this page is built."""
        at = now_ms(now)
        positions = self.matching_positions(now)
        self.page = int(min(self.page, max(-(-len(positions) // self.page_size) - 1, 0)))
        shown = positions[self.page * self.page_size : (self.page + 1) * self.page_size]
        left_ms = self._left_ms(at)[shown]
        is_open = self._open()[shown]
        left_h = np.where(is_open, left_ms / HOUR_MS, np.nan)
        states = self._states(at)[shown]
        created = pd.to_datetime(self._created_ms[shown], unit="ms", utc=True)
        deadline = pd.to_datetime(self._created_ms[shown] + self._target_ms[shown], unit="ms", utc=True)
        rows = self.studies.iloc[shown]
        return pd.DataFrame(
            {
                "study_id": self._ids[shown],
                "selected": np.array([i in self._selected for i in self._ids[shown].tolist()], dtype=bool),
                "severity": np.array([SEVERITIES[c] if c >= 0 else "" for c in self._severity[shown]], dtype=object),
                "sla_state": np.array([*SLA_STATES, ""], dtype=object)[states],
                "left": _display_left(left_h),
                "left_h": np.round(left_h, 3),
                "deadline": deadline.tz_convert(self.zone),
                "created_at": created.tz_convert(self.zone),
                "age_h": np.round((at - self._created_ms[shown]) / HOUR_MS, 2),
                "status": np.array([VIEWER_STATUSES[c] if c >= 0 else "" for c in self._status[shown]], dtype=object),
                "cancelled": self._cancelled[shown],
                "assignee": self._assignee_names[self._assignee_codes[shown]],
                "customer": self._customer_names[self._customer_codes[shown]],
                "description": rows["study_description"].to_numpy(dtype=object)
                if "study_description" in rows else np.full(len(shown), None, dtype=object),
            }
        )

    # -- selection -----------------------------------------------------------------------------

    def select(self, study_ids: str | Iterable[str], on: bool = True) -> int:
        """Tick (or untick) studies by ID; IDs not in the table are ignored. Returns the
        count selected."""
        ids = {study_ids} if isinstance(study_ids, str) else set(study_ids)
        ids &= set(self._ids.tolist())
        before = set(self._selected)
        if on:
            self._selected |= ids
        else:
            self._selected -= ids
        self.selection_version += self._selected != before
        return len(self._selected)

    def select_page(self, on: bool = True, *, now: Moment = None) -> int:
        """Tick (or untick) every study on the visible page."""
        return self.select(self.page_table(now)["study_id"].tolist(), on)

    def select_all_matching(self, *, now: Moment = None) -> int:
        """Tick every study that matches the filters (every page)."""
        return self.select(self._ids[self._mask(now_ms(now))].tolist())

    def clear_selection(self) -> None:
        """Untick everything."""
        self.selection_version += bool(self._selected)
        self._selected.clear()

    def selected_ids(self, now: Moment = None) -> list[str]:
        """The selected study IDs that match at ``now``, in the current order."""
        self.prune(now)
        chosen = np.isin(self._ids, np.array(list(self._selected), dtype=object))
        at = now_ms(now)
        ids: list[str] = self._ids[self._order(np.flatnonzero(chosen), at)].tolist()
        return ids

    def selected_studies(self, now: Moment = None) -> pd.DataFrame:
        """The selected studies' rows of the study table (for a bulk plan), those that
        match at ``now``."""
        self.prune(now)
        return self.studies[self.studies["study_id"].isin(self._selected)]

    # -- actions (bulk plans) ------------------------------------------------------------------

    def plan(
        self,
        action: Literal["assign", "unassign", "severity", "complete", "incomplete", "cancel", "uncancel"],
        value: str | None = None,
        *,
        now: Moment = None,
    ) -> Any:
        """The bulk plan (``viewerkit.bulk.Plan``) of an action on the selection: ``assign``
        (``value`` a user ID or email), ``unassign``, ``severity`` (``value`` the severity),
        ``complete`` / ``incomplete``, ``cancel`` / ``uncancel``. Nothing selected, or an
        action or value the plan refuses, is a ``ValidationError``."""
        from viewerkit import bulk

        chosen = self.selected_studies(now)
        if chosen.empty:
            raise ValidationError.one(_WHAT, "selection", 0, Reason.EMPTY, detail="select studies first")
        if action == "assign":
            rows = pd.DataFrame({"study_id": chosen["study_id"], "assigned_to": value})
            plan = bulk.Plan(rows)
        elif action == "unassign":
            plan = bulk.Plan(pd.DataFrame({"study_id": chosen["study_id"], "assigned_to": bulk.UNASSIGN}))
        elif action == "severity":
            plan = bulk.set_severity(chosen, cast("Severity", value))  # the plan checks the value
        elif action in ("complete", "incomplete"):
            plan = bulk.set_status(chosen, action)
        elif action in ("cancel", "uncancel"):
            plan = bulk.cancel(chosen) if action == "cancel" else bulk.uncancel(chosen)
        else:
            raise ValidationError.one(_WHAT, "action", action, Reason.NOT_A_CHOICE,
                                      detail="assign, unassign, severity, complete, incomplete, cancel, uncancel")
        return plan.validate()


def _ranks(names: np.ndarray) -> np.ndarray:
    """Sortable integer ranks of text values (case-insensitive)."""
    lowered = pd.Series(names, dtype=object).fillna("").astype(str).str.lower()
    return np.asarray(pd.factorize(lowered, sort=True)[0], dtype=np.int64)
