"""One row per run for analysis (:func:`run_table`); a synthetic study (:func:`synthetic_store`).

:func:`run_table` turns a store into the table del Rey et al. (2024) analyse: one row per run,
every status, with the study's factors (from the run's tags), energy normalised per image
processed, time per image, GPU usage and test scores. :data:`COLUMNS` names and describes its
columns; a value that cannot be known is NaN.

Images processed are counted as the paper counts them (section 3.7, "the total number of images
processed during training"; the replication package's "total seen images"): the training
images of the finished epochs plus one validation pass per finished epoch, ``epochs`` x the
run's ``val_samples`` tag. ``j_per_image`` and ``s_per_image`` divide by these;
``j_per_train_image``, beside them, by the training images alone.

Energy is counted per device as :func:`joulecast.energy.summarize` counts it, from the energy
aggregates the store keeps as samples are written (:mod:`joulecast.ledger`: a device with an
energy counter, two or more readings, is counted from the counter, an interval where it went
backwards from power; a device without one is the trapezoid of its power readings; a device
with neither is left out). No sample is read: a run's row costs a few indexed reads per device
and finished epoch, however long the run.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import joulecast.ledger as ledger
from joulecast.energy import stored_readings, unmeasured_phases
from joulecast.errors import InputError
from joulecast.records import EnergyOrigin, Phase, PhaseKind, RunStatus, device_kind
from joulecast.store import SAMPLE_COLUMNS, Store

log = logging.getLogger(__name__)

__all__ = [
    "COLUMNS",
    "SYNTHETIC_ARCHITECTURES",
    "SYNTHETIC_ENVIRONMENTS",
    "run_table",
    "synthetic_store",
]

COLUMNS: dict[str, str] = {
    "run_id": "the run's id in the store",
    "name": "the run's name",
    "status": "completed, failed, interrupted or running",
    "origin": "how the run was recorded: measure, replay (GPUs replayed from a recorded trace, "
    "a dry run), import or synthetic",
    "study": "tag 'study'",
    "study_key": "tag 'study_key' (the planned run's key)",
    "repetition": "tag 'repetition'",
    "architecture": "tag 'arch'",
    "dataset": "tag 'dataset'",
    "environment": "tag 'environment'",
    "batch_size": "tag 'batch_size'",
    "input_size": "tag 'input_size' (pixels per side)",
    "ram_gb": "tag 'ram_gb' (RAM allocated to the run)",
    "gflops": "tag 'gflops' (forward pass of one image)",
    "train_samples": "tag 'train_samples'",
    "val_samples": "tag 'val_samples'",
    "epochs": "number of finished epoch phases (0 if none)",
    "images": "training images: the sum of the samples of the epoch phases; NaN if none was "
    "recorded",
    "val_images": "validation images: epochs x val_samples (one validation pass per finished "
    "epoch); 0 where the run has no val_samples tag (no validation is counted, none guessed); "
    "NaN where the tag is not a number of 0 or more, or the count overflows",
    "images_processed": "images + val_images, the images processed in training as the paper "
    "counts them",
    "duration_s": "the run's duration; else its last sample's time; else NaN",
    "train_duration_s": "sum of the durations of the finished epochs; NaN if none",
    "energy_j": "energy of every device, measured, replayed and modelled; NaN if no device "
    "had power",
    "energy_j_measured": "energy of the devices read from the run's machine's hardware; NaN if "
    "none was measured",
    "energy_j_replayed": "energy of the devices replayed from a recorded trace (source replay); "
    "0 if none was replayed; NaN if no device had power",
    "energy_j_gpu": "energy of the gpu:* devices; NaN if none had power",
    "avg_power_w": "energy_j_gpu / duration_s",
    "gpu_util_pct": "mean utilisation over the samples of the gpu:* devices",
    "energy_j_gpu_ram": "energy of the gpu:* and ram devices (the offline estimators' "
    "energy_j); NaN if none had power",
    "epoch_energy_j_gpu_ram": "mean over the finished epochs of the energy of the gpu:* and ram "
    "devices (the offline estimators' epoch_energy_j), unmeasured epochs (run outside the "
    "readings, as after the sampler died) left out; NaN if no measured epoch or no power",
    "gpu_util_pct_metered": "mean utilisation over the samples of the gpu:* devices that had "
    "power, those of energy_j_gpu (the offline estimators' gpu_util_pct)",
    "j_per_image": "energy_j / images_processed (the paper's J/image: training and validation "
    "images); NaN where images is not above 0 or an epoch is unmeasured (the energy does not "
    "cover its images)",
    "j_per_train_image": "energy_j / images (training images only); NaN where an epoch is "
    "unmeasured",
    "s_per_image": "train_duration_s / images_processed (time per image processed, over the "
    "images j_per_image counts, as the paper's processing time per image); NaN where images "
    "is not above 0",
    "f1": "metric 'f1' of the run's test phase (the last one)",
    "accuracy": "metric 'accuracy' of the run's test phase (the last one)",
    "interval_s": "the run's sampling interval; for a run the store has none for (an imported "
    "run), the mean spacing of its samples",
    "mean_epoch_s": "train_duration_s / epochs",
    "gpu": "the run's GPU model (hardware gpu_models[0], else tag 'gpu'); None if unknown",
    "gpu_tdp_w": "board power of the run's GPU (hardware gpu_models[0], else tag 'gpu') in "
    "the GPU catalogue; NaN if unknown",
    "tags": "all the run's tags, as a dict",
    "hardware": "the run's recorded hardware facts, as a dict",
}

_NUMERIC_TAGS = {
    "repetition": "repetition",
    "batch_size": "batch_size",
    "input_size": "input_size",
    "ram_gb": "ram_gb",
    "gflops": "gflops",
    "train_samples": "train_samples",
    "val_samples": "val_samples",
}
_TEXT_TAGS = {
    "study": "study",
    "study_key": "study_key",
    "architecture": "arch",
    "dataset": "dataset",
    "environment": "environment",
}


# -- reading ------------------------------------------------------------------------------------


@contextmanager
def _opened(store: Store | str | Path) -> Iterator[Store]:
    """``store``, or the store at the path ``store`` (opened for the call, to read)."""
    if isinstance(store, Store):
        yield store
        return
    path = Path(store)
    if not path.is_file():
        raise InputError(f"{path}: no such store file (expected a joulecast store)")
    with Store(path, read_only=True) as opened:
        yield opened


def _select_runs(
    store: Store, study: str | None, run_ids: list[int] | None
) -> list[dict[str, Any]]:
    listed = store.runs()
    known = [int(i) for i in listed["id"]]
    if run_ids is not None:
        wanted = {int(i) for i in run_ids}
        missing = sorted(wanted - set(known))
        if missing:
            shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise InputError(f"{store.path}: no run with id {shown} (expected ids of stored runs)")
        known = [i for i in known if i in wanted]
    if study is not None:
        tags = dict(zip(listed["id"].astype(int), listed["tags"], strict=True))
        known = [i for i in known if tags[i].get("study") == study]
    return [store.run(i) for i in known]


_Bounds = Mapping[int, tuple[np.ndarray, np.ndarray]]  # per run: its finished epochs' starts, ends


def _run_figures(
    store: Store, run_id: int, bounds: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, float]:
    """One run's energy (all, measured, replayed, GPU, GPU + RAM, mean per finished epoch of
    GPU + RAM), last sample time, sample spacing and GPU utilisation (of every GPU, of the
    GPUs with energy), from its energy aggregates."""
    states = store.device_energy(run_id)
    if not states:
        return {}
    known = {d: s for d, s in states.items() if not math.isnan(s.energy_j)}
    gpus = {d: s for d, s in states.items() if device_kind(d) == "gpu"}

    def total(keep: Callable[[str, ledger.DeviceState], bool]) -> float:
        values = [s.energy_j for d, s in known.items() if keep(d, s)]
        return float(sum(values)) if values else math.nan

    def origin(state: ledger.DeviceState) -> EnergyOrigin:
        return EnergyOrigin.of(state.source, state.measured)

    def util(of: Mapping[str, ledger.DeviceState]) -> float:
        rows = sum(s.util_rows for s in of.values())
        return sum(s.util_sum for s in of.values()) / rows if rows else math.nan

    spacing = [(s.t_last_s - s.t_first_s) / (s.rows - 1) for s in states.values() if s.rows >= 2]
    out = {
        "energy_j": total(lambda d, s: True),
        "energy_j_measured": total(lambda d, s: origin(s) is EnergyOrigin.MEASURED),
        # 0, not NaN, where none was replayed: every run but a dry run's.
        "energy_j_replayed": float(
            sum(s.energy_j for s in known.values() if origin(s) is EnergyOrigin.REPLAYED)
        )
        if known
        else math.nan,
        "energy_j_gpu": total(lambda d, s: device_kind(d) == "gpu"),
        "energy_j_gpu_ram": total(lambda d, s: device_kind(d) in ("gpu", "ram")),
        "t_max": max(s.t_last_s for s in states.values()),
        "spacing_s": min(spacing) if spacing else math.nan,
        "gpu_util_pct": util(gpus),
        "gpu_util_pct_metered": util({d: s for d, s in gpus.items() if d in known}),
    }
    if bounds is None:
        return out
    # An epoch outside the readings (its sampler died) has no energy: left out, never 0 J.
    unmeasured = (
        np.zeros(len(bounds[0]), dtype=bool)
        if store.recording(run_id)
        else unmeasured_phases(*bounds, stored_readings(states))
    )
    out["unmeasured_epochs"] = float(unmeasured.sum())
    if any(device_kind(d) in ("gpu", "ram") for d in known) and not unmeasured.all():
        at = store.energy_at(run_id, np.concatenate(bounds))
        n = len(bounds[0])
        per_epoch = sum(
            e[n:] - e[:n] for d, e in sorted(at.items()) if device_kind(d) in ("gpu", "ram")
        )
        out["epoch_energy_j_gpu_ram"] = float(np.mean(np.asarray(per_epoch)[~unmeasured]))
    return out


def _sample_figures(store: Store, ids: list[int], epochs: _Bounds) -> pd.DataFrame:
    """Per run: the figures of :func:`_run_figures` (NaN where unknown)."""
    columns = (
        "epoch_energy_j_gpu_ram",
        "gpu_util_pct",
        "gpu_util_pct_metered",
        "energy_j",
        "energy_j_measured",
        "energy_j_replayed",
        "energy_j_gpu",
        "energy_j_gpu_ram",
        "t_max",
        "spacing_s",
        "unmeasured_epochs",
    )
    rows = {run_id: _run_figures(store, run_id, epochs.get(run_id)) for run_id in ids}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=list(columns), dtype=float)
    out.index = pd.Index(ids, name="run_id")
    return out


def _phase_figures(store: Store, ids: list[int]) -> tuple[pd.DataFrame, _Bounds]:
    """Per run: finished epochs, images, training time, the last test phase's scores; and the
    bounds of the finished epochs."""
    phases = store.phases_of_runs(ids, kinds=("epoch", "test"))
    out = pd.DataFrame(index=pd.Index(ids, name="run_id"))
    epochs = phases[phases["kind"] == "epoch"]
    finished = epochs[epochs["end_s"].notna()]
    bounds = {
        int(run_id): (part["start_s"].to_numpy(float), part["end_s"].to_numpy(float))
        for run_id, part in finished.groupby("run_id", sort=False)
    }
    spans = finished["end_s"] - finished["start_s"]
    out["epochs"] = finished.groupby("run_id").size()
    out["epochs"] = out["epochs"].fillna(0).astype(np.int64)
    out["train_duration_s"] = spans.groupby(finished["run_id"]).sum(min_count=1)
    out["images"] = (
        pd.to_numeric(epochs["samples"], errors="coerce").groupby(epochs["run_id"]).sum(min_count=1)
    )
    last = phases[phases["kind"] == "test"].groupby("run_id").tail(1)
    for metric in ("f1", "accuracy"):
        out[metric] = pd.Series(
            [_metric(m, metric) for m in last["metrics"]], index=last["run_id"], dtype=float
        )
    return out, bounds


def _metric(metrics: Mapping[str, Any], key: str) -> float:
    value: Any = metrics.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _gpu_tdp(names: Sequence[str | None]) -> list[float]:
    from joulecast.offline.catalogue import lookup

    found: dict[str, float] = {}
    out = []
    for name in names:
        if not name:
            out.append(math.nan)
            continue
        if name not in found:
            try:
                found[name] = float(lookup(name).tdp_w) or math.nan
            except InputError as exc:
                log.info("GPU %r not in the catalogue: gpu_tdp_w is NaN (%s)", name, exc)
                found[name] = math.nan
        out.append(found[name])
    return out


def _gpu_name(run: Mapping[str, Any]) -> str | None:
    models = run["hardware"].get("gpu_models") or []
    if isinstance(models, list) and models and models[0]:
        return str(models[0])
    tag = run["tags"].get("gpu")
    return str(tag) if tag else None


def _empty_table() -> pd.DataFrame:
    table = pd.DataFrame({col: pd.Series(dtype=float) for col in COLUMNS})
    for col in ("name", "status", "origin", "tags", "hardware", "gpu", *_TEXT_TAGS):
        table[col] = table[col].astype(object)
    table["run_id"] = table["run_id"].astype(np.int64)
    table["epochs"] = table["epochs"].astype(np.int64)
    return table


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    den = den.astype(float)
    return num.astype(float) / den.where(den > 0)


def _val_images(
    tags: Sequence[Mapping[str, Any]], val_samples: pd.Series, epochs: pd.Series
) -> pd.Series:
    """Validation images per run: ``epochs`` x ``val_samples``; 0 without the tag; NaN where
    the tag is there but not a finite number of 0 or more, or the product overflows."""
    tagged = pd.Series([t.get("val_samples") is not None for t in tags], index=val_samples.index)
    counted = epochs.astype(float) * val_samples
    # An infinite count would make J/image 0 J, a figure cleaning keeps: unknown instead.
    usable = (val_samples >= 0) & np.isfinite(counted)
    return counted.where(usable).where(tagged, 0.0)


def run_table(
    store: Store | str | Path, *, study: str | None = None, run_ids: list[int] | None = None
) -> pd.DataFrame:
    """One row per run, every status, ordered by run id; the columns of :data:`COLUMNS`.

    Args:
        store: A :class:`~joulecast.store.Store`, or the path of a store file (opened as a
            store for the call).
        study: Keep only the runs tagged ``study`` with this name.
        run_ids: Keep only these runs.

    Returns:
        The table; empty, with every column, where no run qualifies (a new store, a study
        with no runs).

    Raises:
        InputError: The store file does not exist, or a run id is not in it.
        StoreError: The file cannot be read as a store.
    """
    with _opened(store) as opened:
        runs = _select_runs(opened, study, run_ids)
        if not runs:
            return _empty_table()
        ids = [int(run["id"]) for run in runs]
        phases, epochs = _phase_figures(opened, ids)
        samples = _sample_figures(opened, ids, epochs)
    table = pd.DataFrame({"run_id": np.array(ids, dtype=np.int64)})
    table["name"] = pd.Series([run["name"] for run in runs], dtype=object)
    table["status"] = pd.Series([run["status"] for run in runs], dtype=object)
    table["origin"] = pd.Series([run["origin"] for run in runs], dtype=object)
    tags = [run["tags"] for run in runs]
    for col, key in _TEXT_TAGS.items():
        table[col] = pd.Series([t.get(key) for t in tags], dtype=object)
    for col, key in _NUMERIC_TAGS.items():
        values = pd.Series([t.get(key) for t in tags], dtype=object)
        table[col] = pd.to_numeric(values, errors="coerce").astype(float)
    samples = samples.reindex(ids)
    phases = phases.reindex(ids)
    table["epochs"] = phases["epochs"].to_numpy(np.int64)
    table["images"] = phases["images"].to_numpy(float)
    table["val_images"] = _val_images(tags, table["val_samples"], table["epochs"])
    table["images_processed"] = table["images"] + table["val_images"]
    stored = pd.Series([run["duration_s"] for run in runs], dtype=float)
    table["duration_s"] = stored.fillna(pd.Series(samples["t_max"].to_numpy(float)))
    table["train_duration_s"] = phases["train_duration_s"].to_numpy(float)
    for col in ("energy_j", "energy_j_measured", "energy_j_replayed", "energy_j_gpu"):
        table[col] = samples[col].to_numpy(float)
    table["avg_power_w"] = _ratio(table["energy_j_gpu"], table["duration_s"])
    for col in ("gpu_util_pct", "energy_j_gpu_ram", "epoch_energy_j_gpu_ram"):
        table[col] = samples[col].to_numpy(float)
    table["gpu_util_pct_metered"] = samples["gpu_util_pct_metered"].to_numpy(float)
    unmeasured = samples["unmeasured_epochs"].fillna(0).to_numpy(float) > 0
    trained = table["images"] > 0
    table["j_per_image"] = _ratio(table["energy_j"], table["images_processed"]).where(
        trained & ~unmeasured
    )
    table["j_per_train_image"] = _ratio(table["energy_j"], table["images"]).where(~unmeasured)
    table["s_per_image"] = _ratio(table["train_duration_s"], table["images_processed"]).where(
        trained
    )
    table["f1"] = phases["f1"].to_numpy(float)
    table["accuracy"] = phases["accuracy"].to_numpy(float)
    interval = pd.Series([run["interval_s"] for run in runs], dtype=float)
    table["interval_s"] = interval.fillna(pd.Series(samples["spacing_s"].to_numpy(float)))
    table["mean_epoch_s"] = _ratio(table["train_duration_s"], table["epochs"])
    gpus = [_gpu_name(run) for run in runs]
    table["gpu"] = pd.Series(gpus, dtype=object)
    table["gpu_tdp_w"] = _gpu_tdp(gpus)
    table["tags"] = pd.Series(tags, dtype=object)
    table["hardware"] = pd.Series([run["hardware"] for run in runs], dtype=object)
    return table.loc[:, list(COLUMNS)]


# -- the synthetic study ------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticArchitecture:
    """How a synthetic architecture trains: its GPU power, time per training image, FLOPs and
    F1."""

    gpu_power_w: float
    s_per_image: float
    gpu_util_pct: float
    gflops: float
    f1: float

    @property
    def gpu_j_per_image(self) -> float:
        """GPU energy per training image in the reference environment (factors 1)."""
        return self.gpu_power_w * self.s_per_image


@dataclass(frozen=True)
class SyntheticEnvironment:
    """A synthetic training environment: its GPU, RAM allocation and speed and power factors."""

    gpu: str
    ram_gb: int
    power_factor: float
    time_factor: float
    f1_shift: float


#: B uses 0.6 x A's energy per image (40% less) and C 1.5 x, in every environment.
SYNTHETIC_ARCHITECTURES: dict[str, SyntheticArchitecture] = {
    "A": SyntheticArchitecture(200.0, 0.010, 70.0, 5.7, 0.85),
    "B": SyntheticArchitecture(150.0, 0.008, 55.0, 0.6, 0.80),
    "C": SyntheticArchitecture(250.0, 0.012, 90.0, 15.5, 0.90),
}
#: ``local`` draws 0.9 x the power for 1.3 x the time: 1.17 x the energy per image of ``cloud``.
SYNTHETIC_ENVIRONMENTS: dict[str, SyntheticEnvironment] = {
    "cloud": SyntheticEnvironment("NVIDIA A100-SXM4-40GB", 16, 1.0, 1.0, 0.0),
    "local": SyntheticEnvironment("NVIDIA GeForce RTX 3090", 32, 0.9, 1.3, -0.01),
}
_RAM_SHARE = 0.03  # the modelled "ram" device draws this share of the GPU's power
_TRAIN_SAMPLES = 2000
_VAL_SAMPLES = 500
_TEST_SAMPLES = 500
_TEST_SPEEDUP = 0.3  # a test image takes this share of a training image's time
_PAUSE_S = 300.0
_PLANTED = ("failed", "failed", "empty", "slow_sampling", "outlier")
_OUTLIER_FACTOR = 3.0
_SLOW_FACTOR = 1.5  # the slow-sampling run samples every 1.5 epochs


@dataclass
class _PlannedRun:
    arch: str
    env: str
    repetition: int
    power_factor: float = 1.0
    time_factor: float = 1.0
    role: str | None = None


def _spread(n: int, rng: np.random.Generator, width: float) -> np.ndarray:
    """``n`` factors evenly spread over 1 +/- width/2, in random order: no outliers, ever."""
    return 1.0 + width * ((rng.permutation(n) + 0.5) / n - 0.5)


def _check_synthetic(
    runs_per_group: int,
    samples_per_run: int,
    epochs: int,
    architectures: Sequence[str],
    environments: Sequence[str],
) -> None:
    if runs_per_group < 1:
        raise InputError(f"runs_per_group: got {runs_per_group}, expected 1 or more")
    if samples_per_run < 4:
        raise InputError(f"samples_per_run: got {samples_per_run}, expected 4 or more")
    if epochs < 2:
        raise InputError(f"epochs: got {epochs}, expected 2 or more")
    for given, known, what in (
        (architectures, SYNTHETIC_ARCHITECTURES, "architectures"),
        (environments, SYNTHETIC_ENVIRONMENTS, "environments"),
    ):
        unknown = [name for name in given if name not in known]
        if unknown or not given:
            raise InputError(f"{what}: got {list(given)}, expected some of {sorted(known)}")


def synthetic_store(
    path: str | Path,
    *,
    runs_per_group: int = 10,
    seed: int = 0,
    samples_per_run: int = 400,
    epochs: int = 5,
    architectures: Sequence[str] = ("A", "B", "C"),
    environments: Sequence[str] = ("cloud", "local"),
    planted: bool = True,
    study: str = "synthetic",
) -> Store:
    """Create a store at ``path`` holding a synthetic study with known answers; return it open.

    Every (architecture, environment) group gets ``runs_per_group`` completed runs of
    ``epochs`` epochs of 2,000 images and a test phase of 500 images, tagged as a study's runs
    are (``study``, ``study_key``, ``study_position``, ``repetition``, ``seed``, ``arch``,
    ``dataset`` = ``synthetic``, ``environment``, ``ram_gb``, ``batch_size``, ``input_size``,
    ``gflops``, ``train_samples``, ``val_samples``, ``test_samples``, ``epochs``, ``gpu``), with
    the GPU model as recorded hardware, the workload's test metrics (accuracy, precision,
    recall, f1, roc_auc) in the ``test`` phase, and ``samples_per_run`` samples (half on
    ``gpu:0``, measured, with utilisation; half on ``ram``, modelled at 3% of the GPU's power).
    The runs are stored in a shuffled order, as a study runs them.

    The answers (:data:`SYNTHETIC_ARCHITECTURES`, :data:`SYNTHETIC_ENVIRONMENTS`): median
    ``j_per_train_image`` is about 2.09 for A, 1.25 for B (0.6 x A: 40% less), 3.14 for C in
    ``cloud`` (GPU J per training image x 1.03 for the RAM x 1.015 for the test phase), 1.17
    times that in ``local``; ``j_per_image`` is 0.8 times these, 1.67, 1.00 and 2.51 in
    ``cloud`` (the ``val_samples`` tag counts 500 validation images an epoch beside its 2,000
    training images); ``f1`` is 0.85, 0.80, 0.90 (0.01 less in ``local``) +/- 0.01;
    ``gpu_util_pct`` 70, 55, 90 (x 1.1 in ``local``); ``gpu_tdp_w`` 400 (A100 SXM4 40GB,
    ``cloud``) and 350 (RTX 3090, ``local``).
    Energy and time per training image vary by +/- 5% each (power by their ratio), spread
    evenly within a group so that no regular run is an outlier at 1.5 IQR.

    With ``planted``, five more runs are added, tagged ``planted`` with their role, each in
    its own group (in the order of the groups, architecture-major, wrapping around): two
    ``failed`` runs (status failed after two epochs), one ``empty`` run (its epochs recorded no
    image count, so ``images`` is NaN), one ``slow_sampling`` run (sampled every 1.5 epochs) and
    one ``outlier`` (3 x the power). :func:`joulecast.analysis.clean.clean` removes exactly these,
    each by its own rule, where the outlier's group has 3 or more regular runs.

    Runs and phases are written with :meth:`Store.import_run`; the samples, and each run's
    sampling interval (``runs.interval_s``, which ``import_run`` leaves empty), are then
    generated inside SQLite in one statement through a connection of its own, because
    ``import_run`` with 10,000-sample frames takes about 40 ms a run (80 s for 2,000 runs);
    so 2,000 runs of 10,000 samples take about 20 s.

    Args:
        path: A new store file (it must not hold runs yet).
        runs_per_group: Regular runs per (architecture, environment) group.
        seed: Seeds the spread of the runs, their F1 and their order.
        samples_per_run: Samples of each run, all devices together (even: half per device).
        epochs: Epochs per run (2 or more).
        architectures: Names among :data:`SYNTHETIC_ARCHITECTURES`.
        environments: Names among :data:`SYNTHETIC_ENVIRONMENTS`.
        planted: Add the five runs that cleaning must remove.
        study: The ``study`` tag.

    Raises:
        InputError: An argument is out of range, or ``path`` already holds runs.
    """
    _check_synthetic(runs_per_group, samples_per_run, epochs, architectures, environments)
    rng = np.random.default_rng(seed)
    store = Store(path)
    if not store.runs().empty:
        store.close()
        raise InputError(f"{store.path}: already holds runs (expected a new store file)")
    groups = [(a, e) for a in architectures for e in environments]
    plan: list[_PlannedRun] = []
    for arch, env in groups:
        # Energy per image (power x time) is spread evenly; time per image independently.
        energy_factor = _spread(runs_per_group, rng, 0.1)
        time_factor = _spread(runs_per_group, rng, 0.1)
        power_factor = energy_factor / time_factor
        plan += [
            _PlannedRun(arch, env, r, float(power_factor[r]), float(time_factor[r]))
            for r in range(runs_per_group)
        ]
    if planted:
        for i, role in enumerate(_PLANTED):
            arch, env = groups[i % len(groups)]
            repetition = sum(1 for p in plan if (p.arch, p.env) == (arch, env))
            plan.append(_PlannedRun(arch, env, repetition, role=role))
    order = rng.permutation(len(plan))
    started_at = 1.7e9
    sampling: list[tuple[int, int, float, float, float]] = []
    failed: list[tuple[int, float]] = []
    try:
        for position, k in enumerate(order):
            run = plan[int(k)]
            run_id, duration, n, dt, power, util = _import_synthetic(
                store, run, position, seed, samples_per_run, epochs, study, started_at, rng
            )
            sampling.append((run_id, n, dt, power, util))
            if run.role == "failed":
                failed.append((run_id, duration))
            started_at += duration + _PAUSE_S
        _write_samples(store.path, sampling)
        for run_id, duration in failed:
            store.finish_run(run_id, RunStatus.FAILED, duration_s=duration, exit_code=1)
    except BaseException:
        store.close()
        raise
    return store


def _import_synthetic(
    store: Store,
    run: _PlannedRun,
    position: int,
    seed: int,
    samples_per_run: int,
    epochs: int,
    study: str,
    started_at: float,
    rng: np.random.Generator,
) -> tuple[int, float, int, float, float, float]:
    """Write one run's row and phases; what its samples must be (id, duration, n, dt, W, %)."""
    arch = SYNTHETIC_ARCHITECTURES[run.arch]
    env = SYNTHETIC_ENVIRONMENTS[run.env]
    s_per_image = arch.s_per_image * env.time_factor * run.time_factor
    power = arch.gpu_power_w * env.power_factor * run.power_factor
    if run.role == "outlier":
        power *= _OUTLIER_FACTOR
    epoch_s = _TRAIN_SAMPLES * s_per_image
    phases = []
    finished = 2 if run.role == "failed" else epochs
    for i in range(finished):
        phases.append(
            Phase(
                PhaseKind.EPOCH,
                i,
                i * epoch_s,
                (i + 1) * epoch_s,
                samples=None if run.role == "empty" else _TRAIN_SAMPLES,
                metrics={"loss": round(1.0 / (i + 1), 4)},
            )
        )
    f1 = float(min(0.999, arch.f1 + env.f1_shift + 0.02 * (rng.random() - 0.5)))
    if run.role == "failed":
        phases.append(Phase(PhaseKind.EPOCH, finished, finished * epoch_s))
        duration = (finished + 0.5) * epoch_s
    else:
        test_start = epochs * epoch_s
        duration = test_start + _TEST_SAMPLES * s_per_image * _TEST_SPEEDUP
        metrics = {
            "accuracy": min(1.0, f1 + 0.02),
            "precision": min(1.0, f1 + 0.01),
            "recall": f1 - 0.01,
            "f1": f1,
            "roc_auc": min(1.0, f1 + 0.08),
            "average": "macro",
        }
        phases.append(Phase(PhaseKind.TEST, 0, test_start, duration, _TEST_SAMPLES, metrics))
    n = samples_per_run // 2
    if run.role == "slow_sampling":
        n = max(2, int(duration // (_SLOW_FACTOR * epoch_s)) + 1)
        dt = _SLOW_FACTOR * epoch_s
    else:
        dt = duration / (n - 1)
    tags = {
        "study": study,
        "study_key": f"arch={run.arch};environment={run.env};repetition={run.repetition}",
        "study_position": str(position),
        "repetition": str(run.repetition),
        "seed": str(seed * 100_000 + position),
        "workload": "joulecast.analysis.synthetic",
        "arch": run.arch,
        "dataset": "synthetic",
        "environment": run.env,
        "ram_gb": str(env.ram_gb),
        "batch_size": "32",
        "input_size": "128",
        "gflops": f"{arch.gflops:g}",
        "train_samples": str(_TRAIN_SAMPLES),
        "val_samples": str(_VAL_SAMPLES),
        "test_samples": str(_TEST_SAMPLES),
        "epochs": str(epochs),
        "gpu": env.gpu,
    }
    if run.role:
        tags["planted"] = run.role
    run_id = store.import_run(
        samples=pd.DataFrame(columns=list(SAMPLE_COLUMNS)),
        phases=phases,
        name=f"{run.arch}-{run.env}-{run.repetition}",
        tags=tags,
        hardware={"gpu_models": [env.gpu], "gpu_count": 1},
        origin="synthetic",
        started_at=started_at,
    )
    util = arch.gpu_util_pct * (1.1 if run.env == "local" else 1.0)
    return run_id, duration, n, dt, power, min(util, 99.0)


# Power wobbles by +/-4% (a triangle wave of 50 samples) and +/-1% (a hash of the sample).
_SAMPLES_SQL = """
INSERT INTO samples (run_id, t_s, device, power_w, energy_j, util_pct, mem_used_mib, temp_c,
                     source, measured)
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
SELECT p.run_id, seq.i * p.dt_s, d.device,
       d.share * p.power_w * (1.0
           + 0.04 * (2.0 * abs(((seq.i + p.run_id) % 50) / 25.0 - 1.0) - 1.0)
           + 0.02 * (((seq.i * 7919 + p.run_id * 104729) % 1000) / 1000.0 - 0.5)),
       NULL,
       CASE WHEN d.measured THEN
           p.util_pct + 4.0 * (((seq.i * 613 + p.run_id * 31) % 100) / 100.0 - 0.5) END,
       NULL, NULL, d.source, d.measured
FROM temp.synthetic_plan AS p CROSS JOIN seq CROSS JOIN temp.synthetic_devices AS d
WHERE seq.i < p.n
"""


def _write_samples(path: Path, sampling: list[tuple[int, int, float, float, float]]) -> None:
    """Generate every run's samples in SQLite and record each run's sampling interval."""
    if not sampling:
        return
    with closing(sqlite3.connect(path, timeout=60.0, isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute(
            "CREATE TEMP TABLE synthetic_plan (run_id INTEGER PRIMARY KEY, n INTEGER,"
            " dt_s REAL, power_w REAL, util_pct REAL)"
        )
        conn.execute(
            "CREATE TEMP TABLE synthetic_devices (device TEXT, share REAL, source TEXT,"
            " measured INTEGER)"
        )
        conn.executemany("INSERT INTO temp.synthetic_plan VALUES (?, ?, ?, ?, ?)", sampling)
        conn.executemany(
            "INSERT INTO temp.synthetic_devices VALUES (?, ?, ?, ?)",
            [("gpu:0", 1.0, "synthetic", 1), ("ram", _RAM_SHARE, "synthetic-model", 0)],
        )
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SAMPLES_SQL, (max(n for _, n, *_ in sampling),))
            for run_id, *_ in sampling:
                ledger.settle(conn, run_id)
            conn.execute(
                "UPDATE runs SET interval_s = (SELECT dt_s FROM temp.synthetic_plan AS p"
                " WHERE p.run_id = runs.id) WHERE id IN (SELECT run_id FROM temp.synthetic_plan)"
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
