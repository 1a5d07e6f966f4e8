"""The one typed settings root, composed of per-area models.

Values come, lowest priority first, from the field defaults, a profile file under
``lockgate/profiles/`` (package data, so an installed package has them; ``profiles/`` in a
checkout links there; YAML, same shape as this model), and environment variables named after
the path: ``LOCKGATE_TRAINING__MAX_STEPS=50``. Settings are read once, at the edge (a flow's
start or the CLI), never at import time. A bad value is reported with every other bad
value at once, each naming its field.

One module per area (``data``, ``training``, ``quantization``, ``embeddings``, ``vector_store``,
``evaluation``, ``registry``, ``serving``, ``signing``) on the common ``base.Area``; ``root`` composes them
into ``LockgateSettings`` and ``loader`` builds it. Every public name is importable from here.
This package imports pydantic, pydantic-settings, PyYAML and, of Lockgate, only
``lockgate._io`` and ``lockgate.errors``: every other module may import it, never the reverse.
"""

from __future__ import annotations

from lockgate.settings.base import Area
from lockgate.settings.data import DataSettings
from lockgate.settings.embeddings import EmbeddingSettings
from lockgate.settings.evaluation import (
    DriftSettings,
    EvaluationSettings,
    GateSettings,
    MonitoringSettings,
    PromptSettings,
)
from lockgate.settings.loader import list_profiles, load_settings, profile_path, shipped_profiles
from lockgate.settings.quantization import QuantizationSettings
from lockgate.settings.registry import ArtifactSettings, RegistrySettings
from lockgate.settings.root import PROJECT_ROOT, LockgateSettings
from lockgate.settings.serving import ServingSettings
from lockgate.settings.signing import SigningSettings
from lockgate.settings.training import BUILTIN_TINY_MODEL, BaseModelSettings, TrainingSettings
from lockgate.settings.vector_store import VectorStoreSettings

__all__ = [
    "BUILTIN_TINY_MODEL",
    "PROJECT_ROOT",
    "Area",
    "ArtifactSettings",
    "BaseModelSettings",
    "DataSettings",
    "DriftSettings",
    "EmbeddingSettings",
    "EvaluationSettings",
    "GateSettings",
    "LockgateSettings",
    "MonitoringSettings",
    "PromptSettings",
    "QuantizationSettings",
    "RegistrySettings",
    "ServingSettings",
    "SigningSettings",
    "TrainingSettings",
    "VectorStoreSettings",
    "list_profiles",
    "load_settings",
    "profile_path",
    "shipped_profiles",
]
