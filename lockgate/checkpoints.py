"""Durable training checkpoints: they leave the worker as soon as they are complete.

A spot worker can vanish with its disk. Every complete ``checkpoint-N`` the trainer writes
is copied to a checkpoint store (a local folder, or any fsspec URL such as ``s3://``) under
a staging name, and becomes visible only when its completeness marker, listing every file
with its size, is written and the folder renamed. A resume restores the newest checkpoint
whose marker matches its files, on a fresh worker too. Half-written checkpoints, in the
store or in the trainer's own output folder, are skipped with a log line and never handed
to Axolotl (which would otherwise resume from the highest ``checkpoint-N``, complete or not).

With a signer (the artifact store's), each checkpoint is signed as it is saved (``checkpoint-N.sig``
beside its folder in the store, written before the folder becomes visible) and a restored copy is
verified before Axolotl sees it: a checkpoint changed, grown or shrunk in the store is refused
naming the file, and training does not resume from it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lockgate.errors import TransientError
from lockgate.signing import SIGNATURE_SUFFIX, ArtifactSigning, TamperedError, sign_folder, verify_folder

log = logging.getLogger(__name__)

MARKER = "lockgate-complete.json"
# What Hugging Face's Trainer writes last into a checkpoint folder: until it is there, the
# checkpoint is being written (or its writer died).
TRAINER_STATE = "trainer_state.json"


def checkpoint_step(path: Path | str) -> int:
    """N of a ``checkpoint-N`` folder name, or -1 for anything else."""
    name = Path(str(path).rstrip("/")).name
    prefix, _, number = name.partition("-")
    return int(number) if prefix == "checkpoint" and number.isdigit() else -1


def is_complete_local(folder: Path) -> bool:
    """Whether the trainer finished writing this checkpoint folder."""
    return (folder / TRAINER_STATE).is_file()


def set_aside_incomplete(output_dir: Path) -> list[Path]:
    """Move half-written ``checkpoint-N`` folders out of Axolotl's sight; returns where they went."""
    moved = []
    for folder in sorted(output_dir.glob("checkpoint-*"), key=checkpoint_step):
        if checkpoint_step(folder) >= 0 and not is_complete_local(folder):
            target = output_dir / f"incomplete-{folder.name}-{uuid.uuid4().hex[:8]}"
            folder.rename(target)
            log.warning("skipping %s: incomplete (no %s), set aside as %s", folder, TRAINER_STATE, target.name)
            moved.append(target)
    return moved


