"""``Client``: the synchronous, thread-safe Avara Viewer Studies API client.

One method per endpoint, snake_case keyword arguments, plain dicts back (a small result
object for cancel / uncancel / reroute URL). Every argument is validated before anything is
sent; failures raise the ``viewerkit.errors`` tree with a message naming the call and the
study, never the API key.

Inside the request path, shared by every thread using the client: a concurrency cap
(``max_concurrency``), an optional client-side rate limit (``rate_limit`` requests per
second, a token bucket), the retry policy (:func:`retry_delay`) and the adaptation to a
server's rate limit: after a 429 the whole client pauses for the server's hint (plus
jitter), lowers its concurrency (AIMD) and paces its requests just under the rate the server
accepts. 429s do not use up ``max_retries`` (meant for 5xx and connection failures); a call
meets them for at most ``rate_limit_deadline`` seconds, then raises ``RateLimited``.

>>> client = Client(api_key="sk-example", base_url="http://127.0.0.1:9")
>>> client
Client(base_url='http://127.0.0.1:9', key_fingerprint='f2d4b279b82a')
>>> client.retrieve_study("")
Traceback (most recent call last):
...
viewerkit.errors.ValidationError: retrieve_study: 1 problem
  field study_id: must not be empty (got '')
>>> client.close()
"""

from __future__ import annotations

import base64
import collections
import contextlib
import email.utils
import hashlib
import logging
import math
import os
import random
import threading
import time
import urllib.parse
import weakref
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from viewerkit.errors import (
    ApiConnectionError,
    ApiError,
    ConfigurationError,
    Conflict,
    Reason,
    ValidationError,
    error_for_status,
)
from viewerkit.runner import pause, report_waiting, stop_requested
from viewerkit.schema import (
    LIST_FILTERS,
    NOT_GIVEN,
    RULES,
    NotGiven,
    Severity,
    StudyFilterArgs,
    StudyFilters,
    UserFilterArgs,
    ViewerStatus,
    check_arguments,
    checked_user_filters,
    list_query_params,
    reference_failures,
    user_list_query_params,
    wire_body,
)

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import Unpack

__all__ = [
    "Client",
    "CursorTrail",
    "CancelResult",
    "RerouteUrl",
    "retry_delay",
    "environment_client",
    "DEFAULT_BASE_URL",
    "DEFAULT_RATE_LIMIT_DEADLINE",
]

log = logging.getLogger(__name__)

#: The hosted API, used when neither ``base_url=`` nor ``AVARA_BASE_URL`` is given.
DEFAULT_BASE_URL = "https://api.avarasoftware.com"

_STUDIES = "/v1/viewer/studies"
_USERS = "/v1/viewer/users"
_INITIAL_RETRY_DELAY = 0.5  # seconds; doubles per attempt
_MAX_BACKOFF = 8.0  # cap of our own exponential backoff
_MAX_RETRY_AFTER = 60.0  # cap of a server's Retry-After hint
#: httpx refuses a URL component longer than this (httpx._urlparse.MAX_URL_LENGTH).
_MAX_QUERY_LENGTH = 65_536
_SLOT_POLL_SECONDS = 0.2  # how often a call waiting for a concurrency slot checks for a stop
#: Set on a successful response by ``_send``: might an earlier try of the call have been applied?
_MAYBE_APPLIED = "viewerkit.maybe_applied"
#: Default of ``Client(rate_limit_deadline=)``: seconds one call may keep meeting 429.
DEFAULT_RATE_LIMIT_DEADLINE = 300.0
_HINT_JITTER = 0.2  # a 429's wait is the hint plus up to this fraction of it, at random
_RATE_WINDOW = 3.0  # seconds of accepted sends the pace is measured over
_RATE_SPAN_FLOOR = 1.0  # ... and at least this long (a server's bucket is ~1 s of requests deep)
_PACE_DECREASE = 0.9  # a 429 sets the pace to this fraction of the measured accepted rate
_PACE_STEP = 0.05  # requests/s added to the pace per accepted answer (~5 % of the pace per second)
_MIN_PACE = 1.0 / _MAX_RETRY_AFTER
_REPORT_WAIT_OVER = 0.5  # seconds: shorter rate-limit waits are not worth a note on the bar
_REDACTED = "<redacted>"


def _version() -> str:
    from viewerkit import __version__

    return __version__


@dataclass(frozen=True)
class CancelResult:
    """The answer to cancel / uncancel.

    >>> CancelResult(success=True, message="already cancelled", changed=False).changed
    False
    """

    #: True when the study is now in the asked state (also when it already was).
    success: bool
    #: The API's message, if it gave one (e.g. ``"already cancelled"``).
    message: str | None = None
    #: What this call did: True (it changed the study), False (the study was already in that
    #: state before the call), or None (unknown: an earlier try of this call may have been
    #: applied, its answer lost, so "already in that state" may be this call's own doing;
    #: the bulk engine resolves it from its before-image).
    changed: bool | None = True


@dataclass(frozen=True)
class RerouteUrl:
    """A secret, time-limited link into the viewer. Its repr and str never show it.

    >>> link = RerouteUrl("https://viewer.example/s/secret-token")
    >>> link, str(link)
    (RerouteUrl(<redacted>), 'RerouteUrl(<redacted>)')
    >>> link.reveal() == link.url
    True
    """

    #: The link itself: handle it like a password.
    url: str = field(repr=False)

    def reveal(self) -> str:
        """The link itself."""
        return self.url

    def __repr__(self) -> str:
        return f"RerouteUrl({_REDACTED})"

    __str__ = __repr__


