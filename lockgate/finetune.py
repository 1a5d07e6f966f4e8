"""Fine-tuning with Axolotl, behind a launcher Protocol.

Lockgate speaks to Axolotl only through its public contract: a rendered YAML config and the
``axolotl`` CLI. Locally the launcher runs that CLI from the separate trainer environment
as a subprocess; in production the same config runs in a GPU image on a Kubernetes spot
pool. Training writes checkpoints into a work folder keyed by its inputs, so a preempted run
started again resumes from the last complete checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from lockgate.digest import digest_json, digest_tree, short
from lockgate.errors import ConfigError, DataError, StageError, TransientError
from lockgate.offline import OFFLINE_DEFAULTS
from lockgate.prep import load_jsonl
from lockgate.prompts import GROUNDED_QA, PromptTemplate
from lockgate.records import AdapterArtifact, BaseModelArtifact, DatasetSnapshot
from lockgate.settings import TrainingSettings
from lockgate.store import LocalArtifactStore

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
# Axolotl and the libraries under it phone home and wait on a dead network for minutes.
OFFLINE_ENV = {
    **OFFLINE_DEFAULTS,
    "AXOLOTL_DO_NOT_TRACK": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "PYTHONUNBUFFERED": "1",
}


def render_axolotl_config(
    settings: TrainingSettings,
    base: BaseModelArtifact,
    train_path: Path,
    output_dir: Path,
    prompt: PromptTemplate = GROUNDED_QA,
    cpu: bool = True,
    shape: str = "qa",
) -> dict[str, Any]:
    """The Axolotl YAML (as a dict) for one LoRA run.

    Args:
        cpu: switch off Axolotl's CUDA-only LoRA kernels and mixed precision.
        shape: the snapshot's record shape; picks the Axolotl dataset type that reads it.
    """
    cfg: dict[str, Any] = {
        "base_model": base.path,
        "datasets": [axolotl_dataset(shape, train_path, prompt)],
        "chat_template": "chatml" if shape == "chat" else None,
        "dataset_prepared_path": str(output_dir / "prepared"),
        "val_set_size": 0,
        "output_dir": str(output_dir),
        "adapter": settings.adapter,
        "lora_r": settings.lora_r,
        "lora_alpha": settings.lora_alpha,
        "lora_dropout": settings.lora_dropout,
        "lora_target_linear": True,
        # A random-init demo base must also learn its embeddings; real bases do not need it.
        "lora_modules_to_save": ["embed_tokens", "lm_head"] if base.name.startswith("builtin:") else None,
        "sequence_len": settings.sequence_len,
        "sample_packing": False,
        "pad_to_sequence_len": False,
        "train_on_inputs": False,
        "micro_batch_size": settings.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": settings.max_steps,
        "num_epochs": 1000,
        "optimizer": "adamw_torch",
        "lr_scheduler": "cosine",
        "learning_rate": settings.learning_rate,
        "warmup_steps": min(10, max(settings.max_steps // 10, 0)),
        "save_steps": settings.save_steps,
        "save_total_limit": 2,
        "logging_steps": max(1, min(10, settings.max_steps // 10)),
        "seed": settings.seed,
        "auto_resume_from_checkpoints": True,
        "special_tokens": {},
        "strict": False,
    }
    if base.revision:
        cfg["revision_of_model"] = base.revision  # the hub revision pinned when the base was resolved
    if settings.adapter == "qlora":
        cfg.update({"load_in_4bit": True})
    if not cpu:
        cfg.update({"bf16": "auto", "tf32": True})
    if cpu:
        cfg.update(
            {
                "bf16": False,
                "fp16": False,
                "tf32": False,
                "lora_mlp_kernel": False,
                "lora_qkv_kernel": False,
                "lora_o_kernel": False,
                "flash_attention": False,
                "sdp_attention": False,
                "gradient_checkpointing": False,
            }
        )
    return {k: v for k, v in cfg.items() if v is not None}


def training_config_digest(cfg: dict[str, Any]) -> str:
    """Digest of what determines the training result (paths excluded)."""
    stable = {k: v for k, v in cfg.items() if k not in ("output_dir", "dataset_prepared_path")}
    stable["datasets"] = [{k: v for k, v in d.items() if k != "path"} for d in cfg["datasets"]]
    return digest_json(stable)


def check_rows_fit(
    train_path: Path, tokenizer_path: str, sequence_len: int, prompt: PromptTemplate = GROUNDED_QA
) -> int:
    """Count training rows that fit ``sequence_len``; fail clearly when none or few do.

    Axolotl silently drops rows that are too long and then crashes on an empty data set.

    Raises:
        DataError: when fewer than half of the rows fit.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    rows = load_jsonl(train_path)
    lengths = [
        len(tok(prompt.render(r["instruction"], r.get("context", ""))).input_ids) + len(tok(r["output"]).input_ids) + 1
        for r in rows
    ]
    kept = sum(1 for n in lengths if n <= sequence_len)
    if kept == 0 or kept < len(rows) / 2:
        raise DataError(
            f"{train_path}: only {kept} of {len(rows)} rows fit training.sequence_len="
            f"{sequence_len} (longest {max(lengths)} tokens); raise sequence_len or shorten rows"
        )
    return kept


