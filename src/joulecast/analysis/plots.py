"""The figures of del Rey et al. (2024), one PNG per function, in one style.

Each function draws from a tidy frame (one row per run, the columns of
:func:`joulecast.analysis.data.run_table`) or from a run's samples, saves one PNG and returns
its path (parent folders are created). They share :data:`STYLE` (figure size, dpi, grid, colour
cycle). Small or incomplete data still gives a figure: rows with a missing value are left out,
a group with one run shows as a point, a fit that needs more points is said to be missing in
the legend, and a frame with nothing to draw gives a figure that says so. NumPy's and
matplotlib's warnings about such data stay inside; figures are always closed.

matplotlib (the ``stability`` extra) is imported on the first call; a missing column or a
non-numeric value column raises :class:`~joulecast.errors.InputError`.

=========================  =====================================================  ==========
function                   what                                                   paper
=========================  =====================================================  ==========
:func:`box_by_group`       distribution of a value per group                      Fig. 7, 8
:func:`qq_by_group`        normal Q-Q plot per group (the normality check)        sec. 3.7
:func:`power_profile`      power over time, epochs shaded, stabilization point    sec. 4.4
:func:`scatter_fit`        y against x with the least-squares line                Fig. 3
:func:`power_vs_usage`     average power against GPU usage, TDP x usage lines     Fig. 4
:func:`effect_lines`       median value per level of a factor, with IQR bars      Fig. 5, 6
:func:`tradeoff`           energy per image against F1, with the Pareto front     Fig. 2
:func:`predicted_vs_true`  an estimator's predictions against the truth           Fig. 11
=========================  =====================================================  ==========
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from joulecast._plot import pyplot, save
from joulecast.analysis._frames import group_order, numbers, require_columns
from joulecast.errors import InputError

__all__ = [
    "STYLE",
    "box_by_group",
    "effect_lines",
    "power_profile",
    "power_vs_usage",
    "predicted_vs_true",
    "qq_by_group",
    "scatter_fit",
    "tradeoff",
]

# The one style of every figure: size in inches, dots per inch, grid opacity, colour cycle
# (matplotlib's tab10), and the colours of reference lines and marked points.
STYLE: dict[str, Any] = {
    "figsize": (7.0, 4.5),
    "dpi": 110,
    "grid_alpha": 0.3,
    "colors": (
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ),
    "reference_color": "#d62728",
    "fit_color": "#1f77b4",
    "shade": ("0.82", "0.92"),
    "point_alpha": 0.7,
    "point_size": 18,
}

# Axis labels of the run table's columns; others read as their own name.
LABELS: dict[str, str] = {
    "j_per_image": "energy per image (J)",
    "j_per_train_image": "energy per training image (J)",
    "energy_j": "energy (J)",
    "energy_j_measured": "measured energy (J)",
    "energy_j_gpu": "GPU energy (J)",
    "avg_power_w": "average power (W)",
    "gpu_util_pct": "GPU usage (%)",
    "s_per_image": "time per image (s)",
    "duration_s": "duration (s)",
    "train_duration_s": "training duration (s)",
    "mean_epoch_s": "mean epoch duration (s)",
    "gflops": "GFLOPs",
    "f1": "F1",
    "accuracy": "accuracy",
    "batch_size": "batch size",
    "input_size": "input size (px)",
    "power_limit_w": "GPU power limit (W)",
    "ram_gb": "allocated RAM (GB)",
    "gpu_tdp_w": "GPU TDP (W)",
}

PathLike = str | os.PathLike[str]


def _label(column: str) -> str:
    return LABELS.get(column, column)


# --- shared machinery -------------------------------------------------------------------------


@contextlib.contextmanager
def _canvas(
    path: PathLike, nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None
) -> Iterator[tuple[Any, NDArray[Any]]]:
    """A styled figure with a grid of axes; saved to ``path`` on success, closed always."""
    plt = pyplot()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Few points and NaNs make numpy warn (empty means, degenerate fits) and matplotlib
        # warn (singular limits, empty legends, tight layout); the figure is still right.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        fig, axes = plt.subplots(nrows, ncols, figsize=figsize or STYLE["figsize"], squeeze=False)
        try:
            for ax in axes.flat:
                ax.set_prop_cycle(color=list(STYLE["colors"]))
                ax.grid(alpha=STYLE["grid_alpha"])
                ax.set_axisbelow(True)
            yield fig, axes
            fig.tight_layout()
            save(fig, target, dpi=STYLE["dpi"])
        finally:
            plt.close(fig)


def _color(i: int) -> str:
    colors: Sequence[str] = STYLE["colors"]
    return colors[i % len(colors)]


def _check(df: pd.DataFrame, **columns: str | None) -> None:
    require_columns(df, **columns)


def _numbers(df: pd.DataFrame, name: str, argument: str) -> pd.Series:
    """The column as floats, infinities as NaN (a figure cannot place them)."""
    return numbers(df, name, argument, infinite="nan")


def _groups(df: pd.DataFrame, value: str, by: str) -> list[tuple[Hashable, NDArray[np.float64]]]:
    """The finite values of ``value`` per level of ``by``; groups left with none are dropped."""
    _check(df, value=value, by=by)
    values = _numbers(df, value, "value")
    keep = values.notna() & df[by].notna()
    values, labels = values[keep], df[by][keep]
    return [(g, values[labels == g].to_numpy(np.float64)) for g in group_order(labels)]


def _level_text(level: Hashable) -> str:
    """A level as a tick label: 32.0 reads 32 (integer columns with NaNs turn float)."""
    if isinstance(level, float) and level.is_integer():
        return str(int(level))
    return str(level)


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _fit(x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[float, float, float] | None:
    """Least-squares slope, intercept and R² (NaN when y is constant); None under 2 x values."""
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.sum((y - (slope * x + intercept)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - residual / total if total > 0 else math.nan
    return float(slope), float(intercept), r2


def _fit_label(fit: tuple[float, float, float] | None, n: int) -> str:
    if fit is None:
        return f"no fit (needs 2 distinct x, has {n} point{'s' if n != 1 else ''})"
    slope, intercept, r2 = fit
    sign = "-" if intercept < 0 else "+"
    r2_text = "n/a" if math.isnan(r2) else f"{r2:.3f}"
    return f"y = {slope:.4g}·x {sign} {abs(intercept):.4g}  (R² = {r2_text}, n = {n})"


def _legend(ax: Any, **kwargs: Any) -> None:
    """A legend only where something is labelled (an empty one makes matplotlib warn)."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, **kwargs)


