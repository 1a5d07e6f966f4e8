"""Retry with exponential backoff and jitter, shared by the store adapters."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from lockgate.errors import LockgateError, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")


def with_backoff(
    what: str,
    call: Callable[[], T],
    translate: Callable[[Exception], LockgateError | None],
    attempts: int = 5,
    base_delay_s: float = 0.5,
    max_delay_s: float = 20.0,
    retry_after: Callable[[Exception], float | None] = lambda exc: None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``; retry what ``translate`` calls transient, up to ``attempts`` times in all.

    ``translate`` maps a vendor exception to a Lockgate error (``None``: not the vendor's, let
    it through). A transient error still failing after the last attempt is raised as the
    ``TransientError`` (so the task may retry the whole stage later); any other is raised at once.
    """
    delay = base_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            mapped = translate(exc)
            if mapped is None:
                raise
            if not isinstance(mapped, TransientError) or attempt == attempts:
                raise mapped from None
            wait = retry_after(exc)
            pause = min(max_delay_s, wait if wait is not None else delay * (0.5 + random.random()))
            log.warning("%s failed (attempt %d of %d, retrying in %.1fs): %s", what, attempt, attempts, pause, mapped)
            sleep(pause)
            delay = min(max_delay_s, delay * 2)
    raise AssertionError("unreachable")  # pragma: no cover
