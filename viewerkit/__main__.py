"""``python -m viewerkit``: the ``viewerkit`` command line (``viewerkit.cli.main``), for when
the ``viewerkit`` script is not on the PATH (a venv that is not activated, ``pipx``-less
machines): ``python -m viewerkit fetch --help``."""

from __future__ import annotations

from viewerkit.cli import main

if __name__ == "__main__":
    main(prog_name="viewerkit")
