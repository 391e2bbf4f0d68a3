"""The sandbox's roster: GET /v1/viewer/users and /v1/viewer/users/{userId}, read with plain
httpx, against the studies the same sandbox serves."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from raw_api import list_all_raw

from viewerkit.sandbox.server import Sandbox
from viewerkit.sandbox.store import Store
from viewerkit.sandbox.synth import NEW_RADIOLOGISTS
from viewerkit.schema import CLINIC_ROLES, INVITED_SOURCES, USER_LEVELS

USER_KEYS = {
    "userId", "email", "firstName", "lastName", "middleName", "suffix1", "suffix2",
    "phoneNumber", "clinicRole", "level", "canManageStudies", "hasDashboardAccess",
    "invitedSource", "createdAt", "lastLoginAt",
}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def http(server: Sandbox, key: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {key or server.api_key}"},
        timeout=30.0,
    )


def list_users_raw(server: Sandbox, params: dict[str, str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Every user the list endpoint returns for ``params``, following cursors."""
    users: list[dict[str, Any]] = []
    query = dict(params or {}, limit=str(limit))
    with http(server) as client:
        while True:
            response = client.get("/v1/viewer/users", params=query)
            assert response.status_code == 200, response.text
            page = response.json()
            users.extend(page["users"])
            if not page["hasMore"]:
                return users
            query["cursor"] = page["cursor"]


