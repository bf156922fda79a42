"""Online forecasts of a training run's total energy from its first epochs.

Three estimators over the per-epoch table (``index``, ``duration_s``, ``energy_j``; as
:func:`joulecast.energy.phase_table` makes it), for a run planned to last ``total_epochs``:

- ``power`` (del Rey et al., Eq. 1): E = P_w x t, with P_w the mean power of a window of w
  stable epochs and t the training duration: the true one where it is known, or the time of
  the epochs seen plus the window's mean epoch duration for each epoch still to come.
- ``epoch-energy`` (Eq. 2): E = E_w x s / w + E_u, with E_w the energy of the window, s the
  number of stable epochs of the whole run (``total_epochs`` - stabilizing epoch) and E_u the
  measured energy of the unstable epochs before it. The window is the latest w stable epochs
  seen; stable epochs seen before it count with their measured energy (the same as Eq. 2
  when the window holds every stable epoch seen).
- ``first-epoch``: E = ``total_epochs`` x the mean energy of the first k epochs, what
  Carbontracker predicts by default; a baseline, and the answer after one epoch.

The stabilizing epoch is found in the run by default (:func:`choose_stable_epoch`: FLUSS's
regime change, else the epochs' energy), so a forecast answers from the second epoch on; a
fixed one (the paper's 10) is an option. Every forecast carries a 90% interval: the
epoch-to-epoch spread of the window (Student-t), the error of its mean, and the uncertainty
of the level itself (a slow drift, the trend of a warm-up not quite over), widened and
flagged when few epochs were available.
"""

from __future__ import annotations

import enum
import itertools
import math
import sys
import types
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from joulecast.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from joulecast.store import Store

DEFAULT_WINDOW = 5
DEFAULT_STABLE_EPOCH = 10
# The default stabilizing epoch: found in the run (FLUSS, then the energy rule).
AUTO = "auto"
# Relative 1-sigma spread of an epoch's energy assumed where one epoch gives no spread.
_UNKNOWN_SPREAD = 0.15
# Relative 1-sigma uncertainty of the first epoch as a measure of the later ones: first
# epochs carry one-off costs (loading, compilation, caches) or a warm-up still under way.
_FIRST_EPOCH_SPREAD = 0.30
# Relative 1-sigma uncertainty of the stable level itself (a slow drift), beside the
# epoch-to-epoch spread: the window's mean is not the future's mean. With the trend over
# _DRIFT_EPOCHS epochs (a warm-up not quite over) and the two spreads above, the 90% intervals
# cover the truth in 85-95% of simulated runs (benchmarks/forecast_accuracy.py).
_LEVEL_SPREAD = 0.006
_DRIFT_EPOCHS = 1.5


class Method(str, enum.Enum):
    """Forecasting methods."""

    POWER = "power"
    EPOCH_ENERGY = "epoch-energy"
    FIRST_EPOCH = "first-epoch"


class StableBy(str, enum.Enum):
    """How a forecast's stabilizing epoch was chosen."""

    FIXED = "fixed"  # given (the paper's 10, or any other)
    FLUSS = "fluss"  # FLUSS's regime change, then the first settled epoch from it
    ENERGY = "energy"  # the first epoch whose energy is in line with the ones after it
    RECENT = "recent"  # energy has not settled in the epochs seen: the latest ones
    FEW_EPOCHS = "few-epochs"  # too few epochs to judge: every epoch after the first
    FIRST_EPOCH = "first-epoch"  # one epoch seen: the first-epoch extrapolation


@dataclass(frozen=True)
class StableEpoch:
    """Where a run's stable epochs start (0-based position in its epoch table), and why.

    ``position`` None: one epoch seen, only the first-epoch extrapolation is possible.
    """

    position: int | None
    by: StableBy
    note: str = ""


@dataclass(frozen=True)
class Forecast:
    """A forecast of a run's total energy, with a 90% interval and what it rests on."""

    total_j: float
    low_j: float
    high_j: float
    method: str
    epochs_used: int
    total_epochs: int
    stable_epoch: int | None = None
    window: tuple[int, int] | None = None
    duration_s: float | None = None
    energy_so_far_j: float = 0.0
    notes: list[str] = field(default_factory=list)
    stable_by: str | None = None
    stable_index: int | None = None

    @property
    def remaining_j(self) -> float:
        """Forecast energy still to be spent after the epochs seen."""
        return max(0.0, self.total_j - self.energy_so_far_j)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "method": self.method,
            "total_j": self.total_j,
            "low_j": self.low_j,
            "high_j": self.high_j,
            "remaining_j": self.remaining_j,
            "epochs_used": self.epochs_used,
            "total_epochs": self.total_epochs,
            "stable_epoch": self.stable_epoch,
            "stable_epoch_index": self.stable_index,
            "stable_epoch_by": self.stable_by,
            "window": list(self.window) if self.window else None,
            "duration_s": self.duration_s,
            "energy_so_far_j": self.energy_so_far_j,
            "notes": list(self.notes),
        }


