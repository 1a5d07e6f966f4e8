"""One exception tree for the whole library.

``TransientError`` is worth retrying (a flaky service, a preempted worker); everything else
is a verdict about the input and retrying it would only repeat the failure.
"""

from __future__ import annotations


class LockgateError(Exception):
    """Root of every error Lockgate raises on purpose."""


class TransientError(LockgateError):
    """A failure that may pass on retry: a dead or slow service, a preempted worker."""


class ConfigError(LockgateError):
    """The settings or a recipe are wrong; the message names every bad field."""


class DataError(LockgateError):
    """The input data is unusable; the message names the file, row and field."""


class StageError(LockgateError):
    """A stage ran and failed for a reason that retrying will not fix (e.g. training crashed)."""


class GateRejected(LockgateError):
    """A promotion gate said no. ``details`` carries what the caller should show (the run summary)."""

    def __init__(self, message: str, details: object = None) -> None:
        self.details = details
        super().__init__(message)
