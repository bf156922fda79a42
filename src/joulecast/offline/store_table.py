"""A run table for the offline estimators, built from runs measured by joulecast.

One row per completed run with a GPU, from its tags and recorded hardware:

- ``gpu``: the ``gpu`` tag, else the one GPU model the run sampled;
- ``ram_gb``: the ``ram_gb`` tag (an allocation), else the machine's total RAM;
- ``gflops``, ``train_samples``, ``val_samples``, ``batch_size``: tags (``joulecast train``
  and the studies set them);
- ``input_height``/``input_width``: those tags, else ``input_size`` (square inputs).

Targets and totals come from the analysis run table (:func:`joulecast.analysis.data.run_table`,
so the energy is counted as everywhere else): ``avg_power_w`` is the GPUs' energy over the run's
duration; ``epoch_energy_j`` the mean over epochs of GPU + RAM energy (the paper's target);
``energy_j`` the run's GPU + RAM energy; ``duration_s``, ``epochs``, ``gpu_util_pct`` (over the
GPUs with power readings).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

from joulecast.errors import InputError

log = logging.getLogger(__name__)

TAG_FEATURES = ("gflops", "train_samples", "val_samples", "batch_size")


def _offline_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The offline row of one analysis run-table row; InputError says what it lacks."""
    if row["status"] != "completed":
        raise InputError(f"status {row['status']}")
    tags = row["tags"] or {}
    hardware = row["hardware"] or {}
    gpu = tags.get("gpu")
    if not gpu:
        models = hardware.get("gpu_models") or []
        if len(models) != 1:
            raise InputError("no GPU" if not models else f"several GPU models {models}")
        gpu = models[0]
    out: dict[str, Any] = {"run_id": int(row["run_id"]), "gpu": gpu}
    out["ram_gb"] = tags.get("ram_gb") or hardware.get("ram_total_gb")
    for key in TAG_FEATURES:
        if key not in tags:
            raise InputError(f"no {key} tag")
        out[key] = tags[key]
    for key in ("input_height", "input_width"):
        out[key] = tags.get(key) or tags.get("input_size")
        if out[key] is None:
            raise InputError(f"no {key} or input_size tag")
    if math.isnan(row["energy_j_gpu"]):
        raise InputError("no GPU power readings")
    if row["epochs"] == 0:
        raise InputError("no finished epochs")
    out.update(
        avg_power_w=row["avg_power_w"],
        epoch_energy_j=row["epoch_energy_j_gpu_ram"],
        energy_j=row["energy_j_gpu_ram"],
        duration_s=row["duration_s"],
        epochs=int(row["epochs"]),
        gpu_util_pct=row["gpu_util_pct_metered"],
    )
    return out


def _analysis_rows(store: Any, run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The analysis run-table rows of the stored runs among ``run_ids``, by run id."""
    from joulecast.analysis.data import run_table

    stored = {int(i) for i in store.runs()["id"]}
    table = run_table(store, run_ids=[i for i in dict.fromkeys(run_ids) if i in stored])
    return {int(row["run_id"]): row for row in table.to_dict("records")}


def run_row(store: Any, run_id: int) -> dict[str, Any]:
    """The run-table row of one stored run; InputError says what it lacks."""
    rows = _analysis_rows(store, [run_id])
    if run_id not in rows:
        raise InputError(f"{store.path}: no run with id {run_id}")
    return _offline_row(rows[run_id])


def runs_table(store: Any, run_ids: list[int] | None = None) -> tuple[pd.DataFrame, Counter[str]]:
    """The run table of ``run_ids`` (default: every run), and why each run left out was left out.

    Raises:
        InputError: no run qualifies (the message counts the reasons).
    """
    ids = run_ids if run_ids is not None else [int(i) for i in store.runs()["id"]]
    analysed = _analysis_rows(store, ids)
    rows, skipped = [], Counter[str]()
    for run_id in ids:
        try:
            if run_id not in analysed:
                raise InputError(f"{store.path}: no run with id {run_id}")
            rows.append(_offline_row(analysed[run_id]))
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
