"""The vocabulary of the Avara Viewer Studies API and the Arrow schema of the study table.

Enums, identifier formats, the metadata limits, and ``STUDY_SCHEMA``: the columns every
path (fetched, cached, refreshed, built from the sandbox) returns, before the ``meta.*``
columns, which are one string column per metadata key seen.

>>> is_study_id("stu_" + "a" * 32), is_dicom_uid("1.2.840.10008.5.1.4.1.1.2")
(True, True)
>>> is_dicom_uid("1.02.3")
False
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import pyarrow as pa

__all__ = [
    "SEVERITIES",
    "VIEWER_STATUSES",
    "Severity",
    "ViewerStatus",
    "META_PREFIX",
    "REFERENCE_USER_FIELDS",
    "STUDY_SCHEMA",
    "SEVERITY_TYPE",
    "VIEWER_STATUS_TYPE",
    "MAX_METADATA_PAIRS",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_VALUE_LENGTH",
    "MAX_PAGE_LIMIT",
    "is_study_id",
    "is_user_id",
    "is_customer_id",
    "is_api_key_id",
    "is_dicom_uid",
    "metadata_problems",
    "meta_column",
    "NOT_GIVEN",
    "NotGiven",
    "list_query_params",
    "CREATE_FIELDS",
    "UPDATE_FIELDS",
    "IDENTIFY_FIELDS",
]

Severity = Literal["normal", "high", "stat"]
ViewerStatus = Literal["incomplete", "complete"]

#: Severities in their order of urgency (the ordered categorical ``normal < high < stat``).
SEVERITIES: Final = ("normal", "high", "stat")
#: Viewer statuses, as the API spells them.
VIEWER_STATUSES: Final = ("incomplete", "complete")

MAX_METADATA_PAIRS: Final = 50
MAX_METADATA_KEY_LENGTH: Final = 100
MAX_METADATA_VALUE_LENGTH: Final = 1000
MAX_PAGE_LIMIT: Final = 100

_STUDY_ID = re.compile(r"stu_[0-9a-f]{32}")
_USER_ID = re.compile(r"usr_[0-9a-f]{32}")
_CUSTOMER_ID = re.compile(r"cus_[0-9a-f]{32}")
_API_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# components: "0" or a digit run without a leading zero; separated by single dots
_DICOM_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_study_id(value: object) -> bool:
    """``stu_`` followed by 32 lowercase hex digits."""
    return isinstance(value, str) and _STUDY_ID.fullmatch(value) is not None


def is_user_id(value: object) -> bool:
    """``usr_`` followed by 32 lowercase hex digits."""
    return isinstance(value, str) and _USER_ID.fullmatch(value) is not None


def is_customer_id(value: object) -> bool:
    """``cus_`` followed by 32 lowercase hex digits."""
    return isinstance(value, str) and _CUSTOMER_ID.fullmatch(value) is not None


def is_api_key_id(value: object) -> bool:
    """A lowercase UUID version 4."""
    return isinstance(value, str) and _API_KEY_ID.fullmatch(value) is not None


def is_dicom_uid(value: object) -> bool:
    """A DICOM UID: 1-64 characters of digits and dots, no empty component, no leading zero."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 64
        and _DICOM_UID.fullmatch(value) is not None
    )


