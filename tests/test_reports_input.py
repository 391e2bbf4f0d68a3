"""What every report accepts as its study table, and what it refuses (viewerkit.reports.columns).

The source table is fetched from the real sandbox (read-only), written with write_studies and
read back with pandas as an analyst would: every KPI, deadlines and the report's tables must
give the same numbers as on the original DataFrame. Tables outside the contract (a missing
column, an enum in the wrong case, a boolean or time that is not one) must be a
ValidationError naming field, rows and reason, every problem at once, before any number.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import viewerkit as vk
from viewerkit import reports
from viewerkit.errors import Reason, ValidationError
from viewerkit.files import write_studies
from viewerkit.sandbox.server import Sandbox

KPI = Callable[[pd.DataFrame], Any]


@pytest.fixture(scope="module")
def studies(sandbox: Sandbox) -> pd.DataFrame:
    with vk.Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        return vk.fetch_studies(client, progress=False)


@pytest.fixture(scope="module")
def now(studies: pd.DataFrame) -> pd.Timestamp:
    # two hours after the newest arrival: open studies of every severity, some past target
    return reports.resolve_now(studies["created_at"].max() + pd.Timedelta(hours=2))


@pytest.fixture(scope="module")
def csv_file(studies: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_studies(studies, tmp_path_factory.mktemp("roundtrip") / "studies.csv")


def kpis(now: pd.Timestamp) -> dict[str, KPI]:
    """Every KPI (each grouping), deadlines and the report's tables, as functions of a table."""
    window = (now - pd.Timedelta(days=28), None)
    return {
        "turnaround": lambda t: reports.turnaround(t),
        "turnaround by severity and week": lambda t: reports.turnaround(t, ["severity", "week"], window=window),
        "turnaround by assignee": lambda t: reports.turnaround(t, "assignee"),
        "turnaround by customer": lambda t: reports.turnaround(t, "customer"),
        "backlog": lambda t: reports.backlog(t, now=now),
        "overdue": lambda t: reports.overdue(t, now=now),
        "volume": lambda t: reports.volume(t, freq="D"),
        "workload": lambda t: reports.workload(t, now=now, window=window),
        "customers": lambda t: reports.customers(t),
        "cancellations": lambda t: reports.cancellations(t),
        "cancellations by severity and customer": lambda t: reports.cancellations(t, ["severity", "customer"]),
        "deadlines": lambda t: reports.deadlines(t, now=now),
        "with_completion": lambda t: reports.with_completion(t)[["completed_at", "completion_source"]],
        "report_tables": lambda t: reports.report_tables(t, now=now, window=window),
    }


