"""viewerkit: radiology study operations on the Avara Viewer.

The public API, re-exported lazily so that ``import viewerkit`` stays cheap (the sandbox
server and the CLI import only what they use).

>>> import viewerkit
>>> viewerkit.STUDY_SCHEMA.field("severity").name
'severity'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Client": "viewerkit.client",
    "fetch_studies": "viewerkit.fetch",
    "fetch_studies_arrow": "viewerkit.fetch",
    "retrieve_studies": "viewerkit.fetch",
    "retrieve_studies_arrow": "viewerkit.fetch",
    "diff_studies": "viewerkit.frame",
    "ManyMetadataKeysWarning": "viewerkit.frame",
    "TriageBoard": "viewerkit.triage.board",
    "TriageQueue": "viewerkit.triage.queue",
    "metadata_table": "viewerkit.frame",
    "write_studies": "viewerkit.files",
    "read_studies": "viewerkit.files",
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
    "RequestTooLarge": "viewerkit.errors",
    "ServerError": "viewerkit.errors",
    "ResponseValidationError": "viewerkit.errors",
    "fetch_users": "viewerkit.users",
    "fetch_users_arrow": "viewerkit.users",
    "USER_SCHEMA": "viewerkit.users",
    "roster": "viewerkit.staffing",
    "SEVERITY_WEIGHTS": "viewerkit.staffing",
    "severity_weights": "viewerkit.staffing",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what the lazy exports are, for type checkers and IDEs
    from viewerkit.cache import (
        StudyCache as StudyCache,
    )
    from viewerkit.client import (
        Client as Client,
    )
    from viewerkit.errors import (
        ApiConnectionError as ApiConnectionError,
    )
    from viewerkit.errors import (
        ApiError as ApiError,
    )
    from viewerkit.errors import (
        ApiStatusError as ApiStatusError,
    )
    from viewerkit.errors import (
        AuthenticationError as AuthenticationError,
    )
    from viewerkit.errors import (
        BadRequest as BadRequest,
    )
    from viewerkit.errors import (
        CacheError as CacheError,
    )
    from viewerkit.errors import (
        ConfigurationError as ConfigurationError,
    )
    from viewerkit.errors import (
        Conflict as Conflict,
    )
    from viewerkit.errors import (
        LockTimeout as LockTimeout,
    )
    from viewerkit.errors import (
        NotFound as NotFound,
    )
    from viewerkit.errors import (
        RateLimited as RateLimited,
    )
    from viewerkit.errors import (
        Reason as Reason,
    )
    from viewerkit.errors import (
        RequestTooLarge as RequestTooLarge,
    )
    from viewerkit.errors import (
        ResponseValidationError as ResponseValidationError,
    )
    from viewerkit.errors import (
        ServerError as ServerError,
    )
    from viewerkit.errors import (
        ValidationError as ValidationError,
    )
    from viewerkit.errors import (
        ViewerkitError as ViewerkitError,
    )
    from viewerkit.fetch import (
        fetch_studies as fetch_studies,
    )
    from viewerkit.fetch import (
        fetch_studies_arrow as fetch_studies_arrow,
    )
    from viewerkit.fetch import (
        retrieve_studies as retrieve_studies,
    )
    from viewerkit.fetch import (
        retrieve_studies_arrow as retrieve_studies_arrow,
    )
    from viewerkit.files import (
        read_studies as read_studies,
    )
    from viewerkit.files import (
        write_studies as write_studies,
    )
    from viewerkit.frame import (
        ManyMetadataKeysWarning as ManyMetadataKeysWarning,
    )
    from viewerkit.frame import (
        diff_studies as diff_studies,
    )
    from viewerkit.frame import (
        metadata_table as metadata_table,
    )
    from viewerkit.schema import (
        SEVERITIES as SEVERITIES,
    )
    from viewerkit.schema import (
        STUDY_SCHEMA as STUDY_SCHEMA,
    )
    from viewerkit.schema import (
        VIEWER_STATUSES as VIEWER_STATUSES,
    )
    from viewerkit.staffing import (
        SEVERITY_WEIGHTS as SEVERITY_WEIGHTS,
    )
    from viewerkit.staffing import (
        roster as roster,
    )
    from viewerkit.staffing import (
        severity_weights as severity_weights,
    )
    from viewerkit.triage.board import (
        TriageBoard as TriageBoard,
    )
    from viewerkit.triage.queue import (
        TriageQueue as TriageQueue,
    )
    from viewerkit.users import (
        USER_SCHEMA as USER_SCHEMA,
    )
    from viewerkit.users import (
        fetch_users as fetch_users,
    )
    from viewerkit.users import (
        fetch_users_arrow as fetch_users_arrow,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'viewerkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
