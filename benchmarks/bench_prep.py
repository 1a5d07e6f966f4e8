"""Dataset prep at scale: rows per second and peak memory at 50k and 200k generated rows.

The data set is generated here (no download): question/answer rows about numbered things,
5% of them near-duplicates of an earlier row (changed spacing, punctuation or case, or a
typo). Each size runs in its own process so its peak RSS is its own. Peak RSS must grow by
less than 2x from 50k to 200k rows (prep streams rows through a disk-backed index);
the run fails otherwise. Run: ``python -m benchmarks.bench_prep`` (``--sizes`` to change).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = [
    "robot",
    "shelf",
    "aisle",
    "crate",
    "pallet",
    "conveyor",
    "gantry",
    "relay",
    "beacon",
    "winch",
    "spindle",
    "kiln",
    "vault",
    "ledger",
    "planner",
    "harbor",
    "anchor",
    "compass",
    "sextant",
    "quarry",
    "pulley",
    "rivet",
    "tether",
    "warden",
    "zephyr",
    "forge",
    "orchard",
    "lantern",
    "signal",
    "sorter",
    "tally",
    "umber",
    "meridian",
    "shuttle",
    "pylon",
    "ratchet",
]
VERBS = ["configure", "reset", "inspect", "calibrate", "restart", "move", "label", "weigh", "scan", "route"]


def generate(path: Path, rows: int, near_dup_share: float = 0.05, seed: int = 0) -> None:
    """Write ``rows`` JSONL rows, ``near_dup_share`` of them near-duplicates of an earlier row."""
    rnd = random.Random(seed)
    written: list[str] = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            if written and rnd.random() < near_dup_share:
                line = _perturb(rnd.choice(written[-5000:]), rnd)
            else:
                a, b, c = rnd.sample(WORDS, 3)
                verb = rnd.choice(VERBS)
                n = rnd.randrange(10**6)
                row = {
                    "instruction": f"How do I {verb} the {a} {n} next to the {b}?",
                    "context": f"The {a} {n} sits beside the {b} in zone {i % 97}. Staff {verb} it weekly.",
                    "output": f"To {verb} the {a} {n}, stop the {b}, then use the {c} panel in zone {i % 97}.",
                    "source_doc": f"{a}.md",
                }
                line = json.dumps(row)
                written.append(line)
            fh.write(line + "\n")


def _perturb(line: str, rnd: random.Random) -> str:
    row = json.loads(line)
    q = row["instruction"]
    choice = rnd.randrange(4)
    if choice == 0:
        q = q.replace("?", " ?")
    elif choice == 1:
        q = q.lower()
    elif choice == 2:
        q = q.replace(" the ", " teh ", 1)
    else:
        q = q.replace(" the ", "  the ", 1) + " "
    return json.dumps({**row, "instruction": q})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(source: Path, work: Path) -> None:
    """Run prep once and print what it took, as JSON (peak RSS of this process only)."""
    from lockgate.prep import prepare
    from lockgate.settings import DataSettings

    start = time.perf_counter()
    result = prepare([source], DataSettings(), work)
    seconds = time.perf_counter() - start
    assert result.balanced(), dict(result.counts)
    print(
        json.dumps({"rows": result.n_input, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "counts": result.counts})
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[50_000, 200_000], help="small and large row counts")
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return

    small, large = args.sizes
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-prep-") as tmp:
        work = Path(tmp)
        results = {}
        for n in (small, large):
            source = work / f"rows-{n}.jsonl"
            generate(source, n)
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_prep", "--child", str(source), str(work / f"out-{n}")],
                capture_output=True,
                text=True,
                check=True,
            )
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'rows':>8} {'seconds':>8} {'rows/s':>8} {'peak RSS MB':>12}  outcomes")
    for n, r in results.items():
        outcomes = ", ".join(f"{k} {v}" for k, v in r["counts"].items() if v)
        print(f"{n:>8} {r['seconds']:>8.1f} {n / r['seconds']:>8.0f} {r['peak_rss_mb']:>12.0f}  {outcomes}")
    growth = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
    speed = (large / results[large]["seconds"]) / (small / results[small]["seconds"])
    print(f"peak RSS {large} vs {small} rows: {growth:.2f}x (must be < 2x); throughput ratio {speed:.2f}")
    if growth >= 2:
        sys.exit(f"peak RSS grew {growth:.2f}x from {small} to {large} rows")


if __name__ == "__main__":
    main()
