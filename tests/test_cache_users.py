"""The cache keeps the Viewer user list beside the studies (issue 12): every refresh reads
it, `load_users` gives it back verified, the roster works offline from the cache, and a
radiologist who joined today is there after the next active refresh; against real sandboxes
(a wire-level fake only for the 403 the sandbox never answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from viewerkit import CacheError, Client, StudyCache, fetch_users, roster
from viewerkit.sandbox.server import Sandbox
from viewerkit.sandbox.store import Store
from viewerkit.users import USER_SCHEMA

USERS_PATH = "/v1/viewer/users"


def _client(sb: Sandbox, **kwargs: Any) -> Client:
    return Client(api_key=sb.api_key, base_url=sb.base_url, **kwargs)


def _sorted(users: pd.DataFrame) -> pd.DataFrame:
    return users.sort_values("user_id").reset_index(drop=True)


def test_the_cache_keeps_the_user_list_and_the_roster_works_offline(
    make_sandbox: Any, tmp_path: Path
) -> None:
    server: Sandbox = make_sandbox(studies=300, seed=12)
    cache = StudyCache(tmp_path)
    now = pd.Timestamp.now(tz="UTC")
    with _client(server) as client:
        cache.refresh(client, progress=False)
        live_users = fetch_users(client, progress=False)
        live = roster(live_users, cache.load(client), now=now)
    cached_users = StudyCache(tmp_path).load_users()  # no client: offline, the only namespace
    pd.testing.assert_frame_equal(_sorted(cached_users), _sorted(live_users))
    assert list(cached_users.columns) == USER_SCHEMA.names and "phone_number" not in cached_users
    offline = roster(cached_users, StudyCache(tmp_path).load(), now=now)
    pd.testing.assert_frame_equal(offline, live)
    snapshot = StudyCache(tmp_path).read()
    assert snapshot.users is not None and len(snapshot.users) == len(live_users)


def test_a_radiologist_who_joined_today_is_there_after_the_next_active_refresh(
    make_sandbox: Any, tmp_path: Path
) -> None:
    server: Sandbox = make_sandbox(studies=200, seed=13)
    cache = StudyCache(tmp_path)
    with _client(server) as client:
        cache.refresh(client, progress=False)
        before = cache.load_users(client)
        store = Store(server.db_path)
        try:
            joined = store.add_user(email="new.rad@avara-rad.example", first_name="New", last_name="Rad")
            left = before["user_id"].iloc[0]
            assert store.set_user_revoked(left)
        finally:
            store.close()
        cache.refresh(client, mode="active", progress=False)
        after = cache.load_users(client)
        team = roster(after, cache.load(client))
    assert set(after["user_id"]) == (set(before["user_id"]) - {left}) | {joined}
    newcomer = team.set_index("user_id").loc[joined]
    assert (newcomer["open"], bool(newcomer["reassignment_target"])) == (0, True)
    # files of the previous user list are swept a refresh later, as the studies' are
    assert len(list(tmp_path.rglob("users-*.parquet"))) <= 2


def test_a_damaged_user_list_is_refused_naming_the_file(make_sandbox: Any, tmp_path: Path) -> None:
    server: Sandbox = make_sandbox(studies=50, seed=14)
    cache = StudyCache(tmp_path)
    with _client(server) as client:
        cache.refresh(client, progress=False)
    target = next(tmp_path.rglob("users-*.parquet"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=target.name):
        cache.load_users()
    assert len(cache.load()) == 50  # the studies are unharmed


def test_refresh_without_users_sends_no_user_request(make_sandbox: Any, tmp_path: Path) -> None:
    server: Sandbox = make_sandbox(studies=30, seed=15)
    cache = StudyCache(tmp_path)
    with _client(server) as client:
        cache.refresh(client, progress=False, users=False)
    assert not [r for r in server.requests() if r["path"].startswith(USERS_PATH)]
    assert len(cache.load_users()) == 0 and cache.load_users().columns.tolist() == USER_SCHEMA.names


class _NoUserList(httpx.BaseTransport):
    """The sandbox, except that the user list answers 403 (a key without that right), which
    the sandbox itself never does."""

    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith(USERS_PATH):
            self.refused += 1
            return httpx.Response(
                403, json={"error": {"type": "permission_error", "message": "not allowed"}}
            )
        return self.real.handle_request(request)

    def close(self) -> None:
        self.real.close()


def test_a_key_that_cannot_list_users_keeps_the_last_list_and_refreshes_on(
    make_sandbox: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server: Sandbox = make_sandbox(studies=40, seed=16)
    cache = StudyCache(tmp_path)
    with _client(server) as client:
        cache.refresh(client, progress=False)
        listed = cache.load_users(client)
    transport = _NoUserList()
    with httpx.Client(transport=transport) as http, Client(
        api_key=server.api_key, base_url=server.base_url, http_client=http
    ) as client:
        summary = cache.refresh(client, mode="active", progress=False)
        kept = cache.load_users(client)
    assert transport.refused == 1 and summary.total == 40
    assert "cannot list the Viewer's users" in caplog.text
    pd.testing.assert_frame_equal(kept, listed)
