"""Load-balanced reassignment: spread studies over radiologists by their open load.

``reassign(studies, to, workload=...)`` builds the :class:`~viewerkit.bulk.plan.Plan` an
operations analyst needs when a radiologist goes off shift: each study to move gets an
``assigned_to`` among the targets, stat studies first, then high, then normal, the oldest
first within a severity, each to the target with the least severity-weighted load so far.

**Load.** A target's load is the severity-weighted count of its open studies
(``viewerkit.staffing.SEVERITY_WEIGHTS``: stat 4, high 2, normal 1, the one set the roster
and the workload report use; ``weights=`` overrides some of them). The existing load comes
from ``workload``: the study table (open = incomplete and not cancelled) or a roster
(``viewerkit.roster``: its ``open_load`` and ``open``). The studies being moved never count
in it, even when ``workload`` holds them. Without ``workload`` every target starts empty.

**Balance.** With weights that keep stat >= high >= normal (the default, and any sensible
override), the plan is *locally optimal*: no single move of a placed study to another
target with room left would lower the largest load among the targets. (Heaviest first,
each to the least loaded: the last study a target received went to it when it was the
least loaded, and every study it received earlier weighs at least as much.)

**Capacity.** ``capacity`` caps how many studies a target may *receive* in this plan (an int
for every target, or a mapping of user ID or email to a cap; targets not in the mapping
have none). A study that fits nowhere is left out of the plan: the returned plan's
``unplaced`` table lists those studies (same columns, no target), and a warning is logged
on the ``viewerkit.bulk.reassign`` logger, so a script that does not look still says so.

The plan's columns, one row per placed study, in placement order (index 0..n-1):
``study_id``, ``assigned_to`` (the target's user ID), and, carried through to the bulk
result for the analyst to read (they change nothing): ``study_severity``,
``study_created_at``, ``previous_assignee`` (user ID, None when unassigned),
``target_email`` (when known), ``target_load`` and ``target_open`` (the target's weighted
load and open studies right after this placement). (The severity is not in a column named
``severity``: in a plan that column would *set* the severity.)

>>> import pandas as pd
>>> t = pd.Timestamp("2026-11-30 08:00", tz="UTC")
>>> studies = pd.DataFrame({"study_id": ["stu_" + c * 32 for c in "abc"],
...                         "severity": ["normal", "stat", "high"],
...                         "created_at": [t, t, t]})
>>> a, b = "usr_" + "a" * 32, "usr_" + "b" * 32
>>> plan = reassign(studies, [a, b])
>>> plan.frame[["study_severity", "assigned_to", "target_load"]].to_dict("list")
... # doctest: +NORMALIZE_WHITESPACE
{'study_severity': ['stat', 'high', 'normal'],
 'assigned_to': ['usr_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'usr_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',
                 'usr_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'],
 'target_load': [4.0, 2.0, 3.0]}
"""

from __future__ import annotations

import heapq
import logging
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from viewerkit.bulk.plan import Plan
from viewerkit.errors import Reason, ValidationError
from viewerkit.schema import RULES
from viewerkit.staffing import severity_weights

__all__ = ["reassign", "Reassignment", "STRATEGIES", "REASSIGN_COLUMNS"]

log = logging.getLogger(__name__)

#: The placement strategies: ``balance`` (least weighted load first) and ``round_robin``.
STRATEGIES: Final = ("balance", "round_robin")
#: The columns of a reassignment plan (and of its ``unplaced`` table, less the target ones).
REASSIGN_COLUMNS: Final = (
    "study_id",
    "assigned_to",
    "study_severity",
    "study_created_at",
    "previous_assignee",
    "target_email",
    "target_load",
    "target_open",
)
_WHAT: Final = "reassign"
_UNPLACED_COLUMNS: Final = ("study_id", "study_severity", "study_created_at", "previous_assignee")


class Reassignment(Plan):
    """The plan ``reassign`` builds: a :class:`Plan` (preview and apply it as any other),
    plus ``unplaced``, the studies no target had room for (a DataFrame with ``study_id``,
    ``study_severity``, ``study_created_at``, ``previous_assignee``; empty when every study
    was placed)."""

    def __init__(self, rows: pd.DataFrame, unplaced: pd.DataFrame | None = None) -> None:
        super().__init__(rows)
        self.unplaced: pd.DataFrame = (
            unplaced if unplaced is not None else pd.DataFrame(columns=list(_UNPLACED_COLUMNS))
        )

    def __repr__(self) -> str:
        text = super().__repr__()
        if len(self.unplaced):
            text = text[:-1] + f"; {len(self.unplaced):,} unplaced)"
        return text