def axolotl_dataset(shape: str, train_path: Path, prompt: PromptTemplate = GROUNDED_QA) -> dict[str, Any]:
    """The Axolotl ``datasets`` entry that trains on one record shape (qa, alpaca or chat)."""
    if shape == "alpaca":
        return {"path": str(train_path), "ds_type": "json", "type": "alpaca"}
    if shape == "chat":
        return {
            "path": str(train_path),
            "ds_type": "json",
            "type": "chat_template",
            "field_messages": "messages",
            "message_property_mappings": {"role": "role", "content": "content"},
            "roles_to_train": ["assistant"],
        }
    if shape != "qa":
        raise ConfigError(f"unknown record shape {shape!r}; expected qa, alpaca or chat")
    return {
        "path": str(train_path),
        "ds_type": "json",
        "type": {
            "field_instruction": "instruction",
            "field_input": "context",
            "field_output": "output",
            "format": prompt.with_context,
            "no_input_format": prompt.without_context,
        },
    }


# Axolotl's alpaca prompt, counted so a row's length is what the trainer will see.
_ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:\n"
)
_CHATML_TURN = "<|im_start|>{role}\n{content}<|im_end|>\n"


def training_text(row: dict[str, Any], prompt: PromptTemplate = GROUNDED_QA) -> str:
    """The text the trainer tokenizes for one row of the snapshot, whatever its shape."""
    if "messages" in row:
        return "".join(_CHATML_TURN.format(**m) for m in row["messages"])
    if "input" in row:
        return _ALPACA_PROMPT.format(instruction=row["instruction"], input=row["input"]) + str(row["output"])
    return prompt.render(row["instruction"], row.get("context", "")) + " " + str(row["output"])


