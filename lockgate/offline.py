"""Environment that keeps the libraries under Lockgate from phoning home.

Telemetry and hub look-ups wait on a dead network for minutes in an offline sandbox; the
embedded default needs neither. Production settings may set these variables differently
before start: only unset ones are filled in.
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


def apply_offline_defaults() -> None:
    """Fill in every unset variable of ``OFFLINE_DEFAULTS`` in this process's environment."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
