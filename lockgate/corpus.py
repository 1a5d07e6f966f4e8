"""The RAG corpus: documents split into chunks with stable ids and content digests.

Chunking a document costs tokenizer calls; a ``ChunkCache`` keeps each document's chunks under a
digest of its bytes and of everything that decides how it is cut (sizes, the tokenizer, the
redaction rules), so a refresh re-chunks only the documents that changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lockgate._io import atomic_write_text, usable_cores
from lockgate.digest import digest_bytes, digest_json, short
from lockgate.errors import ConfigError, DataError
from lockgate.pii import REDACT_ALL, PiiRules, redact_text

log = logging.getLogger(__name__)

DOC_SUFFIXES = (".md", ".markdown", ".txt")
# Documents are redacted before chunking, so no address or key reaches the embedder or the index.
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


class Tokenizer(Protocol):
    """The embedder's own tokenizer, as the chunker needs it."""

    max_input: int  # the longest input the embedder reads, special tokens included; the rest is cut off

    @property
    def identity(self) -> str:
        """Digest of what decides the tokens (vocabulary, normalisation, input limit): the chunk cache's key."""
        ...

    def count(self, text: str) -> int:
        """Tokens the embedder sees for ``text``, special tokens included."""
        ...

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token of ``text`` (special tokens excluded)."""
        ...

    def spans_batch(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """``spans`` of each of ``texts`` in one call, which lets other threads run meanwhile."""
        ...


@dataclass(frozen=True)
class TokenChunking:
    """Chunk sizes in tokens of the embedder's tokenizer.

    Raises:
        ConfigError: the size does not fit the embedder's input, or the overlap is not below half the size.
    """

    tokenizer: Tokenizer
    size: int
    overlap: int

    @property
    def specials(self) -> int:
        """Special tokens the tokenizer adds to every input."""
        cached = self.__dict__.get("_specials")
        if cached is None:
            cached = self.tokenizer.count("")
            object.__setattr__(self, "_specials", cached)
        return int(cached)

    @property
    def key(self) -> str:
        """Digest of everything that decides how a text is cut: sizes, the tokenizer and the chunker's limits."""
        return digest_json(
            {
                "size": self.size,
                "overlap": self.overlap,
                "tokenizer": self.tokenizer.identity,
                "max_input": self.tokenizer.max_input,
                "title_tokens": TITLE_TOKENS,
                "seam_margin": SEAM_MARGIN,
            }
        )

    def __post_init__(self) -> None:
        room = self.tokenizer.max_input - self.specials
        if self.size > room:
            raise ConfigError(
                f"embeddings.chunk_tokens {self.size} is over what the embedder reads: {self.tokenizer.max_input} "
                f"tokens, {room} after its special tokens; longer chunks would be cut off silently"
            )
        if not 0 <= self.overlap < self.size // 2:
            raise ConfigError(
                f"embeddings.chunk_overlap_tokens {self.overlap} must be at least 0 and below half of "
                f"embeddings.chunk_tokens ({self.size})"
            )


_SENTENCE_END = re.compile(r"[.!?:;]\s*$")
TITLE_TOKENS = 48  # at most this much of a long heading path goes into each chunk's embedded text


def _sections(text: str) -> list[tuple[list[str], str]]:
    """``(heading path, paragraph)`` for every paragraph; a heading line opens a section even
    without a blank line after it, so a heading always stays with the text under it."""
    titles: list[str] = []
    out: list[tuple[list[str], str]] = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        while lines and (heading := _HEADING.match(lines[0].strip())):
            level = len(heading.group(1))
            titles = [*titles[: level - 1], heading.group(2).strip()]
            lines = lines[1:]
        paragraph = " ".join(" ".join(lines).split())
        if paragraph:
            out.append((list(titles), paragraph))
    return out


def split_markdown(doc: str, text: str, max_chars: int, tokens: TokenChunking | None = None) -> list[Chunk]:
    """Split one document into paragraph chunks titled by their headings.

    With ``tokens``, paragraphs longer than ``tokens.size`` tokens are cut into windows of that
    many tokens overlapping by ``tokens.overlap``, ending at a sentence end where one is near, and
    no chunk's embedded text (title included) exceeds the embedder's input. Without it,
    paragraphs longer than ``max_chars`` are cut at sentence ends (or hard, if a sentence alone
    is too long). Chunk ids are the document's key and the chunk's position.
    """
    return chunks_of(doc, split_pieces(text, max_chars, tokens))


