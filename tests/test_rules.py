"""The one rule table (``viewerkit.schema.RULES``): every rule on one value and on a column,
and the client, ``list_query_params``, ``from_pandas`` and the sandbox refusing the same values.

The agreement tests send each body twice: through a ``Client`` pointed at a port where nothing
listens (``http://127.0.0.1:9``, ``max_retries=0``), where a ``ValidationError`` means the
checks refused it and an ``ApiConnectionError`` means they let it through; and as raw JSON to
the real sandbox, where 400 means refused. They never write to the shared sandbox: a body the
rules accept names an existing Study Instance UID (409) or an unknown study (404).
"""

from __future__ import annotations

import inspect
import json
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from viewerkit import ApiConnectionError, Client, ValidationError
from viewerkit.errors import SECRET_FIELDS, Reason
from viewerkit.frame import conform, from_pandas, studies_to_arrow, to_pandas
from viewerkit.rules import Failure
from viewerkit.sandbox.server import Sandbox
from viewerkit.schema import (
    FIELDS,
    LIST_FILTERS,
    RULES,
    STUDY_COLUMNS,
    StudyFilterArgs,
    is_api_key_id,
    is_customer_id,
    is_dicom_uid,
    is_study_id,
    is_user_id,
    list_query_params,
    metadata_problems,
)

HEX = "0123456789abcdef" * 2  # 32 lowercase hex digits, every one of them
UNKNOWN_STUDY = "stu_" + "0" * 32
UNKNOWN_UID = "1.2.3.999999999"
OFFLINE = "http://127.0.0.1:9"  # nothing listens here: a call the checks let through cannot connect
WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2003", "\u2028", "\u3000"]


def _id_cases(prefix: str, reason: Reason) -> tuple[list[Any], list[tuple[Any, Reason]]]:
    other = {"stu_": "usr_", "usr_": "cus_", "cus_": "stu_"}[prefix]
    good = [prefix + HEX, prefix + "f" * 32, prefix + "0" * 32, np.str_(prefix + HEX)]
    bad = [
        (prefix + HEX.upper(), reason),  # uppercase hex
        (prefix + HEX[:-1] + "A", reason),
        (prefix.upper() + HEX, reason),  # wrong case of the prefix
        (other + HEX, reason),  # another kind of ID
        (prefix + HEX[:31], reason),  # 31 hex digits
        (prefix + HEX + "0", reason),  # 33
        (prefix[:-1] + HEX, reason),  # no underscore
        (HEX, reason),  # no prefix
        (prefix + HEX[:31] + "g", reason),  # not hex
        (" " + prefix + HEX, reason),  # whitespace around
        (prefix + HEX + "\n", reason),
        (prefix + "\u0663" * 32, reason),  # Arabic-Indic digits are digits, not hex
        (prefix + "\uff10" * 32, reason),  # fullwidth zeros
        ("", Reason.EMPTY),
        (7, reason),
        (np.int64(7), reason),
        (float("nan"), reason),  # one value: NaN is a wrong value (in a column, a missing one)
        ([prefix + HEX], reason),
    ]
    return good, bad


UUID4 = "8a59eb6a-3148-4b6b-b581-009a20bbb811"

