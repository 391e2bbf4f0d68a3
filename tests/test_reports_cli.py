"""`viewerkit report` loads a real StudyCache (filled from a real sandbox) and writes the
HTML report and the figures; the API key appears in neither the output nor the files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from viewerkit import Client, StudyCache
from viewerkit.cli import main
from viewerkit.reports import SECTIONS
from viewerkit.sandbox.server import Sandbox


@pytest.fixture(scope="module")
def cache_dir(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        StudyCache(folder).refresh(client, progress=False)
    return folder


def test_report_command_writes_the_report_and_figures_from_the_cache(
    sandbox: Sandbox, cache_dir: Path, tmp_path: Path
) -> None:
    out, figures = tmp_path / "report.html", tmp_path / "figures"
    runner = CliRunner(env={"AVARA_API_KEY": sandbox.api_key, "AVARA_BASE_URL": sandbox.base_url})
    result = runner.invoke(
        main, ["report", "--cache", str(cache_dir), "--days", "3650", "--out", str(out), "--figures", str(figures)]
    )
    assert result.exit_code == 0, result.output
    assert "Report on 2,000 of 2,000 cached studies (last 3650 days) written to" in result.output
    assert "8 figures written to" in result.output
    text = out.read_text(encoding="utf-8")
    for section_id, _ in SECTIONS:
        assert f'<section id="{section_id}">' in text
    assert "<dt>studies in the table</dt><dd>2,000</dd>" in text
    assert re.search(r"cache last refreshed: \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert len(list(figures.glob("*.png"))) == 8
    assert sandbox.api_key not in result.output
    for path in [out, *figures.iterdir()]:
        assert sandbox.api_key.encode() not in path.read_bytes()


def test_report_command_takes_an_explicit_window_without_an_api_key(cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "window.html"
    runner = CliRunner(env={"AVARA_API_KEY": None, "AVARA_BASE_URL": None})
    result = runner.invoke(
        main, ["report", "--cache", str(cache_dir), "--window", "2000-01-01", "2100-01-01", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Report on 2,000 of 2,000 cached studies (2000-01-01 to 2100-01-01) written to" in result.output
    assert "Window: 2000-01-01 00:00 UTC to 2100-01-01 00:00 UTC." in out.read_text(encoding="utf-8")


def test_report_command_refuses_window_and_days_together(cache_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["report", "--cache", str(cache_dir), "--window", "2026-01-01", "2026-02-01", "--days", "3"]
    )
    assert result.exit_code == 2
    assert "not both" in result.output


def test_report_command_is_documented_with_an_example() -> None:
    result = CliRunner().invoke(main, ["report", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "viewerkit report" in result.output


def test_report_command_refuses_a_cache_that_was_never_refreshed(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    runner = CliRunner(env={"AVARA_API_KEY": None, "AVARA_BASE_URL": None})
    result = runner.invoke(main, ["report", "--cache", str(tmp_path / "no-such-cache"), "--out", str(out)])
    assert result.exit_code == 4  # the cache's exit status
    assert "no refreshed studies in" in result.output and "viewerkit refresh" in result.output
    assert not out.exists(), "an empty report would read as an empty backlog"


def test_report_command_gives_the_windows_count_and_the_caches(cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "week.html"
    runner = CliRunner(env={"AVARA_API_KEY": None, "AVARA_BASE_URL": None})
    result = runner.invoke(main, ["report", "--cache", str(cache_dir), "--days", "7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    found = re.search(r"Report on ([\d,]+) of 2,000 cached studies \(last 7 days\) written to", result.output)
    assert found is not None, result.output
    shown = re.search(r"Studies created in the window: ([\d,]+) of 2,000", out.read_text(encoding="utf-8"))
    assert shown is not None and shown.group(1) == found.group(1)
    everything = runner.invoke(main, ["report", "--cache", str(cache_dir), "--out", str(out)])
    assert "Report on all 2,000 cached studies written to" in everything.output


def test_report_command_states_its_time_zone_in_the_report(cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "berlin.html"
    runner = CliRunner(env={"AVARA_API_KEY": None, "AVARA_BASE_URL": None})
    result = runner.invoke(main, ["report", "--cache", str(cache_dir), "--tz", "Europe/Berlin", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert '<p class="meta" id="timezone">Time zone: Europe/Berlin.' in text
    assert re.search(r"Generated for \d{4}-\d\d-\d\d \d\d:\d\d CES?T\.", text)
