"""Triage board benchmark (issue 10): the worklist model over 100,000 studies in the kernel.

Run with ``.venv/bin/python -m bench triage``. A study table of 100,000 studies (the reports
benchmark's synthetic one, with open work and descriptions) in a ``TriageQueue``; then 50
changes, each a filter change, a sort and one rendered page (``page_table``), as a click on
the board does; median and max against the target (200 ms median). The same again with
10,000 studies selected. Then the same clicks on the board itself (``TriageBoard`` over the
same table, headless: each click sets one filter or sort widget, and the board re-renders its
counts and page of row widgets), median and max, without and with the selection. Figures are
printed, never asserted.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd

from bench.bench_reports import NOW, synthetic_studies
from viewerkit import Client, TriageBoard
from viewerkit.triage import TriageQueue

N = 100_000
CHANGES = 50
TARGET_MS = 200.0

#: the filter changes a session of clicks makes, in turn
_CLICKS: list[dict[str, object]] = [
    {"severity": ["stat"]},
    {"severity": ["stat", "high"], "sla": ["overdue"]},
    {"severity": [], "sla": ["due soon"]},
    {"sla": [], "search": "ct"},
    {"search": "", "assignee": [None]},
    {"assignee": [], "min_age_h": 12},
    {"min_age_h": None, "status": [], "cancelled": None},
    {"status": ["incomplete"], "cancelled": False},
]
_SORTS = ["deadline", "severity", "oldest", "newest", "assignee", "customer"]


def _session(queue: TriageQueue, now: pd.Timestamp) -> list[float]:
    took = []
    for i in range(CHANGES):
        start = time.perf_counter()
        queue.set_filters(now=now, **_CLICKS[i % len(_CLICKS)])  # type: ignore[arg-type]
        queue.set_sort(_SORTS[i % len(_SORTS)])
        queue.page_table(now=now)
        queue.counts(now=now)
        took.append((time.perf_counter() - start) * 1000)
    return took


def _clicks(board: TriageBoard) -> list[float]:
    """One click each: a filter or sort widget set as an analyst would, the board re-rendering."""
    widgets = [
        (board.severity, ("stat",)), (board.sla_state, ("overdue",)), (board.severity, ()),
        (board.sla_state, ()), (board.search, "ct"), (board.search, ""), (board.assignee, ("",)),
        (board.assignee, ()), (board.min_age, 12.0), (board.min_age, 0.0),
    ]
    took = []
    for i in range(CHANGES):
        widget, value = widgets[i % len(widgets)]
        if i % 5 == 4:
            widget, value = board.sort, _SORTS[(i // 5) % len(_SORTS)]
        start = time.perf_counter()
        widget.value = value
        took.append((time.perf_counter() - start) * 1000)
    assert "matching" in board.counts.value and "Traceback" not in board.message.value
    return took


def _print(what: str, took: list[float]) -> None:
    median = statistics.median(took)
    print(f"    {what}: median {median:.0f} ms, max {max(took):.0f} ms over {len(took)} changes "
          f"(target median <= {TARGET_MS:.0f} ms: {median / TARGET_MS:.2f} of it)")


def main() -> None:
    studies, _ = synthetic_studies(N)
    rng = np.random.default_rng(3)
    words = np.array(["CT HEAD", "MR KNEE", "XR CHEST", "US ABDOMEN", "CT CHEST ANGIO"], dtype=object)
    studies["study_description"] = words[rng.integers(0, len(words), len(studies))]
    # a live worklist: a fifth of the studies still open, created in the last two days
    open_now = rng.random(len(studies)) < 0.2
    studies.loc[open_now, "study_viewer_status"] = "incomplete"
    recent = NOW - pd.to_timedelta(rng.integers(0, 48 * 3600, int(open_now.sum())), unit="s")
    studies.loc[open_now, "created_at"] = recent.to_numpy()
    start = time.perf_counter()
    queue = TriageQueue(studies, now=NOW)
    print(f"[1] {len(studies):,} studies, {queue.counts(now=NOW)['matching']:,} open; "
          f"loading the queue took {(time.perf_counter() - start) * 1000:.0f} ms")
    _print("filter change + sort + page + counts", _session(queue, NOW))
    queue.clear_filters(now=NOW)
    queue.select(queue.matching_ids(now=NOW)[:10_000])
    print(f"[2] the same with {queue.counts(now=NOW)['selected']:,} open studies selected (each filter "
          "change keeps the selected studies that still match)")
    _print("filter change + sort + page + counts", _session(queue, NOW))
    # the board: no request is made (the studies are given, the assignees are the ones seen)
    with Client(api_key="sk-bench-offline", base_url="http://127.0.0.1:9") as client:
        start = time.perf_counter()
        board = TriageBoard(client, studies=studies, page_size=50, tick_every=None)
        print(f"[3] the board over the same {len(studies):,} studies (headless widgets, 50 rows a page); "
              f"opening it took {(time.perf_counter() - start) * 1000:.0f} ms")
        try:
            _print("one click (filter or sort widget) + re-render", _clicks(board))
            board.queue.select(board.queue.matching_ids()[:10_000])
            print(f"[4] the same with {board.queue.counts()['selected']:,} studies selected")
            _print("one click (filter or sort widget) + re-render", _clicks(board))
        finally:
            board.close()


if __name__ == "__main__":
    main()