#: rule name -> (values it accepts, (value, reason) it refuses)
CASES: dict[str, tuple[list[Any], list[tuple[Any, Reason]]]] = {
    "study_id": _id_cases("stu_", Reason.NOT_STUDY_ID),
    "user_id": _id_cases("usr_", Reason.NOT_USER_ID),
    "customer_id": _id_cases("cus_", Reason.NOT_CUSTOMER_ID),
    "api_key_id": (
        [UUID4, str(uuid.UUID(int=0, version=4)), "ffffffff-ffff-4fff-bfff-ffffffffffff"],
        [
            (UUID4.upper(), Reason.NOT_API_KEY_ID),
            (UUID4.replace("-4b6b-", "-1b6b-"), Reason.NOT_API_KEY_ID),  # version 1
            (UUID4.replace("-b581-", "-c581-"), Reason.NOT_API_KEY_ID),  # wrong variant
            (UUID4.replace("-", ""), Reason.NOT_API_KEY_ID),
            (UUID4[:-1], Reason.NOT_API_KEY_ID),
            (UUID4 + "0", Reason.NOT_API_KEY_ID),
            ("{" + UUID4 + "}", Reason.NOT_API_KEY_ID),
            ("", Reason.EMPTY),
            (uuid.UUID(UUID4), Reason.NOT_API_KEY_ID),  # a UUID object is not its text
        ],
    ),
    "study_instance_uid": (
        ["1.2.840.10008.5.1.4.1.1.2", "0", "0.0", "1", "1" * 64, "1." * 31 + "10", "2.25.0"],
        [
            ("1.02.3", Reason.NOT_DICOM_UID),  # leading zero
            ("01", Reason.NOT_DICOM_UID),
            ("1..2", Reason.NOT_DICOM_UID),
            (".1.2", Reason.NOT_DICOM_UID),
            ("1.2.", Reason.NOT_DICOM_UID),
            ("1 .2", Reason.NOT_DICOM_UID),
            ("1.2\n", Reason.NOT_DICOM_UID),
            ("1" * 65, Reason.NOT_DICOM_UID),
            ("1.a", Reason.NOT_DICOM_UID),
            ("\u0661.\u0662", Reason.NOT_DICOM_UID),  # Arabic-Indic digits
            ("-1", Reason.NOT_DICOM_UID),
            ("", Reason.EMPTY),
            (1.2, Reason.NOT_DICOM_UID),
            (12, Reason.NOT_DICOM_UID),
        ],
    ),
    "severity": (
        ["normal", "high", "stat", np.str_("stat")],
        [
            (v, Reason.NOT_SEVERITY)
            for v in ("STAT", "Stat", " stat", "stat ", "urgent", "low", "", 1, pd.NA, ["stat"])
        ],
    ),
    "study_viewer_status": (
        ["incomplete", "complete"],
        [(v, Reason.NOT_VIEWER_STATUS) for v in ("Complete", "done", "open", "", 0, True)],
    ),
    "study_description": (
        ["CT Head", " CT ", "x", "Röntgen Thorax", "胸部CT", "\u200b", "a\tb", "v" * 5000],
        [
            ("", Reason.EMPTY),
            *[(w, Reason.BLANK) for w in WHITESPACE],
            ("   ", Reason.BLANK),
            (" \t\n\u3000", Reason.BLANK),
            (42, Reason.NOT_TEXT),
            (b"CT", Reason.NOT_TEXT),
            ("CT \ud800", Reason.NOT_UNICODE),
        ],
    ),
    "description_filter": (
        ["CT", "   ", "\t", "%_"],
        [("", Reason.EMPTY), (3, Reason.NOT_TEXT), ("\udfff", Reason.NOT_UNICODE)],
    ),
    "boolean": (
        [True, False, np.True_, np.bool_(False)],
        [(v, Reason.NOT_BOOLEAN) for v in ("true", "false", 1, 0, 1.0, "")],
    ),
    "page_limit": (
        [1, 100, 25, np.int64(50), np.int8(1), 25.0, np.float32(100.0)],
        [
            (0, Reason.OUT_OF_RANGE),
            (101, Reason.OUT_OF_RANGE),
            (-1, Reason.OUT_OF_RANGE),
            (10**30, Reason.OUT_OF_RANGE),
            (np.int64(500), Reason.OUT_OF_RANGE),
            (100.0001, Reason.NOT_WHOLE_NUMBER),
            (2.5, Reason.NOT_WHOLE_NUMBER),
            (float("inf"), Reason.NOT_WHOLE_NUMBER),
            ("25", Reason.NOT_WHOLE_NUMBER),
            (True, Reason.NOT_WHOLE_NUMBER),
            (np.True_, Reason.NOT_WHOLE_NUMBER),
        ],
    ),
    "cursor": (
        ["eyJhIjoxfQ", " ", "a"],
        [("", Reason.NOT_CURSOR), (5, Reason.NOT_CURSOR), (b"abc", Reason.NOT_CURSOR)],
    ),
    "metadata": (
        [
            {},
            {"site": "North"},
            {"k": ""},
            {f"k{i}": "v" for i in range(50)},
            {"k" * 100: "v" * 1000},
            {"Site Name": "Nörth", "ключ": "значение"},
            types.MappingProxyType({"site": "North"}),  # any Mapping: the client sends dict(it)
        ],
        [
            ({f"k{i}": "v" for i in range(51)}, Reason.TOO_MANY_PAIRS),
            ({"": "v"}, Reason.BAD_METADATA_KEY),
            ({"k" * 101: "v"}, Reason.BAD_METADATA_KEY),
            ({1: "v"}, Reason.BAD_METADATA_KEY),
            ({"site": "v" * 1001}, Reason.METADATA_VALUE_TOO_LONG),
            ({"site": 3}, Reason.METADATA_VALUE_NOT_TEXT),
            ({"site": None}, Reason.METADATA_VALUE_NOT_TEXT),
            ({"site": ["North"]}, Reason.METADATA_VALUE_NOT_TEXT),
            ({"site": "\ud800"}, Reason.NOT_UNICODE),
            (["site", "North"], Reason.NOT_METADATA),
            ("site=North", Reason.NOT_METADATA),
            (pd.Series({"site": "North"}), Reason.NOT_METADATA),
        ],
    ),
    # the roster's user list filters (issue 12)
    "user_level": (
        ["owner", "admin", "member"],
        [(v, Reason.NOT_USER_LEVEL) for v in ("Admin", "boss", "", " member", 1, ["admin"])],
    ),
    "invited_source": (
        ["dashboard", "api"],
        [(v, Reason.NOT_INVITED_SOURCE) for v in ("API", "email", "", 0)],
    ),
    "email_filter": (
        ["a@x.example", "A@X.EXAMPLE", "x"],
        [("", Reason.EMPTY), ("  ", Reason.BLANK), (3, Reason.NOT_TEXT), ("a\udfff@x", Reason.NOT_UNICODE)],
    ),
    "name_filter": (
        ["Ann", " ", "o'c"],
        [("", Reason.EMPTY), (3, Reason.NOT_TEXT), ("\udfff", Reason.NOT_UNICODE)],
    ),
}


