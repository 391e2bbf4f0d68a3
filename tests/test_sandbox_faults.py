"""The fault knobs: added latency, 5xx answers and dropped connections (some after the write
was committed), and a rate limit answering 429 with Retry-After."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from viewerkit.sandbox.server import Sandbox
from viewerkit.sandbox.store import Store


def client(server: Sandbox, key: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {key or server.api_key}"},
        timeout=10.0,
    )


def outcome(http: httpx.Client, method: str, path: str, **kwargs: Any) -> str | int:
    """The status code, or ``"dropped"`` when the answer was cut off."""
    try:
        return http.request(method, path, **kwargs).status_code
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return "dropped"


def test_latency_is_added_to_every_api_request(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=5, latency_ms=250)
    with client(server) as http:
        started = time.perf_counter()
        assert http.get("/v1/viewer/studies", params={"limit": 1}).status_code == 200
        # a lower bound only: the sleep happens before the answer, whatever the load
        assert time.perf_counter() - started >= 0.25
        assert server.set_faults(latency_ms=0)["latency_ms"] == 0


def test_fail_rate_answers_500_503_and_drops_but_never_on_sandbox_routes(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=5, fail_rate=1.0)
    with client(server) as http:
        seen = Counter(outcome(http, "GET", "/v1/viewer/studies") for _ in range(60))
        assert set(seen) == {500, 503, "dropped"}
        error = http.get("/v1/viewer/studies")
        if error.status_code >= 500:
            assert error.json()["error"]["type"] == "api_error"
        assert http.get("/_sandbox/health").status_code == 200
        assert http.get("/_sandbox/audit").status_code == 200
        assert http.get("/_sandbox/faults").json()["fail_rate"] == 1.0
        server.set_faults(fail_rate=0.0)
        assert http.get("/v1/viewer/studies").status_code == 200


def test_writes_whose_answer_was_lost_are_applied_exactly_once(make_sandbox: Callable[..., Sandbox]) -> None:
    """A client that resends until it gets an answer creates each study once (409 after a
    lost answer) and each update applies once (a resent update changes nothing)."""
    server = make_sandbox(studies=20, fail_rate=0.5)
    uids = ["2.25." + str(uuid.uuid4().int) for _ in range(30)]
    lost_after_commit = 0
    with client(server) as http:
        for uid in uids:
            body = {"severity": "high", "studyDescription": "CT Head", "studyInstanceUid": uid}
            attempts: list[str | int] = []
            while not attempts or attempts[-1] not in (201, 409):
                attempts.append(outcome(http, "POST", "/v1/viewer/studies", json=body))
            if attempts[-1] == 409:
                lost_after_commit += 1
        server.set_faults(fail_rate=0.0)
        ids = {
            s["studyInstanceUid"]: s["studyId"]
            for s in http.get("/v1/viewer/studies", params={"limit": 100}).json()["studies"]
        }
        server.set_faults(fail_rate=0.5)
        for uid in uids:
            while outcome(http, "PATCH", f"/v1/viewer/studies/{ids[uid]}", json={"severity": "stat"}) != 200:
                pass
            while outcome(http, "POST", "/v1/viewer/studies/cancel", json={"studyInstanceUid": uid}) != 200:
                pass
    assert lost_after_commit > 0  # the fault really struck after the commit
    audit = server.audit()
    per_study = Counter((row["study_id"], row["operation"]) for row in audit)
    for uid in uids:
        for operation in ("create", "update", "cancel"):
            assert per_study[(ids[uid], operation)] == 1
    assert all(row["fields"] == {"severity": "stat"} for row in audit if row["operation"] == "update")


def test_rate_limit_answers_429_with_retry_after_per_key(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=5, rate_limit=2)
    store = Store(server.db_path)
    other_key = next(k for k in store.api_key_secrets() if k != server.api_key)
    store.close()
    with client(server) as http, client(server, other_key) as other:
        answers = [http.get("/v1/viewer/studies", params={"limit": 1}) for _ in range(8)]
        limited = [r for r in answers if r.status_code == 429]
        assert limited and answers[0].status_code == 200
        for response in limited:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["type"] == "rate_limit_error"
            assert "x-should-retry" not in response.headers
        # another key has its own budget; sandbox routes are never limited
        assert other.get("/v1/viewer/studies", params={"limit": 1}).status_code == 200
        assert all(http.get("/_sandbox/audit").status_code == 200 for _ in range(5))
        server.set_faults(rate_limit=None)
        assert all(
            http.get("/v1/viewer/studies", params={"limit": 1}).status_code == 200 for _ in range(8)
        )


def test_bad_fault_knobs_are_refused(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=0)
    for knobs in ({"fail_rate": 1.5}, {"latency_ms": -1}, {"rate_limit": 0}, {"fail_rate": "high"}, {"jitter": 1}):
        with pytest.raises(ValueError):
            server.set_faults(**knobs)
    with client(server) as http:
        assert http.get("/_sandbox/faults").json() == {"latency_ms": 0, "fail_rate": 0, "rate_limit": None}


def test_the_official_sdk_rides_out_faults_with_its_retries(make_sandbox: Callable[..., Sandbox]) -> None:
    import avara

    server = make_sandbox(studies=300, seed=9, fail_rate=0.25)
    with avara.Avara(base_url=server.base_url, api_key=server.api_key, max_retries=8) as sdk:
        ids = [s.study_id for s in sdk.viewer.studies.list(limit=100)]
    server.set_faults(fail_rate=0.0)
    assert len(ids) == len(set(ids)) == 300


def test_a_rate_limit_below_one_request_per_second_still_serves(
    make_sandbox: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_sandbox(studies=0, rate_limit=0.5)
    with client(server) as http:
        assert http.get("/v1/viewer/studies").status_code == 200
        limited = http.get("/v1/viewer/studies")
        assert limited.status_code == 429
        assert 1000 < int(limited.headers["retry-after-ms"]) <= 2000
    # and after the wait it names, the next request is served (on a clock the test drives)
    import types

    from viewerkit.sandbox import faults as faults_module

    clock = types.SimpleNamespace(now=100.0)
    monkeypatch.setattr(faults_module, "time", types.SimpleNamespace(monotonic=lambda: clock.now))
    knobs = faults_module.Faults(rate_limit=0.5)
    assert knobs.take_token("k") == 0.0
    wait = knobs.take_token("k")
    assert wait == pytest.approx(2.0)
    clock.now += wait
    assert knobs.take_token("k") == 0.0


def test_dropped_connections_leave_no_traceback_in_the_server_log(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=0, fail_rate=1.0, seed=1)
    with client(server) as http:
        seen = Counter(outcome(http, "GET", "/v1/viewer/studies") for _ in range(40))
    assert seen["dropped"] > 0
    server.set_faults(fail_rate=0.0)
    log = server._server_log()
    assert "Traceback" not in log and "_Dropped" not in log, log[-2000:]
