"""StudyCache against real sandbox servers: round trip, refresh modes, history, namespaces,
atomicity (a SIGKILLed refresh, Ctrl-C), corrupt files, secrets."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pandas.testing as pdt
import pyarrow as pa
import pytest

from viewerkit import CacheError, Client, StudyCache
from viewerkit.fetch import fetch_studies_arrow
from viewerkit.frame import to_pandas
from viewerkit.sandbox.server import Sandbox
from viewerkit.schema import STUDY_SCHEMA


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("study_id").reset_index(drop=True)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        yield c


@pytest.fixture(scope="module")
def filled(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> StudyCache:
    """A cache fully refreshed once from the read-only session sandbox."""
    cache = StudyCache(tmp_path_factory.mktemp("cache"))
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        cache.refresh(c, progress=False)
    return cache


def test_load_after_full_refresh_equals_a_fresh_fetch_value_for_value(
    filled: StudyCache, client: Client
) -> None:
    fresh = to_pandas(fetch_studies_arrow(client, progress=False))
    loaded = filled.load()
    assert list(loaded.columns) == list(fresh.columns)
    assert loaded.dtypes.equals(fresh.dtypes)
    pdt.assert_frame_equal(loaded, fresh)  # same rows, same order (newest first)


def test_parquet_round_trip_preserves_schema_and_metadata(
    filled: StudyCache, client: Client
) -> None:
    fresh = fetch_studies_arrow(client, progress=False)
    loaded = filled.load_arrow()
    assert loaded.schema.equals(fresh.schema)
    assert loaded.schema.remove_metadata().equals(fresh.schema.remove_metadata())
    assert [f for f in loaded.schema][: len(STUDY_SCHEMA)] == list(STUDY_SCHEMA)
    meta = [name for name in loaded.column_names if name.startswith("meta.")]
    assert meta, "the sandbox world has metadata"
    order = [("study_id", "ascending")]
    assert loaded.sort_by(order).equals(fresh.sort_by(order))
    with_meta = loaded.filter(pa.compute.is_valid(loaded.column(meta[0])))
    assert len(with_meta) > 0


def test_first_refresh_records_every_study_as_new(filled: StudyCache) -> None:
    history = filled.history()
    assert list(history.columns[:2]) == ["observed_at", "change"]
    assert list(history.columns[2 : 2 + len(STUDY_SCHEMA)]) == STUDY_SCHEMA.names
    assert str(history["observed_at"].dtype) == "datetime64[ms, UTC]"
    assert set(history["change"]) == {"new"}
    assert history["study_id"].is_unique and len(history) == 2000
    assert history["study_id"].is_monotonic_increasing


def test_info_reports_namespace_counts_and_files(filled: StudyCache, client: Client) -> None:
    info = filled.info(client)
    assert info["base_url"] == client.base_url
    assert info["key_fingerprint"] == client.key_fingerprint
    assert info["studies"] == 2000
    assert info["last_refresh_mode"] == "full"
    assert info["last_refresh_at"].endswith("Z")
    assert info["file_bytes"]["manifest.json"] > 0 and len(info["file_bytes"]) >= 3
    assert filled.info() == info  # the only namespace


def test_unchanged_server_refresh_changes_nothing(make_sandbox: Any, tmp_path: Path) -> None:
    server: Sandbox = make_sandbox(studies=300, seed=21)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        cache.refresh(c, progress=False)
        again = cache.refresh(c, progress=False)
        active = cache.refresh(c, mode="active", progress=False)
    assert (again.new, again.changed, again.gone, again.unchanged) == (0, 0, 0, 300)
    assert (active.new, active.changed, active.gone, active.unchanged) == (0, 0, 0, 300)
    assert len(cache.history()) == 300


@pytest.mark.parametrize("page_cost", [0.0, 1e9], ids=["closed-by-paging", "closed-by-retrieve"])
def test_active_then_full_refresh_agree_with_a_fresh_fetch(
    make_sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page_cost: float
) -> None:
    import viewerkit.fetch as fetch_module

    # the cost model of fetch.retrieve_studies picks how closed studies are re-read: force
    # each way once; the sandbox's request log tells which studies were retrieved singly
    monkeypatch.setattr(fetch_module, "_PAGE_COST", page_cost)
    server: Sandbox = make_sandbox(studies=1500, seed=22)
    # three old complete studies are open again (set in the server's database), so that
    # some open studies lie beyond the newest pages active mode reads for new studies
    with sqlite3.connect(server.db_path) as db:
        old_open = [
            row[0]
            for row in db.execute(
                "SELECT study_id FROM studies WHERE study_viewer_status = 'complete'"
                " AND is_cancelled = 0 ORDER BY created_at LIMIT 3 OFFSET 600"
            )
        ]
        db.executemany(
            "UPDATE studies SET study_viewer_status = 'incomplete' WHERE study_id = ?",
            [(study_id,) for study_id in old_open],
        )
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        cache.refresh(c, progress=False)
        before = cache.load()
        is_open = (before["study_viewer_status"] == "incomplete") & ~before["is_cancelled"]
        recent_open = before[is_open & ~before["study_id"].isin(old_open)]["study_id"].tolist()
        # closed studies older than the first pages of the list (which active mode reads
        # whole while looking for new studies)
        horizon = before["created_at"].sort_values(ascending=False).iloc[400]
        closed = before[~is_open & (before["created_at"] < horizon) & ~before["is_cancelled"]]
        closed_ids = closed["study_id"].tolist()
        assert len(recent_open) >= 2 and len(closed_ids) >= 2

        c.update_study(old_open[0], study_viewer_status="complete")  # completed
        c.cancel_study(old_open[1])  # cancelled
        with sqlite3.connect(server.db_path) as db:  # an open study disappears (no API delete)
            db.execute("DELETE FROM studies WHERE study_id = ?", (old_open[2],))
        c.update_study(recent_open[0], metadata={"reread reason": "motion"})  # open, edited
        severity = before.set_index("study_id").loc[recent_open[1], "severity"]
        c.update_study(recent_open[1], severity="high" if severity == "stat" else "stat")
        c.create_study(severity="high", study_description="CT new", study_instance_uid="1.2.5.1")
        done = c.create_study(severity="normal", study_description="XR new", study_instance_uid="1.2.5.2")
        c.update_study(done["studyId"], study_viewer_status="complete")  # new and already closed
        c.update_study(closed_ids[0], study_description="Edited after completion")  # missed by active
        c.update_study(closed_ids[1], study_viewer_status="incomplete")  # re-opened: open again

        seen_before = server.requests()[-1]["seq"]
        active = cache.refresh(c, mode="active", progress=False)
        assert (active.mode, active.new, active.changed, active.gone) == ("active", 2, 5, 1)
        retrieved = sorted(
            r["path"].rsplit("/", 1)[1]
            for r in server.requests(since=seen_before)
            if r["method"] == "GET" and r["path"].startswith("/v1/viewer/studies/stu_")
        )
        if page_cost == 0.0:  # paged: only the vanished study is left to retrieve (a 404)
            assert retrieved == [old_open[2]]
        else:
            assert retrieved == sorted(old_open)
        after_active = cache.load()
        after_active_order = list(
            zip(after_active["created_at"], after_active["study_id"], strict=True)
        )
        after_active = after_active.set_index("study_id")
        assert after_active.loc[old_open[0], "study_viewer_status"] == "complete"
        assert bool(after_active.loc[old_open[1], "is_cancelled"]) is True
        assert old_open[2] not in after_active.index
        assert after_active.loc[recent_open[0], "meta.reread reason"] == "motion"
        assert after_active.loc[closed_ids[1], "study_viewer_status"] == "incomplete"
        assert after_active.loc[closed_ids[0], "study_description"] != "Edited after completion"

        full = cache.refresh(c, mode="full", progress=False)
        assert (full.new, full.changed, full.gone) == (0, 1, 0)
        fresh = to_pandas(fetch_studies_arrow(c, progress=False))
    loaded = cache.load()
    assert loaded.dtypes.equals(fresh.dtypes)
    pdt.assert_frame_equal(by_id(loaded), by_id(fresh))
    assert after_active_order == sorted(
        after_active_order, key=lambda k: (k[0], k[1]), reverse=True
    )  # merged rows kept in list order

    history = cache.history()
    later = history[history["observed_at"] > history["observed_at"].min()]
    assert later["change"].value_counts().to_dict() == {"changed": 6, "new": 2, "gone": 1}
    completed = later[later["study_id"] == old_open[0]]
    assert completed["study_viewer_status"].tolist() == ["complete"]
    assert history[["observed_at", "study_id"]].equals(
        history[["observed_at", "study_id"]].sort_values(["observed_at", "study_id"])
    )


def test_a_study_the_api_no_longer_has_is_recorded_gone(make_sandbox: Any, tmp_path: Path) -> None:
    server: Sandbox = make_sandbox(studies=200, seed=23)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        cache.refresh(c, progress=False)
        victim = cache.load().iloc[-1]
        # the API has no delete: remove the study from the server's own database
        with sqlite3.connect(server.db_path) as db:
            db.execute("DELETE FROM studies WHERE study_id = ?", (victim["study_id"],))
        summary = cache.refresh(c, progress=False)
    assert (summary.gone, summary.unchanged, summary.total) == (1, 199, 199)
    gone = cache.history().query("change == 'gone'")
    assert gone["study_id"].tolist() == [victim["study_id"]]
    assert gone["study_description"].tolist() == [victim["study_description"]]
    assert victim["study_id"] not in set(cache.load()["study_id"])


def test_two_servers_never_share_a_namespace(make_sandbox: Any, tmp_path: Path) -> None:
    one: Sandbox = make_sandbox(studies=30, seed=24)
    two: Sandbox = make_sandbox(studies=40, seed=25)
    cache = StudyCache(tmp_path)
    with Client(api_key=one.api_key, base_url=one.base_url) as a, Client(
        api_key=two.api_key, base_url=two.base_url
    ) as b:
        cache.refresh(a, progress=False)
        cache.refresh(b, progress=False)
        assert len(cache.load(a)) == 30 and len(cache.load(b)) == 40
        assert {n["base_url"] for n in cache.namespaces()} == {one.base_url, two.base_url}
        with pytest.raises(CacheError, match="2 API namespaces"):
            cache.load()
        # the same server under another key is another namespace too
        with Client(api_key="sk-other", base_url=one.base_url) as other:
            assert len(cache.load(other)) == 0


def test_api_key_is_absent_from_every_cache_file(filled: StudyCache, sandbox: Sandbox) -> None:
    files = [p for p in filled.path.rglob("*") if p.is_file()]
    assert len(files) >= 3
    for path in files:
        assert sandbox.api_key.encode() not in path.read_bytes(), path
    manifest = next(filled.path.rglob("manifest.json"))
    assert json.loads(manifest.read_text())["base_url"] == sandbox.base_url


def test_corrupt_manifest_names_the_file_and_how_to_rebuild(
    filled: StudyCache, tmp_path: Path
) -> None:
    import shutil

    copy = StudyCache(tmp_path / "copy")
    shutil.copytree(filled.path, copy.path)
    manifest = next(copy.path.rglob("manifest.json"))
    manifest.write_text("{not json")
    with pytest.raises(CacheError, match=r"manifest\.json is corrupt.*viewerkit refresh --mode full"):
        copy.load()


def test_corrupt_studies_file_names_the_file(filled: StudyCache, tmp_path: Path) -> None:
    import shutil

    copy = StudyCache(tmp_path / "copy")
    shutil.copytree(filled.path, copy.path)
    studies = next(copy.path.rglob("studies-*.parquet"))
    studies.write_bytes(b"PAR1 garbage")
    with pytest.raises(CacheError, match=rf"{studies.name} is damaged.*refresh --mode full.*keeps"):
        copy.load()


def test_foreign_manifest_is_refused(filled: StudyCache, tmp_path: Path) -> None:
    import shutil

    copy = StudyCache(tmp_path / "copy")
    shutil.copytree(filled.path, copy.path)
    manifest = next(copy.path.rglob("manifest.json"))
    data = json.loads(manifest.read_text())
    data["base_url"] = "https://elsewhere.example"
    manifest.write_text(json.dumps(data))
    with pytest.raises(CacheError, match="another namespace"):
        copy.load()


def test_interrupted_refresh_leaves_the_previous_cache_intact(
    make_sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: Sandbox = make_sandbox(studies=100, seed=26)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        cache.refresh(c, progress=False)
        expected = cache.load()
        before = snapshot(cache.path)
        c.update_study(expected["study_id"].iloc[0], severity="stat")

        def ctrl_c(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

        # Ctrl-C after the new data files are written, just before the manifest commit
        monkeypatch.setattr("viewerkit.files.write_json", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            cache.refresh(c, progress=False)
        after = snapshot(cache.path)
        assert {k: after[k] for k in before} == before
        assert len(after) > len(before)  # the unfinished refresh's files, not yet swept
        pdt.assert_frame_equal(cache.load(), expected)

        monkeypatch.undo()
        summary = cache.refresh(c, progress=False)
    assert summary.changed == 1
    assert cache.info()["refreshes"] == 2
    info = cache.info()
    # orphans swept; the previous generation's studies file stays for readers of the old
    # manifest until the next refresh
    previous = {name for name in before if Path(name).name.startswith(("studies-", "users-"))}
    leftover = set(snapshot(Path(info["path"]))) - set(info["file_bytes"])
    assert {Path(name).name for name in leftover} == {Path(name).name for name in previous}


def test_sigkilled_refresh_leaves_the_previous_cache_intact(
    make_sandbox: Any, tmp_path: Path
) -> None:
    server: Sandbox = make_sandbox(studies=1500, seed=27)
    cache = StudyCache(tmp_path / "cache")
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        cache.refresh(c, progress=False)
        expected = cache.load()
        c.update_study(expected["study_id"].iloc[0], study_description="Changed before the kill")
    before = snapshot(cache.path)
    server.set_faults(latency_ms=400)
    script = textwrap.dedent(
        f"""
        import sys
        from viewerkit import Client, StudyCache
        with Client(base_url={server.base_url!r}) as client:
            print("refreshing", flush=True)
            StudyCache({str(cache.path)!r}).refresh(client, concurrency=2, progress=False)
        print("finished", flush=True)
        """
    )
    env = {**os.environ, "AVARA_API_KEY": server.api_key}
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "refreshing"
        time.sleep(1.5)  # mid-fetch: 15 pages per worker at 400 ms each
        assert child.poll() is None, "the refresh finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    after = snapshot(cache.path)
    assert {k: after[k] for k in before} == before
    pdt.assert_frame_equal(cache.load(), expected)
    server.set_faults(latency_ms=0)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        summary = cache.refresh(c, progress=False)
    assert summary.changed == 1
    assert not list(cache.path.rglob(".tmp-*"))


def test_active_refresh_of_an_empty_cache_runs_full(make_sandbox: Any, tmp_path: Path) -> None:
    server: Sandbox = make_sandbox(studies=50, seed=28)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        summary = StudyCache(tmp_path).refresh(c, mode="active", progress=False)
    assert (summary.mode, summary.new, summary.total) == ("full", 50, 50)


def test_empty_cache_loads_an_empty_study_table(tmp_path: Path, client: Client) -> None:
    cache = StudyCache(tmp_path / "nothing")
    assert len(cache.load()) == 0
    fresh = to_pandas(fetch_studies_arrow(client, severity="stat", progress=False))
    assert cache.load().dtypes.equals(fresh[[c for c in fresh.columns if not c.startswith("meta.")]].dtypes)
    assert list(cache.history().columns[:2]) == ["observed_at", "change"]


def test_active_refresh_of_a_cache_holding_no_study_runs_full(
    make_sandbox: Any, tmp_path: Path
) -> None:
    # the server was empty at the first refresh; a study created and completed since is
    # only found by a full fetch (active mode has no newest created_at to page back to)
    server: Sandbox = make_sandbox(studies=0, in_thread=True)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        assert cache.refresh(c, progress=False).total == 0
        c.create_study(severity="stat", study_description="CT open", study_instance_uid="1.2.8.1")
        done = c.create_study(severity="high", study_description="CT done", study_instance_uid="1.2.8.2")
        c.update_study(done["studyId"], study_viewer_status="complete")
        summary = cache.refresh(c, mode="active", progress=False)
        fresh = to_pandas(fetch_studies_arrow(c, progress=False))
    assert (summary.mode, summary.new, summary.total) == ("full", 2, 2)
    pdt.assert_frame_equal(cache.load(), fresh)


def test_active_refresh_drops_a_metadata_column_no_study_has_any_more(
    make_sandbox: Any, tmp_path: Path
) -> None:
    server: Sandbox = make_sandbox(studies=0, in_thread=True)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        only = c.create_study(
            severity="stat", study_description="CT", study_instance_uid="1.2.9.1",
            metadata={"only here": "x"},
        )
        c.create_study(severity="stat", study_description="CT", study_instance_uid="1.2.9.2",
                       metadata={"site": "North"})
        cache.refresh(c, progress=False)
        assert "meta.only here" in cache.load().columns
        c.update_study(only["studyId"], metadata={"site": "South"})
        summary = cache.refresh(c, mode="active", progress=False)
        fresh = to_pandas(fetch_studies_arrow(c, progress=False))
    assert (summary.mode, summary.changed) == ("active", 1)
    loaded = cache.load()
    assert "meta.only here" not in loaded.columns
    pdt.assert_frame_equal(loaded, fresh)
    # the history keeps what was observed: the key at the first refresh, gone at the second
    history = cache.history()
    assert history["meta.only here"].notna().sum() == 1


def _copy(filled: StudyCache, tmp_path: Path) -> tuple[StudyCache, Path]:
    import shutil

    copy = StudyCache(tmp_path / "copy")
    shutil.copytree(filled.path, copy.path)
    return copy, next(copy.path.rglob("manifest.json"))


@pytest.mark.parametrize(
    "damage",
    [
        {"studies_file": None},
        {"studies_file": "../../elsewhere.parquet"},
        {"history_files": "history/x.parquet"},
        {"refreshes": None},
    ],
    ids=["no-studies-file", "path-outside", "history-not-a-list", "no-refreshes"],
)
def test_manifest_with_malformed_fields_is_a_cache_error_naming_it(
    filled: StudyCache, tmp_path: Path, damage: dict[str, Any]
) -> None:
    copy, manifest = _copy(filled, tmp_path)
    data = json.loads(manifest.read_text())
    data.update(damage)
    manifest.write_text(json.dumps(data))
    for read in (copy.load, copy.history, copy.info):
        with pytest.raises(CacheError, match=r"manifest\.json is corrupt.*viewerkit refresh --mode full"):
            read()


def test_history_file_without_the_history_columns_is_a_cache_error(
    filled: StudyCache, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    copy, _ = _copy(filled, tmp_path)
    history = next(copy.path.rglob("history/*.parquet"))
    pq.write_table(pq.read_table(history).drop_columns(["change"]), history)
    with pytest.raises(CacheError, match=rf"{history.name} is damaged.*delete"):
        copy.history()
    # a version 1 cache has no checksums: the file is read, and its columns checked
    manifest = next(copy.path.rglob("manifest.json"))
    data = json.loads(manifest.read_text())
    data["version"] = 1
    del data["checksums"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(CacheError, match=rf"{history.name} lacks the history columns change.*delete"):
        copy.history()


def test_info_with_a_missing_data_file_is_a_cache_error(filled: StudyCache, tmp_path: Path) -> None:
    copy, _ = _copy(filled, tmp_path)
    studies = next(copy.path.rglob("studies-*.parquet"))
    studies.unlink()
    with pytest.raises(CacheError, match=rf"{studies.name} is missing.*delete"):
        copy.info()
    with pytest.raises(CacheError, match=rf"{studies.name} is missing.*refresh --mode full"):
        copy.load()


def test_a_bad_refresh_mode_is_a_validation_error_before_any_request(tmp_path: Path) -> None:
    from viewerkit import ValidationError

    # nothing listens on port 9: a request would be an ApiConnectionError instead
    with Client(api_key="sk-unused", base_url="http://127.0.0.1:9", max_retries=0) as c, pytest.raises(
        ValidationError, match="field mode: is not one of the allowed values, allowed: full, active"
    ) as caught:
        StudyCache(tmp_path).refresh(c, mode="fast", progress=False)  # type: ignore[arg-type]
    assert caught.value.failure_cases is not None
    assert caught.value.failure_cases["field"].tolist() == ["mode"]
    assert not list(tmp_path.iterdir())  # nothing written either


def test_active_refresh_refuses_a_new_studies_page_with_more_but_no_cursor(
    tmp_path: Path,
) -> None:
    # (a wire case the sandbox cannot produce) the open list answers normally; the
    # unfiltered list, paged for new studies, claims more pages but gives no cursor
    import httpx
    import orjson

    from viewerkit import ApiError

    def study(n: int, created: str, status: str) -> dict[str, Any]:
        return {"studyId": f"stu_{n:032x}", "studyInstanceUid": f"1.{n}", "severity": "normal",
                "studyViewerStatus": status, "isCancelled": False, "createdAt": created,
                "updatedAt": created}

    world = [study(1, "2026-11-27T10:00:00Z", "incomplete"), study(2, "2026-11-27T09:55:00Z", "complete")]
    broken = {"value": False}

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/viewer/users"):  # a server without a user list
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "no"}})
        params = request.url.params
        chosen = [
            s for s in world
            if params.get("severity", s["severity"]) == s["severity"]
            and params.get("studyViewerStatus", s["studyViewerStatus"]) == s["studyViewerStatus"]
            and params.get("isCancelled", "false") == "false"
        ]
        unfiltered = "studyViewerStatus" not in params and "isCancelled" not in params
        more = broken["value"] and unfiltered
        body = {"studies": chosen, "cursor": None, "hasMore": more}
        return httpx.Response(200, content=orjson.dumps(body))

    cache = StudyCache(tmp_path)
    with httpx.Client(transport=httpx.MockTransport(server)) as http, Client(
        api_key="k", base_url="http://avara.test", http_client=http
    ) as c:
        assert cache.refresh(c, progress=False).total == 2
        broken["value"] = True
        with pytest.raises(ApiError, match="^list_studies: a page said hasMore but gave no cursor"):
            cache.refresh(c, mode="active", progress=False)
    assert cache.info()["refreshes"] == 1


def test_two_refreshes_from_two_processes_both_complete_one_after_the_other(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """A scheduled refresh and another one meet: the second waits for the lock instead of
    failing, then reads what the first committed (so a change is recorded once)."""
    from viewerkit.cache import namespace_of
    from viewerkit.files import file_lock

    server: Sandbox = make_sandbox(studies=300, seed=31)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        cache.refresh(c, progress=False)
        study_id = cache.load()["study_id"].iloc[0]
        lock = tmp_path / namespace_of(c.base_url, c.key_fingerprint) / ".lock"
        script = textwrap.dedent(
            f"""
            from viewerkit import Client, StudyCache
            with Client(api_key={server.api_key!r}, base_url={server.base_url!r}) as c:
                summary = StudyCache({str(tmp_path)!r}).refresh(c, progress=False)
            print(summary.changed, flush=True)
            """
        )
        with file_lock(lock, timeout=0):  # held here, so both children must wait
            c.update_study(study_id, severity="stat" if cache.load()["severity"].iloc[0] != "stat" else "high")
            children = [
                subprocess.Popen(
                    [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            for child in children:  # each says it waits for the lock (a log warning)
                assert child.stderr is not None
                assert "waiting for the lock" in child.stderr.readline()
        outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    # the first to get the lock recorded the change; the second read its commit
    assert sorted(int(out.strip()) for out, _ in outputs) == [0, 1]
    info = cache.info()
    assert info["refreshes"] == 3
    history = cache.history()
    assert (history["study_id"] == study_id).sum() == 2  # new at the first refresh, changed once
    assert history["observed_at"].nunique() == 2


def test_a_load_meeting_refreshes_of_another_process_reads_a_whole_table(
    make_sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader read the manifest, then two refreshes committed (and swept the file it named)
    before it opened the studies file: it reads the manifest again instead of calling the
    cache corrupt (whose advice, delete the cache, would lose the history)."""
    server: Sandbox = make_sandbox(studies=150, seed=33)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        cache.refresh(c, progress=False)
        real_read = StudyCache._read_table
        interleaved: list[str] = []

        def read_after_two_refreshes(
            self: StudyCache, directory: Path, name: str, manifest: Any = None
        ) -> pa.Table:
            if not interleaved:
                interleaved.append(name)
                other = StudyCache(tmp_path)  # as another process would
                for severity in ("stat", "high"):
                    c.update_study(cache_ids[0], severity=severity)
                    other.refresh(c, progress=False)
                assert not (directory / name).exists()  # swept under the reader's feet
            return real_read(self, directory, name, manifest)

        cache_ids = cache.load()["study_id"].tolist()
        monkeypatch.setattr(StudyCache, "_read_table", read_after_two_refreshes)
        table = cache.load_arrow()
        info = cache.info()
    assert interleaved and table.num_rows == 150
    assert table.column("severity").to_pylist()[table.column("study_id").to_pylist().index(cache_ids[0])] == "high"
    assert info["refreshes"] == 3


