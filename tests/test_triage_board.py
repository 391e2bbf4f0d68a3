"""The triage board's widgets driven headlessly as an analyst would (set filters, tick rows,
click Preview, Confirm, Undo, Refresh) against a real sandbox; after each action the sandbox's
state and audit are checked. (The board in a browser through Voila: test_triage_browser.py.)"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from viewerkit import Client, StudyCache
from viewerkit.sandbox.server import Sandbox
from viewerkit.triage import board as board_module
from viewerkit.triage.board import TriageBoard


@pytest.fixture
def server(make_sandbox: Any) -> Sandbox:
    """A sandbox with a worklist: its synthetic world is mostly read, so 15 new studies
    (stat, high and normal) arrive open."""
    sandbox: Sandbox = make_sandbox(studies=400, seed=21)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        for n in range(15):
            client.create_study(severity=("stat", "high", "normal")[n % 3], study_description=f"CT HEAD {n}",
                                study_instance_uid=f"1.2.840.555.{n + 1}")
    return sandbox


@pytest.fixture(autouse=True)
def quick_hands(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests tick rows right after a render, faster than a person could: the guard
    against a tick on a row that just changed study is tested on its own below."""
    monkeypatch.setattr(board_module, "MOVED_ROW_SECONDS", 0.0)


def _wait(board: TriageBoard) -> None:
    """Wait for the action the last click started in the background."""
    assert board.wait(timeout=60)


def _refreshed_cache(client: Client, tmp_path: Path) -> StudyCache:
    cache = StudyCache(tmp_path / "cache")
    cache.refresh(client, progress=False)
    return cache


def _checks(board: TriageBoard) -> list[Any]:
    return [row.children[0] for row in board.rows.children if hasattr(row, "children") and row.children]


def test_filter_tick_preview_confirm_and_undo_against_the_sandbox(server: Sandbox, tmp_path: Path) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        cache = _refreshed_cache(client, tmp_path)
        board = TriageBoard(client, cache, page_size=10)
        try:
            assert "matching" in board.counts.value and len(board.rows.children) == 10
            board.severity.value = ("stat", "high")
            shown = board.queue.page_table()
            assert set(shown["severity"]) <= {"stat", "high"}
            boxes = _checks(board)
            boxes[0].value = True
            boxes[1].value = True
            chosen = board.queue.selected_ids()
            assert len(chosen) == 2 and "2 selected" in board.counts.value
            board.action.value = "severity"
            board.severity_value.value = "normal"
            board.preview_button.click()
            _wait(board)
            assert "Preview" in board.preview_area.value and not board.confirm_button.disabled
            writes = len(server.audit(outcome="changed"))  # the 15 creates
            assert writes == 15
            board.confirm_button.click()
            _wait(board)
            assert "Result" in board.result_area.value and "applied 2" in board.result_area.value
            changed = server.audit(outcome="changed")[writes:]  # the preview sent nothing
            assert sorted(e["study_id"] for e in changed) == sorted(chosen)
            assert all(client.retrieve_study(s)["severity"] == "normal" for s in chosen)
            assert not board.undo_button.disabled
            board.undo_button.click()
            _wait(board)
            assert "Undone" in board.result_area.value
            assert len(server.audit(outcome="changed")) == writes + 4  # two writes, two undone
            assert {client.retrieve_study(s)["severity"] for s in chosen} <= {"stat", "high"}
            journals = list((tmp_path / "cache" / "journals").glob("*.sqlite"))
            assert journals and server.api_key.encode() not in journals[0].read_bytes()
        finally:
            board.close()


