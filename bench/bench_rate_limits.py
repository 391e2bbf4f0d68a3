"""Rate-limit benchmarks: how close to a server's rate limit the client works.

Run with ``.venv/bin/python -m bench rate_limits``. The sandbox runs in a subprocess with its
``rate_limit`` knob (requests per second per key; 429 with ``Retry-After`` beyond it).

1. ``fetch_studies`` with default client settings under a 10 req/s and a 2 req/s limit: wall
   time against the bound (pages / rate: the pages the fetch needed, at the server's rate),
   target within 1.3x of the bound; and the 429s met per page.
2. A burst of ``update_study`` calls on the runner (16 workers, as bulk apply will send
   them) under a 10 req/s limit: the same ratio.

The sandbox's bucket starts full (one second of requests, served at once), so a short run
may beat the bound a little; the ratio against the floor that counts it, ``(requests -
rate) / rate``, is printed too. Figures are printed, never asserted.
"""

from __future__ import annotations

import time
from collections import Counter

from viewerkit import Client
from viewerkit.fetch import fetch_studies
from viewerkit.runner import run_all
from viewerkit.sandbox.server import Sandbox, running

SEED = 7
#: (server limit in requests per second, studies to fetch): ~6-8 s of pages each
FETCHES = [(10.0, 5_000), (2.0, 1_000)]
UPDATE_RATE, UPDATES = 10.0, 150


def _answers(server: Sandbox, since: int = 0) -> Counter[int | str | None]:
    return Counter(r["status"] for r in server.requests(since=since))


def _report(what: str, rate: float, wall: float, answers: Counter[int | str | None]) -> None:
    pages = answers[200]
    bound = pages / rate
    others = {k: v for k, v in answers.items() if k not in (200, 429)}
    print(f"    {what}: {pages} requests served, {answers[429]} answered 429 "
          f"({answers[429] / max(1, pages):.2f} per served request)"
          + (f", other answers {others}" if others else ""))
    print(f"    wall {wall:.2f} s, bound (requests / rate) {bound:.2f} s, "
          f"achieved rate {pages / wall:.2f} req/s of {rate:g}")
    # the sandbox's bucket starts with max(1, rate) requests in it, served at once
    floor = (pages - max(1.0, rate)) / rate
    print(f"    achieved / bound: {wall / bound:.2f}  (target <= 1.3); against the floor that "
          f"counts the full initial bucket ({floor:.2f} s): {wall / floor:.2f}", flush=True)


def bench_fetch() -> None:
    for number, (rate, studies) in enumerate(FETCHES, start=1):
        print(f"[{number}] fetch_studies, {studies:,} studies, server limit {rate:g} req/s, "
              "default client", flush=True)
        with running(studies=studies, seed=SEED, rate_limit=rate) as server:
            with Client(api_key=server.api_key, base_url=server.base_url) as client:
                started = time.perf_counter()
                df = fetch_studies(client, progress=False)
                wall = time.perf_counter() - started
            assert len(df) == studies
            _report(f"{len(df):,} studies", rate, wall, _answers(server))


def bench_updates() -> None:
    print(f"[{len(FETCHES) + 1}] {UPDATES} update_study calls on 16 workers, server limit "
          f"{UPDATE_RATE:g} req/s, default client", flush=True)
    with running(studies=UPDATES, seed=SEED) as server:
        with Client(api_key=server.api_key, base_url=server.base_url) as client:
            ids = [s["studyId"] for s in client.iter_studies()]
            server.set_faults(rate_limit=UPDATE_RATE)
            since = len(server.requests())
            started = time.perf_counter()
            outcomes = run_all(
                lambda study_id: client.update_study(study_id, study_description="Reread"),
                ids, workers=16, progress=False,
            )
            wall = time.perf_counter() - started
        assert all(o.ok for o in outcomes)
        _report(f"{len(outcomes)} updates", UPDATE_RATE, wall, _answers(server, since))


def main() -> None:
    print("note: figures taken on a 2-core machine shared with other work; expect noise")
    bench_fetch()
    bench_updates()


if __name__ == "__main__":
    main()
