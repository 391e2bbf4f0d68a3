"""The workload report lists the radiologists with no open work too (issue 12, "used by"):
given the Viewer user list, from the API or the cache, against a real sandbox."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from viewerkit import Client, StudyCache, ValidationError, fetch_studies, fetch_users
from viewerkit.cli import main
from viewerkit.reports import workload
from viewerkit.sandbox.server import Sandbox

NOW = pd.Timestamp.now(tz="UTC")


@pytest.fixture(scope="module")
def team(sandbox: Sandbox) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        return fetch_studies(client, progress=False), fetch_users(client, progress=False)


def test_radiologists_without_work_are_on_the_workload_with_zeros(team: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    studies, users = team
    plain = workload(studies, now=NOW)
    full = workload(studies, now=NOW, users=users)
    radiologists = set(users.loc[users["clinic_role"] == "Radiologist", "user_id"])
    idle = radiologists - set(plain["assigned_to_user_id"].dropna())
    assert idle, "the sandbox's roster has radiologists without studies"
    assert set(full["assigned_to_user_id"].dropna()) == set(plain["assigned_to_user_id"].dropna()) | idle
    added = full[full["assigned_to_user_id"].isin(idle)]
    counts = ["open_normal", "open_high", "open_stat", "open", "open_load", "completed", "breached"]
    assert (added[counts] == 0).all().all() and added["median_h"].isna().all()
    # the assignees with work keep their rows exactly, in the same order, ahead of the idle
    kept = full[~full["assigned_to_user_id"].isin(idle)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, plain)
    staff = set(users.loc[users["clinic_role"] != "Radiologist", "user_id"])
    assert not staff & (set(full["assigned_to_user_id"].dropna()) - set(plain["assigned_to_user_id"].dropna()))
    names = dict(zip(users["user_id"], users["first_name"] + " " + users["last_name"], strict=True))
    assert dict(zip(added["assigned_to_user_id"], added["assignee"], strict=True)) == {u: names[u] for u in idle}


def test_the_workload_weighs_open_work_with_the_roster_s_one_set_of_weights(
    team: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    from viewerkit import roster

    studies, users = team
    for weights in (None, {"stat": 10, "normal": 0.5}):
        load = workload(studies, now=NOW, users=users, weights=weights).set_index("assigned_to_user_id")["open_load"]
        team_load = roster(users, studies, now=NOW, weights=weights).set_index("user_id")["open_load"]
        shared = load.index.dropna().intersection(team_load.index)
        assert len(shared) > 10 and load[shared].tolist() == team_load[shared].tolist()
        assert load.loc[load.index.dropna()].sum() == pytest.approx(team_load[shared].sum())
    with pytest.raises(ValidationError) as caught:
        workload(studies, now=NOW, weights={"urgent": 2})
    assert caught.value.failure_cases["field"].tolist() == ["weights.urgent"]


def test_a_user_list_without_its_columns_is_refused(team: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    studies, users = team
    with pytest.raises(ValidationError) as caught:
        workload(studies, now=NOW, users=users.drop(columns=["clinic_role"]))
    assert caught.value.failure_cases["field"].tolist() == ["users.clinic_role"]


def test_the_report_command_shows_idle_radiologists_from_the_cache(
    sandbox: Sandbox, team: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    studies, users = team
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        StudyCache(tmp_path / "cache").refresh(client, progress=False)
    idle = users[(users["clinic_role"] == "Radiologist") & ~users["user_id"].isin(studies["assigned_to_user_id"])]
    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        main, ["report", "--cache", str(tmp_path / "cache"), "--out", str(out)],
        env={"AVARA_API_KEY": "", "VIEWERKIT_NAMESPACE": ""},
    )
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert all(f"{r.first_name} {r.last_name}" in html for r in idle.itertuples())
