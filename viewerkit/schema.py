"""The vocabulary of the Avara Viewer Studies API: enums, the one rule table, the list
filters, the Arrow schema.

``RULES`` is every rule of the wire contract (identifier formats, the DICOM UID, the enums,
text, metadata limits, booleans, the page limit, the cursor), each a ``viewerkit.rules.Rule``
that knows its :class:`~viewerkit.errors.Reason` and checks one value (``check``) or a whole
column (``check_column``: a pyarrow array or a pandas Series, vectorised with
``pyarrow.compute``, every failure at once). Which field obeys which rule is said once too: ``FIELDS`` (the
request fields of create / update / retrieve / cancel), ``LIST_FILTERS`` (the list query)
and ``STUDY_COLUMNS`` (the study table's writable columns and identifiers). The client's
argument checks, ``list_query_params``, the sandbox's request validation and
``viewerkit.frame.from_pandas`` all use them, so they refuse exactly the same values.

:class:`StudyFilters` is the study list's six filters, checked once, shared by the client,
the fetcher, the CLI and the sandbox.

``STUDY_SCHEMA`` holds the columns every path (fetched, cached, refreshed, built from the
sandbox) returns, before the ``meta.*`` columns, which are one string column per metadata
key seen.

>>> is_study_id("stu_" + "a" * 32), is_dicom_uid("1.2.840.10008.5.1.4.1.1.2")
(True, True)
>>> is_dicom_uid("1.02.3")
False
>>> [(f.row, f.reason.name) for f in RULES["severity"].check_column(["stat", "urgent", None])]
[(1, 'NOT_SEVERITY')]
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

import numpy as np
import pyarrow as pa

from viewerkit.errors import Reason, ValidationError
from viewerkit.rules import (
    META_PREFIX,
    Choice,
    Column,
    Failure,
    Flag,
    Metadata,
    Pattern,
    Rule,
    Text,
    WholeNumber,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SEVERITIES",
    "VIEWER_STATUSES",
    "Severity",
    "ViewerStatus",
    "META_PREFIX",
    "METADATA_COLUMN",
    "METADATA_MAP_TYPE",
    "METADATA_SHAPES",
    "MetadataShape",
    "MANY_METADATA_KEYS",
    "REFERENCE_USER_FIELDS",
    "STUDY_SCHEMA",
    "SEVERITY_TYPE",
    "VIEWER_STATUS_TYPE",
    "MAX_METADATA_PAIRS",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_VALUE_LENGTH",
    "MAX_PAGE_LIMIT",
    "RULES",
    "Field",
    "FIELDS",
    "LIST_FILTERS",
    "STUDY_COLUMNS",
    "check_arguments",
    "wire_body",
    "reference_failures",
    "study_table_failures",
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
    "StudyFilters",
    "StudyFilterArgs",
    "StudyFetchFilterArgs",
    "FILTER_NAMES",
    "MULTI_VALUE_FILTERS",
    "CREATE_FIELDS",
    "UPDATE_FIELDS",
    "IDENTIFY_FIELDS",
    "USER_LEVELS",
    "INVITED_SOURCES",
    "CLINIC_ROLES",
    "UserLevel",
    "InvitedSource",
    "USER_LIST_FILTERS",
    "USER_FILTER_NAMES",
    "UserFilterArgs",
    "user_list_query_params",
    "checked_user_filters",
]

Severity = Literal["normal", "high", "stat"]
ViewerStatus = Literal["incomplete", "complete"]
#: How the study table holds metadata: one ``meta.<key>`` column per key, or one map column.
MetadataShape = Literal["columns", "map"]

#: Severities in their order of urgency (the ordered categorical ``normal < high < stat``).
SEVERITIES: Final = ("normal", "high", "stat")
#: Viewer statuses, as the API spells them.
VIEWER_STATUSES: Final = ("incomplete", "complete")

MAX_METADATA_PAIRS: Final = 50
MAX_METADATA_KEY_LENGTH: Final = 100
MAX_METADATA_VALUE_LENGTH: Final = 1000
MAX_PAGE_LIMIT: Final = 100

_HEX32: Final = "[0-9a-f]{32}"

#: The rule table: every rule of the wire contract, by name.
RULES: Final[Mapping[str, Rule]] = {
    rule.name: rule
    for rule in (
        Pattern("study_id", "stu_" + _HEX32, Reason.NOT_STUDY_ID,
                "stu_ followed by 32 lowercase hex digits"),
        Pattern("user_id", "usr_" + _HEX32, Reason.NOT_USER_ID,
                "usr_ followed by 32 lowercase hex digits"),
        Pattern("customer_id", "cus_" + _HEX32, Reason.NOT_CUSTOMER_ID,
                "cus_ followed by 32 lowercase hex digits"),
        Pattern("api_key_id",
                "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                Reason.NOT_API_KEY_ID, "a lowercase UUID version 4"),
        # components: "0" or a digit run without a leading zero, separated by single dots
        Pattern("study_instance_uid", r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*",
                Reason.NOT_DICOM_UID,
                "a DICOM UID: 1-64 digits and dots, no empty component, no leading zero",
                max_length=64),
        Choice("severity", SEVERITIES, Reason.NOT_SEVERITY),
        Choice("study_viewer_status", VIEWER_STATUSES, Reason.NOT_VIEWER_STATUS),
        # the sandbox enforces no length limit on descriptions (only 1 MiB per body), and the
        # hosted API publishes none: so no max_length here
        Text("study_description", "a non-empty string"),
        # the list filter is a contains match: "   " is a search, only "" is refused
        Text("description_filter", "a non-empty string", blank_ok=True),
        Metadata("metadata", MAX_METADATA_PAIRS, MAX_METADATA_KEY_LENGTH,
                 MAX_METADATA_VALUE_LENGTH),
        Flag("boolean"),
        WholeNumber("page_limit", 1, MAX_PAGE_LIMIT),
        Text("cursor", "the cursor of a previous page", blank_ok=True,
             not_text=Reason.NOT_CURSOR, empty=Reason.NOT_CURSOR),
        # the roster (Viewer users): the user list's filters
        Choice("user_level", ("owner", "admin", "member"), Reason.NOT_USER_LEVEL),
        Choice("invited_source", ("dashboard", "api"), Reason.NOT_INVITED_SOURCE),
        Text("email_filter", "a non-empty email address"),
        # contains matches, as the description filter: only "" is refused
        Text("name_filter", "a non-empty string", blank_ok=True),
    )
}


# --- which field obeys which rule -----------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A field of the contract: ``name`` as viewerkit spells it (client argument, table
    column, ``failure_cases`` field), ``wire`` as the API does, its rule, and whether null
    (``None``) is a value of it (e.g. ``assigned_to=None`` unassigns; ``null_detail`` says so
    in the message of a value of the wrong form).

    >>> FIELDS["assigned_to"].check("bob")[0].case()["detail"]
    'or None'
    """

    name: str
    wire: str
    rule: Rule
    nullable: bool = False
    null_detail: str = "or None"

    def check(self, value: object) -> list[Failure]:
        """Every failure of one value of this field."""
        failures = self.rule.check(value, self.name, nullable=self.nullable)
        if self.nullable:
            failures = [
                dataclasses.replace(f, detail=self.null_detail)
                if f.reason is self.rule.reason and f.detail is None
                else f
                for f in failures
            ]
        return failures

    def check_column(self, values: Column) -> list[Failure]:
        """Every failure in a column of this field (rows are positions)."""
        return self.rule.check_column(values, self.name, nullable=self.nullable)

    def to_query(self, value: Any) -> str:
        """A valid value as query text; null is the literal ``null``."""
        return "null" if value is None else self.rule.to_query(value)

    def from_query(self, text: str) -> object:
        """Query text as the value to check."""
        if self.nullable and text == "null":
            return None
        return self.rule.from_query(text)


