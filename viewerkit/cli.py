"""The ``viewerkit`` command line: each command is a thin shell over the library call of the
same name. Library errors print one line on stderr and exit with the status of their kind,
the same for every command (:data:`EXIT_STATUSES`), so that a scheduled job can tell them
apart."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from viewerkit.errors import CacheError, Reason, ValidationError, ViewerkitError
from viewerkit.schema import SEVERITIES, VIEWER_STATUSES

if TYPE_CHECKING:
    from viewerkit.client import Client


#: Every command's exit statuses (click's own 0, 1, 2, and two for the failures a scheduled
#: job must tell apart); each command's help lists them.
EXIT_STATUSES = {
    0: "done",
    1: "bad input or setup: a bad value, no AVARA_API_KEY, a file that cannot be written",
    2: "usage: an unknown option, a value an option refuses",
    3: "the API failed: no connection, the key refused (401), a server error",
    4: "the cache: locked by another refresh past --lock-timeout, damaged, or never refreshed",
    5: "bulk: some rows failed (the others were applied or no-ops)",
    6: "bulk: some rows were conflicts, none failed",
}


class _Failure(click.ClickException):
    """A library error as one line on stderr (its detail lines joined by "; ", e.g. which
    field was bad) and its exit status."""

    def __init__(self, exc: BaseException, hint: str | None = None) -> None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        lines += [hint] if hint else []
        super().__init__("; ".join(lines) or type(exc).__name__)


class _ApiFailure(_Failure):
    exit_code = 3


class _CacheFailure(_Failure):
    exit_code = 4


class _Group(click.Group):
    """Turns a library error into one line on stderr and the exit status of its kind:
    ``ApiError`` 3, ``CacheError`` / ``LockTimeout`` 4, any other ``ViewerkitError`` or an
    ``OSError`` (a path that cannot be written or read) 1."""

    def invoke(self, ctx: click.Context) -> object:
        from viewerkit.errors import ApiError, AuthenticationError, CacheError, LockTimeout

        try:
            return super().invoke(ctx)
        except AuthenticationError as exc:
            hint = "check AVARA_API_KEY (and AVARA_BASE_URL: a key belongs to one server)"
            raise _ApiFailure(exc, hint) from exc
        except ApiError as exc:
            raise _ApiFailure(exc) from exc
        except (CacheError, LockTimeout) as exc:
            raise _CacheFailure(exc) from exc
        except BrokenPipeError:
            raise  # the reader of our output went away (| head): click ends quietly
        except (ViewerkitError, OSError) as exc:
            raise _Failure(exc) from exc


@click.group(cls=_Group)
@click.version_option(package_name="viewerkit")
def main() -> None:
    """Radiology study operations on the Avara Viewer.

    The API key comes from AVARA_API_KEY and the base URL from AVARA_BASE_URL
    (`viewerkit sandbox serve` prints the two `export` lines for its server).

    \b
    Exit statuses, every command:
      0  done
      1  bad input or setup: a bad value, no AVARA_API_KEY, a file that cannot be written
      2  usage: an unknown option, a value an option refuses
      3  the API failed: no connection, the key refused (401), a server error
      4  the cache: locked by another refresh past --lock-timeout, damaged, or never refreshed
      5  bulk: some rows failed (the others were applied or no-ops)
      6  bulk: some rows were conflicts, none failed
    """


# --- sandbox: viewerkit/sandbox/cli.py ------------------------------------------------------
from viewerkit.sandbox.cli import sandbox  # noqa: E402

main.add_command(sandbox)

# --- fetch / refresh / cache ----------------------------------------------------------------


_cache_option = click.option(
    "--cache",
    "cache_path",
    metavar="PATH",
    default=None,
    help="Cache directory (default: $VIEWERKIT_CACHE, else ./data/cache).",
)
_namespace_option = click.option(
    "--namespace",
    metavar="ID",
    default=None,
    help="Which of the cache's API namespaces to read, when it holds several: an ID from "
    "`viewerkit cache info` (or a unique prefix), or a base URL (default: "
    "$VIEWERKIT_NAMESPACE, else the one of AVARA_API_KEY / AVARA_BASE_URL when the key is "
    "set, else the only one).",
)
_rate_limit_option = click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    metavar="PER_SECOND",
    default=None,
    help="At most this many requests per second, client-wide (default: none; the client "
    "still slows down on its own when the server answers 429).",
)


def _concurrency_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--concurrency",
        type=click.IntRange(1, 64),
        default=8,
        show_default=True,
        help=f"Requests in flight at once while {what}.",
    )


def _bars(progress: bool | None) -> bool:
    """Progress bars as asked, else only on a terminal (never carriage returns in a log)."""
    return sys.stderr.isatty() if progress is None else progress


_NO_KEY = (
    "no API key: set the environment variable AVARA_API_KEY (and AVARA_BASE_URL for a server "
    "other than the hosted API), e.g. the two `export` lines `viewerkit sandbox serve` prints"
)


def _api_client(rate_limit: float | None = None, concurrency: int = 8) -> Client:
    """The client of AVARA_API_KEY / AVARA_BASE_URL with the command's limits; a missing
    key is an error (exit 1) in the command line's terms (not the library's ``api_key=``)."""
    import os

    from viewerkit.client import Client

    if not os.environ.get("AVARA_API_KEY", "").strip():
        raise click.ClickException(_NO_KEY)
    return Client(rate_limit=rate_limit, max_concurrency=concurrency)


@main.command("fetch")
@click.option("--severity", type=click.Choice(SEVERITIES), multiple=True,
              help="Only this severity; repeat for several (--severity stat --severity high).")
@click.option(
    "--status",
    "study_viewer_status",
    type=click.Choice(VIEWER_STATUSES),
    multiple=True,
    help="Only this viewer status; repeat for several.",
)
@click.option("--cancelled/--not-cancelled", "is_cancelled", default=None, help="Only (not) cancelled studies.")
@click.option("--assigned-to", metavar="USER_ID", help="Only studies assigned to this user ID ('null': unassigned).")
@click.option("--customer", "express_customer_id", metavar="CUSTOMER_ID", help="Only this express customer ID ('null': none).")
@click.option("--description", "study_description", metavar="TEXT", help="Description contains TEXT (any case).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the table to a .parquet, .csv or .xlsx (Excel) file.")
@click.option("--tz", default="UTC", show_default=True, metavar="ZONE",
              help="Time zone of the times in a .csv or .xlsx (an IANA name, e.g. Europe/Berlin); "
                   "Excel's time columns name it. Parquet keeps UTC instants.")
@click.option("--formulas", type=click.Choice(["neutralise", "keep"]), default="neutralise",
              show_default=True,
              help="CSV and Excel: text cells a spreadsheet would run as a formula (= + - @ ...) "
                   "are marked as text (neutralise: a leading ' in CSV, Excel's quote prefix), or "
                   "written as they are, for programs (keep).")
@_concurrency_option("fetching")
@_rate_limit_option
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: only when stderr is a terminal, not in logs).")
def fetch_command(
    severity: tuple[str, ...],
    study_viewer_status: tuple[str, ...],
    is_cancelled: bool | None,
    assigned_to: str | None,
    express_customer_id: str | None,
    study_description: str | None,
    out: str | None,
    tz: str,
    formulas: str,
    concurrency: int,
    rate_limit: float | None,
    progress: bool | None,
) -> None:
    """Fetch every study matching the filters; write it to --out, else print a summary.

    A .csv or .xlsx keeps spreadsheets from running cells as formulas (see --formulas) and
    shows times in --tz; viewerkit.read_studies reads any of them back as it was.

    Example:

    \b
        viewerkit fetch --severity stat --status incomplete --out open-stat.parquet
        viewerkit fetch --severity stat --severity high --out urgent.xlsx --tz Europe/Berlin
    """
    from viewerkit.fetch import fetch_studies_arrow
    from viewerkit.files import check_output_path, check_time_zone, write_studies
    from viewerkit.schema import StudyFilters

    filters = StudyFilters.from_text(
        assigned_to=assigned_to,
        express_customer_id=express_customer_id,
        is_cancelled=is_cancelled,
        severity=list(severity),
        study_description=study_description,
        study_viewer_status=list(study_viewer_status),
    )
    check_time_zone(tz, what="--tz")  # these before the fetch, which may take minutes
    if tz != "UTC" and (out is None or out.lower().endswith(".parquet")):
        raise click.UsageError("--tz sets the times of a .csv or .xlsx --out; Parquet keeps UTC instants")
    if out is not None:
        check_output_path(out)
    with _api_client(rate_limit, concurrency) as client:
        table = fetch_studies_arrow(client, filters, concurrency=concurrency, progress=_bars(progress))
    if out is None:
        click.echo(f"{table.num_rows} studies (use --out FILE.parquet to keep them)")
        return
    write_studies(table, out, tz=tz, formulas="keep" if formulas == "keep" else "neutralise")
    zone = "" if out.lower().endswith(".parquet") else f" (times in {tz})"
    click.echo(f"{table.num_rows} studies written to {out}{zone}")


@main.command("refresh")
@_cache_option
@click.option("--mode", type=click.Choice(["full", "active"]), default="full", show_default=True,
              help="full: fetch everything; active: open and new studies only.")
@_concurrency_option("refreshing")
@_rate_limit_option
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=300, show_default=True,
              metavar="SECONDS", help="How long to wait for another refresh of the same cache.")
@click.option("--progress/--no-progress", default=None,
              help="Show progress bars (default: only when stderr is a terminal, not in logs).")
def refresh_command(
    cache_path: str | None,
    mode: str,
    concurrency: int,
    rate_limit: float | None,
    lock_timeout: float,
    progress: bool | None,
) -> None:
    """Bring the study cache up to date and record what changed.

    The server and key are AVARA_BASE_URL / AVARA_API_KEY's; each pair is its own API
    namespace in the cache. The first refresh of a namespace (a new server or key, or an
    empty cache) is a full one whatever --mode says: after a key rotation, see
    `viewerkit cache adopt` to keep the history instead.

    Example:

    \b
        viewerkit refresh --cache data/cache --mode active
    """
    from viewerkit.cache import StudyCache

    with _api_client(rate_limit, concurrency) as client:
        summary = StudyCache.at(cache_path).refresh(
            client, mode="active" if mode == "active" else "full", progress=_bars(progress),
            concurrency=concurrency, lock_timeout=lock_timeout,
        )
    click.echo(
        f"{summary.mode} refresh: {summary.total} studies; {summary.new} new, "
        f"{summary.changed} changed, {summary.gone} gone, {summary.unchanged} unchanged "
        f"({summary.duration_s:.1f} s)"
    )


@main.group("cache")
def cache_group() -> None:
    """Inspect and manage the study cache (its API namespaces).

    Example:

    \b
        viewerkit cache info --cache data/cache
    """


def _chosen_cache(cache_path: str | None, namespace: str | None, client: Client | None) -> Any:
    """The cache to read and the client to read it with: an explicit --namespace (or
    $VIEWERKIT_NAMESPACE) wins over the environment's key."""
    from viewerkit.cache import StudyCache

    cache = StudyCache.at(cache_path, namespace=namespace)
    return cache, None if cache.namespace else client


