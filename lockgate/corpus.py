"""The RAG corpus: documents split into chunks with stable ids and content digests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lockgate.digest import digest_bytes, digest_json, short
from lockgate.errors import DataError
from lockgate.pii import KINDS, PiiRules, redact_text

DOC_SUFFIXES = (".md", ".markdown", ".txt")
# Documents are redacted before chunking, so no address or key reaches the embedder or the index.
REDACT_ALL = PiiRules(policies=dict.fromkeys(KINDS, "redact"))
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


@dataclass(frozen=True)
class Chunk:
    """One retrievable passage.

    ``chunk_id`` is stable for a position in a document (so an edit is an update, not a
    delete plus an add); ``content_digest`` changes whenever what is embedded changes.
    """

    chunk_id: str
    doc: str
    title: str
    text: str

    @property
    def embed_text(self) -> str:
        """What the embedder sees: the section title gives a bare paragraph its subject."""
        return f"{self.title}: {self.text}" if self.title else self.text

    @property
    def content_digest(self) -> str:
        return digest_json([self.doc, self.title, self.text])


def split_markdown(doc: str, text: str, max_chars: int) -> list[Chunk]:
    """Split one document into paragraph chunks titled by their headings.

    Paragraphs longer than ``max_chars`` are cut at sentence ends (or hard, if a sentence
    alone is too long).
    """
    titles: list[str] = []
    chunks: list[Chunk] = []
    doc_key = short(digest_bytes(doc.encode()), 12)
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        heading = _HEADING.match(block)
        if heading and "\n" not in block:
            level = len(heading.group(1))
            titles = [*titles[: level - 1], heading.group(2).strip()]
            continue
        for piece in _cut(" ".join(block.split()), max_chars):
            chunks.append(Chunk(chunk_id=f"{doc_key}-{len(chunks):04d}", doc=doc, title=" / ".join(titles), text=piece))
    return chunks


def _cut(paragraph: str, max_chars: int) -> list[str]:
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces: list[str] = []
    current = ""
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        while len(sentence) > max_chars:
            pieces.append(sentence[:max_chars])
            sentence = sentence[max_chars:]
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def check_corpus_dir(root: Path) -> list[Path]:
    """The corpus documents under ``root``, in a stable order.

    Raises:
        DataError: if the folder is missing or holds no documents.
    """
    if not root.is_dir():
        raise DataError(f"corpus folder not found: {root} (data.corpus_dir or --corpus)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in DOC_SUFFIXES)
    if not files:
        raise DataError(f"corpus folder {root} holds no documents ({', '.join(DOC_SUFFIXES)})")
    return files


def load_corpus(root: Path, max_chars: int, pii: PiiRules = REDACT_ALL) -> list[Chunk]:
    """Every chunk of every document under ``root``, in a stable order, with PII and secrets redacted.

    Raises:
        DataError: if the folder is missing, holds no documents, or a file is not UTF-8.
    """
    files = check_corpus_dir(root)
    chunks: list[Chunk] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        chunks.extend(split_markdown(path.relative_to(root).as_posix(), redact_text(text, pii), max_chars))
    return chunks