def _fields(*fields: Field) -> Mapping[str, Field]:
    return {f.name: f for f in fields}


#: The request fields of create, update, retrieve and cancel / uncancel / reroute-url.
FIELDS: Final[Mapping[str, Field]] = _fields(
    Field("study_id", "studyId", RULES["study_id"]),
    Field("study_instance_uid", "studyInstanceUid", RULES["study_instance_uid"]),
    Field("study_description", "studyDescription", RULES["study_description"]),
    Field("severity", "severity", RULES["severity"]),
    Field("study_viewer_status", "studyViewerStatus", RULES["study_viewer_status"]),
    Field("assigned_to", "assignedTo", RULES["user_id"], nullable=True),
    Field("express_customer_id", "expressCustomerId", RULES["customer_id"], nullable=True),
    Field("metadata", "metadata", RULES["metadata"], nullable=True),
)

#: The list query's filters, in the order the sandbox checks them; ``None`` for the two
#: nullable ones selects "none" (the wire's literal ``null``).
LIST_FILTERS: Final[Mapping[str, Field]] = _fields(
    # the CLI's text form spells None as the word null (StudyFilters.from_text)
    dataclasses.replace(FIELDS["assigned_to"], null_detail="or None (null on the command line) for none"),
    dataclasses.replace(FIELDS["express_customer_id"], null_detail="or None (null on the command line) for none"),
    Field("is_cancelled", "isCancelled", RULES["boolean"]),
    FIELDS["severity"],
    FIELDS["study_viewer_status"],
    Field("study_description", "studyDescription", RULES["description_filter"]),
    Field("limit", "limit", RULES["page_limit"]),
    Field("cursor", "cursor", RULES["cursor"]),
)

