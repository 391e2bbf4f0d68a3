"""Shared fixtures: real sandbox servers on 127.0.0.1.

- ``sandbox`` (session): ``running(studies=2000, seed=7)`` in a subprocess. READ-ONLY for its
  users: a test that creates, updates or cancels studies, or changes fault knobs, must use
  ``make_sandbox`` instead.
- ``make_sandbox``: a factory ``make_sandbox(**kwargs)`` (the keywords of
  ``viewerkit.sandbox.running``) starting a fresh server per call; every server it started
  is stopped when the test ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from viewerkit.sandbox.server import Sandbox, running


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A read-only sandbox of 2000 studies (seed 7), shared by the whole session."""
    with running(studies=2000, seed=7) as server:
        yield server


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Start fresh sandbox servers: ``make_sandbox(studies=200, fail_rate=0.2, ...)``."""
    with contextlib.ExitStack() as stack:

        def make(**kwargs: Any) -> Sandbox:
            return stack.enter_context(running(**kwargs))

        yield make
