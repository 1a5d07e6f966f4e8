"""Source readers: JSONL, CSV and Parquet, from a local path or any fsspec URL, one record at a time.

A reader never stops on a bad record. Whatever goes wrong while reading one record (bytes
that do not decode, broken JSON, a 5000-digit integer, brackets nested a thousand deep, a
CSV record with the wrong number of fields or an unterminated quote) comes back as that
record with ``error`` set, and the records around it are read as usual. Line numbers are
the file's physical lines (1-based), where the record starts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lockgate.errors import DataError

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
RAW_KEEP = 2000  # characters of a bad record kept for the quarantine file
# Characters of a record's text read with it: redaction runs on these and only then is the
# copy cut to RAW_KEEP, so a secret that crosses the cut is whole when it is looked for.
RAW_READ = 2 * RAW_KEEP


@dataclass(frozen=True)
class RawRecord:
    """One record as read: its value, or why it could not be read; ``blank`` for an empty line.

    ``raw`` is the record's text, up to ``RAW_READ`` characters and not redacted: redact it,
    then cut it to ``RAW_KEEP``, before it is kept anywhere.
    """

    source: str
    line: int
    raw: str
    value: dict[str, Any] | None = None
    error: str | None = None
    blank: bool = False


def is_url(source: str) -> bool:
    """Whether a source names an fsspec URL (``s3://``, ``memory://``...) rather than a local path."""
    return "://" in source


def source_format(source: str) -> str:
    """'jsonl', 'csv' or 'parquet', from the file name.

    Raises:
        DataError: for any other suffix.
    """
    name = source.split("?", 1)[0].rstrip("/")
    suffix = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name.rsplit("/", 1)[-1] else ""
    if suffix not in FORMATS:
        raise DataError(f"{source}: unsupported source format {suffix!r} (use .jsonl, .csv or .parquet)")
    return FORMATS[suffix]


@contextmanager
def open_binary(source: str) -> Iterator[IO[bytes]]:
    """Open a local path or an fsspec URL for reading bytes.

    Raises:
        DataError: when it does not exist.
    """
    if not is_url(source):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{source}: source file not found")
        with path.open("rb") as fh:
            yield fh
        return
    import fsspec

    try:
        opened = fsspec.open(source, "rb")
        fh = opened.open()
    except FileNotFoundError:
        raise DataError(f"{source}: source file not found") from None
    except (ImportError, ValueError) as exc:
        raise DataError(f"{source}: cannot open this URL: {exc}") from None
    try:
        yield fh
    finally:
        fh.close()


def source_digest(source: str) -> str:
    """SHA-256 of a source's bytes, streamed."""
    h = hashlib.sha256()
    with open_binary(source) as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return "sha256:" + h.hexdigest()


def read_source(source: str, encoding: str = "utf-8", max_record_lines: int = 200) -> Iterator[RawRecord]:
    """Every record of one source, in file order.

    Args:
        encoding: the text encoding of JSONL and CSV sources; a UTF-8 BOM is always skipped.
        max_record_lines: a quoted CSV field may span at most this many lines; a longer one is
            taken for an unterminated quote and quarantined, and reading resumes on the next line.

    Raises:
        DataError: when the source is missing, of an unknown format or not readable at all.
    """
    fmt = source_format(source)
    if fmt == "jsonl":
        yield from _read_jsonl(source, encoding)
    elif fmt == "csv":
        yield from _read_csv(source, encoding, max_record_lines)
    else:
        yield from _read_parquet(source)


def _lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for lineno, line in enumerate(fh, start=1):
        # A BOM opens the file, or a file concatenated into it: never part of a record.
        if line == BOM:  # a file holding only its BOM holds no record
            return
        if line.startswith(BOM):
            line = line[len(BOM) :]
        yield lineno, line.rstrip(b"\r\n")


def _preview(data: bytes, encoding: str) -> str:
    return data[: RAW_READ * 4].decode(encoding, errors="backslashreplace")[:RAW_READ]


def _read_jsonl(source: str, encoding: str) -> Iterator[RawRecord]:
    with open_binary(source) as fh:
        for lineno, data in _lines(fh):
            if not data.strip():
                yield RawRecord(source, lineno, "", blank=True)
                continue
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError as exc:
                yield RawRecord(
                    source, lineno, _preview(data, encoding), error=f"not valid {encoding} (byte {exc.start})"
                )
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRecord(source, lineno, text[:RAW_READ], error=f"invalid JSON: {exc.msg}")
                continue
            except RecursionError:
                yield RawRecord(source, lineno, text[:RAW_READ], error="invalid JSON: nested too deeply")
                continue
            except ValueError as exc:  # e.g. an integer longer than Python's digit limit
                yield RawRecord(source, lineno, text[:RAW_READ], error=f"invalid JSON: {exc}")
                continue
            if not isinstance(value, dict):
                yield RawRecord(
                    source, lineno, text[:RAW_READ], error=f"expected an object, got {type(value).__name__}"
                )
                continue
            yield RawRecord(source, lineno, text[:RAW_READ], value=value)


class _NeedMore(Exception):
    pass


def _parse_csv_record(text: str) -> list[str]:
    """Exactly one CSV record from ``text``, strictly; ``_NeedMore`` if a quote is still open."""
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise _NeedMore from None
        raise
    if len(rows) != 1:
        raise _NeedMore
    return rows[0]


def _read_csv(source: str, encoding: str, max_record_lines: int) -> Iterator[RawRecord]:
    with open_binary(source) as fh:
        lines = _lines(fh)
        pending: deque[tuple[int, bytes]] = deque()
        header: list[str] | None = None

        def pull(n: int) -> bool:
            while len(pending) < n:
                nxt = next(lines, None)
                if nxt is None:
                    return False
                pending.append(nxt)
            return True

        while pull(1):
            start, first = pending[0]
            if not first.strip():
                pending.popleft()
                yield RawRecord(source, start, "", blank=True)
                continue
            record: list[str] | None = None
            error: str | None = None
            used = 1
            text = ""
            while True:
                try:
                    text = "\n".join(b.decode(encoding) for _, b in list(pending)[:used]) + "\n"
                except UnicodeDecodeError as exc:
                    error, used = f"not valid {encoding} (byte {exc.start})", 1
                    break
                try:
                    record = _parse_csv_record(text)
                    break
                except _NeedMore:
                    if used >= max_record_lines or not pull(used + 1):
                        error, used = "unterminated quote (the record never closes its quoted field)", 1
                        break
                    used += 1
                except csv.Error as exc:
                    error, used = f"invalid CSV: {exc}", 1
                    break
            raw_lines = [pending.popleft() for _ in range(used)]
            raw = _preview(b"\n".join(b for _, b in raw_lines), encoding)
            where = f"lines {start}-{raw_lines[-1][0]}" if used > 1 else f"line {start}"
            if header is None:
                # Without its header no record of the file can be read: every one would be misnamed.
                if error is not None or record is None:
                    raise DataError(f"{source}:{start}: the CSV header cannot be read: {error or 'invalid CSV'}")
                header = [h.strip() for h in record]
                _check_header(source, start, header)
                continue
            if error is not None or record is None:
                yield RawRecord(source, start, raw, error=error or "invalid CSV")
                continue
            if len(record) != len(header):
                yield RawRecord(source, start, raw, error=f"expected {len(header)} fields, got {len(record)} ({where})")
                continue
            yield RawRecord(source, start, raw, value=dict(zip(header, record, strict=True)))


def _check_header(source: str, line: int, header: list[str]) -> None:
    """Unique, non-empty column names; the message gives positions, never the (unredacted) names."""
    empty = [i for i, name in enumerate(header, start=1) if not name]
    repeated = [i for i, name in enumerate(header, start=1) if name and name in header[: i - 1]]
    problems = [f"column {i} has no name" for i in empty] + [f"column {i} repeats an earlier name" for i in repeated]
    if problems:
        raise DataError(f"{source}:{line}: the CSV header needs unique, non-empty names: {'; '.join(problems)}")


def _read_parquet(source: str) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    with open_binary(source) as fh:
        try:
            pf = pq.ParquetFile(fh)
        except Exception as exc:
            raise DataError(f"{source}: not a readable Parquet file: {exc}") from None
        lineno = 0
        for batch in pf.iter_batches(batch_size=1024):
            for value in batch.to_pylist():
                lineno += 1
                try:
                    raw = json.dumps(value, ensure_ascii=False, default=str)[:RAW_READ]
                except (TypeError, ValueError):
                    raw = repr(value)[:RAW_READ]
                yield RawRecord(source, lineno, raw, value=value)
