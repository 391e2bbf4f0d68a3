"""The one concurrent runner: many calls on a bounded thread pool, with a progress bar,
a prompt and clean stop, and one outcome per task.

Every concurrent job of viewerkit runs on it: the fetcher's page chains, the cache's
refresh reads, and the bulk engine's and triage board's actions. Threads, not asyncio, so
that it works inside a running Jupyter event loop.

- ``Runner(workers=...)`` is a context manager. ``submit(key, call, ...)`` queues a task;
  ``outcomes()`` yields an :class:`Outcome` as each task ends, and the caller may submit
  follow-up tasks while iterating (a page chain submits its next page). At most
  ``workers`` tasks are in flight; queued tasks start highest ``priority`` first, then in
  the order they were submitted.
- A task that raises stops the run (``errors="raise"``, the default): nothing more is
  started, and the error is re-raised from ``outcomes()``. With ``errors="collect"`` an
  ``Exception`` becomes the task's outcome instead (bulk apply: one failed study does not
  stop the others); exceptions of the types in ``fatal`` still stop the run.
- Ctrl-C (``KeyboardInterrupt`` in the thread iterating ``outcomes()``), a fatal error, or
  leaving the ``with`` block early: queued tasks are dropped, tasks in flight are waited
  for, and they stop waiting out retry backoffs at once (:func:`pause` returns True), so
  the stop takes about one request's time. No thread is left running.
- ``progress=True`` shows a ``tqdm.auto`` bar (a widget in notebooks, text in terminals);
  ``progress`` may instead be a tqdm class (or any callable taking tqdm's arguments), as
  ``tqdm.contrib.concurrent``'s ``tqdm_class`` is, to draw the bar elsewhere: the triage
  board passes one that puts it in the board. By default it counts finished tasks, ``advance(n)`` counts something else (studies).
  A task that waits for a reason worth telling (the client, when the server rate-limits it)
  calls :func:`report_waiting`; the bar shows "waiting 4 s: <reason>" until the wait ends.

>>> with Runner(workers=2, progress=False) as runner:
...     for n in (1, 2, 3):
...         runner.submit(n, pow, n, 2)
...     sorted(outcome.result for outcome in runner.outcomes())
[1, 4, 9]
>>> run_all(int, ["7", "x"], workers=2, progress=False, errors="collect")[1].ok
False
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from viewerkit.errors import Reason, ValidationError

__all__ = ["Runner", "Outcome", "Progress", "Stopped", "run_all", "pause", "stop_requested", "report_waiting", "progress_bar"]

T = TypeVar("T")

#: What every ``progress`` argument of viewerkit takes: True (a ``tqdm.auto`` bar), False
#: (none), or a tqdm class or factory called with tqdm's keyword arguments (``total``,
#: ``desc``, ``unit``, ``leave``), as ``tqdm.contrib.concurrent``'s ``tqdm_class``.
Progress = bool | Callable[..., Any]

#: How often the thread iterating ``outcomes()`` wakes, so that Ctrl-C is seen promptly.
_POLL_SECONDS = 0.2

_this_thread = threading.local()


def pause(seconds: float) -> bool:
    """Sleep ``seconds``, unless the run this thread works for is stopping: then return at
    once. True when the run is stopping (the caller should give up, not retry).

    Outside a :class:`Runner` task this is ``time.sleep`` and returns False. The client's
    retry backoff waits with it.

    >>> pause(0.0)
    False
    """
    stop: threading.Event | None = getattr(_this_thread, "stop", None)
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


def stop_requested() -> bool:
    """Is the run this thread works for stopping (Ctrl-C, a fatal error)? False outside a
    run.

    >>> stop_requested()
    False
    """
    stop: threading.Event | None = getattr(_this_thread, "stop", None)
    return stop is not None and stop.is_set()


def report_waiting(seconds: float, reason: str) -> None:
    """Tell the :class:`Runner` running this thread's task that the task waits ``seconds``
    because of ``reason`` (e.g. "rate limited by the server"); its progress bar shows it
    beside the count until the wait is over. Outside a Runner task it does nothing.

    Safe from any thread: the bar itself is only drawn by the thread iterating
    ``outcomes()``.

    >>> report_waiting(2.0, "rate limited by the server")  # outside a run: nothing shown
    """
    runner: Runner | None = getattr(_this_thread, "runner", None)
    if runner is not None:
        runner._tell_waiting(time.monotonic() + max(seconds, 0.0), reason)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """How one task ended: its ``key`` (given to ``submit``), and its ``result`` or the
    ``error`` it raised.

    >>> Outcome("stu_1", result=3).ok, Outcome("stu_1", error=ValueError("bad")).ok
    (True, False)
    """

    #: What the caller named the task by (a study ID, a chain, an index ...).
    key: Any
    #: The call's return value (None when it raised).
    result: T | None = None
    #: The exception the call raised, or None.
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Did the call return?"""
        return self.error is None


