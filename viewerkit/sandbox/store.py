"""The sandbox's SQLite storage: studies, the people and keys they reference, and an audit log.

One file on disk in WAL mode, one connection per thread, keyset pagination over indexes that
pair every list filter with the list order (newest ``created_at`` first, ties by ``study_id``
descending), so a page deep in a million studies costs what the first page costs.

>>> import tempfile, os
>>> store = Store(os.path.join(tempfile.mkdtemp(), "sandbox.db"))
>>> store.count_studies()
0
>>> format_timestamp(0)
'1970-01-01T00:00:00.000Z'
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from viewerkit.schema import StudyFilters

__all__ = [
    "Store",
    "Keyset",
    "AuditNote",
    "AUDIT_OUTCOMES",
    "AUDIT_SOURCES",
    "format_timestamp",
    "now_timestamp",
    "new_study_id",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY, email TEXT NOT NULL, first_name TEXT, last_name TEXT,
    middle_name TEXT, suffix1 TEXT, suffix2 TEXT
);
-- the roster's own columns (added by Store to a database made before the roster)
CREATE TABLE IF NOT EXISTS customers (customer_id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    api_key_id TEXT PRIMARY KEY, description TEXT NOT NULL, is_viewer_enabled INTEGER NOT NULL,
    secret TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS studies (
    study_id TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL UNIQUE,
    study_description TEXT NOT NULL,
    severity TEXT NOT NULL,
    study_viewer_status TEXT NOT NULL,
    is_cancelled INTEGER NOT NULL,
    cancelled_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    assigned_to TEXT,
    created_by_user TEXT,
    created_by_api_key TEXT,
    express_customer_id TEXT,
    metadata TEXT
);
CREATE INDEX IF NOT EXISTS studies_order ON studies (created_at, study_id);
CREATE INDEX IF NOT EXISTS studies_severity ON studies (severity, created_at, study_id);
CREATE INDEX IF NOT EXISTS studies_status ON studies (study_viewer_status, created_at, study_id);
CREATE INDEX IF NOT EXISTS studies_cancelled ON studies (is_cancelled, created_at, study_id);
CREATE INDEX IF NOT EXISTS studies_assigned ON studies (assigned_to, created_at, study_id);
CREATE INDEX IF NOT EXISTS studies_customer ON studies (express_customer_id, created_at, study_id);
CREATE INDEX IF NOT EXISTS studies_triage
    ON studies (severity, study_viewer_status, is_cancelled, created_at, study_id);
CREATE INDEX IF NOT EXISTS studies_open
    ON studies (study_viewer_status, is_cancelled, created_at, study_id);
-- one entry per write request (see Store.audit); appended to, never changed
CREATE TABLE IF NOT EXISTS write_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    source TEXT,
    operation TEXT NOT NULL,
    method TEXT,
    path TEXT,
    study_id TEXT,
    study_instance_uid TEXT,
    fields TEXT NOT NULL,
    changed_fields TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER,
    fault TEXT,
    request INTEGER
);
CREATE INDEX IF NOT EXISTS write_audit_study ON write_audit (study_id, seq);
"""

_AUDIT_COLUMNS = (
    "seq",
    "at",
    "source",
    "operation",
    "method",
    "path",
    "study_id",
    "study_instance_uid",
    "fields",
    "changed_fields",
    "outcome",
    "status",
    "fault",
    "request",
)

#: The outcomes of a write request in the audit (see ``Store.audit``).
AUDIT_OUTCOMES = ("changed", "noop", "refused", "error")

#: Where an audited write came from: the API, live mode, or a direct call of a Store method.
AUDIT_SOURCES = ("api", "live", "store")

# the wire names of the columns an update sets
_UPDATE_WIRE = {
    "assigned_to": "assignedTo",
    "metadata": "metadata",
    "severity": "severity",
    "study_description": "studyDescription",
    "study_viewer_status": "studyViewerStatus",
}

_STUDY_INDEXES = (
    "studies_order",
    "studies_severity",
    "studies_status",
    "studies_cancelled",
    "studies_assigned",
    "studies_customer",
    "studies_triage",
    "studies_open",
)

STUDY_COLUMNS = (
    "study_id",
    "study_instance_uid",
    "study_description",
    "severity",
    "study_viewer_status",
    "is_cancelled",
    "cancelled_at",
    "created_at",
    "updated_at",
    "assigned_to",
    "created_by_user",
    "created_by_api_key",
    "express_customer_id",
    "metadata",
)

_USER_COLS = ("user_id", "email", "first_name", "last_name", "middle_name", "suffix1", "suffix2")

