"""The one exception tree of viewerkit.

::

    ViewerkitError                  anything viewerkit raises on purpose
    ├── ConfigurationError          missing API key, missing optional extra, bad setting
    ├── ValidationError             bad input caught before any request (also a ValueError)
    ├── CacheError                  a cache file that is corrupt, foreign or unreadable
    └── ApiError                    the API answered with an error, or could not be reached
        ├── ApiConnectionError      no answer: refused, reset, timed out
        └── ApiStatusError          an HTTP error status (``.status_code``)
            ├── BadRequest          400 invalid input (``.param`` names the field)
            ├── AuthenticationError 401 missing or wrong API key
            ├── NotFound            404 unknown study
            ├── Conflict            409 e.g. a Study Instance UID that already exists
            ├── RateLimited         429 (``.retry_after`` in seconds, when given)
            └── ServerError         5xx

Every message names the call and, where there is one, the study; none contains the API key.

>>> try:
...     raise NotFound("no such study", call="retrieve", study="stu_" + "0" * 32, status_code=404)
... except ApiError as exc:
...     print(type(exc).__name__, exc.status_code)
NotFound 404
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ViewerkitError",
    "ConfigurationError",
    "ValidationError",
    "CacheError",
    "ApiError",
    "ApiConnectionError",
    "ApiStatusError",
    "BadRequest",
    "AuthenticationError",
    "NotFound",
    "Conflict",
    "RateLimited",
    "ServerError",
    "error_for_status",
]


class ViewerkitError(Exception):
    """Base of every error viewerkit raises on purpose."""


class ConfigurationError(ViewerkitError):
    """A setting is missing or wrong (no API key, a missing optional extra, ...)."""


class ValidationError(ViewerkitError, ValueError):
    """Input was rejected before any request was sent.

    ``failure_cases`` is a DataFrame with columns ``row``, ``field``, ``value``, ``reason``
    (one row per problem, every problem found, not just the first).
    """

    def __init__(self, message: str, failure_cases: pd.DataFrame | None = None) -> None:
        super().__init__(message)
        self.failure_cases = failure_cases

    @classmethod
    def from_cases(cls, what: str, cases: list[dict[str, Any]]) -> ValidationError:
        """Build one error from gathered ``{"row", "field", "value", "reason"}`` dicts."""
        import pandas as pd

        frame = pd.DataFrame(cases, columns=["row", "field", "value", "reason"])
        lines = [
            f"  row {c['row']!s}, field {c['field']}: {c['reason']} (got {c['value']!r})"
            if c["row"] is not None
            else f"  field {c['field']}: {c['reason']} (got {c['value']!r})"
            for c in cases[:10]
        ]
        more = f"\n  ... and {len(cases) - 10} more" if len(cases) > 10 else ""
        noun = "problem" if len(cases) == 1 else "problems"
        return cls(f"{what}: {len(cases)} {noun}\n" + "\n".join(lines) + more, frame)


class CacheError(ViewerkitError):
    """A cache file is corrupt, foreign or unreadable; the message says how to rebuild it."""


class ApiError(ViewerkitError):
    """The API answered with an error or could not be reached."""

    def __init__(self, message: str, *, call: str, study: str | None = None) -> None:
        where = f"{call}" + (f" {study}" if study else "")
        super().__init__(f"{where}: {message}")
        self.call = call
        self.study = study
        self._init: tuple[str, dict[str, Any]] = (message, {"call": call, "study": study})

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only constructor: the default (cls, args) would lose call / status_code,
        # so the error could not cross a process boundary (multiprocessing, ProcessPool)
        message, kwargs = self._init
        return (_rebuild, (type(self), message, kwargs))


class ApiConnectionError(ApiError):
    """No answer from the API: connection refused, reset or timed out."""


class ApiStatusError(ApiError):
    """The API answered with an HTTP error status."""

    def __init__(
        self,
        message: str,
        *,
        call: str,
        study: str | None = None,
        status_code: int,
        error_type: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        detail = f"{status_code} {message}" + (f" (param: {param})" if param else "")
        super().__init__(detail, call=call, study=study)
        self.status_code = status_code
        self.error_type = error_type
        self.param = param
        self.retry_after = retry_after
        self._init = (
            message,
            {
                "call": call,
                "study": study,
                "status_code": status_code,
                "error_type": error_type,
                "param": param,
                "retry_after": retry_after,
            },
        )


class BadRequest(ApiStatusError):
    """400: the API rejected the input; ``param`` names the field."""


class AuthenticationError(ApiStatusError):
    """401: the API key is missing or wrong."""


class NotFound(ApiStatusError):
    """404: no such study."""


class Conflict(ApiStatusError):
    """409: the request conflicts with the current state (e.g. a duplicate Study Instance UID)."""


class RateLimited(ApiStatusError):
    """429: too many requests; ``retry_after`` holds the server's hint in seconds."""


class ServerError(ApiStatusError):
    """5xx: the server failed."""


def _rebuild(cls: type[ApiError], message: str, kwargs: dict[str, Any]) -> ApiError:
    return cls(message, **kwargs)


_BY_STATUS: dict[int, type[ApiStatusError]] = {
    400: BadRequest,
    401: AuthenticationError,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def error_for_status(status_code: int) -> type[ApiStatusError]:
    """The exception class for an HTTP status code.

    >>> error_for_status(404).__name__, error_for_status(503).__name__
    ('NotFound', 'ServerError')
    """
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, ApiStatusError)
