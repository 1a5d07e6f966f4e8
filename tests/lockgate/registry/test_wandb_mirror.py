"""The registry mirrored to W&B Artifacts, offline: what W&B would receive is read back from
the offline run files (a few seconds per run)."""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockgate.errors import ConfigError
from lockgate.registry import LocalRegistry, open_registry
from lockgate.settings import RegistrySettings

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def wandb_records(path: Path) -> Iterator[Any]:
    """Records of an offline run file (a LevelDB-style log of protobuf records after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    while pos < len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        buf += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def started_at(run: Path) -> tuple[int, int] | None:
    """When a finished run started; None while its file lacks the run or the exit record."""
    start, finished = None, False
    for record in wandb_records(run):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            start = record.run.start_time.seconds, record.run.start_time.nanos
        finished = finished or kind == "exit"
    return start if finished else None


def mirrored(home: Path, runs_expected: int) -> list[list[tuple[str, list[str]]]]:
    """Per offline run, oldest first: (model digest, aliases) of every artifact version logged."""
    # W&B's service process may still be writing a run's file after finish() returned (seen on
    # a busy machine): wait, bounded, until every run's file holds its run and exit records.
    deadline = time.monotonic() + 60
    while True:
        files = list((home / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
        started = {f: started_at(f) for f in files}
        if (len(files) >= runs_expected and None not in started.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # By each run's own start time: mtimes can reorder them for the same reason.
    runs = sorted(files, key=lambda f: started[f] or (0, 0))
    out = []
    for run in runs:
        logged = []
        for record in wandb_records(run):
            if record.WhichOneof("record_type") == "artifact":
                meta = json.loads(record.artifact.metadata)
                logged.append((meta["digest"], sorted(record.artifact.aliases)))
        out.append(logged)
    return out


def test_promotions_and_rollbacks_are_mirrored_with_lineage_and_aliases(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    registry = open_registry(RegistrySettings(backend="wandb"), tmp_path / "home" / "registry")
    assert registry.record_release(A, str(tmp_path / "m"), {"dataset": "d1"}, {}, True, None)[0] == "promoted"
    assert registry.record_release(B, str(tmp_path / "m"), {"dataset": "d2"}, {}, True, A)[0] == "promoted"
    registry.rollback("production", "canary errors")
    runs = mirrored(tmp_path / "home", runs_expected=3)
    assert len(runs) == 3
    assert runs[0] == [(A, ["candidate", "latest", "production", "sha-aaaaaaaaaaaa"])]
    assert dict(runs[1])[B] == ["candidate", "latest", "production", "sha-bbbbbbbbbbbb"]
    after_rollback = dict(runs[2])
    assert "production" in after_rollback[A] and "production" not in after_rollback[B]
    # The local state is the source of truth and agrees.
    assert LocalRegistry(tmp_path / "home" / "registry").get("production").digest == A  # type: ignore[union-attr]


def test_a_mirror_failure_never_undoes_the_local_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import wandb

    def unreachable(*_a: object, **_k: object) -> None:
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", unreachable)
    registry = open_registry(RegistrySettings(backend="wandb"), tmp_path / "registry")
    with caplog.at_level(logging.WARNING):
        assert registry.record_release(A, "/m/a", {}, {}, True, None)[0] == "promoted"
    assert "W&B mirror failed (ConnectionError" in caplog.text
    assert LocalRegistry(tmp_path / "registry").get("production").digest == A  # type: ignore[union-attr]


def test_online_mirror_needs_a_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="WANDB_API_KEY"):
        open_registry(RegistrySettings(backend="wandb", wandb_mode="online"), tmp_path)


def test_a_promoted_models_card_is_the_mirrored_artifacts_readme_and_description(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    card = tmp_path / "cards" / "README.md"
    card.parent.mkdir()
    card.write_text("---\nlicense: apache-2.0\nbase_model: smollm2\n---\n# Model card of aaaa\n", encoding="utf-8")
    registry = open_registry(RegistrySettings(backend="wandb"), tmp_path / "home" / "registry")
    evidence = {"card": {"path": str(card), "digest": "sha256:c"}}
    assert registry.record_release(A, str(tmp_path / "m"), {"dataset": "d1"}, evidence, True, None)[0] == "promoted"
    mirrored(tmp_path / "home", runs_expected=1)
    run = next((tmp_path / "home" / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    logged = [r.artifact for r in wandb_records(run) if r.WhichOneof("record_type") == "artifact"]
    assert len(logged) == 1 and logged[0].description == card.read_text(encoding="utf-8")
    assert "README.md" in [entry.path for entry in logged[0].manifest.contents]
