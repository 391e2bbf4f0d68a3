"""Preview and apply a :class:`~viewerkit.bulk.plan.Plan`; resume and undo journaled runs.

The flow: ``plan.preview(client)`` reads the live state of the plan's studies (the
before-images, by ``retrieve_studies_arrow`` with ``metadata="map"`` so that metadata null
and ``{}`` stay apart), resolves ``assigned_to`` emails through the Viewer user list, checks
what needs the server (users unknown to the roster, metadata limits after merging with the
live map) and shows per row the before and after value of every planned field and its
change type. ``preview.apply(journal=...)`` sends the changes on the shared runner,
journaling each request before it is sent and confirming it after (see
:mod:`viewerkit.bulk.journal`); ``plan.apply(client, journal=...)`` is both in one call.

What a row becomes (``BulkResult.frame["status"]``):

- ``applied``: our requests brought the study to the planned state (also when an answer was
  lost and a read-back found the change made);
- ``noop``: the study was already in the planned state before anything was sent;
- ``conflict``: a planned field changed on the server since its before-image was read (an
  edit between preview and apply, or by someone else before a resume or an undo): nothing
  sent, unless ``force=True``;
- ``failed``: the server refused the row (a 4xx), or retries ran out and a read-back found
  the change not made (``error`` says why);
- ``skipped``: not reached (the run was interrupted or stopped by a refused key).

Cancel and uncancel are decided by the before-image: a study already in the target state is
a ``noop`` (nothing is sent), and one that was not is ``applied`` once the server accepts
the call, however it words its answer ("already cancelled" after a lost answer of our own).
A ``success: false`` with another message is read back.

Optimistic concurrency, and the window that remains: before sending, each planned field of
the live state is compared with the value the plan expects there (the before-image); a
metadata edit sends the live map with only the planned keys changed. The API has no
conditional update, so an edit made by someone else between our read of a study and our
write to it (one request's time, per study) is overwritten for the fields we set, and an
edit of other metadata keys in that window is lost by the whole-map replace. The undo of
the run shows (and restores) what we overwrote.

>>> plan = Plan({"study_id": ["stu_" + "a" * 32], "severity": ["stat"]})
>>> sorted(_change_of(plan.frame.iloc[0].to_dict()))
['severity']
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from viewerkit.bulk.journal import (
    FINAL_STATUSES,
    Journal,
    JournalRow,
    RunInfo,
    new_run_id,
    now_text,
)
from viewerkit.bulk.plan import CLEAR, DELETE, EMPTY, UNASSIGN, Plan, cell_values
from viewerkit.errors import (
    ApiError,
    ApiStatusError,
    NotFound,
    Reason,
    ValidationError,
)
from viewerkit.frame import studies_to_arrow
from viewerkit.rules import META_PREFIX
from viewerkit.runner import Progress, Runner, run_all, stop_requested
from viewerkit.schema import MAX_METADATA_PAIRS

if TYPE_CHECKING:
    from viewerkit.client import Client

__all__ = ["Preview", "BulkResult", "STATUSES", "preview_plan", "apply_plan", "resume", "undo", "runs"]

#: The statuses a row of a :class:`BulkResult` ends with.
STATUSES = ("applied", "noop", "conflict", "failed", "skipped")

_WHAT = "bulk plan"
#: plan column -> the wire field it sets
_WIRE = {
    "assigned_to": "assignedTo",
    "severity": "severity",
    "study_viewer_status": "studyViewerStatus",
    "study_description": "studyDescription",
}
_PLAN_NAME = {v: k for k, v in _WIRE.items()} | {"isCancelled": "is_cancelled", "metadata": "metadata"}
_UPDATE_ARG = {
    "assignedTo": "assigned_to",
    "severity": "severity",
    "studyViewerStatus": "study_viewer_status",
    "studyDescription": "study_description",
}
_META_SLOT = "meta:"
_UNKNOWN = "sent, outcome unknown (no answer, and the read-back failed): resume reads it back"


# --- changes as slots: wire field (or meta:<key>) -> desired value -------------------------------


def _change_of(cells: Mapping[str, Any]) -> dict[str, Any]:
    """A plan row (user IDs resolved) -> its change: wire field -> desired value;
    ``meta:<key>`` -> the key's value (None: removed); ``metadata`` -> None or {};
    ``isCancelled`` -> True / False."""
    change: dict[str, Any] = {}
    for name, value in cells.items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if name in _WIRE:
            change[_WIRE[name]] = None if value == UNASSIGN else value
        elif name == "metadata":
            change["metadata"] = None if value == CLEAR else {}
        elif name == "action":
            change["isCancelled"] = value == "cancel"
        elif isinstance(name, str) and name.startswith(META_PREFIX):
            change[_META_SLOT + name[len(META_PREFIX):]] = None if value == DELETE else value
    return change


def _slot_value(study: Mapping[str, Any], slot: str) -> Any:
    """The value a study (wire) holds for a slot; an absent metadata key is None."""
    if slot.startswith(_META_SLOT):
        return (study.get("metadata") or {}).get(slot[len(_META_SLOT):])
    if slot == "assignedTo":
        return (study.get("assignedTo") or {}).get("userId")
    if slot == "isCancelled":
        return bool(study.get("isCancelled"))
    return study.get(slot)


def _slot_name(slot: str) -> str:
    """A slot as the plan names it (``meta.site``, ``assigned_to``, ``is_cancelled``)."""
    if slot.startswith(_META_SLOT):
        return META_PREFIX + slot[len(_META_SLOT):]
    return _PLAN_NAME.get(slot, slot)


def _values(study: Mapping[str, Any] | None, slots: Sequence[str]) -> dict[str, Any] | None:
    """The planned fields of a study, by their plan names (for ``before`` / ``after``)."""
    if study is None:
        return None
    return {_slot_name(s): _slot_value(study, s) for s in slots}


def _settle(
    change: Mapping[str, Any], expected: Mapping[str, Any], live: Mapping[str, Any], force: bool
) -> tuple[dict[str, Any], list[str]]:
    """What of ``change`` is still to send to ``live``, and the slots in conflict: a slot
    not yet at its desired value is sent when it holds the value the row expects there
    (or with ``force``), else it is a conflict."""
    to_send: dict[str, Any] = {}
    conflicts: list[str] = []
    for slot, want in change.items():
        have = _slot_value(live, slot)
        if have == want:
            continue
        if force or have == expected.get(slot):
            to_send[slot] = want
        else:
            conflicts.append(slot)
    return to_send, conflicts


def _change_type(to_send: Mapping[str, Any]) -> str:
    parts = []
    if to_send.get("isCancelled") is False:
        parts.append("uncancel")
    if any(slot != "isCancelled" for slot in to_send):
        parts.append("update")
    if to_send.get("isCancelled") is True:
        parts.append("cancel")
    return "+".join(parts) or "noop"


def _merged_metadata(live: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, str] | None:
    """The map to send: a ``metadata`` marker as it is, else the live map with only the
    planned keys set or removed."""
    if "metadata" in change:
        value: dict[str, str] | None = change["metadata"]
        return value
    merged = dict(live.get("metadata") or {})
    for slot, value in change.items():
        if slot.startswith(_META_SLOT):
            key = slot[len(_META_SLOT):]
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    return merged


# --- reading studies -----------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")


def _person(record: Mapping[str, Any], prefix: str) -> dict[str, Any] | None:
    if record.get(prefix + "user_id") is None:
        return None
    return {
        "userId": record[prefix + "user_id"], "email": record.get(prefix + "email"),
        "firstName": record.get(prefix + "first_name"), "lastName": record.get(prefix + "last_name"),
        "middleName": record.get(prefix + "middle_name"), "suffix1": record.get(prefix + "suffix1"),
        "suffix2": record.get(prefix + "suffix2"),
    }


def _wire_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """A row of the study table (map-shaped metadata) as the wire study."""
    metadata = record.get("metadata")
    return {
        "studyId": record["study_id"],
        "studyInstanceUid": record.get("study_instance_uid"),
        "studyDescription": record.get("study_description"),
        "severity": record.get("severity"),
        "studyViewerStatus": record.get("study_viewer_status"),
        "isCancelled": bool(record.get("is_cancelled")),
        "cancelledAt": _iso(record.get("cancelled_at")),
        "createdAt": _iso(record.get("created_at")),
        "updatedAt": _iso(record.get("updated_at")),
        "assignedTo": _person(record, "assigned_to_"),
        "createdByUser": _person(record, "created_by_user_"),
        "createdByApiKey": None if record.get("created_by_api_key_id") is None else {
            "apiKeyId": record["created_by_api_key_id"],
            "description": record.get("created_by_api_key_description"),
            "isViewerEnabled": record.get("created_by_api_key_is_viewer_enabled"),
        },
        "expressCustomer": None if record.get("express_customer_id") is None else {
            "expressCustomerId": record["express_customer_id"],
            "expressCustomerName": record.get("express_customer_name"),
        },
        "metadata": None if metadata is None else {str(k): str(v) for k, v in metadata},
    }


def _read_studies(
    client: Client,
    study_ids: Sequence[str],
    *,
    known: pa.Table | None = None,
    concurrency: int,
    progress: Progress,
    unread: dict[str, ApiError] | None = None,
) -> dict[str, dict[str, Any]]:
    """The live wire study of each ID (absent: the API answered 404, or with ``unread`` it
    could not be read: its error there), by the cheapest path."""
    from viewerkit.fetch import retrieve_studies_arrow

    ids = sorted(set(study_ids))
    if not ids:
        return {}
    table = retrieve_studies_arrow(
        client, ids, known=known, concurrency=concurrency, progress=progress, metadata="map", unread=unread
    )
    return {record["study_id"]: _wire_of(record) for record in table.to_pylist()}


def _read_by_uid(client: Client, uids: Sequence[str], *, concurrency: int, progress: Progress) -> dict[str, dict[str, Any]]:
    """The live wire study of each Study Instance UID (absent: 404)."""
    if not uids:
        return {}

    def read(uid: str) -> dict[str, Any] | None:
        try:
            return client.retrieve_study_by_uid(uid)
        except NotFound:
            return None

    outcomes = run_all(read, list(dict.fromkeys(uids)), workers=min(concurrency, len(uids)),
                       progress=progress, desc="retrieving studies", unit="study")
    return {str(o.key): o.result for o in outcomes if o.result is not None}


def _known_table(wires: Sequence[Mapping[str, Any]]) -> pa.Table | None:
    """The before-images as a study table, for the cheapest path of a re-read."""
    if not wires:
        return None
    return studies_to_arrow([dict(w) for w in wires], call="bulk preview", metadata="map")


# --- users -----------------------------------------------------------------------------------


def _users_of(client: Client, users: pd.DataFrame | None) -> tuple[pd.DataFrame | None, bool]:
    """The Viewer user list (given, or fetched), and whether it is the roster; None, False
    when the key cannot list users (401/403/404)."""
    if users is not None:
        return users, True
    from viewerkit.users import fetch_users_arrow_or_none, users_to_pandas

    listed = fetch_users_arrow_or_none(client)
    return (None, False) if listed is None else (users_to_pandas(listed), True)


def _users_seen(studies: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The users the studies reference (assignee, creator): the fallback user list."""
    seen: dict[str, str | None] = {}
    for study in studies:
        for ref in ("assignedTo", "createdByUser"):
            person = study.get(ref) or {}
            if person.get("userId"):
                seen[person["userId"]] = person.get("email")
    return pd.DataFrame({"user_id": list(seen), "email": list(seen.values())}, dtype=object)