def _t_quantile(dof: int) -> float:
    """Two-sided 90% Student-t quantile (normal beyond 30 degrees of freedom)."""
    table = {
        1: 6.314,
        2: 2.920,
        3: 2.353,
        4: 2.132,
        5: 2.015,
        6: 1.943,
        7: 1.895,
        8: 1.860,
        9: 1.833,
        10: 1.812,
        12: 1.782,
        15: 1.753,
        20: 1.725,
        25: 1.708,
        30: 1.697,
    }
    if dof <= 0:
        return table[1]
    if dof in table:
        return table[dof]
    keys = sorted(table)
    for lo, hi in itertools.pairwise(keys):
        if lo < dof < hi:
            return table[lo] + (table[hi] - table[lo]) * (dof - lo) / (hi - lo)
    return 1.645


def _check_table(epochs: pd.DataFrame) -> pd.DataFrame:
    import numpy as np

    for col in ("index", "duration_s", "energy_j"):
        if col not in epochs.columns:
            raise InputError(f"epoch table lacks column {col!r}")
    done = epochs.dropna(subset=["energy_j", "duration_s"]).sort_values("index")
    for col in ("energy_j", "duration_s"):
        values = done[col].to_numpy(float)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            at = int(bad.argmax())
            raise InputError(
                f"epoch {done['index'].iloc[at]}: {col} {values[at]}: expected a finite value >= 0"
            )
    if done.empty:
        raise InputError(
            "no finished epoch to forecast from: mark epochs (run.epoch(...)) and finish one"
        )
    return done.reset_index(drop=True)


def _interval(
    centre: float,
    values: np.ndarray,
    remaining: float,
    notes: list[str],
    *,
    unknown_spread: float | None = None,
    level_spread: float | None = None,
    drift_j: float = 0.0,
) -> tuple[float, float]:
    """90% interval around ``centre`` for ``remaining`` future units, each estimated by the
    mean of ``values``.

    Variance of the sum of ``remaining`` draws, plus ``remaining`` x the error of their mean:
    its sampling error and a level uncertainty of ``level_spread`` x the mean (drift, a
    warm-up not quite over), which the spread of a few epochs does not show.
    """
    import numpy as np

    unknown_spread = _UNKNOWN_SPREAD if unknown_spread is None else unknown_spread
    level_spread = _LEVEL_SPREAD if level_spread is None else level_spread
    n = len(values)
    mean = abs(float(np.mean(values)))
    if remaining <= 0:
        return centre, centre
    if n >= 2:
        sd = float(np.std(values, ddof=1))
        q = _t_quantile(n - 1)
    else:
        sd = mean * unknown_spread
        q = 1.645
        notes.append(
            f"one epoch gives no spread: the interval assumes {unknown_spread:.0%} "
            "epoch-to-epoch spread"
        )
    level_sq = (level_spread * mean) ** 2 + drift_j**2
    half = q * math.sqrt(remaining * sd**2 + remaining**2 * (sd**2 / n + level_sq))
    return max(0.0, centre - half), centre + half