def metadata_problems(metadata: object) -> list[str]:
    """Every way ``metadata`` breaks the contract's limits, as readable reasons (empty if fine).

    >>> metadata_problems({"site": "North"})
    []
    >>> metadata_problems({"": "x"})
    ["key '' must be 1-100 characters"]
    """
    if not isinstance(metadata, dict):
        return [f"must be an object of string keys and string values, not {type(metadata).__name__}"]
    problems: list[str] = []
    if len(metadata) > MAX_METADATA_PAIRS:
        problems.append(f"has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY_LENGTH:
            problems.append(f"key {key!r} must be 1-{MAX_METADATA_KEY_LENGTH} characters")
        if not isinstance(value, str):
            problems.append(f"value of {key!r} must be a string, not {type(value).__name__}")
        elif len(value) > MAX_METADATA_VALUE_LENGTH:
            problems.append(
                f"value of {key!r} has {len(value)} characters; at most "
                f"{MAX_METADATA_VALUE_LENGTH} are allowed"
            )
    return problems


#: The body fields each write accepts, as the wire spells them (create's first three are
#: required); the client, the study table's row -> body direction and the sandbox share them.
CREATE_FIELDS: Final = (
    "severity",
    "studyDescription",
    "studyInstanceUid",
    "assignedTo",
    "expressCustomerId",
    "metadata",
)
UPDATE_FIELDS: Final = ("assignedTo", "metadata", "severity", "studyDescription", "studyViewerStatus")
#: How cancel, uncancel and reroute-url name their study: one of the two.
IDENTIFY_FIELDS: Final = ("studyId", "studyInstanceUid")


#: Prefix of the metadata columns: key ``site`` becomes column ``meta.site``.
META_PREFIX: Final = "meta."


def meta_column(key: str) -> str:
    """The column name of a metadata key (its exact spelling after ``meta.``)."""
    return META_PREFIX + key


#: The fields of a user reference, as column suffixes, in API order.
REFERENCE_USER_FIELDS: Final = (
    ("user_id", "userId"),
    ("email", "email"),
    ("first_name", "firstName"),
    ("last_name", "lastName"),
    ("middle_name", "middleName"),
    ("suffix1", "suffix1"),
    ("suffix2", "suffix2"),
)

#: Arrow type of ``severity``: dictionary-encoded with the fixed, ordered dictionary SEVERITIES.
SEVERITY_TYPE: Final = pa.dictionary(pa.int8(), pa.string(), ordered=True)
#: Arrow type of ``study_viewer_status``: dictionary-encoded over VIEWER_STATUSES.
VIEWER_STATUS_TYPE: Final = pa.dictionary(pa.int8(), pa.string())

_TIMESTAMP = pa.timestamp("ms", tz="UTC")


def _user_fields(prefix: str) -> list[pa.Field]:
    return [pa.field(f"{prefix}_{suffix}", pa.string()) for suffix, _ in REFERENCE_USER_FIELDS]


#: The fixed columns of the study table, in order. ``meta.*`` string columns follow them.
STUDY_SCHEMA: Final = pa.schema(
    [
        pa.field("study_id", pa.string(), nullable=False),
        pa.field("study_instance_uid", pa.string(), nullable=False),
        pa.field("study_description", pa.string()),
        pa.field("severity", SEVERITY_TYPE),
        pa.field("study_viewer_status", VIEWER_STATUS_TYPE),
        pa.field("is_cancelled", pa.bool_()),
        pa.field("created_at", _TIMESTAMP),
        pa.field("updated_at", _TIMESTAMP),
        pa.field("cancelled_at", _TIMESTAMP),
        *_user_fields("assigned_to"),
        *_user_fields("created_by_user"),
        pa.field("created_by_api_key_id", pa.string()),
        pa.field("created_by_api_key_description", pa.string()),
        pa.field("created_by_api_key_is_viewer_enabled", pa.bool_()),
        pa.field("express_customer_id", pa.string()),
        pa.field("express_customer_name", pa.string()),
    ]
)


class NotGiven:
    """Sentinel for "argument not given", distinct from ``None`` (which means the API's null).

    >>> NOT_GIVEN
    NOT_GIVEN
    """

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()


def list_query_params(
    *,
    assigned_to: str | None | NotGiven = NOT_GIVEN,
    express_customer_id: str | None | NotGiven = NOT_GIVEN,
    is_cancelled: bool | NotGiven = NOT_GIVEN,
    severity: str | NotGiven = NOT_GIVEN,
    study_description: str | NotGiven = NOT_GIVEN,
    study_viewer_status: str | NotGiven = NOT_GIVEN,
    limit: int | NotGiven = NOT_GIVEN,
    cursor: str | NotGiven = NOT_GIVEN,
) -> dict[str, str]:
    """Validate list filters and encode them as the API's query parameters.

    ``None`` for ``assigned_to`` / ``express_customer_id`` selects studies with no assignee /
    no customer (the API's literal ``null``); ``NOT_GIVEN`` leaves the filter off. Every bad
    value is reported at once, as a ``ValidationError`` naming the field, before any request.

    >>> list_query_params(assigned_to=None, is_cancelled=False, severity="stat")
    {'assignedTo': 'null', 'isCancelled': 'false', 'severity': 'stat'}
    """
    from viewerkit.errors import Reason, ValidationError

    cases: list[dict[str, Any]] = []
    params: dict[str, str] = {}

    def bad(field: str, value: object, reason: Reason, detail: str | None = None) -> None:
        cases.append(
            {"row": None, "field": field, "value": value, "reason": reason, "detail": detail}
        )

    for field, wire, check, fmt in (
        ("assigned_to", "assignedTo", is_user_id, Reason.NOT_USER_ID),
        ("express_customer_id", "expressCustomerId", is_customer_id, Reason.NOT_CUSTOMER_ID),
    ):
        value = assigned_to if field == "assigned_to" else express_customer_id
        if value is NOT_GIVEN:
            continue
        if value is None:
            params[wire] = "null"
        elif check(value):
            params[wire] = str(value)
        else:
            bad(field, value, fmt, "or None for none")
    if not isinstance(is_cancelled, NotGiven):
        if isinstance(is_cancelled, bool):
            params["isCancelled"] = "true" if is_cancelled else "false"
        else:
            bad("is_cancelled", is_cancelled, Reason.NOT_BOOLEAN)
    if not isinstance(severity, NotGiven):
        if severity in SEVERITIES:
            params["severity"] = severity
        else:
            bad("severity", severity, Reason.NOT_SEVERITY)
    if not isinstance(study_description, NotGiven):
        if isinstance(study_description, str) and study_description:
            params["studyDescription"] = study_description
        else:
            bad("study_description", study_description, Reason.EMPTY if study_description == "" else Reason.NOT_TEXT)
    if not isinstance(study_viewer_status, NotGiven):
        if study_viewer_status in VIEWER_STATUSES:
            params["studyViewerStatus"] = study_viewer_status
        else:
            bad("study_viewer_status", study_viewer_status, Reason.NOT_VIEWER_STATUS)
    if not isinstance(limit, NotGiven):
        if isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= MAX_PAGE_LIMIT:
            params["limit"] = str(limit)
        else:
            bad("limit", limit, Reason.OUT_OF_RANGE, f"a whole number from 1 to {MAX_PAGE_LIMIT}")
    if not isinstance(cursor, NotGiven):
        if isinstance(cursor, str) and cursor:
            params["cursor"] = cursor
        else:
            bad("cursor", cursor, Reason.NOT_CURSOR)
    if cases:
        raise ValidationError.from_cases("bad study list filters", cases)
    return params
