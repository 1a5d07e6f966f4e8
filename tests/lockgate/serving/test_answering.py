"""The eval questions answered by transformers in batches, and by a vLLM engine as served.

Batched generation (left padding) gives the same greedy answers as one question at a time; vLLM
answers every question, in order, and its engine is gone afterwards; ``evaluation.engine`` picks
the answerer and refuses a vLLM that is not installed with one line naming the setting.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lockgate.answering import TransformersAnswerer, VllmAnswerer, open_answerer
from lockgate.chat import PLAIN_TEXT
from lockgate.errors import ConfigError
from lockgate.prompts import GROUNDED_QA
from lockgate.settings import EvaluationSettings
from tests.lockgate.serving.conftest import VLLM_PYTHON, needs_vllm

QUESTIONS = [
    ("What does the Relay do?", "The Quillstone Relay forwards pick orders to the floor robots."),
    ("Which port?", "The Relay listens on port 7095."),
    ("Who maintains the Beacon service and how often is it released to production?", ""),
    ("Why?", "Because the planner batches orders every minute, and a late batch waits for the next."),
    ("What is the Forge?", "The Forge builds the images."),
]
TEXTS = [PLAIN_TEXT.wrap(GROUNDED_QA.render(q, c)) for q, c in QUESTIONS]


def test_batched_answers_are_the_answers_of_one_question_at_a_time(tiny_model: Path) -> None:
    seen: list[tuple[int, int]] = []
    one_by_one = TransformersAnswerer(batch_size=1).answer(str(tiny_model), TEXTS, 12, None)
    batched = TransformersAnswerer(batch_size=4).answer(
        str(tiny_model), TEXTS, 12, lambda done, total: seen.append((done, total))
    )
    assert batched == one_by_one
    assert len(set(batched)) > 1  # different prompts, different answers: the padding did not leak in
    assert seen == [(4, 5), (5, 5)]


@needs_vllm
def test_vllm_answers_every_question_in_order_and_stops_its_engine(tiny_model: Path, tmp_path: Path) -> None:
    answerer = VllmAnswerer(str(VLLM_PYTHON), tmp_path / "logs", max_model_len=256, batch_size=2)
    seen: list[int] = []
    answers = answerer.answer(str(tiny_model), TEXTS, 12, lambda done, total: seen.append(done))
    assert len(answers) == len(TEXTS) and all(isinstance(a, str) for a in answers)
    assert seen == [2, 4, 5]
    log = next((tmp_path / "logs").glob("eval-vllm-*.log"))
    assert "Application startup complete" in log.read_text(encoding="utf-8", errors="replace")
    # the engine was stopped: nothing of it is left listening
    assert not any("vllm.entrypoints" in _cmdline(p) and str(tiny_model) in _cmdline(p) for p in _pids())


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_the_engine_setting_picks_the_answerer(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-serving-env" / "python")
    assert open_answerer(EvaluationSettings(engine="transformers"), tmp_path).name == "transformers"
    assert open_answerer(EvaluationSettings(engine="auto", vllm_python=missing), tmp_path).name == "transformers"
    if VLLM_PYTHON.exists():
        assert open_answerer(EvaluationSettings(engine="auto", vllm_python=str(VLLM_PYTHON)), tmp_path).name == "vllm"
    with pytest.raises(ConfigError) as err:
        open_answerer(EvaluationSettings(engine="vllm", vllm_python=missing), tmp_path)
    assert "evaluation.vllm_python" in str(err.value) and missing in str(err.value)
