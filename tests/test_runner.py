"""The one concurrent runner: outcomes, priorities, errors, and a prompt, clean stop."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from viewerkit.runner import Outcome, Runner, pause, report_waiting, run_all, stop_requested


def _runner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("viewerkit")]


def test_outcomes_carry_keys_and_follow_up_tasks_run() -> None:
    seen: list[Outcome[Any]] = []
    with Runner(workers=3, progress=False) as runner:
        for n in range(5):
            runner.submit(("first", n), lambda n=n: n * 10)
        for outcome in runner.outcomes():
            seen.append(outcome)
            if outcome.key[0] == "first" and outcome.key[1] < 2:
                runner.submit(("follow-up", outcome.key[1]), lambda n=outcome.key[1]: -n)
    results = {o.key: o.result for o in seen}
    assert results == {
        **{("first", n): n * 10 for n in range(5)},
        ("follow-up", 0): 0,
        ("follow-up", 1): -1,
    }
    assert all(o.ok for o in seen)
    assert not _runner_threads()


def test_queued_tasks_start_highest_priority_first() -> None:
    started: list[str] = []
    gate = threading.Event()
    with Runner(workers=1, progress=False) as runner:
        runner.submit("blocker", gate.wait, 30)
        for name, priority in (("low", 0.0), ("high", 5.0), ("middle", 1.0), ("low-2", 0.0)):
            runner.submit(name, started.append, name, priority=priority)
        gate.set()
        list(runner.outcomes())
    assert started == ["high", "middle", "low", "low-2"]


def test_a_failed_task_stops_the_run_and_queued_tasks_never_start() -> None:
    ran: list[int] = []
    with pytest.raises(ValueError, match="page 3 failed"), Runner(workers=1, progress=False) as runner:
        for n in range(10):
            runner.submit(n, _fail_at_three, n, ran)
        list(runner.outcomes())
    assert ran == [0, 1, 2, 3]
    assert not _runner_threads()


def _fail_at_three(n: int, ran: list[int]) -> int:
    ran.append(n)
    if n == 3:
        raise ValueError(f"page {n} failed")
    return n


def test_collected_errors_become_outcomes_but_fatal_ones_stop() -> None:
    outcomes = run_all(int, ["1", "x", "3"], workers=2, progress=False, errors="collect")
    assert [o.key for o in outcomes] == ["1", "x", "3"]
    assert [o.result for o in outcomes] == [1, None, 3]
    assert isinstance(outcomes[1].error, ValueError) and not outcomes[1].ok

    class Fatal(Exception):
        pass

    def check(item: str) -> str:
        if item == "stop":
            raise Fatal(item)
        return item

    with pytest.raises(Fatal):
        run_all(check, ["a", "stop", "b"], workers=1, progress=False, errors="collect", fatal=(Fatal,))


def test_ctrl_c_stops_tasks_waiting_out_a_backoff_at_once() -> None:
    """A task in flight sits in pause() (as the client does between retries); Ctrl-C in the
    iterating thread makes pause() return True, the task ends, no thread is left."""
    in_backoff = threading.Event()
    told_to_stop: list[bool] = []

    def retrying_call() -> None:
        assert not stop_requested()
        in_backoff.set()
        told_to_stop.append(pause(3600.0))  # would hang the test if the stop did not reach it

    queued_ran: list[int] = []
    with pytest.raises(KeyboardInterrupt), Runner(workers=2, progress=False) as runner:
        runner.submit("in flight", retrying_call, priority=2)
        runner.submit("tick", in_backoff.wait, 30, priority=1)
        runner.submit("queued", queued_ran.append, 1)
        for outcome in runner.outcomes():
            assert outcome.key == "tick" and outcome.result is True
            raise KeyboardInterrupt  # as Ctrl-C would, in the thread iterating
    assert told_to_stop == [True]
    assert queued_ran == []
    assert not _runner_threads()
    assert runner.stopping
    with pytest.raises(RuntimeError, match="stopping"):
        runner.submit("late", print)


def test_pause_outside_a_run_is_a_plain_sleep() -> None:
    assert pause(0.001) is False
    assert stop_requested() is False


def test_run_all_keeps_item_order_whatever_finishes_first() -> None:
    gates = [threading.Event() for _ in range(4)]

    def wait_for_next(i: int) -> int:
        # item i finishes only after item i + 1 did: completion order is the reverse
        if i < 3:
            assert gates[i + 1].wait(30)
        gates[i].set()
        return i

    outcomes = run_all(wait_for_next, [0, 1, 2, 3], workers=4, progress=False)
    assert [o.result for o in outcomes] == [0, 1, 2, 3]


def test_a_stop_reaches_calls_waiting_for_a_rate_limit_token(sandbox: Any) -> None:
    """With a client-side rate limit of one request per 1000 s, three calls wait for a
    token; a failed task stops the run, and they give up at once instead of sleeping it out
    (the test would hang otherwise), sending nothing."""
    from viewerkit import Client

    before = sandbox.requests()
    since = before[-1]["seq"] if before else 0
    study_id = "stu_" + "0" * 32
    client = Client(api_key=sandbox.api_key, base_url=sandbox.base_url, rate_limit=0.001)
    sent = threading.Event()

    def first_then_fail() -> None:
        assert sent.wait(30)
        raise ValueError("a page failed")

    def retrieve() -> Any:
        from viewerkit.errors import NotFound

        try:
            return client.retrieve_study(study_id)
        except NotFound:
            return None
        finally:
            sent.set()

    with client, pytest.raises(ValueError, match="a page failed"), Runner(workers=5, progress=False) as runner:
        for n in range(4):
            runner.submit(n, retrieve)
        runner.submit("fail", first_then_fail)
        list(runner.outcomes())
    reached = [r for r in sandbox.requests(since=since) if r["path"].endswith(study_id)]
    assert len(reached) == 1  # the one token of the bucket; the waiting calls sent nothing
    assert not _runner_threads()


def test_a_reported_wait_shows_beside_the_bar_until_it_is_over() -> None:
    seen: list[str | None] = []

    def waiting_task(runner: Runner) -> None:
        report_waiting(2.0, "rate limited by the server")
        # the thread iterating draws it within a poll (0.2 s), and clears it once it is over
        for want_shown in (True, False):
            for _ in range(3000):
                if (runner.waiting is not None) is want_shown:
                    seen.append(runner.waiting)
                    break
                pause(0.01)

    with Runner(workers=2, progress=False) as runner:
        runner.submit("waits", waiting_task, runner)
        list(runner.outcomes())
    assert seen[0] in ("waiting 2 s: rate limited by the server", "waiting 1 s: rate limited by the server")
    assert seen[1:] == [None]
    report_waiting(5.0, "outside a run")  # nothing to show it: no error


def test_progress_may_be_a_tqdm_class_that_draws_the_bar_elsewhere() -> None:
    import io

    from tqdm import tqdm

    made: list[tqdm[Any]] = []
    drawn = io.StringIO()

    def board_bar(**kwargs: Any) -> tqdm[Any]:  # as the triage board's: the bar goes in a widget
        bar = tqdm(file=drawn, **kwargs)
        made.append(bar)
        return bar

    outcomes = run_all(str.upper, ["a", "b", "c"], workers=2, progress=board_bar, desc="applying", unit="row")
    assert [o.result for o in outcomes] == ["A", "B", "C"]
    assert len(made) == 1 and made[0].desc == "applying" and made[0].total == 3 and made[0].unit == " row"
    assert made[0].n == 3 and "3/3" in drawn.getvalue()  # every finished task counted on it


def test_progress_none_zero_and_one_are_flags_and_anything_else_is_refused() -> None:
    from viewerkit.errors import ValidationError

    for flag in (None, 0, 1, False):
        assert [o.result for o in run_all(len, ["ab"], workers=1, progress=flag)] == [2]  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="progress"):
        run_all(len, ["ab"], workers=1, progress="yes")  # type: ignore[arg-type]
