"""Log joulecast runs to Weights & Biases: per-epoch energy, power and forecast, run totals.

Two ways:

- live, a :class:`WandbLogger` given to an integration (``wandb=True`` or
  ``wandb=WandbLogger(...)``) logs each epoch as it ends and the totals when training ends;
- after the fact, ``WandbLogger().log_run(store, run_id)`` logs a stored run.

The keys are MLflow's (:mod:`joulecast.integrations.mlflow`): ``epoch_energy_j``,
``epoch_mean_power_w``, ``epoch_j_per_sample``, ``epoch_duration_s`` and, with a live
forecast, ``forecast_total_j``, ``forecast_low_j``, ``forecast_high_j`` and
``forecast_remaining_j``, each logged with ``epoch`` (the epoch's index) as its x-axis
(``define_metric``), so they never move the run's own step. The totals (``energy_j``,
``energy_j_measured``, ``energy_j_modelled``, ``duration_s``, ``mean_power_w``,
``j_per_sample``, ``energy_j_replayed`` for a dry run, ``co2e_g`` where the environment names
an intensity) go to the run's summary; the tags (``joulecast.run_id``, ``joulecast.store``,
``joulecast.status``, ``joulecast.replayed``, and with ``co2e_g`` ``joulecast.intensity_source``,
``joulecast.intensity_g_per_kwh`` and ``joulecast.pue``) to its config.

The W&B run is the one given, else the active one (``wandb.init()`` before training), else a
new one named after the joulecast run (with the keyword arguments given to the logger,
passed to ``wandb.init``), finished when logging ends. W&B's own settings apply: offline
with ``WANDB_MODE=offline`` (or ``mode="offline"``), then ``wandb sync``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

try:
    import wandb
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "joulecast.integrations.wandb needs Weights & Biases: pip install 'joulecast[wandb]'"
    ) from exc

from joulecast.integrations._tracking import Point, Tracker
from joulecast.records import RunStatus

__all__ = ["EPOCH_AXIS", "WandbLogger"]

# The x-axis of the per-epoch keys: W&B's own step counts the run's log calls, which the
# training (or Lightning's and the Trainer's W&B loggers) may own.
EPOCH_AXIS = "epoch"


class WandbLogger(Tracker):
    """Logs a run to Weights & Biases while it trains; give it to an integration as ``wandb=``.

    Each epoch is logged when it ends (from the readings stored by then: at most one sampling
    interval short of its end); the totals and tags when training ends. Under
    ``joulecast measure`` the totals are those at the end of training: call :meth:`log_run`
    afterwards for the whole run.

    Args:
        run: the W&B run to log to; default the active one (``wandb.run``), else a new one
            started at the beginning of training and finished at its end.
        **init: keyword arguments of ``wandb.init`` for a run started here (``project``,
            ``mode="offline"``, ``dir``...).

    Attributes:
        wandb_run: the W&B run logged to (last), once logging started.
    """

    label = "W&B"

    def __init__(self, run: Any = None, **init: Any) -> None:
        super().__init__()
        self.run = run
        self.init = init
        self.wandb_run: Any = None
        self._axes: set[str] = set()

    def _open_target(self, name: str | None) -> tuple[str, bool]:
        found = self.run if self.run is not None else wandb.run
        started = found is None
        if found is None:
            found = wandb.init(**{"name": name, **self.init})
        self.wandb_run = found
        self._axes = set()
        return str(found.id), started

    def _log(self, points: Sequence[Point], tags: Mapping[str, str]) -> None:
        run = self.wandb_run
        epochs: dict[int, dict[str, float]] = {}
        totals: dict[str, float] = {}
        for p in points:
            (totals if p.step is None else epochs.setdefault(p.step, {}))[p.key] = p.value
        for step in sorted(epochs):
            for key in epochs[step].keys() - self._axes:
                run.define_metric(key, step_metric=EPOCH_AXIS)
                self._axes.add(key)
            run.log({EPOCH_AXIS: step, **epochs[step]})
        if totals:
            run.summary.update(totals)
        if tags:
            run.config.update(dict(tags), allow_val_change=True)

    def _close(self, status: RunStatus) -> None:
        # W&B marks a run with a non-zero exit code failed.
        failed = status in (RunStatus.FAILED, RunStatus.INTERRUPTED)
        self.wandb_run.finish(exit_code=1 if failed else 0)
