"""The triage board in a real browser (issue 10): Voila serves notebooks/04-triage.ipynb on
127.0.0.1 against a sandbox (the notebook's hosted-API path: AVARA_API_KEY set, nothing
applied by the notebook itself), Debian's chromium opens it through Playwright (never a
browser download), and the test ticks a row, previews, confirms, checks the change on the
sandbox, clicks Undo and checks again. A screenshot is saved in the test's folder."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from viewerkit import Client
from viewerkit.sandbox.server import Sandbox

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "04-triage.ipynb"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (`make browser` installs it where it can: as root)",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(make_sandbox: Any) -> Sandbox:
    sandbox: Sandbox = make_sandbox(studies=200, seed=31)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        for n in range(12):
            client.create_study(severity=("stat", "high", "normal")[n % 3], study_description=f"MR KNEE {n}",
                                study_instance_uid=f"1.2.840.777.{n + 1}")
    return sandbox


@pytest.fixture
def voila(server: Sandbox, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "AVARA_API_KEY": server.api_key, "AVARA_BASE_URL": server.base_url,
           "VIEWERKIT_CACHE": str(tmp_path / "cache")}
    env.pop("HTTP_PROXY", None)
    env.pop("http_proxy", None)
    log = open(tmp_path / "voila.log", "wb")  # noqa: SIM115 - closed after the process
    process = subprocess.Popen(
        [sys.executable, "-m", "voila", str(NOTEBOOK), f"--port={port}", "--no-browser",
         "--Voila.ip=127.0.0.1", "--VoilaConfiguration.file_allowlist=[]"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "voila/static/", timeout=2, trust_env=False).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_the_board_in_chromium_assigns_and_undoes(server: Sandbox, voila: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(voila, timeout=120_000)
            page.wait_for_selector(".vk-board .vk-row", timeout=120_000)
            rows = page.locator(".vk-row")
            assert rows.count() >= 1
            page.locator(".vk-clear").click()
            page.wait_for_function("document.querySelector('.vk-counts').innerText.includes('0 selected')")
            first = rows.nth(0).inner_text()
            found = re.search(r"stu_[0-9a-f]{32}", first)
            assert found, first
            study_id = found.group(0)
            rows.nth(0).locator(".vk-row-check input").check()
            page.wait_for_function("document.querySelector('.vk-counts').innerText.includes('1 selected')")
            page.locator(".vk-preview").click()
            page.wait_for_function("document.querySelector('.vk-preview-area').innerText.includes('Preview')",
                                   timeout=60_000)
            page.locator(".vk-confirm").click()
            page.wait_for_function("document.querySelector('.vk-result').innerText.includes('Result')",
                                   timeout=60_000)
            page.screenshot(path=str(tmp_path / "board.png"), full_page=True)
            with Client(api_key=server.api_key, base_url=server.base_url) as client:
                study = client.retrieve_study(study_id)
                assigned = (study["assignedTo"] or {}).get("userId")
                changed = [e for e in server.audit(study_id=study_id, outcome="changed")
                           if e["operation"] == "update"]
                assert len(changed) == 1 and assigned is not None
                page.locator(".vk-undo").click()
                page.wait_for_function("document.querySelector('.vk-result').innerText.includes('Undone')",
                                       timeout=60_000)
                after = client.retrieve_study(study_id)
                assert (after["assignedTo"] or {}).get("userId") != assigned
                assert len([e for e in server.audit(study_id=study_id, outcome="changed")
                            if e["operation"] == "update"]) == 2
            assert (tmp_path / "board.png").stat().st_size > 10_000
        finally:
            browser.close()
