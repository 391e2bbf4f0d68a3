"""The report time zone (local days and weeks, daylight-saving correct), partial periods
(flagged in the tables, hatched or dashed and labelled in the figures) and the HTML report's
analyst-first layout: header dates, overdue columns, the wide volume table, the customers'
zoomed axis.

Europe/Berlin leaves summer time on Sunday 2026-10-25 (03:00 CEST -> 02:00 CET: a 25-hour
local day) and enters it on Sunday 2026-03-29 (02:00 CET -> 03:00 CEST: a 23-hour day).
"""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from viewerkit.errors import Reason, ValidationError
from viewerkit.frame import to_pandas
from viewerkit.reports import (
    OVERDUE_COLUMNS,
    count_created,
    customers,
    plot_customers,
    plot_turnaround,
    plot_volume,
    render,
    report_tables,
    report_timezone,
    turnaround,
    volume,
)
from viewerkit.schema import STUDY_SCHEMA

BERLIN = "Europe/Berlin"


def arrivals_every_half_hour(start: str, end: str) -> pd.DataFrame:
    times = pd.date_range(start, end, freq="30min", tz="UTC", inclusive="left")
    return pd.DataFrame({"severity": ["normal"] * len(times), "created_at": times})


def studies(rows: list[dict[str, object]]) -> pd.DataFrame:
    return to_pandas(pa.Table.from_pylist(rows, schema=STUDY_SCHEMA))


def study(i: int, created: pd.Timestamp, *, severity: str = "normal", done: pd.Timestamp | None = None,
          customer: int | None = None, user: int | None = None) -> dict[str, object]:
    return {
        "study_id": f"stu_{i:032x}", "study_instance_uid": f"1.2.{i}", "study_description": f"CT {i}",
        "severity": severity, "study_viewer_status": "complete" if done is not None else "incomplete",
        "is_cancelled": False, "created_at": created, "updated_at": done if done is not None else created,
        "assigned_to_user_id": f"usr_{user:032x}" if user is not None else None,
        "assigned_to_first_name": f"Reader{user}" if user is not None else None,
        "express_customer_id": f"cus_{customer:032x}" if customer is not None else None,
        "express_customer_name": f"Clinic {customer}" if customer is not None else None,
    }


# --- report_timezone --------------------------------------------------------------------------


def test_report_timezone_resolves_names_none_and_zoneinfo() -> None:
    assert report_timezone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert report_timezone(None).key == "UTC" and report_timezone().key == "UTC"
    tokyo = ZoneInfo("Asia/Tokyo")
    assert report_timezone(tokyo) is tokyo


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "CET+1", "", "/etc/passwd", "../zoneinfo/UTC", "Europe",
                                 "localtime", "zone.tab"])