@pytest.fixture(scope="module")
def listed(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list_users_raw(sandbox)


@pytest.fixture(scope="module")
def studies(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list_all_raw(sandbox)


@pytest.fixture(scope="module")
def referenced(studies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every user a study names (assignee or creating user): ID -> the reference."""
    refs: dict[str, dict[str, Any]] = {}
    for study in studies:
        for side in ("assignedTo", "createdByUser"):
            if study.get(side):
                refs[study[side]["userId"]] = study[side]
    return refs


@pytest.fixture(scope="module")
def retrieved(sandbox: Sandbox, referenced: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    with http(sandbox) as client:
        for user_id in referenced:
            response = client.get(f"/v1/viewer/users/{user_id}")
            assert response.status_code == 200, response.text
            out[user_id] = response.json()
    return out


def test_every_assignee_and_creating_user_of_a_study_is_a_user_with_the_same_names(
    referenced: dict[str, dict[str, Any]], retrieved: dict[str, dict[str, Any]]
) -> None:
    assert len(referenced) >= 20
    for user_id, ref in referenced.items():
        user = retrieved[user_id]
        assert {k: user[k] for k in ref} == ref


def test_users_have_the_contract_shape(listed: list[dict[str, Any]]) -> None:
    assert listed
    for user in listed:
        assert set(user) == USER_KEYS
        assert re.fullmatch(r"usr_[0-9a-f]{32}", user["userId"])
        assert user["firstName"] and user["lastName"] and "@" in user["email"]
        assert user["clinicRole"] in CLINIC_ROLES
        assert user["level"] in USER_LEVELS and user["invitedSource"] in INVITED_SOURCES
        assert isinstance(user["canManageStudies"], bool) and isinstance(user["hasDashboardAccess"], bool)
        for name in ("createdAt", "lastLoginAt"):
            assert user[name] is None or TIME.fullmatch(user[name])
        assert user["phoneNumber"] is None or re.fullmatch(r"\d{10,15}", user["phoneNumber"])
    assert len({u["userId"] for u in listed}) == len(listed)
    assert len({u["email"] for u in listed}) == len(listed)
    assert [u["userId"] for u in listed] == sorted(u["userId"] for u in listed)
    assert sum(u["level"] == "owner" for u in listed) == 1


def test_users_whose_access_was_revoked_are_retrieved_but_not_listed(
    listed: list[dict[str, Any]], referenced: dict[str, dict[str, Any]],
    studies: list[dict[str, Any]],
) -> None:
    missing = set(referenced) - {u["userId"] for u in listed}
    assert 1 <= len(missing) <= 2
    # they have open work assigned: the case a reassignment must handle
    open_assignees = {
        s["assignedTo"]["userId"] for s in studies
        if s["assignedTo"] and s["studyViewerStatus"] == "incomplete" and not s["isCancelled"]
    }
    assert missing <= open_assignees


def test_some_radiologists_have_no_studies_and_some_users_are_not_radiologists(
    listed: list[dict[str, Any]], referenced: dict[str, dict[str, Any]]
) -> None:
    new = [u for u in listed if u["clinicRole"] == "Radiologist" and u["userId"] not in referenced]
    assert len(new) >= NEW_RADIOLOGISTS
    assert any(u["lastLoginAt"] is None for u in new)  # invited, never logged in
    assert any(not u["canManageStudies"] for u in new)
    staff = [u for u in listed if u["clinicRole"] != "Radiologist"]
    assert staff and not {u["userId"] for u in staff} & set(referenced)


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"level": "member"}, lambda u: u["level"] == "member"),
        ({"level": "admin"}, lambda u: u["level"] == "admin"),
        ({"invitedSource": "api"}, lambda u: u["invitedSource"] == "api"),
        ({"firstName": "A"}, lambda u: "a" in u["firstName"].lower()),
        ({"lastName": "sON"}, lambda u: "son" in u["lastName"].lower()),
        ({"level": "member", "invitedSource": "dashboard", "firstName": "e"},
         lambda u: u["level"] == "member" and u["invitedSource"] == "dashboard" and "e" in u["firstName"].lower()),
    ],
)
def test_list_filters_select_what_filtering_the_whole_list_selects(
    sandbox: Sandbox, listed: list[dict[str, Any]], params: dict[str, str], keep: Callable[[dict[str, Any]], bool]
) -> None:
    expected = [u for u in listed if keep(u)]
    assert expected  # the filter selects something in this world
    assert list_users_raw(sandbox, params, limit=3) == expected


def test_email_filter_is_an_exact_match_ignoring_case(sandbox: Sandbox, listed: list[dict[str, Any]]) -> None:
    someone = listed[5]
    assert list_users_raw(sandbox, {"email": someone["email"].upper()}) == [someone]
    assert list_users_raw(sandbox, {"email": someone["email"][1:]}) == []


def test_paging_with_any_limit_gives_each_user_once_and_25_by_default(
    sandbox: Sandbox, listed: list[dict[str, Any]]
) -> None:
    assert list_users_raw(sandbox, limit=1) == listed
    assert list_users_raw(sandbox, limit=7) == listed
    with http(sandbox) as client:
        page = client.get("/v1/viewer/users").json()
    assert len(page["users"]) == min(25, len(listed))
    assert page["hasMore"] is (len(listed) > 25)


def test_a_cursor_is_bound_to_the_filters_it_was_issued_with(sandbox: Sandbox) -> None:
    with http(sandbox) as client:
        first = client.get("/v1/viewer/users", params={"level": "member", "limit": 2}).json()
        assert first["hasMore"] and first["cursor"]
        same = client.get("/v1/viewer/users", params={"level": "member", "limit": 2, "cursor": first["cursor"]})
        assert same.status_code == 200
        for params in ({"level": "admin"}, {}, {"level": "member", "firstName": "a"}):
            other = client.get("/v1/viewer/users", params={**params, "cursor": first["cursor"]})
            assert other.status_code == 400 and other.json()["error"]["param"] == "cursor"
        # a study list cursor is not a user list cursor, nor the other way round
        study_cursor = client.get("/v1/viewer/studies", params={"limit": 1}).json()["cursor"]
        crossed = client.get("/v1/viewer/users", params={"cursor": study_cursor})
        assert crossed.status_code == 400 and crossed.json()["error"]["param"] == "cursor"
        plain = client.get("/v1/viewer/users", params={"limit": 2}).json()["cursor"]
        back = client.get("/v1/viewer/studies", params={"cursor": plain})
        assert back.status_code == 400 and back.json()["error"]["param"] == "cursor"
        garbage = client.get("/v1/viewer/users", params={"cursor": "not a cursor!"})
        assert garbage.status_code == 400 and garbage.json()["error"]["param"] == "cursor"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"level": "boss"}, "level"),
        ({"level": "Admin"}, "level"),
        ({"invitedSource": "email"}, "invitedSource"),
        ({"email": ""}, "email"),
        ({"firstName": ""}, "firstName"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"clinicRole": "Radiologist"}, "clinicRole"),
        ({"cursor": ""}, "cursor"),
    ],
)
def test_bad_list_queries_are_400_naming_the_parameter(sandbox: Sandbox, params: dict[str, str], param: str) -> None:
    with http(sandbox) as client:
        response = client.get("/v1/viewer/users", params=params)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error", "message": response.json()["error"]["message"], "param": param,
    }
    assert response.headers["x-should-retry"] == "false"


def test_a_parameter_given_twice_is_400(sandbox: Sandbox) -> None:
    with http(sandbox) as client:
        response = client.get("/v1/viewer/users?level=member&level=admin")
    assert response.status_code == 400 and response.json()["error"]["param"] == "level"


def test_retrieve_answers_404_for_an_unknown_user_and_400_for_a_malformed_id(sandbox: Sandbox) -> None:
    with http(sandbox) as client:
        unknown = client.get("/v1/viewer/users/usr_" + "0" * 32)
        malformed = client.get("/v1/viewer/users/usr_ABC")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    assert unknown.json()["error"]["param"] == "userId"
    assert malformed.status_code == 400 and malformed.json()["error"]["param"] == "userId"


def test_both_endpoints_need_the_api_key(sandbox: Sandbox, listed: list[dict[str, Any]]) -> None:
    for key in ("sk-wrong",):
        with http(sandbox, key) as client:
            assert client.get("/v1/viewer/users").status_code == 401
            assert client.get(f"/v1/viewer/users/{listed[0]['userId']}").status_code == 401
    with httpx.Client(base_url=sandbox.base_url) as anonymous:
        answer = anonymous.get("/v1/viewer/users")
    assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"


@pytest.fixture
def small(make_sandbox: Callable[..., Sandbox]) -> Iterator[Sandbox]:
    yield make_sandbox(studies=40, seed=3)


def test_fail_next_and_the_request_log_cover_the_user_endpoints(small: Sandbox) -> None:
    small.fail_next(1, method="GET", path="/v1/viewer/users")
    small.fail_next(1, method="GET", path="/v1/viewer/users/*", how="500")
    with http(small) as client:
        assert client.get("/v1/viewer/users").status_code == 503
        users = client.get("/v1/viewer/users").json()["users"]
        one = f"/v1/viewer/users/{users[0]['userId']}"
        assert client.get(one).status_code == 500
        assert client.get(one).status_code == 200
    log = [(r["path"], r["status"], r["fault"] is not None) for r in small.requests()]
    assert log == [
        ("/v1/viewer/users", 503, True),
        ("/v1/viewer/users", 200, False),
        (one, 500, True),
        (one, 200, False),
    ]


def test_the_rate_limit_and_fail_rate_knobs_strike_the_user_endpoints(small: Sandbox) -> None:
    small.set_faults(rate_limit=1)
    with http(small) as client:
        answers = [client.get("/v1/viewer/users", params={"limit": 1}) for _ in range(5)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited and all(int(a.headers["retry-after"]) >= 1 for a in limited)
        assert limited[0].json()["error"]["type"] == "rate_limit_error"
        small.set_faults(rate_limit=None, fail_rate=1.0)
        assert client.get("/v1/viewer/users").status_code >= 500
    assert any(r["status"] == 429 and r["path"] == "/v1/viewer/users" for r in small.requests())


def test_the_users_knob_sizes_the_roster_without_changing_the_studies(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    default = make_sandbox(studies=30, seed=4)
    bigger = make_sandbox(studies=30, seed=4, users=150)
    listed = list_users_raw(bigger)
    with _store(bigger) as store:
        assert len(store.user_ids()) == 150
    assert len(listed) == 150 - 2  # the two revoked users are not listed
    # seeded at the current minute, which may differ between the two: times (and UIDs,
    # which hold the creation time) move with it, nothing else does
    strip = ["createdAt", "updatedAt", "cancelledAt", "studyInstanceUid"]
    same = [{k: v for k, v in s.items() if k not in strip} for s in list_all_raw(default)]
    assert [{k: v for k, v in s.items() if k not in strip} for s in list_all_raw(bigger)] == same


class _store:
    def __init__(self, server: Sandbox) -> None:
        self.store = Store(server.db_path)

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def test_a_database_made_before_the_roster_serves_its_users_as_radiologists(tmp_path: Any) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE users (user_id TEXT PRIMARY KEY, email TEXT NOT NULL, first_name TEXT,"
        " last_name TEXT, middle_name TEXT, suffix1 TEXT, suffix2 TEXT)"
    )
    conn.execute("INSERT INTO users VALUES (?, 'a@x.example', 'Ann', 'Lee', NULL, 'MD', NULL)", ("usr_" + "a" * 32,))
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        user = store.get_user("usr_" + "a" * 32)
        page, more = store.list_users({}, 10)
    finally:
        store.close()
    assert user is not None and page == [user] and more is None
    assert (user["clinicRole"], user["level"], user["canManageStudies"], user["invitedSource"]) == (
        "Radiologist", "member", True, "dashboard",
    )


def test_a_user_added_or_revoked_while_serving_shows_in_the_next_list(small: Sandbox) -> None:
    before = list_users_raw(small)
    with _store(small) as store:
        joined = store.add_user(email="new.rad@avara-rad.example", first_name="New", last_name="Rad")
        assert store.set_user_revoked(before[0]["userId"]) is True
        assert store.set_user_revoked("usr_" + "0" * 32) is False
    after = list_users_raw(small)
    assert {u["userId"] for u in after} == {u["userId"] for u in before[1:]} | {joined}
    added = next(u for u in after if u["userId"] == joined)
    assert (added["clinicRole"], added["canManageStudies"], added["lastLoginAt"]) == ("Radiologist", True, None)
    assert TIME.fullmatch(added["createdAt"])
    with http(small) as client:  # revoked: still retrieved
        assert client.get(f"/v1/viewer/users/{before[0]['userId']}").json() == before[0]
