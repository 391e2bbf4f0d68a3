"""Every notebook is committed without outputs: no stale results, nothing secret."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from notebook_runner import NOTEBOOKS


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_worked_notebooks_are_there() -> None:
    names = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert {"01-fetch-and-explore.ipynb", "02-severity-turnaround-report.ipynb",
            "03-bulk-reassignment.ipynb"} <= names
