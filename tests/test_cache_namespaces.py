"""A cache holding several API namespaces (issue 11, the namespace trap): listed, chosen by
--namespace / VIEWERKIT_NAMESPACE / namespace=, moved to a rotated key with `adopt` (history
kept, another organisation's key refused), removed; against real sandboxes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from viewerkit import CacheError, Client, StudyCache, ValidationError
from viewerkit.cache import NAMESPACE_VARIABLE, namespace_of
from viewerkit.cli import main
from viewerkit.sandbox import running
from viewerkit.sandbox.server import Sandbox, serving_key


def _client(sb: Sandbox) -> Client:
    return Client(api_key=sb.api_key, base_url=sb.base_url)


@pytest.fixture
def two(make_sandbox: Any, tmp_path: Path) -> tuple[StudyCache, Sandbox, Sandbox]:
    """One cache refreshed from two servers: two namespaces."""
    one, other = make_sandbox(studies=30, seed=1), make_sandbox(studies=50, seed=2)
    cache = StudyCache(tmp_path / "cache")
    for sb in (one, other):
        with _client(sb) as client:
            cache.refresh(client, progress=False)
    return cache, one, other


def test_several_namespaces_are_listed_and_the_error_says_how_to_choose(
    two: tuple[StudyCache, Sandbox, Sandbox],
) -> None:
    cache, one, other = two
    listed = {n["base_url"]: n for n in cache.namespaces()}
    assert {b: n["studies"] for b, n in listed.items()} == {one.base_url: 30, other.base_url: 50}
    assert all(n["last_refresh_at"] and n["metadata"] == "columns" for n in listed.values())
    with pytest.raises(CacheError) as caught:
        cache.load()
    message = str(caught.value)
    assert "--namespace" in message and NAMESPACE_VARIABLE in message and "viewerkit cache info" in message
    assert all(n["namespace"] in message for n in listed.values())
    assert one.api_key not in message and other.api_key not in message


def test_a_namespace_is_chosen_by_id_prefix_base_url_or_the_environment(
    two: tuple[StudyCache, Sandbox, Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, one, other = two
    ids = {n["base_url"]: n["namespace"] for n in cache.namespaces()}
    for chosen in (ids[one.base_url], ids[one.base_url][:6], one.base_url, one.base_url + "/"):
        assert len(StudyCache(cache.path, namespace=chosen).load()) == 30
        assert len(StudyCache(cache.path, namespace=chosen).history()) == 30
    monkeypatch.setenv(NAMESPACE_VARIABLE, ids[other.base_url][:5])
    assert StudyCache.at(cache.path).info()["studies"] == 50
    # a client still reads its own namespace, whatever the environment says
    with _client(one) as client:
        assert len(StudyCache.at(cache.path).load(client)) == 30
    for bad in ("nope", "http://127.0.0.1:1", "abc"):
        with pytest.raises(ValidationError, match="holds no namespace"):
            StudyCache(cache.path, namespace=bad).load()


def test_the_cli_lists_several_namespaces_and_reads_the_chosen_one(
    two: tuple[StudyCache, Sandbox, Sandbox],
) -> None:
    cache, one, other = two
    ids = {n["base_url"]: n["namespace"] for n in cache.namespaces()}
    env = {"AVARA_API_KEY": "", "VIEWERKIT_NAMESPACE": ""}
    runner = CliRunner()
    listed = runner.invoke(main, ["cache", "info", "--cache", str(cache.path)], env=env)
    assert listed.exit_code == 0, listed.output
    assert "holds 2 API namespaces" in listed.output and "--namespace" in listed.output
    for base_url, namespace in ids.items():
        assert namespace in listed.output and base_url in listed.output
    chosen = runner.invoke(
        main, ["cache", "info", "--cache", str(cache.path), "--namespace", ids[other.base_url][:6]],
        env=env,
    )
    assert chosen.exit_code == 0, chosen.output
    assert "studies: 50" in chosen.output and f"base_url: {other.base_url}" in chosen.output
    by_env = runner.invoke(
        main, ["cache", "info", "--cache", str(cache.path)],
        env={**env, "VIEWERKIT_NAMESPACE": one.base_url},
    )
    assert by_env.exit_code == 0 and "studies: 30" in by_env.output, by_env.output


def test_a_rotated_key_adopts_the_namespace_and_keeps_its_history(tmp_path: Path) -> None:
    """The same server and data with a new key: without adopt the next refresh would start
    a new namespace (every study "new"); adopted, the history goes on."""
    db = tmp_path / "kept.db"
    cache = StudyCache(tmp_path / "cache")
    with running(studies=40, seed=9, db_path=db) as sb, _client(sb) as client:
        cache.refresh(client, progress=False)
        old_key, old_namespace = sb.api_key, namespace_of(client.base_url, client.key_fingerprint)
        client.update_study(cache.load(client)["study_id"].iloc[0], severity="stat")
        cache.refresh(client, progress=False)
    serving_key(db, rotate=True)
    with running(db_path=db) as sb, _client(sb) as client:
        assert sb.api_key != old_key
        runner = CliRunner()
        env = {"AVARA_API_KEY": sb.api_key, "AVARA_BASE_URL": sb.base_url}
        refused = runner.invoke(
            main, ["cache", "adopt", "--cache", str(cache.path), "--from", old_namespace[:8]],
            env=env, input="n\n",
        )
        assert refused.exit_code == 1 and (cache.path / old_namespace).is_dir()  # not confirmed
        moved = runner.invoke(
            main, ["cache", "adopt", "--cache", str(cache.path), "--from", old_namespace[:8]],
            env=env, input="y\n",
        )
        assert moved.exit_code == 0, moved.output
        assert "history kept" in moved.output and sb.api_key not in moved.output
        assert [n["namespace"] for n in cache.namespaces()] == [
            namespace_of(client.base_url, client.key_fingerprint)
        ]
        summary = cache.refresh(client, mode="active", progress=False)
        history = cache.history(client)
    assert (summary.new, summary.gone) == (0, 0)
    assert sorted(history["change"].value_counts().items()) == [("changed", 1), ("new", 40)]
    assert len(cache.load()) == 40


def test_another_organisations_key_is_refused_and_nothing_moves(
    make_sandbox: Any, tmp_path: Path
) -> None:
    ours, theirs = make_sandbox(studies=20, seed=4), make_sandbox(studies=20, seed=5)
    cache = StudyCache(tmp_path / "cache")
    with _client(ours) as client:
        cache.refresh(client, progress=False)
    before = cache.namespaces()
    with _client(theirs) as client, pytest.raises(CacheError, match="another organisation"):
        cache.adopt(client, before[0]["namespace"])
    assert cache.namespaces() == before
    assert len(StudyCache(cache.path).load()) == 20


def test_an_adoption_interrupted_after_its_rename_is_completed_by_running_it_again(
    two: tuple[StudyCache, Sandbox, Sandbox],
) -> None:
    cache, one, _ = two
    ids = {n["base_url"]: n["namespace"] for n in cache.namespaces()}
    # the same server under another key: a client of the same base URL with a new key
    with Client(api_key=one.api_key + "x", base_url=one.base_url) as client:
        target = cache.path / namespace_of(client.base_url, client.key_fingerprint)
        os.replace(cache.path / ids[one.base_url], target)  # the rename, then a "crash"
        with pytest.raises(ValidationError, match=f"{target.name}: unreadable"):
            StudyCache(cache.path, namespace=target.name).load()
        info = cache.adopt(client, ids[one.base_url], check=False)
    assert info["studies"] == 30 and info["key_fingerprint"] == client.key_fingerprint
    assert len(StudyCache(cache.path, namespace=target.name).history()) == 30


def test_a_namespace_is_removed_on_request_only(two: tuple[StudyCache, Sandbox, Sandbox]) -> None:
    cache, one, other = two
    ids = {n["base_url"]: n["namespace"] for n in cache.namespaces()}
    runner = CliRunner()
    kept = runner.invoke(main, ["cache", "remove", "--cache", str(cache.path), ids[one.base_url]], input="n\n")
    assert kept.exit_code == 1 and len(cache.namespaces()) == 2
    gone = runner.invoke(main, ["cache", "remove", "--cache", str(cache.path), ids[one.base_url], "--yes"])
    assert gone.exit_code == 0, gone.output
    assert [n["base_url"] for n in cache.namespaces()] == [other.base_url]
    assert len(cache.load()) == 50  # the only one left needs no choosing
