"""Held-out comparison of every offline method on total energy (the paper's Table 10), and the
predicted-vs-true figure (its Fig. 11).

The run table is split 70/30 (by configuration by default); the offline estimator is selected
and fitted on the 70% and predicts the 30%. Where the table has the totals (``duration_s``,
``epochs``, ``energy_j``; ``gpu_util_pct`` for Green Algorithms, else 100%), each method's
total is compared with the measured ``energy_j``:

- offline power: predicted average power x ``duration_s``;
- offline epoch energy: predicted mean epoch energy x ``epochs``;
- MLCO2: TDP x ``duration_s``;
- Green Algorithms: ``duration_s`` x (TDP x usage + RAM GB x 0.3725), PUE = PSF = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from joulecast.errors import InputError
from joulecast.offline.baselines import RAM_W_PER_GB_GA
from joulecast.offline.features import TARGETS, configuration_groups, feature_frame
from joulecast.offline.models import CV, Grid, OfflineEstimator, holdout_split

TOTAL_COLUMNS = ("duration_s", "epochs", "energy_j")


@dataclass(frozen=True)
class Holdout:
    """Predictions on the held-out runs, and the totals table where the data has totals."""

    predictions: pd.DataFrame  # target, true, predicted (one row per held-out run and target)
    totals: pd.DataFrame | None  # method, runs, rmse_j, mae_j, mape_pct
    train_runs: int
    test_runs: int


def has_totals(df: pd.DataFrame) -> bool:
    """True when every row has the columns the total-energy comparison needs."""
    return all(c in df.columns and df[c].notna().all() for c in TOTAL_COLUMNS)


def holdout(df: pd.DataFrame, *, cv: CV = "grouped", seed: int = 0, grid: Grid = "full") -> Holdout:
    """Fit on 70% of ``df``, predict the other 30%, and compare the totals of every method."""
    targets = [t for t in TARGETS if t in df.columns]
    if not targets:
        raise InputError(f"the run table has no target column ({', '.join(TARGETS)})")
    features = feature_frame(df)
    groups = configuration_groups(features)
    train, test = holdout_split(len(df), groups, cv, seed)
    estimator = OfflineEstimator(grid=grid).fit(df.iloc[train], targets, cv=cv, seed=seed)
    held = df.iloc[test]
    predicted = estimator.predict(held)
    rows = [
        {"target": t, "true": float(a), "predicted": float(b)}
        for t in targets
        for a, b in zip(held[t].to_numpy(float), predicted[t].to_numpy(float), strict=True)
    ]
    totals = None
    if has_totals(held):
        totals = _totals(held, predicted)
        for method, values in _method_totals(held, predicted).items():
            rows += [
                {"target": f"energy_j:{method}", "true": float(a), "predicted": float(b)}
                for a, b in zip(held["energy_j"].to_numpy(float), values, strict=True)
            ]
    return Holdout(pd.DataFrame(rows), totals, len(train), len(test))


def _method_totals(held: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, np.ndarray]:
    duration = held["duration_s"].to_numpy(float)
    tdp = held["gpu_tdp_w"].to_numpy(float)
    ram = held["ram_gb"].to_numpy(float)
    util = (
        held["gpu_util_pct"].to_numpy(float) / 100.0
        if "gpu_util_pct" in held and held["gpu_util_pct"].notna().all()
        else np.ones(len(held))
    )
    out: dict[str, np.ndarray] = {}
    if "avg_power_w" in predicted:
        out["offline-power"] = predicted["avg_power_w"].to_numpy(float) * duration
    if "epoch_energy_j" in predicted:
        out["offline-epoch-energy"] = predicted["epoch_energy_j"].to_numpy(float) * held[
            "epochs"
        ].to_numpy(float)
    out["mlco2"] = tdp * duration
    out["green-algorithms"] = duration * (tdp * util + ram * RAM_W_PER_GB_GA)
    return out


def _totals(held: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    truth = held["energy_j"].to_numpy(float)
    rows = []
    for method, values in _method_totals(held, predicted).items():
        err = values - truth
        rows.append(
            {
                "method": method,
                "runs": len(err),
                "rmse_j": float(np.sqrt(np.mean(err**2))),
                "mae_j": float(np.mean(np.abs(err))),
                "mape_pct": float(np.mean(np.abs(err) / truth) * 100),
            }
        )
    return pd.DataFrame(rows)


def plot_predicted_vs_true(result: Holdout, path: str) -> None:
    """Save predicted vs measured values of the held-out runs, one panel per target."""
    from joulecast._plot import pyplot, save

    plt = pyplot()
    frame = result.predictions
    targets = [t for t in TARGETS if t in set(frame["target"])]
    panels = targets + (["energy_j"] if result.totals is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    units = {
        "avg_power_w": ("average power", 1.0, "W"),
        "epoch_energy_j": ("epoch energy", 1e3, "kJ"),
    }
    units["energy_j"] = ("total energy", 1e3, "kJ")
    for ax, panel in zip(axes[0], panels, strict=True):
        label, scale, unit = units[panel]
        if panel == "energy_j":
            subsets = [
                (t.split(":", 1)[1], g)
                for t, g in frame.groupby("target", sort=False)
                if t.startswith("energy_j:")
            ]
        else:
            subsets = [("offline", frame[frame["target"] == panel])]
        high = 0.0
        for name, g in subsets:
            ax.scatter(g["true"] / scale, g["predicted"] / scale, s=12, alpha=0.7, label=name)
            high = max(high, float(g["true"].max()), float(g["predicted"].max()))
        ax.plot([0, high / scale], [0, high / scale], color="0.5", ls="--", lw=1)
        ax.set_xlabel(f"measured {label} ({unit})")
        ax.set_ylabel(f"predicted {label} ({unit})")
        ax.grid(alpha=0.3)
        if len(subsets) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(f"held-out runs: {result.test_runs} (fitted on {result.train_runs})")
    fig.tight_layout()
    try:
        save(fig, path, dpi=110)
    finally:
        plt.close(fig)


def totals_table(result: Holdout) -> list[dict[str, Any]]:
    """The totals as JSON-ready rows (empty without totals)."""
    if result.totals is None:
        return []
    return [dict(r) for r in result.totals.to_dict("records")]
