"""Records with made-up digests and paths, for tests that need a stage output but not its files."""

from __future__ import annotations

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
