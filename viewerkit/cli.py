"""The ``viewerkit`` command line: each command is a thin shell over the library call of the
same name. Library errors print one line and exit non-zero."""

from __future__ import annotations

import sys

import click

from viewerkit.errors import ViewerkitError
from viewerkit.schema import SEVERITIES, VIEWER_STATUSES


class _Group(click.Group):
    """Turns a ViewerkitError, or an OSError (a path that cannot be written or read), into
    one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (ViewerkitError, OSError) as exc:
            # one line, but keep the detail lines (e.g. which field was bad), joined by "; "
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise click.ClickException("; ".join(lines) or type(exc).__name__) from exc


@click.group(cls=_Group)
@click.version_option(package_name="viewerkit")
def main() -> None:
    """Radiology study operations on the Avara Viewer.

    The API key comes from AVARA_API_KEY and the base URL from AVARA_BASE_URL.
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


@main.command("fetch")
@click.option("--severity", type=click.Choice(SEVERITIES), help="Only this severity.")
@click.option(
    "--status",
    "study_viewer_status",
    type=click.Choice(VIEWER_STATUSES),
    help="Only this viewer status.",
)
@click.option("--cancelled/--not-cancelled", "is_cancelled", default=None, help="Only (not) cancelled studies.")
@click.option("--assigned-to", metavar="USER_ID", help="Only studies assigned to this user ID ('null': unassigned).")
@click.option("--customer", "express_customer_id", metavar="CUSTOMER_ID", help="Only this express customer ID ('null': none).")
@click.option("--description", "study_description", metavar="TEXT", help="Description contains TEXT (any case).")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the table to a .parquet or .csv file.")
@click.option("--formulas", type=click.Choice(["neutralise", "keep"]), default="neutralise",
              show_default=True,
              help="CSV only: text cells a spreadsheet would run as a formula (= + - @ ...) get a "
                   "leading ' (neutralise), or are written as they are, for programs (keep).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def fetch_command(
    severity: str | None,
    study_viewer_status: str | None,
    is_cancelled: bool | None,
    assigned_to: str | None,
    express_customer_id: str | None,
    study_description: str | None,
    out: str | None,
    formulas: str,
    concurrency: int,
    progress: bool,
) -> None:
    """Fetch every study matching the filters; write it to --out, else print a summary.

    A .csv keeps spreadsheets from running cells as formulas (see --formulas);
    viewerkit.files.read_studies reads it back as it was.

    Example:

        viewerkit fetch --severity stat --status incomplete --out open-stat.parquet
    """
    from viewerkit.client import Client
    from viewerkit.fetch import fetch_studies_arrow
    from viewerkit.files import check_output_path, write_studies
    from viewerkit.schema import StudyFilters

    filters = StudyFilters.from_text(
        assigned_to=assigned_to,
        express_customer_id=express_customer_id,
        is_cancelled=is_cancelled,
        severity=severity,
        study_description=study_description,
        study_viewer_status=study_viewer_status,
    )
    if out is not None:
        check_output_path(out)  # before the fetch, which may take minutes
    with Client() as client:
        table = fetch_studies_arrow(client, filters, concurrency=concurrency, progress=progress)
    if out is None:
        click.echo(f"{table.num_rows} studies (use --out FILE.parquet to keep them)")
        return
    write_studies(table, out, formulas="keep" if formulas == "keep" else "neutralise")
    click.echo(f"{table.num_rows} studies written to {out}")


@main.command("refresh")
@_cache_option
@click.option("--mode", type=click.Choice(["full", "active"]), default="full", show_default=True,
              help="full: fetch everything; active: open and new studies only.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def refresh_command(cache_path: str | None, mode: str, progress: bool) -> None:
    """Bring the study cache up to date and record what changed.

    Example:

        viewerkit refresh --cache data/cache --mode active
    """
    from viewerkit.cache import StudyCache
    from viewerkit.client import Client

    with Client() as client:
        summary = StudyCache.at(cache_path).refresh(
            client, mode="active" if mode == "active" else "full", progress=progress
        )
    click.echo(
        f"{summary.mode} refresh: {summary.total} studies; {summary.new} new, "
        f"{summary.changed} changed, {summary.gone} gone, {summary.unchanged} unchanged "
        f"({summary.duration_s:.1f} s)"
    )


@main.group("cache")
def cache_group() -> None:
    """Inspect the study cache.

    Example:

        viewerkit cache info --cache data/cache
    """


@cache_group.command("info")
@_cache_option
def cache_info_command(cache_path: str | None) -> None:
    """Show what the cache holds: server, key fingerprint, studies, last refresh, files.

    Uses the namespace of AVARA_API_KEY / AVARA_BASE_URL when the key is set, else the
    cache's only namespace.

    Example:

        viewerkit cache info --cache data/cache
    """
    from viewerkit.cache import StudyCache
    from viewerkit.client import environment_client

    with environment_client() as client:
        info = StudyCache.at(cache_path).info(client)
    for key in ("path", "base_url", "key_fingerprint", "studies", "last_refresh_at",
                "last_refresh_mode", "refreshes"):
        click.echo(f"{key}: {info[key] if info[key] is not None else '-'}")
    for name, size in info["file_bytes"].items():
        click.echo(f"file {name}: {size} bytes")


# --- report ---------------------------------------------------------------------------------


class _ReportFailure(click.ClickException):
    """A failure of `viewerkit report` as one line on stderr (the detail lines joined)."""

    def __init__(self, exc: Exception) -> None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        super().__init__("; ".join(lines) or type(exc).__name__)


# `viewerkit report`'s exit statuses beyond click's 0, 1 and 2 (its help lists them all)
class _ApiFailure(_ReportFailure):
    exit_code = 3


class _CacheFailure(_ReportFailure):
    exit_code = 4


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
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              metavar="SECONDS", help="With --refresh: how long to wait for another refresh of the cache to finish.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars of --refresh (default: only when stderr is a terminal).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when all went well; errors still go to stderr.")
def report_command(
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

    Uses the namespace of AVARA_API_KEY / AVARA_BASE_URL when the key is set, else the
    cache's only namespace. Run `viewerkit refresh` first to bring the cache up to date, or
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
    from viewerkit.client import Client, environment_client
    from viewerkit.errors import ApiError, CacheError, LockTimeout
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
    cache = StudyCache.at(cache_path)
    try:
        if refresh_mode is not None:
            with Client() as client:
                summary = cache.refresh(
                    client, mode="active" if refresh_mode == "active" else "full",
                    progress=sys.stderr.isatty() if progress is None else progress, lock_timeout=lock_timeout,
                )
                cached = cache.read(client)
            if not quiet:
                click.echo(f"{summary.mode} refresh: {summary.new:,} new, {summary.changed:,} changed, "
                           f"{summary.gone:,} gone ({summary.duration_s:.1f} s)")
        else:
            with environment_client() as env_client:
                cached = cache.read(env_client)
    except ApiError as exc:
        raise _ApiFailure(exc) from exc
    except (LockTimeout, CacheError) as exc:
        raise _CacheFailure(exc) from exc
    now = resolve_now(None)  # after the refresh: what it saw open is open now
    span = (window[0], window[1]) if window else last_days(days, now=now) if days else None
    studies, history = cached.studies, cached.history
    written = render(studies, out, history=history, window=span, now=now, tz=zone,
                     refreshed_at=cached.info["last_refresh_at"])
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


if __name__ == "__main__":
    sys.exit(main())