def test_a_refresh_that_waited_for_the_lock_dates_what_it_saw_after_the_wait(
    make_sandbox: Any, tmp_path: Path
) -> None:
    import logging
    import threading

    from viewerkit.cache import namespace_of
    from viewerkit.files import file_lock

    server: Sandbox = make_sandbox(studies=600, seed=34)
    cache = StudyCache(tmp_path)
    waiting = threading.Event()

    class Waiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for the lock" in record.getMessage():
                waiting.set()

    handler = Waiting()
    logging.getLogger("viewerkit.files").addHandler(handler)
    try:
        with Client(api_key=server.api_key, base_url=server.base_url) as c:
            cache.refresh(c, progress=False)
            loaded = cache.load()
            is_open = (loaded["study_viewer_status"] == "incomplete") & ~loaded["is_cancelled"]
            study_id = loaded[is_open]["study_id"].iloc[0]
            lock = tmp_path / namespace_of(c.base_url, c.key_fingerprint) / ".lock"
            summaries: list[Any] = []
            with file_lock(lock, timeout=0):
                refresh = threading.Thread(
                    target=lambda: summaries.append(cache.refresh(c, mode="active", progress=False))
                )
                refresh.start()
                assert waiting.wait(60)
                completed = c.update_study(study_id, study_viewer_status="complete")
            refresh.join(120)
    finally:
        logging.getLogger("viewerkit.files").removeHandler(handler)
    history = cache.history()
    seen = history[(history["study_id"] == study_id) & (history["change"] == "changed")]
    assert len(seen) == 1
    assert seen["observed_at"].iloc[0] >= pd.Timestamp(completed["updatedAt"])
    assert pd.Timestamp(summaries[0].refreshed_at) >= pd.Timestamp(completed["updatedAt"])