def choose_stable_epoch(
    energy_j: Sequence[float] | np.ndarray,
    *,
    window: int = DEFAULT_WINDOW,
    fluss_position: int | None = None,
    fluss_note: str = "",
    indices: Sequence[int] | None = None,
) -> StableEpoch:
    """The stabilizing epoch of a run from the epochs seen so far.

    With a FLUSS regime change (``fluss_position``: the position of the first epoch ending
    after it) that has epochs seen after it, the first settled epoch from there
    (:func:`joulecast.stability.first_settled`). A change in the last epoch seen is where
    FLUSS lands when a prefix has no change in it yet: it is set aside, as is no change, and
    the energy rule decides: the first epoch after the first whose energy is in line with the
    epochs after it. Where it cannot judge (fewer than 5 epochs seen), every epoch after the
    first; where no epoch is in line yet, the latest ``window`` epochs. After one epoch,
    position None. Positions count from 0 in the table; the notes name the epochs by their
    ``indices`` where given.
    """
    import numpy as np

    from joulecast.stability import SETTLE_MIN_AFTER, first_settled

    energy = np.asarray(energy_j, dtype=float)
    n = len(energy)

    def name(position: int) -> str:
        return f"epoch {indices[position] if indices is not None else position}"

    if n < 2:
        return StableEpoch(
            None, StableBy.FIRST_EPOCH, "one epoch seen: the first-epoch extrapolation"
        )
    if fluss_position is not None and fluss_position < n - 1:
        # The first epoch is measured whatever happens; the forecast rests on later ones.
        start = max(fluss_position, 1)
        settled = first_settled(energy, start)
        if settled is None:
            return StableEpoch(
                start, StableBy.FLUSS, f"stable from {name(start)}: FLUSS's regime change"
            )
        return StableEpoch(
            settled,
            StableBy.FLUSS,
            f"stable from {name(settled)}: FLUSS's regime change, then the first epoch whose "
            "energy is in line with the ones after it",
        )
    if fluss_position is not None:
        why = "FLUSS puts the regime change in the last epoch seen; "
    else:
        why = f"{fluss_note}; " if fluss_note else ""
    if n < 2 + SETTLE_MIN_AFTER:
        return StableEpoch(
            1,
            StableBy.FEW_EPOCHS,
            f"{why}{n} epochs are too few to see where energy settles: forecast from the "
            "epochs after the first",
        )
    settled = first_settled(energy, 1)
    if settled is not None:
        return StableEpoch(
            settled,
            StableBy.ENERGY,
            f"{why}stable from {name(settled)}, the first whose energy is in line with the "
            "epochs after it",
        )
    position = max(1, n - window)
    return StableEpoch(
        position,
        StableBy.RECENT,
        f"{why}energy has not settled in the {n} epochs seen: forecast from the latest "
        f"{n - position}, with a wider interval",
    )


def stable_window(
    n_seen: int, stable_epoch: int, window: int, *, start: int | None = None
) -> tuple[int, int, list[str]]:
    """The window [first, last) of stable epochs to use among the ``n_seen`` epochs seen:
    the latest ``window`` from ``stable_epoch`` on, or ``window`` from ``start``."""
    notes: list[str] = []
    if window < 1:
        raise InputError(f"window must be at least 1 epoch, got {window}")
    if stable_epoch < 0:
        raise InputError(f"stabilizing epoch must be >= 0, got {stable_epoch}")
    if n_seen <= stable_epoch:
        raise InputError(
            f"no stable epoch yet: {n_seen} epoch(s) finished, the run stabilizes at epoch "
            f"{stable_epoch}; the forecast needs at least {stable_epoch + 1} epochs "
            f"({stable_epoch + window} for a full window of {window})"
        )
    if start is None:
        first = max(stable_epoch, n_seen - window)
    else:
        first = max(stable_epoch, start)
        if first >= n_seen:
            first = stable_epoch
    last = min(first + window, n_seen)
    if last - first < window:
        notes.append(
            f"only {last - first} stable epoch(s) seen, fewer than the window of {window}: "
            "forecast from those, with a wider interval"
        )
    return first, last, notes


def _resolve_stable(
    stable_epoch: int | str | StableEpoch, energy: np.ndarray, window: int, indices: list[int]
) -> StableEpoch:
    if isinstance(stable_epoch, StableEpoch):
        return stable_epoch
    if stable_epoch == AUTO:
        return choose_stable_epoch(energy, window=window, indices=indices)
    if isinstance(stable_epoch, str):
        raise InputError(f"stable epoch {stable_epoch!r}: expected an epoch number or 'auto'")
    return StableEpoch(int(stable_epoch), StableBy.FIXED)


def _drift(energy: np.ndarray, stable: int, window: int) -> float:
    """How far the level of the epochs to come may be from the window's, J per epoch: the
    trend of the latest 2 x ``window`` stable epochs (none but the first epoch, whose one-off
    costs are no trend) over _DRIFT_EPOCHS epochs; 0 with fewer than 2 of them."""
    import numpy as np

    points = energy[max(1, stable, len(energy) - 2 * window) :]
    if len(points) < 2:
        return 0.0
    x = np.arange(len(points), dtype=float)
    slope = float(np.polyfit(x, points, 1)[0])
    return abs(slope) * _DRIFT_EPOCHS


