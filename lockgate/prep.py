"""Dataset prep: read, validate, clean, redact, dedupe, split and snapshot training rows.

Every input record ends in exactly one outcome: kept (train or eval), blank, quarantined
(unreadable or invalid, with file, line, field and reason), filtered (a PII kind whose
policy is ``drop``), duplicate, near_duplicate, or leaked (a training row that copies an
eval question). The card prints each count and checks that they add up to the input.

Rows stream from the readers into a scratch SQLite file; nothing holds all rows in memory.
The split is a pure function of each row's content and the files are written in content
order, so adding rows never moves an existing row and shuffling files or rows changes
nothing.

Validating, redacting and fingerprinting a row is most of the work; it is done for chunks of
records (``prepare_chunk``), by ``data.workers`` processes when there is more than one chunk.
Outcomes are taken in input order and a row's index id is its place in the input, so the
files are byte for byte the same whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import logging
import multiprocessing
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from lockgate._io import usable_cores
from lockgate.artifacts import ArtifactStore
from lockgate.dedupe import DedupeIndex, Fingerprinter, IndexEntry
from lockgate.digest import digest_file, digest_json
from lockgate.errors import DataError, StageError
from lockgate.pii import KINDS, PiiRules, redact_text, scrub
from lockgate.readers import RAW_KEEP, RawRecord, is_url, read_source, source_digest
from lockgate.records import DatasetSnapshot, QuarantinedRow
from lockgate.rows import (
    SHAPES,
    RowError,
    Shape,
    chat_row,
    clean_text,
    dedupe_text,
    parse_row,
    question_text,
    telling_shape,
)
from lockgate.settings import DataSettings

__all__ = [
    "card_with_length_filter",
    "clean_text",
    "describe",
    "pii_rules",
    "prepare",
    "prepare_chunk",
    "snapshot_dataset",
    "snapshot_digest",
    "split_of",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTCOMES = ("train", "eval", "blank", "quarantined", "filtered", "duplicate", "near_duplicate", "leaked")
CARD_ROWS = 50  # rows listed by name on the card; the quarantine file has them all
MAX_REASONS = 100  # distinct reasons counted per outcome
CHUNK_ROWS = 1000  # records prepared together: enough to amortise numpy and process hand-offs
REASON_KEEP = 300  # characters of a reason kept (after redaction: a reason may quote the row)


def pii_rules(settings: DataSettings) -> PiiRules:
    """The redaction rules the data settings ask for."""
    return PiiRules(
        policies={
            "email": settings.pii_email,
            "phone": settings.pii_phone,
            "card": settings.pii_card,
            "ip": settings.pii_ip,
            "secret": settings.pii_secret,
        },
        phone_region=settings.phone_region,
        secret_min_length=settings.secret_min_length,
        secret_min_entropy=settings.secret_min_entropy,
    )


def split_of(row: dict[str, Any], eval_fraction: float) -> str:
    """'train' or 'eval', from the row's answer group alone.

    Both phrasings of one fact (same context and answer) land on the same side, so the eval
    set never asks a training question in other words.
    """
    group = f"{row.get('context', '')}\x1f{row['output']}".encode()
    bucket = int.from_bytes(hashlib.sha256(group).digest()[:8], "big") / 2**64
    return "eval" if bucket < eval_fraction else "train"


@dataclass
class PrepResult:
    """Where the prepared files are and what happened to every input record."""

    shape: Shape
    train_path: Path
    eval_path: Path
    quarantine_path: Path
    counts: Counter[str] = field(default_factory=Counter)
    pii_found: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)
    first_set_aside: list[QuarantinedRow] = field(default_factory=list)
    n_input: int = 0

    @property
    def n_set_aside(self) -> int:
        return self.n_input - self.counts["train"] - self.counts["eval"] - self.counts["blank"]

    def balanced(self) -> bool:
        """The accounting identity: every input record has exactly one outcome."""
        return self.n_input == sum(self.counts[o] for o in OUTCOMES)


def _scrub_row(row: dict[str, Any], rules: PiiRules) -> tuple[dict[str, Any], Counter[str], list[str]]:
    """Redact a cleaned row's own fields (derived copies follow them)."""
    found: Counter[str] = Counter()
    drop: list[str] = []

    def one(text: str) -> str:
        s = scrub(text, rules)
        if s.found:  # most texts hold nothing (and nothing to drop)
            found.update(s.found)
            drop.extend(k for k in s.drop if k not in drop)
        return s.text

    if "messages" in row:
        out = chat_row([{"role": m["role"], "content": one(m["content"])} for m in row["messages"]])
    else:
        out = {k: one(v) for k, v in row.items() if k != "context" or "input" not in row}
        if "input" in row:
            out["context"] = out["input"]
    return out, found, drop


