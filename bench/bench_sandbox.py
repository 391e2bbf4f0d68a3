"""The sandbox server on a 100,000-study database: seeding, page latency, keyset depth, SDK read.

Targets from issue 2: seeding 100,000 studies (generate + insert) <= 20 s; a page of 100 in
<= 10 ms median; the last page costs <= 1.5x the first; reading all 100,000 through the
official SDK's auto-pagination (figure only). Latencies are wall times seen by an httpx client
in this process over keep-alive (request sent to body received, not parsed), with the server
in a subprocess. Figures are printed, never asserted.
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx

STUDIES = int(os.environ.get("VIEWERKIT_BENCH_STUDIES", "100000"))
SEED = 0
PAGE = "/v1/viewer/studies"


def _line(name: str, value: float, unit: str, target: float | None = None, better: str = "lower") -> None:
    text = f"{name:<52} {value:10.2f} {unit}"
    if target is not None:
        ratio = value / target
        ok = ratio <= 1 if better == "lower" else ratio >= 1
        text += f"   target {'<=' if better == 'lower' else '>='} {target:g} {unit}, ratio {ratio:.2f} ({'met' if ok else 'MISSED'})"
    print(text, flush=True)


def _median_ms(call: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _interleaved_medians_ms(calls: list[Callable[[], Any]], repeats: int) -> list[float]:
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for call, spent in zip(calls, times, strict=True):
            started = time.perf_counter()
            call()
            spent.append((time.perf_counter() - started) * 1000)
    return [statistics.median(spent) for spent in times]


def _store_page_costs(db_path: str) -> None:
    # the same pages in-process, without HTTP: what the SQLite query and rendering cost
    from viewerkit.sandbox.store import Store
    from viewerkit.schema import StudyFilters

    store = Store(db_path)
    try:
        everything = StudyFilters()
        last_after = None
        after = None
        while True:
            _, after = store.list_studies(everything, 100, after)
            if after is None:
                break
            last_after = after
        first_ms, last_ms = _interleaved_medians_ms(
            [lambda: store.list_studies(everything, 100), lambda: store.list_studies(everything, 100, last_after)],
            50,
        )
    finally:
        store.close()
    _line("store only: first page, median of 50", first_ms, "ms")
    _line("store only: last page, median of 50", last_ms, "ms")
    _line("store only: last page / first page", last_ms / first_ms, "x", target=1.5)


def _seed(db_path: str, api_key: str) -> tuple[float, float]:
    from viewerkit.sandbox.store import Store
    from viewerkit.sandbox.synth import generate_world

    started = time.perf_counter()
    world = generate_world(STUDIES, seed=SEED, now=datetime.now(timezone.utc).replace(second=0, microsecond=0))
    generated = time.perf_counter() - started
    store = Store(db_path)
    try:
        store.insert_world(world)
        store.add_api_keys([api_key])
    finally:
        store.close()
    return generated, time.perf_counter() - started


def _serve(http: httpx.Client, params: dict[str, str]) -> None:
    # a page served: status and body received, not parsed by the client
    response = http.get(PAGE, params=params)
    if response.status_code != 200 or not response.content:
        raise RuntimeError(f"page answered {response.status_code}")


def _get(http: httpx.Client, params: dict[str, str]) -> dict[str, Any]:
    response = http.get(PAGE, params=params)
    response.raise_for_status()
    page: dict[str, Any] = response.json()
    return page


def main() -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{STUDIES:,} studies; 2 cores shared with other work (load average {load}): figures are indicative")
    workdir = tempfile.mkdtemp(prefix="viewerkit-bench-")
    try:
        _run(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(workdir: str) -> None:
    import avara

    from viewerkit.sandbox.server import new_api_key, running

    db_path = os.path.join(workdir, "sandbox.db")
    key = new_api_key()

    generated_s, seeded_s = _seed(db_path, key)
    _line("generate world", generated_s, "s")
    _line("seed (generate + insert)", seeded_s, "s", target=20)
    print(f"{'seeding rate':<52} {STUDIES / seeded_s:10.0f} studies/s")

    with running(db_path=db_path, api_key=key) as sandbox, httpx.Client(
        base_url=sandbox.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:
        first_params = {"limit": "100"}
        # keyset depth: walk every page once (this also warms the server's threads and
        # SQLite's page cache), then time the first page and the last cursor alike
        started = time.perf_counter()
        cursors: list[str] = []
        seen = 0
        params = dict(first_params)
        while True:
            page = _get(http, params)
            seen += len(page["studies"])
            if not page["hasMore"]:
                break
            cursors.append(page["cursor"])
            params = {"limit": "100", "cursor": page["cursor"]}
        walk_s = time.perf_counter() - started
        print(
            f"{'walk all pages over raw HTTP':<52} {walk_s:10.2f} s   "
            f"({seen:,} studies, {len(cursors) + 1} pages, {seen / walk_s:,.0f} studies/s)"
        )
        second = {"limit": "100", "cursor": cursors[0]}
        last = {"limit": "100", "cursor": cursors[-1]}
        # interleaved, so that the shared machine's load falls on all three alike
        first_ms, second_ms, last_ms = _interleaved_medians_ms(
            [functools.partial(_serve, http, q) for q in (first_params, second, last)], 50
        )
        _line("page of 100 (first page), median of 50", first_ms, "ms", target=10)
        _line("page 2 (first cursor), median of 50", second_ms, "ms", target=10)
        _line(f"last page (page {len(cursors) + 1}), median of 50", last_ms, "ms", target=10)
        _line("last page / first page", last_ms / first_ms, "x", target=1.5)
        _line("last page / page 2", last_ms / second_ms, "x", target=1.5)

        # each filter's first page
        sample = _get(http, {"limit": "100"})["studies"]
        user_id = next(s["assignedTo"]["userId"] for s in sample if s.get("assignedTo"))
        customer_id = next(s["expressCustomer"]["expressCustomerId"] for s in sample if s.get("expressCustomer"))
        filters: list[tuple[str, dict[str, str]]] = [
            ("severity=stat", {"severity": "stat"}),
            ("studyViewerStatus=incomplete", {"studyViewerStatus": "incomplete"}),
            ("isCancelled=true", {"isCancelled": "true"}),
            ("assignedTo=<user>", {"assignedTo": user_id}),
            ("assignedTo=null", {"assignedTo": "null"}),
            ("expressCustomerId=<customer>", {"expressCustomerId": customer_id}),
            ("expressCustomerId=null", {"expressCustomerId": "null"}),
            ("studyDescription=chest", {"studyDescription": "chest"}),
            ("studyDescription=thyroid", {"studyDescription": "thyroid"}),
            ("severity=stat&incomplete&isCancelled=false",
             {"severity": "stat", "studyViewerStatus": "incomplete", "isCancelled": "false"}),
        ]
        for name, extra in filters:
            query = {"limit": "100", **extra}
            _line(f"filter {name}, median of 20", _median_ms(functools.partial(_serve, http, query), 20), "ms", target=10)

        _store_page_costs(db_path)

        # the official SDK's auto-pagination over everything
        client = avara.Avara(base_url=sandbox.base_url, api_key=key)
        try:
            started = time.perf_counter()
            ids = {study.study_id for study in client.viewer.studies.list(limit=100)}
            sdk_s = time.perf_counter() - started
        finally:
            client.close()
        print(
            f"{'read all via avara SDK auto-pagination':<52} {sdk_s:10.2f} s   "
            f"({len(ids):,} unique of {STUDIES:,}, {len(ids) / sdk_s:,.0f} studies/s)"
        )
