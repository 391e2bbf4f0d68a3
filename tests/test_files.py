"""viewerkit.files with real files and real processes: atomic writes that survive errors,
Ctrl-C and kills; permissions from the umask; durable, whole-line appends; the inter-process
lock (waiting, timeout, a killed holder); study-table exports and their refusals.

Processes coordinate through pipes (a child says what it has done; the parent tells it when
to go on), never through sleeps."""

from __future__ import annotations

import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import viewerkit
from viewerkit import Client, ValidationError
from viewerkit.errors import LockTimeout, Reason
from viewerkit.fetch import fetch_studies_arrow
from viewerkit.files import (
    append_bytes,
    append_json_line,
    atomic_write,
    check_output_path,
    file_lock,
    write_bytes,
    write_json,
    write_parquet,
    write_studies,
    write_text,
)
from viewerkit.frame import empty_studies, to_pandas
from viewerkit.sandbox.server import Sandbox

ROOT = str(Path(viewerkit.__file__).resolve().parents[1])
#: A bound on waiting for a child's next line, so a broken child fails the test instead of
#: hanging it. Never reached when things work; nothing is asserted about durations.
CHILD_LINE_TIMEOUT_S = 120


class Child:
    """A Python child process: a script on stdin/stdout pipes, its lines read by a thread."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=CHILD_LINE_TIMEOUT_S)
        except queue.Empty:
            pytest.fail("the child process said nothing")
        if line is None:
            self.proc.wait()
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            pytest.fail(f"the child process ended (status {self.proc.returncode}): {stderr}")
        return line

    def expect(self, wanted: str) -> None:
        line = self.next_line()
        assert line == wanted, f"expected {wanted!r} from the child, got {line!r}"

    def tell(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=CHILD_LINE_TIMEOUT_S)

    def finish(self) -> int:
        return self.proc.wait(timeout=CHILD_LINE_TIMEOUT_S)


@pytest.fixture
def child() -> Iterator[Callable[..., Child]]:
    """Start child processes; any still running when the test ends is killed."""
    started: list[Child] = []

    def start(script: str, *args: str) -> Child:
        started.append(Child(script, *args))
        return started[-1]

    yield start
    for one in started:
        if one.proc.poll() is None:
            one.proc.kill()
            one.proc.wait()
        for stream in (one.proc.stdin, one.proc.stdout, one.proc.stderr):
            if stream is not None:
                stream.close()


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- atomic writes ----------------------------------------------------------------------------


@pytest.mark.parametrize("interruption", [RuntimeError("disk full"), KeyboardInterrupt()], ids=repr)
def test_an_error_inside_the_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, interruption: BaseException
) -> None:
    target = write_text("old report", tmp_path / "report.html")
    with pytest.raises(type(interruption)), atomic_write(target) as temp:
        temp.write_text("half of the new rep")
        assert entries(tmp_path) == sorted(["report.html", temp.name])
        raise interruption
    assert target.read_text() == "old report"
    assert entries(tmp_path) == ["report.html"]


def test_a_new_file_appears_only_when_the_write_completes(tmp_path: Path) -> None:
    target = tmp_path / "studies.parquet"
    with atomic_write(target) as temp:
        assert temp.parent == tmp_path and temp.name != target.name
        temp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    assert entries(tmp_path) == ["studies.parquet"]


_WRITE_UNTIL_STOPPED = """
    import sys
    from viewerkit.files import atomic_write
    with atomic_write(sys.argv[1]) as temp:
        with open(temp, "w") as handle:
            handle.write("half of the new ")
            handle.flush()
            print("mid-write", flush=True)
            sys.stdin.readline()  # until stopped
            handle.write("manifest")
    print("written", flush=True)