def _jitter(n: int, seed: int) -> NDArray[np.float64]:
    if n <= 1:
        return np.zeros(n)
    return np.random.default_rng(seed).uniform(-0.12, 0.12, n)


# --- figures ----------------------------------------------------------------------------------


def box_by_group(
    df: pd.DataFrame, value: str, by: str, path: PathLike, *, label: str | None = None
) -> Path:
    """Box plot of ``value`` per level of ``by``, each run drawn as a point over its box.

    Args:
        df: one row per run.
        value: the numeric column to show (e.g. ``j_per_image``).
        by: the grouping column (e.g. ``architecture``, ``environment``, ``ram_gb``).
        path: where to save the PNG.
        label: the value axis label (default: the column's label, with its unit).
    """
    groups = _groups(df, value, by)
    with _canvas(path) as (_, axes):
        ax = axes[0, 0]
        if not groups:
            _no_data(ax, f"no run has both {value!r} and {by!r}")
        else:
            positions = np.arange(1, len(groups) + 1)
            ax.boxplot(
                [x for _, x in groups],
                positions=positions,
                widths=0.5,
                showfliers=False,
                medianprops={"color": STYLE["reference_color"]},
            )
            for i, (_, x) in enumerate(groups):
                ax.scatter(
                    positions[i] + _jitter(len(x), i),
                    x,
                    s=STYLE["point_size"],
                    alpha=STYLE["point_alpha"],
                    color=_color(i),
                    zorder=3,
                )
            names = [f"{_level_text(g)}\n(n={len(x)})" for g, x in groups]
            ax.set_xticks(positions, names, rotation=30 if len(groups) > 5 else 0)
            ax.set_xlim(0.4, len(groups) + 0.6)
        ax.set_xlabel(_label(by))
        ax.set_ylabel(label or _label(value))
    return Path(path)


