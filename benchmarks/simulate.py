"""Realistic simulated training power traces with epochs, for the forecasting benchmarks.

A run: power and epoch length settle after a warm-up transient (clocks, caches, the input
pipeline filling up), then hold with sample-to-sample noise, a dip at the end of every epoch
(the validation pass, lighter on the GPU), a slow drift over the whole run, and now and then a
longer epoch (a checkpoint, a slow disk).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class SimulatedRun:
    """One simulated run: samples (t_s, device, power_w), epoch phases and the warm-up's end."""

    samples: pd.DataFrame
    phases: pd.DataFrame
    warmup_epochs: int


def simulate_run(
    rng: np.random.Generator,
    n_epochs: int,
    *,
    dt_s: float = 0.5,
    epoch_s: tuple[float, float] = (20.0, 120.0),
) -> SimulatedRun:
    """One run of ``n_epochs`` sampled every ``dt_s`` seconds."""
    p_stable = rng.uniform(60, 350)  # W
    base_s = rng.uniform(*epoch_s)
    tau = rng.uniform(0.7, 2.5)  # epochs
    epochs = np.arange(n_epochs)
    slow = 1 + rng.uniform(0.1, 0.8) * np.exp(-epochs / tau)  # first epochs are longer
    durations = base_s * slow * (1 + rng.normal(0, rng.uniform(0.002, 0.02), n_epochs))
    durations[rng.random(n_epochs) < 0.05] *= 1.1
    ends = np.cumsum(durations)
    starts = ends - durations
    t = np.arange(0.0, ends[-1] + dt_s, dt_s)
    deficit = rng.uniform(0.1, 0.4)  # power short of the stable level at the start
    warm_s = tau * base_s
    p = p_stable * (1 - deficit * np.exp(-t / warm_s))
    p *= 1 + rng.uniform(-0.03, 0.03) * t / t[-1]  # drift
    val_share = rng.uniform(0.08, 0.15)
    val_drop = rng.uniform(0.2, 0.4)
    epoch_of = np.minimum(np.searchsorted(ends, t, side="right"), n_epochs - 1)
    in_val = t >= ends[epoch_of] - val_share * durations[epoch_of]
    p = np.where(in_val, p * (1 - val_drop), p)
    p *= 1 + rng.normal(0, rng.uniform(0.01, 0.04), len(t))
    samples = pd.DataFrame(
        {"t_s": t, "device": "gpu:0", "power_w": p, "source": "simulated", "measured": True}
    )
    phases = pd.DataFrame({"index": epochs, "start_s": starts, "end_s": ends})
    # The warm-up is over once power is within 2% of its stable level.
    settled_s = warm_s * np.log(deficit / 0.02)
    warmup = int(np.searchsorted(ends, settled_s, side="right"))
    return SimulatedRun(samples, phases, min(warmup, n_epochs - 1))