# --- the targets -----------------------------------------------------------------------------


def _directory(users: pd.DataFrame | None, workload: pd.DataFrame | None) -> tuple[set[str] | None, dict[str, str]]:
    """The user IDs known for sure (None: no user list to check against) and email -> ID,
    from the user list, else from the users ``workload`` names."""
    if users is not None:
        if not isinstance(users, pd.DataFrame) or "user_id" not in users.columns:
            raise ValidationError.one(_WHAT, "users", type(users).__name__, Reason.WRONG_TYPE,
                                      detail="the Viewer user list (fetch_users): a DataFrame with user_id, email")
        frame = users[["user_id", "email"]] if "email" in users.columns else users[["user_id"]].assign(email=None)
        known: set[str] | None = set(users["user_id"].dropna().astype(str))
    elif workload is not None and "assigned_to_user_id" in workload.columns:
        email = workload["assigned_to_email"] if "assigned_to_email" in workload.columns else None
        frame = pd.DataFrame({"user_id": workload["assigned_to_user_id"], "email": email})
        known = None
    elif workload is not None and "user_id" in workload.columns:
        email = workload["email"] if "email" in workload.columns else None
        frame = pd.DataFrame({"user_id": workload["user_id"], "email": email})
        known = None
    else:
        return None, {}
    pairs = frame.dropna().astype(str).drop_duplicates()
    return known, dict(zip(pairs["email"].str.lower(), pairs["user_id"], strict=True))


def _resolve_targets(
    to: object, users: pd.DataFrame | None, workload: pd.DataFrame | None
) -> tuple[list[str], dict[str, str]]:
    """The target user IDs in the order given (each once), and email of each when known;
    ``ValidationError`` naming every entry that cannot be resolved."""
    known, by_email = _directory(users, workload)
    cases: list[dict[str, Any]] = []
    ids: list[str | None] = []
    if isinstance(to, pd.DataFrame):
        if "user_id" not in to.columns:
            raise ValidationError.one(_WHAT, "to", None, Reason.MISSING_COLUMN,
                                      detail="a roster DataFrame (viewerkit.roster) has user_id")
        entries: list[Any] = to["user_id"].astype(object).tolist()
        labels: list[Any] = list(to.index)
        from_roster = True
        if "email" in to.columns:
            for user_id, email in zip(entries, to["email"].astype(object).tolist(), strict=True):
                if isinstance(user_id, str) and isinstance(email, str):
                    by_email.setdefault(email.lower(), user_id)
    elif isinstance(to, str):
        entries, labels, from_roster = [to], [0], False
    elif isinstance(to, Iterable):
        entries = list(to)
        labels, from_roster = list(range(len(entries))), False
    else:
        raise ValidationError.one(_WHAT, "to", type(to).__name__, Reason.WRONG_TYPE,
                                  detail="user IDs and/or emails, or a roster DataFrame")
    if not entries:
        raise ValidationError.one(_WHAT, "to", None, Reason.EMPTY, detail="give at least one user to reassign to")
    for label, value in zip(labels, entries, strict=True):
        case = {"row": label, "field": "to", "value": value}
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            cases.append({**case, "value": None, "reason": Reason.REQUIRED})
            ids.append(None)
        elif not isinstance(value, str):
            cases.append({**case, "reason": Reason.WRONG_TYPE, "detail": "a user ID or an email"})
            ids.append(None)
        elif "@" in value.strip("@") and not from_roster:
            user_id = by_email.get(value.strip().lower())
            if user_id is None:
                where = "the Viewer's user list" if users is not None else (
                    "the users of the workload table" if workload is not None else
                    "no user list (give users= or workload=)")
                cases.append({**case, "reason": Reason.NOT_A_CHOICE, "detail": f"an email not in {where}"})
            ids.append(user_id)
        elif RULES["user_id"].check(value, "to"):
            cases.append({**case, "reason": Reason.NOT_USER_ID, "detail": "a user ID or an email"})
            ids.append(None)
        elif known is not None and not from_roster and value not in known:
            cases.append({**case, "reason": Reason.NOT_A_CHOICE, "detail": "not a user of the Viewer's user list"})
            ids.append(None)
        else:
            ids.append(value)
    if cases:
        raise ValidationError.from_cases(_WHAT, cases)
    targets = list(dict.fromkeys(i for i in ids if i is not None))
    emails = {user_id: email for email, user_id in by_email.items() if user_id in set(targets)}
    return targets, emails


