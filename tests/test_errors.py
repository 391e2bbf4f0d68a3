"""The exception tree: errors survive a process boundary with every attribute."""

from __future__ import annotations

import pickle

import pytest

from viewerkit.errors import (
    ApiConnectionError,
    ApiError,
    ApiStatusError,
    BadRequest,
    CacheError,
    NotFound,
    RateLimited,
    Reason,
    ServerError,
    ValidationError,
)

STUDY = "stu_" + "a" * 32


@pytest.mark.parametrize(
    "error",
    [
        ApiError("the answer is not valid JSON", call="list_studies"),
        ApiConnectionError("no answer", call="retrieve_study", study=STUDY),
        NotFound("no such study", call="retrieve_study", study=STUDY, status_code=404),
        BadRequest("bad", call="create_study", study="1.2", status_code=400, param="severity",
                   error_type="invalid_request"),
        RateLimited("slow down", call="list_studies", status_code=429, retry_after=2.5),
        ServerError("boom", call="update_study", study=STUDY, status_code=503),
        ApiStatusError("teapot", call="list_studies", status_code=418),
        CacheError("manifest.json is corrupt"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_with_their_message_and_attributes(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_validation_error_pickles_with_its_failure_cases() -> None:
    error = ValidationError.from_cases(
        "create_study", [{"row": 3, "field": "severity", "value": "urgent", "reason": Reason.NOT_SEVERITY}]
    )
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert copy.failure_cases is not None and error.failure_cases is not None
    assert copy.failure_cases.equals(error.failure_cases)


def test_failure_case_reasons_are_reason_members_not_plain_strings() -> None:
    # Reason is a str Enum: pandas 3 would store it as its "str" dtype unless told otherwise
    error = ValidationError.from_cases(
        "plan", [{"row": 0, "field": "severity", "value": "urgent", "reason": Reason.NOT_SEVERITY},
                 {"row": 1, "field": "study_id", "value": "x", "reason": Reason.NOT_STUDY_ID}]
    )
    assert [type(r) for r in error.failure_cases["reason"]] == [Reason, Reason]
    assert error.failure_cases["reason"].tolist() == [Reason.NOT_SEVERITY, Reason.NOT_STUDY_ID]


def test_no_validation_error_is_built_without_failure_cases() -> None:
    # every raise goes through ValidationError.from_cases / .one, so failure_cases always
    # names field and Reason: no direct ValidationError(...) nor a bare `raise ValidationError`
    import ast
    from pathlib import Path

    import viewerkit

    root = Path(viewerkit.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Call | ast.Raise):
                continue
            target = node.func if isinstance(node, ast.Call) else node.exc
            name = target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) else None
            if name == "ValidationError":
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert found == [], "build ValidationError with from_cases() or one(): " + ", ".join(found)