"""


def test_ctrl_c_in_a_process_mid_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, child: Callable[..., Child]
) -> None:
    target = write_text("old manifest", tmp_path / "manifest.json")
    writer = child(_WRITE_UNTIL_STOPPED, str(target))
    writer.expect("mid-write")
    assert len(entries(tmp_path)) == 2  # the temporary file is there, beside the target
    assert writer.stop(signal.SIGINT) != 0
    assert target.read_text() == "old manifest"
    assert entries(tmp_path) == ["manifest.json"]


def test_a_process_killed_mid_write_leaves_the_old_file_intact(
    tmp_path: Path, child: Callable[..., Child]
) -> None:
    target = write_text("old manifest", tmp_path / "manifest.json")
    writer = child(_WRITE_UNTIL_STOPPED, str(target))
    writer.expect("mid-write")
    assert writer.stop(signal.SIGKILL) == -signal.SIGKILL
    assert target.read_text() == "old manifest"
    # SIGKILL runs no cleanup: what can remain is the hidden temporary file, never a half target
    leftovers = [name for name in entries(tmp_path) if name != "manifest.json"]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".manifest.json.") and leftovers[0].endswith(".tmp")


def test_the_stopped_child_would_have_written_when_let_go(
    tmp_path: Path, child: Callable[..., Child]
) -> None:
    # the two tests above stop a writer that, left alone, does replace the file
    target = write_text("old manifest", tmp_path / "manifest.json")
    writer = child(_WRITE_UNTIL_STOPPED, str(target))
    writer.expect("mid-write")
    writer.tell()
    writer.expect("written")
    assert writer.finish() == 0
    assert target.read_text() == "half of the new manifest"
    assert entries(tmp_path) == ["manifest.json"]


_WRITERS: dict[str, Callable[[Path], Path]] = {
    "bytes": lambda folder: write_bytes(b"\x89PNG", folder / "figure.png"),
    "text": lambda folder: write_text("<html></html>", folder / "report.html"),
    "json": lambda folder: write_json({"studies": 1}, folder / "manifest.json"),
    "parquet": lambda folder: write_parquet(pa.table({"n": [1]}), folder / "t.parquet"),
    "studies.parquet": lambda folder: write_studies(empty_studies(), folder / "s.parquet"),
    "studies.csv": lambda folder: write_studies(empty_studies(), folder / "s.csv"),
}


def _appended(folder: Path) -> Path:
    append_json_line({"n": 1}, folder / "journal.jsonl")
    return folder / "journal.jsonl"


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=oct)
@pytest.mark.parametrize("writer", [*_WRITERS.values(), _appended], ids=[*_WRITERS, "append"])
def test_new_files_get_the_permissions_open_would_give_under_the_umask(
    tmp_path: Path, umask: int, writer: Callable[[Path], Path]
) -> None:
    old = os.umask(umask)
    try:
        first = writer(tmp_path)
        again = writer(tmp_path)  # replacing (or appending to) an existing file
    finally:
        os.umask(old)
    assert first == again
    assert first.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_json_writes_sorted_indented_json_with_a_final_newline(tmp_path: Path) -> None:
    written = write_json({"refreshes": [{"mode": "full"}], "format": "x"}, tmp_path / "m.json")
    assert written.read_text() == (
        '{\n  "format": "x",\n  "refreshes": [\n    {\n      "mode": "full"\n    }\n  ]\n}\n'
    )


def test_write_parquet_compresses_with_zstd(tmp_path: Path) -> None:
    written = write_parquet(pa.table({"severity": ["stat"] * 100}), tmp_path / "t.parquet")
    assert pq.ParquetFile(written).metadata.row_group(0).column(0).compression == "ZSTD"


# --- durable appends --------------------------------------------------------------------------

_APPEND_UNTIL_KILLED = """
    import sys
    from viewerkit.files import append_json_line
    n = 0
    while True:
        append_json_line({"n": n, "note": "x" * 300}, sys.argv[1])
        print(n, flush=True)
        n += 1
"""


def test_appended_lines_survive_a_killed_writer_each_one_whole(
    tmp_path: Path, child: Callable[..., Child]
) -> None:
    journal = tmp_path / "journal.jsonl"
    writer = child(_APPEND_UNTIL_KILLED, str(journal))
    for n in range(50):
        writer.expect(str(n))  # append_json_line had returned for line n
    assert writer.stop(signal.SIGKILL) == -signal.SIGKILL
    data = journal.read_bytes()
    assert data.endswith(b"\n")
    lines = [json.loads(line) for line in data.splitlines()]
    assert len(lines) >= 50
    assert lines == [{"n": n, "note": "x" * 300} for n in range(len(lines))]


_APPEND_COUNT = """
    import sys
    from viewerkit.files import append_json_line
    sys.stdin.readline()
    for n in range(300):
        append_json_line({"writer": sys.argv[2], "n": n, "note": sys.argv[2] * 2000}, sys.argv[1])
    print("done", flush=True)
