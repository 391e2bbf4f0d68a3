"""``viewerkit sandbox serve``: run a local Avara Viewer API server until interrupted.

The command imports FastAPI and uvicorn only when it runs; without them it says which
``pip install`` brings them.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from typing import Any

import click

__all__ = ["sandbox", "serve"]

_INSTALL_HINT = "the sandbox needs FastAPI and uvicorn: pip install 'viewerkit[sandbox]'"


@click.group()
def sandbox() -> None:
    """The local Avara Viewer API sandbox server.

    Example:

        viewerkit sandbox serve --studies 20000 --db sandbox.db --port 8765
    """


@sandbox.command()
@click.option("--studies", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Studies to generate when the database is new.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic world.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default="sandbox.db",
              show_default=True, help="SQLite database file (kept between runs).")
@click.option("--api-key", envvar="VIEWERKIT_SANDBOX_API_KEY", default=None,
              help="Bearer key to accept (default: a fresh random key).")
@click.option("--latency-ms", type=click.FloatRange(0, 600_000), default=0.0,
              help="Added latency per request, in milliseconds.")
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of requests answered 500/503 or dropped.")
@click.option("--rate-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Requests per second per key before 429.")
@click.option("--live", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Simulated changes per second while serving.")
@click.option("--reroute-ttl-s", type=click.FloatRange(min=0), default=900.0, hidden=True)
@click.option("--fd", type=int, default=None, hidden=True, help="Serve on this inherited socket.")
@click.option("--quiet", is_flag=True, hidden=True, help="Print nothing.")
@click.option("--parent-pid", type=int, default=None, hidden=True,
              help="Stop when this process (the one that started the server) is gone.")
@click.option("--orphan-cleanup", type=click.Path(file_okay=False), default=None, hidden=True,
              help="With --parent-pid: remove this directory when stopping for a gone parent.")
def serve(
    studies: int,
    seed: int,
    host: str,
    port: int,
    db_path: str,
    api_key: str | None,
    latency_ms: float,
    fail_rate: float,
    rate_limit: float | None,
    live: float | None,
    reroute_ttl_s: float,
    fd: int | None,
    quiet: bool,
    parent_pid: int | None,
    orphan_cleanup: str | None,
) -> None:
    """Serve the Avara Viewer Studies API on HOST:PORT until Ctrl-C.

    Example:

        viewerkit sandbox serve --studies 100000 --db demo.db --port 8765
    """
    try:
        import uvicorn

        from viewerkit.sandbox.app import create_app
        from viewerkit.sandbox.server import new_api_key, seed_store
    except ImportError as exc:
        raise click.ClickException(_INSTALL_HINT) from exc

    key = api_key or new_api_key()
    if not os.path.exists(db_path) or studies:
        seed_store(db_path, studies, seed, [key])
    app = create_app(
        db_path,
        api_keys=[key],
        latency_ms=latency_ms,
        fail_rate=fail_rate,
        rate_limit=rate_limit,
        live=live,
        live_seed=seed,
        fault_seed=seed,
        reroute_ttl_s=reroute_ttl_s,
    )
    if fd is not None:
        sock = socket.socket(fileno=fd)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)  # connections queue from here on, before uvicorn accepts
    bound_host, bound_port = sock.getsockname()[:2]
    if not quiet:
        click.echo(f"Avara Viewer sandbox on http://{bound_host}:{bound_port}")
        click.echo(f"  AVARA_BASE_URL=http://{bound_host}:{bound_port}")
        click.echo(f"  AVARA_API_KEY={key}")
        click.echo(f"  database: {db_path}  (Ctrl-C to stop)")
    # the access log is off: reroute URLs carry secret tokens in their query strings
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    orphaned = threading.Event()
    if parent_pid is not None:
        _stop_when_orphaned(server, parent_pid, orphaned)
    server.run(sockets=[sock])
    if orphaned.is_set() and orphan_cleanup is not None:
        # the parent died before its running() could remove its temporary directory
        shutil.rmtree(orphan_cleanup, ignore_errors=True)


def _stop_when_orphaned(server: Any, parent_pid: int, orphaned: threading.Event) -> None:
    """A server started by ``running()`` stops when its parent dies (e.g. a killed test run)
    instead of lingering on the machine."""

    def watch() -> None:
        while not server.should_exit:
            if os.getppid() != parent_pid:
                orphaned.set()
                server.should_exit = True
                return
            time.sleep(1.0)

    threading.Thread(target=watch, name="viewerkit-sandbox-parent-watch", daemon=True).start()
