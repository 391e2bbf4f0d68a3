"""A bulk change as a table: the :class:`Plan`, its markers, its offline checks, and the
builders for the common one-field jobs.

A plan has one row per study, named by ``study_id`` or ``study_instance_uid`` (or both),
and the fields to set (:data:`PLAN_FIELDS`):

==========================  =================================================================
column                      a cell holds
==========================  =================================================================
``assigned_to``             a user ID (``usr_...``), an email (resolved through the roster),
                            or :data:`UNASSIGN` (``"!unassign"``) to leave it unassigned
``severity``                ``normal`` / ``high`` / ``stat``
``study_viewer_status``     ``incomplete`` / ``complete``
``study_description``       the new description (not blank)
``meta.<key>``              the new value of that metadata key, or :data:`DELETE`
                            (``"!delete"``) to remove the key; other keys are kept
``metadata``                :data:`CLEAR` (``"!null"``: the whole map becomes null) or
                            :data:`EMPTY` (``"!empty"``: the map becomes ``{}``); not with
                            ``meta.<key>`` cells in the same row
``action``                  ``cancel`` or ``uncancel``
==========================  =================================================================

An empty cell (None, NaN, ``""``) means "leave as it is": unassigning, deleting a key and
clearing the metadata are only ever the explicit markers. Other columns (an analyst's notes)
are kept and come back in the result. One row may set fields and cancel or uncancel: it is
applied uncancel, then update; or update, then cancel.

>>> plan = Plan({"study_id": ["stu_" + "a" * 32], "severity": ["stat"]})
>>> plan
Plan(1 row: severity 1)
>>> plan.validate() is plan
True
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from viewerkit.errors import Reason, ValidationError
from viewerkit.rules import META_PREFIX, Failure
from viewerkit.runner import Progress
from viewerkit.schema import (
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_PAIRS,
    RULES,
    Severity,
    ViewerStatus,
)

if TYPE_CHECKING:
    from viewerkit.bulk.apply import BulkResult, Preview
    from viewerkit.client import Client

__all__ = [
    "Plan",
    "UNASSIGN",
    "DELETE",
    "CLEAR",
    "EMPTY",
    "ACTIONS",
    "ID_COLUMNS",
    "PLAN_FIELDS",
    "set_severity",
    "set_status",
    "complete",
    "cancel",
    "uncancel",
]

#: ``assigned_to`` marker: leave the study unassigned (an empty cell leaves it as it is).
UNASSIGN: Final = "!unassign"
#: ``meta.<key>`` marker: remove that key from the study's metadata.
DELETE: Final = "!delete"
#: ``metadata`` marker: make the whole metadata map null.
CLEAR: Final = "!null"
#: ``metadata`` marker: make the metadata map empty, ``{}`` (not null).
EMPTY: Final = "!empty"
#: The ``action`` values.
ACTIONS: Final = ("cancel", "uncancel")
#: The columns that name a study.
ID_COLUMNS: Final = ("study_id", "study_instance_uid")
#: The fixed columns a plan sets (``meta.<key>`` columns too).
PLAN_FIELDS: Final = (
    "assigned_to",
    "severity",
    "study_viewer_status",
    "study_description",
    "metadata",
    "action",
)

_WHAT: Final = "bulk plan"


def cell_values(column: pd.Series) -> list[Any]:
    """A column's cells as Python values, with every empty cell (None, NaN, NA, "") None:
    the plan's rule that an empty cell means "leave as it is".

    >>> cell_values(pd.Series(["stat", "", None, float("nan")]))
    ['stat', None, None, None]
    """
    out: list[Any] = []
    for value in column.astype(object).tolist():
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)) or isinstance(value, str) and value == "":
            out.append(None)
        else:
            out.append(value)
    return out


class Plan:
    """A bulk change: one row per study and the fields to set (see the module notes).

    ``rows``: a DataFrame (its index labels the rows in every error and result), a mapping
    of column -> values, or a list of row dicts. The plan keeps its own copy; an empty cell
    is "leave as it is" whatever its dtype. Raises ``ValidationError`` only for what makes
    it no plan at all (no column naming the studies); everything else is checked by
    :meth:`validate`, all at once.

    >>> Plan([{"study_instance_uid": "1.2.3", "action": "cancel"}]).counts()
    {'action': 1}
    """

    def __init__(self, rows: pd.DataFrame | Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> None:
        frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        frame.columns = [str(c) for c in frame.columns]
        if not any(c in frame.columns for c in ID_COLUMNS):
            raise ValidationError.one(
                _WHAT, "study_id", None, Reason.MISSING_COLUMN,
                detail="a plan names its studies in a study_id or study_instance_uid column",
            )
        for name in frame.columns:
            if name in ID_COLUMNS or self._is_field(name):
                frame[name] = pd.Series(cell_values(frame[name]), index=frame.index, dtype=object)
        self._frame = frame

    @staticmethod
    def _is_field(name: str) -> bool:
        return name in PLAN_FIELDS or name.startswith(META_PREFIX)

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> Plan:
        """A plan from a CSV file (UTF-8, a header row): every cell read as text, an empty
        cell "leave as it is"; rows are labelled by their line in the file (2 = the first
        row under the header), so errors point at what the analyst sees in an editor.

        Raises ``ValidationError`` (field ``path``) for a file that does not exist.
        """
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        except FileNotFoundError:
            raise ValidationError.one(_WHAT, "path", os.fspath(path), Reason.NO_SUCH_FOLDER,
                                      detail="no such file") from None
        frame.index = pd.RangeIndex(2, len(frame) + 2)
        return cls(frame)

    # -- reading -------------------------------------------------------------------------

    @property
    def frame(self) -> pd.DataFrame:
        """The plan's rows (a copy): the given columns, empty cells as None."""
        return self._frame.copy()

    @property
    def fields(self) -> list[str]:
        """The plan's change columns, in order: the fixed fields, then ``meta.<key>``."""
        present = [c for c in PLAN_FIELDS if c in self._frame.columns]
        return present + sorted(c for c in self._frame.columns if c.startswith(META_PREFIX))

    def __len__(self) -> int:
        return len(self._frame)

    def counts(self) -> dict[str, int]:
        """How many rows set each field (non-empty cells per change column)."""
        return {name: int(self._frame[name].notna().sum()) for name in self.fields}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v:,}" for k, v in self.counts().items() if v)
        rows = f"{len(self):,} row" + ("" if len(self) == 1 else "s")
        return f"Plan({rows}: {counts or 'nothing to change'})"

    def _repr_html_(self) -> str:
        shown = self._frame.head(50).to_html(na_rep="", escape=True)
        more = f"<p>... {len(self) - 50:,} more rows</p>" if len(self) > 50 else ""
        return f"<p>{self!r}</p>{shown}{more}"

    # -- checking ------------------------------------------------------------------------

    def failures(self, users: pd.DataFrame | None = None) -> list[dict[str, Any]]:
        """Every problem the plan has that needs no server, as ``failure_cases`` rows
        (``row`` the plan's row label, ``field``, ``value``, ``reason``), by the shared rule
        table: each study named (a well-formed ID or UID), once; each cell in its field's
        form (enums, ID formats, emails, markers, metadata keys and value lengths); not
        ``meta.<key>`` and a ``metadata`` marker in one row; at least one change per row.
        With ``users`` (the Viewer user list, ``fetch_users`` / ``StudyCache.load_users``),
        an ``assigned_to`` email or ID the list does not hold is refused too.
        """
        frame = self._frame
        labels = list(frame.index)
        found: list[tuple[int, Failure]] = []

        def add(position: int, failure: Failure) -> None:
            found.append((position, failure))

        def column_failures(name: str, rule_name: str) -> None:
            for f in RULES[rule_name].check_column(frame[name], name):
                if f.row is not None:
                    add(int(f.row), f)

        named = np.zeros(len(frame), dtype=bool)
        for name in ID_COLUMNS:
            if name in frame.columns:
                column_failures(name, name)
                named |= frame[name].notna().to_numpy()
        for position in np.flatnonzero(~named).tolist():
            add(position, Failure("study_id", None, Reason.REQUIRED,
                                  detail="a study_id or a study_instance_uid"))
        for name in ID_COLUMNS:
            if name in frame.columns:
                values = frame[name]
                twice = values.notna() & values.duplicated(keep=False)
                for position in np.flatnonzero(twice.to_numpy()).tolist():
                    add(position, Failure(name, values.iloc[position], Reason.DUPLICATE,
                                          detail="two rows for one study"))
        for name in ("severity", "study_viewer_status", "study_description"):
            if name in frame.columns:
                column_failures(name, name)
        if "assigned_to" in frame.columns:
            for position, value in enumerate(frame["assigned_to"].tolist()):
                if value is None or value == UNASSIGN:
                    continue
                if not isinstance(value, str) or not (
                    "@" in value.strip("@") or not RULES["user_id"].check(value)
                ):
                    add(position, Failure("assigned_to", value, Reason.NOT_USER_ID,
                                          detail=f"a user ID, an email, or {UNASSIGN!r}"))
        if "action" in frame.columns:
            for position, value in enumerate(frame["action"].tolist()):
                if value is not None and value not in ACTIONS:
                    add(position, Failure("action", value, Reason.NOT_A_CHOICE,
                                          detail="cancel or uncancel"))
        meta = [c for c in frame.columns if c.startswith(META_PREFIX)]
        for name in meta:
            key = name[len(META_PREFIX):]
            values = frame[name]
            given = values.notna().to_numpy()
            if not 1 <= len(key) <= MAX_METADATA_KEY_LENGTH:
                for position in np.flatnonzero(given).tolist():
                    add(position, Failure(name, key, Reason.BAD_METADATA_KEY))
            limit = RULES["metadata"]
            for position in np.flatnonzero(given).tolist():
                value = values.iloc[position]
                if value == DELETE:
                    continue
                if not isinstance(value, str):
                    add(position, Failure(name, value, Reason.METADATA_VALUE_NOT_TEXT))
                else:
                    for reason, shown, detail in limit.findings({key: value}):
                        if reason is not Reason.BAD_METADATA_KEY:
                            add(position, Failure(name, shown, reason, detail=detail))
        if meta:
            setting = frame[meta].notna() & (frame[meta] != DELETE)
            too_many = setting.sum(axis=1).to_numpy() > MAX_METADATA_PAIRS
            for position in np.flatnonzero(too_many).tolist():
                add(position, Failure("metadata", int(setting.iloc[position].sum()),
                                      Reason.TOO_MANY_PAIRS))
        if "metadata" in frame.columns:
            for position, value in enumerate(frame["metadata"].tolist()):
                if value is None:
                    continue
                if value not in (CLEAR, EMPTY):
                    add(position, Failure("metadata", value, Reason.NOT_A_CHOICE,
                                          detail=f"{CLEAR!r} (null) or {EMPTY!r} ({{}}); set keys "
                                          "in meta.<key> columns"))
                elif meta and frame[meta].iloc[position].notna().any():
                    add(position, Failure("metadata", value, Reason.CONFLICT,
                                          detail="a metadata marker and meta.<key> cells in one row"))
        changes = self.fields
        nothing = (
            ~frame[changes].notna().any(axis=1).to_numpy() if changes else np.ones(len(frame), bool)
        )
        for position in np.flatnonzero(nothing & named).tolist():
            add(position, Failure("plan", None, Reason.EMPTY,
                                  detail="the row changes nothing: give a field to set or an action"))
        if users is not None and "assigned_to" in frame.columns:
            for position, value in self._unknown_users(users):
                add(position, Failure("assigned_to", value, Reason.NOT_A_CHOICE,
                                      detail="not a user of the Viewer's user list"))
        order = {name: at for at, name in enumerate(frame.columns)}  # as the analyst reads them
        found.sort(key=lambda item: (item[0], order.get(item[1].field, len(order))))
        return [failure.case(row=labels[position]) for position, failure in found]

    def _unknown_users(self, users: pd.DataFrame) -> list[tuple[int, str]]:
        ids = set(users["user_id"].dropna().astype(str)) if "user_id" in users else set()
        emails = (
            set(users["email"].dropna().astype(str).str.lower()) if "email" in users else set()
        )
        unknown = []
        for position, value in enumerate(self._frame["assigned_to"].tolist()):
            if not isinstance(value, str) or value == UNASSIGN:
                continue
            known = value.lower() in emails if "@" in value else value in ids
            if not known:
                unknown.append((position, value))
        return unknown

    def validate(self, users: pd.DataFrame | None = None) -> Plan:
        """Refuse the plan, before anything is sent, when :meth:`failures` finds anything:
        one ``ValidationError`` listing every problem (``failure_cases``: row, field,
        value, reason). Returns the plan, to chain.

        >>> Plan({"study_id": ["stu_1"], "severity": ["urgent"]}).validate()
        Traceback (most recent call last):
        ...
        viewerkit.errors.ValidationError: bulk plan: 2 problems
          row 0, field study_id: must be stu_ + 32 lowercase hex (got 'stu_1')
          row 0, field severity: must be one of normal, high, stat (got 'urgent')
        """
        cases = self.failures(users)
        if cases:
            raise ValidationError.from_cases(_WHAT, cases)
        return self

    # -- sending -------------------------------------------------------------------------

    def preview(
        self,
        client: Client,
        *,
        users: pd.DataFrame | None = None,
        concurrency: int = 8,
        progress: Progress = True,
        tz: str | None = None,
    ) -> Preview:
        """What applying the plan would do, against the live state read now: the
        before-image of each study (by the cheapest path), ``assigned_to`` emails resolved
        through ``users`` (the Viewer user list; None: fetched, and where the key cannot list
        users, the users seen in these studies), and per row the before and after value of
        every planned field and its change type (``noop`` when already so). Refuses the plan
        (``ValidationError``, every problem at once, row and field named) before anything
        is sent: the offline checks, users unknown to the roster, metadata over its limits
        after merging with the live map. ``tz``: the time zone the notebook table shows
        times in (default UTC). See ``viewerkit.bulk.apply``.
        """
        from viewerkit.bulk.apply import preview_plan

        return preview_plan(self, client, users=users, concurrency=concurrency, progress=progress, tz=tz)

    def apply(
        self,
        client: Client,
        *,
        journal: str | os.PathLike[str],
        users: pd.DataFrame | None = None,
        concurrency: int = 8,
        force: bool = False,
        reason: str | None = None,
        progress: Progress = True,
    ) -> BulkResult:
        """Read the before-images (as :meth:`preview`), then send the changes,
        ``concurrency`` at a time on the shared runner, each request journaled in the SQLite
        file ``journal`` before it is sent and confirmed after. A planned field changed on
        the server since its before-image was read is a ``conflict`` unless ``force``;
        ``reason`` is kept in the journal. Returns the :class:`~viewerkit.bulk.apply.BulkResult`.
        A refused key (401/403) stops the run and raises; Ctrl-C lets the requests in flight
        finish and raises; either way :func:`viewerkit.bulk.resume` finishes the run.
        """
        from viewerkit.bulk.apply import apply_plan

        return apply_plan(self, client, journal=journal, users=users, concurrency=concurrency, force=force,
                          reason=reason, progress=progress)

    def with_user_ids(self, users: pd.DataFrame, *, strict: bool = True) -> Plan:
        """The plan with every ``assigned_to`` email replaced by its user ID from ``users``
        (the Viewer user list, or users seen in a study table: columns ``user_id`` and
        ``email``; emails match in any case). ``strict`` (default): an email or ID the list
        lacks is a ``ValidationError`` naming the row; ``strict=False`` resolves the emails
        it knows and leaves the rest for the server to judge (for a list that is only the
        users the studies name).

        >>> users = pd.DataFrame({"user_id": ["usr_" + "1" * 32], "email": ["Dr.A@example.org"]})
        >>> Plan({"study_id": ["stu_" + "a" * 32], "assigned_to": ["dr.a@example.org"]}).with_user_ids(users).frame["assigned_to"].tolist()
        ['usr_11111111111111111111111111111111']
        """
        if "assigned_to" not in self._frame.columns:
            return self
        unknown = self._unknown_users(users) if strict else []
        if unknown:
            labels = list(self._frame.index)
            raise ValidationError.from_cases(_WHAT, [
                {"row": labels[p], "field": "assigned_to", "value": v, "reason": Reason.NOT_A_CHOICE,
                 "detail": "not a user of the Viewer's user list"} for p, v in unknown
            ])
        known = users[["email", "user_id"]].dropna()
        by_email = dict(zip(known["email"].astype(str).str.lower(), known["user_id"].astype(str), strict=True))
        frame = self._frame.copy()
        frame["assigned_to"] = [
            by_email.get(v.lower(), v) if isinstance(v, str) and "@" in v and v != UNASSIGN else v
            for v in frame["assigned_to"].tolist()
        ]
        return Plan(frame)


