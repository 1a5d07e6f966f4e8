"""Embedding refresh throughput on a generated corpus (at least 2,000 documents), in one run:

(a) raw ``SentenceTransformer.encode`` on exactly the chunks the refresh embeds (the baseline);
(b) a full refresh (chunking, embedding, Milvus Lite upserts), target >= 0.9x of (a);
(c) an incremental refresh after changing 1% of the documents, target <= 5% of (b)'s time;
(d) the ONNX Runtime int8 backends (``onnx-int8`` dynamic, ``onnx-int8-blockwise``): speed-up
    over (a) (target >= 3x), mean and minimum cosine to the PyTorch vectors (>= 0.99 mean), top-10
    retrieval overlap with them (>= 0.95); and,
    for scale, the overlap that the PyTorch vectors themselves reach with random noise at a given
    cosine (how close this corpus's 10th and 11th results lie).

Ratios are against the baseline measured in the same run. Run: ``make bench`` (or
``python -m benchmarks.bench_refresh [--docs N]``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from lockgate.artifacts import open_artifacts
from lockgate.corpus import TokenChunking, load_corpus
from lockgate.embeddings import OnnxEmbedder, SentenceTransformerEmbedder
from lockgate.refresh import apply_refresh
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


def top10_overlap(docs_a: np.ndarray, docs_b: np.ndarray, queries_a: np.ndarray, queries_b: np.ndarray) -> float:
    """Mean share of the top-10 chunks that both embeddings retrieve for the same queries."""
    top_a = np.argsort(-(queries_a @ docs_a.T), axis=1)[:, :10]
    top_b = np.argsort(-(queries_b @ docs_b.T), axis=1)[:, :10]
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(top_a, top_b, strict=True)]))


def with_noise(vectors: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """``vectors`` (unit rows) turned by random directions to exactly ``cosine`` from themselves."""
    noise = np.random.default_rng(seed).normal(size=vectors.shape).astype(np.float32)
    noise -= (noise * vectors).sum(axis=1, keepdims=True) * vectors
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return np.float32(cosine) * vectors + np.float32(np.sqrt(1 - cosine**2)) * noise


def noise_floor(docs: np.ndarray, queries: np.ndarray, cosine: float) -> float:
    """The top-10 overlap an embedder would reach whose every vector is the PyTorch one, off by
    random noise at ``cosine``: how close this corpus's 10th and 11th results are, i.e. what
    the overlap target asks of any approximate embedder here."""
    return top10_overlap(docs, with_noise(docs, cosine, 0), queries, with_noise(queries, cosine, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="generated documents (default 2000)")
    parser.add_argument("--queries", type=int, default=200, help="retrieval queries for (d) (default 200)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
    try:
        corpus = work / "corpus"
        write_corpus(corpus, args.docs)
        torch_emb = SentenceTransformerEmbedder()
        tokens = TokenChunking(torch_emb.tokenizer(), 200, 32)
        chunks = load_corpus(corpus, tokens=tokens)
        texts = [c.embed_text for c in chunks]
        torch_emb.encode(texts[:64])  # load and warm up outside every timing
        onnx_embs = {s: OnnxEmbedder(cache_dir=work / "onnx", scheme=s) for s in ("dynamic", "blockwise")}
        for emb in onnx_embs.values():
            emb.encode(texts[:64])  # export, quantize and warm up outside every timing
        print(f"corpus: {args.docs} documents, {len(chunks)} chunks")

        start = time.perf_counter()
        base_vectors = torch_emb.encode(texts)
        raw_s = time.perf_counter() - start

        artifacts = open_artifacts(str(work / "artifacts"))
        uri = str(work / "index" / "bench.db")
        store = MilvusStore(uri, "bench")
        start = time.perf_counter()
        full = apply_refresh(load_corpus(corpus, tokens=tokens), store, torch_emb, artifacts, uri, "bench")
        full_s = time.perf_counter() - start
        assert full.added == len(chunks)

        rng = random.Random(1)
        changed_docs = rng.sample(sorted(corpus.glob("*.md")), max(1, args.docs // 100))
        for doc in changed_docs:
            doc.write_text(doc.read_text() + "\nOne more sentence about the relay.\n", encoding="utf-8")
        start = time.perf_counter()
        incremental = apply_refresh(load_corpus(corpus, tokens=tokens), store, torch_emb, artifacts, uri, "bench")
        incremental_s = time.perf_counter() - start
        store.close()

        queries = [" ".join(random.Random(q).choice(WORDS) for _ in range(8)) + "?" for q in range(args.queries)]
        base_queries = torch_emb.encode(queries)
        # The same on real text: the sample corpus, queried with the sample data's questions.
        sample = [c.embed_text for c in load_corpus(EXAMPLES / "corpus", tokens=tokens)]
        questions = [
            json.loads(line)["instruction"]
            for line in (EXAMPLES / "data" / "qa.jsonl").read_text().splitlines()[: args.queries]
            if line.strip()
        ]
        base_sample, base_questions = torch_emb.encode(sample), torch_emb.encode(questions)
        measured: dict[str, tuple[float, np.ndarray, float, float]] = {}
        for scheme, emb in onnx_embs.items():
            start = time.perf_counter()
            vectors = emb.encode(texts)
            seconds = time.perf_counter() - start
            measured[scheme] = (
                seconds,
                (base_vectors * vectors).sum(axis=1),
                top10_overlap(base_vectors, vectors, base_queries, emb.encode(queries)),
                top10_overlap(base_sample, emb.encode(sample), base_questions, emb.encode(questions)),
            )

        n = len(chunks)
        rows = [
            ("(a) raw encode (baseline)", raw_s, n / raw_s, "1.00x", ""),
            ("(b) full refresh", full_s, n / full_s, f"{raw_s / full_s:.2f}x", ">= 0.90x of (a)"),
            (
                f"(c) incremental ({len(changed_docs)} docs changed)",
                incremental_s,
                (incremental.added + incremental.updated) / incremental_s,
                f"{incremental_s / full_s:.1%} of (b)",
                "<= 5% of (b)",
            ),
        ]
        for scheme, (seconds, _, _, _) in measured.items():
            label = f"(d) onnx int8 {scheme} encode"
            rows.append((label, seconds, n / seconds, f"{raw_s / seconds:.2f}x", ">= 3x of (a)"))
        print(f"{'case':<36}{'seconds':>9}{'chunks/s':>10}{'vs baseline':>16}  target")
        for label, seconds, rate, ratio, target in rows:
            print(f"{label:<36}{seconds:>9.2f}{rate:>10.1f}{ratio:>16}  {target}")
        print(
            f"incremental refresh: +{incremental.added} ~{incremental.updated} -{incremental.deleted} "
            f"={incremental.unchanged}"
        )
        for scheme, (_, cosine, overlap, sample_overlap) in measured.items():
            print(
                f"onnx int8 {scheme} vs pytorch: cosine mean {cosine.mean():.4f} (>= 0.99), min {cosine.min():.4f}; "
                f"top-10 retrieval overlap {overlap:.3f} (>= 0.95) over {len(queries)} queries, "
                f"{sample_overlap:.3f} on the sample corpus ({len(sample)} chunks, {len(questions)} of its questions)"
            )
        floors = ", ".join(
            f"cosine {c}: {noise_floor(base_vectors, base_queries, c):.3f} here, "
            f"{noise_floor(base_sample, base_questions, c):.3f} on the sample corpus"
            for c in (0.999, 0.995, 0.992)
        )
        print(f"for scale, the overlap of the PyTorch vectors with random noise at {floors}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