@cache_group.command("info")
@_cache_option
@_namespace_option
def cache_info_command(cache_path: str | None, namespace: str | None) -> None:
    """Show what the cache holds: server, key fingerprint, studies, last refresh, files.

    A cache holding several API namespaces (servers or keys) lists each one; --namespace
    (or $VIEWERKIT_NAMESPACE) shows one in full. When AVARA_API_KEY is set (and neither
    is given), it shows that key's namespace only, with "studies: 0" if that key never
    refreshed this cache; unset the key to list them all.

    Example:

    \b
        viewerkit cache info --cache data/cache --namespace 3f2a
    """
    from viewerkit.client import environment_client

    with environment_client() as client:
        cache, reader = _chosen_cache(cache_path, namespace, client)
        found = cache.namespaces()
        if reader is None and not cache.namespace and len(found) > 1:
            click.echo(f"{cache.path} holds {len(found)} API namespaces:")
            for n in found:
                if "error" in n:
                    click.echo(f"  {n['namespace']}  unreadable: {n['error']}")
                    continue
                click.echo(
                    f"  {n['namespace']}  {n['base_url']}  key {n['key_fingerprint']}  "
                    f"{n['studies']:,} studies  last refresh {n['last_refresh_at'] or 'never'}"
                )
            click.echo("Choose one with --namespace ID (or VIEWERKIT_NAMESPACE=ID).")
            return
        info = cache.info(reader)
        if reader is not None and info["last_refresh_at"] is None:
            # the environment's key has no namespace here: say what the folder holds
            raise CacheError(cache.missing_namespace_advice(reader))
    for key in ("path", "base_url", "key_fingerprint", "studies", "last_refresh_at",
                "last_refresh_mode", "refreshes", "metadata"):
        click.echo(f"{key}: {info[key] if info[key] is not None else '-'}")
    for name, size in info["file_bytes"].items():
        click.echo(f"file {name}: {size} bytes")


