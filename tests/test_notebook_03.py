"""notebooks/03-bulk-reassignment.ipynb runs top to bottom against its own sandbox: the
off-shift radiologist's open studies are reassigned (stat first, by load), previewed,
applied with a journal, read back with their new assignees, and undone; it never shows the
API key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from notebook_runner import run_notebook


def test_notebook_reassigns_applies_and_undoes_against_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = run_notebook("03-bulk-reassignment.ipynb", tmp_path, monkeypatch).text
    leaving = re.search(r"(\S+@\S+) goes off shift with (\d+) open studies", text)
    assert leaving is not None
    moving = int(leaving.group(2))
    assert moving > 0
    assert f"Plan({moving} rows: assigned_to {moving})" in text
    assert "unplaced)" in text and "fit no target (capacity reached)" in text
    # applied: every study read back with its new assignee; undone: every one back
    assert f"{moving} of {moving} studies now with their new assignee" in text
    assert f"{moving} of {moving} studies back with {leaving.group(1)}" in text
    # the example plan data/severity-bump.csv, read, validated and previewed on its sandbox
    assert "Plan(5 rows" in text and "preview against the default sandbox: {" in text
    assert not re.search(r"sk-sandbox-[0-9a-f]+", text), "the sandbox key was shown"
