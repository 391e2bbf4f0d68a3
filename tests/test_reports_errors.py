"""Every ValidationError raised in viewerkit.reports carries failure_cases naming the field
and the Reason, and every raise site in the package is walked here (the last test fails when
a new raise has no case below)."""

from __future__ import annotations

import ast
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import viewerkit.reports as reports
from viewerkit.errors import Reason, ValidationError
from viewerkit.reports import (
    SLA,
    SlaTargets,
    backlog,
    cancellations,
    deadlines,
    last_days,
    plot_backlog,
    plot_cancellations,
    render,
    report_figures,
    save_figures,
    turnaround,
    volume,
    with_completion,
    workload,
)

T = pd.Timestamp("2026-11-02 08:00", tz="UTC")
ONE = pd.DataFrame({"study_id": ["stu_a"], "severity": ["stat"], "study_viewer_status": ["complete"],
                    "is_cancelled": [False], "created_at": [T], "updated_at": [T + pd.Timedelta("1h")],
                    "cancelled_at": [pd.NaT], "assigned_to_user_id": [None], "express_customer_id": [None]})
C1 = "cus_" + "1" * 32
REPORTS_DIR = Path(reports.__file__).parent


def _out() -> Path:
    return Path(tempfile.mkdtemp()) / "report.html"


