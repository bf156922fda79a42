"""The run table the offline estimators learn from, and the features they derive from it.

A run table has one row per training run: the ten raw features of del Rey et al. (2024) and, for
fitting, the targets. Its columns (extra columns are ignored):

=================  =======  ===========================================================
column             unit     meaning
=================  =======  ===========================================================
gpu_cuda_cores     –        CUDA cores of the GPU
gpu_memory_gb      GB       GPU memory
gpu_tdp_w          W        GPU thermal design power (board power)
ram_gb             GB       RAM of the machine or allocation
gflops             GFLOPs   forward-pass FLOPs of one sample (2 per multiply-accumulate)
train_samples      samples  training-split size
val_samples        samples  validation-split size
batch_size         samples  batch size
input_height       px       input height
input_width        px       input width
avg_power_w        W        target: mean GPU power over the run
epoch_energy_j     J        target: mean energy of one epoch
=================  =======  ===========================================================

A ``gpu`` column (a GPU model name) may stand in for the three ``gpu_*`` columns; names are
resolved through :mod:`joulecast.offline.catalogue`.

:class:`EnergyFeatures` derives the engineered features from the raw ten, inside a scikit-learn
``Pipeline``.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from joulecast.errors import InputError
from joulecast.inputs import finite, read_file
from joulecast.offline.bounds import COLUMN_MAX, MAX_TABLE_BYTES, OPTIONAL_COLUMNS

log = logging.getLogger(__name__)

RAW_FEATURES = [
    "gpu_cuda_cores",
    "gpu_memory_gb",
    "gpu_tdp_w",
    "ram_gb",
    "gflops",
    "train_samples",
    "val_samples",
    "batch_size",
    "input_height",
    "input_width",
]
TARGETS = ("avg_power_w", "epoch_energy_j")
#: Mean energy of a run's epochs from the 10th on (J): the paper's epoch-energy target without
#: the initial epochs (Table 9, "False"). Only the paper's protocol reads it.
STABLE_ENERGY = "epoch_energy_stable_j"
GPU_COLUMNS = ("gpu_cuda_cores", "gpu_memory_gb", "gpu_tdp_w")

FeatureSet = Literal["raw", "log", "physics", "work"]
FEATURE_SETS: tuple[FeatureSet, ...] = ("raw", "log", "physics", "work")

# Column positions in RAW_FEATURES order, for the transformer's numpy path.
_I = {name: i for i, name in enumerate(RAW_FEATURES)}


def read_runs(path: str | Path, *, gpus_file: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read a run table from a CSV file and check its features (and targets, where present).

    Args:
        path: CSV file with the columns of :data:`RAW_FEATURES`; a ``gpu`` column (model name)
            may replace ``gpu_cuda_cores``, ``gpu_memory_gb`` and ``gpu_tdp_w``. Columns named in
            :data:`TARGETS` are checked when present; other columns are kept but never used.
        gpus_file: A user GPU catalogue CSV for the ``gpu`` column (default:
            ``$JOULECAST_GPUS``, if set).

    Returns:
        The table, with the ``gpu_*`` columns filled in from the catalogue where needed.

    Raises:
        InputError: the file cannot be read or is larger than 64 MiB, a column is missing, or a
            feature, a target or a value of :data:`~joulecast.offline.bounds.OPTIONAL_COLUMNS`
            is not a number above 0 and within its bound in
            :data:`~joulecast.offline.bounds.COLUMN_MAX` (the message names the file, line,
            column and value).
    """
    path = Path(path)
    data = read_file(path, "a CSV run table", max_bytes=MAX_TABLE_BYTES)
    try:
        df = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())  # pandas' own message spans lines
        raise InputError(f"{path}: not a readable CSV file ({reason})") from exc
    if not isinstance(df.index, pd.RangeIndex):  # pandas took the surplus fields as an index
        raise InputError(
            f"{path}: line 2: more fields than the {len(df.columns)} columns of the header"
        )
    df = resolve_gpus(df, source=str(path), gpus_file=gpus_file)
    feature_frame(df, source=str(path))
    for target in TARGETS:
        if target in df.columns:
            target_values(df, target, source=str(path))
    for column in OPTIONAL_COLUMNS:
        if column in df.columns:
            df[column] = _numbers(df[column], column, str(path), missing_ok=True)
    return df


