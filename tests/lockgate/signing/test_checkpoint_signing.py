"""Checkpoints are signed as they are saved and verified before a resume restores one."""

from __future__ import annotations

import json
import shutil
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


def test_a_checkpoint_the_trainer_rotates_away_mid_save_still_lands_whole_and_signed(
    tmp_path: Path, signing: ArtifactSigning, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a fast trainer, save_total_limit deletes checkpoint-N while the sync copies and signs it:
    the store still gets all of it, signed, and a resume verifies it."""
    store = CheckpointStore(str(tmp_path / "store"), signing=signing)
    live = complete_checkpoint(tmp_path / "out" / "checkpoint-10", 10)
    (live / "optimizer.pt").write_bytes(b"o" * 64)
    put_file = store.fs.put_file

    def rotate_after_the_first_file(src: str, dst: str, **kw: object) -> None:
        put_file(src, dst, **kw)
        shutil.rmtree(live, ignore_errors=True)  # the trainer's rotation, between two files

    monkeypatch.setattr(store.fs, "put_file", rotate_after_the_first_file)
    assert store.save(live)
    assert not live.exists() and store.steps() == [10]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    restored = store.restore_latest(fresh)
    assert restored is not None
    assert (restored / "optimizer.pt").read_bytes() == b"o" * 64
    assert not list((tmp_path / "out").iterdir()), "the frozen copy is removed"