#: The study table's columns ``from_pandas`` checks: the identifiers a request is addressed
#: by (never null: ``STUDY_SCHEMA`` says so) and the writable fields (null where the table
#: allows it), plus the ``meta.*`` columns (``Metadata.check_meta_columns``). The read-only
#: provenance columns (``created_by_*``, names, emails) come from the server and are never
#: sent, so they are not refused here.
STUDY_COLUMNS: Final[Mapping[str, Field]] = _fields(
    Field("study_id", "studyId", RULES["study_id"]),
    Field("study_instance_uid", "studyInstanceUid", RULES["study_instance_uid"]),
    Field("study_description", "studyDescription", RULES["study_description"], nullable=True),
    Field("severity", "severity", RULES["severity"], nullable=True),
    Field("study_viewer_status", "studyViewerStatus", RULES["study_viewer_status"],
          nullable=True),
    Field("assigned_to_user_id", "assignedTo", RULES["user_id"], nullable=True),
    Field("express_customer_id", "expressCustomerId", RULES["customer_id"], nullable=True),
)


def is_study_id(value: object) -> bool:
    """``stu_`` followed by 32 lowercase hex digits."""
    return RULES["study_id"].accepts(value)


def is_user_id(value: object) -> bool:
    """``usr_`` followed by 32 lowercase hex digits."""
    return RULES["user_id"].accepts(value)


def is_customer_id(value: object) -> bool:
    """``cus_`` followed by 32 lowercase hex digits."""
    return RULES["customer_id"].accepts(value)


def is_api_key_id(value: object) -> bool:
    """A lowercase UUID version 4."""
    return RULES["api_key_id"].accepts(value)


def is_dicom_uid(value: object) -> bool:
    """A DICOM UID: 1-64 characters of digits and dots, no empty component, no leading zero."""
    return RULES["study_instance_uid"].accepts(value)


def metadata_problems(metadata: object) -> list[str]:
    """Every way ``metadata`` breaks the contract's limits, as readable reasons (empty if fine).

    >>> metadata_problems({"site": "North"})
    []
    >>> metadata_problems({"": "x"})
    ["key '' must be 1-100 characters"]
    """
    rule = RULES["metadata"]
    assert isinstance(rule, Metadata)
    return [sentence for *_, sentence in rule.problems(metadata)]


def check_arguments(call: str, /, **arguments: object) -> None:
    """Check request arguments (named as in ``FIELDS``; ``NOT_GIVEN`` ones are skipped) and
    raise one ``ValidationError`` naming every bad one, before anything is sent.

    >>> check_arguments("update_study", study_id="stu_" + "a" * 32, severity="urgent")
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: update_study: 1 problem
      field severity: must be one of normal, high, stat (got 'urgent')
    """
    failures: list[Failure] = []
    for name, value in arguments.items():
        if not isinstance(value, NotGiven):
            failures += FIELDS[name].check(value)
    if failures:
        raise ValidationError.from_cases(call, [f.case() for f in failures])


def wire_body(**arguments: object) -> dict[str, Any]:
    """The JSON body of checked arguments, camelCase; ``NOT_GIVEN`` ones are left out.

    >>> wire_body(severity="stat", assigned_to=None, metadata=NOT_GIVEN)
    {'severity': 'stat', 'assignedTo': None}
    """
    body: dict[str, Any] = {}
    for name, value in arguments.items():
        if isinstance(value, NotGiven):
            continue
        body[FIELDS[name].wire] = dict(value) if isinstance(value, Mapping) else value
    return body


