"""Live mode: a background stream of study traffic while the sandbox serves.

``start_live(store, rate_per_s)`` starts a daemon thread that keeps the world moving at about
``rate_per_s`` operations a second: new studies arrive (40 %), radiologists complete open
ones (35 %), studies are reassigned (15 %), cancelled (5 %) or change severity (5 %). Every
change goes through the same ``Store`` methods the API uses, so the write audit and the
``updatedAt`` rules hold exactly as for API traffic; its audit entries have
``source="live"``. ``LiveWorld.stop()`` stops and joins it.

>>> import os, tempfile
>>> from datetime import datetime, timezone
>>> from viewerkit.sandbox.store import Store
>>> from viewerkit.sandbox.synth import generate_world
>>> store = Store(os.path.join(tempfile.mkdtemp(), "live.db"))
>>> store.insert_world(generate_world(30, seed=1, now=datetime.now(timezone.utc)))
>>> live = start_live(store, rate_per_s=200, seed=1)
>>> live.wait_for(operations=20, timeout=30)
True
>>> live.stop()
>>> live.running
False
>>> store.close()
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson

from viewerkit.sandbox.store import AuditNote
from viewerkit.sandbox.synth import (
    STUDY_CATALOG,
    UID_ROOT,
    draw_metadata,
    draw_study_description,
)

if TYPE_CHECKING:
    from viewerkit.sandbox.store import Store

__all__ = ["LiveWorld", "start_live", "OPERATION_MIX"]

log = logging.getLogger(__name__)

#: Share of each live operation.
OPERATION_MIX: Final = {
    "create": 0.40,
    "complete": 0.35,
    "reassign": 0.15,
    "cancel": 0.05,
    "severity": 0.05,
}
_OPERATIONS: Final = tuple(OPERATION_MIX)
_OPERATION_P: Final = np.array([OPERATION_MIX[op] for op in _OPERATIONS])
_SEVERITIES: Final = ("normal", "high", "stat")
# Radiologists read stat studies first: relative pick weight of an open study per severity.
_READ_PRIORITY: Final = {"normal": 1.0, "high": 3.0, "stat": 9.0}
# How many of the newest open studies live mode works on, and how often it re-reads them.
_POOL_SIZE: Final = 300
_POOL_REFRESH_S: Final = 1.0


class LiveWorld:
    """A running stream of live study traffic; ``stop()`` ends it (also as a context manager).

    ``applied`` counts the operations that changed a study, by kind.
    """

    def __init__(self, store: Store, rate_per_s: float, seed: int = 0) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be above 0, not {rate_per_s!r}")
        self.rate_per_s = float(rate_per_s)
        self.applied: Counter[str] = Counter()
        self._store = store
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._uid_serial = 0
        self._pool: list[tuple[str, str, str | None]] = []  # (study_id, severity, assigned_to)
        self._pool_read_at = 0.0
        self._thread = threading.Thread(target=self._run, name="viewerkit-sandbox-live", daemon=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LiveWorld {self.rate_per_s:g} ops/s, {sum(self.applied.values())} applied, {state}>"

    def __enter__(self) -> LiveWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the traffic thread runs."""
        return self._thread.is_alive()

    @property
    def operations(self) -> int:
        """How many operations changed a study so far."""
        return sum(self.applied.values())

    def start(self) -> LiveWorld:
        """Start the traffic thread (``start_live`` does this)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the traffic and wait for the thread: no change is made after this returns."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        with self._progress:
            self._progress.notify_all()

    def wait_for(self, operations: int, timeout: float) -> bool:
        """Wait until at least ``operations`` changes were applied; False on timeout or stop."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.operations < operations:
                left = deadline - time.monotonic()
                if left <= 0 or not self.running:
                    return self.operations >= operations
                self._progress.wait(min(left, 0.5))
        return True

    # -- the traffic thread ------------------------------------------------------------------

    def _run(self) -> None:
        conn = sqlite3.connect(self._store.path, timeout=30.0, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            # work goes to radiologists who can take it (not to staff, nor revoked users)
            users = [r[0] for r in conn.execute(
                "SELECT user_id FROM users WHERE clinic_role = 'Radiologist'"
                " AND can_manage_studies = 1 AND revoked = 0 ORDER BY user_id"
            )] or [r[0] for r in conn.execute("SELECT user_id FROM users ORDER BY user_id")]
            customers = [r[0] for r in conn.execute("SELECT customer_id FROM customers ORDER BY customer_id")]
            keys = [r[0] for r in conn.execute("SELECT api_key_id FROM api_keys ORDER BY api_key_id")]
            interval = 1.0 / self.rate_per_s
            due = time.monotonic()
            while not self._stop.is_set():
                due += float(self._rng.exponential(interval))
                # After a stall (a long write lock), resume the rate rather than burst to catch up.
                due = max(due, time.monotonic() - 1.0)
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                try:
                    kind = self._apply_one(conn, users, customers, keys)
                except sqlite3.Error as exc:  # a busy or closing database: skip this beat
                    log.debug("live operation skipped: %s", type(exc).__name__)
                    continue
                if kind is not None:
                    with self._progress:
                        self.applied[kind] += 1
                        self._progress.notify_all()
        finally:
            conn.close()

    def _open_pool(self, conn: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
        if time.monotonic() - self._pool_read_at > _POOL_REFRESH_S or not self._pool:
            self._pool = conn.execute(
                "SELECT study_id, severity, assigned_to FROM studies"
                " WHERE study_viewer_status = 'incomplete' AND is_cancelled = 0"
                " ORDER BY created_at DESC, study_id DESC LIMIT ?",
                (_POOL_SIZE,),
            ).fetchall()
            self._pool_read_at = time.monotonic()
        return self._pool

    def _pick_open(self, conn: sqlite3.Connection) -> tuple[str, str, str | None] | None:
        pool = self._open_pool(conn)
        if not pool:
            return None
        weights = np.array([_READ_PRIORITY.get(severity, 1.0) for _, severity, _ in pool])
        index = int(self._rng.choice(len(pool), p=weights / weights.sum()))
        return pool[index]

    def _forget(self, study_id: str) -> None:
        self._pool = [entry for entry in self._pool if entry[0] != study_id]

    def _apply_one(
        self, conn: sqlite3.Connection, users: list[str], customers: list[str], keys: list[str]
    ) -> str | None:
        rng = self._rng
        kind = _OPERATIONS[int(rng.choice(len(_OPERATIONS), p=_OPERATION_P))]
        picked = None if kind == "create" else self._pick_open(conn)
        if picked is None:
            kind = "create"
        if kind == "create":
            return "create" if self._create(users, customers, keys) else None
        assert picked is not None
        study_id, severity, assigned_to = picked
        store = self._store
        changed: bool | None
        if kind == "complete":
            changes: dict[str, Any] = {"study_viewer_status": "complete"}
            if assigned_to is None and users:
                changes["assigned_to"] = users[int(rng.integers(len(users)))]
            changed = store.update_study(study_id, changes, note=AuditNote(source="live"))
            self._forget(study_id)
        elif kind == "reassign":
            others = [u for u in users if u != assigned_to]
            if not others:
                return None
            target = others[int(rng.integers(len(others)))] if rng.random() < 0.9 else None
            changed = store.update_study(study_id, {"assigned_to": target}, note=AuditNote(source="live"))
            self._forget(study_id)
        elif kind == "cancel":
            changed = store.set_cancelled(study_id, True, note=AuditNote(source="live"))
            self._forget(study_id)
        else:
            choices = [s for s in _SEVERITIES if s != severity]
            changed = store.update_study(
                study_id, {"severity": choices[int(rng.integers(2))]}, note=AuditNote(source="live")
            )
            self._forget(study_id)
        return kind if changed else None

    def _create(self, users: list[str], customers: list[str], keys: list[str]) -> bool:
        rng = self._rng
        severity = int(rng.choice(3, p=[0.7, 0.2, 0.1]))
        entry = int(draw_study_description(rng, np.array([severity]))[0])
        metadata_text = draw_metadata(
            rng, np.array([entry]), int(rng.integers(10**6, 10**9)), severity_codes=[severity]
        )[0]
        self._uid_serial += 1
        uid = f"{UID_ROOT}.9.{time.time_ns() // 1_000_000}.{self._uid_serial}"
        by_key = bool(keys) and rng.random() < 0.85
        fields: dict[str, Any] = {
            "study_instance_uid": uid,
            "study_description": STUDY_CATALOG[entry][0],
            "severity": _SEVERITIES[severity],
            "assigned_to": users[int(rng.integers(len(users)))] if users and rng.random() < 0.6 else None,
            "express_customer_id": (
                customers[int(rng.integers(len(customers)))] if customers and rng.random() < 0.9 else None
            ),
            "metadata": None if metadata_text is None else orjson.loads(metadata_text),
            "created_by_api_key": keys[int(rng.integers(len(keys)))] if by_key else None,
            "created_by_user": None if by_key or not users else users[int(rng.integers(len(users)))],
        }
        return self._store.create_study(**fields, note=AuditNote(source="live")) is not None


def start_live(store: Store, rate_per_s: float, seed: int = 0) -> LiveWorld:
    """Start live study traffic on ``store`` at about ``rate_per_s`` operations a second.

    The thread is a daemon: it never keeps the process alive. Call ``stop()`` (or use the
    returned ``LiveWorld`` as a context manager) before closing the store.
    """
    return LiveWorld(store, rate_per_s, seed).start()