def for_source(options: dict[str, T], source: str) -> T | None:
    """The option set for one source, keyed as written in ``data.sources`` (sources arrive
    resolved against the project root, so a relative key matches the end of the path)."""
    if source in options:
        return options[source]
    for key, value in options.items():
        if not is_url(key) and source.endswith("/" + key.removeprefix("./")):
            return value
    return None


class _Shapes:
    """The record shape of each file, set in the settings or detected from its keys.

    Many records fit more than one shape (an alpaca row without ``input`` is also a qa row).
    Such a record takes its file's shape: the shape of the first record in the file that gives
    it away, looked for before the file is read (a file whose first record tells costs one
    record; a file where none tells is read twice). A file where no record tells takes the
    dataset's shape, from the other files or the settings, else ``qa``. Only telling records
    and files whose shape is set count when checking that the dataset holds one shape.
    """

    def __init__(self, settings: DataSettings, sources: list[str], rules: PiiRules) -> None:
        self.settings = settings
        self.by_source: dict[str, tuple[Shape, str] | None] = {}
        self._set_by_source: dict[str, Shape | None] = {}
        found: list[Shape] = []
        for source in sources:
            chosen = self._set(source)
            if chosen is None:
                detected = self.by_source[source] = self._detect(source, rules)
                chosen = detected[0] if detected else None
            if chosen is not None:
                found.append(chosen)
        self.default: Shape = found[0] if found else "qa"

    def _set(self, source: str) -> Shape | None:
        if source not in self._set_by_source:  # asked once a record: looked up once a source
            chosen = for_source(self.settings.source_shapes, source) or self.settings.shape
            self._set_by_source[source] = None if chosen == "auto" else chosen  # type: ignore[assignment]
        return self._set_by_source[source]

    def _detect(self, source: str, rules: PiiRules) -> tuple[Shape, str] | None:
        for record in _guarded(source, self.settings, rules):
            if record.value is not None and (told := telling_shape(record.value)) is not None:
                return told, f"line {record.line}"
        return None

    def of(self, record: RawRecord, value: dict[str, Any]) -> tuple[Shape, bool]:
        """The record's shape, and whether it says so (its keys tell, or its file's shape is set).

        Raises:
            DataError: when the record's keys tell another shape than its file's.
        """
        chosen = self._set(record.source)
        if chosen is not None:
            return chosen, True
        known = self.by_source.get(record.source)
        told = telling_shape(value)
        if told is None:
            return (known[0] if known else self.default), False
        if known is not None and known[0] != told:
            raise DataError(
                f"{record.source}: the file mixes record shapes: {known[1]} is {known[0]}, line {record.line} is "
                f"{told}; split it into one file per shape, or set data.shape to one of {list(SHAPES)}"
            )
        return told, True