def latest_local(output_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` in a trainer's output folder."""
    done = [p for p in output_dir.glob("checkpoint-*") if checkpoint_step(p) >= 0 and is_complete_local(p)]
    return max(done, key=checkpoint_step, default=None)


class CheckpointStore:
    """Checkpoints of one training run (one work key) at a local path or fsspec URL."""

    def __init__(self, url: str, keep: int = 2, signing: ArtifactSigning | None = None) -> None:
        import fsspec

        self.keep = keep
        self.signing = signing
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints in the store, oldest first."""
        found = []
        for entry in self.fs.ls(self.root, detail=False):
            step = checkpoint_step(entry)
            if step < 0:
                continue
            if self._verified(self._path(f"checkpoint-{step}")):
                found.append(step)
            else:
                log.warning("skipping stored %s: no complete marker (a save that died half-way)", entry)
        return sorted(found)

    def _verified(self, folder: str) -> bool:
        marker = f"{folder}/{MARKER}"
        if not self.fs.exists(marker):
            return False
        try:
            listed: dict[str, int] = json.loads(self.fs.cat_file(marker))["files"]
        except (ValueError, KeyError):
            return False
        for rel, size in listed.items():
            path = f"{folder}/{rel}"
            if not self.fs.exists(path) or self.fs.size(path) != size:
                return False
        return True

    def save(self, checkpoint: Path) -> bool:
        """Copy a complete local checkpoint into the store; False if it is already there.

        The trainer rotates old checkpoints away (save_total_limit) while we copy, so the copy
        and its signature are made from a frozen snapshot of the folder (hard links), never
        from the live one. The copy goes to a staging name; the marker is written last and the
        folder renamed, so a reader never sees a checkpoint without all its files.

        Raises:
            FileNotFoundError: the trainer removed the checkpoint before it could be frozen.
            ValueError: it is not a complete checkpoint folder.
        """
        step = checkpoint_step(checkpoint)
        if step < 0 or not is_complete_local(checkpoint):
            raise ValueError(f"{checkpoint} is not a complete checkpoint folder")
        final = self._path(checkpoint.name)
        if self.fs.exists(f"{final}/{MARKER}"):
            return False
        with _frozen(checkpoint) as frozen:
            self._upload(frozen, checkpoint.name, step)
        log.info("checkpoint-%d saved durably to %s", step, self.url)
        self._prune()
        return True

    def _upload(self, frozen: Path, name: str, step: int) -> None:
        final = self._path(name)
        staging = self._path(f".staging-{name}-{uuid.uuid4().hex[:8]}")
        try:
            files = {p.relative_to(frozen).as_posix(): p.stat().st_size for p in frozen.rglob("*") if p.is_file()}
            for rel in files:
                parent = Path(rel).parent.as_posix()
                self.fs.makedirs(staging if parent == "." else f"{staging}/{parent}", exist_ok=True)
                self.fs.put_file(str(frozen / rel), f"{staging}/{rel}")
            if self.signing is not None:  # before the marker and the rename: a visible checkpoint is signed
                signature = sign_folder(self.signing, frozen, frozen.with_name(f"{frozen.name}{SIGNATURE_SUFFIX}"))
                try:
                    self.fs.put_file(str(signature), f"{final}{SIGNATURE_SUFFIX}")
                finally:
                    signature.unlink(missing_ok=True)
            body = json.dumps({"step": step, "files": files, "saved_at": time.time()}).encode()
            self.fs.pipe_file(f"{staging}/{MARKER}", body)
            if self.fs.exists(final):  # an earlier, incomplete attempt
                self.fs.rm(final, recursive=True)
            self.fs.mv(staging, final, recursive=True)
        except BaseException:
            if self.fs.exists(staging):
                self.fs.rm(staging, recursive=True)
            raise

    def _prune(self) -> None:
        """Keep the newest ``keep`` complete checkpoints; older ones are never resumed from."""
        steps = self.steps()
        for step in steps[: -self.keep]:
            self.fs.rm(self._path(f"checkpoint-{step}"), recursive=True)
            if self.fs.exists(self._path(f"checkpoint-{step}{SIGNATURE_SUFFIX}")):
                self.fs.rm(self._path(f"checkpoint-{step}{SIGNATURE_SUFFIX}"))

    # The run's history lives beside its checkpoints, so a fresh worker still knows how often
    # the run was preempted and how far it had got (its own disk saw none of that).
    def record_attempt(self, entry: dict[str, Any]) -> None:
        """One file per start of training (an object store cannot append)."""
        self.fs.makedirs(self._path("attempts"), exist_ok=True)
        self.fs.pipe_file(
            self._path(f"attempts/{time.time_ns()}-{uuid.uuid4().hex[:6]}.json"), json.dumps(entry).encode()
        )

    def attempts(self) -> list[dict[str, Any]]:
        """Every recorded start, oldest first."""
        folder = self._path("attempts")
        if not self.fs.exists(folder):
            return []
        names = sorted(self.fs.ls(folder, detail=False), key=lambda p: Path(p).name)
        return [json.loads(self.fs.cat_file(p)) for p in names if p.endswith(".json")]

    def note_progress(self, step: int) -> None:
        """Remember the furthest optimizer step any attempt reached (steps past the last checkpoint are redone)."""
        if step > self.furthest_step():
            self.fs.pipe_file(self._path("progress.json"), json.dumps({"furthest_step": step}).encode())

    def furthest_step(self) -> int:
        path = self._path("progress.json")
        try:
            return int(json.loads(self.fs.cat_file(path))["furthest_step"]) if self.fs.exists(path) else 0
        except (ValueError, KeyError):
            return 0

    def restore_latest(self, output_dir: Path) -> Path | None:
        """Bring the newest stored checkpoint into ``output_dir`` unless a newer complete one is there.

        Returns the local checkpoint folder training will resume from, or None for a fresh start.
        """
        local = latest_local(output_dir)
        stored = self.steps()
        newest = stored[-1] if stored else -1
        if newest <= (checkpoint_step(local) if local else -1):
            return local
        target = output_dir / f"checkpoint-{newest}"
        staging = output_dir / f".restoring-{newest}-{uuid.uuid4().hex[:8]}"
        self.fs.get(self._path(f"checkpoint-{newest}") + "/", str(staging), recursive=True)
        (staging / MARKER).unlink(missing_ok=True)
        if self.signing is not None:
            self._verify_restored(self.signing, staging, newest)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        log.info("restored checkpoint-%d from %s", newest, self.url)
        return target

    def _verify_restored(self, signing: ArtifactSigning, staging: Path, step: int) -> None:
        """Check a downloaded checkpoint against the signature made when it was saved; a refused one is removed.

        Raises:
            TamperedError: a file was changed, added or removed in the store, or the signature is missing.
        """
        name = f"checkpoint-{step}"
        stored = self._path(f"{name}{SIGNATURE_SUFFIX}")
        signature = staging.with_name(f"{staging.name}{SIGNATURE_SUFFIX}")
        try:
            if not self.fs.exists(stored):
                raise TamperedError(f"{self.url}/{name}", f"{name}{SIGNATURE_SUFFIX}", "(its signature) is missing")
            self.fs.get_file(stored, str(signature))
            verify_folder(signing, staging, f"{self.url}/{name}", signature)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            signature.unlink(missing_ok=True)


class CheckpointSync:
    """Copies each new complete checkpoint to the store while the trainer runs.

    Call ``sync_now`` once more at the end (or on a preemption notice) for the last one.
    """

    def __init__(self, output_dir: Path, store: CheckpointStore, interval_s: float = 2.0) -> None:
        self.output_dir = output_dir
        self.store = store
        self.interval_s = interval_s
        self.saved: set[int] = set(store.steps())
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-sync", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> CheckpointSync:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.sync_now()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync_now()
            except Exception as exc:  # a flaky store, a refused signature: say so, try again next round, keep training
                self.errors.append(str(exc))
                log.warning("checkpoint sync failed, will retry: %s", exc)

    def sync_now(self) -> list[int]:
        """Save every complete local checkpoint the store does not have yet; returns their steps.

        Also records the furthest step the trainer reported (``furthest-step`` in its output folder).
        """
        with self._lock:
            furthest = self.output_dir / "furthest-step"
            if furthest.is_file():
                self.store.note_progress(int(furthest.read_text() or 0))
            new = []
            for folder in sorted(self.output_dir.glob("checkpoint-*"), key=checkpoint_step):
                step = checkpoint_step(folder)
                if step < 0 or step in self.saved or not is_complete_local(folder):
                    continue
                try:
                    self.store.save(folder)
                except FileNotFoundError:
                    continue  # the trainer rotated it away (save_total_limit) before we froze it
                self.saved.add(step)
                new.append(step)
            return new


@contextlib.contextmanager
def _frozen(checkpoint: Path) -> Iterator[Path]:
    """A private, unchanging copy of a complete checkpoint folder (hard links where the disk allows),
    removed afterwards; the trainer may delete the original meanwhile.

    Raises:
        FileNotFoundError: the folder (or a file of it) was removed before it was frozen.
    """
    frozen = checkpoint.with_name(f".frozen-{checkpoint.name}-{uuid.uuid4().hex[:8]}")
    try:
        for src in sorted(checkpoint.rglob("*")):
            dst = frozen / src.relative_to(checkpoint)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except FileNotFoundError:
                raise
            except OSError:  # another filesystem, or links not allowed: a copy
                shutil.copy2(src, dst)
        if not is_complete_local(frozen):
            raise FileNotFoundError(f"{checkpoint} was removed while it was being frozen")
        yield frozen
    finally:
        shutil.rmtree(frozen, ignore_errors=True)


def open_checkpoint_store(url: str, signing: ArtifactSigning | None = None) -> CheckpointStore:
    """The store at ``url`` (signing and verifying with ``signing``); a store that cannot be reached is a
    transient failure (retried)."""
    try:
        return CheckpointStore(url, signing=signing)
    except OSError as exc:
        raise TransientError(f"checkpoint store {url} unreachable: {exc}") from None
