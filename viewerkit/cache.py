"""``StudyCache``: a Parquet cache of every study, refreshed cheaply, with a change history.

Layout (one directory per API namespace, so one cache never mixes two servers or two keys)::

    <path>/
      <namespace>/                 sha256(base URL + key fingerprint), 16 hex
        manifest.json              base URL, key fingerprint (never the key), files, refreshes
        studies-<generation>.parquet   the current state, one row per study
        users-<generation>.parquet     the Viewer user list as the last refresh read it
        history/<generation>.parquet   the studies new, changed or gone at that refresh

A refresh writes its new files aside, then commits by atomically replacing ``manifest.json``
(write to a temporary file, fsync, ``os.replace``). A refresh killed or interrupted at any
point leaves the previous manifest, and so the previous cache, readable and unchanged; files
of an unfinished refresh are swept by the next one.

Each client's namespace is separate: refreshing with another server or another API key
writes to another directory of the same cache, so two organisations behind one URL never
mix. The reading methods take the namespace from ``client=`` when given, else from the
cache's ``namespace`` (``StudyCache(path, namespace=...)``, or ``$VIEWERKIT_NAMESPACE`` for
:meth:`StudyCache.at` and the CLI's ``--namespace``: a namespace ID or a unique prefix of
it, or a base URL only one namespace has); without either the cache must hold exactly one
namespace (else a ``CacheError`` lists them and says how to choose). When the hosted API's
key is rotated, :meth:`StudyCache.adopt` moves a namespace, history and all, to the new key.

>>> import tempfile
>>> cache = StudyCache(tempfile.mkdtemp())
>>> cache.namespaces()
[]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from viewerkit import fetch, files, frame
from viewerkit.errors import (
    CacheError,
    Reason,
    ResponseValidationError,
    ValidationError,
    ViewerkitError,
)
from viewerkit.runner import Progress
from viewerkit.schema import METADATA_SHAPES, STUDY_SCHEMA, MetadataShape
from viewerkit.users import USER_SCHEMA, fetch_users_arrow_or_none, users_to_pandas

if TYPE_CHECKING:
    import pandas as pd

    from viewerkit.client import Client

log = logging.getLogger(__name__)

__all__ = [
    "StudyCache",
    "CacheSnapshot",
    "RefreshSummary",
    "HISTORY_COLUMNS",
    "DEFAULT_CACHE_PATH",
    "NAMESPACE_VARIABLE",
]

#: Where the CLI keeps the cache unless ``--cache`` or ``VIEWERKIT_CACHE`` says otherwise.
DEFAULT_CACHE_PATH = "data/cache"
#: The environment variable that chooses a namespace (as the CLI's ``--namespace``).
NAMESPACE_VARIABLE = "VIEWERKIT_NAMESPACE"

#: The columns history rows carry before the STUDY_SCHEMA columns of the observed state.
HISTORY_COLUMNS = ("observed_at", "change")

#: How often a reader re-reads the manifest when a concurrent refresh moved the files.
_READ_TRIES = 5
_FORMAT = "viewerkit-study-cache"
_FORMAT_VERSION = 2
#: Versions this viewerkit reads: 1 (no checksums) is migrated by the next refresh.
_READABLE_VERSIONS = (1, 2)
_MANIFEST = "manifest.json"
_TIMESTAMP = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class RefreshSummary:
    """What one refresh saw.

    >>> RefreshSummary("full", new=2, changed=1, gone=0, unchanged=7, duration_s=0.5,
    ...                refreshed_at="2026-11-27T16:30:43.197Z").total
    10
    """

    #: ``"full"`` or ``"active"`` (the mode actually run: an empty cache always runs full).
    mode: str
    #: Studies not in the cache before.
    new: int
    #: Studies whose state differs from the cached state.
    changed: int
    #: Cached studies the API answers 404 for (it has no delete: e.g. a sandbox database edit).
    gone: int
    #: Cached studies seen again in the same state (in active mode: not re-fetched or equal).
    unchanged: int
    #: Wall time of the refresh, seconds.
    duration_s: float
    #: When the refresh had read the studies (ISO 8601, UTC): the history's ``observed_at``,
    #: never earlier than a change it records.
    refreshed_at: str

    @property
    def total(self) -> int:
        """Studies in the cache after the refresh."""
        return self.new + self.changed + self.unchanged


@dataclass(frozen=True)
class CacheSnapshot:
    """What :meth:`StudyCache.read` returns: one namespace's tables, read together."""

    #: The cached studies (as :meth:`StudyCache.load`).
    studies: pd.DataFrame
    #: The change history (as :meth:`StudyCache.history`).
    history: pd.DataFrame
    #: As :meth:`StudyCache.info` (``last_refresh_at`` is never None here).
    info: dict[str, Any]
    #: The Viewer user list (as :meth:`StudyCache.load_users`; empty if never listed).
    users: pd.DataFrame | None = None


_STUDIES_HINT = (
    "run `viewerkit refresh --mode full`: it rebuilds the studies file from the API and the "
    "history, which it keeps"
)