def test_every_rule_of_the_table_has_cases() -> None:
    assert set(CASES) == set(RULES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_rule_accepts_its_good_values_and_names_the_reason_of_each_bad_one(name: str) -> None:
    rule = RULES[name]
    good, bad = CASES[name]
    for value in good:
        assert rule.check(value) == [], (name, value)
        assert rule.accepts(value)
    for value, reason in bad:
        failures = rule.check(value, "the_field")
        assert [f.reason for f in failures] == [reason], (name, value, failures)
        assert failures[0].field == "the_field" and failures[0].row is None
        assert not rule.accepts(value)
    # None is a missing value: required unless the use allows null
    assert [f.reason for f in rule.check(None)] == [Reason.REQUIRED]
    assert rule.check(None, nullable=True) == []


def _column_cases(name: str) -> tuple[list[Any], list[tuple[int, Reason]]]:
    """Good and bad values interleaved with missing ones, and where the bad ones are."""
    good, bad = CASES[name]
    # NaN and pandas NA are wrong as one value but missing as a cell (see the test below)
    bad = [(v, r) for v, r in bad if not (v is pd.NA or (isinstance(v, float) and v != v))]
    values: list[Any] = []
    expected: list[tuple[int, Reason]] = []
    for at, value in enumerate([*good, *(v for v, _ in bad)]):
        values += [value, None]
        if at >= len(good):
            expected.append((2 * at, bad[at - len(good)][1]))
    return values, expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_column_gives_every_failure_with_its_row_as_one_value_would(name: str) -> None:
    values, expected = _column_cases(name)
    rule = RULES[name]
    failures = rule.check_column(pd.Series(values, dtype=object), "col")
    assert [(f.row, f.reason) for f in failures] == expected
    assert {f.field for f in failures} <= {"col"}
    # nulls are missing values: refused only where the use says so
    required = rule.check_column(pd.Series(values, dtype=object), nullable=False)
    missing_rows = [at for at, v in enumerate(values) if v is None]
    assert [f.row for f in required if f.reason is Reason.REQUIRED] == missing_rows


STRING_RULES = [n for n in sorted(RULES) if n not in ("boolean", "page_limit", "metadata")]


@pytest.mark.parametrize("name", STRING_RULES)
def test_string_columns_are_checked_vectorised_in_every_arrow_form(name: str) -> None:
    good, bad = CASES[name]
    # the bad values that Arrow can hold in a string column, with the good ones
    texts = [v for v in good if isinstance(v, str)]
    wrong = [(v, r) for v, r in bad if isinstance(v, str) and "\ud800" not in v and "\udfff" not in v]
    values = [*texts, None, *(v for v, _ in wrong)]
    expected = [(len(texts) + 1 + at, r) for at, (_, r) in enumerate(wrong)]
    plain = pa.array([None if v is None else str(v) for v in values], pa.string())
    forms = {
        "string": plain,
        "large_string": plain.cast(pa.large_string()),
        "dictionary": plain.dictionary_encode(),
        "chunked": pa.chunked_array([plain[:3], plain[3:]]),
        "pandas str": pd.Series(plain.to_pylist(), dtype="str"),
        "pandas category": pd.Series(plain.to_pylist(), dtype="category"),
        "python list": plain.to_pylist(),
    }
    for form, column in forms.items():
        failures = RULES[name].check_column(column)
        assert [(f.row, f.reason) for f in failures] == expected, form
        assert [f.value for f in failures] == [v for v, _ in wrong], form


@pytest.mark.parametrize("name", STRING_RULES)
def test_a_column_of_another_type_fails_in_every_present_row(name: str) -> None:
    failures = RULES[name].check_column(pa.array([1, None, 3]))
    assert [(f.row, f.value) for f in failures] == [(0, 1), (2, 3)]
    assert {f.reason for f in failures} == {RULES[name].reason}


def test_missing_cells_are_none_nan_and_pandas_na_alike() -> None:
    column = pd.Series(["stat", None, np.nan, pd.NA, "urgent"], dtype=object)
    failures = RULES["severity"].check_column(column)
    assert [(f.row, f.value) for f in failures] == [(4, "urgent")]
    assert [f.row for f in RULES["severity"].check_column(column, nullable=False)] == [1, 2, 3, 4]
    nan_floats = pa.array([1.0, float("nan"), None])
    assert [f.row for f in RULES["page_limit"].check_column(nan_floats, nullable=False)] == [1, 2]


def test_page_limit_and_boolean_columns_are_vectorised_by_type() -> None:
    limits = RULES["page_limit"].check_column(pa.array([0, 1, 100, 101], pa.int16()))
    assert [(f.row, f.reason) for f in limits] == [(0, Reason.OUT_OF_RANGE), (3, Reason.OUT_OF_RANGE)]
    floats = RULES["page_limit"].check_column(np.array([1.0, 1.5, 100.0, 1e9, np.inf]))
    assert [(f.row, f.reason) for f in floats] == [
        (1, Reason.NOT_WHOLE_NUMBER),
        (3, Reason.OUT_OF_RANGE),
        (4, Reason.NOT_WHOLE_NUMBER),
    ]
    assert RULES["boolean"].check_column(pd.Series([True, None, False], dtype="boolean")) == []
    texts = RULES["boolean"].check_column(pa.array(["true", None]))
    assert [(f.row, f.reason) for f in texts] == [(0, Reason.NOT_BOOLEAN)]
    mixed = RULES["boolean"].check_column(pd.Series([True, "yes", np.False_], dtype=object))
    assert [(f.row, f.value) for f in mixed] == [(1, "yes")]


def test_a_metadata_map_column_gives_every_bad_pair_with_its_row() -> None:
    maps = pa.array(
        [
            {"site": "North"},
            None,
            {"": "x", "ok": "v" * 1001},
            {f"k{i}": "v" for i in range(51)},
            {"site": None},
        ],
        pa.map_(pa.string(), pa.string()),
    )
    failures = RULES["metadata"].check_column(maps)
    assert [(f.row, f.reason) for f in failures] == [
        (2, Reason.BAD_METADATA_KEY),
        (2, Reason.METADATA_VALUE_TOO_LONG),
        (3, Reason.TOO_MANY_PAIRS),
        (4, Reason.METADATA_VALUE_NOT_TEXT),
    ]
    assert failures[1].detail == "key 'ok' has 1001" and len(failures[1].value) <= 80
    # the same failures as one value at a time
    for row in (2, 3, 4):
        one = RULES["metadata"].check(dict(maps[row].as_py()))
        assert [f.reason for f in one] == [f.reason for f in failures if f.row == row]
    dicts = RULES["metadata"].check_column(pd.Series([{"a": "b"}, {"": "c"}, None]))
    assert [(f.row, f.reason) for f in dicts] == [(1, Reason.BAD_METADATA_KEY)]


def test_metadata_problems_still_reads_as_sentences() -> None:
    assert metadata_problems({"site": "North"}) == []
    assert metadata_problems({"": "x", "site": 3}) == [
        "key '' must be 1-100 characters",
        "value of 'site' must be a string, not int",
    ]
    assert metadata_problems([1]) == [
        "must be an object of string keys and string values, not list"
    ]


def test_the_is_helpers_are_the_rules() -> None:
    for helper, name in (
        (is_study_id, "study_id"),
        (is_user_id, "user_id"),
        (is_customer_id, "customer_id"),
        (is_api_key_id, "api_key_id"),
        (is_dicom_uid, "study_instance_uid"),
    ):
        good, bad = CASES[name]
        assert all(helper(v) for v in good)
        assert not any(helper(v) for v, _ in bad)
        assert not helper(None)


# -- one value and a column agree on any text --------------------------------------------------

ALPHABET = list("0123456789abcdefABF._-stuvrc ") + ["stu_", "usr_", "cus_", "4", "\u0663"] + WHITESPACE
texts = st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join)
id_like = st.builds(
    lambda prefix, digits, tail: prefix + digits + tail,
    st.sampled_from(["stu_", "usr_", "cus_", "STU_", ""]),
    st.text("0123456789abcdefABCDEF", min_size=30, max_size=34),
    st.sampled_from(["", "", " ", "\n", "g"]),
)
uid_like = st.lists(st.sampled_from(["0", "1", "2", "10", "01", "", "840", "9" * 20]), min_size=1, max_size=8).map(".".join)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.none() | texts | id_like | uid_like, max_size=12))
def test_one_value_and_a_column_agree_on_any_text(values: list[str | None]) -> None:
    column = pa.array(values, pa.string())
    for name in STRING_RULES:
        rule = RULES[name]
        one = [(at, f.reason) for at, v in enumerate(values) if v is not None for f in rule.check(v)]
        assert [(f.row, f.reason) for f in rule.check_column(column)] == one, name


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.none() | st.integers(-5, 300) | st.floats(), max_size=12))
def test_one_limit_and_a_column_of_limits_agree(values: list[Any]) -> None:
    rule = RULES["page_limit"]
    floats = [None if v is None else float(v) for v in values]
    one = [
        (at, f.reason)
        for at, v in enumerate(floats)
        if v is not None and v == v  # NaN is a missing cell in a column
        for f in rule.check(v)
    ]
    assert [(f.row, f.reason) for f in rule.check_column(pa.array(floats, pa.float64()))] == one