def reference_failures(study_id: object, study_instance_uid: object) -> list[Failure]:
    """How cancel, uncancel and reroute-url name their study: by ID or UID (``None`` = not
    given), at least one. Every failure, the study ID's first.

    >>> [f.reason.name for f in reference_failures(None, None)]
    ['REQUIRED']
    """
    if study_id is None and study_instance_uid is None:
        return [
            Failure("study_id", None, Reason.REQUIRED, detail="give study_id or study_instance_uid")
        ]
    failures: list[Failure] = []
    if study_id is not None:
        failures += FIELDS["study_id"].check(study_id)
    if study_instance_uid is not None:
        failures += FIELDS["study_instance_uid"].check(study_instance_uid)
    return failures


def study_table_failures(table: pa.Table | pd.DataFrame) -> list[Failure]:
    """Every failure of a study table (Arrow table or DataFrame) against ``STUDY_COLUMNS``
    and the metadata limits, vectorised per column; ``row`` is the position. A missing
    ``study_id`` or ``study_instance_uid`` column is one ``MISSING_COLUMN`` failure.

    >>> import pyarrow as pa
    >>> table = pa.table({"study_id": ["stu_" + "1" * 32, "stu_2"], "study_instance_uid": ["1", "2"],
    ...                   "severity": ["stat", "urgent"]})
    >>> [(f.row, f.field, f.reason.name) for f in study_table_failures(table)]
    [(1, 'study_id', 'NOT_STUDY_ID'), (1, 'severity', 'NOT_SEVERITY')]
    """
    if isinstance(table, pa.Table):
        names: list[Any] = list(table.column_names)

        def column(name: Any) -> Column:
            return table.column(name)
    else:
        names = list(table.columns)

        def column(name: Any) -> Column:
            return table[name]

    order = {name: at for at, name in enumerate(STUDY_COLUMNS)}
    failures: list[Failure] = []
    for field in STUDY_COLUMNS.values():
        if field.name in names:
            failures += field.check_column(column(field.name))
        elif not field.nullable:
            failures.append(Failure(field.name, None, Reason.MISSING_COLUMN))
    meta = {name: column(name) for name in names
            if isinstance(name, str) and name.startswith(META_PREFIX)}
    rule = RULES["metadata"]
    assert isinstance(rule, Metadata)
    if meta:
        failures += rule.check_meta_columns(meta)
    if METADATA_COLUMN in names:  # the map shape: one map (or dict) per row, null allowed
        failures += rule.check_column(column(METADATA_COLUMN), METADATA_COLUMN)
    failures.sort(
        key=lambda f: (-1 if f.row is None else f.row, order.get(f.field, len(order)))
    )
    return failures


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


#: The column that holds all metadata in the study table's ``metadata="map"`` shape (instead
#: of the ``meta.*`` columns), and its Arrow type: null where the study's metadata is null,
#: an empty map for ``{}``.
METADATA_COLUMN: Final = "metadata"
METADATA_MAP_TYPE: Final = pa.map_(pa.string(), pa.string())
#: The two shapes of metadata in the study table (see ``viewerkit.frame``).
METADATA_SHAPES: Final = ("columns", "map")
#: Past this many distinct metadata keys, the ``columns`` shape warns and suggests ``map``:
#: each key is a column of every row, so memory and time grow with rows x keys.
MANY_METADATA_KEYS: Final = 500


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
    filters: StudyFilters | None = None,
    /,
    *,
    limit: int | float | np.integer | NotGiven = NOT_GIVEN,
    cursor: str | NotGiven = NOT_GIVEN,
    **filter_args: Any,
) -> dict[str, str]:
    """Check one list call's filters (a :class:`StudyFilters`, or its keyword arguments),
    ``limit`` and ``cursor`` against ``LIST_FILTERS``, and encode them as the API's query
    parameters. Every problem is reported at once, as a ``ValidationError`` naming the
    field, before any request.

    ``None`` for ``assigned_to`` / ``express_customer_id`` selects studies with no assignee /
    no customer (the API's literal ``null``); ``NOT_GIVEN`` leaves a filter off. The API takes
    one value per filter.

    >>> list_query_params(assigned_to=None, is_cancelled=False, severity="stat", limit=100)
    {'assignedTo': 'null', 'isCancelled': 'false', 'severity': 'stat', 'limit': '100'}
    """
    chosen, cases = StudyFilters.checked(filters, filter_args)
    params: dict[str, str] = {}
    if chosen is not None:
        cases += chosen.several_values()
        params.update(
            (LIST_FILTERS[name].wire, LIST_FILTERS[name].to_query(value))
            for name, value in chosen.given().items()
        )
    for name, value in (("limit", limit), ("cursor", cursor)):
        if isinstance(value, NotGiven):
            continue
        found = LIST_FILTERS[name].check(value)
        cases += [f.case() for f in found]
        if not found:
            params[LIST_FILTERS[name].wire] = LIST_FILTERS[name].to_query(value)
    if cases:
        raise ValidationError.from_cases("bad study list filters", cases)
    return params


