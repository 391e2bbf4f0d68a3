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

__all__ = ["running", "Sandbox", "seed_store", "API_KEY_ENV", "new_api_key"]

#: Environment variable through which the serve command receives its API key.
API_KEY_ENV = "VIEWERKIT_SANDBOX_API_KEY"


def new_api_key() -> str:
    """A fresh random sandbox key, ``sk-sandbox-`` + 32 hex."""
    return "sk-sandbox-" + secrets.token_hex(16)


def seed_store(db_path: str | os.PathLike[str], studies: int, seed: int, api_keys: list[str]) -> None:
    """Fill a new database with a synthetic world of ``studies`` studies (no-op if it has data)."""
    from viewerkit.sandbox.store import Store

    store = Store(db_path)
    try:
        if store.is_empty():
            from viewerkit.sandbox.synth import generate_world

            store.insert_world(generate_world(studies, seed=seed))
        store.add_api_keys(api_keys)
    finally:
        store.close()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.set_inheritable(True)
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
            self.db_path, api_keys=[self._api_key], fault_seed=seed, live_seed=seed, **knobs
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

    def audit(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """Every applied mutation (``study_id``, ``operation``, ``fields``, ``at``), oldest first."""
        params = {} if study_id is None else {"study_id": study_id}
        with self._http() as http:
            response = http.get("/_sandbox/audit", params=params)
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()
        return rows


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
) -> Iterator[Sandbox]:
    """Seed (when the database is new) and run a sandbox server; yield its ``Sandbox``.

    The database is a temporary file, removed on exit, unless ``db_path`` is given. The key
    is a fresh random one unless ``api_key`` is given; it reaches a subprocess through the
    environment, never its command line.
    """
    workdir = tempfile.mkdtemp(prefix="viewerkit-sandbox-")
    try:
        path = os.fspath(db_path) if db_path is not None else os.path.join(workdir, "sandbox.db")
        key = api_key or new_api_key()
        if studies or not Path(path).exists():
            seed_store(path, studies, seed, [key])
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
        try:
            yield sandbox
        finally:
            sandbox.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
