"""A cursor chain that does not advance is refused at once, wherever a list is paged.

The sandbox's cursors always advance, so a wire-level fake (httpx.MockTransport) plays the
misbehaving server here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from viewerkit import ApiError, Client, fetch_studies
from viewerkit.fetch import fetch_new_studies

NOW = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.timezone.utc)


def study(n: int) -> dict[str, Any]:
    return {
        "studyId": f"stu_{n:032x}", "studyInstanceUid": f"1.2.{n}", "severity": "normal",
        "studyViewerStatus": "complete", "isCancelled": False,
        "createdAt": (NOW - dt.timedelta(minutes=n)).isoformat().replace("+00:00", "Z"),
        "updatedAt": NOW.isoformat().replace("+00:00", "Z"),
    }


def serving(pages: Callable[[int, str | None], dict[str, Any]]) -> tuple[Client, list[str | None]]:
    """A client whose server answers the n-th list request with ``pages(n, cursor)``."""
    asked: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        asked.append(cursor)
        if len(asked) > 200:  # the fault this file is about: never reached when it is fixed
            return httpx.Response(500, json={"error": {"type": "loop", "message": "looping"}})
        return httpx.Response(200, content=orjson.dumps(pages(len(asked), cursor)))

    http = httpx.Client(transport=httpx.MockTransport(answer))
    return Client(api_key="sk-x", base_url="http://fake", http_client=http, max_retries=0), asked


def repeats_its_second_cursor(n: int, cursor: str | None) -> dict[str, Any]:
    return {"studies": [study(n)], "cursor": "c2" if n >= 2 else "c1", "hasMore": True}


def empty_pages_saying_more(n: int, cursor: str | None) -> dict[str, Any]:
    return {"studies": [study(n)] if n == 1 else [], "cursor": f"c{n}", "hasMore": True}


@pytest.mark.parametrize(
    ("pages", "said"),
    [(repeats_its_second_cursor, "repeated a cursor"), (empty_pages_saying_more, "3 empty pages")],
)
def test_every_paged_read_refuses_a_chain_that_does_not_advance(pages: Any, said: str) -> None:
    reads: list[Callable[[Client], object]] = [
        lambda c: list(c.iter_studies()),
        lambda c: fetch_studies(c, partitioned=False, progress=False),
        lambda c: fetch_studies(c, progress=False),  # 12 partitions, each its own chain
        lambda c: fetch_new_studies(c, NOW - dt.timedelta(days=365)),  # the active refresh's read
    ]
    for read in reads:
        client, asked = serving(pages)
        with client, pytest.raises(ApiError, match=said):
            read(client)
        assert len(asked) < 60  # refused as soon as the chain stalled, not after 200 pages


def test_two_empty_pages_then_studies_is_a_slow_server_not_a_loop() -> None:
    def pages(n: int, cursor: str | None) -> dict[str, Any]:
        last = n == 5
        return {"studies": [] if n in (2, 3) else [study(n)], "cursor": None if last else f"c{n}",
                "hasMore": not last}

    client, asked = serving(pages)
    with client:
        assert [s["studyId"] for s in client.iter_studies()] == [study(n)["studyId"] for n in (1, 4, 5)]
    assert asked == [None, "c1", "c2", "c3", "c4"]
