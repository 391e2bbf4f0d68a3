"""The example plans in data/ (issue 9): each is a valid plan whose studies and users exist
in the sandbox data/README.md names (``viewerkit sandbox serve``'s defaults: seed 0, 2,000
studies). Offline: the sandbox's world is built by ``generate_world``, as serve builds it."""

from __future__ import annotations

import io
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from viewerkit.bulk import Plan
from viewerkit.sandbox.cli import serve
from viewerkit.sandbox.synth import generate_world

DATA = Path(__file__).parent.parent / "data"
PLANS = sorted(DATA.glob("*.csv"))


@pytest.fixture(scope="module")
def world_users() -> tuple[set[str], pd.DataFrame]:
    world = generate_world(2000, seed=0)  # as of now: what a sandbox started today holds
    users = pd.DataFrame(world.roster)
    return set(world.studies["study_id"]), users


def test_the_readme_names_the_sandbox_serve_starts_by_default() -> None:
    defaults = {p.name: p.default for p in serve.params}
    assert (defaults["seed"], defaults["studies"]) == (0, 2000)
    text = (DATA / "README.md").read_text()
    assert "seed 0, 2,000 studies" in text
    assert {p.name for p in PLANS} == {"offshift-reassignment.csv", "severity-bump.csv", "cancel-list.csv"}
    for plan in PLANS:
        assert f"`{plan.name}`" in text


@pytest.mark.parametrize("path", PLANS, ids=lambda p: p.name)
def test_each_example_plan_is_valid_and_names_studies_and_users_of_that_sandbox(
    path: Path, world_users: tuple[set[str], pd.DataFrame]
) -> None:
    study_ids, users = world_users
    plan = Plan.from_csv(path)
    listed = users[~users["revoked"]]
    plan.validate(users=listed)  # offline rules, and every assignee is a listed user
    frame = plan.frame
    assert len(frame) >= 5 and frame["study_id"].notna().all()
    assert set(frame["study_id"]) <= study_ids, "a study the sandbox does not have"
    if "assigned_to" in frame.columns:
        resolved = plan.with_user_ids(listed).frame["assigned_to"]
        roles = listed.set_index("user_id").loc[resolved, ["clinic_role", "can_manage_studies"]]
        assert (roles["clinic_role"] == "Radiologist").all() and roles["can_manage_studies"].all()


def test_the_offshift_plan_moves_one_radiologists_studies_stat_first(
    world_users: tuple[set[str], pd.DataFrame]
) -> None:
    world = generate_world(2000, seed=0, now=datetime(2026, 1, 5, tzinfo=timezone.utc))
    by_id = dict(zip(world.studies["study_id"], world.studies["assigned_to"], strict=True))
    severity = dict(zip(world.studies["study_id"], world.studies["severity"], strict=True))
    frame = Plan.from_csv(DATA / "offshift-reassignment.csv").frame
    leaving = {u["user_id"] for u in world.users if u["email"] == "robert.mitchell@avara-rad.example"}
    # a study's assignee, when it has one, does not depend on the day the sandbox starts
    assert {by_id[s] for s in frame["study_id"]} == leaving
    assert frame["study_severity"].tolist() == [severity[s] for s in frame["study_id"]]
    ranks = frame["study_severity"].map({"stat": 0, "high": 1, "normal": 2})
    assert ranks.is_monotonic_increasing


def test_the_readme_marker_example_is_a_valid_plan(world_users: tuple[set[str], pd.DataFrame]) -> None:
    text = (DATA / "README.md").read_text()
    block = re.search(r"For example:\n\n```\n(.*?)```", text, re.S)
    assert block is not None
    frame = pd.read_csv(io.StringIO(block.group(1)), dtype=str, keep_default_na=False)
    plan = Plan(frame).validate()
    assert plan.counts() == {"assigned_to": 1, "metadata": 2, "meta.site": 1}
    assert set(frame["study_id"]) <= world_users[0]


def test_the_example_plans_are_committed_not_ignored() -> None:
    names = [str(p.relative_to(DATA.parent)) for p in [*PLANS, DATA / "README.md"]]
    ignored = subprocess.run(["git", "check-ignore", *names], cwd=DATA.parent,
                             capture_output=True, text=True)
    assert ignored.stdout == "", f"ignored by .gitignore: {ignored.stdout}"


def test_the_example_plans_touch_different_studies() -> None:
    ids = [set(Plan.from_csv(path).frame["study_id"]) for path in PLANS]
    assert sum(map(len, ids)) == len(set.union(*ids))