def _caps(capacity: object, targets: list[str], by_email: Mapping[str, str]) -> np.ndarray:
    """The cap of each target (``inf``: none)."""
    caps = np.full(len(targets), np.inf)
    if capacity is None:
        return caps

    def bad(value: object) -> bool:
        return isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or int(value) < 0

    if not isinstance(capacity, Mapping):
        if bad(capacity):
            raise ValidationError.one(_WHAT, "capacity", capacity, Reason.NOT_WHOLE_NUMBER,
                                      detail="studies a target may receive: a whole number >= 0, or a mapping "
                                             "of user to one")
        caps[:] = int(capacity)  # type: ignore[call-overload]
        return caps
    position = {user_id: i for i, user_id in enumerate(targets)}
    ids_by_email = {email.lower(): user_id for user_id, email in by_email.items()}
    cases: list[dict[str, Any]] = []
    for key, value in capacity.items():
        field = f"capacity.{key}"
        user_id = ids_by_email.get(key.strip().lower()) if isinstance(key, str) and "@" in key else key
        if user_id not in position:
            cases.append({"field": field, "value": key, "reason": Reason.NOT_A_CHOICE,
                          "detail": "not one of the targets (to=)"})
        elif bad(value):
            cases.append({"field": field, "value": value, "reason": Reason.NOT_WHOLE_NUMBER,
                          "detail": "a whole number >= 0"})
        else:
            caps[position[user_id]] = int(value)
    if cases:
        raise ValidationError.from_cases(_WHAT, cases)
    return caps


# --- the existing load -----------------------------------------------------------------------


