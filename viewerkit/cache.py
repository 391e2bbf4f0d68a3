"""``StudyCache``: a Parquet cache of every study, refreshed cheaply, with a change history.

Layout (one directory per API namespace, so one cache never mixes two servers or two keys)::

    <path>/
      <namespace>/                 sha256(base URL + key fingerprint), 16 hex
        manifest.json              base URL, key fingerprint (never the key), files, refreshes
        studies-<generation>.parquet   the current state, one row per study
        history/<generation>.parquet   the studies new, changed or gone at that refresh

A refresh writes its new files aside, then commits by atomically replacing ``manifest.json``
(write to a temporary file, fsync, ``os.replace``). A refresh killed or interrupted at any
point leaves the previous manifest, and so the previous cache, readable and unchanged; files
of an unfinished refresh are swept by the next one.

Each client's namespace is separate: refreshing with another server or another API key
writes to another directory of the same cache. The reading methods take the namespace from
``client=`` when given; without it the cache must hold exactly one namespace (else a
``CacheError`` lists them).

>>> import tempfile
>>> cache = StudyCache(tempfile.mkdtemp())
>>> cache.namespaces()
[]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from viewerkit.client import _stop_retrying_when
from viewerkit.errors import ApiError, CacheError, NotFound, Reason, ValidationError, ViewerkitError
from viewerkit.schema import META_PREFIX, STUDY_SCHEMA

if TYPE_CHECKING:
    import pandas as pd

    from viewerkit.client import Client

__all__ = ["StudyCache", "RefreshSummary", "HISTORY_COLUMNS", "DEFAULT_CACHE_PATH"]

#: Where the CLI keeps the cache unless ``--cache`` or ``VIEWERKIT_CACHE`` says otherwise.
DEFAULT_CACHE_PATH = "data/cache"

#: The columns history rows carry before the STUDY_SCHEMA columns of the observed state.
HISTORY_COLUMNS = ("observed_at", "change")

_FORMAT = "viewerkit-study-cache"
_FORMAT_VERSION = 1
_MANIFEST = "manifest.json"
_TIMESTAMP = pa.timestamp("ms", tz="UTC")
#: Active mode pages the unfiltered list back to this long before the newest cached study,
#: so a study committed with a slightly older createdAt than one already seen is not missed.
_NEW_STUDY_MARGIN = timedelta(minutes=10)


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
    #: Studies in the cache that the API no longer returns.
    gone: int
    #: Cached studies seen again in the same state (in active mode: not re-fetched or equal).
    unchanged: int
    #: Wall time of the refresh, seconds.
    duration_s: float
    #: When the refresh observed the studies (ISO 8601, UTC); the history's ``observed_at``.
    refreshed_at: str

    @property
    def total(self) -> int:
        """Studies in the cache after the refresh."""
        return self.new + self.changed + self.unchanged


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
        and isinstance(refreshes, list)
        and all(isinstance(r, dict) and "refreshed_at" in r and "mode" in r for r in refreshes)
    )


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _written_aside(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success fsync it and move it over
    ``target`` atomically. On any failure (or Ctrl-C) the temporary file is removed."""
    temp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    try:
        yield temp
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
        _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _write_parquet(table: pa.Table, target: Path) -> None:
    with _written_aside(target) as temp:
        pq.write_table(table, temp, compression="zstd")


def _write_json(value: Any, target: Path) -> None:
    with _written_aside(target) as temp:
        temp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _refresh_lock(directory: Path) -> Iterator[None]:
    """One refresh at a time per namespace; the OS drops the lock if the process dies."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    with open(directory / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheError(f"another refresh of {directory} is running") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _now_ms() -> datetime:
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- vectorised comparison ------------------------------------------------------------------


def _cells_differ(old: pa.ChunkedArray, new: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row: do the two cells differ (null vs value counts as a difference)?"""
    if pa.types.is_dictionary(old.type):
        old = old.cast(old.type.value_type)
    if pa.types.is_dictionary(new.type):
        new = new.cast(new.type.value_type)
    one_null = pc.xor(pc.is_null(old), pc.is_null(new))
    return pc.or_(one_null, pc.fill_null(pc.not_equal(old, new), False))


