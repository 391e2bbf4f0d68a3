"""The sandbox refuses a request body over 1 MiB with 413 in the contract's error format, on
every route that reads a body, whether the size is declared (Content-Length) or only seen
(chunked); a body of exactly 1 MiB is served, and a refused one changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from viewerkit.sandbox.app import MAX_BODY_BYTES
from viewerkit.sandbox.server import Sandbox

UID = "2.25.77"


def create_body(size: int, uid: str = UID) -> bytes:
    """A create body of exactly ``size`` bytes (the description pads it)."""
    base = {"severity": "normal", "studyDescription": "", "studyInstanceUid": uid}
    pad = size - len(orjson.dumps(base))
    body = orjson.dumps({**base, "studyDescription": "x" * pad})
    assert len(body) == size
    return body


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.fixture
def server(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(studies=3, seed=2)


@pytest.fixture
def http(server: Sandbox) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60.0) as client:
        yield client


def assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] is None
    assert "larger than 1048576 bytes" in error["message"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_1_mib_is_served(http: httpx.Client, server: Sandbox, chunked: bool) -> None:
    body = create_body(MAX_BODY_BYTES)
    response = http.post("/v1/viewer/studies", content=chunks(body) if chunked else body)
    assert response.status_code == 201, response.text
    assert response.json()["studyDescription"] == orjson.loads(body)["studyDescription"]
    assert [(r["method"], r["status"]) for r in server.requests()] == [("POST", 201)]


@pytest.mark.parametrize("extra", [1, 4096, 60 * 1024 * 1024], ids=["1 byte", "4 KiB", "60 MiB"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_1_mib_answers_413_and_stores_nothing(
    http: httpx.Client, server: Sandbox, chunked: bool, extra: int
) -> None:
    body = create_body(MAX_BODY_BYTES + extra)
    if chunked:
        request = http.build_request("POST", "/v1/viewer/studies", content=chunks(body))
        assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
        response = http.send(request)
    else:
        response = http.post("/v1/viewer/studies", content=body)
    assert_413(response)
    assert server.audit(outcome="changed") == []
    assert [(r["operation"], r["outcome"], r["status"]) for r in server.audit()] == [("create", "refused", 413)]
    assert [(r["method"], r["status"]) for r in server.requests()] == [("POST", 413)]
    # the connection (or a new one) serves the next request as usual
    assert http.get(f"/v1/viewer/studies/by-uid/{UID}").status_code == 404
    assert http.post("/v1/viewer/studies", content=create_body(2048)).status_code == 201


def body_routes(server: Sandbox) -> list[tuple[str, str]]:
    with httpx.Client(headers={"Authorization": f"Bearer {server.api_key}"}) as client:
        study_id = client.get(server.base_url + "/v1/viewer/studies", params={"limit": 1}).json()["studies"][0]["studyId"]
    return [
        ("PATCH", f"/v1/viewer/studies/{study_id}"),
        ("POST", "/v1/viewer/studies/cancel"),
        ("POST", "/v1/viewer/studies/uncancel"),
        ("POST", "/v1/viewer/studies/reroute-url"),
        ("GET", "/v1/viewer/studies"),
        ("POST", "/_sandbox/faults"),
        ("POST", "/_sandbox/faults/fail-next"),
        ("POST", "/v1/no-such-route"),
    ]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_every_route_refuses_a_body_over_1_mib(http: httpx.Client, server: Sandbox, chunked: bool) -> None:
    before = server.faults()
    studies = httpx.get(server.base_url + "/v1/viewer/studies",
                        headers={"Authorization": f"Bearer {server.api_key}"}).json()["studies"]
    for method, path in body_routes(server):
        # a JSON object the route would accept, padded past the limit with a metadata value
        payload: dict[str, Any] = {"metadata": {"pad": "x" * (MAX_BODY_BYTES + 10)}}
        body = orjson.dumps(payload)
        response = http.request(method, path, content=chunks(body) if chunked else body)
        assert_413(response)
    assert server.audit(outcome="changed") == []
    assert server.faults() == before
    after = httpx.get(server.base_url + "/v1/viewer/studies",
                      headers={"Authorization": f"Bearer {server.api_key}"}).json()["studies"]
    assert after == studies


def test_a_413_is_answered_before_authentication(server: Sandbox) -> None:
    # the size alone decides: no key is needed to be told the body is too large
    response = httpx.post(server.base_url + "/v1/viewer/studies", content=create_body(MAX_BODY_BYTES + 1))
    assert_413(response)


def test_the_client_turns_a_413_into_a_clear_error_and_does_not_retry(server: Sandbox) -> None:
    from viewerkit import Client, RequestTooLarge

    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        study_id = client.list_studies(limit=1)["studies"][0]["studyId"]
        seen = len(server.requests())
        with pytest.raises(RequestTooLarge) as caught:
            client.create_study(severity="normal", study_description="x" * (2 * MAX_BODY_BYTES),
                                study_instance_uid=UID)
        with pytest.raises(RequestTooLarge):  # an update too: every call that sends a body
            client.update_study(study_id, study_description="y" * (MAX_BODY_BYTES + 1))
    error = caught.value
    assert error.status_code == 413 and "1 MiB" in str(error)  # the server's own words ...
    assert re.search(r"sent [\d,]+ bytes: shorten the study description or metadata values", str(error))
    assert server.api_key not in str(error)
    refused = [r for r in server.requests()[seen:] if r["status"] == 413]
    assert len(refused) == 2 and len(server.requests()) == seen + 2  # one try each: not retried
