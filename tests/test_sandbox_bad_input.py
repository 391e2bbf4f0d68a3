"""Every format and limit rule of the contract answers 400 naming the field in ``error.param``."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from viewerkit.sandbox.server import Sandbox, running

UNKNOWN_STUDY = "stu_" + "0" * 32
UNKNOWN_USER = "usr_" + "0" * 32
UNKNOWN_CUSTOMER = "cus_" + "0" * 32


@pytest.fixture(scope="module")
def server() -> Iterator[Sandbox]:
    with running(studies=50, seed=11) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def http(server: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}
    ) as client:
        yield client


@pytest.fixture(scope="module")
def a_study(http: httpx.Client) -> dict[str, Any]:
    study: dict[str, Any] = http.get("/v1/viewer/studies", params={"limit": 1}).json()["studies"][0]
    return study


def valid_create() -> dict[str, Any]:
    return {
        "severity": "normal",
        "studyDescription": "XR Chest 2 Views",
        "studyInstanceUid": "2.25." + str(uuid.uuid4().int),
    }


def assert_bad(response: httpx.Response, param: str | None) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert response.headers["x-should-retry"] == "false"


BAD_UIDS = ["", "1.02.3", "1..2", ".1.2", "1.2.", "1.2.a", "1 .2", "1" * 65, 123, None, ["1.2"]]
BAD_METADATA: list[Any] = [
    {f"k{i}": "v" for i in range(51)},
    {"": "v"},
    {"k" * 101: "v"},
    {"site": "v" * 1001},
    {"site": 3},
    {"site": None},
    ["site", "North"],
    "site=North",
]


@pytest.mark.parametrize("field", ["severity", "studyDescription", "studyInstanceUid"])
def test_create_without_a_required_field_names_it(http: httpx.Client, field: str) -> None:
    body = valid_create()
    del body[field]
    assert_bad(http.post("/v1/viewer/studies", json=body), field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("severity", "urgent"),
        ("severity", "STAT"),
        ("severity", None),
        ("severity", 1),
        ("studyDescription", ""),
        ("studyDescription", "   "),
        ("studyDescription", "\xa0\n"),
        ("studyDescription", 42),
        ("studyDescription", None),
        *[("studyInstanceUid", uid) for uid in BAD_UIDS],
        ("assignedTo", "usr_123"),
        ("assignedTo", "usr_" + "A" * 32),
        ("assignedTo", UNKNOWN_USER),
        ("assignedTo", 7),
        ("expressCustomerId", "cus_xyz"),
        ("expressCustomerId", UNKNOWN_CUSTOMER),
        *[("metadata", m) for m in BAD_METADATA],
        ("study_description", "snake case is not the wire format"),
    ],
)
def test_create_with_a_bad_field_answers_400_naming_it(
    server: Sandbox, http: httpx.Client, field: str, value: Any
) -> None:
    before = len(server.audit(outcome="changed"))
    body = valid_create()
    body[field] = value
    assert_bad(http.post("/v1/viewer/studies", json=body), field)
    assert len(server.audit(outcome="changed")) == before


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"study"', b"null", b"\xff\xfe", b'{"severity": "\\ud800"}'])
def test_create_with_a_body_that_is_not_a_json_object_answers_400(http: httpx.Client, raw: bytes) -> None:
    response = http.post("/v1/viewer/studies", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "error" in response.json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("severity", None),
        ("severity", "low"),
        ("studyDescription", ""),
        ("studyDescription", "   "),
        ("studyDescription", "\u3000\t"),
        ("studyViewerStatus", "done"),
        ("studyViewerStatus", None),
        ("assignedTo", UNKNOWN_USER),
        ("assignedTo", "usr_1"),
        *[("metadata", m) for m in BAD_METADATA[:5]],
        ("isCancelled", True),
        ("expressCustomerId", UNKNOWN_CUSTOMER),
    ],
)
def test_update_with_a_bad_field_answers_400_naming_it(
    http: httpx.Client, a_study: dict[str, Any], field: str, value: Any
) -> None:
    response = http.patch(f"/v1/viewer/studies/{a_study['studyId']}", json={field: value})
    assert_bad(response, field)
    assert http.get(f"/v1/viewer/studies/{a_study['studyId']}").json() == a_study


@pytest.mark.parametrize("study_id", ["stu_123", "STU_" + "a" * 32, "stu_" + "A" * 32, "x"])
def test_a_malformed_study_id_in_the_path_answers_400(http: httpx.Client, study_id: str) -> None:
    assert_bad(http.get(f"/v1/viewer/studies/{study_id}"), "studyId")
    assert_bad(http.patch(f"/v1/viewer/studies/{study_id}", json={}), "studyId")


def test_an_unknown_study_answers_404(http: httpx.Client) -> None:
    for response in (
        http.get(f"/v1/viewer/studies/{UNKNOWN_STUDY}"),
        http.patch(f"/v1/viewer/studies/{UNKNOWN_STUDY}", json={"severity": "stat"}),
        http.post("/v1/viewer/studies/cancel", json={"studyId": UNKNOWN_STUDY}),
        http.post("/v1/viewer/studies/uncancel", json={"studyInstanceUid": "1.2.3"}),
        http.post("/v1/viewer/studies/reroute-url", json={"studyId": UNKNOWN_STUDY}),
        http.get("/v1/viewer/studies/by-uid/1.2.3"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("uid", ["1.02", "1..2", "a"])
def test_a_malformed_uid_in_the_path_answers_400(http: httpx.Client, uid: str) -> None:
    assert_bad(http.get(f"/v1/viewer/studies/by-uid/{uid}"), "studyInstanceUid")


@pytest.mark.parametrize("path", ["cancel", "uncancel", "reroute-url"])
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"studyId": "stu_1"}, "studyId"),
        ({"studyId": 5}, "studyId"),
        ({"studyInstanceUid": "1.02"}, "studyInstanceUid"),
        ({}, "studyId"),
        ({"id": UNKNOWN_STUDY}, "id"),
    ],
)
def test_identify_bodies_with_bad_fields_answer_400(
    http: httpx.Client, path: str, body: dict[str, Any], param: str
) -> None:
    assert_bad(http.post(f"/v1/viewer/studies/{path}", json=body), param)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("limit", "0"),
        ("limit", "101"),
        ("limit", "-1"),
        ("limit", "1.5"),
        ("limit", "ten"),
        ("limit", "nan"),
        ("limit", "1e400"),
        ("limit", "1e1"),
        ("limit", "1_0"),
        ("limit", " 10"),
        ("limit", "0x10"),
        ("severity", "urgent"),
        ("studyViewerStatus", "open"),
        ("isCancelled", "yes"),
        ("isCancelled", "True"),
        ("isCancelled", "1"),
        ("assignedTo", "usr_1"),
        ("assignedTo", "None"),
        ("expressCustomerId", "cus_1"),
        ("studyDescription", ""),
        ("cursor", "not a cursor"),
        ("cursor", "AAAA"),
        ("cursor", ""),
        ("assigned_to", "null"),
    ],
)
def test_list_with_a_bad_query_parameter_answers_400_naming_it(
    http: httpx.Client, param: str, value: str
) -> None:
    assert_bad(http.get("/v1/viewer/studies", params={param: value}), param)


def test_limit_rules_accept_1_and_100(http: httpx.Client) -> None:
    assert len(http.get("/v1/viewer/studies", params={"limit": 1}).json()["studies"]) == 1
    assert len(http.get("/v1/viewer/studies", params={"limit": 100}).json()["studies"]) == 50
    # the SDK types limit as a float: limit=7.0 arrives as "7.0"
    assert len(http.get("/v1/viewer/studies", params={"limit": 7.0}).json()["studies"]) == 7
    assert len(http.get("/v1/viewer/studies", params={"limit": "0000010"}).json()["studies"]) == 10
    assert_bad(http.get("/v1/viewer/studies", params={"limit": "9" * 400}), "limit")


@pytest.mark.parametrize("param", ["severity", "assignedTo", "limit", "cursor", "isCancelled"])
def test_a_list_parameter_given_twice_answers_400_naming_it(http: httpx.Client, param: str) -> None:
    values = {
        "severity": ["normal", "stat"],
        "assignedTo": ["null", "null"],
        "limit": ["5", "5"],
        "cursor": ["AAAA", "AAAA"],
        "isCancelled": ["true", "false"],
    }[param]
    assert_bad(http.get("/v1/viewer/studies", params=[(param, v) for v in values]), param)


def test_a_tampered_cursor_answers_400(http: httpx.Client) -> None:
    page = http.get("/v1/viewer/studies", params={"limit": 5}).json()
    cursor = page["cursor"]
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[-3] ^= 0x01  # change the payload, keep the signature
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    assert_bad(http.get("/v1/viewer/studies", params={"limit": 5, "cursor": tampered}), "cursor")
    assert http.get("/v1/viewer/studies", params={"limit": 5, "cursor": cursor}).status_code == 200


def test_a_cursor_used_with_other_filters_answers_400(http: httpx.Client) -> None:
    page = http.get("/v1/viewer/studies", params={"limit": 2, "severity": "normal"}).json()
    assert page["hasMore"]
    other = {"limit": 2, "severity": "high", "cursor": page["cursor"]}
    assert_bad(http.get("/v1/viewer/studies", params=other), "cursor")
    none = {"limit": 2, "cursor": page["cursor"]}
    assert_bad(http.get("/v1/viewer/studies", params=none), "cursor")
    # another limit with the same filters is fine
    same = {"limit": 7, "severity": "normal", "cursor": page["cursor"]}
    assert http.get("/v1/viewer/studies", params=same).status_code == 200


def test_a_cursor_of_another_sandbox_answers_400(
    http: httpx.Client, make_sandbox: Callable[..., Sandbox]
) -> None:
    other = make_sandbox(studies=20, seed=11)
    with httpx.Client(
        base_url=other.base_url, headers={"Authorization": f"Bearer {other.api_key}"}
    ) as foreign:
        cursor = foreign.get("/v1/viewer/studies", params={"limit": 2}).json()["cursor"]
    assert_bad(http.get("/v1/viewer/studies", params={"limit": 2, "cursor": cursor}), "cursor")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}],
)
def test_a_missing_or_wrong_key_answers_401(server: Sandbox, headers: dict[str, str]) -> None:
    for method, path in (
        ("GET", "/v1/viewer/studies"),
        ("POST", "/v1/viewer/studies"),
        ("GET", f"/v1/viewer/studies/{UNKNOWN_STUDY}"),
        ("GET", "/_sandbox/audit"),
        ("POST", "/_sandbox/faults"),
    ):
        response = httpx.request(method, server.base_url + path, headers=headers, json={})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert server.api_key not in response.text


def test_an_unknown_route_answers_404_in_the_error_format(http: httpx.Client) -> None:
    response = http.get("/v1/viewer/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