@dataclass
class _Diff:
    new_ids: pa.Array
    changed_ids: pa.Array
    gone_ids: pa.Array
    unchanged: int


def _diff(old: pa.Table | None, new: pa.Table) -> _Diff:
    """Which studies of ``new`` are new or changed against ``old``, and which of ``old``
    are gone: one join on study_id, then column-by-column vectorised comparison of the
    matched rows (every column, meta.* included). No per-study Python loop."""
    empty = pa.array([], pa.string())
    if old is None or len(old) == 0:
        return _Diff(new.column("study_id").combine_chunks(), empty, empty, 0)
    import numpy as np

    old_keys = pa.table({"study_id": old.column("study_id"), "old_row": np.arange(len(old))})
    new_keys = pa.table({"study_id": new.column("study_id"), "new_row": np.arange(len(new))})
    joined = new_keys.join(old_keys, "study_id", join_type="full outer")
    ids = joined.column("study_id")
    is_new = pc.is_null(joined.column("old_row"))
    is_gone = pc.is_null(joined.column("new_row"))
    matched = joined.filter(pc.invert(pc.or_(is_new, is_gone)))
    old_rows = old.take(matched.column("old_row"))
    new_rows = new.take(matched.column("new_row"))
    differs: Any = pa.repeat(pa.scalar(False), len(matched))
    for name in sorted(set(old.column_names) | set(new.column_names)):
        if name in old.column_names and name in new.column_names:
            cells = _cells_differ(old_rows.column(name), new_rows.column(name))
        else:  # a meta column only one side has: differs where that side has a value
            side = old_rows if name in old.column_names else new_rows
            cells = pc.is_valid(side.column(name))
        differs = pc.or_(differs, cells)
    changed_ids = pc.filter(matched.column("study_id"), differs).combine_chunks()
    return _Diff(
        new_ids=pc.filter(ids, is_new).combine_chunks(),
        changed_ids=changed_ids,
        gone_ids=pc.filter(ids, is_gone).combine_chunks(),
        unchanged=len(matched) - len(changed_ids),
    )


def _rows(table: pa.Table, ids: pa.Array) -> pa.Table:
    return table.filter(pc.is_in(table.column("study_id"), value_set=ids))


