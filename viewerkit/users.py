"""The user list (the Viewer's users) as a table: ``fetch_users``.

One row per listed user, with a fixed schema (``USER_SCHEMA``), the same on every call:

===========================  =================================================================
``user_id``                  string, never null: ``usr_`` + 32 lowercase hex
``email``                    string
``first_name``,              string (``middle_name``, ``suffix1`` ``suffix2`` null where the
``middle_name``,             user has none; ``suffix1`` is e.g. ``MD``, ``suffix2`` e.g. ``PhD``)
``last_name``, ``suffix1``,
``suffix2``
``clinic_role``              string: one of the SDK's ``ClinicRole`` values
                             (``viewerkit.schema.CLINIC_ROLES``: ``Radiologist``,
                             ``Imaging Technologist``, ... ``Other``), kept as sent
``level``                    string: ``owner``, ``admin`` or ``member`` (another value is a
                             ``ResponseValidationError``, as for the study table's enums)
``can_manage_studies``,      pandas ``boolean`` (nullable)
``has_dashboard_access``
``invited_source``           string: ``dashboard`` or ``api`` (the same)
``created_at``,              ``datetime64[ms, UTC]``; NaT where null (``last_login_at``: the
``last_login_at``            user never logged in)
``phone_number``             string; only with ``include_phone=True``: a phone number is
                             personal data, so it is not fetched into a table by default
===========================  =================================================================

Strings are the installed pandas' default string dtype (pandas 3: ``str``). Rows are in
the order the API lists them (the sandbox: by user ID), each user once.

Users whose access was revoked may be missing from the list (the sandbox leaves them out,
as a plausible hosted API would): ``viewerkit.roster`` keeps the ones the study table names,
flagged ``listed=False``.

The pages go from JSON to Arrow (one struct array per page, flattened once), then to
pandas once: no per-user model objects.

>>> [f.name for f in USER_SCHEMA][:4]
['user_id', 'email', 'first_name', 'middle_name']
>>> users_to_pandas(users_to_arrow([])).dtypes["created_at"]
datetime64[ms, UTC]
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from viewerkit.errors import ApiError, Reason, ResponseValidationError, ValidationError
from viewerkit.runner import Progress, progress_bar
from viewerkit.schema import (
    LIST_FILTERS,
    NOT_GIVEN,
    RULES,
    NotGiven,
    UserFilterArgs,
    checked_user_filters,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from viewerkit.client import Client

log = logging.getLogger(__name__)

__all__ = [
    "fetch_users_arrow_or_none",
    "NOT_LISTABLE",
    "USER_SCHEMA",
    "PHONE_FIELD",
    "fetch_users",
    "fetch_users_arrow",
    "users_to_arrow",
    "users_to_pandas",
]

_TIMESTAMP: Final = pa.timestamp("ms", tz="UTC")

# (table column, wire field, Arrow type) of every column, in table order
_COLUMNS: Final = (
    ("user_id", "userId", pa.string()),
    ("email", "email", pa.string()),
    ("first_name", "firstName", pa.string()),
    ("middle_name", "middleName", pa.string()),
    ("last_name", "lastName", pa.string()),
    ("suffix1", "suffix1", pa.string()),
    ("suffix2", "suffix2", pa.string()),
    ("clinic_role", "clinicRole", pa.string()),
    ("level", "level", pa.string()),
    ("can_manage_studies", "canManageStudies", pa.bool_()),
    ("has_dashboard_access", "hasDashboardAccess", pa.bool_()),
    ("invited_source", "invitedSource", pa.string()),
    ("created_at", "createdAt", _TIMESTAMP),
    ("last_login_at", "lastLoginAt", _TIMESTAMP),
)
_PHONE: Final = ("phone_number", "phoneNumber", pa.string())
_TIMES: Final = ("created_at", "last_login_at")

#: The user table's columns, in order (``phone_number`` follows them when asked for).
USER_SCHEMA: Final = pa.schema(
    [pa.field(name, kind, nullable=name != "user_id") for name, _, kind in _COLUMNS]
)
#: The column ``include_phone=True`` adds at the end.
PHONE_FIELD: Final = pa.field("phone_number", pa.string())


def _wire_type(include_phone: bool) -> pa.StructType:
    # times are read as text, then parsed (a bad one is reported, not a crash)
    columns = (*_COLUMNS, _PHONE) if include_phone else _COLUMNS
    return pa.struct(
        [(wire, pa.string() if kind == _TIMESTAMP else kind) for _, wire, kind in columns]
    )


def _wire_array(users: list[Any], call: str, include_phone: bool) -> pa.StructArray:
    try:
        # fields not in the type (the phone number, unless asked for) are never read
        return pa.array(users, type=_wire_type(include_phone))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ApiError(f"a user does not have the User shape: {exc}", call=call) from None


def _flatten(wire: pa.StructArray, call: str, include_phone: bool) -> pa.Table:
    from viewerkit.frame import parse_times

    columns = (*_COLUMNS, _PHONE) if include_phone else _COLUMNS
    arrays = dict(zip((name for name, _, _ in columns), wire.flatten(), strict=True))
    cases: list[dict[str, Any]] = []
    ids = arrays["user_id"]
    bad_ids = RULES["user_id"].check_column(ids, "user_id", nullable=False)
    cases += [{"user_id": ids[f.row].as_py(), "field": "user_id", "value": f.value,
               "reason": f.reason, "row": f.row} for f in bad_ids]
    # the closed sets of the contract; clinic_role is kept as sent (the SDK's ClinicRole
    # list is long and grows: an unknown role is simply not a reassignment target)
    for name, rule in (("level", "user_level"), ("invited_source", "invited_source")):
        column = arrays[name]
        cases += [{"user_id": ids[f.row].as_py(), "field": name, "value": f.value,
                   "reason": f.reason, "row": f.row} for f in RULES[rule].check_column(column, name)]
    for name in _TIMES:
        text = arrays[name]
        arrays[name], bad = parse_times(text)
        cases += [
            {"user_id": ids[row].as_py(), "field": name, "value": text[row].as_py(),
             "reason": Reason.NOT_ISO_TIME, "row": row}
            for row in bad.tolist()
        ]
    if cases:
        cases.sort(key=lambda case: case["row"])
        raise _response_error(call, cases)
    schema = pa.schema([*USER_SCHEMA, PHONE_FIELD] if include_phone else list(USER_SCHEMA))
    table = pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)
    # each user once (a server paging by offset may list one twice while users join)
    codes = pc.dictionary_encode(table.column("user_id")).combine_chunks().indices
    _, first = np.unique(np.asarray(codes), return_index=True)
    if len(first) < table.num_rows:
        table = table.take(pa.array(np.sort(first)))
    return table


def _response_error(call: str, cases: list[dict[str, Any]]) -> ResponseValidationError:
    lines = [
        f"  user {case['user_id']}, field {case['field']}: {case['reason'].value} (got {case['value']!r})"
        for case in cases[:10]
    ]
    more = f"\n  ... and {len(cases) - 10} more" if len(cases) > 10 else ""
    frame = pd.DataFrame(
        [{k: case[k] for k in ("user_id", "field", "value", "reason")} for case in cases],
        columns=["user_id", "field", "value", "reason"],
        dtype=object,
    )
    noun = "value" if len(cases) == 1 else "values"
    return ResponseValidationError(
        f"{len(cases)} {noun} outside the contract\n" + "\n".join(lines) + more,
        call=call,
        failure_cases=frame,
    )


def users_to_arrow(
    users: list[dict[str, Any]], *, include_phone: bool = False, call: str = "list_users"
) -> pa.Table:
    """Wire ``User`` dicts (as the API sends them) -> the user table as Arrow
    (``USER_SCHEMA``, plus ``phone_number`` with ``include_phone``).

    ``ApiError`` when a user does not have the User shape; ``ResponseValidationError``
    (``failure_cases`` columns ``user_id``, ``field``, ``value``, ``reason``) for a user ID
    or a time outside the contract, all at once. A user listed twice is kept once.

    >>> table = users_to_arrow([{"userId": "usr_" + "a" * 32, "email": "a@x.example",
    ...     "canManageStudies": True, "createdAt": "2026-11-27T16:30:43.197Z"}])
    >>> table.column("created_at").to_pylist()[0].isoformat()
    '2026-11-27T16:30:43.197000+00:00'
    """
    return _flatten(_wire_array(users, call, include_phone), call, include_phone)


def users_to_pandas(table: pa.Table) -> pd.DataFrame:
    """The user table as the DataFrame ``fetch_users`` gives (one ``to_pandas``): strings
    in the default string dtype, the two flags ``boolean``, times ``datetime64[ms, UTC]``.

    >>> users_to_pandas(users_to_arrow([])).dtypes["can_manage_studies"]
    BooleanDtype
    """
    frame: pd.DataFrame = table.to_pandas(
        types_mapper={pa.bool_(): pd.BooleanDtype()}.get, coerce_temporal_nanoseconds=False
    )
    for name in _TIMES:
        if str(frame[name].dtype) != "datetime64[ms, UTC]":
            frame[name] = frame[name].astype("datetime64[ms, UTC]")
    return frame


def _pages(
    client: Client, filters: dict[str, Any], limit: int, include_phone: bool
) -> Iterator[pa.StructArray]:
    from viewerkit.client import CursorTrail

    trail = CursorTrail("list_users")
    cursor: str | NotGiven | None = NOT_GIVEN
    while cursor is not None:
        body = client.list_users_raw(limit=limit, cursor=cursor, **filters)
        try:
            page = orjson.loads(body)
            users, next_cursor, more = page["users"], page.get("cursor"), bool(page.get("hasMore"))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ApiError("the answer is not a page of users", call="list_users") from None
        if not isinstance(users, list):
            raise ApiError("the answer is not a page of users", call="list_users")
        yield _wire_array(users, "list_users", include_phone)
        cursor = trail.follow(next_cursor, more, len(users))


def fetch_users_arrow(
    client: Client,
    *,
    include_phone: bool = False,
    progress: Progress = True,
    limit: int = 100,
    **filters: Unpack[UserFilterArgs],
) -> pa.Table:
    """Every listed user matching the filters, as the user table in Arrow (see the module
    notes for the columns); arguments as :func:`fetch_users`."""
    given, cases = checked_user_filters(filters)
    cases += [f.case() for f in LIST_FILTERS["limit"].check(limit)]
    if not isinstance(include_phone, (bool, np.bool_)):
        cases.append({"field": "include_phone", "value": include_phone, "reason": Reason.NOT_BOOLEAN})
    if cases:
        raise ValidationError.from_cases("fetch_users", cases)
    parts: list[pa.StructArray] = []
    with progress_bar(progress, desc="reading users", unit=" users", leave=False) as bar:
        for part in _pages(client, given, int(limit), bool(include_phone)):
            parts.append(part)
            bar.update(len(part))
    wire = pa.concat_arrays(parts) if parts else pa.array([], type=_wire_type(bool(include_phone)))
    return _flatten(wire, "list_users", bool(include_phone))


#: The answers of the user list that mean "this key may not list users" (a key without the
#: right, or a server without the endpoint): the roster then falls back to the users the
#: studies name.
NOT_LISTABLE: Final = (401, 403, 404)


def fetch_users_arrow_or_none(client: Client, *, progress: Progress = False) -> pa.Table | None:
    """The whole user list as :func:`fetch_users_arrow` reads it, or None when the API does
    not let this key list users (:data:`NOT_LISTABLE`); any other failure raises."""
    from viewerkit.errors import ApiStatusError

    try:
        return fetch_users_arrow(client, progress=progress)
    except ApiStatusError as exc:
        if exc.status_code in NOT_LISTABLE:
            log.warning("this key cannot list the Viewer's users (%d): the roster falls back "
                        "to the users the studies name", exc.status_code)
            return None
        raise


def fetch_users(
    client: Client,
    *,
    include_phone: bool = False,
    progress: Progress = True,
    limit: int = 100,
    **filters: Unpack[UserFilterArgs],
) -> pd.DataFrame:
    """Every listed user as a DataFrame: one row per user, the columns of the module notes
    (``USER_SCHEMA``; ``phone_number`` last, and only with ``include_phone=True``).

    The filters are those of ``Client.list_users`` (``email``, ``first_name``,
    ``last_name``, ``level``, ``invited_source``); ``limit`` is the page size (1-100: 2,000
    users are 20 pages at the default 100). Bad values raise ``ValidationError`` naming
    the field, before any request. Pages follow one cursor chain with the studies'
    safeguards (``CursorTrail``); a value outside the contract raises
    ``ResponseValidationError``. ``progress`` shows a tqdm bar of users read.

    >>> from viewerkit import Client
    >>> with Client(api_key="sk-x", base_url="http://127.0.0.1:9") as client:
    ...     fetch_users(client, level="boss")
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: fetch_users: 1 problem
      field level: must be one of owner, admin, member (got 'boss')
    """
    return users_to_pandas(
        fetch_users_arrow(client, include_phone=include_phone, progress=progress, limit=limit, **filters)
    )