def prepare(
    sources: Iterable[str | Path], settings: DataSettings, work: Path, chunk_rows: int = CHUNK_ROWS
) -> PrepResult:
    """Read every source and write ``train.jsonl``, ``eval.jsonl`` and ``quarantine.jsonl`` under ``work``.

    Records are validated, redacted and fingerprinted in chunks of ``chunk_rows``, by
    ``data.workers`` processes once there is more than one chunk; the chunks' outcomes are
    taken in input order, so the files are the same whatever the number of processes.

    Raises:
        DataError: for a missing or unreadable source, a file that mixes shapes, or sources
            of different shapes.
    """
    rules = pii_rules(settings)
    names = [str(s) for s in sources]
    shapes = _Shapes(settings, names, rules)
    work.mkdir(parents=True, exist_ok=True)
    result = PrepResult(
        shape="qa" if settings.shape == "auto" else settings.shape,  # type: ignore[arg-type]
        train_path=work / "train.jsonl",
        eval_path=work / "eval.jsonl",
        quarantine_path=work / "quarantine.jsonl",
    )
    scratch = Path(tempfile.mkdtemp(prefix="prep-", dir=work.parent))
    index = DedupeIndex(
        scratch / "rows.sqlite",
        settings.minhash_permutations,
        settings.near_duplicate_threshold,
        settings.leakage_threshold,
    )
    seen_shapes: dict[Shape, str] = {}
    try:
        with result.quarantine_path.open("w", encoding="utf-8") as quarantine:

            def set_aside(q: QuarantinedRow) -> None:
                # A reason may quote the row (an exception's message): it is redacted like the row.
                q = q.model_copy(update={"reason": redact_text(q.reason, rules)[:REASON_KEEP]})
                result.counts[q.outcome] += 1
                reasons = result.reasons.setdefault(q.outcome, Counter())
                reason = _reason_class(q)
                # Bounded: a reason quoting each row's own error must not grow with the input.
                reasons[reason if reason in reasons or len(reasons) < MAX_REASONS else "(other reasons)"] += 1
                if len(result.first_set_aside) < CARD_ROWS:
                    result.first_set_aside.append(q)
                quarantine.write(q.model_dump_json() + "\n")

            def jobs() -> Iterator[RecordJob]:
                for source in names:
                    for record in _guarded(source, settings, rules):
                        result.n_input += 1
                        if record.blank:
                            result.counts["blank"] += 1
                        elif record.error is not None or record.value is None:
                            yield RecordJob(result.n_input, record, None, False)
                        else:
                            # Here, in input order: a file that mixes shapes stops the stage at its first such record.
                            yield RecordJob(result.n_input, record, *shapes.of(record, record.value))

            prepared = _prepared_chunks(_chunked(jobs(), chunk_rows), settings, _worker_count(settings))
            with contextlib.closing(prepared):  # the pool stops with the stage, also when it fails
                for outcomes in prepared:
                    entries: list[IndexEntry] = []
                    for outcome in outcomes:
                        if outcome.shape_seen_at is not None and outcome.shape is not None:
                            seen_shapes.setdefault(outcome.shape, outcome.shape_seen_at)
                        if outcome.found:
                            result.pii_found.update(outcome.found)
                        if outcome.entry is not None:
                            entries.append(outcome.entry)
                        elif outcome.aside is not None:
                            set_aside(outcome.aside)
                    index.add_entries(entries)
            if len(seen_shapes) > 1:
                where = ", ".join(f"{s} (first at {w})" for s, w in seen_shapes.items())
                raise DataError(f"the sources hold more than one record shape: {where}; use one shape per dataset")
            result.shape = next(iter(seen_shapes), shapes.default)
            index.resolve()
            for gone in index.set_aside():
                set_aside(
                    QuarantinedRow(
                        source=gone.source,
                        line=gone.line,
                        field=None,
                        reason=gone.reason,
                        raw=gone.raw,
                        outcome=gone.outcome,
                    )
                )
        kept = index.counts()
        for split, path in (("train", result.train_path), ("eval", result.eval_path)):
            # Sorted keys: a row's bytes, and so the snapshot's digest, never depend on its source's key order.
            # The index stores each row so (``json.dumps(row, ensure_ascii=False, sort_keys=True)``).
            with path.open("w", encoding="utf-8") as fh:
                for body in index.kept_json(split):
                    fh.write(body + "\n")
            result.counts[split] = kept.get(split, 0)
    finally:
        index.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return result


class RecordJob(NamedTuple):
    """A non-blank record to prepare: its place in the input (from 1, over all sources), its shape
    and whether it tells it (None for an unreadable record)."""

    ordinal: int
    record: RawRecord
    shape: Shape | None
    telling: bool


