"""Severity and turnaround reports: KPIs as DataFrames, figures drawn from them, an HTML report.

``viewerkit.reports.sla`` holds the SLA targets, report windows, ``now`` and the per-study
deadlines; ``viewerkit.reports.kpis`` computes (one tidy DataFrame per KPI),
``viewerkit.reports.figures`` draws (one matplotlib Figure per KPI table),
``viewerkit.reports.html`` writes the self-contained HTML report and the PNGs
(``report_figures`` gives its figures); every public name is importable from here.
Reports count days and weeks in one time zone (``tz=``, default UTC):
``report_timezone`` (in ``viewerkit.reports.sla``) validates and resolves that setting, for
the reports and for anything else that shows times the way the reports do.

>>> from viewerkit.reports import SLA, turnaround
>>> print(SLA)
stat 1 h, high 4 h, normal 24 h
"""

from __future__ import annotations

from viewerkit.reports.figures import (
    SEVERITY_COLORS,
    plot_backlog,
    plot_cancellations,
    plot_customers,
    plot_overdue,
    plot_turnaround,
    plot_volume,
    plot_workload,
)
from viewerkit.reports.html import (
    OVERDUE_COLUMNS,
    SECTIONS,
    render,
    report_figures,
    report_tables,
    save_figures,
)
from viewerkit.reports.kpis import (
    AGE_BANDS,
    backlog,
    cancellations,
    count_created,
    customers,
    overdue,
    turnaround,
    volume,
    with_completion,
    workload,
)
from viewerkit.reports.sla import (
    SLA,
    Hours,
    Moment,
    SlaLike,
    SlaTargets,
    TimeZoneLike,
    Window,
    deadlines,
    last_days,
    report_timezone,
    resolve_now,
)

__all__ = [
    "AGE_BANDS",
    "OVERDUE_COLUMNS",
    "SECTIONS",
    "SEVERITY_COLORS",
    "SLA",
    "Hours",
    "Moment",
    "SlaLike",
    "SlaTargets",
    "TimeZoneLike",
    "Window",
    "backlog",
    "cancellations",
    "count_created",
    "customers",
    "deadlines",
    "last_days",
    "overdue",
    "plot_backlog",
    "plot_cancellations",
    "plot_customers",
    "plot_overdue",
    "plot_turnaround",
    "plot_volume",
    "plot_workload",
    "render",
    "report_figures",
    "report_tables",
    "report_timezone",
    "resolve_now",
    "save_figures",
    "turnaround",
    "volume",
    "with_completion",
    "workload",
]
