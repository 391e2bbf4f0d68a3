"""Every ISO 8601 / RFC 3339 time a server may send reads to the right UTC millisecond;
the values that are not times are gathered over a whole read and raised once, naming each
study, field and value (viewerkit.frame.parse_times, flatten_studies, ResponseProblems)."""

from __future__ import annotations

import datetime as dt
import pickle
import sqlite3
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from viewerkit import Client
from viewerkit.errors import ApiError, Reason, ResponseValidationError, ValidationError
from viewerkit.fetch import fetch_studies_arrow, retrieve_studies_arrow
from viewerkit.frame import (
    ResponseProblems,
    flatten_studies,
    from_pandas,
    oldest_created_at,
    page_to_arrow,
    parse_times,
    read_page,
    studies_to_arrow,
    to_pandas,
)
from viewerkit.sandbox.server import Sandbox

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def ms(text: str) -> int | None:
    """The instant one value reads to, in ms since the epoch (None: not a time)."""
    times, bad = parse_times(pa.array([text]))
    assert (len(bad) == 1) == (times[0].as_py() is None)
    value = times.cast(pa.int64())[0].as_py()
    return value if isinstance(value, int) else None


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
           millisecond: int = 0) -> int:
    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return (moment - EPOCH) // dt.timedelta(milliseconds=1) + millisecond


def study(n: int, **fields: object) -> dict[str, object]:
    return {"studyId": f"stu_{n:032x}", "studyInstanceUid": f"1.2.{n}",
            "createdAt": "2026-11-27T16:30:43.197Z", "updatedAt": "2026-11-27T16:31:00Z", **fields}


# --- what reads, and to what ------------------------------------------------------------------


def test_seven_fraction_digits_read_as_the_issue_asks() -> None:
    table = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1.2",
                               "createdAt": "2026-11-27T16:30:43.1972345Z"}])
    assert table.column("created_at").to_pylist() == [dt.datetime(2026, 11, 27, 16, 30, 43, 197000, tzinfo=UTC)]


@pytest.mark.parametrize("digits", range(0, 13))
def test_any_number_of_fraction_digits_is_cut_to_the_millisecond(digits: int) -> None:
    fraction = "987654321098"[:digits]
    text = "2026-11-27T16:30:43" + (f".{fraction}" if digits else "") + "Z"
    expected_ms = int((fraction + "000")[:3])
    assert ms(text) == utc_ms(2026, 11, 27, 16, 30, 43) + expected_ms
    assert ms(text.replace(".", ",")) == ms(text)  # ISO 8601's decimal comma


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-01-01T00:30:00+01:00", (2025, 12, 31, 23, 30)),  # back across midnight and the year
        ("2025-12-31T20:00:00-08:00", (2026, 1, 1, 4, 0)),  # forward across both
        ("2026-03-01T01:00:00+05:30", (2026, 2, 28, 19, 30)),  # across a month end
        ("2024-03-01T01:00:00+05:30", (2024, 2, 29, 19, 30)),  # ... into a leap day
        ("2026-11-27T16:30:00+0530", (2026, 11, 27, 11, 0)),  # basic offset
        ("2026-11-27T16:30:00+05", (2026, 11, 27, 11, 30)),  # hours-only offset
        ("2026-11-27T16:30:00+0000", (2026, 11, 27, 16, 30)),
        ("2026-11-27T16:30:00-00:00", (2026, 11, 27, 16, 30)),  # RFC 3339's unknown offset
        ("2026-11-27T16:30:00+14:00", (2026, 11, 27, 2, 30)),
        ("2026-11-27T16:30:00-12:00", (2026, 11, 28, 4, 30)),
        ("2026-11-27T23:59:00-23:59", (2026, 11, 28, 23, 58)),
        ("2026-11-27T16:30:00.1234567-08:00", (2026, 11, 28, 0, 30, 0, 123)),
        ("2026-11-27T16:30:00.1234567+0530", (2026, 11, 27, 11, 0, 0, 123)),
    ],
)
def test_offsets_give_the_utc_instant(text: str, utc: tuple[int, ...]) -> None:
    assert ms(text) == utc_ms(*utc)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27T16:30:43.197Z",
        "2026-11-27t16:30:43.197Z",
        "2026-11-27T16:30:43.197z",
        "2026-11-27t16:30:43.197z",
        "2026-11-27 16:30:43.197Z",
        "2026-11-27 16:30:43.197z",
        "2026-11-27T16:30:43.197",  # no zone: the contract's times are UTC
        "2026-11-27 16:30:43.197",
        "2026-11-27T16:30:43.197+00:00",
        "2026-11-27T17:30:43.197+01:00",
        "2026-11-27T16:30:43.1970000000001Z",
        "20261127T163043.197Z",  # ISO 8601 basic format
    ],
)
def test_every_spelling_of_one_instant_reads_the_same(text: str) -> None:
    assert ms(text) == utc_ms(2026, 11, 27, 16, 30, 43) + 197


