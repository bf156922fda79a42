"""The largest value each column of a run table may hold.

One table for every reader of those values: run-table CSVs, the rows of a model file, the GPU
catalogue and the options of ``joulecast estimate``. Each bound is far above any training
(the largest GPUs have some 20,000 CUDA cores and 1.2 kW), and low enough that the quantities
made of them (an epoch's FLOPs, a training's energy) stay finite. Every value must also be
above 0. Kept apart from :mod:`joulecast.offline.features` so the command line reads it
without importing scikit-learn.
"""

from __future__ import annotations

from joulecast.inputs import MAX_DURATION_S
from joulecast.records import DEVICE_RANGES

#: The largest value of each column (each must also be above 0).
COLUMN_MAX: dict[str, float] = {
    "gpu_cuda_cores": 1e6,
    "gpu_memory_gb": 1e5,
    "gpu_tdp_w": DEVICE_RANGES["gpu"][0],  # one GPU's power, as its readings are bounded
    "ram_gb": 1e7,
    "gflops": 1e9,
    "train_samples": 1e13,
    "val_samples": 1e13,
    "batch_size": 1e9,
    "input_height": 1e6,
    "input_width": 1e6,
    "avg_power_w": 1e7,
    "epoch_energy_j": 1e15,
    "epoch_energy_stable_j": 1e15,
    "epochs": 1e9,
    "duration_s": MAX_DURATION_S,
    "energy_j": 1e17,
    "gpu_util_pct": 100.0,
}
#: Columns a run table may leave empty, in some rows or all: a missing planned duration.
OPTIONAL_COLUMNS = ("epochs", "duration_s", "energy_j", "gpu_util_pct")
#: The largest run-table CSV joulecast reads.
MAX_TABLE_BYTES = 64 * 2**20
#: The paper's procedure (:mod:`joulecast.offline.paper`): the most draws of one randomized
#: search, and the largest share of a table held out (the rest must still fill 5 folds).
MAX_N_ITER = 10_000
MAX_HOLDOUT = 0.9
