"""Energy of a planned training, before it starts: the offline estimators beside the baselines.

For one configuration (GPU, RAM, model GFLOPs, dataset sizes, batch and input size, planned
epochs or duration) :func:`estimate` returns one :class:`Estimate` per method:

- ``offline-epoch-energy``: predicted mean epoch energy x planned epochs;
- ``offline-power``: predicted average GPU power x the planned duration;
- ``mlco2``: TDP x duration (the ML CO2 Impact calculator);
- ``green-algorithms``: duration x (TDP x GPU usage + RAM GB x 0.3725 W) x PUE x PSF.

Every figure is modelled, and says so. Without a planned duration, the baselines use the
duration implied by the offline models (epochs x predicted epoch energy / predicted power),
and say that too. With a carbon intensity (:mod:`joulecast.carbon`: a value or a country of the
shipped table), each figure also has its grams of CO2e: energy x PUE x intensity, where
Green Algorithms' energy already holds its PUE. The offline estimates carry an interval that
widens with the distance of the configuration from the model's training data, and warnings
where it lies outside that data (:mod:`joulecast.offline.domain`). :func:`estimate_table` does
the same for every row of a run table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from joulecast.carbon import Intensity, check_pue, resolve_intensity
from joulecast.energy import J_PER_KWH
from joulecast.errors import InputError
from joulecast.inputs import finite
from joulecast.offline.baselines import carbon_g, green_algorithms_energy_j, mlco2_energy_j
from joulecast.offline.bounds import COLUMN_MAX
from joulecast.offline.domain import UNCALIBRATED, Applicability

METHODS = ("offline-epoch-energy", "offline-power", "mlco2", "green-algorithms")


@dataclass(frozen=True)
class Estimate:
    """One method's estimate of a planned training's energy.

    ``energy_j`` is None when the method lacks an input (``note`` says which); ``basis`` says
    how the figure was made. ``low_j`` and ``high_j`` bound an offline estimate by its model's
    calibrated interval (None for the baselines, and where the model has none).
    """

    method: str
    energy_j: float | None
    basis: str
    note: str = ""
    gco2e: float | None = None
    low_j: float | None = None
    high_j: float | None = None

    @property
    def kwh(self) -> float | None:
        """The energy in kWh."""
        return None if self.energy_j is None else self.energy_j / J_PER_KWH

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "method": self.method,
            "energy_j": self.energy_j,
            "kwh": self.kwh,
            "gco2e": self.gco2e,
            "source": "modelled",
            "basis": self.basis,
            "note": self.note,
            "low_j": self.low_j,
            "high_j": self.high_j,
        }


@dataclass(frozen=True)
class Result:
    """The estimates of one configuration, the predictions behind them, and any warnings.

    ``applicability`` says where the configuration lies from the model's training data; the
    ``*_low_*`` and ``*_high_*`` properties bound the predictions by the model's interval.
    """

    estimates: list[Estimate]
    avg_power_w: float | None
    epoch_energy_j: float | None
    duration_s: float | None
    duration_estimated: bool
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    applicability: Applicability | None = None
    intensity: Intensity | None = None
    pue: float = 1.0

    def _carbon(self) -> dict[str, Any]:
        """Where each ``gco2e`` came from: the intensity, its source and the PUE."""
        given = self.intensity
        return {
            "intensity_g_per_kwh": None if given is None else given.g_per_kwh,
            "intensity_source": None if given is None else given.source,
            "pue": self.pue,
        }

    def _bound(self, target: str, value: float | None, side: int) -> float | None:
        if value is None or self.applicability is None:
            return None
        interval = self.applicability.intervals.get(target)
        return None if interval is None else interval[side]

    @property
    def avg_power_low_w(self) -> float | None:
        """The low end of the average power's interval, in W."""
        return self._bound("avg_power_w", self.avg_power_w, 0)

    @property
    def avg_power_high_w(self) -> float | None:
        """The high end of the average power's interval, in W."""
        return self._bound("avg_power_w", self.avg_power_w, 1)

    @property
    def epoch_energy_low_j(self) -> float | None:
        """The low end of the epoch energy's interval, in J."""
        return self._bound("epoch_energy_j", self.epoch_energy_j, 0)

    @property
    def epoch_energy_high_j(self) -> float | None:
        """The high end of the epoch energy's interval, in J."""
        return self._bound("epoch_energy_j", self.epoch_energy_j, 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "estimates": [e.to_dict() for e in self.estimates],
            "avg_power_w": self.avg_power_w,
            "epoch_energy_j": self.epoch_energy_j,
            "duration_s": self.duration_s,
            "duration_estimated": self.duration_estimated,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            **self._carbon(),
            **self._bounds(),
            "applicability": None if self.applicability is None else self.applicability.to_dict(),
        }

    def _bounds(self) -> dict[str, float | None]:
        return {
            "avg_power_low_w": self.avg_power_low_w,
            "avg_power_high_w": self.avg_power_high_w,
            "epoch_energy_low_j": self.epoch_energy_low_j,
            "epoch_energy_high_j": self.epoch_energy_high_j,
        }

    def rows(self) -> list[dict[str, Any]]:
        """The rows ``joulecast estimate --json`` prints: each estimate's :meth:`Estimate.to_dict`
        with the configuration's ``warnings`` and where its ``gco2e`` came from (the same on
        every row)."""
        return [
            {**e.to_dict(), "warnings": list(self.warnings), **self._carbon()}
            for e in self.estimates
        ]