def test_other_iso_8601_forms_read() -> None:
    assert ms("2026-11-27") == utc_ms(2026, 11, 27, 0, 0, 0)  # a date: its midnight, UTC
    assert ms("2026-11-27T16:30Z") == utc_ms(2026, 11, 27, 16, 30, 0)  # no seconds
    assert ms("2300-01-01T00:00:00.1234567Z") == utc_ms(2300, 1, 1, 0, 0, 0) + 123  # past ns range
    assert ms("1600-06-01T12:00:00.5Z") == utc_ms(1600, 6, 1, 12, 0, 0) + 500
    assert ms("9999-12-31T23:59:59.9999Z") == utc_ms(9999, 12, 31, 23, 59, 59) + 999
    # before 1970 the cut is still the floor of the instant, never toward zero
    assert ms("1969-12-31T23:59:59.9995Z") == -1
    assert ms("1969-12-31T23:59:59.9999999z") == -1
    assert ms("1969-12-31 23:59:59.0005") == -1000


def test_a_leap_second_reads_as_the_last_millisecond_of_its_day() -> None:
    last = utc_ms(2016, 12, 31, 23, 59, 59) + 999
    assert ms("2016-12-31T23:59:60Z") == last
    assert ms("2016-12-31T23:59:60.5Z") == last
    assert ms("2016-12-31t23:59:60.123456789z") == last
    assert ms("2017-01-01T05:29:60+05:30") == last  # the same second, local time in India
    assert ms("2016-12-31T15:59:60-08:00") == last
    # order is kept: after 23:59:59.998, before the next day
    assert ms("2016-12-31T23:59:59.998Z") < last < ms("2017-01-01T00:00:00Z")  # type: ignore[operator]


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "",
        " 2026-11-27T16:30:43Z",  # whitespace is not part of a time
        "2026-11-27T16:30:43Z ",
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-11-31T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-27T24:00:00Z",
        "2026-11-27T16:60:00Z",
        "2026-11-27T12:00:60Z",  # a leap second is only ever 23:59:60 UTC
        "2016-12-31T23:59:60+01:00",  # ... which this is not
        "2026-11-27T16:30:43+24:00",
        "2026-11-27T16:30:43+05:60",
        "27/11/2026 16:30",
        "1795797043197",
    ],
)
def test_values_that_are_not_times_are_refused(text: str) -> None:
    assert ms(text) is None


# --- vectorised, and the slow path only where needed -------------------------------------------


def test_nulls_stay_null_and_are_not_reported() -> None:
    times, bad = parse_times(pa.array([None, "2026-11-27T16:30:43Z", None], pa.string()))
    assert times.null_count == 2 and bad.tolist() == []


def test_one_bad_value_among_many_is_found_at_its_position_and_the_rest_read() -> None:
    good = [f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{n % 60:02d}.{n % 10**7:07d}Z"
            for n in range(50_000)]
    for at in (0, 1, 17, 24_999, 49_999):
        values = list(good)
        values[at] = "2026-11-27T16:30:43+25:00"
        times, bad = parse_times(pa.array(values))
        assert bad.tolist() == [at]
        expected, none_bad = parse_times(pa.array(good))
        assert len(none_bad) == 0
        assert times.is_null().to_pylist() == [n == at for n in range(len(values))]
        assert times.filter(pa.array(np.arange(len(values)) != at)).equals(
            expected.filter(pa.array(np.arange(len(values)) != at))
        )


