"""Staffing: the roster of every user with their open work, what reassignment and triage
draw on. (The module is not called ``roster``: ``viewerkit.roster`` is its function.)

``roster(users, studies)`` joins the user list (``viewerkit.fetch_users``) with the study
table (``fetch_studies`` / ``StudyCache.load``): one row per user, with their open load by
severity, the severity-weighted load, overdue and recently completed counts, and whether
they may be offered as a reassignment target.

**The one set of severity weights.** ``SEVERITY_WEIGHTS`` (stat 4, high 2, normal 1) is what
one open study of each severity weighs in a user's ``open_load``: the load the bulk
engine's reassignment balances on, the triage board shows beside each assignee and the
workload report lists. Every ``weights=`` argument takes overrides of it (a mapping of
severity to a number >= 0, e.g. ``{"stat": 8}``), resolved by ``severity_weights``;
``study_weights`` gives the weight of each study of a table.

**Users missing from the user list.** A server need not list users whose access was
revoked (the sandbox does not). A user the study table names (as assignee or creating user)
who is not in ``users`` is kept, with the fields the study reference carries (ID, email,
names, suffixes: those of their most recently updated study) and ``listed=False``; the
user-list-only columns (role, level, flags, times) are null for them.

**Reassignment targets** (``reassignment_target``): listed users whose ``clinic_role`` is
``Radiologist`` (``target_roles`` chooses others) and who ``can_manage_studies`` (the API's permission to create, update and
manage studies; a radiologist without it cannot be handed work). Unlisted users are never
targets, unless ``include_unlisted=True``: then those seen as assignees are (they were
assigned work; their role is unknown).

>>> severity_weights({"stat": 8})
{'normal': 1.0, 'high': 2.0, 'stat': 8.0}
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import pandas as pd

from viewerkit.errors import Reason, ValidationError
from viewerkit.schema import SEVERITIES

__all__ = [
    "SEVERITY_WEIGHTS",
    "ROSTER_COLUMNS",
    "TARGET_ROLE",
    "DEFAULT_WINDOW",
    "severity_weights",
    "study_weights",
    "roster",
]

#: What one open study of each severity weighs in a user's ``open_load`` (the one shared
#: set: reassignment balancing, the triage board and the workload report use it).
SEVERITY_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {"normal": 1.0, "high": 2.0, "stat": 4.0}
)

#: The clinic role a reassignment target has.
TARGET_ROLE: Final = "Radiologist"

_USER_TEXT: Final = (
    "email", "first_name", "middle_name", "last_name", "suffix1", "suffix2",
    "clinic_role", "level",
)
# columns of the user table: (name, kind); the roster carries them over
_USER_COLUMNS: Final = (
    ("user_id", "text"),
    ("email", "text"),
    ("first_name", "text"),
    ("middle_name", "text"),
    ("last_name", "text"),
    ("suffix1", "text"),
    ("suffix2", "text"),
    ("clinic_role", "text"),
    ("level", "text"),
    ("can_manage_studies", "flag"),
    ("has_dashboard_access", "flag"),
    ("invited_source", "text"),
    ("created_at", "time"),
    ("last_login_at", "time"),
)
_REQUIRED_USER_COLUMNS: Final = ("user_id", "clinic_role", "can_manage_studies")
# the study reference's fields (``assigned_to_<field>`` / ``created_by_user_<field>``)
_REFERENCE_FIELDS: Final = ("email", "first_name", "middle_name", "last_name", "suffix1", "suffix2")

#: The roster's columns, in order (``phone_number`` follows the user columns when the user
#: table has it).
ROSTER_COLUMNS: Final = (
    *(name for name, _ in _USER_COLUMNS),
    "listed",
    "open_normal",
    "open_high",
    "open_stat",
    "open",
    "open_load",
    "overdue",
    "completed",
    "last_study_change_at",
    "reassignment_target",
)

_ERROR: Final = "bad roster input"

#: How far back a roster's ``completed`` counts, by default.
DEFAULT_WINDOW: Final = pd.Timedelta(days=7)


def severity_weights(weights: Mapping[str, Any] | None = None) -> dict[str, float]:
    """``SEVERITY_WEIGHTS`` with ``weights`` overriding some of them (None: as they are),
    in severity order. Each weight is a finite number >= 0 (0 leaves a severity out of the
    load). ``ValidationError`` naming ``weights.<key>`` for an unknown severity
    (``NOT_SEVERITY``), a value that is not a number (``WRONG_TYPE``) or is negative or not
    finite (``OUT_OF_RANGE``); ``weights`` itself when it is not a mapping.

    >>> severity_weights()
    {'normal': 1.0, 'high': 2.0, 'stat': 4.0}
    >>> severity_weights({"urgent": 3})
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: bad roster input: 1 problem
      field weights.urgent: must be one of normal, high, stat (got 'urgent')
    """
    resolved = dict(SEVERITY_WEIGHTS)
    if weights is None:
        return resolved
    if not isinstance(weights, Mapping):
        raise ValidationError.one(_ERROR, "weights", weights, Reason.WRONG_TYPE,
                                  detail="a mapping of severity to a number")
    cases: list[dict[str, Any]] = []
    for key, value in weights.items():
        field = f"weights.{key}"
        if key not in SEVERITIES:
            cases.append({"field": field, "value": key, "reason": Reason.NOT_SEVERITY})
        elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            cases.append({"field": field, "value": value, "reason": Reason.WRONG_TYPE,
                          "detail": "a number, 0 or more"})
        elif not (np.isfinite(float(value)) and float(value) >= 0):
            cases.append({"field": field, "value": value, "reason": Reason.OUT_OF_RANGE,
                          "detail": "a finite number, 0 or more"})
        else:
            resolved[str(key)] = float(value)
    if cases:
        raise ValidationError.from_cases(_ERROR, cases)
    return resolved


def study_weights(severity: pd.Series | Any, weights: Mapping[str, Any] | None = None) -> np.ndarray:
    """The weight of each study in the load, from its severity (a severity column: text or
    categorical); 0 for a null severity. ``ValidationError`` for a severity outside the
    contract, as the reports have it.

    >>> study_weights(pd.Series(["stat", "normal", None])).tolist()
    [4.0, 1.0, 0.0]
    """
    from viewerkit.reports.columns import severity_codes

    resolved = severity_weights(weights)
    table = np.array([resolved[s] for s in SEVERITIES] + [0.0])
    codes = severity_codes(severity)
    return np.asarray(table[np.where(codes < 0, len(SEVERITIES), codes)])


def _window_ms(window: object) -> float:
    """``window`` (a timedelta or hours) as positive milliseconds."""
    if isinstance(window, (bool, np.bool_)) or not isinstance(window, (timedelta, numbers.Real)):
        raise ValidationError.one(_ERROR, "window", window, Reason.NOT_A_DURATION)
    try:
        td = pd.Timedelta(window) if isinstance(window, timedelta) else pd.Timedelta(hours=float(window))
    except (OverflowError, ValueError) as exc:
        raise ValidationError.one(_ERROR, "window", window, Reason.NOT_A_DURATION) from exc
    if pd.isna(td) or td <= pd.Timedelta(0):
        raise ValidationError.one(_ERROR, "window", window, Reason.NOT_POSITIVE)
    return float(td / pd.Timedelta(milliseconds=1))


def _user_table(users: object) -> pd.DataFrame:
    if not isinstance(users, pd.DataFrame):
        raise ValidationError.one(_ERROR, "users", type(users).__name__, Reason.WRONG_TYPE,
                                  detail="expected a pandas DataFrame (fetch_users)")
    cases: list[dict[str, Any]] = [
        {"field": name, "value": None, "reason": Reason.MISSING_COLUMN,
         "detail": "the user table (fetch_users) has it"}
        for name in _REQUIRED_USER_COLUMNS if name not in users.columns
    ]
    if "user_id" in users.columns:
        ids = users["user_id"]
        missing = ids.isna().to_numpy()
        repeated = ids.duplicated(keep="first").to_numpy() & ~missing
        cases += [{"row": row, "field": "user_id", "value": None, "reason": Reason.REQUIRED}
                  for row in users.index[missing].tolist()]
        cases += [{"row": row, "field": "user_id", "value": value, "reason": Reason.DUPLICATE}
                  for row, value in zip(users.index[repeated].tolist(), ids[repeated].tolist(), strict=True)]
    if cases:
        raise ValidationError.from_cases(_ERROR, cases)
    return users.reset_index(drop=True)


def _column(frame: pd.DataFrame, name: str, kind: str) -> pd.Series:
    """A user-table column in the roster's dtype (all null when the table lacks it)."""
    from viewerkit.reports.columns import TEXT_DTYPE

    if name in frame.columns:
        series = frame[name]
    else:
        series = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if kind == "flag":
        return series.astype("boolean")
    if kind == "time":
        if str(series.dtype) == "datetime64[ms, UTC]":
            return series
        return pd.to_datetime(series, utc=True).astype("datetime64[ms, UTC]")
    return series.astype(TEXT_DTYPE)