def test_errors_show_in_the_board_and_leave_it_usable(server: Sandbox) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, page_size=5)  # no cache: it fetches the open studies
        try:
            board.action.value = "complete"
            board.preview_button.click()  # nothing selected
            _wait(board)
            assert "select studies first" in board.message.value
            board.open_button.click()
            _wait(board)
            assert "exactly one study" in board.message.value
            flaky = Client(api_key=server.api_key, base_url=server.base_url, max_retries=0)
            server.fail_next(1, method="GET", how="503")  # the refresh's read fails ...
            board.client = flaky
            board.refresh_button.click()
            _wait(board)
            assert "503" in board.message.value and "Traceback" not in board.message.value
            bad = Client(api_key="sk-wrong", base_url=server.base_url, max_retries=0)
            board.client = bad  # ... a key the server refuses ...
            board.refresh_button.click()
            _wait(board)
            assert "401" in board.message.value and "sk-wrong" not in board.message.value
            flaky.close()
            board.client = client  # ... and the board goes on
            board.refresh_button.click()
            _wait(board)
            assert "refreshed" in board.message.value
            _checks(board)[0].value = True
            board.open_button.click()
            _wait(board)
            assert "<a href=" in board.link.value and "token" in board.link.value
            bad.close()
        finally:
            board.close()


def test_the_sla_column_counts_down_without_refetching(server: Sandbox) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, page_size=5)
        try:
            seen = len(server.requests())
            first = board.rows.children[0].children[1].value
            time.sleep(1.1)
            board.render()
            assert len(server.requests()) == seen  # rendering reads nothing from the server
            assert board.rows.children[0].children[1].value  # still a row
            assert isinstance(board.refreshed_at, pd.Timestamp) and first
        finally:
            board.close()


def test_a_radiologist_marked_away_is_not_offered_and_every_board_on_the_cache_agrees(
    server: Sandbox, tmp_path: Path
) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        cache = _refreshed_cache(client, tmp_path)
        board = TriageBoard(client, cache)
        try:
            offered = [user for _, user in board.target.options]
            assert len(offered) >= 2
            leaving = offered[0]
            board.away.value = (leaving,)
            assert leaving not in [user for _, user in board.target.options]
            assert leaving not in [user for _, user in board.targets.options]
            other = TriageBoard(client, cache)
            try:
                assert other.away.value == (leaving,)
                assert leaving not in [user for _, user in other.target.options]
            finally:
                other.close()
            board.away.value = ()
            assert leaving in [user for _, user in board.target.options]
            assert board.users is not None
            roles = set(board.users["clinic_role"].dropna()) - {"Radiologist"}
            wider = TriageBoard(client, cache, target_roles=("Radiologist", *roles))
            try:  # a documented filter: other roles may be offered too
                assert set(offered) < {user for _, user in wider.target.options}
            finally:
                wider.close()
        finally:
            board.close()
    assert (tmp_path / "cache" / "availability.json").is_file()


def test_customer_and_age_filters_auto_refresh_and_the_countdown_tick(server: Sandbox) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, page_size=50, tick_every=0.2)
        try:
            board.min_age.value = 24 * 365  # a year: the sandbox world is 90 days old
            assert "No study matches" in board.rows.children[0].value
            board.min_age.value = 0
            board.customer.value = ("",)  # no customer: the 15 new studies among them
            shown = board.queue.page_table()
            assert len(shown) >= 15 and set(shown["customer"]) == {"(no customer)"}
            board.auto.value = 60
            assert board._timer is not None and board._timer.is_alive()
            board.auto.value = 0
            assert board._timer is None
            before, seen = board.rendered_at, len(server.requests())
            deadline = time.monotonic() + 5
            while board.rendered_at == before and time.monotonic() < deadline:
                time.sleep(0.05)
            assert board.rendered_at != before  # re-rendered by the tick ...
            assert len(server.requests()) == seen  # ... without a refetch
        finally:
            board.close()


