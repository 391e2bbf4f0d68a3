"""Fault and load knobs for the sandbox: added latency, failures, a rate limit.

``FaultMiddleware`` is pure ASGI and wraps only the ``/v1`` API (never ``/_sandbox/*`` or
the viewer page). Its ``Faults`` knobs can be changed while the server runs.

- ``latency_ms``: every request waits this long first (``asyncio.sleep``, so concurrent
  requests still overlap).
- ``fail_rate``: this share of requests fails, as a 500, a 503 or a dropped connection
  (headers sent, body cut short). Half of the failures happen *after* the request was
  handled, so a write may have been committed although its answer is lost.
- ``rate_limit``: requests per second per API key (a token bucket as deep as one second of
  requests, and at least one request, so a rate below 1/s still serves); beyond it the
  answer is 429 with ``Retry-After`` (seconds) and ``retry-after-ms``.

>>> faults = Faults(fail_rate=0.5, seed=1)
>>> faults.update(latency_ms=20)
>>> faults.snapshot()
{'latency_ms': 20.0, 'fail_rate': 0.5, 'rate_limit': None}
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

__all__ = ["Faults", "FaultMiddleware", "FAILURE_MODES"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: (when, how): before or after the request is handled; 500, 503 or a dropped connection.
FAILURE_MODES: tuple[tuple[str, str], ...] = tuple(
    (when, how) for when in ("before", "after") for how in ("500", "503", "drop")
)

_NOT_GIVEN: Any = object()


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

    def snapshot(self) -> dict[str, Any]:
        """The knobs as a dict."""
        with self._lock:
            return {
                "latency_ms": self.latency_ms,
                "fail_rate": self.fail_rate,
                "rate_limit": self.rate_limit,
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

    def draw_failure(self) -> tuple[str, str] | None:
        """The failure this request suffers, or None."""
        with self._lock:
            if self.fail_rate <= 0.0 or self._rng.random() >= self.fail_rate:
                return None
            return self._rng.choice(FAILURE_MODES)


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
    """ASGI middleware applying ``Faults`` to requests under ``/v1``."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1"):
            await self.app(scope, receive, send)
            return
        faults = self.faults
        if faults.rate_limit is not None:
            auth = b""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    auth = value
            key = hashlib.sha256(auth).hexdigest()
            wait = faults.take_token(key)
            if wait > 0:
                seconds = max(1, math.ceil(wait))
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
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000.0)
        failure = faults.draw_failure()
        if failure is None:
            await self.app(scope, receive, send)
            return
        when, how = failure
        if when == "before":
            await _fail(send, how)
            return

        # handle the request (committing any write), then lose the answer
        async def swallow(message: Message) -> None:
            return None

        await self.app(scope, receive, swallow)
        await _fail(send, how)
