"""`viewerkit fetch`, `viewerkit refresh`, `viewerkit cache info` with CliRunner against a
real sandbox."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from viewerkit import Client, StudyCache
from viewerkit.cli import main
from viewerkit.fetch import fetch_studies_arrow
from viewerkit.sandbox.server import Sandbox


@pytest.fixture
def runner(sandbox: Sandbox) -> CliRunner:
    return CliRunner(
        env={
            "AVARA_API_KEY": sandbox.api_key,
            "AVARA_BASE_URL": sandbox.base_url,
            "VIEWERKIT_CACHE": None,
        }
    )


def test_fetch_writes_the_filtered_study_table_to_parquet(
    runner: CliRunner, sandbox: Sandbox, tmp_path: Path
) -> None:
    out = tmp_path / "stat-open.parquet"
    result = runner.invoke(
        main,
        ["fetch", "--severity", "stat", "--status", "incomplete", "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    written = pq.read_table(out)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        expected = fetch_studies_arrow(
            c, severity="stat", study_viewer_status="incomplete", progress=False
        )
    order = [("study_id", "ascending")]
    assert written.sort_by(order).equals(expected.sort_by(order))
    assert f"{expected.num_rows} studies written to {out}" in result.output
    assert sandbox.api_key not in result.output


def test_fetch_writes_csv(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "unassigned.csv"
    result = runner.invoke(main, ["fetch", "--assigned-to", "null", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) > 0
    assert table["assigned_to_user_id"].isna().all()


def test_fetch_with_a_bad_filter_prints_one_line_and_fails(runner: CliRunner) -> None:
    result = runner.invoke(main, ["fetch", "--assigned-to", "bob", "--no-progress"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "assigned_to" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "command",
    [["refresh"], ["cache", "adopt", "--from", "1234", "--yes"]],
    ids=["refresh", "cache adopt"],
)
@pytest.mark.parametrize("key", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_missing_key_fails_naming_the_variable_in_command_line_terms(
    tmp_path: Path, command: list[str], key: str | None
) -> None:
    result = CliRunner(env={"AVARA_API_KEY": key}).invoke(main, [*command, "--cache", str(tmp_path)])
    assert result.exit_code == 1
    assert "set the environment variable AVARA_API_KEY" in result.output
    assert "api_key=" not in result.output  # the library's wording means nothing here


def test_refresh_then_cache_info(runner: CliRunner, sandbox: Sandbox, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    full = runner.invoke(main, ["refresh", "--cache", str(cache_dir), "--no-progress"])
    assert full.exit_code == 0, full.output
    assert "full refresh: 2000 studies; 2000 new, 0 changed, 0 gone" in full.output
    active = runner.invoke(
        main, ["refresh", "--cache", str(cache_dir), "--mode", "active", "--no-progress"]
    )
    assert active.exit_code == 0, active.output
    assert "active refresh: 2000 studies; 0 new, 0 changed, 0 gone, 2000 unchanged" in active.output
    assert len(StudyCache(cache_dir).load()) == 2000

    info = runner.invoke(main, ["cache", "info", "--cache", str(cache_dir)])
    assert info.exit_code == 0, info.output
    assert f"base_url: {sandbox.base_url}" in info.output
    assert "studies: 2000" in info.output
    assert "last_refresh_mode: active" in info.output
    assert "file manifest.json:" in info.output
    assert sandbox.api_key not in full.output + active.output + info.output


def test_cache_path_defaults_to_the_environment(sandbox: Sandbox, tmp_path: Path) -> None:
    runner = CliRunner(
        env={
            "AVARA_API_KEY": sandbox.api_key,
            "AVARA_BASE_URL": sandbox.base_url,
            "VIEWERKIT_CACHE": str(tmp_path / "env-cache"),
        }
    )
    result = runner.invoke(main, ["refresh", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert StudyCache(tmp_path / "env-cache").info()["studies"] == 2000


def test_corrupt_cache_fails_with_one_line_saying_how_to_rebuild(
    runner: CliRunner, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    assert runner.invoke(main, ["refresh", "--cache", str(cache_dir), "--no-progress"]).exit_code == 0
    next(cache_dir.rglob("manifest.json")).write_text("garbage")
    result = runner.invoke(main, ["cache", "info", "--cache", str(cache_dir)])
    assert result.exit_code == 4  # the cache's exit status, as for every command
    assert "viewerkit refresh --mode full" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["fetch"], ["refresh"], ["cache"], ["cache", "info"]])
def test_every_command_documents_an_example(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert "viewerkit " in result.output.split("Example:")[1]


def test_fetch_into_a_missing_folder_fails_before_fetching(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # nothing listens here: a fetch would fail differently
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    runner = CliRunner(env={"AVARA_API_KEY": "sk-unused", "AVARA_BASE_URL": url})
    for name in ("studies.parquet", "studies.csv"):
        out = tmp_path / "no-such-folder" / name
        result = runner.invoke(main, ["fetch", "--out", str(out), "--no-progress"])
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: ") and "field path" in result.output
        assert f"folder {out.parent} does not exist" in result.output
        assert "connect" not in result.output.lower(), "the fetch was attempted"
        assert len(result.output.strip().splitlines()) == 1
        assert not out.parent.exists()


def test_fetch_to_an_unknown_file_type_fails_before_fetching(tmp_path: Path) -> None:
    runner = CliRunner(env={"AVARA_API_KEY": "sk-unused", "AVARA_BASE_URL": "http://127.0.0.1:9"})
    out = tmp_path / "studies.xls"
    result = runner.invoke(main, ["fetch", "--out", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "must end with one of the allowed suffixes, allowed: .parquet, .csv, .xlsx" in result.output
    assert "connect" not in result.output.lower(), "the fetch was attempted"
    assert not out.exists()


def test_a_cache_path_that_cannot_be_used_fails_with_one_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    result = runner.invoke(main, ["refresh", "--cache", str(not_a_folder), "--no-progress"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "Not a directory" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_fetch_to_csv_neutralises_formulas_unless_told_to_keep_them(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    import csv

    from viewerkit import fetch_studies
    from viewerkit.files import read_studies

    sandbox = make_sandbox(studies=40, seed=3)
    hostile = '=HYPERLINK("http://evil.example","open")'
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        study_id = fetch_studies(client, progress=False)["study_id"].iloc[5]
        client.update_study(study_id, study_description=hostile, metadata={"note": "@SUM(A1)"})
        expected = fetch_studies(client, progress=False)
    runner = CliRunner(env={"AVARA_API_KEY": sandbox.api_key, "AVARA_BASE_URL": sandbox.base_url})
    for flags, description, note in (
        ([], "'" + hostile, "'@SUM(A1)"),
        (["--formulas", "neutralise"], "'" + hostile, "'@SUM(A1)"),
        (["--formulas", "keep"], hostile, "@SUM(A1)"),
    ):
        out = tmp_path / "studies.csv"
        result = runner.invoke(main, ["fetch", "--out", str(out), "--no-progress", *flags])
        assert result.exit_code == 0, result.output
        with out.open(encoding="utf-8", newline="") as handle:
            row = next(r for r in csv.DictReader(handle) if r["study_id"] == study_id)
        assert (row["study_description"], row["meta.note"]) == (description, note)
        back = read_studies(out, formulas="keep") if "keep" in flags else read_studies(out)
        pd.testing.assert_frame_equal(back, expected, check_exact=True)


def test_fetch_refuses_another_formulas_word(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["fetch", "--out", str(tmp_path / "x.csv"), "--formulas", "neutralize"])
    assert result.exit_code == 2 and "neutralise" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_fetch_takes_several_values_of_an_enum_filter(runner: CliRunner, sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "urgent.parquet"
    result = runner.invoke(
        main, ["fetch", "--severity", "stat", "--severity", "high", "--status", "incomplete",
               "--no-progress", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        expected = {s["studyId"] for sev in ("stat", "high")
                    for s in c.iter_studies(severity=sev, study_viewer_status="incomplete")}
    assert set(table["study_id"]) == expected
    assert set(table["severity"]) == {"stat", "high"}


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["fetch", "--no-progress"], 3),  # the API: nothing listens at the base URL
        (["refresh", "--no-progress"], 3),
        (["fetch", "--severity", "urgent"], 2),  # usage: click refuses the value
        (["fetch", "--assigned-to", "bob"], 1),  # bad input, before any request
    ],
)
def test_every_command_exits_with_the_status_of_its_failure(
    tmp_path: Path, args: list[str], status: int
) -> None:
    runner = CliRunner(env={"AVARA_API_KEY": "sk-unused", "AVARA_BASE_URL": "http://127.0.0.1:9"})
    extra = ["--cache", str(tmp_path)] if args[0] == "refresh" else []
    result = runner.invoke(main, [*args, *extra, *(["--concurrency", "1"] if status == 3 else [])])
    assert result.exit_code == status, result.output