@cache_group.command("adopt")
@_cache_option
@click.option("--from", "from_namespace", metavar="ID", required=True,
              help="The namespace to move (an ID from `viewerkit cache info`, a unique prefix, "
              "or its base URL).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_rate_limit_option
def cache_adopt_command(cache_path: str | None, from_namespace: str, yes: bool, rate_limit: float | None) -> None:
    """Move a namespace, history and all, to the key (and base URL) of AVARA_API_KEY /
    AVARA_BASE_URL: after the hosted API's key was rotated, so that the next refresh
    continues the history instead of starting a new one.

    Only for the same organisation: the new key must see the namespace's newest studies,
    else nothing moves.

    Example:

    \b
        viewerkit cache adopt --cache data/cache --from 3f2a
    """
    from viewerkit.cache import StudyCache

    cache = StudyCache.at(cache_path)
    with _api_client(rate_limit=rate_limit) as client:
        source = cache.choose(from_namespace)
        if not yes:
            click.confirm(
                f"Move namespace {source} to {client.base_url} (key {client.key_fingerprint})? "
                "Only if it is the same organisation",
                abort=True,
            )
        info = cache.adopt(client, source)
    click.echo(
        f"namespace {source} is now {info['path']}: {info['base_url']} key "
        f"{info['key_fingerprint']}, {info['studies']:,} studies, history kept"
    )


@cache_group.command("remove")
@_cache_option
@click.argument("namespace", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_remove_command(cache_path: str | None, namespace: str, yes: bool) -> None:
    """Delete one namespace of the cache, its studies and its history (no undo).

    Example:

    \b
        viewerkit cache remove --cache data/cache 3f2a
    """
    from viewerkit.cache import StudyCache

    cache = StudyCache.at(cache_path)
    chosen = cache.choose(namespace)
    if not yes:
        click.confirm(f"Delete namespace {chosen} and its history for good?", abort=True)
    cache.remove(chosen)
    click.echo(f"namespace {chosen} removed")


# --- report ---------------------------------------------------------------------------------


@main.command("report")
@_cache_option
@click.option("--window", nargs=2, metavar="START END", default=None,
              help="Report on START <= time < END (ISO dates or times; UTC unless they give an offset).")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Report on the last N days.")
@click.option("--tz", default="UTC", show_default=True, metavar="ZONE",
              help="Time zone of the report's days, weeks and times (an IANA name such as Europe/Berlin).")
@click.option("--out", type=click.Path(dir_okay=False), default="report.html", show_default=True,
              help="The HTML report to write (.html or .htm, in a folder that exists).")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), default=None,
              help="Also write one PNG per figure into this folder.")
