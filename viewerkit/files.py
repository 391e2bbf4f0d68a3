"""Every file viewerkit writes: atomic writes, fsync'd appends, the inter-process lock, and
the study-table exports (Parquet, CSV).

- ``atomic_write(path)`` yields a temporary path beside ``path``; when the block ends
  without error the file is fsync'd, renamed over ``path`` (``os.replace``) and the folder
  fsync'd. On any error or Ctrl-C the temporary file is removed and ``path`` is untouched,
  so a reader sees the old file or the new one, never half of one. ``write_bytes``,
  ``write_text``, ``write_json`` and ``write_parquet`` are the usual cases.
- ``append_bytes`` and ``append_json_line`` add to a file and return only once the data is
  on disk (fsync), for journals. They ``flock`` the file while appending: guard a journal
  with a separate lock file, never with ``file_lock`` on the journal itself.
- ``file_lock(path)`` holds an exclusive inter-process lock (``fcntl.flock``), waiting for
  another holder up to a timeout (``LockTimeout`` after it); the OS drops it if the
  holder dies.
- ``write_studies(table, path)`` exports a study table to ``.parquet`` or ``.csv``;
  ``check_output_path(path)`` refuses a path it could not write, before a long fetch.

New files get the permissions ``open()`` would give them: ``0o666`` less the umask (a
private umask such as ``077`` keeps study data private; the default ``022`` lets
colleagues read a report).

A process killed outright (SIGKILL, power loss) during an atomic write leaves the target
intact and may leave its temporary file, a hidden ``.<name>.<hex>.tmp`` beside it.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_json({"studies": 2}, folder / "summary.json").read_text()
'{\\n  "studies": 2\\n}\\n'
>>> sorted(p.name for p in folder.iterdir())
['summary.json']
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from viewerkit.errors import LockTimeout, Reason, ValidationError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "STUDY_FILE_SUFFIXES",
    "append_bytes",
    "append_json_line",
    "atomic_write",
    "check_output_path",
    "file_lock",
    "write_bytes",
    "write_json",
    "write_parquet",
    "write_studies",
    "write_text",
]

log = logging.getLogger(__name__)

#: How long ``file_lock`` waits for another holder by default, in seconds.
DEFAULT_LOCK_TIMEOUT_S: Final = 300.0

#: The file types ``write_studies`` writes, by suffix (any case).
STUDY_FILE_SUFFIXES: Final = (".parquet", ".csv")

_NEW_FILE_MODE: Final = 0o666  # what open() asks for; the kernel takes the umask off
_LONGEST_POLL_S: Final = 0.5

StrPath = str | os.PathLike[str]


# --- atomic writes ----------------------------------------------------------------------------


def _fsync_folder(folder: Path) -> None:
    """Make a rename or a new name in ``folder`` durable. Some file systems refuse to
    fsync a folder; there is nothing better to do there."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: StrPath) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``.

    When the block ends without error: the temporary file is fsync'd, renamed over ``path``
    (``os.replace``, atomic) and the folder fsync'd, so the new file survives a crash. On any
    error or Ctrl-C inside the block the temporary file is removed and the previous ``path``
    (if any) is untouched. The temporary file is created empty before the block, with the
    permissions ``open()`` gives a new file (``0o666`` less the umask), which a writer that
    opens it by name keeps. The folder must exist.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_write(target) as temp:
    ...     _ = temp.write_text("draft")
    >>> target.read_text()
    'draft'
    >>> with atomic_write(target) as temp:
    ...     _ = temp.write_text("half")
    ...     raise RuntimeError("interrupted")
    Traceback (most recent call last):
    RuntimeError: interrupted
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('draft', ['notes.txt'])
    """
    target = Path(path)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        # O_EXCL: the name is ours alone; the mode goes through the umask, as with open()
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE))
        yield temp
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        _fsync_folder(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def write_bytes(data: bytes, path: StrPath) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``); return the path.

    >>> import tempfile, pathlib
    >>> write_bytes(b"PNG", pathlib.Path(tempfile.mkdtemp()) / "a.png").read_bytes()
    b'PNG'
    """
    with atomic_write(path) as temp:
        temp.write_bytes(data)
    return Path(path)


