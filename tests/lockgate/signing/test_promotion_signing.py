"""A promotion records the signature's digest with its evidence and, with a signer, refuses a tampered candidate."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.artifacts import LocalArtifactStore
from lockgate.digest import digest_file
from lockgate.registry import LocalRegistry
from lockgate.signing import ArtifactSigning, TamperedError, signature_path


def commit(store: LocalArtifactStore, weights: bytes) -> tuple[str, Path]:
    staged = store.staging("quantized")
    (staged / "model").mkdir()  # the registered path is a sub-folder of the artifact, as quantize's is
    (staged / "model" / "model.safetensors").write_bytes(weights)
    digest, path = store.commit("quantized", staged)
    return digest, path / "model"


def test_promotion_records_the_signature_and_refuses_a_tampered_candidate(
    tmp_path: Path, signing: ArtifactSigning
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts", signing)
    registry = LocalRegistry(tmp_path / "registry", signing)
    first, first_path = commit(store, b"\x01" * 64)
    assert registry.record_release(first, str(first_path), {}, {"decision": "passed"}, True, None) == ("promoted", None)
    recorded = digest_file(signature_path(first_path.parent))
    assert registry.get("production").signature == recorded  # type: ignore[union-attr]
    assert registry.history()[-1].evidence == {"decision": "passed", "signature": recorded}

    second, second_path = commit(store, b"\x02" * 64)
    (second_path / "model.safetensors").write_bytes(b"\x03" * 64)
    with pytest.raises(TamperedError, match=rf"quantized/{second_path.parent.name} refused: model/model.safetensors"):
        registry.record_release(second, str(second_path), {}, {}, True, first)
    assert registry.get("production").digest == first  # type: ignore[union-attr]
    assert second not in registry.snapshot().versions