# -- list_query_params --------------------------------------------------------------------------


def test_list_query_params_encodes_numpy_and_whole_float_values_as_the_wire_does() -> None:
    # accepted at runtime, but schema.py's signature says bool / int: to widen there
    params = list_query_params(is_cancelled=np.True_, limit=np.int64(50))
    assert params == {"isCancelled": "true", "limit": "50"}
    # the avara SDK types limit as float
    assert list_query_params(limit=25.0) == {"limit": "25"}
    assert list_query_params(study_description="   ") == {"studyDescription": "   "}


def test_list_query_params_reports_every_bad_filter_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        list_query_params(
            assigned_to="usr_1",
            is_cancelled="yes",
            severity="urgent",
            study_description="",
            limit=2.5,
            cursor="",
        )
    cases = caught.value.failure_cases
    assert cases["field"].tolist() == [
        "assigned_to",
        "is_cancelled",
        "severity",
        "study_description",
        "limit",
        "cursor",
    ]
    assert cases["reason"].tolist() == [
        Reason.NOT_USER_ID,
        Reason.NOT_BOOLEAN,
        Reason.NOT_SEVERITY,
        Reason.EMPTY,
        Reason.NOT_WHOLE_NUMBER,
        Reason.NOT_CURSOR,
    ]


# -- the blank description: refused by the client before sending, and by the sandbox ---------