class RecordOutcome(NamedTuple):
    """What became of one record: set aside (``aside``) or ready for the index (``entry``), and
    the PII found in it; ``shape_seen_at`` names it when it is valid and tells its shape."""

    aside: QuarantinedRow | None
    entry: IndexEntry | None
    found: Counter[str] | None
    shape: Shape | None
    shape_seen_at: str | None


def prepare_chunk(jobs: list[RecordJob], settings: DataSettings) -> list[RecordOutcome]:
    """Validate, clean, redact and fingerprint a chunk of records, one outcome each, in order.

    A pure function of its arguments, so it runs in a worker process as well as in the stage's own.
    """
    rules = pii_rules(settings)
    outcomes: list[RecordOutcome] = []
    valid: list[tuple[int, tuple[int, dict[str, Any], str, str, int, tuple[str, str, str]]]] = []
    for job in jobs:
        record, shape = job.record, job.shape
        # Only set-aside records keep their text (redacted); kept rows are stored cleaned.
        raw = _Redacted(record.raw, rules)
        if record.error is not None or record.value is None or shape is None:
            aside = _quarantined_row(record, raw, None, record.error or "unreadable")
            outcomes.append(RecordOutcome(aside, None, None, None, None))
            continue
        try:
            row = parse_row(record.value, shape, settings.min_chars, settings.max_chars)
            row, found, drop = _scrub_row(row, rules)
        except RowError as err:
            outcomes.append(RecordOutcome(_quarantined_row(record, raw, err.field, err.reason), None, None, None, None))
            continue
        except DataError:
            raise
        except Exception as exc:  # one odd row must never stop the stage
            reason = f"could not validate: {type(exc).__name__}: {exc}"
            outcomes.append(RecordOutcome(_quarantined_row(record, raw, None, reason), None, None, None, None))
            continue
        seen_at = f"{record.source}:{record.line}" if job.telling else None
        if drop:
            reason = f"contains {', '.join(drop)} (policy: drop)"
            aside = _quarantined_row(record, raw, None, reason, "filtered")
            outcomes.append(RecordOutcome(aside, None, found, shape, seen_at))
            continue
        texts = (dedupe_text(row), question_text(row), row["output"])
        split = split_of(row, settings.eval_fraction)
        valid.append((len(outcomes), (job.ordinal, row, split, record.source, record.line, texts)))
        outcomes.append(RecordOutcome(None, None, found or None, shape, seen_at))  # None is cheaper to send back
    fingerprints = _fingerprinter(
        settings.minhash_permutations, settings.near_duplicate_threshold, settings.leakage_threshold
    )
    for (at, _), entry in zip(valid, fingerprints.entries([v for _, v in valid]), strict=True):
        outcomes[at] = outcomes[at]._replace(entry=entry)
    return outcomes


@functools.lru_cache(maxsize=4)
def _fingerprinter(num_perm: int, threshold: float, leakage_threshold: float) -> Fingerprinter:
    return Fingerprinter(num_perm, threshold, leakage_threshold)


def _chunked(jobs: Iterator[RecordJob], size: int) -> Iterator[list[RecordJob]]:
    chunk: list[RecordJob] = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _worker_count(settings: DataSettings) -> int:
    return settings.workers or usable_cores()


def _prepared_chunks(
    chunks: Iterator[list[RecordJob]], settings: DataSettings, workers: int
) -> Generator[list[RecordOutcome], None, None]:
    """``prepare_chunk`` of each chunk, in chunk order.

    With more than one worker and more than one chunk, chunks go to a process pool (``spawn``:
    the stage may run beside threads, which ``fork`` would copy mid-flight), at most two per
    worker ahead of the one taken, so memory stays bounded. One chunk is prepared here: starting
    processes would cost more than it saves.
    """
    head = list(itertools.islice(chunks, 2))
    if len(head) < 2 or workers <= 1:
        for chunk in itertools.chain(head, chunks):
            yield prepare_chunk(chunk, settings)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending: deque[Future[list[RecordOutcome]]] = deque()
        for chunk in itertools.chain(head, chunks):
            pending.append(pool.submit(prepare_chunk, chunk, settings))
            while len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _guarded(source: str, settings: DataSettings, rules: PiiRules) -> Iterator[RawRecord]:
    """The reader's records; a surprise inside the reader stops the stage, naming the file and line.

    A reader that raised cannot go on, so the rest of the file would go unread and uncounted:
    better no snapshot than one that silently misses rows.

    Raises:
        DataError: for a source that cannot be read to its end.
    """
    encoding = for_source(settings.source_encodings, source) or settings.encoding
    reader = read_source(source, encoding, settings.max_record_lines)
    last_line = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except DataError:
            raise
        except Exception as exc:
            detail = redact_text(f"{type(exc).__name__}: {exc}", rules)[:REASON_KEEP]
            raise DataError(f"{source}: reading stopped after line {last_line}, the rest is unread: {detail}") from None
        last_line = record.line
        yield record


