"""Matplotlib figures drawn from the KPI tables of ``viewerkit.reports.kpis``.

Each ``plot_*`` takes the table its KPI returned and gives back a ``matplotlib.figure.Figure``
on the Agg canvas: no pyplot, no global state touched, nothing shown. Severities keep fixed
colours (``SEVERITY_COLORS``); axes carry their units; figures are 9 x 4.5 in, readable at
notebook width. In a notebook, ``display(fig)`` (or a figure as the cell's last value after
``%matplotlib inline``) shows it; ``fig.savefig(path)`` writes it.

Periods are drawn in the time zone their table was computed in (``tz=`` of ``volume`` and
``turnaround``: the ``period`` / ``week`` column's zone), and the axis label names it. A
period the table flags ``partial`` (the day or week still under way, or one the window
cuts) is drawn hatched (bars) or dashed with a hollow marker (lines), and labelled
"partial", so a half-filled day does not read as a drop or a spike.

>>> from viewerkit.frame import empty_studies, to_pandas
>>> from viewerkit.reports import backlog
>>> fig = plot_backlog(backlog(to_pandas(empty_studies()), now="2026-11-02"))
>>> fig.axes[0].get_title()
'Open studies by age'
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from viewerkit.errors import Reason, ValidationError
from viewerkit.reports.kpis import AGE_BANDS
from viewerkit.reports.sla import SlaLike, resolve_sla
from viewerkit.schema import SEVERITIES, Severity

__all__ = [
    "SEVERITY_COLORS",
    "FIGSIZE",
    "plot_backlog",
    "plot_cancellations",
    "plot_customers",
    "plot_overdue",
    "plot_turnaround",
    "plot_volume",
    "plot_workload",
]

#: Fixed colour per severity: normal grey-blue, high orange, stat red.
SEVERITY_COLORS: Final = {"normal": "#5b7fa6", "high": "#f28e2b", "stat": "#d62728"}
#: Figure size in inches: the width of a notebook cell.
FIGSIZE: Final = (9.0, 4.5)
_NEUTRAL: Final = "#6c757d"
_PARTIAL_HATCH: Final = "///"
_TARGET: Final = "#222222"


def _figure(ncols: int = 1, nrows: int = 1, **subplots: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, axes


def _require(table: pd.DataFrame, columns: list[str], kpi: str) -> None:
    """Refuse a table that is not ``kpi()``'s: one failure case per missing column."""
    if not isinstance(table, pd.DataFrame):
        raise ValidationError.one(f"not a {kpi}() table", "table", type(table).__name__, Reason.WRONG_TYPE,
                                  detail="expected a pandas DataFrame")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValidationError.from_cases(
            f"not a {kpi}() table",
            [{"field": c, "value": None, "reason": Reason.MISSING_COLUMN} for c in missing],
        )


def _rows_of(table: pd.DataFrame, severity: Severity) -> pd.DataFrame:
    return table[(table["severity"].astype(str) == severity).to_numpy()]


def _empty_note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=_NEUTRAL)


def _labels(values: pd.Series | list[str]) -> list[str]:
    """Data text (descriptions, names) as literal tick labels: a "$" would start mathtext,
    which draws "$5 or $10" in italics and fails the whole figure on "$x_$"."""
    return [str(v).replace("$", r"\$") for v in values]


def _dates(values: pd.Series) -> np.ndarray:
    """Times as naive local datetimes of their own zone (UTC for naive ones), for the x axis
    (matplotlib's date units): a local day starts at 00:00 on the axis."""
    series = pd.Series(values)
    times = series if isinstance(series.dtype, pd.DatetimeTZDtype) else pd.to_datetime(series, utc=True)
    return np.asarray(times.dt.tz_localize(None).to_numpy())


def _zone_name(values: pd.Series) -> str:
    """The name of the time zone of a period column ("UTC" for naive times)."""
    dtype = pd.Series(values).dtype
    tz = dtype.tz if isinstance(dtype, pd.DatetimeTZDtype) else None
    if tz is None:
        return "UTC"
    return str(getattr(tz, "key", None) or tz)


