"""The real pretrained model: SmolLM2-135M-Instruct from its package, converted once per session.

The converted folder is a pretrained model (its loss on Lockgate's sample text is far below a
random model's of the same shape), records where it came from, and ends its turns with the
token its GGUF says. Its chat template wraps the prompt file's text the same way, byte for
byte, when Axolotl trains on it, when evaluation asks it and when the gateway sends it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from lockgate.artifacts import LocalArtifactStore
from lockgate.basemodel import ensure_base_model, package_resource
from lockgate.chat import chat_format_of, prompt_for_model
from lockgate.digest import digest_bytes
from lockgate.finetune import render_axolotl_config
from lockgate.gguf_models import inspect_gguf
from lockgate.prompts import GROUNDED_QA, load_prompt
from lockgate.records import BaseModelArtifact
from lockgate.serving import (
    CanaryMonitor,
    Gateway,
    GatewayOptions,
    KeyStore,
    ManifestWatcher,
    RollbackPolicy,
    ServingManifest,
    Variant,
    add_key,
    write_manifest,
)
from lockgate.serving.retrieval import PromptBook
from lockgate.settings import BaseModelSettings, TrainingSettings
from tests.conftest import EXAMPLES, ROOT, SMOLLM2
from tests.lockgate.serving.test_gateway_robustness import EngineServer

QUESTION = "What port does the Relay listen on?"
CONTEXT = "The Quillstone Relay listens on port 7095 by default; set relay.port to change it."


def token_loss(model: Any, tok: Any, text: str, max_tokens: int = 384) -> float:
    """Mean next-token cross-entropy (nats/token) of ``text``."""
    import torch

    ids = tok(text, return_tensors="pt")["input_ids"][:, :max_tokens]
    with torch.inference_mode():
        return float(model(input_ids=ids, labels=ids).loss)


def held_out_text() -> str:
    """Sample text no model here was trained on: the first two documents of the sample corpus."""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((EXAMPLES / "corpus").glob("*.md"))[:2])


def test_the_converted_base_is_a_pretrained_model_with_its_source_recorded(smollm2_base: BaseModelArtifact) -> None:
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source, _ = package_resource(SMOLLM2)
    info = inspect_gguf(source)
    reader = gguf.GGUFReader(source)
    assert smollm2_base.source == str(source)
    assert smollm2_base.source_digest == f"sha256:{info.sha256}"
    assert smollm2_base.architecture == "LlamaForCausalLM"
    assert smollm2_base.license == info.license == "apache-2.0"
    assert smollm2_base.chat_template_digest == digest_bytes(str(info.chat_template).encode())
    # every weight of the file is in the folder (the tied output layer is stored once in both)
    assert smollm2_base.parameters == sum(math.prod(int(d) for d in t.shape) for t in reader.tensors)

    tok = AutoTokenizer.from_pretrained(smollm2_base.path)
    assert tok.eos_token_id == info.special_ids["eos"] and tok.eos_token == "<|im_end|>"
    held_out = held_out_text()
    model = AutoModelForCausalLM.from_pretrained(smollm2_base.path, dtype=torch.float32).eval()
    pretrained = token_loss(model, tok, held_out)
    del model
    torch.manual_seed(0)
    random_init = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(smollm2_base.path)).eval()
    untrained = token_loss(random_init, tok, held_out)
    assert pretrained < 4.0, f"pretrained loss {pretrained:.2f} nats/token"
    assert untrained > 9.0 and untrained > pretrained + 5, (pretrained, untrained)


def test_a_second_resolve_reuses_the_converted_folder(smollm2_base: BaseModelArtifact) -> None:
    weights = Path(smollm2_base.path) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    store = LocalArtifactStore(Path(smollm2_base.path).parents[1])
    again = ensure_base_model(SMOLLM2, BaseModelSettings(), [], store)
    assert again.path == smollm2_base.path and again.digest == smollm2_base.digest
    assert weights.stat().st_mtime_ns == before


class Recorder:
    """An OpenAI completions endpoint that keeps every prompt it is sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/completions", self.completions, methods=["POST"])])

    async def completions(self, request: Request) -> Response:
        self.prompts.append((await request.json())["prompt"])
        return JSONResponse(
            {
                "choices": [{"index": 0, "text": " Port 7095.", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 4, "total_tokens": 44},
            }
        )


class OneContext:
    def contexts(self, variant: Variant, question: str) -> list[str]:
        return [CONTEXT]


def gateway_prompt(base: BaseModelArtifact, tmp: Path) -> str:
    """What a real gateway sends the engine for QUESTION, serving ``base`` with the production prompt."""
    engine = Recorder()
    with EngineServer(engine.app()) as server:
        variant = Variant(
            name="production",
            model_digest=base.digest,
            served_model="smollm2",
            engine_url=server.url,
            model_path=base.path,
            prompt_version=GROUNDED_QA.version,
            index_uri="milvus-lite://unused",
            weight=1.0,
        )
        write_manifest(tmp / "manifest.json", ServingManifest(variants=(variant,), max_model_len=1024))
        key = add_key(tmp / "keys.json", "alice", 100, 10_000)
        gateway = Gateway(
            manifests=ManifestWatcher(tmp / "manifest.json", interval_s=0.0),
            keys=KeyStore.load(tmp / "keys.json"),
            retriever=OneContext(),
            render=PromptBook().render,
            monitor=CanaryMonitor(RollbackPolicy(window_s=600, min_requests=3, max_error_rate=0.2, max_p95_ms=60_000)),
            on_rollback=lambda live, reason: live,
            options=GatewayOptions(max_tokens=8),
        )
        with TestClient(gateway.app) as client:
            reply = client.post(
                "/v1/chat/completions",
                json={"model": "lockgate", "messages": [{"role": "user", "content": QUESTION}]},
                headers={"Authorization": f"Bearer {key}"},
            )
    assert reply.status_code == 200, reply.text
    assert len(engine.prompts) == 1
    return engine.prompts[0]


def test_training_evaluation_and_the_gateway_send_the_same_bytes(
    smollm2_base: BaseModelArtifact, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    cfg = render_axolotl_config(TrainingSettings(), smollm2_base, tmp_path / "train.jsonl", tmp_path / "out")
    trained = cfg["datasets"][0]["type"]["format"].format(instruction=QUESTION, input=CONTEXT)
    spec = load_prompt(ROOT / "prompts" / "grounded-qa.yaml")
    evaluated = prompt_for_model(chat_format_of(smollm2_base.path), spec, QUESTION, [CONTEXT])
    served = gateway_prompt(smollm2_base, tmp_path)
    # and what transformers itself makes of the prompt file's text with the model's template
    tok = AutoTokenizer.from_pretrained(smollm2_base.path)
    user_turn = spec.render({"question": QUESTION, "context": CONTEXT})
    reference = tok.apply_chat_template(
        [{"role": "user", "content": user_turn}], tokenize=False, add_generation_prompt=True
    )
    assert trained == evaluated == served == reference
    assert served.startswith("<|im_start|>system\n") and served.endswith("<|im_start|>assistant\n")
    assert user_turn in served


@pytest.mark.parametrize("template_braces", ["{{ '{' }}literal{{ '}' }}"])
def test_a_template_writing_braces_keeps_axolotls_fields_intact(template_braces: str) -> None:
    from lockgate.chat import ChatFormat

    chat = ChatFormat(
        template=template_braces + "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    )
    wrapped = chat.wrap_format(GROUNDED_QA.with_context)
    assert wrapped.format(instruction="Q?", input="C.") == chat.wrap(GROUNDED_QA.render("Q?", "C."))