def write_text(text: str, path: StrPath, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, encoded (UTF-8 by default); return the path.

    >>> import tempfile, pathlib
    >>> write_text("<p>ok</p>", pathlib.Path(tempfile.mkdtemp()) / "r.html").read_text()
    '<p>ok</p>'
    """
    return write_bytes(text.encode(encoding), path)


def write_json(value: Any, path: StrPath) -> Path:
    """Write ``value`` as JSON (indent 2, sorted keys, ASCII, a final newline) to ``path``
    atomically; return the path.

    >>> import tempfile, pathlib, json
    >>> json.loads(write_json({"b": 1, "a": [2]}, pathlib.Path(tempfile.mkdtemp()) / "m.json").read_text())
    {'a': [2], 'b': 1}
    """
    return write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", path)


def write_parquet(table: pa.Table, path: StrPath) -> Path:
    """Write an Arrow table to ``path`` as Parquet (zstd) atomically; return the path.

    >>> import tempfile, pathlib, pyarrow as pa, pyarrow.parquet as pq
    >>> written = write_parquet(pa.table({"n": [1, 2]}), pathlib.Path(tempfile.mkdtemp()) / "t.parquet")
    >>> pq.read_table(written).column("n").to_pylist()
    [1, 2]
    """
    import pyarrow.parquet as pq

    with atomic_write(path) as temp:
        pq.write_table(table, temp, compression="zstd")
    return Path(path)


# --- durable appends --------------------------------------------------------------------------


def _append(data: bytes, path: Path, *, whole_lines: bool) -> None:
    existed = path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, _NEW_FILE_MODE)
    try:
        # Appenders take turns (flock; released by close): another one's write in progress
        # can show a size whose last byte is mid-line, and a short write must not be split.
        _hold_exclusive(fd)
        if whole_lines:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # the last line was torn (a crash mid-append): end it, so this one stays whole
                data = b"\n" + data
        view = memoryview(data)
        while view:  # one write() in practice; a short write continues where it stopped
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if not existed:
        _fsync_folder(path.parent)


def _hold_exclusive(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: appends rely on O_APPEND alone
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def append_bytes(data: bytes, path: StrPath) -> None:
    """Append ``data`` to ``path`` (created if missing) and fsync: the data is on disk when
    this returns. Appends from several processes take turns (``O_APPEND`` and ``flock``), so
    they do not interleave.

    >>> import tempfile, pathlib
    >>> log_file = pathlib.Path(tempfile.mkdtemp()) / "log.bin"
    >>> append_bytes(b"a", log_file); append_bytes(b"b", log_file)
    >>> log_file.read_bytes()
    b'ab'
    """
    _append(bytes(data), Path(path), whole_lines=False)


def append_json_line(value: Any, path: StrPath) -> None:
    """Append ``value`` as one line of JSON (compact, sorted keys, ASCII) to ``path``
    (created if missing) and fsync: the line is on disk when this returns.

    Every line is whole: appends from several processes take turns (``O_APPEND`` and
    ``flock``) and do not interleave, and if a crash tore the file's last line, that line is
    ended first so the new one still reads as JSON on its own line.

    >>> import tempfile, pathlib
    >>> journal = pathlib.Path(tempfile.mkdtemp()) / "journal.jsonl"
    >>> append_json_line({"study_id": "stu_1", "change": "reassign"}, journal)
    >>> append_json_line({"study_id": "stu_2", "change": "cancel"}, journal)
    >>> print(journal.read_text(), end="")
    {"change":"reassign","study_id":"stu_1"}
    {"change":"cancel","study_id":"stu_2"}
    """
    line = json.dumps(value, separators=(",", ":"), sort_keys=True) + "\n"
    _append(line.encode("ascii"), Path(path), whole_lines=True)


# --- the inter-process lock -------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(
    path: StrPath,
    *,
    timeout: float | None = DEFAULT_LOCK_TIMEOUT_S,
    on_wait: Callable[[Path], None] | None = None,
    holder: str = "another process",
) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block.

    One holder at a time across processes (``fcntl.flock``). If another process holds the
    lock, wait for it, up to ``timeout`` seconds (default ``DEFAULT_LOCK_TIMEOUT_S``, 300;
    ``None``: no limit; ``0``: do not wait), then raise ``LockTimeout`` naming the lock file
    and how long this process waited. When the wait begins, ``on_wait(path)`` is called
    once; without it, a warning is logged (``viewerkit.files``): "waiting for the lock
    <path> held by <holder>". ``holder`` says who holds it in that message and the error,
    e.g. ``"another refresh"``. Ctrl-C while waiting stops the wait.

    The lock is released when the block ends, and by the OS if the process dies. It is not
    re-entrant: taking it again inside the block (even in the same process) waits for
    itself. The lock file is left in place: deleting it would let two holders in. Without
    ``fcntl`` (Windows) there is no cross-process lock and the block runs unlocked.

    >>> import tempfile, pathlib
    >>> lock = pathlib.Path(tempfile.mkdtemp()) / ".lock"
    >>> with file_lock(lock, holder="another refresh"):
    ...     "refreshing"
    'refreshing'
    """
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
    ):
        raise ValidationError.one(
            "file_lock", "timeout", timeout, Reason.OUT_OF_RANGE, detail="seconds, 0 or more, or None"
        )
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    lock_path = Path(path)

    def try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    with open(lock_path, "a+b") as handle:  # "a": create if missing, never truncate
        fd = handle.fileno()
        if not try_lock(fd):
            started = time.monotonic()
            if on_wait is not None:
                on_wait(lock_path)
            else:
                limit = "no limit" if timeout is None else f"up to {timeout:g} s"
                log.warning("waiting for the lock %s held by %s (%s)", lock_path, holder, limit)
            pause = 0.01
            while not try_lock(fd):
                waited = time.monotonic() - started
                if timeout is not None and waited >= timeout:
                    raise LockTimeout(str(lock_path), waited, holder=holder)
                left = float("inf") if timeout is None else timeout - waited
                time.sleep(min(pause, left))
                pause = min(pause * 2, _LONGEST_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


# --- study-table exports ----------------------------------------------------------------------


def check_output_path(
    path: StrPath, *, suffixes: Sequence[str] = STUDY_FILE_SUFFIXES, what: str = "write_studies"
) -> Path:
    """Refuse a path ``write_studies`` (or ``what``) could not write, before any work: return
    it as a Path.

    The name must end with one of ``suffixes`` (any case; by default ``.parquet`` or
    ``.csv``), its folder must exist, and it must not be a folder. Raises ``ValidationError``
    (field ``path``, message headed ``what``) listing every problem. Call it before a long
    fetch or report whose result goes to ``path``.

    >>> check_output_path("studies.parquet").suffix
    '.parquet'
    >>> check_output_path("studies.xlsx")
    Traceback (most recent call last):
    viewerkit.errors.ValidationError: write_studies: 1 problem
      field path: must end with one of the allowed suffixes, allowed: .parquet, .csv (got 'studies.xlsx')
    """
    target = Path(path)
    cases: list[dict[str, Any]] = []

    def refuse(reason: Reason, detail: str | None = None) -> None:
        cases.append({"field": "path", "value": os.fspath(path), "reason": reason, "detail": detail})

    if target.suffix.lower() not in suffixes:
        refuse(Reason.WRONG_SUFFIX, "allowed: " + ", ".join(suffixes))
    folder = target.absolute().parent
    if not folder.is_dir():
        said = f"{folder} is not a folder" if folder.exists() else f"folder {folder} does not exist"
        refuse(Reason.NO_SUCH_FOLDER, said)
    elif target.is_dir():
        refuse(Reason.IS_A_FOLDER)
    if cases:
        raise ValidationError.from_cases(what, cases)
    return target


def write_studies(table: pa.Table | pd.DataFrame, path: StrPath) -> Path:
    """Write a study table (Arrow, or the DataFrame of ``fetch_studies`` / ``StudyCache.load``,
    edited or not) to ``path``, atomically: ``.parquet`` (zstd, the study table's Arrow
    types: ``viewerkit.frame.conform``) or ``.csv`` (via ``viewerkit.frame.to_pandas``, so
    values read as in the DataFrame users get: timestamps ``2026-11-02 08:00:00+00:00``,
    empty cells for nulls; a header row, no index). Columns outside the study table are
    not written. Returns the path.

    Raises ``ValidationError`` (field ``path``) before writing anything if the suffix is
    neither or the folder does not exist (``check_output_path``).

    >>> import tempfile, pathlib
    >>> from viewerkit.frame import empty_studies
    >>> out = write_studies(empty_studies(), pathlib.Path(tempfile.mkdtemp()) / "studies.csv")
    >>> out.read_text().split(",")[:3]
    ['study_id', 'study_instance_uid', 'study_description']
    """
    import pyarrow as pa

    from viewerkit.frame import conform, to_pandas

    target = check_output_path(path)
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    table = conform(table)
    if target.suffix.lower() == ".parquet":
        return write_parquet(table, target)
    studies = to_pandas(table)
    with atomic_write(target) as temp:
        studies.to_csv(temp, index=False)
    return target
