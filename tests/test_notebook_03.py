"""notebooks/03-bulk-reassignment.ipynb runs top to bottom against its own sandbox: the
off-shift radiologist's open studies are reassigned (stat first, by load), previewed,
applied with a journal, read back with their new assignees, and undone; it never shows the
API key.

Until the bulk engine (``Plan.preview`` / ``Plan.apply``, ``viewerkit.bulk.undo``) is
merged, the test checks that every cell up to the first preview runs, then skips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from nbclient.exceptions import CellExecutionError
from notebook_runner import run_notebook

import viewerkit.bulk
from viewerkit.bulk import Plan

ENGINE = hasattr(Plan, "preview") and hasattr(Plan, "apply") and hasattr(viewerkit.bulk, "undo")


def test_notebook_reassigns_applies_and_undoes_against_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not ENGINE:
        with pytest.raises(CellExecutionError, match=r"preview = plan\.preview\(client") as caught:
            run_notebook("03-bulk-reassignment.ipynb", tmp_path, monkeypatch)
        assert "has no attribute 'preview'" in str(caught.value)
        pytest.skip("the bulk engine (Plan.preview/apply, bulk.undo) is not merged yet: "
                    "the notebook ran up to its first preview")
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
    assert not re.search(r"sk-sandbox-[0-9a-f]+", text), "the sandbox key was shown"
