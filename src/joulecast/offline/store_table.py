"""A run table for the offline estimators, built from runs measured by joulecast.

One row per completed run with a GPU, from its tags and recorded hardware:

- ``gpu``: the ``gpu`` tag, else the one GPU model the run sampled;
- ``ram_gb``: the ``ram_gb`` tag (an allocation), else the machine's total RAM;
- ``gflops``, ``train_samples``, ``val_samples``, ``batch_size``: tags (``joulecast train``
  and the studies set them);
- ``input_height``/``input_width``: those tags, else ``input_size`` (square inputs).

Targets and totals come from the samples: ``avg_power_w`` is the GPUs' energy over the run's
duration; ``epoch_energy_j`` the mean over epochs of GPU + RAM energy (the paper's target);
``energy_j`` the run's GPU + RAM energy; ``duration_s``, ``epochs``, ``gpu_util_pct``.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from joulecast.energy import summarize
from joulecast.errors import InputError

log = logging.getLogger(__name__)

TAG_FEATURES = ("gflops", "train_samples", "val_samples", "batch_size")


def _gpu_devices(names: Any) -> list[str]:
    return [str(d) for d in names if str(d).startswith("gpu:")]


def run_row(store: Any, run_id: int) -> dict[str, Any]:
    """The run-table row of one stored run; InputError says what it lacks."""
    run = store.run(run_id)
    if run["status"] != "completed":
        raise InputError(f"status {run['status']}")
    tags = run["tags"] or {}
    hardware = run.get("hardware") or {}
    gpu = tags.get("gpu")
    if not gpu:
        models = hardware.get("gpu_models") or []
        if len(models) != 1:
            raise InputError("no GPU" if not models else f"several GPU models {models}")
        gpu = models[0]
    row: dict[str, Any] = {"run_id": run_id, "gpu": gpu}
    row["ram_gb"] = tags.get("ram_gb") or hardware.get("ram_total_gb")
    for key in TAG_FEATURES:
        if key not in tags:
            raise InputError(f"no {key} tag")
        row[key] = tags[key]
    for key in ("input_height", "input_width"):
        row[key] = tags.get(key) or tags.get("input_size")
        if row[key] is None:
            raise InputError(f"no {key} or input_size tag")
    summary = summarize(store, run_id)
    gpus = _gpu_devices(summary.devices)
    if not gpus:
        raise InputError("no GPU power readings")
    counted = gpus + [d for d in summary.devices if d == "ram"]
    duration = summary.duration_s
    epochs = summary.epochs.dropna(subset=["energy_j"])
    if epochs.empty:
        raise InputError("no finished epochs")
    gpu_j = sum(summary.devices[d].energy_j for d in gpus)
    per_epoch = sum(epochs[f"energy_j[{d}]"] for d in counted if f"energy_j[{d}]" in epochs)
    samples = store.samples(run_id)
    util = samples.loc[samples["device"].isin(gpus), "util_pct"].dropna()
    row.update(
        avg_power_w=gpu_j / duration if duration > 0 else np.nan,
        epoch_energy_j=float(np.mean(per_epoch)),
        energy_j=float(sum(summary.devices[d].energy_j for d in counted)),
        duration_s=duration,
        epochs=len(epochs),
        gpu_util_pct=float(util.mean()) if len(util) else np.nan,
    )
    return row


def runs_table(store: Any, run_ids: list[int] | None = None) -> tuple[pd.DataFrame, Counter[str]]:
    """The run table of ``run_ids`` (default: every run), and why each run left out was left out.

    Raises:
        InputError: no run qualifies (the message counts the reasons).
    """
    ids = run_ids if run_ids is not None else [int(i) for i in store.runs()["id"]]
    rows, skipped = [], Counter[str]()
    for run_id in ids:
        try:
            rows.append(run_row(store, run_id))
        except InputError as exc:
            skipped[str(exc)] += 1
            log.info("run %d left out of the run table: %s", run_id, exc)
    if not rows:
        reasons = "; ".join(f"{n} x {why}" for why, n in skipped.most_common()) or "no runs"
        raise InputError(f"{store.path}: no run usable for the offline estimators ({reasons})")
    from joulecast.offline.features import resolve_gpus

    table = resolve_gpus(pd.DataFrame(rows), source=str(store.path))
    for column in table.columns.drop(["gpu", "run_id"]):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table, skipped
