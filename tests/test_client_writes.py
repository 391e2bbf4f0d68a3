"""Writes whose answer was lost: the client resolves them from what the server holds, and
never takes someone else's study for its own."""

from __future__ import annotations

from typing import Any

import pytest

from viewerkit import Client, Conflict, ValidationError
from viewerkit.errors import Reason
from viewerkit.sandbox.server import Sandbox

UID = "1.2.840.99.1"
USER_PATH = "/v1/viewer/studies"


@pytest.fixture
def server(make_sandbox: Any) -> Sandbox:
    sandbox: Sandbox = make_sandbox(studies=20, seed=41)
    return sandbox


def _user_id(client: Client) -> str:
    studies = client.list_studies(limit=100)["studies"]
    return next(s["assignedTo"]["userId"] for s in studies if s.get("assignedTo"))


@pytest.mark.parametrize(
    ("ours", "differing"),
    [
        ({"severity": "stat", "study_description": "MY NEW STUDY"}, "severity, studyDescription"),
        ({"severity": "normal", "study_description": "ORIGINAL", "metadata": {"site": "North"}}, "metadata"),
        ({"severity": "normal", "study_description": "original"}, "studyDescription"),
    ],
)
def test_a_retried_create_meeting_someone_elses_study_is_a_conflict(
    server: Sandbox, ours: dict[str, Any], differing: str
) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        client.create_study(severity="normal", study_description="ORIGINAL", study_instance_uid=UID)
        # our first try fails with a 503 before the server handles it: the client cannot
        # know it was not applied, retries, and meets the existing study's 409
        server.fail_next(1, method="POST", path=USER_PATH, when="before", how="503")
        with pytest.raises(Conflict, match=f"differs in {differing}"):
            client.create_study(study_instance_uid=UID, **ours)
    statuses = [r["status"] for r in server.requests() if r["method"] == "POST" and r["path"] == USER_PATH]
    assert statuses == [201, 503, 409]  # the fault struck, and the 409 path was taken


def test_a_retried_create_whose_own_answer_was_lost_returns_the_study(server: Sandbox) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        user = _user_id(client)
        server.fail_next(1, method="POST", path=USER_PATH, when="after", how="drop")
        created = client.create_study(
            severity="high", study_description="MR Knee", study_instance_uid=UID,
            assigned_to=user, metadata={},
        )
    assert created["studyInstanceUid"] == UID and created["severity"] == "high"
    assert created["assignedTo"]["userId"] == user
    statuses = [r["status"] for r in server.requests() if r["method"] == "POST" and r["path"] == USER_PATH]
    assert statuses == ["dropped", 409]


def test_an_update_with_nothing_to_change_is_refused_before_sending() -> None:
    with (
        Client(api_key="sk-unused", base_url="http://127.0.0.1:9", max_retries=0) as client,
        pytest.raises(ValidationError, match="give at least one of") as caught,
    ):
        client.update_study("stu_" + "a" * 32)
    assert caught.value.failure_cases["reason"].tolist() == [Reason.REQUIRED]


@pytest.mark.parametrize("action", ["cancel", "uncancel"])
def test_a_cancel_whose_answer_was_lost_says_it_cannot_tell_what_it_did(
    server: Sandbox, action: str
) -> None:
    """The first try is applied and its answer lost; the retry hears "already in that
    state". The result must not claim the study already was (changed=False): it says it
    cannot tell (None), and the bulk engine decides from its before-image."""
    path = f"{USER_PATH}/{action}"
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        study_id = client.list_studies(limit=1, is_cancelled=False)["studies"][0]["studyId"]
        if action == "uncancel":
            client.cancel_study(study_id)
        call = client.cancel_study if action == "cancel" else client.uncancel_study
        server.fail_next(1, method="POST", path=path, when="after", how="drop")
        lost = call(study_id)
        again = call(study_id)  # a plain repeat: nothing lost, so it knows it changed nothing
        undone = (client.uncancel_study if action == "cancel" else client.cancel_study)(study_id)
        server.fail_next(1, method="POST", path=path, when="before", how="503")
        redone = call(study_id)  # the 503 applied nothing; the retry did it
    assert (lost.success, lost.changed) == (True, None)
    assert (again.success, again.changed) == (True, False)
    assert undone.changed is True
    assert (redone.success, redone.changed) == (True, True)
    statuses = [r["status"] for r in server.requests() if r["path"] == path]
    assert statuses[-5:] == ["dropped", 200, 200, 503, 200]  # each fault struck
