"""notebooks/04-triage.ipynb runs top to bottom against its own live sandbox: the board
opens, the overdue stat studies are balanced over two radiologists and undone, a study is opened in the viewer; the notebook as
saved (outputs and widget state) holds neither the API key nor the reroute link."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from notebook_runner import NOTEBOOKS


def test_notebook_triages_and_keeps_no_secret_in_the_saved_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AVARA_API_KEY", raising=False)
    monkeypatch.delenv("AVARA_BASE_URL", raising=False)
    monkeypatch.setenv("VIEWERKIT_CACHE", str(tmp_path / "cache"))
    notebook = nbformat.read(NOTEBOOKS / "04-triage.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    saved = nbformat.writes(notebook)
    (tmp_path / "saved.ipynb").write_text(saved, encoding="utf-8")
    selected = re.search(r"(\d+) overdue stat studies selected; preview: \{'update': (\d+)", saved)
    assert selected and int(selected.group(1)) > 0 and selected.group(1) == selected.group(2), selected
    assert "balanced over the chosen radiologists: True" in saved
    assert "reverted: True" in saved
    assert "link shown: True - still there after its time: False" in saved
    assert "Traceback" not in saved
    assert not re.search(r"sk-sandbox-[0-9a-f]+", saved), "the sandbox key was saved"
    assert "/viewer/studies/" not in saved and "token=" not in saved, "a reroute link was saved"