"""


def test_appends_from_two_processes_do_not_interleave(
    tmp_path: Path, child: Callable[..., Child]
) -> None:
    journal = tmp_path / "journal.jsonl"
    writers = [child(_APPEND_COUNT, str(journal), name) for name in ("a", "b")]
    for writer in writers:
        writer.tell()  # both start appending together
    for writer in writers:
        writer.expect("done")
        assert writer.finish() == 0
    lines = [json.loads(line) for line in journal.read_bytes().splitlines()]
    assert len(lines) == 600
    for name in ("a", "b"):
        mine = [line for line in lines if line["writer"] == name]
        assert [line["n"] for line in mine] == list(range(300))
        assert all(line["note"] == name * 2000 for line in mine)


def test_an_append_after_a_torn_last_line_starts_on_a_line_of_its_own(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(b'{"n":0}\n{"n":1, "no')  # a crash tore the last append
    append_json_line({"n": 2}, journal)
    assert journal.read_bytes().splitlines() == [b'{"n":0}', b'{"n":1, "no', b'{"n":2}']


def test_append_bytes_creates_the_file_and_adds_to_its_end(tmp_path: Path) -> None:
    target = tmp_path / "journal.bin"
    append_bytes(b"first,", target)
    append_bytes(b"second", target)
    assert target.read_bytes() == b"first,second"


# --- the inter-process lock -------------------------------------------------------------------

_HOLD_LOCK = """
    import sys
    from viewerkit.files import append_json_line, file_lock
    lock, events = sys.argv[1], sys.argv[2]
    with file_lock(lock, timeout=0):
        append_json_line("holder in", events)
        print("locked", flush=True)
        sys.stdin.readline()
        append_json_line("holder out", events)  # still holding the lock
    print("released", flush=True)
"""

_WAIT_FOR_LOCK = """
    import sys
    from viewerkit.files import append_json_line, file_lock
    lock, events = sys.argv[1], sys.argv[2]
    with file_lock(lock, timeout=None, on_wait=lambda path: print("waiting", path, flush=True)):
        append_json_line("waiter in", events)
        print("locked", flush=True)
