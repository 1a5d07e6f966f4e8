"""Flow parameters as pydantic models (the Prefect UI renders them as forms and rejects bad input),
the summaries flows return, and the mark by which a flow tells the terminal a stage is done."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lockgate.records import AdapterArtifact, PromotionAction
from lockgate.settings import LockgateSettings, load_settings

Scenario = Literal["normal", "no-training", "shuffled-labels"]
DecisionMode = Literal["auto", "manual", "dry_run"]

# A log record with this attribute (``extra={STAGE_DONE: "finetune"}``) ends a stage that ran
# outside this process's tasks (a fine-tune on a work pool): the terminal shows it as a stage line.
STAGE_DONE = "lockgate_stage_done"


class StageParams(BaseModel):
    """Parameters every flow takes: which profile, and optionally another state folder."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(
        default="embedded", description="Settings profile under profiles/.", pattern=r"^[a-z0-9][a-z0-9_-]*$"
    )
    home: str | None = Field(default=None, description="Override the state folder (artifacts, registry, index).")

    def overrides(self) -> dict[str, Any]:
        """Settings overrides implied by these parameters."""
        return {"home": self.home} if self.home else {}

    def settings(self) -> LockgateSettings:
        """The settings these parameters select: read once, at the start of a flow or command."""
        return load_settings(self.profile, overrides=self.overrides())


class FinetuneParams(StageParams):
    """What the finetune flow trains: the caller's resolved training settings, so a worker
    elsewhere trains exactly what the release decided, whatever its own environment says."""

    scenario: Scenario = Field(default="normal", description="'shuffled-labels' sabotages the training data.")
    training: dict[str, Any] | None = Field(
        default=None, description="Training settings (fields of training.*) that override the profile's."
    )

    def overrides(self) -> dict[str, Any]:
        out = super().overrides()
        # This flow is the worker: it trains here, whatever launcher its caller used.
        out["training"] = {**(self.training or {}), "launcher": "local"}
        return out


class QueryDriftParams(StageParams):
    """Which served questions the query-drift check looks at."""

    window: int | None = Field(
        default=None, ge=2, le=100_000, description="Override drift.query_window: the last this many questions."
    )
    hours: float | None = Field(
        default=None, ge=0, le=24 * 365, description="Override drift.query_hours: only the last this many hours."
    )

    def overrides(self) -> dict[str, Any]:
        out = super().overrides()
        drift = {k: v for k, v in (("query_window", self.window), ("query_hours", self.hours)) if v is not None}
        if drift:
            out["drift"] = drift
        return out


class CorpusDriftParams(StageParams):
    """Which corpus the corpus-drift check compares with the serving index's reference."""

    corpus_dir: str | None = Field(
        default=None,
        description="Corpus folder instead of the profile's data.corpus_dir (absolute, or relative to the project).",
    )

    def overrides(self) -> dict[str, Any]:
        out = super().overrides()
        if self.corpus_dir:
            out["data"] = {"corpus_dir": self.corpus_dir}
        return out


class TrainParams(StageParams):
    """What to fine-tune: a release's data and training, without what comes after."""

    scenario: Scenario = Field(
        default="normal",
        description="'normal' trains for real. 'no-training' and 'shuffled-labels' sabotage the candidate "
        "to show the gate rejecting it.",
    )
    max_steps: int | None = Field(
        default=None, ge=1, le=100_000, description="Override training.max_steps for this run."
    )

    def overrides(self) -> dict[str, Any]:
        out = super().overrides()
        training: dict[str, Any] = {}
        if self.max_steps is not None:
            training["max_steps"] = self.max_steps
        if self.scenario == "no-training":
            # Axolotl needs at least one step; at this rate it changes nothing.
            training.update({"max_steps": 1, "learning_rate": 1e-12, "save_steps": 1})
        if training:
            out["training"] = training
        return out

    def finetune_params(self, settings: LockgateSettings) -> FinetuneParams:
        """Parameters of the finetune flow that trains what this run would train here."""
        # Where and on what the worker trains (its trainer, device, checkpoint volume) is the worker's own.
        training = settings.training.model_dump(
            exclude={"launcher", "axolotl_bin", "device", "checkpoint_url", "work_dir", "job_variables"}
        )
        return FinetuneParams(profile=self.profile, home=self.home, scenario=self.scenario, training=training)


