"""The bulk journal: one SQLite file (stdlib ``sqlite3``, WAL, ``synchronous=FULL``) that
records every bulk run so that it can be resumed, audited and undone.

Several runs share one file. For each run: its ID, when it started and finished, the OS
user who ran it, an optional reason, the server's base URL, the input columns. For each plan
row: its label and input cells (JSON), the study, the intended change (``change``: wire
field -> desired value; ``meta:<key>`` for one metadata key), the values the row expected
to find (``expected``), the before-image (the wire study as read, so metadata null and
``{}`` stay apart), the after-image, its status and error. Every request is written
(``requests``: run, row, step, ``sent_at``) and committed before it is sent, and confirmed
(``outcome``, ``confirmed_at``) after its answer: a request with no outcome was sent and
its answer never recorded, which :func:`viewerkit.bulk.resume` reads back from the server.

The API key is never written: nothing the journal stores comes from the client but its
base URL.

>>> import tempfile, os
>>> with Journal(os.path.join(tempfile.mkdtemp(), "j.sqlite")) as journal:
...     journal.run_ids()
[]
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from viewerkit.errors import LockTimeout, Reason, ValidationError
from viewerkit.files import file_lock

__all__ = ["Journal", "JournalRow", "RunInfo", "new_run_id", "now_text", "os_user"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,            -- apply | undo
    undo_of TEXT,                  -- the run an undo reverses
    started_at TEXT NOT NULL,
    finished_at TEXT,
    user TEXT NOT NULL,
    reason TEXT,
    base_url TEXT NOT NULL,
    force INTEGER NOT NULL,
    columns TEXT NOT NULL          -- the plan's input columns, JSON list
);
CREATE TABLE IF NOT EXISTS rows (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    position INTEGER NOT NULL,
    label TEXT NOT NULL,           -- JSON: the plan row's label (a CSV line number ...)
    cells TEXT NOT NULL,           -- JSON: the plan row's input cells, column -> value
    study_id TEXT,
    change TEXT NOT NULL,          -- JSON: wire field (or meta:<key>) -> desired value
    expected TEXT NOT NULL,        -- JSON: the values the row expects to find (same keys)
    before TEXT,                   -- JSON: the wire study before our first request
    after TEXT,                    -- JSON: the wire study after our last request
    status TEXT NOT NULL,          -- pending | sending | applied | noop | conflict | failed
    sent INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (run_id, position)
);
-- a new run looks up the other runs' rows of its studies (Journal.start_run)
CREATE INDEX IF NOT EXISTS rows_by_study ON rows (study_id);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,        -- random: see Journal.sending
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    step TEXT NOT NULL,            -- uncancel | update | cancel | read
    sent_at TEXT NOT NULL,
    outcome TEXT,                  -- null: sent, answer not recorded
    confirmed_at TEXT
);
CREATE INDEX IF NOT EXISTS requests_row ON requests (run_id, position);
"""

#: Row statuses that are final (a resume leaves them as they are).
FINAL_STATUSES = ("applied", "noop", "conflict", "failed")


def _quietly(path: Path) -> None:
    """A lock's wait that is not worth a log line (a liveness probe, a refused start)."""


def now_text() -> str:
    """Now, ISO 8601 UTC with milliseconds and ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_run_id() -> str:
    """A new run ID: ``run_`` + UTC time + random hex, sortable by start time.

    >>> new_run_id().startswith("run_")
    True
    """
    return "run_" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "_" + secrets.token_hex(3)


def os_user() -> str:
    """Who runs this process (the OS user), or ``"unknown"``."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment nor the password database
        return "unknown"


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


@dataclass(frozen=True)
class RunInfo:
    """One run of the journal."""

    run_id: str
    kind: str
    undo_of: str | None
    started_at: str
    finished_at: str | None
    user: str
    reason: str | None
    base_url: str
    force: bool
    columns: list[str]


@dataclass
class JournalRow:
    """One plan row of a run, as the journal holds it."""

    position: int
    label: Any
    cells: dict[str, Any]
    study_id: str | None
    change: dict[str, Any]
    expected: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    status: str
    sent: bool
    error: str | None
    #: the steps sent whose answer was never recorded
    unconfirmed: int = 0


@dataclass
class _Pending:
    """Statements waiting for the next group commit."""

    statements: list[tuple[str, tuple[Any, ...]]]
    done: bool = False
    error: BaseException | None = None


