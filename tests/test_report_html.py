"""The HTML report: self-contained, written atomically, and it opens in a real headless
browser (Debian's chromium) showing every section; a screenshot lands in the test's tmp_path."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from viewerkit.frame import to_pandas
from viewerkit.reports import SECTIONS, SLA, backlog, render, save_figures, turnaround
from viewerkit.schema import SEVERITIES, STUDY_SCHEMA

NOW = pd.Timestamp("2026-11-20 12:00", tz="UTC")
WINDOW = (pd.Timestamp("2026-11-06", tz="UTC"), NOW)
PNG = b"\x89PNG\r\n\x1a\n"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        pytest.skip("chromium is not installed: apt-get update && apt-get install -y chromium")
    return found


@pytest.fixture(scope="module")
def studies() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    rows = []
    for i in range(400):
        sev = SEVERITIES[rng.choice(3, p=[0.6, 0.25, 0.15])]
        created = NOW - pd.Timedelta(hours=float(rng.uniform(0, 28 * 24)))
        took = pd.Timedelta(hours=float(rng.lognormal(np.log({"normal": 10, "high": 3, "stat": 0.8}[sev]), 0.7)))
        done = created + took <= NOW and rng.random() < 0.9
        cancelled = rng.random() < 0.04
        user = None if rng.random() < 0.2 else f"usr_{rng.integers(0, 5):032x}"
        customer = None if rng.random() < 0.2 else f"cus_{rng.integers(0, 3):032x}"
        rows.append({
            "study_id": f"stu_{i:032x}", "study_instance_uid": f"1.2.{i}",
            "study_description": "MR <Brain> & Spine" if i == 0 else f"CT {i}",  # must be escaped
            "severity": sev, "study_viewer_status": "complete" if done else "incomplete",
            "is_cancelled": cancelled, "created_at": created,
            "updated_at": created + took if done else created,
            "cancelled_at": created + pd.Timedelta(hours=2) if cancelled else None,
            "assigned_to_user_id": user, "assigned_to_email": f"r{user[-1]}@example.org" if user else None,
            "express_customer_id": customer, "express_customer_name": f"Clinic {customer[-1]}" if customer else None,
        })
    return to_pandas(pa.Table.from_pylist(rows, schema=STUDY_SCHEMA))


@pytest.fixture(scope="module")
def report(studies: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    return render(studies, folder / "report.html", window=WINDOW, now=NOW,
                  sla=SLA.with_targets(normal=12), refreshed_at="2026-11-20 11:55Z")


def test_report_is_one_self_contained_html_file(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["'](https?:)?//""", text), "an external reference"
    assert "<script" not in text and "<link" not in text
    images = re.findall(r'<img class="figure" alt="[^"]*" src="data:image/png;base64,', text)
    assert len(images) == 8  # two in turnaround, one in each of the six other KPI sections
    assert "MR <Brain>" not in text, "table text is escaped"
    assert "Window: 2026-11-06 00:00 UTC to 2026-11-20 12:00 UTC." in text
    assert "stat 1 h, high 4 h, normal 12 h" in text  # the SLA used, not the default
    assert "cache last refreshed: 2026-11-20 11:55 UTC" in text
    assert [p.name for p in report.parent.iterdir()] == ["report.html"], "a temporary file was left"


def test_report_headline_numbers_are_the_kpi_tables(report: Path, studies: pd.DataFrame) -> None:
    text = report.read_text(encoding="utf-8")
    sla = SLA.with_targets(normal=12)
    open_now = backlog(studies, now=NOW, sla=sla)  # open now, however old: not windowed
    done = turnaround(studies, sla=sla, window=WINDOW)
    assert f"<dt>open now</dt><dd>{int(open_now['open'].sum()):,}</dd>" in text
    assert f"<dt>open and past target</dt><dd>{int(open_now['past_target'].sum()):,}</dd>" in text
    assert f"<dt>completed in the window</dt><dd>{int(done['completed'].sum()):,}</dd>" in text
    share = done["within_target"].sum() / done["completed"].sum() * 100
    assert f"<dt>completed within target</dt><dd>{share:.1f} %</dd>" in text
    stat = done[done["severity"].astype(str) == "stat"].iloc[0]
    assert f"<td>stat</td><td>{stat['completed']}</td><td>{stat['median_h']:.2f}</td>" in text


