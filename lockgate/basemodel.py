"""The base model: a hub id or local path in production, a tiny Llama built here for the demo.

The demo cannot download weights, so it builds a random-init ``LlamaForCausalLM`` and a
byte-level BPE tokenizer trained on the sample text. It is small enough to fine-tune on two
CPU cores in about a minute, and its hidden size is a multiple of 128 so GPTQ's default
group size fits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from lockgate.artifacts import ArtifactStore
from lockgate.digest import digest_json, digest_tree
from lockgate.errors import ConfigError
from lockgate.records import BaseModelArtifact
from lockgate.settings import BUILTIN_TINY_MODEL, BaseModelSettings

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def tiny_model_recipe(settings: BaseModelSettings, corpus_digest: str) -> dict[str, object]:
    """Everything that determines the tiny model: equal recipes give equal weights."""
    return {"kind": BUILTIN_TINY_MODEL, **settings.model_dump(), "corpus": corpus_digest, "format": 1}


def build_tiny_llama(settings: BaseModelSettings, texts: Iterable[str], out: Path) -> int:
    """Train a tokenizer on ``texts`` and save a random-init tiny Llama and it to ``out``.

    Returns:
        The model's parameter count.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=settings.vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=2048, **SPECIAL_TOKENS)  # type: ignore[no-untyped-call]
    fast.padding_side = "right"
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)

    ids = {name: int(fast.convert_tokens_to_ids(tok_)) for name, tok_ in SPECIAL_TOKENS.items()}  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        num_key_value_heads=settings.num_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=ids["bos_token"],
        eos_token_id=ids["eos_token"],
        pad_token_id=ids["pad_token"],
    )
    torch.manual_seed(settings.seed)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    log.info("built tiny llama: %d parameters, vocab %d", params, len(fast))
    return params


def corpus_texts(paths: Iterable[Path]) -> list[str]:
    """Text to train the tokenizer on: every line of the given text/JSONL files."""
    texts: list[str] = []
    for path in paths:
        if path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    texts.extend(str(v) for v in row.values() if isinstance(v, str))
        else:
            texts.extend(path.read_text(encoding="utf-8").splitlines())
    return [t for t in texts if t.strip()]


def ensure_base_model(
    base_model: str, settings: BaseModelSettings, text_files: list[Path], store: ArtifactStore
) -> BaseModelArtifact:
    """Resolve the configured base model to an artifact, building the tiny one if asked.

    Args:
        base_model: ``builtin:tiny-llama``, a local folder, or a hub id (``org/name``).
        settings: shape of the tiny model.
        text_files: the files the tiny tokenizer is trained on.
        store: where built models are kept.
    """
    if base_model == BUILTIN_TINY_MODEL:
        texts = corpus_texts(text_files)
        recipe = tiny_model_recipe(settings, digest_json(texts))
        recipe_digest = digest_json(recipe)
        path = store.path_of("base-models", recipe_digest)
        if not (path / "config.json").exists():
            staged = store.staging("base-model")
            build_tiny_llama(settings, texts, staged)
            (staged / "lockgate-recipe.json").write_text(json.dumps(recipe, indent=2), encoding="utf-8")
            store.commit("base-models", staged, recipe_digest)
        return _describe_local(BUILTIN_TINY_MODEL, path, recipe_digest)

    local = Path(base_model).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(f"training.base_model: {local} has no config.json; not a transformers model folder")
        return _describe_local(base_model, local, digest_tree(local))
    if "/" not in base_model:
        raise ConfigError(f"training.base_model: {base_model!r} is neither a folder nor a hub id (org/name)")
    return _describe_hub(base_model)


def _describe_local(name: str, path: Path, digest: str) -> BaseModelArtifact:
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    hidden = int(cfg.get("hidden_size", 0))
    layers = int(cfg.get("num_hidden_layers", 0))
    inter = int(cfg.get("intermediate_size", 0))
    vocab = int(cfg.get("vocab_size", 0))
    approx = 2 * vocab * hidden + layers * (4 * hidden * hidden + 3 * hidden * inter)
    return BaseModelArtifact(digest=digest, name=name, path=str(path), hidden_size=hidden, parameters=approx)


def _describe_hub(model_id: str) -> BaseModelArtifact:
    """Pin a hub model to its current revision (production path; needs the hub)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from lockgate.errors import TransientError

    try:
        info = HfApi().model_info(model_id)
    except HfHubHTTPError as exc:
        raise ConfigError(f"training.base_model: hub model {model_id!r} not found: {exc}") from None
    except Exception as exc:  # network down, DNS, timeouts
        raise TransientError(f"training.base_model: cannot reach the hub for {model_id!r}: {exc}") from None
    cfg = getattr(info, "config", None) or {}
    return BaseModelArtifact(
        digest=digest_json([model_id, info.sha]),
        name=model_id,
        path=model_id,
        revision=info.sha,
        hidden_size=int(cfg.get("hidden_size", 0) or 0),
        parameters=0,
    )