def _first_epoch(
    energy: np.ndarray, durations: np.ndarray, total_epochs: int, k_asked: int, notes: list[str]
) -> tuple[float, float, float, int]:
    """The first-epoch extrapolation: total, interval and duration from the first k epochs."""
    n = len(energy)
    k = max(1, min(k_asked, n))
    if k < k_asked:
        notes.append(f"only {k} epoch(s) seen of the {k_asked} asked for")
    per_epoch = energy[:k]
    total = total_epochs * float(per_epoch.mean())
    # The epochs seen are known; the interval covers the extrapolated rest. Epochs seen after
    # the first k give the spread, and how far the first k are from them.
    known = float(energy.sum())
    centre = known + float(per_epoch.mean()) * (total_epochs - n)
    later = energy[k:]
    drift = abs(float(later.mean()) - float(per_epoch.mean())) if len(later) else 0.0
    low, high = _interval(
        centre,
        later if len(later) > 1 else per_epoch,
        total_epochs - n,
        notes,
        unknown_spread=_FIRST_EPOCH_SPREAD,
        drift_j=drift,
    )
    return total, min(low, total), max(high, total), k


def forecast_energy(
    epochs: pd.DataFrame,
    total_epochs: int,
    *,
    method: Method | str = Method.EPOCH_ENERGY,
    stable_epoch: int | str | StableEpoch = AUTO,
    window: int = DEFAULT_WINDOW,
    window_start: int | None = None,
    first_epochs: int = 1,
    duration_s: float | None = None,
) -> Forecast:
    """Forecast the total energy of a run of ``total_epochs`` epochs from its ``epochs`` table.

    Only the epochs in the table are used (pass the first K rows to forecast "after K").
    ``stable_epoch`` is the position of the first stable epoch in the table, ``"auto"`` (the
    energy rule of :func:`choose_stable_epoch`; :func:`forecast_run` adds FLUSS) or a
    :class:`StableEpoch` already chosen. The window is the latest ``window`` stable epochs
    seen, or ``window`` epochs from ``window_start``. ``duration_s`` is the training duration
    of the power method (the paper's t: the true one); by default it is projected.
    """
    method = Method(method)
    done = _check_table(epochs)
    n = len(done)
    if total_epochs < n:
        raise InputError(f"total_epochs {total_epochs} is less than the {n} epochs seen")
    energy = done["energy_j"].to_numpy(float)
    durations = done["duration_s"].to_numpy(float)
    so_far = float(energy.sum())
    notes: list[str] = []

    indices = done["index"].tolist()
    choice = (
        None
        if method is Method.FIRST_EPOCH
        else _resolve_stable(stable_epoch, energy, window, indices)
    )
    if choice is None or choice.position is None:
        if choice is not None:
            notes.append(choice.note)
        total, low, high, k = _first_epoch(energy, durations, total_epochs, first_epochs, notes)
        return Forecast(
            total,
            low,
            high,
            Method.FIRST_EPOCH.value,
            n if choice is not None else k,
            total_epochs,
            None,
            (0, k),
            float(total_epochs * durations[:k].mean()),
            so_far,
            notes,
            None if choice is None else choice.by.value,
        )

    stable = choice.position
    if choice.note:
        notes.append(choice.note)
    first, last, window_notes = stable_window(n, stable, window, start=window_start)
    notes += window_notes
    w_energy = energy[first:last]
    w_duration = durations[first:last]
    mean_epoch_s = float(w_duration.mean())
    seen_s = float(durations.sum())
    projected_s = seen_s + mean_epoch_s * (total_epochs - n)
    t_total = duration_s if duration_s is not None else projected_s
    mean_j = float(w_energy.mean())
    drift = _drift(energy, stable, window)

    if method is Method.POWER:
        p_w = float(w_energy.sum() / w_duration.sum())
        total = p_w * t_total
        # Eq. 1 applies the stable power to the epochs seen too, a bias it is known to have:
        # the interval is about the truth (the energy seen plus the window's power for the
        # time to come) and stretched to hold the forecast.
        remaining_s = max(0.0, t_total - seen_s)
        units = remaining_s / mean_epoch_s if mean_epoch_s > 0 else 0.0
        low, high = _interval(so_far + p_w * remaining_s, w_energy, units, notes, drift_j=drift)
    else:
        # Eq. 2 (E_w x s / w + E_u) where the window is every stable epoch seen; past the
        # window, the epochs seen count with their measured energy.
        total = so_far + mean_j * (total_epochs - n)
        low, high = _interval(total, w_energy, total_epochs - n, notes, drift_j=drift)
    low, high = min(low, total), max(high, total)
    return Forecast(
        float(total),
        float(low),
        float(high),
        method.value,
        n,
        total_epochs,
        stable,
        (first, last),
        float(t_total),
        so_far,
        notes,
        choice.by.value,
        int(indices[stable]),
    )


