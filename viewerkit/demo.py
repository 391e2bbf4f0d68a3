"""`make demo`: the toolkit's main job, end to end, on a local sandbox server.

Starts a sandbox (20,000 synthetic studies, live changes on), pulls every study into the
Parquet cache, lets the world move for a few seconds and refreshes cheaply, then writes the
severity and turnaround report (HTML and one PNG per figure) and prints a few headline
numbers. Everything lands under ``data/demo/`` (git-ignored).

Each run's sandbox is a new server (new port and key), so a run replaces the previous run's
namespace in ``data/demo/cache`` once its own full refresh is in (a run that fails earlier
leaves the previous one's cache usable): the cache then holds one namespace, which the CLI
(``viewerkit cache info --cache data/demo/cache``, ``viewerkit report ...``) and the
notebooks read without choosing one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT_OUT = Path("data/demo")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m viewerkit.demo", description=__doc__)
    parser.add_argument("--studies", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--live-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)

    import pandas as pd

    from viewerkit import Client, StudyCache
    from viewerkit.cache import namespace_of
    from viewerkit.reports import SLA, render, report_tables, save_figures
    from viewerkit.sandbox import running

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"Starting a sandbox with {args.studies:,} synthetic studies (seed {args.seed})...")
    with running(studies=args.studies, seed=args.seed, live=20.0) as sandbox:
        print(f"Sandbox serving the Avara Viewer Studies API at {sandbox.base_url}")
        print(f"  (database {sandbox.db_path}; the API key stays out of this output)")
        with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
            cache = StudyCache(out / "cache")
            this_run = namespace_of(client.base_url, client.key_fingerprint)
            earlier = [n["namespace"] for n in cache.namespaces() if n["namespace"] != this_run]
            full = cache.refresh(client, mode="full")
            print(f"Full refresh: {full.total:,} studies ({full.new:,} new) in {full.duration_s:.1f} s")
            # replaced only now that this run's namespace is complete: a run that fails before
            # here leaves the previous run's cache as it was
            for namespace in earlier:
                print(f"Replacing the previous demo run's cache namespace {namespace}")
                cache.remove(namespace)
            print(f"Letting the sandbox's live mode change studies for {args.live_seconds:.0f} s...")
            time.sleep(args.live_seconds)
            active = cache.refresh(client, mode="active")
            print(
                f"Active refresh: {active.new:,} new, {active.changed:,} changed, "
                f"{active.gone:,} gone in {active.duration_s:.1f} s"
            )
            studies, history, info = cache.load(client), cache.history(client), cache.info(client)
            users = cache.load_users(client)

    now = pd.Timestamp.now(tz="UTC")  # one "now" for the report, the figures and the headlines
    report = render(studies, out / "report.html", history=history, now=now,
                    refreshed_at=info["last_refresh_at"], users=users)
    figures = save_figures(studies, out / "figures", history=history, now=now)
    tables = report_tables(studies, history=history, now=now)

    print()
    print(f"Studies in the cache: {len(studies):,} ({info['path']})")
    tat, open_now = tables["turnaround"], tables["backlog"]
    print("Turnaround by severity (created -> complete, hours):")
    print(tat.to_string(index=False))
    print("  (cancelled: studies cancelled instead of completed, left out of the turnaround figures)")
    print()
    by_severity = open_now.groupby("severity", observed=False)[["open", "past_target"]].sum()
    print("Open now by severity:")
    print(by_severity.iloc[::-1].to_string())
    print(f"Open studies past target: {int(open_now['past_target'].sum()):,} of {int(open_now['open'].sum()):,}")
    print()
    print(f"SLA targets: {SLA}")
    print(f"HTML report: {report.resolve()}")
    print(f"Figures ({len(figures)} PNG): {(out / 'figures').resolve()}")


if __name__ == "__main__":
    main()
