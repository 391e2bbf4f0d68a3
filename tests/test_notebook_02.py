"""notebooks/02-severity-turnaround-report.ipynb runs top to bottom against its own sandbox,
shows every KPI figure, sees completions in the cache's change history, and never shows the
API key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from notebook_runner import run_notebook


def test_notebook_02_runs_against_the_sandbox_and_shows_every_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = run_notebook("02-severity-turnaround-report.ipynb", tmp_path, monkeypatch)
    text, images = outputs.text, outputs.images
    assert images == 8, "one figure per plot cell"
    # the five studies completed between the two refreshes come from the change history
    assert "completion from the change history: 5," in text
    assert re.search(r"\d[\d,]* open studies past target", text)
    assert "report written: report.html" in text
    assert "stat 1 h, high 4 h, normal 24 h (1 customer(s) with their own targets)" in text
    assert not re.search(r"sk-sandbox-[0-9a-f]+", text), "the sandbox key was shown"
