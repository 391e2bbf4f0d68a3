"""The time zone an analyst reads times in: one setting for reports (local days and weeks),
exports (Excel's local times), and later the bulk results and the triage board.

:func:`report_timezone` is the one check of that setting; it needs no pandas or matplotlib,
so any module can call it before its work starts.

>>> report_timezone("America/New_York").key
'America/New_York'
"""

from __future__ import annotations

import functools
from typing import Final, TypeAlias
from zoneinfo import ZoneInfo, available_timezones

from viewerkit.errors import Reason, ValidationError

__all__ = ["TimeZoneLike", "report_timezone", "DEFAULT_TIMEZONE"]

#: What ``tz=`` takes: an IANA time zone name (``"UTC"``, ``"Europe/Berlin"``), a ZoneInfo, or None (UTC).
TimeZoneLike: TypeAlias = "str | ZoneInfo | None"
#: The zone when none is chosen.
DEFAULT_TIMEZONE: Final = "UTC"


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    """Every time zone name this machine knows (the system's zoneinfo, else the tzdata package)."""
    # "localtime" is this machine's own setting, a different zone on each machine
    return frozenset(available_timezones()) - {"localtime"}


def report_timezone(tz: TimeZoneLike = DEFAULT_TIMEZONE, *, what: str = "bad report time zone") -> ZoneInfo:
    """The time zone times are shown in (reports count their days and weeks in it, Excel
    exports write their local times in it).

    ``tz``: an IANA time zone name (``"UTC"``, ``"Europe/Berlin"``, ``"America/New_York"``),
    a ``zoneinfo.ZoneInfo`` (returned as it is), or None for UTC. Local days follow the
    zone's daylight-saving rules (a day of 23 or 25 hours). A name the machine's time zone
    data does not hold (a typo, ``"CET+1"``, an abbreviation such as ``"CEST"``, a path,
    ``"localtime"``) raises ``ValidationError`` headed ``what``, on field ``tz`` with
    ``Reason.NOT_A_TIME_ZONE`` (suggesting the right spelling when only the case differs);
    a value that is not text, ``Reason.WRONG_TYPE``. Call it first, before any work.

    >>> report_timezone("Europe/Berlin")
    zoneinfo.ZoneInfo(key='Europe/Berlin')
    >>> report_timezone(None).key
    'UTC'
    >>> report_timezone("Europe/Berlyn")
    Traceback (most recent call last):
    viewerkit.errors.ValidationError: bad report time zone: 1 problem
      field tz: must be an IANA time zone name such as UTC or Europe/Berlin (got 'Europe/Berlyn')
    """
    if tz is None:
        tz = DEFAULT_TIMEZONE
    if isinstance(tz, ZoneInfo):
        return tz
    if not isinstance(tz, str):
        raise ValidationError.one(what, "tz", tz, Reason.WRONG_TYPE,
                                  detail="expected a time zone name such as 'Europe/Berlin'")
    names = _zone_names()
    if tz in names:
        try:
            return ZoneInfo(tz)
        except (KeyError, ValueError, OSError):  # listed, yet unreadable: said below
            pass
    detail: str | None
    if not names:
        detail = "this machine has no time zone data: pip install tzdata"
    else:
        near = [name for name in names if name.lower() == tz.strip().lower()]
        detail = f"did you mean {near[0]!r}?" if near else None
    raise ValidationError.one(what, "tz", tz, Reason.NOT_A_TIME_ZONE, detail=detail)
