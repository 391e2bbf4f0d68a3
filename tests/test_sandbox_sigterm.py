"""SIGTERM ends ``running()`` as Ctrl-C does: the server stops and the temporary folder is
removed; the handler exists only while a ``running()`` of the main thread is open, and the
one before it comes back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from viewerkit.sandbox.server import Sandbox, running

SCRIPT = """
import os, sys, time
from viewerkit.sandbox import running
with running(studies=5, in_thread={in_thread}) as sandbox:
    print(sandbox.pid, os.path.dirname(sandbox.db_path), sandbox.base_url, flush=True)
    time.sleep(120)
print("not reached", flush=True)
"""


@pytest.fixture(autouse=True)
def default_sigterm() -> Iterator[None]:
    """Each test starts with SIGTERM's default handler, whatever the test runner set."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("in_thread", [False, True], ids=["subprocess", "thread"])
def test_sigterm_stops_the_server_and_removes_the_temp_folder(tmp_path: Path, in_thread: bool) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(in_thread=in_thread)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    pid_text, workdir, base_url = process.stdout.readline().split()
    assert Path(workdir).parent == tmp_path and Path(workdir).exists()
    assert httpx.get(base_url + "/_sandbox/health", trust_env=False).status_code == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    rest = process.stdout.read()
    process.stdout.close()
    assert "not reached" not in rest
    assert "Traceback" not in process.stderr.read()
    process.stderr.close()
    assert not Path(workdir).exists()  # removed by running() itself, before the exit
    assert list(tmp_path.iterdir()) == []
    if not in_thread:
        # the server process was stopped and reaped, not left for the parent watch
        assert not Path(f"/proc/{int(pid_text)}").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(base_url + "/_sandbox/health", timeout=2.0, trust_env=False)


def test_sigterm_inside_the_block_unwinds_it_as_system_exit_143() -> None:
    with pytest.raises(SystemExit) as raised, running(studies=0, in_thread=True) as server:
        workdir = Path(server.db_path).parent
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("SIGTERM must unwind the block")
    assert raised.value.code == 128 + signal.SIGTERM
    assert not workdir.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_sigterm_during_cleanup_waits_for_the_cleanup(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = Sandbox.stop
    stopped: list[bool] = []

    def stop_hit_by_sigterm(self: Sandbox) -> None:
        signal.raise_signal(signal.SIGTERM)  # lands while the server is being stopped
        stop(self)
        stopped.append(True)

    monkeypatch.setattr(Sandbox, "stop", stop_hit_by_sigterm)
    with pytest.raises(SystemExit) as raised, running(studies=0, in_thread=True) as server:
        workdir = Path(server.db_path).parent
    assert raised.value.code == 128 + signal.SIGTERM
    assert stopped == [True] and not workdir.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_the_previous_handler_comes_back_after_nested_sandboxes() -> None:
    with running(studies=0, in_thread=True), running(studies=0, in_thread=True) as inner:
        ours = signal.getsignal(signal.SIGTERM)
        assert callable(ours)
        inner_dir = Path(inner.db_path).parent
    assert not inner_dir.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_handler_of_the_program_is_left_alone() -> None:
    calls: list[int] = []

    def own(signum: int, frame: Any) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with running(studies=0, in_thread=True) as server:
            assert signal.getsignal(signal.SIGTERM) is own
            signal.raise_signal(signal.SIGTERM)
            assert httpx.get(server.base_url + "/_sandbox/health", trust_env=False).status_code == 200
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_running_from_another_thread_installs_no_handler() -> None:
    seen: dict[str, Any] = {}

    def in_worker() -> None:
        with running(studies=0, in_thread=True) as server:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            seen["status"] = httpx.get(server.base_url + "/_sandbox/health", trust_env=False).status_code
            seen["workdir"] = Path(server.db_path).parent

    worker = threading.Thread(target=in_worker)
    worker.start()
    worker.join(timeout=60)
    assert seen["status"] == 200 and seen["handler"] is signal.SIG_DFL
    assert not seen["workdir"].exists()


def test_an_ignored_sigterm_stays_ignored(make_sandbox: Callable[..., Sandbox]) -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        server = make_sandbox(studies=0, in_thread=True)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        signal.raise_signal(signal.SIGTERM)
        assert httpx.get(server.base_url + "/_sandbox/health", trust_env=False).status_code == 200
    finally:
        signal.signal(signal.SIGTERM, previous)