def _partial_flags(rows: pd.DataFrame) -> np.ndarray:
    """The ``partial`` column of a period table as bools (all False for a table without it)."""
    if "partial" not in rows.columns:
        return np.zeros(len(rows), dtype=bool)
    return rows["partial"].fillna(False).to_numpy(dtype=bool)


def _line_with_partial(
    ax: Axes, x: np.ndarray, y: np.ndarray, partial: np.ndarray, *, color: str, label: str | None
) -> None:
    """A line through complete periods (solid, filled markers); a partial period's point is
    hollow and joined by a dashed segment, and labelled "partial"."""
    whole = np.where(partial, np.nan, y)
    ax.plot(x, whole, marker="o", color=color, label=label)
    for i in np.flatnonzero(partial):
        for j in (i - 1, i + 1):
            if 0 <= j < len(x):
                ax.plot([x[j], x[i]], [y[j], y[i]], color=color, linestyle="--", linewidth=1)
        if np.isfinite(y[i]):
            ax.plot([x[i]], [y[i]], marker="o", markerfacecolor="white", color=color, linestyle="none")
            ax.annotate("partial", (x[i], y[i]), xytext=(4, 4), textcoords="offset points",
                        fontsize="x-small", color=color)


def plot_turnaround(table: pd.DataFrame, *, sla: SlaLike = None) -> Figure:
    """Turnaround from a ``turnaround()`` table.

    By severity: median and P90 bars per severity, the target as a black line across each
    pair. By severity and week: the weekly median per severity, targets dashed. By assignee
    or customer: the median per group (the 25 with most completed studies). Hours on a log
    scale, since targets span 1 h to 24 h.
    """
    _require(table, ["median_h", "p90_h", "completed"], "turnaround")
    targets = resolve_sla(sla)
    if "week" in table.columns and "severity" in table.columns:
        fig, axes = _figure()
        ax = axes[0, 0]
        for sev in SEVERITIES:
            rows = _rows_of(table, sev)
            _line_with_partial(ax, _dates(rows["week"]), rows["median_h"].to_numpy(dtype=float),
                               _partial_flags(rows), color=SEVERITY_COLORS[sev], label=f"{sev} median")
            ax.axhline(targets.target_hours(sev), color=SEVERITY_COLORS[sev], linestyle=":", linewidth=1)
        title = "Median turnaround per week, by severity (dotted: target)"
        if _partial_flags(table).any():
            title += "\nhollow, dashed: partial week (not over yet, or cut by the window)"
        ax.set_title(title)
        ax.set_xlabel(f"week of completion ({_zone_name(table['week'])}, Monday start)")
        ax.set_ylabel("turnaround (hours, log scale)")
        ax.set_yscale("log")
        ax.legend(loc="upper left", fontsize="small")
        fig.autofmt_xdate()
        return fig
    if "severity" in table.columns and len(table.columns.intersection(["assignee", "customer"])) == 0:
        fig, axes = _figure()
        ax = axes[0, 0]
        x = np.arange(len(SEVERITIES))
        for severity in SEVERITIES:
            i = SEVERITIES.index(severity)
            row = _rows_of(table, severity)
            median = float(row["median_h"].iloc[0]) if len(row) else np.nan
            p90 = float(row["p90_h"].iloc[0]) if len(row) else np.nan
            color = SEVERITY_COLORS[severity]
            ax.bar(x[i] - 0.2, median, width=0.38, color=color, label="median" if i == 0 else None)
            ax.bar(x[i] + 0.2, p90, width=0.38, color=color, alpha=0.45, hatch="//",
                   label="P90" if i == 0 else None)
            ax.hlines(targets.target_hours(severity), x[i] - 0.42, x[i] + 0.42, color=_TARGET, linewidth=2,
                      label="target" if i == 0 else None)
        ax.set_xticks(x, [f"{sev}\n({int(n)} completed)" for sev, n in zip(
            SEVERITIES, [(_rows_of(table, s)["completed"].sum()) for s in SEVERITIES], strict=True)])
        ax.set_title("Turnaround by severity: median and P90 against target")
        ax.set_xlabel("severity")
        ax.set_ylabel("turnaround (hours, log scale)")
        ax.set_yscale("log")
        ax.legend(loc="upper left", fontsize="small")
        return fig
    label = "assignee" if "assignee" in table.columns else "customer"
    _require(table, [label], "turnaround")
    top = table.sort_values("completed", ascending=False, kind="stable").head(25).iloc[::-1]
    fig, axes = _figure()
    ax = axes[0, 0]
    # positions, not the names as categories: two assignees of the same name are two bars
    y = np.arange(len(top))
    ax.barh(y, top["median_h"].to_numpy(dtype=float), color=_NEUTRAL)
    ax.set_yticks(y, _labels(top[label].astype(str).tolist()), fontsize="small")
    ax.set_title(f"Median turnaround by {label}")
    ax.set_xlabel("median turnaround (hours)")
    ax.set_ylabel(label)
    if top.empty:
        _empty_note(ax, "no completed studies")
    return fig


