"""Environment defaults for running Lockgate on one machine.

Telemetry and hub look-ups wait on a dead network for minutes in an offline sandbox; the
embedded default needs neither. And the temporary (ephemeral) Prefect API server a run starts
takes 7-17 s on an idle 2-core machine but longer under load, past Prefect's 20 s default,
which failed runs before any stage ("Timed out while attempting to connect to ephemeral
Prefect API server"). Production settings may set these variables differently before start:
only unset ones are filled in.
"""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAGAS_DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# Seconds a run waits for its ephemeral API server (prefect 3.9's setting; its default is 20).
EPHEMERAL_STARTUP_TIMEOUT_S = "180"


def apply_offline_defaults() -> None:
    """Fill in every unset variable of ``OFFLINE_DEFAULTS``, and the ephemeral server's start-up
    timeout, in this process's environment."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)
