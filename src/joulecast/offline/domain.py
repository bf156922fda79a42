"""The domain of an offline estimator: the configurations it was trained on, how far a new
configuration lies from them, and how much wider that makes the estimate's interval.

A *configuration* is one setting of the ten raw features
(:func:`~joulecast.offline.features.configuration_groups`); the paper's data repeats each a few
dozen times. For a configuration asked about, :class:`TrainingDomain` answers:

- which features fall outside their training ranges;
- which factors (the GPU, the model's GFLOPs, the dataset's sizes, the batch, the input size)
  each occur in training but never together (:data:`PAIRS`), within a relative tolerance
  (:data:`SAME`): a GPU and an architecture each well known are still an extrapolation together;
- its distance to the nearest training configuration, in standardised log features, in units
  of the training configurations' own spacing: 1 is as far as 9 in 10 training configurations
  are from their nearest other one.

A :class:`Band` per target, calibrated when the model is fitted (:func:`calibrate_band`), turns
the distance into an interval: the errors of grouped out-of-fold predictions (whole
configurations held out) grow with the distance of what was held out, and the band follows them.
Where the model is an ensemble, the interval also spans its members' predictions, and members
that disagree more than they did on 9 in 10 held-out configurations are a warning of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import VotingRegressor

from joulecast.offline.features import GPU_COLUMNS, RAW_FEATURES, configuration_groups

#: Two values within this share of the larger count as the same: the Inception V3 runs carry
#: 1.5026 or 1.5070 GFLOPs (101 or 120 classes), and the Caltech101 ones 3,059/6,085 or
#: 3,060/6,084 images depending on the machine.
SAME = 0.02
#: The factors of a configuration: the features that together name one choice of the user.
FACTORS: dict[str, tuple[str, ...]] = {
    "gpu": GPU_COLUMNS,
    "gflops": ("gflops",),
    "dataset": ("train_samples", "val_samples"),
    "batch_size": ("batch_size",),
    "input": ("input_height", "input_width"),
}
#: The pairs of factors checked for having been seen together.
PAIRS: tuple[tuple[str, str], ...] = (
    ("gpu", "gflops"),
    ("gpu", "dataset"),
    ("gpu", "batch_size"),
    ("gpu", "input"),
    ("gflops", "dataset"),
)
#: The share of held-out errors a band covers, and of held-out member spreads under the limit.
COVERAGE = 0.9
#: A distance above this is a warning: farther than 9 in 10 training configurations are from
#: their nearest other one.
FAR = 1.0
#: At most this many distance bins in a band (each of at least three held-out configurations).
MAX_BINS = 3
#: The widest half-width of an interval, in log units (a factor of about 5e21: no information).
MAX_LOG_HALFWIDTH = 50.0
UNCALIBRATED = (
    "no calibrated interval: the model file predates intervals, or the model was fitted on"
    " fewer than 5 configurations (refit it with fit-offline for one)"
)

_COLUMN = {name: i for i, name in enumerate(RAW_FEATURES)}


@dataclass(frozen=True)
class Band:
    """How wide a target's interval is at each distance from the training configurations.

    ``log_halfwidth[k]`` is the ``coverage`` quantile of the absolute log errors (log measured
    minus log predicted) of configurations held out at about ``distance[k]``; between the points
    the half-width is interpolated, below the first it is the first, and beyond the last it grows
    in proportion to the distance (no held-out configuration was that far, so nothing narrower
    is known), up to :data:`MAX_LOG_HALFWIDTH`. Both sequences are non-decreasing.

    Attributes:
        distance: distances of the calibration points (above 0).
        log_halfwidth: half-widths there, in natural-log units (0.1 is about ±10%).
        coverage: the share of held-out errors the band covers.
        spread_limit: for an ensemble, the ``coverage`` quantile of its members' highest over
            lowest prediction on held-out configurations; None otherwise.
    """

    distance: tuple[float, ...]
    log_halfwidth: tuple[float, ...]
    coverage: float = COVERAGE
    spread_limit: float | None = None

    def halfwidth(self, distance: float) -> float:
        """The log half-width of the interval at ``distance``."""
        last = self.distance[-1]
        if distance > last:
            return min(self.log_halfwidth[-1] * distance / last, MAX_LOG_HALFWIDTH)
        return float(np.interp(distance, self.distance, self.log_halfwidth))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form a model file stores (``coverage`` is stored once, beside)."""
        out: dict[str, Any] = {
            "distance": list(self.distance),
            "log_halfwidth": list(self.log_halfwidth),
        }
        if self.spread_limit is not None:
            out["spread_limit"] = self.spread_limit
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], coverage: float) -> Band:
        """The band :meth:`to_dict` wrote (checked beforehand by the model file's schema)."""
        limit = data.get("spread_limit")
        return cls(
            tuple(float(v) for v in data["distance"]),
            tuple(float(v) for v in data["log_halfwidth"]),
            float(coverage),
            None if limit is None else float(limit),
        )


