"""Dataset prep: validate, clean, redact, dedupe, split and snapshot instruction/QA rows.

Bad rows are quarantined with the file, line, field and reason; they never vanish and
never take good rows down with them. The split is a pure function of each row's content,
so adding rows never moves an existing row between train and eval.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.digest import digest_file, digest_json
from lockgate.errors import DataError
from lockgate.records import DatasetSnapshot, QuarantinedRow
from lockgate.settings import DataSettings
from lockgate.store import LocalArtifactStore

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("instruction", "output")
OPTIONAL_FIELDS = ("context", "source_doc")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
EMAIL_PLACEHOLDER = "[EMAIL]"


@dataclass(frozen=True)
class RawRow:
    """One row as read, with where it came from."""

    source: str
    line: int
    raw: str
    value: Any


@dataclass
class PrepResult:
    """Rows that survived and rows that were set aside."""

    rows: list[dict[str, str]] = field(default_factory=list)
    quarantined: list[QuarantinedRow] = field(default_factory=list)
    duplicates: list[QuarantinedRow] = field(default_factory=list)
    redacted: int = 0


def read_rows(path: Path) -> Iterator[RawRow]:
    """Rows of a JSONL or CSV file; unparseable lines come back with ``value=None``."""
    if not path.is_file():
        raise DataError(f"{path}: source file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield RawRow(str(path), lineno, line.rstrip("\n"), _Unparsed(f"invalid JSON: {exc.msg}"))
                    continue
                yield RawRow(str(path), lineno, line.rstrip("\n"), value)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="", errors="replace") as fh:
            for lineno, rec in enumerate(csv.DictReader(fh), start=2):
                yield RawRow(str(path), lineno, json.dumps(rec), dict(rec))
    else:
        raise DataError(f"{path}: unsupported source format {suffix!r} (use .jsonl or .csv)")


@dataclass(frozen=True)
class _Unparsed:
    reason: str


def clean_text(text: str) -> str:
    """Unicode NFC, no control characters, runs of white space folded to one space."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return re.sub(r"\s+", " ", text).strip()


def validate_row(row: RawRow, settings: DataSettings) -> tuple[dict[str, str] | None, QuarantinedRow | None]:
    """Check one row against the schema; returns the cleaned row or the reason it was refused."""

    def refuse(fld: str | None, reason: str) -> tuple[None, QuarantinedRow]:
        return None, QuarantinedRow(source=row.source, line=row.line, field=fld, reason=reason, raw=row.raw[:2000])

    if isinstance(row.value, _Unparsed):
        return refuse(None, row.value.reason)
    if not isinstance(row.value, dict):
        return refuse(None, f"expected an object, got {type(row.value).__name__}")
    clean: dict[str, str] = {}
    for name in REQUIRED_FIELDS + OPTIONAL_FIELDS:
        value = row.value.get(name)
        if value is None:
            if name in REQUIRED_FIELDS:
                return refuse(name, "missing required field")
            clean[name] = ""
            continue
        if not isinstance(value, str):
            return refuse(name, f"expected a string, got {type(value).__name__}")
        value = clean_text(value)
        if name in REQUIRED_FIELDS and len(value) < settings.min_chars:
            return refuse(name, f"shorter than {settings.min_chars} characters")
        if len(value) > settings.max_chars:
            return refuse(name, f"longer than {settings.max_chars} characters")
        clean[name] = value
    return clean, None


def redact(row: dict[str, str]) -> tuple[dict[str, str], int]:
    """Replace e-mail addresses in every field; returns the row and how many were replaced."""
    count = 0
    out = {}
    for key, value in row.items():
        new, n = EMAIL.subn(EMAIL_PLACEHOLDER, value)
        out[key] = new
        count += n
    return out, count


def row_key(row: dict[str, str]) -> str:
    """Identity of a row for exact dedupe."""
    return digest_json([row["instruction"], row.get("context", ""), row["output"]])


def split_of(row: dict[str, str], eval_fraction: float) -> str:
    """'train' or 'eval', from the row's answer group alone.

    Both phrasings of one fact (same context and answer) land on the same side, so the eval
    set never asks a training question in other words.
    """
    group = f"{row.get('context', '')}\x1f{row['output']}".encode()
    bucket = int.from_bytes(hashlib.sha256(group).digest()[:8], "big") / 2**64
    return "eval" if bucket < eval_fraction else "train"


