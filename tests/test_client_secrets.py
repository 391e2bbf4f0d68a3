"""The API key never leaves the client through an error, even when the server echoes it.

The sandbox never echoes a key, so a MockTransport plays a server (or a proxy in front of
it) that puts the bearer token into its error answers: a JSON error's message, type and
param, a non-JSON page, the reason phrase, or the text of a connection error. For each, the
key must be in none of: ``str`` and ``repr`` of the error, its attributes, its formatted
traceback, and the log records (DEBUG and up) of the call.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from viewerkit import (
    ApiConnectionError,
    ApiError,
    AuthenticationError,
    BadRequest,
    Client,
    ConfigurationError,
    Conflict,
    NotFound,
    RateLimited,
    ServerError,
)

KEY = "sk-live-echo-5f0c2a9e7d1b4c3a8e6f"
Server = Callable[[httpx.Request], httpx.Response]


def echoed(request: httpx.Request) -> str:
    """What an echoing server says: the Authorization header it received."""
    header = request.headers["authorization"]
    assert KEY in header  # the client did send the key: the echo below really carries it
    return f"rejected header Authorization: {header}"


def json_error(status: int) -> Server:
    def server(request: httpx.Request) -> httpx.Response:
        text = echoed(request)
        body = {"error": {"type": f"api_error ({text})", "message": text, "param": text}}
        return httpx.Response(status, json=body, headers={"retry-after-ms": "1"})

    return server


def html_page(request: httpx.Request) -> httpx.Response:
    page = f"<html><h1>502 Bad Gateway</h1><pre>{echoed(request)}</pre></html>"
    return httpx.Response(502, text=page, headers={"content-type": "text/html", "retry-after-ms": "1"})


def reason_phrase(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        502, text="upstream failed", extensions={"reason_phrase": echoed(request).encode()}
    )


def connection_error(kind: type[httpx.TransportError]) -> Server:
    def server(request: httpx.Request) -> httpx.Response:
        raise kind(f"proxy refused: {echoed(request)}", request=request)

    return server


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Captures every log record of the test, from every logger, at DEBUG and up."""
    with caplog.at_level(logging.DEBUG):
        yield caplog


def strings_in(value: Any, depth: int = 0) -> Iterator[str]:
    """The repr of ``value`` and of everything it holds (attributes, items), a few levels deep."""
    yield repr(value)
    if depth > 4:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key, depth + 1)
            yield from strings_in(item, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from strings_in(item, depth + 1)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        yield from strings_in(vars(value), depth + 1)


def assert_key_nowhere(error: BaseException, records: list[logging.LogRecord]) -> None:
    assert KEY not in str(error)
    assert KEY not in repr(error)
    for text in strings_in(vars(error)):
        assert KEY not in text
    for text in strings_in(error.args):
        assert KEY not in text
    assert KEY not in "".join(traceback.format_exception(error))
    assert records, "the client logs its tries at DEBUG"
    for record in records:
        assert KEY not in record.getMessage(), record.name
        if record.exc_info and record.exc_info[1] is not None:
            assert KEY not in "".join(traceback.format_exception(record.exc_info[1]))


def client_of(http: httpx.Client) -> Client:
    # rate_limit_deadline=0: a 429 raises at once (429s are not bounded by max_retries)
    return Client(
        api_key=KEY, base_url="http://avara.test", http_client=http, max_retries=1,
        rate_limit_deadline=0,
    )


def raised_by(server: Server, call: Callable[[Client], object]) -> ApiError:
    with httpx.Client(transport=httpx.MockTransport(server)) as http, client_of(
        http
    ) as c, pytest.raises(ApiError) as caught:
        call(c)
    return caught.value


def list_one_page(c: Client) -> object:
    return c.list_studies(limit=1)


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, BadRequest),
        (401, AuthenticationError),
        (404, NotFound),
        (409, Conflict),
        (429, RateLimited),
        (500, ServerError),
        (503, ServerError),
    ],
)
def test_a_json_error_echoing_the_key_never_shows_it(
    logs: pytest.LogCaptureFixture, status: int, error_class: type[ApiError]
) -> None:
    error = raised_by(json_error(status), list_one_page)
    assert type(error) is error_class
    assert "rejected header Authorization: Bearer <redacted>" in str(error)  # the text is kept
    assert_key_nowhere(error, logs.records)


def test_a_create_conflict_echoing_the_key_never_shows_it(logs: pytest.LogCaptureFixture) -> None:
    error = raised_by(
        json_error(409),
        lambda c: c.create_study(severity="stat", study_description="CT", study_instance_uid="1.2.3"),
    )
    assert isinstance(error, Conflict)
    assert_key_nowhere(error, logs.records)


