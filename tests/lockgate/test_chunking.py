"""Token-aware chunking: sizes in the embedder's own tokens, headings kept with their text,
nothing longer than the embedder reads, stable ids."""

from __future__ import annotations

import itertools
import re
import threading
import time
from pathlib import Path

import pytest

from lockgate import corpus
from lockgate.corpus import ChunkCache, TokenChunking, load_corpus, split_markdown
from lockgate.errors import ConfigError
from lockgate.pii import PiiRules


class WordTokenizer:
    """One token per word or punctuation mark, plus two special tokens, like a BERT tokenizer."""

    def __init__(self, max_input: int, identity: str = "words") -> None:
        self.max_input = max_input
        self.identity = identity
        self.calls = 0  # texts tokenized: what the chunk cache saves
        self.threads: set[str] = set()  # the threads that tokenized
        self._lock = threading.Lock()

    def spans(self, text: str) -> list[tuple[int, int]]:
        with self._lock:
            self.calls += 1
            self.threads.add(threading.current_thread().name)
        return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]

    def spans_batch(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        time.sleep(0.01)  # long enough that the pool starts every worker
        return [self.spans(text) for text in texts]

    def count(self, text: str) -> int:
        return len(self.spans(text)) + 2


LONG = " ".join(f"Sentence {i} says the relay holds {i} messages." for i in range(60))


def test_long_paragraphs_are_cut_in_overlapping_windows_within_the_size() -> None:
    tok = WordTokenizer(max_input=512)
    chunks = split_markdown("d.md", LONG, 600, TokenChunking(tok, size=40, overlap=8))
    assert len(chunks) > 5
    assert all(tok.count(c.text) - 2 <= 40 for c in chunks)
    for a, b in itertools.pairwise(chunks):
        assert set(a.text.split()[-3:]) & set(b.text.split()), "consecutive windows overlap"
    covered = " ".join(c.text for c in chunks)
    assert all(w in covered for w in LONG.split()), "no word is lost between windows"
    assert sum(c.text.endswith(".") for c in chunks[:-1]) >= len(chunks) // 2, "windows end at sentence ends"


def test_no_chunk_is_longer_than_the_embedder_reads_even_with_a_long_title() -> None:
    tok = WordTokenizer(max_input=64)
    title = " ".join(f"Heading{i}" for i in range(20))
    doc = f"# {title}\n\n## Sub\n\n{LONG}"
    chunks = split_markdown("d.md", doc, 600, TokenChunking(tok, size=60, overlap=4))
    assert chunks and all(tok.count(c.embed_text) <= 64 for c in chunks), [tok.count(c.embed_text) for c in chunks]
    assert all(c.title.startswith("Heading0") for c in chunks)


def test_headings_stay_with_their_text_even_without_a_blank_line() -> None:
    doc = "# Relay\nThe relay forwards messages.\n\n## Ports\nIt listens on 7400.\n\nIt retries twice.\n"
    chunks = split_markdown("r.md", doc, 600, TokenChunking(WordTokenizer(128), size=64, overlap=8))
    assert [(c.title, c.text) for c in chunks] == [
        ("Relay", "The relay forwards messages."),
        ("Relay / Ports", "It listens on 7400."),
        ("Relay / Ports", "It retries twice."),
    ]


def test_chunk_ids_are_stable_when_text_changes() -> None:
    tok = TokenChunking(WordTokenizer(512), size=40, overlap=8)
    before = split_markdown("d.md", f"# T\n\n{LONG}", 600, tok)
    after = split_markdown("d.md", f"# T\n\n{LONG.replace('holds 3 ', 'keeps 3 ')}", 600, tok)
    assert [c.chunk_id for c in after] == [c.chunk_id for c in before]
    assert [c.content_digest for c in after] != [c.content_digest for c in before]


def test_sizes_that_do_not_fit_the_embedder_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"chunk_tokens 300 is over what the embedder reads: 256 tokens, 254"):
        TokenChunking(WordTokenizer(256), size=300, overlap=8)
    with pytest.raises(ConfigError, match="below half"):
        TokenChunking(WordTokenizer(256), size=40, overlap=20)


@pytest.mark.slow
def test_minilm_chunks_never_exceed_its_input() -> None:
    from lockgate.embeddings import SentenceTransformerEmbedder

    tok = SentenceTransformerEmbedder().tokenizer()
    assert tok.max_input == 256
    text = "# Setup\n\n" + " ".join(f"Configure the léger relay-{i} (port {7400 + i}); it retries." for i in range(300))
    chunks = split_markdown("s.md", text, 600, TokenChunking(tok, size=250, overlap=16))
    assert len(chunks) > 5 and max(tok.count(c.embed_text) for c in chunks) <= 256


def write_docs(root: Path, n: int) -> None:
    root.mkdir(exist_ok=True)
    for i in range(n):
        (root / f"doc{i}.md").write_text(f"# Doc {i}\n\n## Part\n\n{LONG}\n\nThe relay {i} holds.\n", encoding="utf-8")