def chunks_of(doc: str, pieces: list[tuple[str, str]]) -> list[Chunk]:
    """The chunks of document ``doc`` from its ``(title, text)`` pieces, in order: ids are the
    document's key and the position."""
    doc_key = short(digest_bytes(doc.encode()), 12)
    return [
        Chunk(chunk_id=f"{doc_key}-{i:04d}", doc=doc, title=title, text=text) for i, (title, text) in enumerate(pieces)
    ]


def split_pieces(text: str, max_chars: int, tokens: TokenChunking | None = None) -> list[tuple[str, str]]:
    """``(title, text)`` of every chunk of one document (see ``split_markdown``): what the chunk cache keeps."""
    out: list[tuple[str, str]] = []
    fitted: dict[str, tuple[str, int]] = {}  # heading path -> (as embedded, its token cost)
    sections = _sections(text)
    # Every paragraph's tokens in one call: the tokenizer works while another thread chunks.
    spans = tokens.tokenizer.spans_batch([p for _, p in sections]) if tokens is not None else []
    for at, (titles, paragraph) in enumerate(sections):
        title = " / ".join(titles)
        if tokens is None:
            pieces = _cut(paragraph, max_chars)
        else:
            if title not in fitted:
                short_title = _fit_tokens(title, tokens.tokenizer, TITLE_TOKENS)
                cost = tokens.tokenizer.count(f"{short_title}: ") - tokens.specials if short_title else 0
                fitted[title] = (short_title, cost)
            title, title_cost = fitted[title]
            pieces = _cut_tokens(paragraph, spans[at], title, title_cost, tokens)
        out.extend((title, piece) for piece in pieces)
    return out


def _fit_tokens(text: str, tokenizer: Tokenizer, limit: int) -> str:
    spans = tokenizer.spans(text)
    return text if len(spans) <= limit else text[: spans[limit - 1][1]].rstrip()


# Token counts at the seams of title and text can differ from the sum of the parts by a few;
# a piece this far below the limit needs no exact recount.
SEAM_MARGIN = 8


