"""When a run's power stabilizes: FLUSS semantic segmentation of its power profile.

The run's total power (all devices with power readings) is put on a uniform grid, each point
the mean power over its cell (the trapezoid of the readings: :func:`joulecast.energy.mean_power`,
so that every reading counts however coarse the grid), the matrix profile of that series is
computed (subsequences of m points, as ``stumpy.stump(power, m)`` computes it), and FLUSS's
corrected arc curve (``stumpy.fluss(I, L, n_regimes=2, excl_factor)``) finds the one regime
change (del Rey et al.: m = L = 10 on 500 ms samples). Both are numpy
(:mod:`joulecast._matrix_profile`): nothing is compiled, the first call in a process costs
what the others do. The stabilizing epoch is the first epoch that ends after the change.
FLUSS can answer at the masked edges of the series; such an answer is rejected.

Subsequences are compared without z-normalization by default: a warm-up differs from the
stable regime mostly in its power *level*, which z-normalization removes; with it, a long
stable regime's arcs can cross anywhere and FLUSS lands at random points of that regime.
``normalize=True`` gives stumpy's default (z-normalized) behaviour.

FLUSS finds where power *changes* most, which on an exponential warm-up is early, in its steep
part; epochs there can still be longer or lighter than the stable ones. :func:`settled_epoch`
therefore moves on from FLUSS's epoch to the first epoch whose energy is in line with the
epochs after it: ``Stability.settled_epoch``, the one the forecasts use.

The matrix profile is O(n^2): long traces are resampled to at most ``max_points`` points, at a
resolution that still keeps several points per epoch where the run allows it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from joulecast._matrix_profile import corrected_arc_curve, matrix_profile
from joulecast._plot import pyplot, save
from joulecast.errors import InputError

if TYPE_CHECKING:
    from joulecast.store import Store

log = logging.getLogger(__name__)

DEFAULT_M = 10
DEFAULT_L = 10
DEFAULT_RESOLUTION_S = 0.5
DEFAULT_MAX_POINTS = 20_000
EXCL_FACTOR = 3
# Share of the series at each end where a regime change is not credible.
EDGE_SHARE = 0.02
# A corrected arc curve at 1 everywhere means one regime, no change.
MAX_CAC = 0.999
MIN_POINTS_PER_EPOCH = 8
# An epoch is settled when its energy is within max(SETTLE_K x robust spread, SETTLE_REL x
# median) of the median of the epochs after it, judged on at least SETTLE_MIN_AFTER of them.
SETTLE_K = 3.0
SETTLE_REL = 0.02
SETTLE_MIN_AFTER = 3
# The most cells a grid may have: 80 MB a column, and far past what the O(n^2) profile can take.
MAX_GRID_CELLS = 10**7


@dataclass(frozen=True)
class Stability:
    """Where the regime change is, in time and epochs, and the curves behind it."""

    change_s: float | None
    epoch: int | None
    resolution_s: float
    m: int
    L: int
    normalize: bool
    t_s: np.ndarray
    power_w: np.ndarray
    cac: np.ndarray
    reason: str = ""
    settled_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the curves)."""
        return {
            "change_s": self.change_s,
            "epoch": self.epoch,
            "settled_epoch": self.settled_epoch,
            "resolution_s": self.resolution_s,
            "m": self.m,
            "L": self.L,
            "normalize": self.normalize,
            "points": len(self.t_s),
            "reason": self.reason,
        }