def progress_line(result: Forecast, *, width: int = 20) -> str:
    """One line for a live forecast: epochs done, a bar of energy spent vs forecast, the rest.

    ``epoch 12/50 [#####---------------] 34.2 kJ spent, forecast 140.1 kJ (90%: 132.0 to
    148.3), 105.9 kJ to go [epoch-energy]``, then the first note when there is one.
    """
    share = result.energy_so_far_j / result.total_j if result.total_j > 0 else 0.0
    filled = min(width, max(0, round(share * width)))
    scale, unit = next(
        (s, u)
        for s, u in ((1e6, "MJ"), (1e3, "kJ"), (1.0, "J"))
        if result.high_j >= 10 * s or s == 1.0
    )
    line = (
        f"epoch {result.epochs_used}/{result.total_epochs} [{'#' * filled}{'-' * (width - filled)}]"
        f" {result.energy_so_far_j / scale:,.1f} {unit} spent,"
        f" forecast {result.total_j / scale:,.1f} {unit}"
        f" (90%: {result.low_j / scale:,.1f} to {result.high_j / scale:,.1f}),"
        f" {result.remaining_j / scale:,.1f} {unit} to go [{result.method}]"
    )
    if result.notes:
        line += f"; {result.notes[0]}"
    return line


class LiveForecaster:
    """Re-forecasts a run's total energy as epochs finish.

    With the stabilizing epoch ``"auto"`` (the default) it is chosen again after every epoch
    (:func:`choose_stable_epoch`; pass ``stable`` to :meth:`update` to add FLUSS's answer),
    and the forecast answers from the second epoch on. With a fixed one, until it has been
    passed, the answer is the first-epoch extrapolation of the epochs seen, flagged in the
    notes. After one epoch it is the first-epoch extrapolation either way.
    """

    def __init__(
        self,
        total_epochs: int,
        *,
        method: Method | str = Method.EPOCH_ENERGY,
        stable_epoch: int | str = AUTO,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if total_epochs < 1:
            raise InputError(f"total_epochs must be at least 1, got {total_epochs}")
        if isinstance(stable_epoch, str) and stable_epoch != AUTO:
            raise InputError(f"stable epoch {stable_epoch!r}: expected an epoch number or 'auto'")
        self.total_epochs = total_epochs
        self.method = Method(method)
        self.stable_epoch = stable_epoch
        self.window = window
        self.last: Forecast | None = None

    def update(self, epochs: pd.DataFrame, *, stable: StableEpoch | None = None) -> Forecast:
        """The forecast from the finished epochs in ``epochs``; ``stable``, the stabilizing
        epoch chosen for them (with ``"auto"`` only)."""
        done = _check_table(epochs)
        total = max(self.total_epochs, len(done))
        fixed = self.stable_epoch if isinstance(self.stable_epoch, int) else None
        if self.method is Method.FIRST_EPOCH or (fixed is not None and len(done) <= fixed):
            result = forecast_energy(done, total, method=Method.FIRST_EPOCH, first_epochs=len(done))
            if self.method is not Method.FIRST_EPOCH:
                result.notes.insert(
                    0,
                    f"before the stabilizing epoch {fixed}: extrapolating the "
                    f"mean of the {len(done)} epoch(s) seen",
                )
        else:
            result = forecast_energy(
                done,
                total,
                method=self.method,
                stable_epoch=stable if stable is not None and fixed is None else self.stable_epoch,
                window=self.window,
            )
        self.last = result
        return result


@dataclass(frozen=True)
class StopDecision:
    """Whether to stop, and why."""

    stop: bool
    reason: str = ""


@dataclass
class EnergyBudget:
    """Energy-aware early stopping (del Rey et al., section 5.4).

    Stop when the forecast total exceeds ``budget_j``, or when the improvement of ``monitor``
    (lower is better when ``mode`` is ``"min"``) over the last ``patience`` epochs, per kJ spent
    on them, falls below ``min_gain_per_kj``.
    """

    budget_j: float | None = None
    min_gain_per_kj: float | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    patience: int = 3

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise InputError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.patience < 1:
            raise InputError(f"patience must be at least 1 epoch, got {self.patience}")

    def check(self, epochs: pd.DataFrame, result: Forecast | None) -> StopDecision:
        """Decide from the epochs so far (with ``metrics``) and the latest forecast."""
        if self.budget_j is not None and result is not None and result.total_j > self.budget_j:
            return StopDecision(
                True,
                f"forecast {result.total_j / 1e3:.1f} kJ exceeds the budget of "
                f"{self.budget_j / 1e3:.1f} kJ",
            )
        if self.min_gain_per_kj is None or "metrics" not in epochs.columns:
            return StopDecision(False)
        done = epochs.dropna(subset=["energy_j"])
        values = [m.get(self.monitor) if isinstance(m, dict) else None for m in done["metrics"]]
        if len(values) <= self.patience:
            return StopDecision(False)
        before, now = values[-1 - self.patience], values[-1]
        if before is None or now is None:
            return StopDecision(False)
        gain = float(before) - float(now)
        if self.mode == "max":
            gain = -gain
        spent_kj = float(done["energy_j"].iloc[-self.patience :].sum()) / 1e3
        per_kj = gain / spent_kj if spent_kj > 0 else math.inf
        if per_kj < self.min_gain_per_kj:
            return StopDecision(
                True,
                f"{self.monitor} improved by {gain:.4g} over the last {self.patience} epochs "
                f"({spent_kj:.1f} kJ): {per_kj:.3g} per kJ, below {self.min_gain_per_kj:.3g}",
            )
        return StopDecision(False)


def evaluate(
    tables: dict[Any, pd.DataFrame],
    *,
    methods: tuple[str, ...] = ("power", "epoch-energy", "first-epoch"),
    windows: range | list[int] = range(1, 21),
    stable_epochs: range | list[int] = range(0, 21),
    random_start: bool = False,
    seed: int = 0,
    duration: str = "projected",
) -> pd.DataFrame:
    """Errors of each method over many finished runs, swept over window and stabilizing epoch.

    ``tables`` maps a run key to its epoch table. For each (method, window, stable epoch), each
    run with more than stable_epoch + window epochs is forecast from the first stable_epoch +
    window of them and compared with
    the sum of its epochs' energy. With ``random_start`` the window starts at a random epoch
    after the stabilizing one (seeded), and the forecast is made when that window ends.
    ``duration`` ``"true"`` gives the power method (Eq. 1) each run's true training duration,
    as the paper's Table 10 does; ``"projected"``, the one a live forecast projects.
    Returns one row per setting: ``method``, ``window``, ``stable_epoch``, ``runs``,
    ``rmse_j``, ``mae_j``, ``mape_pct``, ``duration``.
    """
    import numpy as np
    import pandas as pd

    if duration not in ("true", "projected"):
        raise InputError(f"duration {duration!r}: expected 'true' or 'projected'")
    rows = []
    finished = {k: _check_table(t) for k, t in tables.items()}
    rng = np.random.default_rng(seed)
    for method in methods:
        for w in windows:
            for s in stable_epochs:
                errors, truths = [], []
                for table in finished.values():
                    n = len(table)
                    if n <= s + w:  # nothing left to forecast: the error would be 0
                        continue
                    start = s
                    if random_start and method != "first-epoch":
                        start = int(rng.integers(s, n - w + 1))
                    f = forecast_energy(
                        table.iloc[: start + w],
                        n,
                        method=method,
                        stable_epoch=s,
                        window=w,
                        window_start=start,
                        first_epochs=1,
                        duration_s=(
                            float(table["duration_s"].sum()) if duration == "true" else None
                        ),
                    )
                    truth = float(table["energy_j"].sum())
                    errors.append(f.total_j - truth)
                    truths.append(truth)
                if not errors:
                    continue
                err = np.array(errors)
                rows.append(
                    {
                        "method": method,
                        "window": w,
                        "stable_epoch": s,
                        "runs": len(err),
                        "rmse_j": float(np.sqrt(np.mean(err**2))),
                        "mae_j": float(np.mean(np.abs(err))),
                        "mape_pct": float(np.mean(np.abs(err) / np.array(truths)) * 100),
                        "duration": duration,
                    }
                )
                if method == "first-epoch":
                    break  # independent of the stabilizing epoch
            if method == "first-epoch":
                break  # and of the window
    columns = ["method", "window", "stable_epoch", "runs", "rmse_j", "mae_j", "mape_pct"]
    return pd.DataFrame(rows, columns=[*columns, "duration"])


def plot_sweep(
    result: pd.DataFrame,
    path: str,
    *,
    stable_epoch: int = DEFAULT_STABLE_EPOCH,
    window: int = DEFAULT_WINDOW,
) -> None:
    """Save the RMSE of each method vs w (window from ``stable_epoch``) and vs the stabilizing
    epoch (at ``window``), as in del Rey et al. Fig. 10, from :func:`evaluate`'s table."""
    from joulecast._plot import pyplot, save

    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7))
    for method, group in result.groupby("method", sort=False):
        if method == Method.FIRST_EPOCH.value:
            for ax in (top, bottom):
                ax.axhline(group["rmse_j"].iloc[0] / 1e3, color="0.5", ls=":", label=method)
            continue
        by_w = group[group["stable_epoch"] == stable_epoch].sort_values("window")
        by_s = group[group["window"] == window].sort_values("stable_epoch")
        top.plot(by_w["window"], by_w["rmse_j"] / 1e3, marker="o", ms=3, label=method)
        bottom.plot(by_s["stable_epoch"], by_s["rmse_j"] / 1e3, marker="o", ms=3, label=method)
    top.set_xlabel(f"window size w (window from epoch {stable_epoch})")
    bottom.set_xlabel(f"stabilizing epoch (w = {window})")
    for ax in (top, bottom):
        ax.set_ylabel("RMSE (kJ)")
        ax.grid(alpha=0.3)
        ax.legend()
    runs = int(result["runs"].max()) if len(result) else 0
    top.set_title(f"online forecast error over up to {runs} runs")
    fig.tight_layout()
    try:
        save(fig, path, dpi=110)
    finally:
        plt.close(fig)


