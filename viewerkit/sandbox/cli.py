"""``viewerkit sandbox serve``: run a local Avara Viewer API server until interrupted.

The command imports FastAPI and uvicorn only when it runs; without them it says which
``pip install`` brings them.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import click

from viewerkit.errors import ValidationError

__all__ = ["sandbox", "serve"]

_DEFAULT_PORT = 8765
_INSTALL_HINT = "the sandbox needs FastAPI and uvicorn: pip install 'viewerkit[sandbox]'"


@click.group()
def sandbox() -> None:
    """The local Avara Viewer API sandbox server.

    Example:

    \b
        viewerkit sandbox serve --studies 20000 --db sandbox.db --port 8765
    """


@sandbox.command()
@click.option("--studies", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Studies to generate when the database is new.")
@click.option("--users", type=click.IntRange(min=0), default=None,
              help="Users in the roster (the user list) when the database is new. "
                   "Default: the radiologists the studies need, a few new ones, and staff.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic world.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port to listen on (0: any free port). Default: the port this database "
                   "last served on, else 8765.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default="sandbox.db",
              show_default=True, help="SQLite database file (kept between runs).")
@click.option("--api-key", envvar="VIEWERKIT_SANDBOX_API_KEY", default=None,
              help="Bearer key to accept; it becomes the database's kept key. Default: the "
                   "key this database kept from its last run, else a fresh random one.")
@click.option("--rotate-key", is_flag=True,
              help="Replace the database's kept key with a new one (or --api-key) and "
                   "revoke the old: it stops working.")
@click.option("--latency-ms", type=click.FloatRange(0, 600_000), default=0.0,
              help="Added latency per request, in milliseconds.")
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of requests answered 500/503 or dropped.")
@click.option("--rate-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Requests per second per key before 429.")
@click.option("--live", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Simulated changes per second while serving.")
@click.option("--public-url", default=None, metavar="URL",
              help="Where clients reach this server (reroute links point there); "
                   "default: http://HOST:PORT as bound.")
@click.option("--reroute-ttl-s", type=click.FloatRange(min=0), default=900.0, hidden=True,
              help="Seconds a reroute link stays valid (tests shorten it).")
@click.option("--fd", type=int, default=None, hidden=True, help="Serve on this inherited socket.")
@click.option("--quiet", is_flag=True, hidden=True, help="Print nothing.")
@click.option("--parent-pid", type=int, default=None, hidden=True,
              help="Stop when this process (the one that started the server) is gone.")
@click.option("--orphan-cleanup", type=click.Path(file_okay=False), default=None, hidden=True,
              help="With --parent-pid: remove this directory when stopping for a gone parent.")
def serve(
    studies: int,
    users: int | None,
    seed: int,
    host: str,
    port: int | None,
    db_path: str,
    api_key: str | None,
    rotate_key: bool,
    latency_ms: float,
    fail_rate: float,
    rate_limit: float | None,
    live: float | None,
    public_url: str | None,
    reroute_ttl_s: float,
    fd: int | None,
    quiet: bool,
    parent_pid: int | None,
    orphan_cleanup: str | None,
) -> None:
    """Serve the Avara Viewer Studies API on HOST:PORT until Ctrl-C.

    A kept database keeps its key and port: a restart on the same --db serves with the key
    printed the first time, on the same port, so clients and caches stay pointed at one
    server. --rotate-key issues a new key and revokes the old one.

    Example:

    \b
        viewerkit sandbox serve --studies 100000 --db demo.db --port 8765
    """
    try:
        import uvicorn

        from viewerkit.sandbox.app import create_app
        from viewerkit.sandbox.server import seed_store, serving_key
    except ImportError as exc:
        raise click.ClickException(_INSTALL_HINT) from exc

    folder = os.path.dirname(os.path.abspath(db_path))
    if not os.path.isdir(folder):
        raise click.ClickException(f"cannot open the database {db_path}: no folder {folder}")
    with _one_line_db_errors(db_path):
        if not os.path.exists(db_path) or studies or users:
            try:
                seed_store(db_path, studies, seed, [], users=users)
            except ValueError as exc:
                raise click.ClickException(f"--users: {exc}") from exc
        key = serving_key(db_path, api_key, rotate=rotate_key)
        if port is None and fd is None:
            port = _kept_port(db_path)
    if fd is not None:
        sock = socket.socket(fileno=fd)
    else:
        assert port is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(512)  # connections queue from here on, before uvicorn accepts
        except OSError as exc:
            sock.close()
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    bound_host, bound_port = sock.getsockname()[:2]
    base_url = f"http://{bound_host}:{bound_port}"
    try:
        with _one_line_db_errors(db_path):
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
                public_base_url=public_url or base_url,
            )
            if fd is None:
                _keep_port(db_path, bound_port)
    except ValidationError as exc:
        sock.close()
        raise click.ClickException(f"--public-url {public_url!r} is not an http:// or https:// URL") from exc
    except BaseException:
        sock.close()
        raise
    if not quiet:
        # the two lines the other commands read their server and key from, as shell commands
        # to paste as they are (a bare NAME=value would not reach the commands it runs)
        click.echo(f"Avara Viewer sandbox on {base_url}")
        click.echo(f"  export AVARA_BASE_URL={shlex.quote(base_url)}")
        click.echo(f"  export AVARA_API_KEY={shlex.quote(key)}")
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


@contextlib.contextmanager
def _one_line_db_errors(db_path: str) -> Iterator[None]:
    """A database that cannot be used (a folder without write access, a file that is not a
    SQLite database) is a one-line error, not a traceback."""
    try:
        yield
    except sqlite3.Error as exc:
        raise click.ClickException(f"cannot use {db_path} as the sandbox database: {exc}") from exc


def _kept_port(db_path: str) -> int:
    from viewerkit.sandbox.store import Store

    store = Store(db_path)
    try:
        kept = store.kept_port()
    finally:
        store.close()
    return _DEFAULT_PORT if kept is None else kept


def _keep_port(db_path: str, port: int) -> None:
    from viewerkit.sandbox.store import Store

    store = Store(db_path)
    try:
        store.keep_port(port)
    finally:
        store.close()


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