def test_a_cancel_answered_409_echoing_the_key_keeps_it_out_of_the_result(
    logs: pytest.LogCaptureFixture,
) -> None:
    with httpx.Client(transport=httpx.MockTransport(json_error(409))) as http, client_of(http) as c:
        result = c.cancel_study("stu_" + "d" * 32)
    assert (result.success, result.changed) == (True, False)
    assert result.message is not None and "Bearer <redacted>" in result.message
    assert KEY not in repr(result)
    assert all(KEY not in record.getMessage() for record in logs.records)


def test_a_non_json_error_page_echoing_the_key_never_shows_it(
    logs: pytest.LogCaptureFixture,
) -> None:
    error = raised_by(html_page, list_one_page)
    assert isinstance(error, ServerError) and error.status_code == 502
    assert "after 2 tries" in str(error)
    assert_key_nowhere(error, logs.records)


def test_a_reason_phrase_echoing_the_key_never_shows_it_in_the_error(
    logs: pytest.LogCaptureFixture,
) -> None:
    error = raised_by(reason_phrase, list_one_page)
    assert isinstance(error, ServerError)
    assert "Bearer <redacted>" in str(error)
    # httpx's own INFO line prints the reason phrase verbatim: pinned separately below
    ours = [r for r in logs.records if r.name.startswith("viewerkit")]
    assert_key_nowhere(error, ours)


def test_httpx_own_log_line_never_shows_a_key_echoed_in_the_reason_phrase(
    logs: pytest.LogCaptureFixture,
) -> None:
    raised_by(reason_phrase, list_one_page)
    assert all(KEY not in r.getMessage() for r in logs.records if r.name == "httpx")


@pytest.mark.parametrize(
    "kind",
    [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError],
)
def test_a_connection_error_whose_text_holds_the_key_never_shows_it(
    logs: pytest.LogCaptureFixture, kind: type[httpx.TransportError]
) -> None:
    error = raised_by(connection_error(kind), list_one_page)
    assert isinstance(error, ApiConnectionError)
    assert f"{kind.__name__}: proxy refused" in str(error)
    assert_key_nowhere(error, logs.records)


# -- the key in a traceback's locals, and keys an HTTP header cannot carry --------------------


def _locals_text(error: BaseException) -> str:
    """The locals of viewerkit's own frames, as a traceback that shows locals prints them
    (the test's frames hold the key on purpose)."""
    found = traceback.TracebackException.from_exception(error, capture_locals=True)
    frames = [f for f in found.stack if "/viewerkit/" in f.filename]
    assert frames
    return "\n".join(f"{f.name}: {f.locals}" for f in frames)


def test_no_traceback_that_shows_locals_shows_the_key(sandbox: Any) -> None:
    """IPython's verbose tracebacks, pytest -l and error trackers print every frame's
    locals; the request path must hold the key only inside httpx's auth flow."""
    with (
        Client(api_key=sandbox.api_key, base_url=sandbox.base_url, max_retries=0) as client,
        pytest.raises(NotFound) as caught,
    ):
        client.retrieve_study("stu_" + "0" * 32)
    text = _locals_text(caught.value)
    assert "'headers'" in text and "_send" in text  # the locals of the request path are shown
    assert sandbox.api_key not in text


@pytest.mark.parametrize(
    "make",
    [
        lambda key: Client(api_key=key, base_url="ftp://nowhere"),  # a bad URL after a good key
        lambda key: Client("http://127.0.0.1:9", key),  # key and URL swapped by position
        lambda key: Client(api_key=key + "\x00", base_url="http://127.0.0.1:9"),
    ],
)
def test_a_configuration_error_shows_the_key_in_no_local(make: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make(KEY)
    text = _locals_text(caught.value)
    assert "_connection" in text
    assert KEY not in text


@pytest.mark.parametrize(
    ("key", "said"),
    [
        (KEY + " extra", "whitespace inside it"),
        (KEY[:5] + "\u00e9" + KEY[5:], "non-ASCII"),
        (KEY + "\x07", "control"),
        (12345, "must be a string"),
        (b"sk-bytes", "must be a string"),
        ("   ", "no API key"),
    ],
)
def test_a_key_no_header_can_carry_is_refused_at_once_naming_no_key(key: Any, said: str) -> None:
    with pytest.raises(ConfigurationError, match=said) as caught:
        Client(api_key=key, base_url="http://127.0.0.1:9")
    assert str(key) not in str(caught.value) or str(key).strip() == ""


def test_a_key_read_from_a_file_with_its_newline_works(sandbox: Any) -> None:
    for ending in ("\n", "\r\n", " "):
        with Client(api_key=sandbox.api_key + ending, base_url=sandbox.base_url) as client:
            assert client.list_studies(limit=1)["studies"]
            assert client.key_fingerprint == Client(
                api_key=sandbox.api_key, base_url=sandbox.base_url
            ).key_fingerprint


@pytest.mark.parametrize(
    "kind", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError]
)
def test_an_error_does_not_chain_to_the_transport_exception_that_held_the_key(
    kind: type[httpx.TransportError],
) -> None:
    """The transport exception's text and its frames' locals may hold the key (httpx built
    the request there): viewerkit's error neither causes from nor carries it as context."""
    error = raised_by(connection_error(kind), list_one_page)
    assert error.__cause__ is None and error.__context__ is None
    assert KEY not in "".join(traceback.format_exception(error))