@pytest.fixture(scope="module")
def offline() -> Iterator[Client]:
    with Client(api_key="sk-offline-test", base_url=OFFLINE, max_retries=0) as client:
        yield client


def refused_by_client(call: Callable[[], Any]) -> bool:
    """True when the client's checks refuse the call; False when it was let through (and so
    failed to connect to the offline port)."""
    try:
        call()
    except ValidationError:
        return True
    except ApiConnectionError:
        return False
    raise AssertionError("the offline client got an answer")


@pytest.mark.parametrize("blank", ["   ", "\t\n", "\u3000", "\xa0"])
def test_the_client_refuses_a_blank_description_before_any_request(
    offline: Client, blank: str
) -> None:
    with pytest.raises(ValidationError) as created:
        offline.create_study(severity="stat", study_description=blank, study_instance_uid="1.2")
    with pytest.raises(ValidationError) as updated:
        offline.update_study(UNKNOWN_STUDY, study_description=blank)
    for caught in (created, updated):
        cases = caught.value.failure_cases
        assert cases[["field", "reason"]].values.tolist() == [["study_description", Reason.BLANK]]
        assert "field study_description: must not be blank" in str(caught.value)
    # the same client does send a description that is not blank (and cannot connect)
    with pytest.raises(ApiConnectionError):
        offline.update_study(UNKNOWN_STUDY, study_description="CT Head")


@pytest.fixture(scope="module")
def raw(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sandbox.base_url, headers={"Authorization": f"Bearer {sandbox.api_key}"}
    ) as http:
        yield http


class World:
    """What the read-only sandbox holds, to make the bodies the rules accept harmless."""

    def __init__(self, raw: httpx.Client) -> None:
        studies = raw.get("/v1/viewer/studies", params={"limit": 100}).json()["studies"]
        self.uid: str = studies[0]["studyInstanceUid"]
        self.user: str = next(s["assignedTo"]["userId"] for s in studies if s.get("assignedTo"))
        self.customer: str = next(
            s["expressCustomer"]["expressCustomerId"] for s in studies if s.get("expressCustomer")
        )

    def harmless(self, wire: str, value: Any, *, uid: str | None = None) -> Any:
        """A well-formed ID or UID becomes one that exists (so the answer is about the form
        alone) or, for the study, an unknown one (so nothing is written)."""
        if wire == "assignedTo" and is_user_id(value):
            return self.user
        if wire == "expressCustomerId" and is_customer_id(value):
            return self.customer
        if wire == "studyInstanceUid" and is_dicom_uid(value):
            return uid or self.uid
        if wire == "studyId" and is_study_id(value):
            return UNKNOWN_STUDY
        return value


@pytest.fixture(scope="module")
def world(raw: httpx.Client) -> World:
    return World(raw)