def _number(row: Mapping[str, Any], key: str) -> float | None:
    """The value of ``key`` above 0 and within its bound, or None where missing (None, NaN)."""
    value = row.get(key)
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return finite(value, key, lo=0.0, hi=COLUMN_MAX[key], above=True)


def estimate(
    config: Mapping[str, Any],
    estimator: Any,
    *,
    pue: float = 1.0,
    psf: float = 1.0,
    intensity: Intensity | None = None,
) -> Result:
    """Estimates of every method for one configuration.

    ``config`` holds the run-table features (``gpu_*`` columns already resolved) and optionally
    ``epochs``, ``duration_s`` and ``gpu_util_pct`` (Green Algorithms' usage; 100 when absent).
    ``estimator`` is an :class:`~joulecast.offline.models.OfflineEstimator`. With a fixed
    ``intensity``, every figure gets its ``gco2e`` (``pue`` applied to all but Green
    Algorithms, whose energy holds it).

    Raises:
        InputError: a bad value in ``config``, ``pue`` out of range, or an hourly
            ``intensity`` (a planned training has no time of day).
    """
    pue = check_pue(pue)
    if intensity is not None and intensity.g_per_kwh is None:
        raise InputError(
            f"{intensity.source}: an hourly intensity needs a run's times; give a planned"
            " training one value (intensity) or a region"
        )
    (domain,) = estimator.applicability(pd.DataFrame([dict(config)]))
    predicted = domain.predictions
    warnings = list(domain.warnings)
    power = float(predicted["avg_power_w"]) if "avg_power_w" in predicted else None
    epoch_j = float(predicted["epoch_energy_j"]) if "epoch_energy_j" in predicted else None
    for name, value in (("average power", power), ("epoch energy", epoch_j)):
        if value is not None and value <= 0:
            warnings.append(f"the model predicts a non-positive {name} ({value:.4g}): not usable")
    power = power if power is not None and power > 0 else None
    epoch_j = epoch_j if epoch_j is not None and epoch_j > 0 else None
    epochs = _number(config, "epochs")
    duration = _number(config, "duration_s")
    util_pct = _number(config, "gpu_util_pct")
    tdp = float(config["gpu_tdp_w"])
    ram = float(config["ram_gb"])

    estimated = False
    if duration is None and epochs is not None and power and epoch_j:
        duration = epochs * epoch_j / power
        estimated = True
    how_long = (
        f"{_hours(duration)} (estimated: epochs x epoch energy / power)"
        if estimated
        else _hours(duration)
    )
    results = []
    if epoch_j is not None and epochs is not None:
        low, high = _scaled(domain.intervals.get("epoch_energy_j"), epochs)
        results.append(
            Estimate(
                "offline-epoch-energy",
                epoch_j * epochs,
                f"{epoch_j / 1e3:,.3f} kJ per epoch (regression) x {epochs:g} epochs",
                low_j=low,
                high_j=high,
            )
        )
    else:
        results.append(
            Estimate("offline-epoch-energy", None, "", "needs the planned epochs (--epochs)")
        )
    if power is not None and duration is not None and not estimated:
        low, high = _scaled(domain.intervals.get("avg_power_w"), duration)
        results.append(
            Estimate(
                "offline-power",
                power * duration,
                f"{power:.1f} W (regression) x {how_long}",
                low_j=low,
                high_j=high,
            )
        )
    else:
        results.append(
            Estimate("offline-power", None, "", "needs the planned duration (--duration)")
        )
    if duration is not None:
        results.append(
            Estimate("mlco2", mlco2_energy_j(tdp, duration), f"TDP {tdp:g} W x {how_long}")
        )
        util = (util_pct if util_pct is not None else 100.0) / 100.0
        results.append(
            Estimate(
                "green-algorithms",
                green_algorithms_energy_j(
                    tdp, duration, gpu_util=util, ram_gb=ram, pue=pue, psf=psf
                ),
                f"{how_long} x (TDP {tdp:g} W x usage {100 * util:g}% + {ram:g} GB x 0.3725 W)"
                f" x PUE {pue:g} x PSF {psf:g}",
                "" if util_pct is not None else "GPU usage assumed 100% (give --gpu-util)",
            )
        )
    else:
        for method in ("mlco2", "green-algorithms"):
            results.append(Estimate(method, None, "", "needs the planned duration or epochs"))
    if intensity is not None and intensity.g_per_kwh is not None:
        g = intensity.g_per_kwh
        results = [
            replace(e, gco2e=None if e.energy_j is None else carbon_g(e.energy_j * _pue(e, pue), g))
            for e in results
        ]
    notes = [] if domain.calibrated else [UNCALIBRATED]
    return Result(
        results, power, epoch_j, duration, estimated, warnings, notes, domain, intensity, pue
    )


