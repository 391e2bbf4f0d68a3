"""viewerkit.reports.sla on its own: per-study deadlines (what the triage board reads), the
"last N days" window the CLI's --days means, and hours given as any real number.

Tables go through Arrow and viewerkit.frame.to_pandas, so they have the dtypes
fetch_studies and StudyCache.load give. T0 is Monday 2026-11-02 00:00 UTC.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from viewerkit.errors import Reason, ValidationError
from viewerkit.frame import to_pandas
from viewerkit.reports import (
    SLA,
    backlog,
    deadlines,
    last_days,
    overdue,
    report_tables,
    resolve_now,
)
from viewerkit.reports.sla import SlaTargets, now_ms, resolve_sla, window_ms
from viewerkit.schema import STUDY_SCHEMA

T0 = pd.Timestamp("2026-11-02 00:00", tz="UTC")
CUS_1 = "cus_" + "1" * 32


def h(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


def study(sid: str, severity: str, created: float, *, done: float | None = None,
          cancelled: bool = False, customer: str | None = None) -> dict[str, Any]:
    return {
        "study_id": sid, "study_instance_uid": "1.2." + sid[-2:], "severity": severity,
        "study_viewer_status": "complete" if done is not None else "incomplete",
        "is_cancelled": cancelled, "created_at": h(created),
        "updated_at": h(done if done is not None else created), "express_customer_id": customer,
    }


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return to_pandas(pa.Table.from_pylist(rows, schema=STUDY_SCHEMA))


NOW = h(10)
ROWS = [
    study("stu_01", "stat", 9.5),  # 0.5 h old, target 1 h: 0.5 h left
    study("stu_02", "stat", 9.0),  # exactly at its target: 0 h left, not overdue
    study("stu_03", "high", 2.0),  # 8 h old, target 4 h: 4 h past
    study("stu_04", "normal", 0.0, done=3.0),  # complete: not open
    study("stu_05", "stat", 0.0, cancelled=True),  # cancelled: not open
    study("stu_06", "high", 11.0),  # created after now: not open yet
    study("stu_07", "normal", 4.0, customer=CUS_1),  # customer target 2 h: 4 h past
]


def test_deadlines_give_each_open_study_its_time_left_and_overdue_flag() -> None:
    sla = SLA.for_customer(CUS_1, normal=2)
    result = deadlines(table(ROWS), sla=sla, now=NOW)
    assert list(result.columns) == ["target_h", "deadline", "open", "age_h", "left_h", "overdue"]
    assert result["target_h"].tolist() == [1.0, 1.0, 4.0, 24.0, 1.0, 4.0, 2.0]
    assert result["open"].tolist() == [True, True, True, False, False, False, True]
    assert result["left_h"].tolist()[:3] == [0.5, 0.0, -4.0] and result["left_h"].iloc[6] == -4.0
    assert result["left_h"].iloc[3:6].isna().all() and result["age_h"].iloc[3:6].isna().all()
    assert result["overdue"].tolist() == [False, False, True, False, False, False, True]
    assert result["deadline"].tolist() == [h(10.5), h(10), h(6), h(24), h(1), h(15), h(6)]
    assert str(result["deadline"].dtype) == "datetime64[ms, UTC]"


def test_deadlines_agree_with_the_overdue_list_and_the_backlog() -> None:
    studies = table(ROWS)
    for sla in (None, SLA.for_customer(CUS_1, normal=2), {"stat": 0.25}):
        flags = deadlines(studies, sla=sla, now=NOW)
        late = overdue(studies, sla=sla, now=NOW)
        assert sorted(studies["study_id"][flags["overdue"].to_numpy()]) == sorted(late["study_id"])
        assert backlog(studies, sla=sla, now=NOW)["past_target"].sum() == flags["overdue"].sum()
        assert backlog(studies, sla=sla, now=NOW)["open"].sum() == flags["open"].sum()


def test_deadlines_keep_the_index_of_the_study_table_and_refuse_an_unknown_severity() -> None:
    studies = pd.DataFrame(
        {"severity": ["stat", "high", None], "study_viewer_status": ["incomplete"] * 3,
         "is_cancelled": [False] * 3, "created_at": [h(9)] * 3},
        index=[30, 10, 20],
    )
    result = deadlines(studies, now=NOW)
    assert list(result.index) == [30, 10, 20]
    assert result["open"].tolist() == [True, True, False]  # a null severity is no open work
    assert result["target_h"].isna().tolist() == [False, False, True]
    assert result["deadline"].isna().tolist() == [False, False, True]
    with pytest.raises(ValidationError) as caught:
        deadlines(studies.assign(severity=pd.Series(["stat", "urgent", None], index=studies.index)), now=NOW)
    cases = caught.value.failure_cases
    assert cases[["row", "field", "value"]].values.tolist() == [[10, "severity", "urgent"]]
    assert cases["reason"].tolist() == [Reason.NOT_SEVERITY]


def test_last_days_is_the_window_the_cli_computed_inline() -> None:
    now = pd.Timestamp("2026-11-28 12:34:56.789", tz="UTC")
    for days in (1, 7, 28, np.int64(90), 3.0):
        window = last_days(days, now=now)
        assert window == (now - pd.Timedelta(days=int(days)), None)
    cli_window = (now - pd.Timedelta(days=7), None)  # what `viewerkit report --days 7` built
    studies = table(ROWS)
    ours = report_tables(studies, window=last_days(7, now=now), now=now)
    theirs = report_tables(studies, window=cli_window, now=now)
    for name, frame in ours.items():
        pd.testing.assert_frame_equal(frame, theirs[name], obj=name)


def test_last_days_defaults_to_the_current_time() -> None:
    before = pd.Timestamp.now(tz="UTC").floor("ms")
    start, end = last_days(2)
    after = pd.Timestamp.now(tz="UTC")
    assert end is None
    assert before - pd.Timedelta(days=2) <= start <= after - pd.Timedelta(days=2)


@pytest.mark.parametrize(
    ("days", "reason"),
    [
        (0, Reason.NOT_POSITIVE),
        (-3, Reason.NOT_POSITIVE),
        (1.5, Reason.NOT_WHOLE_NUMBER),
        (float("nan"), Reason.NOT_WHOLE_NUMBER),
        (True, Reason.NOT_WHOLE_NUMBER),
        ("7", Reason.NOT_WHOLE_NUMBER),
        (None, Reason.NOT_WHOLE_NUMBER),
        (10**9, Reason.OUT_OF_RANGE),
    ],
    ids=repr,
)
def test_last_days_refuses_what_is_not_a_whole_number_of_days(days: Any, reason: Reason) -> None:
    with pytest.raises(ValidationError) as caught:
        last_days(days, now=NOW)
    cases = caught.value.failure_cases
    assert cases[["field", "reason"]].values.tolist() == [["days", reason]]


@pytest.mark.parametrize(
    "hours",
    [2, 2.0, np.int8(2), np.int64(2), np.float32(2.0), np.float64(2.0), Fraction(2), pd.Timedelta(hours=2)],
    ids=lambda v: type(v).__name__,
)
def test_hours_are_any_real_number_or_a_timedelta(hours: Any) -> None:
    sla = SlaTargets(stat=hours).with_targets(high=hours).for_customer(CUS_1, normal=hours)
    assert sla.target("stat") == sla.target("high") == sla.target("normal", CUS_1) == pd.Timedelta(hours=2)
    assert resolve_sla({"normal": hours}).target_hours("normal") == 2.0


def test_fractional_hours_keep_their_value() -> None:
    sla = SlaTargets(stat=Fraction(1, 3), high=np.float32(0.25))
    assert sla.target_hours("stat") == pytest.approx(1 / 3)
    assert sla.target_hours("high") == 0.25


def test_now_and_windows_reach_past_the_nanosecond_range() -> None:
    assert resolve_now("9999-12-31T23:59:59.999") == pd.Timestamp("9999-12-31 23:59:59.999", tz="UTC")
    assert window_ms(("0001-01-01", None))[0] == -62_135_596_800_000
    assert now_ms(pd.Timestamp("2026-11-02 00:00:00.0015", tz="UTC")) == float(T0.value // 1_000_000 + 1)
