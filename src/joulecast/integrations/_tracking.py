"""One logging interface for the experiment trackers: MLflow, Weights & Biases, TensorBoard.

What is logged, and under which key, is decided here once: :func:`epoch_points` (per epoch,
``step`` = the epoch's index), :func:`total_points` (the run's totals, with :data:`CO2E_KEY`
where ``$JOULECAST_INTENSITY`` or ``$JOULECAST_REGION`` names an intensity) and
:func:`run_tags`.
A key added to :data:`EPOCH_METRICS`, :data:`FORECAST_KEYS` or :data:`TOTAL_METRICS` reaches
every tracker. Each tracker's module only says how to open its run, write points and tags,
and close it (:class:`Tracker`); :func:`resolve_trackers` turns an integration's tracker
arguments (``mlflow=``...) into trackers.

No tracker is imported here.
"""

from __future__ import annotations

import abc
import importlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Union

from joulecast.inputs import quote
from joulecast.records import RunStatus

if TYPE_CHECKING:
    import pandas as pd

    from joulecast.carbon import Emissions
    from joulecast.energy import RunSummary
    from joulecast.integrations.mlflow import MlflowLogger
    from joulecast.integrations.tensorboard import TensorBoardLogger
    from joulecast.integrations.wandb import WandbLogger
    from joulecast.run import Run
    from joulecast.store import Store

log = logging.getLogger(__name__)

# What an integration's tracker argument takes: the tracker, True for a default one, or none.
MlflowArg = Union["MlflowLogger", bool, None]
WandbArg = Union["WandbLogger", bool, None]
TensorBoardArg = Union["TensorBoardLogger", bool, None]

# Key → column of the per-epoch table (RunSummary.epochs, Run.epoch_table).
EPOCH_METRICS = {
    "epoch_energy_j": "energy_j",
    "epoch_mean_power_w": "mean_power_w",
    "epoch_j_per_sample": "j_per_sample",
    "epoch_duration_s": "duration_s",
}
# The live forecast stored with an epoch (metrics["forecast"]), logged as forecast_<key>.
FORECAST_KEYS = ("total_j", "low_j", "high_j", "remaining_j")
# RunSummary attributes logged as the run's totals.
TOTAL_METRICS = (
    "energy_j",
    "energy_j_measured",
    "energy_j_modelled",
    "duration_s",
    "mean_power_w",
    "j_per_sample",
)
# The run's CO2e in g (joulecast.carbon), logged with the totals where an intensity is known;
# its intensity's source and the PUE go with the run's tags.
CO2E_KEY = "co2e_g"


@dataclass(frozen=True)
class Point:
    """One value to log: ``step`` is the epoch's index, or None for a run total."""

    key: str
    value: float
    step: int | None = None


def number(value: object) -> float | None:
    """``value`` as a finite float; None for None, text and NaN or infinite values."""
    if value is None:
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _points(values: Mapping[str, object], step: int | None) -> list[Point]:
    out = []
    for key, value in values.items():
        x = number(value)
        if x is not None:
            out.append(Point(key, x, step))
    return out


def epoch_points(epochs: pd.DataFrame) -> list[Point]:
    """The per-epoch points of a per-epoch table, epoch by epoch."""
    out: list[Point] = []
    for row in epochs.to_dict("records"):
        step = int(row["index"])
        out += _points({key: row.get(column) for key, column in EPOCH_METRICS.items()}, step)
        # A live forecast made after this epoch (Run.live_forecast), in its own keys.
        forecast = (row.get("metrics") or {}).get("forecast") or {}
        out += _points({f"forecast_{key}": forecast.get(key) for key in FORECAST_KEYS}, step)
    return out


def replayed(summary: RunSummary) -> list[str]:
    """The devices of a run replayed from a recorded trace (a dry run)."""
    return [d for d, total in summary.devices.items() if total.replayed]


def total_points(summary: RunSummary, emissions: Emissions | None = None) -> list[Point]:
    """The run's totals (``energy_j_replayed`` too for a run with replayed devices, and
    :data:`CO2E_KEY` where ``emissions`` are known)."""
    keys = (*TOTAL_METRICS, "energy_j_replayed") if replayed(summary) else TOTAL_METRICS
    values = {key: getattr(summary, key) for key in keys}
    if emissions is not None:
        values[CO2E_KEY] = emissions.co2e_g
    return _points(values, None)


def run_emissions(store: Store, summary: RunSummary) -> Emissions | None:
    """The CO2e of the run ``summary`` sums up, of the energy it holds (the ``energy_j``
    logged beside it, though a live run's store has grown since), under the intensity the
    environment names (``$JOULECAST_INTENSITY``, ``$JOULECAST_ELECTRICITY_MAPS``,
    ``$JOULECAST_REGION``, PUE 1.0); None without one, or with one that cannot be used (a
    warning says why: a tracker logs the rest of the run all the same)."""
    from joulecast.carbon import resolve_intensity
    from joulecast.carbon import run_emissions as emissions_of
    from joulecast.errors import InputError

    try:
        source = resolve_intensity()
        if source is None:
            return None
        return emissions_of(store, summary.run_id, source, energy_j=summary.energy_j)
    except InputError as exc:
        log.warning("no %s logged: %s", CO2E_KEY, exc)
    except Exception as exc:  # the CO2e never stops the training's logging
        log.warning("no %s logged: %s", CO2E_KEY, type(exc).__name__, exc_info=True)
    return None


def start_tags(run: Run) -> dict[str, str]:
    """The tags logged when logging starts: where the run is stored."""
    return {
        "joulecast.run_id": str(run.run_id),
        "joulecast.store": str(Path(run.store.path).resolve()),
    }