def _pue(e: Estimate, pue: float) -> float:
    """The PUE to apply to ``e``'s energy for its CO2e: 1 where the energy already holds it."""
    return 1.0 if e.method == "green-algorithms" else pue


def _scaled(
    interval: tuple[float, float] | None, factor: float
) -> tuple[float | None, float | None]:
    """An :class:`Estimate`'s ``low_j`` and ``high_j``: a prediction's interval times
    ``factor`` (epochs or seconds)."""
    if interval is None:
        return None, None
    return interval[0] * factor, interval[1] * factor


def estimate_table(
    table: pd.DataFrame,
    estimator: Any,
    *,
    pue: float = 1.0,
    psf: float = 1.0,
    intensity: Intensity | None = None,
) -> list[dict[str, Any]]:
    """One JSON-ready object per row of ``table``, in order.

    Each has ``avg_power_w`` and ``epoch_energy_j``; with ``epochs`` or ``duration_s`` in the
    row, ``energy_j``: the offline power estimate where the duration is given, else the
    epoch-energy one (``energy_method`` says which), and each method's figure by name; with an
    ``intensity``, ``gco2e`` of that figure and where it came from.
    """
    out = []
    for pos, (_, row) in enumerate(table.iterrows()):
        try:
            result = estimate(
                row.to_dict(),
                estimator,
                pue=pue,
                psf=psf,
                intensity=intensity,
            )
        except InputError as exc:
            raise InputError(f"row {pos + 1}: {exc}") from exc
        item: dict[str, Any] = {
            "row": pos + 1,
            "avg_power_w": result.avg_power_w,
            "epoch_energy_j": result.epoch_energy_j,
            "duration_s": result.duration_s,
            "duration_estimated": result.duration_estimated,
        }
        by_method = {e.method: e for e in result.estimates}
        for e in result.estimates:
            item[f"{e.method.replace('-', '_')}_j"] = e.energy_j
        best = next(
            (
                by_method[m]
                for m in ("offline-power", "offline-epoch-energy")
                if by_method[m].energy_j is not None
            ),
            None,
        )
        if best is not None:
            item["energy_j"] = best.energy_j
            item["energy_method"] = best.method
            if best.gco2e is not None:
                item["gco2e"] = best.gco2e
                item.update(result._carbon())
            item["low_j"] = best.low_j
            item["high_j"] = best.high_j
        item["warnings"] = result.warnings
        item.update(result._bounds())
        domain = result.applicability
        assert domain is not None  # estimate() always says where the row lies
        item["distance"] = domain.distance
        item["unseen"] = [list(pair) for pair in domain.unseen]
        item["band_calibrated"] = domain.calibrated
        out.append(item)
    return out


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds >= 3600:
        return f"{seconds / 3600:,.2f} h"
    return f"{seconds / 60:,.1f} min"