def filter_rows_that_fit(
    train_path: Path, tokenizer_path: str, sequence_len: int, prompt: PromptTemplate = GROUNDED_QA
) -> tuple[int, int]:
    """Drop training rows longer than ``sequence_len`` tokens, counted by the base model's own tokenizer.

    Axolotl would drop them silently (and crash on an empty data set); here they are counted.
    Rewrites ``train_path`` in place and returns ``(kept, dropped)``.

    Raises:
        DataError: when fewer than half of the rows fit.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    kept: list[dict[str, Any]] = []
    total, longest = 0, 0
    for row in load_jsonl(train_path):
        total += 1
        n = len(tok(training_text(row, prompt)).input_ids) + 1
        longest = max(longest, n)
        if n <= sequence_len:
            kept.append(row)
    if not kept or len(kept) < total / 2:
        raise DataError(
            f"{train_path}: only {len(kept)} of {total} rows fit training.sequence_len="
            f"{sequence_len} (longest {longest} tokens); raise sequence_len or shorten rows"
        )
    with train_path.open("w", encoding="utf-8") as fh:
        for row in kept:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(kept), total - len(kept)


def write_training_data(snapshot: DatasetSnapshot, out: Path, shuffle_labels: bool = False, seed: int = 0) -> Path:
    """The training file Axolotl reads: the snapshot's train split, optionally sabotaged.

    ``shuffle_labels`` pairs every question with another row's answer; it exists to show
    that the gates catch a broken training set.
    """
    rows = load_jsonl(Path(snapshot.train_path))
    if shuffle_labels:
        outputs = [r["output"] for r in rows]
        random.Random(seed).shuffle(outputs)
        rows = [_with_answer(r, o) for r, o in zip(rows, outputs, strict=True)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return out


def _with_answer(row: dict[str, Any], answer: str) -> dict[str, Any]:
    if "messages" in row:
        *turns, last = row["messages"]
        return {**row, "output": answer, "messages": [*turns, {**last, "content": answer}]}
    return {**row, "output": answer}


@dataclass(frozen=True)
class TrainingRun:
    """What a launcher hands back: where the adapter is and what the trainer reported."""

    adapter_dir: Path
    steps: int
    train_loss: float | None
    resumed_from: str | None
    log_path: Path


class TrainerLauncher(Protocol):
    """Runs one Axolotl training job to completion."""

    def train(self, config_path: Path, output_dir: Path, timeout_s: int) -> TrainingRun:
        """Train with the YAML at ``config_path``; the adapter ends up in ``output_dir``."""
        ...


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder that finished writing (has its trainer state)."""
    done = [p for p in output_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


class LocalAxolotlLauncher:
    """Runs the trainer environment's ``axolotl train`` as a subprocess on this machine."""

    def __init__(self, axolotl_bin: Path) -> None:
        self.axolotl_bin = axolotl_bin

    def train(self, config_path: Path, output_dir: Path, timeout_s: int) -> TrainingRun:
        if not self.axolotl_bin.is_file():
            raise ConfigError(
                f"training.axolotl_bin: {self.axolotl_bin} not found; run `make setup` to build the trainer environment"
            )
        resumed = latest_checkpoint(output_dir)
        if resumed:
            log.info("resuming from %s", resumed)
        log_path = output_dir / "axolotl.log"
        env = {**os.environ, **OFFLINE_ENV}
        env.pop("PYTHONPATH", None)  # the trainer env must not see the app env's packages
        # Axolotl's CLI runs `accelerate launch` unless told not to; one CPU process is enough.
        cmd = [str(self.axolotl_bin), "train", str(config_path), "--launcher", "python"]
        with log_path.open("a", encoding="utf-8") as log_fh:
            # Its own process group, so a kill takes the trainer's children (and their pipes) too.
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=str(output_dir),
                start_new_session=True,
            )
            assert proc.stdout is not None
            # A watchdog, not a check per output line: a hung trainer may print nothing at all.
            timed_out = threading.Event()

            def expire() -> None:
                timed_out.set()
                _kill_group(proc)

            watchdog = threading.Timer(timeout_s, expire)
            watchdog.start()
            tail: list[str] = []
            try:
                for line in proc.stdout:
                    log_fh.write(line)
                    tail = [*tail, line.rstrip()][-40:]
                    progress = _progress(line)
                    if progress:
                        log.info("axolotl: %s", progress)
                code = proc.wait()
            finally:
                watchdog.cancel()
                if proc.poll() is None:
                    _kill_group(proc)
                    proc.wait()
        if timed_out.is_set():
            raise TransientError(
                f"axolotl train exceeded training.timeout_s={timeout_s}; checkpoints kept in {output_dir}"
            )
        if code != 0:
            raise _training_failure(code, tail, log_path)
        if not all((output_dir / f).is_file() for f in ADAPTER_FILES):
            raise StageError(f"axolotl exited 0 but wrote no adapter in {output_dir}; see {log_path}")
        steps, loss = _final_state(output_dir)
        return TrainingRun(output_dir, steps, loss, str(resumed) if resumed else None, log_path)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


