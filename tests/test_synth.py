"""The synthetic world: deterministic, valid per the contract, and shaped like a real practice."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from viewerkit.sandbox.synth import HISTORY_DAYS, SLA_TARGETS, World, generate_world
from viewerkit.schema import (
    SEVERITIES,
    VIEWER_STATUSES,
    is_api_key_id,
    is_customer_id,
    is_dicom_uid,
    is_study_id,
    is_user_id,
    metadata_problems,
)

NOW = datetime(2026, 11, 27, 16, 30, tzinfo=timezone.utc)
STUDIES = 6000


def parse(text: str) -> datetime:
    assert text.endswith("Z") and len(text) == 24, text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(STUDIES, seed=11, now=NOW)


@pytest.fixture(scope="module")
def rows(world: World) -> list[dict]:
    columns = world.studies
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def test_same_seed_and_now_give_identical_world(world: World) -> None:
    again = generate_world(STUDIES, seed=11, now=NOW)
    assert again.studies == world.studies
    assert again.users == world.users
    assert again.customers == world.customers
    assert without_secrets(again) == without_secrets(world)


def without_secrets(world: World) -> list[dict]:
    return [{k: v for k, v in key.items() if k != "secret"} for key in world.api_keys]


def test_api_key_secrets_are_fresh_and_never_in_the_repr(world: World) -> None:
    again = generate_world(10, seed=11, now=NOW)
    assert not {k["secret"] for k in again.api_keys} & {k["secret"] for k in world.api_keys}
    text = repr(world)
    assert f"{STUDIES} studies" in text
    assert not any(k["secret"] in text for k in world.api_keys)


def test_different_seed_gives_different_world(world: World) -> None:
    other = generate_world(STUDIES, seed=12, now=NOW)
    assert other.studies["study_id"] != world.studies["study_id"]
    assert not set(other.studies["study_id"]) & set(world.studies["study_id"])
    assert [u["user_id"] for u in other.users] != [u["user_id"] for u in world.users]


def test_naive_now_is_taken_as_utc() -> None:
    naive = generate_world(50, seed=1, now=NOW.replace(tzinfo=None))
    assert naive.studies == generate_world(50, seed=1, now=NOW).studies


def test_every_column_has_one_value_per_study(world: World) -> None:
    expected = {
        "study_id", "study_instance_uid", "study_description", "severity", "study_viewer_status",
        "is_cancelled", "cancelled_at", "created_at", "updated_at", "assigned_to",
        "created_by_user", "created_by_api_key", "express_customer_id", "metadata",
    }
    assert set(world.studies) == expected
    assert {len(values) for values in world.studies.values()} == {STUDIES}
    assert world.study_count == STUDIES


def test_every_study_value_matches_the_contract_formats(world: World, rows: list[dict]) -> None:
    user_ids = {u["user_id"] for u in world.users}
    customer_ids = {c["customer_id"] for c in world.customers}
    key_ids = {k["api_key_id"] for k in world.api_keys}
    for row in rows:
        assert is_study_id(row["study_id"])
        assert is_dicom_uid(row["study_instance_uid"])
        assert isinstance(row["study_description"], str) and row["study_description"]
        assert row["severity"] in SEVERITIES
        assert row["study_viewer_status"] in VIEWER_STATUSES
        assert isinstance(row["is_cancelled"], bool)
        assert (row["cancelled_at"] is not None) == row["is_cancelled"]
        assert row["assigned_to"] is None or row["assigned_to"] in user_ids
        assert row["created_by_user"] is None or row["created_by_user"] in user_ids
        assert row["created_by_api_key"] is None or row["created_by_api_key"] in key_ids
        assert (row["created_by_user"] is None) != (row["created_by_api_key"] is None)
        assert row["express_customer_id"] is None or row["express_customer_id"] in customer_ids
        if row["metadata"] is not None:
            metadata = orjson.loads(row["metadata"])
            assert metadata_problems(metadata) == []
            assert {"modality", "bodyPart", "site", "accessionNumber"} <= set(metadata)


def test_references_match_the_contract_formats(world: World) -> None:
    assert all(is_user_id(u["user_id"]) and "@" in u["email"] for u in world.users)
    assert all(is_customer_id(c["customer_id"]) and c["name"] for c in world.customers)
    assert all(is_api_key_id(k["api_key_id"]) for k in world.api_keys)
    assert all(isinstance(k["is_viewer_enabled"], bool) for k in world.api_keys)
    secrets = [k["secret"] for k in world.api_keys]
    assert all(isinstance(s, str) and len(s) >= 32 for s in secrets)
    assert len(set(secrets)) == len(secrets)
    assert len({u["email"] for u in world.users}) == len(world.users)


def test_radiologists_have_names_middle_names_and_suffixes(world: World) -> None:
    assert 20 <= len(world.users) <= 60
    assert all(u["first_name"] and u["last_name"] for u in world.users)
    assert any(u["middle_name"] for u in world.users)
    assert any(u["middle_name"] is None for u in world.users)
    assert Counter(u["suffix1"] for u in world.users).most_common(1)[0][0] == "MD"
    assert any(u["suffix2"] for u in world.users)
    keys = {"user_id", "email", "first_name", "last_name", "middle_name", "suffix1", "suffix2"}
    assert all(set(u) == keys for u in world.users)


def test_radiologist_count_grows_mildly_with_volume() -> None:
    small = generate_world(100, seed=0, now=NOW)
    large = generate_world(20_000, seed=0, now=NOW)
    assert 20 <= len(small.users) < len(large.users) <= 60


def test_ids_and_study_instance_uids_are_unique(world: World) -> None:
    for column in ("study_id", "study_instance_uid"):
        assert len(set(world.studies[column])) == STUDIES
    ids = [u["user_id"] for u in world.users] + [c["customer_id"] for c in world.customers]
    assert len(set(ids)) == len(ids)


def test_timestamps_lie_in_the_history_window_and_never_after_now(rows: list[dict]) -> None:
    start = NOW - timedelta(days=HISTORY_DAYS)
    for row in rows:
        created, updated = parse(row["created_at"]), parse(row["updated_at"])
        assert start <= created <= updated <= NOW
        if row["is_cancelled"]:
            cancelled = parse(row["cancelled_at"])
            assert created < cancelled <= NOW
            assert updated == cancelled


def test_severity_mix_is_about_70_20_10(world: World) -> None:
    share = Counter(world.studies["severity"])
    assert share["normal"] / STUDIES == pytest.approx(0.70, abs=0.03)
    assert share["high"] / STUDIES == pytest.approx(0.20, abs=0.03)
    assert share["stat"] / STUDIES == pytest.approx(0.10, abs=0.02)


def test_about_three_percent_are_cancelled(world: World) -> None:
    assert sum(world.studies["is_cancelled"]) / STUDIES == pytest.approx(0.03, abs=0.01)


def test_turnaround_medians_order_stat_before_high_before_normal_with_some_breaches(
    rows: list[dict],
) -> None:
    minutes: dict[str, list[float]] = {s: [] for s in SEVERITIES}
    for row in rows:
        if row["study_viewer_status"] == "complete" and not row["is_cancelled"]:
            spent = parse(row["updated_at"]) - parse(row["created_at"])
            minutes[row["severity"]].append(spent / timedelta(minutes=1))
    medians = {s: statistics.median(v) for s, v in minutes.items()}
    assert medians["stat"] < SLA_TARGETS["stat"] < medians["high"] < medians["normal"]
    assert medians["normal"] < SLA_TARGETS["normal"]
    for severity, values in minutes.items():
        breaches = sum(v > SLA_TARGETS[severity] for v in values) / len(values)
        assert 0.01 < breaches < 0.35, (severity, breaches)


def test_open_backlog_is_recent_with_a_few_stale_studies(rows: list[dict]) -> None:
    recent = [r for r in rows if NOW - parse(r["created_at"]) < timedelta(hours=3)]
    older = [r for r in rows if NOW - parse(r["created_at"]) > timedelta(days=7)]
    assert recent and older
    open_recent = sum(r["study_viewer_status"] == "incomplete" for r in recent) / len(recent)
    open_older = [r for r in older if r["study_viewer_status"] == "incomplete" and not r["is_cancelled"]]
    assert open_recent > 0.5
    assert 0 < len(open_older) / len(older) < 0.02


def test_daily_rhythm_has_busier_working_hours_and_weekdays(rows: list[dict]) -> None:
    created = [parse(r["created_at"]) for r in rows]
    hours = Counter(t.hour for t in created)
    days = Counter(t.weekday() for t in created)
    assert sum(hours[h] for h in range(9, 12)) > 3 * sum(hours[h] for h in range(1, 4))
    assert min(days[d] for d in range(5)) > 1.5 * max(days[5], days[6])


def test_most_studies_assigned_have_a_customer_and_come_from_api_keys(world: World) -> None:
    for column, low, high in (
        ("assigned_to", 0.85, 0.995),
        ("express_customer_id", 0.8, 0.97),
        ("created_by_api_key", 0.75, 0.95),
        ("metadata", 0.8, 0.97),
    ):
        present = sum(v is not None for v in world.studies[column]) / STUDIES
        assert low < present < high, column


def test_descriptions_name_a_modality_and_body_part(world: World) -> None:
    descriptions = Counter(world.studies["study_description"])
    assert len(descriptions) > 15
    assert {d.split()[0] for d in descriptions} >= {"CT", "MRI", "XR", "US"}
    stat_ct_head = sum(
        d == "CT Head without Contrast" and s == "stat"
        for d, s in zip(world.studies["study_description"], world.studies["severity"], strict=True)
    )
    assert stat_ct_head > 0


def test_empty_world_has_references_and_no_studies() -> None:
    empty = generate_world(0, seed=3, now=NOW)
    assert empty.study_count == 0
    assert empty.users and empty.customers and empty.api_keys


def test_negative_study_count_is_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        generate_world(-1)


def test_stat_studies_come_mostly_from_the_emergency_department(rows: list[dict]) -> None:
    classes: dict[str, Counter[str]] = {s: Counter() for s in SEVERITIES}
    for row in rows:
        if row["metadata"] is not None:
            metadata = orjson.loads(row["metadata"])
            classes[row["severity"]][metadata["patientClass"]] += 1
            if metadata["patientClass"] == "Emergency":
                assert metadata["site"] == "Emergency Department"
    share = {s: c["Emergency"] / sum(c.values()) for s, c in classes.items()}
    assert share["stat"] > 0.6 > share["high"] > share["normal"]
    assert classes["normal"].most_common(1)[0][0] == "Outpatient"
