"""Embedding backends side by side: refresh speed on a real-sized corpus and retrieval quality.

For each backend (``torch``, ``onnx-int8``, ``onnx-int8-blockwise``), in one run:

Speed, on a generated corpus of ``--docs`` documents (default 2,000, about 8,000 chunks):
(a) raw encode of exactly the chunks a refresh embeds; its speed-up over torch's raw encode;
(b) a full refresh into an empty collection (chunking with a cold chunk cache, embedding, Milvus
    Lite upserts), as a ratio to the raw encode just before it: target <= 1.05; for the fast
    backend, target < 60 s. (a) and (b) are measured ``--rounds`` times in turn (default 3) and
    their medians reported: ONNX Runtime's speed moves by up to 20% from minute to minute on a
    shared 2-core machine, more than the 5% a single pair could tell;
(c) an incremental refresh after editing 1% of the documents (their chunks come from the cache).

Retrieval quality, where a backend is measured by whether it finds the passage a question was
asked from (not by how closely it copies torch's vectors): hit@1, hit@5 and MRR@10 on
(1) the sample eval set: the eval split of ``examples/data/qa.jsonl`` (as prep splits it) over
    ``examples/corpus``; a hit is a chunk of the question's ``source_doc``;
(2) a generated labelled set: components sharing names and vocabulary, one paraphrased question
    per fact passage, whose answer lies in that passage alone; a hit is that passage's chunk.
A backend is acceptable when its hit@5 is within 1 point of torch's on both sets; ``fast``
(``lockgate.embeddings.FAST_BACKEND``) should be the fastest acceptable one.

Run: ``make bench`` (or ``python -m benchmarks.bench_refresh [--docs N]``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lockgate.artifacts import open_artifacts
from lockgate.corpus import Chunk, ChunkCache, TokenChunking, load_corpus
from lockgate.embeddings import BACKENDS, FAST_BACKEND, Embedder, open_embedder
from lockgate.prep import split_of
from lockgate.refresh import apply_refresh
from lockgate.settings import DataSettings, EmbeddingSettings
from lockgate.stores.milvus import MilvusStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WORDS = [
    "relay",
    "planner",
    "ledger",
    "sorter",
    "queue",
    "message",
    "retry",
    "port",
    "timeout",
    "worker",
    "batch",
    "index",
    "shard",
    "replica",
    "snapshot",
    "schema",
    "column",
    "record",
    "token",
    "window",
    "cache",
    "lease",
    "quorum",
    "leader",
    "follower",
    "commit",
    "rollback",
    "deploy",
    "canary",
    "alias",
    "version",
    "digest",
    "manifest",
    "chunk",
    "vector",
    "embed",
    "search",
    "filter",
    "metric",
    "budget",
    "alert",
    "config",
    "profile",
    "secret",
    "key",
    "rotate",
    "audit",
    "trace",
    "span",
    "latency",
    "throughput",
    "backlog",
    "drain",
    "pause",
    "resume",
]
FAST_INDEX_S = 60.0  # the fast backend indexes the full corpus in under this
REFRESH_OVER_RAW = 1.05  # a full refresh costs at most this multiple of a raw encode of its chunks
HIT5_SLACK = 0.01  # acceptable: hit@5 at most one point below torch's, on every labelled set


def write_corpus(root: Path, docs: int, seed: int = 0) -> None:
    """``docs`` markdown documents: a title, two sections of one to three paragraphs each."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for i in range(docs):
        lines = [f"# Component {i}"]
        for s in range(2):
            lines += ["", f"## Part {s}"]
            for _ in range(rng.randint(1, 3)):
                sentences = [
                    " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
                    for _ in range(rng.randint(2, 5))
                ]
                lines += ["", " ".join(sentences)]
        (root / f"doc{i:05d}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


# The generated labelled set. Every component shares its first and second name with others, every
# document has the same sections in the same words, and passages name other components; what tells
# passages apart is one component's name together with the subject asked about.
FIRST = [
    "Quill",
    "Marrow",
    "Fennel",
    "Tallow",
    "Brindle",
    "Corvid",
    "Sable",
    "Juniper",
    "Ashen",
    "Copper",
    "Hollow",
    "Linden",
    "Mosswood",
    "Pewter",
    "Russet",
    "Saffron",
    "Thistle",
    "Umber",
    "Wren",
    "Alder",
]
KINDS = ["Relay", "Planner", "Ledger", "Sorter", "Gateway", "Scheduler", "Archive", "Broker", "Monitor", "Indexer"]
TEAMS = [
    "Fleet",
    "Inventory",
    "Billing",
    "Platform",
    "Search",
    "Storage",
    "Routing",
    "Identity",
    "Payments",
    "Telemetry",
]
THINGS = ["robots", "sessions", "uploads", "streams", "clients", "jobs"]
# subject: (section title, passage template, question paraphrases). {n}: the component; {o}: another.
FACTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "port": (
        "Network",
        "Unlike the {o}, which listens on a port chosen at start-up, the {n} listens on port {port} and hands "
        "every request it accepts to the {o}.",
        (
            "On which port does the {n} accept connections?",
            "What port number should a client of the {n} connect to?",
            "Which TCP port is the {n} reachable on?",
        ),
    ),
    "retention": (
        "Storage",
        "The {n} keeps what it writes for {days} days in the bucket {bucket}; the {o} reads that bucket too, "
        "but how long the {o} keeps its own data is set elsewhere.",
        (
            "How long is data retained by the {n}?",
            "For how many days does the {n} hold on to its records?",
            "Where does the {n} store its data, and for how long?",
        ),
    ),
    "limit": (
        "Limits",
        "At most {limit} concurrent {things} are served by the {n}; past that it sheds load onto the {o}, "
        "whose own concurrency limit is documented with it.",
        (
            "How many simultaneous {things} can the {n} handle?",
            "What is the concurrency cap of the {n}?",
            "When does the {n} begin to refuse extra {things}?",
        ),
    ),
    "owner": (
        "Ownership",
        "The {team} team maintains the {n}, which first shipped in release {version}; the team that owns the "
        "{o} is a different one.",
        (
            "Which team owns the {n}?",
            "Who is responsible for maintaining the {n}?",
            "In which release did the {n} first appear?",
        ),
    ),
    "alert": (
        "Alerts",
        "The on-call engineer is paged when the backlog of the {n} grows past {backlog} messages; an alert "
        "about the {o} backlog follows its own threshold.",
        (
            "When does the {n} page someone?",
            "At what queue depth is an engineer alerted about the {n}?",
            "How big may the backlog of the {n} get before an alert fires?",
        ),
    ),
}