def qq_by_group(df: pd.DataFrame, value: str, by: str, path: PathLike) -> Path:
    """Normal Q-Q plot of ``value`` for each level of ``by``, in a grid of panels.

    Each panel shows the ordered values against the normal quantiles
    (:func:`scipy.stats.probplot`) and their least-squares line with its R²; groups under
    2 runs show their points only.
    """
    from scipy import stats as sps

    groups = _groups(df, value, by)
    ncols = max(1, min(3, len(groups)))
    nrows = max(1, math.ceil(len(groups) / ncols))
    size = (3.6 * ncols, 3.0 * nrows) if groups else STYLE["figsize"]
    with _canvas(path, nrows, ncols, figsize=size) as (fig, axes):
        if not groups:
            _no_data(axes[0, 0], f"no run has both {value!r} and {by!r}")
        for i, ax in enumerate(axes.flat):
            if i >= len(groups):
                ax.set_visible(False)
                continue
            group, x = groups[i]
            osm, osr = sps.probplot(x, dist="norm", fit=False)
            ax.scatter(osm, osr, s=STYLE["point_size"], color=_color(i), zorder=3)
            fit = _fit(np.asarray(osm, float), np.asarray(osr, float))
            title = f"{group} (n={len(x)})"
            if fit is not None:
                slope, intercept, r2 = fit
                ends = np.array([np.min(osm), np.max(osm)])
                ax.plot(ends, slope * ends + intercept, color=STYLE["reference_color"], lw=1)
                if not math.isnan(r2):
                    title += f", R²={r2:.3f}"
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("normal quantiles", fontsize=8)
            ax.set_ylabel(_label(value), fontsize=8)
        if groups:
            fig.suptitle(f"normal Q-Q plots of {_label(value)} by {_label(by)}", fontsize=10)
    return Path(path)


def power_profile(
    samples: pd.DataFrame, epochs: pd.DataFrame | None, change_s: float | None, path: PathLike
) -> Path:
    """Power over time per device, epochs shaded alternately, the stabilization point dashed.

    Args:
        samples: ``t_s``, ``device``, ``power_w`` (a missing power is a gap in the line).
        epochs: ``start_s``, ``end_s`` per epoch, same time base; ``None`` or empty for none.
        change_s: when the power stabilizes (:mod:`joulecast.stability`); ``None`` or NaN
            when it was not found.
        path: where to save the PNG.
    """
    _check(samples, samples_t_s="t_s", samples_device="device", samples_power_w="power_w")
    t = _numbers(samples, "t_s", "t_s")
    frame = samples.assign(t_s=t, power_w=_numbers(samples, "power_w", "power_w"))
    frame = frame[t.notna()].sort_values("t_s", kind="stable")
    with _canvas(path, figsize=(10.0, 4.0)) as (_, axes):
        ax = axes[0, 0]
        if epochs is not None and len(epochs):
            _check(epochs, epochs_start_s="start_s", epochs_end_s="end_s")
            starts = _numbers(epochs, "start_s", "start_s").to_numpy()
            ends = _numbers(epochs, "end_s", "end_s").to_numpy()
            shades: Sequence[str] = STYLE["shade"]
            for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
                if math.isfinite(start) and math.isfinite(end):
                    ax.axvspan(start, end, color=shades[i % 2], zorder=0, lw=0)
        devices = group_order(frame["device"])
        for i, device in enumerate(devices):
            mine = frame[frame["device"] == device]
            ax.plot(mine["t_s"], mine["power_w"], lw=0.9, color=_color(i), label=str(device))
        if change_s is not None and math.isfinite(change_s):
            ax.axvline(
                change_s,
                color=STYLE["reference_color"],
                ls="--",
                lw=1.2,
                label=f"stabilization point ({change_s:.0f} s)",
            )
        if frame["power_w"].notna().sum() == 0:
            ax.set_title("no power readings")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("power (W)")
        _legend(ax, loc="lower right")
    return Path(path)


