"""The triage board (issue 10): the worklist model (``queue``) and its widgets (``board``)."""

from __future__ import annotations

from viewerkit.triage.queue import DUE_SOON_SHARE, SLA_STATES, SORTS, QueueFilters, TriageQueue

__all__ = ["TriageQueue", "QueueFilters", "SORTS", "SLA_STATES", "DUE_SOON_SHARE"]
