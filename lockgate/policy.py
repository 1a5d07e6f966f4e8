"""The gate policy: a YAML file, validated as a whole, that says what a challenger must show.

A policy is data, not code: it lives in ``policies/*.yaml``, is checked against this schema
(finite numbers only, every problem reported at once with its field), is explained in words
by ``lockgate gate explain``, and its digest is recorded in every decision made with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lockgate._io import load_yaml
from lockgate.digest import digest_json, short
from lockgate.errors import ConfigError
from lockgate.metrics import ANSWER_METRICS, JUDGED_METRICS

# What a policy may decide on or put a floor under: answer metrics, and LLM-judged ones (scored only with
# a judge configured; without one, or where its calls failed, they are missing and the gate rejects).
GATED_METRICS = ANSWER_METRICS + JUDGED_METRICS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SlicePolicy(_Strict):
    """Per-slice vetoes: no group of questions may get significantly worse."""

    field: str = Field(
        default="question_type",
        description="Eval-row field that names each question's slice ('question_type', 'source_doc', a tag).",
        min_length=1,
    )
    min_size: int = Field(default=10, ge=2, description="Slices with fewer questions are reported, never vetoed.")
    confidence: float = Field(
        default=0.8,
        gt=0.5,
        lt=1.0,
        description="Two-sided confidence of each slice's interval; a veto needs its upper end below -max_regression.",
    )
    max_regression: float = Field(
        default=0.0, ge=0.0, le=1.0, description="How much worse a slice may be before it vetoes (score units)."
    )


# Permissive licenses: they allow commercial use, modification and redistribution of weights and
# derivatives, asking only for attribution (and, for Apache-2.0, notice of changes). Licenses with
# use restrictions (llama3, gemma, openrail, cc-by-nc-*) or copyleft terms are left to a person to
# add to a profile's policy file, knowingly.
PERMISSIVE_LICENSES = ("apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "isc", "cc0-1.0", "cc-by-4.0")

# Hugging Face's placeholders: 'other' is a custom license that has to be read, 'unknown' is none at all.
NOT_A_LICENSE = ("other", "unknown")

LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


class LicensePolicy(_Strict):
    """Which base-model licenses a release may build on."""

    allowed: tuple[str, ...] = Field(
        default=PERMISSIVE_LICENSES,
        description="License ids (SPDX-style, as on the Hugging Face Hub: 'apache-2.0', 'mit'), compared "
        "case-insensitively. A base model whose license is not listed, or unknown, is rejected.",
    )

    @field_validator("allowed", mode="before")
    @classmethod
    def _a_list(cls, value: object) -> object:
        if isinstance(value, str):  # a bare string would validate as a tuple of its letters
            raise ValueError("must be a list of license ids, e.g. [apache-2.0, mit]")
        return value

    @field_validator("allowed")
    @classmethod
    def _license_ids(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        if not ids:
            raise ValueError(
                "lists no license, so every release would be rejected: list at least one, or set licenses: null"
            )
        lowered = tuple(i.strip().lower() for i in ids)
        malformed = [i for i, low in zip(ids, lowered, strict=True) if not LICENSE_ID.match(low)]
        if malformed:
            raise ValueError(f"not license ids: {malformed} (want e.g. apache-2.0, mit)")
        placeholders = sorted(set(lowered) & set(NOT_A_LICENSE))
        if placeholders:
            raise ValueError(f"{placeholders} name no license: list the license itself, e.g. apache-2.0")
        duplicated = sorted({i for i in lowered if lowered.count(i) > 1})
        if duplicated:
            raise ValueError(f"listed twice: {duplicated}")
        return lowered

    def allows(self, license_id: str | None) -> bool:
        """Whether a base model under ``license_id`` may be released; an unknown license never may."""
        return license_id is not None and license_id.strip().lower() in self.allowed


class GatePolicy(_Strict):
    """What a challenger must show before it may replace the champion."""

    mode: Literal["superiority", "non_inferiority"] = Field(
        default="superiority",
        description="'superiority': the interval of the paired gain must clear min_improvement. "
        "'non_inferiority': it must stay above -max_regression (a re-release, a quantized twin).",
    )
    primary_metric: str = Field(default="rouge_l", description="Metric the decision is made on.")
    min_improvement: float = Field(
        default=0.0, ge=0.0, le=1.0, description="superiority: required lower end of the paired gain's interval."
    )
    max_regression: float = Field(
        default=0.02, ge=0.0, le=1.0, description="non_inferiority: the lower end may not fall below minus this."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Two-sided confidence of the interval.")
    bootstrap_samples: int = Field(default=2000, ge=200, le=100_000, description="Bootstrap resamples.")
    seed: int = Field(default=7, description="Seed of the bootstrap: the same reports give the same decision.")
    min_questions: int = Field(default=30, ge=1, description="Fewer paired questions than this is a rejection.")
    min_scores: dict[str, float] = Field(
        default={}, description="Absolute floors on the challenger's mean, per metric."
    )
    slices: SlicePolicy | None = Field(default=SlicePolicy(), description="Slice vetoes; null switches them off.")
    require_quant_check: bool = Field(default=True, description="Reject if the quantization check failed.")
    block_on_drift: bool = Field(default=True, description="Reject while drift is detected.")
    licenses: LicensePolicy | None = Field(
        default=LicensePolicy(),
        description="Base-model licenses a release may build on (default: the common permissive ones); "
        "null switches the check off.",
    )

    @field_validator("licenses", mode="before")
    @classmethod
    def _licenses_mapping(cls, value: object) -> object:
        if isinstance(value, str | list | tuple):
            raise ValueError("must be a mapping, e.g. licenses: {allowed: [apache-2.0, mit]}")
        return value

    @field_validator("primary_metric")
    @classmethod
    def _known_metric(cls, name: str) -> str:
        if name not in GATED_METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {list(GATED_METRICS)}")
        return name

    @field_validator("min_scores")
    @classmethod
    def _known_floors(cls, floors: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(floors) - set(GATED_METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {list(GATED_METRICS)}")
        bad = {m: v for m, v in floors.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"floors must lie in [0, 1], got {bad}")
        return floors

    @property
    def digest(self) -> str:
        """Identity of the policy: two files with the same rules have the same digest."""
        return digest_json(self.model_dump(mode="json"))


def load_policy(path: Path) -> GatePolicy:
    """Read and validate a policy file.

    Raises:
        ConfigError: the file is missing, not YAML, or breaks the schema (every problem listed).
    """
    if not path.is_file():
        raise ConfigError(f"gates.policy: policy file {path} not found")
    try:
        values = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a policy must be a mapping, got {type(values).__name__}")
    try:
        return GatePolicy.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid gate policy, {exc.error_count()} problem(s): {problems}") from None


def prompt_policy(policy: GatePolicy, mode: Literal["superiority", "non_inferiority"]) -> GatePolicy:
    """The release policy for a prompt-only release: the prompt's gate mode, every other rule as written,
    except the quantization and drift checks: the model is production's, checked when it was released,
    and a prompt changes neither (the decision records this policy's own digest)."""
    return policy.model_copy(update={"mode": mode, "require_quant_check": False, "block_on_drift": False})


def explain(policy: GatePolicy) -> str:
    """The policy in words, one rule a line, as ``lockgate gate explain`` prints it."""
    pct = f"{policy.confidence:.0%}"
    metric = policy.primary_metric
    if policy.mode == "superiority":
        rule = (
            f"The challenger must be better than the champion on {metric}: the {pct} paired-bootstrap interval "
            f"of the per-question gain (challenger minus champion, on the same questions) must have its lower "
            f"end at or above {policy.min_improvement:+.3f}, and the mean gain must be positive."
        )
    else:
        rule = (
            f"The challenger must not be worse than the champion on {metric} by more than "
            f"{policy.max_regression:.3f}: the lower end of the {pct} paired-bootstrap interval of the "
            f"per-question difference must be at or above {0.0 - policy.max_regression:+.3f}."
        )
    lines = [
        f"Gate policy ({policy.mode}, digest {short(policy.digest)}):",
        f"- {rule}",
        f"- At least {policy.min_questions} questions answered by both models; fewer is a rejection.",
    ]
    if policy.slices is not None:
        s = policy.slices
        lines.append(
            f"- Slices by '{s.field}': any slice of at least {s.min_size} questions whose {s.confidence:.0%} "
            f"interval of the paired difference lies entirely below {0.0 - s.max_regression:+.3f} vetoes the release, "
            "however good the overall mean."
        )
    else:
        lines.append("- No slice vetoes.")
    for m, floor in sorted(policy.min_scores.items()):
        lines.append(f"- The challenger's mean {m} must be at least {floor}.")
    judged = sorted({metric, *policy.min_scores} & set(JUDGED_METRICS))
    if judged:
        lines.append(
            f"- {', '.join(judged)} {'is' if len(judged) == 1 else 'are'} judged by an LLM: without a judge "
            "(evaluation.judge_base_url), or where a judge call failed, the score is missing: a rejection."
        )
    if policy.require_quant_check:
        lines.append("- The quantized model must have passed its own check (smaller, not much worse).")
    if policy.block_on_drift:
        lines.append("- No embedding drift may be detected in the current data.")
    if policy.licenses is not None:
        lines.append(
            "- A fine-tune is used under its base model's license, so the base model must be licensed under "
            f"one of: {', '.join(policy.licenses.allowed)} "
            "(ids compared case-insensitively); a base model whose license is not listed or not known "
            "is rejected by the 'license' check. A prompt-only release keeps production's model, "
            "checked when it was released."
        )
    else:
        lines.append(
            "- No license check (licenses: null): a base model under any license, or none known, may be released."
        )
    lines += [
        "- Every report must be about this candidate, this champion, this dataset snapshot, this index build "
        "and this prompt version; a missing, mismatched or NaN input rejects (the gate fails closed).",
        f"- {policy.bootstrap_samples} bootstrap resamples, seed {policy.seed}: "
        "the same reports give the same verdict.",
    ]
    return "\n".join(lines)
