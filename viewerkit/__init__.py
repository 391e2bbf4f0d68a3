"""viewerkit: radiology study operations on the Avara Viewer.

The public API, re-exported lazily so that ``import viewerkit`` stays cheap (the sandbox
server and the CLI import only what they use).

>>> import viewerkit
>>> viewerkit.STUDY_SCHEMA.field("severity").name
'severity'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Client": "viewerkit.client",
    "fetch_studies": "viewerkit.fetch",
    "fetch_studies_arrow": "viewerkit.fetch",
    "retrieve_studies": "viewerkit.fetch",
    "retrieve_studies_arrow": "viewerkit.fetch",
    "diff_studies": "viewerkit.frame",
    "write_studies": "viewerkit.files",
    "StudyCache": "viewerkit.cache",
    "STUDY_SCHEMA": "viewerkit.schema",
    "SEVERITIES": "viewerkit.schema",
    "VIEWER_STATUSES": "viewerkit.schema",
    "ViewerkitError": "viewerkit.errors",
    "ConfigurationError": "viewerkit.errors",
    "ValidationError": "viewerkit.errors",
    "Reason": "viewerkit.errors",
    "LockTimeout": "viewerkit.errors",
    "CacheError": "viewerkit.errors",
    "ApiError": "viewerkit.errors",
    "ApiConnectionError": "viewerkit.errors",
    "ApiStatusError": "viewerkit.errors",
    "BadRequest": "viewerkit.errors",
    "AuthenticationError": "viewerkit.errors",
    "NotFound": "viewerkit.errors",
    "Conflict": "viewerkit.errors",
    "RateLimited": "viewerkit.errors",
    "ServerError": "viewerkit.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'viewerkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
