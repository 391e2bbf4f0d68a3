"""The ``studyDescription`` list filter matches every character literally: NUL anywhere in
the filter or the description, LIKE's own wildcards and escape, letters whose lowercase is
ASCII, accents and emoji. The oracle is ``description_matches`` over every study served."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from raw_api import list_all_raw

from viewerkit.sandbox.server import Sandbox
from viewerkit.sandbox.store import description_matches

DESCRIPTIONS = (
    "Contrast",
    "plain ast",
    "CT Chest 100%",
    "CT_Head",
    "CTxHead",
    "C:\\share\\scan",
    "ab\x00cd",
    "\x00leading NUL",
    "trailing NUL\x00",
    "Kelvin \u212a scan",
    "Knee",
    "\u0130stanbul MR",
    "ÉCHO CŒUR",
    "🧠 MRI brain",
    "Straße CT",
    "50% off_x",
)

NEEDLES = (
    "ast\x00qqq",
    "ast\x00",
    "\x00ast",
    "ast",
    "\x00",
    "b\x00c",
    "\x00lead",
    "NUL\x00",
    "%",
    "_",
    "\\",
    "\\s",
    "100%",
    "t_h",
    "T%H",
    "c%",
    "k",
    "K",
    "\u212a",
    "kelvin k",
    "i",
    "\u0130",
    "\u0130stanbul",
    "écho",
    "cœur",
    "🧠",
    "🧠 mri",
    "straße",
    "STRASSE",
    " ",
    "cd",
    "CONTRAST",
)


@pytest.fixture(scope="module")
def described(request: pytest.FixtureRequest) -> Sandbox:
    from viewerkit.sandbox.server import running

    context = running(studies=0, in_thread=True)
    server = context.__enter__()
    request.addfinalizer(lambda: context.__exit__(None, None, None))
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        for text in DESCRIPTIONS:
            body = {"severity": "normal", "studyDescription": text, "studyInstanceUid": "2.25." + str(uuid.uuid4().int)}
            assert http.post("/v1/viewer/studies", json=body).status_code == 201
    return server


def served_descriptions(server: Sandbox, needle: str) -> list[str]:
    return sorted(s["studyDescription"] for s in list_all_raw(server, {"studyDescription": needle}))


@pytest.mark.parametrize("needle", NEEDLES, ids=[repr(n) for n in NEEDLES])
def test_the_description_filter_matches_every_character_literally(described: Sandbox, needle: str) -> None:
    stored = [s["studyDescription"] for s in list_all_raw(described)]
    assert sorted(stored) == sorted(DESCRIPTIONS)  # NUL and all, as sent
    expected = sorted(d for d in stored if description_matches(d, needle))
    assert served_descriptions(described, needle) == expected


def test_a_nul_in_the_filter_is_not_the_end_of_it(described: Sandbox) -> None:
    assert served_descriptions(described, "ast\x00qqq") == []
    assert served_descriptions(described, "ast") == ["Contrast", "plain ast"]
    assert served_descriptions(described, "\x00") == sorted(["ab\x00cd", "\x00leading NUL", "trailing NUL\x00"])
    assert served_descriptions(described, "b\x00c") == ["ab\x00cd"]


def test_a_nul_in_a_description_does_not_hide_what_follows_it(described: Sandbox) -> None:
    assert served_descriptions(described, "cd") == ["ab\x00cd"]
    assert served_descriptions(described, "LEADING") == ["\x00leading NUL"]


def test_wildcards_and_the_escape_character_are_plain_characters(described: Sandbox) -> None:
    assert served_descriptions(described, "t_h") == ["CT_Head"]
    assert served_descriptions(described, "%") == ["50% off_x", "CT Chest 100%"]
    assert served_descriptions(described, "c%") == []
    assert served_descriptions(described, "\\") == ["C:\\share\\scan"]


def test_case_folds_by_lowercase_on_both_sides_for_every_letter(described: Sandbox) -> None:
    assert served_descriptions(described, "k") == sorted(["Kelvin \u212a scan", "Knee"])
    assert served_descriptions(described, "\u212a") == sorted(["Kelvin \u212a scan", "Knee"])
    assert served_descriptions(described, "écho") == ["ÉCHO CŒUR"]
    assert served_descriptions(described, "🧠 mri") == ["🧠 MRI brain"]


def test_a_filter_with_a_nul_pages_with_its_cursor(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(studies=0, in_thread=True)
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        for i in range(7):
            text = f"XR\x00{i}" if i % 2 else f"XR {i}"
            body = {"severity": "high", "studyDescription": text, "studyInstanceUid": f"2.25.{i + 1}"}
            assert http.post("/v1/viewer/studies", json=body).status_code == 201
        first = http.get("/v1/viewer/studies", params={"studyDescription": "r\x00", "limit": 2}).json()
        assert first["hasMore"] and len(first["studies"]) == 2
        rest = http.get(
            "/v1/viewer/studies", params={"studyDescription": "r\x00", "limit": 2, "cursor": first["cursor"]}
        ).json()
    assert {s["studyDescription"] for s in first["studies"] + rest["studies"]} == {"XR\x001", "XR\x003", "XR\x005"}
    assert not rest["hasMore"]