# --- builders of one-field plans ---------------------------------------------------------------


def _targets(studies: pd.DataFrame | Iterable[str] | str) -> pd.DataFrame:
    """The studies a builder names: a study table (its ``study_id`` column, index kept), or
    study IDs and UIDs (told apart by the ``stu_`` prefix)."""
    if isinstance(studies, pd.DataFrame):
        if "study_id" not in studies.columns:
            raise ValidationError.one(_WHAT, "study_id", None, Reason.MISSING_COLUMN,
                                      detail="the table of studies to change needs study_id")
        return pd.DataFrame({"study_id": studies["study_id"].astype(object)}, index=studies.index)
    names = [studies] if isinstance(studies, str) else list(studies)
    return pd.DataFrame({
        "study_id": [n if isinstance(n, str) and n.startswith("stu_") else None for n in names],
        "study_instance_uid": [None if isinstance(n, str) and n.startswith("stu_") else n for n in names],
    })


def set_severity(studies: pd.DataFrame | Iterable[str] | str, severity: Severity) -> Plan:
    """A plan setting ``severity`` on the given studies (a study table, e.g. a filtered
    ``fetch_studies`` result, or study IDs and UIDs).

    >>> set_severity(["stu_" + "a" * 32, "1.2.3"], "stat").counts()
    {'severity': 2}
    """
    rows = _targets(studies)
    rows["severity"] = severity
    return Plan(rows)


def set_status(studies: pd.DataFrame | Iterable[str] | str, status: ViewerStatus) -> Plan:
    """A plan setting ``study_viewer_status`` (``incomplete`` / ``complete``)."""
    rows = _targets(studies)
    rows["study_viewer_status"] = status
    return Plan(rows)


def complete(studies: pd.DataFrame | Iterable[str] | str) -> Plan:
    """A plan marking the given studies complete (stale work closed out).

    >>> complete(["stu_" + "a" * 32])
    Plan(1 row: study_viewer_status 1)
    """
    return set_status(studies, "complete")


def cancel(studies: pd.DataFrame | Iterable[str] | str) -> Plan:
    """A plan cancelling the given studies (e.g. a customer's batch).

    >>> cancel("1.2.840.1")
    Plan(1 row: action 1)
    """
    rows = _targets(studies)
    rows["action"] = "cancel"
    return Plan(rows)


def uncancel(studies: pd.DataFrame | Iterable[str] | str) -> Plan:
    """A plan uncancelling the given studies."""
    rows = _targets(studies)
    rows["action"] = "uncancel"
    return Plan(rows)