def test_a_connection_error_through_a_proxy_says_so_naming_no_proxy_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on: the "proxy"
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://user:proxy-secret@127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with Client(api_key=KEY, base_url="http://avara.invalid", max_retries=0) as client, pytest.raises(
        ApiConnectionError, match="through the proxy of HTTP_PROXY"
    ) as caught:
        client.list_studies(limit=1)
    assert "proxy-secret" not in str(caught.value)
    monkeypatch.setenv("NO_PROXY", "avara.invalid")
    with Client(api_key=KEY, base_url="http://avara.invalid", max_retries=0) as client, pytest.raises(
        ApiConnectionError
    ) as direct:
        client.list_studies(limit=1)
    assert "proxy" not in str(direct.value)


ODD_KEY = "sk-live+echo/5f0c=2a9e\"7d1b&4c3a"  # characters every encoding spells differently


def _encodings(key: str) -> dict[str, str]:
    import base64
    import json
    import urllib.parse

    return {
        "percent-encoded": urllib.parse.quote(key, safe=""),
        "form-encoded": urllib.parse.quote_plus(key),
        "JSON-escaped": json.dumps(key)[1:-1],
        "base64": base64.b64encode(key.encode()).decode(),
        "base64 unpadded": base64.b64encode(key.encode()).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(key.encode()).decode(),
        "base64 of the header": base64.b64encode(f"Bearer {key}".encode()).decode(),
        "Basic credentials": base64.b64encode(f"{key}:".encode()).decode(),
        # the key after a user name of each length modulo 3: every base64 alignment
        "Basic user:key": base64.b64encode(f"user:{key}".encode()).decode(),
        "Basic u:key": base64.b64encode(f"u:{key}".encode()).decode(),
        "Basic us:key": base64.b64encode(f"us:{key}".encode()).decode(),
        "JSON with escaped slashes": json.dumps(key)[1:-1].replace("/", "\\/"),
        "lower-case percent-encoded": urllib.parse.quote(key, safe="").lower(),
    }


@pytest.mark.parametrize("form", list(_encodings(ODD_KEY)))
def test_a_key_echoed_in_another_encoding_never_shows_it(logs: pytest.LogCaptureFixture, form: str) -> None:
    spelled = _encodings(ODD_KEY)[form]
    assert spelled != ODD_KEY

    def server(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {ODD_KEY}"
        text = f"rejected token {spelled}"  # what a proxy or gateway may log back
        return httpx.Response(400, json={"error": {"type": text, "message": text, "param": text}},
                              extensions={"reason_phrase": text.encode()})

    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key=ODD_KEY, base_url="http://avara.test", http_client=http, max_retries=0
    ) as c, pytest.raises(BadRequest) as caught:
        c.list_studies(limit=1)
    shown = [str(caught.value), repr(caught.value), *strings_in(vars(caught.value)),
             "".join(traceback.format_exception(caught.value)), *(r.getMessage() for r in logs.records)]
    assert "<redacted>" in str(caught.value)
    # no run of the echo long enough to hold a quarter of the key survives
    pieces = {spelled[i:i + len(ODD_KEY) // 2] for i in range(0, max(1, len(spelled) - len(ODD_KEY) // 2))}
    assert not [text for text in shown if ODD_KEY in text or any(piece in text for piece in pieces)], form


def test_a_short_key_of_another_client_does_not_cut_a_long_key_out_of_the_log_scrubber(
    logs: pytest.LogCaptureFixture,
) -> None:
    with Client(api_key="k", base_url="http://avara.test") as other:  # alive while the echo is logged
        error = raised_by(reason_phrase, list_one_page)
        assert other.key_fingerprint  # still alive here
    assert all(KEY not in r.getMessage() and KEY[3:] not in r.getMessage() for r in logs.records), [
        r.getMessage() for r in logs.records if r.name == "httpx"]
    assert isinstance(error, ServerError)