@dataclass(frozen=True)
class Applicability:
    """How far one configuration lies from a model's training data, and what follows.

    Attributes:
        predictions: the model's prediction per target (what the intervals bound).
        distance: to the nearest training configuration, in units of the training
            configurations' spacing (0 on one of them; above :data:`FAR` is far).
        out_of_range: the features outside their training ranges.
        unseen: the pairs of :data:`FACTORS` each seen in training but never together.
        spread: per target of an ensemble, its members' highest over lowest prediction.
        intervals: per target, the (low, high) interval in the target's unit; empty when the
            model has no calibrated band, or for a prediction that is not above 0.
        calibrated: whether the model has calibrated bands.
        coverage: the share of held-out errors its bands cover (None when not calibrated).
        warnings: one line per reason to trust the estimate less, the out-of-range ones first
            (as :meth:`TrainingDomain.out_of_range` words them).
    """

    predictions: Mapping[str, float]
    distance: float
    out_of_range: tuple[str, ...] = ()
    unseen: tuple[tuple[str, str], ...] = ()
    spread: Mapping[str, float] = field(default_factory=dict)
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    calibrated: bool = False
    coverage: float | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "predictions": dict(self.predictions),
            "distance": self.distance,
            "out_of_range": list(self.out_of_range),
            "unseen": [list(pair) for pair in self.unseen],
            "spread": dict(self.spread),
            "intervals": {t: list(v) for t, v in self.intervals.items()},
            "calibrated": self.calibrated,
            "coverage": self.coverage,
        }


