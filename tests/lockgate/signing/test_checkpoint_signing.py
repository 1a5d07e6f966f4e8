"""Checkpoints are signed as they are saved and verified before a resume restores one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.checkpoints import CheckpointStore
from lockgate.signing import ArtifactSigning, TamperedError


def complete_checkpoint(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"w" * step)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


@pytest.mark.parametrize("url", ["memory://lockgate-test/signed-ckpt", "local"])
def test_a_signed_checkpoint_restores_and_a_changed_one_is_refused(
    tmp_path: Path, url: str, signing: ArtifactSigning
) -> None:
    where = str(tmp_path / "store") if url == "local" else f"{url}-{tmp_path.name}"
    store = CheckpointStore(where, signing=signing)
    out = tmp_path / "out"
    for step in (5, 10, 15):
        store.save(complete_checkpoint(out / f"checkpoint-{step}", step))
    assert store.steps() == [10, 15]
    assert not store.fs.exists(f"{store.root}/checkpoint-5.sig"), "a pruned checkpoint's signature goes with it"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert store.restore_latest(fresh) == fresh / "checkpoint-15"

    # Same size, one byte different: the completeness marker cannot tell, the signature does.
    store.fs.pipe_file(f"{store.root}/checkpoint-15/adapter_model.safetensors", b"w" * 14 + b"X")
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(TamperedError, match=r"checkpoint-15 refused: adapter_model.safetensors was changed"):
        store.restore_latest(again)
    assert list(again.iterdir()) == [], "nothing refused is left where Axolotl would resume from it"

    store.fs.rm(f"{store.root}/checkpoint-15.sig")
    with pytest.raises(TamperedError, match=r"checkpoint-15.sig \(its signature\) is missing"):
        store.restore_latest(again)
