"""A proxy in the environment (HTTP_PROXY and kin, as on many corporate machines) does not
reach the sandbox's own calls to itself: health while starting, faults, fail_next, the
request log and the audit."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from viewerkit.sandbox.server import running


@pytest.fixture
def closed_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every proxy variable points at a closed loopback port; nothing is exempt."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield url


@pytest.mark.parametrize("in_thread", [False, True], ids=["subprocess", "thread"])
def test_running_and_its_controls_ignore_a_proxy_in_the_environment(closed_proxy: str, in_thread: bool) -> None:
    with running(studies=50, seed=3, in_thread=in_thread) as sandbox:
        # the environment really is poisoned: a client that honours it connects to the closed
        # proxy port (refused), not to the server that is up
        with pytest.raises(httpx.ConnectError), httpx.Client(timeout=5.0) as honouring:
            honouring.get(sandbox.base_url + "/_sandbox/health")
        assert sandbox.set_faults(latency_ms=1)["latency_ms"] == 1
        assert sandbox.faults()["latency_ms"] == 1
        rule = sandbox.fail_next(1, method="GET", path="/v1/viewer/studies")
        assert rule["remaining"] == 1
        sandbox.clear_fail_next()
        assert sandbox.faults()["fail_next"] == []
        with httpx.Client(trust_env=False, headers={"Authorization": f"Bearer {sandbox.api_key}"}) as http:
            page = http.get(sandbox.base_url + "/v1/viewer/studies", params={"limit": 5})
            assert page.status_code == 200
            study_id = page.json()["studies"][0]["studyId"]
            assert http.post(sandbox.base_url + "/v1/viewer/studies/cancel",
                             json={"studyId": study_id}).status_code == 200
        assert [(r["method"], r["status"]) for r in sandbox.requests()] == [("GET", 200), ("POST", 200)]
        assert [r["operation"] for r in sandbox.audit(study_id)] == ["cancel"]
        # a restart waits for health again
        sandbox.restart()
        assert sandbox.faults()["fail_next"] == []
