from __future__ import annotations

from tests.live import postgres, server  # noqa: F401  (a live Prefect server on PostgreSQL, shared by the live tests)
