"""GGUF files as base models: checked, then converted once into a safetensors folder.

A GGUF file (llama.cpp's format) carries a quantized model, its tokenizer, its chat template
and metadata such as the license. transformers reads it dequantized, but refuses to save that
model again, and Axolotl, llm-compressor and vLLM each want a plain Hugging Face folder. So a
GGUF base is converted once: read with ``from_pretrained(folder, gguf_file=...)``, rebuilt as
its architecture's plain class from the config, and saved (float32 weights, the tokenizer and
its ``chat_template.jinja``) into the artifact store under the digest of the file and the
conversion recipe. Everything is checked before the 20-second load: a missing, truncated or
foreign file, or a model that is not a causal LM, is one ``ConfigError`` naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate.errors import ConfigError

log = logging.getLogger(__name__)

# GGUF architectures transformers reads that are not decoder-only language models.
NOT_CAUSAL = frozenset({"t5", "umt5", "bert", "nomic-bert", "jina-bert-v2", "clip"})
# Bumped when the conversion changes what it writes: a new format is a new folder.
CONVERSION_FORMAT = 2


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF file says about itself, read from its header only."""

    path: Path
    sha256: str
    architecture: str
    name: str
    license: str | None
    chat_template: str | None
    tensors: int
    special_ids: dict[str, int]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except Exception:  # a field gguf cannot decode is as good as absent
        return None


def inspect_gguf(path: Path, setting: str = "training.base_model") -> GgufInfo:
    """Read and check a GGUF file's header and tensor table without loading its weights.

    Raises:
        ConfigError: the file is missing, is not GGUF, is cut short, or holds no causal LM
            transformers can read. The message names the file and the setting.
    """
    from gguf import GGUFReader
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    if not path.is_file():
        raise ConfigError(f"{setting}: GGUF file {path} does not exist")
    try:
        reader = GGUFReader(path)
    except (ValueError, KeyError, IndexError, OSError) as exc:
        why = "not a GGUF file" if "magic" in str(exc).lower() else "truncated or corrupt"
        raise ConfigError(f"{setting}: {path} is {why} ({exc})") from None
    size = path.stat().st_size
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if not reader.tensors or end > size:
        raise ConfigError(f"{setting}: {path} is truncated: its tensors need {end} bytes, the file has {size}")
    arch = str(_field(reader, "general.architecture") or "")
    if not arch:
        raise ConfigError(f"{setting}: {path} does not say its architecture (general.architecture)")
    if arch in NOT_CAUSAL or arch not in GGUF_CONFIG_MAPPING or arch in {"general", "tokenizer"}:
        raise ConfigError(
            f"{setting}: {path} holds a {arch!r} model, not a causal language model transformers can read "
            f"({', '.join(sorted(set(GGUF_CONFIG_MAPPING) - NOT_CAUSAL - {'general', 'tokenizer'}))})"
        )
    license_ = _field(reader, "general.license")
    template = _field(reader, "tokenizer.chat_template")
    return GgufInfo(
        path=path,
        sha256=file_sha256(path),
        architecture=arch,
        name=str(_field(reader, "general.name") or path.stem),
        license=str(license_).lower() if license_ else None,
        chat_template=str(template) if template else None,
        tensors=len(reader.tensors),
        special_ids={
            role: int(value)
            for role in ("bos", "eos", "padding", "unknown")
            if (value := _field(reader, f"tokenizer.ggml.{role}_token_id")) is not None
        },
    )


def convert_gguf(info: GgufInfo, out: Path) -> int:
    """Load ``info.path`` dequantized and save it as a plain safetensors folder in ``out``.

    Returns:
        The model's parameter count.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(info.path.parent), info.path.name
    log.info("converting %s (%s) to safetensors: about 20 s on two cores", info.path.name, info.architecture)
    with _quiet_dequantize_bar(), gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF-loaded model is marked quantized and refuses save_pretrained; the same weights in
    # a model built from the plain config save normally.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config = AutoConfig.for_model(**config.to_dict())
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ConfigError(
            f"training.base_model: {info.path} did not convert cleanly "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    plain.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out, safe_serialization=True)
    if info.chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = info.chat_template
    # transformers' GGUF tokenizer reads the vocabulary but not which token ends a turn (SmolLM2
    # came out with <|im_start|> as its eos and no pad): take them from the file's own metadata.
    for role, attr in (("bos", "bos_token"), ("eos", "eos_token"), ("padding", "pad_token"), ("unknown", "unk_token")):
        if role in info.special_ids:
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(info.special_ids[role]))
    # a byte-level BPE tokenizer: transformers warns at every load that this WordPiece clean-up is ignored
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in plain.parameters())


@contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Read a GGUF file's header, and build gguf's tensor name map, once while transformers loads it.

    transformers (5.x) parses the whole file (every field: 49,152 vocabulary strings and their
    merges for SmolLM2) each time it needs something from it, four times in a conversion (the
    tokenizer's config and vocabulary, the model's config and weights), and builds gguf's
    ``TensorNameMap`` again for each of the model's submodules (397 times for SmolLM2-135M). A
    reader is read-only (a memory map), and the map depends on the architecture and the block
    count only, so one of each gives the same tokenizer and weights.
    """
    import gguf

    originals = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=4)(gguf.GGUFReader)  # type: ignore[misc,assignment]
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = originals  # type: ignore[misc]


@contextmanager
def _quiet_dequantize_bar() -> Iterator[None]:
    """transformers draws its GGUF progress bar with plain tqdm, past its own progress switch."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm  # type: ignore[attr-defined]
    gguf_utils.tqdm = functools.partial(original, disable=True)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        gguf_utils.tqdm = original  # type: ignore[attr-defined]