# -- stored runs ----------------------------------------------------------------------------


def finished_epochs(store: Store, run_id: int) -> pd.DataFrame:
    """The per-epoch table of a stored run's finished epochs, in order (0-based rows); the
    unmeasured ones (:func:`joulecast.energy.unmeasured_phases`) are left out."""
    return _finished_and_unmeasured(store, run_id)[0]


def _finished_and_unmeasured(store: Store, run_id: int) -> tuple[pd.DataFrame, list[int]]:
    """:func:`finished_epochs`, and the indices of the epochs left out as unmeasured."""
    from joulecast.energy import summarize

    epochs = summarize(store, run_id).epochs
    unmeasured = [int(i) for i in epochs.loc[epochs["unmeasured"], "index"]]
    done = epochs.dropna(subset=["energy_j"]).sort_values("index").reset_index(drop=True)
    return done, unmeasured


def fluss_position(store: Store, run_id: int, epochs: pd.DataFrame) -> tuple[int | None, str]:
    """The position in ``epochs`` of the first epoch ending after FLUSS's regime change, over
    the run up to the end of the last epoch in ``epochs``; None and why where there is none.

    Reads the store's energy aggregates (:func:`joulecast.stability.stored_stabilizing_epoch`).
    """
    from joulecast.stability import stored_stabilizing_epoch

    try:
        end = float(epochs["end_s"].max())
        result = stored_stabilizing_epoch(store, run_id, epochs, end_s=end)
    except InputError as exc:
        return None, f"no FLUSS regime change ({exc})"
    if result.epoch is None:
        return None, f"no FLUSS regime change ({result.reason})"
    return int(epochs.index[epochs["index"] == result.epoch][0]), ""


