"""The client's retry policy under the sandbox's real faults, and the rare wire cases the
sandbox cannot produce (MockTransport, unit level)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import orjson
import pytest

from viewerkit import ApiConnectionError, ApiError, Client, Conflict, ServerError
from viewerkit.client import retry_delay
from viewerkit.sandbox.server import Sandbox


class StatusLog(httpx.HTTPTransport):
    """A real transport that records every answer's status (or the transport error)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.outcomes: list[int | str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = super().handle_request(request)
            response.read()
        except httpx.TransportError as exc:
            with self.lock:
                self.outcomes.append(type(exc).__name__)
            raise
        with self.lock:
            self.outcomes.append(response.status_code)
        return response


@contextlib.contextmanager
def faulty_client(server: Sandbox, transport: httpx.BaseTransport) -> Iterator[Client]:
    """A client that retries patiently, over ``transport`` (closed afterwards)."""
    with httpx.Client(transport=transport) as http, Client(
        api_key=server.api_key, base_url=server.base_url, http_client=http, max_retries=12
    ) as client:
        yield client


def test_listing_under_failures_equals_the_fault_free_listing(make_sandbox: Any) -> None:
    server: Sandbox = make_sandbox(studies=400, seed=11)
    with Client(api_key=server.api_key, base_url=server.base_url) as clean:
        expected = list(clean.iter_studies(limit=50))
    server.set_faults(fail_rate=0.3)
    log = StatusLog()
    with faulty_client(server, log) as c:
        got = list(c.iter_studies(limit=50))
    assert got == expected
    failures = [o for o in log.outcomes if o != 200]
    assert failures, "the fault knob should have failed some requests"


def test_retried_writes_apply_exactly_once(make_sandbox: Any) -> None:
    server: Sandbox = make_sandbox(studies=40, seed=12)
    with Client(api_key=server.api_key, base_url=server.base_url) as clean:
        studies = [s for s in clean.iter_studies() if not s["isCancelled"]][:20]
    server.set_faults(fail_rate=0.4)
    log = StatusLog()
    with faulty_client(server, log) as c, ThreadPoolExecutor(8) as pool:
        updates = pool.map(
            lambda i: c.update_study(studies[i]["studyId"], study_description=f"Reread {i}"),
            range(10),
        )
        cancels = pool.map(lambda s: c.cancel_study(s["studyId"]), studies[10:])
        creates = pool.map(
            lambda i: c.create_study(
                severity="stat", study_description="CT", study_instance_uid=f"1.2.77.{i}"
            ),
            range(10),
        )
        assert [u["studyDescription"] for u in updates] == [f"Reread {i}" for i in range(10)]
        assert all(result.success for result in cancels)
        created = list(creates)
    server.set_faults(fail_rate=0.0)
    assert any(o != 200 and o != 201 for o in log.outcomes)
    audit = server.audit()
    ops = Counter((row["study_id"], row["operation"]) for row in audit)
    for study in studies[:10]:
        assert ops[(study["studyId"], "update")] == 1
    for study in studies[10:]:
        assert ops[(study["studyId"], "cancel")] == 1
    assert [s["studyInstanceUid"] for s in created] == [f"1.2.77.{i}" for i in range(10)]
    assert sum(1 for row in audit if row["operation"] == "create") == 10
    with Client(api_key=server.api_key, base_url=server.base_url) as clean:
        for study in created:
            assert clean.retrieve_study_by_uid(study["studyInstanceUid"]) == study


def test_429_with_retry_after_is_waited_out_and_retried(make_sandbox: Any) -> None:
    server: Sandbox = make_sandbox(studies=10, rate_limit=4)
    log = StatusLog()
    with faulty_client(server, log) as c:
        for _ in range(10):
            assert len(c.list_studies(limit=2)["studies"]) == 2
    assert 429 in log.outcomes
    assert log.outcomes.count(200) == 10


def test_unreachable_server_is_a_connection_error_after_the_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Client(
        api_key="sk-unreachable-key", base_url=f"http://127.0.0.1:{port}", max_retries=1
    ) as c, pytest.raises(ApiConnectionError) as caught:
        c.retrieve_study("stu_" + "1" * 32)
    message = str(caught.value)
    assert message.startswith("retrieve_study stu_" + "1" * 32)
    assert "after 2 tries" in message
    assert "sk-unreachable-key" not in message


def test_server_errors_give_up_after_max_retries(make_sandbox: Any) -> None:
    server: Sandbox = make_sandbox(studies=5, fail_rate=1.0)
    log = StatusLog()
    with httpx.Client(transport=log) as http, Client(
        api_key=server.api_key, base_url=server.base_url, http_client=http, max_retries=2
    ) as c, pytest.raises((ServerError, ApiConnectionError), match="list_studies"):
        c.list_studies(limit=1)
    assert len(log.outcomes) == 3


# --- wire cases the sandbox cannot produce ------------------------------------------------


