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
- ``write_studies(table, path)`` exports a study table to ``.parquet`` or ``.csv``; in CSV,
  text cells a spreadsheet would run as a formula are neutralised (a leading ``'``,
  OWASP's rule for CSV injection) unless ``formulas="keep"``. ``read_studies(path)`` reads
  either back into the study DataFrame, undoing the neutralising.
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
from typing import TYPE_CHECKING, Any, Final, Literal

from viewerkit.errors import LockTimeout, Reason, ValidationError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "FORMULA_POLICIES",
    "FormulaPolicy",
    "STUDY_FILE_SUFFIXES",
    "STUDY_ID_COLUMNS",
    "append_bytes",
    "append_json_line",
    "atomic_write",
    "check_output_path",
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


def write_studies(
    table: pa.Table | pd.DataFrame, path: StrPath, *, formulas: FormulaPolicy = "neutralise"
) -> Path:
    """Write a study table (Arrow, or the DataFrame of ``fetch_studies`` / ``StudyCache.load``,
    edited or not) to ``path``, atomically: ``.parquet`` (zstd, the study table's Arrow
    types: ``viewerkit.frame.conform``) or ``.csv`` (UTF-8, a header row, no index; values
    as in the DataFrame users get: timestamps ``2026-11-02 08:00:00.000+00:00``, booleans
    ``True`` / ``False``; a null is an empty cell and every other value is quoted, so an
    empty text ``""`` stays apart from a null). Columns outside the study table are not
    written. Returns the path. :func:`read_studies` reads either back.

    CSV and spreadsheets (CSV injection): a spreadsheet runs a cell that starts with ``=``,
    ``+``, ``-`` or ``@`` (also after leading whitespace), a tab or a carriage return as a
    formula, e.g. a description ``=HYPERLINK("http://evil.example","open")``. With
    ``formulas="neutralise"`` (the default, OWASP's advice) such cells of the free-text
    columns (description, names, emails, the API key's description, the customer's name,
    every ``meta.*`` value) get a leading ``'``, so a spreadsheet shows them as text; a
    text cell that starts with ``'`` and would read back as neutralised gets one more, so
    :func:`read_studies` gives back every value exactly. IDs, enums, booleans and times are
    never altered: an ID cell that starts like a formula (outside the contract) is refused,
    a ``ValidationError`` naming row and field (``STARTS_LIKE_FORMULA``), before anything
    is written. ``formulas="keep"`` writes every cell as it is, for programs that read the
    file (not spreadsheets). Parquet is not read by spreadsheets and is written as is.

    Raises ``ValidationError`` (field ``path``) before writing anything if the suffix is
    neither or the folder does not exist (``check_output_path``), or (field ``formulas``)
    for another word.

    >>> import tempfile, pathlib, pyarrow as pa
    >>> from viewerkit.frame import empty_studies
    >>> out = write_studies(empty_studies(), pathlib.Path(tempfile.mkdtemp()) / "studies.csv")
    >>> out.read_text().split(",")[:3]
    ['"study_id"', '"study_instance_uid"', '"study_description"']
    >>> import csv
    >>> one = pa.table({"study_id": ["stu_" + "a" * 32], "study_instance_uid": ["1.2"],
    ...                 "study_description": ["=1+1"]})
    >>> next(csv.DictReader(write_studies(one, out).read_text().splitlines()))["study_description"]
    "'=1+1"
    """
    import pyarrow as pa

    from viewerkit.frame import conform

    target = check_output_path(path)
    _check_formula_policy(formulas, "write_studies")
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    table = conform(table)
    if target.suffix.lower() == ".parquet":
        return write_parquet(table, target)
    cells = _csv_cells(table, neutralise=formulas == "neutralise")
    import pyarrow.csv as pcsv

    with atomic_write(target) as temp:
        # "needed" quotes every string, leaves nulls as empty cells
        pcsv.write_csv(cells, temp, pcsv.WriteOptions(quoting_style="needed"))
    return target


def _csv_cells(table: pa.Table, *, neutralise: bool) -> pa.Table:
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
        if pa.types.is_timestamp(field.type):
            # %S carries the milliseconds of a ms timestamp
            column = pc.strftime(column, format="%Y-%m-%d %H:%M:%S+00:00")
        elif pa.types.is_boolean(field.type):
            column = pc.if_else(column, "True", "False")
        elif pa.types.is_dictionary(field.type):
            column = column.cast(pa.string())
        elif neutralise and field.name in text:
            risky = pc.fill_null(pc.match_substring_regex(column, _FORMULA), False)
            column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def read_studies(path: StrPath, *, formulas: FormulaPolicy = "neutralise") -> pd.DataFrame:
    """Read a file :func:`write_studies` wrote (``.parquet`` or ``.csv``) back into the study
    DataFrame, with the dtypes of ``fetch_studies`` (``viewerkit.frame.to_pandas``).

    From CSV, every cell is read as text first (so ``"NA"``, ``"0012"`` or ``"True"`` in a
    description stay text); an empty cell is a null, and a quoted empty one ``""`` is the
    empty text in a text column (a null in the others: IDs, enums, times, booleans); times
    (any ISO 8601 spelling, see ``viewerkit.frame.parse_times``) and booleans (``True`` /
    ``False``, any case, or ``1`` / ``0``) become their types; ``formulas`` says how the
    file was written: ``"neutralise"`` (the default, as ``write_studies``) takes the ``'``
    off the text cells it added it to, ``"keep"`` reads every cell as it is. So
    ``read_studies(write_studies(df, p, formulas=f), formulas=f)`` equals ``df`` (its
    study-table columns). A cell that is not its column's type is a ``ValidationError``
    naming row (0 = the first row under the header) and field; a missing file is
    ``FileNotFoundError``.

    >>> import tempfile, pathlib, pyarrow as pa
    >>> one = pa.table({"study_id": ["stu_" + "a" * 32], "study_instance_uid": ["1.2"],
    ...                 "study_description": ["=1+1"], "meta.site": ["-North"]})
    >>> out = write_studies(one, pathlib.Path(tempfile.mkdtemp()) / "studies.csv")
    >>> read_studies(out)[["study_description", "meta.site"]].values.tolist()
    [['=1+1', '-North']]
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
    else:
        table = _read_csv_cells(target, restore=formulas == "neutralise")
    try:
        return to_pandas(conform(table))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValidationError.one(
            "read_studies", "path", os.fspath(path), Reason.WRONG_TYPE, detail=str(exc)
        ) from None


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
