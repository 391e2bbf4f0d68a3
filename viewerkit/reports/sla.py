"""SLA targets, report windows and "now": what every report and the triage board share.

- **Targets.** ``SlaTargets`` holds a turnaround target per severity, with optional
  overrides per express customer; ``SLA`` is the default (stat 1 h, high 4 h, normal 24 h).
  Every ``sla=`` argument takes ``SlaTargets``, a mapping of severity to hours, or ``None``
  (``resolve_sla``). Hours are any real number (numpy's included) or a timedelta.
- **Past target.** A study is past its target once its age (open) or turnaround (completed)
  is strictly greater than the target: one finished exactly at its target is within it.
- **Windows** are half-open, ``start <= t < end``, in UTC (naive times are taken as UTC;
  either end may be ``None``); ``window_ms`` reads one, ``last_days`` builds "the last N
  days".
- **Time zone.** Reports count days and weeks in one time zone, ``tz=`` (default UTC):
  ``report_timezone`` turns the setting (an IANA name such as ``"Europe/Berlin"``) into a
  ``ZoneInfo``, or refuses it (``ValidationError``, field ``tz``) before any work. A local
  day runs from local midnight to local midnight, so it lasts 23 or 25 hours across a
  daylight-saving change. The bulk results and the triage board show times in the same
  setting.
- **Now.** Anything relative to the present takes ``now=`` (default: the current time), so
  results are reproducible; studies created after ``now`` are not open yet.
- **Deadlines.** ``deadlines`` gives, per study, its target, its deadline and, for open
  studies, the time left to it and whether it is overdue, for the whole table at once.

Bad input raises ``viewerkit.errors.ValidationError`` whose ``failure_cases`` name the
field and the ``Reason``.

>>> import pandas as pd
>>> now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
>>> two = pd.DataFrame({"severity": ["stat", "high"], "study_viewer_status": ["incomplete"] * 2,
...     "is_cancelled": [False] * 2, "created_at": [now - pd.Timedelta("30min"), now - pd.Timedelta("5h")]})
>>> deadlines(two, now=now)[["target_h", "left_h", "overdue"]].to_dict("records")
[{'target_h': 1.0, 'left_h': 0.5, 'overdue': False}, {'target_h': 4.0, 'left_h': -1.0, 'overdue': True}]
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, TypeAlias

import numpy as np
import pandas as pd

from viewerkit.errors import Reason, ValidationError
from viewerkit.reports.columns import StudyColumns, needed_columns, severity_codes, timestamps
from viewerkit.schema import RULES, SEVERITIES, Severity
from viewerkit.timezones import TimeZoneLike, report_timezone

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "SLA",
    "Hours",
    "Moment",
    "SlaLike",
    "SlaTargets",
    "TimeZoneLike",
    "Window",
    "deadlines",
    "last_days",
    "moment_ms",
    "now_ms",
    "past_target",
    "report_timezone",
    "resolve_now",
    "resolve_sla",
    "window_ms",
]

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
# the first millisecond of year 1: the earliest time a window may name
_YEAR_ONE_MS: Final = -62_135_596_800_000

#: A point in time: ISO 8601 text, a datetime or Timestamp (naive is UTC), or None.
Moment: TypeAlias = "str | datetime | pd.Timestamp | None"
#: A report window ``(start, end)``, half-open, either end ``None`` for open; ``None`` for all time.
Window: TypeAlias = "tuple[Moment, Moment] | None"
#: A duration: hours as any real number (int, float, numpy numbers, not bool) or a timedelta.
Hours: TypeAlias = "float | int | numbers.Real | np.integer | np.floating | timedelta"
#: What ``sla=`` takes: ``SlaTargets``, a mapping of severity to hours, or None (``SLA``).
SlaLike: TypeAlias = "SlaTargets | Mapping[str, Hours] | None"

_SLA_ERROR: Final = "bad SLA targets"
_WINDOW_ERROR: Final = "bad report window"
_TIME_ERROR: Final = "bad report time"


# --- SLA targets ------------------------------------------------------------------------------


def _duration_case(value: object, where: str) -> dict[str, Any] | None:
    """The failure case of one target, or None when it is a positive duration."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, timedelta)):
        return {"field": where, "value": value, "reason": Reason.NOT_A_DURATION}
    try:
        if not isinstance(value, timedelta) and not np.isfinite(float(value)):  # NaN, infinity
            return {"field": where, "value": value, "reason": Reason.NOT_A_DURATION}
        td = _timedelta(value)
    except (OverflowError, ValueError):  # past pandas' Timedelta range (about 292 years)
        return {"field": where, "value": value, "reason": Reason.OUT_OF_RANGE}
    if td <= pd.Timedelta(0):
        return {"field": where, "value": value, "reason": Reason.NOT_POSITIVE}
    return None


