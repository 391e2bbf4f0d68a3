"""`make notebooks` opens JupyterLab on notebooks/, on 127.0.0.1: the command it runs
(.ci/jupyterlab.sh) is started here as the Makefile starts it, answers with its token on
loopback, and stops cleanly."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "jupyterlab.sh"
URL = re.compile(r"(http://127\.0\.0\.1:(\d+))/lab\?token=([0-9a-f]+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_makefile_runs_the_shared_command_with_the_notebooks_extra() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^notebooks: (.+)\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe is not None
    assert recipe.group(2) == "sh .ci/jupyterlab.sh $(PY) $(NOTEBOOKS_PORT)"
    assert "$(NOTEBOOKS_STAMP)" in recipe.group(1)
    assert "-e '.[sandbox,notebooks]'" in makefile
    assert re.search(r"^lab: notebooks$", makefile, re.MULTILINE)


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """The command `make notebooks` runs, with this Python; its own Jupyter folders."""
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "IPYTHONDIR": str(tmp_path / "ipython")}
    server = subprocess.Popen(
        ["sh", str(SCRIPT), sys.executable, str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        cwd=tmp_path,  # the script finds notebooks/ from its own place
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        yield server, lines
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=30)
        assert server.stdout is not None
        server.stdout.close()


def test_make_notebooks_serves_jupyterlab_on_loopback_with_its_token_and_stops_cleanly(
    jupyterlab: tuple[subprocess.Popen[str], queue.Queue[str]],
) -> None:
    server, lines = jupyterlab
    said: list[str] = []
    found = None
    deadline = time.monotonic() + 180  # a first start on a busy machine
    while found is None and time.monotonic() < deadline and server.poll() is None:
        try:
            said.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        found = URL.search(said[-1])
    assert found is not None, "".join(said)
    base, port, token = found.group(1), int(found.group(2)), found.group(3)
    assert "Serving notebooks from local directory: " + str(ROOT / "notebooks") in "".join(said)

    with httpx.Client(base_url=base, trust_env=False, timeout=30) as http:
        assert http.get("/api/status").status_code == 403  # the token is needed (before its cookie)
        status = http.get("/api/status", headers={"Authorization": f"token {token}"})
        assert status.status_code == 200 and "started" in status.json()
        lab = http.get("/lab", params={"token": token})
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        listed = http.get("/api/contents", headers={"Authorization": f"token {token}"}).json()
        names = {item["name"] for item in listed["content"]}
        assert {"01-fetch-and-explore.ipynb", "02-severity-turnaround-report.ipynb"} <= names
    # loopback only: the machine's other addresses do not answer on that port
    addresses = {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    other = [address for address in addresses if not address.startswith("127.")]
    for address in other:
        with socket.socket() as probe:
            probe.settimeout(2)
            assert probe.connect_ex((address, port)) != 0, address

    server.send_signal(signal.SIGTERM)  # what a service manager sends; Ctrl-C asks first
    assert server.wait(timeout=60) == 0
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "still listening after it stopped"
