"""Bulk changes: plans, preview, apply, journal, resume, undo (issue 9).

A :class:`Plan` is a table of studies and the fields to set (see ``viewerkit.bulk.plan``).
"""

from __future__ import annotations

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
