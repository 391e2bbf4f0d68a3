"""The client's retry policy under the sandbox's real faults (random, and armed with
``fail_next`` so that a given path is certainly taken; the sandbox's request log shows it
was), and the rare wire cases the sandbox cannot produce (MockTransport, unit level)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import orjson
import pytest

from viewerkit import ApiConnectionError, ApiError, Client, Conflict, RateLimited, ServerError
from viewerkit.client import retry_delay
from viewerkit.sandbox.server import Sandbox

STUDIES = "/v1/viewer/studies"


@contextlib.contextmanager
def patient_client(server: Sandbox, max_retries: int = 12) -> Iterator[Client]:
    """A client of ``server`` that retries patiently."""
    with Client(api_key=server.api_key, base_url=server.base_url, max_retries=max_retries) as c:
        yield c


def answers(server: Sandbox, since: int = 0) -> list[tuple[str, str, int | str | None]]:
    """(method, path, status the client got) of the API requests the server received."""
    return [(r["method"], r["path"], r["status"]) for r in server.requests(since)]


def test_listing_under_failures_equals_the_fault_free_listing(make_sandbox: Any) -> None:
    server: Sandbox = make_sandbox(studies=400, seed=11)
    with Client(api_key=server.api_key, base_url=server.base_url) as clean:
        expected = list(clean.iter_studies(limit=50))
    seen = len(server.requests())
    server.set_faults(fail_rate=0.3)
    with patient_client(server) as c:
        got = list(c.iter_studies(limit=50))
    assert got == expected
    struck = [r for r in server.requests(since=seen) if r["fault"] is not None]
    assert struck, "the fault knob should have failed some requests"


def test_retried_writes_apply_exactly_once(make_sandbox: Any) -> None:
    server: Sandbox = make_sandbox(studies=40, seed=12)
    with Client(api_key=server.api_key, base_url=server.base_url) as clean:
        studies = [s for s in clean.iter_studies() if not s["isCancelled"]][:20]
    # random faults and, whatever they draw, lost answers after commit of each kind of write
    server.set_faults(fail_rate=0.4)
    server.fail_next(3, method="POST", path=STUDIES, when="after", how="503")
    server.fail_next(2, method="PATCH", path=f"{STUDIES}/*", when="after", how="drop")
    server.fail_next(2, method="POST", path=f"{STUDIES}/cancel", when="after", how="500")
    with patient_client(server) as c, ThreadPoolExecutor(8) as pool:
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
    assert [rule["struck"] for rule in server.faults()["fail_next"]] == [3, 2, 2]
    log = server.requests()
    # the creates whose answers were lost were resent, met 409 and resolved by their UID
    assert 409 in [r["status"] for r in log if (r["method"], r["path"]) == ("POST", STUDIES)]
    assert any(r["path"].startswith(f"{STUDIES}/by-uid/") for r in log)
    audit = server.audit(outcome="changed")  # the resends met a noop or a 409: no change
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


@pytest.mark.parametrize("how", ["500", "503", "drop"])
def test_create_whose_answer_was_lost_resolves_to_the_existing_study(
    make_sandbox: Any, how: str
) -> None:
    server: Sandbox = make_sandbox(studies=0)
    server.fail_next(1, method="POST", path=STUDIES, when="after", how=how)
    with patient_client(server, max_retries=2) as c:
        study = c.create_study(severity="stat", study_description="CT", study_instance_uid="1.2.3")
        assert c.retrieve_study_by_uid("1.2.3") == study
    lost = "dropped" if how == "drop" else int(how)
    assert answers(server)[:3] == [
        ("POST", STUDIES, lost),  # created, the answer lost
        ("POST", STUDIES, 409),  # the resend meets the study it created
        ("GET", f"{STUDIES}/by-uid/1.2.3", 200),  # and resolves to it
    ]
    assert server.requests()[0]["handled"] == 201
    assert [row["operation"] for row in server.audit(outcome="changed")] == ["create"]
    fault = {"when": "after", "how": how, "source": "fail_next"}
    assert [(r["outcome"], r["status"], r["fault"]) for r in server.audit()][:2] == [
        ("changed", 201, fault), ("refused", 409, None)
    ]


@pytest.mark.parametrize("how", ["500", "503", "drop"])
def test_create_whose_first_try_failed_before_commit_is_created_by_the_retry(
    make_sandbox: Any, how: str
) -> None:
    server: Sandbox = make_sandbox(studies=0)
    server.fail_next(1, method="POST", path=STUDIES, when="before", how=how)
    with patient_client(server, max_retries=2) as c:
        study = c.create_study(severity="stat", study_description="CT", study_instance_uid="1.2.3")
    assert study["studyInstanceUid"] == "1.2.3"
    lost = "dropped" if how == "drop" else int(how)
    assert answers(server) == [("POST", STUDIES, lost), ("POST", STUDIES, 201)]
    assert [row["operation"] for row in server.audit()] == ["create"]


def test_create_409_after_a_429_is_a_conflict_not_the_other_study(make_sandbox: Any) -> None:
    # A 429 says the try was not processed, so the 409 of the retry is a real conflict: the
    # UID belongs to another study, which must not be returned as this create's result.
    server: Sandbox = make_sandbox(studies=3, seed=2)
    with patient_client(server) as c:
        taken = c.list_studies(limit=1)["studies"][0]["studyInstanceUid"]
        server.set_faults(rate_limit=0.5)
        c.list_studies(limit=1)  # takes the one token: the create meets 429 and waits ~2 s
        seen = len(server.requests())
        with pytest.raises(Conflict, match=rf"^create_study {taken}: 409"):
            c.create_study(severity="stat", study_description="CT", study_instance_uid=taken)
    assert answers(server, since=seen) == [("POST", STUDIES, 429), ("POST", STUDIES, 409)]
    assert server.audit(outcome="changed") == []
    # the 429 was not handled: only the 409 is in the audit
    assert [(r["outcome"], r["status"]) for r in server.audit()] == [("refused", 409)]


def test_429_with_retry_after_is_waited_out_and_retried(make_sandbox: Any) -> None:
    server: Sandbox = make_sandbox(studies=10, rate_limit=4)
    with patient_client(server) as c:
        for _ in range(10):
            assert len(c.list_studies(limit=2)["studies"]) == 2
    statuses = [status for _, _, status in answers(server)]
    assert 429 in statuses
    assert statuses.count(200) == 10
    assert set(statuses) == {200, 429}


@pytest.mark.parametrize(
    ("how", "error"),
    [("500", ServerError), ("503", ServerError), ("drop", ApiConnectionError)],
)
def test_server_errors_give_up_after_max_retries(
    make_sandbox: Any, how: str, error: type[ApiError]
) -> None:
    server: Sandbox = make_sandbox(studies=5)
    server.fail_next(3, method="GET", path=STUDIES, how=how)
    with patient_client(server, max_retries=2) as c:
        with pytest.raises(error, match="^list_studies: .*after 3 tries"):
            c.list_studies(limit=1)
        assert server.faults()["fail_next"][0]["remaining"] == 0
        assert len(server.requests()) == 3
        assert c.list_studies(limit=1)["studies"]  # the fourth is served


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


@pytest.mark.parametrize("action", ["cancel", "uncancel"])
@pytest.mark.parametrize(
    ("first", "changed"),
    [
        (httpx.ReadError("connection lost after sending"), None),  # may have been applied
        (httpx.Response(502), None),  # a 5xx may follow a commit
        (httpx.Response(408, headers={"retry-after-ms": "1"}), False),  # not processed
        (httpx.ConnectError("refused"), False),  # never sent
    ],
    ids=["lost-answer", "502", "408", "connect-refused"],
)
def test_a_cancel_answered_409_after_a_try_that_may_have_applied_it_is_unknown(
    action: str, first: httpx.Response | Exception, changed: bool | None
) -> None:
    # The sandbox answers "already in that state" with 200 (tests/test_client_writes.py);
    # a server that answers it with 409 needs a wire-level fake.
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) == 1:
            if isinstance(first, Exception):
                raise first
            return first
        return httpx.Response(409, json={"error": {"type": "conflict", "message": "already"}})

    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http, max_retries=2
    ) as c:
        call = c.cancel_study if action == "cancel" else c.uncancel_study
        result = call("stu_" + "d" * 32)
    assert (result.success, result.changed) == (True, changed)
    assert seen == [f"/v1/viewer/studies/{action}"] * 2


@pytest.mark.parametrize(
    "first",
    [
        httpx.Response(408, headers={"retry-after-ms": "1"}),
        httpx.ConnectError("refused"),
    ],
    ids=["408", "connect-refused"],
)
def test_create_409_after_a_try_that_applied_nothing_is_a_conflict(
    first: httpx.Response | Exception,
) -> None:
    # The UID already belongs to another study; the first try was never processed, so the
    # 409 is a real conflict, not our own earlier create. (429: on the sandbox, above.)
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


# -- 429: waited out by the whole client, outside max_retries, bounded by the deadline -------


class ScriptedServer:
    """A wire-level fake answering from a script of statuses (then 200s), counting the
    requests in flight as each arrives: for what the sandbox cannot hold still."""

    def __init__(self, script: list[int], hold: float = 0.0, hint_ms: str = "20") -> None:
        self.script = list(script)
        self.hold = hold
        self.hint_ms = hint_ms
        self.lock = threading.Lock()
        self.in_flight = 0
        self.seen: list[tuple[int, int, bool]] = []  # (status, in flight at arrival, after a 429)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.in_flight += 1
            after_429 = any(status == 429 for status, _, _ in self.seen)
            status = self.script.pop(0) if self.script else 200
            self.seen.append((status, self.in_flight, after_429))
        try:
            if status == 429:
                return httpx.Response(429, headers={"retry-after-ms": self.hint_ms})
            time.sleep(self.hold)
            body: dict[str, Any] = {"studies": [], "cursor": None, "hasMore": False}
            return httpx.Response(status, json=body if status == 200 else {})
        finally:
            with self.lock:
                self.in_flight -= 1


@contextlib.contextmanager
def scripted_client(server: ScriptedServer, **options: Any) -> Iterator[Client]:
    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http, **options
    ) as c:
        yield c


def test_429s_do_not_count_against_max_retries_but_failures_still_do() -> None:
    # six 429s, then two 503s: max_retries=1 allows one retry of the 503, not of the 429s
    server = ScriptedServer([429] * 6 + [503, 503])
    with scripted_client(server, max_retries=1) as c, pytest.raises(
        ServerError, match=r"^list_studies: 503 .*after 8 tries$"
    ):
        c.list_studies()
    server = ScriptedServer([429] * 6 + [503, 503])
    with scripted_client(server, max_retries=2) as c:
        assert c.list_studies()["studies"] == []
    assert [status for status, _, _ in server.seen] == [429] * 6 + [503, 503, 200]


def test_a_call_that_keeps_meeting_429_gives_up_at_its_deadline() -> None:
    server = ScriptedServer([429] * 10_000, hint_ms="100")
    with scripted_client(server, rate_limit_deadline=0.5) as c, pytest.raises(
        RateLimited, match=r"^list_studies: 429 .*still rate limited after 0.5 s"
    ):
        c.list_studies()
    assert 2 <= len(server.seen) <= 6  # waits of 100-120 ms, within half a second


def test_a_429_halves_the_requests_in_flight_of_the_whole_client() -> None:
    # eight threads send at once; the first 429 halves the client's limit (one halving per
    # congestion, however many of the eight meet it) and pauses it: after that at most four
    # are ever in flight, until a run of successes grows the limit back one by one
    server = ScriptedServer([200] * 8 + [429] * 8, hold=0.05, hint_ms="10")
    with scripted_client(server, max_concurrency=8) as c, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: c.list_studies(), range(40)))
    statuses = [status for status, _, _ in server.seen]
    assert statuses.count(200) == 40 and statuses.count(429) == 8
    assert max(n for _, n, _ in server.seen[:8]) >= 2  # before: several in flight
    after = [n for status, n, after_429 in server.seen if after_429 and status == 200]
    assert after and max(after[:4]) <= 4