class ReleaseParams(TrainParams):
    """What to run the release pipeline with."""

    dataset_digest: str | None = Field(
        default=None,
        description="Set by data-change events: the data fingerprint that triggered this run (kept in the summary).",
    )
    decision_mode: DecisionMode | None = Field(
        default=None,
        description="Override gates.decision_mode: 'auto' promotes on pass, 'manual' waits for your approval "
        "in this UI, 'dry_run' decides and reports but moves nothing.",
    )

    def overrides(self) -> dict[str, Any]:
        out = super().overrides()
        if self.decision_mode is not None:
            out["gates"] = {"decision_mode": self.decision_mode}
        return out


class PromptReleaseParams(StageParams):
    """What to run a prompt-only release with: which prompt, and (from a prompt-change event) which version."""

    prompt: str | None = Field(
        default=None, description="Prompt name (a file under prompts.dir); default: the profile's prompts.name."
    )
    prompt_digest: str | None = Field(
        default=None,
        description="Set by prompt-change events: the version digest to release (the file must still have it).",
    )
    decision_mode: DecisionMode | None = Field(
        default=None, description="Override gates.decision_mode ('auto', 'manual' approval here, 'dry_run')."
    )

    def overrides(self) -> dict[str, Any]:
        out = super().overrides()
        if self.decision_mode is not None:
            out["gates"] = {"decision_mode": self.decision_mode}
        return out


class PromptMatrixParams(StageParams):
    """Which prompt versions and model variants the evaluation matrix crosses."""

    prompt: str | None = Field(default=None, description="Prompt name; default: the profile's prompts.name.")
    prompts: list[str] = Field(
        default=["production", "file"],
        min_length=1,
        max_length=8,
        description="Prompt versions: aliases (production, canary, candidate), name@hex, or 'file' (the file now). "
        "The first is the reference every cell is compared with.",
    )
    models: list[str] = Field(
        default=["production", "candidate"],
        min_length=1,
        max_length=4,
        description="Model registry aliases (production, canary, candidate); the first is the reference.",
    )


class PromptReleaseSummary(BaseModel):
    """What a prompt-only release did."""

    passed: bool
    action: str = Field(description="promoted, canary, kept (rejected or already production) or dry_run.")
    reasons: list[str]
    prompt: str = Field(description="The prompt's name.")
    candidate: str = Field(description="The candidate prompt version.")
    production: str | None = Field(description="The production prompt version after this run.")
    model: str = Field(description="Digest of the production model both prompts were evaluated with.")
    metrics: dict[str, float] = {}
    baseline: dict[str, float] = {}
    paired: dict[str, str] = {}
    checks: list[str] = []
    decision: str = ""
    policy: str = ""
    traffic: dict[str, float] = Field(default={}, description="The registry's traffic field (canary share).")
    trigger: str | None = None
    eval_rows: str = ""


class ReleaseSummary(BaseModel):
    """What a release run did, for people and for callers."""

    passed: bool
    unchanged: bool = Field(
        default=False, description="Not passed, not rejected: the candidate answers every question as production."
    )
    action: PromotionAction
    reasons: list[str]
    production: str | None
    candidate: str | None
    dataset: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    paired: dict[str, str] = Field(default={}, description="Paired gain with its interval, per gated metric.")
    decision: str = Field(default="", description="Digest of the gate decision.")
    policy: str = Field(default="", description="Digest of the gate policy.")
    checks: list[str] = Field(default=[], description="Every check of the decision, one line each.")
    trigger: str | None = Field(default=None, description="The data fingerprint of the event that started the run.")
    timings_s: dict[str, float]
    cached: list[str] = Field(default=[], description="Stages served from Prefect's cache.")
    outputs: dict[str, str]


class TrainSummary(BaseModel):
    """What a fine-tune on its own (``lockgate finetune``) trained, for people and for callers."""

    adapter: AdapterArtifact
    dataset: str = Field(description="Digest of the data snapshot it trained on.")
    timings_s: dict[str, float]
    cached: list[str] = Field(default=[], description="Stages served from Prefect's cache.")
    outputs: dict[str, str]


def timings_and_outputs(timings_s: dict[str, float], cached: list[str], outputs: dict[str, str]) -> list[str]:
    """The closing sections every run summary shares: stage timings (cached stages marked) and outputs."""
    lines = ["", "## Stage timings", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f}{' (cached)' if k in cached else ''} |" for k, v in timings_s.items()]
    return lines + ["", "## Outputs", ""] + [f"- {k}: `{v}`" for k, v in outputs.items() if v]