@click.option("--refresh", "refresh_mode", type=click.Choice(["active", "full"]), default=None,
              help="Refresh the cache first (as `viewerkit refresh --mode`), then report: one "
                   "command for a scheduled job.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=300, show_default=True,
              metavar="SECONDS", help="With --refresh: how long to wait for another refresh of the cache to finish.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars of --refresh (default: only when stderr is a terminal).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when all went well; errors still go to stderr.")
@_namespace_option
@_concurrency_option("refreshing (--refresh)")
@_rate_limit_option
def report_command(
    namespace: str | None,
    concurrency: int,
    rate_limit: float | None,
    cache_path: str | None,
    window: tuple[str, str] | None,
    days: int | None,
    tz: str,
    out: str,
    figures_dir: str | None,
    refresh_mode: str | None,
    lock_timeout: float,
    progress: bool | None,
    quiet: bool,
) -> None:
    """Write the severity and turnaround report of the cached studies as one HTML file.

    Reads the namespace --namespace names, else $VIEWERKIT_NAMESPACE's, else the one of
    AVARA_API_KEY / AVARA_BASE_URL when the key is set, else the cache's only one. Run `viewerkit refresh` first to bring the cache up to date, or
    give --refresh to do both in one command (it needs AVARA_API_KEY, and waits up to
    --lock-timeout for a refresh already running). Days and weeks are local to --tz; the
    current day or week is marked partial.

    Example:

    \b
        viewerkit report --days 28 --tz Europe/Berlin --out report.html
        viewerkit report --refresh active --days 7 --quiet --out daily.html

    Exit status (for cron and CI schedules):

    \b
      0  the report was written
      1  bad input or setup: a value of --tz, --out or --window,
         no AVARA_API_KEY for --refresh, a file that cannot be written
      2  usage: an unknown option, a value an option refuses,
         --window with --days
      3  the API failed: no connection, the key refused (401), a server error
      4  the cache: locked by another refresh past --lock-timeout,
         damaged, or never refreshed
    """
    from viewerkit.cache import StudyCache
    from viewerkit.client import environment_client
    from viewerkit.files import check_output_path
    from viewerkit.reports import (
        count_created,
        last_days,
        render,
        report_timezone,
        resolve_now,
        save_figures,
    )
    from viewerkit.reports.html import HTML_SUFFIXES
    from viewerkit.reports.sla import window_ms

    if window and days:
        raise click.UsageError("give --window or --days, not both")
    # every argument checked before the refresh, which may take minutes
    zone = report_timezone(tz)
    if window:
        window_ms((window[0], window[1]))
    check_output_path(out, suffixes=HTML_SUFFIXES, what="report")
    if figures_dir and not Path(figures_dir).is_dir() and not Path(figures_dir).absolute().parent.is_dir():
        raise ValidationError.one("report", "--figures", figures_dir, Reason.NO_SUCH_FOLDER,
                                  detail="its parent folder does not exist (only the last one is made)")
    if refresh_mode is not None:
        with _api_client(rate_limit, concurrency) as client:
            summary = StudyCache.at(cache_path).refresh(
                client, mode="active" if refresh_mode == "active" else "full",
                progress=_bars(progress),
                lock_timeout=lock_timeout, concurrency=concurrency,
            )
            cached = StudyCache.at(cache_path).read(client)
        if not quiet:
            click.echo(f"{summary.mode} refresh: {summary.new:,} new, {summary.changed:,} changed, "
                       f"{summary.gone:,} gone ({summary.duration_s:.1f} s)")
    else:
        with environment_client() as env_client:
            cache, reader = _chosen_cache(cache_path, namespace, env_client)
            cached = cache.read(reader)
    now = resolve_now(None)  # after the refresh: what it saw open is open now
    span = (window[0], window[1]) if window else last_days(days, now=now) if days else None
    studies, history = cached.studies, cached.history
    written = render(studies, out, history=history, window=span, now=now, tz=zone,
                     refreshed_at=cached.info["last_refresh_at"], users=cached.users)
    if span is None:
        counted = f"all {len(studies):,} cached studies"
    else:
        which = f"last {days} days" if days else f"{window[0]} to {window[1]}" if window else ""
        counted = f"{count_created(studies, window=span):,} of {len(studies):,} cached studies ({which})"
    if not quiet:
        click.echo(f"Report on {counted} written to {written}")
    if figures_dir:
        pngs = save_figures(studies, figures_dir, history=history, window=span, now=now, tz=zone)
        if not quiet:
            click.echo(f"{len(pngs)} figures written to {figures_dir}")