# --- the preview -------------------------------------------------------------------------------


@dataclass
class _Row:
    """One plan row on its way: what the preview found and the apply does."""

    position: int
    label: Any
    cells: dict[str, Any]
    study_id: str | None
    change: dict[str, Any]
    expected: dict[str, Any]
    live: dict[str, Any] | None
    sent: bool = False
    error: str | None = None
    kind: str = field(default="noop")
    #: ``live`` was read after the run's start (a resume): the before-image to journal
    reread: bool = False


def _unread_error(error: ApiError) -> str:
    """The row error of a study that could not be read (so nothing is sent for it)."""
    return f"could not read the study, nothing sent: {error}"


def _plain_cell(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class Preview:
    """What applying a plan would do, per row, against the live state read now (from
    :meth:`Plan.preview`): ``to_frame()``, ``counts()``, and in a notebook a table with the
    changed cells highlighted (times in ``tz``). ``apply(journal=...)`` sends it: a planned
    field that changed on the server since this preview read it is a ``conflict``.
    """

    def __init__(
        self,
        client: Client,
        plan: Plan,
        rows: list[_Row],
        *,
        tz: str | None = None,
        kind: str = "apply",
        undo_of: str | None = None,
        recheck: bool = True,
        read_at: str | None = None,
    ) -> None:
        from viewerkit.timezones import report_timezone

        self._client = client
        self.plan = plan
        self._rows = rows
        self.tz = report_timezone(tz, what="bulk preview")
        self._kind = kind
        self._undo_of = undo_of
        self._recheck = recheck
        self._read_at = read_at or now_text()  # when the before-images were read

    def __len__(self) -> int:
        return len(self._rows)

    def to_frame(self) -> pd.DataFrame:
        """One row per plan row (the plan's labels): every input column, then ``study_id``
        (resolved), ``change`` (``noop``, ``update``, ``cancel``, ``uncancel``,
        ``update+cancel``, ``uncancel+update``, ``missing``: no such study, or ``unread``: the
        study could not be read, after the client's retries, and nothing will be sent for it;
        its ``error`` says why: preview or apply it again later), ``before``
        and ``after`` (dicts of the planned fields, by plan name), ``updated_at`` (the
        before-image's, UTC) and ``error``."""
        frame = self.plan.frame
        frame["study_id"] = pd.Series([r.study_id for r in self._rows], index=frame.index, dtype=object)
        frame["change"] = [r.kind for r in self._rows]
        frame["before"] = pd.Series([_values(r.live, list(r.change)) for r in self._rows],
                                    index=frame.index, dtype=object)
        frame["after"] = pd.Series(
            [None if r.live is None else {_slot_name(s): v for s, v in r.change.items()} for r in self._rows],
            index=frame.index, dtype=object,
        )
        frame["updated_at"] = pd.to_datetime(
            pd.Series([None if r.live is None else r.live.get("updatedAt") for r in self._rows],
                      index=frame.index, dtype=object),
            utc=True,
        )
        frame["error"] = pd.Series([r.error for r in self._rows], index=frame.index, dtype=object)
        return frame

    def counts(self) -> dict[str, int]:
        """How many rows of each change type (``noop``, ``update``, ``cancel`` ...)."""
        out: dict[str, int] = {}
        for row in self._rows:
            out[row.kind] = out.get(row.kind, 0) + 1
        return dict(sorted(out.items()))

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v:,}" for k, v in self.counts().items())
        return f"Preview({len(self):,} rows: {counts or 'nothing'})"

    def _repr_html_(self) -> str:
        shown = self._rows[:50]
        fields = []
        for row in shown:
            for slot in row.change:
                if slot not in fields:
                    fields.append(slot)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in
                       ["row", "study", "change", *(_slot_name(s) for s in fields), f"updated ({self.tz.key})"])
        body = []
        for row in shown:
            cells = [html.escape(str(row.label)), html.escape(row.study_id or ""), html.escape(row.kind)]
            for slot in fields:
                if slot not in row.change or row.live is None:
                    cells.append("")
                    continue
                before, after = _slot_value(row.live, slot), row.change[slot]
                text = html.escape(f"{before!s} → {after!s}" if before != after else f"{before!s}")
                style = ' style="background:#fff3b0"' if before != after else ""
                cells.append(f"<span{style}>{text}</span>")
            updated = row.live.get("updatedAt") if row.live else None
            local = pd.Timestamp(updated).tz_convert(self.tz).strftime("%Y-%m-%d %H:%M:%S") if updated else ""
            cells.append(local)
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        more = f"<p>... {len(self) - 50:,} more rows</p>" if len(self) > 50 else ""
        return f"<p>{html.escape(repr(self))}</p><table><tr>{head}</tr>{''.join(body)}</table>{more}"

    def apply(
        self,
        *,
        journal: str | os.PathLike[str],
        concurrency: int = 8,
        force: bool = False,
        reason: str | None = None,
        progress: Progress = True,
    ) -> BulkResult:
        """Send the previewed changes (see :func:`apply_plan`); a planned field that changed
        on the server since this preview read it is a ``conflict`` unless ``force``."""
        rows, read_at = self._rows, self._read_at
        if self._recheck:
            read_at = now_text()
            found = [r for r in rows if r.live is not None and r.study_id is not None]
            unread: dict[str, ApiError] = {}
            live = _read_studies(
                self._client, [r.study_id for r in found if r.study_id],
                known=_known_table([r.live for r in found if r.live]), concurrency=concurrency,
                progress=progress, unread=unread,
            )
            rows = [
                _Row(r.position, r.label, r.cells, r.study_id, r.change, r.expected,
                     live.get(r.study_id) if r.study_id else None,
                     error=_unread_error(unread[r.study_id]) if r.study_id in unread
                     else r.error if r.live is None else None, kind=r.kind)
                for r in rows
            ]
        return _run(self._client, journal, self.plan, rows, kind=self._kind, undo_of=self._undo_of,
                    concurrency=concurrency, force=force, reason=reason, progress=progress, read_at=read_at)