class _Redacted:
    """A record's text, redacted and cut to ``RAW_KEEP`` only if it is needed (most records are kept, not copied)."""

    def __init__(self, text: str, rules: PiiRules) -> None:
        self.text, self.rules = text, rules

    def __str__(self) -> str:
        # Redacted first, then cut: a cut through a secret would leave part of it unrecognised.
        return redact_text(self.text, self.rules)[:RAW_KEEP]


def _quarantined_row(
    record: RawRecord, raw: _Redacted, field_name: str | None, reason: str, outcome: str = "quarantined"
) -> QuarantinedRow:
    """The quarantine file's entry for a record that is not kept, naming its file, line and field."""
    return QuarantinedRow(
        source=record.source, line=record.line, field=field_name, reason=reason, raw=str(raw), outcome=outcome
    )


def _reason_class(q: QuarantinedRow) -> str:
    """A reason without the row-specific parts, for the card's summary."""
    reason = q.reason.split(" of ", 1)[0] if q.outcome in ("duplicate", "near_duplicate") else q.reason
    if q.outcome == "leaked":
        reason = "near copy of an eval row"
    reason = reason.split(" (", 1)[0]
    return f"[{q.field}] {reason}" if q.field else reason


def snapshot_digest(name: str, result: PrepResult) -> str:
    """The digest of a snapshot of prepared files: its name and what training sees (train and eval)."""
    return digest_json({"name": name, "train": digest_file(result.train_path), "eval": digest_file(result.eval_path)})


def snapshot_dataset(sources: list[Path] | list[str], settings: DataSettings, store: ArtifactStore) -> DatasetSnapshot:
    """Run the whole prep stage and store a content-addressed snapshot.

    Raises:
        DataError: when no row survives, a split is empty, or more than
            ``max_quarantine_fraction`` of the records is bad; the message names the first bad rows.
    """
    names = [str(s) for s in sources]
    staged = store.staging("dataset")
    try:
        result = prepare(names, settings, staged)
        readable = result.n_input - result.counts["blank"]
        if readable == 0:
            raise DataError(f"no rows found in {names}")
        bad = result.counts["quarantined"]
        bad_share = bad / readable
        first_bad = [q for q in result.first_set_aside if q.outcome == "quarantined"][:5]
        if not (result.counts["train"] + result.counts["eval"]) or bad_share > settings.max_quarantine_fraction:
            raise DataError(
                f"{bad} of {readable} rows quarantined ({bad_share:.0%}; at most "
                f"{settings.max_quarantine_fraction:.0%} allowed), {result.counts['train'] + result.counts['eval']} "
                f"kept; first: {describe(first_bad or result.first_set_aside[:5])}"
            )
        if not result.counts["train"] or not result.counts["eval"]:
            raise DataError(
                f"split left train={result.counts['train']} eval={result.counts['eval']} rows; need both non-empty"
            )
        if not result.balanced():
            raise StageError(f"prep accounting does not add up: {dict(result.counts)} vs {result.n_input} input")
        if bad:
            log.info("quarantined %d row(s); first: %s", bad, describe(first_bad[:1]))
        # The digest covers what training sees, so re-quarantining the same bad rows or a new
        # timestamp never makes a new version.
        digest = snapshot_digest(settings.name, result)
        source_digests = {name: source_digest(name) for name in names}
        (staged / "CARD.md").write_text(dataset_card(settings.name, digest, result, source_digests), encoding="utf-8")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    # The folder is keyed by everything in it (card and quarantine too), so a run that sets
    # aside other rows gets its own card even when train/eval, and so the digest, are unchanged.
    _, path = store.commit("datasets", staged)
    counts = {o: result.counts[o] for o in OUTCOMES}
    return DatasetSnapshot(
        digest=digest,
        parents=tuple(sorted(source_digests.values())),
        name=settings.name,
        path=str(path),
        train_path=str(path / "train.jsonl"),
        eval_path=str(path / "eval.jsonl"),
        quarantine_path=str(path / "quarantine.jsonl"),
        card_path=str(path / "CARD.md"),
        n_train=counts["train"],
        n_eval=counts["eval"],
        n_quarantined=counts["quarantined"],
        n_duplicates=counts["duplicate"] + counts["near_duplicate"],
        n_redacted=sum(result.pii_found.values()),
        source_digests=source_digests,
        shape=result.shape,
        n_input=result.n_input,
        counts=counts,
        pii_found={k: result.pii_found[k] for k in KINDS},
    )


