"""The sandbox's FastAPI application: every endpoint of the Avara Viewer Studies API.

``create_app(db_path, ...)`` builds a new app over its own SQLite database; nothing lives at
module level. Request validation is the sandbox's own (FastAPI's default 422 never leaks):
every bad field answers 400 ``{"error": {"type", "message", "param"}}`` with ``param`` naming
the field in camelCase. Non-retryable 4xx answers carry ``x-should-retry: false`` so that
generated SDKs (which retry 409 by default) do not resend them.

List order is newest ``createdAt`` first, ties broken by ``studyId`` descending. Cursors are
keyset cursors signed with a per-database secret (HMAC) and bound to the filters they were
issued with; the secret lives in the database, so cursors and reroute tokens survive a
restart on the same ``--db``.

Sandbox-only routes, outside the API and never subject to faults:
``GET /_sandbox/health`` (no auth), ``GET|POST /_sandbox/faults``,
``POST|DELETE /_sandbox/faults/fail-next`` (arm / clear deterministic faults),
``GET /_sandbox/audit?study_id=&outcome=&source=&since=`` (one entry per write request
handled, whatever its outcome: see ``WriteAudit`` and ``Store.audit``) and
``GET /_sandbox/requests?since=N`` (every API request received: see
``viewerkit.sandbox.faults.RequestLog``).

The roster (``GET /v1/viewer/users``, ``GET /v1/viewer/users/{userId}``) is read-only. Where
the contract is silent: users are listed by ``userId`` ascending (keyset cursors, bound to
the filters, as the studies'); ``email`` is an exact match ignoring case, ``firstName`` /
``lastName`` case-insensitive contains matches; a user whose access was revoked is not
listed, but is retrieved; an unknown user ID is 404.

>>> import tempfile, os
>>> app = create_app(os.path.join(tempfile.mkdtemp(), "s.db"), api_keys=["sk-test"])
>>> sorted(p for p in app.openapi()["paths"])[:2]
['/v1/viewer/studies', '/v1/viewer/studies/by-uid/{studyInstanceUid}']
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from viewerkit.errors import Reason
from viewerkit.sandbox.faults import FaultMiddleware, Faults, RequestLog
from viewerkit.sandbox.store import AUDIT_OUTCOMES, AUDIT_SOURCES, AuditNote, Keyset, Store
from viewerkit.schema import (
    CREATE_FIELDS,
    FIELDS,
    IDENTIFY_FIELDS,
    INVITED_SOURCES,
    LIST_FILTERS,
    MAX_PAGE_LIMIT,
    RULES,
    SEVERITIES,
    UPDATE_FIELDS,
    USER_LEVELS,
    USER_LIST_FILTERS,
    VIEWER_STATUSES,
    Field,
    StudyFilters,
    metadata_problems,
    reference_failures,
)

__all__ = ["create_app", "SandboxError", "WriteAudit", "DEFAULT_PAGE_LIMIT", "MAX_BODY_BYTES"]

#: Page size when the request gives no ``limit``.
DEFAULT_PAGE_LIMIT = 25

#: The largest request body the sandbox reads (1 MiB); a larger one answers 413.
MAX_BODY_BYTES = 1024 * 1024

T = TypeVar("T")

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class SandboxError(Exception):
    """An error answer of the API: status, message and the camelCase field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def _error_response(status: int, message: str, param: str | None = None) -> Response:
    body = {
        "error": {
            "type": _ERROR_TYPES.get(status, "api_error"),
            "message": message,
            "param": param,
        }
    }
    headers = {}
    if 400 <= status < 500 and status != 429:
        headers["x-should-retry"] = "false"
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _bad(param: str | None, message: str) -> SandboxError:
    return SandboxError(400, message, param)


# -- request parsing ------------------------------------------------------------------------


