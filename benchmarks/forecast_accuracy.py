"""Accuracy of the online forecasts, the three methods side by side.

(a) Epoch tables of simulated runs (warm-up transient, noisy stable regime, occasional slow
    epochs, drift), stabilizing epoch fixed at 10 as in the paper; fast, many runs.
(b) Power traces of simulated runs (0.5 s samples, as in the paper: warm-up transient, noise,
    a validation dip at the end of every epoch, drift), run end to end through joulecast: the
    epoch table from the trace, the stabilizing epoch from FLUSS, the forecast after the
    stabilizing epoch + w epochs.
(c) The default forecast (stabilizing epoch ``auto``) after K epochs, early and late, on the
    tables of (a), on the traces of (b) stored in a joulecast store (FLUSS on the epochs seen),
    on the real recorded traces shipped in tests/data/traces (provenance in tests/data/README.md;
    also at K = max(n/2, min(n-2, 7))), and with --store on the completed runs of any store.

Every forecast is compared with the run's true total, and "90% covers" counts the runs whose
true total lies in the forecast's 90% interval; "worse than first-epoch" counts the runs where
a method's error exceeds the first-epoch baseline's on the same run.

    python benchmarks/forecast_accuracy.py [--runs 500] [--traces 100] [--store PATH] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from simulate import simulate_run

from joulecast.energy import phase_table
from joulecast.forecast import Forecast, finished_epochs, forecast_energy, forecast_run
from joulecast.store import Store

REAL_TRACES = Path(__file__).parent.parent / "tests" / "data" / "traces"

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
        """The forecasts after ``stable`` + ``window`` epochs, stabilizing epoch fixed."""
        seen = table.iloc[: stable + window]
        self.add_forecasts(
            float(table["energy_j"].sum()),
            {
                m: forecast_energy(seen, len(table), method=m, stable_epoch=stable, window=window)
                for m in METHODS
            },
        )

    def add_forecasts(self, truth: float, forecasts: dict[str, Forecast]) -> None:
        """One run's forecast by each method, against its true total."""
        for method, f in forecasts.items():
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


def epoch_level(
    runs: int, stable: int, window: int, rng: np.random.Generator
) -> list[pd.DataFrame]:
    """(a): the forecasts after ``stable`` + ``window`` epochs; returns the tables."""
    scores = Scores()
    tables = [simulate_table(rng, int(rng.integers(stable + window + 5, 100))) for _ in range(runs)]
    for table in tables:
        scores.add(table, stable, window)
    scores.print(
        f"(a) {runs} simulated epoch tables; forecast after epoch {stable + window} "
        f"(stabilizing epoch fixed at {stable}, window {window})"
    )
    return tables


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


def _after(n: int, k: int | str) -> int:
    """K epochs of a run of ``n``: a number, "n/2", or "accept" (max(n/2, min(n-2, 7)))."""
    if k == "n/2":
        return n // 2
    if k == "accept":
        return max(n // 2, min(n - 2, 7))
    return int(k)


def default_on_tables(tables: list[pd.DataFrame], afters: list[int | str], title: str) -> None:
    """The default forecast (stabilizing epoch "auto": the epochs' energy) after K epochs."""
    print(title)
    for k in afters:
        scores = Scores()
        for table in tables:
            n = len(table)
            after = _after(n, k)
            if not 1 <= after < n:
                continue
            seen = table.iloc[:after]
            scores.add_forecasts(
                float(table["energy_j"].sum()),
                {m: forecast_energy(seen, n, method=m) for m in METHODS},
            )
        scores.print(f"  after K = {k} epochs")


def default_on_store(store: Store, run_ids: list[int], afters: list[int | str], title: str) -> None:
    """The default forecast of stored runs (FLUSS on the epochs seen, then the epochs'
    energy), after K epochs, through :func:`joulecast.forecast.forecast_run`."""
    t0 = time.perf_counter()
    lines = []
    for k in afters:
        scores = Scores()
        for run_id in run_ids:
            n = len(finished_epochs(store, run_id))
            after = _after(n, k)
            if not 1 <= after < n:
                continue
            found = {m: forecast_run(store, run_id, after=after, method=m) for m in METHODS}
            truth = next(iter(found.values())).true_j
            assert truth is not None
            scores.add_forecasts(truth, {m: r.forecast for m, r in found.items()})
        lines.append((f"  after K = {k} epochs", scores))
    print(f"{title} ({time.perf_counter() - t0:.0f} s)")
    for label, scores in lines:
        scores.print(label)


def stored_simulations(store: Store, runs: list[tuple[pd.DataFrame, pd.DataFrame]]) -> list[int]:
    """The simulated traces imported into ``store``; their run ids."""
    from joulecast.records import Phase, PhaseKind
    from joulecast.store import SAMPLE_COLUMNS

    ids = []
    for i, (samples, phases) in enumerate(runs):
        samples = samples.reindex(columns=list(SAMPLE_COLUMNS))
        epochs = [
            Phase(PhaseKind.EPOCH, int(r.index), float(r.start_s), float(r.end_s))
            for r in phases.itertuples()
        ]
        ids.append(store.import_run(name=f"simulated-{i}", samples=samples, phases=epochs))
    return ids


def real_runs(store: Store) -> list[int]:
    """The real traces shipped in tests/data/traces imported into ``store``; their run ids."""
    from joulecast.traces import import_trace

    ids = []
    for power in sorted(REAL_TRACES.glob("*.power.csv")):
        name = power.name.removesuffix(".power.csv")
        ids.append(import_trace(store, power, REAL_TRACES / f"{name}.phases.csv", name=name))
    return ids


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
    tables = epoch_level(args.runs, args.stable_epoch, args.window, rng)
    traces = simulated_traces(args.traces, rng) if args.traces else []
    if traces:
        trace_level(
            traces,
            args.window,
            args.stable_epoch,
            f"(b) {args.traces} simulated power traces at 0.5 s",
        )
    afters: list[int | str] = [2, 4, 6, "n/2"]
    default_on_tables(
        tables, afters, f"(c) default forecast (auto) on the {len(tables)} epoch tables of (a)"
    )
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "runs.db") as store:
        if traces:
            default_on_store(
                store,
                stored_simulations(store, traces),
                afters,
                f"(c) default forecast (auto) on the {len(traces)} traces of (b), stored",
            )
        real = real_runs(store)
        default_on_store(
            store,
            real,
            [*afters, "accept"],
            f"(c) default forecast (auto) on the {len(real)} real traces of tests/data/traces "
            "(accept: K = max(n/2, min(n-2, 7)))",
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