def _history_part(
    observed_at: datetime, old: pa.Table | None, new: pa.Table, diff: _Diff
) -> pa.Table | None:
    from viewerkit import frame

    parts: list[tuple[str, pa.Table]] = [("new", _rows(new, diff.new_ids))]
    parts.append(("changed", _rows(new, diff.changed_ids)))
    if old is not None:
        parts.append(("gone", _rows(old, diff.gone_ids)))
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

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"StudyCache({str(self.path)!r})"

    # -- namespaces -------------------------------------------------------------------------

    def namespaces(self) -> list[dict[str, Any]]:
        """The namespaces in this cache: ``{"namespace", "base_url", "key_fingerprint"}``."""
        if not self.path.is_dir():
            return []
        found = []
        for directory in sorted(self.path.iterdir()):
            if directory.is_dir() and (directory / _MANIFEST).exists():
                manifest = self._manifest(directory)
                found.append(
                    {
                        "namespace": directory.name,
                        "base_url": manifest["base_url"],
                        "key_fingerprint": manifest["key_fingerprint"],
                    }
                )
        return found

    def _directory(self, client: Client | None) -> Path | None:
        """The namespace directory to read: the client's, or the only one there is."""
        if client is not None:
            return self.path / namespace_of(client.base_url, client.key_fingerprint)
        found = self.namespaces()
        if not found:
            return None
        if len(found) > 1:
            listing = ", ".join(f"{n['base_url']} (key {n['key_fingerprint']})" for n in found)
            raise CacheError(
                f"{self.path} holds studies of {len(found)} API namespaces ({listing}); "
                "pass client= to choose one"
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
        if manifest.get("version") != _FORMAT_VERSION:
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

    def _read_table(self, directory: Path, name: str) -> pa.Table:
        from viewerkit import frame

        target = directory / name
        try:
            table = pq.read_table(target)
        except FileNotFoundError:
            raise CacheError(f"{target} is missing; {_rebuild_hint(directory)}") from None
        except (OSError, pa.ArrowException) as exc:
            raise CacheError(
                f"{target} is not a readable Parquet file ({type(exc).__name__}); "
                f"{_rebuild_hint(directory)}"
            ) from None
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
        from viewerkit import frame

        directory = self._directory(client)
        if directory is None or not (directory / _MANIFEST).exists():
            return frame.empty_studies()
        manifest = self._manifest(directory)
        if not (directory / manifest["studies_file"]).exists():
            # a refresh in another process committed and swept the file we were told of
            manifest = self._manifest(directory)
        return self._read_table(directory, manifest["studies_file"])

    def load(self, client: Client | None = None, *, compact: bool = False) -> pd.DataFrame:
        """The cached studies as a DataFrame, dtypes identical to ``viewerkit.fetch_studies``
        (``compact=True``: repeated string columns as categoricals, as there)."""
        from viewerkit import frame

        return frame.to_pandas(self.load_arrow(client), compact=compact)

    def history_arrow(self, client: Client | None = None) -> pa.Table:
        """The change history as Arrow (see :meth:`history`)."""
        from viewerkit import frame

        directory = self._directory(client)
        parts: list[pa.Table] = []
        if directory is not None and (directory / _MANIFEST).exists():
            manifest = self._manifest(directory)
            for name in manifest["history_files"]:
                target = directory / name
                try:
                    table = pq.read_table(target)
                except (OSError, pa.ArrowException) as exc:
                    raise CacheError(
                        f"{target} is not a readable history file ({type(exc).__name__}); "
                        f"{_rebuild_hint(directory)}"
                    ) from None
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
            table = frame.empty_studies()
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

        from viewerkit import frame

        table = self.history_arrow(client)
        states = frame.to_pandas(table.drop_columns(list(HISTORY_COLUMNS)))
        heads = table.select(list(HISTORY_COLUMNS)).to_pandas()
        heads["change"] = heads["change"].astype(states["study_id"].dtype)
        observations: pd.DataFrame = pd.concat([heads, states], axis=1)
        return observations

    def info(self, client: Client | None = None) -> dict[str, Any]:
        """Base URL, key fingerprint, study count, last refresh (time, mode, counts), file
        sizes in bytes and path of the cache (of ``client``'s namespace, or the only one)."""
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
        }
        if directory is None or not (directory / _MANIFEST).exists():
            return info
        manifest = self._manifest(directory)
        if not (directory / manifest["studies_file"]).exists():
            manifest = self._manifest(directory)  # another process's refresh just committed
        last = manifest["refreshes"][-1] if manifest["refreshes"] else None
        files = [_MANIFEST, manifest["studies_file"], *manifest["history_files"]]
        info.update(
            base_url=manifest["base_url"],
            key_fingerprint=manifest["key_fingerprint"],
            studies=manifest["studies"],
            last_refresh_at=last["refreshed_at"] if last else None,
            last_refresh_mode=last["mode"] if last else None,
            last_refresh=last,
            refreshes=len(manifest["refreshes"]),
            file_bytes={name: _file_size(directory, name) for name in files},
        )
        return info

    # -- refreshing -------------------------------------------------------------------------

    def refresh(
        self,
        client: Client,
        mode: Literal["full", "active"] = "full",
        *,
        concurrency: int = 8,
        progress: bool = True,
    ) -> RefreshSummary:
        """Bring the cache up to date with the API and record what changed in the history.

        ``mode="full"`` fetches every study and compares it with the cache: exact.

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

        Killed or interrupted (Ctrl-C) at any point, the previous cache stays intact.
        """
        from viewerkit import frame

        if mode not in ("full", "active"):
            raise ValidationError.from_cases(
                "bad refresh options",
                [{"row": None, "field": "mode", "value": mode, "reason": Reason.NOT_A_CHOICE,
                  "detail": "allowed: full, active"}],
            )
        started = time.perf_counter()
        observed_at = _now_ms()
        directory = self.path / namespace_of(client.base_url, client.key_fingerprint)
        directory.mkdir(parents=True, exist_ok=True)
        with _refresh_lock(directory):
            manifest = self._manifest(directory) if (directory / _MANIFEST).exists() else None
            old = self._read_table(directory, manifest["studies_file"]) if manifest else None
            if old is None or len(old) == 0:
                # nothing cached (or no study yet): active mode has no newest created_at to
                # look for new studies from, and would miss every new closed one
                mode = "full"
            if mode == "full":
                current = self._fetch_full(client, concurrency=concurrency, progress=progress)
                diff = _diff(old, current)
            else:
                assert old is not None
                updates, vanished = self._fetch_active(
                    client, old, concurrency=concurrency, progress=progress
                )
                # compare only what was re-fetched; the rest of the cache is carried over
                touched = pa.concat_arrays(
                    [updates.column("study_id").combine_chunks(), pa.array(vanished, pa.string())]
                )
                old_touched = _rows(old, touched)
                diff = _diff(old_touched, updates)
                diff.unchanged = len(old) - len(diff.changed_ids) - len(diff.gone_ids)
                kept = old.filter(pc.invert(pc.is_in(old.column("study_id"), value_set=touched)))
                current = _without_empty_meta(
                    _in_list_order(frame.concat_studies([kept, updates]))
                )
                old = old_touched
            summary = RefreshSummary(
                mode=mode,
                new=len(diff.new_ids),
                changed=len(diff.changed_ids),
                gone=len(diff.gone_ids),
                unchanged=diff.unchanged,
                duration_s=0.0,
                refreshed_at=_iso(observed_at),
            )
            self._commit(directory, client, manifest, old, current, diff, observed_at, summary)
        summary = RefreshSummary(**{**asdict(summary), "duration_s": time.perf_counter() - started})
        return summary

    def _fetch_full(self, client: Client, *, concurrency: int, progress: bool) -> pa.Table:
        from viewerkit import fetch, frame

        return frame.conform(
            fetch.fetch_studies_arrow(client, concurrency=concurrency, progress=progress)
        )

    def _fetch_active(
        self, client: Client, old: pa.Table, *, concurrency: int, progress: bool
    ) -> tuple[pa.Table, list[str]]:
        """The re-fetched studies (open now, new, or closed since) and the IDs of cached
        studies the API no longer has."""
        from viewerkit import fetch, frame

        open_now = frame.conform(
            fetch.fetch_studies_arrow(
                client,
                is_cancelled=False,
                study_viewer_status="incomplete",
                concurrency=concurrency,
                progress=progress,
            )
        )
        fresh = [open_now, self._fetch_new(client, old)]
        seen = pa.concat_arrays([t.column("study_id").combine_chunks() for t in fresh])
        # cached open studies the open list no longer returns: completed or cancelled since
        was_open = pc.and_(
            pc.invert(old.column("is_cancelled").fill_null(False)),
            pc.equal(old.column("study_viewer_status").cast(pa.string()), "incomplete"),
        )
        was_open_ids = old.column("study_id").filter(was_open)
        closed_ids = pc.filter(
            was_open_ids, pc.invert(pc.is_in(was_open_ids, value_set=seen))
        ).combine_chunks()
        closed, vanished = self._fetch_closed(client, old, closed_ids, concurrency, progress)
        fresh.extend(closed)
        return fetch.newest_per_study(frame.concat_studies(fresh)), vanished

    def _fetch_closed(
        self,
        client: Client,
        old: pa.Table,
        closed_ids: pa.Array,
        concurrency: int,
        progress: bool,
    ) -> tuple[list[pa.Table], list[str]]:
        """The new state of cached open studies that left the open list, and the IDs of those
        the API no longer has.

        Open studies are mostly recent, so the recently closed ones are found cheaply by
        paging the closed partitions (complete x severity, cancelled), newest first, down to
        a cutoff; the older ones are retrieved one by one, concurrently. The cutoff minimises
        the estimated request rounds of the two (from the cached created_at values).
        """
        from viewerkit import fetch, frame

        if len(closed_ids) == 0:
            return [], []
        workers = max(1, min(concurrency, client.max_concurrency))
        cutoff = _paging_cutoff(old, closed_ids, workers)
        tables: list[pa.Table] = []
        remaining = closed_ids
        if cutoff is not None:
            paged = self._page_closed(client, cutoff, workers)
            found = paged.filter(pc.is_in(paged.column("study_id"), value_set=closed_ids))
            found = fetch.newest_per_study(found)
            tables.append(found)
            remaining = pc.filter(
                closed_ids, pc.invert(pc.is_in(closed_ids, value_set=found.column("study_id")))
            )
        retrieved, vanished = self._retrieve(client, remaining.to_pylist(), concurrency, progress)
        if retrieved:
            tables.append(frame.studies_to_arrow(retrieved, call="retrieve_study"))
        return tables, vanished

    def _page_closed(self, client: Client, cutoff: datetime, workers: int) -> pa.Table:
        """Every closed study (complete, or cancelled) created at or after ``cutoff``: one
        page chain per partition, newest first, run concurrently."""
        from viewerkit import frame

        partitions: list[dict[str, Any]] = [
            {"study_viewer_status": "complete", "is_cancelled": False, "severity": severity}
            for severity in ("normal", "high", "stat")
        ]
        partitions.append({"is_cancelled": True})

        stop = threading.Event()  # set on Ctrl-C or a failure: in-flight calls stop retrying

        def chain(filters: dict[str, Any]) -> list[pa.Table]:
            pages: list[pa.Table] = []
            cursor: Any = None
            while True:
                extra = {"cursor": cursor} if cursor is not None else {}
                with _stop_retrying_when(stop):
                    raw = client.list_studies_raw(limit=100, **filters, **extra)
                table, cursor, has_more = frame.page_to_arrow(raw)
                pages.append(table)
                oldest = pc.min(table.column("created_at")).as_py() if len(table) else None
                if not has_more or cursor is None or oldest is None or oldest < cutoff:
                    return pages

        with ThreadPoolExecutor(min(workers, len(partitions))) as pool:
            try:
                chains = list(pool.map(chain, partitions))
            except BaseException:
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return frame.concat_studies([page for pages in chains for page in pages])

    def _fetch_new(self, client: Client, old: pa.Table) -> pa.Table:
        """Studies created since the cache's newest one: the unfiltered list, newest first,
        page by page until a page reaches back past the newest cached created_at (less a
        margin)."""
        from viewerkit import frame

        newest = pc.max(old.column("created_at")).as_py()
        if newest is None:
            return frame.empty_studies()
        horizon = newest - _NEW_STUDY_MARGIN
        pages: list[pa.Table] = []
        cursor: Any = None
        while True:
            raw = client.list_studies_raw(
                limit=100, **({"cursor": cursor} if cursor is not None else {})
            )
            table, next_cursor, has_more = frame.page_to_arrow(raw)
            pages.append(table)
            oldest = pc.min(table.column("created_at")).as_py() if len(table) else None
            if not has_more or oldest is None or oldest < horizon:
                break
            if not next_cursor:
                # stopping here would silently miss the new studies on the next pages
                raise ApiError("a page said hasMore but gave no cursor", call="list_studies")
            cursor = next_cursor
        return frame.concat_studies(pages)

    def _retrieve(
        self, client: Client, study_ids: list[str], concurrency: int, progress: bool
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Retrieve studies concurrently; returns (found studies, IDs the API no longer has)."""
        if not study_ids:
            return [], []
        from tqdm.auto import tqdm

        stop = threading.Event()  # set on Ctrl-C or a failure: in-flight calls stop retrying

        def one(study_id: str) -> dict[str, Any] | None:
            try:
                with _stop_retrying_when(stop):
                    return client.retrieve_study(study_id)
            except NotFound:
                return None

        found: list[dict[str, Any]] = []
        vanished: list[str] = []
        workers = max(1, min(concurrency, client.max_concurrency, len(study_ids)))
        with ThreadPoolExecutor(workers, thread_name_prefix="viewerkit-retrieve") as pool, tqdm(
            total=len(study_ids), desc="closed studies", unit="study", disable=not progress
        ) as bar:
            try:
                for study_id, study in zip(study_ids, pool.map(one, study_ids), strict=True):
                    if study is None:
                        vanished.append(study_id)
                    else:
                        found.append(study)
                    bar.update()
            except BaseException:
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return found, vanished

    def _commit(
        self,
        directory: Path,
        client: Client,
        manifest: dict[str, Any] | None,
        old: pa.Table | None,
        current: pa.Table,
        diff: _Diff,
        observed_at: datetime,
        summary: RefreshSummary,
    ) -> None:
        """Write the new files aside, then replace the manifest: the one commit point."""
        generation = f"{observed_at.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
        studies_file = f"studies-{generation}.parquet"
        history_files = list(manifest["history_files"]) if manifest else []
        _write_parquet(current, directory / studies_file)
        part = _history_part(observed_at, old, current, diff)
        if part is not None:
            (directory / "history").mkdir(exist_ok=True)
            name = f"history/{generation}.parquet"
            _write_parquet(part, directory / name)
            history_files.append(name)
        created = current.column("created_at")
        newest = pc.max(created).as_py() if len(current) else None
        record = {k: v for k, v in asdict(summary).items() if k != "duration_s"}
        _write_json(
            {
                "format": _FORMAT,
                "version": _FORMAT_VERSION,
                "base_url": client.base_url,
                "key_fingerprint": client.key_fingerprint,
                "studies_file": studies_file,
                "history_files": history_files,
                "studies": len(current),
                "newest_created_at": _iso(newest) if newest is not None else None,
                "refreshes": [*(manifest["refreshes"] if manifest else []), record],
            },
            directory / _MANIFEST,
        )
        self._sweep(directory, {studies_file, *history_files})

    def _sweep(self, directory: Path, keep: set[str]) -> None:
        """Remove files no manifest refers to: old generations, unfinished refreshes."""
        for entry in [*directory.iterdir(), *(directory / "history").glob("*")]:
            name = entry.relative_to(directory).as_posix()
            if entry.is_file() and name not in keep and name not in (_MANIFEST, ".lock"):
                with contextlib.suppress(OSError):
                    entry.unlink()


#: Estimated cost of one list page (100 studies) in single-study retrieves.
_PAGE_COST = 3.0


def _paging_cutoff(old: pa.Table, closed_ids: pa.Array, workers: int) -> datetime | None:
    """The created_at down to which paging the closed partitions is cheaper than retrieving
    (see ``_fetch_closed``), or None to retrieve every study."""
    import numpy as np

    candidates = _rows(old, closed_ids).column("created_at")
    created = np.sort(candidates.cast(pa.int64()).fill_null(0).to_numpy())[::-1]  # newest first
    n = len(created)
    closed = pc.or_(
        pc.fill_null(old.column("is_cancelled"), False),
        pc.equal(old.column("study_viewer_status").cast(pa.string()), "complete"),
    )
    chains = [
        pc.and_(pc.and_(closed, pc.invert(pc.fill_null(old.column("is_cancelled"), False))),
                pc.equal(old.column("severity").cast(pa.string()), severity))
        for severity in ("normal", "high", "stat")
    ]
    chains.append(pc.fill_null(old.column("is_cancelled"), False))
    # studies each chain must page through to reach each candidate's created_at
    longest = np.zeros(n, dtype=np.int64)
    for mask in chains:
        values = np.sort(
            old.column("created_at").filter(mask).cast(pa.int64()).fill_null(0).to_numpy()
        )
        longest = np.maximum(longest, len(values) - np.searchsorted(values, created, "left"))
    page_rounds = np.ceil((longest + 1) / 100.0) * _PAGE_COST
    retrieve_rounds = np.ceil((n - np.arange(1, n + 1)) / workers)
    costs = page_rounds + retrieve_rounds
    best = int(np.argmin(costs))
    if costs[best] >= np.ceil(n / workers):
        return None
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=int(created[best]))


def _in_list_order(table: pa.Table) -> pa.Table:
    """Rows in list order as the fetcher returns them: newest created_at first, then study_id
    descending."""
    order = pc.sort_indices(
        table.select(["created_at", "study_id"]),
        sort_keys=[("created_at", "descending"), ("study_id", "descending")],
    )
    return table.take(order)


def _without_empty_meta(table: pa.Table) -> pa.Table:
    """Drop ``meta.*`` columns no study has a value in (a key the last study holding it lost),
    as a fresh fetch would not have them."""
    empty = [
        name
        for name in table.column_names
        if name.startswith(META_PREFIX) and table.column(name).null_count == len(table)
    ]
    return table.drop_columns(empty) if empty else table