def plot_backlog(table: pd.DataFrame) -> Figure:
    """Open studies by age band, stacked by severity, from a ``backlog()`` table; the count
    past target is written above each band."""
    _require(table, ["severity", "age_band", "open", "past_target"], "backlog")
    fig, axes = _figure()
    ax = axes[0, 0]
    x = np.arange(len(AGE_BANDS))
    bottom = np.zeros(len(AGE_BANDS))
    for sev in SEVERITIES:
        rows = _rows_of(table, sev)
        counts = dict(zip(rows["age_band"].astype(str), rows["open"].to_numpy(dtype=float), strict=True))
        heights = np.array([counts.get(band, 0.0) for band in AGE_BANDS])
        ax.bar(x, heights, bottom=bottom, color=SEVERITY_COLORS[sev], label=sev)
        bottom += heights
    past = table.groupby(table["age_band"].astype(str), sort=False)["past_target"].sum()
    for i, band in enumerate(AGE_BANDS):
        ax.annotate(f"{int(past.get(band, 0))} past target", (x[i], bottom[i]), ha="center",
                    va="bottom", fontsize="small", xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, list(AGE_BANDS))
    ax.set_title("Open studies by age")
    ax.set_xlabel("age since created (hours)")
    ax.set_ylabel("open studies (count)")
    ax.legend(title="severity", fontsize="small")
    ax.set_ylim(0, max(float(bottom.max()), 1.0) * 1.15)
    return fig


def plot_overdue(table: pd.DataFrame, *, top: int = 20) -> Figure:
    """The ``top`` most overdue open studies from an ``overdue()`` table, hours past target."""
    _require(table, ["study_id", "severity", "overdue_h"], "overdue")
    shown = table.head(top).iloc[::-1]
    fig, axes = _figure()
    ax = axes[0, 0]
    labels = [
        f"{d if isinstance(d, str) else ''} (…{i[-8:]})".strip()
        for d, i in zip(shown.get("study_description", pd.Series([""] * len(shown))).tolist(),
                        shown["study_id"].astype(str).tolist(), strict=True)
    ]
    colors = [SEVERITY_COLORS.get(str(s), _NEUTRAL) for s in shown["severity"].astype(str)]
    ax.barh(np.arange(len(shown)), shown["overdue_h"].to_numpy(dtype=float), color=colors)
    ax.set_yticks(np.arange(len(shown)), _labels(labels), fontsize="small")
    ax.legend(handles=[Patch(color=SEVERITY_COLORS[s], label=s) for s in SEVERITIES],
              title="severity", fontsize="small", loc="lower right")
    ax.set_title(f"Most overdue open studies ({len(table)} past target)")
    ax.set_xlabel("time past target (hours)")
    ax.set_ylabel("study")
    if shown.empty:
        _empty_note(ax, "no open study is past its target")
    return fig


