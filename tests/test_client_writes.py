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
