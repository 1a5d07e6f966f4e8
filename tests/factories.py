"""Records with made-up digests and paths, for tests that need a stage output but not its files."""

from __future__ import annotations

from pathlib import Path

from lockgate.records import AdapterArtifact, DatasetSnapshot, QuantizedModel


def dataset_snapshot(root: str = "/d", digest: str = "sha256:data") -> DatasetSnapshot:
    return DatasetSnapshot(
        digest=digest,
        name="d",
        path=f"{root}/datasets/x",
        train_path=f"{root}/datasets/x/train.jsonl",
        eval_path=f"{root}/datasets/x/eval.jsonl",
        quarantine_path=f"{root}/datasets/x/quarantine.jsonl",
        card_path=f"{root}/datasets/x/CARD.md",
        n_train=1,
        n_eval=1,
        n_quarantined=0,
        n_duplicates=0,
        n_redacted=0,
        source_digests={},
    )


def quantized_model(digest: str = "sha256:cand", adapter: str = "sha256:ad") -> QuantizedModel:
    return QuantizedModel(
        digest=digest,
        path=f"/m/{digest[7:]}",
        merged_path=f"/m/{digest[7:]}-merged",
        method="gptq",
        scheme="W4A16",
        adapter_digest=adapter,
        size_bytes=1,
        merged_size_bytes=2,
    )


def adapter_artifact(digest: str = "sha256:ad", dataset: str = "sha256:data") -> AdapterArtifact:
    return AdapterArtifact(
        digest=digest,
        path=f"/a/{digest[7:]}",
        base_model="b",
        base_digest="sha256:b",
        dataset_digest=dataset,
        config_digest="sha256:cfg",
        steps=1,
        train_loss=None,
        eval_loss=None,
    )


def adapter_eval_loss(base_path: str, adapter_dir: str | Path, eval_path: str | Path) -> float:
    """Mean cross-entropy of the eval set's reference answers under base + adapter (nats/token):
    how resumed and uninterrupted training runs are compared (README: "How equal is a resumed run?")."""
    import json

    from peft import PeftModel

    from lockgate.hf import load_causal_lm
    from lockgate.quantize import answer_loss

    rows = [json.loads(line) for line in Path(eval_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    model, tok = load_causal_lm(base_path)
    return answer_loss(PeftModel.from_pretrained(model, str(adapter_dir)), tok, rows)


def production_trained_on(home: Path, questions: list[str]) -> None:
    """A production model (a signed artifact) whose lineage names its training questions."""
    import json

    from lockgate.settings import load_settings
    from lockgate.workspace import Workspace

    workspace = Workspace.open(load_settings(overrides={"home": str(home)}))
    train = home / "train.jsonl"
    train.write_text("".join(json.dumps({"instruction": q, "output": "-"}) + "\n" for q in questions))
    staged = workspace.artifacts.staging("quantized")
    (staged / "model.safetensors").write_bytes(b"\x01" * 64)
    digest, path = workspace.artifacts.commit("quantized", staged)
    workspace.registry.record_release(digest, str(path), {"dataset_train": str(train)}, {}, True, None)
