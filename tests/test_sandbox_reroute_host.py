"""Reroute URLs name the server's configured public base URL, never a host the request
brings (Host, X-Forwarded-Host / -Proto / -Port, Forwarded): a forged header cannot make
the sandbox sign a link to another host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from viewerkit.errors import Reason, ValidationError
from viewerkit.sandbox.app import create_app
from viewerkit.sandbox.server import API_KEY_ENV, Sandbox

FORGED = (
    {"Host": "evil.example:666"},
    {"Host": "evil.example"},
    {"Host": "127.0.0.1:1"},
    {"Host": "[::1]:80"},
    {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "666"},
    {"Forwarded": "host=evil.example;proto=https", "X-Forwarded-For": "203.0.113.9"},
)


def reroute(base_url: str, api_key: str, study_id: str, headers: dict[str, str]) -> str:
    response = httpx.post(
        base_url + "/v1/viewer/studies/reroute-url",
        json={"studyId": study_id},
        headers={"Authorization": f"Bearer {api_key}", **headers},
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return url


def first_study(base_url: str, api_key: str) -> str:
    page = httpx.get(base_url + "/v1/viewer/studies", params={"limit": 1},
                     headers={"Authorization": f"Bearer {api_key}"}, trust_env=False)
    study_id: str = page.json()["studies"][0]["studyId"]
    return study_id


@pytest.mark.parametrize("in_thread", [False, True], ids=["subprocess", "thread"])
def test_a_forged_host_header_does_not_change_the_reroute_url(
    make_sandbox: Callable[..., Sandbox], in_thread: bool
) -> None:
    server = make_sandbox(studies=5, seed=1, in_thread=in_thread)
    study_id = first_study(server.base_url, server.api_key)
    prefix = f"{server.base_url}/viewer/studies/{study_id}?token="
    plain = reroute(server.base_url, server.api_key, study_id, {})
    assert plain.startswith(prefix)
    for headers in FORGED:
        url = reroute(server.base_url, server.api_key, study_id, headers)
        assert url.startswith(prefix), (headers, url)
        assert "evil" not in url
        assert httpx.get(url, trust_env=False).status_code == 200  # the link works where it points


def test_a_thread_sandbox_restarted_on_another_port_links_to_the_new_port() -> None:
    import socket

    from viewerkit.sandbox.server import running

    with running(studies=3, seed=1, in_thread=True) as server:
        study_id = first_study(server.base_url, server.api_key)
        old_port = server.port
        server.stop()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", old_port))
            squatter.listen(1)
            server.start()
        assert server.port != old_port
        url = reroute(server.base_url, server.api_key, study_id, {"Host": f"127.0.0.1:{old_port}"})
        assert url.startswith(f"http://127.0.0.1:{server.port}/viewer/studies/{study_id}?token=")


@pytest.fixture
def served_with_public_url(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``viewerkit sandbox serve --public-url https://viewer.example/avara/``: (base URL, key)."""
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    process = subprocess.Popen(
        [sys.executable, "-m", "viewerkit.cli", "sandbox", "serve", "--studies", "5", "--port", "0",
         "--db", str(tmp_path / "public.db"), "--public-url", "https://viewer.example/avara/"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        base_url = lines[0].strip().rsplit(" ", 1)[-1]
        key = lines[2].strip().split("=", 1)[1]
        yield base_url, key
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()


def test_serve_links_to_its_public_url_whatever_the_host_header(served_with_public_url: tuple[str, str]) -> None:
    base_url, key = served_with_public_url
    study_id = first_study(base_url, key)
    for headers in ({}, *FORGED):
        url = reroute(base_url, key, study_id, headers)
        assert url.startswith(f"https://viewer.example/avara/viewer/studies/{study_id}?token="), url
    # the signed path and token are the server's own: they work on the server itself
    local = url.replace("https://viewer.example/avara", base_url)
    assert httpx.get(local, trust_env=False).status_code == 200


BAD_URLS = (
    "viewer.example",
    "ftp://viewer.example",
    "http://",
    "https://user:secret@viewer.example",
    "http://viewer.example/?a=1",
    "http://viewer.example/#top",
    "http://viewer.example:99999",
    "http://viewer.example:port",
    "http://viewer example",
    "http://viewer.example/\n",
    "",
    42,
)


@pytest.mark.parametrize("url", BAD_URLS, ids=[repr(u) for u in BAD_URLS])
def test_a_public_base_url_that_is_not_an_http_base_url_is_refused(url: object) -> None:
    db = os.path.join(tempfile.mkdtemp(), "never.db")
    with pytest.raises(ValidationError) as raised:
        create_app(db, public_base_url=url)  # type: ignore[arg-type]
    cases = raised.value.failure_cases
    assert cases["field"].tolist() == ["public_base_url"]
    assert cases["reason"].tolist() == [Reason.NOT_BASE_URL]
    assert not os.path.exists(db)  # refused before the database is touched


def test_serve_with_a_bad_public_url_is_a_one_line_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "viewerkit.cli", "sandbox", "serve", "--studies", "0", "--port", "0",
         "--db", str(tmp_path / "x.db"), "--public-url", "viewer.example"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["Error: --public-url 'viewer.example' is not an http:// or https:// URL"]
