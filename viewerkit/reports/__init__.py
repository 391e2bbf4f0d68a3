"""Severity and turnaround reports: KPIs as DataFrames, figures drawn from them, an HTML report.

``viewerkit.reports.kpis`` computes, ``viewerkit.reports.figures`` draws,
``viewerkit.reports.html`` writes; every public name is importable from here.

>>> from viewerkit.reports import SLA, turnaround
>>> print(SLA)
stat 1 h, high 4 h, normal 24 h
"""

from __future__ import annotations

from viewerkit.reports.kpis import (
    AGE_BANDS,
    SLA,
    SlaTargets,
    Window,
    backlog,
    cancellations,
    customers,
    overdue,
    turnaround,
    volume,
    with_completion,
    workload,
)

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
