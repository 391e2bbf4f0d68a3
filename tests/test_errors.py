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
