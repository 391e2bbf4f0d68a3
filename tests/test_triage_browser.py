"""The triage board in a real browser (issue 10): Voila serves notebooks/04-triage.ipynb on
127.0.0.1 against a sandbox (the notebook's hosted-API path: AVARA_API_KEY set, nothing
applied by the notebook itself), Debian's chromium opens it through Playwright (never a
browser download); the notebook has filtered to the overdue stat studies, and the test
clears the selection, ticks a row, chooses an action and its value in the dropdowns, previews,
confirms, checks the change on the sandbox, clicks Undo and checks again. A screenshot is saved in the test's folder."""

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
    """A world big enough to hold a few long-overdue stat studies (the notebook filters to them)."""
    sandbox: Sandbox = make_sandbox(studies=20000, seed=4)
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
            # Voila shows cells as they run: wait for the last output, so that no cell of the
            # notebook (it filters to the overdue stat studies, selects, opens one) races the clicks
            page.wait_for_selector("text=still there after its time", timeout=120_000)
            rows = page.locator(".vk-row")
            assert rows.count() >= 1
            assert all("overdue" in rows.nth(n).inner_text() for n in range(rows.count()))
            page.locator(".vk-clear").click()
            page.wait_for_function("document.querySelector('.vk-counts').innerText.includes('0 selected')")
            first = rows.nth(0).inner_text()
            found = re.search(r"stu_[0-9a-f]{32}", first)
            assert found, first
            study_id = found.group(0)
            rows.nth(0).locator(".vk-row-check input").check()
            page.wait_for_function("document.querySelector('.vk-counts').innerText.includes('1 selected')")
            page.locator(".vk-action select").select_option("severity")
            page.wait_for_selector(".vk-severity-value select")
            page.locator(".vk-severity-value select").select_option("normal")
            page.locator(".vk-preview").click()
            page.wait_for_function("document.querySelector('.vk-preview-area').innerText.includes('update 1')",
                                   timeout=60_000)
            page.locator(".vk-confirm").click()
            page.wait_for_function("document.querySelector('.vk-result').innerText.includes('applied 1')",
                                   timeout=60_000)
            page.screenshot(path=str(tmp_path / "board.png"), full_page=True)
            with Client(api_key=server.api_key, base_url=server.base_url) as client:
                assert client.retrieve_study(study_id)["severity"] == "normal"
                changed = [e for e in server.audit(study_id=study_id, outcome="changed")
                           if e["operation"] == "update"]
                assert len(changed) == 1
                page.wait_for_function("!document.querySelector('.vk-undo button, button.vk-undo').disabled")
                page.locator(".vk-undo").click()
                page.wait_for_function("document.querySelector('.vk-result').innerText.includes('Undone')",
                                       timeout=60_000)
                assert client.retrieve_study(study_id)["severity"] == "stat"
                assert len([e for e in server.audit(study_id=study_id, outcome="changed")
                            if e["operation"] == "update"]) == 2
            assert (tmp_path / "board.png").stat().st_size > 10_000
        finally:
            browser.close()