def describe(rows: list[QuarantinedRow]) -> str:
    """Human-readable list of set-aside rows: file:line field: reason."""
    return "; ".join(f"{q.source}:{q.line} [{q.field or 'row'}] {q.reason}" for q in rows)


def dataset_card(name: str, digest: str, result: PrepResult, source_digests: dict[str, str]) -> str:
    """A markdown card: what is in the snapshot, what was set aside and why, and that it adds up."""
    c = result.counts
    identity = " + ".join(f"{c[o]} {o}" for o in OUTCOMES)
    lines = [
        f"# Dataset `{name}`",
        "",
        f"- digest: `{digest}`",
        f"- record shape: {result.shape}",
        f"- train rows: {c['train']}",
        f"- eval rows: {c['eval']}",
        "",
        "## Every input record, by outcome",
        "",
        "| outcome | rows |",
        "|---|---|",
        *[f"| {o} | {c[o]} |" for o in OUTCOMES],
        f"| **input** | **{result.n_input}** |",
        "",
        f"input {result.n_input} = {identity}: {'holds' if result.balanced() else 'DOES NOT HOLD'}",
        "",
        "## PII and secrets found",
        "",
        "| kind | matches |",
        "|---|---|",
        *[f"| {k} | {result.pii_found[k]} |" for k in KINDS],
        "",
        "## Sources",
        "",
        *[f"- `{src}` `{d}`" for src, d in source_digests.items()],
    ]
    if result.reasons:
        lines += ["", "## Reasons", "", "| outcome | reason | rows |", "|---|---|---|"]
        for outcome in OUTCOMES:
            for reason, n in result.reasons.get(outcome, Counter()).most_common(20):
                lines.append(f"| {outcome} | {_cell(reason)} | {n} |")
    if result.first_set_aside:
        lines += ["", "## Set aside", "", "| source | line | outcome | field | reason |", "|---|---|---|---|---|"]
        lines += [
            f"| {q.source} | {q.line} | {q.outcome} | {q.field or ''} | {_cell(q.reason)} |"
            for q in result.first_set_aside
        ]
        if result.n_set_aside > len(result.first_set_aside):
            lines.append(f"\n… and {result.n_set_aside - len(result.first_set_aside)} more in quarantine.jsonl")
    return "\n".join(lines) + "\n"


def card_with_length_filter(card: str, base_model: str, sequence_len: int, trained: int, too_long: int) -> str:
    """The dataset card with the length filter's outcome, known only once the base model's tokenizer is:
    the train rows split into those trained on and those longer than ``sequence_len`` tokens."""
    lines = [
        "",
        "## Before training: length filter",
        "",
        f"Counted with the tokenizer of `{base_model}`, rows longer than training.sequence_len={sequence_len} "
        "tokens are left out of training (they stay in the snapshot).",
        "",
        "| train rows | rows |",
        "|---|---|",
        f"| trained on | {trained} |",
        f"| too long | {too_long} |",
        f"| **train split** | **{trained + too_long}** |",
    ]
    return card.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
