"""Run the sandbox: ``running(...)`` starts a real uvicorn server on a loopback port.

By default the server runs in a subprocess (``python -m viewerkit.sandbox serve``), so a
test can kill it and a benchmark can measure the client's CPU apart from the server's; with
``in_thread=True`` it runs in a thread of this process. The listening socket is bound here
and handed to the server, so the port is known before the server starts and a restart can
reuse it.

Example (not run by doctest: it starts a server)::

    with running(studies=2000, seed=7) as sandbox:
        client = avara.Avara(base_url=sandbox.base_url, api_key=sandbox.api_key)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx

__all__ = ["running", "Sandbox", "seed_store", "serving_key", "API_KEY_ENV", "new_api_key"]

#: Environment variable through which the serve command receives its API key.
API_KEY_ENV = "VIEWERKIT_SANDBOX_API_KEY"


def new_api_key() -> str:
    """A fresh random sandbox key, ``sk-sandbox-`` + 32 hex."""
    return "sk-sandbox-" + secrets.token_hex(16)


def seed_store(
    db_path: str | os.PathLike[str],
    studies: int,
    seed: int,
    api_keys: list[str],
    users: int | None = None,
) -> None:
    """Fill a new database with a synthetic world of ``studies`` studies and a roster of
    ``users`` users (default: as ``generate_world`` has it); a no-op if it has data."""
    from viewerkit.sandbox.store import Store

    store = Store(db_path)
    try:
        if store.is_empty():
            from viewerkit.sandbox.synth import generate_world

            store.insert_world(generate_world(studies, seed=seed, users=users))
        store.add_api_keys(api_keys)
    finally:
        store.close()


def serving_key(db_path: str | os.PathLike[str], api_key: str | None = None, *, rotate: bool = False) -> str:
    """The bearer key a server on the database at ``db_path`` accepts, kept in the database
    so that a restart serves with the same key (one cache namespace across restarts).

    ``api_key`` when given, else the database's kept key, else a new one; the key returned
    becomes the kept one. ``rotate=True`` replaces the kept key with ``api_key`` or a new
    one and revokes the old (it stops working; the studies it created still name it).
    Other keys the database holds are left as they are.

    >>> import tempfile, os
    >>> db = os.path.join(tempfile.mkdtemp(), "kept.db")
    >>> first = serving_key(db)
    >>> serving_key(db) == first, serving_key(db, rotate=True) == first
    (True, False)
    """
    from viewerkit.sandbox.store import Store

    store = Store(db_path)
    try:
        kept = store.kept_api_key()
        key = api_key or (None if rotate else kept) or new_api_key()
        store.keep_api_key(key)
        if rotate and kept is not None and kept != key:
            store.revoke_api_key(kept)
        return key
    finally:
        store.close()


def _check_db_folder(what: str, db_path: str) -> None:
    from viewerkit.errors import Reason, ValidationError

    path = Path(db_path)
    if path.is_dir():
        raise ValidationError.one(what, "db_path", db_path, Reason.IS_A_FOLDER)
    if not path.parent.is_dir():
        raise ValidationError.one(
            what, "db_path", db_path, Reason.NO_SUCH_FOLDER, detail=f"no folder {path.parent}"
        )


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.set_inheritable(True)
    except OSError:
        sock.close()  # a port in use: no socket left for the garbage collector to warn about
        raise
    return sock


class Sandbox:
    """A running sandbox server: ``base_url``, ``api_key``, ``db_path`` and its controls."""

    def __init__(
        self,
        *,
        db_path: str,
        api_key: str,
        host: str,
        port: int,
        knobs: dict[str, Any],
        in_thread: bool,
        workdir: str,
        owns_workdir: bool = False,
    ) -> None:
        self.db_path = db_path
        self._api_key = api_key
        self.host = host
        self.port = port
        self._knobs = knobs
        self.in_thread = in_thread
        self._workdir = workdir
        self._owns_workdir = owns_workdir
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._sock: socket.socket | None = None
        self._log: IO[bytes] | None = None

    @property
    def api_key(self) -> str:
        """The bearer key the server accepts."""
        return self._api_key

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``"""
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        mode = "thread" if self.in_thread else "subprocess"
        return f"<Sandbox {self.base_url} db={self.db_path!r} ({mode})>"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start serving (on the same port if it is free, else on a new one)."""
        try:
            sock = _bind(self.host, self.port)
        except OSError:
            sock = _bind(self.host, 0)
        self.port = sock.getsockname()[1]
        try:
            try:
                if self.in_thread:
                    self._start_thread(sock)
                else:
                    self._start_process(sock)
            finally:
                if self._sock is not sock:
                    sock.close()  # a child holds its own copy; a thread that never started none
            self._wait_ready(timeout)
        except BaseException:
            # Ctrl-C or a failure while starting: leave no server, socket or open log behind
            self.stop()
            raise

    def _start_thread(self, sock: socket.socket) -> None:
        import uvicorn

        from viewerkit.sandbox.app import create_app

        knobs = dict(self._knobs)
        seed = knobs.pop("seed", 0)
        app = create_app(
            self.db_path,
            api_keys=[self._api_key],
            fault_seed=seed,
            live_seed=seed,
            public_base_url=self.base_url,
            **knobs,
        )
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        self._server = server
        self._sock = sock
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="viewerkit-sandbox", daemon=True
        )
        self._thread.start()

    def _start_process(self, sock: socket.socket) -> None:
        args = [sys.executable, "-m", "viewerkit.sandbox", "serve", "--db", self.db_path]
        args += ["--fd", str(sock.fileno()), "--quiet", "--parent-pid", str(os.getpid())]
        if self._owns_workdir:
            # if this process dies before running() removes its temporary directory, the child does
            args += ["--orphan-cleanup", self._workdir]
        knobs = self._knobs
        if knobs.get("latency_ms"):
            args += ["--latency-ms", str(knobs["latency_ms"])]
        if knobs.get("fail_rate"):
            args += ["--fail-rate", str(knobs["fail_rate"])]
        if knobs.get("rate_limit") is not None:
            args += ["--rate-limit", str(knobs["rate_limit"])]
        if knobs.get("live"):
            args += ["--live", str(knobs["live"])]
        args += ["--reroute-ttl-s", str(knobs.get("reroute_ttl_s", 900))]
        args += ["--seed", str(knobs.get("seed", 0)), "--studies", "0"]
        env = dict(os.environ)
        env[API_KEY_ENV] = self._api_key
        self._log = open(os.path.join(self._workdir, f"server-{self.port}.log"), "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            args,
            env=env,
            pass_fds=(sock.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = self.base_url + "/_sandbox/health"
        with httpx.Client(timeout=2.0, trust_env=False) as http:  # no proxy: see _http
            while True:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(f"sandbox server exited early:\n{self._server_log()}")
                if self._thread is not None and not self._thread.is_alive():
                    raise RuntimeError("sandbox server thread exited early")
                try:
                    if http.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sandbox server did not answer within {timeout:g} s")
                time.sleep(0.05)

    def _server_log(self) -> str:
        path = os.path.join(self._workdir, f"server-{self.port}.log")
        try:
            return Path(path).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop serving, gracefully (the database stays)."""
        if self._process is not None:
            process, self._process = self._process, None
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._close_log()
        if self._thread is not None:
            thread, self._thread = self._thread, None
            self._server.should_exit = True
            thread.join(timeout=15)
            self._server = None
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def kill(self) -> None:
        """Kill the server process at once (SIGKILL), as a crash would."""
        if self._process is None:
            raise RuntimeError("kill() needs a subprocess sandbox (in_thread=False)")
        process, self._process = self._process, None
        process.kill()
        process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop (if running) and start again on the same database, on the same port if free."""
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        """The server process ID (subprocess mode)."""
        return None if self._process is None else self._process.pid

    # -- controls --------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        # the sandbox talks to itself on loopback: never through a proxy of the environment
        # (HTTP_PROXY / HTTPS_PROXY / ALL_PROXY), which would not reach 127.0.0.1
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self._api_key}"},
            timeout=30.0,
            trust_env=False,
        )

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        """Change ``latency_ms``, ``fail_rate`` and/or ``rate_limit`` while running."""
        with self._http() as http:
            response = http.post("/_sandbox/faults", json=knobs)
        if response.status_code != 200:
            raise ValueError(response.json()["error"]["message"])
        self._knobs.update(knobs)
        result: dict[str, Any] = response.json()
        return result

    def faults(self) -> dict[str, Any]:
        """The fault knobs now: ``latency_ms``, ``fail_rate``, ``rate_limit`` and the
        ``fail_next`` rules (each with ``remaining`` and ``struck``)."""
        with self._http() as http:
            response = http.get("/_sandbox/faults")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def fail_next(
        self,
        count: int,
        *,
        method: str | None = None,
        path: str | None = None,
        when: str = "before",
        how: str = "503",
    ) -> dict[str, Any]:
        """Make exactly the next ``count`` API requests matching ``method`` and ``path`` fail.

        ``path`` is an exact ``/v1/...`` path or a shell-style pattern
        (``/v1/viewer/studies/*``); None matches any. ``when="before"``: the request is not
        handled; ``"after"``: it is handled (a write is committed) and its answer lost.
        ``how``: ``"500"``, ``"503"`` or ``"drop"`` (the connection is cut mid-answer).
        Returns the armed rule (``id``, ..., ``remaining``, ``struck``: see :meth:`faults`);
        raises ValueError for a bad argument. Armed rules live in the server: a restart
        clears them. Example::

            sandbox.fail_next(1, method="POST", path="/v1/viewer/studies", when="after")
        """
        knobs = {"count": count, "method": method, "path": path, "when": when, "how": how}
        with self._http() as http:
            response = http.post("/_sandbox/faults/fail-next", json=knobs)
        if response.status_code != 200:
            raise ValueError(response.json()["error"]["message"])
        rule: dict[str, Any] = response.json()
        return rule

    def clear_fail_next(self) -> None:
        """Disarm every ``fail_next`` rule (and forget the spent ones)."""
        with self._http() as http:
            http.delete("/_sandbox/faults/fail-next").raise_for_status()

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The API requests the server received since it started (the last 10,000; those
        after the one numbered ``since``), oldest first: ``seq``, ``method``, ``path``, ``status`` (what the client
        got: a code, ``"dropped"``, or None while in flight), ``handled`` (the API's own
        status, also when a fault lost it; None when not handled) and ``fault`` (None or
        ``{"when", "how", "source"}``). Sandbox routes are not in it."""
        with self._http() as http:
            response = http.get("/_sandbox/requests", params={"since": since})
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()
        return rows

    def audit(
        self,
        study_id: str | None = None,
        *,
        outcome: str | None = None,
        source: str | None = None,
        since: int = 0,
    ) -> list[dict[str, Any]]:
        """The write audit, oldest first: ONE entry per write request the server handled
        (create, update, cancel, uncancel), whatever its outcome, so a doubled request shows
        as two entries. Optionally only those of one ``study_id``, one ``outcome``, one
        ``source``, or after the entry numbered ``since``.

        Each entry is a dict:

        - ``seq``: 1, 2, ... in the order recorded (kept in the database: the audit
          survives a restart on the same ``db_path``, and numbering goes on).
        - ``at``: when the server handled it, by its clock: ISO 8601 UTC with milliseconds
          (``2026-11-27T16:30:43.197Z``). For a ``changed`` entry it is the study's new
          ``updatedAt`` (``createdAt`` for a create).
        - ``source``: ``"api"`` (a request), ``"live"`` (live mode's own traffic) or
          ``"store"`` (a direct call of the Store); None for an entry moved from a database
          made before this audit.
        - ``operation``: ``"create"``, ``"update"``, ``"cancel"`` or ``"uncancel"``; with
          ``method`` and ``path`` of the request (None unless ``api``). A reroute URL is no
          write (it stores nothing) and has no entry.
        - ``study_id``: the study the request named or identified (for a create, the new
          study; for a create refused 409, the study holding its UID), else None.
          ``study_instance_uid``: the UID the request gave (create; cancel / uncancel by
          UID), else None.
        - ``fields``: sorted wire names of the study fields the request gave (``[]`` for
          cancel / uncancel); ``changed_fields``: those it changed (``["isCancelled"]`` for
          a cancel / uncancel that changed). Names only: no value, key or URL is recorded.
        - ``outcome``: ``"changed"`` (the study changed), ``"noop"`` (handled, every value
          already so: e.g. a second cancel), ``"refused"`` (a 4xx: authentication,
          validation, not found, conflict, a body over 1 MiB) or ``"error"`` (a 500 of the
          sandbox's own: an exception in the server, such as a client gone before its
          body arrived; never a fault knob, nothing changed).
        - ``status``: the status the API answered (also when a fault then lost it).
        - ``fault``: None, or the fault that struck it (``{"when": "after", "how": "drop",
          "source": "fail_next"}``): handled, committed, its answer lost.
        - ``request``: the ``seq`` of this request in :meth:`requests` of the server run
          that handled it (None unless ``api``).

        Consistent with :meth:`requests`: every write request there with a ``handled``
        status has exactly one entry here; a request failed ``when="before"`` or refused
        by the rate limit (429) was not handled and has none. Example::

            sandbox.fail_next(1, method="PATCH", path="/v1/viewer/studies/*", when="after", how="drop")
            client.update_study(study_id, severity="stat")  # dropped, retried by the client
            [(e["outcome"], e["fault"] and e["fault"]["how"]) for e in sandbox.audit(study_id)]
            # [("changed", "drop"), ("noop", None)]
        """
        params: dict[str, Any] = {} if study_id is None else {"study_id": study_id}
        if outcome is not None:
            params["outcome"] = outcome
        if source is not None:
            params["source"] = source
        if since:
            params["since"] = since
        with self._http() as http:
            response = http.get("/_sandbox/audit", params=params)
        if response.status_code == 400:
            raise ValueError(response.json()["error"]["message"])
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()
        return rows


class _Termination:
    """Makes SIGTERM unwind ``running()`` as Ctrl-C does, so its server stops and its
    temporary folder goes.

    While a ``running()`` entered from the main thread is open, and SIGTERM had the default
    handler (which would end the process without running any ``finally``), SIGTERM raises
    ``SystemExit(143)`` in the main thread. A SIGTERM that arrives during the cleanup itself
    is held until the cleanup is done. The default handler is restored when the
    ``running()`` that installed it closes. A handler of the program's own (or SIG_IGN) is left alone, and
    nothing is installed from another thread (Python only lets the main thread do so).
    """

    def __init__(self) -> None:
        self._held = 0
        self._pending = False

    def _on_sigterm(self, signum: int, frame: object) -> None:
        if self._held:
            self._pending = True
            return
        raise SystemExit(128 + signum)

    @contextlib.contextmanager
    def unwinding(self) -> Iterator[None]:
        """SIGTERM unwinds the block (see the class). An inner ``running()`` finds the
        handler of an outer one in place and leaves it to the outer one to restore."""
        installed = False
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, self._on_sigterm)
            installed, self._pending = True, False
        try:
            yield
        finally:
            if installed and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A cleanup that a SIGTERM does not interrupt; one that came meanwhile is raised
        after it, unless the program is already exiting."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        exiting = isinstance(sys.exc_info()[1], (SystemExit, KeyboardInterrupt))
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
        if self._pending and not self._held:
            self._pending = False
            if not exiting:
                raise SystemExit(128 + signal.SIGTERM)


_TERMINATION = _Termination()


@contextlib.contextmanager
def running(
    studies: int = 0,
    seed: int = 0,
    *,
    db_path: str | os.PathLike[str] | None = None,
    api_key: str | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    latency_ms: float = 0,
    fail_rate: float = 0.0,
    rate_limit: float | None = None,
    live: float | None = None,
    in_thread: bool = False,
    reroute_ttl_s: float = 900,
    users: int | None = None,
) -> Iterator[Sandbox]:
    """Seed (when the database is new) and run a sandbox server; yield its ``Sandbox``.

    SIGTERM ends it as Ctrl-C does (server stopped, temporary folder removed; see
    ``_Termination``), when entered from the main thread.

    The database is a temporary file, removed on exit, unless ``db_path`` is given (a
    ``db_path`` in a folder that does not exist is a ``ValidationError``). The key is
    ``api_key`` when given, else the database's kept key (see ``serving_key``), else a
    fresh random one; it reaches a subprocess through the environment, never its command
    line. ``users`` is the size of a new database's roster (the user list; default: as
    ``viewerkit.sandbox.synth.generate_world`` has it): a knob for benchmarks.
    """
    if db_path is not None:
        _check_db_folder("running", os.fspath(db_path))
    with _TERMINATION.unwinding():
        workdir = tempfile.mkdtemp(prefix="viewerkit-sandbox-")
        sandbox: Sandbox | None = None
        try:
            path = os.fspath(db_path) if db_path is not None else os.path.join(workdir, "sandbox.db")
            if studies or users or not Path(path).exists():
                seed_store(path, studies, seed, [], users=users)
            key = serving_key(path, api_key)
            sandbox = Sandbox(
                db_path=path,
                api_key=key,
                host=host,
                port=port,
                knobs={
                    "latency_ms": latency_ms,
                    "fail_rate": fail_rate,
                    "rate_limit": rate_limit,
                    "live": live,
                    "reroute_ttl_s": reroute_ttl_s,
                    "seed": seed,
                },
                in_thread=in_thread,
                workdir=workdir,
                owns_workdir=True,
            )
            sandbox.start()
            yield sandbox
        finally:
            with _TERMINATION.held():
                try:
                    if sandbox is not None:
                        sandbox.stop()
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
