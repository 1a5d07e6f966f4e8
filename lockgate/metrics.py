"""Names of the metrics Lockgate reports, shared by evaluation, gates and settings."""

from __future__ import annotations

# Answer quality against the reference answer, each in [0, 1], higher is better.
ANSWER_METRICS = ("rouge_l", "string_similarity", "bleu", "chrf", "semantic_similarity")
# Retrieval quality against the reference context, in [0, 1].
RETRIEVAL_METRICS = ("context_recall", "context_precision")
# Judged by an LLM (only with evaluation.judge_base_url set), in [0, 1]; a failed judge call is NaN.
JUDGED_METRICS = ("faithfulness", "answer_relevancy", "llm_context_precision")
