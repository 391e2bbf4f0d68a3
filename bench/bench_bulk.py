"""Bulk apply benchmarks: 5,000 study updates with 50 ms of latency added to every request.

Run with ``.venv/bin/python -m bench bulk``. The sandbox runs in a subprocess with its
``latency_ms`` knob (every request waits that long first; concurrent requests overlap).

1. ``plan.apply``'s two phases timed apart: the preview of 5,000 rows (the before-images
   read), then the writes at concurrency 16, each journaled in SQLite before it is sent and
   confirmed after; and the re-check read that ``preview.apply`` adds when the preview was
   read earlier, timed alone. The writes against
   - a sequential loop of the official ``avara`` SDK's ``viewer.studies.update`` over a
     500-update sample, scaled to 5,000 (target: apply >= 10x faster);
   - the bound: 5,000 x 50 ms / 16 (target: apply within 1.3x of it).
2. The same under 10 % failures (half of them after the write was committed, its answer
   lost): apply's time, and from the sandbox audit the changes lost (planned, not made)
   and doubled (made twice): target 0 and 0.

Figures are printed, never asserted.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from viewerkit import Client
from viewerkit.bulk import Plan
from viewerkit.sandbox.server import Sandbox, running

SEED = 7
UPDATES = 5_000
SAMPLE = 500
LATENCY_MS = 50.0
CONCURRENCY = 16
FAIL_RATE = 0.1


def _studies(server: Sandbox) -> list[dict[str, Any]]:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        return list(client.iter_studies())


def _plan(studies: list[dict[str, Any]], tag: str) -> Plan:
    """One update per study: a new description and the next severity."""
    step = {"normal": "high", "high": "stat", "stat": "normal"}
    return Plan(pd.DataFrame({
        "study_id": [s["studyId"] for s in studies],
        "severity": [step[s["severity"]] for s in studies],
        "study_description": [f"{tag} {i}" for i in range(len(studies))],
    }))


def _changes(server: Sandbox, since: int) -> Counter[str]:
    """Audit entries that changed something, per study, after the first ``since``
    (entries without ``outcome`` are changes: the audit of changes only)."""
    made: Counter[str] = Counter()
    for entry in server.audit()[since:]:
        if entry.get("outcome", "changed") == "changed" and entry["operation"] == "update":
            made[entry["study_id"]] += 1
    return made


def _apply(server: Sandbox, plan: Plan, journal: Path, *, time_recheck: bool = True) -> tuple[float, float, float, Any]:
    """``plan.apply``'s two phases timed apart: the preview's reads (the before-images),
    then the journaled writes; and (``time_recheck``) one re-check read of the live state
    as ``preview.apply`` makes before writing when the preview was read earlier, timed
    alone. Returns the three times and the result."""
    from viewerkit.bulk.apply import _known_table, _read_studies, preview_plan

    with Client(api_key=server.api_key, base_url=server.base_url, max_concurrency=CONCURRENCY) as client:
        started = time.perf_counter()
        preview = preview_plan(plan, client, concurrency=CONCURRENCY, progress=False, recheck=False)
        previewed = time.perf_counter() - started
        started = time.perf_counter()
        result = preview.apply(journal=journal, concurrency=CONCURRENCY, progress=False)
        applied = time.perf_counter() - started
        rechecked = float("nan")
        if time_recheck:
            wires = list(_read_studies(client, plan.frame["study_id"].tolist(), concurrency=CONCURRENCY,
                                       progress=False).values())
            started = time.perf_counter()
            _read_studies(client, [w["studyId"] for w in wires], known=_known_table(wires),
                          concurrency=CONCURRENCY, progress=False)
            rechecked = time.perf_counter() - started
    return previewed, applied, rechecked, result


def _sdk_loop(server: Sandbox, studies: list[dict[str, Any]]) -> float:
    import avara

    sdk = avara.Avara(base_url=server.base_url, api_key=server.api_key)
    started = time.perf_counter()
    for i, study in enumerate(studies):
        sdk.viewer.studies.update(study["studyId"], study_description=f"sdk {i}")
    return time.perf_counter() - started


def main() -> None:
    print("note: figures taken on a 2-core machine shared with other work; expect noise")
    bound = UPDATES * LATENCY_MS / 1000 / CONCURRENCY
    with tempfile.TemporaryDirectory() as folder, running(studies=UPDATES + 200, seed=SEED) as server:
        studies = _studies(server)[:UPDATES]
        server.set_faults(latency_ms=LATENCY_MS)
        print(f"[1] {UPDATES:,} updates, {LATENCY_MS:g} ms latency per request, concurrency {CONCURRENCY}",
              flush=True)
        since = len(server.audit())
        previewed, applied, rechecked, result = _apply(server, _plan(studies, "bench"), Path(folder) / "j1.sqlite")
        since_audit = since
        print(f"    preview of {UPDATES:,} rows (the before-images): {previewed:.2f} s")
        print(f"    apply ({UPDATES:,} journaled writes): {applied:.2f} s  (counts {result.counts()})")
        print(f"    bound {UPDATES:,} x {LATENCY_MS:g} ms / {CONCURRENCY} = {bound:.2f} s; "
              f"apply / bound: {applied / bound:.2f}  (target <= 1.3)")
        print(f"    preview.apply of a preview read earlier first re-reads the live state: "
              f"{rechecked:.2f} s alone (apply + re-check / bound: {(applied + rechecked) / bound:.2f})")
        made = _changes(server, since_audit)
        print(f"    audit: {len(made):,} studies changed, {sum(v > 1 for v in made.values())} changed twice",
              flush=True)
        sdk = _sdk_loop(server, studies[:SAMPLE])
        scaled = sdk * UPDATES / SAMPLE
        print(f"    avara SDK sequential loop: {SAMPLE} updates {sdk:.2f} s, scaled to {UPDATES:,}: "
              f"{scaled:.1f} s; apply is {scaled / applied:.1f}x faster  (target >= 10x)", flush=True)

        print(f"[2] the same under {FAIL_RATE:.0%} failures (half after commit, answer lost)", flush=True)
        server.set_faults(fail_rate=FAIL_RATE)
        since = len(server.audit())
        since_requests = server.requests()[-1]["seq"]
        plan = _plan(studies, "faults")
        previewed, applied, _, result = _apply(server, plan, Path(folder) / "j2.sqlite", time_recheck=False)
        faults = Counter(r["fault"]["when"] for r in server.requests(since=since_requests) if r["fault"])
        server.set_faults(fail_rate=0.0, latency_ms=0)
        made = _changes(server, since)
        final = {s["studyId"]: s for s in _studies(server)}
        wanted = plan.frame.set_index("study_id")
        lost = sum(
            final[sid]["severity"] != row["severity"] or final[sid]["studyDescription"] != row["study_description"]
            for sid, row in wanted.iterrows()
        )
        doubled = sum(v > 1 for v in made.values())
        print(f"    preview {previewed:.2f} s; apply {applied:.2f} s, apply / bound {applied / bound:.2f}; "
              f"counts {result.counts()}")
        print(f"    faults struck (last 10,000 requests): before {faults['before']}, after commit {faults['after']}")
        print(f"    from the audit: lost {lost}, doubled {doubled}  (target 0 and 0)", flush=True)


if __name__ == "__main__":
    main()
