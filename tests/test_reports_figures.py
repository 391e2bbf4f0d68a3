"""The figures plot exactly the KPI tables (read back from the artists), carry titles and
labelled axes, and leave matplotlib's global state alone."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import cast

import matplotlib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import BarContainer, Container
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from viewerkit.errors import ValidationError
from viewerkit.frame import to_pandas
from viewerkit.reports import (
    AGE_BANDS,
    SEVERITY_COLORS,
    SLA,
    backlog,
    cancellations,
    customers,
    overdue,
    plot_backlog,
    plot_cancellations,
    plot_customers,
    plot_overdue,
    plot_turnaround,
    plot_volume,
    plot_workload,
    turnaround,
    volume,
    workload,
)
from viewerkit.schema import SEVERITIES, STUDY_SCHEMA

NOW = pd.Timestamp("2026-11-20 12:00", tz="UTC")


@pytest.fixture(scope="module")
def studies() -> pd.DataFrame:
    """300 studies over three weeks, some open, some cancelled, some without assignee/customer."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(300):
        sev = SEVERITIES[rng.choice(3, p=[0.6, 0.25, 0.15])]
        created = NOW - pd.Timedelta(hours=float(rng.uniform(0, 21 * 24)))
        took = pd.Timedelta(hours=float(rng.lognormal(np.log({"normal": 10, "high": 3, "stat": 0.8}[sev]), 0.7)))
        done = created + took <= NOW and rng.random() < 0.9
        cancelled = rng.random() < 0.05
        user = None if rng.random() < 0.2 else f"usr_{rng.integers(0, 6):032x}"
        customer = None if rng.random() < 0.2 else f"cus_{rng.integers(0, 4):032x}"
        rows.append({
            "study_id": f"stu_{i:032x}", "study_instance_uid": f"1.2.{i}", "study_description": f"CT {i}",
            "severity": sev, "study_viewer_status": "complete" if done else "incomplete",
            "is_cancelled": cancelled, "created_at": created,
            "updated_at": created + took if done else created,
            "cancelled_at": created + pd.Timedelta(hours=1) if cancelled else None,
            "assigned_to_user_id": user, "assigned_to_email": f"{user[-4:]}@example.org" if user else None,
            "express_customer_id": customer, "express_customer_name": f"Clinic {customer[-2:]}" if customer else None,
        })
    return to_pandas(pa.Table.from_pylist(rows, schema=STUDY_SCHEMA))


def bars(container: Container, attr: str = "height") -> list[float]:
    # Axes.containers is typed list[Container]; the figures draw bars
    assert isinstance(container, BarContainer)
    return [getattr(p, f"get_{attr}")() for p in container.patches]


def assert_close(plotted: ArrayLike, expected: ArrayLike) -> None:
    np.testing.assert_allclose(np.asarray(plotted, dtype=float), np.asarray(expected, dtype=float), equal_nan=True)


