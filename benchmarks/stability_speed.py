"""FLUSS stabilization: speed on a 1,000,000-sample trace, and the adaptive grid vs full resolution.

(a) A simulated 1,000,000-sample trace (100 ms samples, ~28 h, 200 epochs) is segmented with the
default adaptive grid (at most 20,000 points), and timed.
(b) On simulated traces of 25,000 to 60,000 samples at 0.5 s (the paper's sampling; 40 to 60
epochs of 5 to 12 minutes), still short enough to segment at full resolution, the adaptive
answer (default: at most 20,000 points) and a coarser one (at most --max-points points) are
compared with the full-resolution one: the difference in stabilizing epoch, per trace.

    python benchmarks/stability_speed.py [--traces 8] [--max-points 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from simulate import simulate_run

from joulecast.stability import stabilizing_epoch


def big_trace(seed: int) -> None:
    rng = np.random.default_rng(seed)
    run = simulate_run(rng, 200, dt_s=0.1, epoch_s=(500.0, 500.0))
    run.samples = run.samples.iloc[:1_000_000]
    run.phases = run.phases[run.phases["end_s"] <= run.samples["t_s"].iloc[-1]]
    t0 = time.perf_counter()
    result = stabilizing_epoch(run.samples, run.phases)
    took = time.perf_counter() - t0
    print(
        f"(a) {len(run.samples):,} samples at 0.1 s, {len(run.phases)} epochs of "
        f"~{run.phases['end_s'].diff().median():.0f} s: grid {result.resolution_s:g} s "
        f"({len(result.t_s):,} points), {took:.2f} s; stabilizing epoch "
        f"{result.epoch} (warm-up ends in epoch {run.warmup_epochs})"
    )


def compare(n: int, max_points: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    print(
        f"(b) {n} traces at 0.5 s: full resolution vs the default adaptive grid (<= 20,000 "
        f"points) and a coarse one (<= {max_points:,} points)"
    )
    print(
        f"{'trace':>5} {'samples':>8} {'epochs':>6} {'warm-up':>7} {'full':>5} "
        f"{'default':>12} {'coarse':>12} {'full s':>7} {'default s':>9}"
    )
    diffs: dict[str, list[int]] = {"default": [], "coarse": []}
    for i in range(n):
        run = simulate_run(rng, int(rng.integers(40, 60)), epoch_s=(300.0, 700.0))
        t0 = time.perf_counter()
        full = stabilizing_epoch(run.samples, run.phases, resolution_s=0.5)
        t1 = time.perf_counter()
        default = stabilizing_epoch(run.samples, run.phases)
        t2 = time.perf_counter()
        coarse = stabilizing_epoch(run.samples, run.phases, max_points=max_points)
        cells = []
        for key, result in (("default", default), ("coarse", coarse)):
            cell = f"{result.epoch} @{result.resolution_s:.1f}s"
            if full.epoch is not None and result.epoch is not None:
                diffs[key].append(abs(result.epoch - full.epoch))
            cells.append(cell)
        print(
            f"{i:5d} {len(run.samples):8,d} {len(run.phases):6d} {run.warmup_epochs:7d} "
            f"{full.epoch!s:>5} {cells[0]:>12} {cells[1]:>12} {t1 - t0:7.1f} {t2 - t1:9.1f}"
        )
    for key, values in diffs.items():
        d = np.array(values)
        print(
            f"{key}: answered with full resolution on {len(d)} of {n}; within one epoch of it "
            f"on {np.sum(d <= 1)}; same epoch on {np.sum(d == 0)}; largest difference "
            f"{d.max() if len(d) else '-'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=8)
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    big_trace(args.seed)
    if args.traces:
        compare(args.traces, args.max_points, args.seed)


if __name__ == "__main__":
    main()
