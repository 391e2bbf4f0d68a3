"""`make demo` (python -m viewerkit.demo): sandbox -> cache -> report, figures and headlines,
and it runs again into the same folder (each run's sandbox is a new cache namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from viewerkit import demo


def test_demo_runs_twice_into_the_same_folder_and_reports_freshness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--studies", "60", "--seed", "3", "--live-seconds", "0", "--out", str(tmp_path)]
    demo.main(args)
    capsys.readouterr()
    demo.main(args)  # the first run's namespace stays in tmp_path/cache
    printed = capsys.readouterr().out
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2
    studies = int(re.search(r"Studies in the cache: ([\d,]+)", printed).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert studies >= 60
    assert re.search(r"Open studies past target: [\d,]+ of [\d,]+", printed)
    assert "HTML report: " in printed and "Figures (8 PNG)" in printed
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"<dt>studies in the table</dt><dd>{studies:,}</dd>" in text
    assert re.search(r"cache last refreshed: \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert len(list((tmp_path / "figures").glob("*.png"))) == 8
    assert not re.search(r"sk-sandbox-[0-9a-f]+", printed + text), "the sandbox key was shown"