# --- retry policy -------------------------------------------------------------------------


def _retry_after_hint(headers: httpx.Headers | None) -> float | None:
    """The server's wait hint in seconds: ``retry-after-ms``, then ``Retry-After`` (seconds
    or an HTTP date). None when absent or unreadable."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        seconds = _seconds(raw_ms, 1000.0)
        if seconds is not None:
            return seconds
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _seconds(raw, 1.0)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def _seconds(raw: str, per_second: float) -> float | None:
    """A numeric hint in seconds, or None when it is not a number ("nan" is not: it would
    make ``time.sleep`` raise)."""
    try:
        value = float(raw) / per_second
    except ValueError:
        return None
    if math.isnan(value):
        return None
    return max(value, 0.0)


def retry_delay(
    attempt: int,
    *,
    response: httpx.Response | None = None,
    error: Exception | None = None,
) -> float | None:
    """Seconds to wait before retrying after ``attempt`` (0 = the first try) failed, or None
    when this failure must not be retried. Whether the *call* may be retried at all (create)
    is decided by the caller.

    >>> retry_delay(0, response=httpx.Response(503, headers={"retry-after-ms": "1500"}))
    1.5
    >>> retry_delay(0, response=httpx.Response(429, headers={"Retry-After": "7"}))
    7.0
    >>> retry_delay(0, response=httpx.Response(429, headers={"Retry-After": "3600"}))
    60.0
    >>> retry_delay(0, response=httpx.Response(404)) is None
    True
    >>> 0.3 <= retry_delay(0, error=httpx.ConnectError("refused")) <= 0.5
    True
    """
    if error is not None:
        # No answer at all: refused, reset, timed out, or the server dropped the connection
        # mid-answer (RemoteProtocolError). The request may or may not have been applied;
        # only calls that are safe to repeat get here.
        if not isinstance(
            error, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
        ):
            return None
        hint = None
    else:
        assert response is not None
        status = response.status_code
        if status == 408:
            # The server timed out waiting for our request: send it again.
            pass
        elif status == 429:
            # Rate limited: wait as long as the server says (capped), else back off.
            pass
        elif status >= 500:
            # A server fault, usually transient.
            pass
        else:
            # 4xx other than 408/429: retrying cannot help (409 is resolved by create itself).
            return None
        hint = _retry_after_hint(response.headers)
    if hint is not None:
        return min(hint, _MAX_RETRY_AFTER)
    # Capped exponential backoff, with jitter so that many threads do not retry in step.
    backoff = min(_INITIAL_RETRY_DELAY * 2.0 ** min(attempt, 30), _MAX_BACKOFF)
    return backoff * (1.0 - 0.25 * random.random())


class _TokenBucket:
    """A thread-safe token bucket: at most ``rate`` acquisitions per second on average,
    bursts of up to ``max(1, rate)``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> bool:
        """Take a token, waiting for one; False (no token taken) when the run this thread
        works for stops meanwhile (``viewerkit.runner.pause``)."""
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return True
                wait = (1.0 - self.tokens) / self.rate
            if pause(wait):
                return False