def test_render_replaces_an_existing_report_atomically(studies: pd.DataFrame, tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    target.write_text("old report")
    written = render(studies, target, now=NOW)
    assert written == target
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]
    assert target.stat().st_mode & 0o044 == 0o044, "colleagues can read the report"


def test_report_opens_in_headless_chromium_with_every_section(report: Path, tmp_path: Path) -> None:
    browser = chromium()
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for section_id, heading in SECTIONS:
        match = re.search(rf'<section id="{section_id}"><h2>([^<]*)</h2>', html)
        assert match, f"section {section_id} missing from the rendered DOM"
        assert match.group(1) == heading.replace("&", "&amp;")
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 8
    assert re.search(r'<p class="meta" id="freshness">Window: 2026-11-06[^<]*Newest study update: ', html)
    assert re.search(r"<td>Clinic \d</td>", html)

    shot = tmp_path / "report.png"
    done = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
         "--window-size=1280,4000", "--hide-scrollbars", report.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG)
    assert shot.stat().st_size > 50_000, "the screenshot is (nearly) blank"


def test_save_figures_writes_one_png_per_figure(studies: pd.DataFrame, tmp_path: Path) -> None:
    paths = save_figures(studies, tmp_path / "figures", now=NOW, window=WINDOW)
    assert [p.name for p in paths] == [
        "turnaround.png", "turnaround_weekly.png", "backlog.png", "overdue.png", "volume.png",
        "workload.png", "customers.png", "cancellations.png",
    ]
    for path in paths:
        assert path.read_bytes().startswith(PNG)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in paths)


def test_report_of_an_empty_table_still_has_every_section(tmp_path: Path) -> None:
    empty = to_pandas(STUDY_SCHEMA.empty_table())
    text = render(empty, tmp_path / "empty.html", now=NOW).read_text(encoding="utf-8")
    for section_id, _ in SECTIONS:
        assert f'<section id="{section_id}">' in text
    assert "Newest study update: –" in text


def test_report_volume_table_is_wide_and_shows_the_latest_periods(tmp_path: Path) -> None:
    # one normal study a day for 100 days: a daily volume table of 100 rows, a column per severity
    first = pd.Timestamp("2026-08-01 10:00", tz="UTC")
    rows = [
        {"study_id": f"stu_{i:032x}", "study_instance_uid": f"1.2.{i}", "severity": "normal",
         "study_viewer_status": "incomplete", "is_cancelled": False,
         "created_at": first + pd.Timedelta(days=i), "updated_at": first + pd.Timedelta(days=i)}
        for i in range(100)
    ]
    studies = to_pandas(pa.Table.from_pylist(rows, schema=STUDY_SCHEMA))
    text = render(studies, tmp_path / "report.html", now="2026-11-10").read_text(encoding="utf-8")
    volume = text[text.index('<section id="volume">'):text.index('<section id="workload">')]
    days = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d)</td>", volume)
    assert len(days) == 90  # one row per day
    assert (days[0], days[-1]) == ("2026-08-11", "2026-11-08")  # the newest 90 of 08-01 .. 11-08
    assert "Showing the last 90 of 100 rows." in volume
    assert "<tr><th>period</th><th>normal</th><th>high</th><th>stat</th><th>total</th>" in volume
    assert "<tr><td>2026-11-08</td><td>1</td><td>0</td><td>0</td><td>1</td><td>0.0 %</td><td></td></tr>" in volume


def test_render_keeps_the_report_private_under_a_private_umask(studies: pd.DataFrame, tmp_path: Path) -> None:
    # study descriptions and radiologists' names: a umask of 077 must not be widened to 644
    old = os.umask(0o077)
    try:
        written = render(studies.head(20), tmp_path / "private.html", now=NOW)
        pngs = save_figures(studies.head(20), tmp_path / "figures", now=NOW)
    finally:
        os.umask(old)
    for path in [written, *pngs]:
        assert path.stat().st_mode & 0o777 == 0o600, path.name
