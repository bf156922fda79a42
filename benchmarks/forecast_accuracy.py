"""Accuracy of the online forecasts on simulated runs, the three methods side by side.

Each simulated run has a warm-up transient (epoch energy decaying to its stable level), a
noisy stable regime, occasional slow validation epochs, and a slow drift. The forecast is made
after the stabilizing epoch + w epochs and compared with the run's true total.

    python benchmarks/forecast_accuracy.py [--runs 500] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from joulecast.forecast import forecast


def simulate(rng: np.random.Generator, n_epochs: int) -> pd.DataFrame:
    """One run's epoch table: power ramps up and epochs shorten during warm-up, then both hold
    with noise, a slow drift, and now and then a longer validation pass."""
    epochs = np.arange(n_epochs)
    power = rng.uniform(60, 350)  # W, stable level
    epoch_s = rng.uniform(20, 300)  # s, stable epoch length
    tau = rng.uniform(0.7, 3.0)
    p = power * (1 - rng.uniform(0.1, 0.4) * np.exp(-epochs / tau))
    d = epoch_s * (1 + rng.uniform(0.1, 1.0) * np.exp(-epochs / tau))
    p *= 1 + rng.normal(0, rng.uniform(0.005, 0.03), n_epochs)
    d *= 1 + rng.normal(0, rng.uniform(0.002, 0.02), n_epochs)
    d *= 1 + rng.uniform(-0.03, 0.03) * epochs / n_epochs  # drift over the run
    d[rng.random(n_epochs) < 0.05] *= 1.1
    return pd.DataFrame({"index": epochs, "energy_j": p * d, "duration_s": d})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stable-epoch", type=int, default=10)
    parser.add_argument("--window", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    errors: dict[str, list[float]] = {"power": [], "epoch-energy": [], "first-epoch": []}
    covered: dict[str, int] = dict.fromkeys(errors, 0)
    for _ in range(args.runs):
        n = int(rng.integers(args.stable_epoch + args.window + 5, 100))
        run = simulate(rng, n)
        truth = float(run["energy_j"].sum())
        seen = run.iloc[: args.stable_epoch + args.window]
        for method in errors:
            f = forecast(seen, n, method=method, stable_epoch=args.stable_epoch,
                         window=args.window)
            errors[method].append(abs(f.total_j - truth) / truth)
            covered[method] += f.low_j <= truth <= f.high_j
    print(f"{args.runs} simulated runs; forecast after epoch {args.stable_epoch + args.window} "
          f"(stabilizing epoch {args.stable_epoch}, window {args.window})")
    print(f"{'method':<14} {'MAPE':>7} {'p90 APE':>8} {'max APE':>8} {'90% interval covers':>20}")
    for method, errs in errors.items():
        e = np.array(errs) * 100
        print(f"{method:<14} {e.mean():6.2f}% {np.percentile(e, 90):7.2f}% {e.max():7.2f}% "
              f"{100 * covered[method] / args.runs:19.1f}%")


if __name__ == "__main__":
    main()
