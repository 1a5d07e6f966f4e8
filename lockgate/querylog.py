"""The gateway's query log read back as windows of the questions users asked, one per variant.

The gateway appends one JSON line per answered request to ``<home>/serving/queries.jsonl``
(question already redacted, variant, model, prompt version, time). Query drift compares a
window of those questions with what production was trained on; this module only reads.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from lockgate.errors import DataError


@dataclass(frozen=True)
class QueryWindow:
    """The last questions one variant served.

    Attributes:
        variant: the gateway's variant (``production``, ``canary``, ...).
        questions: oldest first, at most the window's size.
        ids: each question's completion id (what ``/v1/feedback`` names; empty in rows logged
            before the gateway recorded it).
        models: the model digests that answered them (a deploy inside the window gives two).
        answers: each question's answer as the gateway logged it (empty where it logged none: an
            error, or a row written before the gateway logged answers).
        first_at: when the oldest was asked (Unix time).
        last_at: when the newest was asked.
        seen: rows of this variant in the log's time range (before the size cut).
    """

    variant: str
    questions: tuple[str, ...]
    ids: tuple[str, ...]
    models: tuple[str, ...]
    first_at: float
    last_at: float
    seen: int
    answers: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueryLogRead:
    """The windows read from a log, and the lines that were not query rows (counted, never guessed at)."""

    windows: dict[str, QueryWindow]
    skipped: int
    path: Path


def read_query_windows(path: Path, last: int, since: float | None = None) -> QueryLogRead:
    """The last ``last`` questions of each variant, asked at or after ``since`` (Unix time) if given.

    Reads the log in one pass, keeping only each variant's newest ``last`` rows. A line that is
    not JSON, or has no question text, is counted in ``skipped`` (a crash mid-write leaves a torn
    last line) and never becomes a question.

    Raises:
        DataError: the log does not exist (no gateway has written it yet).
    """
    require_log(path)
    tails: dict[str, deque[tuple[float, str, str, str, str]]] = {}
    seen: dict[str, int] = {}
    skipped = 0
    with path.open("r", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            question = row.get("question") if isinstance(row, dict) else None
            at = row.get("at") if isinstance(row, dict) else None
            if not isinstance(question, str) or not question.strip() or not isinstance(at, int | float):
                skipped += 1
                continue
            if since is not None and at < since:
                continue
            variant = str(row.get("variant") or "production")
            answer = row.get("answer")
            kept = (
                float(at),
                question,
                str(row.get("model") or ""),
                str(row.get("id") or ""),
                answer if isinstance(answer, str) else "",
            )
            tails.setdefault(variant, deque(maxlen=last)).append(kept)
            seen[variant] = seen.get(variant, 0) + 1
    windows = {
        variant: QueryWindow(
            variant=variant,
            questions=tuple(row[1] for row in rows),
            ids=tuple(row[3] for row in rows),
            models=tuple(sorted({row[2] for row in rows if row[2]})),
            first_at=rows[0][0],
            last_at=rows[-1][0],
            seen=seen[variant],
            answers=tuple(row[4] for row in rows),
        )
        for variant, rows in sorted(tails.items())
    }
    return QueryLogRead(windows=windows, skipped=skipped, path=path)


def require_log(path: Path) -> None:
    """Raises DataError when the query log does not exist (no gateway has written it yet)."""
    if not path.is_file():
        raise DataError(f"query log {path} does not exist: no gateway has answered a question here yet")