def test_an_unchanged_document_is_not_chunked_again(tmp_path: Path) -> None:
    write_docs(tmp_path / "corpus", 10)
    tok = WordTokenizer(512)
    chunking = TokenChunking(tok, size=40, overlap=8)
    first = load_corpus(tmp_path / "corpus", tokens=chunking, cache=ChunkCache(tmp_path / "cache.json"))
    assert tok.calls > 0
    (tmp_path / "corpus" / "doc3.md").write_text("# Doc 3\n\nNow one short line.\n", encoding="utf-8")

    tok.calls = 0
    cache = ChunkCache(tmp_path / "cache.json")  # read back from disk, as the next refresh does
    second = load_corpus(tmp_path / "corpus", tokens=chunking, cache=cache)
    assert (cache.hits, cache.misses) == (9, 1)
    # Only the edited document was tokenized: as many calls as chunking it alone takes.
    alone = TokenChunking(WordTokenizer(512), size=40, overlap=8)
    alone.tokenizer.calls = 0  # type: ignore[attr-defined]
    split_markdown("doc3.md", (tmp_path / "corpus" / "doc3.md").read_text(), 600, alone)
    assert tok.calls == alone.tokenizer.calls > 0  # type: ignore[attr-defined]
    fresh = load_corpus(tmp_path / "corpus", tokens=TokenChunking(WordTokenizer(512), size=40, overlap=8))
    assert second == fresh  # what the cache gives is what chunking gives
    assert [c for c in first if c.doc != "doc3.md"] == [c for c in second if c.doc != "doc3.md"]


def test_other_chunking_parameters_or_tokenizer_or_redaction_chunk_again(tmp_path: Path) -> None:
    write_docs(tmp_path / "corpus", 4)
    path = tmp_path / "cache.json"
    first = TokenChunking(WordTokenizer(512), size=40, overlap=8)
    load_corpus(tmp_path / "corpus", tokens=first, cache=ChunkCache(path))
    for tokens, pii in [
        (TokenChunking(WordTokenizer(512), size=48, overlap=8), None),
        (TokenChunking(WordTokenizer(512), size=40, overlap=4), None),
        (TokenChunking(WordTokenizer(512, identity="other words"), size=40, overlap=8), None),
        (TokenChunking(WordTokenizer(256), size=40, overlap=8), None),
        (TokenChunking(WordTokenizer(512), size=40, overlap=8), PiiRules(policies={"email": "redact"})),
    ]:
        cache = ChunkCache(path)
        kwargs = {"pii": pii} if pii is not None else {}
        chunks = load_corpus(tmp_path / "corpus", tokens=tokens, cache=cache, **kwargs)
        assert (cache.hits, cache.misses) == (0, 4), (tokens, pii)
        assert chunks == load_corpus(tmp_path / "corpus", tokens=tokens, **kwargs)
        # Back to the first settings: this one's entries replaced theirs, so it chunks again too.
        load_corpus(tmp_path / "corpus", tokens=first, cache=ChunkCache(path))


def test_a_renamed_document_reuses_its_chunks_under_its_new_name_and_a_broken_cache_is_empty(tmp_path: Path) -> None:
    write_docs(tmp_path / "corpus", 2)
    chunking = TokenChunking(WordTokenizer(512), size=40, overlap=8)
    load_corpus(tmp_path / "corpus", tokens=chunking, cache=ChunkCache(tmp_path / "cache.json"))
    (tmp_path / "corpus" / "doc1.md").rename(tmp_path / "corpus" / "renamed.md")
    cache = ChunkCache(tmp_path / "cache.json")
    chunks = load_corpus(tmp_path / "corpus", tokens=chunking, cache=cache)
    assert cache.hits == 2 and chunks == load_corpus(tmp_path / "corpus", tokens=chunking)
    assert {c.doc for c in chunks} == {"doc0.md", "renamed.md"}

    (tmp_path / "cache.json").write_text("{not json", encoding="utf-8")
    cache = ChunkCache(tmp_path / "cache.json")
    assert load_corpus(tmp_path / "corpus", tokens=chunking, cache=cache) == chunks
    assert (cache.hits, cache.misses) == (0, 2)
    assert ChunkCache.key("a", b"x") != ChunkCache.key("b", b"x")


def test_documents_are_chunked_on_every_core_into_what_one_thread_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(40):
        (tmp_path / f"doc{i:02d}.md").write_text(f"# Part {i}\n\n{LONG[: 200 + 37 * i]}\n\n## More\n\n{LONG[i:]}\n")
    made = {}
    for cores in (1, 3):
        monkeypatch.setattr(corpus, "usable_cores", lambda cores=cores: cores)
        tok = WordTokenizer(max_input=512)
        made[cores] = load_corpus(tmp_path, tokens=TokenChunking(tok, size=40, overlap=8))
        assert len({name for name in tok.threads if name.startswith("chunk")}) == cores
    assert made[3] == made[1] and len(made[1]) > 80