"""


def test_a_second_process_waits_for_the_lock_and_gets_it_when_released(
    tmp_path: Path, child: Callable[..., Child]
) -> None:
    lock, events = tmp_path / ".lock", tmp_path / "events.jsonl"
    holder = child(_HOLD_LOCK, str(lock), str(events))
    holder.expect("locked")
    waiter = child(_WAIT_FOR_LOCK, str(lock), str(events))
    waiter.expect(f"waiting {lock}")
    holder.tell()
    holder.expect("released")
    waiter.expect("locked")
    assert holder.finish() == 0 and waiter.finish() == 0
    # the waiter got in only after the holder's last step inside the lock
    assert [json.loads(line) for line in events.read_text().splitlines()] == [
        "holder in",
        "holder out",
        "waiter in",
    ]


def test_waiting_longer_than_the_timeout_raises_lock_timeout_naming_the_lock_file(
    tmp_path: Path, child: Callable[..., Child]
) -> None:
    lock = tmp_path / ".lock"
    holder = child(_HOLD_LOCK, str(lock), str(tmp_path / "events.jsonl"))
    holder.expect("locked")
    waits: list[Path] = []
    with pytest.raises(LockTimeout) as raised, file_lock(
        lock, timeout=0.2, on_wait=waits.append, holder="another refresh"
    ):
        pytest.fail("got a lock another process holds")
    assert waits == [lock]
    error = raised.value
    assert error.path == str(lock)
    assert f"for the lock {lock}, held by another refresh" in str(error)
    assert f"waiting {error.waited_s:.1f} s" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is LockTimeout and str(copy) == str(error) and vars(copy) == vars(error)
    # the holder was never disturbed
    holder.tell()
    holder.expect("released")


def test_waiting_says_so_in_the_log_without_a_callback(
    tmp_path: Path, child: Callable[..., Child], caplog: pytest.LogCaptureFixture
) -> None:
    lock = tmp_path / ".lock"
    holder = child(_HOLD_LOCK, str(lock), str(tmp_path / "events.jsonl"))
    holder.expect("locked")
    with pytest.raises(LockTimeout), file_lock(lock, timeout=0.05, holder="another refresh"):
        pass
    assert [r.getMessage() for r in caplog.records if r.name == "viewerkit.files"] == [
        f"waiting for the lock {lock} held by another refresh (up to 0.05 s)"
    ]


def test_a_killed_holder_releases_the_lock(tmp_path: Path, child: Callable[..., Child]) -> None:
    lock = tmp_path / ".lock"
    holder = child(_HOLD_LOCK, str(lock), str(tmp_path / "events.jsonl"))
    holder.expect("locked")
    with pytest.raises(LockTimeout), file_lock(lock, timeout=0):
        pass  # held: not ours yet
    assert holder.stop(signal.SIGKILL) == -signal.SIGKILL
    with file_lock(lock, timeout=CHILD_LINE_TIMEOUT_S):
        assert lock.exists()


def test_the_lock_is_free_again_after_the_block_in_the_same_process(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with file_lock(lock, timeout=0):
        pass
    # not re-entrant: a second hold, even in the same process, waits for the first
    with file_lock(lock, timeout=0), pytest.raises(LockTimeout), file_lock(lock, timeout=0):
        pass


@pytest.mark.parametrize("timeout", [-1.0, float("nan")])
def test_a_negative_lock_timeout_is_refused(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(ValidationError) as raised, file_lock(tmp_path / ".lock", timeout=timeout):
        pass
    assert raised.value.failure_cases["field"].tolist() == ["timeout"]
    assert raised.value.failure_cases["reason"].tolist() == [Reason.OUT_OF_RANGE]


# --- study-table exports ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def studies(sandbox: Sandbox) -> pa.Table:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        return fetch_studies_arrow(client, progress=False)


def test_write_studies_to_parquet_reads_back_equal(studies: pa.Table, tmp_path: Path) -> None:
    written = write_studies(studies, tmp_path / "studies.parquet")
    assert written == tmp_path / "studies.parquet"
    assert pq.read_table(written).equals(studies)
    assert entries(tmp_path) == ["studies.parquet"]


def test_write_studies_to_csv_has_the_header_and_every_row_as_users_see_them(
    studies: pa.Table, tmp_path: Path
) -> None:
    written = write_studies(studies, tmp_path / "studies.CSV")
    expected = to_pandas(studies)
    with written.open(encoding="utf-8") as handle:
        assert handle.readline().rstrip("\n").split(",") == [f'"{c}"' for c in expected.columns]
    back = pd.read_csv(written, dtype=str, keep_default_na=False)
    assert len(back) == studies.num_rows
    assert back["study_id"].tolist() == expected["study_id"].tolist()
    assert back["severity"].tolist() == expected["severity"].astype(str).tolist()
    created = pd.to_datetime(back["created_at"], utc=True)
    assert (created == expected["created_at"]).all()
    unassigned = expected["assigned_to_user_id"].isna().to_numpy()
    assert unassigned.any() and (back["assigned_to_user_id"][unassigned] == "").all()


@pytest.mark.parametrize(
    ("name", "reasons"),
    [
        ("studies.xls", [Reason.WRONG_SUFFIX]),
        ("studies", [Reason.WRONG_SUFFIX]),
        ("no-such-folder/studies.parquet", [Reason.NO_SUCH_FOLDER]),
        ("a-file/studies.csv", [Reason.NO_SUCH_FOLDER]),
        ("no-such-folder/studies.xls", [Reason.WRONG_SUFFIX, Reason.NO_SUCH_FOLDER]),
        ("a-folder.parquet", [Reason.IS_A_FOLDER]),
    ],
)
def test_write_studies_refuses_a_path_it_cannot_write_before_writing(
    tmp_path: Path, name: str, reasons: list[Reason]
) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder.parquet").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    path = tmp_path / name
    attempts: list[Callable[[], Path]] = [
        lambda: check_output_path(path),
        lambda: write_studies(empty_studies(), path),
    ]
    for attempt in attempts:
        with pytest.raises(ValidationError) as raised:
            attempt()
        cases = raised.value.failure_cases
        assert cases["field"].tolist() == ["path"] * len(reasons)
        assert cases["value"].tolist() == [str(path)] * len(reasons)
        assert cases["reason"].tolist() == reasons
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_the_missing_folder_error_names_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "studies.csv"
    with pytest.raises(ValidationError, match=f"folder {path.parent} does not exist"):
        check_output_path(path)


def test_check_output_path_accepts_a_relative_name_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_output_path("studies.parquet") == Path("studies.parquet")
    assert write_studies(empty_studies(), "studies.parquet").exists()


def test_write_studies_takes_the_dataframe_an_analyst_has(sandbox: Sandbox, tmp_path: Path) -> None:
    from viewerkit import fetch_studies
    from viewerkit.frame import to_pandas

    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        studies = fetch_studies(client, severity="stat", progress=False)
    studies["my notes"] = "checked"  # a column of the analyst's own is not written
    written = write_studies(studies, tmp_path / "stat.parquet")
    back = pq.read_table(written)
    assert "my notes" not in back.column_names
    assert to_pandas(back).equals(studies.drop(columns="my notes"))
    csv = write_studies(studies, tmp_path / "stat.csv").read_text().splitlines()
    assert len(csv) == len(studies) + 1 and "my notes" not in csv[0]


@pytest.mark.parametrize("timeout", ["5", True, [1]])
def test_a_lock_timeout_that_is_not_seconds_is_a_validation_error(tmp_path: Path, timeout: object) -> None:
    with pytest.raises(ValidationError, match="timeout"), file_lock(tmp_path / "x.lock", timeout=timeout):  # type: ignore[arg-type]
        pass