def test_many_scattered_bad_values_and_odd_spellings_are_each_read_as_alone() -> None:
    rng = np.random.default_rng(8)
    kinds = ["2026-11-27T16:30:43.1972345Z", "2026-11-27t16:30:43z", "2026-11-27 17:30:43+01:00",
             "2016-12-31T23:59:60Z", "20261127T163043Z", "2026-11-27", "teatime", None,
             "2026-02-30T00:00:00Z", "2026-11-27T16:30:43.197Z", "2026-11-27T16:30:43"]
    values = [kinds[k] for k in rng.integers(0, len(kinds), 5_000)]
    times, bad = parse_times(pa.array(values, pa.string()))
    alone = [ms(v) if v is not None else None for v in values]
    assert times.cast(pa.int64()).to_pylist() == alone
    assert bad.tolist() == [n for n, v in enumerate(values) if v is not None and alone[n] is None]


def _rfc_3339() -> st.SearchStrategy[tuple[str, str]]:
    """(an RFC 3339 time in any of its spellings, the same instant as
    ``datetime.fromisoformat`` reads it on every Python: 6 digits, ``T``, ``+HH:MM``)."""

    @st.composite
    def build(draw: Callable[..., Any]) -> tuple[str, str]:
        moment = draw(st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31)))
        digits = draw(st.text("0123456789", min_size=0, max_size=12))
        separator = draw(st.sampled_from("Tt "))
        offset = draw(st.one_of(st.none(), st.integers(-(24 * 60 - 1), 24 * 60 - 1)))
        if offset is None:
            zone, plain_zone = draw(st.sampled_from("Zz")), "+00:00"
        else:
            sign = "-" if offset < 0 else "+"
            zone = plain_zone = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
        day, time = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}", moment.strftime("%H:%M:%S")
        fraction = f".{digits}" if digits else ""
        plain = f"{day}T{time}.{(digits + '000000')[:6]}{plain_zone}"
        return f"{day}{separator}{time}{fraction}{zone}", plain

    return build()


@settings(max_examples=400, deadline=None)
@given(st.lists(_rfc_3339(), min_size=1, max_size=40))
def test_rfc_3339_times_read_as_fromisoformat_reads_them(cases: list[tuple[str, str]]) -> None:
    times, bad = parse_times(pa.array([text for text, _ in cases]))
    assert bad.tolist() == []
    expected = [(dt.datetime.fromisoformat(plain) - EPOCH) // dt.timedelta(milliseconds=1) for _, plain in cases]
    assert times.cast(pa.int64()).to_pylist() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=30), _rfc_3339().map(lambda c: c[0])), max_size=60))
def test_a_value_reads_the_same_whatever_its_neighbours(values: list[str | None]) -> None:
    times, bad = parse_times(pa.array(values, pa.string()))
    alone = [ms(v) if v is not None else None for v in values]
    assert times.cast(pa.int64()).to_pylist() == alone
    assert bad.tolist() == [n for n, v in enumerate(values) if v is not None and alone[n] is None]


# --- one error for the whole read ---------------------------------------------------------------


def test_every_bad_time_of_a_flattening_is_in_one_error_naming_study_field_and_value() -> None:
    bad: dict[int, dict[str, object]] = {3: {"updatedAt": "soon"}, 7: {"cancelledAt": "2026-11-27T25:00:00Z"}}
    pages = [
        read_page(orjson.dumps({"studies": [study(n, **bad.get(n, {}))
                                            for n in range(start, start + 5)]}))[0]
        for start in (0, 5)
    ]
    with pytest.raises(ResponseValidationError) as caught:
        flatten_studies(pages)
    error = caught.value
    assert isinstance(error, ApiError) and error.call == "list_studies" and error.study is None
    cases = error.failure_cases
    assert cases.columns.tolist() == ["study_id", "field", "value", "reason"]
    assert cases.values.tolist() == [
        [f"stu_{3:032x}", "updated_at", "soon", Reason.NOT_ISO_TIME],
        [f"stu_{7:032x}", "cancelled_at", "2026-11-27T25:00:00Z", Reason.NOT_ISO_TIME],
    ]
    assert f"study stu_{3:032x}, field updated_at: must be an ISO 8601 / RFC 3339 time (got 'soon')" in str(error)
    assert str(error).startswith("list_studies: 2 values outside the contract")