def _checksum(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_verified(
    directory: Path, name: str, manifest: dict[str, Any] | None, hint: str
) -> pa.Table:
    """A cache file as Arrow, after checking its bytes against the manifest's SHA-256 (a
    version 1 manifest has none). Missing, damaged or unreadable: CacheError naming it."""
    target = directory / name
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        raise CacheError(f"{target} is missing; {hint}") from None
    except OSError as exc:
        raise CacheError(f"{target} cannot be read ({type(exc).__name__}); {hint}") from None
    expected = (manifest or {}).get("checksums", {}).get(name)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CacheError(f"{target} is damaged (its bytes do not match the manifest's checksum); {hint}")
    try:
        return pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as exc:
        raise CacheError(f"{target} is not a readable Parquet file ({type(exc).__name__}); {hint}") from None


def _file_size(directory: Path, name: str) -> int:
    try:
        return (directory / name).stat().st_size
    except FileNotFoundError:
        raise CacheError(f"{directory / name} is missing; {_rebuild_hint(directory)}") from None


def _rebuild_hint(directory: Path) -> str:
    return f"delete {directory} and run `viewerkit refresh --mode full`"


def namespace_of(base_url: str, key_fingerprint: str) -> str:
    """The directory name of a (base URL, key fingerprint) pair.

    >>> namespace_of("http://127.0.0.1:8000", "abc123")
    '55c98e13795fc27c'
    """
    return hashlib.sha256(f"{base_url}\n{key_fingerprint}".encode()).hexdigest()[:16]


def _manifest_fields_ok(manifest: dict[str, Any]) -> bool:
    """Do the fields the cache reads have their shape? File names must be this cache's own
    (no path leaving the namespace directory)."""
    studies_file = manifest.get("studies_file")
    history_files = manifest.get("history_files")
    refreshes = manifest.get("refreshes")
    return (
        isinstance(studies_file, str)
        and studies_file.startswith("studies-")
        and "/" not in studies_file
        and "\\" not in studies_file
        and isinstance(history_files, list)
        and all(
            isinstance(name, str)
            and name.startswith("history/")
            and ".." not in name
            and "\\" not in name
            for name in history_files
        )
        and isinstance(manifest.get("studies"), int)
        and (
            manifest.get("version") == 1
            or (
                isinstance(manifest.get("checksums"), dict)
                and all(isinstance(v, str) for v in manifest["checksums"].values())
            )
        )
        and isinstance(refreshes, list)
        and all(isinstance(r, dict) and "refreshed_at" in r and "mode" in r for r in refreshes)
        and manifest.get("metadata", "columns") in METADATA_SHAPES
        and (
            "users_file" not in manifest
            or (
                isinstance(manifest["users_file"], str)
                and manifest["users_file"].startswith("users-")
                and "/" not in manifest["users_file"]
                and "\\" not in manifest["users_file"]
            )
        )
    )


def _shape(manifest: dict[str, Any] | None) -> MetadataShape:
    """The metadata shape a namespace's tables have (absent in older manifests: columns)."""
    return "map" if (manifest or {}).get("metadata") == "map" else "columns"


def _now_ms() -> datetime:
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _history_part(
    observed_at: datetime, old: pa.Table | None, new: pa.Table, changes: frame.StudyChanges
) -> pa.Table | None:
    parts: list[tuple[str, pa.Table]] = [("new", frame.select_studies(new, changes.new_ids))]
    parts.append(("changed", frame.select_studies(new, changes.changed_ids)))
    if old is not None:
        parts.append(("gone", frame.select_studies(old, changes.gone_ids)))
    parts = [(change, rows) for change, rows in parts if len(rows)]
    if not parts:
        return None
    states = frame.concat_studies([rows for _, rows in parts])
    change = pa.concat_arrays(
        [pa.repeat(pa.scalar(kind, pa.string()), len(rows)) for kind, rows in parts]
    )
    observed = pa.repeat(pa.scalar(observed_at, _TIMESTAMP), len(states))
    table = states.add_column(0, "change", change).add_column(0, "observed_at", observed)
    order = pc.sort_indices(table, sort_keys=[("observed_at", "ascending"), ("study_id", "ascending")])
    return table.take(order)


# --- the cache ------------------------------------------------------------------------------


class StudyCache:
    """A Parquet cache of every study of one or more API namespaces (see the module doc).

    >>> import tempfile
    >>> StudyCache(tempfile.mkdtemp()).info()["studies"]
    0
    """

    def __init__(self, path: str | os.PathLike[str], *, namespace: str | None = None) -> None:
        self.path = Path(path)
        #: The namespace the reading methods use when no client is given (see the module doc).
        self.namespace = namespace or None

    @classmethod
    def at(
        cls, path: str | os.PathLike[str] | None = None, *, namespace: str | None = None
    ) -> StudyCache:
        """The cache at ``path``, else at ``$VIEWERKIT_CACHE``, else at
        :data:`DEFAULT_CACHE_PATH` (the CLI's ``--cache`` rule); reading ``namespace``, else
        ``$VIEWERKIT_NAMESPACE`` (the CLI's ``--namespace`` rule), else its only one.

        >>> StudyCache.at("reports/cache")
        StudyCache('reports/cache')
        """
        return cls(
            path or os.environ.get("VIEWERKIT_CACHE") or DEFAULT_CACHE_PATH,
            namespace=namespace or os.environ.get(NAMESPACE_VARIABLE),
        )

    def __repr__(self) -> str:
        chosen = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"StudyCache({str(self.path)!r}{chosen})"

    # -- namespaces -------------------------------------------------------------------------

    def namespaces(self) -> list[dict[str, Any]]:
        """The namespaces in this cache, one dict each: ``namespace`` (its ID, the directory
        name), ``base_url``, ``key_fingerprint`` (never the key), ``studies``,
        ``last_refresh_at`` (ISO 8601 UTC, None before a refresh), ``metadata`` (shape). A
        namespace whose manifest cannot be read is listed with ``error`` instead.

        >>> import tempfile
        >>> StudyCache(tempfile.mkdtemp()).namespaces()
        []
        """
        if not self.path.is_dir():
            return []
        found: list[dict[str, Any]] = []
        for directory in sorted(self.path.iterdir()):
            if directory.is_dir() and (directory / _MANIFEST).exists():
                try:
                    manifest = self._manifest(directory)
                except (CacheError, FileNotFoundError) as exc:
                    found.append({"namespace": directory.name, "error": str(exc)})
                    continue
                last = manifest["refreshes"][-1] if manifest["refreshes"] else None
                found.append(
                    {
                        "namespace": directory.name,
                        "base_url": manifest["base_url"],
                        "key_fingerprint": manifest["key_fingerprint"],
                        "studies": manifest["studies"],
                        "last_refresh_at": last["refreshed_at"] if last else None,
                        "metadata": _shape(manifest),
                    }
                )
        return found

    @staticmethod
    def _listing(found: list[dict[str, Any]]) -> str:
        return "; ".join(
            f"{n['namespace']}: {n['base_url']} key {n['key_fingerprint']}, {n['studies']:,} "
            f"studies, last refresh {n['last_refresh_at'] or 'never'}"
            if "error" not in n
            else f"{n['namespace']}: unreadable (a move interrupted? `viewerkit cache adopt` "
            "completes it)"
            for n in found
        )

    def choose(self, namespace: str) -> str:
        """The ID of the namespace that ``namespace`` names: an ID, a unique prefix of one
        (4 characters or more), or a base URL exactly one namespace has. Raises
        ``ValidationError`` (field ``namespace``) listing the namespaces when none or
        several match.

        >>> import tempfile
        >>> StudyCache(tempfile.mkdtemp()).choose("3f2a")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        viewerkit.errors.ValidationError: namespace: 1 problem
          field namespace: ... holds no namespace '3f2a' ...
        """
        everything = self.namespaces()
        found = [n for n in everything if "error" not in n]
        given = namespace.strip()
        matches = [n for n in found if n["namespace"] == given]
        if not matches and len(given) >= 4:
            matches = [n for n in found if n["namespace"].startswith(given.lower())]
        if not matches:
            matches = [n for n in found if n["base_url"] == given.rstrip("/")]
        if len(matches) == 1:
            return str(matches[0]["namespace"])
        kind = "no" if not matches else f"{len(matches)} matches for the"
        listing = self._listing(everything) or "nothing yet: run `viewerkit refresh` first"
        raise ValidationError.one(
            "namespace", "namespace", given, Reason.NOT_A_CHOICE,
            detail=f"{self.path} holds {kind} namespace {given!r} (give an ID, a unique prefix "
            f"of 4 characters or more, or a base URL); it holds: {listing}",
        )

    def missing_namespace_advice(self, client: Client | None) -> str:
        """What to tell an analyst whose namespace (``client``'s, else the chosen or only
        one) was never refreshed here: run a refresh, or, when this folder holds another
        namespace of the same server (a rotated key), adopt it, or choose one it holds."""
        where = f"{self.path}"
        if client is None:
            return (f"no refreshed studies in {where}: run `viewerkit refresh` first (same "
                    "--cache and AVARA_BASE_URL / AVARA_API_KEY)")
        found = [n for n in self.namespaces() if "error" not in n]
        same_server = [n for n in found if n["base_url"] == client.base_url]
        head = (f"{where} holds no studies of {client.base_url} with the key "
                f"{client.key_fingerprint} (AVARA_API_KEY / AVARA_BASE_URL)")
        if same_server:
            ids = ", ".join(n["namespace"] for n in same_server)
            return (f"{head}; it holds this server's studies under another key ({ids}): if "
                    f"the key was rotated, `viewerkit cache adopt --from {same_server[0]['namespace']}` "
                    "moves them to the new key with their history; a refresh would start a new history")
        if found:
            return (f"{head}; it holds: {self._listing(found)}; read one with --namespace ID "
                    "(or VIEWERKIT_NAMESPACE), or run `viewerkit refresh` for this key")
        return f"{head}: run `viewerkit refresh` first"

    def _directory(self, client: Client | None) -> Path | None:
        """The namespace directory to read: the client's, the chosen one, or the only one."""
        if client is not None:
            return self.path / namespace_of(client.base_url, client.key_fingerprint)
        if self.namespace:
            return self.path / self.choose(self.namespace)
        found = self.namespaces()
        if not found:
            return None
        if len(found) > 1:
            raise CacheError(
                f"{self.path} holds studies of {len(found)} API namespaces "
                f"({self._listing(found)}); choose one: client= or StudyCache(..., "
                f"namespace=ID) in Python, --namespace ID or {NAMESPACE_VARIABLE}=ID on the "
                "command line (an ID prefix or a base URL does too); `viewerkit cache info` "
                "lists them"
            )
        return self.path / str(found[0]["namespace"])

    def _manifest(self, directory: Path) -> dict[str, Any]:
        target = directory / _MANIFEST
        try:
            manifest = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise CacheError(
                f"{target} is corrupt ({type(exc).__name__}); {_rebuild_hint(directory)}"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise CacheError(f"{target} is not a viewerkit study cache manifest; {_rebuild_hint(directory)}")
        if manifest.get("version") not in _READABLE_VERSIONS:
            raise CacheError(
                f"{target} has cache format version {manifest.get('version')!r}, this viewerkit "
                f"reads {_FORMAT_VERSION}; {_rebuild_hint(directory)}"
            )
        base_url, fingerprint = manifest.get("base_url"), manifest.get("key_fingerprint")
        if not isinstance(base_url, str) or not isinstance(fingerprint, str) or (
            namespace_of(base_url, fingerprint) != directory.name
        ):
            raise CacheError(
                f"{target} belongs to another namespace than its directory (a foreign or moved "
                f"file); {_rebuild_hint(directory)}"
            )
        if not _manifest_fields_ok(manifest):
            raise CacheError(
                f"{target} is corrupt (missing or malformed fields); {_rebuild_hint(directory)}"
            )
        return manifest

    def _read_table(
        self, directory: Path, name: str, manifest: dict[str, Any] | None = None
    ) -> pa.Table:
        target = directory / name
        table = _read_verified(directory, name, manifest, _STUDIES_HINT)
        ids = table.column("study_id") if "study_id" in table.column_names else None
        if ids is not None and pc.count_distinct(ids).as_py() < len(ids):
            raise CacheError(f"{target} holds a study more than once; {_STUDIES_HINT}")
        missing = [f.name for f in STUDY_SCHEMA if f.name not in table.column_names]
        if missing:
            raise CacheError(
                f"{target} lacks the study columns {', '.join(missing[:5])}; {_rebuild_hint(directory)}"
            )
        try:
            return frame.conform(table)
        except (pa.ArrowException, ValueError, ViewerkitError) as exc:
            raise CacheError(
                f"{target} does not hold the study table ({type(exc).__name__}); "
                f"{_rebuild_hint(directory)}"
            ) from None

    # -- reading ----------------------------------------------------------------------------

    def load_arrow(self, client: Client | None = None) -> pa.Table:
        """The cached studies as an Arrow table: STUDY_SCHEMA, then sorted ``meta.*`` columns.
        An empty table when nothing was cached yet."""
        directory = self._directory(client)
        if directory is None or not (directory / _MANIFEST).exists():
            return frame.empty_studies()
        return self._read_current(directory)[1]

    def _read_current(self, directory: Path) -> tuple[dict[str, Any], pa.Table]:
        """The manifest and the studies it names. A refresh in another process may commit
        between reading the two (and, a refresh later, sweep the file named): read again
        then, until the manifest holds still."""
        for _ in range(_READ_TRIES - 1):
            manifest = self._manifest(directory)
            try:
                return manifest, self._read_table(directory, manifest["studies_file"], manifest)
            except CacheError:
                if self._manifest(directory)["studies_file"] == manifest["studies_file"]:
                    raise
        manifest = self._manifest(directory)
        return manifest, self._read_table(directory, manifest["studies_file"], manifest)

    def load(self, client: Client | None = None, *, compact: bool = False) -> pd.DataFrame:
        """The cached studies as a DataFrame, dtypes identical to ``viewerkit.fetch_studies``
        (``compact=True``: repeated string columns as categoricals, as there)."""
        return frame.to_pandas(self.load_arrow(client), compact=compact)

    def history_arrow(self, client: Client | None = None) -> pa.Table:
        """The change history as Arrow (see :meth:`history`)."""
        directory = self._directory(client)
        manifest = None
        if directory is not None and (directory / _MANIFEST).exists():
            manifest = self._manifest(directory)
        return self._history_table(directory, manifest)

    def _history_table(self, directory: Path | None, manifest: dict[str, Any] | None) -> pa.Table:
        parts: list[pa.Table] = []
        if directory is not None and manifest is not None:
            for name in manifest["history_files"]:
                target = directory / name
                table = _read_verified(directory, name, manifest, _rebuild_hint(directory))
                missing = [
                    name
                    for name in (*HISTORY_COLUMNS, *STUDY_SCHEMA.names)
                    if name not in table.column_names
                ]
                if missing:
                    raise CacheError(
                        f"{target} lacks the history columns {', '.join(missing[:5])}; "
                        f"{_rebuild_hint(directory)}"
                    )
                parts.append(table)
        heads = pa.schema(
            [pa.field("observed_at", _TIMESTAMP), pa.field("change", pa.string())]
        )
        if not parts:
            table = frame.empty_studies(_shape(manifest))
            for index, head in enumerate(heads):
                table = table.add_column(index, head, pa.array([], head.type))
            return table
        states = frame.concat_studies([part.drop_columns(list(HISTORY_COLUMNS)) for part in parts])
        table = states.add_column(
            0, heads.field("change"), pa.concat_arrays([p.column("change").combine_chunks() for p in parts])
        ).add_column(
            0,
            heads.field("observed_at"),
            pa.concat_arrays(
                [p.column("observed_at").cast(_TIMESTAMP).combine_chunks() for p in parts]
            ),
        )
        order = pc.sort_indices(
            table, sort_keys=[("observed_at", "ascending"), ("study_id", "ascending")]
        )
        return table.take(order)

    def history(self, client: Client | None = None) -> pd.DataFrame:
        """One row per observation of a study that was new, changed or gone at a refresh:
        ``observed_at`` (UTC), ``change`` (``"new"`` | ``"changed"`` | ``"gone"``), then the
        STUDY_SCHEMA columns of the observed state (for ``"gone"``, the last known state) and
        ``meta.*``. Sorted by ``observed_at``, then ``study_id``.
        """
        import pandas as pd

        table = self.history_arrow(client)
        states = frame.to_pandas(table.drop_columns(list(HISTORY_COLUMNS)))
        heads = table.select(list(HISTORY_COLUMNS)).to_pandas()
        heads["change"] = heads["change"].astype(states["study_id"].dtype)
        observations: pd.DataFrame = pd.concat([heads, states], axis=1)
        return observations

    def read(self, client: Client | None = None, *, compact: bool = False) -> CacheSnapshot:
        """The studies, history and info of ``client``'s namespace (or the only one), for a
        report. Raises ``CacheError`` when that namespace was never refreshed (a mistyped
        path or another server or key), since an empty table would read as "no backlog".

        >>> import tempfile
        >>> StudyCache(tempfile.mkdtemp()).read()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        viewerkit.errors.CacheError: no refreshed studies in ...: run `viewerkit refresh` first (same --cache and AVARA_BASE_URL / AVARA_API_KEY)
        """
        info = self.info(client)
        if info["last_refresh_at"] is None:
            raise CacheError(self.missing_namespace_advice(client))
        return CacheSnapshot(
            self.load(client, compact=compact), self.history(client), info, self.load_users(client)
        )

    def load_users_arrow(self, client: Client | None = None) -> pa.Table:
        """The Viewer user list as the last refresh read it (``viewerkit.users.USER_SCHEMA``),
        verified against its checksum; an empty table when no refresh listed users (none
        yet, or the key cannot list them)."""

        directory = self._directory(client)
        if directory is None or not (directory / _MANIFEST).exists():
            return USER_SCHEMA.empty_table()
        for attempt in range(_READ_TRIES):
            manifest = self._manifest(directory)
            name: str | None = manifest.get("users_file")
            if name is None:
                return USER_SCHEMA.empty_table()
            try:
                table = _read_verified(directory, name, manifest, _STUDIES_HINT)
                break
            except CacheError:
                # a refresh in another process may have committed (and swept) meanwhile
                if attempt == _READ_TRIES - 1 or self._manifest(directory).get("users_file") == name:
                    raise
        missing = [f.name for f in USER_SCHEMA if f.name not in table.column_names]
        if missing:
            raise CacheError(f"{directory / str(name)} lacks the user columns {', '.join(missing[:5])}; {_STUDIES_HINT}")
        return table.select(USER_SCHEMA.names).cast(USER_SCHEMA)

    def load_users(self, client: Client | None = None) -> pd.DataFrame:
        """The Viewer user list as the last refresh read it, as ``viewerkit.fetch_users``
        gives it (one row per listed user; no phone numbers), so that
        ``viewerkit.roster(cache.load_users(client), cache.load(client))`` works offline.
        Empty when no refresh listed users. Namespace as :meth:`load`."""

        return users_to_pandas(self.load_users_arrow(client))

    def info(self, client: Client | None = None) -> dict[str, Any]:
        """Base URL, key fingerprint, study count, last refresh (time, mode, counts), file
        sizes in bytes, metadata shape (``"columns"`` or ``"map"``; None before the first
        refresh) and path of the cache (of ``client``'s namespace, or the only one)."""
        directory = self._directory(client)
        info: dict[str, Any] = {
            "path": str(directory if directory is not None else self.path),
            "base_url": client.base_url if client is not None else None,
            "key_fingerprint": client.key_fingerprint if client is not None else None,
            "studies": 0,
            "last_refresh_at": None,
            "last_refresh_mode": None,
            "last_refresh": None,
            "refreshes": 0,
            "file_bytes": {},
            "metadata": None,
        }
        if directory is None or not (directory / _MANIFEST).exists():
            return info
        for _ in range(_READ_TRIES):
            manifest = self._manifest(directory)
            names = [_MANIFEST, manifest["studies_file"], *manifest["history_files"]]
            names += [manifest["users_file"]] if "users_file" in manifest else []
            try:
                sizes = {name: (directory / name).stat().st_size for name in names}
                break
            except FileNotFoundError:
                continue  # another process's refresh committed (and swept) meanwhile
        else:
            sizes = {name: _file_size(directory, name) for name in names}
        last = manifest["refreshes"][-1] if manifest["refreshes"] else None
        info.update(
            base_url=manifest["base_url"],
            key_fingerprint=manifest["key_fingerprint"],
            studies=manifest["studies"],
            last_refresh_at=last["refreshed_at"] if last else None,
            last_refresh_mode=last["mode"] if last else None,
            last_refresh=last,
            refreshes=len(manifest["refreshes"]),
            file_bytes=sizes,
            metadata=_shape(manifest),
        )
        return info

    # -- moving namespaces --------------------------------------------------------------------

    def adopt(
        self,
        client: Client,
        namespace: str,
        *,
        check: bool = True,
        lock_timeout: float | None = files.DEFAULT_LOCK_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Move the namespace ``namespace`` (an ID, a unique ID prefix or a base URL, as
        :meth:`choose`) to ``client``'s base URL and key, keeping its studies and history:
        for a rotated API key (or a server that moved), once the analyst has confirmed it
        is the same organisation. Returns :meth:`info` of the moved namespace.

        With ``check`` (default) the new key must see the namespace's studies: up to five of
        the newest are retrieved with ``client``, and if the API knows none of them the
        move is refused (``CacheError``: another organisation's key, which must never mix
        into this history). Refused too when ``client`` already has a namespace here (it
        was refreshed with the new key already: remove it with :meth:`remove` first).

        The move is a directory rename, then the manifest rewritten atomically with the
        new identity and an ``adopted`` record (from which base URL and key fingerprint,
        when); run again, it completes a move interrupted between the two.
        """
        target = self.path / namespace_of(client.base_url, client.key_fingerprint)
        if self._finish_adoption(target, client):
            return self.info(client)
        source = self.path / self.choose(namespace)
        if source == target:
            return self.info(client)
        if (target / _MANIFEST).exists():
            raise CacheError(
                f"{target} already holds this key's namespace ({self._manifest(target)['studies']:,} "
                f"studies); to move {source.name} there, remove it first "
                f"(`viewerkit cache remove {target.name}`)"
            )
        with files.file_lock(source / ".lock", timeout=lock_timeout, holder="a refresh"):
            manifest = self._manifest(source)
            if check:
                _, studies = self._read_current(source)
                newest = frame.in_list_order(studies).column("study_id").to_pylist()[:5]
                if newest and fetch.retrieve_studies_arrow(client, newest, progress=False).num_rows == 0:
                    raise CacheError(
                        f"the key {client.key_fingerprint} at {client.base_url} does not see any "
                        f"of the newest studies of namespace {source.name}: another "
                        "organisation's key? Nothing was moved"
                    )
            if target.exists():
                target.rmdir()  # an empty directory left by a refresh that never committed
            os.replace(source, target)
            self._write_adopted(target, manifest, client)
        return self.info(client)

    def _write_adopted(self, directory: Path, manifest: dict[str, Any], client: Client) -> None:
        record = {
            "from_base_url": manifest["base_url"],
            "from_key_fingerprint": manifest["key_fingerprint"],
            "at": _iso(_now_ms()),
        }
        files.write_json(
            {
                **manifest,
                "base_url": client.base_url,
                "key_fingerprint": client.key_fingerprint,
                "adopted": [*manifest.get("adopted", []), record],
            },
            directory / _MANIFEST,
        )

    def _finish_adoption(self, target: Path, client: Client) -> bool:
        """Complete a move interrupted after its rename: ``target``'s manifest still names
        the identity it came from. True if it did."""
        try:
            manifest = json.loads((target / _MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            return False
        base_url, fingerprint = manifest.get("base_url"), manifest.get("key_fingerprint")
        if not isinstance(base_url, str) or not isinstance(fingerprint, str):
            return False
        if namespace_of(base_url, fingerprint) == target.name:
            return False
        self._write_adopted(target, manifest, client)
        log.warning("completed the interrupted move of a namespace into %s", target)
        return True

    def remove(
        self, namespace: str, *, lock_timeout: float | None = files.DEFAULT_LOCK_TIMEOUT_S
    ) -> None:
        """Delete the namespace ``namespace`` (an ID, a unique ID prefix or a base URL, as
        :meth:`choose`) with its studies and history: e.g. a sandbox's namespace that will
        never be refreshed again. Waits for a running refresh of it (``LockTimeout`` past
        ``lock_timeout`` seconds). The history is gone for good: there is no undo."""
        import shutil

        directory = self.path / self.choose(namespace)
        with files.file_lock(directory / ".lock", timeout=lock_timeout, holder="a refresh"):
            # the manifest first: a reader then sees no namespace, never a half-deleted one
            (directory / _MANIFEST).unlink()
            shutil.rmtree(directory)

    # -- refreshing -------------------------------------------------------------------------

    def refresh(
        self,
        client: Client,
        mode: Literal["full", "active"] = "full",
        *,
        concurrency: int = 8,
        progress: Progress = True,
        lock_timeout: float | None = files.DEFAULT_LOCK_TIMEOUT_S,
        metadata: MetadataShape | None = None,
        users: bool = True,
    ) -> RefreshSummary:
        """Bring the cache up to date with the API and record what changed in the history.

        ``mode="full"`` fetches every study and compares it with the cache: exact. A cached
        study the read did not return (it may have moved partition while the read ran) is
        retrieved: recorded ``gone`` only when the API answers 404, else with its new state.

        ``mode="active"`` fetches only what changes often: the open studies (not cancelled,
        ``incomplete``), the new studies (the unfiltered list, newest first, down to
        ten minutes before the newest cached ``created_at``), and re-reads every cached
        open study the open list no longer returns (it was completed, cancelled or is gone:
        the recent ones by paging the closed partitions newest first, the older ones by
        single retrieves). On a typical cache, 90 % complete, that is a small fraction of a
        full refresh.

        What active mode misses: changes to studies that were closed (complete or
        cancelled) at the last refresh and are still closed: a completed study reassigned,
        re-described, given another severity or new metadata; a complete study cancelled or
        uncancelled. (A closed study that is re-opened, i.e. incomplete and not cancelled
        again, is caught: it is back in the open list. Closed studies among the newest
        ~100 are caught too, as the new-study pages cover them.) The next full refresh sees
        and records everything missed. An empty cache always gets a full refresh.

        One refresh of a namespace runs at a time, across processes: a refresh that finds
        another one running (a scheduled refresh, the triage board's auto-refresh) waits for
        it, saying so in a log warning, up to ``lock_timeout`` seconds (None: no limit), then
        raises ``viewerkit.errors.LockTimeout``. Each refresh reads the cache as the one
        before it left it, so both are recorded in the history.

        ``metadata``: how the cached tables hold metadata, ``"columns"`` (one ``meta.<key>``
        column per key) or ``"map"`` (one map column, for free-form keys; see
        ``viewerkit.frame``). It is chosen by a namespace's first refresh (default
        ``"columns"``) and kept: None means the namespace's shape, and another shape than
        the namespace's is a ``ValidationError`` (a new cache path takes the other one).

        ``users`` (default True): also read the Viewer user list (a few pages) and keep it
        beside the studies (:meth:`load_users`), so the roster works offline and a
        radiologist who joined today is there after the next refresh, active or full. A key
        the API does not let list users (401, 403 or 404 on the user list) keeps the last
        list read, if any, and the refresh goes on; any other failure fails the refresh.

        Killed or interrupted (Ctrl-C) at any point, the previous cache stays intact.
        """
        if mode not in ("full", "active"):
            raise ValidationError.from_cases(
                "bad refresh options",
                [{"row": None, "field": "mode", "value": mode, "reason": Reason.NOT_A_CHOICE,
                  "detail": "allowed: full, active"}],
            )
        if metadata is not None:
            frame.check_metadata_shape(metadata)
        if not self.path.is_dir() and not self.path.absolute().parent.is_dir():
            # a cache folder is made on its first refresh, never the folders above it: a
            # mistyped --cache would otherwise start a new cache somewhere unexpected
            raise ValidationError.one(
                "refresh", "path", str(self.path), Reason.NO_SUCH_FOLDER,
                detail="the folder above the cache folder does not exist (a mistyped path?)",
            )
        started = time.perf_counter()
        directory = self.path / namespace_of(client.base_url, client.key_fingerprint)
        directory.mkdir(parents=True, exist_ok=True)
        with files.file_lock(directory / ".lock", timeout=lock_timeout, holder="another refresh"):
            manifest = self._manifest(directory) if (directory / _MANIFEST).exists() else None
            shape = metadata or _shape(manifest)
            if manifest is not None and shape != _shape(manifest):
                raise ValidationError.one(
                    "refresh", "metadata", shape, Reason.CONFLICT,
                    detail=f"{directory} holds metadata as {_shape(manifest)}; refresh into "
                    f"another cache path for {shape!r}",
                )
            old = self._cached_state(directory, manifest, mode) if manifest else None
            if old is None or len(old) == 0:
                # nothing cached (or no study yet): active mode has no newest created_at to
                # look for new studies from, and would miss every new closed one
                mode = "full"
            if mode == "full":
                current = fetch.fetch_studies_arrow(
                    client, concurrency=concurrency, progress=progress, metadata=shape
                )
                if old is not None:
                    current = self._with_missed(client, old, current, concurrency, progress)
                changes = frame.compare_studies(old, current)
                unchanged = changes.unchanged
            else:
                assert old is not None
                read = fetch.fetch_active(client, old, concurrency=concurrency, progress=progress)
                # compare only what was re-read; the rest of the cache is carried over
                touched = pa.concat_arrays(
                    [read.studies.column("study_id").combine_chunks(), read.gone_ids]
                )
                old_touched = frame.select_studies(old, touched)
                changes = frame.compare_studies(old_touched, read.studies)
                unchanged = len(old) - len(changes.changed_ids) - len(changes.gone_ids)
                kept = old.filter(pc.invert(pc.is_in(old.column("study_id"), value_set=touched)))
                current = frame.drop_empty_meta(
                    frame.in_list_order(frame.concat_studies([kept, read.studies]))
                )
                old = old_touched
            user_list = self._read_users(client, progress) if users else None
            # observed once every read is in: a change is never dated before it happened (a
            # study completed while the refresh ran, or while it waited for another one's
            # lock, would understate turnaround); it may be dated up to one refresh late
            observed_at = _now_ms()
            summary = RefreshSummary(
                mode=mode,
                new=len(changes.new_ids),
                changed=len(changes.changed_ids),
                gone=len(changes.gone_ids),
                unchanged=unchanged,
                duration_s=0.0,
                refreshed_at=_iso(observed_at),
            )
            self._commit(
                directory, client, manifest, old, current, changes, observed_at, summary, shape,
                user_list,
            )
        summary = RefreshSummary(**{**asdict(summary), "duration_s": time.perf_counter() - started})
        return summary

    def _read_users(self, client: Client, progress: Progress) -> pa.Table | None:
        """The user list, or None when the API does not let this key list users, or when
        its answer holds values outside the contract (logged as a warning: the refresh of
        the studies goes on, and the last list is kept)."""
        try:
            return fetch_users_arrow_or_none(client, progress=progress)
        except ResponseValidationError as exc:
            log.warning("the user list was not kept (the last one stays): %s", exc)
            return None

    def _cached_state(self, directory: Path, manifest: dict[str, Any], mode: str) -> pa.Table:
        """The studies as the last refresh left them. A full refresh rebuilds a damaged or
        missing studies file from the history, which holds every state the cache saw: the
        last observed state of each study not recorded gone."""
        try:
            return self._read_table(directory, manifest["studies_file"], manifest)
        except CacheError:
            if mode != "full":
                raise
        log.warning("%s is damaged or missing: rebuilt from the history", manifest["studies_file"])
        history = self._history_table(directory, manifest)
        latest = frame.newest_per_study(history, by="observed_at")  # in list order
        latest = latest.filter(pc.not_equal(latest.column("change"), "gone"))
        return frame.drop_empty_meta(frame.conform(latest.drop_columns(list(HISTORY_COLUMNS))))

    def _with_missed(
        self, client: Client, old: pa.Table, current: pa.Table, concurrency: int, progress: Progress
    ) -> pa.Table:
        """``current`` plus the cached studies a full read did not return, retrieved one by
        one. The API has no delete, and a partitioned read can miss a study that moved into a
        partition already paged past it while the read ran: only a study the API answers
        404 for is gone."""
        cached_ids = old.column("study_id")
        missed = pc.filter(
            cached_ids, pc.invert(pc.is_in(cached_ids, value_set=current.column("study_id")))
        )
        if len(missed) == 0:
            return current
        found = fetch.retrieve_studies_arrow(
            client, missed, concurrency=concurrency, progress=progress,
            metadata=frame.metadata_shape(old),
        )
        if found.num_rows == 0:
            return current
        return frame.drop_empty_meta(
            frame.newest_per_study(frame.concat_studies([current, found]))
        )

    def _commit(
        self,
        directory: Path,
        client: Client,
        manifest: dict[str, Any] | None,
        old: pa.Table | None,
        current: pa.Table,
        changes: frame.StudyChanges,
        observed_at: datetime,
        summary: RefreshSummary,
        shape: MetadataShape,
        user_list: pa.Table | None = None,
    ) -> None:
        """Write the new files aside, then replace the manifest: the one commit point."""
        generation = f"{observed_at.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
        studies_file = f"studies-{generation}.parquet"
        history_files = list(manifest["history_files"]) if manifest else []
        # every file's SHA-256 goes into the manifest and is checked on each read; files of a
        # version 1 cache get theirs here (its migration)
        checksums = {
            name: (manifest or {}).get("checksums", {}).get(name) or _checksum(directory / name)
            for name in history_files
        }
        files.write_parquet(current, directory / studies_file)
        checksums[studies_file] = _checksum(directory / studies_file)
        part = _history_part(observed_at, old, current, changes)
        if part is not None:
            (directory / "history").mkdir(exist_ok=True)
            name = f"history/{generation}.parquet"
            files.write_parquet(part, directory / name)
            history_files.append(name)
            checksums[name] = _checksum(directory / name)
        users_file = (manifest or {}).get("users_file")  # the last list read, kept if none now
        if users_file is not None and user_list is None:
            checksums[users_file] = (manifest or {}).get("checksums", {}).get(users_file) or _checksum(
                directory / users_file
            )
        if user_list is not None:
            users_file = f"users-{generation}.parquet"
            files.write_parquet(user_list, directory / users_file)
            checksums[users_file] = _checksum(directory / users_file)
        created = current.column("created_at")
        newest = pc.max(created).as_py() if len(current) else None
        record = {k: v for k, v in asdict(summary).items() if k != "duration_s"}
        files.write_json(
            {
                "format": _FORMAT,
                "version": _FORMAT_VERSION,
                "base_url": client.base_url,
                "key_fingerprint": client.key_fingerprint,
                "studies_file": studies_file,
                "history_files": history_files,
                "checksums": checksums,
                "studies": len(current),
                "newest_created_at": _iso(newest) if newest is not None else None,
                "refreshes": [*(manifest["refreshes"] if manifest else []), record],
                "metadata": shape,
                **({"users_file": users_file} if users_file is not None else {}),
            },
            directory / _MANIFEST,
        )
        # the previous studies file stays one more generation, for readers that read the
        # previous manifest just before this commit
        previous = {manifest["studies_file"], manifest.get("users_file")} if manifest else set()
        kept = {studies_file, users_file, *previous, *history_files} - {None}
        self._sweep(directory, {str(name) for name in kept})

    def _sweep(self, directory: Path, keep: set[str]) -> None:
        """Remove files no manifest refers to: old generations, unfinished refreshes."""
        for entry in [*directory.iterdir(), *(directory / "history").glob("*")]:
            name = entry.relative_to(directory).as_posix()
            if entry.is_file() and name not in keep and name not in (_MANIFEST, ".lock"):
                with contextlib.suppress(OSError):
                    entry.unlink()