def configuration(
    *,
    gpu: str,
    batch_size: int,
    train_samples: int,
    val_samples: int,
    arch: str | None = None,
    gflops: float | None = None,
    input_size: int | None = None,
    input_height: int | None = None,
    input_width: int | None = None,
    ram_gb: float | None = None,
    epochs: int | None = None,
    duration_s: float | None = None,
    gpu_util_pct: float | None = None,
    gpus_file: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The run-table row of a planned training, and notes on what was looked up or assumed.

    The GPU is looked up in the catalogue (plus ``gpus_file``); GFLOPs come from ``gflops`` or
    the shipped table of the built-in ``arch``; RAM defaults to this machine's.
    """
    height = input_height or input_size
    width = input_width or input_size
    missing = [
        name
        for name, value in (
            ("gpu", gpu),
            ("batch_size", batch_size),
            ("train_samples", train_samples),
            ("val_samples", val_samples),
            ("arch or gflops", arch or gflops),
            ("input_size (or input_height and input_width)", height and width),
        )
        if not value
    ]
    if missing:
        raise InputError(f"estimate: missing {', '.join(missing)}")
    from joulecast.offline.catalogue import Catalogue

    spec = Catalogue.load(gpus_file).lookup(gpu)
    notes = [
        f"GPU: {spec.name} ({spec.cuda_cores} CUDA cores, {spec.memory_gb:g} GB, "
        f"TDP {spec.tdp_w:g} W)"
    ]
    if gflops is None:
        from joulecast.offline.flops import known_gflops

        assert arch is not None
        gflops, how = known_gflops(arch, int(height), int(width))  # type: ignore[arg-type]
        notes.append(f"{arch}: {gflops:.4g} GFLOPs ({how})")
    if ram_gb is None:
        import psutil

        ram_gb = round(psutil.virtual_memory().total / 1e9, 1)
        notes.append(f"RAM: this machine's {ram_gb:g} GB (give the training machine's)")
    config = {
        "gpu": spec.name,
        "gpu_cuda_cores": spec.cuda_cores,
        "gpu_memory_gb": spec.memory_gb,
        "gpu_tdp_w": spec.tdp_w,
        "ram_gb": ram_gb,
        "gflops": gflops,
        "train_samples": train_samples,
        "val_samples": val_samples,
        "batch_size": batch_size,
        "input_height": height,
        "input_width": width,
        "epochs": epochs,
        "duration_s": duration_s,
        "gpu_util_pct": gpu_util_pct,
    }
    for key in ("ram_gb", "gflops", "batch_size", "train_samples", "val_samples", "epochs"):
        _number(config, key)
    return config, notes


def estimate_training(
    *,
    gpu: str,
    batch_size: int,
    train_samples: int,
    val_samples: int,
    arch: str | None = None,
    gflops: float | None = None,
    input_size: int | None = None,
    input_height: int | None = None,
    input_width: int | None = None,
    ram_gb: float | None = None,
    epochs: int | None = None,
    duration_s: float | None = None,
    gpu_util_pct: float | None = None,
    gpus_file: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | None = None,
    pue: float = 1.0,
    psf: float = 1.0,
    intensity: float | Intensity | None = None,
    region: str | None = None,
) -> Result:
    """Estimate a planned training's energy by every method, before it starts.

    >>> r = estimate_training(gpu="RTX 3090", arch="resnet50", input_size=128, batch_size=64,
    ...                       train_samples=12000, val_samples=8580, epochs=50, ram_gb=16)
    >>> [e.method for e in r.estimates]
    ['offline-epoch-energy', 'offline-power', 'mlco2', 'green-algorithms']

    ``model`` is a file saved by ``fit-offline`` (default: the shipped estimator).
    ``intensity`` (gCO2e/kWh) or ``region`` (a country of the shipped table, ``"FRA"``) adds
    each figure's CO2e at ``pue``; the environment is not read.
    """
    from joulecast.offline.models import OfflineEstimator, default_estimator

    config, notes = configuration(
        gpu=gpu,
        batch_size=batch_size,
        train_samples=train_samples,
        val_samples=val_samples,
        arch=arch,
        gflops=gflops,
        input_size=input_size,
        input_height=input_height,
        input_width=input_width,
        ram_gb=ram_gb,
        epochs=epochs,
        duration_s=duration_s,
        gpu_util_pct=gpu_util_pct,
        gpus_file=gpus_file,
    )
    estimator = OfflineEstimator.load(Path(model)) if model else default_estimator()
    if not isinstance(intensity, Intensity):
        intensity = resolve_intensity(intensity, None, region, env={})
    result = estimate(config, estimator, pue=pue, psf=psf, intensity=intensity)
    return replace(result, notes=notes + result.notes)
