"""The ``viewerkit`` command line: each command is a thin shell over the library call of the
same name. Library errors print one line and exit non-zero."""

from __future__ import annotations

import sys

import click

from viewerkit.errors import ViewerkitError


class _Group(click.Group):
    """Turns a ViewerkitError into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ViewerkitError as exc:
            raise click.ClickException(str(exc).splitlines()[0] if "\n" in str(exc) else str(exc)) from exc


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

# --- report ---------------------------------------------------------------------------------


if __name__ == "__main__":
    sys.exit(main())
