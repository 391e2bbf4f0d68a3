"""The severity and turnaround report as one self-contained HTML file, and its figures as PNGs.

``render`` computes every KPI once over the same inputs (completion resolved once), draws
the figures from the KPI tables, embeds them as base64 PNG, and writes one HTML file with
no external reference (it opens offline, from e-mail, from a shared drive). Every file is
written aside and renamed into place, so a reader never sees half a report.

The study table is read as ``viewerkit.reports.columns`` says, for every column any section
needs (``REPORT_COLUMNS["report"]``), once, before any work; ``render`` checks its output
path even before that (``viewerkit.files.check_output_path``: an ``.html`` or ``.htm`` name in
a folder that exists).

>>> import pandas as pd, tempfile, pathlib
>>> t = pd.Timestamp("2026-11-02 08:00", tz="UTC")
>>> one = pd.DataFrame({"study_id": ["stu_a"], "severity": ["stat"], "is_cancelled": [False],
...     "study_viewer_status": ["complete"], "created_at": [t], "updated_at": [t + pd.Timedelta("1h")],
...     "cancelled_at": [pd.NaT], "assigned_to_user_id": [None], "express_customer_id": [None]})
>>> with tempfile.TemporaryDirectory() as folder:
...     page = render(one, pathlib.Path(folder) / "report.html", now=t + pd.Timedelta("2h"))
...     "Turnaround" in page.read_text()
True
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import viewerkit.reports.figures as plots
from viewerkit import files
from viewerkit.errors import Reason, ValidationError
from viewerkit.reports.columns import StudyColumns, needed_columns
from viewerkit.reports.kpis import (
    Freq,
    backlog,
    cancellations,
    customers,
    overdue,
    turnaround,
    volume,
    with_completion,
    workload,
)
from viewerkit.reports.sla import (
    DAY_MS,
    Moment,
    SlaLike,
    SlaTargets,
    Window,
    moment_ms,
    now_ms,
    resolve_now,
    resolve_sla,
    window_ms,
)

__all__ = ["HTML_SUFFIXES", "SECTIONS", "render", "report_figures", "report_tables", "save_figures"]

#: The sections of the report, in order: (HTML id, heading).
SECTIONS: Final = (
    ("summary", "Summary"),
    ("sla", "SLA targets"),
    ("turnaround", "Turnaround"),
    ("backlog", "Backlog"),
    ("overdue", "Overdue"),
    ("volume", "Volume and severity mix"),
    ("workload", "Workload"),
    ("customers", "Customers"),
    ("cancellations", "Cancellations"),
)

#: What ``render`` writes: an HTML file.
HTML_SUFFIXES: Final = (".html", ".htm")


def _report_columns(studies: pd.DataFrame, history: pd.DataFrame | None, targets: SlaTargets) -> StudyColumns:
    """The study table read once, for every column a section of the report needs."""
    needs = needed_columns("report", history=history is not None, customer_targets=bool(targets.customers))
    return StudyColumns(studies, "report", needs, reads=("completed_at", "completion_source"))


def _volume_span(created: np.ndarray, window: Window) -> tuple[Window, Freq]:
    """The window of the volume chart (the report window cut to the arrivals it holds, so a
    wide window does not draw years of empty periods) and a period length that suits it."""
    lo, hi = window_ms(window)
    known = created[~np.isnan(created)]
    if not len(known):
        return window, "D"
    lo, hi = max(lo, float(known.min())), min(hi, float(known.max()) + 1)
    if lo >= hi:
        return window, "D"
    span_days = (hi - lo) / DAY_MS
    freq: Freq = "h" if span_days <= 3 else "D" if span_days <= 120 else "W"
    return (pd.Timestamp(int(lo), unit="ms", tz="UTC"), pd.Timestamp(int(hi), unit="ms", tz="UTC")), freq


def _tables(
    cols: StudyColumns,
    history: pd.DataFrame | None,
    window: Window,
    targets: SlaTargets,
    at: pd.Timestamp,
) -> dict[str, pd.DataFrame]:
    table = with_completion(cols.table(), history)
    span, freq = _volume_span(cols.created, window)
    return {
        "turnaround": turnaround(table, "severity", sla=targets, window=window),
        "turnaround_weekly": turnaround(table, ["severity", "week"], sla=targets, window=window),
        "backlog": backlog(table, now=at, sla=targets),
        "overdue": overdue(table, now=at, sla=targets),
        "volume": volume(table, freq=freq, window=span),
        "workload": workload(table, now=at, sla=targets, window=window),
        "customers": customers(table, sla=targets, window=window),
        "cancellations": cancellations(table, "severity", window=window),
    }


def report_tables(
    studies: pd.DataFrame,
    *,
    history: pd.DataFrame | None = None,
    window: Window = None,
    sla: SlaLike = None,
    now: Moment = None,
) -> dict[str, pd.DataFrame]:
    """Every KPI table of the report, keyed ``turnaround``, ``turnaround_weekly``,
    ``backlog``, ``overdue``, ``volume``, ``workload``, ``customers``, ``cancellations``.

    The study table is read once (every column any KPI needs, ``ValidationError`` listing
    every problem before any number is computed) and completion is resolved once
    (``with_completion``) and shared by all of them. The window bounds arrivals,
    completions and cancellations; the backlog, the overdue list and the open counts are
    what is open at ``now``, however old (a morning report over the last 7 days must still
    show the study that has waited for three weeks).
    """
    targets, at = resolve_sla(sla), resolve_now(now)
    window_ms(window)
    return _tables(_report_columns(studies, history, targets), history, window, targets, at)


def _figures_of(tables: Mapping[str, pd.DataFrame], targets: SlaTargets) -> dict[str, Figure]:
    return {
        "turnaround": plots.plot_turnaround(tables["turnaround"], sla=targets),
        "turnaround_weekly": plots.plot_turnaround(tables["turnaround_weekly"], sla=targets),
        "backlog": plots.plot_backlog(tables["backlog"]),
        "overdue": plots.plot_overdue(tables["overdue"]),
        "volume": plots.plot_volume(tables["volume"]),
        "workload": plots.plot_workload(tables["workload"]),
        "customers": plots.plot_customers(tables["customers"]),
        "cancellations": plots.plot_cancellations(tables["cancellations"]),
    }


def report_figures(
    studies: pd.DataFrame,
    *,
    history: pd.DataFrame | None = None,
    window: Window = None,
    sla: SlaLike = None,
    now: Moment = None,
) -> dict[str, Figure]:
    """Every figure of the report (matplotlib Figures), keyed like ``report_tables``.

    >>> from viewerkit.frame import empty_studies, to_pandas
    >>> figs = report_figures(to_pandas(empty_studies()), now="2026-11-02")
    >>> list(figs)[:3], figs["backlog"].axes[0].get_title()
    (['turnaround', 'turnaround_weekly', 'backlog'], 'Open studies by age')
    """
    tables = report_tables(studies, history=history, window=window, sla=sla, now=now)
    return _figures_of(tables, resolve_sla(sla))


def _write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``viewerkit.files``), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.write_bytes(data, path)


def save_figures(
    studies: pd.DataFrame,
    folder: str | os.PathLike[str],
    *,
    history: pd.DataFrame | None = None,
    window: Window = None,
    sla: SlaLike = None,
    now: Moment = None,
    dpi: int = 100,
) -> list[Path]:
    """Write one PNG per figure of the report into ``folder`` (``<name>.png``), atomically,
    creating the folder if needed.

    Returns the paths written, in report order. A ``folder`` that is a file is refused
    (``ValidationError``, field ``folder``, ``Reason.NOT_A_FOLDER``) before any work.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ValidationError.one("save_figures", "folder", os.fspath(folder), Reason.NOT_A_FOLDER)
    written = []
    for name, fig in report_figures(studies, history=history, window=window, sla=sla, now=now).items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        written.append(_write_bytes(out / f"{name}.png", buffer.getvalue()))
    return written


