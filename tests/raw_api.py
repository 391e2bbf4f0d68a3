"""Reading the sandbox with plain httpx, independently of viewerkit's client and fetcher,
so tests compare viewerkit against what the API itself serves."""

from __future__ import annotations

from typing import Any

import httpx

from viewerkit.sandbox.server import Sandbox


def list_all_raw(sandbox: Sandbox, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every study the list endpoint returns for ``params``, in list order, as raw JSON."""
    studies: list[dict[str, Any]] = []
    query: dict[str, str] = dict(params or {}, limit="100")
    with httpx.Client(
        base_url=sandbox.base_url,
        headers={"Authorization": f"Bearer {sandbox.api_key}"},
        timeout=30.0,
    ) as http:
        while True:
            response = http.get("/v1/viewer/studies", params=query)
            response.raise_for_status()
            page = response.json()
            studies.extend(page["studies"])
            if not page["hasMore"]:
                return studies
            query["cursor"] = page["cursor"]
