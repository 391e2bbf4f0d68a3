"""The triage board: ipywidgets 8 standard widgets over a :class:`~viewerkit.triage.queue.TriageQueue`.

The widgets hold no logic of their own: every filter, sort, page, selection and action is a
call on the queue model or the bulk engine, and the board re-renders from the model. Only
standard widgets and HTML rendered here are used (no custom front-end module, no CDN), so
the board works in JupyterLab 4, Notebook 7, VS Code and Voila with nothing to install.
Every widget an analyst uses carries a CSS class (``vk-...``) so a browser test finds it.

Errors (network, 401, validation, conflicts) are shown in the board's message line, never
as a traceback, and leave the board usable. A reroute link (Open in viewer) is shown for
:data:`LINK_SECONDS` and then removed; it is never printed, logged or stored.
"""

from __future__ import annotations

import contextlib
import html
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import pandas as pd

from viewerkit.errors import Reason, ValidationError, ViewerkitError
from viewerkit.schema import SEVERITIES
from viewerkit.staffing import TARGET_ROLE, roster
from viewerkit.triage.queue import SLA_STATES, SORTS, TriageQueue

if TYPE_CHECKING:
    from viewerkit.cache import StudyCache
    from viewerkit.client import Client

log = logging.getLogger(__name__)

__all__ = ["TriageBoard", "LINK_SECONDS", "SEVERITY_COLOURS", "DEFAULT_JOURNAL"]

#: How long an "Open in viewer" link stays on the board, seconds.
LINK_SECONDS: Final = 60.0
#: A tick on a row that began to show another study less than this many seconds ago is
#: refused (the analyst may have aimed at the study the row showed before), seconds.
MOVED_ROW_SECONDS: Final = 1.0
#: Background colour of each severity's cell.
SEVERITY_COLOURS: Final = {"stat": "#f8d7da", "high": "#fff3cd", "normal": "#e2e3e5"}
_STATE_COLOURS: Final = {"overdue": "#b02a37", "due soon": "#997404", "on time": "#146c43", "": "#6c757d"}
#: Where actions are journaled without a cache.
DEFAULT_JOURNAL: Final = Path("data/journals/triage.sqlite")
_WHAT: Final = "triage board"
#: The actions the board offers on a selection.
ACTIONS: Final = ("assign", "balance", "unassign", "severity", "complete", "incomplete", "cancel", "uncancel")