def scatter_fit(
    df: pd.DataFrame,
    x: str,
    y: str,
    path: PathLike,
    *,
    hue: str | None = None,
    logx: bool = False,
) -> Path:
    """``y`` against ``x`` with the least-squares line ``y = a·x + b`` and its R² in the legend.

    One line is fitted to all points (coloured by ``hue`` when given), in ``x`` itself; with
    ``logx`` the axis is logarithmic (points with ``x`` <= 0 are left out) and the line is
    drawn as the curve it becomes. Used for energy and GPU usage against GFLOPs (Fig. 3).
    """
    _check(df, x=x, y=y, hue=hue)
    xs, ys = _numbers(df, x, "x"), _numbers(df, y, "y")
    keep = xs.notna() & ys.notna()
    if logx:
        keep &= xs > 0
    if hue is not None:
        keep &= df[hue].notna()
    xv, yv = xs[keep].to_numpy(), ys[keep].to_numpy()
    with _canvas(path) as (_, axes):
        ax = axes[0, 0]
        if not len(xv):
            _no_data(ax, f"no run has both {x!r} and {y!r}")
        else:
            if hue is None:
                ax.scatter(xv, yv, s=STYLE["point_size"] * 1.5, alpha=STYLE["point_alpha"])
            else:
                labels = df[hue][keep]
                for i, level in enumerate(group_order(labels)):
                    mine = (labels == level).to_numpy()
                    ax.scatter(
                        xv[mine],
                        yv[mine],
                        s=STYLE["point_size"] * 1.5,
                        alpha=STYLE["point_alpha"],
                        color=_color(i),
                        label=_level_text(level),
                    )
            fit = _fit(xv, yv)
            if fit is None:
                ax.plot([], [], " ", label=_fit_label(None, len(xv)))
            else:
                grid = (
                    np.geomspace(xv.min(), xv.max(), 200)
                    if logx
                    else np.array([xv.min(), xv.max()])
                )
                ax.plot(
                    grid,
                    fit[0] * grid + fit[1],
                    color=STYLE["reference_color"],
                    lw=1.2,
                    label=_fit_label(fit, len(xv)),
                )
            _legend(ax)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(_label(x))
        ax.set_ylabel(_label(y))
    return Path(path)


def power_vs_usage(df: pd.DataFrame, path: PathLike, *, hue: str | None = None) -> Path:
    """Average power against GPU usage, with the "TDP x usage" estimate for each GPU TDP.

    Points are ``avg_power_w`` against ``gpu_util_pct``, coloured by ``hue`` (default
    ``environment`` when the frame has it); each distinct ``gpu_tdp_w`` gets the dashed line
    power = TDP x usage / 100, the common estimate the paper shows to deviate (Fig. 4).
    """
    if hue is None and isinstance(df, pd.DataFrame) and "environment" in df.columns:
        hue = "environment"
    _check(df, avg_power_w="avg_power_w", gpu_util_pct="gpu_util_pct", hue=hue)
    power = _numbers(df, "avg_power_w", "avg_power_w")
    usage = _numbers(df, "gpu_util_pct", "gpu_util_pct")
    tdp = (
        _numbers(df, "gpu_tdp_w", "gpu_tdp_w")
        if "gpu_tdp_w" in df.columns
        else pd.Series(np.nan, index=df.index)
    )
    keep = power.notna() & usage.notna()
    with _canvas(path) as (_, axes):
        ax = axes[0, 0]
        if not keep.any():
            _no_data(ax, "no run has both avg_power_w and gpu_util_pct")
        else:
            if hue is None:
                ax.scatter(usage[keep], power[keep], s=STYLE["point_size"] * 1.5)
            else:
                labels = df[hue].where(keep)
                levels = group_order(labels)
                for i, level in enumerate(levels):
                    mine = keep & (labels == level)
                    ax.scatter(
                        usage[mine],
                        power[mine],
                        s=STYLE["point_size"] * 1.5,
                        alpha=STYLE["point_alpha"],
                        color=_color(i),
                        label=_level_text(level),
                    )
                unlabelled = keep & df[hue].isna()
                if unlabelled.any():
                    ax.scatter(usage[unlabelled], power[unlabelled], s=18, color="0.5")
            pct = np.linspace(0, 100, 2)
            styles = ("--", ":", "-.", (0, (5, 1)))
            for i, watts in enumerate(sorted(set(tdp[keep & tdp.notna()].tolist()))):
                ax.plot(
                    pct,
                    watts * pct / 100,
                    color="0.3",
                    ls=styles[i % len(styles)],
                    lw=1,
                    label=f"TDP × usage ({watts:g} W)",
                )
            ax.set_xlim(0, 100)
            ax.set_ylim(bottom=0)
            _legend(ax)
        ax.set_xlabel(_label("gpu_util_pct"))
        ax.set_ylabel(_label("avg_power_w"))
    return Path(path)


