"""Gradient boosting of the share of TDP a run draws that never falls with more work per step.

A GPU draws more of its power budget the more work each step gives its cores; a model fitted
on a few dozen configurations does not know that, and can predict a heavier network than any it
saw (VGG16 beside MobileNet and Inception) a lower share of TDP than a lighter one. Boosted
trees constrained in every column that a run's GFLOPs, batch size or input area moves cannot:
a run with more of any of the three, the rest unchanged, never draws less.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y
from threadpoolctl import threadpool_limits

from joulecast.errors import InputError
from joulecast.offline.features import PHYSICS_FEATURES

#: How the share of TDP a run draws may move with each physics feature (1: never falls, -1:
#: never rises; the others are free). Every column that a run's GFLOPs, batch or input area
#: moves is constrained in the direction it moves them, so the share never falls when any of
#: those three grows, the others held: more work per step keeps more cores busy.
POWER_DIRECTIONS = {
    "log_gflops": 1,
    "log_batch": 1,
    "log_pixels": 1,
    "log_work_gflop": 1,
    "log_steps": -1,
    "log_work_per_core": 1,
    "log_step_gflop_per_core": 1,
}


def power_constraints(feature_set: str) -> list[int]:
    """``monotonic_cst`` for the share of TDP over a feature set's columns (see
    :data:`POWER_DIRECTIONS`); only the ``physics`` set has the columns it needs.

    Raises:
        InputError: another feature set.
    """
    if feature_set != "physics":
        raise InputError(f"monotone boosting takes the physics features, not {feature_set!r}")
    return [POWER_DIRECTIONS.get(name, 0) for name in PHYSICS_FEATURES]


class MonotoneBoosting(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Histogram gradient boosting with monotone constraints, fitted on one thread.

    scikit-learn's ``HistGradientBoostingRegressor`` (seeded, no early stopping) with the
    constraints given; its OpenMP threads only spin on a small busy machine (a 450-run fit took
    29 s on two shared cores instead of 0.6 s on one), so fit and predict use one.

    Args:
        monotonic_cst: per column, 1 (non-decreasing), -1 (non-increasing) or 0; None: none.
        learning_rate: shrinkage of each tree.
        max_iter: number of trees.
        max_depth: depth of each tree.
        min_samples_leaf: fewest runs in a leaf.
    """

    def __init__(
        self,
        monotonic_cst: Sequence[int] | None = None,
        learning_rate: float = 0.1,
        max_iter: int = 100,
        max_depth: int = 3,
        min_samples_leaf: int = 20,
    ) -> None:
        self.monotonic_cst = monotonic_cst
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf

    def fit(self, X: Any, y: Any) -> MonotoneBoosting:
        """Fit the trees to finite ``X`` and ``y`` (boosting would take NaN as missing)."""
        X, y = check_X_y(X, y, y_numeric=True)
        model = HistGradientBoostingRegressor(
            monotonic_cst=None if self.monotonic_cst is None else list(self.monotonic_cst),
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=0,
        )
        with threadpool_limits(limits=1, user_api="openmp"):
            self.model_ = model.fit(X, y)
        self.n_features_in_ = self.model_.n_features_in_
        self.n_iter_ = self.model_.n_iter_
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The boosted trees' prediction of each row."""
        check_is_fitted(self)
        X = check_array(X)
        with threadpool_limits(limits=1, user_api="openmp"):
            predicted: np.ndarray = self.model_.predict(X)
        return predicted