def test_retry_after_as_an_http_date_is_honoured_and_capped() -> None:
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    delay = retry_delay(0, response=httpx.Response(503, headers={"Retry-After": soon}))
    assert delay is not None and 25 <= delay <= 30
    late = format_datetime(datetime.now(timezone.utc) + timedelta(hours=2), usegmt=True)
    assert retry_delay(0, response=httpx.Response(429, headers={"Retry-After": late})) == 60.0


def test_retry_after_ms_wins_over_retry_after() -> None:
    response = httpx.Response(429, headers={"retry-after-ms": "250", "Retry-After": "9"})
    assert retry_delay(3, response=response) == 0.25


def test_backoff_grows_and_is_capped_without_a_hint() -> None:
    delays = [retry_delay(n, response=httpx.Response(500)) for n in range(8)]
    assert all(d is not None for d in delays)
    assert delays[0] is not None and delays[0] <= 0.5
    assert delays[-1] is not None and 6.0 <= delays[-1] <= 8.0
    assert retry_delay(0, response=httpx.Response(408)) is not None
    for status in (400, 401, 404, 409, 422):
        assert retry_delay(0, response=httpx.Response(status)) is None


def test_create_whose_answer_was_lost_resolves_to_the_existing_study() -> None:
    study = {"studyId": "stu_" + "c" * 32, "studyInstanceUid": "1.2.3", "severity": "stat"}
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "POST" and len(seen) == 1:
            return httpx.Response(503, headers={"retry-after-ms": "1"})  # applied, answer lost
        if request.method == "POST":
            return httpx.Response(
                409, json={"error": {"type": "conflict", "message": "exists", "param": "studyInstanceUid"}}
            )
        return httpx.Response(200, content=orjson.dumps(study))

    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http
    ) as c:
        assert c.create_study(severity="stat", study_description="CT", study_instance_uid="1.2.3") == study
    assert seen == [
        "POST /v1/viewer/studies",
        "POST /v1/viewer/studies",
        "GET /v1/viewer/studies/by-uid/1.2.3",
    ]


def test_cancel_answered_409_is_a_no_op_not_a_failure() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": {"type": "conflict", "message": "already cancelled"}})

    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http
    ) as c:
        result = c.cancel_study("stu_" + "d" * 32)
        assert (result.success, result.changed) == (True, False)
        with pytest.raises(Conflict):
            c.create_study(severity="stat", study_description="CT", study_instance_uid="1.2.3")


@pytest.mark.parametrize(
    "first",
    [
        httpx.Response(429, headers={"retry-after-ms": "1"}),
        httpx.Response(408, headers={"retry-after-ms": "1"}),
        httpx.ConnectError("refused"),
    ],
    ids=["429", "408", "connect-refused"],
)
def test_create_409_after_a_try_that_applied_nothing_is_a_conflict(
    first: httpx.Response | Exception,
) -> None:
    # The UID already belongs to another study; the first try was never processed, so the
    # 409 is a real conflict, not our own earlier create.
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if len(seen) == 1:
            if isinstance(first, Exception):
                raise first
            return first
        if request.method == "POST":
            return httpx.Response(409, json={"error": {"type": "conflict", "message": "exists"}})
        return httpx.Response(200, content=orjson.dumps({"studyId": "stu_" + "e" * 32}))

    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http
    ) as c, pytest.raises(Conflict, match=r"create_study 1\.2\.3: 409"):
        c.create_study(severity="stat", study_description="CT", study_instance_uid="1.2.3")
    assert seen == ["POST /v1/viewer/studies"] * 2  # never resolved to the other study


def test_create_whose_connection_dropped_mid_request_resolves_to_the_existing_study() -> None:
    study = {"studyId": "stu_" + "f" * 32, "studyInstanceUid": "1.2.4", "severity": "stat"}
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if len(seen) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if request.method == "POST":
            return httpx.Response(409, json={"error": {"type": "conflict", "message": "exists"}})
        return httpx.Response(200, content=orjson.dumps(study))

    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http
    ) as c:
        assert c.create_study(severity="stat", study_description="CT", study_instance_uid="1.2.4") == study
    assert seen[-1] == "GET /v1/viewer/studies/by-uid/1.2.4"


@pytest.mark.parametrize(
    "headers",
    [{"Retry-After": "nan"}, {"retry-after-ms": "nan"}, {"retry-after-ms": "NaN", "Retry-After": "2"}],
)
def test_a_nan_retry_after_falls_back_to_a_finite_delay(headers: dict[str, str]) -> None:
    delay = retry_delay(0, response=httpx.Response(429, headers=headers))
    assert delay is not None and 0.0 <= delay <= 2.0
    calls = 0

    def server(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, headers=headers)
        return httpx.Response(200, json={"studies": [], "cursor": None, "hasMore": False})

    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http
    ) as c:
        assert c.list_studies()["studies"] == []  # time.sleep(nan) would raise ValueError
    assert calls == 2


def test_iter_studies_refuses_a_page_that_has_more_but_no_cursor() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        study = {"studyId": "stu_" + "a" * 32}
        return httpx.Response(200, json={"studies": [study], "cursor": None, "hasMore": True})

    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http
    ) as c, pytest.raises(ApiError, match="^list_studies: a page said hasMore but gave no cursor"):
        list(c.iter_studies())