def post_json(raw: httpx.Client, path: str, body: Any) -> httpx.Response:
    # json.dumps as is: escapes lone surrogates and writes NaN, as a careless client would
    return raw.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def test_the_sandbox_refuses_a_blank_description_with_400(
    sandbox: Sandbox, raw: httpx.Client, world: World
) -> None:
    before = len(sandbox.audit(outcome="changed"))
    body = {"severity": "stat", "studyDescription": "   ", "studyInstanceUid": world.uid}
    answer = raw.post("/v1/viewer/studies", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "studyDescription"
    patched = raw.patch(f"/v1/viewer/studies/{UNKNOWN_STUDY}", json={"studyDescription": "\t"})
    assert patched.status_code == 400
    assert len(sandbox.audit(outcome="changed")) == before


SNAKE = {f.wire: f.name for f in FIELDS.values()}
SEVERITY_LIKE = st.sampled_from(["normal", "high", "stat", "STAT", "Normal", "urgent", "", "complete", "incomplete", "Complete"])
METADATA_LIKE = (
    st.dictionaries(
        texts | st.sampled_from(["k" * 100, "k" * 101, ""]),
        texts | st.none() | st.integers(-3, 3) | st.sampled_from(["v" * 1000, "v" * 1001, "x\ud800"]),
        max_size=4,
    )
    | st.integers(48, 52).map(lambda n: {f"k{i}": "v" for i in range(n)})
    | st.lists(texts, max_size=2)
)
JSON_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
    | id_like
    | uid_like
    | SEVERITY_LIKE
    | METADATA_LIKE
    | st.just("CT \ud800")
)
AGREEMENT = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@AGREEMENT
@given(
    wire=st.sampled_from(
        ["severity", "studyDescription", "studyInstanceUid", "assignedTo", "expressCustomerId", "metadata"]
    ),
    value=JSON_VALUES,
)
@example(wire="studyDescription", value="   ")
@example(wire="studyDescription", value="\u2003")
@example(wire="studyDescription", value="\u200b")  # not whitespace to str.isspace: accepted
@example(wire="metadata", value={"": "x"})
@example(wire="metadata", value={"site": "x" * 1001})
@example(wire="assignedTo", value=None)
def test_client_and_sandbox_refuse_the_same_create_bodies(
    offline: Client, raw: httpx.Client, world: World, sandbox: Sandbox, wire: str, value: Any
) -> None:
    before = len(sandbox.audit(outcome="changed"))
    value = world.harmless(wire, value)
    body: dict[str, Any] = {"severity": "normal", "studyDescription": "CT Head", "studyInstanceUid": world.uid}
    body[wire] = value
    client_refuses = refused_by_client(
        lambda: offline.create_study(**{SNAKE[k]: v for k, v in body.items()})
    )
    answer = post_json(raw, "/v1/viewer/studies", body)
    assert answer.status_code in (400, 409), answer.text  # 409: the UID exists, nothing written
    event(f"sandbox answered {answer.status_code}")
    assert client_refuses == (answer.status_code == 400), (body, answer.text)
    assert len(sandbox.audit(outcome="changed")) == before


