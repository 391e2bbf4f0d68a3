"""The official ``avara`` SDK drives every endpoint of a running sandbox."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import avara
import httpx
import pytest
from raw_api import list_all_raw

from viewerkit.sandbox.server import Sandbox

SEVERITIES = ("normal", "high", "stat")
STATUSES = ("incomplete", "complete")


_OPEN: list[avara.Avara] = []


def sdk(server: Sandbox, **kwargs: Any) -> avara.Avara:
    """An official SDK client without retries (closed when the test ends)."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("api_key", server.api_key)
    client = avara.Avara(base_url=server.base_url, **kwargs)
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def new_uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def list_order(study: dict[str, Any]) -> tuple[str, str]:
    return (study["createdAt"], study["studyId"])


@pytest.fixture(scope="module")
def everything(sandbox: Sandbox) -> list[dict[str, Any]]:
    """Every study of the shared sandbox as raw JSON, read page by page with httpx."""
    return list_all_raw(sandbox)


@pytest.fixture
def fresh(make_sandbox: Callable[..., Sandbox]) -> Iterator[Sandbox]:
    yield make_sandbox(studies=60, seed=3)


def test_listing_everything_yields_each_study_once_newest_first(
    sandbox: Sandbox, everything: list[dict[str, Any]]
) -> None:
    ids = [s["studyId"] for s in everything]
    assert len(ids) == 2000 == len(set(ids))
    assert everything == sorted(everything, key=list_order, reverse=True)


def test_sdk_auto_pagination_over_many_pages_has_no_duplicate_or_missing_study(
    sandbox: Sandbox, everything: list[dict[str, Any]]
) -> None:
    seen = [s.study_id for s in sdk(sandbox).viewer.studies.list(limit=37)]
    assert seen == [s["studyId"] for s in everything]


def test_default_page_is_25_studies_with_a_cursor(sandbox: Sandbox) -> None:
    page = sdk(sandbox).viewer.studies.list()
    assert len(page.studies) == 25
    assert page.has_more is True and page.cursor


def _expected(
    everything: list[dict[str, Any]],
    *,
    assigned_to: str | None | object = ...,
    express_customer_id: str | None | object = ...,
    is_cancelled: bool | None = None,
    severity: str | None = None,
    study_description: str | None = None,
    study_viewer_status: str | None = None,
) -> list[str]:
    def keep(s: dict[str, Any]) -> bool:
        assignee = (s["assignedTo"] or {}).get("userId")
        customer = (s["expressCustomer"] or {}).get("expressCustomerId")
        return (
            (assigned_to is ... or assignee == assigned_to)
            and (express_customer_id is ... or customer == express_customer_id)
            and (is_cancelled is None or s["isCancelled"] == is_cancelled)
            and (severity is None or s["severity"] == severity)
            and (study_viewer_status is None or s["studyViewerStatus"] == study_viewer_status)
            and (
                study_description is None
                or study_description.lower() in s["studyDescription"].lower()
            )
        )

    return [s["studyId"] for s in everything if keep(s)]


def _listed(server: Sandbox, **filters: Any) -> list[str]:
    return [s.study_id for s in sdk(server).viewer.studies.list(limit=100, **filters)]


@pytest.mark.parametrize("severity", SEVERITIES)
def test_list_filters_by_severity(sandbox: Sandbox, everything: list[dict[str, Any]], severity: str) -> None:
    expected = _expected(everything, severity=severity)
    assert expected and _listed(sandbox, severity=severity) == expected


@pytest.mark.parametrize("status", STATUSES)
def test_list_filters_by_viewer_status(sandbox: Sandbox, everything: list[dict[str, Any]], status: str) -> None:
    expected = _expected(everything, study_viewer_status=status)
    assert expected and _listed(sandbox, study_viewer_status=status) == expected


@pytest.mark.parametrize("cancelled", [True, False])
def test_list_filters_by_cancellation(sandbox: Sandbox, everything: list[dict[str, Any]], cancelled: bool) -> None:
    expected = _expected(everything, is_cancelled=cancelled)
    assert expected and _listed(sandbox, is_cancelled=cancelled) == expected


def test_list_filters_by_assignee_and_by_the_literal_null(sandbox: Sandbox, everything: list[dict[str, Any]]) -> None:
    assignee = next(s["assignedTo"]["userId"] for s in everything if s["assignedTo"])
    expected = _expected(everything, assigned_to=assignee)
    assert expected and _listed(sandbox, assigned_to=assignee) == expected
    unassigned = _expected(everything, assigned_to=None)
    # the SDK omits a None query parameter: the literal string "null" selects unassigned
    assert unassigned and _listed(sandbox, assigned_to="null") == unassigned


