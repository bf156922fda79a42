"""The paper's procedure for comparing offline estimators (its Tables 8 and 9), as its
replication package runs it.

The paper says only "a 5-fold cross-validation on 70% of the data" and scores on the other 30%
(§3.6.2). The rest is the replication package's (GAISSA-UPC/dl-training-energy-estimation:
``src/models/regression/utils.py``, ``train_power_predictor.py``,
``train_energy_predictor.py``, ``SEED = 2022`` in ``src/environment.py``):

- the ten raw features, standardised by one ``StandardScaler`` fitted on the whole table,
  held-out rows included, before anything is split;
- ``train_test_split(test_size=0.30, random_state=2022)``; the 70% keeps the order the split
  draws, on which the unshuffled folds below depend;
- Ridge, kernel ridge and SVR: ``RandomizedSearchCV`` of 100 draws from
  :func:`paper_distributions`, ``cv=5`` (KFold in table order, unshuffled), scored by R²,
  MAPE, RMSE and MAE, refitted on R², ``random_state=2022``; the figures are the fold means of
  the draw with the best R²;
- linear regression: ``KFold(5, shuffle=True, random_state=2022)``, the mean of the per-fold
  figures;
- the epoch-energy targets in kJ (SVR's ``epsilon`` is drawn in the target's unit).

The rows give RMSE and MAE in W and J, as every other table of joulecast does. A random split
of a table that repeats each configuration measures memory, not generalisation: joulecast's own
protocol (:func:`joulecast.offline.models.evaluate_models`, grouped) holds whole configurations
out.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, RandomizedSearchCV, train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from joulecast.errors import InputError
from joulecast.inputs import finite, whole
from joulecast.offline.bounds import MAX_HOLDOUT, MAX_N_ITER
from joulecast.offline.features import STABLE_ENERGY, TARGETS, feature_frame, target_values
from joulecast.offline.models import (
    MIN_RUNS,
    N_SPLITS,
    SCORING,
    fit_search,
    regression_figures,
)

#: The package's seed (``SEED`` in its ``src/environment.py``).
PAPER_SEED = 2022
#: Draws of each randomized search.
PAPER_N_ITER = 100
#: The share of the table held out.
PAPER_HOLDOUT = 0.3
#: The paper's four regressors, in the order of its tables.
PAPER_MODELS = ("linear", "ridge", "krr", "svr")
#: Its targets: power, epoch energy, and epoch energy without the initial epochs.
PAPER_TARGETS = (*TARGETS, STABLE_ENERGY)
MAX_SEED = 2**32 - 1

# The package's unit of each target, in joulecast's (energy in kJ).
_UNIT = {"avg_power_w": 1.0, "epoch_energy_j": 1e3, STABLE_ENERGY: 1e3}


def paper_distributions(model: str) -> dict[str, Any]:
    """The package's search space of one of :data:`PAPER_MODELS` (none for ``linear``).

    Values are ``scipy.stats`` distributions or lists, as ``RandomizedSearchCV`` takes them;
    SVR's ``epsilon`` is in the target's unit of the package (W, or kJ for epoch energy).
    """
    from scipy.stats import expon

    spaces: dict[str, dict[str, Any]] = {
        "linear": {},
        "ridge": {"alpha": expon(scale=0.1)},
        "krr": {"alpha": expon(scale=0.01), "gamma": expon(scale=0.01), "kernel": ["rbf"]},
        "svr": {
            "C": expon(scale=300),
            "epsilon": expon(scale=1),
            "gamma": expon(scale=0.01),
            "kernel": ["rbf"],
        },
    }
    if model not in spaces:
        raise InputError(f"model {model!r} is not one of {', '.join(PAPER_MODELS)}")
    return spaces[model]


def _search(
    model: str, space: Mapping[str, Any], n_iter: int, seed: int
) -> GridSearchCV | RandomizedSearchCV:
    if model == "linear":
        # No search: one candidate scored on shuffled folds, as the package's own loop does.
        folds = KFold(n_splits=N_SPLITS, shuffle=True, random_state=seed)
        return GridSearchCV(LinearRegression(), {}, scoring=SCORING, refit="r2", cv=folds)
    regressors = {"ridge": Ridge(), "krr": KernelRidge(), "svr": SVR()}
    return RandomizedSearchCV(
        regressors[model],
        dict(space),
        n_iter=n_iter,
        scoring=SCORING,
        refit="r2",
        cv=N_SPLITS,
        random_state=seed,
        error_score="raise",
    )


def paper_protocol(
    df: pd.DataFrame,
    *,
    target: str,
    holdout: float = PAPER_HOLDOUT,
    n_iter: int = PAPER_N_ITER,
    seed: int = PAPER_SEED,
    models: Sequence[str] | None = None,
    spaces: Mapping[str, Mapping[str, Any]] | None = None,
    source: str = "run table",
) -> pd.DataFrame:
    """Score the paper's four regressors for ``target`` by the package's procedure.

    Args:
        df: run table with the raw features and ``target``; its row order matters (the folds
            are unshuffled), so it is never sorted.
        target: one of :data:`PAPER_TARGETS`.
        holdout: share of the rows held out (0 to 0.9); 0 cross-validates the table as given
            (the shipped table is already the paper's 70%).
        n_iter: draws of each randomized search (1 to 10,000).
        seed: seeds the split, the draws and the linear folds (0 to 2^32 - 1).
        models: which of :data:`PAPER_MODELS` to run (default: all four).
        spaces: search spaces by model, replacing :func:`paper_distributions`.
        source: what to call the table in error messages.

    Returns:
        One row per model: ``target, model, cv`` (``kfold``), ``r2, rmse, mae, mape`` (the fold
        means of the best draw), ``test_r2, test_rmse, test_mae, test_mape`` (the best draw
        refitted on the training part, scored on the held-out part; NaN with fewer than 2
        held-out rows), ``params`` (JSON, the package's units), ``n_train, n_test, n_iter,
        seed, fit_s``.
        RMSE and MAE are in the target's unit (W or J); MAPE is a fraction.

    Raises:
        InputError: an argument out of range, a bad column, or fewer than 10 training rows.
    """
    if target not in PAPER_TARGETS:
        raise InputError(f"target {target!r} is not one of {', '.join(PAPER_TARGETS)}")
    holdout = finite(holdout, "holdout", lo=0.0, hi=MAX_HOLDOUT)
    n_iter = whole(n_iter, "n_iter", lo=1, hi=MAX_N_ITER)
    seed = whole(seed, "seed", lo=0, hi=MAX_SEED)
    chosen = PAPER_MODELS if models is None else tuple(models)
    for model in chosen:
        paper_distributions(model)  # names an unknown model
    scale = _UNIT[target]
    X = StandardScaler().fit_transform(feature_frame(df, source=source).to_numpy())
    y = target_values(df, target, source=source) / scale
    index = np.arange(len(X))
    if holdout == 0:
        train, test = index, index[:0]
    else:
        train, test = train_test_split(index, test_size=holdout, random_state=seed)
    if len(train) < MIN_RUNS:
        raise InputError(
            f"{source}: {len(train)} runs to train on after holding out {holdout:g};"
            f" need at least {MIN_RUNS}"
        )
    custom = spaces or {}
    rows = []
    for model in chosen:
        start = time.perf_counter()
        space = custom[model] if model in custom else paper_distributions(model)
        search = _search(model, space, n_iter, seed)
        figures = fit_search(search, X[train], y[train])
        held = dict.fromkeys(("r2", "rmse", "mae", "mape"), math.nan)
        if len(test) >= 2:
            predicted = search.best_estimator_.predict(X[test])
            held = regression_figures(y[test] * scale, predicted * scale)
        params = {k: v if isinstance(v, str) else float(v) for k, v in search.best_params_.items()}
        rows.append(
            {
                "target": target,
                "model": model,
                "cv": "kfold",
                "r2": figures["r2"],
                "rmse": figures["rmse"] * scale,
                "mae": figures["mae"] * scale,
                "mape": figures["mape"],
                **{f"test_{k}": v for k, v in held.items()},
                "params": json.dumps(params, sort_keys=True),
                "n_train": len(train),
                "n_test": len(test),
                "n_iter": n_iter,
                "seed": seed,
                "fit_s": time.perf_counter() - start,
            }
        )
    return pd.DataFrame(rows)