@AGREEMENT
@given(
    wire=st.sampled_from(
        ["severity", "studyDescription", "studyViewerStatus", "assignedTo", "metadata"]
    ),
    value=JSON_VALUES,
)
@example(wire="studyDescription", value="\t\n")
@example(wire="metadata", value=None)
@example(wire="studyViewerStatus", value=None)
def test_client_and_sandbox_refuse_the_same_update_bodies(
    offline: Client, raw: httpx.Client, world: World, wire: str, value: Any
) -> None:
    value = world.harmless(wire, value)
    client_refuses = refused_by_client(
        lambda: offline.update_study(UNKNOWN_STUDY, **{SNAKE[wire]: value})
    )
    answer = raw.request(
        "PATCH",
        f"/v1/viewer/studies/{UNKNOWN_STUDY}",
        content=json.dumps({wire: value}),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code in (400, 404), answer.text  # 404: an unknown study, nothing written
    event(f"sandbox answered {answer.status_code}")
    assert client_refuses == (answer.status_code == 400), (wire, value, answer.text)


@AGREEMENT
@given(
    study_id=st.none() | st.just(UNKNOWN_STUDY) | id_like | texts | st.integers(0, 3),
    uid=st.none() | st.just(UNKNOWN_UID) | uid_like | texts,
)
@example(study_id=None, uid=None)
@example(study_id="", uid=None)
@example(study_id=UNKNOWN_STUDY, uid=None)
@example(study_id=None, uid=UNKNOWN_UID)
@example(study_id=UNKNOWN_STUDY, uid="1.02")
def test_client_and_sandbox_refuse_the_same_study_references(
    offline: Client, raw: httpx.Client, world: World, study_id: Any, uid: Any
) -> None:
    study_id = world.harmless("studyId", study_id)
    uid = world.harmless("studyInstanceUid", uid, uid=UNKNOWN_UID)
    client_refuses = refused_by_client(
        lambda: offline.cancel_study(study_id, study_instance_uid=uid)
    )
    body = {k: v for k, v in (("studyId", study_id), ("studyInstanceUid", uid)) if v is not None}
    answer = post_json(raw, "/v1/viewer/studies/cancel", body)
    assert answer.status_code in (400, 404), answer.text
    event(f"sandbox answered {answer.status_code}")
    assert client_refuses == (answer.status_code == 400), (body, answer.text)


# The wire spells None "null" for the two nullable filters, so the text "null" is left out;
# a cursor is checked only by its issuer (the client can refuse just the empty one).
filter_texts = (texts | id_like | SEVERITY_LIKE | st.sampled_from(["", "None"])).filter(
    lambda t: t != "null"
)


@AGREEMENT
@given(
    name=st.sampled_from(
        ["assigned_to", "express_customer_id", "severity", "study_description", "study_viewer_status",
         "is_cancelled", "limit"]
    ),
    text=filter_texts,
    other=st.none() | st.booleans() | st.integers(-2, 130) | st.floats(allow_nan=False),
)
@example(name="study_description", text="", other=None)
@example(name="study_description", text="   ", other=None)
@example(name="limit", text="", other=25.0)
@example(name="assigned_to", text="", other=None)
def test_client_and_sandbox_refuse_the_same_list_filters(
    offline: Client, raw: httpx.Client, world: World, name: str, text: str, other: Any
) -> None:
    field = LIST_FILTERS[name]
    # text filters take the text; is_cancelled and limit take the Python value in ``other``
    value: Any = other if name in ("is_cancelled", "limit") else text
    if name in ("assigned_to", "express_customer_id") and other is None and text == "":
        value = None
    value = world.harmless(field.wire, value)
    client_refuses = refused_by_client(lambda: offline.list_studies(**{name: value}))
    if isinstance(value, bool):
        query = "true" if value else "false"
    elif value is None:
        query = "null"
    else:
        query = str(value)
    answer = raw.get("/v1/viewer/studies", params={field.wire: query, **({} if name == "limit" else {"limit": "1"})})
    assert answer.status_code in (200, 400), answer.text
    event(f"sandbox answered {answer.status_code}")
    assert client_refuses == (answer.status_code == 400), (name, value, answer.text)


path_texts = (texts | id_like | uid_like).filter(
    lambda t: t.strip() not in ("", ".", "..") and not any(c in t for c in "/?#%\n\r\t\x0b\x0c\x1c\x85\u2028")
)


@AGREEMENT
@given(value=path_texts | st.just(UNKNOWN_STUDY) | st.just(UNKNOWN_UID))
@example(value="stu_" + HEX.upper())
@example(value="1.02")
@example(value=UNKNOWN_STUDY)
@example(value=UNKNOWN_UID)
def test_client_and_sandbox_refuse_the_same_path_identifiers(
    offline: Client, raw: httpx.Client, value: str
) -> None:
    by_id = refused_by_client(lambda: offline.retrieve_study(value))
    answer = raw.get(f"/v1/viewer/studies/{value}")
    assert answer.status_code in (200, 400, 404), answer.text
    event(f"by ID: {answer.status_code}")
    assert by_id == (answer.status_code == 400), (value, answer.text)
    by_uid = refused_by_client(lambda: offline.retrieve_study_by_uid(value))
    answer = raw.get(f"/v1/viewer/studies/by-uid/{value}")
    assert answer.status_code in (200, 400, 404), answer.text
    event(f"by UID: {answer.status_code}")
    assert by_uid == (answer.status_code == 400), (value, answer.text)


# -- from_pandas: every bad cell, with its row label and column --------------------------------


def _studies() -> pd.DataFrame:
    rows = [
        {
            "studyId": f"stu_{n:032x}",
            "studyInstanceUid": f"1.2.840.{n}",
            "studyDescription": f"CT {n}",
            "severity": "normal",
            "studyViewerStatus": "incomplete",
            "isCancelled": False,
            "createdAt": "2026-11-27T16:30:43.197Z",
            "updatedAt": "2026-11-27T16:30:43.197Z",
            "metadata": {"site": "North"},
        }
        for n in range(1, 6)
    ]
    df = to_pandas(studies_to_arrow(rows))
    df.index = pd.Index([f"r{n}" for n in range(1, 6)])
    return df


def test_from_pandas_reports_every_bad_cell_with_its_row_label_and_column() -> None:
    df = _studies()
    df["severity"] = df["severity"].astype(object)
    df["study_viewer_status"] = df["study_viewer_status"].astype(object)
    df.loc["r2", "severity"] = "urgent"
    df.loc["r2", "study_description"] = "   "
    df.loc["r3", "study_id"] = "stu_" + "A" * 32
    df.loc["r3", "study_viewer_status"] = "done"
    df.loc["r3", "assigned_to_user_id"] = "bob"
    df.loc["r4", "study_instance_uid"] = "1.02"
    df.loc["r4", "meta.site"] = "x" * 1001
    df.loc["r5", "severity"] = None  # null is allowed where the table allows it
    df.loc["r5", "study_description"] = None
    df.loc["r5", "express_customer_id"] = "cus_1"
    df["meta."] = [None, None, None, None, "empty key"]
    with pytest.raises(ValidationError) as caught:
        from_pandas(df)
    cases = caught.value.failure_cases
    assert list(cases.columns) == ["row", "field", "value", "reason"]
    assert cases[["row", "field", "reason"]].values.tolist() == [
        ["r2", "study_description", Reason.BLANK],
        ["r2", "severity", Reason.NOT_SEVERITY],
        ["r3", "study_id", Reason.NOT_STUDY_ID],
        ["r3", "study_viewer_status", Reason.NOT_VIEWER_STATUS],
        ["r3", "assigned_to_user_id", Reason.NOT_USER_ID],
        ["r4", "study_instance_uid", Reason.NOT_DICOM_UID],
        ["r4", "meta.site", Reason.METADATA_VALUE_TOO_LONG],
        ["r5", "express_customer_id", Reason.NOT_CUSTOMER_ID],
        ["r5", "meta.", Reason.BAD_METADATA_KEY],
    ]
    assert cases["value"].tolist()[:3] == ["   ", "urgent", "stu_" + "A" * 32]
    message = str(caught.value)
    assert message.startswith("from_pandas: 9 problems\n")
    assert "row r2, field severity: must be one of normal, high, stat (got 'urgent')" in message


def test_from_pandas_of_a_categorical_with_an_unknown_category_names_the_rows() -> None:
    df = _studies()
    df["severity"] = pd.Categorical(["stat", "urgent", "high", "urgent", None])
    with pytest.raises(ValidationError) as caught:
        from_pandas(df)
    cases = caught.value.failure_cases
    assert cases["row"].tolist() == ["r2", "r4"]
    assert set(cases["reason"]) == {Reason.NOT_SEVERITY}


def test_from_pandas_refuses_null_or_missing_identifiers() -> None:
    df = _studies()
    df.loc["r1", "study_id"] = None
    with pytest.raises(ValidationError) as caught:
        from_pandas(df)
    assert caught.value.failure_cases[["row", "field", "reason"]].values.tolist() == [
        ["r1", "study_id", Reason.REQUIRED]
    ]
    with pytest.raises(ValidationError) as missing:
        from_pandas(_studies().drop(columns=["study_instance_uid"]))
    assert missing.value.failure_cases[["row", "field", "reason"]].values.tolist() == [
        [None, "study_instance_uid", Reason.MISSING_COLUMN]
    ]


def test_from_pandas_counts_metadata_pairs_per_row() -> None:
    df = _studies()
    for i in range(50):
        df[f"meta.k{i}"] = ["v", None, "v", None, None]
    with pytest.raises(ValidationError) as caught:  # meta.site plus 50 more in r1 and r3
        from_pandas(df)
    cases = caught.value.failure_cases
    assert cases[["row", "field", "value", "reason"]].values.tolist() == [
        ["r1", "metadata", 51, Reason.TOO_MANY_PAIRS],
        ["r3", "metadata", 51, Reason.TOO_MANY_PAIRS],
    ]
    assert from_pandas(df.drop(columns=["meta.site"])).num_rows == 5


def test_from_pandas_names_a_column_that_does_not_take_its_type_and_ignores_foreign_ones() -> None:
    df = _studies()
    df["notes"] = [1, "mixed", None, 2.5, b"x"]  # not a study column: dropped, never in the way
    assert from_pandas(df).num_rows == 5
    df["meta.bed"] = [4, "5", None, None, None]  # ints alone become text; mixed cannot
    with pytest.raises(ValidationError) as mixed:
        from_pandas(df)
    assert mixed.value.failure_cases[["row", "field", "value", "reason"]].values.tolist() == [
        ["r1", "meta.bed", 4, Reason.METADATA_VALUE_NOT_TEXT]
    ]
    df["meta.bed"] = [4, 5, None, None, None]
    assert from_pandas(df).column("meta.bed").to_pylist() == ["4", "5", None, None, None]
    df["created_at"] = ["2026-01-01T00:00:00Z", "yesterday", None, None, None]
    with pytest.raises(ValidationError) as caught:
        from_pandas(df)
    assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [
        ["created_at", Reason.WRONG_TYPE]
    ]


def test_conform_of_an_arrow_table_with_an_unknown_enum_value_names_the_rows() -> None:
    table = pa.table(
        {
            "study_id": ["stu_" + HEX] * 3,
            "study_instance_uid": ["1", "2", "3"],
            "study_viewer_status": ["complete", "open", "closed"],
        }
    )
    with pytest.raises(ValidationError) as caught:
        conform(table)
    cases = caught.value.failure_cases
    assert cases[["row", "field", "value"]].values.tolist() == [
        [1, "study_viewer_status", "open"],
        [2, "study_viewer_status", "closed"],
    ]


# -- secrets --------------------------------------------------------------------------------


def test_a_failure_of_a_secret_field_never_holds_its_value() -> None:
    secret = "sk-live-0123456789"
    for field in sorted(SECRET_FIELDS):
        failure = RULES["study_description"].check(secret + " \ud800", field)[0]
        assert failure.value == "<redacted>" and secret not in repr(failure)
        error = ValidationError.from_cases("call", [failure.case()])
        assert secret not in str(error) and secret not in error.failure_cases.to_string()
    assert Failure("url", "https://viewer/s?token=abc", Reason.EMPTY).value == "<redacted>"


def test_the_client_names_each_failure_by_its_argument_name() -> None:
    # failure_cases fields are the client's own argument names (so SECRET_FIELDS, which are
    # argument names, apply), never the wire's camelCase
    names = {*FIELDS, *LIST_FILTERS, "filters", "filter_args"}
    # the list calls take their filters as StudyFilterArgs keywords (or one StudyFilters)
    assert set(StudyFilterArgs.__annotations__) <= set(LIST_FILTERS)
    for method in (
        Client.create_study,
        Client.update_study,
        Client.list_studies,
        Client.retrieve_study,
        Client.retrieve_study_by_uid,
        Client.cancel_study,
    ):
        parameters = set(inspect.signature(method).parameters) - {"self"}
        assert parameters <= names, (method.__name__, parameters - names)
    for field in (*FIELDS.values(), *LIST_FILTERS.values(), *STUDY_COLUMNS.values()):
        assert field.name.isidentifier() and field.name.islower()
