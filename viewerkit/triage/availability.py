"""Who is available for new work right now: the on/off toggle per radiologist that worklist
products give the analyst (a radiologist in a meeting, at lunch, reading a long case). Kept
beside the cache (``<cache>/availability.json``, written atomically under a lock, so that
toggles made at once by two boards are all kept), so that every board
and script reading that cache agrees; without a cache, in memory for the session.

>>> roster = Availability()
>>> roster.set_available("usr_" + "1" * 32, False)
>>> sorted(roster.unavailable())
['usr_11111111111111111111111111111111']
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

from viewerkit.errors import CacheError, Reason, ValidationError
from viewerkit.files import file_lock, write_json
from viewerkit.schema import RULES

__all__ = ["Availability", "AVAILABILITY_FILE"]

#: The file name beside the cache's namespaces.
AVAILABILITY_FILE: Final = "availability.json"


class Availability:
    """The users marked unavailable for now, by user ID. ``path``: the JSON file (e.g.
    ``StudyCache.path / AVAILABILITY_FILE``), or None to keep it in memory. A file that is
    not this one's shape is a ``CacheError`` naming it (never silently emptied)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._unavailable: set[str] = set()

    def unavailable(self) -> set[str]:
        """The user IDs marked unavailable (read from the file each time: another board may
        have changed it)."""
        if self.path is None:
            return set(self._unavailable)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            raise CacheError(f"{self.path} is not readable ({type(exc).__name__}): delete it to "
                             "mark everyone available") from None
        ids = data.get("unavailable") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CacheError(f"{self.path} is not an availability file: delete it to mark everyone available")
        return set(ids)

    def set_available(self, user_id: str, available: bool) -> None:
        """Mark one user available (True) or unavailable (False) for new work."""
        failures = RULES["user_id"].check(user_id, "user_id")
        if failures or not isinstance(available, bool):
            cases = [f.case() for f in failures]
            if not isinstance(available, bool):
                cases.append({"field": "available", "value": available, "reason": Reason.NOT_BOOLEAN})
            raise ValidationError.from_cases("availability", cases)
        if self.path is None:
            self._unavailable = self._unavailable - {user_id} if available else self._unavailable | {user_id}
            return
        # read, change, write as one step: two boards toggling at once both keep their marks
        with file_lock(self.path.with_name(self.path.name + ".lock"), timeout=30, holder="another board"):
            current = self.unavailable()
            current = current - {user_id} if available else current | {user_id}
            write_json({"unavailable": sorted(current)}, self.path)
