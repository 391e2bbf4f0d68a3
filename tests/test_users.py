"""Client.list_users / iter_users / retrieve_user and fetch_users against a real sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from test_sandbox_users import list_users_raw

from viewerkit import (
    USER_SCHEMA,
    ApiError,
    Client,
    NotFound,
    Reason,
    ResponseValidationError,
    ValidationError,
    fetch_users,
    fetch_users_arrow,
)
from viewerkit.sandbox.server import Sandbox
from viewerkit.users import users_to_arrow

COLUMNS = [
    "user_id", "email", "first_name", "middle_name", "last_name", "suffix1", "suffix2",
    "clinic_role", "level", "can_manage_studies", "has_dashboard_access", "invited_source",
    "created_at", "last_login_at",
]
TEXT = "str" if int(pd.__version__.split(".")[0]) >= 3 else "object"


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def listed(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list_users_raw(sandbox)


def last_seq(server: Sandbox) -> int:
    log = server.requests()
    return log[-1]["seq"] if log else 0


# -- the client ------------------------------------------------------------------------------


def test_list_users_gives_one_page_and_iter_users_every_listed_user(
    client: Client, listed: list[dict[str, Any]]
) -> None:
    page = client.list_users(limit=5)
    assert page["users"] == listed[:5] and page["hasMore"] is True
    assert list(client.iter_users(limit=4)) == listed
    members = [u for u in listed if u["level"] == "member" and "a" in u["lastName"].lower()]
    assert list(client.iter_users(level="member", last_name="A", limit=3)) == members


def test_retrieve_user_finds_listed_and_revoked_users_and_raises_not_found(
    client: Client, sandbox: Sandbox, listed: list[dict[str, Any]]
) -> None:
    assert client.retrieve_user(listed[3]["userId"]) == listed[3]
    with sandbox_store(sandbox) as store:
        revoked = sorted(set(store.user_ids()) - {u["userId"] for u in listed})
    assert revoked
    assert client.retrieve_user(revoked[0])["userId"] == revoked[0]
    with pytest.raises(NotFound) as missing:
        client.retrieve_user("usr_" + "0" * 32)
    assert missing.value.status_code == 404 and "retrieve_user" in str(missing.value)


class sandbox_store:
    def __init__(self, server: Sandbox) -> None:
        from viewerkit.sandbox.store import Store

        self.store = Store(server.db_path)

    def __enter__(self) -> Any:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


@pytest.mark.parametrize(
    ("call", "field", "reason"),
    [
        (lambda c: c.list_users(level="boss"), "level", Reason.NOT_USER_LEVEL),
        (lambda c: c.list_users(invited_source="email"), "invited_source", Reason.NOT_INVITED_SOURCE),
        (lambda c: c.list_users(email=""), "email", Reason.EMPTY),
        (lambda c: c.list_users(first_name=3), "first_name", Reason.NOT_TEXT),
        (lambda c: c.list_users(limit=0), "limit", Reason.OUT_OF_RANGE),
        (lambda c: c.list_users(limit=101), "limit", Reason.OUT_OF_RANGE),
        (lambda c: c.list_users(cursor=""), "cursor", Reason.NOT_CURSOR),
        (lambda c: c.list_users(role="Radiologist"), "role", Reason.NOT_A_CHOICE),
        (lambda c: c.iter_users(level="Admin"), "level", Reason.NOT_USER_LEVEL),
        (lambda c: c.iter_users(limit=500), "limit", Reason.OUT_OF_RANGE),
        (lambda c: c.retrieve_user("usr_123"), "user_id", Reason.NOT_USER_ID),
        (lambda c: c.retrieve_user(""), "user_id", Reason.EMPTY),
        (lambda c: fetch_users(c, level="boss", progress=False),  # type: ignore[arg-type]
         "level", Reason.NOT_USER_LEVEL),
        (lambda c: fetch_users(c, include_phone="yes", progress=False),  # type: ignore[arg-type]
         "include_phone", Reason.NOT_BOOLEAN),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_sent(
    client: Client, sandbox: Sandbox, call: Callable[[Client], Any], field: str, reason: Reason
) -> None:
    before = last_seq(sandbox)
    with pytest.raises(ValidationError) as refused:
        call(client)
    cases = refused.value.failure_cases
    assert cases["field"].tolist() == [field] and cases["reason"].tolist() == [reason]
    assert last_seq(sandbox) == before  # nothing reached the server


def test_every_problem_of_a_call_is_reported_at_once(client: Client) -> None:
    with pytest.raises(ValidationError) as refused:
        client.list_users(level="boss", invited_source="fax", limit=0)  # type: ignore[arg-type]
    assert refused.value.failure_cases["field"].tolist() == ["level", "invited_source", "limit"]


def test_retries_through_server_faults_and_waits_out_429s_on_the_user_list(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=40, seed=3, users=120)
    expected = list_users_raw(server)
    server.fail_next(2, method="GET", path="/v1/viewer/users")
    server.fail_next(1, method="GET", path="/v1/viewer/users/*", how="drop")
    with Client(api_key=server.api_key, base_url=server.base_url, max_retries=3) as c:
        seen = server.requests()[-1]["seq"]
        assert list(c.iter_users(limit=50)) == expected
        assert c.retrieve_user(expected[0]["userId"]) == expected[0]
        log = server.requests(seen)
        assert [r["status"] for r in log[:2]] == [503, 503]
        assert "dropped" in [r["status"] for r in log]
        server.set_faults(rate_limit=2)
        seen = server.requests()[-1]["seq"]
        table = fetch_users(c, limit=10, progress=False)
    assert table["user_id"].tolist() == [u["userId"] for u in expected]
    log = server.requests(seen)
    assert any(r["status"] == 429 for r in log)  # the server limited us, and we got through
    assert sum(r["status"] == 200 for r in log) == 12  # 118 listed users, 10 a page


def test_a_429_past_the_deadline_is_rate_limited_naming_the_call(make_sandbox: Callable[..., Sandbox]) -> None:
    from viewerkit import RateLimited

    server = make_sandbox(studies=10, seed=3, rate_limit=1)
    with Client(api_key=server.api_key, base_url=server.base_url, rate_limit_deadline=0) as c:
        c.list_users(limit=1)
        with pytest.raises(RateLimited) as limited:
            c.list_users(limit=1)
    assert limited.value.call == "list_users" and limited.value.status_code == 429


# -- cursor safeguards: a wire-level fake plays the misbehaving server ----------------------


def user(n: int) -> dict[str, Any]:
    return {"userId": f"usr_{n:032x}", "email": f"u{n}@x.example", "firstName": "A", "lastName": "B",
            "clinicRole": "Radiologist", "level": "member", "canManageStudies": True,
            "hasDashboardAccess": False, "invitedSource": "api"}


def faking(pages: Callable[[int], dict[str, Any]]) -> Client:
    asked: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(1)
        if len(asked) > 50:
            return httpx.Response(500, json={"error": {"type": "loop", "message": "looping"}})
        return httpx.Response(200, content=orjson.dumps(pages(len(asked))))

    http = httpx.Client(transport=httpx.MockTransport(answer))
    return Client(api_key="sk-x", base_url="http://fake", http_client=http, max_retries=0)


@pytest.mark.parametrize(
    ("pages", "said"),
    [
        (lambda n: {"users": [user(n)], "cursor": "c2" if n >= 2 else "c1", "hasMore": True},
         "repeated a cursor"),
        (lambda n: {"users": [user(n)] if n == 1 else [], "cursor": f"c{n}", "hasMore": True},
         "3 empty pages"),
        (lambda n: {"users": [user(n)], "cursor": None, "hasMore": True}, "gave no cursor"),
    ],
)
def test_a_user_list_that_does_not_advance_is_refused(pages: Callable[[int], dict[str, Any]], said: str) -> None:
    for read in (lambda c: list(c.iter_users()), lambda c: fetch_users(c, progress=False)):
        with faking(pages) as c, pytest.raises(ApiError, match=said):
            read(c)


def test_an_answer_that_is_not_a_page_of_users_is_an_api_error() -> None:
    with faking(lambda n: {"studies": []}) as c:
        with pytest.raises(ApiError, match="not a page of users"):
            c.list_users()
        with pytest.raises(ApiError, match="not a page of users"):
            fetch_users(c, progress=False)


# -- fetch_users ---------------------------------------------------------------------------


def test_fetch_users_has_the_fixed_schema_and_dtypes(client: Client, listed: list[dict[str, Any]]) -> None:
    table = fetch_users(client, progress=False)
    assert list(table.columns) == COLUMNS
    assert "phone_number" not in table.columns
    dtypes = {name: str(dtype) for name, dtype in table.dtypes.items()}
    assert dtypes["created_at"] == dtypes["last_login_at"] == "datetime64[ms, UTC]"
    assert dtypes["can_manage_studies"] == dtypes["has_dashboard_access"] == "boolean"
    for name in ("user_id", "email", "first_name", "clinic_role", "level", "invited_source"):
        assert dtypes[name] == TEXT
    assert fetch_users_arrow(client, progress=False).schema.equals(USER_SCHEMA)
    # an empty result has the same columns and dtypes
    empty = fetch_users(client, email="nobody@nowhere.example", progress=False)
    assert empty.empty and empty.dtypes.equals(table.dtypes)


def test_fetch_users_holds_every_listed_user_value_for_value(client: Client, listed: list[dict[str, Any]]) -> None:
    table = fetch_users(client, include_phone=True, progress=False, limit=9)
    assert list(table.columns) == [*COLUMNS, "phone_number"]
    assert len(table) == len(listed)
    wire = {
        "user_id": "userId", "email": "email", "first_name": "firstName", "middle_name": "middleName",
        "last_name": "lastName", "suffix1": "suffix1", "suffix2": "suffix2", "clinic_role": "clinicRole",
        "level": "level", "can_manage_studies": "canManageStudies",
        "has_dashboard_access": "hasDashboardAccess", "invited_source": "invitedSource",
        "phone_number": "phoneNumber",
    }
    for name, key in wire.items():
        got = [None if pd.isna(v) else v for v in table[name].tolist()]
        assert got == [u[key] for u in listed], name
    for name, key in (("created_at", "createdAt"), ("last_login_at", "lastLoginAt")):
        expected = pd.to_datetime(pd.Series([u[key] for u in listed]), utc=True).astype("datetime64[ms, UTC]")
        pd.testing.assert_series_equal(table[name], expected, check_names=False)


def test_fetch_users_takes_the_list_filters(client: Client, listed: list[dict[str, Any]]) -> None:
    admins = fetch_users(client, level="admin", progress=False)
    assert admins["user_id"].tolist() == [u["userId"] for u in listed if u["level"] == "admin"]
    one = fetch_users(client, email=listed[2]["email"], progress=False)
    assert one["user_id"].tolist() == [listed[2]["userId"]]


def test_fetch_users_of_2000_users_takes_20_pages(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=200, seed=5, users=2000)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        table = fetch_users(c, progress=False)
    assert len(table) == 1998  # two users' access is revoked
    assert table["user_id"].is_unique
    assert [r["path"] for r in server.requests()] == ["/v1/viewer/users"] * 20


def test_a_time_or_user_id_outside_the_contract_is_a_response_validation_error() -> None:
    good = user(1) | {"createdAt": "2026-11-27T16:30:43.197Z"}
    bad = user(2) | {"lastLoginAt": "yesterday"}
    with pytest.raises(ResponseValidationError) as caught:
        users_to_arrow([good, bad, user(3) | {"userId": "bob"}])
    cases = caught.value.failure_cases
    assert cases[["field", "value"]].values.tolist() == [["last_login_at", "yesterday"], ["user_id", "bob"]]
    assert list(cases.columns) == ["user_id", "field", "value", "reason"]
    assert "user usr_" in str(caught.value)


def test_a_user_listed_twice_is_kept_once_and_a_wrong_shape_is_an_api_error() -> None:
    table = users_to_arrow([user(1), user(2), user(1)])
    assert table.column("user_id").to_pylist() == [f"usr_{1:032x}", f"usr_{2:032x}"]
    with pytest.raises(ApiError, match="User shape"):
        users_to_arrow([user(1) | {"canManageStudies": {"yes": 1}}])
    assert users_to_arrow([]).schema.equals(USER_SCHEMA)
    assert isinstance(users_to_arrow([user(4)], include_phone=True).column("phone_number"), pa.ChunkedArray)


def test_a_level_or_invited_source_outside_the_contract_is_refused_and_a_new_role_is_kept() -> None:
    with pytest.raises(ResponseValidationError) as caught:
        users_to_arrow([user(1) | {"level": "superuser"}, user(2), user(3) | {"invitedSource": "sso"},
                        user(4) | {"level": "Admin"}])
    cases = caught.value.failure_cases
    assert cases[["field", "value"]].values.tolist() == [
        ["level", "superuser"], ["invited_source", "sso"], ["level", "Admin"]]
    kept = users_to_arrow([user(5) | {"clinicRole": "Nuclear Medicine Physician", "level": None}])
    assert kept.column("clinic_role").to_pylist() == ["Nuclear Medicine Physician"]  # not a target, not an error