class _Throttle:
    """How one client adapts to a server's rate limit, shared by every thread using it.

    - A 429 pauses the whole client (``paused_until``): no thread sends before the server's
      hint (plus jitter) has passed, so the threads stop spending their tries in one burst.
    - The number of requests in flight is capped by ``limit`` (AIMD): halved on a 429, grown
      back by one after ``limit`` answers in a row that were not 429; within 1 ..
      ``max_concurrency``. One halving per congestion event: a 429 to a request sent
      before the last halving does not halve again (``epoch``).
    - After the first 429 the client paces its sends (``pace`` requests per second): set to
      a little under the rate the server accepted in the last few seconds, and raised by a
      small step with every accepted answer, so that it follows the server's limit from
      just below it instead of overshooting into 429s.
    """

    def __init__(self, max_concurrency: int) -> None:
        self.condition = threading.Condition()
        self.max_concurrency = max_concurrency
        self.limit = max_concurrency
        self.in_flight = 0
        self.run = 0  # answers in a row that were not 429, since the limit last changed
        self.epoch = 0  # bumped by each decrease
        self.paused_until = 0.0
        self.pace: float | None = None  # requests per second, once a 429 was seen
        self.next_send = 0.0
        self.accepted: collections.deque[float] = collections.deque()  # send times answered not-429
        self.measured_over = _RATE_SPAN_FLOOR  # the span the last decrease measured over

    def enter(self) -> bool:
        """Take a slot under the concurrency limit, waiting for one; False (no slot taken)
        when the run this thread works for stops meanwhile."""
        with self.condition:
            while self.in_flight >= self.limit:
                if stop_requested():
                    return False
                self.condition.wait(_SLOT_POLL_SECONDS)
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self.condition:
            self.in_flight -= 1
            self.condition.notify_all()

    def turn(self) -> tuple[float, int]:
        """(0, epoch) when this thread may send now (its place in the pace is taken), else
        (seconds to wait before asking again, epoch)."""
        with self.condition:
            now = time.monotonic()
            if self.paused_until > now:
                return self.paused_until - now, self.epoch
            if self.pace is not None:
                if self.next_send > now:
                    return self.next_send - now, self.epoch
                self.next_send = now + 1.0 / self.pace
            return 0.0, self.epoch

    def accepted_answer(self, sent_at: float, epoch: int) -> None:
        """The server answered (not 429) a request sent at ``sent_at`` in ``epoch``."""
        with self.condition:
            self.accepted.append(sent_at)
            self._forget(time.monotonic())
            if self.pace is not None:
                self.pace += _PACE_STEP
                if epoch == self.epoch - 1:
                    # in flight when the last 429 set the pace: it counts towards the rate
                    # that decrease measured
                    self.pace += _PACE_DECREASE / self.measured_over
            self.run += 1
            if self.limit < self.max_concurrency and self.run >= self.limit:
                self.limit += 1
                self.run = 0
                self.condition.notify_all()

    def limited(self, epoch: int, wait: float) -> None:
        """A request sent in ``epoch`` met 429; the server asks for ``wait`` seconds."""
        with self.condition:
            now = time.monotonic()
            self.paused_until = max(self.paused_until, now + wait)
            if epoch != self.epoch:
                return  # sent before the last decrease: that decrease answered it already
            self.epoch += 1
            self.limit = max(1, self.limit // 2)
            self.run = 0
            self._forget(now)
            if self.accepted:
                self.measured_over = max(_RATE_SPAN_FLOOR, now - self.accepted[0])
                measured = len(self.accepted) / self.measured_over
            else:
                measured = 1.0 / max(wait, 1e-3)
            pace = _PACE_DECREASE * min(measured, self.pace if self.pace is not None else measured)
            self.pace = max(pace, _MIN_PACE)

    def _forget(self, now: float) -> None:
        while self.accepted and self.accepted[0] < now - _RATE_WINDOW:
            self.accepted.popleft()


# --- validation helpers --------------------------------------------------------------------


def _target(
    call: str, study_id: str | None, study_instance_uid: str | None
) -> tuple[dict[str, str], str]:
    """The body naming one study by ID or UID (checked by ``schema.reference_failures``),
    and the label for messages."""
    failures = reference_failures(study_id, study_instance_uid)
    if failures:
        raise ValidationError.from_cases(call, [f.case() for f in failures])
    body: dict[str, str] = {}
    if study_id is not None:
        body["studyId"] = study_id
    if study_instance_uid is not None:
        body["studyInstanceUid"] = study_instance_uid
    return body, str(study_id if study_id is not None else study_instance_uid)


# --- the client ----------------------------------------------------------------------------


class Client:
    """The Avara Viewer Studies API, synchronous and safe to share between threads.

    ``api_key`` and ``base_url`` default to the environment variables ``AVARA_API_KEY`` and
    ``AVARA_BASE_URL`` (else the hosted API). ``rate_limit`` caps requests per second
    client-wide; ``max_concurrency`` caps requests in flight. ``max_retries`` counts the
    retries of one call after 5xx, 408 and connection failures. A server's 429 is waited
    out instead, by all the threads of this client together (the hint plus jitter as a
    pause none of them sends in, fewer requests in flight, then a pace just under the
    server's rate), for at most ``rate_limit_deadline`` seconds per call (0: a 429 raises
    at once; ``math.inf``: no limit), then ``RateLimited`` naming the call.
    ``http_client`` is a transport seam: an ``httpx.Client`` of yours (we add the base URL
    and auth to each request, and do not close it).

    >>> with Client(api_key="sk-example", base_url="http://127.0.0.1:9/") as client:
    ...     client.base_url
    'http://127.0.0.1:9'
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        rate_limit: float | None = None,
        max_concurrency: int = 8,
        rate_limit_deadline: float = DEFAULT_RATE_LIMIT_DEADLINE,
        http_client: httpx.Client | None = None,
    ) -> None:
        # the key, and a base URL that may be a key given by position, leave this frame's
        # locals at once: a traceback that shows locals (IPython's verbose mode, pytest -l,
        # error trackers) must not show them
        given = [api_key, base_url]
        del api_key, base_url
        secret, url = _connection(given.pop(0), given.pop(0))
        if max_retries < 0:
            raise ConfigurationError("max_retries must be 0 or more")
        if max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be 1 or more")
        if rate_limit is not None and rate_limit <= 0:
            raise ConfigurationError("rate_limit must be a positive number of requests per second")
        if (
            isinstance(rate_limit_deadline, bool)
            or not isinstance(rate_limit_deadline, (int, float))
            or not rate_limit_deadline >= 0  # NaN too; math.inf: wait as long as it takes
        ):
            raise ConfigurationError("rate_limit_deadline must be 0 or more seconds")
        self.__key = secret
        self.__auth = _BearerAuth(secret)
        _LOG_SCRUBBER.watch(self, secret.forms)
        self._base_url = url
        self._fingerprint = hashlib.sha256(secret.value.encode()).hexdigest()[:12]
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.rate_limit_deadline = float(rate_limit_deadline)
        self._throttle = _Throttle(max_concurrency)
        self._bucket = _TokenBucket(rate_limit) if rate_limit is not None else None
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
        )
        self._headers = {"User-Agent": f"viewerkit/{_version()}", "Accept": "application/json"}

    # -- identity -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    @property
    def key_fingerprint(self) -> str:
        """A short SHA-256 of the API key: tells keys apart without revealing them."""
        return self._fingerprint

    def __repr__(self) -> str:
        # getattr: a traceback showing locals may repr a client that failed half-way in __init__
        base_url, fingerprint = getattr(self, "_base_url", None), getattr(self, "_fingerprint", None)
        return f"Client(base_url={base_url!r}, key_fingerprint={fingerprint!r})"

    def close(self) -> None:
        """Close the connection pool (not an ``http_client`` you supplied)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- endpoints ------------------------------------------------------------------------

    def create_study(
        self,
        *,
        severity: Severity,
        study_description: str,
        study_instance_uid: str,
        assigned_to: str | None | NotGiven = NOT_GIVEN,
        express_customer_id: str | None | NotGiven = NOT_GIVEN,
        metadata: Mapping[str, str] | None | NotGiven = NOT_GIVEN,
    ) -> dict[str, Any]:
        """Create a study; returns it.

        A retry that meets 409 for this UID after a try that may have been applied (a 5xx,
        or the connection lost mid-request) returns the existing study when it is the one
        sent (same severity, description, assignee, customer and metadata: an earlier try
        created it and its answer was lost); a study that differs is someone else's, and
        raises Conflict naming the fields that differ, as does any other 409 (first try, or
        after 408 / 429, which apply nothing)."""
        fields: dict[str, Any] = {
            "severity": severity,
            "study_description": study_description,
            "study_instance_uid": study_instance_uid,
            "assigned_to": assigned_to,
            "express_customer_id": express_customer_id,
            "metadata": metadata,
        }
        check_arguments("create_study", **fields)
        body = wire_body(**fields)
        try:
            response = self._send(
                "create_study", "POST", _STUDIES, study=study_instance_uid, json=body,
                conflict_on_retry_ok=True,
            )
        except _ConflictAfterRetry:
            existing = self.retrieve_study_by_uid(study_instance_uid)
            differing = _differences(body, existing)
            if differing:
                raise Conflict(
                    "a study with this Study Instance UID exists and is not the one sent "
                    f"(it differs in {', '.join(differing)})",
                    call="create_study", study=study_instance_uid, status_code=409,
                    param="studyInstanceUid",
                ) from None
            return existing
        return self._json("create_study", study_instance_uid, response)

    def list_studies_raw(
        self,
        filters: StudyFilters | None = None,
        /,
        *,
        limit: int | float | np.integer | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        **filter_args: Unpack[StudyFilterArgs],
    ) -> bytes:
        """One page of the study list as the response body bytes (for the Arrow path);
        arguments as :meth:`list_studies`."""
        params = list_query_params(filters, limit=limit, cursor=cursor, **filter_args)
        if len(str(httpx.QueryParams(params))) > _MAX_QUERY_LENGTH:
            # httpx refuses such a URL with InvalidURL; say which filter, before sending
            wire = max(params, key=lambda name: len(params[name]))
            field = next(f.name for f in LIST_FILTERS.values() if f.wire == wire)
            raise ValidationError.one(
                "list_studies", field, params[wire][:40] + "...", Reason.TOO_LONG,
                detail=f"the encoded query must stay within {_MAX_QUERY_LENGTH:,} characters",
            )
        response = self._send("list_studies", "GET", _STUDIES, params=params)
        return response.content

    def list_studies(
        self,
        filters: StudyFilters | None = None,
        /,
        *,
        limit: int | float | np.integer | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        **filter_args: Unpack[StudyFilterArgs],
    ) -> dict[str, Any]:
        """One page: ``{"studies": [...], "cursor": str | None, "hasMore": bool}``, newest first.

        The filters (``viewerkit.schema.StudyFilterArgs``: ``assigned_to``,
        ``express_customer_id``, ``is_cancelled``, ``severity``, ``study_description``,
        ``study_viewer_status``) come as keywords or as one ``StudyFilters``; ``None`` for
        ``assigned_to`` / ``express_customer_id`` selects "none". ``limit`` is 1-100 (the API's
        default 25), ``cursor`` the previous page's. Bad values raise ``ValidationError``
        before anything is sent."""
        raw = self.list_studies_raw(filters, limit=limit, cursor=cursor, **filter_args)
        page = _loads("list_studies", None, raw)
        if not isinstance(page, dict) or not isinstance(page.get("studies"), list):
            raise ApiError("the answer is not a page of studies", call="list_studies")
        return page

    def iter_studies(
        self,
        filters: StudyFilters | None = None,
        /,
        *,
        limit: int = 100,
        **filter_args: Unpack[StudyFilterArgs],
    ) -> Iterator[dict[str, Any]]:
        """Every study matching the filters (as :meth:`list_studies`), page after page
        (sequential; for a table use ``viewerkit.fetch_studies``)."""
        chosen = StudyFilters.of(filters, filter_args)
        trail = CursorTrail("list_studies")
        cursor: str | NotGiven | None = NOT_GIVEN
        while cursor is not None:
            page = self.list_studies(chosen, limit=limit, cursor=cursor)
            yield from page["studies"]
            cursor = trail.follow(page.get("cursor"), bool(page.get("hasMore")), len(page["studies"]))

    def retrieve_study(self, study_id: str) -> dict[str, Any]:
        """One study by its ID."""
        check_arguments("retrieve_study", study_id=study_id)
        response = self._send("retrieve_study", "GET", f"{_STUDIES}/{study_id}", study=study_id)
        return self._json("retrieve_study", study_id, response)

    def retrieve_study_by_uid(self, study_instance_uid: str) -> dict[str, Any]:
        """One study by its Study Instance UID."""
        check_arguments("retrieve_study_by_uid", study_instance_uid=study_instance_uid)
        response = self._send(
            "retrieve_study_by_uid",
            "GET",
            f"{_STUDIES}/by-uid/{study_instance_uid}",
            study=study_instance_uid,
        )
        return self._json("retrieve_study_by_uid", study_instance_uid, response)

    def update_study(
        self,
        study_id: str,
        *,
        assigned_to: str | None | NotGiven = NOT_GIVEN,
        metadata: Mapping[str, str] | None | NotGiven = NOT_GIVEN,
        severity: Severity | NotGiven = NOT_GIVEN,
        study_description: str | NotGiven = NOT_GIVEN,
        study_viewer_status: ViewerStatus | NotGiven = NOT_GIVEN,
    ) -> dict[str, Any]:
        """Change the given fields of a study; returns it. ``assigned_to=None`` unassigns,
        ``metadata=None`` clears the map (metadata replaces the whole map)."""
        fields: dict[str, Any] = {
            "assigned_to": assigned_to,
            "metadata": metadata,
            "severity": severity,
            "study_description": study_description,
            "study_viewer_status": study_viewer_status,
        }
        check_arguments("update_study", study_id=study_id, **fields)
        body = wire_body(**fields)
        if not body:
            # an empty PATCH changes nothing, and is almost always a bug in the caller
            raise ValidationError.one(
                "update_study", "fields", None, Reason.REQUIRED,
                detail="give at least one of " + ", ".join(fields),
            )
        response = self._send(
            "update_study", "PATCH", f"{_STUDIES}/{study_id}", study=study_id, json=body
        )
        return self._json("update_study", study_id, response)

    def cancel_study(
        self, study_id: str | None = None, *, study_instance_uid: str | None = None
    ) -> CancelResult:
        """Cancel a study (by ID or UID). Cancelling a cancelled study is a no-op
        (``changed=False``), not an error, whether the server says so with 200 or 409; when an
        earlier try of this call may have been applied (its answer was lost), "already
        cancelled" cannot tell who did it and ``changed`` is None."""
        return self._cancel("cancel_study", "cancel", study_id, study_instance_uid)

    def uncancel_study(
        self, study_id: str | None = None, *, study_instance_uid: str | None = None
    ) -> CancelResult:
        """Uncancel a study (by ID or UID). Uncancelling a study that is not cancelled is a
        no-op (``changed=False``), not an error; ``changed`` is None when an earlier try of
        this call may have been applied, as for :meth:`cancel_study`."""
        return self._cancel("uncancel_study", "uncancel", study_id, study_instance_uid)

    def reroute_url(
        self, study_id: str | None = None, *, study_instance_uid: str | None = None
    ) -> RerouteUrl:
        """A secret, time-limited viewer link for a study, wrapped so it never prints."""
        body, label = _target("reroute_url", study_id, study_instance_uid)
        response = self._send(
            "reroute_url", "POST", f"{_STUDIES}/reroute-url", study=label, json=body
        )
        answer = self._json("reroute_url", label, response)
        url = answer.get("url")
        if not isinstance(url, str) or not url:
            raise ApiError("the answer holds no URL", call="reroute_url", study=label)
        return RerouteUrl(url)

    # -- the roster: Viewer users (read-only) ----------------------------------------------

    def list_users_raw(
        self,
        *,
        limit: int | float | np.integer | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        **filters: Unpack[UserFilterArgs],
    ) -> bytes:
        """One page of the user list as the response body bytes; arguments as
        :meth:`list_users`."""
        params = user_list_query_params(limit=limit, cursor=cursor, **filters)
        return self._send("list_users", "GET", _USERS, params=params).content

    def list_users(
        self,
        *,
        limit: int | float | np.integer | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        **filters: Unpack[UserFilterArgs],
    ) -> dict[str, Any]:
        """One page of the user list: ``{"users": [...], "cursor": str | None, "hasMore": bool}``.

        Filters (``viewerkit.schema.UserFilterArgs``): ``email`` (exact), ``first_name`` /
        ``last_name`` (contains), ``level`` (``owner``, ``admin``, ``member``),
        ``invited_source`` (``dashboard``, ``api``). ``limit`` is 1-100 (the API's default
        25), ``cursor`` the previous page's, given with the same filters. Bad values raise
        ``ValidationError`` naming the field, before anything is sent. A server may leave
        users whose access was revoked out of the list (the sandbox does):
        :meth:`retrieve_user` still finds them."""
        raw = self.list_users_raw(limit=limit, cursor=cursor, **filters)
        page = _loads("list_users", None, raw)
        if not isinstance(page, dict) or not isinstance(page.get("users"), list):
            raise ApiError("the answer is not a page of users", call="list_users")
        return page

    def iter_users(self, *, limit: int = 100, **filters: Unpack[UserFilterArgs]) -> Iterator[dict[str, Any]]:
        """Every listed user matching the filters (as :meth:`list_users`), page after page,
        with the studies' cursor safeguards (``CursorTrail``: a repeated cursor, or three
        empty pages in a row that say there is more, is an ``ApiError``). The filters and
        ``limit`` are checked here, before the first page is asked for."""
        given, cases = checked_user_filters(filters)
        cases += [f.case() for f in LIST_FILTERS["limit"].check(limit)]
        if cases:
            raise ValidationError.from_cases("bad user list filters", cases)
        return self._user_pages(given, limit)

    def _user_pages(self, filters: dict[str, Any], limit: int) -> Iterator[dict[str, Any]]:
        trail = CursorTrail("list_users")
        cursor: str | NotGiven | None = NOT_GIVEN
        while cursor is not None:
            page = self.list_users(limit=limit, cursor=cursor, **filters)
            yield from page["users"]
            cursor = trail.follow(page.get("cursor"), bool(page.get("hasMore")), len(page["users"]))

    def retrieve_user(self, user_id: str) -> dict[str, Any]:
        """One user by their ID (``usr_`` + 32 lowercase hex), listed or not (a user whose
        access was revoked too, where the server keeps them). ``NotFound`` for an unknown
        ID; ``ValidationError`` for a malformed one, before anything is sent."""
        failures = RULES["user_id"].check(user_id, "user_id")
        if failures:
            raise ValidationError.from_cases("retrieve_user", [f.case() for f in failures])
        response = self._send("retrieve_user", "GET", f"{_USERS}/{user_id}", study=user_id)
        return self._json("retrieve_user", user_id, response)

    # -- internals ------------------------------------------------------------------------

    def _cancel(
        self, call: str, action: str, study_id: str | None, study_instance_uid: str | None
    ) -> CancelResult:
        body, label = _target(call, study_id, study_instance_uid)
        try:
            response = self._send(
                call, "POST", f"{_STUDIES}/{action}", study=label, json=body,
                conflict_on_retry_ok=True,
            )
        except _ConflictAfterRetry:
            # "already in that state" after a try that may have been applied: this call may
            # have done it, or someone else may have; unknown (the bulk engine resolves it
            # from its before-image).
            said = "already cancelled" if action == "cancel" else "not cancelled"
            return CancelResult(success=True, message=said, changed=None)
        except Conflict as exc:
            # Some servers answer "already in that state" with 409: a no-op, not a failure.
            return CancelResult(success=True, message=str(exc), changed=False)
        answer = self._json(call, label, response)
        success = bool(answer.get("success"))
        message = answer.get("message")
        message = message if isinstance(message, str) else None
        lowered = (message or "").lower()
        if "already" in lowered or "not cancelled" in lowered or "not canceled" in lowered:
            unknown = bool(response.extensions.get(_MAYBE_APPLIED))
            return CancelResult(success=True, message=message, changed=None if unknown else False)
        return CancelResult(success=success, message=message, changed=success)

    def _json(self, call: str, study: str | None, response: httpx.Response) -> dict[str, Any]:
        value = _loads(call, study, response.content)
        if not isinstance(value, dict):
            raise ApiError("the answer is not a JSON object", call=call, study=study)
        return value

    def _send(
        self,
        call: str,
        method: str,
        path: str,
        *,
        study: str | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        conflict_on_retry_ok: bool = False,
    ) -> httpx.Response:
        """Send one call, retrying per :func:`retry_delay`; a 2xx response or an ApiError.

        Every method we send is safe to repeat: GET, PATCH (same body, same state), cancel
        and uncancel (no-op answers), reroute URL (a new link), and create, whose repeat is
        recognised by its 409 after a try that may have been applied (``conflict_on_retry_ok``)
        and resolved by the caller; so is a cancel or uncancel that a server answers with
        409 "already in that state".
        """
        url = self._base_url + path
        content = orjson.dumps(json) if json is not None else None
        headers = dict(self._headers)  # the key is added by the auth, outside this frame
        if content is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0  # failed tries so far (5xx, 408, connection): bounded by max_retries
        limited = 0  # 429s so far: bounded by the deadline instead
        deadline = time.monotonic() + self.rate_limit_deadline
        maybe_applied = False  # might an earlier try have reached the server and been applied?
        throttle = self._throttle
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            if not throttle.enter():
                raise ApiError("stopped before sending", call=call, study=study)
            try:
                # the token is taken once a slot is ours, right before sending: a token taken
                # while waiting for a slot would let the waiting threads send in one burst
                if (self._bucket is not None and not self._bucket.acquire()) or stop_requested():
                    # the run stopped while this call waited for a slot or a token: send nothing
                    raise ApiError("stopped before sending", call=call, study=study)
                # the client-wide pause after a 429 and the pace learned from 429s
                wait, epoch = throttle.turn()
                while wait > 0:
                    if wait >= _REPORT_WAIT_OVER:
                        report_waiting(wait, "rate limited by the server")
                    if pause(wait):
                        raise ApiError("stopped before sending", call=call, study=study)
                    wait, epoch = throttle.turn()
                sent_at = time.monotonic()
                try:
                    response = self._http.request(
                        method, url, params=params, content=content, headers=headers,
                        auth=self.__auth,
                    )
                except httpx.TransportError as exc:
                    error = exc
            finally:
                throttle.leave()
            if response is not None:
                log.debug("%s %s %s -> %d (try %d)", call, method, path, response.status_code, attempt + limited + 1)
                if response.is_success:
                    throttle.accepted_answer(sent_at, epoch)
                    response.extensions[_MAYBE_APPLIED] = maybe_applied
                    return response
                if response.status_code == 429:
                    # Rate limited: the request was not processed. Wait the server's hint
                    # (plus jitter, so the threads do not come back in step) with the whole
                    # client; this does not use up max_retries, the deadline bounds it.
                    limited += 1
                    hint = retry_delay(limited - 1, response=response)
                    assert hint is not None
                    wait = hint * (1.0 + _HINT_JITTER * random.random())
                    throttle.limited(epoch, wait)
                    if time.monotonic() + wait > deadline:
                        raise self._error(
                            call, study, response, None, attempt + limited,
                            note=f"; still rate limited after {self.rate_limit_deadline:g} s "
                            "(the client's rate_limit_deadline)",
                        )
                    log.debug("%s: rate limited, waiting %.2f s", call, wait)
                    if wait >= _REPORT_WAIT_OVER:
                        report_waiting(wait, "rate limited by the server")
                    if pause(wait):
                        raise ApiError("stopped while rate limited", call=call, study=study)
                    continue
                throttle.accepted_answer(sent_at, epoch)
                if response.status_code == 409 and conflict_on_retry_ok and maybe_applied:
                    # An earlier try of this create was applied but its answer was lost.
                    raise _ConflictAfterRetry()
            else:
                log.debug("%s %s %s -> %s (try %d)", call, method, path, type(error).__name__, attempt + limited + 1)
            # 408 says the request was not processed, and a failed connect or pool wait
            # never sent it; a 5xx or a connection lost mid-request may follow a commit.
            maybe_applied = maybe_applied or (
                response.status_code >= 500
                if response is not None
                else not isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
            )
            delay = retry_delay(attempt, response=response, error=error)
            if delay is None or attempt >= self.max_retries:
                raise self._error(call, study, response, error, attempt + limited + 1)
            log.debug("%s: retrying in %.2f s", call, delay)
            if delay >= _REPORT_WAIT_OVER:
                what = f"HTTP {response.status_code}" if response is not None else type(error).__name__
                report_waiting(delay, f"retrying after {what}")
            if pause(delay):
                # the run this call belongs to was interrupted (Ctrl-C) or failed elsewhere
                raise ApiError(f"stopped before retry {attempt + 1}", call=call, study=study)
            attempt += 1

    def _error(
        self,
        call: str,
        study: str | None,
        response: httpx.Response | None,
        error: Exception | None,
        tries: int,
        note: str = "",
    ) -> ApiError:
        after = (f" after {tries} tries" if tries > 1 else "") + note
        if response is None:
            reason = type(error).__name__
            detail = self._scrub(str(error)) if error is not None and str(error) else ""
            message = f"no answer from {self._base_url} ({reason}{': ' + detail if detail else ''}){after}"
            via = _proxy_of(self._base_url) if self._owns_http else None
            if via is not None:
                message += f"; the request went through the proxy of {via}: check it, or NO_PROXY"
            return ApiConnectionError(message, call=call, study=study)
        error_type = param = None
        message = response.reason_phrase or "error"
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            body = payload["error"]
            message = str(body.get("message") or message)
            # every server text is scrubbed: a server may echo the key in any of them
            error_type = self._scrub(str(body["type"])) if body.get("type") is not None else None
            param = self._scrub(str(body["param"])) if body.get("param") is not None else None
        cls = error_for_status(response.status_code)
        if response.status_code == 413:
            try:
                size = f"{len(response.request.content):,} bytes"
            except (RuntimeError, httpx.RequestNotRead):
                size = "the request body"
            after += f" (sent {size}: shorten the study description or metadata values)"
        return cls(
            self._scrub(message) + after,
            call=call,
            study=study,
            status_code=response.status_code,
            error_type=error_type,
            param=param,
            retry_after=_retry_after_hint(response.headers),
        )

    def _scrub(self, text: str) -> str:
        for form in self.__key.forms:
            text = text.replace(form, _REDACTED)
        return text


@contextlib.contextmanager
def environment_client() -> Iterator[Client | None]:
    """The client that ``AVARA_API_KEY`` / ``AVARA_BASE_URL`` describe, closed on leaving,
    or None when no key is set (a cache is then read by its only namespace). The CLI's
    cache commands read the cache with it.

    >>> import os
    >>> with environment_client() as client:
    ...     "AVARA_API_KEY" in os.environ or client is None
    True
    """
    if not os.environ.get("AVARA_API_KEY"):
        yield None
        return
    with Client() as client:
        yield client


class CursorTrail:
    """Follows one cursor chain of a paged list, refusing a chain that does not advance: a
    server that repeats a cursor, or keeps answering empty pages that say there is more,
    would otherwise be paged forever. Used by every paged read (``iter_studies``, the
    fetcher's chains, the cache's refresh).

    >>> trail = CursorTrail("list_studies")
    >>> trail.follow("c1", True, 100), trail.follow(None, False, 7)
    ('c1', None)
    >>> trail.follow("c1", True, 100)
    Traceback (most recent call last):
    ...
    viewerkit.errors.ApiError: list_studies: the list repeated a cursor it gave before: it would be paged forever
    """

    #: Empty pages in a row that say there is more, before the chain is refused.
    MAX_EMPTY_PAGES = 3

    def __init__(self, call: str) -> None:
        self.call = call
        self._seen: set[str] = set()
        self._empty = 0

    def follow(self, cursor: object, has_more: bool, studies: int) -> str | None:
        """The cursor of the next page, or None when the list is done; ApiError when the
        page's answer cannot be followed."""
        if not has_more:
            return None
        if not isinstance(cursor, str) or not cursor:
            # stopping here would silently return part of the list
            raise ApiError("a page said hasMore but gave no cursor", call=self.call)
        if cursor in self._seen:
            raise ApiError(
                "the list repeated a cursor it gave before: it would be paged forever",
                call=self.call,
            )
        self._seen.add(cursor)
        self._empty = self._empty + 1 if studies == 0 else 0
        if self._empty >= self.MAX_EMPTY_PAGES:
            raise ApiError(
                f"{self._empty} empty pages in a row said there was more: the list does not "
                "advance",
                call=self.call,
            )
        return cursor


def _proxy_of(base_url: str) -> str | None:
    """The environment variable whose proxy httpx uses for ``base_url`` (as httpx reads the
    environment: ``<SCHEME>_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), or None. Only the
    variable's name is told: a proxy URL may hold a password."""
    import urllib.parse
    import urllib.request

    url = urllib.parse.urlsplit(base_url)
    if url.hostname is None or urllib.request.proxy_bypass(url.hostname):
        return None
    for name in (f"{url.scheme}_proxy", "all_proxy"):
        for spelled in (name.upper(), name):
            if os.environ.get(spelled):
                return spelled
    return None


def _differences(sent: Mapping[str, Any], study: Mapping[str, Any]) -> list[str]:
    """The fields of a create body (wire names) whose value the study does not hold."""
    reference = {
        "assignedTo": ((study.get("assignedTo") or {}).get("userId")),
        "expressCustomerId": ((study.get("expressCustomer") or {}).get("expressCustomerId")),
        "metadata": study.get("metadata") or None,
    }
    differing = []
    for name, value in sent.items():
        held = reference[name] if name in reference else study.get(name)
        if name == "metadata":
            value = value or None  # no map and an empty map create the same study
        if held != value:
            differing.append(name)
    return differing


def _connection(api_key: object, base_url: object) -> tuple[_Secret, str]:
    """The API key (wrapped) and the base URL, from the arguments or the environment.
    Raises ConfigurationError naming neither value; the values leave this frame's locals
    before it raises."""
    raw = api_key if api_key is not None else os.environ.get("AVARA_API_KEY")
    url = base_url if base_url is not None else os.environ.get("AVARA_BASE_URL")
    source = "base_url=" if base_url is not None else "AVARA_BASE_URL"
    del api_key, base_url
    problem = None
    key = raw.strip() if isinstance(raw, str) else None  # a key read from a file ends with \n
    if raw is None or key == "":
        problem = "no API key: pass api_key= or set the environment variable AVARA_API_KEY"
    elif key is None:
        problem = f"the API key must be a string, not {type(raw).__name__}"
    elif not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        problem = (
            "the API key holds characters an HTTP header cannot carry (whitespace inside it, "
            "control or non-ASCII characters): check how it was copied"
        )
    text = (url if isinstance(url, str) else "") or DEFAULT_BASE_URL
    if not text.startswith(("http://", "https://")):
        # the value is not shown: with the key and URL swapped by position it is the key
        problem = problem or f"the base URL ({source}) must start with http:// or https://"
    secret = _Secret(key) if problem is None and key is not None else None
    del raw, key, url
    if secret is None:
        del text
        raise ConfigurationError(problem or "no API key")
    return secret, text.rstrip("/")


class _BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer <key>`` to each request (in httpx's frames, not ours);
    its repr never shows the key."""

    def __init__(self, key: _Secret) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key.value}"
        yield request

    def __repr__(self) -> str:
        return f"_BearerAuth({_REDACTED})"


class _LogScrubber(logging.Filter):
    """Removes the API keys of live clients from httpx's and httpcore's own log records:
    httpx logs each response's reason phrase verbatim at INFO, and a server may echo the
    key there."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[int, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def watch(self, client: Client, forms: tuple[str, ...]) -> None:
        with self._lock:
            self._keys[id(client)] = forms
        weakref.finalize(client, self._forget, id(client))

    def _forget(self, client_id: int) -> None:
        with self._lock:
            self._keys.pop(client_id, None)

    def _scrub(self, value: object) -> object:
        if not isinstance(value, (str, bytes)):
            return value
        # longest first over every live client's keys: a short key's replacement must not
        # cut into a longer key's spelling and leave the rest of it in the line
        forms = sorted({form for spelled in list(self._keys.values()) for form in spelled}, key=len, reverse=True)
        for form in forms:
            if isinstance(value, bytes):
                value = value.replace(form.encode(), _REDACTED.encode())
            else:
                value = value.replace(form, _REDACTED)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if self._keys:
            record.msg = self._scrub(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(self._scrub(arg) for arg in record.args)
        return True


_LOG_SCRUBBER = _LogScrubber()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_LOG_SCRUBBER)


class _Secret:
    """Holds the API key; its repr never shows it (so ``vars(client)`` stays safe to print).
    ``forms``: the key as a server or proxy may echo it back (as sent; percent-encoded, as
    in a URL or form; JSON-escaped; base64, as in a Basic header), longest first: the
    scrubbers remove every one."""

    __slots__ = ("value", "forms")

    def __init__(self, value: str) -> None:
        self.value = value
        self.forms = _echo_forms(value)

    def __repr__(self) -> str:
        return _REDACTED

    __str__ = __repr__


def _echo_forms(key: str) -> tuple[str, ...]:
    """The spellings of ``key`` an echo may carry, longest first (see :class:`_Secret`)."""
    raw = key.encode("utf-8")
    forms = {
        key,
        urllib.parse.quote(key, safe=""),
        urllib.parse.quote_plus(key),
        orjson.dumps(key).decode("ascii", "backslashreplace")[1:-1],
        key.encode("unicode_escape").decode("ascii"),
        base64.b64encode(raw).decode("ascii").rstrip("="),
        base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="),
    }
    forms.add(forms_json := orjson.dumps(key).decode("ascii", "backslashreplace")[1:-1])
    forms.add(forms_json.replace("/", "\\/"))  # JSON writers that escape the slash
    forms.add(urllib.parse.quote(key, safe="").lower())  # lower-case percent escapes
    # base64 of anything holding the key (a header, Basic credentials "user:key"): whatever
    # comes before it, the key's bytes fall at one of three offsets in the 3-byte groups;
    # the characters that depend on the key alone are the whole groups it fills
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw).decode("ascii")
            start = 4 if offset else 0
            end = 4 * ((offset + len(raw)) // 3)
            if end - start >= 8:
                forms.add(text[start:end])
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


class _ConflictAfterRetry(Exception):
    """Internal: a retry met 409 after a try that may have been applied, so the conflict may
    be of this call's own making (a create that was made, a cancel that was done)."""


def _loads(call: str, study: str | None, raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError("the answer is not valid JSON", call=call, study=study) from None