def plot_volume(table: pd.DataFrame) -> Figure:
    """Arrivals per period stacked by severity (top) and the share of stat (bottom), from a
    ``volume()`` table."""
    _require(table, ["period", "severity", "arrivals", "share"], "volume")
    fig, axes = _figure(nrows=2, sharex=True, height_ratios=[3, 2])
    top, bottom_ax = axes[0, 0], axes[1, 0]
    raw = _rows_of(table, SEVERITIES[0])["period"]
    # a period column keeps its time zone; naive times (a table read back from a file) are UTC
    periods = raw if isinstance(raw.dtype, pd.DatetimeTZDtype) else pd.to_datetime(raw, utc=True)
    x = _dates(periods)
    step = (periods.iloc[1] - periods.iloc[0]) if len(periods) > 1 else pd.Timedelta(days=1)
    width = pd.Timedelta(step).to_pytimedelta() * 0.85
    partial = _partial_flags(_rows_of(table, SEVERITIES[0]))
    base = np.zeros(len(periods))
    for sev in SEVERITIES:
        heights = _rows_of(table, sev)["arrivals"].to_numpy(dtype=float)
        if len(periods):  # a bar width in time needs dates on the axis
            bars = top.bar(x, heights, width=width, bottom=base, align="edge", color=SEVERITY_COLORS[sev], label=sev)
            for bar, cut in zip(bars, partial, strict=True):
                if cut:
                    bar.set_hatch(_PARTIAL_HATCH)
                    bar.set_alpha(0.5)
        base += heights
    for i in np.flatnonzero(partial):
        top.annotate("partial", (x[i] + width / 2, base[i]), ha="center", va="bottom", fontsize="x-small",
                     xytext=(0, 2), textcoords="offset points", color=_NEUTRAL)
    title = "Arrivals by severity, and the share of stat"
    if partial.any():
        title += " (hatched, dashed: partial period)"
    top.set_title(title)
    top.set_ylabel("arrivals (studies)")
    if len(periods):
        # plain swatches: the first bar of a severity may be a hatched partial one
        top.legend(handles=[Patch(color=SEVERITY_COLORS[s], label=s) for s in SEVERITIES],
                   title="severity", fontsize="small", loc="upper left")
        top.set_ylim(0, max(float(base.max()), 1.0) * 1.15)
    stat = _rows_of(table, "stat")
    _line_with_partial(bottom_ax, x, stat["share"].to_numpy(dtype=float) * 100, partial,
                       color=SEVERITY_COLORS["stat"], label=None)
    bottom_ax.set_ylabel("stat share (%)")
    bottom_ax.set_xlabel(f"period start ({_zone_name(periods)})")
    bottom_ax.set_ylim(bottom=0)
    if len(periods) == 0:
        _empty_note(top, "no arrivals")
    fig.autofmt_xdate()
    return fig


def plot_workload(table: pd.DataFrame, *, top: int = 15) -> Figure:
    """Open studies by severity (left) and completed studies (right) for the ``top`` busiest
    assignees of a ``workload()`` table."""
    _require(table, ["assignee", "open", "completed"] + [f"open_{s}" for s in SEVERITIES], "workload")
    shown = table.head(top).iloc[::-1]
    fig, axes = _figure(ncols=2, sharey=True, width_ratios=[3, 2])
    left, right = axes[0, 0], axes[0, 1]
    y = np.arange(len(shown))
    base = np.zeros(len(shown))
    for sev in SEVERITIES:
        widths = shown[f"open_{sev}"].to_numpy(dtype=float)
        left.barh(y, widths, left=base, color=SEVERITY_COLORS[sev], label=sev)
        base += widths
    left.set_yticks(y, _labels(shown["assignee"].astype(str).tolist()), fontsize="small")
    left.set_title("Open now, by severity")
    left.set_xlabel("open studies (count)")
    left.set_ylabel("assignee")
    left.legend(title="severity", fontsize="small")
    right.barh(y, shown["completed"].to_numpy(dtype=float), color=_NEUTRAL)
    right.set_title("Completed in the window")
    right.set_xlabel("completed studies (count)")
    fig.suptitle("Workload per assignee")
    if shown.empty:
        _empty_note(left, "no assigned work")
    return fig


