"""Fetch benchmarks: viewerkit against the official SDK, and partitioned against sequential.

Run with ``.venv/bin/python -m bench fetch``. The sandbox runs in a subprocess, so the client
CPU time (``time.process_time()`` of this process) is the client's alone.

1. 100,000 studies to a DataFrame: ``viewerkit.fetch_studies`` against the official ``avara``
   SDK's auto-pagination (``client.viewer.studies.list(limit=100)`` iterated, ``to_dict()``
   per study) followed by ``pd.json_normalize``: client CPU (target >= 5x lower), wall time
   (target >= 2x lower), and the DataFrame's memory (target >= 3x smaller).
2. 50,000 studies with 100 ms added per request: partitioned fetch against sequential
   paging, with the bound (largest partition's page count x latency) the partitioning can
   at best reach (target: achieved within 1.3x of the bound).

Figures are printed, never asserted.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd

from bench.timing import measure
from viewerkit import Client
from viewerkit.fetch import fetch_studies, fetch_studies_arrow, study_partitions
from viewerkit.frame import from_pandas, to_pandas
from viewerkit.sandbox.server import running

BIG = 100_000
LATENCY_STUDIES = 50_000
LATENCY_MS = 100
SEED = 7


def _sdk_dataframe(base_url: str, api_key: str) -> pd.DataFrame:
    import avara

    sdk = avara.Avara(base_url=base_url, api_key=api_key)
    try:
        rows: list[dict[str, Any]] = [s.to_dict() for s in sdk.viewer.studies.list(limit=100)]
    finally:
        sdk.close()
    return pd.json_normalize(rows)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "inf"


def bench_against_sdk() -> None:
    print(f"[1] {BIG:,} studies to a DataFrame (sandbox in a subprocess, seed {SEED})", flush=True)
    started = time.perf_counter()
    with running(studies=BIG, seed=SEED) as server:
        print(f"    sandbox seeded and up in {time.perf_counter() - started:.1f} s", flush=True)
        with Client(api_key=server.api_key, base_url=server.base_url) as client:
            # warm up imports and connections on both sides (a small filter)
            fetch_studies(client, progress=False, severity="stat", is_cancelled=True)
            df, vk_cpu, vk_wall = measure(lambda: fetch_studies(client, progress=False))
        sdk_df, sdk_cpu, sdk_wall = measure(
            lambda: _sdk_dataframe(server.base_url, server.api_key)
        )
    vk_mem = int(df.memory_usage(deep=True).sum())
    sdk_mem = int(sdk_df.memory_usage(deep=True).sum())
    print(f"    viewerkit fetch_studies      : {len(df):,} rows x {df.shape[1]} cols, "
          f"client CPU {vk_cpu:.2f} s, wall {vk_wall:.2f} s")
    print(f"    avara SDK + pd.json_normalize: {len(sdk_df):,} rows x {sdk_df.shape[1]} cols, "
          f"client CPU {sdk_cpu:.2f} s, wall {sdk_wall:.2f} s")
    print(f"    client CPU ratio (SDK / viewerkit): {_ratio(sdk_cpu, vk_cpu)}  (target >= 5x)")
    print(f"    wall time ratio  (SDK / viewerkit): {_ratio(sdk_wall, vk_wall)}  (target >= 2x)")
    print(f"    DataFrame memory: viewerkit {vk_mem / 2**20:.1f} MiB, "
          f"json_normalize {sdk_mem / 2**20:.1f} MiB, ratio {_ratio(sdk_mem, vk_mem)}  "
          "(target >= 3x)", flush=True)
    # Under pandas 3 both frames hold Arrow-backed `str` columns, so the default table is
    # only a little smaller; compact=True (repeated strings as categoricals) is the
    # memory-lean option, measured on the same fetched table.
    compact = to_pandas(from_pandas(df), compact=True)
    compact_mem = int(compact.memory_usage(deep=True).sum())
    print(f"    DataFrame memory, compact=True: {compact_mem / 2**20:.1f} MiB, "
          f"ratio {_ratio(sdk_mem, compact_mem)}  (target >= 3x)", flush=True)


def bench_partitioned() -> None:
    print(f"[2] {LATENCY_STUDIES:,} studies, {LATENCY_MS} ms added per request: "
          "partitioned vs sequential paging", flush=True)
    with (
        running(studies=LATENCY_STUDIES, seed=SEED, latency_ms=LATENCY_MS) as server,
        Client(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        sequential, _, seq_wall = measure(
            lambda: fetch_studies_arrow(client, progress=False, partitioned=False)
        )
        partitioned, _, par_wall = measure(
            lambda: fetch_studies_arrow(client, progress=False, concurrency=8)
        )
    # pages per partition, from the fetched table (the same counts the server paged)
    counts = (
        sequential.group_by(["severity", "study_viewer_status", "is_cancelled"])
        .aggregate([("study_id", "count")])
        .to_pylist()
    )
    pages = sorted(
        (max(1, math.ceil(r["study_id_count"] / 100)) for r in counts), reverse=True
    )
    empty = len(study_partitions({})) - len(counts)
    pages += [1] * empty  # an empty partition still costs one page
    seq_pages = math.ceil(sequential.num_rows / 100)
    bound = pages[0] * LATENCY_MS / 1000
    print(f"    equal results: {partitioned.equals(sequential)} ({partitioned.num_rows:,} studies)")
    print(f"    pages: sequential {seq_pages}, partitioned {sum(pages)} over {len(pages)} "
          f"partitions, largest {pages[0]} ({pages[0] * 100 / max(1, seq_pages):.0f} % of all)")
    print(f"    sequential paging      : {seq_wall:.2f} s "
          f"(floor {seq_pages * LATENCY_MS / 1000:.1f} s = pages x latency)")
    print(f"    partitioned fetch      : {par_wall:.2f} s")
    print(f"    bound (largest partition's pages x latency): {bound:.2f} s")
    print(f"    speed-up over sequential: {_ratio(seq_wall, par_wall)}")
    print(f"    achieved / bound: {par_wall / bound:.2f}  (target <= 1.3)", flush=True)


def main() -> None:
    print("note: figures taken on a 2-core machine shared with other work; expect noise")
    bench_against_sdk()
    bench_partitioned()


if __name__ == "__main__":
    main()