def test_list_filters_by_customer_and_by_the_literal_null(sandbox: Sandbox, everything: list[dict[str, Any]]) -> None:
    customer = next(
        s["expressCustomer"]["expressCustomerId"] for s in everything if s["expressCustomer"]
    )
    expected = _expected(everything, express_customer_id=customer)
    assert expected and _listed(sandbox, express_customer_id=customer) == expected
    without = _expected(everything, express_customer_id=None)
    assert without and _listed(sandbox, express_customer_id="null") == without


def test_description_filter_is_a_case_insensitive_contains_match(
    sandbox: Sandbox, everything: list[dict[str, Any]]
) -> None:
    word = everything[0]["studyDescription"].split()[-1]
    needle = word[1:].swapcase()
    expected = _expected(everything, study_description=needle)
    assert expected and _listed(sandbox, study_description=needle) == expected


@pytest.mark.parametrize(
    "filters",
    [
        {"severity": "normal", "study_viewer_status": "incomplete", "is_cancelled": False},
        {"severity": "high", "is_cancelled": False},
        {"study_viewer_status": "complete", "assigned_to": "null"},
        {"severity": "normal", "study_description": "ct"},
    ],
)
def test_list_filter_combinations_match_filtering_everything(
    sandbox: Sandbox, everything: list[dict[str, Any]], filters: dict[str, Any]
) -> None:
    expectation = {
        ("assigned_to" if k == "assigned_to" else k): (None if v == "null" else v)
        for k, v in filters.items()
    }
    expected = _expected(everything, **expectation)
    assert expected
    assert _listed(sandbox, **filters) == expected
    # and across small pages
    small = [s.study_id for s in sdk(sandbox).viewer.studies.list(limit=7, **filters)]
    assert small == expected


def test_retrieve_and_retrieve_by_uid_return_the_listed_study(
    sandbox: Sandbox, everything: list[dict[str, Any]]
) -> None:
    with httpx.Client(
        base_url=sandbox.base_url, headers={"Authorization": f"Bearer {sandbox.api_key}"}
    ) as http:
        for study in everything[::400]:
            assert http.get(f"/v1/viewer/studies/{study['studyId']}").json() == study
            by_uid = http.get(f"/v1/viewer/studies/by-uid/{study['studyInstanceUid']}")
            assert by_uid.json() == study
    client = sdk(sandbox)
    one = everything[5]
    assert client.viewer.studies.retrieve(one["studyId"]).study_instance_uid == one["studyInstanceUid"]
    assert client.viewer.studies.retrieve_by_uid(one["studyInstanceUid"]).study_id == one["studyId"]


def test_timestamps_are_iso_with_milliseconds_and_z(everything: list[dict[str, Any]]) -> None:
    import re

    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    for study in everything[:200]:
        assert stamp.fullmatch(study["createdAt"]) and stamp.fullmatch(study["updatedAt"])
        assert study["cancelledAt"] is None or stamp.fullmatch(study["cancelledAt"])
        assert (study["cancelledAt"] is not None) == study["isCancelled"]


def test_create_answers_201_with_the_study_created_by_the_calling_key(fresh: Sandbox) -> None:
    client = sdk(fresh)
    user = next(iter(fresh_users(fresh)))
    customer = next(iter(fresh_customers(fresh)))
    uid = new_uid()
    raw = client.viewer.studies.with_raw_response.create(
        severity="stat",
        study_description="CT Head without Contrast",
        study_instance_uid=uid,
        assigned_to=user,
        express_customer_id=customer,
        metadata={"site": "North"},
    )
    assert raw.http_response.status_code == 201
    body = raw.http_response.json()
    assert body["studyInstanceUid"] == uid and body["severity"] == "stat"
    assert body["studyViewerStatus"] == "incomplete" and body["isCancelled"] is False
    assert body["assignedTo"]["userId"] == user
    assert body["expressCustomer"]["expressCustomerId"] == customer
    assert body["createdByUser"] is None
    assert body["createdByApiKey"]["isViewerEnabled"] is True
    assert body["metadata"] == {"site": "North"}
    assert body["createdAt"] == body["updatedAt"]
    # newest first: the new study heads the list
    assert client.viewer.studies.list(limit=1).studies[0].study_id == body["studyId"]
    # the key record is the one the bearer token belongs to, the same on every create
    other = client.viewer.studies.create(
        severity="normal", study_description="XR Chest", study_instance_uid=new_uid()
    )
    assert other.created_by_api_key is not None
    assert other.created_by_api_key.api_key_id == body["createdByApiKey"]["apiKeyId"]
    assert other.assigned_to is None and other.metadata is None and other.express_customer is None


