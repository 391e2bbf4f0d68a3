"""reassign (issue 9): studies spread over radiologists by severity-weighted open load.

Against the read-only session sandbox (2,000 studies, seed 7): its study table, its user
list and the roster (reassign only reads them; nothing is sent). The loads the tests check
are counted here, independently of reassign, from the raw table. One hypothesis test
checks the placement on random loads, weights and caps offline: it tests the algorithm.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from viewerkit import Client, ValidationError, fetch_studies, fetch_users, roster
from viewerkit.bulk import Plan, reassign
from viewerkit.bulk.reassign import REASSIGN_COLUMNS, Reassignment
from viewerkit.errors import Reason
from viewerkit.sandbox.server import Sandbox
from viewerkit.staffing import SEVERITY_WEIGHTS

RANK = {"stat": 0, "high": 1, "normal": 2}


@pytest.fixture(scope="module")
def world(sandbox: Sandbox) -> dict[str, Any]:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        studies = fetch_studies(client, progress=False)
        users = fetch_users(client, progress=False)
    table = roster(users, studies)
    targets = table[table["reassignment_target"]]
    return {"studies": studies, "users": users, "roster": table, "targets": targets}


def moving_set(world: dict[str, Any], n: int = 240) -> pd.DataFrame:
    """n studies to move: the newest ones (open and recent ones alike; reassign moves what
    it is given)."""
    studies: pd.DataFrame = world["studies"]
    return studies.sort_values("created_at").tail(n)


def existing_load(studies: pd.DataFrame, moving: pd.DataFrame, targets: list[str],
                  weights: Mapping[str, float] = SEVERITY_WEIGHTS) -> dict[str, float]:
    """Open (incomplete, not cancelled) load per target, the moved studies left out: an
    independent row-by-row count."""
    load = dict.fromkeys(targets, 0.0)
    moved = set(moving["study_id"])
    for row in studies.itertuples():
        if row.study_id in moved or row.study_viewer_status != "incomplete" or row.is_cancelled:
            continue
        if str(row.assigned_to_user_id) in load:
            load[str(row.assigned_to_user_id)] += weights[str(row.severity)]
    return load


def final_loads(plan: Plan, start: Mapping[str, float], weights: Mapping[str, float] = SEVERITY_WEIGHTS
                ) -> dict[str, float]:
    loads = dict(start)
    frame = plan.frame
    for target, severity in zip(frame["assigned_to"], frame["study_severity"].astype(str), strict=True):
        loads[str(target)] += weights[severity]
    return loads


def improving_moves(plan: Plan, start: Mapping[str, float], caps: Mapping[str, float],
                    weights: Mapping[str, float] = SEVERITY_WEIGHTS) -> list[tuple[str, str, str]]:
    """Every single move of a placed study to another target with room that would lower
    the largest load among the targets."""
    loads = final_loads(plan, start, weights)
    received = plan.frame["assigned_to"].value_counts().to_dict()
    top = max(loads.values())
    found = []
    frame = plan.frame
    for study_id, target, severity in zip(frame["study_id"], frame["assigned_to"],
                                          frame["study_severity"].astype(str), strict=True):
        w = weights[severity]
        for other in loads:
            if other == target or received.get(other, 0) >= caps.get(other, np.inf):
                continue
            after = dict(loads)
            after[str(target)] -= w
            after[other] += w
            if max(after.values()) < top:
                found.append((str(study_id), str(target), other))
    return found


# --- balance -----------------------------------------------------------------------------------


def test_no_single_move_of_a_placed_study_lowers_the_largest_load(world: dict[str, Any]) -> None:
    studies, targets = world["studies"], world["targets"]["user_id"].tolist()
    moving = moving_set(world)
    plan = reassign(moving, targets, workload=studies)
    assert isinstance(plan, Reassignment) and len(plan) == len(moving) and plan.unplaced.empty
    assert list(plan.frame.columns) == list(REASSIGN_COLUMNS)
    start = existing_load(studies, moving, targets)
    assert improving_moves(plan, start, {}) == []
    # target_load is the target's load right after each placement: its last one is final
    final = final_loads(plan, start)
    last = plan.frame.groupby("assigned_to")["target_load"].last().to_dict()
    assert last == {t: final[str(t)] for t in last}
    # the same with caps: no improving move onto a target that still has room
    caps = dict(zip(targets, [3, 5, 20] * len(targets), strict=False))
    capped = reassign(moving, targets, workload=studies, capacity=caps)
    assert improving_moves(capped, start, caps) == []


def test_the_roster_as_workload_gives_the_plan_the_study_table_gives(world: dict[str, Any]) -> None:
    studies, table = world["studies"], world["roster"]
    targets = world["targets"]
    # move the open studies of the busiest radiologist, some of them to people already loaded
    busiest = targets.sort_values(["open_load", "user_id"]).iloc[-1]["user_id"]
    open_ = studies[(studies["study_viewer_status"] == "incomplete") & ~studies["is_cancelled"]]
    moving = pd.concat([open_[open_["assigned_to_user_id"] == busiest], moving_set(world, 60)]
                       ).drop_duplicates("study_id")
    others = targets[targets["user_id"] != busiest]
    by_table = reassign(moving, others, workload=studies)
    by_roster = reassign(moving, others, workload=table)
    pd.testing.assert_frame_equal(by_table.frame, by_roster.frame)


def test_studies_being_moved_do_not_count_in_the_load_they_leave(world: dict[str, Any]) -> None:
    studies, targets = world["studies"], world["targets"]
    loaded = targets[targets["open"] > 0].sort_values("user_id").iloc[0]["user_id"]
    empty = targets[targets["open"] == 0]["user_id"].iloc[0]
    theirs = studies[(studies["assigned_to_user_id"] == loaded)
                     & (studies["study_viewer_status"] == "incomplete") & ~studies["is_cancelled"]]
    for workload in (studies, world["roster"]):
        plan = reassign(theirs, [loaded, empty], workload=workload)
        # both start at 0 once the moved studies are left out: the first (heaviest) study
        # goes to the first target given, with a load of exactly its own weight
        first = plan.frame.iloc[0]
        assert first["assigned_to"] == loaded
        assert first["target_load"] == SEVERITY_WEIGHTS[str(first["study_severity"])]
        assert first["previous_assignee"] == loaded


def test_stat_studies_are_placed_before_high_and_normal_oldest_first(world: dict[str, Any]) -> None:
    studies, targets = world["studies"], world["targets"]["user_id"].tolist()
    moving = moving_set(world).sample(frac=1.0, random_state=3)  # the order given does not matter
    assert set(moving["severity"].astype(str)) == {"stat", "high", "normal"}
    plan = reassign(moving, targets[:4], workload=studies).frame
    ranks = plan["study_severity"].astype(str).map(RANK).to_numpy()
    assert (np.diff(ranks) >= 0).all()
    for _, group in plan.groupby(ranks):
        assert group["study_created_at"].is_monotonic_increasing
    # the first study placed is the oldest stat one, and it goes to the least loaded target
    stats = moving[moving["severity"] == "stat"]
    assert plan["study_id"].iloc[0] == stats.sort_values("created_at")["study_id"].iloc[0]
    start = existing_load(studies, moving, targets[:4])
    lightest = min(targets[:4], key=lambda t: (start[t], targets.index(t)))
    if len(set(start.values())) == len(start):  # no tie: the order of to= does not decide
        assert plan["assigned_to"].iloc[0] == lightest
    # a stat study placed on a target before a normal one: with every target equally
    # loaded, the stats spread before any normal is placed
    flat = reassign(moving, targets[:4])
    first4 = flat.frame.head(4)
    assert set(first4["assigned_to"]) == set(targets[:4])
    assert (first4["study_severity"] == "stat").all()


def test_round_robin_spreads_evenly_in_turn_ignoring_load(world: dict[str, Any]) -> None:
    studies, targets = world["studies"], world["targets"]["user_id"].tolist()[:5]
    moving = moving_set(world, 53)
    plan = reassign(moving, targets, workload=studies, strategy="round_robin").frame
    assert plan["assigned_to"].tolist() == [targets[i % 5] for i in range(53)]
    counts = plan["assigned_to"].value_counts()
    assert counts.max() - counts.min() <= 1 and counts.sum() == 53
    # a full target leaves the turn, the others keep going in order
    capped = reassign(moving, targets, strategy="round_robin", capacity={targets[1]: 2}).frame
    assert (capped["assigned_to"] == targets[1]).sum() == 2
    others = [targets[0], *targets[2:]]
    assert capped["assigned_to"].tolist() == targets * 2 + [others[i % 4] for i in range(43)]


# --- capacity ----------------------------------------------------------------------------------


def test_capacity_is_respected_and_what_fits_nowhere_is_reported(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    studies, targets = world["studies"], world["targets"]["user_id"].tolist()[:3]
    moving = moving_set(world, 40)
    with caplog.at_level(logging.WARNING, logger="viewerkit.bulk.reassign"):
        plan = reassign(moving, targets, workload=studies, capacity=7)
    assert len(plan) == 21 and len(plan.unplaced) == 19
    assert plan.frame["assigned_to"].value_counts().to_dict() == dict.fromkeys(targets, 7)
    assert set(plan.unplaced["study_id"]).isdisjoint(plan.frame["study_id"])
    assert set(plan.unplaced["study_id"]) | set(plan.frame["study_id"]) == set(moving["study_id"])
    # placement order decides who is left out: the last in it (normal, newest)
    whole = reassign(moving, targets, workload=studies)
    assert plan.unplaced["study_id"].tolist() == whole.frame["study_id"].iloc[21:].tolist()
    [record] = [r for r in caplog.records if r.name == "viewerkit.bulk.reassign"]
    assert "19 of 40 studies" in record.getMessage()
    assert plan.unplaced["study_id"].iloc[0] in record.getMessage()
    assert "19 unplaced" in repr(plan)
    # a mapping: by ID or email, the targets it leaves out have no cap; 0 takes nothing
    users = world["users"]
    email = users.set_index("user_id").loc[targets[1], "email"]
    mapped = reassign(moving, targets, workload=studies, users=users,
                      capacity={targets[0]: 0, email: 4})
    got = mapped.frame["assigned_to"].value_counts().to_dict()
    assert targets[0] not in got and got[targets[1]] == 4 and got[targets[2]] == 36
    assert mapped.unplaced.empty


def test_bad_strategy_capacity_and_weights_are_refused() -> None:
    studies = pd.DataFrame({"study_id": ["stu_" + "a" * 32], "severity": ["stat"],
                            "created_at": [pd.Timestamp("2026-11-30", tz="UTC")]})
    target = "usr_" + "1" * 32
    with pytest.raises(ValidationError) as caught:
        reassign(studies, [target], strategy="fastest")  # type: ignore[arg-type]
    assert caught.value.failure_cases["field"].tolist() == ["strategy"]
    with pytest.raises(ValidationError) as caught:
        reassign(studies, [target], capacity={target: -1, "usr_" + "2" * 32: 3})
    assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [
        [f"capacity.{target}", Reason.NOT_WHOLE_NUMBER],
        ["capacity.usr_" + "2" * 32, Reason.NOT_A_CHOICE],
    ]
    with pytest.raises(ValidationError):
        reassign(studies, [target], capacity=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as caught:
        reassign(studies, [target], weights={"stat": -1})
    assert caught.value.failure_cases["field"].tolist() == ["weights.stat"]


# --- who the targets are -----------------------------------------------------------------------


def test_targets_by_email_by_id_or_as_a_roster_give_the_same_plan(world: dict[str, Any]) -> None:
    studies, users, targets = world["studies"], world["users"], world["targets"]
    chosen = targets.iloc[:4]
    moving = moving_set(world, 30)
    by_id = reassign(moving, chosen["user_id"].tolist(), workload=studies)
    emails = [e.upper() if i % 2 else e for i, e in enumerate(chosen["email"])]  # any case
    by_email = reassign(moving, emails, workload=studies, users=users)
    by_roster = reassign(moving, chosen, workload=studies)
    mixed = reassign(moving, [chosen["user_id"].iloc[0], *emails[1:]], workload=studies, users=users)
    for plan in (by_email, by_roster, mixed):
        pd.testing.assert_frame_equal(plan.frame, by_id.frame)
    assert set(by_id.frame["target_email"]) == set(chosen["email"])
    # without the user list, emails resolve through the users the study table names
    seen = studies.dropna(subset=["assigned_to_email"])
    some = seen.drop_duplicates("assigned_to_user_id").head(3)
    plan = reassign(moving, some["assigned_to_email"].tolist(), workload=studies)
    assert set(plan.frame["assigned_to"]) == set(some["assigned_to_user_id"])
    # the validated plan names only users of the user list
    by_email.validate(users)


def test_unknown_users_are_refused_naming_them_before_anything_is_built(world: dict[str, Any]) -> None:
    studies, users, targets = world["studies"], world["users"], world["targets"]
    moving = moving_set(world, 10)
    good = targets["email"].iloc[0]
    stranger, ghost = "nobody@avara-rad.example", "usr_" + "0" * 32
    with pytest.raises(ValidationError) as caught:
        reassign(moving, [good, stranger, ghost, "bob", 7], workload=studies, users=users)  # type: ignore[list-item]
    cases = caught.value.failure_cases
    assert cases[["row", "field", "value"]].values.tolist() == [
        [1, "to", stranger], [2, "to", ghost], [3, "to", "bob"], [4, "to", 7]]
    assert cases["reason"].tolist() == [Reason.NOT_A_CHOICE, Reason.NOT_A_CHOICE, Reason.NOT_USER_ID,
                                        Reason.WRONG_TYPE]
    assert stranger in str(caught.value) and ghost in str(caught.value)
    # without any user list an email cannot be resolved
    with pytest.raises(ValidationError) as caught:
        reassign(moving, [good])
    assert caught.value.failure_cases["value"].tolist() == [good]
    with pytest.raises(ValidationError) as caught:
        reassign(moving, [])
    assert caught.value.failure_cases["reason"].tolist() == [Reason.EMPTY]
    # a roster row without a user ID names its label
    bad = targets.head(2).copy()
    bad.loc[bad.index[1], "user_id"] = None
    with pytest.raises(ValidationError) as caught:
        reassign(moving, bad)
    assert caught.value.failure_cases[["row", "reason"]].values.tolist() == [[bad.index[1], Reason.REQUIRED]]


def test_studies_without_an_id_or_twice_are_refused_by_row(world: dict[str, Any]) -> None:
    moving = moving_set(world, 5).copy()
    moving.loc[moving.index[1], "study_id"] = None
    twice = pd.concat([moving, moving.iloc[[3]]])
    with pytest.raises(ValidationError) as caught:
        reassign(twice, world["targets"]["user_id"].tolist())
    assert caught.value.failure_cases[["row", "field", "reason"]].values.tolist() == [
        [moving.index[1], "study_id", Reason.REQUIRED], [moving.index[3], "study_id", Reason.DUPLICATE]]
    with pytest.raises(ValidationError) as caught:
        reassign(moving.drop(columns="severity"), world["targets"]["user_id"].tolist())
    assert caught.value.failure_cases["field"].tolist() == ["severity"]


def test_weights_override_the_shared_ones(world: dict[str, Any]) -> None:
    studies, targets = world["studies"], world["targets"]["user_id"].tolist()[:3]
    moving = moving_set(world, 30)
    heavy = {"normal": 1.0, "high": 5.0, "stat": 20.0}
    plan = reassign(moving, targets, workload=studies, weights={"stat": 20, "high": 5})
    start = existing_load(studies, moving, targets, heavy)
    assert improving_moves(plan, start, {}, heavy) == []
    last = plan.frame.groupby("assigned_to")["target_load"].last().to_dict()
    assert last == final_loads(plan, start, heavy)


def test_no_studies_give_an_empty_plan(world: dict[str, Any]) -> None:
    plan = reassign(world["studies"].head(0), world["targets"]["user_id"].tolist())
    assert len(plan) == 0 and plan.unplaced.empty and list(plan.frame.columns) == list(REASSIGN_COLUMNS)


# --- the algorithm, on random loads, weights and caps ------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    k = draw(st.integers(1, 6))
    normal = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    high = normal + draw(st.sampled_from([0.0, 1.0, 1.5, 3.0]))
    stat = high + draw(st.sampled_from([0.0, 1.0, 2.0, 8.0]))
    n = draw(st.integers(0, 40))
    severities = draw(st.lists(st.sampled_from(["normal", "high", "stat"]), min_size=n, max_size=n))
    minutes = draw(st.lists(st.integers(0, 500), min_size=n, max_size=n))
    start = draw(st.lists(st.integers(0, 30), min_size=k, max_size=k))
    caps = draw(st.one_of(st.none(), st.integers(0, 10),
                          st.lists(st.one_of(st.none(), st.integers(0, 12)), min_size=k, max_size=k)))
    return {"weights": {"normal": normal, "high": high, "stat": stat}, "severities": severities,
            "minutes": minutes, "start": start, "caps": caps}


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_balance_is_locally_optimal_on_random_loads_weights_and_caps(case: dict[str, Any]) -> None:
    weights, k = case["weights"], len(case["start"])
    targets = [f"usr_{i:032x}" for i in range(k)]
    n = len(case["severities"])
    t0 = pd.Timestamp("2026-11-30", tz="UTC")
    moving = pd.DataFrame({
        "study_id": [f"stu_{i:032x}" for i in range(n)],
        "severity": case["severities"],
        "created_at": [t0 + pd.Timedelta(minutes=m) for m in case["minutes"]],
    })
    # existing load as a roster: open studies of normal weight count, given by open_load
    start = {t: float(s) * weights["normal"] for t, s in zip(targets, case["start"], strict=True)}
    workload = pd.DataFrame({"user_id": targets, "open_load": list(start.values()), "open": case["start"]})
    caps_arg: Any = case["caps"]
    if isinstance(caps_arg, list):
        caps_arg = {t: c for t, c in zip(targets, caps_arg, strict=True) if c is not None}
    caps = (dict.fromkeys(targets, np.inf) if caps_arg is None else
            dict.fromkeys(targets, caps_arg) if isinstance(caps_arg, int) else
            {t: caps_arg.get(t, np.inf) for t in targets})
    plan = reassign(moving, targets, workload=workload, capacity=caps_arg, weights=weights)
    frame = plan.frame
    received = frame["assigned_to"].value_counts().to_dict()
    assert all(received.get(t, 0) <= caps[t] for t in targets)
    room = sum(min(caps[t], n) for t in targets)
    assert len(frame) == min(n, room) and len(plan.unplaced) == n - len(frame)
    ranks = frame["study_severity"].astype(str).map(RANK).to_numpy()
    assert (np.diff(ranks) >= 0).all()
    assert improving_moves(plan, start, caps, weights) == []
