"""The fault knobs: added latency, 5xx answers and dropped connections (some after the write
was committed), at random or armed for the next N matching requests, a rate limit answering
429 with Retry-After, and the log of every API request received."""

from __future__ import annotations

import threading
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
    audit = server.audit(outcome="changed")  # a resend after a lost answer is a noop or a 409
    per_study = Counter((row["study_id"], row["operation"]) for row in audit)
    for uid in uids:
        for operation in ("create", "update", "cancel"):
            assert per_study[(ids[uid], operation)] == 1
    assert all(row["changed_fields"] == ["severity"] for row in audit if row["operation"] == "update")


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
        assert http.get("/_sandbox/faults").json() == {
            "latency_ms": 0, "fail_rate": 0, "rate_limit": None, "fail_next": []
        }


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
    server = make_sandbox(studies=0)
    server.fail_next(5, how="drop", when="before")
    server.fail_next(5, how="drop", when="after")
    with client(server) as http:
        seen = Counter(outcome(http, "GET", "/v1/viewer/studies") for _ in range(12))
    assert seen == {"dropped": 10, 200: 2}
    log = server._server_log()
    assert "Traceback" not in log and "_Dropped" not in log, log[-2000:]


# -- fail_next: deterministic faults ---------------------------------------------------------

STUDIES = "/v1/viewer/studies"


def test_fail_next_fails_exactly_the_next_n_matching_requests(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=5)
    with client(server) as http:
        study_id = http.get(STUDIES).json()["studies"][0]["studyId"]
        rule = server.fail_next(3, method="get", path=STUDIES, how="500")
        assert (rule["method"], rule["remaining"], rule["struck"]) == ("GET", 3, 0)
        seen = [
            outcome(http, "GET", STUDIES, params={"limit": 1}),
            outcome(http, "GET", f"{STUDIES}/{study_id}"),  # another path: untouched
            outcome(http, "POST", f"{STUDIES}/cancel", json={}),  # another method: untouched
            outcome(http, "GET", STUDIES, params={"limit": 1}),
            outcome(http, "GET", STUDIES, params={"limit": 1}),
            outcome(http, "GET", STUDIES, params={"limit": 1}),  # the 3 are used up
        ]
    assert seen == [500, 200, 400, 500, 500, 200]
    (armed,) = server.faults()["fail_next"]
    assert (armed["remaining"], armed["struck"]) == (0, 3)
    log = server.requests()
    assert [(r["method"], r["status"]) for r in log] == [
        ("GET", 200), ("GET", 500), ("GET", 200), ("POST", 400), ("GET", 500), ("GET", 500),
        ("GET", 200),
    ]
    struck = [r for r in log if r["fault"] is not None]
    assert [r["seq"] for r in struck] == [2, 5, 6]
    assert all(
        r["fault"] == {"when": "before", "how": "500", "source": "fail_next"} and r["handled"] is None
        for r in struck
    )