# (id, the call, [(field, reason), ...] expected in failure_cases, in order)
CASES: list[tuple[str, Callable[[], Any], list[tuple[str, Reason]]]] = [
    # columns.py: the study table itself
    ("studies-not-a-frame", lambda: turnaround([{"severity": "stat"}]),  # type: ignore[arg-type]
     [("studies", Reason.WRONG_TYPE)]),
    # kpis.py: the user list the workload adds idle radiologists from
    ("workload-users-without-columns",
     lambda: workload(ONE, now=T, users=pd.DataFrame({"user_id": ["usr_" + "1" * 32]})),
     [("users.clinic_role", Reason.MISSING_COLUMN), ("users.first_name", Reason.MISSING_COLUMN),
      ("users.last_name", Reason.MISSING_COLUMN), ("users.email", Reason.MISSING_COLUMN)]),
    # sla.py: targets
    ("target-not-hours", lambda: SlaTargets(stat="1h"),  # type: ignore[arg-type]
     [("stat", Reason.NOT_A_DURATION)]),
    ("target-bool", lambda: SLA.with_targets(stat=np.bool_(True)),  # type: ignore[arg-type]
     [("stat", Reason.NOT_A_DURATION)]),
    ("target-nan", lambda: SlaTargets(high=float("nan")), [("high", Reason.NOT_A_DURATION)]),
    ("target-too-long", lambda: SlaTargets(normal=1e20), [("normal", Reason.OUT_OF_RANGE)]),
    ("target-zero", lambda: SlaTargets(stat=0), [("stat", Reason.NOT_POSITIVE)]),
    ("every-bad-target-at-once", lambda: SlaTargets(stat=0, high="x", normal=-1),  # type: ignore[arg-type]
     [("normal", Reason.NOT_POSITIVE), ("high", Reason.NOT_A_DURATION), ("stat", Reason.NOT_POSITIVE)]),
    ("override-unknown-severity", lambda: turnaround(ONE, sla={"urgent": 1}),
     [("severity", Reason.NOT_SEVERITY)]),
    ("with-targets-unknown-severity", lambda: SLA.with_targets(urgent=1, stat=-2),
     [("severity", Reason.NOT_SEVERITY), ("stat", Reason.NOT_POSITIVE)]),
    ("customers-not-a-mapping", lambda: SlaTargets(customers=[C1]),  # type: ignore[arg-type]
     [("customers", Reason.WRONG_TYPE)]),
    ("customer-targets-not-a-mapping", lambda: SlaTargets(customers={C1: 2}),  # type: ignore[dict-item]
     [(f"customers.{C1}", Reason.WRONG_TYPE)]),
    ("customer-target-negative", lambda: SLA.for_customer(C1, stat=-1),
     [(f"customers.{C1}.stat", Reason.NOT_POSITIVE)]),
    ("customer-unknown-severity", lambda: SlaTargets(customers={C1: {"urgent": 1}}),
     [(f"customers.{C1}.severity", Reason.NOT_SEVERITY)]),
    ("customer-id-not-the-contracts", lambda: SLA.for_customer("bob", stat=2, high=0),
     [("customer_id", Reason.NOT_CUSTOMER_ID), ("customers.bob.high", Reason.NOT_POSITIVE)]),
    ("customers-key-not-an-id", lambda: SlaTargets(customers={"bob": {"stat": 2}, C1: {"high": 1}}),
     [("customers", Reason.NOT_CUSTOMER_ID)]),
    ("target-of-unknown-severity", lambda: SLA.target("urgent"),  # type: ignore[arg-type]
     [("severity", Reason.NOT_SEVERITY)]),
    ("sla-wrong-type", lambda: backlog(ONE, sla=5, now=T),  # type: ignore[arg-type]
     [("sla", Reason.WRONG_TYPE)]),
    # sla.py: times and windows
    ("window-start-not-a-time", lambda: turnaround(ONE, window=("yesterday-ish", None)),
     [("window.start", Reason.NOT_A_TIME)]),
    ("window-end-not-a-time", lambda: volume(ONE, window=(T, [1, 2])),  # type: ignore[arg-type]
     [("window.end", Reason.NOT_A_TIME)]),
    ("window-not-a-pair", lambda: turnaround(ONE, window="2026-11"),  # type: ignore[arg-type]
     [("window", Reason.BAD_WINDOW)]),
    ("window-backwards", lambda: turnaround(ONE, window=(T, T - pd.Timedelta("1h"))),
     [("window", Reason.BAD_WINDOW)]),
    ("now-not-a-time", lambda: backlog(ONE, now="teatime"), [("now", Reason.NOT_A_TIME)]),
    ("now-nat", lambda: deadlines(ONE, now=pd.NaT), [("now", Reason.NOT_A_TIME)]),  # type: ignore[arg-type]
    ("days-not-whole", lambda: last_days(2.5), [("days", Reason.NOT_WHOLE_NUMBER)]),
    ("days-zero", lambda: last_days(0), [("days", Reason.NOT_POSITIVE)]),
    ("days-before-year-one", lambda: last_days(10**7, now=T), [("days", Reason.OUT_OF_RANGE)]),
    # sla.py: the report time zone
    ("tz-unknown", lambda: volume(ONE, tz="Europe/Berlyn"), [("tz", Reason.NOT_A_TIME_ZONE)]),
    ("tz-not-text", lambda: turnaround(ONE, tz=1), [("tz", Reason.WRONG_TYPE)]),  # type: ignore[arg-type]
    # kpis.py: the change history and options
    ("history-not-a-frame", lambda: turnaround(ONE, history=[]),  # type: ignore[arg-type]
     [("history", Reason.WRONG_TYPE)]),
    ("history-missing-columns", lambda: with_completion(ONE, pd.DataFrame({"change": ["new"]})),
     [("observed_at", Reason.MISSING_COLUMN), ("study_id", Reason.MISSING_COLUMN),
      ("study_viewer_status", Reason.MISSING_COLUMN), ("updated_at", Reason.MISSING_COLUMN)]),
    ("studies-missing-column", lambda: backlog(ONE.drop(columns="created_at"), now=T),
     [("created_at", Reason.MISSING_COLUMN)]),
    ("studies-bad-cells", lambda: backlog(ONE.assign(severity="STAT", is_cancelled="no"), now=T),
     [("severity", Reason.NOT_SEVERITY), ("is_cancelled", Reason.NOT_BOOLEAN)]),
    ("severity-codes", lambda: SLA.hours_per_study(pd.Series(["urgent"])), [("severity", Reason.NOT_SEVERITY)]),
    ("by-wrong-type", lambda: turnaround(ONE, by=5), [("by", Reason.WRONG_TYPE)]),  # type: ignore[arg-type]
    ("by-empty", lambda: turnaround(ONE, by=[]), [("by", Reason.EMPTY)]),
    ("by-unknown", lambda: cancellations(ONE, by=["week", "radiologist"]),
     [("by", Reason.NOT_A_CHOICE), ("by", Reason.NOT_A_CHOICE)]),
    ("by-twice", lambda: turnaround(ONE, by=["severity", "severity"]), [("by", Reason.DUPLICATE)]),
    ("freq-unknown", lambda: volume(ONE, freq="M"), [("freq", Reason.NOT_A_CHOICE)]),  # type: ignore[arg-type]
    # figures.py: tables of another KPI
    ("plot-not-a-frame", lambda: plot_backlog(None), [("table", Reason.WRONG_TYPE)]),  # type: ignore[arg-type]
    ("plot-missing-columns", lambda: plot_backlog(pd.DataFrame({"severity": []})),
     [("age_band", Reason.MISSING_COLUMN), ("open", Reason.MISSING_COLUMN), ("past_target", Reason.MISSING_COLUMN)]),
    ("plot-cancellations-both", lambda: plot_cancellations(cancellations(ONE, ["severity", "customer"])),
     [("customer", Reason.CONFLICT)]),
    ("plot-cancellations-neither",
     lambda: plot_cancellations(cancellations(ONE).drop(columns="severity")),
     [("severity", Reason.MISSING_COLUMN)]),
    # html.py: the report's own arguments
    ("render-refreshed-at", lambda: render(ONE, _out(), now=T, refreshed_at="last tuesday"),
     [("refreshed_at", Reason.NOT_A_TIME)]),
    ("render-window", lambda: render(ONE, _out(), now=T, window=(T, T)), [("window", Reason.BAD_WINDOW)]),
    ("render-now", lambda: render(ONE, _out(), now="soon"), [("now", Reason.NOT_A_TIME)]),
    ("render-to-a-folder", lambda: render(ONE, _out().parent, now=T),
     [("path", Reason.WRONG_SUFFIX), ("path", Reason.IS_A_FOLDER)]),
    ("save-figures-to-a-file", lambda: save_figures(ONE, __file__, now=T), [("folder", Reason.NOT_A_FOLDER)]),
    ("save-figures-under-a-missing-folder",
     lambda: save_figures(ONE, _out().parent / "missing" / "figures", now=T),
     [("folder", Reason.NO_SUCH_FOLDER)]),
    ("report-figures-sla", lambda: report_figures(ONE, now=T, sla={"stat": 0}), [("stat", Reason.NOT_POSITIVE)]),
    ("save-figures-studies", lambda: save_figures("studies.parquet", _out().parent, now=T),  # type: ignore[arg-type]
     [("studies", Reason.WRONG_TYPE)]),
]