def _cut_tokens(
    paragraph: str, spans: list[tuple[int, int]], title: str, title_cost: int, tokens: TokenChunking
) -> list[str]:
    tokenizer = tokens.tokenizer
    # The title is embedded with every piece: it takes its share of the input.
    size = max(8, min(tokens.size, tokenizer.max_input - tokens.specials - title_cost))
    pieces: list[str] = []
    start = 0
    while start < len(spans):
        end = min(start + size, len(spans))
        if end < len(spans):
            # Prefer a sentence end in the last third of the window.
            for cut in range(end, start + (2 * size) // 3, -1):
                if _SENTENCE_END.search(paragraph[: spans[cut - 1][1]]):
                    end = cut
                    break
        piece = paragraph[spans[start][0] : spans[end - 1][1]].strip()
        embedded = f"{title}: {piece}" if title else piece
        exact = (end - start) + title_cost + tokens.specials + SEAM_MARGIN > tokenizer.max_input
        while exact and end - start > 1 and tokenizer.count(embedded) > tokenizer.max_input:
            end -= 1  # tokens at the seams may merge differently: shrink until it truly fits
            piece = paragraph[spans[start][0] : spans[end - 1][1]].strip()
            embedded = f"{title}: {piece}" if title else piece
        pieces.append(piece)
        if end >= len(spans):
            break
        start = max(start + 1, end - tokens.overlap)
    return pieces


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


# Documents read and chunked at a time (on every core): their bytes are held until the window is done.
CHUNK_WINDOW = 64

# Bump when the chunker's code changes what it makes for the same input: every cached entry goes.
CHUNKER_VERSION = 1


def chunking_key(max_chars: int, pii: PiiRules, tokens: TokenChunking | None) -> str:
    """Digest of everything besides a document's bytes that decides its chunks."""
    return digest_json(
        {
            "chunker": CHUNKER_VERSION,
            "tokens": tokens.key if tokens is not None else None,
            "max_chars": None if tokens is not None else max_chars,
            "pii": json.dumps(dataclasses.asdict(pii), sort_keys=True, default=str),
        }
    )


class ChunkCache:
    """Each document's ``(title, text)`` pieces, kept in one JSON file under a digest of the
    document's bytes and the chunking key (``chunking_key``).

    A document whose bytes and chunking are unchanged is neither redacted nor tokenized again;
    changing the chunk sizes, the tokenizer or the redaction rules changes every key. ``save``
    keeps only the entries looked up since the file was read (documents gone drop out), and
    replaces the file atomically; a missing, unreadable or older file is an empty cache.
    """

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hits = 0
        self.misses = 0
        self._stored: dict[str, list[list[str]]] | None = None
        self._used: dict[str, list[list[str]]] = {}
        self._changed = False

    @staticmethod
    def key(chunking: str, content: bytes) -> str:
        """The entry of a document with bytes ``content`` chunked as ``chunking`` says."""
        return hashlib.sha256(chunking.encode() + b"\x00" + content).hexdigest()

    def _entries(self) -> dict[str, list[list[str]]]:
        if self._stored is None:
            self._stored = {}
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("version") == self.VERSION and isinstance(data.get("entries"), dict):
                    self._stored = data["entries"]
            except FileNotFoundError:
                pass
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("chunk cache %s unreadable (%s): every document is chunked again", self.path, exc)
        return self._stored

    def get(self, key: str) -> list[tuple[str, str]] | None:
        """The pieces kept under ``key``, or ``None``."""
        entry = self._entries().get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._used[key] = entry
        return [(title, text) for title, text in entry]

    def put(self, key: str, pieces: list[tuple[str, str]]) -> None:
        self._used[key] = [[title, text] for title, text in pieces]
        self._changed = True

    def save(self) -> None:
        """Write the entries used since the file was read, if that differs from what it holds."""
        if not self._changed and len(self._used) == len(self._entries()):
            return
        body = json.dumps({"version": self.VERSION, "entries": self._used}, ensure_ascii=False, separators=(",", ":"))
        atomic_write_text(self.path, body)
        self._stored, self._changed = dict(self._used), False


def load_corpus(
    root: Path,
    max_chars: int = 600,
    pii: PiiRules = REDACT_ALL,
    tokens: TokenChunking | None = None,
    cache: ChunkCache | None = None,
) -> list[Chunk]:
    """Every chunk of every document under ``root``, in a stable order, with PII and secrets redacted.

    ``tokens`` chunks by the embedder's tokens (see ``split_markdown``); without it, by characters.
    With ``cache``, a document chunked before with the same bytes and settings is not chunked again.

    Raises:
        DataError: if the folder is missing, holds no documents, or a file is not UTF-8.
    """
    files = check_corpus_dir(root)
    chunking = chunking_key(max_chars, pii, tokens) if cache is not None else ""
    chunks: list[Chunk] = []

    def cut(doc: tuple[Path, bytes]) -> list[tuple[str, str]]:
        path, raw = doc
        try:
            # As read_text reads it: universal newlines.
            text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        return split_pieces(redact_text(text, pii), max_chars, tokens)

    # Documents not in the cache are chunked on every core, a window of them at a time (the
    # tokenizer lets go of the GIL); the cache is looked up and filled here, in order.
    with ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="chunk") as pool:
        for start in range(0, len(files), CHUNK_WINDOW):
            window = [(path, path.read_bytes()) for path in files[start : start + CHUNK_WINDOW]]
            keys = [ChunkCache.key(chunking, raw) if cache is not None else "" for _, raw in window]
            kept = [cache.get(key) if cache is not None else None for key in keys]
            made = pool.map(cut, [doc for doc, pieces in zip(window, kept, strict=True) if pieces is None])
            for (path, _), key, pieces in zip(window, keys, kept, strict=True):
                if pieces is None:
                    pieces = next(made)
                    if cache is not None:
                        cache.put(key, pieces)
                chunks.extend(chunks_of(path.relative_to(root).as_posix(), pieces))
    if cache is not None:
        cache.save()
        log.info("chunk cache: %d documents reused, %d chunked", cache.hits, cache.misses)
    return chunks
