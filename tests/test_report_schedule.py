"""`viewerkit report` as a scheduled job: `--refresh` refreshes the cache and writes the
report in one command, quietly, and each documented exit status is what a real sandbox,
a real cache and a real lock give: 0 written, 1 bad input or setup, 2 usage, 3 the API,
4 the cache (locked past --lock-timeout, damaged, never refreshed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from viewerkit import Client, StudyCache
from viewerkit.cli import main
from viewerkit.files import file_lock
from viewerkit.sandbox.server import Sandbox


def env_of(sandbox: Sandbox, **override: str | None) -> dict[str, str | None]:
    return {"AVARA_API_KEY": sandbox.api_key, "AVARA_BASE_URL": sandbox.base_url, **override}


@pytest.fixture
def refreshed(sandbox: Sandbox, tmp_path: Path) -> Path:
    folder = tmp_path / "cache"
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        StudyCache(folder).refresh(client, progress=False)
    return folder


def namespace_dir(sandbox: Sandbox, cache: Path) -> Path:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        return Path(StudyCache(cache).info(client)["path"])


def test_refresh_then_report_in_one_quiet_command_exits_0(sandbox: Sandbox, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "daily.html"
    result = CliRunner(env=env_of(sandbox)).invoke(
        main, ["report", "--refresh", "full", "--cache", str(cache), "--days", "7", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""  # quiet: nothing for cron to mail
    assert "Severity and turnaround report" in out.read_text(encoding="utf-8")
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        info = StudyCache(cache).info(client)
    assert info["studies"] == 2000 and info["refreshes"] == 1


def test_refresh_active_then_report_says_what_it_did(sandbox: Sandbox, refreshed: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = CliRunner(env=env_of(sandbox)).invoke(
        main, ["report", "--refresh", "active", "--cache", str(refreshed), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"active refresh: 0 new, 0 changed, 0 gone \(\d+\.\d s\)", lines[0]), lines
    assert lines[1].startswith("Report on all 2,000 cached studies written to")
    assert sandbox.api_key not in result.output and sandbox.api_key not in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--tz", "Mars/Olympus_Mons"], "field tz"),
        (["--out", "report.txt"], "field path"),
        (["--window", "2026-01-01", "soon"], "field window.end"),
    ],
)
def test_bad_input_exits_1_before_any_refresh(sandbox: Sandbox, tmp_path: Path, args: list[str], field: str) -> None:
    cache = tmp_path / "cache"
    result = CliRunner(env=env_of(sandbox)).invoke(
        main, ["report", "--refresh", "full", "--cache", str(cache), "--out", str(tmp_path / "r.html"), *args]
    )
    assert result.exit_code == 1, result.output
    assert field in result.output
    assert not cache.exists(), "nothing is fetched for a command that cannot succeed"


def test_an_out_in_a_missing_folder_exits_1_and_creates_no_folder(refreshed: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    result = CliRunner(env={"AVARA_API_KEY": None, "AVARA_BASE_URL": None}).invoke(
        main, ["report", "--cache", str(refreshed), "--out", str(missing / "r.html")]
    )
    assert result.exit_code == 1
    assert "field path" in result.output and "does not exist" in result.output
    assert not missing.exists()


def test_refresh_without_an_api_key_exits_1(tmp_path: Path) -> None:
    result = CliRunner(env={"AVARA_API_KEY": None, "AVARA_BASE_URL": None}).invoke(
        main, ["report", "--refresh", "active", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "r.html")]
    )
    assert result.exit_code == 1, result.output
    assert "AVARA_API_KEY" in result.output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner(env={"AVARA_API_KEY": None, "AVARA_BASE_URL": None})
    both = runner.invoke(main, ["report", "--window", "2026-01-01", "2026-02-01", "--days", "3"])
    assert both.exit_code == 2 and "not both" in both.output
    assert runner.invoke(main, ["report", "--refresh", "sometimes"]).exit_code == 2


def test_a_refused_api_key_exits_3(sandbox: Sandbox, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "r.html"
    wrong = "sk-test-" + "0" * 32
    result = CliRunner(env=env_of(sandbox, AVARA_API_KEY=wrong)).invoke(
        main, ["report", "--refresh", "full", "--cache", str(cache), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 3, result.output
    assert "401" in result.output or "key" in result.output.lower()
    assert wrong not in result.output
    assert not out.exists()


def test_a_refresh_held_past_the_lock_timeout_exits_4(sandbox: Sandbox, refreshed: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    with file_lock(namespace_dir(sandbox, refreshed) / ".lock", timeout=5, holder="a test's refresh"):
        result = CliRunner(env=env_of(sandbox)).invoke(
            main, ["report", "--refresh", "active", "--cache", str(refreshed), "--lock-timeout", "0.3",
                   "--out", str(out)]
        )
    assert result.exit_code == 4, result.output
    assert "lock" in result.output.lower()
    assert not out.exists()


def test_a_damaged_cache_exits_4(sandbox: Sandbox, refreshed: Path, tmp_path: Path) -> None:
    folder = namespace_dir(sandbox, refreshed)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / manifest["studies_file"]).write_bytes(b"not parquet")
    out = tmp_path / "r.html"
    result = CliRunner(env=env_of(sandbox)).invoke(main, ["report", "--cache", str(refreshed), "--out", str(out)])
    assert result.exit_code == 4, result.output
    assert "damaged" in result.output or "not a readable Parquet" in result.output
    assert not out.exists()


def test_the_help_documents_every_exit_status() -> None:
    text = CliRunner().invoke(main, ["report", "--help"]).output
    block = text.split("Exit status", 1)[1]
    assert [int(code) for code in re.findall(r"^\s+(\d)  ", block, flags=re.M)] == [0, 1, 2, 3, 4]
