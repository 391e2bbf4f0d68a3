"""Reading the sandbox with plain httpx, independently of viewerkit's client and fetcher,
so tests compare viewerkit against what the API itself serves (and count its audit)."""

from __future__ import annotations

from collections import Counter
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


def changed_entries(sandbox: Sandbox, since: int = 0) -> Counter[tuple[str, str]]:
    """How many audit entries that changed something each (study, operation) has, after
    the first ``since`` entries (creates left out). Entries without ``outcome`` (the older
    audit of changes only) are changes."""
    counted: Counter[tuple[str, str]] = Counter()
    for entry in sandbox.audit()[since:]:
        if entry.get("outcome", "changed") == "changed" and entry["operation"] != "create":
            counted[(entry["study_id"], entry["operation"])] += 1
    return counted