# --- bulk: viewerkit/bulk ---------------------------------------------------------------------

#: Where `viewerkit bulk` keeps its journal unless --journal says otherwise (one file, many runs).
DEFAULT_JOURNAL = "data/journals/bulk.sqlite"

_journal_option = click.option(
    "--journal",
    metavar="PATH",
    default=DEFAULT_JOURNAL,
    show_default=True,
    help="The SQLite journal of the run (created if missing; one file holds many runs): "
    "resume and undo read it.",
)
_yes_option = click.option("--yes", is_flag=True, help="Do not ask for confirmation before sending.")
_reason_option = click.option("--reason", metavar="TEXT", default=None,
                              help="Why this run is made, kept in the journal with the OS user.")
_out_option = click.option("--out", type=click.Path(dir_okay=False), default=None,
                           help="Also write the per-row result (or preview) as CSV to this file.")
_bulk_progress_option = click.option("--progress/--no-progress", default=None,
                                     help="Show progress bars (default: when stderr is a terminal).")


def _show_counts(what: str, counts: dict[str, int]) -> None:
    shown = ", ".join(f"{name} {n:,}" for name, n in counts.items() if n) or "no rows"
    click.echo(f"{what}: {shown}")


def _bulk_exit(result: Any, out: str | None) -> None:
    """Print a run's counts and its problem rows; exit 5 (failed) or 6 (conflicts) or 0."""
    if out:
        result.to_csv(out)
    counts = result.counts()
    _show_counts(f"run {result.run_id} (journal {result.journal})", counts)
    problems = result.frame[result.frame["status"].isin(["failed", "conflict", "skipped"])]
    for label, row in problems.head(20).iterrows():
        click.echo(f"  row {label}: {row['status']}: {row['error']}", err=True)
    if len(problems) > 20:
        click.echo(f"  ... {len(problems) - 20:,} more (see --out, or resume / the journal)", err=True)
    if counts["failed"]:
        raise SystemExit(5)
    if counts["conflict"]:
        raise SystemExit(6)