class TriageBoard:
    """The live worklist in a notebook cell: ``TriageBoard(client, cache)`` then display it
    (it is the last expression of the cell, or ``display(board)``).

    ``client``: the API client; ``cache``: a ``StudyCache`` (its active refresh feeds the
    board; journals go in its root folder), or None to fetch the open studies directly (the
    incomplete, not cancelled ones: the Status "complete" and Cancelled filters then find
    none);
    ``sla``: the targets (``reports.SLA`` by default); ``page_size``: rows per page;
    ``tz``: the time zone times are shown in; ``journal``: where actions are journaled
    (default: ``<cache>/journals/triage.sqlite``, else :data:`DEFAULT_JOURNAL`);
    ``refresh_every``: seconds between automatic active refreshes (None: only on click);
    ``users``: the Viewer user list (default: the cache's); ``link_seconds``: how long an
    Open-in-viewer link stays on the board (a notebook saved later holds no link);
    ``tick_every``: seconds between re-renders that move the SLA countdowns (None: off);
    ``target_roles``: the ``clinicRole`` values offered as assignees (default
    ``("Radiologist",)``; see ``viewerkit.staffing.roster``); ``studies``: a study table to
    start from (e.g. one ``fetch_studies`` returned) instead of reading the cache or the
    server; Refresh then reads them as without it.
    """

    def __init__(
        self,
        client: Client,
        cache: StudyCache | None = None,
        *,
        sla: Any = None,
        page_size: int = 50,
        tz: str = "UTC",
        journal: str | Path | None = None,
        refresh_every: float | None = None,
        users: pd.DataFrame | None = None,
        link_seconds: float = LINK_SECONDS,
        tick_every: float | None = 30.0,
        target_roles: Iterable[str] = (TARGET_ROLE,),
        studies: pd.DataFrame | None = None,
    ) -> None:
        import ipywidgets as widgets

        self.client = client
        self.cache = cache
        # absolute: undo finds the journal even after the notebook changes its folder
        self.journal = (Path(journal) if journal is not None else (
            cache.path / "journals" / "triage.sqlite" if cache is not None else DEFAULT_JOURNAL
        )).resolve()
        self.users = users
        self.link_seconds = link_seconds
        self.target_roles = (target_roles,) if isinstance(target_roles, str) else tuple(target_roles)
        self.last_result: Any = None
        self.pending: Any = None  # the previewed action, waiting for its confirm click
        self.refreshed_at: pd.Timestamp | None = None
        #: when the board was last rendered (its SLA countdowns recomputed), UTC
        self.rendered_at: pd.Timestamp | None = None
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._busy: str | None = None  # the action running in the background, if any
        self._closed = False
        # bumped by every change of the selection, filters, action or its value: a preview
        # taken at another version is stale and cannot be confirmed
        self._version = 0
        self._pending_state: tuple[int, int] = (-1, -1)
        self._error_shown = False
        self._said = ""
        self._action_thread: threading.Thread | None = None
        self._link_timer: threading.Timer | None = None
        from viewerkit.triage.availability import AVAILABILITY_FILE, Availability

        # who is away for now, kept beside the cache so every board on it agrees
        self.availability = Availability(cache.path / AVAILABILITY_FILE if cache is not None else None)
        if studies is None:
            studies = self._read_studies()
        elif self.users is None and cache is not None:
            self.users = cache.load_users(client)
        self.queue = TriageQueue(studies, sla=sla, page_size=page_size, tz=tz)
        self._widgets = widgets
        self._build()
        self.render()
        self._tick_every = tick_every
        self._ticker: threading.Timer | None = None
        self._tick()
        if refresh_every:
            if refresh_every not in [value for _, value in self.auto.options]:
                self.auto.options = [*self.auto.options, (f"every {refresh_every:g} s", refresh_every)]
            self.auto.value = refresh_every  # its observer starts the timer

    # -- data ------------------------------------------------------------------------------

    def _read_studies(self) -> pd.DataFrame:
        if self.cache is not None:
            studies = self.cache.load(self.client)
            if self.users is None:
                self.users = self.cache.load_users(self.client)
        else:
            from viewerkit.fetch import fetch_studies

            studies = fetch_studies(
                self.client, is_cancelled=False, study_viewer_status="incomplete", progress=False
            )
        self.refreshed_at = pd.Timestamp.now(tz="UTC")
        return studies

    def refresh(self, *, full: bool = False, progress: bool = True, announce: bool = True) -> None:
        """Refresh the studies (the cache's active refresh, or a full one), keeping filters,
        sort and selection (a selected study that no longer matches is dropped, and a shown
        preview then goes stale); the assignee choices, their open loads and who is away
        are read again. An error is shown in the board. ``progress``: show its bar in the
        board (off after an action, whose bar stays); ``announce``: say "refreshed". Runs in
        the calling thread (the Refresh button and the auto refresh run it in the
        background, see :meth:`refresh_in_background`)."""
        def run() -> None:
            if self.cache is not None:
                self.cache.refresh(self.client, mode="full" if full else "active",
                                   progress=self._bar if progress else False)
            studies = self._read_studies()
            with self._lock:
                before = self.queue.selection_version
                self.queue.refresh(studies)
                if self.queue.selection_version != before:
                    self._forget_preview()
            self._update_choices()
            self._update_assignable()
        self._guarded(run, done="refreshed" if announce else None)

    def _update_choices(self) -> None:
        """New assignees and customers after a refresh appear in the filter pickers; what
        was picked stays picked."""
        pickers: tuple[tuple[Any, Literal["assignee", "customer"]], ...] = (
            (self.assignee, "assignee"), (self.customer, "customer"))
        dropped = False
        for picker, field in pickers:
            options = [(label, value or "") for label, value in self.queue.choices(field)]
            if options == list(picker.options):
                continue
            before = tuple(picker.value)
            picked = tuple(v for v in before if v in {value for _, value in options})
            with self._quiet_widgets(picker, handler=self._on_filter):
                picker.options = options
                picker.value = picked
            dropped |= picked != before
        if dropped:  # a picked assignee or customer has no study left: the filter follows the picker
            self._apply_filters()

    def refresh_in_background(self, *, full: bool = False) -> None:
        """:meth:`refresh` in a thread, its progress in the board (the Refresh button)."""
        self._in_background("refresh", lambda: self.refresh(full=full))

    def auto_refresh(self, seconds: float | None) -> None:
        """Refresh every ``seconds`` in the background (None: stop), one job at a time with
        the board's actions: a refresh due while an action runs waits for the next turn."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not seconds or self._closed:
            return

        def tick() -> None:
            if self._closed:
                return
            self._in_background("refresh", lambda: self.refresh(announce=False), quiet=True)
            self.auto_refresh(seconds)

        self._timer = threading.Timer(seconds, tick)
        self._timer.daemon = True
        self._timer.start()

    def _tick(self) -> None:
        """Re-render every ``tick_every`` seconds: the SLA countdowns move without a refetch."""
        if not self._tick_every:
            return

        def tick() -> None:
            if self._closed:
                return
            self._guarded(lambda: None, clears=False)  # render, errors shown in the board
            self._tick()

        self._ticker = threading.Timer(self._tick_every, tick)
        self._ticker.daemon = True
        self._ticker.start()

    def close(self) -> None:
        """Stop the timers (countdown, auto refresh) for good and remove a shown viewer
        link. An action already running finishes (:meth:`wait` waits for it)."""
        self._closed = True
        self._tick_every = None
        if self._ticker is not None:
            self._ticker.cancel()
        self.auto_refresh(None)
        if self._link_timer is not None:
            self._link_timer.cancel()
        self._forget_link()

    # -- widgets ---------------------------------------------------------------------------

    def _build(self) -> None:
        w = self._widgets
        q = self.queue
        # the pickers' labels are the names the rows show; "" stands for none (a widget value)
        assignee_options = [(label, value or "") for label, value in q.choices("assignee")]
        customer_options = [(label, value or "") for label, value in q.choices("customer")]
        self.severity = w.SelectMultiple(options=list(reversed(SEVERITIES)), rows=3, description="Severity")
        self.status = w.SelectMultiple(options=["incomplete", "complete"], value=("incomplete",), rows=2,
                                       description="Status")
        self.cancelled = w.Dropdown(options=[("not cancelled", False), ("cancelled", True), ("any", None)],
                                    value=False, description="Cancelled")
        self.assignee = w.SelectMultiple(options=assignee_options, rows=4, description="Assignee")
        self.sla_state = w.SelectMultiple(options=list(SLA_STATES), rows=3, description="SLA")
        self.customer = w.SelectMultiple(options=customer_options, rows=4, description="Customer")
        self.min_age = w.BoundedFloatText(value=0, min=0, max=24 * 365, description="Age ≥ h")
        self.max_age = w.BoundedFloatText(value=0, min=0, max=24 * 365, description="Age ≤ h")
        self.search = w.Text(placeholder="description contains", description="Search")
        self.sort = w.Dropdown(options=[(f"{k}: {v}", k) for k, v in SORTS.items()], value="deadline",
                               description="Sort")
        for widget, name in ((self.severity, "severity"), (self.status, "status"), (self.cancelled, "cancelled"),
                             (self.assignee, "assignee"), (self.sla_state, "sla"), (self.search, "search"),
                             (self.sort, "sort"), (self.customer, "customer"), (self.min_age, "min-age"),
                             (self.max_age, "max-age")):
            widget.add_class(f"vk-filter-{name}")
            widget.observe(self._on_filter, names="value")
        self.counts = w.HTML().add_class("vk-counts")
        self.rows = w.VBox().add_class("vk-rows")
        self._quiet = threading.local()  # set while a render writes the row checkboxes
        self._slots: list[_Slot] = []  # made as pages need them, up to page_size, then reused
        self._no_rows = w.HTML("<i>No study matches these filters.</i>")
        self.prev_page = w.Button(description="◀ Previous").add_class("vk-prev")
        self.next_page = w.Button(description="Next ▶").add_class("vk-next")
        self.page_label = w.Label().add_class("vk-page")
        self.prev_page.on_click(lambda _: self._turn(-1))
        self.next_page.on_click(lambda _: self._turn(+1))
        self.select_page = w.Button(description="Select page").add_class("vk-select-page")
        self.select_all = w.Button(description="Select all matching").add_class("vk-select-all")
        self.clear = w.Button(description="Clear selection").add_class("vk-clear")
        self.select_page.on_click(lambda _: self._select(lambda: self.queue.select_page()))
        self.select_all.on_click(lambda _: self._select(lambda: self.queue.select_all_matching()))
        self.clear.on_click(lambda _: self._select(self.queue.clear_selection))
        self.away = w.SelectMultiple(rows=4, description="Away now").add_class("vk-away")
        self.action = w.Dropdown(options=list(ACTIONS), value="assign", description="Action").add_class("vk-action")
        self.target = w.Dropdown(description="To").add_class("vk-target")
        self.targets = w.SelectMultiple(rows=4, description="Across").add_class("vk-targets")
        self.severity_value = w.Dropdown(options=list(reversed(SEVERITIES)), description="Severity").add_class(
            "vk-severity-value")
        self.message = w.HTML().add_class("vk-message")
        self.away.observe(self._on_away, names="value")
        for chooser in (self.action, self.target, self.targets, self.severity_value):
            chooser.observe(self._on_choice, names="value")
        self.preview_button = w.Button(description="Preview", button_style="info").add_class("vk-preview")
        self.confirm_button = w.Button(description="Confirm", button_style="warning", disabled=True).add_class(
            "vk-confirm")
        self.undo_button = w.Button(description="Undo", disabled=True).add_class("vk-undo")
        self.open_button = w.Button(description="Open in viewer").add_class("vk-open")
        self.refresh_button = w.Button(description="Refresh").add_class("vk-refresh")
        self.preview_button.on_click(lambda _: self.preview_action())
        self.confirm_button.on_click(lambda _: self.confirm())
        self.undo_button.on_click(lambda _: self.undo())
        self.open_button.on_click(lambda _: self.open_in_viewer())
        self.refresh_button.on_click(lambda _: self.refresh_in_background())
        self.auto = w.Dropdown(options=[("auto refresh off", 0), ("every minute", 60), ("every 5 min", 300),
                                        ("every 15 min", 900)], value=0, description="").add_class("vk-auto")
        self.auto.observe(lambda change: self.auto_refresh(change["new"] or None), names="value")
        self.action.observe(lambda _: self._show_action_inputs(), names="value")
        self.preview_area = w.HTML().add_class("vk-preview-area")
        self.result_area = w.HTML().add_class("vk-result")
        self.link = w.HTML().add_class("vk-link")
        self.refreshed_label = w.Label().add_class("vk-refreshed")
        # the running action's tqdm bar (reading, applying, refreshing) is put here
        self.progress = w.Box().add_class("vk-progress")
        filters = w.HBox([w.VBox([self.severity, self.status]), w.VBox([self.cancelled, self.sla_state]),
                          w.VBox([self.assignee, self.customer]),
                          w.VBox([self.search, self.sort, self.min_age, self.max_age])])
        paging = w.HBox([self.prev_page, self.page_label, self.next_page, self.select_page, self.select_all,
                         self.clear])
        self.action_inputs = w.HBox()
        actions = w.VBox([
            w.HBox([self.action, self.action_inputs, self.preview_button, self.confirm_button, self.undo_button]),
            self.progress, self.preview_area, self.result_area,
        ])
        tools = w.HBox([self.open_button, self.link, self.refresh_button, self.auto, self.refreshed_label,
                        self.away])
        self.widget = w.VBox([filters, self.counts, self.rows, paging, actions, tools, self.message]).add_class(
            "vk-board")
        self._show_action_inputs()
        self._update_assignable()

    def _assignable(self) -> list[tuple[str, str]]:
        """Who can be assigned, as (label, user ID): the roster's radiologists (listed, can
        manage studies, ``target_roles``) least loaded first, each labelled with their open
        load by severity; without a user list, the assignees seen in the studies."""
        try:
            if self.users is not None and len(self.users):
                team = roster(self.users, self.queue.studies, target_roles=self.target_roles)
                team = team[team["reassignment_target"]].sort_values("open_load", kind="stable")
                records: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in team.to_dict("records")]
                return [
                    (f"{_person(r)} — open {r['open_stat']:.0f} stat / {r['open_high']:.0f} high / "
                     f"{r['open_normal']:.0f} normal", str(r["user_id"]))
                    for r in records
                ]
        except ViewerkitError as exc:
            log.warning("roster unavailable: %s", exc)
        return [(label, value) for label, value in self.queue.choices("assignee") if value is not None]

    def _away_now(self) -> set[str]:
        """Who is marked away, read from the file again (another board may have changed it);
        a damaged file is shown in the board, and nobody is taken as away."""
        try:
            return self.availability.unavailable()
        except ViewerkitError as exc:
            self._say(str(exc), error=True)
            return set()

    def _update_assignable(self) -> None:
        """Rebuild the assignee choices (To, Across: the radiologists not away, with their
        open loads now) and the Away-now marks from the availability file; a chosen
        radiologist who is still offered stays chosen, one who is away now is unchosen and
        the board says so."""
        everyone = self._assignable()
        away = self._away_now()
        offered = [(label, user) for label, user in everyone if user not in away]
        offered_ids = {user for _, user in offered}
        gone = [user for user in (self.target.value, *self.targets.value) if user and user not in offered_ids]
        chosen, several = self.target.value, tuple(self.targets.value)
        with self._quiet_widgets(self.away, handler=self._on_away):
            if list(self.away.options) != everyone:
                self.away.options = everyone
            self.away.value = tuple(user for _, user in everyone if user in away)
        with self._quiet_widgets(self.target, handler=self._on_choice), \
                self._quiet_widgets(self.targets, handler=self._on_choice):
            if list(self.target.options) != offered:
                self.target.options = offered
                self.targets.options = offered
            self.target.value = chosen if chosen in offered_ids else None
            self.targets.value = tuple(user for user in several if user in offered_ids)
        if (self.target.value, tuple(self.targets.value)) != (chosen, several):
            self._forget_preview()
        if gone:
            names = {user: label.split(" — ")[0] for label, user in everyone}
            self._say("Away now or no longer offered, unchosen: "
                      + ", ".join(names.get(user, user) for user in gone), error=True)

    @contextlib.contextmanager
    def _quiet_widgets(self, widget: Any, *, handler: Callable[[dict[str, Any]], None]) -> Iterator[None]:
        """Set ``widget``'s options or value from the board without running its handler."""
        widget.unobserve(handler, names="value")
        try:
            yield
        finally:
            widget.observe(handler, names="value")

    def _on_choice(self, _: dict[str, Any]) -> None:
        """The action or its value (To, Across, Severity) changed: a shown preview is stale."""
        self._forget_preview()

    def _forget_preview(self) -> None:
        """The selection, the filters, the action or its value changed: the preview shown
        (or being taken) no longer says what Confirm would do, so it cannot be confirmed."""
        self._version += 1
        if self.pending is not None or self.preview_area.value:
            self.pending = None
            self.confirm_button.disabled = True
            self.preview_area.value = ("<i>The selection or the action changed since the preview: "
                                       "preview again.</i>")

    def _on_away(self, change: dict[str, Any]) -> None:
        def apply() -> None:
            old, new = set(change["old"]), set(change["new"])
            for user in new - old:
                self.availability.set_available(user, False)
            for user in old - new:
                self.availability.set_available(user, True)
            self._update_assignable()
        self._guarded(apply, render=False)

    def _show_action_inputs(self) -> None:
        chosen = self.action.value
        self.action_inputs.children = (
            [self.target] if chosen == "assign" else [self.targets] if chosen == "balance"
            else [self.severity_value] if chosen == "severity" else []
        )

    # -- rendering -------------------------------------------------------------------------

    def render(self) -> None:
        """Re-render counts, the visible page and the paging from the model (SLA states are
        recomputed for now, without refetching)."""
        with self._lock:
            now = pd.Timestamp.now(tz="UTC")
            if self.queue.prune(now):  # selected studies that stopped matching (time moved on)
                self._forget_preview()
            counts = self.queue.counts(now)
            page = self.queue.page_table(now)
            pages = self.queue.pages(now)
        # the page's rows reuse one set of row widgets: a render changes their values only,
        # so no widget is created per render (the kernel and the page do not grow with every
        # countdown tick) and a click never lands on a row widget that a render replaced
        with self._lock:
            while len(self._slots) < len(page):
                slot = _Slot(self._widgets)
                slot.check.observe(self._on_check(slot), names="value")
                self._slots.append(slot)
            self._quiet.on = True
            try:
                for slot, record in zip(self._slots, page.itertuples(index=False), strict=False):
                    if slot.study_id != record.study_id:
                        slot.study_id, slot.shown_since = str(record.study_id), time.monotonic()
                    slot.check.value = bool(record.selected)
                    slot.text.value = self._row_html(record)
            finally:
                self._quiet.on = False
        rows = tuple(slot.row for slot in self._slots[:len(page)])
        self.rows.children = rows or (self._no_rows,)
        self.counts.value = (
            f"<b>{counts['matching']:,}</b> matching: "
            + " · ".join(f"<span style='background:{SEVERITY_COLOURS[s]};padding:0 4px'>{s} {counts[s]:,}</span>"
                         for s in reversed(SEVERITIES))
            + f" — <b style='color:{_STATE_COLOURS['overdue']}'>{counts['overdue']:,} overdue</b>, "
            f"{counts['due_within_hour']:,} due within the hour — <b>{counts['selected']:,} selected</b>"
        )
        self.rendered_at = now
        self.page_label.value = f"page {self.queue.page + 1} of {pages}"
        self.prev_page.disabled = self.queue.page == 0
        self.next_page.disabled = self.queue.page >= pages - 1
        if self.refreshed_at is not None:
            shown = self.refreshed_at.tz_convert(self.queue.zone).strftime("%Y-%m-%d %H:%M:%S %Z")
            self.refreshed_label.value = f"last refresh {shown}"

    def _row_html(self, r: Any) -> str:
        def cell(text: object, width: int, style: str = "") -> str:
            value = "" if text is None or (isinstance(text, float) and text != text) else str(text)
            return (f"<span style='display:inline-block;width:{width}px;overflow:hidden;white-space:nowrap;"
                    f"text-overflow:ellipsis;{style}'>{html.escape(value)}</span>")

        created = r.created_at.strftime("%m-%d %H:%M") if pd.notna(r.created_at) else ""
        return (
            cell(r.severity, 56, f"background:{SEVERITY_COLOURS.get(r.severity, '')};text-align:center")
            + cell(r.left if r.sla_state == "overdue" else f"{r.sla_state}: {r.left}" if r.sla_state else r.status,
                   190,
                   f"color:{_STATE_COLOURS.get(r.sla_state, '#6c757d')};font-weight:600;padding-left:6px")
            + cell(r.assignee, 170) + cell(r.customer, 140) + cell(created, 90)
            + cell(f"{r.age_h:.1f} h", 64) + cell(r.description, 220)
            + cell(r.study_id, 120, "color:#6c757d;font-size:smaller")
        )

    def _on_check(self, slot: _Slot) -> Callable[[dict[str, Any]], None]:
        """A row's checkbox, ticked by the analyst: (un)select the study the row shows now
        (a render setting the box is not a tick)."""
        def tick(change: dict[str, Any]) -> None:
            if getattr(self._quiet, "on", False) or slot.study_id is None:
                return
            with self._lock:
                if time.monotonic() - slot.shown_since < MOVED_ROW_SECONDS:
                    # the row showed another study a moment ago (a refresh or the countdown
                    # re-sorted the page): the click may have been meant for that one
                    self._quiet.on = True
                    try:
                        slot.check.value = bool(change["old"])
                    finally:
                        self._quiet.on = False
                    self._say("The rows moved as you clicked: nothing was (un)selected; tick again.", error=True)
                    return
                self.queue.select([slot.study_id], on=bool(change["new"]))
                self._forget_preview()
            self._render_counts_only()
        return tick

    def _render_counts_only(self) -> None:
        counts = self.queue.counts()
        text = self.counts.value
        head = text.rsplit("<b>", 1)[0]
        self.counts.value = f"{head}<b>{counts['selected']:,} selected</b>"

    def _on_filter(self, _: dict[str, Any]) -> None:
        self._guarded(self._apply_filters)

    def _apply_filters(self) -> None:
        """Give the model the filters and sort the widgets show."""
        with self._lock:
            before = self.queue.selection_version
            self.queue.set_filters(
                severity=list(self.severity.value), status=list(self.status.value),
                cancelled=self.cancelled.value,
                assignee=[v or None for v in self.assignee.value],
                sla=list(self.sla_state.value), search=self.search.value,
                customer=[v or None for v in self.customer.value],
                min_age_h=float(self.min_age.value) or None, max_age_h=float(self.max_age.value) or None,
            )
            self.queue.set_sort(self.sort.value)
            if self.queue.selection_version != before or self.pending is not None:
                # selected studies filtered out, or a preview taken under other filters
                self._forget_preview()

    def _turn(self, by: int) -> None:
        with self._lock:
            self.queue.go_to(self.queue.page + by)
        self.render()

    def _select(self, call: Callable[[], object]) -> None:
        with self._lock:
            call()
            self._forget_preview()
        self.render()

    # -- actions ---------------------------------------------------------------------------

    def plan(self) -> Any:
        """The bulk plan of the chosen action on the selection (the selected studies that
        match the filters now). An assignee not chosen, or marked away now (by this board or
        another on the cache), is a ``ValidationError`` naming the field, before anything is
        read or sent."""
        action = self.action.value
        away = self._away_now()
        if action in ("assign", "balance"):
            chosen = [self.target.value] if action == "assign" else list(self.targets.value)
            field = "to" if action == "assign" else "across"
            if not [user for user in chosen if user]:
                raise ValidationError.one(_WHAT, field, None, Reason.EMPTY,
                                          detail=f"choose a radiologist in {field.title()} first")
            if away & set(chosen):
                self._update_assignable()
                raise ValidationError.one(_WHAT, field, sorted(away & set(chosen)), Reason.NOT_A_CHOICE,
                                          detail="marked away now: choose another radiologist")
        if action == "balance":
            from viewerkit import bulk

            studies = self.queue.selected_studies()
            if studies.empty:
                raise ValidationError.one(_WHAT, "selection", 0, Reason.EMPTY, detail="select studies first")
            return bulk.reassign(studies, list(self.targets.value), workload=self.queue.studies,
                                 users=self.users)
        value = self.target.value if action == "assign" else self.severity_value.value if action == "severity" else None
        return self.queue.plan(action, value)

    def preview_action(self) -> None:
        """Preview the chosen action on the selection (in the background: it reads the live
        state of every selected study): counts and the rows that would change; the Confirm
        button then applies it, unless the selection, the filters or the action changed in
        the meantime (the preview is then stale and must be taken again)."""
        def run() -> None:
            self.confirm_button.disabled = True
            self.pending = None
            with self._lock:
                state = self._selection_state()
                plan = self.plan()
            preview = plan.preview(self.client, users=self.users, progress=self._bar, tz=self.queue.zone.key)
            with self._lock:
                if state != self._selection_state():
                    self.preview_area.value = ("<i>The selection or the action changed while the preview "
                                               "was read: preview again.</i>")
                    return
                self.pending, self._pending_state = preview, state
            counts = ", ".join(f"{k} {v:,}" for k, v in preview.counts().items())
            self.preview_area.value = f"<b>Preview</b>: {html.escape(counts)}" + _html_of(preview)
            self.confirm_button.disabled = False
        self._in_background("preview", lambda: self._guarded(run, render=False))

    def confirm(self) -> None:
        """Apply the previewed action (in the background: the board stays usable, its
        progress shown), journaled; then show the result, say how it went, and enable Undo.
        A stale preview (see :meth:`preview_action`) is never applied."""
        taken: list[Any] = []

        def take_preview() -> bool:  # under the board's lock, once no other job runs
            preview, self.pending = self.pending, None
            self.confirm_button.disabled = True
            if preview is None or self._pending_state != self._selection_state():
                self._say("Preview the action first (the selection or the action changed since).", error=True)
                return False
            taken.append(preview)
            return True

        def run() -> None:
            result = taken[0].apply(journal=self.journal, progress=self._bar)
            self.last_result = result
            self.result_area.value = _result_html(result)
            self.preview_area.value = ""
            self.refresh(progress=False, announce=False)
            self._say_result("Run finished", result)

        self._in_background("apply", lambda: self._guarded(run, render=False), prepare=take_preview)

    def _selection_state(self) -> tuple[int, int]:
        """What a preview was taken on: the board's version (filters, action, its value) and
        the queue's selection version, after dropping the selected studies that stopped
        matching now (time moves SLA states and ages)."""
        if self.queue.prune():
            self._forget_preview()
        return self._version, self.queue.selection_version

    def undo(self) -> None:
        """Revert the last action through the bulk engine's undo (a new journaled run), in
        the background like the action itself."""
        result = self.last_result
        if result is None:
            self._say("Nothing to undo.")
            return

        def run() -> None:
            from viewerkit import bulk

            undone = bulk.undo(self.client, self.journal, run=result.run_id, progress=self._bar)
            self._forget_preview()  # a preview taken before the undo no longer says what Confirm does
            self.last_result = None
            self.result_area.value = "<b>Undone</b>: " + _result_html(undone)
            self.refresh(progress=False, announce=False)
            self._say_result("Undo finished", undone)

        self._in_background("undo", lambda: self._guarded(run, render=False))

    def _say_result(self, done: str, result: Any) -> None:
        """One line on how a run went: red when rows failed or met conflicts."""
        counts = result.counts()
        trouble = {k: counts.get(k, 0) for k in ("failed", "conflict") if counts.get(k, 0)}
        if self._error_shown:  # the refresh after the run failed: say both
            line = ", ".join(f"{v:,} {k}" for k, v in counts.items() if v)
            self._say(f"{done}: {line}; then the refresh failed: {self._said}", error=True)
        elif trouble:
            self._say(f"{done} with trouble: " + ", ".join(f"{v:,} {k}" for k, v in trouble.items())
                      + " (see the result)", error=True)
        else:
            self._say(f"{done}: " + ", ".join(f"{v:,} {k}" for k, v in counts.items() if v))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the action running in the background (a script or test driving the
        board); True when nothing is running any more."""
        thread = self._action_thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _in_background(
        self, name: str, call: Callable[[], None], *, prepare: Callable[[], bool] | None = None,
        quiet: bool = False,
    ) -> None:
        """Run one board job in a thread, one at a time: while it runs the action buttons are
        off and a click says what is running. ``prepare`` runs under the board's lock once no
        other job runs, and may call the job off (False); ``quiet``: no "running" and "done"
        lines (the auto refresh). An error the job did not expect is shown as one line too."""
        with self._lock:
            if self._busy is not None:
                if not quiet:
                    self._say(f"Busy: the {self._busy} is still running.", error=True)
                return
            if prepare is not None and not prepare():
                return
            self._busy = name
        for button in (self.preview_button, self.undo_button, self.refresh_button):
            button.disabled = True
        if not quiet:
            self._say(f"{name} running …")

        def run() -> None:
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - the board's promise: one line, never a traceback
                log.debug("%s failed", name, exc_info=True)
                self._say(f"{name} failed: {type(exc).__name__}: {exc}", error=True)
            finally:
                with self._lock:
                    self._busy = None
                self.preview_button.disabled = self.refresh_button.disabled = False
                # Undo once the action and its refresh are over, while there is one to undo
                self.undo_button.disabled = self.last_result is None
                if not quiet and "running" in self.message.value:
                    self._say(f"{name} done")

        thread = threading.Thread(target=run, name=f"viewerkit-board-{name}", daemon=True)
        self._action_thread = thread
        thread.start()

    def _bar(self, **kwargs: Any) -> Any:
        """A tqdm bar drawn in the board (the ``progress`` the board gives the bulk engine
        and the cache): tqdm's own notebook widget, placed in the progress slot."""
        from tqdm.notebook import tqdm as notebook_tqdm

        kwargs["leave"] = True  # a closed widget cannot stay in the board
        bar = notebook_tqdm(display=False, **kwargs)
        self.progress.children = (bar.container,)
        return bar

    def open_in_viewer(self) -> None:
        """A viewer link for the one selected study, shown for :data:`LINK_SECONDS`."""
        def run() -> None:
            chosen = self.queue.selected_ids()
            if len(chosen) != 1:
                self._say("Select exactly one study to open it in the viewer.")
                return
            link = self.client.reroute_url(chosen[0])
            if self._closed:  # closed while the link was asked for: never shown
                return
            # the link goes into the widget only, never to a log, print or the journal
            self.link.value = f"<a href='{html.escape(link.reveal(), quote=True)}' target='_blank'>open {html.escape(chosen[0][:12])}…</a>"
            if self._link_timer is not None:
                self._link_timer.cancel()
            self._link_timer = threading.Timer(self.link_seconds, self._forget_link)
            self._link_timer.daemon = True
            self._link_timer.start()
        self._in_background("open in viewer", lambda: self._guarded(run, render=False))

    def _forget_link(self) -> None:
        self.link.value = ""

    # -- errors ----------------------------------------------------------------------------

    def _guarded(
        self, call: Callable[[], None], *, done: str | None = None, render: bool = True, clears: bool = True
    ) -> None:
        """Run a board action; a viewerkit error is shown as one line, never a traceback.
        ``clears``: the action takes away an error shown before (the countdown tick does not)."""
        if clears and self._error_shown:
            self._say("")
        try:
            call()
        except ViewerkitError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            self._say("; ".join(lines) or type(exc).__name__, error=True)
            return
        except OSError as exc:
            self._say(f"{type(exc).__name__}: {exc.strerror or exc}", error=True)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a damaged journal (sqlite3): one line, never a traceback
            log.debug("board action failed", exc_info=True)
            self._say(f"{type(exc).__name__}: {exc}", error=True)
            return
        if done and not self._error_shown:  # a notice said during the action stays
            self._say(done)
        if render:
            self.render()

    def _say(self, text: str, *, error: bool = False) -> None:
        colour = "#b02a37" if error else "#146c43"
        self._error_shown = error
        self._said = text
        self.message.value = f"<span style='color:{colour}'>{html.escape(text)}</span>" if text else ""

    # -- display ---------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class _Slot:
    """One row of the page: a checkbox and the row's HTML, reused by every render; it
    shows ``study_id`` now."""

    def __init__(self, w: Any) -> None:
        self.study_id: str | None = None
        self.shown_since = 0.0  # time.monotonic() when it began to show study_id
        self.check = w.Checkbox(value=False, indent=False, layout={"width": "28px"}).add_class("vk-row-check")
        self.text = w.HTML()
        self.row = w.HBox([self.check, self.text]).add_class("vk-row")


def _person(row: dict[str, Any]) -> str:
    """A user's display name: first and last name, else the email, else the ID."""
    parts = [row.get(k) for k in ("first_name", "last_name")]
    full = " ".join(p for p in parts if isinstance(p, str) and p)
    email = row.get("email")
    return full or (email if isinstance(email, str) and email else str(row.get("user_id")))


def _html_of(value: Any) -> str:
    shown = getattr(value, "_repr_html_", None)
    return shown() if callable(shown) else ""


def _result_html(result: Any) -> str:
    counts = ", ".join(f"{k} {v:,}" for k, v in result.counts().items())
    failed = result.frame[result.frame["status"] == "failed"] if "status" in result.frame else None
    listing = ""
    if failed is not None and len(failed):
        listing = "<br>failed: " + ", ".join(html.escape(str(i)) for i in failed["study_id"].head(20))
    return f"<b>Result</b>: {html.escape(counts)}{listing}"
