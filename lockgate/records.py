"""Typed, content-addressed records that flow between stages.

Every record carries its own ``digest`` and the ``parents`` it was made from, so lineage
is a query over records rather than a convention in file names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lockgate.stats import PairedDifference, bootstrap_mean


class Record(BaseModel):
    """Base of every stage output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: str = Field(description="Content digest of what this record describes.")
    parents: tuple[str, ...] = Field(default=(), description="Digests this was made from.")


class QuarantinedRow(BaseModel):
    """A row that was set aside, with where it came from and why."""

    model_config = ConfigDict(frozen=True)

    source: str
    line: int
    field: str | None
    reason: str
    raw: str
    outcome: str = "quarantined"  # or filtered, duplicate, near_duplicate, leaked


class DatasetSnapshot(Record):
    """A validated, cleaned, deduplicated, split and versioned data set."""

    name: str
    path: str
    train_path: str
    eval_path: str
    quarantine_path: str
    card_path: str
    n_train: int
    n_eval: int
    n_quarantined: int
    n_duplicates: int
    n_redacted: int
    source_digests: dict[str, str]
    shape: str = "qa"
    n_input: int = 0
    counts: dict[str, int] = {}  # outcome -> rows; they add up to n_input
    pii_found: dict[str, int] = {}  # kind -> matches redacted or dropped


class BaseModelArtifact(Record):
    """A base causal LM ready for fine-tuning: a local folder or a hub id with revision."""

    name: str
    path: str
    revision: str | None = None
    hidden_size: int
    parameters: int
    source: str | None = Field(
        default=None, description="Where the weights came from when converted (a GGUF file or package resource)."
    )
    source_digest: str | None = Field(default=None, description="SHA-256 of the source file the folder was made from.")
    architecture: str | None = Field(default=None, description="The transformers architecture, e.g. LlamaForCausalLM.")
    chat_template_digest: str | None = Field(
        default=None, description="Digest of the model's own chat template; None: a plain-text (completion) model."
    )
    license: str | None = Field(
        default=None, description="SPDX-style license id (package metadata, model card or setting); None: unknown."
    )


class AdapterArtifact(Record):
    """A trained LoRA adapter and how it was made."""

    path: str
    base_model: str
    base_digest: str
    dataset_digest: str
    config_digest: str
    steps: int
    train_loss: float | None
    eval_loss: float | None
    resumed_from: str | None = None
    preemptions: int = Field(default=0, description="Times training was killed or stopped and resumed.")
    steps_redone: int = Field(default=0, description="Optimizer steps trained again after resuming.")
    checkpoints: str | None = Field(default=None, description="Remote checkpoint store, when not the local one.")
    wandb_run: str | None = Field(default=None, description="The W&B run id of the training.")
    wandb_dir: str | None = Field(default=None, description="Where the W&B run files are (offline: sync them later).")
    rows_trained: int | None = Field(default=None, description="Training rows that fit training.sequence_len.")
    rows_too_long: int = Field(default=0, description="Training rows left out as longer than training.sequence_len.")


class QuantizedModel(Record):
    """A merged and quantized checkpoint, loadable by transformers and vLLM."""

    path: str
    merged_path: str
    method: str
    scheme: str
    adapter_digest: str
    size_bytes: int
    merged_size_bytes: int


class QuantCheck(Record):
    """Is the quantized model really smaller and not much worse than the merged one?"""

    passed: bool
    reasons: tuple[str, ...]
    size_ratio: float
    merged_eval_loss: float
    quantized_eval_loss: float
    loss_increase: float
    merged_latency_ms: float
    quantized_latency_ms: float
    reloaded: bool
    # Speed where the model is served (vLLM), when measured; older records have none of it.
    serving: str = "not measured"  # "vllm", or "not measured: <why>"
    merged_tokens_per_s: float | None = None
    quantized_tokens_per_s: float | None = None
    merged_p50_ms: float | None = None
    quantized_p50_ms: float | None = None
    merged_p95_ms: float | None = None
    quantized_p95_ms: float | None = None
    served_sample: str = ""  # the quantized model's first served completion


class IndexBuild(Record):
    """The outcome of one embedding refresh."""

    uri: str
    collection: str
    embedder: str
    manifest_path: str
    added: int
    updated: int
    deleted: int
    unchanged: int
    total: int


class MetricSummary(BaseModel):
    """Mean of a per-row metric with a bootstrap confidence interval."""

    model_config = ConfigDict(frozen=True)

    mean: float
    ci_low: float
    ci_high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float], confidence: float, samples: int, seed: int) -> MetricSummary:
        """The mean of ``values`` and its bootstrap interval (all NaN if any value is, or none is given)."""
        mean, low, high = bootstrap_mean(values, confidence, samples, seed)
        return cls(mean=mean, ci_low=low, ci_high=high, n=len(values))

    @property
    def is_valid(self) -> bool:
        return self.n > 0 and all(math.isfinite(v) for v in (self.mean, self.ci_low, self.ci_high))


class ModelScores(BaseModel):
    """Scores of one model variant on the eval set."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    label: str
    metrics: dict[str, MetricSummary]
    slices: dict[str, dict[str, MetricSummary]] = {}


class PairedScores(BaseModel):
    """One metric's per-question scores of both models, in the same question order."""

    model_config = ConfigDict(frozen=True)

    challenger: tuple[float, ...]
    champion: tuple[float, ...]