def preview_plan(
    plan: Plan,
    client: Client,
    *,
    users: pd.DataFrame | None = None,
    concurrency: int = 8,
    progress: Progress = True,
    tz: str | None = None,
    expected: Mapping[int, Mapping[str, Any]] | None = None,
    check_users: bool = True,
    kind: str = "apply",
    undo_of: str | None = None,
    recheck: bool = True,
) -> Preview:
    """:meth:`Plan.preview` (see there). ``expected`` (plan position -> slot -> value)
    replaces the before-image as what each row expects to find (an undo expects its run's
    after state)."""
    plan.validate()
    read_at = now_text()
    frame = plan.frame
    ids = cell_values(frame["study_id"]) if "study_id" in frame.columns else [None] * len(frame)
    uids = cell_values(frame["study_instance_uid"]) if "study_instance_uid" in frame.columns else [None] * len(frame)
    unread: dict[str, ApiError] = {}
    by_id = _read_studies(client, [i for i in ids if i], concurrency=concurrency, progress=progress, unread=unread)
    by_uid = _read_by_uid(client, [u for i, u in zip(ids, uids, strict=True) if not i and u],
                          concurrency=concurrency, progress=progress)
    wires = [by_id.get(i) if i else by_uid.get(u) if u else None for i, u in zip(ids, uids, strict=True)]
    resolved = plan
    cases: list[dict[str, Any]] = []
    labels = list(frame.index)
    seen: dict[str, Any] = {}
    for label, wire in zip(labels, wires, strict=True):
        if wire is not None:
            if wire["studyId"] in seen:  # one row by ID, another by UID
                cases.append({"row": label, "field": "study_instance_uid", "value": wire["studyInstanceUid"],
                              "reason": Reason.DUPLICATE,
                              "detail": f"study {wire['studyId']} is also row {seen[wire['studyId']]}"})
            seen.setdefault(wire["studyId"], label)
    assigned = cell_values(frame["assigned_to"]) if "assigned_to" in frame.columns else []
    if check_users and any(v is not None and v != UNASSIGN for v in assigned):
        roster, is_roster = _users_of(client, users)
        if is_roster and roster is not None:
            cases += [c for c in plan.failures(roster) if c["field"] == "assigned_to"]
            user_list = roster
        else:
            user_list = _users_seen([w for w in wires if w])
            emails = set(user_list["email"].dropna().astype(str).str.lower())
            cases += [
                {"row": labels[p], "field": "assigned_to", "value": v, "reason": Reason.NOT_A_CHOICE,
                 "detail": "an email of no user seen in these studies (the key cannot list users)"}
                for p, v in enumerate(assigned) if isinstance(v, str) and "@" in v and v.lower() not in emails
            ]
        if not cases:
            resolved = plan.with_user_ids(user_list, strict=False)
    rows: list[_Row] = []
    resolved_frame = resolved.frame
    for position, (label, wire) in enumerate(zip(labels, wires, strict=True)):
        cells = {str(k): _plain_cell(v) for k, v in frame.iloc[position].items()}
        change = _change_of({str(k): _plain_cell(v) for k, v in resolved_frame.iloc[position].items()})
        if wire is None:
            failed = unread.get(ids[position] or "")
            rows.append(_Row(position, label, cells, ids[position], change, {}, None,
                             error=_unread_error(failed) if failed else "no such study",
                             kind="unread" if failed else "missing"))
            continue
        if wire.get("studyInstanceUid") and uids[position] and wire["studyInstanceUid"] != uids[position]:
            cases.append({"row": label, "field": "study_instance_uid", "value": uids[position],
                          "reason": Reason.CONFLICT, "detail": f"study {wire['studyId']} has another UID"})
        merged = _merged_metadata(wire, change) if any(s.startswith(_META_SLOT) for s in change) else None
        if merged is not None and len(merged) > MAX_METADATA_PAIRS:
            cases.append({"row": label, "field": "metadata", "value": len(merged), "reason": Reason.TOO_MANY_PAIRS,
                          "detail": "after merging the planned keys into the live map"})
        row_expected = dict(expected[position]) if expected is not None and position in expected else {
            slot: _slot_value(wire, slot) for slot in change
        }
        to_send, conflicts = _settle(change, row_expected, wire, force=False)
        kind_ = "conflict" if conflicts else _change_type(to_send)
        rows.append(_Row(position, label, cells, wire["studyId"], change, row_expected, wire, kind=kind_))
    if cases:
        raise ValidationError.from_cases(_WHAT, cases)
    return Preview(client, plan, rows, tz=tz, kind=kind, undo_of=undo_of, recheck=recheck, read_at=read_at)