def fresh_users(server: Sandbox) -> list[str]:
    from viewerkit.sandbox.store import Store

    store = Store(server.db_path)
    try:
        return store.user_ids()
    finally:
        store.close()


def fresh_customers(server: Sandbox) -> list[str]:
    from viewerkit.sandbox.store import Store

    store = Store(server.db_path)
    try:
        return store.customer_ids()
    finally:
        store.close()


def test_create_with_an_existing_uid_is_a_conflict_the_sdk_does_not_retry(fresh: Sandbox) -> None:
    client = sdk(fresh, max_retries=2)
    uid = new_uid()
    client.viewer.studies.create(severity="normal", study_description="XR Hand", study_instance_uid=uid)
    with pytest.raises(avara.ConflictError) as info:
        client.viewer.studies.create(severity="high", study_description="XR Hand", study_instance_uid=uid)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.response.json()["error"]["param"] == "studyInstanceUid"
    creates = [row for row in fresh.audit(outcome="changed") if row["operation"] == "create"]
    assert len(creates) == 1


def test_update_changes_only_given_fields_and_moves_updated_at_only_on_change(fresh: Sandbox) -> None:
    client = sdk(fresh)
    users = fresh_users(fresh)
    study = client.viewer.studies.create(
        severity="normal",
        study_description="MRI Brain",
        study_instance_uid=new_uid(),
        assigned_to=users[0],
        metadata={"site": "North", "modality": "MR"},
    )
    time.sleep(0.005)
    same = client.viewer.studies.update(study.study_id, severity="normal")
    assert same.updated_at == study.updated_at
    changed = client.viewer.studies.update(study.study_id, severity="stat", study_viewer_status="complete")
    assert changed.severity == "stat" and changed.study_viewer_status == "complete"
    assert changed.study_description == "MRI Brain" and changed.metadata == {"site": "North", "modality": "MR"}
    assert changed.assigned_to is not None and changed.assigned_to.user_id == users[0]
    assert changed.updated_at is not None and study.updated_at is not None
    assert changed.updated_at > study.updated_at
    assert changed.created_at == study.created_at
    # metadata replaces the whole map
    replaced = client.viewer.studies.update(study.study_id, metadata={"site": "South"})
    assert replaced.metadata == {"site": "South"}
    # reassign, then unassign with null
    moved = client.viewer.studies.update(study.study_id, assigned_to=users[1])
    assert moved.assigned_to is not None and moved.assigned_to.user_id == users[1]
    unassigned = client.viewer.studies.update(study.study_id, assigned_to=None)  # type: ignore[arg-type]
    assert unassigned.assigned_to is None
    cleared = client.viewer.studies.update(study.study_id, metadata=None)
    assert cleared.metadata is None
    assert client.viewer.studies.retrieve(study.study_id).model_dump() == cleared.model_dump()
    operations = [(r["operation"], r["outcome"], r["changed_fields"]) for r in fresh.audit(study.study_id)]
    assert operations[1:] == [
        ("update", "noop", []),
        ("update", "changed", ["severity", "studyViewerStatus"]),
        ("update", "changed", ["metadata"]),
        ("update", "changed", ["assignedTo"]),
        ("update", "changed", ["assignedTo"]),
        ("update", "changed", ["metadata"]),
    ]