# The roster's columns beyond a study reference's, with what a database made before the
# roster gives its users: radiologists, members, invited from the dashboard, never revoked.
_ROSTER_COLS = (
    ("phone_number", "TEXT", None),
    ("clinic_role", "TEXT NOT NULL DEFAULT 'Radiologist'", "Radiologist"),
    ("level", "TEXT NOT NULL DEFAULT 'member'", "member"),
    ("can_manage_studies", "INTEGER NOT NULL DEFAULT 1", True),
    ("has_dashboard_access", "INTEGER NOT NULL DEFAULT 0", False),
    ("invited_source", "TEXT NOT NULL DEFAULT 'dashboard'", "dashboard"),
    ("created_at", "TEXT", None),
    ("last_login_at", "TEXT", None),
    ("revoked", "INTEGER NOT NULL DEFAULT 0", False),
)
_ALL_USER_COLS = _USER_COLS + tuple(name for name, _, _ in _ROSTER_COLS)
# the user list's order: user ID ascending (a keyset over the primary key)
_SELECT_USER = f"SELECT {', '.join(_ALL_USER_COLS)} FROM users u"
_USER_WIRE = (
    "userId", "email", "firstName", "lastName", "middleName", "suffix1", "suffix2",
    "phoneNumber", "clinicRole", "level", "canManageStudies", "hasDashboardAccess",
    "invitedSource", "createdAt", "lastLoginAt",
)

# a study row; its four references render from in-memory copies of the small reference tables
_SELECT = (
    "SELECT s.study_id, s.study_instance_uid, s.study_description, s.severity,"
    " s.study_viewer_status, s.is_cancelled, s.cancelled_at, s.created_at, s.updated_at,"
    " s.metadata, s.assigned_to, s.created_by_user, s.created_by_api_key, s.express_customer_id"
    " FROM studies s"
)