def run_tags(
    summary: RunSummary, store: Store, emissions: Emissions | None = None
) -> dict[str, str]:
    """The tags logged with the totals: where the run is stored, its status, replayed devices,
    and where the CO2e's intensity came from."""
    tags = {
        "joulecast.run_id": str(summary.run_id),
        "joulecast.store": str(Path(store.path).resolve()),
        "joulecast.status": summary.status,
    }
    devices = replayed(summary)
    if devices:
        tags["joulecast.replayed"] = ", ".join(devices)
    if emissions is not None:
        tags["joulecast.intensity_source"] = emissions.intensity_source
        tags["joulecast.intensity_g_per_kwh"] = f"{emissions.intensity_g_per_kwh:g}"
        tags["joulecast.pue"] = f"{emissions.pue:g}"
    return tags


class Tracker(abc.ABC):
    """An experiment tracker a run is logged to, live or after the fact.

    An integration calls :meth:`start` when training begins, :meth:`log_epoch` as each epoch
    ends and :meth:`finish` when training ends; :meth:`log_run` logs a stored run at once.
    A subclass says how to open the tracker's run (:meth:`_open_target`), write points and
    tags (:meth:`_log`) and close it (:meth:`_close`).

    Attributes:
        label: the tracker's name in messages.
        target: the tracker's run logged to (last): an id or a folder, once logging started.
    """

    label: ClassVar[str]

    def __init__(self) -> None:
        self.target: str | None = None
        self._open = False
        self._started_here = False

    @abc.abstractmethod
    def _open_target(self, name: str | None) -> tuple[str, bool]:
        """Pick or start the tracker's run for the joulecast run ``name``: its id, and
        whether it was started here (and is to be closed here)."""

    @abc.abstractmethod
    def _log(self, points: Sequence[Point], tags: Mapping[str, str]) -> None:
        """Write ``points`` and ``tags`` to the open run."""

    def _log_trace(self, store: Store, run_id: int) -> None:
        """Write the run's trace, where the tracker keeps files (nothing by default)."""
        return

    @abc.abstractmethod
    def _close(self, status: RunStatus) -> None:
        """End the open run with ``status``."""

    def _open_as(self, name: str | None) -> tuple[str, bool]:
        target, started = self._open_target(name)
        self.target = target
        return target, started

    def start(self, run: Run) -> str:
        """Pick (or start) the tracker's run for ``run``; returns its id."""
        if not self._open or self.target is None:
            target, self._started_here = self._open_as(run.store.run(run.run_id)["name"])
            self._open = True
            self._log([], start_tags(run))
            return target
        return self.target

    def log_epoch(self, run: Run, index: int) -> None:
        """Log epoch ``index`` of ``run`` (energy, mean power, J/sample, duration, forecast)."""
        self.start(run)
        points = epoch_points(run.epoch_table([index]))
        if points:
            self._log(points, {})

    def finish(
        self, run: Run, *, status: RunStatus | str = RunStatus.COMPLETED, end_run: bool = True
    ) -> None:
        """Log totals, tags and the trace; end the tracker's run if it was started here.

        ``end_run`` False keeps it open (more training on the same run is to come).
        """
        self.start(run)
        summary = run.summary()
        co2e = run_emissions(run.store, summary)
        self._log(total_points(summary, co2e), run_tags(summary, run.store, co2e))
        self._log_trace(run.store, run.run_id)
        if end_run and self._started_here:
            self._close(RunStatus(status))
            self._open = False
            self._started_here = False

    def log_run(self, store: Store | str | os.PathLike[str], run_id: int | str) -> str:
        """Log a stored joulecast run at once; returns the tracker's run id.

        Args:
            store: the joulecast store (a :class:`~joulecast.Store` or its path).
            run_id: the joulecast run: an id, a name, or ``"last"``.
        """
        from joulecast.energy import summarize
        from joulecast.store import Store

        opened = not isinstance(store, Store)
        st = Store(store) if not isinstance(store, Store) else store
        try:
            rid = st.resolve(run_id)
            summary = summarize(st, rid)
            co2e = run_emissions(st, summary)
            target, started = self._open_as(summary.name)
            try:
                self._log(
                    epoch_points(summary.epochs) + total_points(summary, co2e),
                    run_tags(summary, st, co2e),
                )
                self._log_trace(st, rid)
            except BaseException:
                if started:
                    self._close(RunStatus.FAILED)
                raise
            if started:
                self._close(RunStatus(summary.status))
            log.info("logged joulecast run %d to %s run %s", rid, self.label, target)
            return target
        finally:
            if opened:
                st.close()


# An integration's tracker argument → the module and class of the tracker that True stands for.
_TRACKERS = {
    "mlflow": ("joulecast.integrations.mlflow", "MlflowLogger"),
    "wandb": ("joulecast.integrations.wandb", "WandbLogger"),
    "tensorboard": ("joulecast.integrations.tensorboard", "TensorBoardLogger"),
}


def resolve_trackers(
    *, mlflow: MlflowArg = None, wandb: WandbArg = None, tensorboard: TensorBoardArg = None
) -> list[Tracker]:
    """The trackers an integration logs to: ``True`` → a default one, False or None → none.

    Raises:
        TypeError: an argument is neither a tracker of the :mod:`joulecast.integrations`
            modules nor a bool (it would otherwise fail only once training starts).
    """
    out: list[Tracker] = []
    for argument, value in (("mlflow", mlflow), ("wandb", wandb), ("tensorboard", tensorboard)):
        module, name = _TRACKERS[argument]
        if value is True:
            value = getattr(importlib.import_module(module), name)()
        if value is None or value is False:
            continue
        if not isinstance(value, Tracker):
            raise TypeError(f"{argument}= takes a {name}, True or False, not {quote(value)}")
        out.append(value)
    return out
