"""notebooks/01-fetch-and-explore.ipynb runs top to bottom against its own sandbox and
never shows the API key or a reroute URL."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "01-fetch-and-explore.ipynb"


def _outputs_text(notebook: nbformat.NotebookNode) -> str:
    parts: list[str] = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")))
            for value in output.get("data", {}).values():
                parts.append(str(value))
            parts.extend(output.get("traceback", []))
    return "\n".join(parts)


def test_notebook_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_runs_against_the_sandbox_without_showing_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AVARA_API_KEY", raising=False)
    monkeypatch.delenv("AVARA_BASE_URL", raising=False)
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("VIEWERKIT_CACHE", str(cache_dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    text = _outputs_text(notebook)
    assert "3,000 studies" in text
    assert "RerouteUrl(<redacted>)" in text
    assert "mode='active'" in text and "changed=3" in text
    assert not re.search(r"sk-sandbox-[0-9a-f]+", text), "the sandbox key was shown"
    assert "/viewer/studies/" not in text and "?token=" not in text, "a reroute URL was shown"
    key_files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert key_files, "the notebook's cache went to VIEWERKIT_CACHE"
    for path in key_files:
        assert b"sk-sandbox-" not in path.read_bytes()
