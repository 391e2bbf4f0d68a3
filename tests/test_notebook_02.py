"""notebooks/02-severity-turnaround-report.ipynb runs top to bottom against its own sandbox,
shows every KPI figure, sees completions in the cache's change history, and never shows the
API key."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "02-severity-turnaround-report.ipynb"


def _outputs(notebook: nbformat.NotebookNode) -> tuple[str, int]:
    parts: list[str] = []
    images = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")))
            data = output.get("data", {})
            images += "image/png" in data
            parts.extend(str(v) for k, v in data.items() if k != "image/png")
            parts.extend(output.get("traceback", []))
    return "\n".join(parts), images


def test_notebook_02_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_02_runs_against_the_sandbox_and_shows_every_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AVARA_API_KEY", raising=False)
    monkeypatch.delenv("AVARA_BASE_URL", raising=False)
    monkeypatch.setenv("VIEWERKIT_CACHE", str(tmp_path / "cache"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    text, images = _outputs(notebook)
    assert images == 8, "one figure per plot cell"
    # the five studies completed between the two refreshes come from the change history
    assert "completion from the change history: 5," in text
    assert re.search(r"\d[\d,]* open studies past target", text)
    assert "report written: report.html" in text
    assert "stat 1 h, high 4 h, normal 24 h (1 customer(s) with their own targets)" in text
    assert not re.search(r"sk-sandbox-[0-9a-f]+", text), "the sandbox key was shown"
