"""``python -m viewerkit`` is the ``viewerkit`` command line, run as a user would: a new
Python process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from viewerkit.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "viewerkit", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)


def test_python_m_viewerkit_shows_the_commands_under_the_cli_name() -> None:
    done = run_module("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: viewerkit [OPTIONS] COMMAND")
    for command in ("fetch", "refresh", "cache", "report", "sandbox"):
        assert f"  {command} " in done.stdout


def test_python_m_viewerkit_runs_a_command_and_its_exit_status(sandbox: Sandbox, tmp_path: Path) -> None:
    import os

    env = {**os.environ, "AVARA_API_KEY": sandbox.api_key, "AVARA_BASE_URL": sandbox.base_url}
    out = tmp_path / "stat.parquet"
    done = run_module("fetch", "--severity", "stat", "--out", str(out), "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    assert "studies written to" in done.stdout and out.is_file()
    refused = run_module("fetch", "--severity", "urgent", env=env)
    assert refused.returncode == 2 and "Usage: viewerkit fetch" in refused.stderr
    assert sandbox.api_key not in done.stdout + done.stderr + refused.stderr