def effect_lines(
    df: pd.DataFrame, factor: str, value: str, path: PathLike, *, hue: str | None = None
) -> Path:
    """Median ``value`` per level of ``factor`` (e.g. batch or input size), with IQR bars.

    Levels are evenly spaced and sorted; one line per level of ``hue`` (e.g. environment or
    dataset) when given. Bars span the 25th to the 75th percentile of the runs at that level
    (Fig. 5 and 6).
    """
    _check(df, factor=factor, value=value, hue=hue)
    values = _numbers(df, value, "value")
    keep = values.notna() & df[factor].notna()
    if hue is not None:
        keep &= df[hue].notna()
    frame = pd.DataFrame({"level": df[factor][keep], "value": values[keep]})
    frame["hue"] = df[hue][keep] if hue is not None else ""
    levels = group_order(frame["level"])
    position = {level: i for i, level in enumerate(levels)}
    with _canvas(path) as (_, axes):
        ax = axes[0, 0]
        if not levels:
            _no_data(ax, f"no run has both {factor!r} and {value!r}")
        hues = group_order(frame["hue"]) if levels else []
        width = 0.25 if len(hues) > 1 else 0.0
        for i, h in enumerate(hues):
            mine = frame[frame["hue"] == h]
            rows = []
            for level, vals in mine.groupby("level", sort=False)["value"]:
                q25, q50, q75 = np.percentile(vals.to_numpy(), [25, 50, 75])
                rows.append((position[level], q50, q50 - q25, q75 - q50))
            rows.sort()
            xs, med, low, high = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
            offset = (i - (len(hues) - 1) / 2) * width / max(len(hues) - 1, 1)
            ax.errorbar(
                xs + offset,
                med,
                yerr=np.vstack([low, high]),
                marker="o",
                ms=5,
                capsize=3,
                lw=1.2,
                color=_color(i),
                label=_level_text(h) if hue is not None else None,
            )
        if levels:
            ax.set_xticks(range(len(levels)), [_level_text(lv) for lv in levels])
            ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_xlabel(_label(factor))
        ax.set_ylabel(f"median {_label(value)}")
        _legend(ax, title=_label(hue) if hue else None)
    return Path(path)


