"""The one exception tree of viewerkit.

::

    ViewerkitError                  anything viewerkit raises on purpose
    ├── ConfigurationError          missing API key, missing optional extra, bad setting
    ├── ValidationError             bad input caught before any request (also a ValueError)
    ├── CacheError                  a cache file that is corrupt, foreign or unreadable
    ├── LockTimeout                 another process held a lock for longer than the timeout
    └── ApiError                    the API answered with an error, or could not be reached
        ├── ApiConnectionError      no answer: refused, reset, timed out
        ├── ResponseValidationError an answer holds values outside the contract (``.failure_cases``)
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

from enum import Enum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ViewerkitError",
    "ConfigurationError",
    "ValidationError",
    "Reason",
    "SECRET_FIELDS",
    "CacheError",
    "LockTimeout",
    "ApiError",
    "ApiConnectionError",
    "ApiStatusError",
    "BadRequest",
    "AuthenticationError",
    "NotFound",
    "Conflict",
    "RateLimited",
    "RequestTooLarge",
    "ServerError",
    "ResponseValidationError",
    "error_for_status",
]


class ViewerkitError(Exception):
    """Base of every error viewerkit raises on purpose."""


class ConfigurationError(ViewerkitError):
    """A setting is missing or wrong (no API key, a missing optional extra, ...)."""


class Reason(str, Enum):
    """Why a value was refused: the ``reason`` column of ``ValidationError.failure_cases``.

    The values read as the end of a sentence naming the field ("severity must be one of
    normal, high, stat"). Like pandera's check names, they let a script filter the failures
    by kind; the optional detail of a case (e.g. the allowed values of an option) only goes
    into the message.

    >>> Reason.NOT_SEVERITY.value
    'must be one of normal, high, stat'
    """

    # presence and shape
    REQUIRED = "is required"
    EMPTY = "must not be empty"
    BLANK = "must not be blank (only whitespace)"
    NOT_TEXT = "must be a string"
    NOT_BOOLEAN = "must be True or False"
    NOT_WHOLE_NUMBER = "must be a whole number"
    OUT_OF_RANGE = "is out of range"
    NOT_A_CHOICE = "is not one of the allowed values"
    CONFLICT = "conflicts with another value"
    DUPLICATE = "appears more than once"
    # the contract's formats and enums
    NOT_STUDY_ID = "must be stu_ + 32 lowercase hex"
    NOT_USER_ID = "must be usr_ + 32 lowercase hex"
    NOT_CUSTOMER_ID = "must be cus_ + 32 lowercase hex"
    NOT_API_KEY_ID = "must be a lowercase UUID version 4"
    NOT_DICOM_UID = "must be a DICOM UID (1-64 digits and single dots, no leading zeros)"
    NOT_SEVERITY = "must be one of normal, high, stat"
    NOT_VIEWER_STATUS = "must be one of incomplete, complete"
    NOT_CURSOR = "must be the non-empty cursor of a previous page"
    TOO_LONG = "is too long"
    # metadata limits
    NOT_METADATA = "must be a mapping of string keys to string values"
    TOO_MANY_PAIRS = "has more than 50 pairs"
    BAD_METADATA_KEY = "has a key that is not 1-100 characters"
    METADATA_VALUE_NOT_TEXT = "has a value that is not a string"
    METADATA_VALUE_TOO_LONG = "has a value longer than 1000 characters"
    # tables, times and options given to the library
    MISSING_COLUMN = "is a required column that is missing"
    WRONG_TYPE = "has the wrong type"
    NOT_A_TIME = "must be a time (ISO 8601 or a datetime)"
    NOT_A_DURATION = "must be hours (a number) or a timedelta"
    NOT_POSITIVE = "must be positive"
    BAD_WINDOW = "must be (start, end) with start before end"
    # files written by the library
    WRONG_SUFFIX = "must end with one of the allowed suffixes"
    NO_SUCH_FOLDER = "must be in a folder that exists"
    IS_A_FOLDER = "is a folder, not a file"
    # text
    NOT_UNICODE = "must be valid Unicode text (no lone surrogates)"
    # appended by the reports' input checks
    NOT_A_FOLDER = "is a file, not a folder"
    # appended by the checks of the API's answers and of the CSV export
    NOT_ISO_TIME = "must be an ISO 8601 / RFC 3339 time"
    STARTS_LIKE_FORMULA = "starts like a spreadsheet formula (=, +, -, @, tab or carriage return)"
    # appended by the sandbox server's settings
    NOT_BASE_URL = "must be an http:// or https:// base URL"
    # appended by the roster (Viewer users)
    NOT_USER_LEVEL = "must be one of owner, admin, member"
    NOT_INVITED_SOURCE = "must be one of dashboard, api"
    # appended by the reports' time zone
    NOT_A_TIME_ZONE = "must be an IANA time zone name such as UTC or Europe/Berlin"


#: Fields whose values are secrets: their value never reaches ``failure_cases`` or a message.
SECRET_FIELDS: Final = frozenset({"api_key", "url", "reroute_url"})
_REDACTED: Final = "<redacted>"
_CASE_COLUMNS: Final = ("row", "field", "value", "reason")


class ValidationError(ViewerkitError, ValueError):
    """Input was rejected before any request was sent.

    ``failure_cases`` is always a DataFrame with columns ``row`` (the row of a table or plan,
    else None), ``field``, ``value`` and ``reason`` (a :class:`Reason`): one row per problem,
    every problem found, not just the first. Values of secret fields are ``<redacted>``.

    >>> error = ValidationError.one("create_study", "severity", "urgent", Reason.NOT_SEVERITY)
    >>> print(error)
    create_study: 1 problem
      field severity: must be one of normal, high, stat (got 'urgent')
    >>> error.failure_cases["reason"].tolist() == [Reason.NOT_SEVERITY]
    True
    """

    def __init__(self, message: str, failure_cases: pd.DataFrame | None = None) -> None:
        super().__init__(message)
        if failure_cases is None:
            import pandas as pd

            failure_cases = pd.DataFrame(columns=list(_CASE_COLUMNS))
        self.failure_cases: pd.DataFrame = failure_cases

    @classmethod
    def from_cases(cls, what: str, cases: list[dict[str, Any]]) -> ValidationError:
        """Build one error from gathered cases: dicts with ``row`` (optional), ``field``,
        ``value``, ``reason`` (a :class:`Reason`) and an optional ``detail`` that the
        message adds after the reason and a comma (e.g. ``"allowed: full, active"``)."""
        import pandas as pd

        rows: list[dict[str, Any]] = []
        lines: list[str] = []
        for case in cases:
            reason = case["reason"]
            if not isinstance(reason, Reason):
                raise TypeError(f"a failure case's reason must be a Reason, not {reason!r}")
            value = _REDACTED if case["field"] in SECRET_FIELDS else case["value"]
            row = case.get("row")
            rows.append({"row": row, "field": case["field"], "value": value, "reason": reason})
            if len(lines) < 10:
                detail = case.get("detail")
                said = reason.value + (f", {detail}" if detail else "")
                where = f"row {row!s}, field {case['field']}" if row is not None else f"field {case['field']}"
                lines.append(f"  {where}: {said} (got {value!r})")
        # object columns: pandas 3 would store the str-based Reason members as plain "str"
        frame = pd.DataFrame(rows, columns=list(_CASE_COLUMNS), dtype=object)
        more = f"\n  ... and {len(cases) - 10} more" if len(cases) > 10 else ""
        noun = "problem" if len(cases) == 1 else "problems"
        return cls(f"{what}: {len(cases)} {noun}\n" + "\n".join(lines) + more, frame)

    @classmethod
    def one(
        cls,
        what: str,
        field: str,
        value: object,
        reason: Reason,
        *,
        detail: str | None = None,
        row: object = None,
    ) -> ValidationError:
        """One problem as an error (see :meth:`from_cases`)."""
        case = {"row": row, "field": field, "value": value, "reason": reason, "detail": detail}
        return cls.from_cases(what, [case])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.failure_cases))


class CacheError(ViewerkitError):
    """A cache file is corrupt, foreign or unreadable; the message says how to rebuild it."""


class LockTimeout(ViewerkitError):
    """Another process held an inter-process lock (e.g. a refresh of the same cache) for
    longer than the timeout. ``path`` is the lock file, ``waited_s`` how long this process
    waited, in seconds.

    >>> print(LockTimeout("data/cache/ns/.lock", 300.0, holder="another refresh"))
    gave up after waiting 300.0 s for the lock data/cache/ns/.lock, held by another refresh; try again when it has finished
    """

    def __init__(self, path: str, waited_s: float, *, holder: str = "another process") -> None:
        super().__init__(
            f"gave up after waiting {waited_s:.1f} s for the lock {path}, held by {holder}; "
            "try again when it has finished"
        )
        self.path = path
        self.waited_s = waited_s
        self.holder = holder

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_lock_timeout, (self.path, self.waited_s, self.holder))


def _rebuild_lock_timeout(path: str, waited_s: float, holder: str) -> LockTimeout:
    return LockTimeout(path, waited_s, holder=holder)


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


class RequestTooLarge(ApiStatusError):
    """413: the request body is larger than the server accepts (the sandbox's limit is
    1 MiB; the hosted API publishes none, so the client sets no length limit of its own):
    shorten the study description or the metadata values."""


class RateLimited(ApiStatusError):
    """429: too many requests; ``retry_after`` holds the server's hint in seconds."""


class ServerError(ApiStatusError):
    """5xx: the server failed."""


class ResponseValidationError(ApiError):
    """The API answered, but values in its answer are outside the contract (e.g. a
    ``createdAt`` that is not an ISO 8601 time), gathered over a whole read and raised once.

    ``failure_cases`` is a DataFrame with columns ``study_id`` (the study the value came
    from; None if the study has no ID), ``field`` (the study table column, e.g.
    ``created_at``), ``value`` (the text the API sent) and ``reason`` (a :class:`Reason`):
    one row per value, in the order the studies were read. The message lists the first ten;
    ``study`` is set when they are all of one study.

    >>> error = ResponseValidationError.from_cases("list_studies", [
    ...     {"study_id": "stu_" + "a" * 32, "field": "created_at", "value": "yesterday",
    ...      "reason": Reason.NOT_ISO_TIME}])
    >>> print(error)
    list_studies stu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: 1 value outside the contract
      study stu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, field created_at: must be an ISO 8601 / RFC 3339 time (got 'yesterday')
    >>> error.failure_cases.columns.tolist()
    ['study_id', 'field', 'value', 'reason']
    """

    def __init__(
        self,
        message: str,
        *,
        call: str,
        study: str | None = None,
        failure_cases: pd.DataFrame | None = None,
    ) -> None:
        super().__init__(message, call=call, study=study)
        if failure_cases is None:
            import pandas as pd

            failure_cases = pd.DataFrame(columns=list(_RESPONSE_CASE_COLUMNS))
        self.failure_cases: pd.DataFrame = failure_cases
        self._init = (message, {"call": call, "study": study, "failure_cases": failure_cases})

    @classmethod
    def from_cases(cls, call: str, cases: list[dict[str, Any]]) -> ResponseValidationError:
        """One error from gathered cases: dicts with ``study_id``, ``field``, ``value`` and
        ``reason`` (a :class:`Reason`); ``call`` names the API call that answered."""
        import pandas as pd

        lines = []
        for case in cases[:10]:
            if not isinstance(case["reason"], Reason):
                raise TypeError(f"a failure case's reason must be a Reason, not {case['reason']!r}")
            value = case["value"]
            shown = repr(value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "...")
            lines.append(
                f"  study {case['study_id']}, field {case['field']}: {case['reason'].value} (got {shown})"
            )
        frame = pd.DataFrame(
            [{k: case[k] for k in _RESPONSE_CASE_COLUMNS} for case in cases],
            columns=list(_RESPONSE_CASE_COLUMNS),
            dtype=object,
        )
        studies = {case["study_id"] for case in cases}
        more = f"\n  ... and {len(cases) - 10} more" if len(cases) > 10 else ""
        noun = "value" if len(cases) == 1 else "values"
        return cls(
            f"{len(cases)} {noun} outside the contract\n" + "\n".join(lines) + more,
            call=call,
            study=studies.pop() if len(studies) == 1 else None,
            failure_cases=frame,
        )


_RESPONSE_CASE_COLUMNS: Final = ("study_id", "field", "value", "reason")


def _rebuild(cls: type[ApiError], message: str, kwargs: dict[str, Any]) -> ApiError:
    return cls(message, **kwargs)


_BY_STATUS: dict[int, type[ApiStatusError]] = {
    400: BadRequest,
    401: AuthenticationError,
    404: NotFound,
    409: Conflict,
    413: RequestTooLarge,
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
