"""A local Avara Viewer API server (FastAPI + SQLite) for demos, tests and rehearsals.

``running(studies=..., **knobs)`` starts a real server on a loopback port and yields a
``Sandbox`` (``base_url``, ``api_key``, ``db_path``); ``create_app(db_path, ...)`` builds the
ASGI app itself. Both are imported lazily, so ``import viewerkit.sandbox`` needs no FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["running", "Sandbox", "create_app"]

_EXPORTS = {
    "running": "viewerkit.sandbox.server",
    "Sandbox": "viewerkit.sandbox.server",
    "create_app": "viewerkit.sandbox.app",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'viewerkit.sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
