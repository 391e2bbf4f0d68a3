"""Fault and load knobs for the sandbox (latency, failures, a rate limit), and the log of the
API requests they act on.

``FaultMiddleware`` is pure ASGI and wraps only the ``/v1`` API (never ``/_sandbox/*`` or
the viewer page). Its ``Faults`` knobs can be changed while the server runs.

- ``latency_ms``: every request waits this long first (``asyncio.sleep``, so concurrent
  requests still overlap).
- ``fail_rate``: this share of requests fails, as a 500, a 503 or a dropped connection
  (headers sent, body cut short). Half of the failures happen *after* the request was
  handled, so a write may have been committed although its answer is lost.
- ``fail_next(count, method=, path=, when=, how=)``: the deterministic twin of
  ``fail_rate``: exactly the next ``count`` requests matching ``method`` and ``path`` (exact,
  or a shell-style pattern such as ``/v1/viewer/studies/*``) fail ``before`` they are handled
  (nothing applied) or ``after`` (committed, answer lost), as ``500``, ``503`` or ``drop``.
  Armed faults strike first, in the order they were armed; ``snapshot()`` shows each one's
  ``remaining`` and ``struck`` counts.
- ``rate_limit``: requests per second per API key (a token bucket as deep as one second of
  requests, and at least one request, so a rate below 1/s still serves); beyond it the
  answer is 429 with ``Retry-After`` (seconds) and ``retry-after-ms``. A request refused
  this way is not handled, and no fault strikes it.

``RequestLog`` records every ``/v1`` request (the last 10,000) in arrival order: ``seq``
(1, 2, ...), ``method``, ``path``, ``status`` (the status the client got, ``"dropped"`` for
a cut connection, None while in flight), ``handled`` (the API's own status when the request was
handled, also when a fault then lost that answer; None when it was not handled) and
``fault`` (None, or ``{"when", "how", "source"}`` with source ``fail_next`` or
``fail_rate``). An entry is complete before its answer leaves the server.

>>> faults = Faults(fail_rate=0.5, seed=1)
>>> faults.update(latency_ms=20)
>>> faults.snapshot()
{'latency_ms': 20.0, 'fail_rate': 0.5, 'rate_limit': None, 'fail_next': []}
>>> faults = Faults()
>>> faults.fail_next(2, method="post", path="/v1/viewer/studies", when="after")["remaining"]
2
>>> faults.draw_failure("GET", "/v1/viewer/studies") is None
True
>>> faults.draw_failure("POST", "/v1/viewer/studies")
Strike(when='after', how='503', source='fail_next')
>>> faults.snapshot()["fail_next"][0]["struck"]
1
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import hashlib
import logging
import math
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple

import orjson

__all__ = ["Faults", "FaultMiddleware", "RequestLog", "Strike", "FAILURE_MODES"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WHEN = ("before", "after")
_HOW = ("500", "503", "drop")

#: (when, how): before or after the request is handled; 500, 503 or a dropped connection.
FAILURE_MODES: tuple[tuple[str, str], ...] = tuple((when, how) for when in _WHEN for how in _HOW)

_NOT_GIVEN: Any = object()
_MAX_ARMED_COUNT = 1_000_000
_METHOD = re.compile(r"[A-Za-z]{1,16}")


class Strike(NamedTuple):
    """The fault a request suffers: ``when`` (before/after), ``how`` (500/503/drop) and its
    ``source`` (``fail_next`` or ``fail_rate``)."""

    when: str
    how: str
    source: str


class _Armed:
    """One ``fail_next`` rule: the next ``remaining`` matching requests fail."""

    __slots__ = ("id", "method", "path", "when", "how", "count", "remaining")

    def __init__(
        self, id: int, method: str | None, path: str | None, when: str, how: str, count: int
    ) -> None:
        self.id = id
        self.method = method
        self.path = path
        self.when = when
        self.how = how
        self.count = count
        self.remaining = count

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and (self.method is None or self.method == method)
            and (self.path is None or fnmatch.fnmatchcase(path, self.path))
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "when": self.when,
            "how": self.how,
            "count": self.count,
            "remaining": self.remaining,
            "struck": self.count - self.remaining,
        }


class Faults:
    """The current fault knobs, safe to change from any thread while requests run."""

    def __init__(
        self,
        *,
        latency_ms: float = 0,
        fail_rate: float = 0.0,
        rate_limit: float | None = None,
        seed: int = 0,
    ) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._armed: list[_Armed] = []
        self._armed_ids = 0
        self.latency_ms = 0.0
        self.fail_rate = 0.0
        self.rate_limit: float | None = None
        self.update(latency_ms=latency_ms, fail_rate=fail_rate, rate_limit=rate_limit)

    def update(
        self,
        *,
        latency_ms: Any = _NOT_GIVEN,
        fail_rate: Any = _NOT_GIVEN,
        rate_limit: Any = _NOT_GIVEN,
    ) -> None:
        """Change some knobs; raises ValueError (naming the knob) for a bad value."""
        with self._lock:
            if latency_ms is not _NOT_GIVEN:
                if not _is_number(latency_ms) or not 0 <= latency_ms <= 600_000:
                    raise ValueError("latency_ms must be a number of milliseconds from 0 to 600000")
                self.latency_ms = float(latency_ms)
            if fail_rate is not _NOT_GIVEN:
                if not _is_number(fail_rate) or not 0.0 <= fail_rate <= 1.0:
                    raise ValueError("fail_rate must be a number from 0 to 1")
                self.fail_rate = float(fail_rate)
            if rate_limit is not _NOT_GIVEN:
                if rate_limit is not None and (not _is_number(rate_limit) or rate_limit <= 0):
                    raise ValueError("rate_limit must be a positive number of requests per second, or null")
                self.rate_limit = None if rate_limit is None else float(rate_limit)
                self._buckets.clear()

    def fail_next(
        self,
        count: int,
        *,
        method: str | None = None,
        path: str | None = None,
        when: str = "before",
        how: str = "503",
    ) -> dict[str, Any]:
        """Arm a deterministic fault: exactly the next ``count`` requests matching ``method``
        (any when None) and ``path`` (an exact ``/v1/...`` path or a shell-style pattern; any
        when None) fail ``when`` ("before": nothing applied; "after": handled and committed,
        the answer lost) as ``how`` ("500", "503" or "drop"). Returns the armed rule as a dict
        (``id``, ..., ``remaining``, ``struck``); raises ValueError naming the bad argument.
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_ARMED_COUNT:
            raise ValueError(f"count must be a whole number from 1 to {_MAX_ARMED_COUNT}")
        if method is not None and (not isinstance(method, str) or not _METHOD.fullmatch(method)):
            raise ValueError("method must be an HTTP method such as GET or POST, or null for any")
        if path is not None and (not isinstance(path, str) or not path.startswith("/v1/")):
            raise ValueError("path must be an API path under /v1/ (faults strike the API only), or null for any")
        if when not in _WHEN:
            raise ValueError("when must be before or after")
        if isinstance(how, int) and not isinstance(how, bool):
            how = str(how)
        if how not in _HOW:
            raise ValueError("how must be 500, 503 or drop")
        with self._lock:
            self._armed_ids += 1
            rule = _Armed(self._armed_ids, None if method is None else method.upper(), path, when, how, count)
            self._armed.append(rule)
            return rule.as_dict()

    def clear_fail_next(self) -> None:
        """Disarm and forget every ``fail_next`` rule (also the spent ones)."""
        with self._lock:
            self._armed.clear()

    def snapshot(self) -> dict[str, Any]:
        """The knobs as a dict; ``fail_next`` lists the armed rules, spent ones included."""
        with self._lock:
            return {
                "latency_ms": self.latency_ms,
                "fail_rate": self.fail_rate,
                "rate_limit": self.rate_limit,
                "fail_next": [rule.as_dict() for rule in self._armed],
            }

    def take_token(self, key: str) -> float:
        """0 when ``key`` may send now, else the seconds until it may."""
        with self._lock:
            rate = self.rate_limit
            if rate is None:
                return 0.0
            now = time.monotonic()
            # at least one request deep: a bucket shallower than that (rate < 1/s) never fills
            depth = max(1.0, rate)
            tokens, last = self._buckets.get(key, (depth, now))
            tokens = min(depth, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate

    def draw_failure(self, method: str, path: str) -> Strike | None:
        """The failure this request suffers, or None: the first armed rule matching it (which
        it uses up), else a draw of ``fail_rate``."""
        with self._lock:
            for rule in self._armed:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    return Strike(rule.when, rule.how, "fail_next")
            if self.fail_rate <= 0.0 or self._rng.random() >= self.fail_rate:
                return None
            when, how = self._rng.choice(FAILURE_MODES)
            return Strike(when, how, "fail_rate")


class RequestLog:
    """Every ``/v1`` request the sandbox received, oldest first; the last ``keep`` are kept
    (``received`` counts them all). Safe to read from any thread while requests run.

    >>> log = RequestLog()
    >>> entry = log.arrived("GET", "/v1/viewer/studies")
    >>> log.settle(entry, status=200, handled=200)
    >>> log.entries()
    [{'seq': 1, 'method': 'GET', 'path': '/v1/viewer/studies', 'status': 200, 'handled': 200, 'fault': None}]
    """

    def __init__(self, keep: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.received = 0

    def arrived(self, method: str, path: str) -> dict[str, Any]:
        """Record a request as it arrives; returns its entry, to be settled."""
        with self._lock:
            self.received += 1
            entry: dict[str, Any] = {
                "seq": self.received,
                "method": method,
                "path": path,
                "status": None,
                "handled": None,
                "fault": None,
            }
            self._entries.append(entry)
            return entry

    def settle(
        self,
        entry: dict[str, Any],
        *,
        status: int | str,
        handled: int | None = None,
        strike: Strike | None = None,
    ) -> None:
        """Record the answer of a request (before it is sent)."""
        with self._lock:
            entry["status"] = status
            entry["handled"] = handled
            entry["fault"] = None if strike is None else strike._asdict()

    def entries(self, since: int = 0) -> list[dict[str, Any]]:
        """Copies of the entries whose ``seq`` is above ``since``, oldest first."""
        with self._lock:
            return [
                {**entry, "fault": None if entry["fault"] is None else dict(entry["fault"])}
                for entry in self._entries
                if entry["seq"] > since
            ]


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _error_body(status: int, error_type: str, message: str) -> bytes:
    return orjson.dumps({"error": {"type": error_type, "message": message, "param": None}})


async def _send_error(send: Send, status: int, error_type: str, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = _error_body(status, error_type, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Dropped(Exception):
    """Raised to make the server abort a response midway (the client sees a cut connection)."""


class _QuietDrops(logging.Filter):
    """Keeps a dropped connection, which the knob asked for, out of the server's error log:
    uvicorn logs every exception that aborts a response as a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Dropped))


_QUIET_DROPS = _QuietDrops()


async def _drop(send: Send) -> None:
    # idempotent: a logger holds a filter once; uvicorn's logging setup keeps filters
    logging.getLogger("uvicorn.error").addFilter(_QUIET_DROPS)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"studies": [', "more_body": True})
    raise _Dropped("sandbox fault: connection dropped")


async def _fail(send: Send, how: str) -> None:
    if how == "500":
        await _send_error(send, 500, "api_error", "sandbox fault: internal server error")
    elif how == "503":
        await _send_error(send, 503, "api_error", "sandbox fault: service unavailable")
    else:
        await _drop(send)


class FaultMiddleware:
    """ASGI middleware applying ``Faults`` to requests under ``/v1`` and recording each one
    in ``log`` (a new ``RequestLog`` when not given). A request it passes on carries its
    ``seq`` and fault (None or ``{"when", "how", "source"}``) in the scope, under
    ``viewerkit.request`` and ``viewerkit.fault``, for the app's write audit."""

    def __init__(self, app: ASGIApp, faults: Faults, log: RequestLog | None = None) -> None:
        self.app = app
        self.faults = faults
        self.log = log if log is not None else RequestLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith("/v1"):
            await self.app(scope, receive, send)
            return
        faults = self.faults
        entry = self.log.arrived(str(scope.get("method", "")), path)
        if faults.rate_limit is not None:
            auth = b""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    auth = value
            key = hashlib.sha256(auth).hexdigest()
            wait = faults.take_token(key)
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                self.log.settle(entry, status=429)
                await _send_error(
                    send,
                    429,
                    "rate_limit_error",
                    f"rate limit of {faults.rate_limit:g} requests per second exceeded",
                    [
                        (b"retry-after", str(seconds).encode()),
                        (b"retry-after-ms", str(max(1, math.ceil(wait * 1000))).encode()),
                    ],
                )
                return
        # drawn on arrival, so that "the next N requests" means the next N to arrive
        strike = faults.draw_failure(entry["method"], path)
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000.0)
        # what the app's write audit records of this request: its seq here and its fault
        scope = {
            **scope,
            "viewerkit.request": entry["seq"],
            "viewerkit.fault": None if strike is None else strike._asdict(),
        }
        if strike is None:
            await self._handle(scope, receive, send, entry)
            return
        if strike.when == "before":
            self.log.settle(entry, status=_status_of(strike.how), strike=strike)
            await _fail(send, strike.how)
            return

        # handle the request (committing any write), then lose the answer
        handled: list[int] = []

        async def swallow(message: Message) -> None:
            if message["type"] == "http.response.start":
                handled.append(int(message["status"]))

        await self.app(scope, receive, swallow)
        self.log.settle(
            entry, status=_status_of(strike.how), handled=handled[0] if handled else None, strike=strike
        )
        await _fail(send, strike.how)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, entry: dict[str, Any]) -> None:
        """Pass the request on, settling its log entry before its last body part is sent."""
        status: list[int] = []

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self.log.settle(entry, status=status[0], handled=status[0])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            if entry["status"] is None:
                # an exception escaping the app is answered 500 by the server's outer layer
                self.log.settle(entry, status=500, handled=500)
            raise


def _status_of(how: str) -> int | str:
    return "dropped" if how == "drop" else int(how)