# --- the study list's filters -----------------------------------------------------------------

#: The six filters of the study list, in the order of ``LIST_FILTERS``.
FILTER_NAMES: Final = (
    "assigned_to",
    "express_customer_id",
    "is_cancelled",
    "severity",
    "study_description",
    "study_viewer_status",
)
#: The filters a fetch may give several values of (the fetcher pages one partition per value).
MULTI_VALUE_FILTERS: Final = ("severity", "study_viewer_status", "is_cancelled")
#: Every value of the multi-value filters: the partition dimensions.
FILTER_VALUES: Final[Mapping[str, tuple[Any, ...]]] = {
    "severity": SEVERITIES,
    "study_viewer_status": VIEWER_STATUSES,
    "is_cancelled": (False, True),
}

# The partition dimensions' values, ordered so that the usually-largest partition (normal,
# complete, not cancelled) comes first: the fetcher starts it first.
_PARTITION_ORDER: Final[Mapping[str, tuple[Any, ...]]] = {
    **FILTER_VALUES,
    "study_viewer_status": tuple(reversed(VIEWER_STATUSES)),
}


class StudyFilterArgs(TypedDict, total=False):
    """The study list's filters as keyword arguments, one value each, as the API takes
    them (``Client.list_studies`` ...). ``None`` for ``assigned_to`` /
    ``express_customer_id`` selects studies with none. Fields: :data:`FILTER_NAMES`."""

    assigned_to: str | None
    express_customer_id: str | None
    is_cancelled: bool
    severity: Severity
    study_description: str
    study_viewer_status: ViewerStatus


class StudyFetchFilterArgs(TypedDict, total=False):
    """The filters as ``fetch_studies`` takes them: as :class:`StudyFilterArgs`, and
    several values of severity, viewer status or cancelled (e.g. ``severity=["stat",
    "high"]``), which the fetcher pages as separate partitions."""

    assigned_to: str | None
    express_customer_id: str | None
    is_cancelled: bool | Sequence[bool]
    severity: Severity | Sequence[Severity]
    study_description: str
    study_viewer_status: ViewerStatus | Sequence[ViewerStatus]