def test_balance_runs_in_the_background_with_its_progress_and_the_board_stays_usable(
    server: Sandbox, tmp_path: Path
) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        cache = _refreshed_cache(client, tmp_path)
        board = TriageBoard(client, cache, page_size=5, tz="Europe/Berlin")
        try:
            shown_names = {label for label, _ in board.assignee.options}
            assert shown_names >= set(board.queue.page_table()["assignee"])  # as the rows name them
            board.assignee.value = ("",)  # unassigned
            board.select_all.click()
            chosen = set(board.queue.selected_ids())
            assert len(chosen) >= 15 and f"{len(chosen)} selected" in board.counts.value
            board.action.value = "balance"
            assert board.action_inputs.children == (board.targets,)
            across = [user for _, user in board.targets.options][:2]
            board.targets.value = tuple(across)
            board.preview_button.click()
            _wait(board)
            assert f"update {len(chosen)}" in board.preview_area.value, board.message.value
            assert "updated (Europe/Berlin)" in board.preview_area.value  # the board's time zone
            writes = len(server.audit(outcome="changed"))
            server.set_faults(latency_ms=150)  # a slow server: the apply takes seconds
            board.confirm_button.click()
            assert board._busy == "apply" and board.preview_button.disabled
            board.next_page.click()  # the board stays usable meanwhile ...
            assert board.queue.page == 1
            board._in_background("preview", lambda: None)  # ... and refuses a second action
            assert "Busy: the apply is still running" in board.message.value
            _wait(board)
            server.set_faults(latency_ms=0)
            bar = board.progress.children[0]  # tqdm's own notebook bar, in the board
            assert bar.children[1].value == bar.children[1].max == len(chosen), bar.children[0].value
            assert f"applied {len(chosen)}" in board.result_area.value
            # the refresh after the apply: the new assignees are pickable, the filter kept
            assert set(across) <= {value for _, value in board.assignee.options}
            assert board.assignee.value == ("",) and board.queue.filters.assignee == (None,)
            changed = [e for e in server.audit(outcome="changed")[writes:] if e["operation"] == "update"]
            assert {e["study_id"] for e in changed} == chosen and len(changed) == len(chosen)
            owners = [(client.retrieve_study(s)["assignedTo"] or {}).get("userId") for s in chosen]
            assert set(owners) == set(across)  # both got work, nobody else did
            counts = [owners.count(user) for user in across]
            assert max(counts) - min(counts) <= len(chosen) // 2 + 1
            assert not board.preview_button.disabled and not board.undo_button.disabled
            board.undo_button.click()
            _wait(board)
            assert "Undone" in board.result_area.value and board.undo_button.disabled
            assert all(client.retrieve_study(s)["assignedTo"] is None for s in chosen)
        finally:
            board.close()


def test_a_tick_on_a_row_that_just_changed_study_is_refused_and_the_row_widgets_are_reused(
    server: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(board_module, "MOVED_ROW_SECONDS", 30.0)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, page_size=5, tick_every=None)
        try:
            rows = board.rows.children
            shown = board.queue.page_table()["study_id"].tolist()
            board.sort.value = "oldest"  # the page now shows other studies in the same rows
            assert board.rows.children == rows  # no new row widgets, only new values
            assert board.queue.page_table()["study_id"].tolist() != shown
            _checks(board)[0].value = True  # a click aimed at what the row showed before
            assert board.queue.selected_ids() == [] and _checks(board)[0].value is False
            assert "rows moved" in board.message.value and "0 selected" in board.counts.value
            monkeypatch.setattr(board_module, "MOVED_ROW_SECONDS", 0.0)  # a moment later ...
            _checks(board)[0].value = True  # ... the tick counts, for the study the row shows
            assert board.queue.selected_ids() == board.queue.page_table()["study_id"].head(1).tolist()
            for _ in range(20):
                board.render()  # the countdown ticks: still the same widgets
            assert board.rows.children == rows and _checks(board)[0].value is True
        finally:
            board.close()


def _strip(html_text: str) -> str:
    return re.sub("<[^>]+>", "", html_text)