def assert_same(name: str, got: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same(f"{name}[{key}]", got[key], expected[key])
        return
    try:
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
    except AssertionError as exc:
        raise AssertionError(f"{name} differs after the round trip: {exc}") from exc


def test_the_source_table_has_the_cases_the_round_trip_must_keep(studies: pd.DataFrame, now: pd.Timestamp) -> None:
    # without open, overdue and cancelled studies the round-trip tests could not fail
    backlog = reports.backlog(studies, now=now)
    assert backlog["open"].sum() > 0 and backlog["past_target"].sum() > 0
    assert reports.cancellations(studies)["cancelled"].sum() > 0
    assert reports.turnaround(studies)["completed"].sum() > 0
    assert studies["cancelled_at"].isna().any() and studies["assigned_to_user_id"].isna().any()


@pytest.mark.parametrize("read", [{}, {"dtype": str}, {"dtype": object}], ids=["default", "dtype=str", "dtype=object"])
def test_every_kpi_gives_the_same_tables_after_a_csv_round_trip(
    studies: pd.DataFrame, now: pd.Timestamp, csv_file: Path, read: dict[str, Any]
) -> None:
    back = pd.read_csv(csv_file, **read)
    if read:  # the text "True" / "False", which a plain cast to bool reads as True throughout
        assert set(back["is_cancelled"]) == {"True", "False"}
    for name, kpi in kpis(now).items():
        assert_same(name, kpi(back), kpi(studies))


def test_spreadsheet_spellings_of_booleans_and_times_read_the_same(
    studies: pd.DataFrame, now: pd.Timestamp, csv_file: Path
) -> None:
    text = pd.read_csv(csv_file, dtype=str)
    cancelled = text["is_cancelled"] == "True"
    times = ["created_at", "updated_at", "cancelled_at"]
    spellings = {
        "TRUE/FALSE, ISO with T and Z": text.assign(
            is_cancelled=np.where(cancelled, "TRUE", "FALSE"),
            **{c: text[c].str.replace(" ", "T").str.replace("+00:00", "Z") for c in times}),
        "1/0 as text, naive times (UTC)": text.assign(
            is_cancelled=np.where(cancelled, "1", "0"),
            **{c: text[c].str.replace("+00:00", "") for c in times}),
        "1/0 as numbers, other zones": text.assign(
            is_cancelled=cancelled.astype(int),
            **{c: pd.to_datetime(text[c], utc=True).dt.tz_convert("Europe/Berlin").astype(str).where(text[c].notna())
               for c in times}),
        "true/false, blank cells for nulls": text.assign(
            is_cancelled=np.where(cancelled, "true", "false"),
            cancelled_at=text["cancelled_at"].fillna("  ")),
    }
    expected = {name: kpi(studies) for name, kpi in kpis(now).items()}
    for spelling, table in spellings.items():
        for name, kpi in kpis(now).items():
            assert_same(f"{name} ({spelling})", kpi(table), expected[name])


# --- what is refused ---------------------------------------------------------------------------


def refused(call: Callable[[], Any]) -> pd.DataFrame:
    with pytest.raises(ValidationError) as caught:
        call()
    cases = caught.value.failure_cases
    assert list(cases.columns) == ["row", "field", "value", "reason"]
    return cases


def cells(cases: pd.DataFrame) -> list[tuple[Any, str, Any, Reason]]:
    return [tuple(r) for r in cases[["row", "field", "value", "reason"]].itertuples(index=False)]


@pytest.fixture(scope="module")
def small(studies: pd.DataFrame) -> pd.DataFrame:
    """Twenty studies of the sandbox as text (a CSV read with dtype=str), index 100..119."""
    frame = studies.head(20).astype(object).astype(str).where(studies.head(20).notna())
    frame.index = pd.RangeIndex(100, 120)
    return frame


@pytest.mark.parametrize("name", list(kpis(pd.Timestamp("2026-11-02", tz="UTC"))))
def test_every_report_refuses_a_severity_outside_the_contract_naming_its_rows(
    small: pd.DataFrame, name: str
) -> None:
    kpi = kpis(pd.Timestamp("2026-11-02", tz="UTC"))[name]
    bad = small.copy()
    bad.loc[103, "severity"], bad.loc[117, "severity"] = "STAT", "urgent"
    assert cells(refused(lambda: kpi(bad))) == [
        (103, "severity", "STAT", Reason.NOT_SEVERITY), (117, "severity", "urgent", Reason.NOT_SEVERITY)]


def test_every_bad_cell_and_missing_column_is_reported_at_once(small: pd.DataFrame) -> None:
    bad = small.drop(columns="study_viewer_status").copy()
    bad.loc[101, "is_cancelled"] = "yes"
    bad.loc[102, "is_cancelled"] = "2"
    bad.loc[104, "created_at"] = "not a date"
    bad.loc[105, "created_at"] = "11/02/2026 08:00"  # a spreadsheet's own format: not ISO 8601
    bad.loc[106, "severity"] = "High"
    cases = refused(lambda: reports.backlog(bad, now="2026-11-02"))
    assert cells(cases) == [
        (None, "study_viewer_status", None, Reason.MISSING_COLUMN),
        (106, "severity", "High", Reason.NOT_SEVERITY),
        (101, "is_cancelled", "yes", Reason.NOT_BOOLEAN),
        (102, "is_cancelled", "2", Reason.NOT_BOOLEAN),
        (104, "created_at", "not a date", Reason.NOT_A_TIME),
        (105, "created_at", "11/02/2026 08:00", Reason.NOT_A_TIME),
    ]


def test_a_bad_viewer_status_a_number_for_a_time_and_a_bad_boolean_number_are_refused(
    studies: pd.DataFrame,
) -> None:
    bad = studies.head(5).astype({"study_viewer_status": object})
    bad.loc[0, "study_viewer_status"] = "Complete"
    bad["updated_at"] = bad["updated_at"].astype("int64").astype(float)  # epoch numbers: no unit to trust
    bad["is_cancelled"] = [0, 1, 0, 3, 0]
    cases = refused(lambda: reports.turnaround(bad))
    assert cases[["row", "field", "reason"]].values.tolist() == [
        [0, "study_viewer_status", Reason.NOT_VIEWER_STATUS],
        [3, "is_cancelled", Reason.NOT_BOOLEAN],
        *[[row, "updated_at", Reason.NOT_A_TIME] for row in range(5)],
    ]


def test_a_renamed_column_is_missing_and_the_error_points_at_the_near_name(studies: pd.DataFrame) -> None:
    renamed = studies.rename(columns={"created_at": "Created At"})
    with pytest.raises(ValidationError, match="field created_at: is a required column that is missing, "
                                              "backlog needs it; the table has 'Created At'"):
        reports.backlog(renamed, now="2026-11-02")


def test_a_duplicated_column_is_refused(studies: pd.DataFrame) -> None:
    twice = pd.concat([studies.head(3), studies.head(3)[["severity"]]], axis=1)
    assert cells(refused(lambda: reports.volume(twice))) == [(None, "severity", "severity", Reason.DUPLICATE)]


# which columns each report needs: its own, not every report's
NEEDS: dict[str, tuple[KPI, tuple[str, ...]]] = {
    "backlog": (lambda t: reports.backlog(t, now="2026-11-02"),
                ("severity", "study_viewer_status", "is_cancelled", "created_at")),
    "deadlines": (lambda t: reports.deadlines(t, now="2026-11-02"),
                  ("severity", "study_viewer_status", "is_cancelled", "created_at")),
    "overdue": (lambda t: reports.overdue(t, now="2026-11-02"),
                ("severity", "study_viewer_status", "is_cancelled", "created_at", "study_id",
                 "assigned_to_user_id", "express_customer_id")),
    "volume": (lambda t: reports.volume(t), ("severity", "created_at")),
    "turnaround": (lambda t: reports.turnaround(t),
                   ("severity", "study_viewer_status", "is_cancelled", "created_at", "updated_at")),
    "workload": (lambda t: reports.workload(t, now="2026-11-02"),
                 ("severity", "study_viewer_status", "is_cancelled", "created_at", "updated_at",
                  "assigned_to_user_id")),
    "customers": (lambda t: reports.customers(t),
                  ("severity", "study_viewer_status", "is_cancelled", "created_at", "updated_at",
                   "express_customer_id")),
    "cancellations": (lambda t: reports.cancellations(t), ("severity", "is_cancelled", "created_at", "cancelled_at")),
}


@pytest.mark.parametrize("name", list(NEEDS))
def test_each_report_needs_its_own_columns_and_no_others(studies: pd.DataFrame, name: str) -> None:
    kpi, needs = NEEDS[name]
    only = studies[list(needs)]
    kpi(only)  # nothing else is needed
    missing = refused(lambda: kpi(studies.drop(columns=list(needs))))
    assert cells(missing) == [(None, c, None, Reason.MISSING_COLUMN) for c in needs]


def test_options_add_the_columns_they_read(studies: pd.DataFrame) -> None:
    north = studies["express_customer_id"].dropna().iloc[0]
    base = studies[["severity", "study_viewer_status", "is_cancelled", "created_at"]]
    with_targets = reports.SLA.for_customer(north, stat=0.5)
    assert cells(refused(lambda: reports.backlog(base, now="2026-11-02", sla=with_targets))) == [
        (None, "express_customer_id", None, Reason.MISSING_COLUMN)]
    done = base.assign(updated_at=studies["updated_at"])
    assert cells(refused(lambda: reports.turnaround(done, "assignee"))) == [
        (None, "assigned_to_user_id", None, Reason.MISSING_COLUMN)]
    empty = pd.DataFrame({"observed_at": []})  # an empty history needs no columns of its own
    reports.turnaround(done.assign(study_id=studies["study_id"]), history=empty)
    history = pd.DataFrame({"observed_at": ["2026-11-02"], "change": ["new"], "study_id": ["stu_x"],
                            "study_viewer_status": ["incomplete"], "updated_at": ["2026-11-02"]})
    assert cells(refused(lambda: reports.turnaround(done, history=history))) == [
        (None, "study_id", None, Reason.MISSING_COLUMN)]


def test_a_bad_cell_of_the_change_history_is_refused(studies: pd.DataFrame) -> None:
    history = pd.DataFrame({"observed_at": ["2026-11-02", "soon"], "change": ["new", "NEW"],
                            "study_id": ["stu_x", "stu_y"], "study_viewer_status": ["incomplete"] * 2,
                            "updated_at": ["2026-11-02"] * 2})
    assert cells(refused(lambda: reports.turnaround(studies, history=history))) == [
        (1, "observed_at", "soon", Reason.NOT_A_TIME), (1, "change", "NEW", Reason.NOT_A_CHOICE)]


def test_sla_targets_refuse_a_customer_id_outside_the_contract() -> None:
    assert cells(refused(lambda: reports.SLA.for_customer("bob", stat=2))) == [
        (None, "customer_id", "bob", Reason.NOT_CUSTOMER_ID)]
    assert cells(refused(lambda: reports.SlaTargets(customers={"CUS_" + "A" * 32: {"stat": 2}}))) == [
        (None, "customers", "CUS_" + "A" * 32, Reason.NOT_CUSTOMER_ID)]


# --- render checks where it writes before any work ---------------------------------------------


def test_render_to_a_folder_fails_before_reading_the_table(studies: pd.DataFrame, tmp_path: Path) -> None:
    not_a_table = studies.drop(columns=["severity", "created_at"])  # would be refused if it were read
    cases = refused(lambda: reports.render(not_a_table, tmp_path, now="2026-11-02"))
    assert cases[["field", "reason"]].values.tolist() == [["path", Reason.WRONG_SUFFIX], ["path", Reason.IS_A_FOLDER]]
    assert list(tmp_path.iterdir()) == []
    named_like_a_file = tmp_path / "report.html"
    named_like_a_file.mkdir()
    cases = refused(lambda: reports.render(not_a_table, named_like_a_file, now="2026-11-02"))
    assert cases[["field", "reason"]].values.tolist() == [["path", Reason.IS_A_FOLDER]]
    missing = tmp_path / "no-such-folder" / "report.html"
    cases = refused(lambda: reports.render(not_a_table, missing, now="2026-11-02"))
    assert cases[["field", "reason"]].values.tolist() == [["path", Reason.NO_SUCH_FOLDER]]
    assert not missing.parent.exists()


def test_render_refuses_a_bad_table_before_writing_anything(small: pd.DataFrame, tmp_path: Path) -> None:
    bad = small.copy()
    bad.loc[110, "created_at"] = "yesterday"
    target = tmp_path / "report.html"
    assert cells(refused(lambda: reports.render(bad, target, now="2026-11-02"))) == [
        (110, "created_at", "yesterday", Reason.NOT_A_TIME)]
    assert list(tmp_path.iterdir()) == []


def test_render_reads_a_csv_round_trip_like_the_original(
    studies: pd.DataFrame, now: pd.Timestamp, csv_file: Path, tmp_path: Path
) -> None:
    original = reports.render(studies, tmp_path / "original.html", now=now).read_text(encoding="utf-8")
    back = reports.render(pd.read_csv(csv_file, dtype=str), tmp_path / "back.html", now=now).read_text(encoding="utf-8")
    strip = lambda page: page.split("<section id=\"summary\">")[1].split("<img")[0]  # noqa: E731
    assert strip(back) == strip(original)  # the headline numbers
    assert "<dt>open now</dt><dd>0</dd>" not in original