@dataclass(frozen=True)
class StudyFilters:
    """Filters of the study list, checked once against ``LIST_FILTERS`` when made (every bad
    value at once, as a ``ValidationError`` naming the field, before any request).

    A filter left ``NOT_GIVEN`` is off; ``None`` for ``assigned_to`` /
    ``express_customer_id`` selects studies with none. Severity, viewer status and
    cancelled may hold several values (a tuple, in the contract's order): the fetcher pages
    one partition per value, while a single list call (:meth:`query_params`) takes one value
    per filter, as the API does.

    >>> StudyFilters(severity=["stat", "high"], assigned_to=None)
    StudyFilters(assigned_to=None, severity=('high', 'stat'))
    >>> StudyFilters(severity="stat").query_params()
    {'severity': 'stat'}
    >>> StudyFilters(severity="urgent")
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: bad study list filters: 1 problem
      field severity: must be one of normal, high, stat (got 'urgent')
    """

    # several values may be given as any sequence; once made, they are a tuple
    assigned_to: str | None | NotGiven = NOT_GIVEN
    express_customer_id: str | None | NotGiven = NOT_GIVEN
    is_cancelled: bool | Sequence[bool] | NotGiven = NOT_GIVEN
    severity: Severity | Sequence[Severity] | NotGiven = NOT_GIVEN
    study_description: str | NotGiven = NOT_GIVEN
    study_viewer_status: ViewerStatus | Sequence[ViewerStatus] | NotGiven = NOT_GIVEN

    def __post_init__(self) -> None:
        cases = self._normalise()
        if cases:
            raise ValidationError.from_cases("bad study list filters", cases)

    def _normalise(self) -> list[dict[str, Any]]:
        """Check every filter; give several values one order (the contract's) and one value
        as itself; np.bool_ as bool. The failures as ``failure_cases`` dicts."""
        failures: list[Failure] = []
        for name in FILTER_NAMES:
            value = getattr(self, name)
            if isinstance(value, NotGiven):
                continue
            if name in MULTI_VALUE_FILTERS and _is_collection(value):
                values = list(value)
                found = [f for v in values for f in LIST_FILTERS[name].check(v)]
                if not values:
                    found = [Failure(name, value, Reason.EMPTY, detail="give one value or more")]
                if not found:
                    ordered = tuple(v for v in FILTER_VALUES[name] if v in values)
                    object.__setattr__(self, name, ordered[0] if len(ordered) == 1 else ordered)
                failures += found
            else:
                found = LIST_FILTERS[name].check(value)
                if name == "is_cancelled" and not found:
                    object.__setattr__(self, name, bool(value))  # np.bool_ -> bool
                failures += found
        return [f.case() for f in failures]

    def __repr__(self) -> str:
        given = ", ".join(f"{name}={value!r}" for name, value in self.given().items())
        return f"StudyFilters({given})"

    @classmethod
    def of(
        cls, filters: StudyFilters | None = None, arguments: Mapping[str, Any] | None = None
    ) -> StudyFilters:
        """A ``StudyFilters`` from either a ``StudyFilters`` or filter keyword arguments (as
        the public functions take them), not both; an unknown filter name is a
        ``ValidationError``, as is any bad value (every problem at once).

        >>> StudyFilters.of(None, {"is_cancelled": False})
        StudyFilters(is_cancelled=False)
        """
        chosen, cases = cls.checked(filters, arguments)
        if cases or chosen is None:
            raise ValidationError.from_cases("bad study list filters", cases)
        return chosen

    @classmethod
    def checked(
        cls, filters: StudyFilters | None, arguments: Mapping[str, Any] | None
    ) -> tuple[StudyFilters | None, list[dict[str, Any]]]:
        """As :meth:`of`, but the problems come back as ``failure_cases`` dicts (with None
        for the filters when there are any), to be reported with others."""
        arguments = dict(arguments or {})
        cases: list[dict[str, Any]] = [
            {"field": name, "value": arguments.pop(name), "reason": Reason.NOT_A_CHOICE,
             "detail": "filters: " + ", ".join(FILTER_NAMES)}
            for name in sorted(set(arguments) - set(FILTER_NAMES))
        ]
        if filters is not None and not isinstance(filters, StudyFilters):
            cases.append({"field": "filters", "value": filters, "reason": Reason.WRONG_TYPE,
                          "detail": "must be a StudyFilters"})
        elif filters is not None and arguments:
            cases.append({"field": "filters", "value": filters, "reason": Reason.CONFLICT,
                          "detail": "give a StudyFilters or filter keywords, not both"})
        if filters is not None:
            return (None, cases) if cases else (filters, [])
        chosen = cls.__new__(cls)
        for name in FILTER_NAMES:
            object.__setattr__(chosen, name, arguments.get(name, NOT_GIVEN))
        cases += chosen._normalise()  # every problem at once, a misspelt name's too
        return (None, cases) if cases else (chosen, [])

    @classmethod
    def from_text(cls, **values: str | bool | Sequence[str] | None) -> StudyFilters:
        """Filters as a command line gives them: ``None`` (or an empty sequence) leaves a
        filter off; the literal ``null`` selects "none" for ``assigned_to`` /
        ``express_customer_id``; ``is_cancelled`` takes a bool or ``true`` / ``false``.

        >>> StudyFilters.from_text(assigned_to="null", severity=None, is_cancelled="false")
        StudyFilters(assigned_to=None, is_cancelled=False)
        """
        given: dict[str, Any] = {}
        for name, value in values.items():
            if value is None or (not isinstance(value, (str, bool)) and len(value) == 0):
                continue
            given[name] = (
                LIST_FILTERS[name].from_query(value)
                if isinstance(value, str) and name in LIST_FILTERS
                else value
            )
        return cls.of(None, given)

    def given(self) -> dict[str, Any]:
        """The filters that are on, by name (keyword arguments of ``Client.list_studies``
        when :attr:`single`)."""
        return {
            name: getattr(self, name)
            for name in FILTER_NAMES
            if not isinstance(getattr(self, name), NotGiven)
        }

    @property
    def single(self) -> bool:
        """Does every filter hold at most one value (one list call can take them)?"""
        return not any(isinstance(getattr(self, name), tuple) for name in MULTI_VALUE_FILTERS)

    def several_values(self) -> list[dict[str, Any]]:
        """A ``failure_cases`` dict per filter holding several values (a list call takes
        one), empty when :attr:`single`."""
        return [
            {"field": name, "value": getattr(self, name), "reason": Reason.CONFLICT,
             "detail": "a list call takes one value per filter (fetch_studies takes several)"}
            for name in MULTI_VALUE_FILTERS
            if isinstance(getattr(self, name), tuple)
        ]

    def query_params(self) -> dict[str, str]:
        """The filters as the API's query parameters (``null`` for none). Raises
        ``ValidationError`` for a filter with several values: the API takes one.

        >>> StudyFilters(assigned_to=None, is_cancelled=True).query_params()
        {'assignedTo': 'null', 'isCancelled': 'true'}
        """
        return list_query_params(self)

    def partitions(self, split: Sequence[str] = MULTI_VALUE_FILTERS) -> list[StudyFilters]:
        """Disjoint single-value filters that together select exactly what these select:
        each filter named in ``split`` that is off is split into all its values, and each
        that holds several values into those. Every study has one severity, one viewer
        status and one cancelled flag, so the partitions cover the filters exactly once.

        >>> [p.is_cancelled for p in StudyFilters(severity="high",
        ...                                       study_viewer_status="complete").partitions()]
        [False, True]
        >>> len(StudyFilters(severity=("stat", "high")).partitions(split=()))
        2
        """
        dimensions: list[tuple[str, tuple[Any, ...]]] = []
        for name in MULTI_VALUE_FILTERS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                dimensions.append((name, tuple(v for v in _PARTITION_ORDER[name] if v in value)))
            elif isinstance(value, NotGiven) and name in split:
                dimensions.append((name, _PARTITION_ORDER[name]))
        names = [name for name, _ in dimensions]
        return [
            dataclasses.replace(self, **dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(values for _, values in dimensions))
        ]


