"""Work under a server's rate limit (the sandbox's ``rate_limit`` knob: requests per second
per key, 429 with ``Retry-After`` beyond it): fetch, refresh and a burst of concurrent
updates complete with default client settings, meeting few 429s; a call that stays rate
limited past ``rate_limit_deadline`` is ``RateLimited``; a stop during the client's shared
pause ends the wait at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import viewerkit as vk
from viewerkit import Client, ConfigurationError, RateLimited
from viewerkit.runner import Runner, run_all
from viewerkit.sandbox.server import Sandbox

#: (server rate limit in requests per second, studies): small enough to stay a few seconds
LIMITS = [(10.0, 2000), (2.0, 600)]


def statuses(server: Sandbox, since: int = 0) -> Counter[int | str | None]:
    return Counter(r["status"] for r in server.requests(since=since))


def assert_limited_but_nothing_failed(server: Sandbox, since: int = 0) -> None:
    """The server answered 429s (the limit was reached), every other answer was a success,
    and the 429s were fewer than the successes (the client adapted instead of hammering)."""
    seen = statuses(server, since)
    assert seen[429] >= 1, "the sandbox's limit should have been reached"
    assert set(seen) <= {200, 429}, seen
    assert seen[429] < seen[200], seen


@pytest.mark.parametrize(("rate", "studies"), LIMITS)
def test_fetch_completes_under_a_server_rate_limit(
    make_sandbox: Callable[..., Sandbox], rate: float, studies: int
) -> None:
    server = make_sandbox(studies=studies, seed=1, rate_limit=rate)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        limited = vk.fetch_studies(client, progress=False)
        assert_limited_but_nothing_failed(server)
        server.set_faults(rate_limit=None)
        free = vk.fetch_studies(client, progress=False)
    assert len(limited) == studies
    assert limited.equals(free)


@pytest.mark.parametrize(("rate", "studies"), LIMITS)
def test_full_and_active_refresh_complete_under_a_server_rate_limit(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path, rate: float, studies: int
) -> None:
    server = make_sandbox(studies=studies, seed=2, rate_limit=rate)
    cache = vk.StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        first = cache.refresh(client, "full", progress=False)
        assert (first.new, first.total) == (studies, studies)
        open_ids = [
            s["studyId"]
            for s in client.list_studies(is_cancelled=False, study_viewer_status="incomplete")["studies"][:3]
        ]
        for n, study_id in enumerate(open_ids):
            client.update_study(study_id, study_description=f"Reread {n}")
        assert open_ids, "the seed should give open studies"
        active = cache.refresh(client, "active", progress=False)
        assert (active.mode, active.changed, active.total) == ("active", len(open_ids), studies)
        again = cache.refresh(client, "full", progress=False)
        assert (again.new, again.changed, again.gone, again.unchanged) == (0, 0, 0, studies)
    assert_limited_but_nothing_failed(server)
    described = cache.load().set_index("study_id").loc[open_ids, "study_description"]
    assert list(described) == [f"Reread {n}" for n in range(len(open_ids))]


@pytest.mark.parametrize(("rate", "updates"), [(10.0, 60), (2.0, 20)])
def test_a_burst_of_concurrent_updates_completes_under_a_server_rate_limit(
    make_sandbox: Callable[..., Sandbox], rate: float, updates: int
) -> None:
    """As the bulk engine will send them: many update_study calls on the one runner, more
    workers than the server allows requests per second; each is applied exactly once."""
    server = make_sandbox(studies=updates, seed=3)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        ids = [s["studyId"] for s in client.iter_studies()]
        server.set_faults(rate_limit=rate)
        seen = len(server.requests())
        outcomes = run_all(
            lambda study_id: client.update_study(study_id, study_description="Reread"),
            ids, workers=16, progress=False,
        )
    assert [o.result["studyDescription"] for o in outcomes if o.result] == ["Reread"] * updates
    assert_limited_but_nothing_failed(server, since=seen)
    audit = server.audit()
    assert sorted(row["study_id"] for row in audit) == sorted(ids)  # once each


def test_429s_do_not_use_up_the_retries_meant_for_failures(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=10, rate_limit=3)
    with Client(api_key=server.api_key, base_url=server.base_url, max_retries=0) as client:
        pages = run_all(lambda _: client.list_studies(limit=2), range(12), workers=6, progress=False)
    assert all(len(o.result["studies"]) == 2 for o in pages if o.result)
    assert_limited_but_nothing_failed(server)


@pytest.mark.parametrize("deadline", [0.0, 2.0])
def test_a_call_rate_limited_past_its_deadline_is_rate_limited_naming_the_call(
    make_sandbox: Callable[..., Sandbox], deadline: float
) -> None:
    # one request per 20 s: the second call meets 429 with Retry-After 20 s, longer than the
    # deadline, so it raises at once instead of waiting (0: the first 429 raises)
    server = make_sandbox(studies=3, seed=4, rate_limit=0.05)
    with Client(
        api_key=server.api_key, base_url=server.base_url, rate_limit_deadline=deadline
    ) as client:
        study_id = client.list_studies(limit=1)["studies"][0]["studyId"]
        with pytest.raises(RateLimited) as caught:
            client.retrieve_study(study_id)
    error = caught.value
    assert str(error).startswith(f"retrieve_study {study_id}: 429 ")
    assert f"still rate limited after {deadline:g} s (the client's rate_limit_deadline)" in str(error)
    assert (error.call, error.study, error.status_code) == ("retrieve_study", study_id, 429)
    assert error.retry_after is not None and error.retry_after > deadline
    assert [r["status"] for r in server.requests()] == [200, 429]


@pytest.mark.parametrize("deadline", [-1.0, float("nan"), "300", True])
def test_a_deadline_that_is_not_seconds_is_a_configuration_error(deadline: Any) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit_deadline must be 0 or more seconds"):
        Client(api_key="sk-example", base_url="http://127.0.0.1:9", rate_limit_deadline=deadline)


@pytest.mark.parametrize("how", ["ctrl-c", "a failed task"])
def test_a_stop_during_the_shared_pause_ends_the_wait_at_once(
    make_sandbox: Callable[..., Sandbox], how: str
) -> None:
    """One request per 50 s: the first retrieve is served, the others meet 429 with
    Retry-After 50 s (or, sent later, find the client paused) and wait in its shared pause, which the bar reports. Ctrl-C, or
    a failed task, ends the wait at once (the test would take a minute otherwise) and no
    retry is sent."""
    server = make_sandbox(studies=4, seed=5)
    client = Client(api_key=server.api_key, base_url=server.base_url)
    ids = [s["studyId"] for s in client.iter_studies()]
    server.set_faults(rate_limit=0.02)
    seen = len(server.requests())
    shown: list[str] = []

    def watch(runner: Runner) -> None:
        for _ in range(600):  # until the runner shows the reported wait (at most 30 s)
            if runner.waiting is not None:
                shown.append(runner.waiting)
                break
            time.sleep(0.05)
        if how == "a failed task":
            raise ValueError("a page failed")

    before = set(threading.enumerate())
    expected = KeyboardInterrupt if how == "ctrl-c" else ValueError
    with client, pytest.raises(expected), Runner(workers=5, progress=False) as runner:
        for study_id in ids:
            runner.submit(study_id, client.retrieve_study, study_id)
        runner.submit("watch", watch, runner)
        for outcome in runner.outcomes():
            if outcome.key == "watch":
                raise KeyboardInterrupt  # as Ctrl-C would, in the thread iterating
    assert len(shown) == 1 and shown[0].endswith(" s: rate limited by the server"), shown
    # one served; the others met 429, or (sent after the first 429) never left the pause
    answered = statuses(server, seen)
    assert answered[200] == 1 and 1 <= answered[429] <= 3 and set(answered) == {200, 429}
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_a_retry_backoff_is_shown_on_the_bar_as_a_wait(make_sandbox: Callable[..., Sandbox]) -> None:
    """Four 503s in a row: the client backs off longer each time, and while it waits the
    runner's bar says so and why, instead of sitting silent."""
    server = make_sandbox(studies=2, seed=5)
    client = Client(api_key=server.api_key, base_url=server.base_url, max_retries=5)
    study_id = next(iter(client.iter_studies()))["studyId"]
    server.fail_next(4, method="GET", path=f"/v1/viewer/studies/{study_id}", how="503")
    shown: list[str] = []

    def watch(runner: Runner) -> None:
        for _ in range(400):  # at most 20 s: the four backoffs take a few seconds
            if runner.waiting is not None and runner.waiting not in shown:
                shown.append(runner.waiting)
            if "get" in done:
                return
            time.sleep(0.05)

    done: set[str] = set()
    with client, Runner(workers=2, progress=False) as runner:
        runner.submit("get", client.retrieve_study, study_id)
        runner.submit("watch", watch, runner)
        outcomes = {}
        for outcome in runner.outcomes():
            outcomes[outcome.key] = outcome
            done.add(outcome.key)
    assert outcomes["get"].ok and outcomes["watch"].ok
    assert shown and all(text.endswith(" s: retrying after HTTP 503") for text in shown), shown
    assert statuses(server, 0)[503] == 4
