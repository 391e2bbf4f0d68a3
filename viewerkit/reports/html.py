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
from zoneinfo import ZoneInfo

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
    local_floor,
    local_periods,
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
    TimeZoneLike,
    Window,
    moment_ms,
    now_ms,
    report_timezone,
    resolve_now,
    resolve_sla,
    window_ms,
)
from viewerkit.schema import SEVERITIES

__all__ = ["HTML_SUFFIXES", "OVERDUE_COLUMNS", "SECTIONS", "render", "report_figures", "report_tables", "save_figures"]

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


def _volume_span(created: np.ndarray, window: Window, zone: ZoneInfo) -> tuple[Window, Freq]:
    """The window of the volume chart (the report window cut to the whole periods holding
    its arrivals, so a wide window does not draw years of empty periods, while a period the
    window itself cuts stays partial) and a period length that suits it."""
    lo, hi = window_ms(window)
    known = created[~np.isnan(created)]
    if not len(known):
        return window, "D"
    first, last = float(known.min()), float(known.max())
    if max(lo, first) >= min(hi, last + 1):
        return window, "D"
    span_days = (min(hi, last + 1) - max(lo, first)) / DAY_MS
    freq: Freq = "h" if span_days <= 3 else "D" if span_days <= 120 else "W"
    first_period, last_period = local_floor(np.array([max(lo, first), min(hi, last + 1) - 1]), freq, zone)
    start = max(lo, first_period)
    end = min(hi, float(local_periods(last_period, last_period, freq, zone)[-1]))
    return (pd.Timestamp(int(start), unit="ms", tz="UTC"), pd.Timestamp(int(end), unit="ms", tz="UTC")), freq


