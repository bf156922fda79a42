"""A Keras 3 callback that measures ``fit()``, on any backend (TensorFlow is never imported here).

::

    from joulecast.integrations.keras import JoulecastCallback

    model.fit(x, y, batch_size=32, epochs=2,
              callbacks=[JoulecastCallback("mlp", batch_size=32)])

The callback opens a run when training begins (or joins the one ``joulecast measure``
opened), marks each epoch with its sample count and its ``logs`` (loss, metrics, validation
metrics) as floats, and stops the run when training ends. Given ``run=``, it marks that run
and leaves stopping it to its owner: several ``fit()`` calls (a frozen step, then fine-tuning
with ``initial_epoch``) then land in one run, numbered by Keras's epoch index.

Samples per epoch: ``samples_per_epoch`` when given; else the epoch's steps (from Keras) times
``batch_size``; else None. Steps times batch size counts the last, partial batch as full:
pass ``samples_per_epoch`` for an exact figure.
"""

from __future__ import annotations

import logging
import os
from typing import Any

try:
    import keras
except ImportError as exc:  # pragma: no cover - depends on the environment
    if "tensorflow" in str(exc) and os.environ.get("KERAS_BACKEND", "") != "tensorflow":
        raise ImportError(
            "Keras is set to the TensorFlow backend, which is not installed: set"
            " KERAS_BACKEND=torch (or jax) before importing keras, or pip install tensorflow"
        ) from exc
    raise ImportError(
        "joulecast.integrations.keras needs Keras 3: pip install 'joulecast[keras]'"
    ) from exc

from joulecast.forecast import EnergyBudget
from joulecast.integrations._common import Session, StoreLike, float_metrics
from joulecast.integrations._tracking import MlflowArg, TensorBoardArg, WandbArg
from joulecast.monitor import DEFAULT_INTERVAL_S
from joulecast.records import PhaseKind, RunStatus
from joulecast.run import Run

__all__ = ["JoulecastCallback"]

log = logging.getLogger(__name__)


class JoulecastCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Measure the energy of ``model.fit()``, epoch by epoch.

    Args:
        name: the run's name (when the callback opens the run).
        store: the store (a :class:`~joulecast.Store` or a path); default
            ``$JOULECAST_STORE`` or ``./joulecast.db``.
        interval_s: sampling interval of a run the callback opens.
        samples_per_epoch: samples each epoch processes.
        batch_size: the ``batch_size`` given to ``fit()``: samples = steps x batch size.
        run: a run to mark instead of opening one; the callback never stops it.
        mlflow: an :class:`~joulecast.integrations.mlflow.MlflowLogger`, or True for a
            default one: logs each epoch, and the totals when training ends.
        wandb: a :class:`~joulecast.integrations.wandb.WandbLogger`, or True for a
            default one: logs each epoch to W&B, and the totals when training ends.
        tensorboard: a :class:`~joulecast.integrations.tensorboard.TensorBoardLogger`, or
            True for a default one: logs each epoch to TensorBoard event files, and the
            totals when training ends.
        forecast: forecast the total energy after every epoch of ``fit()`` (True, or keyword
            arguments of :meth:`joulecast.Run.live_forecast`).
        budget: an :class:`~joulecast.EnergyBudget`: stop ``fit()`` (``model.stop_training``)
            once it says so; the reason is stored with the epoch and in the run's tags.

    Attributes:
        run: the run being marked (None before training begins).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        store: StoreLike = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        samples_per_epoch: int | None = None,
        batch_size: int | None = None,
        run: Run | None = None,
        mlflow: MlflowArg = None,
        wandb: WandbArg = None,
        tensorboard: TensorBoardArg = None,
        forecast: bool | dict[str, Any] = False,
        budget: EnergyBudget | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self._session = Session(
            name,
            store=store,
            interval_s=interval_s,
            run=run,
            mlflow=mlflow,
            wandb=wandb,
            tensorboard=tensorboard,
            forecast=forecast,
            budget=budget,
        )
        self._batches = 0
        self._counted = 0

    @property
    def run(self) -> Run | None:
        """The run being marked (None before training begins)."""
        return self._session.run

    # -- keras hooks ---------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        session = self._session
        if session.owns_run and session.run is not None and session.run.active:
            # The previous fit() never reached on_train_end: it raised.
            log.warning(
                "run %d: the previous fit() did not end; marking it failed", session.run.run_id
            )
            session.finish(RunStatus.FAILED)
        session.start(total_epochs=(self.params or {}).get("epochs"))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches = 0
        self._counted = 0
        self._session.begin(PhaseKind.EPOCH, epoch)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches += 1
        size = (logs or {}).get("size")  # Keras 2 put the batch size in the logs
        if isinstance(size, (int, float)) and size > 0:
            self._counted += int(size)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        index = self._session.open_epoch
        if index is None:
            return
        self._session.end(
            PhaseKind.EPOCH, index, samples=self._samples(), metrics=float_metrics(logs)
        )
        if self._session.stop_requested and self.model is not None:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        session = self._session
        if session.open_epoch is not None:  # an epoch that never ended
            session.end(PhaseKind.EPOCH, session.open_epoch)
        session.finish(RunStatus.COMPLETED)

    # -- samples -------------------------------------------------------------------------------

    def _samples(self) -> int | None:
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        steps = (self.params or {}).get("steps")
        if self.batch_size is not None:
            if isinstance(steps, int) and steps > 0:
                return steps * self.batch_size
            if self._batches:
                return self._batches * self.batch_size
        return self._counted or None