def _ms_timestamps(ms: np.ndarray) -> pd.Series:
    from viewerkit.reports.columns import timestamps

    return timestamps(ms).reset_index(drop=True)


def roster(
    users: pd.DataFrame,
    studies: pd.DataFrame,
    *,
    sla: Any = None,
    window: timedelta | float = DEFAULT_WINDOW,
    now: Any = None,
    weights: Mapping[str, Any] | None = None,
    include_unlisted: bool = False,
    target_roles: Iterable[str] = (TARGET_ROLE,),
) -> pd.DataFrame:
    """One row per user, listed or seen in the study table, with their open work.

    ``users`` is the user table (``fetch_users``; it needs ``user_id``, ``clinic_role`` and
    ``can_manage_studies``), ``studies`` the study table (it needs ``severity``,
    ``study_viewer_status``, ``is_cancelled``, ``created_at``, ``updated_at`` and
    ``assigned_to_user_id``; ``created_by_user_*`` and the ``assigned_to_*`` names are read
    when present). ``sla`` (``viewerkit.reports.sla``: ``SlaTargets``, a mapping of
    severity to hours, or None) sets when an open study is overdue; ``now`` (default: the
    current time) is the moment the roster describes; ``window`` (a timedelta, or hours)
    how far back ``completed`` counts; ``weights`` overrides ``SEVERITY_WEIGHTS``;
    ``target_roles``: the ``clinic_role`` values that may be handed work (default
    ``("Radiologist",)``, :data:`TARGET_ROLE`; e.g. add ``"Resident"`` where residents read).

    Columns (``ROSTER_COLUMNS``): the user table's (``user_id`` ... ``last_login_at``, and
    ``phone_number`` when it has it); ``listed`` (False: named by a study but missing from
    the user list, see the module notes); ``open_normal``, ``open_high``, ``open_stat``,
    ``open`` (studies assigned to the user, open at ``now``: incomplete, not cancelled,
    created by then); ``open_load`` (float: the open counts weighted by severity);
    ``overdue`` (open and past the SLA target, as ``viewerkit.reports.sla.deadlines`` says);
    ``completed`` (assigned studies completed at or after ``now - window`` and not after
    ``now``; completion is ``completed_at`` when the table has it, from
    ``viewerkit.reports.with_completion``, else ``updated_at`` of a complete study);
    ``last_study_change_at`` (the newest ``updated_at`` of a study assigned to them, NaT
    for none); ``reassignment_target`` (see the module notes). Listed users come first,
    in the order of ``users``, then the unlisted ones by user ID. A user with no studies
    has zero counts.

    Bad input raises ``ValidationError`` naming the field (and row), before anything is
    computed. Whole columns at once: no loop over studies.

    >>> users = pd.DataFrame({"user_id": ["usr_a", "usr_b"], "clinic_role": ["Radiologist"] * 2,
    ...                       "can_manage_studies": [True, True]})
    >>> now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
    >>> studies = pd.DataFrame({"severity": ["stat", "high"], "study_viewer_status": ["incomplete"] * 2,
    ...     "is_cancelled": [False, False], "created_at": [now - pd.Timedelta("2h")] * 2,
    ...     "updated_at": [now - pd.Timedelta("1h")] * 2, "assigned_to_user_id": ["usr_a", "usr_c"]})
    >>> table = roster(users, studies, now=now)
    >>> table[["user_id", "listed", "open", "open_load", "overdue", "reassignment_target"]].to_dict("records")
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'user_id': 'usr_a', 'listed': True, 'open': 1, 'open_load': 4.0, 'overdue': 1, 'reassignment_target': True},
     {'user_id': 'usr_b', 'listed': True, 'open': 0, 'open_load': 0.0, 'overdue': 0, 'reassignment_target': True},
     {'user_id': 'usr_c', 'listed': False, 'open': 1, 'open_load': 2.0, 'overdue': 0, 'reassignment_target': False}]
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from viewerkit.reports.columns import TEXT_DTYPE, StudyColumns, arrow_strings
    from viewerkit.reports.sla import deadlines, now_ms

    resolved = severity_weights(weights)
    span = _window_ms(window)
    if not isinstance(include_unlisted, (bool, np.bool_)):
        raise ValidationError.one(_ERROR, "include_unlisted", include_unlisted, Reason.NOT_BOOLEAN)
    listed_users = _user_table(users)
    at = now_ms(now)
    creators = "created_by_user_user_id"
    reads = ["completed_at", *(f"assigned_to_{f}" for f in _REFERENCE_FIELDS)]
    if isinstance(studies, pd.DataFrame) and creators in studies.columns:
        reads += [creators, *(f"created_by_user_{f}" for f in _REFERENCE_FIELDS)]
    cols = StudyColumns(
        studies, "roster",
        needs=("severity", "study_viewer_status", "is_cancelled", "created_at", "updated_at",
               "assigned_to_user_id"),
        reads=reads,
    )
    due = deadlines(cols.table(), sla=sla, now=pd.Timestamp(np.datetime64(int(at), "ms"), tz="UTC"))
    is_open = due["open"].to_numpy(dtype=bool)
    overdue = due["overdue"].to_numpy(dtype=bool)

    # every user ID: the listed ones in their order, then those only the studies name
    listed_ids = arrow_strings(listed_users["user_id"].astype(TEXT_DTYPE)).cast(pa.string())
    assignees = arrow_strings(cols.text("assigned_to_user_id")).cast(pa.string())
    named = [assignees]
    if cols.has(creators):
        named.append(arrow_strings(cols.text(creators)).cast(pa.string()))
    seen = pc.unique(pa.chunked_array(named, type=pa.string()).combine_chunks().drop_null())
    unlisted = pc.sort_indices(seen)
    unlisted_ids = seen.take(unlisted).filter(pc.invert(pc.is_in(seen.take(unlisted), value_set=listed_ids)))
    all_ids = pa.concat_arrays([listed_ids.cast(pa.string()), unlisted_ids.cast(pa.string())])
    n_listed, n = len(listed_ids), len(all_ids)
    code = np.asarray(pc.index_in(assignees, value_set=all_ids).fill_null(-1), dtype=np.int64)
    assigned = code >= 0

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(code[mask & assigned], minlength=n).astype(np.int64)

    severity = cols.severity
    open_by = {sev: count(is_open & (severity == i)) for i, sev in enumerate(SEVERITIES)}
    completion = cols.values("completed_at") if cols.has("completed_at") else cols.updated
    done = cols.complete & ~cols.is_cancelled & (severity >= 0)
    with np.errstate(invalid="ignore"):
        recent = done & (completion >= at - span) & (completion <= at)
    latest = np.full(n, -np.inf)
    changed = assigned & ~np.isnan(cols.updated)
    np.maximum.at(latest, code[changed], cols.updated[changed])
    latest[np.isinf(latest)] = np.nan

    # the listed users' own columns, then the unlisted ones' from their study references
    out: dict[str, Any] = {}
    extra = [("phone_number", "text")] if "phone_number" in listed_users.columns else []
    refs = _references(cols, unlisted_ids, creators) if len(unlisted_ids) else None
    for name, kind in (*_USER_COLUMNS, *extra):
        mine = _column(listed_users, name, kind)
        if name == "user_id":
            theirs = pd.Series(unlisted_ids.to_pylist(), dtype=object)
        elif refs is not None and name in _REFERENCE_FIELDS:
            theirs = refs[name]
        else:
            theirs = pd.Series([None] * (n - n_listed), dtype=object)
        out[name] = pd.concat([mine, _column(theirs.to_frame(name), name, kind)], ignore_index=True)
    listed = np.arange(n) < n_listed
    out["listed"] = listed
    for sev in SEVERITIES:
        out[f"open_{sev}"] = open_by[sev]
    out["open"] = sum(open_by.values())
    out["open_load"] = np.sum(
        [open_by[sev] * resolved[sev] for sev in SEVERITIES], axis=0, dtype=np.float64
    )
    out["overdue"] = count(overdue)
    out["completed"] = count(recent)
    out["last_study_change_at"] = _ms_timestamps(latest)
    roles = [target_roles] if isinstance(target_roles, str) else list(target_roles)
    role_ok = out["clinic_role"].isin(roles).fillna(False).to_numpy(dtype=bool)
    may_manage = out["can_manage_studies"].fillna(False).to_numpy(dtype=bool)
    target = listed & role_ok & may_manage
    if include_unlisted:
        was_assignee = np.bincount(code[assigned], minlength=n) > 0
        target |= ~listed & was_assignee
    out["reassignment_target"] = target
    return pd.DataFrame(out)


def _references(cols: Any, unlisted_ids: Any, creators: str) -> pd.DataFrame:
    """Per unlisted user (in ``unlisted_ids`` order), the reference fields of the most
    recently updated study that names them (as assignee or creating user)."""
    import pyarrow.compute as pc

    from viewerkit.reports.columns import arrow_strings

    sides = [("assigned_to_", "assigned_to_user_id")]
    if cols.has(creators):
        sides.append(("created_by_user_", creators))
    parts = []
    for prefix, id_column in sides:
        code = np.asarray(
            pc.index_in(arrow_strings(cols.text(id_column)), value_set=unlisted_ids).fill_null(-1),
            dtype=np.int64,
        )
        rows = np.flatnonzero(code >= 0)
        part = pd.DataFrame({"code": code[rows], "updated": cols.updated[rows]})
        for field in _REFERENCE_FIELDS:
            part[field] = cols.text(prefix + field).take(rows).astype(object).to_numpy()
        parts.append(part)
    seen = pd.concat(parts, ignore_index=True).sort_values("updated", kind="stable", na_position="first")
    newest = seen.drop_duplicates("code", keep="last").set_index("code")
    return newest.reindex(np.arange(len(unlisted_ids)))[list(_REFERENCE_FIELDS)].reset_index(drop=True)
