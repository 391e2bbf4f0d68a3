"""Running the sandbox: restarts keep every study, kill is a crash, the key stays secret, the
CLI serves and says where."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from raw_api import list_all_raw

from viewerkit.sandbox.server import API_KEY_ENV, Sandbox, running


def create(server: Sandbox) -> dict[str, Any]:
    body = {"severity": "stat", "studyDescription": "CT Head", "studyInstanceUid": "2.25." + str(uuid.uuid4().int)}
    response = httpx.post(
        server.base_url + "/v1/viewer/studies",
        json=body,
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    assert response.status_code == 201
    study: dict[str, Any] = response.json()
    return study


def test_restart_on_the_same_db_keeps_every_study_and_cursor(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=300, seed=4)
    created = create(server)
    before = list_all_raw(server)
    assert len(before) == 301 and created in before
    with httpx.Client(headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        cursor = http.get(server.base_url + "/v1/viewer/studies", params={"limit": 10}).json()["cursor"]
        server.restart()
        after = list_all_raw(server)
        assert after == before
        # a cursor issued before the restart still works: the signing secret is in the db
        page = http.get(server.base_url + "/v1/viewer/studies", params={"limit": 10, "cursor": cursor})
        assert [s["studyId"] for s in page.json()["studies"]] == [s["studyId"] for s in before[10:20]]


def test_a_killed_server_restarts_with_every_committed_write(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=50, seed=4)
    created = [create(server) for _ in range(5)]
    server.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.base_url + "/_sandbox/health", timeout=2.0)
    server.restart()
    ids = {s["studyId"] for s in list_all_raw(server)}
    assert len(ids) == 55 and {s["studyId"] for s in created} <= ids
    assert [r["operation"] for r in server.audit()] == ["create"] * 5


def test_running_on_an_existing_db_does_not_reseed_it(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.db"
    with running(studies=40, seed=1, db_path=db) as first:
        studies = list_all_raw(first)
        create(first)
    assert db.exists()
    with running(studies=40, seed=2, db_path=db, in_thread=True) as second:
        again = list_all_raw(second)
    assert len(again) == 41 and again[1:] == studies


def test_the_key_stays_out_of_repr_and_the_command_line(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=0)
    assert server.api_key.startswith("sk-sandbox-")
    assert server.api_key not in repr(server)
    assert server.pid is not None
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert server.api_key.encode() not in cmdline
    assert server.base_url.startswith("http://127.0.0.1:")


def test_the_temporary_db_is_removed_on_exit() -> None:
    with running(studies=0, in_thread=True) as server:
        path = Path(server.db_path)
        assert path.exists()
        assert httpx.get(server.base_url + "/_sandbox/health").status_code == 200
    assert not path.exists()


def test_cli_serve_prints_the_base_url_and_key_and_serves(tmp_path: Path) -> None:
    env = {**os.environ, API_KEY_ENV: "sk-cli-test"}
    process = subprocess.Popen(
        [sys.executable, "-m", "viewerkit.cli", "sandbox", "serve", "--studies", "20",
         "--port", "0", "--db", str(tmp_path / "cli.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        base_url = first.strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:")
        lines = [process.stdout.readline() for _ in range(3)]
        assert any("AVARA_API_KEY=sk-cli-test" in line for line in lines)
        response = httpx.get(
            base_url + "/v1/viewer/studies", headers={"Authorization": "Bearer sk-cli-test"}
        )
        assert response.status_code == 200 and len(response.json()["studies"]) == 20
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()


def test_cli_serve_prints_export_lines_a_shell_runs_as_they_are(tmp_path: Path) -> None:
    # the README says to run the two lines serve prints: a bare NAME=value would set a shell
    # variable the viewerkit commands never see, and a key with a space would break the line
    key = "sk-cli test's key"
    env = {**os.environ, API_KEY_ENV: key}
    process = subprocess.Popen(
        [sys.executable, "-m", "viewerkit.cli", "sandbox", "serve", "--studies", "5",
         "--port", "0", "--db", str(tmp_path / "export.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        lines = [process.stdout.readline().strip() for _ in range(3)]
        exports = [line for line in lines if line.startswith("export ")]
        assert [line.split("=", 1)[0] for line in exports] == ["export AVARA_BASE_URL", "export AVARA_API_KEY"]
        shown = subprocess.run(
            ["sh", "-c", "; ".join(exports) + '; sh -c \'printf "%s\\n%s" "$AVARA_BASE_URL" "$AVARA_API_KEY"\''],
            capture_output=True, text=True, check=True, env={"PATH": os.environ.get("PATH", "")},
        ).stdout
        assert shown.split("\n") == [base_url, key]  # exported: a child process sees both
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()


def test_cli_serve_documents_every_knob() -> None:
    from click.testing import CliRunner

    from viewerkit.sandbox.cli import sandbox

    result = CliRunner().invoke(sandbox, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--studies", "--seed", "--port", "--host", "--db", "--api-key",
                   "--latency-ms", "--fail-rate", "--rate-limit", "--live", "Example:"):
        assert option in result.output


def test_live_mode_keeps_changing_studies_while_serving(make_sandbox: Callable[..., Sandbox]) -> None:
    import time

    server = make_sandbox(studies=100, seed=3, live=20)
    first = len(server.audit())
    deadline = time.monotonic() + 30
    while len(server.audit()) <= first and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(server.audit()) > first
    assert {row["operation"] for row in server.audit()} <= {"create", "update", "cancel", "uncancel"}


def test_a_thread_sandbox_restarts_on_its_port_with_its_studies() -> None:
    with running(studies=30, seed=2, in_thread=True) as server:
        created = create(server)
        port = server.port
        server.restart()
        assert server.port == port
        assert created in list_all_raw(server)
        with pytest.raises(RuntimeError):
            server.kill()


def test_cli_serve_without_the_sandbox_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from viewerkit.sandbox.cli import sandbox

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(sandbox, ["serve", "--studies", "0"])
    assert result.exit_code != 0
    assert "pip install 'viewerkit[sandbox]'" in result.output


def test_a_subprocess_server_stops_when_the_process_that_started_it_dies(tmp_path: Path) -> None:
    import time

    script = (
        "import os\n"
        "from viewerkit.sandbox import running\n"
        "with running(studies=0) as sandbox:\n"
        "    print(sandbox.pid, os.path.dirname(sandbox.db_path), flush=True)\n"
        "    os._exit(0)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the dying parent's temporary directory
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    pid_text, workdir = done.stdout.split()
    pid = int(pid_text)
    assert Path(workdir).parent == tmp_path
    deadline = time.monotonic() + 30
    while (Path(f"/proc/{pid}").exists() or Path(workdir).exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists()
    # the server removed the directory (database, log) its dead parent could not
    assert not Path(workdir).exists()


def test_concurrent_writers_each_apply_exactly_once(make_sandbox: Callable[..., Sandbox]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = make_sandbox(studies=20, seed=6)

    def work(worker: int) -> list[str]:
        ids = []
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}
        ) as http:
            for _ in range(8):
                body = {"severity": "normal", "studyDescription": f"XR worker {worker}",
                        "studyInstanceUid": "2.25." + str(uuid.uuid4().int)}
                created = http.post("/v1/viewer/studies", json=body)
                assert created.status_code == 201
                study_id = created.json()["studyId"]
                changed = http.patch(f"/v1/viewer/studies/{study_id}", json={"severity": "stat"})
                assert changed.status_code == 200
                assert http.post("/v1/viewer/studies/cancel", json={"studyId": study_id}).json() == {"success": True}
                assert http.get("/v1/viewer/studies", params={"limit": 100}).status_code == 200
                ids.append(study_id)
        return ids

    with ThreadPoolExecutor(8) as pool:
        ids = [i for batch in pool.map(work, range(8)) for i in batch]
    assert len(set(ids)) == 64
    operations = [(row["study_id"], row["operation"]) for row in server.audit()]
    assert sorted(operations) == sorted((i, op) for i in ids for op in ("create", "update", "cancel"))
    assert len(list_all_raw(server)) == 84


@pytest.mark.parametrize("in_thread", [False, True])
def test_ctrl_c_while_the_server_starts_leaves_no_server_and_no_temp_dir(
    monkeypatch: pytest.MonkeyPatch, in_thread: bool
) -> None:
    import time

    started: dict[str, Any] = {}
    ready = Sandbox._wait_ready

    def interrupted(self: Sandbox, timeout: float) -> None:
        ready(self, timeout)  # the server is up and answering when Ctrl-C lands
        started.update(pid=self.pid, thread=self._thread, workdir=self._workdir, url=self.base_url)
        raise KeyboardInterrupt

    monkeypatch.setattr(Sandbox, "_wait_ready", interrupted)
    with pytest.raises(KeyboardInterrupt), running(studies=0, in_thread=in_thread):
        pytest.fail("the body must not run")
    assert not Path(started["workdir"]).exists()
    if in_thread:
        assert not started["thread"].is_alive()
    else:
        pid = started["pid"]
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # reaped by stop(); never left for the parent watch to find
        assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(started["url"] + "/_sandbox/health", timeout=2.0)


def test_cli_serve_refuses_an_out_of_range_knob_before_touching_the_db(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from viewerkit.sandbox.cli import sandbox

    db = tmp_path / "never.db"
    result = CliRunner().invoke(
        sandbox, ["serve", "--studies", "0", "--port", "0", "--db", str(db), "--latency-ms", "700000"]
    )
    assert result.exit_code == 2, result.output
    assert "--latency-ms" in result.output
    assert not db.exists()