def test_one_bad_time_names_its_study_in_the_error_head() -> None:
    with pytest.raises(ResponseValidationError, match=f"^retrieve_study stu_{2:032x}: 1 value outside"):
        studies_to_arrow([study(1), study(2, createdAt="yesterday"), study(3)])
    with pytest.raises(ResponseValidationError, match=f"^list_studies stu_{2:032x}: "):
        page_to_arrow(orjson.dumps({"studies": [study(2, createdAt="2026-11-27T16:30:43+0")]}))


def test_the_error_shows_ten_cases_and_keeps_every_one_in_failure_cases() -> None:
    with pytest.raises(ResponseValidationError) as caught:
        studies_to_arrow([study(n, createdAt=f"day {n}") for n in range(25)])
    assert len(caught.value.failure_cases) == 25
    assert str(caught.value).count("\n  study ") == 10 and str(caught.value).endswith("... and 15 more")


def test_the_error_crosses_a_process_boundary_whole() -> None:
    with pytest.raises(ResponseValidationError) as caught:
        studies_to_arrow([study(1, updatedAt="x")])
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is ResponseValidationError and str(again) == str(caught.value)
    assert again.call == "retrieve_study" and again.failure_cases.equals(caught.value.failure_cases)


def test_problems_gather_over_several_flattenings_and_raise_once_without_repeats() -> None:
    problems = ResponseProblems()
    first = studies_to_arrow([study(1), study(2, createdAt="x")], problems=problems, call="list_studies")
    second = studies_to_arrow([study(2, createdAt="x"), study(4, updatedAt="y")], problems=problems)
    assert first.column("created_at").null_count == 1 and second.num_rows == 2
    with pytest.raises(ResponseValidationError) as caught:
        problems.raise_if_any("retrieve_studies")
    assert caught.value.call == "retrieve_studies"
    assert caught.value.failure_cases[["study_id", "field", "value"]].values.tolist() == [
        [f"stu_{2:032x}", "created_at", "x"], [f"stu_{4:032x}", "updated_at", "y"]]
    ResponseProblems().raise_if_any("nothing")  # nothing noted: no error


def test_the_oldest_created_at_of_a_page_skips_a_value_that_is_not_a_time() -> None:
    wire, _, _ = read_page(b'{"studies": [{"createdAt": "soon"}, {"createdAt": "2026-11-27T16:30:43.1972345z"},'
                           b' {"createdAt": "2026-11-28T00:00:00+01:00"}]}')
    assert oldest_created_at(wire) == dt.datetime(2026, 11, 27, 16, 30, 43, 197000, tzinfo=UTC)
    only_bad, _, _ = read_page(b'{"studies": [{"createdAt": "soon"}]}')
    assert oldest_created_at(only_bad) is None


def test_a_table_given_with_time_text_reads_every_spelling_and_refuses_the_rest() -> None:
    base = to_pandas(studies_to_arrow([study(1), study(2)]))
    text = base.assign(created_at=["2026-11-27 17:30:43.1972+01:00", "2026-11-27t16:30:43.197z"])
    assert from_pandas(text).column("created_at").equals(from_pandas(base).column("created_at"))
    with pytest.raises(ValidationError) as caught:
        from_pandas(base.assign(created_at=["2026-11-27T16:30:43Z", "teatime"]))
    assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [["created_at", Reason.WRONG_TYPE]]


# --- against a real server ---------------------------------------------------------------------


def _rewrite(sandbox: Sandbox, sql: str, *args: object) -> None:
    """Change what the running sandbox serves, in its own database (it serves the stored
    text as is): a server that sends other spellings, or broken values."""
    with sqlite3.connect(sandbox.db_path, timeout=30) as db:
        db.execute(sql, args)
    db.close()


