"""Challenger-vs-champion evaluation task."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from lockgate.evaluate import ModelUnderTest, evaluate_models
from lockgate.metrics import ANSWER_METRICS
from lockgate.prep import load_jsonl
from lockgate.records import BaseModelArtifact, DatasetSnapshot, EvalReport, IndexBuild, QuantizedModel
from lockgate.registry import LocalRegistry
from lockgate.settings import EmbeddingSettings, EvaluationSettings, VectorStoreSettings
from lockgate.store import LocalArtifactStore
from lockgate.vectorstore import open_store
from tasks.common import embedder_for


@task(name="find-champion")
def find_champion(registry_root: str, base: BaseModelArtifact, candidate_digest: str) -> ModelUnderTest:
    """The model to beat: production (or what it replaced, if the candidate is production), else the base."""
    champion = LocalRegistry(Path(registry_root)).champion_for(candidate_digest)
    if champion is not None:
        return ModelUnderTest(
            label="champion (production)", digest=champion.digest, path=champion.path, registered=True
        )
    return ModelUnderTest(label="champion (base model)", digest=base.digest, path=base.path)


# The index enters the cache key by its content digest only: the counts of the refresh that
# produced it (added/unchanged...) differ between a first build and a no-op re-run.
@task(name="evaluate", cache_policy=(INPUTS - "index") + TASK_SOURCE, persist_result=True)
def evaluate_candidate(
    candidate: QuantizedModel,
    champion: ModelUnderTest,
    snapshot: DatasetSnapshot,
    index: IndexBuild,
    index_digest: str,
    evaluation: EvaluationSettings,
    embeddings: EmbeddingSettings,
    vector_store: VectorStoreSettings,
    artifacts_root: str,
) -> EvalReport:
    """Answer the eval questions with retrieval and both models; score with Ragas (no LLM judge)."""
    logger = get_run_logger()
    challenger = ModelUnderTest(label="challenger", digest=candidate.digest, path=candidate.path)

    def progress(label: str, done: int, total: int) -> None:
        if done == total or done % 20 == 0:
            logger.info("%s: answered %d/%d", label, done, total)

    report = evaluate_models(
        challenger,
        champion,
        load_jsonl(Path(snapshot.eval_path)),
        open_store(vector_store.backend, index.uri, index.collection),
        embedder_for(embeddings.model, embeddings.batch_size),
        embeddings.model,
        index_digest,
        snapshot.digest,
        evaluation,
        LocalArtifactStore(Path(artifacts_root)),
        progress=progress,
    )
    rows = []
    for metric in ANSWER_METRICS:
        c, b = report.challenger.metrics[metric], report.champion.metrics[metric]
        rows.append(
            {
                "metric": metric,
                "challenger": round(c.mean, 4),
                "challenger 95% CI": f"[{c.ci_low:.3f}, {c.ci_high:.3f}]",
                "champion": round(b.mean, 4),
                "champion 95% CI": f"[{b.ci_low:.3f}, {b.ci_high:.3f}]",
                "delta": round(c.mean - b.mean, 4),
            }
        )
    for metric, s in report.retrieval.items():
        rows.append(
            {
                "metric": f"retrieval: {metric}",
                "challenger": round(s.mean, 4),
                "challenger 95% CI": f"[{s.ci_low:.3f}, {s.ci_high:.3f}]",
                "champion": "same retriever",
                "champion 95% CI": "",
                "delta": "",
            }
        )
    create_table_artifact(
        key="eval-report",
        table=rows,
        description=f"Ragas: challenger vs {champion.label}, {report.n_questions} questions, "
        f"prompt {report.prompt_version}",
    )
    examples = load_jsonl(Path(report.rows_path))[:8]
    create_markdown_artifact(
        key="eval-examples",
        markdown="# Example answers\n\n| question | reference | challenger | champion |\n|---|---|---|---|\n"
        + "\n".join(
            f"| {_cell(r['question'])} | {_cell(r['reference'])} | {_cell(r['challenger'])} | {_cell(r['champion'])} |"
            for r in examples
        ),
        description="The first eval questions with both models' answers",
    )
    logger.info(
        "rouge_l: challenger %.3f vs champion %.3f",
        report.challenger.metrics["rouge_l"].mean,
        report.champion.metrics["rouge_l"].mean,
    )
    return report


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:160]