# --- apply ---------------------------------------------------------------------------------------


class _Fatal(Exception):
    """The key was refused (401/403): the run stops, nothing more is sent."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


def _is_refused_key(error: BaseException) -> bool:
    return isinstance(error, ApiStatusError) and error.status_code in (401, 403)


def _send_row(client: Client, journal: Journal, run_id: str, row: _Row, force: bool) -> str:
    """Bring one row to its planned state (the runner's task): its final status."""
    live = row.live
    if live is None or row.study_id is None:
        journal.settle(run_id, row.position, "failed", error=row.error or "no such study",
                       confirm_unknown="refused")
        return "failed"
    to_send, conflicts = _settle(row.change, row.expected, live, force)
    if conflicts:
        names = ", ".join(_slot_name(s) for s in conflicts)
        journal.settle(run_id, row.position, "conflict", after=live, confirm_unknown="conflict",
                       error=f"changed on the server since it was read: {names}")
        return "conflict"
    if not to_send:
        status = "applied" if row.sent else "noop"
        journal.settle(run_id, row.position, status, after=live, confirm_unknown="read back: applied")
        return status
    study_id = row.study_id
    after = dict(live)
    steps = []
    if to_send.get("isCancelled") is False:
        steps.append("uncancel")
    update = {s: v for s, v in to_send.items() if s != "isCancelled"}
    if update:
        steps.append("update")
    if to_send.get("isCancelled") is True:
        steps.append("cancel")
    for step in steps:
        # the before-image is the state the first request is sent on: the journal has it
        # from the start of the run, except for a row a resume read again
        request = journal.sending(run_id, row.position, step,
                                  before=live if row.reread and not row.sent else None)
        row.sent = True
        try:
            if step == "update":
                arguments: dict[str, Any] = {_UPDATE_ARG[s]: v for s, v in update.items() if s in _UPDATE_ARG}
                if any(s == "metadata" or s.startswith(_META_SLOT) for s in update):
                    arguments["metadata"] = _merged_metadata(live, update)
                after = client.update_study(study_id, **arguments)
            else:
                answer = (client.cancel_study if step == "cancel" else client.uncancel_study)(study_id)
                if not answer.success:
                    # an answer we cannot read as done or "already": what is the study now?
                    return _read_back(client, journal, run_id, row, request,
                                      f"{step}: {answer.message or 'success: false'}")
                # the before-image decided it was not in the target state: ours, whatever
                # the answer's wording ("already ..." after a lost answer of our own)
                after = dict(after, isCancelled=step == "cancel")
        except ApiError as exc:
            if _is_refused_key(exc):
                journal.settle(run_id, row.position, "failed", error=str(exc), request=request, outcome="refused")
                raise _Fatal(exc) from exc
            if isinstance(exc, ApiStatusError) and 400 <= exc.status_code < 500 and exc.status_code != 429:
                journal.settle(run_id, row.position, "failed", error=str(exc), request=request,
                               outcome="refused", after=after if step != steps[0] else None)
                return "failed"
            if stop_requested():
                return "skipped"  # interrupted: the journal keeps "sent, outcome unknown"
            return _read_back(client, journal, run_id, row, request, str(exc))
        if step != steps[-1]:
            journal.confirm(request, "changed")
    journal.settle(run_id, row.position, "applied", after=after, request=request, outcome="changed")
    return "applied"


def _read_back(client: Client, journal: Journal, run_id: str, row: _Row, request: int, error: str) -> str:
    """After an answer we could not use: read the study; in the planned state it is
    ``applied``, still as expected it is ``failed`` (not applied), else ``conflict``."""
    assert row.study_id is not None
    read = journal.sending(run_id, row.position, "read", before=None)
    try:
        now = client.retrieve_study(row.study_id)
    except ApiError:
        journal.confirm(read, "refused")
        journal.settle(run_id, row.position, "sending", error=f"{_UNKNOWN} ({error})")
        return "failed"
    journal.confirm(read, "read")
    to_send, conflicts = _settle(row.change, row.expected, now, force=False)
    if not to_send and not conflicts:
        journal.settle(run_id, row.position, "applied", after=now, confirm_unknown="read back: applied")
        return "applied"
    if conflicts:
        names = ", ".join(_slot_name(s) for s in conflicts)
        journal.settle(run_id, row.position, "conflict", after=now, confirm_unknown="read back: conflict",
                       error=f"changed on the server since it was read: {names} (after: {error})")
        return "conflict"
    journal.settle(run_id, row.position, "failed", after=now, confirm_unknown="read back: not applied",
                   error=error)
    return "failed"


def _run(
    client: Client,
    journal_path: str | os.PathLike[str],
    plan: Plan,
    rows: list[_Row],
    *,
    kind: str,
    undo_of: str | None,
    concurrency: int,
    force: bool,
    reason: str | None,
    progress: Progress,
    read_at: str | None = None,
) -> BulkResult:
    """Journal a new run of ``rows`` and send it; a row whose study another run of the
    journal is changing, or changed after ``read_at``, is a conflict and is not sent (see
    :meth:`Journal.start_run`)."""
    run_id = new_run_id()
    with Journal(journal_path) as journal, journal.running(run_id):
        journal.start_run(
            run_id, kind=kind, undo_of=undo_of, base_url=client.base_url, force=force,
            columns=[str(c) for c in plan.frame.columns], reason=reason,
            rows=[JournalRow(r.position, r.label, r.cells, r.study_id, r.change, r.expected, r.live, None,
                             "pending", False, None) for r in rows],
            read_at=read_at,
            live=journal.live_runs(),
        )
        claimed = {r.position for r in journal.rows(run_id) if r.status == "pending"}
        rows = [r for r in rows if r.position in claimed]
        _send_rows(client, journal, run_id, rows, concurrency=concurrency, force=force, progress=progress)
        return _result(journal, run_id)


def _send_rows(
    client: Client, journal: Journal, run_id: str, rows: list[_Row], *, concurrency: int, force: bool,
    progress: Progress,
) -> None:
    """Send the rows on the shared runner; a refused key stops the run (raised), Ctrl-C
    lets the requests in flight finish and is raised."""
    from viewerkit.runner import Stopped

    if rows:
        with Runner(min(concurrency, len(rows)), progress=progress, desc="applying", unit="row",
                    total=len(rows), errors="collect", fatal=(_Fatal,)) as runner:
            for row in rows:
                runner.submit(row.position, _send_row, client, journal, run_id, row, force)
            try:
                for outcome in runner.outcomes():
                    if outcome.error is not None and not isinstance(outcome.error, Stopped):
                        journal.settle(run_id, outcome.key, "failed", error=f"{type(outcome.error).__name__}: {outcome.error}")
            except _Fatal as fatal:
                journal.finish_run(run_id)
                raise fatal.error from None
    journal.finish_run(run_id)


# --- results -------------------------------------------------------------------------------------


class BulkResult:
    """What a bulk run did, rebuilt from its journal: ``frame`` (one row per plan row,
    labelled as the plan: every input column, then ``status`` — ``applied``, ``noop``,
    ``conflict``, ``failed``, ``skipped`` —, ``error``, ``before`` and ``after``: dicts of the
    planned fields by plan name), ``counts()``, ``run_id``, ``to_csv(path)``,
    ``failed_plan()``.
    """

    def __init__(self, frame: pd.DataFrame, run_id: str, columns: list[str], journal: Path) -> None:
        self.frame = frame
        self.run_id = run_id
        self.journal = journal
        self._columns = columns

    def counts(self) -> dict[str, int]:
        """Rows per status, every status listed (zeros too), in :data:`STATUSES` order."""
        found = self.frame["status"].value_counts()
        return {s: int(found.get(s, 0)) for s in STATUSES}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v:,}" for k, v in self.counts().items() if v)
        return f"BulkResult({self.run_id}: {counts or 'no rows'})"

    def _repr_html_(self) -> str:
        colours = {"applied": "#d7f5dd", "noop": "#eeeeee", "conflict": "#fff3b0", "failed": "#ffd6d6",
                   "skipped": "#e0e8ff"}
        shown = self.frame.head(50)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["row", *shown.columns])
        body = []
        for label, row in shown.iterrows():
            style = f' style="background:{colours.get(str(row["status"]), "")}"'
            cells = "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row.tolist())
            body.append(f"<tr{style}><td>{html.escape(str(label))}</td>{cells}</tr>")
        more = f"<p>... {len(self.frame) - 50:,} more rows</p>" if len(self.frame) > 50 else ""
        return f"<p>{html.escape(repr(self))}</p><table><tr>{head}</tr>{''.join(body)}</table>{more}"

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the frame as CSV (atomically; ``before`` / ``after`` as JSON); the path."""
        import orjson

        from viewerkit.files import write_text

        out = self.frame.copy()
        for name in ("before", "after"):
            out[name] = [None if v is None else orjson.dumps(v).decode() for v in out[name]]
        return write_text(out.to_csv(index_label="row"), path)

    def failed_plan(self) -> Plan:
        """A plan of the failed rows only (their input cells, labels kept), to retry them."""
        failed = self.frame[self.frame["status"] == "failed"]
        return Plan(failed[self._columns])


def _result(journal: Journal, run_id: str) -> BulkResult:
    info = journal.run(run_id)
    rows = journal.rows(run_id)
    records = []
    for row in rows:
        status = row.status
        error = row.error
        if status == "pending":
            status = "skipped"
        elif status == "sending":
            status, error = "failed" if info.finished_at and error else "skipped", error or _UNKNOWN
        slots = list(row.change)
        records.append({
            **{c: row.cells.get(c) for c in info.columns},
            "status": status, "error": error,
            "before": _values(row.before, slots), "after": _values(row.after, slots),
        })
    # object columns: an empty cell stays None (pandas 3 would make a str column of NaN)
    frame = pd.DataFrame(records, columns=[*info.columns, "status", "error", "before", "after"], dtype=object)
    frame.index = pd.Index([r.label for r in rows])
    return BulkResult(frame, run_id, info.columns, journal.path)


def apply_plan(
    plan: Plan,
    client: Client,
    *,
    journal: str | os.PathLike[str],
    users: pd.DataFrame | None = None,
    concurrency: int = 8,
    force: bool = False,
    reason: str | None = None,
    progress: Progress = True,
) -> BulkResult:
    """:meth:`Plan.apply`: preview (read the before-images) and send at once."""
    preview = preview_plan(plan, client, users=users, concurrency=concurrency, progress=progress, recheck=False)
    return preview.apply(journal=journal, concurrency=concurrency, force=force, reason=reason, progress=progress)


# --- resume, undo, runs --------------------------------------------------------------------------


def _check_server(client: Client, base_url: str, run_id: str) -> None:
    if client.base_url != base_url:
        raise ValidationError.one(
            "bulk journal", "client", client.base_url, Reason.CONFLICT,
            detail=f"run {run_id} was sent to {base_url}",
        )


def resume(
    client: Client, journal: str | os.PathLike[str], run: str | None = None, *,
    concurrency: int = 8, progress: Progress = True,
) -> BulkResult:
    """Finish an interrupted run (``run``: its ID; None: the journal's latest). Each row
    without a final status is read back first: a row whose request was sent without a
    recorded answer counts as ``applied`` when the study is in the planned state, is re-sent
    (only what is missing) when it is still as expected, and is a ``conflict`` otherwise;
    a row never sent goes as in a first apply. Nothing is applied twice. The result is
    rebuilt from the journal, so its counts cover the whole run.

    >>> import tempfile, os
    >>> from viewerkit import Client
    >>> with Client(api_key="sk-x", base_url="http://127.0.0.1:9") as client:
    ...     resume(client, os.path.join(tempfile.mkdtemp(), "j.sqlite"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: bulk journal: 1 problem
      field run: is not one of the allowed values, no run in .../j.sqlite (got None)
    """
    with Journal(journal) as j:
        info = j.run(run)
        _check_server(client, info.base_url, info.run_id)
        with j.running(info.run_id):  # never beside the run itself, still sending elsewhere
            return _resume_rows(client, j, info, concurrency=concurrency, progress=progress)


def _resume_rows(client: Client, j: Journal, info: RunInfo, *, concurrency: int, progress: Progress) -> BulkResult:
    """:func:`resume` once the run's lock is held: rows another live run is changing are
    conflicts, the others are read back and finished."""
    j.claim(info.run_id, read_at=now_text(), live=j.live_runs())
    todo = [r for r in j.rows(info.run_id) if r.status not in FINAL_STATUSES]
    live = _read_studies(client, [r.study_id for r in todo if r.study_id], concurrency=concurrency,
                         progress=progress)
    rows = [
        _Row(r.position, r.label, r.cells, r.study_id, r.change, r.expected,
             live.get(r.study_id) if r.study_id else None, sent=r.sent,
             error=None if r.study_id else "no such study", reread=True)
        for r in todo
    ]
    _send_rows(client, j, info.run_id, rows, concurrency=concurrency, force=info.force, progress=progress)
    return _result(j, info.run_id)


def _inverse(row: JournalRow) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """An applied row's inverse: plan cells restoring its before-image, and what the
    inverse expects to find (the row's planned values); None when nothing is to restore."""
    if row.before is None:
        return None
    cells: dict[str, Any] = {"study_id": row.study_id}
    expected: dict[str, Any] = {}
    keys = {s: v for s, v in row.change.items() if s.startswith(_META_SLOT)}
    if keys and row.before.get("metadata") is None and any(v is not None for v in keys.values()):
        # keys set on a null map: removing them would leave {}, not the null it was; the
        # whole map goes back to null if it is still just what we made it
        cells["metadata"] = CLEAR
        expected["metadata"] = {s[len(_META_SLOT):]: v for s, v in keys.items() if v is not None}
    for slot, want in row.change.items():
        if slot in keys and "metadata" in cells:
            continue
        was = _slot_value(row.before, slot)
        if slot == "metadata":
            before_map = row.before.get("metadata")
            if before_map == want:
                continue
            if before_map is None:
                cells["metadata"] = CLEAR
                expected["metadata"] = want
            elif not before_map:
                cells["metadata"] = EMPTY
                expected["metadata"] = want
            else:
                for key, value in before_map.items():
                    cells[META_PREFIX + key] = value
                    expected[_META_SLOT + key] = None
            continue
        if was == want:
            continue
        expected[slot] = want
        if slot == "isCancelled":
            cells["action"] = "cancel" if was else "uncancel"
        elif slot.startswith(_META_SLOT):
            cells[META_PREFIX + slot[len(_META_SLOT):]] = DELETE if was is None else was
        elif slot == "assignedTo":
            cells["assigned_to"] = UNASSIGN if was is None else was
        else:
            cells[_PLAN_NAME[slot]] = was
    return (cells, expected) if len(cells) > 1 else None


def undo(
    client: Client, journal: str | os.PathLike[str], run: str | None = None, *, force: bool = False,
    concurrency: int = 8, progress: Progress = True, reason: str | None = None,
) -> BulkResult:
    """Undo a run (None: the journal's latest): the inverse plan of the rows it applied,
    built from their before-images, previewed and applied as a new journaled run (kind
    ``undo``). A study whose planned fields someone changed since our write is a
    ``conflict``, not overwritten (unless ``force``). Rows are labelled as in the run undone.

    >>> import tempfile, os
    >>> from viewerkit import Client
    >>> with Client(api_key="sk-x", base_url="http://127.0.0.1:9") as client:
    ...     undo(client, os.path.join(tempfile.mkdtemp(), "j.sqlite"), "run_x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: bulk journal: 1 problem
      field run: is not one of the allowed values, no such run in .../j.sqlite (got 'run_x')
    """
    with Journal(journal) as j:
        info = j.run(run)
        _check_server(client, info.base_url, info.run_id)
        inverse = [(r.label, _inverse(r)) for r in j.rows(info.run_id) if r.status == "applied"]
    found = [(label, pair) for label, pair in inverse if pair is not None]
    if not found:
        empty = Plan(pd.DataFrame({"study_id": pd.Series([], dtype=object)}))
        return _run(client, journal, empty, [], kind="undo", undo_of=info.run_id, concurrency=concurrency,
                    force=force, reason=reason or f"undo {info.run_id}", progress=progress)
    frame = pd.DataFrame([cells for _, (cells, _) in found], index=[label for label, _ in found])
    plan = Plan(frame)
    expected = {position: exp for position, (_, (_, exp)) in enumerate(found)}
    preview = preview_plan(plan, client, concurrency=concurrency, progress=progress, expected=expected,
                           check_users=False, kind="undo", undo_of=info.run_id, recheck=False)
    return preview.apply(journal=journal, concurrency=concurrency, force=force,
                         reason=reason or f"undo {info.run_id}", progress=progress)


def runs(journal: str | os.PathLike[str]) -> pd.DataFrame:
    """The runs of a journal, oldest first: ``run_id``, ``kind`` (apply / undo),
    ``undo_of``, ``started_at``, ``finished_at`` (null while interrupted), ``user``,
    ``reason``, ``rows``, ``counts`` (status -> rows, as ``BulkResult.counts``).

    >>> import tempfile, os
    >>> runs(os.path.join(tempfile.mkdtemp(), "j.sqlite")).columns.tolist()[:4]
    ['run_id', 'started_at', 'user', 'reason']
    """
    with Journal(journal) as j:
        records = []
        for info, n in j.runs():
            counts = _result(j, info.run_id).counts()
            records.append({
                "run_id": info.run_id, "started_at": info.started_at, "user": info.user, "reason": info.reason,
                "rows": n, "counts": counts, "kind": info.kind, "undo_of": info.undo_of,
                "finished_at": info.finished_at,
            })
    columns = ["run_id", "started_at", "user", "reason", "rows", "counts", "kind", "undo_of", "finished_at"]
    # object columns: an absent reason is None, not NaN
    return pd.DataFrame({
        name: pd.Series([r[name] for r in records], dtype="int64" if name == "rows" else object)
        for name in columns
    })