def _preview_and_apply(
    client: Client, plan: Any, *, apply: bool, yes: bool, journal: str, reason: str | None, concurrency: int,
    progress: bool, out: str | None,
) -> Any:
    """Preview ``plan`` and show its counts; with ``apply``, confirm (unless ``yes``) and
    apply it (exiting with the run's status), else write the preview to ``out`` and return
    it."""
    preview = plan.preview(client, concurrency=concurrency, progress=progress)
    counts = preview.counts()
    _show_counts(f"preview of {len(preview):,} rows", counts)
    if not apply:
        if out:
            from viewerkit.files import write_text

            write_text(preview.to_frame().to_csv(index_label="row"), out)
        return preview
    if not any(kind not in ("noop", "missing", "unread") for kind in counts):
        click.echo("nothing to send")
    if not yes:
        click.confirm(f"Apply to {client.base_url}?", abort=True)
    result = preview.apply(journal=journal, concurrency=concurrency, reason=reason, progress=progress)
    _bulk_exit(result, out)
    return preview


@main.group("bulk")
def bulk_group() -> None:
    """Bulk changes from a plan (a CSV of studies and fields to set): preview, apply with a
    journal, resume, undo; cancel a list of studies; reassign an off-shift radiologist's
    open studies by load. See data/README.md for the plan columns and markers.

    Runs are journaled in data/journals/bulk.sqlite unless --journal says otherwise.

    Example:

    \b
        viewerkit bulk preview data/severity-bump.csv
        viewerkit bulk apply data/severity-bump.csv --reason "ED escalation"
    """


@bulk_group.command("preview")
@click.argument("plan_path", metavar="PLAN.csv", type=click.Path(dir_okay=False))
@_out_option
@_concurrency_option("reading the studies")
@_rate_limit_option
@_bulk_progress_option
def bulk_preview_command(
    plan_path: str, out: str | None, concurrency: int, rate_limit: float | None, progress: bool | None,
) -> None:
    """Show what a plan would change against the live studies (counts by change type),
    sending nothing. Rows are named by their line in the CSV file.

    Example:

    \b
        viewerkit bulk preview data/severity-bump.csv --out preview.csv
    """
    from viewerkit.bulk import Plan

    plan = Plan.from_csv(plan_path)
    with _api_client(rate_limit, concurrency) as client:
        preview = _preview_and_apply(client, plan, apply=False, yes=False, journal=DEFAULT_JOURNAL, reason=None,
                                     concurrency=concurrency, progress=_bars(progress), out=out)
    frame = preview.to_frame()
    changing = frame[~frame["change"].isin(["noop"])]
    for label, row in changing.head(20).iterrows():
        click.echo(f"  row {label} {row['study_id'] or ''}: {row['change']}  {row['before']} -> {row['after']}")
    if len(changing) > 20:
        click.echo(f"  ... {len(changing) - 20:,} more (see --out)")


