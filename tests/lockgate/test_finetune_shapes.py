"""Each record shape gets the Axolotl dataset type that reads it; rows too long are counted and left out."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from lockgate.artifacts import LocalArtifactStore
from lockgate.basemodel import ensure_base_model
from lockgate.errors import DataError
from lockgate.finetune import (
    OFFLINE_ENV,
    filter_rows_that_fit,
    render_axolotl_config,
    training_text,
    write_training_data,
)
from lockgate.prep import snapshot_dataset
from lockgate.records import BaseModelArtifact
from lockgate.settings import BaseModelSettings, DataSettings, TrainingSettings
from tests.conftest import ROOT, needs, write_jsonl

BASE = BaseModelArtifact(
    digest="sha256:b", parents=(), name="builtin:tiny-llama", path="/m", hidden_size=128, parameters=1
)
AXOLOTL = ROOT / ".venv-trainer" / "bin" / "axolotl"


def alpaca_rows(n: int) -> list[str]:
    return [
        json.dumps(
            {
                "instruction": f"Name the colour of crate {i}.",
                "input": f"crate {i} is painted",
                "output": f"Crate {i} is {c}.",
            }
        )
        for i, c in zip(range(n), ["red", "blue", "green", "amber"] * n, strict=False)
    ]


def chat_rows(n: int) -> list[str]:
    return [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You answer about the warehouse."},
                    {"role": "user", "content": f"Where is shelf {i}?"},
                    {"role": "assistant", "content": f"Shelf {i} is in aisle {i % 7}."},
                ]
            }
        )
        for i in range(n)
    ]


def test_each_shape_renders_its_dataset_type(tmp_path: Path) -> None:
    settings = TrainingSettings()
    qa = render_axolotl_config(settings, BASE, tmp_path / "t.jsonl", tmp_path / "o")
    assert qa["datasets"][0]["type"]["field_input"] == "context" and "chat_template" not in qa
    alpaca = render_axolotl_config(settings, BASE, tmp_path / "t.jsonl", tmp_path / "o", shape="alpaca")
    assert alpaca["datasets"] == [{"path": str(tmp_path / "t.jsonl"), "ds_type": "json", "type": "alpaca"}]
    chat = render_axolotl_config(settings, BASE, tmp_path / "t.jsonl", tmp_path / "o", shape="chat")
    assert chat["datasets"][0]["type"] == "chat_template" and chat["datasets"][0]["field_messages"] == "messages"
    assert chat["chat_template"] == "chatml"


def test_training_text_shows_every_field_the_trainer_sees() -> None:
    alpaca = json.loads(alpaca_rows(1)[0])
    assert "crate 0 is painted" in training_text({**alpaca, "context": alpaca["input"]})
    chat = json.loads(chat_rows(1)[0])
    text = training_text({**chat, "instruction": "x", "output": "y"})
    assert "You answer about the warehouse." in text and "Shelf 0 is in aisle 0." in text


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lockgate.basemodel import build_tiny_llama

    out = tmp_path_factory.mktemp("tiny")
    build_tiny_llama(BaseModelSettings(), ["some words to learn a tokenizer from"] * 50, out)
    return out


def test_rows_too_long_are_left_out_and_counted(tmp_path: Path, tokenizer_dir: Path) -> None:
    short = json.dumps({"instruction": "Short?", "output": "Yes.", "context": ""})
    long = json.dumps({"instruction": " ".join(["word"] * 200), "output": "No.", "context": ""})
    train = write_jsonl(tmp_path / "t.jsonl", [short] * 3 + [long])
    assert filter_rows_that_fit(train, str(tokenizer_dir), 64) == (3, 1)
    assert [json.loads(x) for x in train.read_text().splitlines()] == [json.loads(short)] * 3
    train = write_jsonl(tmp_path / "u.jsonl", [short] + [long] * 2)
    with pytest.raises(DataError, match=r"only 1 of 3 rows fit training.sequence_len=64"):
        filter_rows_that_fit(train, str(tokenizer_dir), 64)
    assert train.read_text().splitlines() == [short, long, long], "left as it was"
    train = write_jsonl(tmp_path / "v.jsonl", [long] * 3)
    with pytest.raises(DataError, match=r"only 0 of 3 rows fit training.sequence_len=64 \(longest \d+ tokens\)"):
        filter_rows_that_fit(train, str(tokenizer_dir), 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl", "u.jsonl", "v.jsonl"], "no temporary file left"


def test_rows_stream_through_the_length_filter(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lockgate.finetune as finetune_module

    def no_loading(path: Path) -> None:
        raise AssertionError(f"{path} loaded whole")

    monkeypatch.setattr(finetune_module, "load_jsonl", no_loading)
    short = json.dumps({"instruction": "Short?", "output": "Yés.", "context": ""}, ensure_ascii=False)
    train = write_jsonl(tmp_path / "t.jsonl", [short] * 4)
    assert filter_rows_that_fit(train, str(tokenizer_dir), 64) == (4, 0)
    assert train.read_text(encoding="utf-8").splitlines() == [short] * 4


@pytest.mark.slow
@needs(AXOLOTL.exists(), "the trainer environment", "run `make setup`")
@pytest.mark.parametrize("shape", ["alpaca", "chat"])
def test_each_shape_trains_for_real(tmp_path: Path, shape: str) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    rows = alpaca_rows(40) if shape == "alpaca" else chat_rows(40)
    snapshot = snapshot_dataset([write_jsonl(tmp_path / "d.jsonl", rows)], DataSettings(eval_fraction=0.2), store)
    assert snapshot.shape == shape
    train = write_training_data(snapshot, tmp_path / "train.jsonl")
    base = ensure_base_model("builtin:tiny-llama", BaseModelSettings(), [train], store)
    assert filter_rows_that_fit(train, base.path, 256)[1] == 0
    out = tmp_path / "out"
    out.mkdir()
    cfg = render_axolotl_config(TrainingSettings(max_steps=2, save_steps=2), base, train, out, shape=shape)
    config = tmp_path / "axolotl.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(AXOLOTL), "train", str(config), "--launcher", "python"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "adapter_model.safetensors").exists()
