"""``viewerkit sandbox serve`` on a kept database: the same key and port on every start (the
key printed again), ``--rotate-key`` revokes the old key; a database or port it cannot use is
a one-line error. ``running()`` keeps a kept database's key too."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from viewerkit.errors import Reason, ValidationError
from viewerkit.sandbox.server import API_KEY_ENV, running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def serve_args(db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "viewerkit.cli", "sandbox", "serve", "--db", str(db), *extra]


def env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != API_KEY_ENV}


@contextmanager
def serving(db: Path, *extra: str) -> Iterator[tuple[str, str]]:
    """Run ``serve`` until the block ends (Ctrl-C): yields (base URL, printed key)."""
    process = subprocess.Popen(
        serve_args(db, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_without_key(), text=True
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        if not first:
            pytest.fail(f"serve exited: {process.stderr.read()}")
        lines = [first] + [process.stdout.readline() for _ in range(3)]
        base_url = lines[0].strip().rsplit(" ", 1)[-1]
        keys = [line.strip().split("=", 1)[1] for line in lines if "AVARA_API_KEY=" in line]
        assert len(keys) == 1
        yield base_url, keys[0]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def status(base_url: str, key: str) -> int:
    response = httpx.get(base_url + "/v1/viewer/studies", params={"limit": 1},
                         headers={"Authorization": f"Bearer {key}"}, trust_env=False)
    return response.status_code


def key_records(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        count: int = conn.execute("SELECT count(*) FROM api_keys").fetchone()[0]
    return count


def test_a_kept_database_serves_with_the_same_key_and_port_on_every_start(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    with serving(db, "--studies", "20", "--port", "0") as (first_url, first_key):
        assert status(first_url, first_key) == 200
    records = key_records(db)
    for _ in range(2):
        with serving(db) as (url, key):  # no --port, no --api-key
            assert (url, key) == (first_url, first_key)
            assert status(url, first_key) == 200
            assert status(url, "sk-sandbox-" + "0" * 32) == 401
        assert key_records(db) == records  # no key was added


def test_an_explicit_port_is_kept_for_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    port = free_port()
    with serving(db, "--studies", "3", "--port", str(port)) as (url, key):
        assert url == f"http://127.0.0.1:{port}"
    with serving(db) as (again, same):
        assert (again, same) == (url, key)


def test_rotate_key_issues_a_new_key_and_revokes_the_old(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    with serving(db, "--studies", "3", "--port", "0") as (url, old_key):
        created = httpx.post(url + "/v1/viewer/studies", headers={"Authorization": f"Bearer {old_key}"},
                             json={"severity": "stat", "studyDescription": "CT", "studyInstanceUid": "2.25.9"},
                             trust_env=False).json()
    records = key_records(db)
    with serving(db, "--rotate-key") as (again, new_key):
        assert again == url and new_key != old_key and new_key.startswith("sk-sandbox-")
        assert status(url, new_key) == 200
        assert status(url, old_key) == 401
        # the study the old key created still names it as its creator
        study = httpx.get(f"{url}/v1/viewer/studies/{created['studyId']}",
                          headers={"Authorization": f"Bearer {new_key}"}, trust_env=False).json()
        assert study["createdByApiKey"] == created["createdByApiKey"]
    assert key_records(db) == records + 1
    with serving(db) as (_, kept):
        assert kept == new_key and status(url, old_key) == 401


def test_rotate_key_to_a_given_key_revokes_the_kept_one(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    with serving(db, "--studies", "0", "--port", "0") as (url, old_key):
        pass
    with serving(db, "--rotate-key", "--api-key", "sk-chosen-key") as (_, key):
        assert key == "sk-chosen-key"
        assert status(url, key) == 200 and status(url, old_key) == 401


def test_an_api_key_given_on_start_becomes_the_kept_key(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    with serving(db, "--studies", "0", "--port", "0", "--api-key", "sk-given-key") as (url, key):
        assert key == "sk-given-key"
    with serving(db) as (_, kept):
        assert kept == "sk-given-key" and status(url, kept) == 200


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "viewerkit.cli", "sandbox", "serve", *args],
                          capture_output=True, text=True, timeout=60, env=env_without_key())


def test_a_db_in_a_missing_folder_is_a_one_line_error() -> None:
    done = run_serve("--studies", "0", "--port", "0", "--db", "/nonexistent-dir/x.db")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "Error: cannot open the database /nonexistent-dir/x.db: no folder /nonexistent-dir"
    ]
    assert not Path("/nonexistent-dir").exists()


def test_a_db_that_is_not_a_sqlite_file_is_a_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are not the studies you are looking for\n" * 200)
    done = run_serve("--studies", "0", "--port", "0", "--db", str(db))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot use {db} as the sandbox database:")
    assert "Traceback" not in done.stderr


def test_a_db_that_is_a_folder_is_a_one_line_error(tmp_path: Path) -> None:
    done = run_serve("--studies", "0", "--port", "0", "--db", str(tmp_path))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "is a directory" in done.stderr


def test_a_port_in_use_is_a_one_line_error_not_another_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        done = run_serve("--studies", "0", "--port", str(port), "--db", str(tmp_path / "x.db"))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot listen on 127.0.0.1:{port}:")


def test_serve_help_documents_the_kept_key_and_its_rotation() -> None:
    from click.testing import CliRunner

    from viewerkit.sandbox.cli import sandbox

    result = CliRunner().invoke(sandbox, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--rotate-key" in result.output and "revoke" in result.output
    assert "--public-url" in result.output


@pytest.mark.parametrize("in_thread", [False, True], ids=["subprocess", "thread"])
def test_running_on_a_kept_db_serves_with_its_kept_key(tmp_path: Path, in_thread: bool) -> None:
    db = tmp_path / "kept.db"
    with running(studies=5, db_path=db, in_thread=in_thread) as first:
        key = first.api_key
    records = key_records(db)
    with running(db_path=db, in_thread=in_thread) as second:
        assert second.api_key == key
        assert status(second.base_url, key) == 200
    assert key_records(db) == records
    with running(db_path=db, api_key="sk-explicit", in_thread=in_thread) as third:
        assert third.api_key == "sk-explicit" and status(third.base_url, "sk-explicit") == 200


@pytest.mark.parametrize(
    ("where", "reason"),
    [("missing/x.db", Reason.NO_SUCH_FOLDER), ("", Reason.IS_A_FOLDER)],
    ids=["missing folder", "a folder"],
)
def test_running_on_a_db_it_cannot_create_is_a_validation_error(tmp_path: Path, where: str, reason: Reason) -> None:
    path = tmp_path / where if where else tmp_path
    with pytest.raises(ValidationError) as raised, running(db_path=path):
        pytest.fail("the body must not run")
    cases = raised.value.failure_cases
    assert cases["field"].tolist() == ["db_path"] and cases["reason"].tolist() == [reason]
