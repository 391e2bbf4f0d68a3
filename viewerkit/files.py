"""Every file viewerkit writes: atomic writes, fsync'd appends, the inter-process lock, and
the study-table exports (Parquet, CSV, Excel).

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
- ``write_studies(table, path, tz=...)`` exports a study table to ``.parquet``, ``.csv`` or
  ``.xlsx``; times in CSV and Excel are shown in the time zone ``tz`` (UTC by default) and
  say so; text cells a spreadsheet would run as a formula are neutralised (OWASP's rule
  for CSV injection) unless ``formulas="keep"``. ``read_studies(path)`` reads any of them
  back into the study DataFrame (its dtypes, UTC times), undoing the neutralising.
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
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from viewerkit.errors import LockTimeout, Reason, ValidationError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "DEFAULT_EXPORT_TZ",
    "DEFAULT_LOCK_TIMEOUT_S",
    "FORMULA_POLICIES",
    "FormulaPolicy",
    "STUDY_FILE_SUFFIXES",
    "STUDY_ID_COLUMNS",
    "append_bytes",
    "append_json_line",
    "atomic_write",
    "check_output_path",
    "check_time_zone",
    "file_lock",
    "read_studies",
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
STUDY_FILE_SUFFIXES: Final = (".parquet", ".csv", ".xlsx")

#: The time zone ``write_studies`` shows times in unless told otherwise.
DEFAULT_EXPORT_TZ: Final = "UTC"

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
    ``.csv`` or ``.xlsx``), its folder must exist, and it must not be a folder. Raises ``ValidationError``
    (field ``path``, message headed ``what``) listing every problem. Call it before a long
    fetch or report whose result goes to ``path``.

    >>> check_output_path("studies.parquet").suffix
    '.parquet'
    >>> check_output_path("studies.xls")
    Traceback (most recent call last):
    viewerkit.errors.ValidationError: write_studies: 1 problem
      field path: must end with one of the allowed suffixes, allowed: .parquet, .csv, .xlsx (got 'studies.xls')
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


#: What ``write_studies`` does with CSV text cells a spreadsheet would run as a formula:
#: ``"neutralise"`` (the default) or ``"keep"``; ``read_studies`` takes the same word.
FormulaPolicy = Literal["neutralise", "keep"]
FORMULA_POLICIES: Final = ("neutralise", "keep")

#: The study table's ID columns: written as they are, never altered (see ``write_studies``).
STUDY_ID_COLUMNS: Final = (
    "study_id",
    "study_instance_uid",
    "assigned_to_user_id",
    "created_by_user_user_id",
    "created_by_api_key_id",
    "express_customer_id",
)

# OWASP's CSV injection rule: a cell a spreadsheet reads as a formula starts with = + - @,
# a tab or a carriage return; spreadsheets that skip leading whitespace make " =1+1" one
# too. Quotes first: a cell that already starts with ' and would be read back as
# neutralised gets one more, so writing then reading gives back every value.
_FORMULA_START: Final = r"^(?:[\t\r]|\s*[=+\-@])"
_FORMULA: Final = r"^'*(?:[\t\r]|\s*[=+\-@])"
_NEUTRALISED: Final = r"^'+(?:[\t\r]|\s*[=+\-@])"


def _text_columns(names: Sequence[str]) -> list[str]:
    """The free-text columns of a study table: string columns other than IDs, and meta.*."""
    import pyarrow as pa

    from viewerkit.schema import META_PREFIX, STUDY_SCHEMA

    return [
        name for name in names
        if name.startswith(META_PREFIX)
        or (STUDY_SCHEMA.get_field_index(name) >= 0
            and STUDY_SCHEMA.field(name).type == pa.string()
            and name not in STUDY_ID_COLUMNS)
    ]


def _check_formula_policy(formulas: object, what: str, allowed: Sequence[str] = FORMULA_POLICIES) -> None:
    if not isinstance(formulas, str) or formulas not in allowed:
        raise ValidationError.one(
            what, "formulas", formulas, Reason.NOT_A_CHOICE, detail="allowed: " + ", ".join(allowed)
        )


def check_time_zone(tz: object, *, what: str = "write_studies") -> str:
    """Refuse a time zone an export cannot show times in: return its name.

    ``tz`` is an IANA time zone name (``"UTC"``, ``"Europe/Berlin"``, ``"America/New_York"``):
    the rule of :func:`viewerkit.timezones.report_timezone`, the one check of the setting
    (a ``ValidationError`` headed ``what`` on field ``tz``, ``Reason.NOT_A_TIME_ZONE``).
    None means UTC. Call it before a long fetch whose result an export writes.

    >>> check_time_zone("Europe/Berlin")
    'Europe/Berlin'
    >>> check_time_zone("CEST")
    Traceback (most recent call last):
    viewerkit.errors.ValidationError: write_studies: 1 problem
      field tz: must be an IANA time zone name such as UTC or Europe/Berlin (got 'CEST')
    """
    from viewerkit.timezones import report_timezone

    if tz is None or tz == DEFAULT_EXPORT_TZ:  # None means UTC, as for the reports
        return DEFAULT_EXPORT_TZ
    if not isinstance(tz, str):  # a ZoneInfo is fine for a report, but an export names it
        raise ValidationError.one(what, "tz", tz, Reason.WRONG_TYPE,
                                  detail="a time zone name such as 'Europe/Berlin'")
    return str(report_timezone(tz, what=what).key)


def write_studies(
    table: pa.Table | pd.DataFrame,
    path: StrPath,
    *,
    tz: str = DEFAULT_EXPORT_TZ,
    formulas: FormulaPolicy = "neutralise",
) -> Path:
    """Write a study table (Arrow, or the DataFrame of ``fetch_studies`` / ``StudyCache.load``,
    edited or not) to ``path``, atomically, in the format its suffix names (any case).
    Columns outside the study table are not written; the ``meta.*`` columns are. Returns the
    path. :func:`read_studies` reads any of them back into the study DataFrame.

    - ``.parquet``: zstd, the study table's Arrow types (``viewerkit.frame.conform``); times
      are instants (UTC), whatever ``tz`` says.
    - ``.csv``: UTF-8, a header row, no index; values as in the DataFrame users get:
      timestamps ``2026-11-02 08:00:00.000+00:00`` (in ``tz`` with its offset, e.g.
      ``2026-11-02 09:00:00.000+01:00`` for ``tz="Europe/Berlin"``), booleans ``True`` /
      ``False``; a null is an empty cell and every other value is quoted, so an empty text
      ``""`` stays apart from a null.
    - ``.xlsx`` (Excel, through openpyxl): a sheet ``studies`` (header row frozen, with
      filters) and a sheet ``about`` saying how the file was written. Excel has no time
      zones, so times are the local times of ``tz`` (UTC by default) and each time column's
      name says which: ``created_at (Europe/Berlin)``. A local time that happens twice (the
      hour the clocks go back) also shows its UTC offset (``2026-10-25 2:30:00 +01:00``), so
      every time reads back as the same instant. ``severity`` and ``study_viewer_status``
      are text, booleans Excel's TRUE / FALSE, nulls empty cells (an empty text ``""`` is
      an empty text cell). Excel refuses a text cell over 32,767 characters and a sheet over
      1,048,575 rows: a ``ValidationError`` (``TOO_LONG`` naming row and field;
      ``OUT_OF_RANGE``) before writing. Characters XML cannot hold (control characters)
      are written as Excel's own escape ``_x0000_``.

    ``tz``: an IANA time zone name (see :func:`check_time_zone`) for the times of CSV and
    Excel files.

    CSV, spreadsheets and formulas (CSV injection): a spreadsheet runs a cell that starts
    with ``=``, ``+``, ``-`` or ``@`` (also after leading whitespace), a tab or a carriage
    return as a formula, e.g. a description ``=HYPERLINK("http://evil.example","open")``.
    With ``formulas="neutralise"`` (the default, OWASP's advice):

    - in CSV, such cells of the free-text columns (description, names, emails, the API key's
      description, the customer's name, every ``meta.*`` value) get a leading ``'``, so a
      spreadsheet shows them as text; a text cell that starts with ``'`` and would read back
      as neutralised gets one more, so :func:`read_studies` gives back every value exactly.
      IDs, enums, booleans and times are never altered: an ID cell that starts like a
      formula (outside the contract) is refused, a ``ValidationError`` naming row and field
      (``STARTS_LIKE_FORMULA``), before anything is written;
    - in Excel, every text cell is stored as text (never as a formula, whatever it starts
      with) and such cells also carry Excel's quote prefix, the mark Excel itself sets when
      one types ``'=1+1``: they show as typed, their value is unchanged, and editing one
      does not turn it into a formula.

    ``formulas="keep"`` writes every cell as it is (CSV), or without the quote prefix
    (Excel), for programs that read the file, not spreadsheets. Parquet is not read by
    spreadsheets and is written as is.

    Raises ``ValidationError`` (field ``path``) before writing anything if the suffix is
    none of these or the folder does not exist (``check_output_path``), (field ``formulas``)
    for another word, or (field ``tz``) for an unknown time zone.

    >>> import tempfile, pathlib, pyarrow as pa
    >>> from viewerkit.frame import empty_studies
    >>> out = write_studies(empty_studies(), pathlib.Path(tempfile.mkdtemp()) / "studies.csv")
    >>> out.read_text().split(",")[:3]
    ['"study_id"', '"study_instance_uid"', '"study_description"']
    >>> import csv
    >>> one = pa.table({"study_id": ["stu_" + "a" * 32], "study_instance_uid": ["1.2"],
    ...                 "study_description": ["=1+1"],
    ...                 "created_at": pa.array([0], pa.timestamp("ms", tz="UTC"))})
    >>> row = next(csv.DictReader(write_studies(one, out, tz="Asia/Kolkata").read_text().splitlines()))
    >>> row["study_description"], row["created_at"]
    ("'=1+1", '1970-01-01 05:30:00.000+05:30')
    >>> import openpyxl
    >>> sheet = openpyxl.load_workbook(write_studies(one, out.with_suffix(".xlsx"), tz="Asia/Kolkata"))["studies"]
    >>> header = [cell.value for cell in sheet[1]]
    >>> sheet["C2"].value, sheet["C2"].data_type, sheet["C2"].quotePrefix  # text, marked as text
    ('=1+1', 's', True)
    >>> sheet.cell(2, header.index("created_at (Asia/Kolkata)") + 1).value
    datetime.datetime(1970, 1, 1, 5, 30)
    """
    import pyarrow as pa

    from viewerkit.frame import conform

    target = check_output_path(path)
    _check_formula_policy(formulas, "write_studies")
    zone = check_time_zone(tz)
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    table = conform(table)
    suffix = target.suffix.lower()
    if suffix == ".parquet":
        return write_parquet(table, target)
    if suffix == ".xlsx":
        return _write_xlsx(table, target, tz=zone, neutralise=formulas == "neutralise")
    cells = _csv_cells(table, neutralise=formulas == "neutralise", tz=zone)
    import pyarrow.csv as pcsv

    with atomic_write(target) as temp:
        # "needed" quotes every string, leaves nulls as empty cells
        pcsv.write_csv(cells, temp, pcsv.WriteOptions(quoting_style="needed"))
    return target


def _csv_cells(table: pa.Table, *, neutralise: bool, tz: str = DEFAULT_EXPORT_TZ) -> pa.Table:
    """Every column of a conformed study table as the CSV's text (see ``write_studies``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = set(_text_columns(table.column_names))
    if neutralise:
        cases = []
        for name in STUDY_ID_COLUMNS:
            risky = pc.fill_null(pc.match_substring_regex(table.column(name), _FORMULA_START), False)
            for row in pc.indices_nonzero(risky).to_pylist():
                cases.append({"row": row, "field": name, "value": table.column(name)[row].as_py(),
                              "reason": Reason.STARTS_LIKE_FORMULA,
                              "detail": "IDs are never altered: write Parquet, or formulas='keep'"})
        if cases:
            raise ValidationError.from_cases("write_studies", cases)
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type) and tz == DEFAULT_EXPORT_TZ:
            # %S carries the milliseconds of a ms timestamp
            column = pc.strftime(column, format="%Y-%m-%d %H:%M:%S+00:00")
        elif pa.types.is_timestamp(field.type):
            column = _offset_times(column, tz)
        elif pa.types.is_boolean(field.type):
            column = pc.if_else(column, "True", "False")
        elif pa.types.is_dictionary(field.type):
            column = column.cast(pa.string())
        elif neutralise and field.name in text:
            risky = pc.fill_null(pc.match_substring_regex(column, _FORMULA), False)
            column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _local_times(column: pa.ChunkedArray, tz: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """UTC instants -> (naive local times of ``tz``, their UTC offsets in minutes, whether
    the local time happens twice: the hour the clocks go back)."""
    import pandas as pd

    utc = pd.Series(column.to_pandas()).astype("datetime64[ms, UTC]")
    local = utc.dt.tz_convert(tz).dt.tz_localize(None)
    minutes = (local - utc.dt.tz_localize(None)) // pd.Timedelta(minutes=1)
    twice = local.notna() & local.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").isna()
    return local, minutes, twice


def _offset_text(minutes: int) -> str:
    """An offset from UTC as ISO 8601 writes it: 90 -> '+01:30'."""
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _offset_times(column: pa.ChunkedArray, tz: str) -> pa.Array:
    """UTC instants as CSV text in ``tz``: ``2026-11-02 09:00:00.000+01:00``."""
    import pyarrow as pa

    local, minutes, _ = _local_times(column, tz)
    offsets = minutes.map({m: _offset_text(int(m)) for m in minutes.dropna().unique()})
    millis = (local.dt.microsecond // 1000).astype("Int64").astype("string").str.zfill(3)
    text = local.dt.strftime("%Y-%m-%d %H:%M:%S").astype("string") + "." + millis + offsets.astype("string")
    return pa.array(text.astype(object).where(local.notna(), None).tolist(), pa.string())


# --- Excel ------------------------------------------------------------------------------------

_XLSX_STUDIES_SHEET: Final = "studies"
_XLSX_ABOUT_SHEET: Final = "about"
_XLSX_MAX_ROWS: Final = 1_048_575  # a sheet's 1,048,576 rows less the header
_XLSX_MAX_CHARS: Final = 32_767  # in a cell, UTF-16 code units
_XLSX_TIME_FORMAT: Final = "yyyy-mm-dd h:mm:ss"
_EXCEL_EARLIEST: Final = "1900-03-01"  # before it Excel's day numbers are not dates
# XML 1.0 cannot hold these characters (and a reader turns a carriage return into a line
# feed): OOXML writes one as _xHHHH_, and a text that holds _xHHHH_ itself gets its "_"
# written as _x005F_, as Excel does; RE2 spelling, then Python's
_XLSX_UNWRITABLE: Final = r"[\x{0}-\x{8}\x{b}-\x{1f}\x{fffe}\x{ffff}]|_x[0-9A-Fa-f]{4}_"
_XLSX_UNWRITABLE_PY: Final = "[\x00-\x08\x0b-\x1f\ufffe\uffff]|_x[0-9A-Fa-f]{4}_"
_XLSX_ESCAPE: Final = r"_x([0-9A-Fa-f]{4})_"
# openpyxl makes a text that starts with "=" a formula and Excel's error words error cells
_XLSX_NOT_PLAIN_TEXT: Final = r"^(?:=|#|$)"
# a time column's header: "created_at (Europe/Berlin)"; the offset a time cell's format shows
_XLSX_TIME_HEADER: Final = r"^(?P<name>\S+) \((?P<tz>[^()]+)\)$"
_XLSX_FORMAT_OFFSET: Final = r'"([+-])(\d\d):(\d\d)"'


def _xlsx_escape(text: str) -> str:
    import re

    def one(match: re.Match[str]) -> str:
        found = match.group(0)
        return "_x005F" + found if len(found) > 1 else f"_x{ord(found):04X}_"

    return re.sub(_XLSX_UNWRITABLE_PY, one, text)


def _xlsx_unescape(text: str) -> str:
    import re

    return re.sub(_XLSX_ESCAPE, lambda match: chr(int(match.group(1), 16)), text)


def _xlsx_column_width(header: str, column: pa.ChunkedArray) -> float:
    """Wide enough for the header and the first rows' values, within 10-60 characters."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(column.type):
        return max(20.0, len(header) + 3.0)
    sample = column.slice(0, 1000)
    if not pa.types.is_string(sample.type):
        sample = sample.cast(pa.string())
    longest = pc.max(pc.utf8_length(sample)).as_py() or 0
    return float(min(60, max(10, len(header) + 3, longest + 2)))


def _write_xlsx(table: pa.Table, target: Path, *, tz: str, neutralise: bool) -> Path:
    """A conformed study table as an Excel workbook (see ``write_studies``)."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.rich_text import CellRichText
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    import viewerkit

    if table.num_rows > _XLSX_MAX_ROWS:
        raise ValidationError.one(
            "write_studies", "table", table.num_rows, Reason.OUT_OF_RANGE,
            detail=f"an Excel sheet holds at most {_XLSX_MAX_ROWS:,} studies: write .parquet or .csv",
        )
    book = Workbook(write_only=True)
    sheet = book.create_sheet(_XLSX_STUDIES_SHEET)
    cases: list[dict[str, Any]] = []
    headers: list[str] = []
    columns: list[list[Any]] = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            headers.append(f"{field.name} ({tz})")
            local, minutes, twice = _local_times(column, tz)
            early = local < dt.datetime.fromisoformat(_EXCEL_EARLIEST)
            for row in early.to_numpy().nonzero()[0]:
                cases.append({"row": int(row), "field": field.name, "value": column[int(row)].as_py(),
                              "reason": Reason.OUT_OF_RANGE,
                              "detail": f"Excel shows no time before {_EXCEL_EARLIEST}"})
            values: list[Any] = pa.array(local, pa.timestamp("ms")).to_pylist()
            for row in twice.to_numpy().nonzero()[0]:
                cell = WriteOnlyCell(sheet, value=values[row])
                cell.number_format = f'{_XLSX_TIME_FORMAT} "{_offset_text(int(minutes.iloc[row]))}"'
                values[row] = cell
        elif pa.types.is_string(field.type):
            headers.append(field.name)
            values = column.to_pylist()
            long = pc.fill_null(pc.greater(pc.binary_length(column), _XLSX_MAX_CHARS), False)
            unwritable = pc.fill_null(pc.match_substring_regex(column, _XLSX_UNWRITABLE), False)
            for row in pc.indices_nonzero(pc.or_(long, unwritable)).to_pylist():
                values[row] = _xlsx_escape(values[row])
                if len(values[row].encode("utf-16-le")) // 2 > _XLSX_MAX_CHARS:
                    cases.append({"row": row, "field": field.name, "value": column[row].as_py()[:40] + "...",
                                  "reason": Reason.TOO_LONG,
                                  "detail": f"an Excel cell holds at most {_XLSX_MAX_CHARS:,} characters"})
            special = pc.match_substring_regex(column, _XLSX_NOT_PLAIN_TEXT)
            formula = pc.match_substring_regex(column, _FORMULA_START) if neutralise else special
            for row in pc.indices_nonzero(pc.fill_null(pc.or_(special, formula), False)).to_pylist():
                text = values[row]
                if text == "":  # an empty text cell, apart from the empty cell of a null
                    values[row] = WriteOnlyCell(sheet, value=CellRichText(""))
                    continue
                cell = WriteOnlyCell(sheet, value=text)
                cell.data_type = "s"  # text, never a formula or an error
                cell.quotePrefix = neutralise and formula[row].as_py()
                values[row] = cell
        else:  # the enums (dictionary), booleans
            headers.append(field.name)
            values = column.to_pylist()
        columns.append(values)
    if cases:
        raise ValidationError.from_cases("write_studies", cases)
    for at, (header, column) in enumerate(zip(headers, table.columns, strict=True), start=1):
        sheet.column_dimensions[get_column_letter(at)].width = _xlsx_column_width(header, column)
    last = get_column_letter(max(len(headers), 1))
    # a write-only sheet has no <dimension> unless asked: without one a reader (openpyxl's
    # read-only mode, read_studies) parses the whole sheet once more to learn its size
    sheet.calculate_dimension = lambda: f"A1:{last}{table.num_rows + 1}"
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header_cells = []
    for header in headers:
        cell = WriteOnlyCell(sheet, value=_xlsx_escape(header))
        cell.data_type, cell.font = "s", bold
        header_cells.append(cell)
    sheet.append(header_cells)
    for row_values in zip(*columns, strict=True):
        sheet.append(row_values)
    sheet.auto_filter.ref = f"A1:{last}{table.num_rows + 1}"
    about = book.create_sheet(_XLSX_ABOUT_SHEET)
    about.column_dimensions["A"].width, about.column_dimensions["B"].width = 14, 110
    written = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    formulas_said = (
        "Text cells that start like a formula (= + - @, a tab or a carriage return) carry Excel's "
        "quote prefix: they show as typed and never run; their values are unchanged."
        if neutralise else
        "Text cells are written as they are (formulas='keep'); each is text, never a formula."
    )
    for line in (
        ("Studies", f"{table.num_rows:,} studies, one a row, on the sheet '{_XLSX_STUDIES_SHEET}'."),
        ("Times", f"In the time zone {tz} (converted from UTC): each time column's name says so, "
                  f"e.g. 'created_at ({tz})'. A local time that happens twice (the hour the clocks "
                  "go back) also shows its offset from UTC."),
        ("Text", formulas_said),
        ("Empty cells", "An empty cell is a missing value; an empty text is an empty text cell."),
        ("Reading back", "viewerkit.read_studies(path) gives the study table back: UTC times, "
                         "severity and status as categories, booleans."),
        ("Written", f"{written} by viewerkit {viewerkit.__version__}."),
    ):
        about.append(list(line))
    with atomic_write(target) as temp:
        book.save(temp)
    return target


def read_studies(path: StrPath, *, formulas: FormulaPolicy = "neutralise") -> pd.DataFrame:
    """Read a file :func:`write_studies` wrote (``.parquet``, ``.csv`` or ``.xlsx``) back into
    the study DataFrame, with the dtypes of ``fetch_studies`` (``viewerkit.frame.to_pandas``):
    severity and status categoricals, times ``datetime64[ms, UTC]``, booleans, text.

    From CSV, every cell is read as text first (so ``"NA"``, ``"0012"`` or ``"True"`` in a
    description stay text); an empty cell is a null, and a quoted empty one ``""`` is the
    empty text in a text column (a null in the others: IDs, enums, times, booleans); times
    (any ISO 8601 spelling, see ``viewerkit.frame.parse_times``) and booleans (``True`` /
    ``False``, any case, or ``1`` / ``0``) become their types; ``formulas`` says how the
    file was written: ``"neutralise"`` (the default, as ``write_studies``) takes the ``'``
    off the text cells it added it to, ``"keep"`` reads every cell as it is. So
    ``read_studies(write_studies(df, p, formulas=f), formulas=f)`` equals ``df`` (its
    study-table columns). A cell that is not its column's type is a ``ValidationError``
    naming row (0 = the first row under the header) and field; so is a file without the
    ``study_id`` / ``study_instance_uid`` columns (not a study export) or with a column the
    study table does not have (each named); a missing file is ``FileNotFoundError``.

    From Excel (the sheet ``studies``, else the first): a time column's name says the time
    zone of its local times (``created_at (Europe/Berlin)``; no zone: UTC) and each becomes
    the UTC instant it was written from, rounded to the millisecond; a local time that
    happens twice takes the UTC offset its cell shows, else the first of the two; one that
    does not exist in the zone (the hour the clocks go forward) is ``NOT_A_TIME``. Text
    cells are read as they are (Excel's quote prefix is not part of a value, whatever
    ``formulas`` says) and Excel's ``_x0000_`` escapes are undone; an empty text cell is the
    empty text, an empty cell a null; a blank ID, enum, time or boolean is a null. Booleans
    are Excel's TRUE / FALSE (or the CSV spellings). A number typed into a text column is
    read as its text.

    >>> import tempfile, pathlib, pyarrow as pa
    >>> one = pa.table({"study_id": ["stu_" + "a" * 32], "study_instance_uid": ["1.2"],
    ...                 "study_description": ["=1+1"], "meta.site": ["-North"],
    ...                 "created_at": pa.array([0], pa.timestamp("ms", tz="UTC"))})
    >>> out = write_studies(one, pathlib.Path(tempfile.mkdtemp()) / "studies.csv")
    >>> read_studies(out)[["study_description", "meta.site"]].values.tolist()
    [['=1+1', '-North']]
    >>> back = read_studies(write_studies(one, out.with_suffix(".xlsx"), tz="Europe/Berlin"))
    >>> back["created_at"].tolist(), back["study_description"].tolist()
    ([Timestamp('1970-01-01 00:00:00+0000', tz='UTC')], ['=1+1'])
    """
    import pyarrow as pa

    from viewerkit.frame import conform, to_pandas

    target = check_output_path(path, what="read_studies")
    _check_formula_policy(formulas, "read_studies")
    if not target.is_file():
        raise FileNotFoundError(f"read_studies: no file {target}")
    if target.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(target)
    elif target.suffix.lower() == ".xlsx":
        table = _read_xlsx_cells(target)
    else:
        table = _read_csv_cells(target, restore=formulas == "neutralise")
    _check_export_columns(table.column_names, target)
    try:
        return to_pandas(conform(table))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValidationError.one(
            "read_studies", "path", os.fspath(path), Reason.WRONG_TYPE, detail=str(exc)
        ) from None


def _check_export_columns(names: list[str], path: Path) -> None:
    """A study export has the study table's ID columns, and no column the study table does
    not know (a ``meta.<key>`` or ``metadata`` column is known): else it is not a study
    export, or one edited past reading back; a ``ValidationError`` naming each column."""
    from viewerkit.schema import META_PREFIX, METADATA_COLUMN, STUDY_SCHEMA

    # an Excel time column's name carries its zone: "created_at (Europe/Berlin)"
    bare = [re.sub(r" \(.*\)$", "", name) for name in names]
    cases: list[dict[str, Any]] = [
        {"field": name, "value": None, "reason": Reason.MISSING_COLUMN,
         "detail": f"{path.name} is not a study export (no {name} column)"}
        for name in ("study_id", "study_instance_uid") if name not in bare
    ]
    cases += [
        {"field": name, "value": None, "reason": Reason.NOT_A_CHOICE,
         "detail": "not a column of the study table (viewerkit.STUDY_SCHEMA, meta.<key>)"}
        for name, plain in zip(names, bare, strict=True)
        if STUDY_SCHEMA.get_field_index(plain) < 0 and not plain.startswith(META_PREFIX)
        and plain != METADATA_COLUMN
    ]
    if cases:
        raise ValidationError.from_cases("read_studies", cases)


def _read_csv_cells(path: Path, *, restore: bool) -> pa.Table:
    """A CSV export as text columns, formulas restored, types checked cell by cell."""
    import csv

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    from viewerkit.frame import parse_times
    from viewerkit.schema import STUDY_SCHEMA

    # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte order mark (Arrow skips it)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), [])
    table = pcsv.read_csv(
        path,
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
        ),
    )
    text = set(_text_columns(table.column_names))
    for at, name in enumerate(table.column_names):
        column = table.column(name)
        if column.type != pa.string():  # a header the csv module read otherwise than Arrow
            column = column.cast(pa.string())
            table = table.set_column(at, name, column)
        if name not in text:  # a blank ID, time, flag or enum (a quoted "" too) is a null
            blank = pc.equal(pc.utf8_trim_whitespace(column), "")
            table = table.set_column(at, name, pc.if_else(blank, None, column))
        elif restore:
            marked = pc.fill_null(pc.match_substring_regex(column, _NEUTRALISED), False)
            table = table.set_column(at, name, pc.if_else(marked, pc.utf8_slice_codeunits(column, 1), column))
    cases: list[dict[str, Any]] = []
    for name in table.column_names:
        at = STUDY_SCHEMA.get_field_index(name)
        kind = STUDY_SCHEMA.field(at).type if at >= 0 else None
        column = table.column(name)
        if kind is not None and pa.types.is_timestamp(kind):
            times, bad = parse_times(column)
            cases += [{"row": int(row), "field": name, "value": column[int(row)].as_py(),
                       "reason": Reason.NOT_A_TIME} for row in bad]
            table = table.set_column(table.column_names.index(name), name, times)
        elif kind == pa.bool_():
            lower = pc.utf8_lower(column)
            truth = pc.is_in(lower, value_set=pa.array(["true", "1"]))
            known = pc.or_(truth, pc.is_in(lower, value_set=pa.array(["false", "0"])))
            for row in pc.indices_nonzero(pc.and_(pc.is_valid(column), pc.invert(known))).to_pylist():
                cases.append({"row": row, "field": name, "value": column[row].as_py(),
                              "reason": Reason.NOT_BOOLEAN})
            table = table.set_column(
                table.column_names.index(name), name, pc.if_else(pc.is_valid(column), truth, None)
            )
    if cases:
        cases.sort(key=lambda case: case["row"])  # by row, then column order
        raise ValidationError.from_cases("read_studies", cases)
    return table


def _xlsx_rows(sheet: Any) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The header and the rows under it of an Excel export's studies sheet, as values;
    blank rows at the end dropped."""
    rows = sheet.iter_rows(values_only=True)
    header = next(rows, ())
    body = list(rows)
    while body and all(value is None for value in body[-1]):
        body.pop()
    return tuple(header), body


def _xlsx_offsets(sheet: Any, cells: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """The UTC offset (minutes) that the number format of each (row, column) of the body
    shows, where it shows one: the local times that happen twice."""
    import re

    found: dict[tuple[int, int], int] = {}
    # cells are made only within these bounds (the parsing is of the sheet up to max_row)
    first_column = min(at for _, at in cells)
    bounds = {"min_row": 2, "max_row": 2 + max(row for row, _ in cells),
              "min_col": 1 + first_column, "max_col": 1 + max(at for _, at in cells)}
    for row, cells_of_row in enumerate(sheet.iter_rows(**bounds)):
        for at, cell in enumerate(cells_of_row, start=first_column):
            if (row, at) in cells:
                shown = re.search(_XLSX_FORMAT_OFFSET, str(getattr(cell, "number_format", "")))
                if shown:
                    sign = -1 if shown.group(1) == "-" else 1
                    found[(row, at)] = sign * (int(shown.group(2)) * 60 + int(shown.group(3)))
    return found


def _xlsx_text(value: Any) -> str:
    """A cell typed into a text column, as the text the spreadsheet shows."""
    if isinstance(value, str):
        return _xlsx_unescape(value) if "_x" in value else value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _read_xlsx_cells(path: Path) -> pa.Table:
    """An Excel export as a study table: times to UTC, booleans, text; types checked cell
    by cell (see ``read_studies``)."""
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        names = book.sheetnames
        sheet = book[_XLSX_STUDIES_SHEET] if _XLSX_STUDIES_SHEET in names else book.worksheets[0]
        return _xlsx_study_table(sheet)
    finally:
        book.close()


def _xlsx_study_table(sheet: Any) -> pa.Table:
    """The cells of an Excel export's studies sheet as a study table (``_read_xlsx_cells``)."""
    import datetime as dt
    import re

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from viewerkit.schema import STUDY_SCHEMA

    header, body = _xlsx_rows(sheet)
    cases: list[dict[str, Any]] = []
    names: list[str] = []
    arrays: list[pa.Array] = []
    pending: list[tuple[int, int, str, str, pd.Series, np.ndarray]] = []  # times to localise
    for at, title in enumerate(header):
        if title is None:
            continue
        title = _xlsx_text(title).strip()
        name, zone = title, DEFAULT_EXPORT_TZ
        shown = re.match(_XLSX_TIME_HEADER, title)
        kind_at = STUDY_SCHEMA.get_field_index(shown.group("name") if shown else title)
        kind = STUDY_SCHEMA.field(kind_at).type if kind_at >= 0 else None
        if shown and kind is not None and pa.types.is_timestamp(kind):
            name, zone = shown.group("name"), shown.group("tz")
            try:
                zone = check_time_zone(zone, what="read_studies")
            except ValidationError:
                cases.append({"field": title, "value": zone, "reason": Reason.NOT_A_TIME_ZONE,
                              "detail": "the column's time zone"})
                continue
        elif kind_at < 0:
            kind = None
        if name in names:
            cases.append({"field": name, "value": title, "reason": Reason.DUPLICATE})
            continue
        values = [row[at] if at < len(row) else None for row in body]
        names.append(name)
        if kind is not None and pa.types.is_timestamp(kind):
            local: list[Any] = [None] * len(values)
            given = np.zeros(len(values), dtype=bool)  # a text with an offset: the instant itself
            for row, value in enumerate(values):
                if value is None or (isinstance(value, str) and not value.strip()):
                    continue
                try:
                    if isinstance(value, dt.datetime):
                        stamp = pd.Timestamp(value)
                    elif isinstance(value, dt.date):
                        stamp = pd.Timestamp(value.isoformat())
                    elif isinstance(value, str):
                        stamp = pd.Timestamp(value.strip())
                    else:
                        raise ValueError(value)
                except ValueError:
                    cases.append({"row": row, "field": name, "value": value, "reason": Reason.NOT_A_TIME})
                    continue
                if stamp.tzinfo is not None:
                    stamp, given[row] = stamp.tz_convert("UTC").tz_localize(None), True
                local[row] = stamp
            series = pd.Series(pd.to_datetime(pd.Series(local, dtype=object)), dtype="datetime64[ns]")
            pending.append((len(arrays), at, name, zone, series.dt.round("ms"), given))
            arrays.append(pa.nulls(len(values), pa.timestamp("ms", tz="UTC")))  # filled below
        elif kind == pa.bool_():
            flags: list[bool | None] = []
            for row, value in enumerate(values):
                word = value.strip().lower() if isinstance(value, str) else value
                if value is None or word == "":
                    flags.append(None)
                elif isinstance(value, bool) or word in (0, 1):
                    flags.append(bool(value))
                elif word in ("true", "1", "false", "0"):
                    flags.append(word in ("true", "1"))
                else:
                    flags.append(None)
                    cases.append({"row": row, "field": name, "value": value, "reason": Reason.NOT_BOOLEAN})
            arrays.append(pa.array(flags, pa.bool_()))
        else:
            texts = [None if value is None else _xlsx_text(value) for value in values]
            if name not in _text_columns([name]):  # a blank ID or enum is a null
                texts = [None if text is None or not text.strip() else text for text in texts]
            arrays.append(pa.array(texts, pa.string()))
    # local times -> UTC; the ones that happen twice take the offset their cell shows
    # a local time that happens twice takes the offset its cell shows: one more pass over
    # the sheet, for files that have such times
    unsure: dict[int, tuple[np.ndarray, pd.Series]] = {}
    for index, _at, _name, zone, series, given in pending:
        aware = series.where(~given).dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        rows = np.flatnonzero(aware.isna().to_numpy() & series.notna().to_numpy() & ~given)
        if len(rows):
            earlier = series.iloc[rows].dt.tz_localize(
                zone, ambiguous=np.ones(len(rows), dtype=bool), nonexistent="NaT")
            unsure[index] = (rows, earlier)
    wanted = {(int(row), column_at) for index, column_at, *_ in pending if index in unsure
              for row, gap in zip(unsure[index][0], unsure[index][1].isna(), strict=True) if not gap}
    offsets = _xlsx_offsets(sheet, wanted) if wanted else {}
    for index, column_at, name, zone, series, given in pending:
        aware = series.where(~given).dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        rows, earlier = unsure.get(index, (np.empty(0, dtype=np.int64), pd.Series([], dtype=object)))
        for at_row, gap, first in zip(rows.tolist(), earlier.isna(), earlier, strict=True):
            if gap:
                cases.append({"row": at_row, "field": name,
                              "value": series.iloc[at_row].to_pydatetime(),
                              "reason": Reason.NOT_A_TIME,
                              "detail": f"that local time does not exist in {zone}"})
            elif (at_row, column_at) in offsets:
                instant = series.iloc[at_row] - pd.Timedelta(minutes=offsets[(at_row, column_at)])
                aware.iloc[at_row] = instant.tz_localize("UTC").tz_convert(zone)
            else:  # no offset shown (an edited cell): the first of the two
                aware.iloc[at_row] = first
        instants = series.where(given).dt.tz_localize("UTC")
        in_utc = aware.dt.tz_convert("UTC").where(~given, instants).astype("datetime64[ms, UTC]")
        arrays[index] = pa.Array.from_pandas(in_utc)
    if cases:
        cases.sort(key=lambda case: (case.get("row") is not None, case.get("row") or 0))
        raise ValidationError.from_cases("read_studies", cases)
    return pa.table(arrays, names=names)
