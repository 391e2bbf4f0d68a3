"""viewerkit.Client against a real sandbox server: endpoints, validation, errors, secrets."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from viewerkit import (
    AuthenticationError,
    BadRequest,
    Client,
    ConfigurationError,
    Conflict,
    NotFound,
    ValidationError,
)
from viewerkit.client import CancelResult, RerouteUrl
from viewerkit.errors import Reason
from viewerkit.sandbox.server import Sandbox, running

ABSENT_STUDY = "stu_" + "0" * 32
ABSENT_USER = "usr_" + "0" * 32


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts requests and the most ever in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.sent = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.statuses: list[int] = []
        self.user_agents: set[str] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.sent += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.user_agents.add(request.headers.get("user-agent", ""))
        try:
            response = super().handle_request(request)
            response.read()
        finally:
            with self.lock:
                self.in_flight -= 1
        with self.lock:
            self.statuses.append(response.status_code)
        return response


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        yield c


@pytest.fixture
def writable(make_sandbox: Any) -> Sandbox:
    server: Sandbox = make_sandbox(studies=60, seed=3)
    return server


@pytest.fixture(scope="module")
def untouched() -> Iterator[Sandbox]:
    """A server no test writes to: its audit must stay empty."""
    with running(studies=20, seed=4) as server:
        yield server


def test_missing_key_is_a_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AVARA_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="AVARA_API_KEY"):
        Client(base_url="http://127.0.0.1:9")


def test_key_and_base_url_default_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    monkeypatch.setenv("AVARA_API_KEY", sandbox.api_key)
    monkeypatch.setenv("AVARA_BASE_URL", sandbox.base_url + "/")
    with Client() as c:
        assert c.base_url == sandbox.base_url
        assert len(c.list_studies(limit=2)["studies"]) == 2
    monkeypatch.delenv("AVARA_BASE_URL")
    with Client() as c:
        assert c.base_url == "https://api.avarasoftware.com"


def test_repr_shows_base_url_and_fingerprint_never_the_key(sandbox: Sandbox) -> None:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        text = repr(c) + str(c)
        assert sandbox.base_url in text
        assert c.key_fingerprint in text
        assert sandbox.api_key not in text
        assert sandbox.api_key not in c.key_fingerprint
        assert sandbox.api_key not in repr(vars(c))


def test_fingerprint_tells_keys_apart_and_is_stable() -> None:
    one = Client(api_key="key-one", base_url="http://127.0.0.1:9")
    again = Client(api_key="key-one", base_url="http://127.0.0.1:9")
    other = Client(api_key="key-two", base_url="http://127.0.0.1:9")
    assert one.key_fingerprint == again.key_fingerprint != other.key_fingerprint


def test_iter_studies_yields_every_study_once(client: Client) -> None:
    ids = [s["studyId"] for s in client.iter_studies()]
    assert len(ids) == 2000
    assert len(set(ids)) == len(ids)


def test_list_page_has_studies_cursor_and_has_more(client: Client) -> None:
    first = client.list_studies(limit=5)
    assert len(first["studies"]) == 5 and first["hasMore"] is True
    second = client.list_studies(limit=5, cursor=first["cursor"])
    assert {s["studyId"] for s in first["studies"]}.isdisjoint(
        s["studyId"] for s in second["studies"]
    )


def test_list_studies_raw_is_the_page_body(client: Client) -> None:
    import orjson

    raw = client.list_studies_raw(severity="stat", limit=3)
    assert isinstance(raw, bytes)
    page = orjson.loads(raw)
    assert [s["severity"] for s in page["studies"]] == ["stat"] * 3


def test_filters_select_only_matching_studies(client: Client) -> None:
    studies = list(client.iter_studies(is_cancelled=False, study_viewer_status="incomplete"))
    assert studies
    assert all(not s["isCancelled"] and s["studyViewerStatus"] == "incomplete" for s in studies)
    unassigned = list(client.iter_studies(assigned_to=None))
    assert all(s.get("assignedTo") is None for s in unassigned)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.retrieve_study(""), "study_id"),
        (lambda c: c.retrieve_study("STU_123"), "study_id"),
        (lambda c: c.retrieve_study_by_uid("1.02.3"), "study_instance_uid"),
        (lambda c: c.update_study("", severity="stat"), "study_id"),
        (lambda c: c.update_study(ABSENT_STUDY, severity="urgent"), "severity"),
        (lambda c: c.update_study(ABSENT_STUDY, study_viewer_status="done"), "study_viewer_status"),
        (lambda c: c.update_study(ABSENT_STUDY, assigned_to="bob"), "assigned_to"),
        (lambda c: c.update_study(ABSENT_STUDY, metadata={f"k{i}": "v" for i in range(51)}), "metadata"),
        (lambda c: c.update_study(ABSENT_STUDY, metadata={"k": "v" * 1001}), "metadata"),
        (lambda c: c.create_study(severity="stat", study_description="CT", study_instance_uid="1..2"), "study_instance_uid"),
        (lambda c: c.create_study(severity="stat", study_description="", study_instance_uid="1.2"), "study_description"),
        (lambda c: c.create_study(severity="stat", study_description="   ", study_instance_uid="1.2"), "study_description"),
        (lambda c: c.update_study(ABSENT_STUDY, study_description="\t\n"), "study_description"),
        (lambda c: c.update_study(ABSENT_STUDY, study_description="CT \ud800"), "study_description"),
        (lambda c: c.update_study(ABSENT_STUDY, metadata={"site": "\udfff"}), "metadata"),
        (lambda c: c.update_study(ABSENT_STUDY, severity=pd.NA), "severity"),
        (lambda c: c.list_studies(study_description=""), "study_description"),
        (lambda c: c.list_studies(limit=2.5), "limit"),
        (lambda c: c.create_study(severity="stat", study_description="CT", study_instance_uid="1.2", express_customer_id="cus_x"), "express_customer_id"),
        (lambda c: c.list_studies(limit=500), "limit"),
        (lambda c: c.list_studies(severity="urgent"), "severity"),
        (lambda c: c.cancel_study(), "study_id"),
        (lambda c: c.uncancel_study(study_instance_uid="abc"), "study_instance_uid"),
        (lambda c: c.reroute_url("stu_abc"), "study_id"),
    ],
)
def test_bad_arguments_raise_validation_error_before_any_request(
    untouched: Sandbox, call: Any, field: str
) -> None:
    transport = CountingTransport()
    with httpx.Client(transport=transport) as http, Client(
        api_key=untouched.api_key, base_url=untouched.base_url, http_client=http
    ) as c, pytest.raises(ValidationError) as caught:
        call(c)
    assert transport.sent == 0
    assert field in str(caught.value)
    assert field in set(caught.value.failure_cases["field"])
    assert untouched.audit() == []


def test_every_bad_argument_of_a_call_is_named_in_one_message(client: Client) -> None:
    with pytest.raises(ValidationError) as caught:
        client.update_study(
            "stu_abc", severity="urgent", study_description="   ",  # type: ignore[arg-type]
            metadata={"": "x", "k": 1},  # type: ignore[dict-item]
        )
    assert str(caught.value) == (
        "update_study: 5 problems\n"
        "  field study_id: must be stu_ + 32 lowercase hex (got 'stu_abc')\n"
        "  field metadata: has a key that is not 1-100 characters (got '')\n"
        "  field metadata: has a value that is not a string, key 'k' (got 1)\n"
        "  field severity: must be one of normal, high, stat (got 'urgent')\n"
        "  field study_description: must not be blank (only whitespace) (got '   ')"
    )
    assert caught.value.failure_cases["reason"].tolist() == [
        Reason.NOT_STUDY_ID,
        Reason.BAD_METADATA_KEY,
        Reason.METADATA_VALUE_NOT_TEXT,
        Reason.NOT_SEVERITY,
        Reason.BLANK,
    ]


def test_metadata_may_be_any_mapping_and_limits_may_be_numpy_or_whole_floats(
    writable: Sandbox,
) -> None:
    with Client(api_key=writable.api_key, base_url=writable.base_url) as c:
        # accepted at runtime, but client.py's signature says int: to widen there
        study_id = c.list_studies(limit=np.int64(1))["studies"][0]["studyId"]
        updated = c.update_study(study_id, metadata=MappingProxyType({"site": "North"}))
        assert updated["metadata"] == {"site": "North"}
        assert len(c.list_studies(limit=3.0)["studies"]) == 3


def test_empty_study_id_message_quotes_the_value(client: Client) -> None:
    with pytest.raises(ValidationError, match="got ''"):
        client.retrieve_study("")


def test_create_retrieve_update_and_cancel_round_trip(writable: Sandbox) -> None:
    with Client(api_key=writable.api_key, base_url=writable.base_url) as c:
        someone = next(s["assignedTo"]["userId"] for s in c.iter_studies() if s.get("assignedTo"))
        created = c.create_study(
            severity="high",
            study_description="CT Head",
            study_instance_uid="1.2.840.99.1",
            assigned_to=someone,
            metadata={"Site Name": "North", "accession": "A-1"},
        )
        study_id = created["studyId"]
        assert created["metadata"] == {"Site Name": "North", "accession": "A-1"}
        assert c.retrieve_study(study_id) == created
        assert c.retrieve_study_by_uid("1.2.840.99.1") == created

        updated = c.update_study(study_id, assigned_to=None, metadata=None, severity="stat")
        assert updated["assignedTo"] is None
        assert not updated.get("metadata")
        assert updated["severity"] == "stat"

        assert c.cancel_study(study_id) == CancelResult(success=True, message=None, changed=True)
        again = c.cancel_study(study_instance_uid="1.2.840.99.1")
        assert (again.success, again.changed) == (True, False)
        assert c.retrieve_study(study_id)["isCancelled"] is True
        assert c.uncancel_study(study_id).changed is True
        not_cancelled = c.uncancel_study(study_id)
        assert (not_cancelled.success, not_cancelled.changed) == (True, False)
    operations = [(row["operation"], row["outcome"]) for row in writable.audit(study_id)]
    assert operations == [
        ("create", "changed"), ("update", "changed"),
        ("cancel", "changed"), ("cancel", "noop"),  # the second cancel, by UID, changed nothing
        ("uncancel", "changed"), ("uncancel", "noop"),
    ]


def test_create_with_an_existing_uid_on_the_first_try_is_a_conflict(writable: Sandbox) -> None:
    with Client(api_key=writable.api_key, base_url=writable.base_url) as c:
        existing = c.list_studies(limit=1)["studies"][0]
        with pytest.raises(Conflict, match=r"create_study .*409"):
            c.create_study(
                severity="normal",
                study_description="dup",
                study_instance_uid=existing["studyInstanceUid"],
            )
    assert writable.audit(outcome="changed") == []


def test_errors_name_the_call_and_the_study(client: Client) -> None:
    with pytest.raises(NotFound) as caught:
        client.retrieve_study(ABSENT_STUDY)
    assert caught.value.status_code == 404
    assert str(caught.value).startswith(f"retrieve_study {ABSENT_STUDY}: 404")
    with pytest.raises(NotFound, match=f"update_study {ABSENT_STUDY}"):
        client.update_study(ABSENT_STUDY, severity="stat")
    with pytest.raises(BadRequest) as bad:
        client.list_studies(assigned_to=ABSENT_USER, cursor="not-a-cursor")
    assert str(bad.value).startswith("list_studies: 400")


def test_key_never_reaches_errors_or_logs(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        for call in (
            lambda: c.retrieve_study(ABSENT_STUDY),
            lambda: c.list_studies(cursor="garbage"),
            lambda: c.cancel_study(ABSENT_STUDY),
        ):
            with pytest.raises(Exception) as caught:
                call()
            messages.append(str(caught.value) + repr(caught.value))
        link = c.reroute_url(c.list_studies(limit=1)["studies"][0]["studyId"])
    wrong_key = "sk-wrong-" + sandbox.api_key[::-1]
    with Client(api_key=wrong_key, base_url=sandbox.base_url, max_retries=0) as c:
        with pytest.raises(AuthenticationError) as auth:
            c.list_studies(limit=1)
        messages.append(str(auth.value) + repr(auth.value))
    assert caplog.records, "expected DEBUG log lines from the client and httpx"
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for text in (*messages, logged):
        assert sandbox.api_key not in text
        assert wrong_key not in text
        assert link.url not in text


def test_reroute_url_is_redacted_but_usable(client: Client) -> None:
    study_id = client.list_studies(limit=1)["studies"][0]["studyId"]
    link = client.reroute_url(study_id)
    assert isinstance(link, RerouteUrl)
    assert repr(link) == str(link) == f"{link!s}" == "RerouteUrl(<redacted>)"
    assert link.url == link.reveal() and link.url not in repr([link])
    assert httpx.get(link.reveal()).status_code == 200


def test_requests_carry_a_viewerkit_user_agent(sandbox: Sandbox) -> None:
    transport = CountingTransport()
    with httpx.Client(transport=transport) as http, Client(
        api_key=sandbox.api_key, base_url=sandbox.base_url, http_client=http
    ) as c:
        c.list_studies(limit=1)
    from viewerkit import __version__

    assert transport.user_agents == {f"viewerkit/{__version__}"}


def test_concurrency_cap_is_shared_by_all_threads(sandbox: Sandbox) -> None:
    transport = CountingTransport()
    with httpx.Client(transport=transport) as http, Client(
        api_key=sandbox.api_key, base_url=sandbox.base_url, http_client=http, max_concurrency=2
    ) as c:
        threads = [
            threading.Thread(target=lambda: [c.list_studies_raw(limit=100) for _ in range(3)])
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert transport.sent == 24
    assert transport.most_in_flight <= 2


def test_client_rate_limit_keeps_under_the_server_limit(make_sandbox: Any) -> None:
    server: Sandbox = make_sandbox(studies=20, rate_limit=5)
    transport = CountingTransport()
    with httpx.Client(transport=transport) as http, Client(
        api_key=server.api_key, base_url=server.base_url, http_client=http, rate_limit=3,
        max_retries=0,
    ) as c:
        for _ in range(8):
            c.list_studies(limit=1)
    assert transport.statuses == [200] * 8


def test_sync_api_works_inside_a_running_event_loop(client: Client) -> None:
    async def notebook_cell() -> int:
        return len(client.list_studies(limit=3)["studies"])

    assert asyncio.run(notebook_cell()) == 3


def test_rate_limit_holds_when_threads_wait_for_a_concurrency_slot() -> None:
    # Two slow requests hold both slots for a second while six threads wait; when the slots
    # free, the waiting threads must still be paced (a token bucket of 4/s, 4 deep), not
    # sent in one burst on tokens they took while waiting.
    release = threading.Event()
    lock = threading.Lock()
    sent: list[float] = []

    def server(request: httpx.Request) -> httpx.Response:
        with lock:
            sent.append(time.monotonic())
            first = len(sent) <= 2
        if first:
            release.wait(1.0)
        return httpx.Response(200, json={"studies": [], "cursor": None, "hasMore": False})

    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http, rate_limit=4,
        max_concurrency=2,
    ) as c:
        threads = [threading.Thread(target=c.list_studies) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(sent) == 8
    for start in sent:  # a token bucket allows at most depth + rate * window per window
        assert sum(start <= s < start + 0.1 for s in sent) <= 4


def test_key_and_url_swapped_by_position_never_print_the_key() -> None:
    key = "sk-live-0123456789abcdef"
    with pytest.raises(ConfigurationError, match=r"base URL \(base_url=\) must start with http") as caught:
        Client("https://api.avarasoftware.com", key)
    assert key not in str(caught.value) and key not in repr(caught.value)