@pytest.fixture(scope="module")
def respelled(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from viewerkit.sandbox.server import running

    with running(studies=3000, seed=11) as server:
        yield server


def test_a_fetch_reads_every_spelling_of_a_server_to_the_same_instants(respelled: Sandbox) -> None:
    with Client(api_key=respelled.api_key, base_url=respelled.base_url) as client:
        before = fetch_studies_arrow(client, progress=False)
        # the same instants, spelled five ways by rowid: 7 digits, lowercase, an offset
        # across midnight, no zone, a space
        _rewrite(respelled, """
            UPDATE studies SET created_at = CASE rowid % 5
                WHEN 0 THEN substr(created_at, 1, 23) || '0000Z'
                WHEN 1 THEN lower(created_at)
                WHEN 2 THEN strftime('%Y-%m-%dT%H:%M:%f', created_at, '-8 hours') || '-08:00'
                WHEN 3 THEN substr(created_at, 1, 23)
                ELSE replace(created_at, 'T', ' ') END,
              updated_at = substr(updated_at, 1, 23) || '9999+00:00'""")
        after = fetch_studies_arrow(client, progress=False)
    order = [("study_id", "ascending")]
    assert after.num_rows == before.num_rows == 3000
    assert after.sort_by(order).column("created_at").equals(before.sort_by(order).column("created_at"))
    assert after.sort_by(order).column("updated_at").equals(before.sort_by(order).column("updated_at"))


def test_one_bad_time_among_thousands_names_exactly_that_study(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(studies=3000, seed=12)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        table = fetch_studies_arrow(client, progress=False)
        victim = table.column("study_id")[1234].as_py()
        other = table.column("study_id")[2345].as_py()
        _rewrite(sandbox, "UPDATE studies SET updated_at = '2026-11-27T16:30:43.197+25:00' WHERE study_id = ?",
                 victim)
        with pytest.raises(ResponseValidationError) as caught:
            fetch_studies_arrow(client, progress=False)
        assert caught.value.study == victim
        assert caught.value.failure_cases.values.tolist() == [
            [victim, "updated_at", "2026-11-27T16:30:43.197+25:00", Reason.NOT_ISO_TIME]]
        # two, in different partitions and pages: one error listing both, after the whole fetch
        _rewrite(sandbox, "UPDATE studies SET created_at = 'never' WHERE study_id = ?", other)
        with pytest.raises(ResponseValidationError) as caught:
            fetch_studies_arrow(client, progress=False, partitioned=False)
        assert caught.value.study is None
        assert sorted(caught.value.failure_cases[["study_id", "field"]].values.tolist()) == sorted(
            [[victim, "updated_at"], [other, "created_at"]])
        with pytest.raises(ResponseValidationError, match=f"^retrieve_studies {other}: "):
            retrieve_studies_arrow(client, [other], progress=False)


def test_an_active_refresh_lists_every_bad_time_of_its_reads_once(make_sandbox: Any, tmp_path: Any) -> None:
    """An open study (read by the open list) and a cached open study completed since (read
    by retrieve or by the closed partitions) each carry a bad time: one error lists both,
    and the cache is left as it was."""
    from viewerkit import StudyCache

    server: Sandbox = make_sandbox(studies=400, seed=37)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        cache.refresh(client, progress=False)
        before = cache.load()
        open_ids = before[(before["study_viewer_status"] == "incomplete") & ~before["is_cancelled"]]
        still_open, completed = open_ids["study_id"].iloc[0], open_ids["study_id"].iloc[1]
        client.update_study(completed, study_viewer_status="complete")
        _rewrite(server, "UPDATE studies SET updated_at = 'soon' WHERE study_id = ?", still_open)
        _rewrite(server, "UPDATE studies SET updated_at = 'later' WHERE study_id = ?", completed)
        with pytest.raises(ResponseValidationError) as caught:
            cache.refresh(client, mode="active", progress=False)
    cases = caught.value.failure_cases
    assert sorted(cases[["study_id", "value"]].values.tolist()) == sorted(
        [[still_open, "soon"], [completed, "later"]])
    assert str(caught.value).startswith("refresh: 2 values outside the contract")
    assert cache.info()["refreshes"] == 1
