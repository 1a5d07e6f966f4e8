"""Dataset prep at scale: rows per second and peak memory at 50k and 200k generated rows.

The data set is generated here (no download): question/answer rows about numbered things,
5% of them near-duplicates of an earlier row (changed spacing, punctuation or case, or a
typo). Each size runs in its own process so its peak RSS is its own (the stage's process and,
apart, its largest worker process). Each size is prepared twice: with the default settings
(``data.workers`` = 0, a worker process per core) and in one process (``data.workers`` = 1);
the two must give the same snapshot digest and quarantine file. Peak RSS must grow by less
than 1.2x from 50k to 200k rows (prep streams rows through a disk-backed index); the run
fails otherwise. Run: ``python -m benchmarks.bench_prep`` (``--sizes`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def child(source: Path, work: Path, workers: int) -> None:
    """Run prep once and print what it took, as JSON (peak RSS of this process, and of its largest worker)."""
    from lockgate.digest import digest_file
    from lockgate.prep import prepare, snapshot_digest
    from lockgate.settings import DataSettings

    settings = DataSettings(workers=workers)
    start = time.perf_counter()
    result = prepare([source], settings, work)
    seconds = time.perf_counter() - start
    assert result.balanced(), dict(result.counts)
    own, workers_used = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_rss = workers_used.ru_maxrss / 1024
    cpu = own.ru_utime + own.ru_stime + workers_used.ru_utime + workers_used.ru_stime
    print(
        json.dumps(
            {
                "rows": result.n_input,
                "seconds": seconds,
                "peak_rss_mb": peak_rss_mb(),
                "worker_rss_mb": workers_rss,
                "cpu_s": cpu,
                "counts": result.counts,
                "digest": snapshot_digest(settings.name, result),
                "quarantine": digest_file(result.quarantine_path),
            }
        )
    )


def run_child(source: Path, work: Path, workers: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_prep", "--child", str(source), str(work), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[50_000, 200_000], help="small and large row counts")
    parser.add_argument("--child", nargs=3, metavar=("SOURCE", "WORK", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), int(args.child[2]))
        return

    small, large = args.sizes
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-prep-") as tmp:
        work = Path(tmp)
        results, single = {}, {}
        for n in (small, large):
            source = work / f"rows-{n}.jsonl"
            generate(source, n)
            results[n] = run_child(source, work / f"out-{n}", 0)
            single[n] = run_child(source, work / f"single-{n}", 1)
    # CPU time (the stage's and its workers', imports and start-up included) says what a row
    # costs when other work on the machine slows the wall clock down.
    print(
        f"{'rows':>8} {'seconds':>8} {'rows/s':>8} {'CPU us/row':>10} {'peak RSS MB':>12} {'worker MB':>10}  outcomes"
    )
    for n, r in results.items():
        outcomes = ", ".join(f"{k} {v}" for k, v in r["counts"].items() if v)
        print(
            f"{n:>8} {r['seconds']:>8.1f} {n / r['seconds']:>8.0f} {r['cpu_s'] / n * 1e6:>10.0f} "
            f"{r['peak_rss_mb']:>12.0f} {r['worker_rss_mb']:>10.0f}  {outcomes}"
        )
    same = True
    for n in (small, large):
        r, s = results[n], single[n]
        equal = r["digest"] == s["digest"] and r["quarantine"] == s["quarantine"]
        same = same and equal
        print(
            f"{n:>8} rows: snapshot digest {r['digest']}; in one process {s['digest']} "
            f"({n / s['seconds']:.0f} rows/s, {s['cpu_s'] / n * 1e6:.0f} CPU us/row): "
            f"{'same' if equal else 'DIFFERENT'} snapshot and quarantine"
        )
    growth = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
    worker_growth = results[large]["worker_rss_mb"] / max(results[small]["worker_rss_mb"], 1)
    speed = (large / results[large]["seconds"]) / (small / results[small]["seconds"])
    print(
        f"peak RSS {large} vs {small} rows: {growth:.2f}x, worker processes {worker_growth:.2f}x "
        f"(each must be < 1.2x); throughput ratio {speed:.2f}"
    )
    if not same:
        sys.exit("the process pool changed the snapshot or the quarantine file")
    if growth >= 1.2 or worker_growth >= 1.2:
        sys.exit(f"peak RSS grew {max(growth, worker_growth):.2f}x from {small} to {large} rows")


if __name__ == "__main__":
    main()