def _existing_load(
    workload: pd.DataFrame | None,
    targets: list[str],
    moving: pd.DataFrame,
    weights: Mapping[str, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Each target's weighted open load and open study count, leaving out the studies being
    moved (``moving``: study_id, weight, open, previous_assignee)."""
    from viewerkit.reports.columns import StudyColumns

    k = len(targets)
    if workload is None:
        return np.zeros(k), np.zeros(k, dtype=np.int64)
    if not isinstance(workload, pd.DataFrame):
        raise ValidationError.one(_WHAT, "workload", type(workload).__name__, Reason.WRONG_TYPE,
                                  detail="the study table (fetch_studies) or a roster (viewerkit.roster)")
    index = pd.Index(targets)
    if "open_load" in workload.columns and "study_id" not in workload.columns:
        missing = [c for c in ("user_id", "open") if c not in workload.columns]
        if missing:
            raise ValidationError.from_cases(_WHAT, [
                {"field": f"workload.{c}", "value": None, "reason": Reason.MISSING_COLUMN,
                 "detail": "a roster (viewerkit.roster) has it"} for c in missing])
        by_user = workload.drop_duplicates("user_id").set_index("user_id")
        load = pd.to_numeric(by_user["open_load"]).reindex(index).fillna(0.0).to_numpy(dtype=np.float64)
        count = pd.to_numeric(by_user["open"]).reindex(index).fillna(0).to_numpy(dtype=np.float64)
        # the roster counted the moved studies still open with a target: take them out
        mine = moving[moving["open"] & moving["previous_assignee"].isin(index)]
        gone = mine.groupby("previous_assignee")["weight"].agg(["sum", "size"]).reindex(index).fillna(0)
        load = np.maximum(load - gone["sum"].to_numpy(dtype=np.float64), 0.0)
        count = np.maximum(count - gone["size"].to_numpy(dtype=np.float64), 0)
        return load, count.astype(np.int64)
    cols = StudyColumns(
        workload, "reassign",
        needs=("study_id", "severity", "study_viewer_status", "is_cancelled", "assigned_to_user_id"),
    )
    import pyarrow as pa
    import pyarrow.compute as pc

    from viewerkit.reports.columns import arrow_strings

    moved = pa.array(moving["study_id"].astype(str).tolist(), type=pa.string())
    listed = arrow_strings(cols.text("study_id")).cast(pa.string())
    staying = ~np.asarray(pc.is_in(listed, value_set=moved).fill_null(False), dtype=bool)
    assignee = cols.text("assigned_to_user_id").astype(object)
    counted = cols.open & staying & assignee.isin(index).to_numpy(dtype=bool)
    table = np.array([weights[s] for s in ("normal", "high", "stat")])
    rows = pd.DataFrame({"user": assignee[counted].to_numpy(),
                         "weight": table[cols.severity[counted]]})
    per_user = rows.groupby("user")["weight"].agg(["sum", "size"]).reindex(index).fillna(0)
    return per_user["sum"].to_numpy(dtype=np.float64), per_user["size"].to_numpy(dtype=np.int64)


# --- placement -------------------------------------------------------------------------------


def _placed(n: int, chosen: list[int], loads: list[float], opens: list[int]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The placements as arrays of n, the studies after the last placed one unplaced."""
    rest = n - len(chosen)
    return (np.array(chosen + [-1] * rest, dtype=np.int64),
            np.array(loads + [np.nan] * rest, dtype=np.float64),
            np.array(opens + [0] * rest, dtype=np.int64))


def _place_balanced(
    weights: np.ndarray, load: np.ndarray, count: np.ndarray, caps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each study (in placement order) to the least loaded target with room (ties: fewest
    studies, then the order given): target index per study (-1: unplaced), and the
    target's load and open count after the placement. A heap over the targets."""
    chosen: list[int] = []
    loads: list[float] = []
    opens: list[int] = []
    left = [float(c) for c in caps.tolist()]
    heap = [(float(load[t]), int(count[t]), t) for t in range(len(load)) if left[t] > 0]
    heapq.heapify(heap)
    for w in weights.tolist():
        if not heap:
            break  # every target is full: the rest stay unplaced
        current, studies, t = heapq.heappop(heap)
        current, studies = current + w, studies + 1
        chosen.append(t)
        loads.append(current)
        opens.append(studies)
        left[t] -= 1
        if left[t] > 0:
            heapq.heappush(heap, (current, studies, t))
    return _placed(len(weights), chosen, loads, opens)


def _place_round_robin(
    weights: np.ndarray, load: np.ndarray, count: np.ndarray, caps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each study to the next target in turn (the order given), skipping full ones."""
    chosen: list[int] = []
    loads: list[float] = []
    opens: list[int] = []
    running = [float(x) for x in load.tolist()]
    studies = [int(x) for x in count.tolist()]
    left = [float(c) for c in caps.tolist()]
    turn = [t for t in range(len(load)) if left[t] > 0]
    at = 0
    for w in weights.tolist():
        if not turn:
            break
        t = turn[at]
        running[t] += w
        studies[t] += 1
        left[t] -= 1
        chosen.append(t)
        loads.append(running[t])
        opens.append(studies[t])
        if left[t] <= 0:
            turn.pop(at)  # a full target leaves the turn; the next one moves up
        else:
            at += 1
        if turn:
            at %= len(turn)
    return _placed(len(weights), chosen, loads, opens)


def reassign(
    studies: pd.DataFrame,
    to: Iterable[str] | str | pd.DataFrame,
    *,
    workload: pd.DataFrame | None = None,
    strategy: Literal["balance", "round_robin"] = "balance",
    capacity: int | Mapping[str, int] | None = None,
    weights: Mapping[str, Any] | None = None,
    users: pd.DataFrame | None = None,
) -> Reassignment:
    """A plan moving ``studies`` to the users ``to``, spread by their open load.

    ``studies``: the studies to move, a study table (``study_id``, ``severity``,
    ``created_at``; ``assigned_to_user_id`` is read when present), e.g. one radiologist's
    open studies from ``fetch_studies(client, assigned_to=..., is_cancelled=False,
    study_viewer_status="incomplete")``. Every row is moved as given (nothing is filtered).

    ``to``: the targets, user IDs and/or emails (in the order that breaks ties), or a
    roster DataFrame (its ``user_id``; e.g. ``roster(users, studies)[lambda r:
    r.reassignment_target & (r.user_id != leaving)]``). Emails are resolved through
    ``users`` (the Viewer user list, ``fetch_users``), else through the users named in
    ``workload``; with ``users``, an ID it does not hold is refused too.

    ``workload``: where the targets' existing open load comes from, the study table or a
    roster (see the module notes); None: every target starts at 0. ``strategy``:
    ``"balance"`` (each study to the least weighted load so far; ties: fewest open
    studies, then the order of ``to``) or ``"round_robin"`` (in turn, ignoring load).
    ``capacity``: how many studies each target may receive (an int, or a mapping of user
    ID or email to one). ``weights``: overrides of ``SEVERITY_WEIGHTS`` (a mapping of
    severity to a number >= 0).

    Placement order: stat, then high, then normal (a null severity last), the oldest
    ``created_at`` first within each. Returns a :class:`Reassignment` (a ``Plan``), one
    row per placed study (columns: ``REASSIGN_COLUMNS``); the studies that fit nowhere are
    in its ``unplaced`` table and named in a log warning.

    Raises ``ValidationError``, before anything is built, for every unresolvable or
    malformed target (field ``to``, row its position or roster label), a study table
    without the needed columns or with a bad severity or time, a null or repeated
    ``study_id`` (row its label), an unknown ``strategy``, a bad ``capacity`` (field
    ``capacity`` or ``capacity.<user>``) or bad ``weights``.

    >>> t = pd.Timestamp("2026-11-30 08:00", tz="UTC")
    >>> studies = pd.DataFrame({"study_id": ["stu_" + c * 32 for c in "ab"],
    ...                         "severity": ["normal", "stat"], "created_at": [t, t]})
    >>> plan = reassign(studies, ["usr_" + "a" * 32], capacity=1)
    >>> plan.frame["study_severity"].tolist(), plan.unplaced["study_severity"].tolist()
    (['stat'], ['normal'])
    """
    from viewerkit.reports.columns import StudyColumns, severity_labels, timestamps

    if strategy not in STRATEGIES:
        raise ValidationError.one(_WHAT, "strategy", strategy, Reason.NOT_A_CHOICE,
                                  detail="balance or round_robin")
    resolved = severity_weights(weights)
    cols = StudyColumns(
        studies, "reassign", needs=("study_id", "severity", "created_at"),
        reads=("assigned_to_user_id", "study_viewer_status", "is_cancelled"),
    )
    ids = cols.frame["study_id"].astype(object)
    cases: list[dict[str, Any]] = []
    missing = ids.isna().to_numpy(dtype=bool)
    repeated = ids.duplicated(keep="first").to_numpy(dtype=bool) & ~missing
    labels = cols.source.index
    cases += [{"row": labels[p], "field": "study_id", "value": None, "reason": Reason.REQUIRED}
              for p in np.flatnonzero(missing).tolist()]
    cases += [{"row": labels[p], "field": "study_id", "value": ids.iloc[p], "reason": Reason.DUPLICATE,
               "detail": "a study can be moved once"} for p in np.flatnonzero(repeated).tolist()]
    if cases:
        raise ValidationError.from_cases(_WHAT, cases)
    if workload is not None and not isinstance(workload, pd.DataFrame):
        raise ValidationError.one(_WHAT, "workload", type(workload).__name__, Reason.WRONG_TYPE,
                                  detail="the study table (fetch_studies) or a roster (viewerkit.roster)")
    targets, emails = _resolve_targets(to, users, workload)
    caps = _caps(capacity, targets, emails)

    severity = cols.severity
    weight_of = np.array([resolved[s] for s in ("normal", "high", "stat")] + [0.0])
    weight = weight_of[np.where(severity < 0, 3, severity)]
    previous = cols.text("assigned_to_user_id").astype(object).where(
        cols.text("assigned_to_user_id").notna(), None)
    is_open = ~cols.complete & ~cols.is_cancelled
    moving = pd.DataFrame({"study_id": ids.to_numpy(), "weight": weight, "open": is_open,
                           "previous_assignee": previous.to_numpy()})
    load, count = _existing_load(workload, targets, moving, resolved)

    # stat, high, normal, then null; oldest first (a null created_at last); stable
    created = cols.created
    order = np.lexsort((np.where(np.isnan(created), np.inf, created), -severity))
    place = _place_balanced if strategy == "balance" else _place_round_robin
    chosen, load_after, open_after = place(weight[order], load, count, caps)

    target_ids = np.array(targets + [None], dtype=object)
    target_emails = np.array([emails.get(t) for t in targets] + [None], dtype=object)
    table = pd.DataFrame({
        "study_id": ids.to_numpy()[order],
        "assigned_to": target_ids[chosen],
        "study_severity": severity_labels(np.where(severity < 0, -1, severity)[order]),
        "study_created_at": timestamps(created[order]).array,
        "previous_assignee": previous.to_numpy()[order],
        "target_email": target_emails[chosen],
        "target_load": load_after,
        "target_open": open_after,
    })
    placed = chosen >= 0
    unplaced = table.loc[~placed, list(_UNPLACED_COLUMNS)].reset_index(drop=True)
    if len(unplaced):
        shown = ", ".join(unplaced["study_id"].head(5).astype(str))
        log.warning(
            "reassign: %d of %d studies fit no target (capacity reached): %s%s; see the plan's "
            "unplaced table", len(unplaced), len(table), shown, ", ..." if len(unplaced) > 5 else "",
        )
    return Reassignment(table[placed].reset_index(drop=True), unplaced)