def auto_stable_epoch(
    store: Store, run_id: int, epochs: pd.DataFrame, *, window: int = DEFAULT_WINDOW
) -> StableEpoch:
    """The stabilizing epoch of a stored run from its finished ``epochs`` (a prefix of them is
    fine): FLUSS over the run up to their end, then :func:`choose_stable_epoch`."""
    position, why = fluss_position(store, run_id, epochs) if len(epochs) > 1 else (None, "")
    return choose_stable_epoch(
        epochs["energy_j"].to_numpy(float),
        window=window,
        fluss_position=position,
        fluss_note=why,
        indices=epochs["index"].tolist(),
    )


@dataclass(frozen=True)
class RunForecast:
    """A stored run's forecast, beside the measured total where the run has finished."""

    run_id: int
    forecast: Forecast
    after: int
    true_j: float | None = None

    @property
    def error_j(self) -> float | None:
        """Forecast minus measured total, where the truth is known."""
        return None if self.true_j is None else self.forecast.total_j - self.true_j

    @property
    def error_pct(self) -> float | None:
        """The error as a percentage of the measured total."""
        if self.true_j is None or self.error_j is None or not self.true_j:
            return None
        return 100 * self.error_j / self.true_j

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see docs/json.md)."""
        data = {"run_id": self.run_id, **self.forecast.to_dict()}
        if self.true_j is not None:
            data.update(true_j=self.true_j, error_j=self.error_j, error_pct=self.error_pct)
        return data


def forecast_run(
    store: Store,
    run_id: int,
    *,
    after: int | None = None,
    total_epochs: int | None = None,
    method: Method | str = Method.EPOCH_ENERGY,
    stable_epoch: int | str = AUTO,
    window: int = DEFAULT_WINDOW,
    duration: str = "projected",
) -> RunForecast:
    """Forecast a stored run's total energy from its first ``after`` finished epochs.

    ``total_epochs`` defaults to the epochs the run finished; ``stable_epoch`` ``"auto"``
    finds it with :func:`auto_stable_epoch` on those epochs. ``duration`` ``"true"`` gives the
    power method the run's measured training duration (the paper's Eq. 1, for a finished run)
    instead of the projected one. A finished run forecast for the epochs it ran is compared
    with its measured total (``true_j``).

    Unmeasured epochs (run outside the run's readings, as after its sampler died) are left
    out, with a note: ``after`` counts the measured ones.

    Raises:
        InputError: the run has no finished epochs, ``after`` is out of range, or the true
            duration is asked of a run that has not finished.
    """
    from joulecast.energy import index_ranges

    epochs, unmeasured = _finished_and_unmeasured(store, run_id)
    if epochs.empty:
        left = f" ({len(unmeasured)} unmeasured)" if unmeasured else ""
        raise InputError(f"run {run_id} has no finished epochs{left}: nothing to forecast from")
    k = after if after is not None else len(epochs)
    if k < 1 or k > len(epochs):
        raise InputError(f"after {k}: the run has {len(epochs)} finished epochs")
    if total_epochs is not None and total_epochs < 1:
        raise InputError(f"total epochs {total_epochs}: expected at least 1")
    planned = total_epochs or len(epochs)
    seen = epochs.iloc[:k]
    status = store.run(run_id)["status"]
    finished = status != "running" and planned == len(epochs)
    duration_s = _duration(duration, epochs, status == "completed" and finished, run_id)
    stable: int | str | StableEpoch = stable_epoch
    if stable_epoch == AUTO and Method(method) is not Method.FIRST_EPOCH:
        stable = auto_stable_epoch(store, run_id, seen, window=window)
    result = forecast_energy(
        seen, planned, method=method, stable_epoch=stable, window=window, duration_s=duration_s
    )
    if duration_s is not None and Method(method) is not Method.POWER:
        name = Method(method).value
        result.notes.append(f"the true duration is used by the power method only, not {name}")
    if unmeasured:
        result.notes.append(
            f"epochs {index_ranges(unmeasured)} are unmeasured (they ran outside the run's"
            " readings): left out"
        )
    true_j = float(epochs["energy_j"].sum()) if finished else None
    return RunForecast(run_id, result, k, true_j)


def _duration(duration: str, epochs: pd.DataFrame, finished: bool, run_id: int) -> float | None:
    """The training duration the power method is given: None to project it, or the true one."""
    if duration == "projected":
        return None
    if duration != "true":
        raise InputError(f"duration {duration!r}: expected 'true' or 'projected'")
    if not finished:
        raise InputError(
            f"run {run_id}: the true training duration is known only for a completed run "
            "forecast for the epochs it ran"
        )
    return float(epochs["duration_s"].sum())


# The old name, for ``from joulecast.forecast import forecast``.
forecast = forecast_energy


class _CallableModule(types.ModuleType):
    """Lets the call ``joulecast.forecast(...)`` of earlier versions keep working."""

    def __call__(self, *args: Any, **kwargs: Any) -> Forecast:
        warnings.warn(
            "calling joulecast.forecast(...) is deprecated: call joulecast.forecast_energy(...)",
            DeprecationWarning,
            stacklevel=2,
        )
        return forecast_energy(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
