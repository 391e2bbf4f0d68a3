"""No input makes the sandbox answer 5xx: schemathesis over the app's own OpenAPI, faults off.

The app runs in-process (ASGI) over a fresh database with a small synthetic world; both
valid and invalid inputs are generated, and the number of examples per operation is bounded
so the whole run stays well under a minute.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from viewerkit.sandbox.app import create_app
from viewerkit.sandbox.server import seed_store

API_KEY = "sk-schemathesis-test"


# schemathesis parametrizes at collection time, so the app is built when the module loads
# (over its own temporary database, removed at exit).
_WORKDIR = tempfile.mkdtemp(prefix="viewerkit-schemathesis-")
atexit.register(shutil.rmtree, _WORKDIR, True)
_DB = os.path.join(_WORKDIR, "sandbox.db")
seed_store(_DB, 30, 5, [API_KEY])
_APP = create_app(_DB, api_keys=[API_KEY])

schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=30,
    database="none",
)


@schema.parametrize()
def test_no_input_makes_the_sandbox_answer_5xx(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {API_KEY}"})
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500
