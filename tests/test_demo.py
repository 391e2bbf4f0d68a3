"""`make demo` (python -m viewerkit.demo): sandbox -> cache -> report, figures and headlines,
and it runs again into the same folder, replacing the previous run's namespace, so that the
CLI reads the demo cache as the README shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from viewerkit import demo
from viewerkit.cli import main


def test_demo_runs_twice_into_the_same_folder_and_reports_freshness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--studies", "60", "--seed", "3", "--live-seconds", "0", "--out", str(tmp_path)]
    demo.main(args)
    capsys.readouterr()
    demo.main(args)  # replaces the first run's namespace in tmp_path/cache
    printed = capsys.readouterr().out
    assert "Replacing the previous demo run's cache namespace" in printed
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1
    studies = int(re.search(r"Studies in the cache: ([\d,]+)", printed).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert studies >= 60
    assert re.search(r"Open studies past target: [\d,]+ of [\d,]+", printed)
    assert "HTML report: " in printed and "Figures (8 PNG)" in printed
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"<dt>studies in the table</dt><dd>{studies:,}</dd>" in text
    assert re.search(r"cache last refreshed: \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert len(list((tmp_path / "figures").glob("*.png"))) == 8
    assert not re.search(r"sk-sandbox-[0-9a-f]+", printed + text), "the sandbox key was shown"


def test_after_two_demo_runs_the_cli_reads_the_demo_cache_as_the_readme_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--studies", "40", "--seed", "4", "--live-seconds", "0", "--out", str(tmp_path)]
    demo.main(args)
    demo.main(args)
    capsys.readouterr()
    env = {"AVARA_API_KEY": "", "VIEWERKIT_NAMESPACE": "", "VIEWERKIT_CACHE": ""}
    runner = CliRunner()
    info = runner.invoke(main, ["cache", "info", "--cache", str(tmp_path / "cache")], env=env)
    assert info.exit_code == 0, info.output
    cached = re.search(r"^studies: (\d+)$", info.output, re.M)
    assert cached and int(cached.group(1)) >= 40, info.output
    report = runner.invoke(
        main, ["report", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "r.html")],
        env=env,
    )
    assert report.exit_code == 0, report.output
    assert (tmp_path / "r.html").stat().st_size > 0


def test_a_second_run_stopped_before_its_refresh_is_in_leaves_the_first_run_s_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from viewerkit import StudyCache

    args = ["--studies", "60", "--seed", "3", "--live-seconds", "0", "--out", str(tmp_path)]
    demo.main(args)
    first = [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(first) == 1

    def interrupted(self: StudyCache, *a: object, **k: object) -> None:
        raise KeyboardInterrupt  # the analyst's Ctrl-C during the second run's full refresh

    monkeypatch.setattr(StudyCache, "refresh", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.main(args)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == first
    result = CliRunner().invoke(main, ["cache", "info", "--cache", str(tmp_path / "cache")], env={"AVARA_API_KEY": ""})
    shown = re.search(r"^studies: ([\d,]+)$", result.output, re.MULTILINE)
    assert result.exit_code == 0 and shown and int(shown.group(1).replace(",", "")) >= 60, result.output