@bulk_group.command("apply")
@click.argument("plan_path", metavar="PLAN.csv", type=click.Path(dir_okay=False))
@_journal_option
@_yes_option
@_reason_option
@_out_option
@_concurrency_option("applying")
@_rate_limit_option
@_bulk_progress_option
def bulk_apply_command(
    plan_path: str, journal: str, yes: bool, reason: str | None, out: str | None, concurrency: int,
    rate_limit: float | None, progress: bool | None,
) -> None:
    """Apply a plan: preview it (counts shown), ask for confirmation unless --yes, then send
    it, each request journaled before it is sent. A planned field changed on the server
    since the preview read it is a conflict, not overwritten.

    Exit status: 0 every row applied or already so, 5 some rows failed, 6 some conflicts
    (none failed); 1-3 as for every command.

    Example:

    \b
        viewerkit bulk apply data/severity-bump.csv --journal data/journals/ed.sqlite --yes
    """
    from viewerkit.bulk import Plan

    plan = Plan.from_csv(plan_path)
    shown = _bars(progress)
    with _api_client(rate_limit, concurrency) as client:
        _preview_and_apply(client, plan, apply=True, yes=yes, journal=journal, reason=reason,
                           concurrency=concurrency, progress=shown, out=out)


@bulk_group.command("resume")
@click.argument("journal", metavar="JOURNAL", type=click.Path(dir_okay=False), default=DEFAULT_JOURNAL)
@click.option("--run", "run_id", metavar="ID", default=None, help="The run to finish (default: the journal's latest).")
@_out_option
@_concurrency_option("applying")
@_rate_limit_option
@_bulk_progress_option
def bulk_resume_command(
    journal: str, run_id: str | None, out: str | None, concurrency: int, rate_limit: float | None,
    progress: bool | None,
) -> None:
    """Finish an interrupted run: rows sent without a recorded answer are read back first
    (already done counts as applied; nothing is sent twice). JOURNAL defaults to
    data/journals/bulk.sqlite. Exit status as for apply.

    Example:

    \b
        viewerkit bulk resume data/journals/ed.sqlite --run run_20261130T081940_b5059a
    """
    from viewerkit.bulk import resume

    with _api_client(rate_limit, concurrency) as client:
        result = resume(client, journal, run_id, concurrency=concurrency, progress=_bars(progress))
    _bulk_exit(result, out)


@bulk_group.command("undo")
@click.argument("journal", metavar="JOURNAL", type=click.Path(dir_okay=False), default=DEFAULT_JOURNAL)
@click.option("--run", "run_id", metavar="ID", default=None, help="The run to undo (default: the journal's latest).")
@_yes_option
@click.option("--force", is_flag=True, help="Also restore studies someone changed since our write (default: conflicts).")
@_out_option
@_concurrency_option("applying")
@_rate_limit_option
@_bulk_progress_option
def bulk_undo_command(
    journal: str, run_id: str | None, yes: bool, force: bool, out: str | None, concurrency: int,
    rate_limit: float | None, progress: bool | None,
) -> None:
    """Undo a run: restore the before-images of the studies it changed, as a new journaled
    run; a study changed by someone else since is a conflict, left as it is. JOURNAL
    defaults to data/journals/bulk.sqlite. Exit status as for apply.

    Example:

    \b
        viewerkit bulk undo data/journals/ed.sqlite --run run_20261130T081940_b5059a --yes
    """
    from viewerkit.bulk import Journal, undo

    with Journal(journal) as j:
        info = j.run(run_id)
        counts = j.status_counts().get(info.run_id, {})
    if not yes:
        click.confirm(
            f"Undo run {info.run_id} ({counts.get('applied', 0):,} studies applied, by {info.user}"
            f"{', ' + info.reason if info.reason else ''})?", abort=True,
        )
    with _api_client(rate_limit, concurrency) as client:
        result = undo(client, journal, info.run_id, force=force, concurrency=concurrency,
                      progress=_bars(progress))
    _bulk_exit(result, out)


