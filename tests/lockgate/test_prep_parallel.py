"""Prep by a process pool writes the same files as prep in one process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lockgate.errors import DataError
from lockgate.prep import prepare
from lockgate.settings import DataSettings
from tests.conftest import write_jsonl


def corpus(n: int) -> list[str]:
    """Rows with exact and near duplicates, train/eval leaks, PII of every kind, and bad records."""
    rnd = random.Random(19)
    words = ["relay", "kiln", "gantry", "winch", "beacon", "ledger", "pylon", "sorter", "anchor", "forge"]
    rows: list[str] = []
    for i in range(n):
        pick = rnd.random()
        if rows and pick < 0.1:
            rows.append(rnd.choice(rows))  # an exact duplicate (or a repeated bad record)
            continue
        a, b = rnd.sample(words, 2)
        row = {
            "instruction": f"How do I reset the {a} {i} next to the {b}?",
            "context": f"The {a} {i} stands in bay {i % 7}.",
            "output": f"Hold the {a} {i} switch for {i % 9 + 2} seconds, then check the {b}.",
        }
        if pick < 0.16:
            rows.append(json.dumps({**row, "instruction": row["instruction"].replace(" the ", " teh ", 1)}))
        elif pick < 0.2:  # the same question and answer from another passage: a leak when the split differs
            rows.append(json.dumps({**row, "context": f"Bay {i % 7} has a {b} and other gear."}))
        elif pick < 0.25:
            row["context"] += " Call +1 415 555 0132 or mail ops.lead@example.com from 10.0.3.17."
        elif pick < 0.28:
            row["output"] += " The card on file is 4111 1111 1111 1111."
        elif pick < 0.3:  # a secret (dropped, by the settings below) or a credential (following it)
            row["context"] += rnd.choice([" The key is sk-live-4f9a8b7c6d5e4f3a2b1c.", " password: Tr0ub4dor&3"])
        elif pick < 0.33:
            rows.append('{"instruction": "broken record", ')
            continue
        elif pick < 0.35:
            row["output"] = ""  # too short
        elif pick < 0.37:
            row["instruction"] = 7  # type: ignore[assignment]
        rows.append(json.dumps(row))
    return rows


def test_a_process_pool_writes_the_same_files_as_one_process(tmp_path: Path) -> None:
    rows = corpus(400)
    first = write_jsonl(tmp_path / "a.jsonl", rows[:250])
    second = write_jsonl(tmp_path / "b.jsonl", ["", *rows[250:]])
    settings = DataSettings(eval_fraction=0.3, pii_secret="drop")

    def files(workers: int, chunk_rows: int) -> list[bytes]:
        work = tmp_path / f"work-{workers}-{chunk_rows}"
        result = prepare([first, second], settings.model_copy(update={"workers": workers}), work, chunk_rows)
        assert result.balanced()
        return [p.read_bytes() for p in (result.train_path, result.eval_path, result.quarantine_path)]

    whole = files(1, 10_000)  # one chunk, in this process
    quarantine = [json.loads(line) for line in whole[2].splitlines()]
    outcomes = {q["outcome"] for q in quarantine}
    assert {"duplicate", "near_duplicate", "leaked", "quarantined", "filtered"} <= outcomes, outcomes
    kept = whole[0] + whole[1]
    assert b"[EMAIL]" in kept and b"[PHONE]" in kept and b"[CARD]" in kept and b"[IP]" in kept
    assert files(1, 37) == whole  # chunks, in this process
    assert files(2, 37) == whole  # chunks, by two worker processes
    assert files(3, 64) == whole


def test_worker_count_is_validated() -> None:
    with pytest.raises(ValueError, match="workers"):
        DataSettings(workers=-1)
    assert DataSettings().workers == 0


def test_a_file_mixing_shapes_stops_a_pool_run_as_it_stops_one_process(tmp_path: Path) -> None:
    rows = [
        json.dumps({"instruction": f"What is unit {i}?", "context": "c", "output": f"Unit {i}."}) for i in range(90)
    ]
    rows.append(json.dumps({"instruction": "Alpaca?", "input": "x", "output": "Yes."}))
    src = write_jsonl(tmp_path / "mixed.jsonl", rows)
    messages = []
    for workers in (1, 2):
        with pytest.raises(DataError, match="mixes record shapes") as err:
            prepare([src], DataSettings(workers=workers), tmp_path / f"work-{workers}", chunk_rows=20)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "line 91 is alpaca" in messages[0]