@pytest.mark.parametrize("by", ["study_id", "study_instance_uid"])
def test_cancel_and_uncancel_by_either_identifier(fresh: Sandbox, by: str) -> None:
    client = sdk(fresh)
    study = client.viewer.studies.create(
        severity="high", study_description="CT Chest", study_instance_uid=new_uid()
    )
    ident = {by: getattr(study, by)}
    first = client.viewer.studies.cancel(**ident)
    assert first.success is True
    cancelled = client.viewer.studies.retrieve(study.study_id)
    assert cancelled.is_cancelled is True and cancelled.cancelled_at is not None
    assert cancelled.updated_at == cancelled.cancelled_at
    again = client.viewer.studies.cancel(**ident)
    assert (again.success, again.message) == (True, "already cancelled")
    assert client.viewer.studies.retrieve(study.study_id).updated_at == cancelled.updated_at
    back = client.viewer.studies.uncancel(**ident)
    assert back.success is True
    restored = client.viewer.studies.retrieve(study.study_id)
    assert restored.is_cancelled is False and restored.cancelled_at is None
    assert restored.updated_at is not None and restored.updated_at > cancelled.updated_at
    not_cancelled = client.viewer.studies.uncancel(**ident)
    assert (not_cancelled.success, not_cancelled.message) == (False, "study is not cancelled")
    assert [r["operation"] for r in fresh.audit(study.study_id, outcome="changed")] == ["create", "cancel", "uncancel"]
    assert [r["outcome"] for r in fresh.audit(study.study_id)] == ["changed", "changed", "noop", "changed", "noop"]


def test_cancel_with_both_identifiers_of_different_studies_or_neither_is_a_400(fresh: Sandbox) -> None:
    client = sdk(fresh)
    a = client.viewer.studies.create(severity="normal", study_description="XR", study_instance_uid=new_uid())
    b = client.viewer.studies.create(severity="normal", study_description="XR", study_instance_uid=new_uid())
    with pytest.raises(avara.BadRequestError):
        client.viewer.studies.cancel(study_id=a.study_id, study_instance_uid=b.study_instance_uid)
    with pytest.raises(avara.BadRequestError):
        client.viewer.studies.cancel()
    with pytest.raises(avara.BadRequestError):
        client.viewer.studies.uncancel()
    assert client.viewer.studies.cancel(study_id=a.study_id, study_instance_uid=a.study_instance_uid).success
    assert client.viewer.studies.retrieve(b.study_id).is_cancelled is False


def test_reroute_url_opens_the_viewer_page_and_refuses_a_wrong_token(
    sandbox: Sandbox, everything: list[dict[str, Any]]
) -> None:
    client = sdk(sandbox)
    study = everything[3]
    url = client.viewer.studies.reroute_url(study_id=study["studyId"]).url
    by_uid = client.viewer.studies.reroute_url(study_instance_uid=study["studyInstanceUid"]).url
    assert url.startswith(f"{sandbox.base_url}/viewer/studies/{study['studyId']}?token=")
    assert by_uid.split("?")[0] == url.split("?")[0]
    page = httpx.get(url)
    assert page.status_code == 200 and study["studyId"] in page.text
    base, token = url.split("?token=")
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert httpx.get(f"{base}?token={tampered}").status_code == 401
    assert httpx.get(base).status_code == 401
    # a token of one study does not open another
    other = everything[4]["studyId"]
    assert httpx.get(f"{sandbox.base_url}/viewer/studies/{other}?token={token}").status_code == 401


def test_reroute_url_expires(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=5, reroute_ttl_s=0.05)
    client = sdk(server)
    study_id = client.viewer.studies.list(limit=1).studies[0].study_id
    url = client.viewer.studies.reroute_url(study_id=study_id).url
    time.sleep(0.2)
    assert httpx.get(url).status_code == 410


def test_errors_reach_the_sdk_as_its_exception_classes(sandbox: Sandbox) -> None:
    client = sdk(sandbox)
    with pytest.raises(avara.NotFoundError):
        client.viewer.studies.retrieve("stu_" + "0" * 32)
    with pytest.raises(avara.NotFoundError):
        client.viewer.studies.retrieve_by_uid("1.2.3.4.5.6.7.8.9")
    with pytest.raises(avara.NotFoundError):
        client.viewer.studies.cancel(study_id="stu_" + "0" * 32)
    with pytest.raises(avara.BadRequestError) as bad:
        client.viewer.studies.list(severity="urgent")  # type: ignore[arg-type]
    assert bad.value.response.json()["error"]["param"] == "severity"
    wrong = sdk(sandbox, api_key="sk-wrong")
    with pytest.raises(avara.AuthenticationError):
        wrong.viewer.studies.list()