class BodyLimit:
    """Pure ASGI middleware: a request body over ``limit`` bytes answers 413 in the error
    format, on every route, before any handler sees it: at once when ``Content-Length``
    says so, else (a chunked body) as soon as the bytes received pass the limit. A body
    within the limit is read whole here and handed on unchanged. The server discards the
    unread rest of a refused body, so the client still reads the answer."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        if declared is not None and declared.strip().isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        messages: list[Any] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app sees it as it would have
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        text = f"request body is larger than {self.limit} bytes ({self.limit / 1024 / 1024:g} MiB)"
        await _error_response(413, text)(scope, receive, send)



# the scope key under which WriteAudit hands a write route its AuditNote
_NOTE = "viewerkit.audit_note"

_STUDIES_PATH = "/v1/viewer/studies"
_POST_WRITES = {
    _STUDIES_PATH: "create",
    _STUDIES_PATH + "/cancel": "cancel",
    _STUDIES_PATH + "/uncancel": "uncancel",
}


def write_operation(method: str, path: str) -> str | None:
    """The store write a request asks for (``create``, ``update``, ``cancel``,
    ``uncancel``), or None. A reroute URL is not one: it changes nothing in the store.

    >>> write_operation("PATCH", "/v1/viewer/studies/stu_1"), write_operation("POST", "/v1/viewer/studies/reroute-url")
    ('update', None)
    """
    if method == "POST":
        return _POST_WRITES.get(path)
    if method == "PATCH" and path.startswith(_STUDIES_PATH + "/"):
        rest = path[len(_STUDIES_PATH) + 1 :]
        return "update" if rest and "/" not in rest else None
    return None


def _valid(field: str, value: object) -> bool:
    return isinstance(value, str) and not FIELDS[field].check(value)


class WriteAudit:
    """Pure ASGI middleware: exactly one write-audit entry (``Store.audit``) per write
    request (``write_operation``) that the API handles.

    It hands the route an ``AuditNote`` (under ``scope[_NOTE]``) carrying the request's
    method, path, request-log seq and fault (which ``FaultMiddleware`` puts in the scope);
    the route adds the study and fields it reads, and the Store records ``changed`` or
    ``noop`` in the transaction of the write. When the answer is a 4xx instead (refused:
    authentication, validation, not found, conflict, a body over the limit) it records a
    ``refused`` entry, and a 5xx of the sandbox's own (a bug; never a fault knob) an
    ``error`` entry, before the answer leaves. Requests a fault failed before handling, or
    the rate limit refused, never reach it: they have no entry.
    """

    def __init__(self, app: Any, store: Store) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        operation = None
        if scope["type"] == "http":
            operation = write_operation(str(scope.get("method", "")), str(scope.get("path", "")))
        if operation is None:
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        note = AuditNote(
            source="api",
            method=str(scope["method"]),
            path=path,
            status=201 if operation == "create" else 200,
            request=scope.get("viewerkit.request"),
            fault=scope.get("viewerkit.fault"),
        )
        if operation == "update" and _valid("study_id", path.rsplit("/", 1)[1]):
            note.study_id = path.rsplit("/", 1)[1]

        async def record_unrecorded(status: int) -> None:
            if not note.recorded:
                note.status = status
                outcome = "refused" if status < 500 else "error"
                await run_in_threadpool(self.store.record_refused, operation, note, outcome)

        async def watching(message: Any) -> None:
            if message["type"] == "http.response.start" and int(message["status"]) >= 400:
                await record_unrecorded(int(message["status"]))
            await send(message)

        try:
            await self.app({**scope, _NOTE: note}, receive, watching)
        except Exception:
            # answered 500 by the server's outer layer
            await record_unrecorded(500)
            raise


def _note(request: Request) -> AuditNote:
    note: AuditNote | None = request.scope.get(_NOTE)
    return note if note is not None else AuditNote(source="api")


async def _body(request: Request, allowed: Sequence[str]) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(None, "request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise _bad(None, "request body must be a JSON object")
    for key in data:
        if key not in allowed:
            raise _bad(str(key), f"unknown field {key!r}; allowed: {', '.join(allowed)}")
    return data


def _checked(field: Field, value: Any) -> Any:
    """``value`` when it keeps the rule of ``field`` (the one rule table, ``schema.FIELDS``
    and ``schema.LIST_FILTERS``), else the 400 naming the field."""
    if field.check(value):
        raise _bad(field.wire, _rule_message(field, value))
    return value


def _rule_message(field: Field, value: Any) -> str:
    if field.name == "metadata":
        return "metadata " + "; ".join(metadata_problems(value)[:5])
    return f"{field.wire} must be {field.rule.wire_text}" + (", or null" if field.nullable else "")


def _check_severity(value: object) -> str:
    return str(_checked(FIELDS["severity"], value))


def _check_status(value: object) -> str:
    return str(_checked(FIELDS["study_viewer_status"], value))


def _check_description(value: object) -> str:
    return str(_checked(FIELDS["study_description"], value))


def _check_uid(value: object) -> str:
    return str(_checked(FIELDS["study_instance_uid"], value))


def _check_study_id(value: object) -> str:
    return str(_checked(FIELDS["study_id"], value))


def _check_user(store: Store, value: object) -> str | None:
    user: str | None = _checked(FIELDS["assigned_to"], value)
    if user is not None and not store.user_exists(user):
        raise _bad("assignedTo", f"assignedTo: no user {user}")
    return user


def _check_customer(store: Store, value: object) -> str | None:
    customer: str | None = _checked(FIELDS["express_customer_id"], value)
    if customer is not None and not store.customer_exists(customer):
        raise _bad("expressCustomerId", f"expressCustomerId: no express customer {customer}")
    return customer


def _check_metadata(value: object) -> dict[str, str] | None:
    metadata: dict[str, str] | None = _checked(FIELDS["metadata"], value)
    return metadata


def _check_reference(study_id: object, uid: object) -> None:
    """How cancel / uncancel / reroute-url name a study (``schema.reference_failures``)."""
    failures = reference_failures(study_id, uid)
    if not failures:
        return
    first = failures[0]
    if first.reason is Reason.REQUIRED:
        raise _bad("studyId", "give studyId or studyInstanceUid")
    field = FIELDS[first.field]
    raise _bad(field.wire, _rule_message(field, study_id if field.name == "study_id" else uid))


# -- cursors and reroute tokens -------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, purpose: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, purpose + b"\0" + payload, hashlib.sha256).digest()[:16]


def _fingerprint(filters: StudyFilters) -> str:
    """A short hash that binds a cursor to the filters it was issued with."""
    return hashlib.sha256(orjson.dumps(sorted(filters.query_params().items()))).hexdigest()[:16]


def encode_cursor(secret: bytes, keyset: Keyset, filters: StudyFilters) -> str:
    payload = orjson.dumps([keyset.created_at, keyset.study_id, _fingerprint(filters)])
    return _b64(_sign(secret, b"cursor", payload) + payload)


def decode_cursor(secret: bytes, cursor: str, filters: StudyFilters) -> Keyset:
    try:
        raw = _unb64(cursor)
    except (binascii.Error, ValueError) as exc:
        raise _bad("cursor", "cursor does not decode; pass back a cursor of a previous page") from exc
    sig, payload = raw[:16], raw[16:]
    if len(sig) < 16 or not hmac.compare_digest(sig, _sign(secret, b"cursor", payload)):
        raise _bad("cursor", "cursor is not one this server issued")
    created_at, study_id, fingerprint = orjson.loads(payload)
    if fingerprint != _fingerprint(filters):
        raise _bad("cursor", "cursor was issued for other filters; pass the same filters with it")
    return Keyset(str(created_at), str(study_id))


def _user_fingerprint(filters: Mapping[str, Any]) -> str:
    """As ``_fingerprint``, for the user list's filters (a study cursor never fits it)."""
    wire = sorted((USER_LIST_FILTERS[n].wire, USER_LIST_FILTERS[n].to_query(v)) for n, v in filters.items())
    return hashlib.sha256(orjson.dumps(["users", wire])).hexdigest()[:16]