def _study_names(path: str) -> list[str]:
    """Study IDs and UIDs from a file: a CSV with a study_id or study_instance_uid column, or
    one per line (blank lines and # comments skipped)."""
    from pathlib import Path

    import pandas as pd

    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if lines and ("study_id" in lines[0].split(",") or "study_instance_uid" in lines[0].split(",")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        column = "study_id" if "study_id" in frame.columns else "study_instance_uid"
        return [v for v in frame[column].tolist() if v]
    return lines


@bulk_group.command("cancel")
@click.option("--ids", "ids_path", required=True, type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="The studies to cancel: one study ID or UID per line, or a CSV with a study_id "
              "(or study_instance_uid) column.")
@click.option("--apply", "apply_", is_flag=True, help="Send it (default: only preview).")
@_journal_option
@_yes_option
@_reason_option
@_out_option
@_concurrency_option("applying")
@_rate_limit_option
@_bulk_progress_option
def bulk_cancel_command(
    ids_path: str, apply_: bool, journal: str, yes: bool, reason: str | None, out: str | None,
    concurrency: int, rate_limit: float | None, progress: bool | None,
) -> None:
    """Cancel a list of studies (a customer's withdrawn batch): previews by default,
    sends with --apply. Studies already cancelled are no-ops. Exit status as for apply.

    Example:

    \b
        viewerkit bulk cancel --ids data/cancel-list.csv --apply --reason "batch withdrawn"
    """
    from viewerkit.bulk import cancel

    plan = cancel(_study_names(ids_path))
    shown = _bars(progress)
    with _api_client(rate_limit, concurrency) as client:
        _preview_and_apply(client, plan, apply=apply_, yes=yes, journal=journal, reason=reason,
                           concurrency=concurrency, progress=shown, out=out)


@bulk_group.command("reassign")
@click.option("--from", "from_user", required=True, metavar="USER",
              help="The radiologist going off shift (user ID or email): their open studies move.")
@click.option("--to", "to_users", required=True, multiple=True, metavar="USER",
              help="A radiologist to take studies (user ID or email); repeat --to for each, or "
              "separate them with commas.")
@click.option("--apply", "apply_", is_flag=True, help="Send it (default: only preview).")
@_journal_option
@_yes_option
@_reason_option
@_out_option
@_concurrency_option("reading and applying")
@_rate_limit_option
@_bulk_progress_option
def bulk_reassign_command(
    from_user: str, to_users: tuple[str, ...], apply_: bool, journal: str, yes: bool, reason: str | None,
    out: str | None, concurrency: int, rate_limit: float | None, progress: bool | None,
) -> None:
    """Reassign a radiologist's open studies (incomplete, not cancelled) over others by
    their load, stat first: previews by default, sends with --apply. Exit status as for
    apply.

    Example:

    \b
        viewerkit bulk reassign --from dr.lee@example.org --to dr.ng@example.org \\
            --to dr.roy@example.org --apply --reason "off shift"
    """
    import pandas as pd

    from viewerkit.bulk.reassign import reassign
    from viewerkit.fetch import fetch_studies
    from viewerkit.users import fetch_users_arrow_or_none, users_to_pandas

    targets = [name.strip() for value in to_users for name in value.split(",") if name.strip()]
    shown = _bars(progress)
    with _api_client(rate_limit, concurrency) as client:
        listed = fetch_users_arrow_or_none(client)  # resolves the emails of --to
        roster = None if listed is None else users_to_pandas(listed)
        # every open study: those of --from move, and all of them are the targets' load
        open_ = fetch_studies(client, is_cancelled=False, study_viewer_status="incomplete", progress=shown)
        if "@" in from_user:
            # by the user list, else (not listed: access revoked?) the email on their studies
            by_email = roster if roster is not None else pd.DataFrame({"email": [], "user_id": []})
            named = by_email[by_email["email"].str.lower() == from_user.lower()]
            theirs = open_[
                open_["assigned_to_user_id"].isin(named["user_id"])
                | (open_["assigned_to_email"].str.lower() == from_user.lower()).fillna(False)
            ]
        else:
            theirs = open_[(open_["assigned_to_user_id"] == from_user).fillna(False)]
        if theirs.empty:
            click.echo(f"{from_user} has no open studies: nothing to reassign")
            return
        plan = reassign(theirs, to=targets, workload=open_, users=roster)
        _preview_and_apply(client, plan, apply=apply_, yes=yes, journal=journal, reason=reason,
                           concurrency=concurrency, progress=shown, out=out)


if __name__ == "__main__":
    sys.exit(main())