class Journal:
    """A journal file (created with its folder if missing). Safe to share between the
    threads of one run: each write is one transaction, committed (and synced) before it
    returns. A context manager; :meth:`close` when done.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValidationError.one("bulk journal", "journal", os.fspath(path), Reason.IS_A_FOLDER)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the connection, and the one transaction being committed
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _write(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Commit ``statements`` as part of the next transaction, and return once it is
        committed (synced). Group commit: the threads of a run that write at the same time
        share one transaction, one sync; each returns only when its own statements are on
        disk."""
        entry = _Pending(list(statements))
        with self._queue_lock:
            self._queue.append(entry)
        with self._lock:
            if entry.done:
                if entry.error is not None:
                    raise entry.error
                return
            with self._queue_lock:
                batch, self._queue = self._queue, []
            error: BaseException | None = None
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for pending in batch:
                    for sql, args in pending.statements:
                        self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                error = exc
            for pending in batch:
                pending.error, pending.done = error, True
        if entry.error is not None:
            raise entry.error

    # -- runs ---------------------------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        *,
        kind: str,
        base_url: str,
        force: bool,
        columns: list[str],
        reason: str | None,
        rows: Sequence[JournalRow],
        undo_of: str | None = None,
        read_at: str | None = None,
        live: Collection[str] = (),
    ) -> None:
        """Record a new run and all its rows (status ``pending`` or already final), in one
        transaction. With ``read_at`` (when the run's before-images were read, as
        :func:`now_text`), a pending row whose study another run of this journal is changing
        (a pending or sending row of a run in ``live``, the runs :meth:`live_runs` found
        running) or changed after ``read_at`` (an applied row settled since) becomes a
        ``conflict`` in the same transaction: two
        analysts (two boards, two scripts) sharing a journal never overwrite each other's
        change unseen, which the API alone cannot promise (it has no conditional write)."""
        at = now_text()
        statements: list[tuple[str, tuple[Any, ...]]] = [(
            "INSERT INTO runs (run_id, kind, undo_of, started_at, user, reason, base_url, force, columns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, kind, undo_of, at, os_user(), reason, base_url, int(force), _dumps(columns)),
        )]
        for row in rows:
            statements.append((
                "INSERT INTO rows (run_id, position, label, cells, study_id, change, expected, before,"
                " after, status, sent, error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, row.position, _dumps(row.label), _dumps(row.cells), row.study_id,
                 _dumps(row.change), _dumps(row.expected), _dumps(row.before) if row.before is not None else None,
                 _dumps(row.after) if row.after is not None else None, row.status, int(row.sent), row.error, at),
            ))
        if read_at is not None:
            statements.append(self._claim_statement(run_id, read_at, live, at))
        self._write(statements)

    def _claim_statement(
        self, run_id: str, read_at: str, live: Collection[str], at: str
    ) -> tuple[str, tuple[Any, ...]]:
        """The UPDATE that marks conflict the pending rows of ``run_id`` whose study a
        ``live`` run is changing, or any run changed after ``read_at`` (see :meth:`start_run`)."""
        running = sorted(set(live) - {run_id})
        marks = ", ".join("?" * len(running)) or "NULL"
        others = (
            "FROM rows o WHERE o.run_id != ? AND o.study_id = rows.study_id"
            f" AND ((o.status IN ('pending', 'sending') AND o.run_id IN ({marks}))"
            " OR (o.status = 'applied' AND o.updated_at >= ?))"
        )
        sql = (
            "UPDATE rows SET status = 'conflict', error = 'another run of this journal (' || "
            f"(SELECT o.run_id {others} ORDER BY o.updated_at DESC LIMIT 1) || ') is changing this study or"
            " changed it after this run read it: preview again once that run is done', updated_at = ?"
            f" WHERE run_id = ? AND status = 'pending' AND study_id IS NOT NULL AND EXISTS (SELECT 1 {others})"
        )
        probe = (run_id, *running, read_at)
        return sql, (*probe, at, run_id, *probe)

    def claim(self, run_id: str, *, read_at: str, live: Collection[str]) -> None:
        """For a resumed run: mark conflict its pending rows whose study another live run is
        changing or any run changed after ``read_at`` (as :meth:`start_run` does for a new run)."""
        self._write([self._claim_statement(run_id, read_at, live, now_text())])

    # -- which runs are running -----------------------------------------------------------------

    def _lock_path(self, run_id: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{run_id}.lock")

    @contextlib.contextmanager
    def running(self, run_id: str) -> Iterator[None]:
        """Hold the run's lock while it sends (a lock file beside the journal, ``flock``: the
        system releases it when the process ends however it ends, so a killed or Ctrl-C'd run
        is never taken as running). ``ValidationError`` (field ``run``) when the run is running
        already, in this process or another."""
        path = self._lock_path(run_id)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(file_lock(path, timeout=0, on_wait=_quietly, holder="a run of this journal"))
            except LockTimeout:
                raise ValidationError.one(
                    "bulk journal", "run", run_id, Reason.CONFLICT,
                    detail="the run is still running (in this process or another): wait for it to end",
                ) from None
            yield
            path.unlink(missing_ok=True)  # still held: a checker opening it now finds it gone or free

    def live_runs(self) -> set[str]:
        """The unfinished runs whose lock is held now: running, in this process or another."""
        with self._lock:
            unfinished = [r[0] for r in self._db.execute("SELECT run_id FROM runs WHERE finished_at IS NULL")]
        alive = set()
        for run_id in unfinished:
            path = self._lock_path(run_id)
            if not path.exists():
                continue
            try:
                with file_lock(path, timeout=0, on_wait=_quietly):
                    pass
            except LockTimeout:
                alive.add(run_id)
        return alive

    def finish_run(self, run_id: str) -> None:
        """Record that the run's rows all have a final status (or it was interrupted)."""
        self._write([("UPDATE runs SET finished_at = ? WHERE run_id = ?", (now_text(), run_id))])

    def run_ids(self) -> list[str]:
        """The runs of the journal, oldest first."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT run_id FROM runs ORDER BY started_at, rowid")]

    def run(self, run_id: str | None = None) -> RunInfo:
        """One run (None: the latest); ``ValidationError`` (field ``run``) when absent."""
        with self._lock:
            if run_id is None:
                found = self._db.execute("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()
            else:
                found = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if found is None:
            raise ValidationError.one(
                "bulk journal", "run", run_id, Reason.NOT_A_CHOICE,
                detail=f"no such run in {self.path}" if run_id else f"no run in {self.path}",
            )
        (rid, kind, undo_of, started, finished, user, reason, base_url, force, columns) = found
        return RunInfo(rid, kind, undo_of, started, finished, user, reason, base_url, bool(force), _loads(columns))

    def rows(self, run_id: str) -> list[JournalRow]:
        """The run's rows in plan order, with how many of their requests are unconfirmed."""
        with self._lock:
            found = self._db.execute(
                "SELECT position, label, cells, study_id, change, expected, before, after, status, sent,"
                " error, (SELECT count(*) FROM requests q WHERE q.run_id = r.run_id"
                " AND q.position = r.position AND q.outcome IS NULL)"
                " FROM rows r WHERE run_id = ? ORDER BY position",
                (run_id,),
            ).fetchall()
        return [
            JournalRow(p, _loads(lb), _loads(c), s, _loads(ch), _loads(ex), _loads(b), _loads(a), st, bool(se), e, u)
            for (p, lb, c, s, ch, ex, b, a, st, se, e, u) in found
        ]

    def status_counts(self) -> dict[str, dict[str, int]]:
        """Per run, how many rows have each status."""
        with self._lock:
            found = self._db.execute("SELECT run_id, status, count(*) FROM rows GROUP BY run_id, status").fetchall()
        out: dict[str, dict[str, int]] = {}
        for run_id, status, n in found:
            out.setdefault(run_id, {})[status] = n
        return out

    def runs(self) -> Iterator[tuple[RunInfo, int]]:
        """Every run and its number of rows, oldest first."""
        for run_id in self.run_ids():
            with self._lock:
                (n,) = self._db.execute("SELECT count(*) FROM rows WHERE run_id = ?", (run_id,)).fetchone()
            yield self.run(run_id), int(n)

    # -- requests -----------------------------------------------------------------------------

    def sending(self, run_id: str, position: int, step: str, before: dict[str, Any] | None) -> int:
        """Record, durably, that ``step`` of a row is about to be sent; its request number.
        The row's before-image is (re)written with it: the state the request was sent on."""
        at = now_text()
        request = secrets.randbits(62)  # not the table's rowid: the write may share a transaction
        self._write([
            ("INSERT INTO requests (id, run_id, position, step, sent_at) VALUES (?, ?, ?, ?, ?)",
             (request, run_id, position, step, at)),
            ("UPDATE rows SET status = 'sending', sent = 1, updated_at = ?, before = coalesce(?, before)"
             " WHERE run_id = ? AND position = ?",
             (at, _dumps(before) if before is not None else None, run_id, position)),
        ])
        return request

    def confirm(self, request: int, outcome: str) -> None:
        """Record the answer of a request (``changed``, ``noop``, ``refused``, ``read``)."""
        self._write([("UPDATE requests SET outcome = ?, confirmed_at = ? WHERE id = ?", (outcome, now_text(), request))])

    def settle(
        self,
        run_id: str,
        position: int,
        status: str,
        *,
        error: str | None = None,
        after: dict[str, Any] | None = None,
        before: dict[str, Any] | None = None,
        request: int | None = None,
        outcome: str | None = None,
        confirm_unknown: str | None = None,
    ) -> None:
        """Give a row its status (and error, after-image), confirming ``request`` with
        ``outcome`` in the same transaction; ``confirm_unknown`` confirms every request of
        the row still without an answer (after a read-back told what became of them)."""
        at = now_text()
        statements: list[tuple[str, tuple[Any, ...]]] = []
        if request is not None:
            statements.append(("UPDATE requests SET outcome = ?, confirmed_at = ? WHERE id = ?", (outcome, at, request)))
        if confirm_unknown is not None:
            statements.append((
                "UPDATE requests SET outcome = ?, confirmed_at = ? WHERE run_id = ? AND position = ?"
                " AND outcome IS NULL", (confirm_unknown, at, run_id, position),
            ))
        statements.append((
            "UPDATE rows SET status = ?, error = ?, after = coalesce(?, after), before = coalesce(?, before),"
            " updated_at = ? WHERE run_id = ? AND position = ?",
            (status, error, _dumps(after) if after is not None else None,
             _dumps(before) if before is not None else None, at, run_id, position),
        ))
        self._write(statements)