# --- HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2329;
       margin: 0 auto; max-width: 1000px; padding: 1.5rem 2rem 3rem; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 2px solid #dde3ea; padding-bottom: .2rem;
       margin-top: 2.2rem; }
p.meta { color: #56606b; margin-top: 0; }
nav a { margin-right: .8rem; font-size: .92rem; }
dl.headline { display: grid; grid-template-columns: repeat(3, 1fr); gap: .6rem 1.2rem; }
dl.headline div { background: #f3f6f9; border-radius: 6px; padding: .6rem .8rem; }
dl.headline dt { font-size: .85rem; color: #56606b; } dl.headline dd { margin: 0; font-size: 1.4rem; font-weight: 600; }
table.kpi { border-collapse: collapse; font-size: .85rem; margin: .6rem 0 1rem; }
table.kpi th, table.kpi td { border-bottom: 1px solid #e3e8ee; padding: .25rem .6rem; text-align: right; }
table.kpi th { background: #f3f6f9; } table.kpi td { white-space: nowrap; }
div.scroll { overflow-x: auto; } table.kpi td:first-child, table.kpi th:first-child { text-align: left; }
img.figure { width: 100%; max-width: 900px; display: block; margin: .6rem 0; }
p.note { color: #56606b; font-size: .85rem; }
"""


def _fmt_cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return "–"
    if column.endswith("_share") or column.endswith("_rate") or column == "share":
        return f"{float(value) * 100:.1f} %"
    if column.endswith("_h"):
        return f"{float(value):.2f}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M UTC") if (value.hour or value.minute) else value.strftime("%Y-%m-%d")
    return str(value)


def _table_html(table: pd.DataFrame, *, max_rows: int | None = None, latest: bool = False, note: str = "") -> str:
    """The table as HTML; past ``max_rows``, its first rows (or its last, with ``latest``)."""
    shown = table if max_rows is None else table.tail(max_rows) if latest else table.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt_cell(str(c), v))}</td>" for c, v in zip(shown.columns, row, strict=True)) + "</tr>"
        for row in shown.itertuples(index=False, name=None)
    )
    more = ""
    if max_rows is not None and len(table) > max_rows:
        more = f'<p class="note">Showing the {"last" if latest else "first"} {max_rows} of {len(table)} rows.</p>'
    if note:
        more += f'<p class="note">{html.escape(note)}</p>'
    table_html = f'<table class="kpi"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table_html}</div>{more}'


def _recent_weeks_html(weekly: pd.DataFrame, *, weeks: int) -> str:
    recent = sorted(set(weekly["week"]))[-weeks:]
    shown = weekly[weekly["week"].isin(recent)]
    note = f"The last {weeks} weeks; the figure shows every week." if len(shown) < len(weekly) else ""
    return _table_html(shown, note=note)


def _png(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _when(ms: float | None) -> str:
    if ms is None or not np.isfinite(ms):
        return "–"
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def _share(num: float, den: float) -> str:
    return f"{num / den * 100:.1f} %" if den else "–"


def render(
    studies: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    history: pd.DataFrame | None = None,
    window: Window = None,
    sla: SlaLike = None,
    now: Moment = None,
    refreshed_at: Moment = None,
    title: str = "Severity and turnaround report",
) -> Path:
    """Write the report to ``path`` as one self-contained HTML file, atomically; return the path.

    Checks its arguments, then ``path`` (``ValidationError``, field ``path``: not ``.html`` /
    ``.htm``, a folder that does not exist, a folder), then the study table (see the
    module notes), all before any KPI is computed.

    Sections (``SECTIONS``): summary (headline numbers), the SLA targets used, turnaround,
    backlog, overdue, volume and severity mix, workload, customers, cancellations; each with
    its figure(s) embedded as PNG and its KPI table. The header gives the window, ``now`` and
    the data's freshness: the newest ``updated_at`` and, if given, ``refreshed_at`` (the
    cache's last refresh).
    """
    targets, at = resolve_sla(sla), resolve_now(now)
    lo, hi = window_ms(window)
    refreshed = moment_ms(refreshed_at, "refreshed_at")
    target = files.check_output_path(path, suffixes=HTML_SUFFIXES, what="render")
    cols = _report_columns(studies, history, targets)
    tables = _tables(cols, history, window, targets, at)
    figs = _figures_of(tables, targets)
    window_text = f"{_when(lo) if np.isfinite(lo) else 'the beginning'} to {_when(hi) if np.isfinite(hi) else 'now'}"
    updated = cols.updated[~np.isnan(cols.updated)]
    newest = float(updated.max()) if len(updated) else None
    tat, bl, cust = tables["turnaround"], tables["backlog"], tables["customers"]
    completed = float(tat["completed"].sum())
    headline = {
        "studies in the table": f"{cols.n:,}",
        "completed in the window": f"{int(completed):,}",
        "completed within target": _share(float(tat["within_target"].sum()), completed),
        "open now": f"{int(bl['open'].sum()):,}",
        "open and past target": f"{int(bl['past_target'].sum()):,}",
        "cancelled (of arrivals)": _share(float(cust["cancelled"].sum()), float(cust["arrivals"].sum())),
    }
    sources = (
        f"Completion times: {int(tat['from_history'].sum()):,} from the cache's change history, "
        f"{int(tat['from_updated_at'].sum()):,} from updated_at (may overstate turnaround). "
        f"{int(tat['cancelled'].sum()):,} cancelled studies left out. "
        "Within target means turnaround <= target."
    )
    sections = {
        "summary": '<dl class="headline">' + "".join(
            f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd></div>" for k, v in headline.items()
        ) + "</dl>",
        "sla": f"<p>{html.escape(str(targets))}.</p>" + _table_html(targets.table()),
        "turnaround": _png(figs["turnaround"], "turnaround by severity")
        + _table_html(tat, note=sources)
        + _png(figs["turnaround_weekly"], "weekly median turnaround by severity")
        + _recent_weeks_html(tables["turnaround_weekly"], weeks=8),
        "backlog": _png(figs["backlog"], "open studies by age")
        + _table_html(bl, note="Everything open now, however old: the window does not apply here."),
        "overdue": _png(figs["overdue"], "most overdue studies") + _table_html(tables["overdue"], max_rows=50),
        "volume": _png(figs["volume"], "arrivals by severity") + _table_html(tables["volume"], max_rows=90, latest=True),
        "workload": _png(figs["workload"], "workload per assignee") + _table_html(tables["workload"], max_rows=40),
        "customers": _png(figs["customers"], "customers") + _table_html(cust, max_rows=40),
        "cancellations": _png(figs["cancellations"], "cancellations by severity") + _table_html(tables["cancellations"]),
    }
    meta = (
        f"Window: {window_text}. Generated for {_when(now_ms(at))}. "
        f"Newest study update: {_when(newest)}"
        + (f"; cache last refreshed: {_when(refreshed)}" if refreshed is not None else "")
        + f". SLA targets: {targets}."
    )
    nav = "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name in SECTIONS)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(name)}</h2>{sections[sid]}</section>' for sid, name in SECTIONS
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><header><h1>{html.escape(title)}</h1>"
        f'<p class="meta" id="freshness">{html.escape(meta)}</p><nav>{nav}</nav></header>'
        f"{body}<footer><p class=\"note\">viewerkit severity and turnaround report.</p></footer></body></html>\n"
    )
    for fig in figs.values():
        fig.clear()
    return files.write_bytes(page.encode("utf-8"), target)