def _timedelta(value: Any) -> pd.Timedelta:
    """Hours (a finite real number) or a timedelta as a Timedelta."""
    if isinstance(value, timedelta):
        return pd.Timedelta(value)
    return pd.Timedelta(hours=float(value))


def _targets_cases(targets: Mapping[str, object], prefix: str) -> list[dict[str, Any]]:
    """Every failure case of a mapping of severity to hours (``prefix``: where it sits)."""
    cases: list[dict[str, Any]] = [
        {"field": f"{prefix}severity", "value": key, "reason": Reason.NOT_SEVERITY,
         "detail": f"a key of the targets{' of ' + prefix.rstrip('.') if prefix else ''}"}
        for key in targets if key not in SEVERITIES
    ]
    for sev in SEVERITIES:
        if sev in targets:
            case = _duration_case(targets[sev], prefix + sev)
            if case is not None:
                cases.append(case)
    return cases


def _checked(targets: Mapping[str, object], prefix: str) -> dict[str, pd.Timedelta]:
    cases = _targets_cases(targets, prefix)
    if cases:
        raise ValidationError.from_cases(_SLA_ERROR, cases)
    return {sev: _timedelta(targets[sev]) for sev in SEVERITIES if sev in targets}


@dataclass(frozen=True)
class SlaTargets:
    """Turnaround targets per severity, with optional overrides per express customer.

    Hours are any real number (numpy numbers too, not bool) or a timedelta, and must be
    positive. ``customers`` maps an ``express_customer_id`` (``cus_`` + 32 lowercase hex, the
    contract's format: ``viewerkit.schema.RULES["customer_id"]``) to the severities whose
    target differs for that customer. Every bad target or customer ID is reported at once,
    as a ``ValidationError`` whose ``failure_cases`` name the field (``stat``,
    ``customers.cus_….high``, ``customers`` for a bad customer ID, or ``severity`` for an
    unknown severity key) and the reason.

    >>> north, south = "cus_" + "1" * 32, "cus_" + "2" * 32
    >>> sla = SLA.with_targets(normal=12).for_customer(north, stat=0.5)
    >>> sla.target("normal"), sla.target("stat", north), sla.target("stat", south)
    (Timedelta('0 days 12:00:00'), Timedelta('0 days 00:30:00'), Timedelta('0 days 01:00:00'))
    >>> print(SLA)
    stat 1 h, high 4 h, normal 24 h
    """

    stat: Hours = timedelta(hours=1)
    high: Hours = timedelta(hours=4)
    normal: Hours = timedelta(hours=24)
    customers: Mapping[str, Mapping[str, Hours]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        defaults = {sev: getattr(self, sev) for sev in SEVERITIES}
        cases = _targets_cases(defaults, "")
        if not isinstance(self.customers, Mapping):
            cases.append({"field": "customers", "value": self.customers, "reason": Reason.WRONG_TYPE,
                          "detail": "expected a mapping of customer ID to {severity: hours}"})
            raise ValidationError.from_cases(_SLA_ERROR, cases)
        for cid, own in self.customers.items():
            cases += [f.case() for f in RULES["customer_id"].check(cid, "customers")]
            if isinstance(own, Mapping):
                cases += _targets_cases(own, f"customers.{cid}.")
            else:
                cases.append({"field": f"customers.{cid}", "value": own, "reason": Reason.WRONG_TYPE,
                              "detail": "expected a mapping of severity to hours"})
        if cases:
            raise ValidationError.from_cases(_SLA_ERROR, cases)
        for sev, value in defaults.items():
            object.__setattr__(self, sev, _timedelta(value))
        object.__setattr__(
            self, "customers", {cid: _checked(own, "") for cid, own in self.customers.items()}
        )

    def target(self, severity: Severity, customer_id: str | None = None) -> pd.Timedelta:
        """The target of one severity, for one customer when it has its own."""
        if severity not in SEVERITIES:
            raise ValidationError.one(_SLA_ERROR, "severity", severity, Reason.NOT_SEVERITY)
        own = self.customers.get(customer_id, {}) if customer_id is not None else {}
        return _timedelta(own.get(severity, getattr(self, severity)))

    def target_hours(self, severity: Severity, customer_id: str | None = None) -> float:
        """The target of one severity (for one customer when it has its own), in hours.

        >>> SLA.target_hours("high")
        4.0
        """
        return float(self.target(severity, customer_id) / pd.Timedelta(hours=1))

    def hours_per_study(
        self, severity: pd.Series | np.ndarray, customer_id: pd.Series | None = None
    ) -> np.ndarray:
        """The target of each study in hours (float64, NaN for a null or unknown severity).

        ``severity``: the study table's severity column (read as every report reads it:
        ``ValidationError`` for a value outside the contract, NaN for null), or an int array
        of severity codes (0 normal, 1 high, 2 stat, -1 null). ``customer_id``: the
        ``express_customer_id`` column, for the customers with their own targets.

        >>> import pandas as pd
        >>> north = "cus_" + "1" * 32
        >>> SLA.for_customer(north, high=2).hours_per_study(
        ...     pd.Series(["high", "high", None]), pd.Series([north, None, None])).tolist()
        [2.0, 4.0, nan]
        """
        codes = (
            severity
            if isinstance(severity, np.ndarray) and severity.dtype.kind == "i"
            else severity_codes(pd.Series(severity))
        )
        base = np.array([self.target_hours(sev) for sev in SEVERITIES] + [np.nan])
        hours: np.ndarray = base[codes]  # -1 picks the NaN
        if self.customers and customer_id is not None:
            cust_codes, uniques = pd.factorize(customer_id)
            index = {cid: i for i, cid in enumerate(uniques)}
            for cid, own in self.customers.items():
                if cid not in index:
                    continue
                mine = cust_codes == index[cid]
                for sev, td in own.items():
                    hours[mine & (codes == SEVERITIES.index(sev))] = _timedelta(td) / pd.Timedelta(hours=1)
        return hours

    def with_targets(self, **hours: Hours) -> SlaTargets:
        """A copy with other default targets for the severities given."""
        return SlaTargets(**{**self._defaults(), **_checked(hours, "")}, customers=self.customers)

    def for_customer(self, customer_id: str, **hours: Hours) -> SlaTargets:
        """A copy where one customer has its own targets for the severities given.

        ``customer_id`` must have the contract's format (``cus_`` + 32 lowercase hex):
        ``ValidationError`` on field ``customer_id`` (``Reason.NOT_CUSTOMER_ID``) otherwise,
        with every bad target of ``hours``.

        >>> SLA.for_customer("bob", stat=2)
        Traceback (most recent call last):
        viewerkit.errors.ValidationError: bad SLA targets: 1 problem
          field customer_id: must be cus_ + 32 lowercase hex (got 'bob')
        """
        cases = [f.case() for f in RULES["customer_id"].check(customer_id, "customer_id")]
        cases += _targets_cases(hours, f"customers.{customer_id}.")
        if cases:
            raise ValidationError.from_cases(_SLA_ERROR, cases)
        merged = {**self.customers.get(customer_id, {}), **_checked(hours, "")}
        return SlaTargets(**self._defaults(), customers={**self.customers, customer_id: merged})

    def table(self) -> pd.DataFrame:
        """The targets as a table: ``express_customer_id`` (null for the default), ``severity``,
        ``target_h``."""
        rows: list[tuple[str | None, str, float]] = [
            (None, sev, self.target_hours(sev)) for sev in SEVERITIES
        ]
        for cid, own in self.customers.items():
            rows += [(cid, sev, _timedelta(td) / pd.Timedelta(hours=1)) for sev, td in own.items()]
        return pd.DataFrame(rows, columns=["express_customer_id", "severity", "target_h"])

    def _defaults(self) -> dict[str, Hours]:
        return {sev: getattr(self, sev) for sev in SEVERITIES}

    def __str__(self) -> str:
        text = ", ".join(f"{sev} {self.target_hours(sev):g} h" for sev in reversed(SEVERITIES))
        if self.customers:
            text += f" ({len(self.customers)} customer(s) with their own targets)"
        return text


#: The default targets: stat 1 h, high 4 h, normal 24 h.
SLA: Final = SlaTargets()


def resolve_sla(sla: SlaLike) -> SlaTargets:
    """The targets an ``sla=`` argument means: ``SLA`` for None, a mapping of severity to
    hours as overrides of ``SLA``, ``SlaTargets`` as they are.

    >>> print(resolve_sla({"stat": 2}))
    stat 2 h, high 4 h, normal 24 h
    """
    if sla is None:
        return SLA
    if isinstance(sla, SlaTargets):
        return sla
    if isinstance(sla, Mapping):
        return SLA.with_targets(**{str(k): v for k, v in sla.items()})
    raise ValidationError.one(
        _SLA_ERROR, "sla", sla, Reason.WRONG_TYPE,
        detail="expected SlaTargets, a mapping of severity to hours, or None",
    )


def past_target(hours: np.ndarray, target_h: np.ndarray) -> np.ndarray:
    """Where an age or turnaround is past its target: strictly greater (a study finished
    exactly at its target is within it); False where either is NaN.

    >>> past_target(np.array([1.0, 1.5, np.nan]), np.array([1.0, 1.0, 1.0])).tolist()
    [False, True, False]
    """
    return np.asarray(hours > target_h)


# --- times and windows ------------------------------------------------------------------------


def moment_ms(value: Moment, field: str) -> float | None:
    """A point in time as epoch milliseconds (UTC; naive is UTC), None for None or NaT.

    Millisecond precision, and any time of years 1-9999 (past pandas' nanosecond range).
    ``field`` names the argument in the ``ValidationError`` (``Reason.NOT_A_TIME``).

    >>> moment_ms("1970-01-01T01:00", "now")
    3600000.0
    """
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError.one(_TIME_ERROR, field, value, Reason.NOT_A_TIME) from exc
    if pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    # via datetime64[ms], not nanoseconds: a window may reach past 2262 ("everything until 9999")
    return float(ts.asm8.astype("datetime64[ms]").astype(np.int64))


def window_ms(window: Window) -> tuple[float, float]:
    """A window as epoch milliseconds ``(start, end)``: -inf / +inf for an open end.

    Raises ``ValidationError``: field ``window`` with ``Reason.BAD_WINDOW`` (not a pair, or
    start not before end), ``window.start`` / ``window.end`` with ``Reason.NOT_A_TIME``.

    >>> window_ms(("1970-01-01", None))
    (0.0, inf)
    """
    if window is None:
        return -np.inf, np.inf
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValidationError.one(_WINDOW_ERROR, "window", window, Reason.BAD_WINDOW,
                                  detail="a pair (start, end), either of them None for open")
    start, end = moment_ms(window[0], "window.start"), moment_ms(window[1], "window.end")
    lo = -np.inf if start is None else start
    hi = np.inf if end is None else end
    if lo >= hi:
        raise ValidationError.one(_WINDOW_ERROR, "window", window, Reason.BAD_WINDOW)
    return lo, hi


def now_ms(now: Moment) -> float:
    """``now=`` as epoch milliseconds: the current time for None.

    ``ValidationError`` (field ``now``, ``Reason.NOT_A_TIME``) for a value that is not a
    time, NaT included.

    >>> now_ms("1970-01-01T00:00:01")
    1000.0
    """
    value = moment_ms(now if now is not None else pd.Timestamp.now(tz="UTC"), "now")
    if value is None:
        raise ValidationError.one(_TIME_ERROR, "now", now, Reason.NOT_A_TIME,
                                  detail="None means the current time; NaT is no time")
    return value


def resolve_now(now: Moment) -> pd.Timestamp:
    """``now=`` as a UTC Timestamp to the millisecond (the current time for None): fix it
    once, then pass it to every KPI of one report so they agree.

    >>> resolve_now("2026-11-02 08:00:00.123456")
    Timestamp('2026-11-02 08:00:00.123000+0000', tz='UTC')
    """
    return pd.Timestamp(np.datetime64(int(now_ms(now)), "ms")).tz_localize("UTC")


def last_days(
    days: int | float | np.integer | np.floating, *, now: Moment = None
) -> tuple[pd.Timestamp, None]:
    """The report window of the last ``days`` days: from ``days`` x 24 h before ``now``
    (default: the current time, to the millisecond), open-ended.

    The end is open, as ``viewerkit report --days N`` has it: the report's own ``now`` bounds
    what is open, and nothing completes after it. ``days`` must be a whole number >= 1
    (``7``, ``7.0``, ``np.int64(7)``; not ``7.5`` nor a bool):
    ``ValidationError`` on field ``days`` with ``Reason.NOT_WHOLE_NUMBER``,
    ``Reason.NOT_POSITIVE`` or ``Reason.OUT_OF_RANGE`` (before the year 1).

    >>> last_days(7, now="2026-11-09 06:00")
    (Timestamp('2026-11-02 06:00:00+0000', tz='UTC'), None)
    """
    whole = (
        isinstance(days, numbers.Real)
        and not isinstance(days, (bool, np.bool_))
        and float(days).is_integer()
    )
    if not whole:
        raise ValidationError.one(_WINDOW_ERROR, "days", days, Reason.NOT_WHOLE_NUMBER)
    if days < 1:
        raise ValidationError.one(_WINDOW_ERROR, "days", days, Reason.NOT_POSITIVE)
    start = int(now_ms(now)) - int(days) * DAY_MS
    if start < _YEAR_ONE_MS:
        raise ValidationError.one(_WINDOW_ERROR, "days", days, Reason.OUT_OF_RANGE,
                                  detail="the window would start before the year 1")
    return pd.Timestamp(np.datetime64(start, "ms")).tz_localize("UTC"), None


# --- deadlines of open studies ----------------------------------------------------------------


def deadlines(studies: pd.DataFrame, *, sla: SlaLike = None, now: Moment = None) -> pd.DataFrame:
    """Per study: its target and deadline, and at ``now`` whether it is open, how long it has
    left to its target and whether it is overdue (whole columns at once).

    One row per row of ``studies``, with its index. Columns:

    - ``target_h``: the target of its severity in hours (its customer's where set); NaN for
      a null or unknown severity.
    - ``deadline``: ``created_at`` + target (UTC); NaT where either is missing.
    - ``open``: incomplete, not cancelled, of a known severity, created at or before ``now``.
    - ``age_h``: hours since ``created_at``; NaN unless open.
    - ``left_h``: hours left to the target (target minus age), negative once past it; NaN
      unless open.
    - ``overdue``: open and past target (age strictly over it), as ``backlog`` and
      ``overdue`` count.

    >>> import pandas as pd
    >>> now = pd.Timestamp("2026-11-02 12:00", tz="UTC")
    >>> one = pd.DataFrame({"severity": ["normal"], "study_viewer_status": ["incomplete"],
    ...     "is_cancelled": [False], "created_at": [now - pd.Timedelta("20h")]})
    >>> deadlines(one, now=now)[["deadline", "left_h", "overdue"]].to_dict("records")
    [{'deadline': Timestamp('2026-11-02 16:00:00+0000', tz='UTC'), 'left_h': 4.0, 'overdue': False}]
    """
    at, targets = now_ms(now), resolve_sla(sla)
    cols = StudyColumns(studies, "deadlines", needed_columns("deadlines", customer_targets=bool(targets.customers)))
    target_h = targets.hours_per_study(cols.severity, cols.text("express_customer_id") if targets.customers else None)
    is_open = cols.open_at(at)
    age_h = np.where(is_open, (at - cols.created) / HOUR_MS, np.nan)
    deadline = timestamps(cols.created + np.round(target_h * HOUR_MS))
    deadline.index = studies.index
    return pd.DataFrame(
        {
            "target_h": target_h,
            "deadline": deadline,
            "open": is_open,
            "age_h": age_h,
            "left_h": target_h - age_h,
            "overdue": is_open & past_target(age_h, target_h),
        },
        index=studies.index,
    )