def encode_user_cursor(secret: bytes, after_user_id: str, filters: Mapping[str, Any]) -> str:
    payload = orjson.dumps([after_user_id, _user_fingerprint(filters)])
    return _b64(_sign(secret, b"user-cursor", payload) + payload)


def decode_user_cursor(secret: bytes, cursor: str, filters: Mapping[str, Any]) -> str:
    """The user ID a user-list cursor resumes after (400 for a cursor that does not decode,
    was not issued by this server for the user list, or was issued for other filters)."""
    try:
        raw = _unb64(cursor)
    except (binascii.Error, ValueError) as exc:
        raise _bad("cursor", "cursor does not decode; pass back a cursor of a previous page") from exc
    sig, payload = raw[:16], raw[16:]
    if len(sig) < 16 or not hmac.compare_digest(sig, _sign(secret, b"user-cursor", payload)):
        raise _bad("cursor", "cursor is not one this server issued for the user list")
    after, fingerprint = orjson.loads(payload)
    if fingerprint != _user_fingerprint(filters):
        raise _bad("cursor", "cursor was issued for other filters; pass the same filters with it")
    return str(after)


def reroute_token(secret: bytes, study_id: str, expires_ms: int) -> str:
    payload = f"{study_id}.{expires_ms}".encode()
    return _b64(_sign(secret, b"reroute", payload) + payload)