def _is_collection(value: object) -> bool:
    """Several values: a list, tuple, set, 1-D array or Series (not a string, a mapping, or
    a table, whose iteration gives its column names)."""
    return (
        isinstance(value, Iterable)
        and not isinstance(value, (str, bytes, Mapping))
        and getattr(value, "ndim", 1) == 1
        and not hasattr(value, "columns")
        and not hasattr(value, "column_names")
    )


# --- the roster: the user list's filters ------------------------------------------------------

UserLevel = Literal["owner", "admin", "member"]
InvitedSource = Literal["dashboard", "api"]

#: A user's access level, as the API spells it (``owner`` is dashboard-only).
USER_LEVELS: Final = ("owner", "admin", "member")
#: How a user was invited: from the dashboard or through the API.
INVITED_SOURCES: Final = ("dashboard", "api")
#: The SDK's ``ClinicRole`` values (``avara`` 0.3.0): a user's clinical or organizational role.
CLINIC_ROLES: Final = (
    "Doctor", "Physician", "Surgeon", "Radiologist", "Cardiologist", "Neurologist", "Urologist",
    "Gynecologist", "Endocrinologist", "Oncologist", "Radiation Oncologist", "Hematologist",
    "Gastroenterologist", "Pulmonologist", "Nephrologist", "Rheumatologist", "Dermatologist",
    "Ophthalmologist", "Otolaryngologist", "Pediatrician", "Obstetrician", "Psychiatrist",
    "Anesthesiologist", "Emergency Medicine Physician", "Family Medicine Physician",
    "Internal Medicine Physician", "Pathologist", "Nuclear Medicine Physician",
    "Pain Management Specialist", "Infectious Disease Specialist", "Immunologist",
    "Physician Assistant", "Nurse Practitioner", "Certified Registered Nurse Anesthetist",
    "Psychologist", "Medical Assistant", "Scribe", "Registered Nurse", "Nurse Manager",
    "Patient Care Coordinator", "Imaging Technologist", "Laboratory Technician",
    "Medical Laboratory Scientist", "Pathologists' Assistant", "Phlebotomist", "Pharmacist",
    "Pharmacy Technician", "Physical Therapist", "Occupational Therapist",
    "Speech-Language Pathologist", "Respiratory Therapist", "Nutritionist",
    "Front Desk Operator", "Revenue Cycle Manager", "Administrative Director",
    "Administrative Assistant", "Legal Administrator", "IT Administrator", "IT Support",
    "Software Engineer", "Other",
)

