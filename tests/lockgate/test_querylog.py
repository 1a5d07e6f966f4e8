"""The gateway's query log read back as per-variant windows: last N, since a time, torn lines counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.errors import DataError
from lockgate.querylog import read_query_windows


def write_log(path: Path, rows: list[dict[str, object] | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def row(at: float, question: str, variant: str = "production", model: str = "sha256:p") -> dict[str, object]:
    return {"at": at, "question": question, "variant": variant, "model": model, "status": "ok"}


def test_each_variant_keeps_its_last_questions_oldest_first(tmp_path: Path) -> None:
    rows: list[dict[str, object] | str] = [row(t, f"q{t}") for t in range(10)]
    rows += [row(100 + t, f"c{t}", "canary", "sha256:c") for t in range(3)]
    read = read_query_windows(write_log(tmp_path / "q.jsonl", rows), last=4)
    assert sorted(read.windows) == ["canary", "production"]
    production = read.windows["production"]
    assert production.questions == ("q6", "q7", "q8", "q9") and production.seen == 10
    assert (production.first_at, production.last_at) == (6.0, 9.0) and production.models == ("sha256:p",)
    assert read.windows["canary"].questions == ("c0", "c1", "c2") and read.skipped == 0


def test_only_questions_since_a_time_and_bad_lines_are_counted_not_read(tmp_path: Path) -> None:
    rows: list[dict[str, object] | str] = [
        row(1, "old"),
        "{not json",
        {"at": 5, "variant": "production"},  # no question
        row(6, "   "),  # an empty question
        {"question": "when?", "variant": "production"},  # no time
        row(10, "new"),
        row(11, "newer"),
        '{"at": 12, "question": "torn',  # a crash mid-write
    ]
    read = read_query_windows(write_log(tmp_path / "q.jsonl", rows), last=100, since=5)
    assert read.windows["production"].questions == ("new", "newer")
    assert read.skipped == 5


def test_a_missing_log_is_one_clear_reason(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"query log .*q\.jsonl does not exist: no gateway has answered"):
        read_query_windows(tmp_path / "q.jsonl", last=10)
