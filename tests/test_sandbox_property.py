"""Random operation sequences give the same results on the sandbox and on a small model.

A hypothesis state machine creates, updates, cancels, uncancels, retrieves and lists studies
on a real sandbox and on an in-memory reference model of the contract, and checks after
every step that both agree (answers, list order, pagination, ``updatedAt`` moving only on a
change).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from viewerkit.sandbox.server import Sandbox, running
from viewerkit.sandbox.store import Store

SEVERITIES = ("normal", "high", "stat")
STATUSES = ("incomplete", "complete")

descriptions = st.text(alphabet="ctCTmrIÄäß xr/-", min_size=1, max_size=12).filter(lambda s: s.strip() != "")
metadata = st.none() | st.dictionaries(
    st.sampled_from(["site", "modality", "Body Part", "ключ"]), st.text(max_size=5), max_size=3
)


@pytest.fixture(scope="module")
def server() -> Iterator[Sandbox]:
    with running(studies=12, seed=21) as sandbox:
        yield sandbox


class SandboxAgreesWithModel(RuleBasedStateMachine):
    def __init__(self, server: Sandbox) -> None:
        super().__init__()
        self.http = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}
        )
        store = Store(server.db_path)
        self.users = store.user_ids()[:3]
        self.customers = store.customer_ids()[:2]
        store.close()
        self.model: dict[str, dict[str, Any]] = {}

    def teardown(self) -> None:
        self.http.close()

    # -- helpers ---------------------------------------------------------------------------

    def all_pages(self, params: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        studies: list[dict[str, Any]] = []
        query = {**params, "limit": limit}
        while True:
            response = self.http.get("/v1/viewer/studies", params=query)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["studies"]) <= limit
            studies.extend(page["studies"])
            if not page["hasMore"]:
                assert page["cursor"] is None
                return studies
            query["cursor"] = page["cursor"]

    def check_against_model(self, study: dict[str, Any]) -> None:
        expected = self.model[study["studyId"]]
        for field in (
            "studyInstanceUid",
            "studyDescription",
            "severity",
            "studyViewerStatus",
            "isCancelled",
            "createdAt",
            "updatedAt",
            "metadata",
        ):
            assert study[field] == expected[field], field
        assert (study["assignedTo"] or {}).get("userId") == expected["assignedTo"]
        assert (study["expressCustomer"] or {}).get("expressCustomerId") == expected["expressCustomerId"]
        assert (study["cancelledAt"] is not None) == study["isCancelled"]

    def remember(self, study: dict[str, Any]) -> None:
        self.model[study["studyId"]] = {
            "studyInstanceUid": study["studyInstanceUid"],
            "studyDescription": study["studyDescription"],
            "severity": study["severity"],
            "studyViewerStatus": study["studyViewerStatus"],
            "isCancelled": study["isCancelled"],
            "createdAt": study["createdAt"],
            "updatedAt": study["updatedAt"],
            "metadata": study["metadata"],
            "assignedTo": (study["assignedTo"] or {}).get("userId"),
            "expressCustomerId": (study["expressCustomer"] or {}).get("expressCustomerId"),
        }

    def ids(self) -> list[str]:
        return sorted(self.model)

    # -- rules -----------------------------------------------------------------------------

    @initialize()
    def load(self) -> None:
        for study in self.all_pages({}, 100):
            self.remember(study)

    @rule(
        severity=st.sampled_from(SEVERITIES),
        description=descriptions,
        assignee=st.integers(-1, 2),
        customer=st.integers(-1, 1),
        meta=metadata,
        reuse_uid=st.booleans(),
        pick=st.integers(0, 10_000),
    )
    def create(
        self, severity: str, description: str, assignee: int, customer: int, meta: Any, reuse_uid: bool, pick: int
    ) -> None:
        ids = self.ids()
        if reuse_uid and ids:
            uid = self.model[ids[pick % len(ids)]]["studyInstanceUid"]
        else:
            uid = "2.25." + str(uuid.uuid4().int)
        body: dict[str, Any] = {"severity": severity, "studyDescription": description, "studyInstanceUid": uid}
        if assignee >= 0:
            body["assignedTo"] = self.users[assignee]
        if customer >= 0:
            body["expressCustomerId"] = self.customers[customer]
        if meta is not None:
            body["metadata"] = meta
        response = self.http.post("/v1/viewer/studies", json=body)
        if any(s["studyInstanceUid"] == uid for s in self.model.values()):
            assert response.status_code == 409
            return
        assert response.status_code == 201, response.text
        study = response.json()
        assert study["studyId"] not in self.model
        assert study["createdAt"] == study["updatedAt"]
        assert study["isCancelled"] is False and study["studyViewerStatus"] == "incomplete"
        self.remember(study)
        assert self.model[study["studyId"]]["assignedTo"] == body.get("assignedTo")
        assert self.model[study["studyId"]]["expressCustomerId"] == body.get("expressCustomerId")
        assert study["metadata"] == body.get("metadata")

    @rule(
        pick=st.integers(0, 10_000),
        severity=st.none() | st.sampled_from(SEVERITIES),
        status=st.none() | st.sampled_from(STATUSES),
        description=st.none() | descriptions,
        assignee=st.sampled_from(["keep", "null", 0, 1]),
        meta=st.sampled_from(["keep", "value"]),
        meta_value=metadata,
    )
    def update(
        self,
        pick: int,
        severity: str | None,
        status: str | None,
        description: str | None,
        assignee: Any,
        meta: str,
        meta_value: Any,
    ) -> None:
        ids = self.ids()
        study_id = ids[pick % len(ids)]
        before = dict(self.model[study_id])
        body: dict[str, Any] = {}
        if severity is not None:
            body["severity"] = severity
        if status is not None:
            body["studyViewerStatus"] = status
        if description is not None:
            body["studyDescription"] = description
        if assignee == "null":
            body["assignedTo"] = None
        elif assignee != "keep":
            body["assignedTo"] = self.users[assignee]
        if meta == "value":
            body["metadata"] = meta_value
        response = self.http.patch(f"/v1/viewer/studies/{study_id}", json=body)
        assert response.status_code == 200, response.text
        study = response.json()
        after = dict(before)
        wire = {"studyViewerStatus": "studyViewerStatus"}
        for key, value in body.items():
            after[wire.get(key, key)] = value
        changed = any(after[k] != before[k] for k in after if k != "updatedAt")
        if changed:
            assert study["updatedAt"] > before["updatedAt"]
        else:
            assert study["updatedAt"] == before["updatedAt"]
        after["updatedAt"] = study["updatedAt"]
        self.model[study_id] = after
        self.check_against_model(study)

    @rule(pick=st.integers(0, 10_000), by_uid=st.booleans(), cancel=st.booleans())
    def cancel_or_uncancel(self, pick: int, by_uid: bool, cancel: bool) -> None:
        ids = self.ids()
        study_id = ids[pick % len(ids)]
        before = self.model[study_id]
        body = {"studyInstanceUid": before["studyInstanceUid"]} if by_uid else {"studyId": study_id}
        response = self.http.post(f"/v1/viewer/studies/{'cancel' if cancel else 'uncancel'}", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        if before["isCancelled"] == cancel:
            expected = (
                {"success": True, "message": "already cancelled"}
                if cancel
                else {"success": False, "message": "study is not cancelled"}
            )
            assert answer == expected
            assert self.http.get(f"/v1/viewer/studies/{study_id}").json()["updatedAt"] == before["updatedAt"]
            return
        assert answer == {"success": True}
        study = self.http.get(f"/v1/viewer/studies/{study_id}").json()
        assert study["updatedAt"] > before["updatedAt"]
        if cancel:
            assert study["cancelledAt"] == study["updatedAt"]
        self.model[study_id] = {**before, "isCancelled": cancel, "updatedAt": study["updatedAt"]}
        self.check_against_model(study)

    @rule(
        severity=st.none() | st.sampled_from(SEVERITIES),
        status=st.none() | st.sampled_from(STATUSES),
        cancelled=st.none() | st.booleans(),
        assignee=st.sampled_from([None, "null", 0, 1]),
        customer=st.sampled_from([None, "null", 0]),
        needle=st.none() | st.text(alphabet="ctCTmrIÄäß x", min_size=1, max_size=3),
        limit=st.integers(1, 100),
    )
    def list_matches_model(
        self,
        severity: str | None,
        status: str | None,
        cancelled: bool | None,
        assignee: Any,
        customer: Any,
        needle: str | None,
        limit: int,
    ) -> None:
        params: dict[str, Any] = {}
        if severity is not None:
            params["severity"] = severity
        if status is not None:
            params["studyViewerStatus"] = status
        if cancelled is not None:
            params["isCancelled"] = "true" if cancelled else "false"
        assignee_id = None if assignee in (None, "null") else self.users[assignee]
        if assignee is not None:
            params["assignedTo"] = "null" if assignee == "null" else assignee_id
        customer_id = None if customer in (None, "null") else self.customers[customer]
        if customer is not None:
            params["expressCustomerId"] = "null" if customer == "null" else customer_id
        if needle is not None:
            params["studyDescription"] = needle

        def keep(s: dict[str, Any]) -> bool:
            return (
                (severity is None or s["severity"] == severity)
                and (status is None or s["studyViewerStatus"] == status)
                and (cancelled is None or s["isCancelled"] == cancelled)
                and (assignee is None or s["assignedTo"] == assignee_id)
                and (customer is None or s["expressCustomerId"] == customer_id)
                and (needle is None or needle.lower() in s["studyDescription"].lower())
            )

        expected = sorted(
            (sid for sid, s in self.model.items() if keep(s)),
            key=lambda sid: (self.model[sid]["createdAt"], sid),
            reverse=True,
        )
        listed = self.all_pages(params, limit)
        assert [s["studyId"] for s in listed] == expected
        for study in listed:
            self.check_against_model(study)

    @invariant()
    def one_study_reads_back_as_modelled(self) -> None:
        if self.model:
            study_id = min(self.model, key=lambda sid: self.model[sid]["updatedAt"] + sid)
            self.check_against_model(self.http.get(f"/v1/viewer/studies/{study_id}").json())


def test_random_operations_agree_with_the_reference_model(server: Sandbox) -> None:
    run_state_machine_as_test(
        # hypothesis documents "a class or a function" returning the machine; its annotation
        # says only type[RuleBasedStateMachine]
        lambda: SandboxAgreesWithModel(server),  # type: ignore[arg-type]
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
