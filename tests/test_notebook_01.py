"""notebooks/01-fetch-and-explore.ipynb runs top to bottom against its own sandbox and
never shows the API key or a reroute URL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from notebook_runner import run_notebook


def test_notebook_runs_against_the_sandbox_without_showing_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = run_notebook("01-fetch-and-explore.ipynb", tmp_path, monkeypatch).text
    cache_dir = tmp_path / "cache"
    assert "3,000 studies" in text
    assert "RerouteUrl(<redacted>)" in text
    assert "mode='active'" in text and "changed=3" in text
    assert not re.search(r"sk-sandbox-[0-9a-f]+", text), "the sandbox key was shown"
    assert "/viewer/studies/" not in text and "?token=" not in text, "a reroute URL was shown"
    key_files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert key_files, "the notebook's cache went to VIEWERKIT_CACHE"
    for path in key_files:
        assert b"sk-sandbox-" not in path.read_bytes()
