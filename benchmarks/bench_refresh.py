"""How much an incremental refresh saves: full build vs no-op re-run vs one changed document.

Prints each case's time and peak memory, and its ratio against the full build measured in
the same run (the baseline). Run: ``make bench`` (or ``python -m benchmarks.bench_refresh``).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from lockgate.corpus import load_corpus
from lockgate.embeddings import SentenceTransformerEmbedder
from lockgate.refresh import apply_refresh
from lockgate.store import LocalArtifactStore
from lockgate.vectorstore import MilvusStore

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="replicate the sample corpus N times (default 4)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
    try:
        corpus = work / "corpus"
        for i in range(args.copies):
            shutil.copytree(ROOT / "examples" / "corpus", corpus / f"copy{i}")
        embedder = SentenceTransformerEmbedder()
        store = LocalArtifactStore(work / "artifacts")
        uri = str(work / "index" / "bench.db")
        vs = MilvusStore(uri, "bench")

        def timed(label: str) -> tuple[str, float, int, float]:
            start = time.perf_counter()
            build = apply_refresh(load_corpus(corpus, 600), vs, embedder, store, uri, "bench")
            return label, time.perf_counter() - start, build.added + build.updated, peak_rss_mb()

        results = [timed("full build (baseline)")]
        results.append(timed("no-op re-run"))
        doc = next(corpus.rglob("relay.md"))
        doc.write_text(doc.read_text().replace("by default", "unless configured"))
        results.append(timed("one document changed"))

        baseline = results[0][1]
        print(f"{'case':<24}{'seconds':>10}{'embedded':>10}{'x baseline':>12}{'peak RSS MB':>13}")
        for label, seconds, embedded, rss in results:
            print(f"{label:<24}{seconds:>10.2f}{embedded:>10}{seconds / baseline:>12.3f}{rss:>13.0f}")
        vs.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
