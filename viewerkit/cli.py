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
    tz: str,
    formulas: str,
    concurrency: int,
    progress: bool,
) -> None:
    """Fetch every study matching the filters; write it to --out, else print a summary.

    A .csv or .xlsx keeps spreadsheets from running cells as formulas (see --formulas) and
    shows times in --tz; viewerkit.read_studies reads any of them back as it was.

    Example:

        viewerkit fetch --severity stat --status incomplete --out open-stat.parquet
    """
    from viewerkit.client import Client
    from viewerkit.fetch import fetch_studies_arrow
    from viewerkit.files import check_output_path, check_time_zone, write_studies
    from viewerkit.schema import StudyFilters

    filters = StudyFilters.from_text(
        assigned_to=assigned_to,
        express_customer_id=express_customer_id,
        is_cancelled=is_cancelled,
        severity=severity,
        study_description=study_description,
        study_viewer_status=study_viewer_status,
    )
    check_time_zone(tz)  # these before the fetch, which may take minutes
    if out is not None:
        check_output_path(out)
    with Client() as client:
        table = fetch_studies_arrow(client, filters, concurrency=concurrency, progress=progress)
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


@main.command("report")
@_cache_option
@click.option("--window", nargs=2, metavar="START END", default=None,
              help="Report on START <= time < END (ISO dates or times, UTC).")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Report on the last N days.")
@click.option("--out", type=click.Path(dir_okay=False), default="report.html", show_default=True,
              help="The HTML report to write.")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), default=None,
              help="Also write one PNG per figure into this folder.")
def report_command(
    cache_path: str | None,
    window: tuple[str, str] | None,
    days: int | None,
    out: str,
    figures_dir: str | None,
) -> None:
    """Write the severity and turnaround report of the cached studies as one HTML file.

    Uses the namespace of AVARA_API_KEY / AVARA_BASE_URL when the key is set, else the
    cache's only namespace. Run `viewerkit refresh` first to bring the cache up to date.

    Example:

        viewerkit report --cache data/cache --days 28 --out report.html
    """
    from viewerkit.cache import StudyCache
    from viewerkit.client import environment_client
    from viewerkit.reports import last_days, render, resolve_now, save_figures

    if window and days:
        raise click.UsageError("give --window or --days, not both")
    now = resolve_now(None)
    span = (window[0], window[1]) if window else last_days(days, now=now) if days else None
    with environment_client() as client:
        cached = StudyCache.at(cache_path).read(client)
    studies, history = cached.studies, cached.history
    written = render(studies, out, history=history, window=span, now=now,
                     refreshed_at=cached.info["last_refresh_at"])
    click.echo(f"Report on {len(studies):,} studies written to {written}")
    if figures_dir:
        pngs = save_figures(studies, figures_dir, history=history, window=span, now=now)
        click.echo(f"{len(pngs)} figures written to {figures_dir}")


if __name__ == "__main__":
    sys.exit(main())