def plot_customers(table: pd.DataFrame, *, top: int = 15) -> Figure:
    """Share within target (left) and cancellation rate (right) of the ``top`` largest
    customers of a ``customers()`` table, in percent.

    The share within target is drawn as dots on an axis zoomed to the values shown (shares
    of 93-99 % would look alike on 0-100 %); the title says how many customers are left out
    ("top 15 of 42 customers shown, by arrivals").
    """
    _require(table, ["customer", "within_target_share", "cancellation_rate"], "customers")
    shown = table.head(top).iloc[::-1]
    fig, axes = _figure(ncols=2, sharey=True)
    left, right = axes[0, 0], axes[0, 1]
    y = np.arange(len(shown))
    share = shown["within_target_share"].to_numpy(dtype=float) * 100
    left.hlines(y, 0, share, color="#4e9a6b", alpha=0.35, linewidth=1)
    left.plot(share, y, "o", color="#4e9a6b")
    left.set_yticks(y, _labels(shown["customer"].astype(str).tolist()), fontsize="small")
    known = share[np.isfinite(share)]
    if len(known):
        spread = max(float(known.max() - known.min()), 2.0)
        lo = max(0.0, float(known.min()) - spread * 0.15)
        hi = min(100.0, float(known.max()) + spread * 0.15)
        left.set_xlim(lo, max(hi, lo + 1.0))
    else:
        left.set_xlim(0, 100)
    left.set_title("Completed within target" + (" (axis zoomed)" if len(known) and lo > 0 else ""))
    left.set_xlabel("within target (% of completed)")
    left.set_ylabel("customer")
    right.barh(y, shown["cancellation_rate"].to_numpy(dtype=float) * 100, color=_NEUTRAL)
    right.set_title("Cancelled")
    right.set_xlabel("cancellation rate (% of arrivals)")
    title = "Customers: service within target and cancellations"
    if len(table) > len(shown):
        title += f"\ntop {len(shown)} of {len(table)} customers shown, by arrivals"
    fig.suptitle(title)
    if shown.empty:
        _empty_note(left, "no studies")
    return fig


def plot_cancellations(table: pd.DataFrame) -> Figure:
    """Cancellation rate (bars, %) and median time to cancellation (labels) per severity, or
    per customer, from a ``cancellations()`` table grouped by one of them."""
    _require(table, ["cancellation_rate", "median_to_cancel_h"], "cancellations")
    has_sev, has_cust = "severity" in table.columns, "customer" in table.columns
    if has_sev and has_cust:
        raise ValidationError.one(
            "not a cancellations() table by one dimension", "customer", None, Reason.CONFLICT,
            detail="plot_cancellations draws a table by severity or by customer, not both",
        )
    if not has_sev and not has_cust:
        raise ValidationError.one(
            "not a cancellations() table by one dimension", "severity", None, Reason.MISSING_COLUMN,
            detail="plot_cancellations draws a table by severity or by customer",
        )
    fig, axes = _figure()
    ax = axes[0, 0]
    if has_sev:
        rows = [_rows_of(table, sev) for sev in SEVERITIES]
        labels = list(SEVERITIES)
        rates = [float(r["cancellation_rate"].iloc[0]) * 100 if len(r) else np.nan for r in rows]
        medians = [float(r["median_to_cancel_h"].iloc[0]) if len(r) else np.nan for r in rows]
        colors = [SEVERITY_COLORS[s] for s in SEVERITIES]
        ax.set_xlabel("severity")
    else:
        labels = _labels(table["customer"].astype(str).tolist())
        rates = (table["cancellation_rate"].to_numpy(dtype=float) * 100).tolist()
        medians = table["median_to_cancel_h"].to_numpy(dtype=float).tolist()
        colors = [_NEUTRAL] * len(labels)
        ax.set_xlabel("customer")
        ax.tick_params(axis="x", labelrotation=45, labelsize="small")
    x = np.arange(len(labels))
    bars = ax.bar(x, rates, color=colors)
    ax.set_xticks(x, labels)
    ax.bar_label(bars, labels=["" if np.isnan(m) else f"median {m:.1f} h to cancel" for m in medians],
                 fontsize="small", padding=2)
    ax.set_title("Cancellation rate, and median time from creation to cancellation")
    ax.set_ylabel("cancelled (% of arrivals)")
    ax.margins(y=0.15)
    if not labels:
        _empty_note(ax, "no arrivals")
    return fig
