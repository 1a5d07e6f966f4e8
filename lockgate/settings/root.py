"""The one settings root: every area, and the paths derived from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lockgate.settings.data import DataSettings
from lockgate.settings.embeddings import EmbeddingSettings
from lockgate.settings.evaluation import (
    DriftSettings,
    EvaluationSettings,
    GateSettings,
    MonitoringSettings,
    PromptSettings,
)
from lockgate.settings.quantization import QuantizationSettings
from lockgate.settings.registry import ArtifactSettings, RegistrySettings
from lockgate.settings.serving import ServingSettings
from lockgate.settings.signing import SigningSettings
from lockgate.settings.training import BaseModelSettings, TrainingSettings
from lockgate.settings.vector_store import VectorStoreSettings

# The checkout (or, installed, the folder holding the package): relative paths resolve here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


class LockgateSettings(BaseSettings):
    """Everything Lockgate can be told, in one validated tree."""

    model_config = SettingsConfigDict(
        env_prefix="LOCKGATE_", env_nested_delimiter="__", extra="forbid", frozen=True, allow_inf_nan=False
    )

    profile: str = Field(default="embedded", description="Name of the profile these settings came from.")
    home: str = Field(default=".lockgate", description="State folder: artifacts, registry, index, logs.")
    project_root: str = Field(
        default=str(PROJECT_ROOT),
        description="Relative paths in settings resolve against this (default: the checkout).",
    )
    data: DataSettings = DataSettings()
    base: BaseModelSettings = BaseModelSettings()
    training: TrainingSettings = TrainingSettings()
    quantization: QuantizationSettings = QuantizationSettings()
    embeddings: EmbeddingSettings = EmbeddingSettings()
    vector_store: VectorStoreSettings = VectorStoreSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    drift: DriftSettings = DriftSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    gates: GateSettings = GateSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    registry: RegistrySettings = RegistrySettings()
    prompts: PromptSettings = PromptSettings()
    serving: ServingSettings = ServingSettings()
    signing: SigningSettings = SigningSettings()

    @classmethod
    def settings_customise_sources(  # type: ignore[override]
        cls, settings_cls: type[BaseSettings], init_settings: Any, *args: Any, **kwargs: Any
    ) -> tuple[Any, ...]:
        # load_settings merges profile, environment and overrides itself (with strict parsing
        # of environment values); pydantic-settings must not read the environment a second time.
        return (init_settings,)

    def resolve(self, path: str) -> Path:
        """A settings path made absolute against the project root."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.project_root).resolve() / p)

    @property
    def home_path(self) -> Path:
        return self.resolve(self.home)

    def serving_settings(self) -> ServingSettings:
        """``serving`` with ``vllm_python`` made absolute against the project root, like every
        relative path in settings: ``deploy`` and ``ask`` started outside the checkout find the
        serving environment."""
        return self.serving.model_copy(update={"vllm_python": str(self.resolve(self.serving.vllm_python))})

    def source(self, location: str) -> str:
        """A data source as prep reads it: URLs (``s3://``, ``memory://``...) as they are, paths resolved."""
        return location if "://" in location else str(self.resolve(location))

    @property
    def sources(self) -> list[str]:
        """Every configured data source, ready for prep."""
        return [self.source(s) for s in self.data.sources]

    @property
    def policy_path(self) -> Path:
        """The gate policy file."""
        return self.resolve(self.gates.policy)

    @property
    def prompts_path(self) -> Path:
        """The folder of prompt files."""
        return self.resolve(self.prompts.dir)

    @property
    def vector_uri(self) -> str:
        return self.vector_store.uri or str(self.home_path / "index" / "milvus.db")
