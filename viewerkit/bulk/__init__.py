"""Bulk changes: plans, preview, apply, journal, resume, undo (issue 9).

A :class:`Plan` is a table of studies and the fields to set (see ``viewerkit.bulk.plan``);
``plan.preview(client)`` / ``plan.apply(client, journal=...)`` send it (see
``viewerkit.bulk.apply``); :func:`resume`, :func:`undo` and :func:`runs` work on the SQLite
journal (``viewerkit.bulk.journal``).
"""

from __future__ import annotations

from viewerkit.bulk.apply import STATUSES, BulkResult, Preview, resume, runs, undo
from viewerkit.bulk.journal import Journal
from viewerkit.bulk.plan import (
    ACTIONS,
    CLEAR,
    DELETE,
    EMPTY,
    ID_COLUMNS,
    PLAN_FIELDS,
    UNASSIGN,
    Plan,
    cancel,
    complete,
    set_severity,
    set_status,
    uncancel,
)
from viewerkit.bulk.reassign import reassign

__all__ = [
    "Plan",
    "Preview",
    "BulkResult",
    "STATUSES",
    "Journal",
    "resume",
    "undo",
    "runs",
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
    "reassign",
]