@dataclass(order=True)
class _Task:
    rank: tuple[float, int]
    key: Any = None
    call: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None


class Runner:
    """Runs tasks on at most ``workers`` threads (see the module docstring).

    ``progress``: show a bar described by ``desc``, counting ``unit`` up to ``total`` (None:
    open-ended). ``errors``: ``"raise"`` (a failed task stops the run) or ``"collect"``
    (failures become outcomes, except ``fatal`` exception types, which stop the run).
    """

    def __init__(
        self,
        workers: int,
        *,
        progress: Progress = True,
        desc: str | None = None,
        unit: str = "task",
        total: int | None = None,
        errors: Literal["raise", "collect"] = "raise",
        fatal: tuple[type[BaseException], ...] = (),
        count_tasks: bool = True,
        name: str = "viewerkit",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be 1 or more")
        self.workers = workers
        self._errors = errors
        self._fatal = fatal
        self._count_tasks = count_tasks
        self._stop = threading.Event()
        self._queue: list[_Task] = []
        self._order = itertools.count()
        self._in_flight: dict[Future[Any], Any] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        # the latest wait a task reported (until, reason), and what the bar shows of it
        self._waiting_lock = threading.Lock()
        self._waiting: tuple[float, str] | None = None
        self._shown_waiting: str | None = None
        self._bar = progress_bar(progress, total=total, desc=desc, unit=f" {unit}")

    # -- the caller's side ------------------------------------------------------------------

    def submit(
        self, key: Any, call: Callable[..., Any], *args: Any, priority: float = 0.0, **kwargs: Any
    ) -> None:
        """Queue ``call(*args, **kwargs)``; its outcome will carry ``key``. Higher
        ``priority`` starts first."""
        if self._stop.is_set():
            raise RuntimeError("the run is stopping: nothing more can be submitted")
        heapq.heappush(self._queue, _Task((-priority, next(self._order)), key, call, args, kwargs))

    def outcomes(self) -> Iterator[Outcome[Any]]:
        """Yield each task's outcome as it ends, until nothing is queued or in flight."""
        while self._queue or self._in_flight:
            self._start_queued()
            done, _ = wait(self._in_flight, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            self._show_waiting()
            for future in done:
                key = self._in_flight.pop(future)
                error = future.exception()
                if error is not None and (
                    self._errors == "raise"
                    or not isinstance(error, Exception)
                    or isinstance(error, self._fatal)
                ):
                    self.stop()
                    raise error
                if self._count_tasks:
                    self._bar.update(1)
                yield Outcome(key, result=None if error else future.result(), error=error)

    def advance(self, amount: int) -> None:
        """Move the progress bar by ``amount`` (with ``count_tasks=False``: e.g. studies)."""
        self._bar.update(amount)

    def note(self, text: str) -> None:
        """Show ``text`` beside the bar (e.g. "waiting 2.0 s: rate limited")."""
        self._bar.set_postfix_str(text, refresh=True)

    @property
    def waiting(self) -> str | None:
        """What the bar shows of a wait a task reported (:func:`report_waiting`), e.g.
        ``"waiting 3 s: rate limited by the server"``; None when no reported wait is on."""
        return self._shown_waiting

    def stop(self) -> None:
        """Start nothing more; tasks in flight stop waiting out retry backoffs."""
        self._stop.set()
        self._queue.clear()

    @property
    def stopping(self) -> bool:
        """Was :meth:`stop` called (or the run interrupted)?"""
        return self._stop.is_set()

    # -- internals ----------------------------------------------------------------------------

    def _tell_waiting(self, until: float, reason: str) -> None:
        with self._waiting_lock:
            if self._waiting is None or until >= self._waiting[0]:
                self._waiting = (until, reason)

    def _show_waiting(self) -> None:
        """Show (or clear) the reported wait; only the thread iterating draws the bar."""
        with self._waiting_lock:
            waiting = self._waiting
        left = waiting[0] - time.monotonic() if waiting is not None else 0.0
        text = f"waiting {math.ceil(left)} s: {waiting[1]}" if waiting is not None and left > 0 else None
        if text != self._shown_waiting:
            self._shown_waiting = text
            self.note(text or "")

    def _start_queued(self) -> None:
        while self._queue and len(self._in_flight) < self.workers and not self._stop.is_set():
            task = heapq.heappop(self._queue)
            assert task.call is not None
            future = self._pool.submit(self._run, task.call, task.args, task.kwargs or {})
            self._in_flight[future] = task.key

    def _run(self, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._stop.is_set():
            raise Stopped()
        previous = getattr(_this_thread, "stop", None), getattr(_this_thread, "runner", None)
        _this_thread.stop, _this_thread.runner = self._stop, self
        try:
            return call(*args, **kwargs)
        finally:
            _this_thread.stop, _this_thread.runner = previous

    def close(self) -> None:
        """Stop, wait for the tasks in flight, close the bar (``with`` does this)."""
        self.stop()
        for future in self._in_flight:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._in_flight.clear()
        self._bar.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def progress_bar(progress: Progress, **kwargs: Any) -> Any:
    """The tqdm bar a ``progress`` argument asks for, made with tqdm's keyword ``kwargs``:
    a ``tqdm.auto`` bar (True), a disabled one (False), or ``progress(**kwargs)``.

    >>> progress_bar(False, total=3).disable, progress_bar(None, total=3).disable
    (True, True)
    """
    if progress is None or isinstance(progress, (bool, int)):  # None, 0 and 1 as before: a flag
        from tqdm.auto import tqdm

        return tqdm(disable=not progress, **kwargs)
    if not callable(progress):
        raise ValidationError.one("progress", "progress", progress, Reason.WRONG_TYPE,
                                  detail="True, False, or a tqdm class")
    return progress(**kwargs)


class Stopped(Exception):
    """The outcome of a task that was queued but not started when the run stopped (a
    Ctrl-C, a fatal error): it was never called."""


def run_all(
    call: Callable[[Any], T],
    items: Iterable[Hashable],
    *,
    workers: int,
    progress: Progress = True,
    desc: str | None = None,
    unit: str = "task",
    errors: Literal["raise", "collect"] = "raise",
    fatal: tuple[type[BaseException], ...] = (),
) -> list[Outcome[T]]:
    """``call(item)`` for every item on a :class:`Runner`; the outcomes in item order
    (``Outcome.key`` is the item). Raises the first error unless ``errors="collect"``.

    >>> [o.result for o in run_all(len, ["a", "bb"], workers=2, progress=False)]
    [1, 2]
    """
    items = list(items)
    found: dict[int, Outcome[T]] = {}
    with Runner(
        workers, progress=progress, desc=desc, unit=unit, total=len(items), errors=errors,
        fatal=fatal,
    ) as runner:
        for index, item in enumerate(items):
            runner.submit(index, call, item)
        for outcome in runner.outcomes():
            found[outcome.key] = Outcome(items[outcome.key], outcome.result, outcome.error)
    return [found[index] for index in range(len(items))]
