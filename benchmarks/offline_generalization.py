"""How well the offline estimators generalize to configurations they have not seen.

Prints, per target (average power, epoch energy) and candidate model, side by side:

- ``grouped 5-fold``: GroupKFold over configurations on the 70% of the grouped 70/30 split
  (seed 0), as ``evaluate-estimators`` scores it: the mean of the folds' R² and RMSE (issue 16's
  figures: 16.9 W; R² 0.68, 1.50 kJ), and the R² of the folds' out-of-fold predictions pooled;
- ``random 5-fold``: KFold (shuffled, seed 0) on the same 70%;
- ``LOGO``: leave one configuration out, over all runs: pooled R², RMSE, MAPE and the median
  absolute percentage error;
- ``grouped x5`` and ``random x5``: GroupKFold and KFold, both shuffled with seeds 0-4, over all
  runs: the means over the seeds of the fold-mean R² and RMSE (and of the pooled R², grouped).

Then per-GPU calibration from k measured configurations, inside LOGO: each held-out
configuration's prediction is multiplied by ``exp(sum of log(measured / predicted) / (k + n0))``
over k other configurations of the same GPU (their own LOGO predictions, so the model never saw
the configuration it is scored on), for every choice of those k (at most 100), on the RTX 3070
and RTX 3090 runs (the GTX 750 Ti has one configuration).

Each candidate's hyperparameters come from one grid search, the one ``evaluate_models`` runs
(grouped 5-fold on the 70%, seed 0, lowest mean RMSE), cached in ``--cache`` by the data, the
offline estimators' code, the grid and the candidate; every protocol then refits those specs
without searching again. A ``mean`` is the mean of its members' predictions on the same folds
(what its VotingRegressor computes), so it costs nothing more.

    python benchmarks/offline_generalization.py [--data CSV] [--models a,b] [--grid small]

Needs scikit-learn (``pip install 'joulecast[ml]'``). About 5 minutes on 2 shared cores the
first time (the grid searches), less with the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut
from threadpoolctl import threadpool_limits

from joulecast import offline
from joulecast.offline.features import (
    GPU_COLUMNS,
    TARGETS,
    configuration_groups,
    feature_frame,
    read_runs,
    target_values,
)
from joulecast.offline.models import (
    N_SPLITS,
    Candidate,
    ModelSpec,
    build_estimator,
    candidates,
    cv_splitter,
    evaluate_models,
    holdout_split,
)

DATA = Path(__file__).parents[1] / "src" / "joulecast" / "offline" / "data" / "paper_runs_train.csv"
CACHE = Path(tempfile.gettempdir()) / "joulecast-offline-generalization.json"
#: The candidates compared by default: the choices fit-offline shipped before issue 16 (and their
#: members), and the candidates added since.
MODELS = {
    "avg_power_w": [
        "svr_physics_ratio",
        "krr_log_ratio",
        "gbr_physics_ratio",
        "mean_ratio",
        "hgb_physics_ratio",
        "mean_monotone",
    ],
    "epoch_energy_j": [
        "svr_physics_log",
        "ridge_physics_log",
        "gbr_physics_log",
        "mean_log",
        "factorised",
        "mean_factorised",
    ],
}
SCALE = {"avg_power_w": (1.0, "W"), "epoch_energy_j": (1e3, "kJ")}
SEEDS = range(5)
KS = (1, 2, 3)
MAX_DRAWS = 100

Folds = list[tuple[np.ndarray, np.ndarray]]


# ---------------------------------------------------------------------------------------------
# Hyperparameters: one search per candidate, cached


def _code_hash() -> str:
    """A digest of the offline estimators' code: a search is cached only for the code it ran."""
    folder = Path(offline.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _key(data_hash: str, grid: str, target: str, candidate: Candidate) -> str:
    grids = candidate.grid if grid == "full" else candidate.small_grid
    text = json.dumps(
        [data_hash, _code_hash(), grid, target, candidate.spec.to_dict(), sorted(grids.items())],
        default=float,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def tuned_specs(
    df: pd.DataFrame,
    data_hash: str,
    target: str,
    names: Sequence[str],
    grid: str,
    cache_path: Path | None,
) -> dict[str, ModelSpec]:
    """The spec of each named candidate (and of a mean's members) with searched hyperparameters."""
    table = {c.spec.name: c for c in candidates(target, grid)}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown model(s) for {target}: {', '.join(unknown)}")
    wanted = list(dict.fromkeys(m for n in names for m in (*table[n].members, n)))
    plain = [n for n in wanted if not table[n].members]
    cache: dict[str, Any] = {}
    if cache_path is not None and cache_path.exists():
        cache = json.loads(cache_path.read_text())
    keys = {n: _key(data_hash, grid, target, table[n]) for n in plain}
    missing = [n for n in plain if keys[n] not in cache]
    if missing:
        start = time.perf_counter()
        rows = evaluate_models(df, target=target, cv="grouped", seed=0, grid=grid, models=missing)
        for row in rows.itertuples():
            base = table[str(row.model)].spec
            params = json.loads(str(row.params))
            cache[keys[str(row.model)]] = ModelSpec(
                base.name, base.family, base.features, base.target_transform, params
            ).to_dict()
        print(f"  searched {', '.join(missing)} ({time.perf_counter() - start:.0f} s)")
        if cache_path is not None:
            cache_path.write_text(json.dumps(cache, indent=1))
    specs = {n: ModelSpec.from_dict(cache[keys[n]]) for n in plain}
    for n in wanted:
        if table[n].members:
            members = [specs[m].to_dict() for m in table[n].members]
            specs[n] = ModelSpec(n, "mean", params={"members": members})
    return specs


# ---------------------------------------------------------------------------------------------
# Protocols


def protocol_folds(X: np.ndarray, groups: np.ndarray, train: np.ndarray) -> dict[str, Folds]:
    """Row indices (into X) of every fold of every protocol."""

    def on(index: np.ndarray, splits: Iterable[tuple[np.ndarray, np.ndarray]]) -> Folds:
        return [(index[a], index[b]) for a, b in splits]

    every = np.arange(len(X))
    folds = {
        "g5": on(train, cv_splitter("grouped").split(X[train], groups=groups[train])),
        "r5": on(train, cv_splitter("random", 0).split(X[train])),
        "logo": on(every, LeaveOneGroupOut().split(X, groups=groups)),
    }
    for s in SEEDS:
        shuffled = GroupKFold(N_SPLITS, shuffle=True, random_state=s)
        folds[f"gkf{s}"] = on(every, shuffled.split(X, groups=groups))
        folds[f"kf{s}"] = on(every, cv_splitter("random", s).split(X))
    return folds


def predictions(
    spec: ModelSpec,
    X: np.ndarray,
    y: np.ndarray,
    folds: dict[str, Folds],
    done: dict[str, dict[str, list[np.ndarray]]],
) -> dict[str, list[np.ndarray]]:
    """Out-of-fold predictions of ``spec``, per protocol and fold (a mean averages its members)."""
    if spec.family == "mean":
        members = [done[m["name"]] for m in spec.params["members"]]
        return {
            p: [np.mean([m[p][i] for m in members], axis=0) for i in range(len(f))]
            for p, f in folds.items()
        }
    out: dict[str, list[np.ndarray]] = {}
    for p, fs in folds.items():
        out[p] = [build_estimator(spec).fit(X[a], y[a]).predict(X[b]) for a, b in fs]
    return out


def _fold_means(y: np.ndarray, folds: Folds, preds: list[np.ndarray]) -> tuple[float, float]:
    r2 = [r2_score(y[b], p) for (_, b), p in zip(folds, preds, strict=True)]
    rmse = [np.sqrt(np.mean((y[b] - p) ** 2)) for (_, b), p in zip(folds, preds, strict=True)]
    return float(np.mean(r2)), float(np.mean(rmse))


def _pooled(y: np.ndarray, folds: Folds, preds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    index = np.concatenate([b for _, b in folds])
    return y[index], np.concatenate(preds)


def figures(
    y: np.ndarray, folds: dict[str, Folds], preds: dict[str, list[np.ndarray]]
) -> dict[str, float]:
    """Every protocol's figures of one candidate (RMSE in the target's unit)."""
    out: dict[str, float] = {}
    out["g5_r2"], out["g5_rmse"] = _fold_means(y, folds["g5"], preds["g5"])
    out["g5_oof_r2"] = float(r2_score(*_pooled(y, folds["g5"], preds["g5"])))
    out["r5_r2"], out["r5_rmse"] = _fold_means(y, folds["r5"], preds["r5"])
    truth, guess = _pooled(y, folds["logo"], preds["logo"])
    ape = np.abs(guess / truth - 1)
    out["logo_r2"] = float(r2_score(truth, guess))
    out["logo_rmse"] = float(np.sqrt(np.mean((truth - guess) ** 2)))
    out["logo_mape"] = float(np.mean(ape))
    out["logo_mdape"] = float(np.median(ape))
    for name, prefix in (("gkf", "gx5"), ("kf", "rx5")):
        per_seed = [_fold_means(y, folds[f"{name}{s}"], preds[f"{name}{s}"]) for s in SEEDS]
        out[f"{prefix}_r2"] = float(np.mean([r for r, _ in per_seed]))
        out[f"{prefix}_rmse"] = float(np.mean([e for _, e in per_seed]))
    out["gx5_oof_r2"] = float(
        np.mean([r2_score(*_pooled(y, folds[f"gkf{s}"], preds[f"gkf{s}"])) for s in SEEDS])
    )
    return out


#: Columns of the figures table: the key :func:`figures` writes, the protocol and the figure.
COLUMNS = {
    "g5_r2": ("grouped 5-fold", "R²"),
    "g5_rmse": ("grouped 5-fold", "RMSE"),
    "g5_oof_r2": ("grouped 5-fold", "OOF R²"),
    "r5_r2": ("random 5-fold", "R²"),
    "r5_rmse": ("random 5-fold", "RMSE"),
    "logo_r2": ("LOGO", "R²"),
    "logo_rmse": ("LOGO", "RMSE"),
    "logo_mape": ("LOGO", "MAPE"),
    "logo_mdape": ("LOGO", "MdAPE"),
    "gx5_r2": ("grouped x5", "R²"),
    "gx5_rmse": ("grouped x5", "RMSE"),
    "gx5_oof_r2": ("grouped x5", "OOF R²"),
    "rx5_r2": ("random x5", "R²"),
    "rx5_rmse": ("random x5", "RMSE"),
}


def table(rows: dict[str, dict[str, float]], target: str) -> str:
    """The figures of every candidate, one row each; RMSE in W or kJ."""
    scale, unit = SCALE[target]
    frame = pd.DataFrame(rows).T[list(COLUMNS)]
    for c in frame.columns:
        if c.endswith("rmse"):
            frame[c] = frame[c] / scale
    frame.columns = pd.MultiIndex.from_tuples(
        [(p, f"{f} {unit}" if f == "RMSE" else f) for p, f in COLUMNS.values()]
    )
    return frame.to_string(float_format=lambda v: f"{v:.3f}")


# ---------------------------------------------------------------------------------------------
# Per-GPU calibration from k measured configurations


def calibrated(
    y: np.ndarray,
    predicted: np.ndarray,
    groups: np.ndarray,
    gpus: np.ndarray,
    k: int,
    n0: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured values, calibrated predictions and weights (each configuration's runs weigh 1 in
    all, whatever the number of draws) of the configurations that have k others on their GPU."""
    rng = np.random.default_rng(0)
    configs = np.unique(groups)
    log_ratio = {
        c: float(np.mean(np.log(y[groups == c] / predicted[groups == c]))) for c in configs
    }
    gpu_of = {c: gpus[groups == c][0] for c in configs}
    truth, guess, weight = [], [], []
    for c in configs:
        others = [o for o in configs if o != c and gpu_of[o] == gpu_of[c]]
        if len(others) < max(k, 1):
            continue
        draws = list(itertools.combinations(others, k))
        if len(draws) > MAX_DRAWS:
            draws = [draws[i] for i in rng.choice(len(draws), MAX_DRAWS, replace=False)]
        rows = groups == c
        for draw in draws:
            factor = np.exp(sum(log_ratio[o] for o in draw) / (k + n0)) if k else 1.0
            truth.append(y[rows])
            guess.append(predicted[rows] * factor)
            weight.append(np.full(rows.sum(), 1.0 / len(draws)))
    return np.concatenate(truth), np.concatenate(guess), np.concatenate(weight)


def calibration_table(
    y: np.ndarray,
    logo: dict[str, np.ndarray],
    groups: np.ndarray,
    gpus: np.ndarray,
    target: str,
) -> str:
    scale, unit = SCALE[target]
    rows = {}
    for name, predicted in logo.items():
        row = {}
        for k, n0 in [(0, 0.0)] + [(k, n0) for k in KS for n0 in (0.0, 1.0)]:
            truth, guess, w = calibrated(y, predicted, groups, gpus, k, n0)
            label = "k=0" if k == 0 else f"k={k} n0={n0:g}"
            rmse = np.sqrt(np.average((truth - guess) ** 2, weights=w)) / scale
            mape = np.average(np.abs(guess / truth - 1), weights=w)
            row[(label, f"RMSE {unit}")] = rmse
            row[(label, "MAPE")] = mape
        rows[name] = row
    frame = pd.DataFrame(rows).T
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame.to_string(float_format=lambda v: f"{v:.3f}")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="run table (CSV)")
    parser.add_argument(
        "--models", help="comma-separated candidate names (default: the list in MODELS)"
    )
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--grid", choices=["full", "small"], default="full")
    parser.add_argument("--cache", default=str(CACHE), help="hyperparameter cache (JSON)")
    parser.add_argument("--no-cache", action="store_true", help="search again, save nothing")
    args = parser.parse_args()
    start = time.perf_counter()
    data = Path(args.data)
    df = read_runs(data)
    data_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    features = feature_frame(df)
    X = features.to_numpy()
    groups = configuration_groups(features)
    train, _ = holdout_split(len(X), groups, "grouped", 0)
    folds = protocol_folds(X, groups, train)
    gpus = features[list(GPU_COLUMNS)].astype(str).agg("/".join, axis=1).to_numpy()
    cache = None if args.no_cache else Path(args.cache)
    print(
        f"{data}: {len(df)} runs, {len(np.unique(groups))} configurations;"
        f" 70% part: {len(train)} runs, {len(np.unique(groups[train]))} configurations;"
        f" grid {args.grid}\n"
    )
    pd.set_option("display.width", 250)
    # One thread per library: on a small shared machine, BLAS and OpenMP pools only spin.
    with threadpool_limits(limits=1):
        for target in args.targets.split(","):
            t0 = time.perf_counter()
            names = args.models.split(",") if args.models else MODELS[target]
            print(f"== {target}")
            specs = tuned_specs(df, data_hash, target, names, args.grid, cache)
            y = target_values(df, target)
            done: dict[str, dict[str, list[np.ndarray]]] = {}
            for name, spec in specs.items():
                done[name] = predictions(spec, X, y, folds, done)
            rows = {n: figures(y, folds, done[n]) for n in specs}
            print(table(rows, target), "\n")
            logo = {}
            for n in specs:
                order = np.concatenate([b for _, b in folds["logo"]])
                pooled = np.empty(len(y))
                pooled[order] = np.concatenate(done[n]["logo"])
                logo[n] = pooled
            print(f"per-GPU calibration from k measured configurations (LOGO; {target})")
            print(calibration_table(y, logo, groups, gpus, target))
            print("\nhyperparameters:")
            for n, spec in specs.items():
                if spec.family != "mean":
                    print(f"  {n}: {json.dumps(dict(spec.params), sort_keys=True)}")
            print(f"({time.perf_counter() - t0:.0f} s)\n")
    print(f"total runtime {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