@pytest.mark.parametrize("how", ["500", "503", "drop"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_fail_next_before_applies_nothing_and_after_commits_and_loses_the_answer(
    make_sandbox: Callable[..., Sandbox], when: str, how: str
) -> None:
    server = make_sandbox(studies=0)
    server.fail_next(1, method="POST", path=STUDIES, when=when, how=how)
    body = {"severity": "stat", "studyDescription": "CT Head", "studyInstanceUid": "1.2.840.7"}
    with client(server) as http:
        first = outcome(http, "POST", STUDIES, json=body)
        applied = [row["operation"] for row in server.audit(outcome="changed")]
        second = outcome(http, "POST", STUDIES, json=body)
    assert first == ("dropped" if how == "drop" else int(how))
    if when == "before":
        assert applied == [] and second == 201
    else:
        assert applied == ["create"] and second == 409  # the lost answer's create is there
    log = server.requests()
    assert [r["status"] for r in log] == [first, second]
    assert log[0]["fault"] == {"when": when, "how": how, "source": "fail_next"}
    assert log[0]["handled"] == (201 if when == "after" else None)
    assert log[1]["fault"] is None and log[1]["handled"] == second
    assert [row["operation"] for row in server.audit(outcome="changed")] == ["create"]
    # one entry per request handled: a request failed before handling has none
    entries = [(r["outcome"], r["status"], r["fault"], r["request"]) for r in server.audit()]
    if when == "before":
        assert entries == [("changed", 201, None, 2)]
    else:
        assert entries == [("changed", 201, log[0]["fault"], 1), ("refused", 409, None, 2)]


def test_fail_next_takes_path_patterns_and_strikes_rules_in_arming_order(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=6, seed=4)
    server.fail_next(2, method="PATCH", path=f"{STUDIES}/*", how="503")
    server.fail_next(1, method="PATCH", how="500")
    with client(server) as http:
        ids = [s["studyId"] for s in http.get(STUDIES).json()["studies"]]
        seen = [
            outcome(http, "PATCH", f"{STUDIES}/{study_id}", json={"severity": "high"})
            for study_id in ids[:4]
        ]
    assert seen == [503, 503, 500, 200]
    assert [(r["remaining"], r["struck"]) for r in server.faults()["fail_next"]] == [(0, 2), (0, 1)]
    server.fail_next(5, how="drop")
    server.clear_fail_next()
    assert server.faults()["fail_next"] == []
    with client(server) as http:
        assert outcome(http, "GET", STUDIES) == 200


def test_fail_next_strikes_exactly_n_of_many_concurrent_requests(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=5)
    server.fail_next(25, method="GET", path=STUDIES, how="503")
    seen: list[str | int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def send_ten() -> None:
        with client(server) as http:
            start.wait()
            for _ in range(10):
                result = outcome(http, "GET", STUDIES, params={"limit": 1})
                with lock:
                    seen.append(result)

    threads = [threading.Thread(target=send_ten) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(seen) == {503: 25, 200: 55}
    assert server.faults()["fail_next"][0]["remaining"] == 0
    log = server.requests()
    assert len(log) == 80
    # the next N to arrive: every struck request came before every served one
    struck = [r["seq"] for r in log if r["fault"] is not None]
    assert struck == list(range(1, 26))


def test_a_request_refused_by_the_rate_limit_uses_up_no_armed_fault(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=0, rate_limit=0.5)
    with client(server) as http:
        assert outcome(http, "GET", STUDIES) == 200  # takes the one token
        server.fail_next(1, method="GET", how="503")
        assert outcome(http, "GET", STUDIES) == 429
        assert server.faults()["fail_next"][0]["remaining"] == 1
        server.set_faults(rate_limit=None)
        assert outcome(http, "GET", STUDIES) == 503
    log = server.requests()
    assert [(r["status"], r["handled"]) for r in log] == [(200, 200), (429, None), (503, None)]


def test_bad_fail_next_arguments_are_refused_naming_the_argument(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=0)
    for knobs, name in (
        ({"count": 0}, "count"),
        ({"count": True}, "count"),
        ({"count": "3"}, "count"),
        ({"count": 1, "method": "GET /"}, "method"),
        ({"count": 1, "path": "/_sandbox/faults"}, "path"),
        ({"count": 1, "path": "v1/viewer/studies"}, "path"),
        ({"count": 1, "when": "during"}, "when"),
        ({"count": 1, "how": "404"}, "how"),
    ):
        with pytest.raises(ValueError, match=f"^{name} "):
            server.fail_next(**knobs)
    with client(server) as http:
        missing = http.post("/_sandbox/faults/fail-next", json={"how": "503"})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "count"
        unknown = http.post("/_sandbox/faults/fail-next", json={"count": 1, "status": 503})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "status"
        assert http.get("/_sandbox/requests", params={"since": "-1"}).status_code == 400
    assert server.faults()["fail_next"] == []


def test_the_request_log_holds_api_requests_only_and_pages_by_seq(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=3)
    with client(server) as http:
        for _ in range(3):
            http.get(STUDIES, params={"limit": 1})
        http.get("/_sandbox/health")
        http.get("/_sandbox/audit")
        http.get("/v1/viewer/nothing")
    log = server.requests()
    assert [(r["seq"], r["path"], r["status"]) for r in log] == [
        (1, STUDIES, 200), (2, STUDIES, 200), (3, STUDIES, 200), (4, "/v1/viewer/nothing", 404)
    ]
    assert server.requests(since=2) == log[2:]
    assert server.requests(since=4) == []
    for method, path in (
        ("GET", "/_sandbox/requests"),
        ("POST", "/_sandbox/faults/fail-next"),
        ("DELETE", "/_sandbox/faults/fail-next"),
    ):
        assert httpx.request(method, server.base_url + path, json={"count": 1}).status_code == 401