_LOSS = re.compile(r"'loss': '?([0-9.]+)")
_EPOCH = re.compile(r"'epoch': '?([0-9.]+)")
_RUNTIME = re.compile(r"'train_runtime': '?([0-9.]+)")


def _progress(line: str) -> str | None:
    """A one-line progress message from an Axolotl log line, or None if it is not one."""
    if runtime := _RUNTIME.search(line):
        return f"training finished in {float(runtime.group(1)):.1f} s"
    loss, epoch = _LOSS.search(line), _EPOCH.search(line)
    if loss and epoch:
        return f"epoch {float(epoch.group(1)):.2f} loss {float(loss.group(1)):.3f}"
    if "Resuming" in line or "resume_from_checkpoint" in line:
        return line.strip()[-160:]
    return None


def _training_failure(code: int, tail: list[str], log_path: Path) -> Exception:
    text = "\n".join(tail)
    if code < 0 or code in (137, 143):
        return TransientError(f"axolotl was killed (exit {code}), likely preempted; re-run resumes. Log: {log_path}")
    hint = ""
    if "num_samples=0" in text or "Dropped" in text:
        hint = " (every row was dropped: raise training.sequence_len)"
    last = next((ln for ln in reversed(tail) if re.search(r"(Error|Exception)", ln)), tail[-1] if tail else "")
    return StageError(f"axolotl train failed (exit {code}){hint}: {last.strip()} — full log: {log_path}")


def _final_state(output_dir: Path) -> tuple[int, float | None]:
    ckpt = latest_checkpoint(output_dir)
    if ckpt is None:
        return 0, None
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    losses = [h["loss"] for h in state.get("log_history", []) if "loss" in h]
    return int(state.get("global_step", 0)), (float(losses[-1]) if losses else None)


def finetune(
    snapshot: DatasetSnapshot,
    base: BaseModelArtifact,
    settings: TrainingSettings,
    store: LocalArtifactStore,
    launcher: TrainerLauncher,
    shuffle_labels: bool = False,
) -> AdapterArtifact:
    """Train a LoRA adapter on a dataset snapshot and store it with its lineage."""
    work_key = digest_json([snapshot.digest, base.digest, settings.model_dump(), shuffle_labels])
    work = store.scratch(f"finetune-{short(work_key, 16)}")
    train_path = write_training_data(snapshot, work / "train.jsonl", shuffle_labels, settings.seed)
    kept, too_long = filter_rows_that_fit(train_path, base.path, settings.sequence_len)
    if too_long:
        log.warning(
            "%d of %d training rows are longer than sequence_len=%d: left out",
            too_long,
            kept + too_long,
            settings.sequence_len,
        )
    output_dir = work / "out"
    output_dir.mkdir(exist_ok=True)
    cfg = render_axolotl_config(
        settings, base, train_path, output_dir, cpu=settings.device == "cpu", shape=snapshot.shape
    )
    config_path = work / "axolotl.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    run = launcher.train(config_path, output_dir, settings.timeout_s)

    staged = store.staging("adapter")
    for name in ADAPTER_FILES:
        shutil.copy2(run.adapter_dir / name, staged / name)
    shutil.copy2(config_path, staged / "axolotl.yaml")
    digest = digest_tree(staged, ignore=("axolotl.yaml",))
    meta = {
        "base_model": base.name,
        "base_digest": base.digest,
        "dataset_digest": snapshot.digest,
        "config_digest": training_config_digest(cfg),
        "steps": run.steps,
        "train_loss": run.train_loss,
        "rows_trained": kept,
        "rows_too_long": too_long,
    }
    (staged / "lockgate-adapter.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    _, path = store.commit("adapters", staged, digest)
    return AdapterArtifact(
        digest=digest,
        parents=(snapshot.digest, base.digest),
        path=str(path),
        base_model=base.name,
        base_digest=base.digest,
        dataset_digest=snapshot.digest,
        config_digest=meta["config_digest"],
        steps=run.steps,
        train_loss=run.train_loss,
        eval_loss=None,
        resumed_from=run.resumed_from,
    )