CHANGES = {
    "port": ("reloads the port it listens on without a restart", "accepts connections on a second port"),
    "retention": ("compacts its bucket before the retention window closes", "keeps its records a little longer"),
    "limit": ("reports when it nears its concurrency cap", "serves more concurrent clients than before"),
    "owner": ("has a new on-call rotation in the team that owns it", "was handed to another maintaining team"),
    "alert": ("pages the on-call engineer less often for short backlog spikes", "alerts on queue depth sooner"),
}


@dataclass(frozen=True)
class LabelledQuestion:
    """A question and what answers it: a chunk of ``doc`` (whole-document labels) or holding ``passage``."""

    question: str
    doc: str
    passage: str | None = None

    def answers(self, chunk: Chunk) -> bool:
        return chunk.doc == self.doc and (self.passage is None or self.passage in chunk.text)


def write_labelled_corpus(root: Path, docs: int, seed: int = 0) -> list[LabelledQuestion]:
    """``docs`` component documents of one intro and five fact passages each, and one paraphrased
    question per passage; every fact value is unique, so each answer lies in exactly one passage."""
    rng = random.Random(seed)
    names = [f"{first} {kind}" for first in FIRST for kind in KINDS]
    rng.shuffle(names)
    if docs > len(names):
        raise ValueError(f"at most {len(names)} labelled documents")
    names = names[:docs]
    ports = rng.sample(range(2000, 9999), docs)
    days = rng.sample(range(3, 3 + 4 * docs), docs)
    limits = rng.sample(range(8, 8 + 4 * docs), docs)
    backlogs = rng.sample(range(500, 500 + 50 * docs, 50), docs)
    versions = rng.sample([f"{a}.{b}" for a in range(1, 40) for b in range(10)], docs)
    root.mkdir(parents=True)
    questions: list[LabelledQuestion] = []
    for i, name in enumerate(names):
        doc = f"{name.lower().replace(' ', '-')}.md"
        values = {
            "n": name,
            "port": ports[i],
            "days": days[i],
            "bucket": f"s3://{name.split()[0].lower()}-{i:03d}-store",
            "limit": limits[i],
            "things": rng.choice(THINGS),
            "team": rng.choice(TEAMS),
            "version": versions[i],
            "backlog": backlogs[i],
        }
        lines = [
            f"# {name}",
            "",
            f"The {name} is one of the services between the {rng.choice(names)} and the "
            f"{rng.choice(names)}; it runs in every region.",
        ]
        for k, (section, template, asks) in enumerate(FACTS.values()):
            # Every component is the "other" one in another's passage on the same subject: a hard negative.
            other = names[(i + 1 + k) % docs]
            passage = template.format(o=other, **values)
            lines += ["", f"## {section}", "", passage]
            first, kind = name.split()
            # The question names the component as a reader would, not always as the document does.
            called = rng.choice([name, f"{first} {kind.lower()}", f"{kind.lower()} named {first}"])
            question = rng.choice(asks).format(**{**values, "n": called})
            questions.append(LabelledQuestion(question, doc, passage))
        (root / doc).write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Release notes: every component's name beside every subject's words, and no answer.
    for i in range(docs // 2):
        lines = [f"# Release notes {i}"]
        for _ in range(4):
            (a, change_a), (b, change_b) = (
                (rng.choice(names), rng.choice(CHANGES[subject])) for subject in rng.sample(list(CHANGES), 2)
            )
            lines += ["", f"The {a} now {change_a}, and the {b} {change_b}."]
        (root / f"notes-{i:03d}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return questions


def sample_eval_set() -> list[LabelledQuestion]:
    """The sample data's eval split (``data.eval_fraction``, as prep splits it), each with its source document."""
    fraction = DataSettings().eval_fraction
    rows = [json.loads(line) for line in (EXAMPLES / "data" / "qa.jsonl").read_text().splitlines() if line.strip()]
    return [
        LabelledQuestion(row["instruction"], row["source_doc"])
        for row in rows
        if row.get("source_doc") and split_of(row, fraction) == "eval"
    ]


@dataclass(frozen=True)
class Retrieval:
    """How well one embedder finds each question's source among a corpus's chunks."""

    hit1: float
    hit5: float
    mrr10: float
    questions: int


def retrieval_quality(ranked: np.ndarray, relevant: np.ndarray) -> Retrieval:
    """hit@1, hit@5 and MRR@10 from each question's top-10 chunk indices (``ranked``, best first)
    and a ``(questions, chunks)`` boolean matrix of which chunks answer it."""
    hits = np.take_along_axis(relevant, ranked[:, :10], axis=1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    reciprocal = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return Retrieval(
        hit1=float(hits[:, :1].any(axis=1).mean()),
        hit5=float(hits[:, :5].any(axis=1).mean()),
        mrr10=float(reciprocal.mean()),
        questions=len(ranked),
    )


def top10(queries: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """The indices of each query's ten nearest chunks by cosine (unit vectors), best first."""
    scores = queries @ chunks.T
    k = min(10, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


@dataclass(frozen=True)
class LabelledSet:
    name: str
    chunks: list[Chunk]
    questions: list[LabelledQuestion]

    def relevant(self) -> np.ndarray:
        return np.array([[q.answers(c) for c in self.chunks] for q in self.questions], dtype=bool)


def measure_quality(embedder: Embedder, labelled: LabelledSet, relevant: np.ndarray) -> Retrieval:
    chunk_vectors = embedder.encode([c.embed_text for c in labelled.chunks])
    query_vectors = embedder.encode([q.question for q in labelled.questions])
    return retrieval_quality(top10(query_vectors, chunk_vectors), relevant)


@dataclass
class Speed:
    """Per round: a raw encode, then a full refresh into an empty collection; medians over rounds."""

    raw_runs: list[float] = field(default_factory=list)
    chunk_runs: list[float] = field(default_factory=list)
    refresh_runs: list[float] = field(default_factory=list)  # chunking included
    incremental_s: float = 0.0
    reembedded: int = 0
    rechunked: int = 0

    @property
    def raw_s(self) -> float:
        return float(np.median(self.raw_runs))

    @property
    def chunk_s(self) -> float:
        return float(np.median(self.chunk_runs))

    @property
    def refresh_s(self) -> float:
        return float(np.median(self.refresh_runs))

    @property
    def over_raw(self) -> float:
        """Median over rounds of the refresh's time over the raw encode just before it: the two
        share the machine's state of the moment, which moves ONNX Runtime's speed by up to 20%."""
        return float(np.median([r / w for r, w in zip(self.refresh_runs, self.raw_runs, strict=True)]))

    def spread(self) -> str:
        return (
            "raw "
            + "/".join(f"{w:.1f}" for w in self.raw_runs)
            + ", refresh "
            + "/".join(f"{r:.1f}" for r in self.refresh_runs)
        )


def measure_speed(
    embedder: Embedder, corpus: Path, texts: list[str], tokens: TokenChunking, work: Path, seed: int, rounds: int
) -> Speed:
    """``rounds`` times a raw encode of ``texts`` and a full refresh from a cold chunk cache into an
    empty collection, then a refresh of the last one after editing 1% of the documents (put back
    afterwards)."""
    speed = Speed()
    by_length = sorted(texts, key=len)
    embedder.encode(by_length[:: max(1, len(texts) // 256)])  # load and warm up on every length, outside timings
    artifacts = open_artifacts(str(work / "artifacts"))
    for i in range(rounds):
        start = time.perf_counter()
        embedder.encode(texts)
        speed.raw_runs.append(time.perf_counter() - start)

        uri = str(work / f"index-{i}" / "bench.db")
        store = MilvusStore(uri, "bench")
        cache_path = work / f"chunk-cache-{i}.json"
        try:
            start = time.perf_counter()
            chunks = load_corpus(corpus, tokens=tokens, cache=ChunkCache(cache_path))
            speed.chunk_runs.append(time.perf_counter() - start)
            full = apply_refresh(chunks, store, embedder, artifacts, uri, "bench")
            speed.refresh_runs.append(time.perf_counter() - start)
            assert full.added == len(texts), (full.added, len(texts))
            if i < rounds - 1:
                continue

            docs = sorted(corpus.glob("*.md"))
            edited = random.Random(seed).sample(docs, max(1, len(docs) // 100))
            originals = {doc: doc.read_text(encoding="utf-8") for doc in edited}
            for doc, text in originals.items():
                doc.write_text(text + "\nOne more sentence about the relay.\n", encoding="utf-8")
            start = time.perf_counter()
            cache = ChunkCache(cache_path)
            incremental = apply_refresh(
                load_corpus(corpus, tokens=tokens, cache=cache), store, embedder, artifacts, uri, "bench"
            )
            speed.incremental_s = time.perf_counter() - start
            speed.reembedded, speed.rechunked = incremental.added + incremental.updated, cache.misses
            for doc, text in originals.items():
                doc.write_text(text, encoding="utf-8")
        finally:
            store.close()
    return speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="generated documents for speed (default 2000)")
    parser.add_argument(
        "--labelled-docs", type=int, default=150, help="generated labelled documents, 5 questions each (default 150)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="raw encode + full refresh pairs per backend; medians (default 3)"
    )
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS, help="torch comes first")
    args = parser.parse_args()
    backends = ["torch", *(b for b in args.backends if b != "torch")]
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar stays out of the table

    settings = EmbeddingSettings()
    work = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
    try:
        corpus = work / "corpus"
        write_corpus(corpus, args.docs)
        # One model folder, one tokenizer: every backend embeds the same chunks.
        embedders = {
            b: open_embedder(b, settings.model, settings.batch_size, Path.home() / ".cache" / "lockgate" / "onnx")
            for b in backends
        }
        tokens = TokenChunking(embedders["torch"].tokenizer(), settings.chunk_tokens, settings.chunk_overlap_tokens)
        texts = [c.embed_text for c in load_corpus(corpus, tokens=tokens)]
        questions = write_labelled_corpus(work / "labelled", args.labelled_docs)
        labelled = [
            LabelledSet("sample eval", load_corpus(EXAMPLES / "corpus", tokens=tokens), sample_eval_set()),
            LabelledSet("generated", load_corpus(work / "labelled", tokens=tokens), questions),
        ]
        relevant = [s.relevant() for s in labelled]
        for s, matrix in zip(labelled, relevant, strict=True):
            answered_by = matrix.sum(axis=1)
            assert answered_by.min() >= 1, f"{s.name}: a question without its source among the chunks"
            if s.name == "generated":
                assert answered_by.max() == 1, "a generated answer lies in more than one chunk"
        print(
            f"speed corpus: {args.docs} documents, {len(texts)} chunks; labelled sets: "
            + "; ".join(f"{s.name} {len(s.questions)} questions over {len(s.chunks)} chunks" for s in labelled),
            flush=True,
        )

        speeds: dict[str, Speed] = {}
        quality: dict[str, list[Retrieval]] = {}
        for i, backend in enumerate(backends):
            emb = embedders[backend]
            speeds[backend] = measure_speed(emb, corpus, texts, tokens, work / backend, seed=i, rounds=args.rounds)
            quality[backend] = [measure_quality(emb, s, m) for s, m in zip(labelled, relevant, strict=True)]
            sp = speeds[backend]
            print(
                f"  {backend}: {sp.spread()} s, refresh/raw {sp.over_raw:.3f}x, "
                f"1% edit {sp.incremental_s:.2f} s, hit@5 " + " / ".join(f"{r.hit5:.3f}" for r in quality[backend]),
                flush=True,
            )

        torch_raw = speeds["torch"].raw_s
        n = len(texts)
        print(
            f"\n{'backend':<22}{'raw encode s':>13}{'chunks/s':>10}{'speed-up':>10}{'full refresh s':>16}"
            f"{'(chunking s)':>14}{'refresh/raw':>13}{'1% edit s':>11}{'re-embedded':>13}{'re-chunked':>12}"
        )
        for backend, sp in speeds.items():
            print(
                f"{backend:<22}{sp.raw_s:>13.2f}{n / sp.raw_s:>10.1f}{torch_raw / sp.raw_s:>9.2f}x"
                f"{sp.refresh_s:>16.2f}{sp.chunk_s:>14.2f}{sp.over_raw:>12.3f}x"
                f"{sp.incremental_s:>11.2f}{sp.reembedded:>13}{sp.rechunked:>12}"
            )
        print(
            f"targets: refresh/raw <= {REFRESH_OVER_RAW:.2f}x on every backend; the fast backend indexes all "
            f"{args.docs} documents in < {FAST_INDEX_S:.0f} s; a 1% edit re-chunks ~1% of the documents"
        )

        header = "".join(f"{f'{s.name} ({len(s.questions)} q): hit@1 hit@5 MRR@10':>44}" for s in labelled)
        print(f"\n{'backend':<22}{header}  acceptable (hit@5 >= torch - {HIT5_SLACK * 100:.0f} pt on both)")
        accepted: list[str] = []
        for backend, results in quality.items():
            ok = all(r.hit5 >= t.hit5 - HIT5_SLACK - 1e-9 for r, t in zip(results, quality["torch"], strict=True))
            if ok:
                accepted.append(backend)
            cells = "".join(f"{r.hit1:>26.3f}{r.hit5:>6.3f}{r.mrr10:>12.3f}" for r in results)
            deltas = ", ".join(
                f"{(r.hit5 - t.hit5) * 100:+.1f} pt" for r, t in zip(results, quality["torch"], strict=True)
            )
            print(f"{backend:<22}{cells}  {'yes' if ok else 'NO'} (hit@5 {deltas})")

        fastest = min(accepted, key=lambda b: speeds[b].raw_s)
        fast = speeds.get(FAST_BACKEND)
        print(
            f"\nfastest acceptable backend: {fastest}; embeddings.backend 'fast' runs {FAST_BACKEND}"
            + (" (agrees)" if fastest == FAST_BACKEND else " (DISAGREES: see lockgate.embeddings.FAST_BACKEND)")
        )
        if fast is not None:
            print(
                f"fast backend ({FAST_BACKEND}): full index of {args.docs} documents ({n} chunks) in "
                f"{fast.refresh_s:.1f} s (target < {FAST_INDEX_S:.0f} s), "
                f"refresh/raw {fast.over_raw:.3f}x; after a 1% edit {fast.incremental_s:.2f} s "
                f"({fast.incremental_s / fast.refresh_s:.1%} of the full refresh)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
