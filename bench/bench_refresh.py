"""Refresh benchmark: an active refresh against a full refresh of the study cache.

Run with ``.venv/bin/python -m bench refresh``. The sandbox runs in a subprocess.

Setup: a sandbox of 100,000 studies, 90 % complete (the synthetic world is then adjusted in
its database: the most recently created complete studies are re-opened until exactly 10 %
are open, as on a busy worklist). A first full refresh fills the cache. Then 1 % of the
studies (1,000) change through the API, all on the open worklist, as in a working day: 600
are completed, 400 get a new severity and metadata. Then, in the same run, an active refresh
and a full refresh are timed (target: active >= 5x faster). Figures are printed, never
asserted; the machine is shared, so absolute times vary.
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from viewerkit import Client, StudyCache
from viewerkit.sandbox.server import new_api_key, running, seed_store

STUDIES = 100_000
COMPLETE_SHARE = 0.90
CHANGED_SHARE = 0.01
SEED = 7


def _make_database(path: str, key: str) -> tuple[int, int]:
    """Seed the world, then re-open recent complete studies until 10 % are open.
    Returns (complete, open and not cancelled)."""
    seed_store(path, STUDIES, SEED, [key])
    with sqlite3.connect(path) as db:
        complete = db.execute(
            "SELECT COUNT(*) FROM studies WHERE study_viewer_status = 'complete'"
        ).fetchone()[0]
        surplus = complete - round(STUDIES * COMPLETE_SHARE)
        if surplus > 0:
            db.execute(
                "UPDATE studies SET study_viewer_status = 'incomplete' WHERE study_id IN ("
                " SELECT study_id FROM studies WHERE study_viewer_status = 'complete'"
                " AND is_cancelled = 0 ORDER BY created_at DESC LIMIT ?)",
                (surplus,),
            )
        complete = db.execute(
            "SELECT COUNT(*) FROM studies WHERE study_viewer_status = 'complete'"
        ).fetchone()[0]
        open_ = db.execute(
            "SELECT COUNT(*) FROM studies WHERE study_viewer_status = 'incomplete'"
            " AND is_cancelled = 0"
        ).fetchone()[0]
    return int(complete), int(open_)


def main() -> None:
    workdir = tempfile.mkdtemp(prefix="viewerkit-bench-refresh-")
    db_path = os.path.join(workdir, "sandbox.db")
    key = new_api_key()
    started = time.perf_counter()
    complete, open_ = _make_database(db_path, key)
    print(
        f"sandbox: {STUDIES:,} studies, {complete / STUDIES:.1%} complete, {open_:,} open "
        f"(built in {time.perf_counter() - started:.1f} s)"
    )
    with running(db_path=db_path, api_key=key) as server, Client(
        api_key=server.api_key, base_url=server.base_url
    ) as client:
        cache = StudyCache(os.path.join(workdir, "cache"))
        first = cache.refresh(client, mode="full", progress=False)
        print(f"first full refresh: {first.total:,} studies in {first.duration_s:.2f} s")

        df = cache.load()
        open_ids = df[(df["study_viewer_status"] == "incomplete") & ~df["is_cancelled"]][
            "study_id"
        ].tolist()
        changes = int(STUDIES * CHANGED_SHARE)
        targets = random.Random(SEED).sample(open_ids, changes)  # anywhere on the worklist
        completing = set(targets[: int(changes * 0.6)])

        def change(study_id: str) -> None:
            if study_id in completing:
                client.update_study(study_id, study_viewer_status="complete")
            else:
                client.update_study(study_id, severity="stat", metadata={"escalated": "yes"})

        changed_at = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(change, targets))
        print(
            f"changed {len(targets):,} studies ({len(targets) / STUDIES:.1%}): "
            f"{len(completing):,} completed, {len(targets) - len(completing):,} escalated "
            f"({time.perf_counter() - changed_at:.1f} s)"
        )

        cpu = time.process_time()
        active = cache.refresh(client, mode="active", progress=False)
        active_cpu = time.process_time() - cpu
        print(
            f"active refresh: {active.duration_s:.2f} s wall, {active_cpu:.2f} s client CPU; "
            f"{active.new} new, {active.changed:,} changed, {active.gone} gone"
        )
        cpu = time.process_time()
        full = cache.refresh(client, mode="full", progress=False)
        full_cpu = time.process_time() - cpu
        print(
            f"full refresh:   {full.duration_s:.2f} s wall, {full_cpu:.2f} s client CPU; "
            f"{full.new} new, {full.changed:,} changed, {full.gone} gone "
            "(0 changed: the active refresh missed nothing)"
        )
        print(
            f"active vs full: {full.duration_s / active.duration_s:.1f}x faster wall, "
            f"{full_cpu / max(active_cpu, 1e-9):.1f}x less client CPU (target >= 5x)"
        )
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