def assert_labelled(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    for ax in fig.axes:
        if ax.has_data():
            assert ax.get_xlabel() or ax.get_ylabel(), "an axis without label"
    assert any(ax.get_title() for ax in fig.axes) or fig.get_suptitle()
    width, height = fig.get_size_inches()
    assert (width, height) == (9.0, 4.5)


def rows_of(table: pd.DataFrame, sev: str) -> pd.DataFrame:
    return table[(table["severity"].astype(str) == sev).to_numpy()]


def test_turnaround_figure_bars_are_the_median_and_p90_with_targets(studies: pd.DataFrame) -> None:
    table = turnaround(studies)
    fig = plot_turnaround(table)
    ax = fig.axes[0]
    containers = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(containers) == 6
    medians = [bars(containers[2 * i])[0] for i in range(3)]
    p90s = [bars(containers[2 * i + 1])[0] for i in range(3)]
    assert_close(medians, table["median_h"])
    assert_close(p90s, table["p90_h"])
    for i, sev in enumerate(SEVERITIES):
        assert matplotlib.colors.same_color(containers[2 * i].patches[0].get_facecolor(), SEVERITY_COLORS[sev])
    # Axes.collections is typed list[Collection]; the target lines are hlines' LineCollections
    targets = [seg[0][1] for coll in ax.collections for seg in cast(LineCollection, coll).get_segments()]
    assert targets == [24.0, 4.0, 1.0]
    assert "Turnaround by severity" in ax.get_title()
    assert "hours" in ax.get_ylabel()
    assert_labelled(fig)


def test_weekly_turnaround_lines_are_the_weekly_medians(studies: pd.DataFrame) -> None:
    table = turnaround(studies, ["severity", "week"])
    fig = plot_turnaround(table, sla=SLA.with_targets(normal=12))
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    for sev in SEVERITIES:
        assert_close(lines[f"{sev} median"].get_ydata(), rows_of(table, sev)["median_h"])
    # targets dotted: dashed segments are kept for partial weeks
    dotted = sorted(float(np.asarray(line.get_ydata())[0]) for line in fig.axes[0].lines if line.get_linestyle() == ":")
    assert dotted == [1.0, 4.0, 12.0]
    assert_labelled(fig)


def test_turnaround_by_assignee_figure_shows_the_median_per_assignee(studies: pd.DataFrame) -> None:
    table = turnaround(studies, "assignee")
    fig = plot_turnaround(table)
    top = table.sort_values("completed", ascending=False, kind="stable").head(25).iloc[::-1]
    assert_close(bars(fig.axes[0].containers[0], "width"), top["median_h"])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == top["assignee"].tolist()
    assert_labelled(fig)


def test_backlog_figure_stacks_open_counts_per_severity(studies: pd.DataFrame) -> None:
    table = backlog(studies, now=NOW)
    fig = plot_backlog(table)
    ax = fig.axes[0]
    assert len(ax.containers) == 3
    for container, sev in zip(ax.containers, SEVERITIES, strict=True):
        assert_close(bars(container), rows_of(table, sev)["open"])
    past = table.groupby(table["age_band"].astype(str), sort=False)["past_target"].sum()
    notes = [t.get_text() for t in ax.texts]
    assert notes == [f"{int(past[band])} past target" for band in AGE_BANDS]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(AGE_BANDS)
    assert ax.get_title() == "Open studies by age" and "count" in ax.get_ylabel()
    assert_labelled(fig)


def test_overdue_figure_shows_the_most_overdue_first(studies: pd.DataFrame) -> None:
    table = overdue(studies, now=NOW)
    assert len(table) > 0
    fig = plot_overdue(table, top=5)
    widths = bars(fig.axes[0].containers[0], "width")
    assert_close(widths[::-1], table["overdue_h"].head(5))
    assert f"({len(table)} past target)" in fig.axes[0].get_title()
    assert_labelled(fig)


def test_volume_figure_stacks_arrivals_and_draws_the_stat_share(studies: pd.DataFrame) -> None:
    table = volume(studies, freq="D")
    fig = plot_volume(table)
    top, share = fig.axes[0], fig.axes[1]
    for container, sev in zip(top.containers, SEVERITIES, strict=True):
        assert_close(bars(container), rows_of(table, sev)["arrivals"])
    assert_close(share.lines[0].get_ydata(), rows_of(table, "stat")["share"] * 100)
    assert "%" in share.get_ylabel() and "arrivals" in top.get_ylabel()
    assert_labelled(fig)


def test_workload_figure_shows_open_by_severity_and_completed(studies: pd.DataFrame) -> None:
    table = workload(studies, now=NOW)
    fig = plot_workload(table, top=4)
    left, right = fig.axes[0], fig.axes[1]
    shown = table.head(4).iloc[::-1]
    for container, sev in zip(left.containers, SEVERITIES, strict=True):
        assert_close(bars(container, "width"), shown[f"open_{sev}"])
    assert_close(bars(right.containers[0], "width"), shown["completed"])
    assert [t.get_text() for t in left.get_yticklabels()] == shown["assignee"].tolist()
    assert_labelled(fig)


def test_customers_figure_shows_percent_within_target_and_cancelled(studies: pd.DataFrame) -> None:
    table = customers(studies)
    fig = plot_customers(table)
    shown = table.head(15).iloc[::-1]
    dots = fig.axes[0].lines[0]
    assert_close(dots.get_xdata(), shown["within_target_share"] * 100)
    assert_close(dots.get_ydata(), np.arange(len(shown)))
    # the axis is zoomed to the shares shown, not 0-100 %, and every dot is inside it
    lo, hi = fig.axes[0].get_xlim()
    share = shown["within_target_share"].dropna() * 100
    assert lo <= share.min() and share.max() <= hi <= 100
    assert (lo, hi) != (0.0, 100.0)
    assert_close(bars(fig.axes[1].containers[0], "width"), shown["cancellation_rate"] * 100)
    assert "%" in fig.axes[0].get_xlabel() and "%" in fig.axes[1].get_xlabel()
    assert_labelled(fig)


def test_cancellations_figure_by_severity_and_by_customer(studies: pd.DataFrame) -> None:
    by_sev = cancellations(studies)
    fig = plot_cancellations(by_sev)
    assert_close(bars(fig.axes[0].containers[0]), by_sev["cancellation_rate"] * 100)
    assert_labelled(fig)
    by_cust = cancellations(studies, "customer")
    fig = plot_cancellations(by_cust)
    assert_close(bars(fig.axes[0].containers[0]), by_cust["cancellation_rate"] * 100)
    with pytest.raises(ValidationError, match="not both"):
        plot_cancellations(cancellations(studies, ["severity", "customer"]))


def test_figures_of_empty_tables_still_draw(studies: pd.DataFrame) -> None:
    empty = studies.iloc[0:0]
    for fig in (plot_turnaround(turnaround(empty)), plot_backlog(backlog(empty, now=NOW)),
                plot_overdue(overdue(empty, now=NOW)), plot_volume(volume(empty)),
                plot_workload(workload(empty, now=NOW)), plot_customers(customers(empty)),
                plot_cancellations(cancellations(empty))):
        fig.canvas.draw()
        assert_labelled(fig)


def test_a_table_of_another_kpi_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a backlog"):
        plot_backlog(pd.DataFrame({"severity": []}))


def test_plotting_uses_no_pyplot_and_changes_no_global_matplotlib_state() -> None:
    code = (
        "import sys, matplotlib;"
        # reading rcParams['backend'] would itself import pyplot: compare everything else
        "params = lambda: {k: matplotlib.rcParams[k] for k in matplotlib.rcParams if k != 'backend'};"
        "before = params();"
        "import pandas as pd;"
        "from viewerkit.reports import turnaround, plot_turnaround;"
        "t = pd.Timestamp('2026-11-02', tz='UTC');"
        "df = pd.DataFrame({'severity': ['stat'], 'study_viewer_status': ['complete'], 'is_cancelled': [False],"
        " 'created_at': [t], 'updated_at': [t + pd.Timedelta('1h')]});"
        "plot_turnaround(turnaround(df)).savefig('/dev/null', format='png');"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported';"
        "assert params() == before, 'rcParams changed';"
        "print('clean')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


def test_names_with_dollar_signs_and_twins_draw_as_written() -> None:
    # free text from the API: "$...$" must not be parsed as mathtext (which fails on "$x_$"),
    # and two radiologists of the same name are two bars, not one category
    t = NOW - pd.Timedelta(hours=30)
    rows = [
        {"study_id": f"stu_{i:032x}", "study_instance_uid": f"1.2.{i}", "study_description": desc,
         "severity": sev, "study_viewer_status": status, "is_cancelled": cancelled, "created_at": t,
         "updated_at": t + pd.Timedelta(hours=took), "cancelled_at": t + pd.Timedelta(hours=1) if cancelled else None,
         "assigned_to_user_id": f"usr_{user:032x}", "assigned_to_first_name": name,
         "express_customer_id": f"cus_{user:032x}", "express_customer_name": name}
        for i, (desc, sev, status, cancelled, took, user, name) in enumerate([
            ("CT $x_$ head", "stat", "incomplete", False, 0, 1, "Ann $x_$"),
            ("MR knee", "high", "complete", False, 2, 2, "J Smith"),
            ("XR hand", "high", "complete", False, 6, 3, "J Smith"),
            ("US $5 or $10", "normal", "incomplete", True, 1, 1, "Ann $x_$"),
        ])
    ]
    studies = to_pandas(pa.Table.from_pylist(rows, schema=STUDY_SCHEMA))
    by_user = turnaround(studies, "assignee")
    figs = [plot_turnaround(by_user), plot_overdue(overdue(studies, now=NOW)), plot_workload(workload(studies, now=NOW)),
            plot_customers(customers(studies)), plot_cancellations(cancellations(studies, "customer"))]
    for fig in figs:
        fig.savefig(io.BytesIO(), format="png")  # mathtext would raise here
    ax = figs[0].axes[0]
    top = by_user.sort_values("completed", ascending=False, kind="stable").iloc[::-1]
    assert_close(bars(ax.containers[0], "width"), top["median_h"])
    smiths = [t for t in ax.get_yticklabels() if t.get_text() == "J Smith"]
    assert len(smiths) == 2, "two assignees named J Smith, two bars"
    assert [t.get_text() for t in figs[1].axes[0].get_yticklabels()] == [r"CT \$x_\$ head (…00000000)"]
    workload_names = [t.get_text() for t in figs[2].axes[0].get_yticklabels()]
    assert r"Ann \$x_\$" in workload_names  # "\$" is matplotlib's literal dollar


def test_the_figures_submodule_is_the_module_not_a_function() -> None:
    # reports.figures was once also a re-exported function, which hid the submodule
    import viewerkit.reports as reports
    import viewerkit.reports.figures as f

    assert f.plot_backlog is plot_backlog
    assert reports.figures is f and "figures" not in reports.__all__
    assert callable(reports.report_figures) and "report_figures" in reports.__all__
    # and so in a fresh interpreter, importing the submodule first
    code = "import viewerkit.reports.figures as f; print(f.plot_backlog.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "plot_backlog"