def _tables(
    cols: StudyColumns,
    history: pd.DataFrame | None,
    window: Window,
    targets: SlaTargets,
    at: pd.Timestamp,
    zone: ZoneInfo,
    users: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    table = with_completion(cols.table(), history)
    span, freq = _volume_span(cols.created, window, zone)
    return {
        "turnaround": turnaround(table, "severity", sla=targets, window=window),
        "turnaround_weekly": turnaround(table, ["severity", "week"], sla=targets, window=window, now=at, tz=zone),
        "backlog": backlog(table, now=at, sla=targets),
        "overdue": overdue(table, now=at, sla=targets),
        "volume": volume(table, freq=freq, window=span, now=at, tz=zone),
        "workload": workload(table, now=at, sla=targets, window=window, users=users),
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
    tz: TimeZoneLike = "UTC",
    users: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Every KPI table of the report, keyed ``turnaround``, ``turnaround_weekly``,
    ``backlog``, ``overdue``, ``volume``, ``workload``, ``customers``, ``cancellations``.
    ``users`` (the Viewer user list) puts radiologists with no work on the workload too.

    ``tz``: the time zone whose local days and weeks ``volume`` and ``turnaround_weekly``
    count (``report_timezone``; default UTC); both flag their ``partial`` periods (the one
    under way at ``now``, or one the window cuts).

    The study table is read once (every column any KPI needs, ``ValidationError`` listing
    every problem before any number is computed) and completion is resolved once
    (``with_completion``) and shared by all of them. The window bounds arrivals,
    completions and cancellations; the backlog, the overdue list and the open counts are
    what is open at ``now``, however old (a morning report over the last 7 days must still
    show the study that has waited for three weeks).
    """
    zone = report_timezone(tz)
    targets, at = resolve_sla(sla), resolve_now(now)
    window_ms(window)
    return _tables(_report_columns(studies, history, targets), history, window, targets, at, zone, users)


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
    tz: TimeZoneLike = "UTC",
) -> dict[str, Figure]:
    """Every figure of the report (matplotlib Figures), keyed like ``report_tables``; days,
    weeks and their axis labels in ``tz`` (default UTC), partial periods hatched or dashed.

    >>> from viewerkit.frame import empty_studies, to_pandas
    >>> figs = report_figures(to_pandas(empty_studies()), now="2026-11-02")
    >>> list(figs)[:3], figs["backlog"].axes[0].get_title()
    (['turnaround', 'turnaround_weekly', 'backlog'], 'Open studies by age')
    """
    tables = report_tables(studies, history=history, window=window, sla=sla, now=now, tz=tz)
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
    tz: TimeZoneLike = "UTC",
    dpi: int = 100,
) -> list[Path]:
    """Write one PNG per figure of the report into ``folder`` (``<name>.png``), atomically,
    creating the folder if needed.

    Returns the paths written, in report order. A ``folder`` that is a file is refused
    (``ValidationError``, field ``folder``, ``Reason.NOT_A_FOLDER``) before any work, as is
    one whose parent folder does not exist (``Reason.NO_SUCH_FOLDER``: only the last folder
    is created).
    """
    report_timezone(tz)
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ValidationError.one("save_figures", "folder", os.fspath(folder), Reason.NOT_A_FOLDER)
    if not out.exists() and not out.absolute().parent.is_dir():
        # the folder itself is made, never the folders above it (a mistyped path)
        raise ValidationError.one("save_figures", "folder", os.fspath(folder), Reason.NO_SUCH_FOLDER,
                                  detail="its parent folder does not exist")
    written = []
    for name, fig in report_figures(studies, history=history, window=window, sla=sla, now=now, tz=tz).items():
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


def _fmt_cell(column: str, value: Any, zone: ZoneInfo) -> str:
    if column == "partial":
        return "partial" if value is True or value is np.True_ else ""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return "–"
    if column.endswith("_share") or column.endswith("_rate") or column == "share":
        return f"{float(value) * 100:.1f} %"
    if column.endswith("_h"):
        return f"{float(value):.2f}"
    if isinstance(value, pd.Timestamp):
        local = (value.tz_localize("UTC") if value.tzinfo is None else value).tz_convert(zone)
        return local.strftime("%Y-%m-%d %H:%M %Z") if (local.hour or local.minute) else local.strftime("%Y-%m-%d")
    return str(value)


#: The overdue table's columns as the report shows them: what is acted on first, IDs last.
OVERDUE_COLUMNS: Final = (
    "severity", "assignee", "overdue_h", "customer", "study_description", "age_h", "target_h",
    "created_at", "study_id", "study_instance_uid", "assigned_to_user_id", "express_customer_id",
)


def _overdue_first(table: pd.DataFrame) -> pd.DataFrame:
    """The overdue table with severity, assignee and hours overdue first, the IDs last."""
    first = [c for c in OVERDUE_COLUMNS if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def _volume_wide(table: pd.DataFrame) -> pd.DataFrame:
    """A ``volume()`` table (a row per period and severity) as one row per period: the
    arrivals of each severity as columns, their total, the share of stat and ``partial``."""
    k = len(SEVERITIES)
    counts = table["arrivals"].to_numpy(dtype=np.int64).reshape(-1, k)
    total = counts.sum(axis=1)
    wide = pd.DataFrame({"period": table["period"].iloc[::k].reset_index(drop=True)})
    for i, sev in enumerate(SEVERITIES):
        wide[sev] = counts[:, i]
    wide["total"] = total
    wide["stat_share"] = np.where(total > 0, counts[:, SEVERITIES.index("stat")] / np.maximum(total, 1), np.nan)
    if "partial" in table.columns:
        wide["partial"] = table["partial"].iloc[::k].to_numpy(dtype=bool)
    return wide


def _table_html(
    table: pd.DataFrame,
    *,
    max_rows: int | None = None,
    latest: bool = False,
    note: str = "",
    zone: ZoneInfo | None = None,
) -> str:
    """The table as HTML; past ``max_rows``, its first rows (or its last, with ``latest``)."""
    zone = zone if zone is not None else report_timezone("UTC")
    shown = table if max_rows is None else table.tail(max_rows) if latest else table.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt_cell(str(c), v, zone))}</td>" for c, v in zip(shown.columns, row, strict=True)) + "</tr>"
        for row in shown.itertuples(index=False, name=None)
    )
    more = ""
    if max_rows is not None and len(table) > max_rows:
        more = f'<p class="note">Showing the {"last" if latest else "first"} {max_rows} of {len(table)} rows.</p>'
    if note:
        more += f'<p class="note">{html.escape(note)}</p>'
    table_html = f'<table class="kpi"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table_html}</div>{more}'


def _recent_weeks_html(weekly: pd.DataFrame, *, weeks: int, zone: ZoneInfo) -> str:
    recent = sorted(set(weekly["week"]))[-weeks:]
    shown = weekly[weekly["week"].isin(recent)]
    note = f"The last {weeks} weeks; the figure shows every week." if len(shown) < len(weekly) else ""
    if "partial" in shown.columns and shown["partial"].any():
        note += " A partial week is not over yet, or the window cuts it."
    return _table_html(shown, note=note.strip(), zone=zone)


def _png(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _when(ms: float | None, zone: ZoneInfo) -> str:
    if ms is None or not np.isfinite(ms):
        return "–"
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").tz_convert(zone).strftime("%Y-%m-%d %H:%M %Z")


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
    tz: TimeZoneLike = "UTC",
    users: pd.DataFrame | None = None,
) -> Path:
    """Write the report to ``path`` as one self-contained HTML file, atomically; return the path.

    Checks its arguments, then ``path`` (``ValidationError``, field ``path``: not ``.html`` /
    ``.htm``, a folder that does not exist, a folder), then the study table (see the
    module notes), all before any KPI is computed.

    Sections (``SECTIONS``): summary (headline numbers), the SLA targets used, turnaround,
    backlog, overdue, volume and severity mix, workload, customers, cancellations; each with
    its figure(s) embedded as PNG and its KPI table. The header gives the window as dates
    (an open start as the first study's creation, an open end as ``now``), how many studies
    were created in it and when the first and last of them were, ``now``, the data's
    freshness (the newest ``updated_at`` and, if given, ``refreshed_at``: the cache's last
    refresh) and the time zone.

    ``tz`` (``report_timezone``; default UTC): every time shown, and the days and weeks of
    the volume and weekly turnaround, are in this zone, which the header states. A partial
    day or week (under way at ``now``, or cut by the window) is hatched or dashed in the
    figures and flagged ``partial`` in the tables. The overdue table leads with severity,
    assignee and hours overdue (``OVERDUE_COLUMNS``: IDs last); the volume table has one
    row per period, a column per severity and their total.
    """
    zone = report_timezone(tz)
    targets, at = resolve_sla(sla), resolve_now(now)
    lo, hi = window_ms(window)
    refreshed = moment_ms(refreshed_at, "refreshed_at")
    target = files.check_output_path(path, suffixes=HTML_SUFFIXES, what="render")
    cols = _report_columns(studies, history, targets)
    tables = _tables(cols, history, window, targets, at, zone, users)
    figs = _figures_of(tables, targets)
    created = cols.created[~np.isnan(cols.created)]
    in_window = created[(created >= lo) & (created < hi)]
    if np.isfinite(lo):
        start_text = _when(lo, zone)
    else:
        start_text = f"{_when(float(created.min()), zone)} (the first study)" if len(created) else "the first study"
    end_text = _when(hi, zone) if np.isfinite(hi) else f"now, {_when(now_ms(at), zone)}"
    window_text = f"{start_text} to {end_text}"
    arrivals_text = f"Studies created in the window: {len(in_window):,} of {cols.n:,}" + (
        f" (first {_when(float(in_window.min()), zone)}, last {_when(float(in_window.max()), zone)})"
        if len(in_window) else ""
    )
    updated = cols.updated[~np.isnan(cols.updated)]
    newest = float(updated.max()) if len(updated) else None
    tat, bl, cust = tables["turnaround"], tables["backlog"], tables["customers"]
    completed = float(tat["completed"].sum())
    headline = {
        "studies in the table": f"{cols.n:,}",
        "created in the window": f"{len(in_window):,}",
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
    volume_note = (
        f"Arrivals per period (periods start at local midnight in {zone.key}). A partial period "
        "is under way now or cut by the window: it is hatched in the figure."
        if tables["volume"]["partial"].any() else f"Arrivals per period, in {zone.key}."
    )
    customers_note = (
        f"The figure shows the {min(15, len(cust))} customers with most arrivals of {len(cust):,}."
        if len(cust) > 15 else ""
    )
    sections = {
        "summary": '<dl class="headline">' + "".join(
            f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd></div>" for k, v in headline.items()
        ) + "</dl>",
        "sla": f"<p>{html.escape(str(targets))}.</p>" + _table_html(targets.table()),
        "turnaround": _png(figs["turnaround"], "turnaround by severity")
        + _table_html(tat, note=sources)
        + _png(figs["turnaround_weekly"], "weekly median turnaround by severity")
        + _recent_weeks_html(tables["turnaround_weekly"], weeks=8, zone=zone),
        "backlog": _png(figs["backlog"], "open studies by age")
        + _table_html(bl, note="Everything open now, however old: the window does not apply here."),
        "overdue": _png(figs["overdue"], "most overdue studies")
        + _table_html(_overdue_first(tables["overdue"]), max_rows=50, zone=zone),
        "volume": _png(figs["volume"], "arrivals by severity")
        + _table_html(_volume_wide(tables["volume"]), max_rows=90, latest=True, zone=zone, note=volume_note),
        "workload": _png(figs["workload"], "workload per assignee") + _table_html(tables["workload"], max_rows=40),
        "customers": _png(figs["customers"], "customers")
        + _table_html(cust, max_rows=40, note=customers_note),
        "cancellations": _png(figs["cancellations"], "cancellations by severity") + _table_html(tables["cancellations"]),
    }
    meta = (
        f"Window: {window_text}. {arrivals_text}. Generated for {_when(now_ms(at), zone)}. "
        f"Newest study update: {_when(newest, zone)}"
        + (f"; cache last refreshed: {_when(refreshed, zone)}" if refreshed is not None else "")
        + f". SLA targets: {targets}."
    )
    zone_text = (
        f"Time zone: {zone.key}. Times are shown in it, and days and weeks run from its local "
        "midnight (Monday for weeks)."
    )
    nav = "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name in SECTIONS)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(name)}</h2>{sections[sid]}</section>' for sid, name in SECTIONS
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><header><h1>{html.escape(title)}</h1>"
        f'<p class="meta" id="freshness">{html.escape(meta)}</p>'
        f'<p class="meta" id="timezone">{html.escape(zone_text)}</p><nav>{nav}</nav></header>'
        f"{body}<footer><p class=\"note\">viewerkit severity and turnaround report.</p></footer></body></html>\n"
    )
    for fig in figs.values():
        fig.clear()
    return files.write_bytes(page.encode("utf-8"), target)