class EvalReport(Record):
    """Challenger against champion on the same questions, retriever and prompt.

    ``per_question`` keeps every paired score, so the gate computes its own statistics
    with its own policy; ``slice_labels`` names each question's slice per field.
    """

    prompt_version: str
    dataset_digest: str
    index_digest: str
    challenger: ModelScores
    champion: ModelScores
    retrieval: dict[str, MetricSummary]
    per_question: dict[str, PairedScores]
    slice_labels: dict[str, tuple[str, ...]]
    rows_path: str
    n_questions: int
    judge_failures: dict[str, int] = Field(
        default={}, description="Why LLM-judged scores are missing: timeout / error / unparseable -> calls, both sides."
    )
    engine: str = Field(default="transformers", description="What answered the questions: vllm or transformers.")
    same_answers: int = Field(
        default=0, description="Questions the challenger answered exactly as the champion did (whitespace aside)."
    )


class DriftReport(Record):
    """Embedding drift of current against reference.

    ``dataset_digest`` is the snapshot whose questions were the current side; ``parents``
    hold the digests of the reference and current texts.
    """

    dataset_digest: str | None = None
    method: str
    score: float
    threshold: float
    drifted: bool
    n_reference: int
    n_current: int
    html_path: str | None
    p_value: float | None = Field(
        default=None, description="Share of same-distribution resamples scoring at least this high (calibrated only)."
    )
    calibration: str | None = Field(default=None, description="Digest of the DriftCalibration that set the threshold.")


class QueryDrift(BaseModel):
    """Query drift of one variant's window of served questions against production's training questions."""

    model_config = ConfigDict(frozen=True)

    variant: str
    questions: int = Field(description="Questions in the window.")
    models: tuple[str, ...] = Field(default=(), description="Model digests that answered them.")
    report: DriftReport | None = Field(default=None, description="The verdict; None when the window was not judged.")
    not_judged: str | None = Field(default=None, description="Why no verdict: too few questions, with the counts.")
    alarm: Literal["sent", "cooldown", "none"] = Field(
        default="none", description="lockgate.drift.detected sent, held back by the cooldown, or no drift."
    )


class CorpusDrift(BaseModel):
    """Corpus drift: a sample of the corpus about to be indexed against the serving collection's corpus reference."""

    model_config = ConfigDict(frozen=True)

    collection: str = Field(description="The physical collection that serves (whose reference was compared).")
    chunks: int = Field(description="Chunks of the current corpus compared.")
    reference_chunks: int = Field(description="Chunks in the serving collection's corpus reference.")
    report: DriftReport | None = Field(default=None, description="The verdict; None when it was not judged.")
    not_judged: str | None = Field(default=None, description="Why no verdict: too few chunks, with the counts.")
    alarm: Literal["sent", "cooldown", "none"] = Field(
        default="none", description="lockgate.drift.detected sent, held back by the cooldown, or no drift."
    )


class OnlineQuality(BaseModel):
    """One variant's served questions measured without labels (``lockgate.online``)."""

    model_config = ConfigDict(frozen=True)

    variant: str
    questions: int
    models: tuple[str, ...] = ()
    top_similarity: MetricSummary = Field(description="Similarity of each question's best retrieved chunk.")
    no_context_share: float = Field(description="Share of questions whose best chunk is below context_floor.")
    context_floor: float
    rated: int = Field(description="Answers of the window with a rating.")
    thumbs_up: int
    thumbs_down: int
    negative_share: float | None = Field(description="thumbs_down / rated; None without ratings.")
    worse_than_production: str | None = Field(
        default=None, description="Why this variant is rated significantly worse than production, if it is."
    )
    faithfulness: MetricSummary | None = Field(
        default=None,
        description="Judged faithfulness of a sample of its answers to their retrieved context (judged ones "
        "only); None without a judge or an answer to judge.",
    )
    judge_missing: int = Field(default=0, description="Sampled answers the judge left without a score.")


class DriftCalibration(Record):
    """What a drift method scores on windows drawn from the reference itself, and the threshold that sets.

    ``null_scores`` are the method's scores of ``resamples`` permutations of the reference (a window
    of ``window`` rows against the other ``n_reference - window``); ``threshold`` is the score above
    which at most ``false_alarm_rate`` of them lie. ``parents`` holds the reference's digest.
    """

    method: str
    window: int
    n_reference: int
    false_alarm_rate: float
    threshold: float
    gamma: float | None = Field(description="mmd: the RBF kernel's 1/sigma^2, fixed by the reference (median rule).")
    null_scores: tuple[float, ...]
    seed: int


class GateCheck(BaseModel):
    """One rule of the policy and how it came out."""

    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    detail: str


class ReleaseLineage(BaseModel):
    """What a decision must be about: the gate checks every report against these digests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    candidate: str | None
    champion: str | None
    dataset: str | None
    index: str | None
    prompt_version: str | None


class GateDecision(Record):
    """The verdict on a challenger. ``passed`` is False unless every check passed."""

    passed: bool
    reasons: tuple[str, ...]
    checks: tuple[GateCheck, ...]
    metrics: dict[str, float]
    baseline: dict[str, float]
    candidate_digest: str | None
    policy_digest: str
    lineage: ReleaseLineage
    paired: dict[str, PairedDifference] = {}
    unchanged: bool = Field(
        default=False,
        description="The candidate answers every eval question exactly as production does: nothing to promote, "
        "nothing wrong (not passed, not a rejection).",
    )


# What a promotion did with the candidate.
PromotionAction = Literal["promoted", "kept", "rolled_back", "dry_run"]


class Promotion(BaseModel):
    """What the registry did with a decision."""

    model_config = ConfigDict(frozen=True)

    action: PromotionAction
    alias: str
    model_digest: str | None
    previous_digest: str | None
    reasons: tuple[str, ...] = ()
