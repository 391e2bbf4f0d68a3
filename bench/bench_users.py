"""The roster: ``fetch_users`` of 2,000 users and ``roster`` over their studies.

Run with ``.venv/bin/python -m bench users``. The sandbox (20,000 studies, a roster of 2,000
users) runs in a subprocess, so the client CPU time is the client's alone.

1. ``fetch_users`` of 2,000 users: wall time, client CPU, and requests sent (target: the
   page count, 20 at 100 users a page; 1,998 users are listed, two are revoked), against
   the official ``avara`` SDK's ``viewer.users.list(limit=100)`` iterated, ``to_dict()`` per
   user, then ``pd.json_normalize``.
2. ``roster(users, studies)`` over the 20,000 fetched studies, and over 1,000,000 synthetic
   studies (``bench_reports.synthetic_studies``) with a user table of their assignees.

Figures are printed, never asserted.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.timing import best, measure
from viewerkit import Client, fetch_studies, fetch_users, roster
from viewerkit.sandbox.server import running

USERS = 2_000
STUDIES = 20_000
BIG = 1_000_000
SEED = 7


def _sdk_users(base_url: str, api_key: str) -> pd.DataFrame:
    import avara

    sdk = avara.Avara(base_url=base_url, api_key=api_key)
    try:
        rows: list[dict[str, Any]] = [u.to_dict() for u in sdk.viewer.users.list(limit=100)]
    finally:
        sdk.close()
    return pd.json_normalize(rows)


def _synthetic_users(studies: pd.DataFrame) -> pd.DataFrame:
    ids = pd.unique(studies["assigned_to_user_id"].dropna())
    return pd.DataFrame({
        "user_id": ids,
        "clinic_role": "Radiologist",
        "can_manage_studies": pd.array([True] * len(ids), dtype="boolean"),
    })


def main() -> None:
    print(f"seeding a sandbox of {STUDIES:,} studies and {USERS:,} users ...", flush=True)
    with running(studies=STUDIES, seed=SEED, users=USERS) as sandbox:
        with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
            seen = sandbox.requests()
            start = seen[-1]["seq"] if seen else 0
            users, cpu, wall = measure(lambda: fetch_users(client, progress=False))
            sent = [r for r in sandbox.requests(start) if r["path"] == "/v1/viewer/users"]
            print("1. fetch_users:")
            print(f"  viewerkit  {len(users):>6,} users  {wall * 1000:7.0f} ms wall  {cpu * 1000:6.0f} ms CPU"
                  f"  {len(sent)} requests (target 20: the page count)")
            sdk, sdk_cpu, sdk_wall = measure(lambda: _sdk_users(sandbox.base_url, sandbox.api_key))
            print(f"  avara SDK  {len(sdk):>6,} users  {sdk_wall * 1000:7.0f} ms wall  {sdk_cpu * 1000:6.0f} ms CPU"
                  f"  (viewerkit: {sdk_wall / wall:.1f}x faster wall, {sdk_cpu / max(cpu, 1e-9):.1f}x less CPU)")
            studies, _, studies_wall = measure(lambda: fetch_studies(client, progress=False))
            print(f"  (fetch_studies of {len(studies):,} studies for the roster: {studies_wall:.1f} s)")
        print("2. roster:")
        table, took = best(lambda: roster(users, studies))
        listed = int(table["listed"].sum())
        print(f"  {len(studies):>9,} studies, {len(users):,} users  {took * 1000:7.0f} ms"
              f"  ({len(table):,} rows, {len(table) - listed} unlisted,"
              f" {int(table['reassignment_target'].sum()):,} reassignment targets)")
    from bench.bench_reports import NOW, synthetic_studies

    big, _ = synthetic_studies(BIG)
    big_users = _synthetic_users(big)
    table, took = best(lambda: roster(big_users, big, now=NOW), repeat=2)
    print(f"  {len(big):>9,} studies, {len(big_users):,} users  {took * 1000:7.0f} ms  ({len(table):,} rows)")