def tradeoff(
    df: pd.DataFrame,
    front: pd.DataFrame,
    path: PathLike,
    *,
    cost: str | None = None,
    benefit: str | None = None,
    by: str | None = None,
) -> Path:
    """Energy per image against F1: runs, group medians and the Pareto front line (Fig. 2).

    Args:
        df: one row per run (its points are drawn faintly; may be empty).
        front: :func:`joulecast.analysis.tradeoffs.pareto_front` of the same runs.
        path: where to save the PNG.
        cost, benefit, by: the columns; by default those ``front`` was computed with
            (``j_per_image``, ``f1``, ``architecture`` if it does not say).

    Groups with no benefit cannot be placed; the figure names them under the axis.
    """
    cost = cost or front.attrs.get("cost", "j_per_image")
    benefit = benefit or front.attrs.get("benefit", "f1")
    by = by or front.attrs.get("by", "architecture")
    _check(front, cost=cost, benefit=benefit, by=by)
    groups = front.assign(
        _cost=_numbers(front, cost, "cost"), _benefit=_numbers(front, benefit, "benefit")
    )
    placed = groups[groups["_cost"].notna() & groups["_benefit"].notna()]
    missing = [str(g) for g in groups.loc[groups["_benefit"].isna(), by]]
    colors = {g: _color(i) for i, g in enumerate(groups[by])}
    with _canvas(path) as (fig, axes):
        ax = axes[0, 0]
        if len(df) and {cost, benefit, by} <= set(df.columns):
            xs, ys = _numbers(df, cost, "cost"), _numbers(df, benefit, "benefit")
            keep = xs.notna() & ys.notna() & df[by].isin(colors)
            ax.scatter(
                xs[keep],
                ys[keep],
                s=STYLE["point_size"] * 0.7,
                alpha=0.3,
                color=[colors[g] for g in df[by][keep]],
                lw=0,
            )
        if placed.empty:
            _no_data(ax, f"no group has both {cost!r} and {benefit!r}")
        for group, x, y in zip(placed[by], placed["_cost"], placed["_benefit"], strict=True):
            ax.scatter(x, y, s=60, color=colors[group], edgecolor="k", zorder=4)
            ax.annotate(
                str(group),
                (x, y),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=8,
            )
        if "pareto" in placed.columns:
            on = placed[placed["pareto"].fillna(False).astype(bool)].sort_values("_cost")
            if len(on):
                ax.plot(
                    on["_cost"],
                    on["_benefit"],
                    drawstyle="steps-post",
                    color=STYLE["reference_color"],
                    ls="--",
                    lw=1.2,
                    marker="o",
                    mfc="none",
                    ms=11,
                    label="Pareto front",
                    zorder=3,
                )
        ax.set_xlabel(f"median {_label(cost)}")
        ax.set_ylabel(f"median {_label(benefit)}")
        _legend(ax, loc="lower right")
        if missing:
            fig.text(
                0.01,
                0.01,
                f"{_label(benefit)} missing, not placed: {', '.join(missing)}",
                fontsize=8,
                color="0.3",
            )
    return Path(path)


def predicted_vs_true(
    true: ArrayLike, predicted: ArrayLike, path: PathLike, *, label: str = "energy (J)"
) -> Path:
    """An estimator's predictions against the true values, as in Fig. 11.

    The red dashed line is the perfect prediction, the blue one the least-squares line of the
    predictions; the title gives n, RMSE and MAPE. Pairs with a missing value are left out.

    Args:
        true: the measured values.
        predicted: the estimates, one per true value.
        path: where to save the PNG.
        label: what the values are, with their unit.
    """
    truth = np.asarray(true, dtype=float).ravel()
    guess = np.asarray(predicted, dtype=float).ravel()
    if truth.shape != guess.shape:
        raise InputError(
            f"true and predicted must have the same length, got {truth.size} and {guess.size}"
        )
    keep = np.isfinite(truth) & np.isfinite(guess)
    truth, guess = truth[keep], guess[keep]
    with _canvas(path, figsize=(5.5, 5.0)) as (_, axes):
        ax = axes[0, 0]
        if not len(truth):
            _no_data(ax, "no pair of true and predicted values")
        else:
            ax.scatter(truth, guess, s=STYLE["point_size"] * 1.5, alpha=STYLE["point_alpha"])
            low = float(min(truth.min(), guess.min()))
            high = float(max(truth.max(), guess.max()))
            if low == high:
                low, high = low - 1, high + 1
            ends = np.array([low, high])
            ax.plot(ends, ends, color=STYLE["reference_color"], ls="--", lw=1, label="perfect")
            fit = _fit(truth, guess)
            if fit is not None:
                ax.plot(
                    ends,
                    fit[0] * ends + fit[1],
                    color=STYLE["fit_color"],
                    lw=1.2,
                    label=_fit_label(fit, len(truth)),
                )
            rmse = float(np.sqrt(np.mean((guess - truth) ** 2)))
            nonzero = truth != 0
            mape = (
                float(np.mean(np.abs(guess[nonzero] - truth[nonzero]) / np.abs(truth[nonzero])))
                * 100
                if nonzero.any()
                else math.nan
            )
            mape_text = "n/a" if math.isnan(mape) else f"{mape:.1f}%"
            ax.set_title(f"n = {len(truth)}, RMSE = {rmse:.4g}, MAPE = {mape_text}", fontsize=10)
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
            _legend(ax, loc="upper left")
        ax.set_xlabel(f"true {label}")
        ax.set_ylabel(f"predicted {label}")
    return Path(path)