def test_rate_limit_and_server_faults_reach_the_sdk_as_its_exception_classes(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    server = make_sandbox(studies=5, rate_limit=1)
    client = sdk(server)
    client.viewer.studies.list(limit=1)
    with pytest.raises(avara.RateLimitError) as limited:
        client.viewer.studies.list(limit=1)
    assert int(limited.value.response.headers["retry-after"]) >= 1
    server.set_faults(rate_limit=None, fail_rate=1.0)
    with pytest.raises((avara.InternalServerError, avara.APIConnectionError)):
        client.viewer.studies.list(limit=1)


def test_description_filter_takes_wildcards_and_non_ascii_literally(fresh: Sandbox) -> None:
    client = sdk(fresh)
    made = {
        text: client.viewer.studies.create(
            severity="normal", study_description=text, study_instance_uid=new_uid()
        ).study_id
        for text in ("CT 100% Dose", "CT 1000 Dose", "US Ä_B", "US AxB", "MR Back\\Slash")
    }
    assert _listed(fresh, study_description="0%") == [made["CT 100% Dose"]]
    assert _listed(fresh, study_description="ä_b") == [made["US Ä_B"]]
    assert _listed(fresh, study_description="_") == [made["US Ä_B"]]
    assert _listed(fresh, study_description="k\\s") == [made["MR Back\\Slash"]]


# -- the roster: client.viewer.users ------------------------------------------------------------


def test_sdk_users_list_auto_paginates_every_listed_user_once(sandbox: Sandbox) -> None:
    from datetime import datetime

    from test_sandbox_users import list_users_raw

    raw = list_users_raw(sandbox)
    seen = list(sdk(sandbox).viewer.users.list(limit=4))
    assert [u.user_id for u in seen] == [u["userId"] for u in raw]
    for model, wire in zip(seen, raw, strict=True):
        assert (model.email, model.first_name, model.last_name, model.clinic_role, model.level) == (
            wire["email"], wire["firstName"], wire["lastName"], wire["clinicRole"], wire["level"],
        )
        assert (model.can_manage_studies, model.invited_source, model.phone_number) == (
            wire["canManageStudies"], wire["invitedSource"], wire["phoneNumber"],
        )
        for attr, key in (("created_at", "createdAt"), ("last_login_at", "lastLoginAt")):
            value = getattr(model, attr)
            assert value == (None if wire[key] is None else datetime.fromisoformat(wire[key].replace("Z", "+00:00")))
    page = sdk(sandbox).viewer.users.list()
    assert len(page.users) == min(25, len(raw))


def test_sdk_users_list_filters_match_filtering_every_user(sandbox: Sandbox) -> None:
    from test_sandbox_users import list_users_raw

    raw = list_users_raw(sandbox)
    client = sdk(sandbox)
    admins = [u.user_id for u in client.viewer.users.list(level="admin", limit=2)]
    assert admins == [u["userId"] for u in raw if u["level"] == "admin"] and admins
    picked = raw[4]
    assert [u.user_id for u in client.viewer.users.list(email=picked["email"])] == [picked["userId"]]
    mixed = client.viewer.users.list(first_name="a", invited_source="dashboard", limit=3)
    assert [u.user_id for u in mixed] == [
        u["userId"] for u in raw if "a" in u["firstName"].lower() and u["invitedSource"] == "dashboard"
    ]


def test_sdk_users_retrieve_finds_listed_and_revoked_users(sandbox: Sandbox, everything: list[dict[str, Any]]) -> None:
    from test_sandbox_users import list_users_raw

    users = list_users_raw(sandbox)
    listed = {u["userId"] for u in users}
    named = {s[side]["userId"] for s in everything for side in ("assignedTo", "createdByUser") if s[side]}
    revoked = sorted(named - listed)
    assert revoked
    client = sdk(sandbox)
    # every user a study names is a radiologist; the list holds other roles too
    for wanted in sorted(users, key=lambda u: u["userId"])[:5]:
        user = client.viewer.users.retrieve(wanted["userId"])
        assert (user.user_id, user.clinic_role) == (wanted["userId"], wanted["clinicRole"])
    for user_id in revoked:
        user = client.viewer.users.retrieve(user_id)
        assert user.user_id == user_id and user.clinic_role == "Radiologist"


def test_sdk_users_errors_reach_the_sdk_as_its_exception_classes(sandbox: Sandbox) -> None:
    client = sdk(sandbox)
    with pytest.raises(avara.NotFoundError):
        client.viewer.users.retrieve("usr_" + "0" * 32)
    with pytest.raises(avara.BadRequestError) as bad:
        client.viewer.users.list(level="boss")  # type: ignore[arg-type]
    assert bad.value.response.json()["error"]["param"] == "level"
    with pytest.raises(avara.BadRequestError):
        client.viewer.users.list(limit=101)
    with pytest.raises(avara.AuthenticationError):
        sdk(sandbox, api_key="sk-wrong").viewer.users.list()
