"""What the fresh-clone walk of the README found (issue 11), each as the command a new user
typed, against a real sandbox: mistyped folders create nothing, a key with no namespace in
the folder is told what the folder holds (and about `cache adopt` after a rotation), a
mistyped namespace is bad input, --tz without a file is refused, no progress bar lands in a
log, and a refused key says which variable to check."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from viewerkit import Client, StudyCache
from viewerkit.cli import main
from viewerkit.sandbox.server import Sandbox


@pytest.fixture
def refreshed(sandbox: Sandbox, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        StudyCache(cache).refresh(client, progress=False)
    return cache


def _env(sb: Sandbox | None = None, key: str | None = None) -> dict[str, str | None]:
    if sb is None:
        return {"AVARA_API_KEY": None, "AVARA_BASE_URL": None, "VIEWERKIT_NAMESPACE": None}
    return {"AVARA_API_KEY": key or sb.api_key, "AVARA_BASE_URL": sb.base_url, "VIEWERKIT_NAMESPACE": None}


def test_mistyped_folders_create_nothing(sandbox: Sandbox, refreshed: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "no-such-folder"
    figures = runner.invoke(
        main, ["report", "--cache", str(refreshed), "--out", str(tmp_path / "r.html"),
               "--figures", str(missing / "figs")], env=_env())
    assert figures.exit_code == 1, figures.output
    assert "--figures" in figures.output and "parent folder does not exist" in figures.output
    assert not (tmp_path / "r.html").exists()  # refused before any work
    refresh = runner.invoke(main, ["refresh", "--cache", str(missing / "cache"), "--no-progress"],
                            env=_env(sandbox))
    assert refresh.exit_code == 1, refresh.output
    assert "does not exist" in refresh.output
    assert not missing.exists()


def test_a_key_with_no_namespace_here_is_told_what_the_folder_holds(
    sandbox: Sandbox, make_sandbox: object, refreshed: Path
) -> None:
    other: Sandbox = make_sandbox(studies=10, seed=3)  # type: ignore[operator]
    runner = CliRunner()
    info = runner.invoke(main, ["cache", "info", "--cache", str(refreshed)], env=_env(other))
    assert info.exit_code == 4, info.output
    only = StudyCache(refreshed).namespaces()[0]["namespace"]
    assert only in info.output and "--namespace" in info.output
    assert other.api_key not in info.output and sandbox.api_key not in info.output
    # the same server under a new key (a rotation): the advice is to adopt, not to refresh
    rotated = runner.invoke(main, ["report", "--cache", str(refreshed), "--out", str(refreshed.parent / "r.html")],
                            env=_env(sandbox, key=sandbox.api_key + "-rotated"))
    assert rotated.exit_code == 4, rotated.output
    assert f"viewerkit cache adopt --from {only}" in rotated.output


def test_a_mistyped_namespace_is_bad_input(refreshed: Path) -> None:
    result = CliRunner().invoke(main, ["cache", "info", "--cache", str(refreshed), "--namespace", "zzzz"],
                                env=_env())
    assert result.exit_code == 1 and "holds no namespace 'zzzz'" in result.output


def test_tz_without_a_csv_or_excel_file_is_refused(sandbox: Sandbox) -> None:
    runner = CliRunner()
    alone = runner.invoke(main, ["fetch", "--tz", "Europe/Berlin"], env=_env(sandbox))
    assert alone.exit_code == 2 and "--tz" in alone.output
    bad = runner.invoke(main, ["fetch", "--tz", "Berlin", "--out", "x.csv"], env=_env(sandbox))
    assert bad.exit_code == 1 and bad.output.startswith("Error: --tz") and "write_studies" not in bad.output


def test_no_progress_bar_reaches_a_log_and_a_refused_key_says_what_to_check(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    runner = CliRunner()
    quiet = runner.invoke(main, ["fetch", "--severity", "stat"], env=_env(sandbox))
    assert quiet.exit_code == 0, quiet.output
    assert "\r" not in quiet.stderr and "it/s" not in quiet.stderr and "studies/s" not in quiet.stderr
    refused = runner.invoke(main, ["fetch"], env=_env(sandbox, key="sk-wrong-key"))
    assert refused.exit_code == 3
    assert "check AVARA_API_KEY" in refused.output and "sk-wrong-key" not in refused.output