def _raised(call: Callable[[], Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(("call", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_validation_error_names_its_field_and_reason(
    call: Callable[[], Any], expected: list[tuple[str, Reason]]
) -> None:
    error = _raised(call)
    cases = error.failure_cases
    assert list(cases.columns) == ["row", "field", "value", "reason"]
    assert list(zip(cases["field"], cases["reason"], strict=True)) == expected
    assert all(isinstance(r, Reason) for r in cases["reason"])
    for field, reason in expected:  # the message says it too, for the reader of a traceback
        assert f"field {field}: {reason.value}" in str(error)


def test_failure_cases_hold_the_refused_value() -> None:
    cases = _raised(lambda: turnaround(ONE, sla={"urgent": 1, "stat": 0})).failure_cases
    assert cases[["field", "value"]].values.tolist() == [["severity", "urgent"], ["stat", 0]]
    nan_case = _raised(lambda: SlaTargets(high=float("nan"))).failure_cases
    assert math.isnan(nan_case["value"].iloc[0])


def _raise_sites() -> set[tuple[str, int]]:
    """(file, line) of every ``raise ValidationError.<constructor>(...)`` in viewerkit/reports."""
    sites = set()
    for path in REPORTS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                        and func.value.id == "ValidationError":
                    sites.add((path.name, node.lineno))
    return sites


def test_every_raise_site_in_reports_is_walked() -> None:
    sites = _raise_sites()
    assert len(sites) >= 13
    walked = set()
    for _, call, _ in CASES:
        tb = _raised(call).__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        assert tb is not None
        path = Path(tb.tb_frame.f_code.co_filename)
        if path.parent == REPORTS_DIR:  # a check reports reuse from elsewhere (files.py) is not theirs
            walked.add((path.name, tb.tb_lineno))
    assert walked <= sites, "a case raised from outside a known raise site"
    assert sites - walked == set(), "raise sites without a case in CASES"