def test_a_preview_goes_stale_when_the_selection_filters_or_action_change_and_is_never_applied(
    server: Sandbox, tmp_path: Path
) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, _refreshed_cache(client, tmp_path), page_size=10)
        try:
            board.search.value = "CT HEAD"
            board.severity.value = ("stat",)
            boxes = _checks(board)
            boxes[0].value = boxes[1].value = True
            chosen = board.queue.selected_ids()
            board.action.value = "cancel"
            writes = len(server.audit())
            stale = [
                lambda: setattr(board.severity, "value", ("high",)),  # the two leave the list
                lambda: setattr(board.sort, "value", "oldest"),  # a filter or sort keeping them
                lambda: setattr(board.max_age, "value", 10_000.0),
                lambda: setattr(_checks(board)[0], "value", False),  # one unticked
                lambda: setattr(board.action, "value", "complete"),  # another action
                lambda: board.select_all.click(),  # more studies
            ]
            for change in stale:
                board.severity.value = ("stat",)
                board.sort.value = "deadline"
                board.max_age.value = 0
                board.action.value = "cancel"
                board.queue.clear_selection()
                board.queue.select(chosen)
                board.render()
                board.preview_button.click()
                _wait(board)
                assert not board.confirm_button.disabled and "cancel 2" in board.preview_area.value
                change()
                assert board.confirm_button.disabled and "preview again" in board.preview_area.value
                board.confirm()  # even called from code: refused
                assert "Preview the action first" in _strip(board.message.value)
            assert len(server.audit()) == writes  # nothing sent
            assert not any(client.retrieve_study(s)["isCancelled"] for s in chosen)
        finally:
            board.close()


def test_confirm_while_a_refresh_runs_keeps_the_preview_for_later(server: Sandbox, tmp_path: Path) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, _refreshed_cache(client, tmp_path), page_size=10)
        try:
            board.search.value = "CT HEAD"
            _checks(board)[0].value = True
            board.action.value = "severity"
            board.severity_value.value = "normal" if board.queue.page_table()["severity"][0] != "normal" else "stat"
            board.preview_button.click()
            _wait(board)
            server.set_faults(latency_ms=300)
            board.refresh_button.click()
            board.confirm_button.click()  # while the refresh runs
            assert "Busy: the refresh is still running" in board.message.value
            assert board.pending is not None and not board.confirm_button.disabled
            _wait(board)
            server.set_faults(latency_ms=0)
            board.confirm_button.click()
            _wait(board)
            assert "applied 1" in board.result_area.value and "Run finished: 1 applied" in board.message.value
        finally:
            board.close()


def test_away_marks_of_another_board_reach_this_one_and_keep_unrelated_choices(
    server: Sandbox, tmp_path: Path
) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        cache = _refreshed_cache(client, tmp_path)
        first, second = TriageBoard(client, cache, page_size=5), TriageBoard(client, cache, page_size=5)
        try:
            offered = [user for _, user in second.target.options]
            leaving, staying = offered[0], offered[3]
            second.target.value = staying
            second.targets.value = (leaving, staying)
            first.target.value = offered[5]
            first.away.value = (leaving,)  # marked on the first board ...
            assert first.target.value == offered[5]  # ... its own choice is kept
            second.search.value = "CT HEAD"
            _checks(second)[0].value = True
            second.action.value = "balance"
            second.preview_button.click()  # ... the second board reads it before a preview
            _wait(second)
            assert "marked away now" in second.message.value and second.pending is None
            assert leaving not in [user for _, user in second.target.options]
            assert second.away.value == (leaving,) and second.targets.value == (staying,)
            assert second.target.value == staying  # unrelated choices stay
            second.refresh_button.click()
            _wait(second)
            assert second.targets.value == (staying,) and second.target.value == staying
        finally:
            first.close()
            second.close()


def test_the_assignee_loads_follow_the_work_after_an_action(server: Sandbox, tmp_path: Path) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, _refreshed_cache(client, tmp_path), page_size=20)
        try:
            board.action.value = "assign"
            board.preview_button.click()
            _wait(board)
            assert "choose a radiologist in To first" in board.message.value
            board.search.value = "CT HEAD"
            board.select_page.click()
            moving = board.queue.selected_studies()
            label, target = board.target.options[0]
            board.target.value = target
            board.preview_button.click()
            _wait(board)
            board.confirm_button.click()
            _wait(board)
            assert f"applied {len(moving)}" in board.result_area.value
            after = {user: shown for shown, user in board.target.options}[target]

            def loads(text: str) -> list[int]:
                found = re.search(r"open (\d+) stat / (\d+) high / (\d+) normal", text)
                assert found, text
                return [int(n) for n in found.groups()]

            moved = [int((moving["severity"] == sev).sum()) for sev in ("stat", "high", "normal")]
            assert loads(after) == [b + m for b, m in zip(loads(label), moved, strict=True)], (label, after)
        finally:
            board.close()


