"""Where one settings tree keeps its state, opened once at the edge (a flow's or a command's start).

Flows build a ``Workspace`` from the settings and hand it to tasks; tasks and the library never
work out a store root or a registry folder again. The settings stay a leaf (they only describe);
this module opens the adapters they choose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lockgate.artifacts import ArtifactStore, open_artifacts
from lockgate.dashboard import Dashboard, NoDashboard, open_dashboard
from lockgate.registry import ModelRegistry, open_registry
from lockgate.registry.prompts import PromptRegistry, open_prompt_registry
from lockgate.settings import LockgateSettings, RegistrySettings
from lockgate.signing import ArtifactSigning, open_signing


class ServingPaths:
    """Where serving state lives for a settings tree."""

    def __init__(self, settings: LockgateSettings) -> None:
        s = settings.serving
        folder = settings.home_path / "serving"
        self.folder = folder
        self.manifest = settings.resolve(s.manifest) if s.manifest else folder / "manifest.json"
        self.keys = settings.resolve(s.keys_file) if s.keys_file else folder / "keys.json"
        self.query_log = settings.resolve(s.query_log) if s.query_log else folder / "queries.jsonl"
        self.feedback_log = folder / "feedback.jsonl"
        self.engines = folder / "engines.json"
        self.logs = folder / "logs"


@dataclass(frozen=True, eq=False)
class Workspace:
    """The state folder's places and the stores over them.

    Attributes:
        home: the state folder.
        artifacts: the artifact store (``artifacts.url``, or ``<home>/artifacts``).
        registry: the model registry (``registry.backend``) over ``registry_root``.
        registry_root: the registry's folder; prompt registries live there too.
        index_uri: the vector store's URI (``vector_store.uri``, or Milvus Lite under ``<home>/index``).
        reports: HTML reports (drift).
        logs: the commands' log files.
        serving: the serving manifest, keys, query log and engines.
        dashboard: where watch checks record what they measured (``monitoring.dashboard``; the Evidently
            UI's project named after ``data.name``, kept under ``<home>/monitoring/evidently``).
    """

    home: Path
    artifacts: ArtifactStore
    registry: ModelRegistry
    registry_root: Path
    registry_settings: RegistrySettings
    signing: ArtifactSigning
    index_uri: str
    reports: Path
    logs: Path
    serving: ServingPaths
    dashboard: Dashboard = field(default_factory=NoDashboard)

    @classmethod
    def open(cls, settings: LockgateSettings) -> Workspace:
        """Open every store the settings name (creating the local folders they need)."""
        home = settings.home_path
        location = settings.artifacts.url or str(home / "artifacts")
        cache = home / "artifacts-cache"
        signing = open_signing(settings.signing, settings.resolve)  # reads no key until it signs
        return cls(
            home=home,
            artifacts=open_artifacts(
                location if "://" in location else str(settings.resolve(location)), cache, signing
            ),
            registry=open_registry(settings.registry, home / "registry", signing),
            registry_root=home / "registry",
            registry_settings=settings.registry,
            signing=signing,
            index_uri=settings.vector_uri,
            reports=home / "reports",
            logs=home / "logs",
            serving=ServingPaths(settings),
            dashboard=open_dashboard(
                settings.monitoring.dashboard,
                home / "monitoring" / "evidently",
                settings.data.name,
                latest=home / "monitoring" / "latest.json",
            ),
        )

    @property
    def exported_models(self) -> Path:
        """Embedders exported for another runtime (ONNX), each under its weights' digest."""
        return self.home / "models" / "onnx"

    def prompts(self, name: str) -> PromptRegistry:
        """The registry of the prompt called ``name``."""
        return open_prompt_registry(self.registry_settings, self.registry_root, name, self.signing)

    def __repr__(self) -> str:  # task-run inputs and logs name the place, not every store's internals
        return f"Workspace({self.home})"