def check_reroute_token(secret: bytes, study_id: str, token: str) -> int:
    """200 for a valid token of this study, 401 for a wrong one, 410 for an expired one."""
    try:
        raw = _unb64(token)
    except (binascii.Error, ValueError):
        return 401
    sig, payload = raw[:16], raw[16:]
    if len(sig) < 16 or not hmac.compare_digest(sig, _sign(secret, b"reroute", payload)):
        return 401
    token_study, _, expires = payload.decode().rpartition(".")
    if token_study != study_id:
        return 401
    return 410 if int(expires) < time.time() * 1000 else 200


# -- the app --------------------------------------------------------------------------------

_LIST_PARAMS = (
    "assignedTo",
    "expressCustomerId",
    "isCancelled",
    "severity",
    "studyDescription",
    "studyViewerStatus",
    "limit",
    "cursor",
)

_USER_LIST_PARAMS = tuple(f.wire for f in USER_LIST_FILTERS.values())

_STR = {"type": "string"}
_STUDY_ID = {"type": "string", "pattern": "^stu_[0-9a-f]{32}$"}
_UID = {"type": "string", "pattern": "^(0|[1-9][0-9]*)(\\.(0|[1-9][0-9]*))*$", "maxLength": 64}
_USER = {"type": "string", "pattern": "^usr_[0-9a-f]{32}$"}
_CUSTOMER = {"type": "string", "pattern": "^cus_[0-9a-f]{32}$"}
_META = {
    "type": "object",
    "additionalProperties": {"type": "string", "maxLength": 1000},
    "maxProperties": 50,
}