def test_a_study_moving_partition_during_a_full_refresh_is_changed_not_gone(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """The partitioned read starts the large (normal, complete, not cancelled) partition and
    the small (normal, complete, cancelled) one at once; when the small one is paged, another
    client cancels the large one's oldest study, which then leaves the large partition
    before its chain reaches it: the read misses it. The refresh must retrieve it and
    record the cancellation, not a deletion."""
    import threading

    import httpx
    import orjson

    server: Sandbox = make_sandbox(studies=3000, seed=35, latency_ms=20)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as other:
        cache.refresh(other, progress=False)
        before = cache.load()
        large = before[
            (before["severity"] == "normal")
            & (before["study_viewer_status"] == "complete")
            & ~before["is_cancelled"]
        ]
        oldest = large.sort_values("created_at")["study_id"].iloc[0]
        moved = threading.Event()
        small = {"severity": "normal", "studyViewerStatus": "complete", "isCancelled": "true"}

        def on_response(response: httpx.Response) -> None:
            params = response.request.url.params
            if moved.is_set() or any(params.get(k) != v for k, v in small.items()):
                return
            response.read()
            if not orjson.loads(response.content)["hasMore"]:  # the small partition is paged
                other.cancel_study(oldest)
                moved.set()

        http = httpx.Client(event_hooks={"response": [on_response]})
        with Client(api_key=server.api_key, base_url=server.base_url, http_client=http) as watched:
            summary = cache.refresh(watched, progress=False, concurrency=2)
        http.close()
    assert moved.is_set()
    assert (summary.gone, summary.changed) == (0, 1)
    after = cache.load().set_index("study_id")
    assert bool(after.loc[oldest, "is_cancelled"]) is True
    history = cache.history()
    last = history[history["study_id"] == oldest].iloc[-1]
    assert last["change"] == "changed" and bool(last["is_cancelled"]) is True


def test_a_change_during_a_slow_refresh_is_never_dated_before_it_happened(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """A study completed just after the refresh's first page is recorded with an
    observed_at no earlier than the server's own time of the change (its updatedAt and the
    audit), so turnaround from the history is never understated."""
    import threading

    import httpx

    server: Sandbox = make_sandbox(studies=1500, seed=36, latency_ms=30)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as other:
        cache.refresh(other, progress=False)
        loaded = cache.load()
        is_open = (loaded["study_viewer_status"] == "incomplete") & ~loaded["is_cancelled"]
        study_id = loaded[is_open].sort_values("created_at")["study_id"].iloc[0]
        done = threading.Event()
        completed: dict[str, Any] = {}

        def on_response(response: httpx.Response) -> None:
            if not done.is_set():
                done.set()
                completed.update(other.update_study(study_id, study_viewer_status="complete"))

        http = httpx.Client(event_hooks={"response": [on_response]})
        with Client(api_key=server.api_key, base_url=server.base_url, http_client=http) as watched:
            summary = cache.refresh(watched, progress=False, concurrency=2)
        http.close()
    assert done.is_set() and summary.changed >= 1
    history = cache.history()
    row = history[(history["study_id"] == study_id) & (history["change"] == "changed")]
    assert len(row) == 1 and row["study_viewer_status"].iloc[0] == "complete"
    changed_at = pd.Timestamp(completed["updatedAt"])
    assert row["observed_at"].iloc[0] >= changed_at
    audit_times = [pd.Timestamp(a["at"]) for a in server.audit(study_id) if "at" in a]
    assert all(row["observed_at"].iloc[0] >= at for at in audit_times)


@pytest.mark.parametrize("shape", ["columns", "map"])
def test_ten_thousand_distinct_metadata_keys_refresh_in_bounded_time(
    tmp_path: Path, shape: str
) -> None:
    """Each of 10,000 studies holds its own metadata key: a full and an active refresh
    finish (they did not in nine minutes when missing columns were added one at a time),
    run in a child process under a hard timeout, and keep every key. As columns (10,000
    meta.* columns) each read warns that the map shape fits; as a map, one column and no
    warning."""
    script = textwrap.dedent(
        f"""
        import sqlite3, warnings
        from viewerkit import Client, StudyCache
        from viewerkit.sandbox import running
        with running(studies=10_000, seed=5) as sb:
            with sqlite3.connect(sb.db_path) as db:
                db.execute("UPDATE studies SET metadata = json_object('key ' || rowid, 'v')")
            with Client(api_key=sb.api_key, base_url=sb.base_url) as c, \
                    warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cache = StudyCache({str(tmp_path)!r})
                cache.refresh(c, progress=False, metadata={shape!r})
                first = cache.load_arrow()
                for study_id in first.column("study_id").to_pylist()[:20]:
                    c.update_study(study_id, metadata={{"another key " + study_id: "x"}})
                active = cache.refresh(c, mode="active", progress=False)
                after = cache.load_arrow()
                history = cache.history()
        def keys(table):
            if "metadata" in table.column_names:
                return len({{k for m in table.column("metadata").to_pylist() for k, _ in m}})
            return len([n for n in table.column_names if n.startswith("meta.")])
        kinds = {{type(w.message).__name__ for w in caught}}
        print(keys(first), active.changed, keys(after), len(after.column_names), "|".join(sorted(kinds)) or "-")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first_keys, changed, after_keys, columns, warned = done.stdout.split()
    assert (int(first_keys), int(changed), int(after_keys)) == (10_000, 20, 10_000)  # 20 gone, 20 new
    if shape == "map":
        assert (int(columns), warned) == (len(STUDY_SCHEMA) + 1, "-")
    else:
        assert (int(columns), warned) == (len(STUDY_SCHEMA) + 10_000, "ManyMetadataKeysWarning")


@pytest.mark.parametrize("at", [0.1, 0.3, 0.9])
def test_a_damaged_studies_file_is_refused_and_a_full_refresh_rebuilds_it_keeping_history(
    make_sandbox: Any, tmp_path: Path, at: float
) -> None:
    """Eight bytes flipped anywhere in the studies file: load() refused it naming the file
    (it loaded altered study IDs before); a full refresh rebuilds it from the API and the
    history, and the history is whole."""
    server: Sandbox = make_sandbox(studies=300, seed=38)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        cache.refresh(c, progress=False)
        history = cache.history()
        studies = next(tmp_path.rglob("studies-*.parquet"))
        data = bytearray(studies.read_bytes())
        start = int(len(data) * at)
        data[start : start + 8] = bytes(b ^ 0xFF for b in data[start : start + 8])
        studies.write_bytes(bytes(data))
        with pytest.raises(CacheError, match=rf"{studies.name} is damaged.*refresh --mode full"):
            cache.load()
        with pytest.raises(CacheError, match="is damaged"):
            cache.refresh(c, mode="active", progress=False)
        c.update_study(history["study_id"].iloc[0], severity="stat" if history["severity"].iloc[0] != "stat" else "high")
        summary = cache.refresh(c, mode="full", progress=False)
        fresh = fetch_studies_arrow(c, progress=False)
    assert (summary.new, summary.changed, summary.gone) == (0, 1, 0)
    assert by_id(cache.load()).equals(by_id(to_pandas(fresh)))
    assert len(cache.history()) == len(history) + 1


def test_a_studies_file_holding_a_study_twice_is_refused(filled: StudyCache, tmp_path: Path) -> None:
    import hashlib

    import pyarrow.parquet as pq

    copy, _ = _copy(filled, tmp_path)
    studies = next(copy.path.rglob("studies-*.parquet"))
    table = pq.read_table(studies)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), studies)
    manifest = next(copy.path.rglob("manifest.json"))
    data = json.loads(manifest.read_text())  # as a bug that wrote it would have recorded it
    data["checksums"][studies.name] = hashlib.sha256(studies.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(data))
    with pytest.raises(CacheError, match=rf"{studies.name} holds a study more than once"):
        copy.load()


def test_a_version_1_cache_is_read_and_migrated_by_its_next_refresh(
    make_sandbox: Any, tmp_path: Path
) -> None:
    server: Sandbox = make_sandbox(studies=200, seed=39)
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as c:
        cache.refresh(c, progress=False)
        manifest = next(tmp_path.rglob("manifest.json"))
        data = json.loads(manifest.read_text())
        data["version"] = 1
        for name in ("checksums", "users_file", "metadata"):
            del data[name]
        manifest.write_text(json.dumps(data))  # as viewerkit 0.1 wrote it
        before, history = cache.load(), cache.history()
        cache.refresh(c, mode="active", progress=False)
    migrated = json.loads(manifest.read_text())
    assert migrated["version"] == 2
    assert set(migrated["checksums"]) == {
        migrated["studies_file"], migrated["users_file"], *migrated["history_files"]
    }
    pdt.assert_frame_equal(by_id(cache.load()), by_id(before))
    pdt.assert_frame_equal(cache.history(), history)