def total_power(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Times and summed power of every device with power readings, on the union of times."""
    frame = samples.dropna(subset=["power_w"])
    if frame.empty:
        raise InputError("no power readings to segment")
    grid = np.unique(frame["t_s"].to_numpy(float))
    total = np.zeros(len(grid))
    for _, dev in frame.groupby("device"):
        dev = dev.sort_values("t_s")
        total += np.interp(grid, dev["t_s"].to_numpy(float), dev["power_w"].to_numpy(float))
    return grid, total


def choose_resolution(
    duration_s: float,
    epoch_durations_s: np.ndarray | None = None,
    *,
    base_s: float = DEFAULT_RESOLUTION_S,
    max_points: int = DEFAULT_MAX_POINTS,
) -> float:
    """The grid step: ``base_s``, finer for short epochs, coarser to stay under ``max_points``."""
    step = base_s
    if epoch_durations_s is not None and len(epoch_durations_s):
        step = min(step, float(np.median(epoch_durations_s)) / MIN_POINTS_PER_EPOCH)
    return max(step, duration_s / max_points)


def resample(t_s: np.ndarray, power_w: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean power per bin of ``step_s`` (bins without samples are interpolated).

    Raises:
        InputError: The times span more than :data:`MAX_GRID_CELLS` bins, or overflow.
    """
    t0 = float(t_s[0])
    reason = _grid_problem(t0, float(t_s[-1]), step_s)
    if reason:
        raise InputError(reason)
    bins = np.floor((t_s - t0) / step_s).astype(np.int64)
    n = int(bins[-1]) + 1
    sums = np.bincount(bins, weights=power_w, minlength=n)
    counts = np.bincount(bins, minlength=n)
    centres = t0 + (np.arange(n) + 0.5) * step_s
    have = counts > 0
    values = np.interp(centres, centres[have], sums[have] / counts[have])
    return centres, values


def find_change(
    power_w: np.ndarray, m: int = DEFAULT_M, L: int = DEFAULT_L, *, normalize: bool = False
) -> tuple[int | None, np.ndarray, str]:
    """Index of the one regime change FLUSS finds in ``power_w`` (None if it is not credible)."""
    n = len(power_w)
    if n < 4 * m or n <= EXCL_FACTOR * L * 2 + 1:
        return None, np.zeros(n), f"series too short ({n} points) for m={m}, L={L}"
    if float(np.ptp(power_w)) == 0.0:
        return None, np.ones(n), "power is constant: nothing to segment"
    _, index = matrix_profile(power_w, m, normalize=normalize)
    # The ideal arc curve of a series with no regime change is the parabola 2 i (n - i) / n
    # (Gharghabi et al. 2017); stumpy estimates it by simulation, about 0.6 s a call.
    i = np.arange(len(index), dtype=np.float64)
    iac = np.maximum(2.0 * i * (len(index) - i) / len(index), 1e-9)
    cac = corrected_arc_curve(index, L, iac, excl_factor=EXCL_FACTOR)
    # FLUSS's own answer can sit at the edges, where the arc curve's correction is weakest:
    # take the lowest point of the arc curve away from both ends instead.
    edge = max(EXCL_FACTOR * L, int(EDGE_SHARE * len(cac)))
    inner = cac.copy()
    inner[:edge] = np.inf
    inner[len(inner) - edge :] = np.inf
    loc = int(np.argmin(inner))
    if not np.isfinite(inner[loc]) or inner[loc] > MAX_CAC:
        return None, cac, f"no clear regime change (lowest arc curve value {inner[loc]:.2f})"
    return loc, cac, ""


def stabilizing_epoch(
    samples: pd.DataFrame,
    epochs: pd.DataFrame,
    *,
    m: int = DEFAULT_M,
    L: int = DEFAULT_L,
    resolution_s: float | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    normalize: bool = False,
) -> Stability:
    """Find the regime change of a run's power and the first epoch ending after it.

    ``samples`` has the store's sample columns (``t_s``, ``device``, ``power_w`` at least);
    ``epochs`` has ``index``, ``start_s``, ``end_s`` (the store's epoch phases); the returned
    ``epoch`` is an index from that column. ``resolution_s`` fixes the grid step instead of the
    adaptive choice; ``normalize`` z-normalizes subsequences (see the module's notes).
    :func:`stored_stabilizing_epoch` gives the same for a stored run without loading it.
    """
    with_power = samples[samples["power_w"].notna()]
    if with_power.empty:
        raise InputError("no power readings to segment")
    from joulecast.energy import mean_power, phase_table

    flags = with_power.get("measured", False)
    measured = pd.Series(flags, index=with_power.index).astype(bool)
    devices = fluss_devices(measured.groupby(with_power["device"]).all().to_dict())
    segmented = samples[samples["device"].isin(devices)]
    powered = segmented.dropna(subset=["power_w"])["t_s"].to_numpy(float)
    span = (float(powered.min()), float(powered.max()))
    power = functools.partial(mean_power, segmented)
    table = functools.partial(phase_table, samples)
    return _segment(span, epochs, power, table, m, L, resolution_s, max_points, normalize)


def stored_stabilizing_epoch(
    store: Store,
    run_id: int,
    epochs: pd.DataFrame,
    *,
    end_s: float | None = None,
    m: int = DEFAULT_M,
    L: int = DEFAULT_L,
    resolution_s: float | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    normalize: bool = False,
) -> Stability:
    """:func:`stabilizing_epoch` of a stored run, from the store's energy aggregates.

    The power on the grid comes from :func:`joulecast.energy.stored_mean_power` and the
    epochs' energy from :func:`joulecast.energy.stored_phase_table`: no sample is loaded, and
    memory holds the grid (at most ``max_points`` points) whatever the run's length.
    ``end_s`` looks at the run only up to that time.
    """
    from joulecast.energy import stored_mean_power, stored_phase_table, stored_power_span

    states = store.device_energy(run_id)
    devices = fluss_devices({d: s.measured for d, s in states.items() if s.power_rows})
    span = stored_power_span(store, run_id, devices)
    if span is None:
        raise InputError("no power readings to segment")
    t0, t1 = span
    if end_s is not None:
        t1 = max(t0, min(t1, end_s))
    power = functools.partial(stored_mean_power, store, run_id, devices=devices)
    table = functools.partial(stored_phase_table, store, run_id)
    return _segment((t0, t1), epochs, power, table, m, L, resolution_s, max_points, normalize)


def fluss_devices(powered: dict[str, bool]) -> list[str]:
    """The devices whose power FLUSS segments, of those with power readings (device ->
    measured): the measured ones, where there are any (a modelled power follows utilisation
    through fixed coefficients, and would blur the measured regimes); else all of them."""
    measured = sorted(d for d, is_measured in powered.items() if is_measured)
    return measured or sorted(powered)


def _grid_problem(start_s: float, end_s: float, step_s: float) -> str:
    """Why no grid of ``step_s`` can span ``[start_s, end_s]`` (empty when one can)."""
    with np.errstate(all="ignore"):
        cells = (np.float64(end_s) - np.float64(start_s)) / np.float64(step_s)
    if np.isfinite(cells) and step_s > 0 and cells <= MAX_GRID_CELLS:
        return ""
    return (
        f"power readings from {start_s:g} to {end_s:g} s: expected finite times that a grid of "
        f"{step_s:g} s covers in at most {MAX_GRID_CELLS} cells"
    )


def _grid_edges(start_s: float, end_s: float, step_s: float) -> np.ndarray:
    """Edges of the cells of ``step_s`` from ``start_s`` that fit in ``[start_s, end_s]``
    (one cell at least)."""
    # The tolerance keeps a last cell that fits but for rounding.
    n = max(1, int(np.floor((end_s - start_s) / step_s + 1e-9)))
    return start_s + np.arange(n + 1) * step_s


def _segment(
    span: tuple[float, float],
    epochs: pd.DataFrame,
    power: Callable[[np.ndarray], dict[str, np.ndarray]],
    phase_table: Callable[[pd.DataFrame], pd.DataFrame],
    m: int,
    L: int,
    resolution_s: float | None,
    max_points: int,
    normalize: bool,
) -> Stability:
    """FLUSS on the total of ``power`` (each device's mean power per cell between the edges it
    is given) over ``span``, and the epoch it falls in; ``phase_table`` gives the energy of
    phases (:func:`joulecast.energy.phase_table`'s columns), for the settled epoch."""
    t0, t1 = span
    ends = epochs["end_s"].to_numpy(float) if len(epochs) else np.array([])
    starts = epochs["start_s"].to_numpy(float) if len(epochs) else np.array([])
    step = resolution_s or choose_resolution(
        t1 - t0, ends - starts if len(ends) else None, max_points=max_points
    )
    reason = _grid_problem(t0, t1, step)
    if reason:
        # A stored run whose times overflow (written before they were bounded) has no answer,
        # as a run too short has none.
        empty = np.array([])
        return Stability(None, None, step, m, L, normalize, empty, empty, empty, reason)
    edges = _grid_edges(t0, t1, step)
    grid_t = edges[:-1] + step / 2
    grid_p = np.zeros(len(grid_t))
    for device_power in power(edges).values():
        grid_p += device_power
    loc, cac, reason = find_change(grid_p, m, L, normalize=normalize)
    if loc is None:
        return Stability(None, None, step, m, L, normalize, grid_t, grid_p, cac, reason)
    change = float(grid_t[loc])
    epoch = settled = None
    after = np.nonzero(ends > change)[0]
    if len(after):
        epoch = int(epochs["index"].to_numpy()[after[0]])
        phases = epochs[["index", "start_s", "end_s"]].assign(samples=pd.NA)
        energy = phase_table(phases)["energy_j"].to_numpy(float)
        settled = int(epochs["index"].to_numpy()[settled_epoch(energy, int(after[0]))])
    elif len(ends):
        reason = "the change comes after the last epoch"
    return Stability(change, epoch, step, m, L, normalize, grid_t, grid_p, cac, reason, settled)


def first_settled(energy_j: np.ndarray, start: int) -> int | None:
    """Position of the first epoch from ``start`` on whose energy is in line with later ones.

    In line: within max(3 x the scaled median absolute deviation, 2% of the median) of the
    median energy of the epochs after it, with at least 3 of those. None where no epoch from
    ``start`` qualifies or there are too few epochs to judge.
    """
    e = np.asarray(energy_j, dtype=float)
    for pos in range(start, len(e) - SETTLE_MIN_AFTER):
        rest = e[pos + 1 :]
        rest = rest[np.isfinite(rest)]
        if len(rest) < SETTLE_MIN_AFTER:
            break
        median = float(np.median(rest))
        spread = 1.4826 * float(np.median(np.abs(rest - median)))
        if abs(e[pos] - median) <= max(SETTLE_K * spread, SETTLE_REL * abs(median)):
            return pos
    return None


def settled_epoch(energy_j: np.ndarray, start: int) -> int:
    """:func:`first_settled` from ``start``, or ``start`` where no epoch qualifies."""
    found = first_settled(energy_j, start)
    return start if found is None else found


def stable_share(epochs_found: list[int | None], max_epoch: int | None = None) -> pd.DataFrame:
    """Cumulative share of runs stable by epoch n (runs with no answer count as never stable)."""
    known = [e for e in epochs_found if e is not None]
    top = max_epoch if max_epoch is not None else (max(known) if known else 0)
    n_runs = len(epochs_found)
    rows = [
        {
            "epoch": n,
            "runs_stable": sum(e <= n for e in known),
            "share": (sum(e <= n for e in known) / n_runs) if n_runs else 0.0,
        }
        for n in range(top + 1)
    ]
    return pd.DataFrame(rows, columns=["epoch", "runs_stable", "share"])


@dataclass(frozen=True)
class RunsStability:
    """The stability of several stored runs, and the share stable by each epoch per group."""

    runs: list[tuple[int, Stability, pd.DataFrame]]  # run id, result, its finished epochs
    groups: dict[str, list[int | None]]  # group -> each run's stabilizing epoch
    shares: dict[str, pd.DataFrame]  # group -> stable_share() up to top_epoch
    top_epoch: int  # the latest stabilizing epoch found (0 when none was)


def runs_stability(
    store: Store,
    run_ids: list[int],
    *,
    m: int = DEFAULT_M,
    L: int = DEFAULT_L,
    normalize: bool = False,
    group_by: str | None = None,
) -> RunsStability:
    """:func:`stored_stabilizing_epoch` of each stored run, grouped by the tag ``group_by`` ("?"
    where a run lacks it; one group "all" without it)."""
    runs = []
    groups: dict[str, list[int | None]] = {}
    for run_id in run_ids:
        epochs = store.phases(run_id, "epoch").dropna(subset=["end_s"])
        result = stored_stabilizing_epoch(store, run_id, epochs, m=m, L=L, normalize=normalize)
        runs.append((run_id, result, epochs))
        key = str(store.run(run_id)["tags"].get(group_by, "?")) if group_by else "all"
        groups.setdefault(key, []).append(result.epoch)
    top = max([r.epoch for _, r, _ in runs if r.epoch is not None] + [0])
    shares = {k: stable_share(v, top) for k, v in groups.items()}
    return RunsStability(runs, groups, shares, top)


def plot(result: Stability, epochs: pd.DataFrame, path: str) -> None:
    """Save the power profile with epochs shaded, the change marked, and the corrected arc curve."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 5))
    ax1.plot(result.t_s, result.power_w, lw=0.8, color="tab:blue")
    for i, row in enumerate(epochs.itertuples()):
        ax1.axvspan(row.start_s, row.end_s, color="0.9" if i % 2 else "0.8", zorder=0)
    ax2.plot(result.t_s[: len(result.cac)], result.cac, color="tab:green")
    for ax in (ax1, ax2):
        if result.change_s is not None:
            ax.axvline(result.change_s, color="tab:red", ls="--")
    ax1.set_ylabel("power (W)")
    ax2.set_ylabel("corrected arc curve")
    ax2.set_xlabel("time (s)")
    title = f"stabilizing epoch {result.epoch}" if result.epoch is not None else result.reason
    ax1.set_title(title)
    fig.tight_layout()
    try:
        save(fig, path, dpi=110)
    finally:
        plt.close(fig)


def plot_share(shares: dict[str, pd.DataFrame], path: str) -> None:
    """Save the cumulative share of runs stable by epoch n, one line per group (Fig. 9)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, frame in shares.items():
        ax.step(frame["epoch"], 100 * frame["share"], where="post", label=key)
    ax.axhline(90, color="0.6", ls=":")
    ax.set_xlabel("epoch n")
    ax.set_ylabel("runs stable by epoch n (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        save(fig, path, dpi=110)
    finally:
        plt.close(fig)
