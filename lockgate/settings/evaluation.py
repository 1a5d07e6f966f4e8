"""How a release is judged: the ``evaluation``, ``drift``, ``gates`` and ``prompts`` areas."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from lockgate.settings.base import Area


class EvaluationSettings(Area):
    """How challenger and champion are answered and scored."""

    top_k: int = Field(default=1, ge=1, le=20, description="Chunks retrieved per question.")
    max_new_tokens: int = Field(default=40, ge=1, le=512, description="Longest generated answer.")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        default="auto",
        description="What answers the eval questions: 'vllm' (the serving engine, every question batched, a "
        "quantized model on its own kernels; an engine start per model, about 30 s on CPU), 'transformers' "
        "(batched, in this process), 'auto' (vLLM where evaluation.vllm_python exists). Answers of two engines "
        "are never mixed: the engine is part of their cache key and named in the report.",
    )
    vllm_python: str = Field(
        default=".venv-serving/bin/python", description="The serving environment's python, for engine vllm/auto."
    )
    batch_size: int = Field(default=8, ge=1, le=256, description="transformers: questions generated at once.")
    bootstrap_samples: int = Field(default=1000, ge=100, description="Resamples for confidence intervals.")
    seed: int = Field(default=7, description="Seed for bootstrap and generation.")
    slice_fields: list[str] = Field(
        default=["question_type", "source_doc"],
        description="Eval-row fields recorded per question for slice vetoes ('question_type' is derived from the "
        "question's first word; any other name is a field of the eval rows).",
    )
    judge_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OpenAI-compatible base URL of an LLM judge (e.g. http://vllm:8000/v1): adds the LLM-judged "
        "Ragas metrics (faithfulness, answer relevancy, context precision). Unset: only metrics that need no LLM.",
    )
    judge_model: str = Field(default="judge", min_length=1, description="Model name the judge endpoint serves.")
    judge_api_key_env: str = Field(
        default="LOCKGATE_JUDGE_API_KEY",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable that holds the judge's API key (the key is never a setting nor logged).",
    )
    judge_timeout_s: float = Field(default=60.0, gt=0.0, le=600.0, description="Per judge call; a timeout scores NaN.")
    judge_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Judged scores asked for at once (a judge endpoint batches concurrent requests; one at a time "
        "leaves it idle between calls). How it runs, not what it scores: not part of the cache key.",
    )

    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset({"judge_concurrency", "vllm_python", "batch_size"})


class DriftSettings(Area):
    """Evidently embedding drift of current questions against the reference, with a calibrated threshold."""

    method: Literal["mmd", "distance", "ratio", "model"] = Field(default="mmd", description="Evidently drift method.")
    calibrate: bool = Field(
        default=True,
        description="Set the threshold from same-distribution resamples of the reference (permutations: a window "
        "of the current side's size against the rest) at false_alarm_rate, and report a p-value with every "
        "verdict. Off: the fixed threshold below decides, without a p-value.",
    )
    false_alarm_rate: float = Field(
        default=0.01, gt=0.0, lt=0.5, description="Calibrated: share of same-distribution windows that may alarm."
    )
    resamples: int = Field(
        default=200, ge=20, le=10_000, description="Calibrated: permutations drawn (mmd: all at once, under a second)."
    )
    threshold: float = Field(
        default=0.01, gt=0.0, description="Uncalibrated (calibrate off): score above which drift is declared."
    )
    min_rows: int = Field(
        default=10,
        ge=2,
        description="Fewest rows the current side may have, and the reference beyond it; fewer is refused with the "
        "counts, never judged.",
    )
    max_rows: int = Field(
        default=10_000,
        ge=10,
        description="Sample cap per side for the verdict (calibration and the HTML report "
        "use at most 2,000 reference rows).",
    )
    html_report: bool = Field(default=True, description="Write Evidently's HTML report (adds a few seconds).")
    report_every_s: float = Field(
        default=0.0,
        ge=0.0,
        le=30 * 86400,
        description="Scheduled query and corpus drift checks also write Evidently's HTML report without a drift "
        "when a resource's last one is older than this (86400: daily); 0: only on a drift alarm.",
    )
    query_window: int = Field(
        default=200, ge=2, le=100_000, description="Query drift: the last this many questions of each variant."
    )
    query_hours: float = Field(
        default=0.0,
        ge=0.0,
        le=24 * 365,
        description="Query drift: only questions of the last this many hours (0: any).",
    )
    cooldown_s: float = Field(
        default=3600.0,
        ge=0.0,
        le=30 * 86400,
        description="After a drift alarm, the same resource (a deployment's queries, a dataset) sends no other "
        "lockgate.drift.detected for this long: a drift that persists starts one run, not one per check.",
    )

    release_on_query_drift: bool = Field(
        default=False,
        description="Policy: production's served questions drifting from its training questions also start a "
        "release (on the data as it is then; unchanged data ends as 'no change'), beside the online evaluation. "
        "Applied to the server by deployments/apply.sh.",
    )

    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset(
        {"html_report", "report_every_s", "query_window", "query_hours", "cooldown_s", "release_on_query_drift"}
    )


class GateSettings(Area):
    """How the gate is run: which policy file, and who has the last word."""

    policy: str = Field(
        default="policies/release.yaml",
        description="The gate policy (YAML, see lockgate/policy.py); relative to the project root.",
    )
    decision_mode: Literal["auto", "manual", "dry_run"] = Field(
        default="auto",
        description="'auto' promotes on pass; 'manual' pauses the run for an approval from the Prefect UI; "
        "'dry_run' decides and reports but moves no alias.",
    )
    approval_timeout_s: int = Field(
        default=3600, ge=10, le=7 * 24 * 3600, description="manual: no answer within this many seconds rejects."
    )


class PromptSettings(Area):
    """Which prompt the pipeline serves and how a new prompt version is released."""

    dir: str = Field(default="prompts", description="Folder of prompt files, relative to the project root.")
    name: str = Field(
        default="grounded-qa", pattern=r"^[a-z0-9][a-z0-9._-]*$", description="The prompt evaluated and served."
    )
    release_mode: Literal["superiority", "non_inferiority"] = Field(
        default="non_inferiority",
        description="Gate mode of a prompt-only release (the policy file's other rules apply as written): "
        "'non_inferiority' lets a rewording through unless it is worse by more than the policy's max_regression.",
    )
    promote_to: Literal["production", "canary"] = Field(
        default="production",
        description="Where a prompt that passes the gate goes: 'canary' serves it to canary_weight of requests first.",
    )
    canary_weight: float = Field(
        default=0.1, gt=0.0, lt=1.0, description="Share of requests a canary prompt gets (recorded in the registry)."
    )

    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset({"dir"})


class MonitoringSettings(Area):
    """Quality of served traffic without labels (the online-eval flow over the query log)."""

    context_floor: float = Field(
        default=0.3,
        ge=-1.0,
        le=1.0,
        description="A question whose best retrieved chunk is less similar than this (cosine) had no context.",
    )
    min_rated: int = Field(
        default=20, ge=1, description="Fewest rated answers per variant before its feedback is compared with another's."
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1.0, description="Confidence of the intervals and of 'significantly worse'."
    )
    rollback_on_quality: bool = Field(
        default=True,
        description="The online evaluation rolls back a canary whose answers are rated significantly worse than "
        "production's (as the gateway does on its errors and latency).",
    )
    judge_sample: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="Served answers per variant whose faithfulness to the context retrieved for them the online "
        "evaluation has judged, where a judge is configured (evaluation.judge_base_url); 0: none.",
    )
    dashboard: Literal["evidently", "off"] = Field(
        default="evidently",
        description="Where watch checks record what they measured: 'evidently' (a project per deployment in the "
        "Evidently UI's workspace under <home>/monitoring/evidently, served by `lockgate monitor`) or 'off'.",
    )
    prometheus_url: str = Field(
        default="http://127.0.0.1:9090",
        description="Prometheus' HTTP API, read by the online evaluation for the dashboard's serving panels "
        "(p95 latency, tokens/s, error ratio, queue depth); not answering is a warning, not a failure.",
    )