def test_closing_stops_the_auto_refresh_for_good_and_removes_the_link(server: Sandbox) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, page_size=5, refresh_every=3600, link_seconds=60)
        assert board.auto.value == 3600 and "every 3600 s" in board.auto.options[-1][0]
        _checks(board)[0].value = True
        board.open_button.click()
        _wait(board)
        assert board.link.value
        board.auto_refresh(0.3)  # refreshes come often now ...
        time.sleep(1.0)
        board.close()  # ... until the board is closed
        board.wait(30)
        assert board.link.value == ""
        seen = len(server.requests())
        time.sleep(1.5)
        assert len(server.requests()) == seen  # nothing more after close
        assert board._timer is None or not board._timer.is_alive()


def test_rows_are_made_as_pages_need_them_and_a_table_without_assignees_opens(server: Sandbox) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        studies = pd.DataFrame({
            "study_id": ["stu_" + "a" * 32], "severity": ["stat"], "study_viewer_status": ["incomplete"],
            "is_cancelled": [False], "created_at": [pd.Timestamp.now(tz="UTC")],
        })
        start = time.monotonic()
        board = TriageBoard(client, studies=studies, users=None, page_size=200_000)
        try:
            assert time.monotonic() - start < 30  # not 200,000 rows of widgets
            assert len(board._slots) == 1 and len(board.rows.children) == 1
            assert board.target.options == () and "<b>1</b> matching" in board.counts.value
        finally:
            board.close()


def test_a_selected_study_that_ages_out_of_the_filter_makes_the_preview_unconfirmable(
    server: Sandbox, tmp_path: Path
) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, _refreshed_cache(client, tmp_path), page_size=10, tick_every=None)
        try:
            board.sort.value = "newest"
            newest = board.queue.page_table().iloc[0]
            board.max_age.value = float(newest["age_h"]) + 1.5 / 3600  # it matches for 1.5 s more
            board.queue.select([newest["study_id"]])
            board.action.value = "severity"
            board.severity_value.value = "normal" if newest["severity"] != "normal" else "stat"
            board.preview_button.click()
            _wait(board)
            assert board.pending is not None
            time.sleep(2.0)  # nothing re-renders: the study left the filter silently
            writes = len(server.audit())
            board.confirm()
            _wait(board)
            assert "Preview the action first" in board.message.value
            assert len(server.audit()) == writes and board.queue.selected_ids() == []
        finally:
            board.close()


def test_an_unexpected_error_in_a_board_job_is_one_line_and_not_done(server: Sandbox, tmp_path: Path) -> None:
    damaged = tmp_path / "journal.sqlite"
    damaged.write_bytes(b"not a database, " * 100)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        board = TriageBoard(client, page_size=5, journal=damaged, tick_every=None)
        try:
            _checks(board)[0].value = True
            board.action.value = "severity"
            board.preview_button.click()
            _wait(board)
            board.confirm_button.click()
            _wait(board)
            shown = _strip(board.message.value)
            assert "DatabaseError" in shown and "done" not in shown and "Traceback" not in shown
            assert not board.preview_button.disabled  # usable again
        finally:
            board.close()


def test_a_picked_assignee_with_no_study_left_leaves_picker_and_filter_agreeing(
    server: Sandbox, tmp_path: Path
) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        cache = _refreshed_cache(client, tmp_path)
        board = TriageBoard(client, cache, page_size=5, tick_every=None)
        try:
            seen = set(board.queue.studies["assigned_to_user_id"].dropna())
            lonely = next(user for _, user in board.target.options if user not in seen)  # no study yet
            board.search.value = "CT HEAD"
            study = board.queue.matching_ids()[0]
            client.update_study(study, assigned_to=lonely)  # one study for them ...
            board.refresh()
            board.search.value = ""
            board.assignee.value = (lonely,)
            assert board.queue.matching_ids() == [study]
            client.update_study(study, assigned_to=None)  # ... and none again
            board.refresh()
            assert lonely not in [value for _, value in board.assignee.options]
            assert board.assignee.value == () and board.queue.filters.assignee == ()
        finally:
            board.close()
