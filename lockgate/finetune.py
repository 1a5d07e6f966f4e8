"""Fine-tuning with Axolotl, behind a launcher Protocol.

Lockgate speaks to Axolotl only through its public contract: a rendered YAML config and the
``axolotl`` CLI. Locally the launcher runs that CLI from the separate trainer environment
as a subprocess; in production the same config runs in a GPU image on a Kubernetes spot
pool. Training writes checkpoints into a work folder keyed by its inputs, so a preempted run
started again resumes from the last complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from lockgate._io import exclusive_lock, load_jsonl, write_jsonl
from lockgate.artifacts import ArtifactStore
from lockgate.chat import PLAIN_TEXT, ChatFormat, chat_format_of
from lockgate.checkpoints import CheckpointStore
from lockgate.digest import digest_json, digest_tree, short
from lockgate.errors import ConfigError, DataError
from lockgate.launchers import TrainerLauncher
from lockgate.launchers.local import ADAPTER_FILES, OFFLINE_ENV, LocalAxolotlLauncher, latest_checkpoint
from lockgate.prompts import GROUNDED_QA, PromptTemplate
from lockgate.records import AdapterArtifact, BaseModelArtifact, DatasetSnapshot
from lockgate.settings import TrainingSettings

log = logging.getLogger(__name__)

__all__ = ["OFFLINE_ENV", "LocalAxolotlLauncher", "finetune", "latest_checkpoint", "render_axolotl_config"]


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
    chat = chat_format_of(base.path)
    cfg: dict[str, Any] = {
        "base_model": base.path,
        "datasets": [axolotl_dataset(shape, train_path, prompt, chat)],
        # chat rows are rendered with the model's own template where it has one
        "chat_template": ("tokenizer_default" if chat.is_chat else "chatml") if shape == "chat" else None,
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
        # W&B logs the run; the work key is its id, so every resume continues the same run.
        "wandb_project": settings.wandb_project,
        "wandb_mode": settings.wandb_mode if settings.wandb_project else None,
        "wandb_run_id": f"lockgate-{output_dir.parent.name}" if settings.wandb_project else None,
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
    stable = {
        k: v for k, v in cfg.items() if k not in ("output_dir", "dataset_prepared_path") and not k.startswith("wandb_")
    }
    stable["datasets"] = [{k: v for k, v in d.items() if k != "path"} for d in cfg["datasets"]]
    return digest_json(stable)


def axolotl_dataset(
    shape: str, train_path: Path, prompt: PromptTemplate = GROUNDED_QA, chat: ChatFormat = PLAIN_TEXT
) -> dict[str, Any]:
    """The Axolotl ``datasets`` entry that trains on one record shape (qa, alpaca or chat).

    A qa row of a chat model is trained as the gateway will send it: the prompt as the user's
    turn inside the model's own chat template, the answer as the assistant's.
    """
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
            "format": chat.wrap_format(prompt.with_context),
            "no_input_format": chat.wrap_format(prompt.without_context),
        },
    }


# Axolotl's alpaca prompt, counted so a row's length is what the trainer will see.
_ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:\n"
)
_CHATML_TURN = "<|im_start|>{role}\n{content}<|im_end|>\n"


def training_text(row: dict[str, Any], prompt: PromptTemplate = GROUNDED_QA, chat: ChatFormat = PLAIN_TEXT) -> str:
    """The text the trainer tokenizes for one row of the snapshot, whatever its shape."""
    if "messages" in row:
        return "".join(_CHATML_TURN.format(**m) for m in row["messages"])
    if "input" in row:
        return _ALPACA_PROMPT.format(instruction=row["instruction"], input=row["input"]) + str(row["output"])
    return chat.wrap(prompt.render(row["instruction"], row.get("context", ""))) + " " + str(row["output"])


def filter_rows_that_fit(
    train_path: Path, tokenizer_path: str, sequence_len: int, prompt: PromptTemplate = GROUNDED_QA
) -> tuple[int, int]:
    """Drop training rows longer than ``sequence_len`` tokens, counted by the base model's own tokenizer.

    Axolotl would drop them silently (and crash on an empty data set); here they are counted.
    Rows stream through a temporary file beside ``train_path`` (kept lines unchanged), which
    replaces it only when enough rows fit. Returns ``(kept, dropped)``.

    Raises:
        DataError: when fewer than half of the rows fit (``train_path`` is left as it was).
    """
    import tempfile

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    chat = chat_format_of(tokenizer_path)
    kept, total, longest = 0, 0, 0
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=train_path.parent, prefix=f".{train_path.name}.", delete=False
    ) as out:
        fitting = Path(out.name)
    try:
        with train_path.open(encoding="utf-8") as rows, fitting.open("w", encoding="utf-8") as out:
            for line in rows:
                if not line.strip():
                    continue
                total += 1
                n = len(tok(training_text(json.loads(line), prompt, chat)).input_ids) + 1
                longest = max(longest, n)
                if n <= sequence_len:
                    kept += 1
                    out.write(line if line.endswith("\n") else line + "\n")
        if not kept or kept < total / 2:
            raise DataError(
                f"{train_path}: only {kept} of {total} rows fit training.sequence_len="
                f"{sequence_len} (longest {longest} tokens); raise sequence_len or shorten rows"
            )
        fitting.replace(train_path)
    finally:
        fitting.unlink(missing_ok=True)
    return kept, total - kept


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
    return write_jsonl(out, rows)


def _with_answer(row: dict[str, Any], answer: str) -> dict[str, Any]:
    if "messages" in row:
        *turns, last = row["messages"]
        return {**row, "output": answer, "messages": [*turns, {**last, "content": answer}]}
    return {**row, "output": answer}


def finetune(
    snapshot: DatasetSnapshot,
    base: BaseModelArtifact,
    settings: TrainingSettings,
    store: ArtifactStore,
    launcher: TrainerLauncher,
    shuffle_labels: bool = False,
) -> AdapterArtifact:
    """Train a LoRA adapter on a dataset snapshot and store it with its lineage.

    Training works in a folder keyed by what is trained (not how or where it runs), locked
    so two runs never train into the same output; checkpoints are copied to the checkpoint
    store (``training.checkpoint_url``, default ``<artifacts>/checkpoints``) as they appear.
    """
    work_key = digest_json([snapshot.digest, base.digest, settings.recipe(), shuffle_labels])
    name = f"finetune-{short(work_key, 16)}"
    work = Path(settings.work_dir) / name if settings.work_dir else store.scratch(name)
    work.mkdir(parents=True, exist_ok=True)
    root = settings.checkpoint_url.rstrip("/") if settings.checkpoint_url else str(store.root / "checkpoints")
    checkpoints = CheckpointStore(f"{root}/{short(work_key, 16)}", signing=store.signing)
    with work_lock(work):
        return _finetune_locked(snapshot, base, settings, store, launcher, shuffle_labels, work, checkpoints)


@contextmanager
def work_lock(work: Path) -> Iterator[None]:
    """Hold the work folder's lock; a second run of the same inputs waits (and says so)."""
    waiting = partial(log.info, "another run is training the same inputs in %s; waiting for it", work)
    with exclusive_lock(work / ".lock", None, waiting):
        yield


def _finetune_locked(
    snapshot: DatasetSnapshot,
    base: BaseModelArtifact,
    settings: TrainingSettings,
    store: ArtifactStore,
    launcher: TrainerLauncher,
    shuffle_labels: bool,
    work: Path,
    checkpoints: CheckpointStore,
) -> AdapterArtifact:
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
    run = launcher.train(config_path, output_dir, settings.timeout_s, checkpoints)

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
        "preemptions": run.preemptions,
        "steps_redone": run.steps_redone,
    }
    wandb_run = cfg.get("wandb_run_id")
    wandb_runs = (
        sorted(output_dir.glob(f"wandb/*run-*-{wandb_run}"), key=lambda p: p.stat().st_mtime) if wandb_run else []
    )
    meta["wandb_run"] = wandb_run if wandb_runs else None
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
        preemptions=run.preemptions,
        steps_redone=run.steps_redone,
        checkpoints=checkpoints.url if "://" in checkpoints.url else None,
        wandb_run=wandb_run if wandb_runs else None,
        wandb_dir=str(wandb_runs[-1]) if wandb_runs else None,
        rows_trained=kept,
        rows_too_long=too_long,
    )
