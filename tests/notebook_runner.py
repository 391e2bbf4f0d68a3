"""Runs a notebook of notebooks/ top to bottom against its own sandbox, as a user would
open it: no AVARA_API_KEY, the cache in a temporary folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


@dataclass
class Outputs:
    text: str  # every text, data (but PNG) and traceback output, joined
    images: int  # PNG outputs


def run_notebook(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Outputs:
    monkeypatch.delenv("AVARA_API_KEY", raising=False)
    monkeypatch.delenv("AVARA_BASE_URL", raising=False)
    monkeypatch.setenv("VIEWERKIT_CACHE", str(tmp_path / "cache"))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    parts: list[str] = []
    images = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")))
            data = output.get("data", {})
            images += "image/png" in data
            parts.extend(str(v) for k, v in data.items() if k != "image/png")
            parts.extend(output.get("traceback", []))
    return Outputs("\n".join(parts), images)