def test_report_timezone_refuses_a_name_that_is_no_time_zone(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        report_timezone(bad)
    cases = caught.value.failure_cases
    assert cases[["field", "value"]].values.tolist() == [["tz", bad]]
    assert cases["reason"].tolist() == [Reason.NOT_A_TIME_ZONE]


def test_report_timezone_suggests_the_spelling_when_only_the_case_differs() -> None:
    with pytest.raises(ValidationError, match="did you mean 'Europe/Berlin'"):
        report_timezone("europe/berlin")


def test_report_timezone_refuses_a_value_that_is_not_text() -> None:
    with pytest.raises(ValidationError) as caught:
        report_timezone(1)  # type: ignore[arg-type]
    assert caught.value.failure_cases["reason"].tolist() == [Reason.WRONG_TYPE]


def test_an_unknown_time_zone_is_refused_before_the_table_is_read(tmp_path: Path) -> None:
    # the table lacks every column: only tz is reported, and nothing is written
    for call in (lambda: volume(pd.DataFrame(), tz="Europe/Berlyn"),
                 lambda: turnaround(pd.DataFrame(), ["severity", "week"], tz="Europe/Berlyn"),
                 lambda: report_tables(pd.DataFrame(), tz="Europe/Berlyn"),
                 lambda: render(pd.DataFrame(), tmp_path / "r.html", tz="Europe/Berlyn")):
        with pytest.raises(ValidationError) as caught:
            call()
        assert caught.value.failure_cases["field"].tolist() == ["tz"]
    assert not (tmp_path / "r.html").exists()


# --- local days and weeks ---------------------------------------------------------------------


def test_volume_counts_local_days_of_23_and_25_hours_across_daylight_saving() -> None:
    autumn = volume(arrivals_every_half_hour("2026-10-23 22:00", "2026-10-26 23:00"), tz=BERLIN, now="2027-01-01")
    days = autumn[autumn["severity"] == "normal"].set_index("period")["arrivals"]
    # 2026-10-24 00:00 CEST is 10-23 22:00 UTC; 10-25 lasts 25 hours; 10-26 ends 10-26 23:00 UTC
    assert days.to_dict() == {
        pd.Timestamp("2026-10-24", tz=BERLIN): 48,
        pd.Timestamp("2026-10-25", tz=BERLIN): 50,
        pd.Timestamp("2026-10-26", tz=BERLIN): 48,
    }
    assert str(autumn["period"].dt.tz) == BERLIN
    spring = volume(arrivals_every_half_hour("2026-03-28 23:00", "2026-03-29 22:00"), tz=BERLIN, now="2027-01-01")
    assert spring.loc[spring["severity"] == "normal", "arrivals"].tolist() == [46]  # a 23-hour day


def test_volume_in_utc_is_unchanged_by_default() -> None:
    table = arrivals_every_half_hour("2026-10-23 22:00", "2026-10-26 23:00")
    utc = volume(table, now="2027-01-01")
    assert str(utc["period"].dtype) == "datetime64[ms, UTC]"
    assert utc.loc[utc["severity"] == "normal", "arrivals"].tolist() == [4, 48, 48, 46]


def test_volume_hours_keep_the_repeated_hour_of_the_autumn_change_apart() -> None:
    table = arrivals_every_half_hour("2026-10-24 23:00", "2026-10-25 03:00")
    hours = volume(table, freq="h", tz=BERLIN, now="2027-01-01")
    normal = hours[hours["severity"] == "normal"]
    assert [t.strftime("%H:%M %Z") for t in normal["period"]] == ["01:00 CEST", "02:00 CEST", "02:00 CET", "03:00 CET"]
    assert normal["arrivals"].tolist() == [2, 2, 2, 2]


def test_weekly_turnaround_counts_the_local_week_of_completion() -> None:
    # completed Sunday 2026-11-08 23:30 UTC: Monday 00:30 in Berlin, still Sunday in UTC
    created = pd.Timestamp("2026-11-08 20:00", tz="UTC")
    one = studies([study(1, created, done=created + pd.Timedelta(hours=3.5))])
    local = turnaround(one, ["severity", "week"], tz=BERLIN, now="2027-01-01")
    utc = turnaround(one, ["severity", "week"], now="2027-01-01")
    assert set(local["week"]) == {pd.Timestamp("2026-11-09", tz=BERLIN)}
    assert set(utc["week"]) == {pd.Timestamp("2026-11-02", tz="UTC")}


# --- partial periods --------------------------------------------------------------------------


def test_volume_flags_the_day_under_way_and_a_day_the_window_cuts() -> None:
    table = arrivals_every_half_hour("2026-11-01 00:00", "2026-11-05 09:00")
    days = volume(table, window=("2026-11-02 06:00", None), now="2026-11-05 09:00")
    flags = days[days["severity"] == "normal"].set_index("period")["partial"]
    assert flags.tolist() == [True, False, False, True]  # 11-02 from 06:00, 11-03, 11-04, 11-05 under way
    whole = volume(table, window=("2026-11-02", "2026-11-04"), now="2027-01-01")
    assert not whole["partial"].any()


def test_weekly_turnaround_flags_the_week_not_over_yet() -> None:
    created = pd.Timestamp("2026-11-03 08:00", tz="UTC")
    rows = [study(i, created + pd.Timedelta(days=7 * i), done=created + pd.Timedelta(days=7 * i, hours=2))
            for i in range(3)]
    weekly = turnaround(studies(rows), ["severity", "week"], now=created + pd.Timedelta(days=14, hours=5))
    flags = weekly.drop_duplicates("week").set_index("week")["partial"]
    assert flags.tolist() == [False, False, True]
    assert "partial" not in turnaround(studies(rows), "severity").columns


def test_volume_figure_hatches_and_labels_partial_days_in_the_report_zone() -> None:
    table = arrivals_every_half_hour("2026-11-01 00:00", "2026-11-05 09:00")
    fig = plot_volume(volume(table, window=("2026-11-02 06:00", None), now="2026-11-05 09:00", tz=BERLIN))
    top, bottom = fig.axes
    hatched = [bar.get_hatch() is not None for bar in top.containers[0]]
    assert hatched == [True, False, False, True]
    assert [t.get_text() for t in top.texts].count("partial") == 2
    assert "Europe/Berlin" in bottom.get_xlabel()
    assert any(line.get_linestyle() == "--" for line in bottom.lines)


def test_weekly_turnaround_figure_dashes_the_partial_week() -> None:
    created = pd.Timestamp("2026-11-03 08:00", tz="UTC")
    rows = [study(i, created + pd.Timedelta(days=7 * i), done=created + pd.Timedelta(days=7 * i, hours=2))
            for i in range(3)]
    fig = plot_turnaround(turnaround(studies(rows), ["severity", "week"], tz=BERLIN,
                                     now=created + pd.Timedelta(days=14, hours=5)))
    ax = fig.axes[0]
    normal = next(line for line in ax.lines if line.get_label() == "normal median")
    assert np.isnan(np.asarray(normal.get_ydata(), dtype=float)).tolist() == [False, False, True]
    hollow = [line for line in ax.lines if line.get_markerfacecolor() == "white"]
    assert len(hollow) == 1 and "partial" in [t.get_text() for t in ax.texts]
    assert "Europe/Berlin" in ax.get_xlabel()


# --- the customers figure ---------------------------------------------------------------------


def test_customers_figure_says_how_many_customers_are_left_out() -> None:
    t = pd.Timestamp("2026-11-02 08:00", tz="UTC")
    rows = [study(i, t, done=t + pd.Timedelta(hours=1 + i % 30), customer=i % 20) for i in range(200)]
    table = customers(studies(rows))
    fig = plot_customers(table)
    assert "top 15 of 20 customers shown" in fig.get_suptitle()
    assert "customers shown" not in plot_customers(table.head(10)).get_suptitle()


# --- the HTML report --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def berlin_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    now = pd.Timestamp("2026-11-20 12:00", tz="UTC")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(300):
        created = now - pd.Timedelta(hours=float(rng.uniform(0, 20 * 24)))
        done = created + pd.Timedelta(hours=float(rng.uniform(0.2, 40)))
        rows.append(study(i, created, severity=["normal", "high", "stat"][i % 3],
                          done=done if done < now and i % 4 else None, customer=i % 20, user=i % 4))
    folder = tmp_path_factory.mktemp("berlin")
    path = render(studies(rows), folder / "report.html", now=now, tz=BERLIN,
                  window=(pd.Timestamp("2026-11-13 09:30", tz="UTC"), None))
    return path.read_text(encoding="utf-8")


def section(text: str, name: str) -> str:
    start = text.index(f'<section id="{name}">')
    return text[start:text.index("</section>", start)]


def test_report_header_states_the_time_zone_and_the_window_as_local_dates(berlin_report: str) -> None:
    assert re.search(r'<p class="meta" id="timezone">Time zone: Europe/Berlin\.', berlin_report)
    assert ("Window: 2026-11-13 10:30 CET to now, 2026-11-20 13:00 CET. Studies created in the window: "
            in berlin_report)
    assert re.search(r"Studies created in the window: \d+ of 300 \(first 2026-11-13 \d\d:\d\d CET, "
                     r"last 2026-11-20 \d\d:\d\d CET\)", berlin_report)


def test_report_window_without_ends_gives_the_first_study_and_now(tmp_path: Path) -> None:
    t = pd.Timestamp("2026-11-02 08:15", tz="UTC")
    text = render(studies([study(1, t), study(2, t + pd.Timedelta(days=2))]), tmp_path / "r.html",
                  now="2026-11-05 12:00").read_text(encoding="utf-8")
    assert ("Window: 2026-11-02 08:15 UTC (the first study) to now, 2026-11-05 12:00 UTC. "
            "Studies created in the window: 2 of 2 (first 2026-11-02 08:15 UTC, last 2026-11-04 08:15 UTC).") in text
    assert "the beginning" not in text


def test_report_overdue_table_leads_with_what_is_acted_on(berlin_report: str) -> None:
    heads = re.findall(r"<th>([^<]+)</th>", section(berlin_report, "overdue"))
    assert heads[:4] == ["severity", "assignee", "overdue_h", "customer"]
    assert heads == list(OVERDUE_COLUMNS)
    assert heads.index("study_id") > heads.index("created_at")


def test_report_volume_table_has_a_row_per_local_day_with_partial_days_flagged(berlin_report: str) -> None:
    volume_html = section(berlin_report, "volume")
    heads = re.findall(r"<th>([^<]+)</th>", volume_html)
    assert heads == ["period", "normal", "high", "stat", "total", "stat_share", "partial"]
    rows = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d)</td>(.*?)</tr>", volume_html)
    assert [day for day, _ in rows] == [f"2026-11-{d}" for d in range(13, 21)]
    partial = [day for day, cells in rows if cells.endswith("<td>partial</td>")]
    assert partial == ["2026-11-13", "2026-11-20"]  # from 10:30 local; the day under way


def test_report_customers_section_says_the_figure_leaves_customers_out(berlin_report: str) -> None:
    assert "The figure shows the 15 customers with most arrivals of 20." in section(berlin_report, "customers")


def test_count_created_counts_the_window() -> None:
    table = arrivals_every_half_hour("2026-11-01 00:00", "2026-11-02 00:00")
    assert count_created(table) == 48
    assert count_created(table, window=("2026-11-01 12:00", None)) == 24
    with pytest.raises(ValidationError):
        count_created(pd.DataFrame({"severity": ["normal"]}))
