from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live import postgres, server  # noqa: F401  (a live Prefect server on PostgreSQL, shared by the live tests)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A throw-away Prefect server and database for the whole session (about 15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