def prepare_rows(sources: list[Path], settings: DataSettings) -> PrepResult:
    """Validate, clean, redact and dedupe the rows of every source, in order."""
    result = PrepResult()
    seen: dict[str, str] = {}
    for source in sources:
        for raw in read_rows(source):
            row, bad = validate_row(raw, settings)
            if bad is not None:
                result.quarantined.append(bad)
                continue
            assert row is not None
            if settings.redact_emails:
                row, n = redact(row)
                result.redacted += n
            key = row_key(row)
            if key in seen:
                result.duplicates.append(
                    QuarantinedRow(
                        source=raw.source,
                        line=raw.line,
                        field=None,
                        reason=f"exact duplicate of {seen[key]}",
                        raw=raw.raw[:2000],
                    )
                )
                continue
            seen[key] = f"{raw.source}:{raw.line}"
            result.rows.append(row)
    return result


def snapshot_dataset(sources: list[Path], settings: DataSettings, store: LocalArtifactStore) -> DatasetSnapshot:
    """Run the whole prep stage and store a content-addressed snapshot.

    Raises:
        DataError: when no row survives, or more than ``max_quarantine_fraction`` is bad;
            the message names the first bad rows.
    """
    result = prepare_rows(sources, settings)
    total = len(result.rows) + len(result.quarantined) + len(result.duplicates)
    if total == 0:
        raise DataError(f"no rows found in {[str(s) for s in sources]}")
    bad_share = len(result.quarantined) / total
    if not result.rows or bad_share > settings.max_quarantine_fraction:
        raise DataError(
            f"{len(result.quarantined)} of {total} rows quarantined ({bad_share:.0%} > "
            f"{settings.max_quarantine_fraction:.0%} allowed); first: {describe(result.quarantined[:5])}"
        )
    if result.quarantined:
        log.info("quarantined %d row(s); first: %s", len(result.quarantined), describe(result.quarantined[:1]))

    train = [r for r in result.rows if split_of(r, settings.eval_fraction) == "train"]
    evals = [r for r in result.rows if split_of(r, settings.eval_fraction) == "eval"]
    if not train or not evals:
        raise DataError(f"split left train={len(train)} eval={len(evals)} rows; need both non-empty")

    staged = store.staging("dataset")
    _write_jsonl(staged / "train.jsonl", train)
    _write_jsonl(staged / "eval.jsonl", evals)
    # The digest covers what training sees, so re-quarantining the same bad rows or a new
    # timestamp never makes a new version.
    digest = digest_json(
        {
            "name": settings.name,
            "train": digest_file(staged / "train.jsonl"),
            "eval": digest_file(staged / "eval.jsonl"),
        }
    )
    _write_jsonl(staged / "quarantine.jsonl", [q.model_dump() for q in result.quarantined + result.duplicates])
    source_digests = {str(s): digest_file(s) for s in sources}
    card = dataset_card(settings.name, digest, train, evals, result, source_digests)
    (staged / "CARD.md").write_text(card, encoding="utf-8")
    # The folder is keyed by everything in it (card and quarantine too), so a run that sets
    # aside other rows gets its own card even when train/eval, and so the digest, are unchanged.
    _, path = store.commit("datasets", staged)
    return DatasetSnapshot(
        digest=digest,
        parents=tuple(sorted(source_digests.values())),
        name=settings.name,
        path=str(path),
        train_path=str(path / "train.jsonl"),
        eval_path=str(path / "eval.jsonl"),
        quarantine_path=str(path / "quarantine.jsonl"),
        card_path=str(path / "CARD.md"),
        n_train=len(train),
        n_eval=len(evals),
        n_quarantined=len(result.quarantined),
        n_duplicates=len(result.duplicates),
        n_redacted=result.redacted,
        source_digests=source_digests,
    )


def describe(rows: list[QuarantinedRow]) -> str:
    """Human-readable list of quarantined rows: file:line field: reason."""
    return "; ".join(f"{q.source}:{q.line} [{q.field or 'row'}] {q.reason}" for q in rows)


def dataset_card(
    name: str,
    digest: str,
    train: list[dict[str, str]],
    evals: list[dict[str, str]],
    result: PrepResult,
    source_digests: dict[str, str],
) -> str:
    """A markdown card: what is in the snapshot and what was set aside."""
    lines = [
        f"# Dataset `{name}`",
        "",
        f"- digest: `{digest}`",
        f"- train rows: {len(train)}",
        f"- eval rows: {len(evals)}",
        f"- quarantined: {len(result.quarantined)}",
        f"- exact duplicates dropped: {len(result.duplicates)}",
        f"- e-mail addresses redacted: {result.redacted}",
        "",
        "## Sources",
        "",
    ]
    lines += [f"- `{src}` `{d}`" for src, d in source_digests.items()]
    if result.quarantined or result.duplicates:
        lines += ["", "## Set aside", "", "| source | line | field | reason |", "|---|---|---|---|"]
        lines += [
            f"| {q.source} | {q.line} | {q.field or ''} | {q.reason} |" for q in result.quarantined + result.duplicates
        ]
    return "\n".join(lines) + "\n"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file written by Lockgate."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