class TrainingDomain:
    """The distinct training configurations of a model, indexed for questions about a new one.

    Args:
        features: the training rows' raw features (:data:`RAW_FEATURES` columns).
    """

    def __init__(self, features: pd.DataFrame) -> None:
        frame = features[RAW_FEATURES]
        _, first = np.unique(configuration_groups(frame), return_index=True)
        #: One row per distinct configuration, in :data:`RAW_FEATURES` order.
        self.configurations: np.ndarray = frame.to_numpy(dtype=float)[first]
        #: Each feature's (lowest, highest) training value.
        self.ranges: dict[str, tuple[float, float]] = {
            c: (float(frame[c].min()), float(frame[c].max())) for c in RAW_FEATURES
        }
        logs = np.log(self.configurations)
        self._center = logs.mean(axis=0)
        scale = logs.std(axis=0)
        # A feature constant in training has no spread to scale by; one log unit (a factor e)
        # then counts as one standard deviation.
        self._scale = np.where(scale > 0, scale, 1.0)
        points = self._space(self.configurations)
        if len(points) > 1:
            gaps = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1))
            np.fill_diagonal(gaps, np.inf)
            spacing = float(np.quantile(gaps.min(axis=1), COVERAGE))
        else:
            spacing = 0.0
        #: The distance (in standardised log features) within which 9 in 10 training
        #: configurations have another: the unit of :meth:`distance`.
        self.spacing = spacing if spacing > 0 else 1.0

    def _space(self, X: np.ndarray) -> np.ndarray:
        scaled: np.ndarray = (np.log(np.asarray(X, dtype=float)) - self._center) / self._scale
        return scaled

    def distance(self, X: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
        """Each row's distance to the nearest training configuration (or row of ``among``),
        in units of :attr:`spacing`.

        Args:
            X: raw features, one row per configuration asked about.
            among: raw features of the configurations to measure to (default: the training
                configurations); the calibration measures held-out rows to their fold's.
        """
        points = self._space(self.configurations if among is None else among)
        asked = self._space(np.atleast_2d(X))
        gaps = np.sqrt(((asked[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1))
        nearest: np.ndarray = gaps.min(axis=1) / self.spacing
        return nearest

    def outside(self, row: pd.Series) -> list[str]:
        """The features of ``row`` outside their training ranges."""
        return [c for c in RAW_FEATURES if not self.ranges[c][0] <= row[c] <= self.ranges[c][1]]

    def out_of_range(self, row: pd.Series) -> list[str]:
        """A warning for each feature of ``row`` outside its training range."""
        return [
            f"{c} {row[c]:.4g} is outside the training range"
            f" {self.ranges[c][0]:.4g}..{self.ranges[c][1]:.4g}"
            for c in self.outside(row)
        ]

    def unseen(self, row: pd.Series) -> list[tuple[str, str]]:
        """The pairs of :data:`PAIRS` whose factors of ``row`` each occur in a training
        configuration (within :data:`SAME`) but in none together."""
        hits = {}
        for factor, columns in FACTORS.items():
            index = [_COLUMN[c] for c in columns]
            asked = np.array([float(row[c]) for c in columns])
            known = self.configurations[:, index]
            hits[factor] = np.all(np.abs(known - asked) <= SAME * np.maximum(known, asked), axis=1)
        return [
            (a, b)
            for a, b in PAIRS
            if hits[a].any() and hits[b].any() and not (hits[a] & hits[b]).any()
        ]

    def assess(
        self,
        row: pd.Series,
        predictions: Mapping[str, float],
        members: Mapping[str, Sequence[float]],
        bands: Mapping[str, Band] | None,
    ) -> Applicability:
        """Where ``row`` lies from the training data, and the intervals of its predictions.

        Args:
            row: the raw features of one configuration.
            predictions: the model's prediction per target.
            members: per target of an ensemble, its members' predictions.
            bands: the model's calibrated bands, or None.
        """
        distance = float(self.distance(row[RAW_FEATURES].to_numpy(dtype=float))[0])
        warnings = self.out_of_range(row)
        unseen = self.unseen(row)
        warnings += [
            f"{_factor(a, row)} and {_factor(b, row)} each occur in the training data,"
            " but never together"
            for a, b in unseen
        ]
        if distance > FAR:
            warnings.append(
                f"distance {distance:.2f} to the nearest training configuration: farther than"
                f" {COVERAGE:.0%} of the training configurations are from their nearest ({FAR:g})"
            )
        spread = {}
        for target, values in members.items():
            low, high = min(values), max(values)
            if low <= 0:
                continue
            spread[target] = high / low
            band = bands.get(target) if bands else None
            limit = None if band is None else band.spread_limit
            if band is not None and limit is not None and spread[target] > limit:
                warnings.append(
                    f"{target}: the ensemble's members disagree by x{spread[target]:.2f}, more"
                    f" than on {band.coverage:.0%} of the configurations held out in fitting"
                    f" (x{limit:.2f})"
                )
        intervals = {}
        for target, value in predictions.items():
            band = bands.get(target) if bands else None
            if band is None or not value > 0:
                continue
            half = band.halfwidth(distance)
            values = [value, *members.get(target, ())]
            intervals[target] = (
                min(value * math.exp(-half), *values),
                max(value * math.exp(half), *values),
            )
        return Applicability(
            predictions=dict(predictions),
            distance=distance,
            out_of_range=tuple(self.outside(row)),
            unseen=tuple(unseen),
            spread=spread,
            intervals=intervals,
            calibrated=bands is not None,
            coverage=next((b.coverage for b in bands.values()), None) if bands else None,
            warnings=tuple(warnings),
        )


def _factor(name: str, row: pd.Series) -> str:
    """A factor's values in a warning."""
    if name == "gpu":
        return (
            f"the GPU ({row['gpu_cuda_cores']:.0f} CUDA cores, {row['gpu_memory_gb']:g} GB,"
            f" {row['gpu_tdp_w']:g} W)"
        )
    if name == "dataset":
        return f"train/val samples {row['train_samples']:.0f}/{row['val_samples']:.0f}"
    if name == "input":
        return f"input {row['input_height']:.0f}x{row['input_width']:.0f} px"
    (column,) = FACTORS[name]
    return f"{column} {row[column]:.4g}"


def members_of(model: Any) -> list[Any]:
    """The fitted members of an ensemble (a ``mean`` model), or none."""
    return list(model.estimators_) if isinstance(model, VotingRegressor) else []


def calibrate_band(
    make: Callable[[], Any],
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    domain: TrainingDomain,
    splitter: Any,
) -> Band | None:
    """A target's band, from grouped out-of-fold predictions of the model ``make`` builds.

    Each fold holds whole configurations out (``splitter``: a grouped K-fold over ``groups``);
    each held-out configuration gets its distance to the fold's training configurations and
    its runs' absolute log errors. The configurations, ordered by distance, fall into up to
    :data:`MAX_BINS` bins of at least three; each bin gives a point (its median distance, the
    :data:`COVERAGE` quantile of its runs' errors), made non-decreasing.

    Returns:
        The band, or None with fewer configurations than ``splitter`` has folds.
    """
    n_folds = splitter.get_n_splits()
    if len(np.unique(groups)) < n_folds:
        return None
    held: list[tuple[float, np.ndarray, float | None]] = []  # distance, log errors, spread
    for train, test in splitter.split(X, y, groups):
        model = make().fit(X[train], y[train])
        predicted = np.asarray(model.predict(X[test]), dtype=float)
        parts = [np.asarray(m.predict(X[test]), dtype=float) for m in members_of(model)]
        distances = domain.distance(X[test], among=X[train])
        for group in np.unique(groups[test]):
            mine = groups[test] == group
            usable = mine & (predicted > 0)
            if not usable.any():
                continue  # a non-positive prediction is refused when estimating, not banded
            errors = np.abs(np.log(y[test][usable]) - np.log(predicted[usable]))
            spread = None
            if parts:
                first = int(np.flatnonzero(mine)[0])
                values = [p[first] for p in parts]
                spread = max(values) / min(values) if min(values) > 0 else None
            held.append((float(distances[mine][0]), errors, spread))
    if not held:
        return None
    held.sort(key=lambda h: h[0])
    n_bins = max(1, min(MAX_BINS, len(held) // 3))
    distance, halfwidth = [], []
    for part in np.array_split(np.arange(len(held)), n_bins):
        errors = np.concatenate([held[i][1] for i in part])
        distance.append(max(float(np.median([held[i][0] for i in part])), 1e-6))
        halfwidth.append(float(np.quantile(errors, COVERAGE, method="higher")))
    spreads = [h[2] for h in held if h[2] is not None]
    limit = float(np.quantile(spreads, COVERAGE, method="higher")) if spreads else None
    return Band(
        tuple(distance),
        tuple(np.maximum.accumulate(halfwidth).tolist()),
        COVERAGE,
        limit,
    )
