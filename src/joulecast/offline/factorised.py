"""Epoch energy factorised into the GPU's power budget and a time model of non-negative terms.

An epoch's energy is its power times its duration. Kernel and RBF models of log energy learn
both at once from a few dozen configurations and, for a configuration unlike those (a heavier
network on a GPU the data knew only with a light one), can predict a third of it. Here the
power is the GPU's TDP (the share of it a run draws is folded into the coefficients) and the
duration is a sum of terms each run pays: a fixed cost per optimizer and per validation step
(launches, synchronisation, the input pipeline), one that shrinks on a wider GPU, and the
compute of each training and validation sample::

    E = TDP x (a·s_train + b·s_val + (c·s_train + d·s_val + e·n_train·G + f·n_val·G) / w^β)

with ``s`` the steps (samples / batch size), ``n`` the samples, ``G`` the forward-pass GFLOPs of
one sample and ``w`` the CUDA cores in thousands. Every coefficient is at least 0 and
``0 <= β <= 2``, so the prediction never falls when a run gets more samples, more GFLOPs or a
larger TDP, nor rises with a larger batch or more cores: monotone by construction, also far
outside the training data. RAM, GPU memory and input size enter only through GFLOPs.

The coefficients are fitted by least squares on log energy (relative errors: a 300 J epoch
counts as much as a 13 kJ one), with scipy's bounded trust-region solver.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import least_squares
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from joulecast.errors import InputError
from joulecast.offline.features import RAW_FEATURES

#: The terms of the time model, in the order of :attr:`FactorisedEnergy.coef_`.
TERMS = (
    "train_steps",
    "val_steps",
    "train_steps_per_core",
    "val_steps_per_core",
    "train_gflop_per_core",
    "val_gflop_per_core",
)
MAX_EXPONENT = 2.0
_I = {name: i for i, name in enumerate(RAW_FEATURES)}
# Starting exponents: the fit keeps the best of these, as the cost is not convex in β.
_STARTS = (0.25, 1.0, 1.75)


def _raw(X: Any) -> np.ndarray:
    arr = np.asarray(X, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != len(RAW_FEATURES):
        raise InputError(
            f"FactorisedEnergy: expected {len(RAW_FEATURES)} columns ({', '.join(RAW_FEATURES)}),"
            f" got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError("FactorisedEnergy: every raw feature must be a finite number above 0")
    return arr


def _terms(X: np.ndarray, exponent: float) -> np.ndarray:
    """Each run's terms before their coefficients, in :data:`TERMS` order, times TDP."""
    c = {name: X[:, i] for name, i in _I.items()}
    width = (c["gpu_cuda_cores"] / 1000.0) ** exponent
    train, val = c["train_samples"], c["val_samples"]
    train_steps, val_steps = train / c["batch_size"], val / c["batch_size"]
    columns = [
        train_steps,
        val_steps,
        train_steps / width,
        val_steps / width,
        train * c["gflops"] / width,
        val * c["gflops"] / width,
    ]
    terms: np.ndarray = np.column_stack(columns) * c["gpu_tdp_w"][:, None]
    return terms


class FactorisedEnergy(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Mean epoch energy (J) as TDP times a time model with non-negative terms.

    Takes the raw features in :data:`~joulecast.offline.features.RAW_FEATURES` order (all above
    0). See the module docstring for the model; it has no hyperparameters.

    Attributes:
        coef_: the non-negative coefficient of each term of :data:`TERMS`.
        exponent_: β, how the per-core terms shrink with the number of CUDA cores.
    """

    def fit(self, X: Any, y: Any) -> FactorisedEnergy:
        """Fit the coefficients and β to ``y`` (J, above 0) by least squares on its log."""
        X = _raw(X)
        y = np.asarray(y, dtype=float)
        if y.shape != (len(X),) or not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise InputError("FactorisedEnergy: y must be one finite number above 0 per row")
        # Columns scaled to a typical value of 1, so coefficients and β are of like size.
        scale = np.exp(np.mean(np.log(_terms(X, 1.0)), axis=0))
        log_y = np.log(y)
        n = len(TERMS)

        def residuals(p: np.ndarray) -> np.ndarray:
            total = (_terms(X, p[n]) / scale) @ p[:n]
            residual: np.ndarray = np.log(np.maximum(total, 1e-300)) - log_y
            return residual

        lower = np.zeros(n + 1)
        upper = np.r_[np.full(n, np.inf), MAX_EXPONENT]
        best = None
        for start in _STARTS:
            first = np.exp(np.mean(log_y)) / n
            p0 = np.r_[np.full(n, first), start]
            fit = least_squares(residuals, p0, bounds=(lower, upper), method="trf")
            if best is None or fit.cost < best.cost:
                best = fit
        assert best is not None
        self.coef_ = best.x[:n] / scale
        self.exponent_ = float(best.x[n])
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted mean epoch energy of each row, in J."""
        check_is_fitted(self)
        energy: np.ndarray = _terms(_raw(X), self.exponent_) @ self.coef_
        return energy
