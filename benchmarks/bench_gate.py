"""Calibration of the release gate by simulation: false promotions and power, new rule vs old.

Per-question ROUGE-L differences with spread 0.3, 60 questions, 200 simulated evaluations
each. The baseline, measured in the same run, is the rule the gate used before: promote
when the mean gain is at least 0.05. Printed as rates and as ratios against that baseline.

    .venv/bin/python -m benchmarks.bench_gate
"""

from __future__ import annotations

import time

from lockgate.calibration import mean_rule_rate, promotion_rate
from lockgate.policy import load_policy
from tests.conftest import ROOT


def main() -> None:
    policy = load_policy(ROOT / "policies" / "release.yaml")
    start = time.perf_counter()
    rows = []
    for label, gain in (("no true gain (false promotions)", 0.0), ("true gain +0.12 (power)", 0.12)):
        paired = promotion_rate(policy, true_gain=gain)
        old = mean_rule_rate(0.05, true_gain=gain)
        rows.append((label, paired, old))
    vetoed = 1 - promotion_rate(policy, true_gain=0.2, slice_gains={3: -0.2})
    elapsed = time.perf_counter() - start
    print(f"gate calibration, policy {policy.mode} (digest {policy.digest[7:19]}), 60 questions, sd 0.3, 200 runs")
    print(f"{'scenario':34} {'paired gate':>12} {'mean rule 0.05':>15} {'ratio':>7}")
    for label, paired, old in rows:
        ratio = f"{paired / old:.2f}x" if old else "-"
        print(f"{label:34} {paired:12.1%} {old:15.1%} {ratio:>7}")
    print(f"{'one 15-question slice 0.2 worse':34} {'vetoed ' + format(vetoed, '.1%'):>12} {'never vetoed':>15}")
    print(f"({elapsed:.1f} s for 1,000 simulated decisions)")


if __name__ == "__main__":
    main()