def format_timestamp(epoch_ms: int) -> str:
    """The API's timestamp text for epoch milliseconds: ISO 8601, milliseconds, ``Z``.

    >>> format_timestamp(1795797043197)
    '2026-11-27T16:30:43.197Z'
    """
    moment = datetime.fromtimestamp(epoch_ms // 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{epoch_ms % 1000:03d}Z"


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds of an API timestamp (the inverse of ``format_timestamp``).

    >>> parse_timestamp('2026-11-27T16:30:43.197Z')
    1795797043197
    """
    moment = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1000 + int(text[20:23])


def now_timestamp() -> str:
    """The current time as an API timestamp."""
    return format_timestamp(time.time_ns() // 1_000_000)


def new_study_id() -> str:
    """A fresh study ID: ``stu_`` + 32 lowercase hex."""
    return "stu_" + uuid.uuid4().hex


@dataclass(frozen=True)
class Keyset:
    """Where a page starts: after the study ``(created_at, study_id)`` in list order."""

    created_at: str
    study_id: str


@dataclass
class AuditNote:
    """What the audit records of one write request besides its outcome and time.

    The API fills one in as it reads a write request (``source="api"``, its ``method``,
    ``path``, ``request`` seq in the request log, the ``fault`` that struck it, the
    ``status`` it answers when the write goes through, and the study and ``fields`` it named)
    and hands it to the Store method, which records the ``changed`` or ``noop`` entry in the
    same transaction as the change and sets ``recorded``. Live mode passes
    ``AuditNote(source="live")``; a Store write method called without a note records
    ``source="store"``.

    >>> AuditNote(source="live").recorded
    False
    """

    source: str = "store"
    method: str | None = None
    path: str | None = None
    study_id: str | None = None
    study_instance_uid: str | None = None
    #: wire names of the study fields the request gave (None: taken from the call)
    fields: tuple[str, ...] | None = None
    status: int | None = None
    request: int | None = None
    fault: dict[str, str] | None = None
    recorded: bool = field(default=False, compare=False)


def _contains_ci(haystack: str | None, needle: str) -> bool:
    # Unicode-aware lower(), unlike SQLite's ASCII-only LIKE
    return haystack is not None and needle in haystack.lower()


# A revoked key's secret is replaced by this prefix and random hex. No bearer matches it:
# the server strips the bearer token, so a token never starts with a space.
_REVOKED = " revoked:"

# Non-ASCII characters whose lower() holds an ASCII letter: KELVIN SIGN -> "k", LATIN CAPITAL
# LETTER I WITH DOT ABOVE -> "i" + U+0307. LIKE never matches them to an ASCII letter.
_FOLDS_TO_ASCII = {"k": "\u212a", "i": "\u0130"}


def description_matches(description: str, needle: str) -> bool:
    """The list filter ``studyDescription``: ``needle`` is a case-insensitive substring of
    ``description``, every character taken literally (``%``, ``_``, ``\\``, NUL, emoji),
    case folded by ``str.lower()`` on both sides. The SQL of ``Store.list_studies`` agrees
    with this function for every input.

    >>> description_matches("CT Chest 100%", "T CHEST 100%"), description_matches("CT", "C%")
    (True, False)
    >>> description_matches("Contrast", "ast\\x00qqq")
    False
    """
    return needle.lower() in description.lower()


def _description_contains(needle: str) -> tuple[str, list[Any]]:
    """The SQL condition (and its arguments) of ``description_matches(s.study_description,
    needle)``.

    SQLite's LIKE folds ASCII case in C, far faster than a Python function per row, but it
    reads both texts only up to a NUL and folds no non-ASCII letter: it decides alone only
    for an ASCII needle without NUL, on a description without NUL and without a letter that
    lowers to ASCII; such a description is also given to the Python check."""
    folded = needle.lower()
    if not needle.isascii() or "\x00" in needle:
        return "vk_contains(s.study_description, ?)", [folded]
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    odd = ["\x00"] + [char for letter, char in _FOLDS_TO_ASCII.items() if letter in folded]
    suspect = " OR ".join("instr(s.study_description, ?) > 0" for _ in odd)
    clause = (
        "(s.study_description LIKE ? ESCAPE '\\'"
        f" OR (({suspect}) AND vk_contains(s.study_description, ?)))"
    )
    return clause, [f"%{escaped}%", *odd, folded]


def _render_user(row: Sequence[Any]) -> dict[str, Any]:
    """A users row (``_ALL_USER_COLS`` order) as the API's User."""
    user = dict(zip(_USER_WIRE, row[: len(_USER_WIRE)], strict=True))
    user["canManageStudies"] = bool(user["canManageStudies"])
    user["hasDashboardAccess"] = bool(user["hasDashboardAccess"])
    return user


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


class Store:
    """The sandbox's SQLite database.

    Thread-safe: every thread gets its own connection; writes take SQLite's write lock with
    ``BEGIN IMMEDIATE`` and wait for it (busy timeout) instead of failing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        conn.executescript(_SCHEMA)
        self._add_roster_columns(conn)
        self._migrate_audit(conn)
        with self._write() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO sandbox_meta (key, value) VALUES ('secret', ?)",
                (secrets.token_hex(32),),
            )
        row = conn.execute("SELECT value FROM sandbox_meta WHERE key = 'secret'").fetchone()
        #: per-database signing secret for cursors and reroute tokens (survives restarts)
        self.secret: bytes = bytes.fromhex(row[0])
        self._references: tuple[dict[str, dict[str, Any]], ...] = ({}, {}, {})
        self._load_references()

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    def _add_roster_columns(self, conn: sqlite3.Connection) -> None:
        def missing() -> list[tuple[str, str]]:
            have = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
            return [(name, kind) for name, kind, _ in _ROSTER_COLS if name not in have]

        if not missing():
            return
        with self._write() as cur:
            for name, kind in missing():  # again under the write lock: another process may have
                cur.execute(f"ALTER TABLE users ADD COLUMN {name} {kind}")

    def _migrate_audit(self, conn: sqlite3.Connection) -> None:
        """Move the entries of a database made before the write audit (a table ``audit`` of
        applied changes, with their values) into ``write_audit``: each one a ``changed``
        entry of unknown source with the field names only."""
        old = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'"
        if conn.execute(old).fetchone() is None:
            return
        with self._write() as cur:
            if cur.execute(old).fetchone() is None:  # another process moved it meanwhile
                return
            rows = cur.execute("SELECT study_id, operation, fields, at FROM audit ORDER BY id").fetchall()
            entries = []
            for study_id, operation, fields_text, at in rows:
                given = orjson.loads(fields_text)
                names = sorted(given)
                changed = names if operation in ("create", "update") else ["isCancelled"]
                uid = given.get("studyInstanceUid") if operation == "create" else None
                entries.append(
                    (at, None, operation, None, None, study_id, uid,
                     orjson.dumps(names).decode(), orjson.dumps(changed).decode(),
                     "changed", None, None, None)
                )
            cur.executemany(
                f"INSERT INTO write_audit ({', '.join(_AUDIT_COLUMNS[1:])})"
                f" VALUES ({', '.join('?' * (len(_AUDIT_COLUMNS) - 1))})",
                entries,
            )
            cur.execute("DROP TABLE audit")

    # -- references ------------------------------------------------------------------------

    def _load_references(self) -> None:
        conn = self._conn()
        users = {
            r[0]: {
                "userId": r[0],
                "email": r[1],
                "firstName": r[2],
                "lastName": r[3],
                "middleName": r[4],
                "suffix1": r[5],
                "suffix2": r[6],
            }
            for r in conn.execute(f"SELECT {', '.join(_USER_COLS)} FROM users")
        }
        customers = {
            r[0]: {"expressCustomerId": r[0], "expressCustomerName": r[1]}
            for r in conn.execute("SELECT customer_id, name FROM customers")
        }
        keys = {
            r[0]: {"apiKeyId": r[0], "description": r[1], "isViewerEnabled": bool(r[2])}
            for r in conn.execute("SELECT api_key_id, description, is_viewer_enabled FROM api_keys")
        }
        self._references = (users, customers, keys)

    def _reference(self, table: int, key: str | None) -> dict[str, Any] | None:
        if key is None:
            return None
        found = self._references[table].get(key)
        if found is None:
            # added since (by another connection or process): reload the small tables once
            self._load_references()
            found = self._references[table].get(key)
        return found

    def _render(self, row: Sequence[Any], raw_metadata: bool = False) -> dict[str, Any]:
        """A study row of ``_SELECT`` as the API's camelCase Study. With ``raw_metadata`` the
        metadata stays JSON text (an ``orjson.Fragment``) and references are shared objects:
        for serializing at once, not for handing out."""
        meta = row[9]
        if meta is not None:
            meta = orjson.Fragment(meta) if raw_metadata else orjson.loads(meta)
        refs = (
            self._reference(0, row[10]),
            self._reference(0, row[11]),
            self._reference(2, row[12]),
            self._reference(1, row[13]),
        )
        if not raw_metadata:
            refs = tuple(None if r is None else dict(r) for r in refs)  # type: ignore[assignment]
        return {
            "studyId": row[0],
            "studyInstanceUid": row[1],
            "studyDescription": row[2],
            "severity": row[3],
            "studyViewerStatus": row[4],
            "isCancelled": bool(row[5]),
            "cancelledAt": row[6],
            "createdAt": row[7],
            "updatedAt": row[8],
            "assignedTo": refs[0],
            "createdByUser": refs[1],
            "createdByApiKey": refs[2],
            "expressCustomer": refs[3],
            "metadata": meta,
        }

    # -- connections -----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: index builds and deep scans stay in memory
            conn.create_function("vk_contains", 2, _contains_ci, deterministic=True)
            conn.create_function("vk_lower", 1, _lower, deterministic=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Cursor:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn.cursor()

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            if exc_type is None:
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("ROLLBACK")

    def _write(self) -> Store._Tx:
        return Store._Tx(self._conn())

    # -- world -----------------------------------------------------------------------------

    def is_empty(self) -> bool:
        """True when the database holds no studies, users, customers or API keys."""
        conn = self._conn()
        return all(
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None
            for table in ("studies", "users", "customers", "api_keys")
        )

    def insert_world(self, world: Any) -> None:
        """Bulk-insert a synthetic ``World`` (users, customers, api_keys, studies columns)
        in one transaction."""
        with self._write() as cur:
            defaults = {name: default for name, _, default in _ROSTER_COLS}
            roster = getattr(world, "roster", None) or world.users
            cur.executemany(
                f"INSERT OR REPLACE INTO users ({', '.join(_ALL_USER_COLS)})"
                f" VALUES ({', '.join('?' * len(_ALL_USER_COLS))})",
                [
                    tuple(u.get(c, defaults.get(c)) for c in _ALL_USER_COLS)
                    for u in roster
                ],
            )
            cur.executemany(
                "INSERT OR REPLACE INTO customers VALUES (?, ?)",
                [(c["customer_id"], c["name"]) for c in world.customers],
            )
            cur.executemany(
                "INSERT OR REPLACE INTO api_keys VALUES (?, ?, ?, ?)",
                [
                    (k["api_key_id"], k["description"], int(bool(k["is_viewer_enabled"])), k["secret"])
                    for k in world.api_keys
                ],
            )
            columns = world.studies
            n = len(columns["study_id"]) if columns else 0
            # building the indexes once after a big load beats growing them row by row
            rebuild = n > 10_000 and cur.execute("SELECT 1 FROM studies LIMIT 1").fetchone() is None
            if rebuild:
                for name in _STUDY_INDEXES:
                    cur.execute(f"DROP INDEX IF EXISTS {name}")
            if n:
                values = [columns[c] for c in STUDY_COLUMNS]
                flags = [int(bool(v)) for v in columns["is_cancelled"]]
                values[STUDY_COLUMNS.index("is_cancelled")] = flags
                cur.executemany(
                    f"INSERT INTO studies ({', '.join(STUDY_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(STUDY_COLUMNS))})",
                    zip(*values, strict=True),
                )
            if rebuild:
                for statement in _SCHEMA.split(";"):
                    if "CREATE INDEX" in statement and "ON studies" in statement:
                        cur.execute(statement)
        self._load_references()

    def ensure_api_key(self, secret: str, description: str = "Sandbox key") -> str:
        """The ``api_key_id`` of the key record for bearer ``secret``, adding one if needed."""
        conn = self._conn()
        row = conn.execute("SELECT api_key_id FROM api_keys WHERE secret = ?", (secret,)).fetchone()
        if row is not None:
            return str(row[0])
        key_id = str(uuid.uuid4())
        with self._write() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO api_keys VALUES (?, ?, 1, ?)", (key_id, description, secret)
            )
        row = conn.execute("SELECT api_key_id FROM api_keys WHERE secret = ?", (secret,)).fetchone()
        return str(row[0])

    def api_key_secrets(self) -> dict[str, str]:
        """Bearer secret -> api_key_id of every key record that is not revoked."""
        q = "SELECT secret, api_key_id FROM api_keys WHERE secret NOT LIKE ?"
        rows = self._conn().execute(q, (_REVOKED + "%",)).fetchall()
        return {str(s): str(k) for s, k in rows}

    def kept_api_key(self) -> str | None:
        """The bearer secret a server on this database serves with (``keep_api_key``), or
        None when there is none or it was revoked."""
        q = (
            "SELECT k.secret FROM sandbox_meta m JOIN api_keys k ON k.api_key_id = m.value"
            " WHERE m.key = 'kept_api_key_id' AND k.secret NOT LIKE ?"
        )
        row = self._conn().execute(q, (_REVOKED + "%",)).fetchone()
        return None if row is None else str(row[0])

    def keep_api_key(self, secret: str) -> str:
        """Make ``secret`` (a key record added if needed) the key this database serves with;
        its ``api_key_id``."""
        key_id = self.ensure_api_key(secret)
        with self._write() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO sandbox_meta (key, value) VALUES ('kept_api_key_id', ?)",
                (key_id,),
            )
        return key_id

    def revoke_api_key(self, secret: str) -> bool:
        """Make bearer ``secret`` stop working (its key record stays: studies name it as
        their creator). True if a key had that secret."""
        with self._write() as cur:
            cur.execute(
                "UPDATE api_keys SET secret = ? WHERE secret = ?",
                (_REVOKED + secrets.token_hex(32), secret),
            )
            return cur.rowcount > 0

    def kept_port(self) -> int | None:
        """The port a server on this database last listened on (``keep_port``), or None."""
        q = "SELECT value FROM sandbox_meta WHERE key = 'port'"
        row = self._conn().execute(q).fetchone()
        return None if row is None else int(row[0])

    def keep_port(self, port: int) -> None:
        """Remember the port a server on this database listens on."""
        with self._write() as cur:
            cur.execute("INSERT OR REPLACE INTO sandbox_meta (key, value) VALUES ('port', ?)", (str(port),))

    def user_exists(self, user_id: str) -> bool:
        q = "SELECT 1 FROM users WHERE user_id = ?"
        return self._conn().execute(q, (user_id,)).fetchone() is not None

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The User (API JSON shape) with this ID, revoked or not, or None."""
        row = self._conn().execute(_SELECT_USER + " WHERE u.user_id = ?", (user_id,)).fetchone()
        return None if row is None else _render_user(row)

    def list_users(
        self, filters: Mapping[str, Any], limit: int, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the user list (user ID ascending; revoked users are not listed) and
        the user ID of its last user when more follow.

        ``filters`` (checked by the caller): ``email`` exact, case-insensitive;
        ``first_name`` / ``last_name`` case-insensitive contains matches; ``level``,
        ``invited_source`` equal."""
        where = ["u.revoked = 0"]
        args: list[Any] = []
        if "email" in filters:
            where.append("vk_lower(u.email) = ?")
            args.append(str(filters["email"]).lower())
        for name in ("first_name", "last_name"):
            if name in filters:
                where.append(f"vk_contains(u.{name}, ?)")
                args.append(str(filters[name]).lower())
        for name in ("level", "invited_source"):
            if name in filters:
                where.append(f"u.{name} = ?")
                args.append(filters[name])
        if after is not None:
            where.append("u.user_id > ?")
            args.append(after)
        sql = _SELECT_USER + " WHERE " + " AND ".join(where) + " ORDER BY u.user_id LIMIT ?"
        args.append(limit + 1)
        rows = self._conn().execute(sql, args).fetchall()
        users = [_render_user(r) for r in rows[:limit]]
        more = len(rows) > limit
        return users, (users[-1]["userId"] if more and users else None)

    def assignable_user_ids(self) -> list[str]:
        """Users live mode gives studies to: radiologists who can manage studies and whose
        access is not revoked (every user, on a database without such a one)."""
        q = (
            "SELECT user_id FROM users WHERE clinic_role = 'Radiologist' AND can_manage_studies = 1"
            " AND revoked = 0 ORDER BY user_id"
        )
        return [r[0] for r in self._conn().execute(q)] or self.user_ids()

    def add_user(
        self,
        *,
        email: str,
        first_name: str,
        last_name: str,
        clinic_role: str = "Radiologist",
        level: str = "member",
        can_manage_studies: bool = True,
        has_dashboard_access: bool = False,
        invited_source: str = "dashboard",
        middle_name: str | None = None,
        suffix1: str | None = None,
        suffix2: str | None = None,
        phone_number: str | None = None,
        created_at: str | None = None,
        last_login_at: str | None = None,
    ) -> str:
        """Add a user (a radiologist who joined today, by default) and return their new ID:
        listed at once by a server on this database. (A sandbox control for tests; the API
        here is read-only.)"""
        user_id = "usr_" + uuid.uuid4().hex
        row = {
            "user_id": user_id, "email": email, "first_name": first_name, "last_name": last_name,
            "middle_name": middle_name, "suffix1": suffix1, "suffix2": suffix2,
            "phone_number": phone_number, "clinic_role": clinic_role, "level": level,
            "can_manage_studies": int(can_manage_studies),
            "has_dashboard_access": int(has_dashboard_access), "invited_source": invited_source,
            "created_at": created_at or now_timestamp(), "last_login_at": last_login_at,
            "revoked": 0,
        }
        with self._write() as cur:
            cur.execute(
                f"INSERT INTO users ({', '.join(_ALL_USER_COLS)})"
                f" VALUES ({', '.join('?' * len(_ALL_USER_COLS))})",
                tuple(row[c] for c in _ALL_USER_COLS),
            )
        return user_id

    def set_user_revoked(self, user_id: str, revoked: bool = True) -> bool:
        """Revoke (or give back) a user's access: a revoked user is retrieved but not
        listed. True if the user exists. (A sandbox control for tests.)"""
        with self._write() as cur:
            cur.execute("UPDATE users SET revoked = ? WHERE user_id = ?", (int(revoked), user_id))
            return cur.rowcount > 0

    def customer_exists(self, customer_id: str) -> bool:
        q = "SELECT 1 FROM customers WHERE customer_id = ?"
        return self._conn().execute(q, (customer_id,)).fetchone() is not None

    def user_ids(self) -> list[str]:
        """Every user ID (for live mode and tests)."""
        return [r[0] for r in self._conn().execute("SELECT user_id FROM users ORDER BY user_id")]

    def customer_ids(self) -> list[str]:
        """Every express customer ID."""
        q = "SELECT customer_id FROM customers ORDER BY customer_id"
        return [r[0] for r in self._conn().execute(q)]

    def count_studies(self) -> int:
        """How many studies the database holds."""
        return int(self._conn().execute("SELECT count(*) FROM studies").fetchone()[0])

    # -- reads -----------------------------------------------------------------------------

    def get_study(self, study_id: str) -> dict[str, Any] | None:
        """The Study (API JSON shape) with this ID, or None."""
        row = self._conn().execute(_SELECT + " WHERE s.study_id = ?", (study_id,)).fetchone()
        return None if row is None else self._render(row)

    def study_id_for_uid(self, study_instance_uid: str) -> str | None:
        """The study ID of a Study Instance UID, or None."""
        row = (
            self._conn()
            .execute("SELECT study_id FROM studies WHERE study_instance_uid = ?", (study_instance_uid,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def list_studies(
        self,
        filters: StudyFilters,
        limit: int,
        after: Keyset | None = None,
        *,
        raw_metadata: bool = False,
    ) -> tuple[list[dict[str, Any]], Keyset | None]:
        """One page in list order and the keyset of its last study when more follow.

        ``raw_metadata=True`` is the server's fast path (see ``_render``)."""
        where: list[str] = []
        args: list[Any] = []
        given = filters.given()  # one value per filter: the API's (checked) list query
        for column in ("assigned_to", "express_customer_id", "severity", "study_viewer_status"):
            if column not in given:
                continue
            if given[column] is None:  # the wire's "null": studies with none
                where.append(f"s.{column} IS NULL")
            else:
                where.append(f"s.{column} = ?")
                args.append(given[column])
        if "is_cancelled" in given:
            where.append("s.is_cancelled = ?")
            args.append(int(given["is_cancelled"]))
        needle = given.get("study_description")
        if needle is not None:
            clause, clause_args = _description_contains(needle)
            where.append(clause)
            args.extend(clause_args)
        if after is not None:
            where.append("(s.created_at, s.study_id) < (?, ?)")
            args.extend((after.created_at, after.study_id))
        sql = _SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.created_at DESC, s.study_id DESC LIMIT ?"
        args.append(limit + 1)
        rows = self._conn().execute(sql, args).fetchall()
        more = len(rows) > limit
        studies = [self._render(r, raw_metadata) for r in rows[:limit]]
        if not more:
            return studies, None
        last = studies[-1]
        return studies, Keyset(last["createdAt"], last["studyId"])

    def audit(
        self,
        study_id: str | None = None,
        *,
        outcome: str | None = None,
        source: str | None = None,
        since: int = 0,
    ) -> list[dict[str, Any]]:
        """The write audit, oldest first: one entry per write request (optionally only those
        of one study, of one ``outcome``, of one ``source``, or after the entry ``since``).

        Each entry: ``seq`` (1, 2, ... in the order recorded; never reused, kept across
        restarts), ``at`` (the server's clock, ISO 8601 UTC with milliseconds; for a
        ``changed`` entry the study's new ``updatedAt``), ``source`` (``api``, ``live``,
        ``store``; None for an entry moved from an older database), ``operation``
        (``create``, ``update``, ``cancel``, ``uncancel``), ``method`` and ``path`` (None
        unless ``api``), ``study_id`` and ``study_instance_uid`` (as the request named or
        identified them, else None), ``fields`` (sorted wire names of the study fields the
        request gave; ``[]`` for cancel / uncancel), ``changed_fields`` (those it changed:
        for cancel / uncancel ``["isCancelled"]`` when it changed), ``outcome`` (see
        ``AUDIT_OUTCOMES``), ``status`` (the API's answer, also when a fault then lost it),
        ``fault`` (None or ``{"when", "how", "source"}``) and ``request`` (the seq in the
        request log of the server run that handled it). Values are never recorded.

        >>> import tempfile, os
        >>> store = Store(os.path.join(tempfile.mkdtemp(), "a.db"))
        >>> store.audit(outcome="changed")
        []
        """
        where: list[str] = []
        args: list[Any] = []
        if study_id is not None:
            where.append("study_id = ?")
            args.append(study_id)
        if outcome is not None:
            where.append("outcome = ?")
            args.append(outcome)
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if since:
            where.append("seq > ?")
            args.append(int(since))
        sql = f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM write_audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._conn().execute(sql + " ORDER BY seq", args).fetchall()
        entries = []
        for row in rows:
            entry = dict(zip(_AUDIT_COLUMNS, row, strict=True))
            entry["fields"] = orjson.loads(entry["fields"])
            entry["changed_fields"] = orjson.loads(entry["changed_fields"])
            if entry["fault"] is not None:
                entry["fault"] = orjson.loads(entry["fault"])
            entries.append(entry)
        return entries

    # -- writes ----------------------------------------------------------------------------

    @staticmethod
    def _audit(
        cur: sqlite3.Cursor,
        note: AuditNote,
        operation: str,
        outcome: str,
        *,
        at: str,
        study_id: str | None,
        fields: Sequence[str],
        changed: Sequence[str] = (),
    ) -> None:
        """Append one entry (in the caller's transaction)."""
        given = sorted(note.fields if note.fields is not None else fields)
        cur.execute(
            f"INSERT INTO write_audit ({', '.join(_AUDIT_COLUMNS[1:])})"
            f" VALUES ({', '.join('?' * (len(_AUDIT_COLUMNS) - 1))})",
            (
                at,
                note.source,
                operation,
                note.method,
                note.path,
                study_id if study_id is not None else note.study_id,
                note.study_instance_uid,
                orjson.dumps(given).decode(),
                orjson.dumps(sorted(changed)).decode(),
                outcome,
                note.status,
                None if note.fault is None else orjson.dumps(note.fault).decode(),
                note.request,
            ),
        )
        note.recorded = True

    def record_refused(self, operation: str, note: AuditNote, outcome: str = "refused") -> None:
        """Append the entry of a write request the API refused (``note.status``: its 4xx),
        or, with ``outcome="error"``, answered with a 5xx of its own."""
        with self._write() as cur:
            self._audit(cur, note, operation, outcome, at=now_timestamp(), study_id=None, fields=())

    @staticmethod
    def _next_update(cur: sqlite3.Cursor, study_id: str) -> str:
        # updatedAt strictly increases, even for two changes within one millisecond
        row = cur.execute("SELECT updated_at FROM studies WHERE study_id = ?", (study_id,)).fetchone()
        now = time.time_ns() // 1_000_000
        if row is not None:
            now = max(now, parse_timestamp(row[0]) + 1)
        return format_timestamp(now)

    def create_study(
        self,
        *,
        study_instance_uid: str,
        study_description: str,
        severity: str,
        assigned_to: str | None = None,
        express_customer_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        created_by_api_key: str | None = None,
        created_by_user: str | None = None,
        study_viewer_status: str = "incomplete",
        created_at: str | None = None,
        note: AuditNote | None = None,
    ) -> str | None:
        """Insert a study; its new ID, or None when the Study Instance UID already exists
        (nothing recorded then: the caller records the refusal). A ``changed`` audit entry
        (``note``: see ``AuditNote``) is written with the study."""
        note = note if note is not None else AuditNote()
        study_id = new_study_id()
        at = created_at or now_timestamp()
        meta = None if metadata is None else orjson.dumps(dict(metadata)).decode()
        given = {
            "studyInstanceUid": study_instance_uid,
            "studyDescription": study_description,
            "severity": severity,
            "assignedTo": assigned_to,
            "expressCustomerId": express_customer_id,
            "metadata": metadata,
        }
        fields = [name for name, value in given.items() if value is not None]
        note.study_instance_uid = study_instance_uid
        try:
            with self._write() as cur:
                cur.execute(
                    f"INSERT INTO studies ({', '.join(STUDY_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(STUDY_COLUMNS))})",
                    (
                        study_id,
                        study_instance_uid,
                        study_description,
                        severity,
                        study_viewer_status,
                        0,
                        None,
                        at,
                        at,
                        assigned_to,
                        created_by_user,
                        created_by_api_key,
                        express_customer_id,
                        meta,
                    ),
                )
                recorded = list(note.fields) if note.fields is not None else fields
                self._audit(
                    cur, note, "create", "changed", at=at, study_id=study_id, fields=fields, changed=recorded
                )
        except sqlite3.IntegrityError:
            note.recorded = False
            return None
        return study_id

    def update_study(
        self, study_id: str, changes: Mapping[str, Any], *, note: AuditNote | None = None
    ) -> bool | None:
        """Apply ``changes`` (column name -> value; ``metadata`` a dict or None).

        True when something changed, False when every value was already so, None when the
        study does not exist. ``updated_at`` moves only when something changed. A
        ``changed`` or ``noop`` audit entry (``note``: see ``AuditNote``) is written in the
        same transaction; none when the study does not exist.
        """
        note = note if note is not None else AuditNote()
        asked = [_UPDATE_WIRE[k] for k in changes]
        with self._write() as cur:
            row = cur.execute(
                "SELECT assigned_to, metadata, severity, study_description, study_viewer_status"
                " FROM studies WHERE study_id = ?",
                (study_id,),
            ).fetchone()
            if row is None:
                return None
            current = dict(zip(_UPDATE_WIRE, row, strict=True))
            current["metadata"] = None if row[1] is None else orjson.loads(row[1])
            changed = {k: v for k, v in changes.items() if current[k] != v}
            if not changed:
                self._audit(cur, note, "update", "noop", at=now_timestamp(), study_id=study_id, fields=asked)
                return False
            at = self._next_update(cur, study_id)
            sets = [f"{k} = ?" for k in changed] + ["updated_at = ?"]
            values = [
                (None if v is None else orjson.dumps(v).decode()) if k == "metadata" else v
                for k, v in changed.items()
            ]
            cur.execute(
                f"UPDATE studies SET {', '.join(sets)} WHERE study_id = ?",
                (*values, at, study_id),
            )
            self._audit(
                cur, note, "update", "changed", at=at, study_id=study_id, fields=asked,
                changed=[_UPDATE_WIRE[k] for k in changed],
            )
            return True

    def set_cancelled(
        self, study_id: str, cancelled: bool, *, note: AuditNote | None = None
    ) -> bool | None:
        """Cancel (or uncancel) a study: True if it changed, False if it already was so,
        None when the study does not exist. A ``changed`` or ``noop`` audit entry
        (``note``: see ``AuditNote``) is written in the same transaction; none when the
        study does not exist."""
        note = note if note is not None else AuditNote()
        operation = "cancel" if cancelled else "uncancel"
        with self._write() as cur:
            row = cur.execute(
                "SELECT is_cancelled FROM studies WHERE study_id = ?", (study_id,)
            ).fetchone()
            if row is None:
                return None
            if bool(row[0]) == cancelled:
                self._audit(cur, note, operation, "noop", at=now_timestamp(), study_id=study_id, fields=())
                return False
            at = self._next_update(cur, study_id)
            cur.execute(
                "UPDATE studies SET is_cancelled = ?, cancelled_at = ?, updated_at = ?"
                " WHERE study_id = ?",
                (int(cancelled), at if cancelled else None, at, study_id),
            )
            self._audit(
                cur, note, operation, "changed", at=at, study_id=study_id, fields=(), changed=["isCancelled"]
            )
            return True

    def study_ids(self, limit: int | None = None) -> list[str]:
        """Study IDs in list order (newest first), for live mode and tests."""
        sql = "SELECT study_id FROM studies ORDER BY created_at DESC, study_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [r[0] for r in self._conn().execute(sql)]

    def add_api_keys(self, secrets_: Iterable[str]) -> None:
        """Make sure every bearer secret has a key record."""
        for secret in secrets_:
            self.ensure_api_key(secret)