def feature_frame(df: pd.DataFrame, *, source: str = "run table") -> pd.DataFrame:
    """The raw features of a run table, checked, as floats in :data:`RAW_FEATURES` order.

    Args:
        df: run table (see the module docstring); extra columns are ignored.
        source: what to call the table in error messages (a file name, usually).

    Raises:
        InputError: a column is missing, or a value is not a number above 0 within its bound.
    """
    missing = [c for c in RAW_FEATURES if c not in df.columns]
    if missing:
        hint = " (or a gpu column)" if set(missing) <= set(GPU_COLUMNS) else ""
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}{hint}")
    return pd.DataFrame({c: _numbers(df[c], c, source) for c in RAW_FEATURES}, index=df.index)


def target_values(df: pd.DataFrame, target: str, *, source: str = "run table") -> np.ndarray:
    """The values of one target column, checked to be numbers above 0 within their bound.

    Raises:
        InputError: the column is missing or holds a value that is not such a number.
    """
    if target not in (*TARGETS, STABLE_ENERGY):
        raise InputError(f"target {target!r} is not one of {', '.join((*TARGETS, STABLE_ENERGY))}")
    if target not in df.columns:
        raise InputError(f"{source}: missing target column {target}")
    return np.asarray(_numbers(df[target], target, source), dtype=float)


def configuration_groups(features: pd.DataFrame) -> np.ndarray:
    """One integer label per row; rows with identical raw features share a label.

    A *configuration* is one setting of the ten raw features; the paper's data repeats each
    configuration about 17 times. Leave-configuration-out cross-validation uses these labels.
    """
    frame = features[RAW_FEATURES].round(9)
    return np.asarray(frame.groupby(RAW_FEATURES, sort=True).ngroup(), dtype=int)


class EnergyFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Derive model inputs from the ten raw features, from how training spends energy.

    Takes the raw features (a DataFrame with :data:`RAW_FEATURES` columns, or an array with them
    in that order) and returns a float array. Stateless: ``fit`` only records the input width.

    Feature sets:

    ``"raw"``
        The ten raw features unchanged (the paper's inputs).
    ``"log"``
        The natural logarithm of each raw feature. Energy and power respond to sizes
        multiplicatively (twice the samples, twice the epoch time), so on a log scale a linear
        model is a power law and an RBF kernel measures distance in ratios, not in units.
    ``"physics"``
        Log-scale quantities that say how much work an epoch is and how busy it keeps the GPU:

        - ``log_gflops``, ``log_batch``, ``log_pixels`` (input area), ``log_ram_gb``: the
          model, step and input sizes themselves;
        - ``log_work_gflop``: FLOPs of one epoch, ``(3 x train + val) x gflops``: a training
          sample costs a forward and a backward pass (about 2x forward), a validation sample a
          forward pass only. At a given throughput, epoch time and so epoch energy scale with it;
        - ``log_steps``: optimizer/validation steps per epoch, ``(train + val) / batch``: each
          step pays a fixed launch, synchronisation and input-pipeline overhead;
        - ``log_work_per_core``: ``log_work_gflop - log(cuda_cores)``, the epoch's compute time
          if throughput scales with the number of cores;
        - ``log_step_gflop_per_core``: FLOPs of one batch per CUDA core,
          ``batch x gflops / cores``: a utilisation proxy. Small steps on a large GPU leave cores
          idle and draw far below TDP; large steps saturate it;
        - ``log_tdp_w``, ``log_cuda_cores``, ``log_memory_gb``, ``log_tdp_per_core``: the GPU's
          power budget, width, memory and power per core (a newer, more efficient GPU spends
          fewer watts per core).

    Args:
        feature_set: ``"raw"``, ``"log"`` or ``"physics"``.
    """

    def __init__(self, feature_set: FeatureSet = "physics") -> None:
        self.feature_set = feature_set

    def fit(self, X: Any, y: Any = None) -> EnergyFeatures:
        """Check the feature set and the input width; learns nothing else."""
        if self.feature_set not in FEATURE_SETS:
            raise InputError(
                f"feature_set {self.feature_set!r} is not one of {', '.join(FEATURE_SETS)}"
            )
        X = self._as_array(X)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The derived features of each row, in :meth:`get_feature_names_out` order."""
        X = arr = self._as_array(X)
        if self.feature_set == "raw":
            return arr
        if np.any(X <= 0):
            raise InputError("EnergyFeatures: every raw feature must be positive (log scale)")
        logx: np.ndarray = np.log(X)
        if self.feature_set == "log":
            return logx
        c = {name: X[:, i] for name, i in _I.items()}
        if self.feature_set == "work":
            samples = c["train_samples"] + c["val_samples"]
            work = (3.0 * c["train_samples"] + c["val_samples"]) * c["gflops"]
            steps = samples / c["batch_size"]
            return np.column_stack([samples, work, steps, work / c["gpu_cuda_cores"]])
        lc = {name: logx[:, i] for name, i in _I.items()}
        log_work = np.log((3.0 * c["train_samples"] + c["val_samples"]) * c["gflops"])
        columns = [
            lc["gflops"],
            lc["batch_size"],
            lc["input_height"] + lc["input_width"],
            lc["ram_gb"],
            log_work,
            np.log(c["train_samples"] + c["val_samples"]) - lc["batch_size"],
            log_work - lc["gpu_cuda_cores"],
            lc["batch_size"] + lc["gflops"] - lc["gpu_cuda_cores"],
            lc["gpu_tdp_w"],
            lc["gpu_cuda_cores"],
            lc["gpu_memory_gb"],
            lc["gpu_tdp_w"] - lc["gpu_cuda_cores"],
        ]
        return np.column_stack(columns)

    def get_feature_names_out(self, input_features: Sequence[str] | None = None) -> np.ndarray:
        """Names of the derived columns."""
        if self.feature_set == "raw":
            return np.asarray(RAW_FEATURES, dtype=object)
        if self.feature_set == "log":
            return np.asarray([f"log_{c}" for c in RAW_FEATURES], dtype=object)
        if self.feature_set == "work":
            return np.asarray(WORK_FEATURES, dtype=object)
        return np.asarray(PHYSICS_FEATURES, dtype=object)

    @staticmethod
    def _as_array(X: Any) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            missing = [c for c in RAW_FEATURES if c not in X.columns]
            if missing:
                raise InputError(f"EnergyFeatures: missing column(s) {', '.join(missing)}")
            X = X[RAW_FEATURES]
        arr = np.asarray(X, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != len(RAW_FEATURES):
            raise InputError(
                f"EnergyFeatures: expected {len(RAW_FEATURES)} columns ({', '.join(RAW_FEATURES)}),"
                f" got shape {arr.shape}"
            )
        return arr


WORK_FEATURES = ["samples", "work_gflop", "steps", "work_gflop_per_core"]
PHYSICS_FEATURES = [
    "log_gflops",
    "log_batch",
    "log_pixels",
    "log_ram_gb",
    "log_work_gflop",
    "log_steps",
    "log_work_per_core",
    "log_step_gflop_per_core",
    "log_tdp_w",
    "log_cuda_cores",
    "log_memory_gb",
    "log_tdp_per_core",
]


def _numbers(column: pd.Series, name: str, source: str, *, missing_ok: bool = False) -> pd.Series:
    """The column as floats, each above 0 and at most its bound in :data:`COLUMN_MAX`.

    Empty cells are NaN where ``missing_ok``. Each cell goes through :func:`finite`, so a text
    cell reads as the input layer reads numbers everywhere else.

    Raises:
        InputError: at the first other value, naming the line (the header is line 1).
    """
    hi = COLUMN_MAX[name]
    values = []
    for pos, raw in enumerate(column.tolist()):
        if missing_ok and (
            raw is None or raw == "" or (isinstance(raw, float) and math.isnan(raw))
        ):
            values.append(np.nan)
            continue
        where = f"{source}: line {pos + 2}, column {name}"
        values.append(finite(raw, where, lo=0.0, hi=hi, above=True))
    return pd.Series(values, index=column.index, dtype=float)


def resolve_gpus(
    df: pd.DataFrame, *, source: str, gpus_file: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """Fill missing gpu_* columns from the ``gpu`` column through the GPU catalogue.

    ``gpus_file`` extends the catalogue as in :func:`joulecast.offline.catalogue.lookup`.
    """
    missing = [c for c in GPU_COLUMNS if c not in df.columns]
    if not missing or "gpu" not in df.columns:
        return df
    from joulecast.offline.catalogue import lookup  # the catalogue is only needed here

    specs: dict[str, Any] = {}
    for pos, name in enumerate(df["gpu"]):
        key = str(name).strip()
        if key in specs:
            continue
        if not key or key == "nan":
            raise InputError(f"{source}: line {pos + 2}, column gpu: empty (expected a GPU model)")
        try:
            specs[key] = lookup(key, gpus_file)
        except InputError as exc:
            raise InputError(f"{source}: line {pos + 2}, column gpu: {exc}") from exc
    attribute = {"gpu_cuda_cores": "cuda_cores", "gpu_memory_gb": "memory_gb", "gpu_tdp_w": "tdp_w"}
    df = df.copy()
    names = df["gpu"].astype(str).str.strip()
    for column in missing:
        df[column] = names.map(lambda n, a=attribute[column]: getattr(specs[n], a))
    log.debug("%s: resolved %d GPU model(s) through the catalogue", source, len(specs))
    return df
