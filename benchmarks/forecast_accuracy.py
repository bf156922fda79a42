"""Accuracy of the online forecasts, the three methods side by side.

(a) Epoch tables of simulated runs (warm-up transient, noisy stable regime, occasional slow
    epochs, drift), stabilizing epoch fixed at 10 as in the paper; fast, many runs.
(b) Power traces of simulated runs (0.5 s samples, as in the paper: warm-up transient, noise,
    a validation dip at the end of every epoch, drift), run end to end through joulecast: the
    epoch table from the trace, the stabilizing epoch from FLUSS, the forecast after the
    stabilizing epoch + w epochs.
(c) With --store: the completed runs with epochs in a joulecast store (recorded traces), as in (b).

Every forecast is compared with the run's true total; "worse than first-epoch" counts the runs
where a method's error exceeds the first-epoch baseline's on the same run.

    python benchmarks/forecast_accuracy.py [--runs 500] [--traces 100] [--store PATH] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from simulate import simulate_run

from joulecast.energy import phase_table
from joulecast.forecast import forecast_energy

METHODS = ("epoch-energy", "power", "first-epoch")


def simulate_table(rng: np.random.Generator, n_epochs: int) -> pd.DataFrame:
    """One run's epoch table: power ramps up and epochs shorten during warm-up, then both hold
    with noise, a slow drift, and now and then a longer epoch."""
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


class Scores:
    """Absolute percentage errors and interval coverage per method, run by run."""

    def __init__(self) -> None:
        self.ape: dict[str, list[float]] = {m: [] for m in METHODS}
        self.covered: dict[str, int] = dict.fromkeys(METHODS, 0)

    def add(self, table: pd.DataFrame, stable: int, window: int) -> None:
        n = len(table)
        truth = float(table["energy_j"].sum())
        seen = table.iloc[: stable + window]
        for method in METHODS:
            f = forecast_energy(seen, n, method=method, stable_epoch=stable, window=window)
            self.ape[method].append(100 * abs(f.total_j - truth) / truth)
            self.covered[method] += f.low_j <= truth <= f.high_j

    def print(self, title: str) -> None:
        runs = len(self.ape["first-epoch"])
        if not runs:
            print(f"{title}: no runs")
            return
        print(title)
        print(
            f"  {'method':<13} {'MAPE':>7} {'p90 APE':>8} {'max APE':>8} {'90% covers':>11} "
            f"{'worse than first-epoch (by > 1 point, most)':>44}"
        )
        base = np.array(self.ape["first-epoch"])
        for method in METHODS:
            e = np.array(self.ape[method])
            excess = e - base
            worse = (
                f"{int(np.sum(excess > 0))} of {runs} ({int(np.sum(excess > 1))}, "
                f"{max(0.0, excess.max()):.2f} points)"
                if method != "first-epoch"
                else "-"
            )
            print(
                f"  {method:<13} {e.mean():6.2f}% {np.percentile(e, 90):7.2f}% {e.max():7.2f}% "
                f"{100 * self.covered[method] / runs:10.1f}% {worse:>44}"
            )


def epoch_level(runs: int, stable: int, window: int, rng: np.random.Generator) -> None:
    scores = Scores()
    for _ in range(runs):
        scores.add(simulate_table(rng, int(rng.integers(stable + window + 5, 100))), stable, window)
    scores.print(
        f"(a) {runs} simulated epoch tables; forecast after epoch {stable + window} "
        f"(stabilizing epoch fixed at {stable}, window {window})"
    )


def trace_level(
    runs: list[tuple[pd.DataFrame, pd.DataFrame]], window: int, fixed: int, title: str
) -> None:
    """Forecast each run after its stabilizing epoch + ``window``, the stabilizing epoch chosen
    three ways: FLUSS's epoch, the settled epoch after it (what ``--stable-epoch auto`` uses),
    and ``fixed``."""
    from joulecast.stability import stabilizing_epoch

    choices = ("settled (auto)", "FLUSS", f"fixed {fixed}")
    scores = {c: Scores() for c in choices}
    chosen: dict[str, list[int]] = {c: [] for c in choices}
    none = skipped = 0
    t0 = time.perf_counter()
    for samples, phases in runs:
        table = phase_table(samples, phases)
        result = stabilizing_epoch(samples, phases)
        if result.epoch is None:
            none += 1
        picks = {
            "settled (auto)": result.settled_epoch,
            "FLUSS": result.epoch,
            f"fixed {fixed}": fixed,
        }
        for choice, stable in picks.items():
            if stable is None:
                continue
            if len(table) < stable + window + 1:
                skipped += 1
                continue
            chosen[choice].append(stable)
            scores[choice].add(table, stable, window)
    took = time.perf_counter() - t0
    print(f"{title} ({took:.0f} s); no regime change found in {none}; too short: {skipped}")
    for choice in choices:
        found = chosen[choice]
        scores[choice].print(
            f"  stabilizing epoch {choice} (median {np.median(found):.0f}, max {max(found)}); "
            f"forecast after it + {window} epochs"
        )


def simulated_traces(n: int, rng: np.random.Generator) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    out = []
    for _ in range(n):
        run = simulate_run(rng, int(rng.integers(25, 80)), epoch_s=(20.0, 120.0))
        phases = run.phases.assign(samples=pd.array([None] * len(run.phases), dtype="Int64"))
        out.append((run.samples, phases))
    return out


def stored_traces(path: str) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    from joulecast.store import Store

    out = []
    with Store(path) as store:
        frame = store.runs()
        for run_id in frame.loc[frame["status"] == "completed", "id"]:
            phases = store.phases(int(run_id), "epoch").dropna(subset=["end_s"])
            if len(phases) >= 3:
                out.append((store.samples(int(run_id)), phases))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500, help="epoch tables in (a)")
    parser.add_argument("--traces", type=int, default=100, help="simulated traces in (b)")
    parser.add_argument("--store", help="(c): a store with recorded runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stable-epoch", type=int, default=10)
    parser.add_argument("--window", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    epoch_level(args.runs, args.stable_epoch, args.window, rng)
    if args.traces:
        trace_level(
            simulated_traces(args.traces, rng),
            args.window,
            args.stable_epoch,
            f"(b) {args.traces} simulated power traces at 0.5 s",
        )
    if args.store:
        runs = stored_traces(args.store)
        if runs:
            trace_level(
                runs,
                args.window,
                args.stable_epoch,
                f"(c) {len(runs)} recorded runs in {args.store}",
            )
        else:
            print(f"(c) {args.store}: no completed run with at least 3 epochs")


if __name__ == "__main__":
    main()