#: The user list's query, in the order the sandbox checks it: ``email`` is an exact match
#: (case-insensitive), ``first_name`` / ``last_name`` case-insensitive contains matches.
USER_LIST_FILTERS: Final[Mapping[str, Field]] = _fields(
    Field("email", "email", RULES["email_filter"]),
    Field("first_name", "firstName", RULES["name_filter"]),
    Field("last_name", "lastName", RULES["name_filter"]),
    Field("level", "level", RULES["user_level"]),
    Field("invited_source", "invitedSource", RULES["invited_source"]),
    LIST_FILTERS["limit"],
    LIST_FILTERS["cursor"],
)
#: The five filters of the user list, in the order of ``USER_LIST_FILTERS``.
USER_FILTER_NAMES: Final = ("email", "first_name", "last_name", "level", "invited_source")


class UserFilterArgs(TypedDict, total=False):
    """The user list's filters as keyword arguments (``Client.list_users`` ...), one value
    each. Fields: :data:`USER_FILTER_NAMES`."""

    email: str
    first_name: str
    last_name: str
    level: UserLevel
    invited_source: InvitedSource


def checked_user_filters(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The user-list filters that are given (``NOT_GIVEN`` ones left out), and the
    ``failure_cases`` dicts of every bad one or unknown name (all at once).

    >>> checked_user_filters({"level": "admin", "email": NOT_GIVEN})
    ({'level': 'admin'}, [])
    >>> [c["reason"].name for c in checked_user_filters({"level": "boss", "role": "x"})[1]]
    ['NOT_A_CHOICE', 'NOT_USER_LEVEL']
    """
    cases: list[dict[str, Any]] = [
        {"field": name, "value": arguments[name], "reason": Reason.NOT_A_CHOICE,
         "detail": "filters: " + ", ".join(USER_FILTER_NAMES)}
        for name in sorted(set(arguments) - set(USER_FILTER_NAMES))
    ]
    given: dict[str, Any] = {}
    for name in USER_FILTER_NAMES:
        value = arguments.get(name, NOT_GIVEN)
        if isinstance(value, NotGiven):
            continue
        found = USER_LIST_FILTERS[name].check(value)
        cases += [f.case() for f in found]
        if not found:
            given[name] = value
    return given, cases


def user_list_query_params(
    *,
    limit: int | float | np.integer | NotGiven = NOT_GIVEN,
    cursor: str | NotGiven = NOT_GIVEN,
    **filters: Any,
) -> dict[str, str]:
    """Check one user-list call's filters (:class:`UserFilterArgs`), ``limit`` (1-100) and
    ``cursor`` against ``USER_LIST_FILTERS`` and encode them as the API's query
    parameters. Every problem at once, as a ``ValidationError`` naming the field, before
    any request.

    >>> user_list_query_params(level="member", first_name="ann", limit=100)
    {'firstName': 'ann', 'level': 'member', 'limit': '100'}
    >>> user_list_query_params(invited_source="email")
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: bad user list filters: 1 problem
      field invited_source: must be one of dashboard, api (got 'email')
    """
    given, cases = checked_user_filters(filters)
    params = {USER_LIST_FILTERS[n].wire: USER_LIST_FILTERS[n].to_query(v) for n, v in given.items()}
    for name, value in (("limit", limit), ("cursor", cursor)):
        if isinstance(value, NotGiven):
            continue
        found = USER_LIST_FILTERS[name].check(value)
        cases += [f.case() for f in found]
        if not found:
            params[USER_LIST_FILTERS[name].wire] = USER_LIST_FILTERS[name].to_query(value)
    if cases:
        raise ValidationError.from_cases("bad user list filters", cases)
    return params