def _json_body(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return {
        "requestBody": {
            "required": bool(required),
            "content": {"application/json": {"schema": schema}},
        }
    }


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def create_app(
    db_path: str,
    *,
    api_keys: Sequence[str] = (),
    latency_ms: float = 0,
    fail_rate: float = 0.0,
    rate_limit: float | None = None,
    reroute_ttl_s: float = 900,
    live: float | None = None,
    live_seed: int = 0,
    fault_seed: int = 0,
    public_base_url: str | None = None,
) -> FastAPI:
    """Build a sandbox app over the SQLite database at ``db_path`` (created if new).

    ``api_keys`` are bearer secrets that must work (a key record is added for any the
    database lacks); the database's own key records work too. ``latency_ms``, ``fail_rate``
    and ``rate_limit`` are the initial fault knobs (see ``viewerkit.sandbox.faults``);
    ``live`` is a rate of simulated activity per second while the server runs.

    ``public_base_url`` (``http(s)://host[:port][/prefix]``) is where clients reach this
    server: reroute URLs are built from it and from nothing in the request (a forged
    ``Host`` or ``X-Forwarded-*`` header never names the host of a signed link). Without
    it, they point at the address the server listens on (``http://<ip>:<port>``, as the
    ASGI server reports its socket). ``running()`` and ``viewerkit sandbox serve`` pass the
    URL they listen on. A bad URL is a ``ValidationError`` naming ``public_base_url``.
    """
    public_base = None if public_base_url is None else _public_base(public_base_url)
    store = Store(db_path)
    store.add_api_keys(api_keys)
    keys: dict[str, str] = store.api_key_secrets()
    faults = Faults(latency_ms=latency_ms, fail_rate=fail_rate, rate_limit=rate_limit, seed=fault_seed)
    request_log = RequestLog()
    secret = store.secret

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = None
        if live:
            from viewerkit.sandbox.live import start_live  # numpy: only when live mode runs

            runner = start_live(store, live, live_seed)
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()
            store.close()

    app = FastAPI(
        title="Avara Viewer Studies API (viewerkit sandbox)",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.faults = faults
    app.state.request_log = request_log
    # inside the fault middleware: a refused body is in the request log, after any fault;
    # the write audit sees it too, and what a fault struck
    app.add_middleware(BodyLimit)
    app.add_middleware(WriteAudit, store=store)
    app.add_middleware(FaultMiddleware, faults=faults, log=request_log)

    @app.exception_handler(SandboxError)
    async def _sandbox_error(request: Request, exc: SandboxError) -> Response:
        return _error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        loc = errors[0].get("loc", ()) if errors else ()
        param = str(loc[-1]) if loc else None
        return _error_response(400, "invalid request", param)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> Response:
        # a sandbox bug, never a fault knob: still answer in the contract's error format
        return _error_response(500, "internal server error")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        message = "no such route" if status == 404 else str(exc.detail)
        return _error_response(status, message)

    def authenticate(request: Request) -> str:
        """The api_key_id of the request's bearer key (401 without a valid one)."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            key_id = keys.get(token)
            if key_id is None:
                keys.update(store.api_key_secrets())
                key_id = keys.get(token)
            if key_id is not None:
                return key_id
        raise SandboxError(401, "missing or invalid API key: send Authorization: Bearer <key>")

    async def in_thread(fn: Callable[[], T]) -> T:
        return await run_in_threadpool(fn)

    def study_or_404(study_id: str) -> dict[str, Any]:
        study = store.get_study(study_id)
        if study is None:
            raise SandboxError(404, f"no study {study_id}", "studyId")
        return study

    def identify(body: Mapping[str, Any], note: AuditNote | None = None) -> str:
        """The study ID a cancel / uncancel / reroute body names (400 / 404 otherwise),
        noted in ``note`` (with the UID when that identified it) as far as it is known."""
        study_id = body.get("studyId")
        uid = body.get("studyInstanceUid")
        if note is not None:
            note.study_id = study_id if _valid("study_id", study_id) else None
            note.study_instance_uid = uid if _valid("study_instance_uid", uid) else None
        _check_reference(study_id, uid)
        if uid is not None:
            by_uid = store.study_id_for_uid(uid)
            if by_uid is None:
                raise SandboxError(404, f"no study with studyInstanceUid {uid}", "studyInstanceUid")
            if study_id is not None and by_uid != study_id:
                raise _bad("studyInstanceUid", "studyId and studyInstanceUid name different studies")
            if note is not None:
                note.study_id = by_uid
            return by_uid
        assert isinstance(study_id, str)
        study_or_404(study_id)
        return study_id

    # -- the API ---------------------------------------------------------------------------

    @app.post(
        "/v1/viewer/studies",
        status_code=201,
        openapi_extra=_json_body(
            {
                "severity": {"type": "string", "enum": list(SEVERITIES)},
                "studyDescription": _STR,
                "studyInstanceUid": _UID,
                "assignedTo": _USER,
                "expressCustomerId": _CUSTOMER,
                "metadata": _META,
            },
            required=("severity", "studyDescription", "studyInstanceUid"),
        ),
    )
    async def create_study(request: Request) -> Response:
        note = _note(request)
        key_id = authenticate(request)
        body = await _body(request, CREATE_FIELDS)
        note.fields = tuple(body)
        if _valid("study_instance_uid", body.get("studyInstanceUid")):
            note.study_instance_uid = body["studyInstanceUid"]

        def work() -> dict[str, Any]:
            for field in ("severity", "studyDescription", "studyInstanceUid"):
                if field not in body:
                    raise _bad(field, f"{field} is required")
            severity = _check_severity(body["severity"])
            description = _check_description(body["studyDescription"])
            uid = _check_uid(body["studyInstanceUid"])
            assigned = _check_user(store, body.get("assignedTo"))
            customer = _check_customer(store, body.get("expressCustomerId"))
            metadata = _check_metadata(body.get("metadata"))
            study_id = store.create_study(
                study_instance_uid=uid,
                study_description=description,
                severity=severity,
                assigned_to=assigned,
                express_customer_id=customer,
                metadata=metadata,
                created_by_api_key=key_id,
                note=note,
            )
            if study_id is None:
                note.study_id = store.study_id_for_uid(uid)  # the study this create collided with
                raise SandboxError(
                    409, f"a study with studyInstanceUid {uid} already exists", "studyInstanceUid"
                )
            return study_or_404(study_id)

        return _json(await in_thread(work), 201)

    @app.get(
        "/v1/viewer/studies",
        openapi_extra={
            "parameters": [
                _query("assignedTo", {"type": "string"}),
                _query("expressCustomerId", {"type": "string"}),
                _query("isCancelled", {"type": "string", "enum": ["true", "false"]}),
                _query("severity", {"type": "string", "enum": list(SEVERITIES)}),
                _query("studyDescription", {"type": "string", "minLength": 1}),
                _query("studyViewerStatus", {"type": "string", "enum": list(VIEWER_STATUSES)}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT}),
                _query("cursor", {"type": "string"}),
            ]
        },
    )
    async def list_studies(request: Request) -> Response:
        # runs on the event loop: a page is a ~1 ms indexed read, cheaper than a thread hop
        authenticate(request)
        params: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name not in _LIST_PARAMS:
                raise _bad(name, f"unknown query parameter {name!r}; allowed: {', '.join(_LIST_PARAMS)}")
            if name in params:
                # each filter takes one value: silently keeping one would drop studies unseen
                raise _bad(name, f"query parameter {name!r} is given more than once")
            params[name] = value
        filters = _list_filters(params)
        limit = _page_limit(params.get("limit"))
        after = None
        if "cursor" in params:
            after = decode_cursor(secret, params["cursor"], filters)
        studies, last = store.list_studies(filters, limit, after, raw_metadata=True)
        cursor = None if last is None else encode_cursor(secret, last, filters)
        return _json({"studies": studies, "cursor": cursor, "hasMore": last is not None})

    @app.get("/v1/viewer/studies/by-uid/{studyInstanceUid}")
    async def retrieve_study_by_uid(studyInstanceUid: str, request: Request) -> Response:  # noqa: N803
        authenticate(request)
        uid = _check_uid(studyInstanceUid)
        study_id = store.study_id_for_uid(uid)
        if study_id is None:
            raise SandboxError(404, f"no study with studyInstanceUid {uid}", "studyInstanceUid")
        return _json(study_or_404(study_id))

    @app.get("/v1/viewer/studies/{studyId}")
    async def retrieve_study(studyId: str, request: Request) -> Response:  # noqa: N803
        authenticate(request)
        return _json(study_or_404(_check_study_id(studyId)))

    @app.patch(
        "/v1/viewer/studies/{studyId}",
        openapi_extra=_json_body(
            {
                "assignedTo": {**_USER, "nullable": True},
                "metadata": {**_META, "nullable": True},
                "severity": {"type": "string", "enum": list(SEVERITIES)},
                "studyDescription": _STR,
                "studyViewerStatus": {"type": "string", "enum": list(VIEWER_STATUSES)},
            }
        ),
    )
    async def update_study(studyId: str, request: Request) -> Response:  # noqa: N803
        note = _note(request)
        authenticate(request)
        study_id = _check_study_id(studyId)
        body = await _body(request, UPDATE_FIELDS)
        note.fields = tuple(body)

        def work() -> dict[str, Any]:
            changes: dict[str, Any] = {}
            if "assignedTo" in body:
                changes["assigned_to"] = _check_user(store, body["assignedTo"])
            if "metadata" in body:
                changes["metadata"] = _check_metadata(body["metadata"])
            if "severity" in body:
                changes["severity"] = _check_severity(body["severity"])
            if "studyDescription" in body:
                changes["study_description"] = _check_description(body["studyDescription"])
            if "studyViewerStatus" in body:
                changes["study_viewer_status"] = _check_status(body["studyViewerStatus"])
            if store.update_study(study_id, changes, note=note) is None:
                raise SandboxError(404, f"no study {study_id}", "studyId")
            return study_or_404(study_id)

        return _json(await in_thread(work))

    identify_body = _json_body({"studyId": _STUDY_ID, "studyInstanceUid": _UID})

    def set_cancelled_route(cancelled: bool, same_state: dict[str, Any]) -> Any:
        """The cancel or uncancel endpoint: ``same_state`` is the answer when the study is
        already in the state asked for (the contract's no-op answers)."""

        async def route(request: Request) -> Response:
            note = _note(request)
            authenticate(request)
            body = await _body(request, IDENTIFY_FIELDS)

            def work() -> dict[str, Any]:
                study_id = identify(body, note)
                changed = store.set_cancelled(study_id, cancelled, note=note)
                if changed is None:
                    raise SandboxError(404, f"no study {study_id}", "studyId")
                return {"success": True} if changed else same_state

            return _json(await in_thread(work))

        return route

    app.post("/v1/viewer/studies/cancel", openapi_extra=identify_body, name="cancel_study")(
        set_cancelled_route(True, {"success": True, "message": "already cancelled"})
    )
    app.post("/v1/viewer/studies/uncancel", openapi_extra=identify_body, name="uncancel_study")(
        set_cancelled_route(False, {"success": False, "message": "study is not cancelled"})
    )

    @app.post("/v1/viewer/studies/reroute-url", openapi_extra=identify_body)
    async def reroute_url(request: Request) -> Response:
        authenticate(request)
        body = await _body(request, IDENTIFY_FIELDS)
        study_id = await in_thread(lambda: identify(body))
        expires = int((time.time() + reroute_ttl_s) * 1000)
        base = public_base or _listening_base(request)
        token = reroute_token(secret, study_id, expires)
        return _json({"url": f"{base}/viewer/studies/{study_id}?token={token}"})

    # -- the roster: Viewer users (read-only) ----------------------------------------------

    @app.get(
        "/v1/viewer/users",
        openapi_extra={
            "parameters": [
                _query("email", {"type": "string", "minLength": 1}),
                _query("firstName", {"type": "string", "minLength": 1}),
                _query("lastName", {"type": "string", "minLength": 1}),
                _query("level", {"type": "string", "enum": list(USER_LEVELS)}),
                _query("invitedSource", {"type": "string", "enum": list(INVITED_SOURCES)}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT}),
                _query("cursor", {"type": "string"}),
            ]
        },
    )
    async def list_users(request: Request) -> Response:
        authenticate(request)
        params = _single_params(request, _USER_LIST_PARAMS)
        filters = _user_filters(params)
        limit = _page_limit(params.get("limit"))
        after = None
        if "cursor" in params:
            after = decode_user_cursor(secret, params["cursor"], filters)
        users, last = await in_thread(lambda: store.list_users(filters, limit, after))
        cursor = None if last is None else encode_user_cursor(secret, last, filters)
        return _json({"users": users, "cursor": cursor, "hasMore": last is not None})

    @app.get("/v1/viewer/users/{userId}")
    async def retrieve_user(userId: str, request: Request) -> Response:  # noqa: N803
        authenticate(request)
        user_id = str(_checked(_USER_ID, userId))
        user = await in_thread(lambda: store.get_user(user_id))
        if user is None:
            raise SandboxError(404, f"no user {user_id}", "userId")
        return _json(user)

    # -- the viewer page a reroute URL points to -------------------------------------------

    @app.get("/viewer/studies/{studyId}", include_in_schema=False)
    def viewer_page(studyId: str, request: Request) -> Response:  # noqa: N803
        token = request.query_params.get("token", "")
        status = check_reroute_token(secret, studyId, token) if token else 401
        if status == 401:
            return HTMLResponse("<h1>401</h1><p>This viewer link is not valid.</p>", 401)
        if status == 410:
            return HTMLResponse("<h1>410</h1><p>This viewer link has expired.</p>", 410)
        return HTMLResponse(
            f"<!doctype html><title>Avara Viewer (sandbox)</title>"
            f"<h1>Study {html.escape(studyId)}</h1><p>Sandbox viewer.</p>"
        )

    # -- sandbox-only routes ---------------------------------------------------------------

    @app.get("/_sandbox/health", include_in_schema=False)
    def health() -> Response:
        return _json({"ok": True})

    @app.get("/_sandbox/faults", include_in_schema=False)
    def get_faults(request: Request) -> Response:
        authenticate(request)
        return _json(faults.snapshot())

    @app.post("/_sandbox/faults", include_in_schema=False)
    async def set_faults(request: Request) -> Response:
        authenticate(request)
        body = await _body(request, ("latency_ms", "fail_rate", "rate_limit"))
        try:
            faults.update(**body)
        except ValueError as exc:
            param = str(exc).split(" ", 1)[0]
            raise _bad(param, str(exc)) from exc
        return _json(faults.snapshot())

    @app.post("/_sandbox/faults/fail-next", include_in_schema=False)
    async def fail_next(request: Request) -> Response:
        authenticate(request)
        body = await _body(request, ("count", "method", "path", "when", "how"))
        if "count" not in body:
            raise _bad("count", "count is required")
        try:
            rule = faults.fail_next(**body)
        except ValueError as exc:
            param = str(exc).split(" ", 1)[0]
            raise _bad(param, str(exc)) from exc
        return _json(rule)

    @app.delete("/_sandbox/faults/fail-next", include_in_schema=False)
    def clear_fail_next(request: Request) -> Response:
        authenticate(request)
        faults.clear_fail_next()
        return _json(faults.snapshot())

    @app.get("/_sandbox/requests", include_in_schema=False)
    def requests_received(request: Request) -> Response:
        authenticate(request)
        since = request.query_params.get("since", "0")
        if not (since.isascii() and since.isdigit()):
            raise _bad("since", "since must be a whole number: the seq of an earlier request")
        return _json(request_log.entries(int(since)))

    @app.get("/_sandbox/audit", include_in_schema=False)
    def audit(request: Request) -> Response:
        authenticate(request)
        params = _single_params(request, ("study_id", "outcome", "source", "since"))
        since = params.get("since", "0")
        if not (since.isascii() and since.isdigit()):
            raise _bad("since", "since must be a whole number: the seq of an earlier audit entry")
        for name, allowed in (("outcome", AUDIT_OUTCOMES), ("source", AUDIT_SOURCES)):
            if params.get(name, allowed[0]) not in allowed:
                raise _bad(name, f"{name} must be one of {', '.join(allowed)}")
        entries = store.audit(
            params.get("study_id"), outcome=params.get("outcome"), source=params.get("source"), since=int(since)
        )
        return _json(entries)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _public_base(url: object) -> str:
    """``url`` without a trailing slash, when it is an absolute http(s) URL with a host and
    nothing after its path."""
    from urllib.parse import urlsplit

    from viewerkit.errors import ValidationError

    detail = "an http:// or https:// URL with a host, and no user, query or fragment"
    parts = None
    if isinstance(url, str) and url.isprintable() and " " not in url:
        try:
            parts = urlsplit(url)
            _ = parts.port  # a port that is not a number, or out of range, raises here
        except ValueError:
            parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
    ):
        raise ValidationError.one("create_app", "public_base_url", url, Reason.NOT_BASE_URL, detail=detail)
    return str(url).rstrip("/")


def _listening_base(request: Request) -> str:
    # the socket the server accepted on (the ASGI ``server``), never a request header
    server = request.scope.get("server")
    if not server:
        return "http://127.0.0.1"
    host, port = server[0], server[1]
    host = f"[{host}]" if ":" in str(host) else host
    return f"http://{host}" if port is None else f"http://{host}:{port}"


def _list_filters(params: Mapping[str, str]) -> StudyFilters:
    # the text of each filter, read as the rule table says (``null``, ``true`` / ``false``),
    # checked in LIST_FILTERS order (the first bad one is the 400)
    values: dict[str, Any] = {}
    for field in LIST_FILTERS.values():
        text = params.get(field.wire)
        if field.name in ("limit", "cursor") or text is None:
            continue
        values[field.name] = _checked(field, field.from_query(text))
    return StudyFilters(**values)


_USER_ID = Field("user_id", "userId", RULES["user_id"])


def _single_params(request: Request, allowed: Sequence[str]) -> dict[str, str]:
    """The query parameters, each known and given once (else the 400 naming it)."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise _bad(name, f"unknown query parameter {name!r}; allowed: {', '.join(allowed)}")
        if name in params:
            raise _bad(name, f"query parameter {name!r} is given more than once")
        params[name] = value
    return params


def _user_filters(params: Mapping[str, str]) -> dict[str, Any]:
    # the user list's filters, read and checked by the rule table (USER_LIST_FILTERS order)
    values: dict[str, Any] = {}
    for field in USER_LIST_FILTERS.values():
        text = params.get(field.wire)
        if field.name in ("limit", "cursor") or text is None:
            continue
        values[field.name] = _checked(field, field.from_query(text))
    return values


def _page_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE_LIMIT
    field = LIST_FILTERS["limit"]
    return int(_checked(field, field.from_query(text)))
