"""Accuracy of the offline estimators on the paper's runs, under both protocols.

Prints, per target (average power, epoch energy) and protocol (random 5-fold, as the paper;
leave-configuration-out 5-fold), every model tried: mean CV figures on the 70% part, the pooled
out-of-fold R²/RMSE of the same folds, and the held-out 30% figures. Then the TDP baseline and the
paper's kernel ridge over all runs (grouped 5-fold and leave-one-configuration-out), and what
building the shipped model costs.

    python benchmarks/offline_estimators.py [--data CSV] [--seeds 0,1,2] [--quick]

Needs scikit-learn (``pip install 'joulecast[ml]'``). About 2 minutes on 2 cores for one seed
(``--quick``: small grids, ~15 s, figures not comparable).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict

from joulecast.offline.features import (
    TARGETS,
    configuration_groups,
    feature_frame,
    read_runs,
    target_values,
)
from joulecast.offline.models import (
    PAPER_KRR_PARAMS,
    ModelSpec,
    OfflineEstimator,
    build_estimator,
    cv_splitter,
    evaluate_models,
    regression_figures,
)

DATA = Path(__file__).parents[1] / "src" / "joulecast" / "offline" / "data" / "paper_runs_train.csv"
COLUMNS = [
    "model",
    "r2",
    "rmse",
    "mae",
    "mape",
    "oof_r2",
    "oof_rmse",
    "test_r2",
    "test_rmse",
    "test_mae",
    "test_mape",
    "params",
]


def show(frame: pd.DataFrame) -> str:
    out = frame[COLUMNS].copy()
    for c in ["mape", "test_mape"]:
        out[c] = (100 * out[c]).map("{:.1f}%".format)
    return out.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def baselines_over_all_runs(df: pd.DataFrame) -> pd.DataFrame:
    """TDP and the paper's KRR, scored over all runs by grouped 5-fold and by leave-one-config-out."""
    X = feature_frame(df).to_numpy()
    groups = configuration_groups(feature_frame(df))
    rows = []
    for target in TARGETS:
        y = target_values(df, target)
        specs = [ModelSpec("krr_paper", "krr", params=PAPER_KRR_PARAMS[target])]
        if target == "avg_power_w":
            specs.insert(0, ModelSpec("tdp", "tdp"))
        for spec in specs:
            for name, cv in [
                ("grouped 5-fold", cv_splitter("grouped")),
                ("leave-one-config-out", LeaveOneGroupOut()),
            ]:
                folds = list(cv.split(X, groups=groups))
                per_fold = []
                for train, valid in folds:
                    model = build_estimator(spec).fit(X[train], y[train])
                    with warnings.catch_warnings():  # R² of a one-run configuration
                        warnings.simplefilter("ignore")
                        per_fold.append(regression_figures(y[valid], model.predict(X[valid])))
                pooled = cross_val_predict(build_estimator(spec), X, y, groups=groups, cv=cv)
                rows.append(
                    {
                        "target": target,
                        "model": spec.name,
                        "protocol": name,
                        "fold_mean_r2": np.mean([f["r2"] for f in per_fold])
                        if name != "leave-one-config-out"
                        else np.nan,
                        "fold_mean_rmse": np.mean([f["rmse"] for f in per_fold]),
                        "pooled_r2": regression_figures(y, pooled)["r2"],
                        "pooled_rmse": regression_figures(y, pooled)["rmse"],
                        "pooled_mape": regression_figures(y, pooled)["mape"],
                    }
                )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--seeds", default="0", help="comma-separated split seeds")
    parser.add_argument("--quick", action="store_true", help="small grids (figures not comparable)")
    args = parser.parse_args()
    grid = "small" if args.quick else "full"
    start = time.perf_counter()
    df = read_runs(args.data)
    n_configs = len(np.unique(configuration_groups(feature_frame(df))))
    print(f"{args.data}: {len(df)} runs, {n_configs} configurations; grid {grid}\n")
    pd.set_option("display.width", 250)
    summary = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for target in TARGETS:
            for cv in ("random", "grouped"):
                t0 = time.perf_counter()
                table = evaluate_models(df, target=target, cv=cv, seed=seed, grid=grid)
                print(f"== {target}, {cv} CV, seed {seed} ({time.perf_counter() - t0:.0f} s)")
                print(show(table), "\n")
                summary.append(table.assign(seed=seed))
    if len(summary) > 4:
        all_seeds = pd.concat(summary)
        mean = all_seeds.groupby(["target", "cv", "model"], sort=False)[
            ["r2", "rmse", "oof_r2", "test_r2", "test_rmse"]
        ].mean()
        print("== means over seeds\n", mean.to_string(float_format=lambda v: f"{v:.4g}"), "\n")

    print("== TDP baseline and the paper's KRR over all runs (no hyperparameter search)")
    print(
        baselines_over_all_runs(df).to_string(index=False, float_format=lambda v: f"{v:.4g}"), "\n"
    )

    t0 = time.perf_counter()
    estimator = OfflineEstimator(grid=grid).fit(df, source=Path(args.data).name)
    fit_s = time.perf_counter() - t0
    print(f"== shipped model (grouped-CV selection over all runs): fit in {fit_s:.1f} s")
    print(estimator.card())
    print(f"total runtime {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
