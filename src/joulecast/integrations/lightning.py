"""A PyTorch Lightning callback that measures ``trainer.fit()``, epoch by epoch.

::

    import lightning.pytorch as pl
    from joulecast.integrations.lightning import JoulecastCallback

    trainer = pl.Trainer(max_epochs=2, callbacks=[JoulecastCallback("mlp")])
    trainer.fit(model, loader)

Works with ``lightning.pytorch`` (preferred when installed) or ``pytorch_lightning``. The
callback opens a run when training starts (or joins the one ``joulecast measure`` opened, or
marks the ``run=`` it is given and then leaves stopping it to its owner), and stops it when
training ends, marked failed when the trainer stops on an exception.

An epoch ends where the next one starts (or training ends), so it includes its validation
and end-of-epoch work such as checkpoints; its metrics are ``trainer.callback_metrics`` at
that moment, as floats. Samples: the first dimension of the first tensor of each training
batch. With ``steps=True`` each batch is also marked as a step.

In multi-process training (DDP, FSDP; one or several nodes) the callback runs on every
process, as Lightning calls it: each node's local rank 0 samples its node, global rank 0 marks
the epochs, an epoch's samples are summed over the processes (a step's are its batch times
the processes), and the live forecast and energy budget use the job's energy (see
docs/distributed.md).
"""

from __future__ import annotations

import logging
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImportError(
            "joulecast.integrations.lightning needs PyTorch Lightning:"
            " pip install 'joulecast[lightning]'"
        ) from exc

from joulecast.forecast import EnergyBudget
from joulecast.integrations._common import (
    Session,
    StoreLike,
    batch_size,
    float_metrics,
    framework_job,
    next_step,
)
from joulecast.integrations._tracking import MlflowArg, TensorBoardArg, WandbArg
from joulecast.monitor import DEFAULT_INTERVAL_S
from joulecast.records import PhaseKind, RunStatus
from joulecast.run import Run

__all__ = ["JoulecastCallback"]

log = logging.getLogger(__name__)


class JoulecastCallback(pl.Callback):
    """Measure the energy of Lightning training, epoch by epoch (and optionally by step).

    Args:
        name: the run's name (when the callback opens the run).
        store: the store (a :class:`~joulecast.Store` or a path); default
            ``$JOULECAST_STORE`` or ``./joulecast.db``.
        interval_s: sampling interval of a run the callback opens.
        run: a run to mark instead of opening one; the callback never stops it.
        steps: also mark every training batch as a step.
        sync: wait for CUDA at each boundary (None: when CUDA is in use).
        mlflow: an :class:`~joulecast.integrations.mlflow.MlflowLogger`, or True for a
            default one: logs each epoch, and the totals when training ends.
        wandb: a :class:`~joulecast.integrations.wandb.WandbLogger`, or True for a
            default one: logs each epoch to W&B, and the totals when training ends.
        tensorboard: a :class:`~joulecast.integrations.tensorboard.TensorBoardLogger`, or
            True for a default one: logs each epoch to TensorBoard event files, and the
            totals when training ends.
        forecast: forecast the total energy after every epoch (True, or keyword arguments
            of :meth:`joulecast.Run.live_forecast`).
        budget: an :class:`~joulecast.EnergyBudget`: training stops at the start of the
            epoch after the one where it said stop; the reason is stored.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        store: StoreLike = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        run: Run | None = None,
        steps: bool = False,
        sync: bool | None = None,
        mlflow: MlflowArg = None,
        wandb: WandbArg = None,
        tensorboard: TensorBoardArg = None,
        forecast: bool | dict[str, Any] = False,
        budget: EnergyBudget | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.steps = steps
        self._session = Session(
            name,
            store=store,
            interval_s=interval_s,
            run=run,
            mlflow=mlflow,
            wandb=wandb,
            tensorboard=tensorboard,
            sync=sync,
            forecast=forecast,
            budget=budget,
        )
        self._measuring = False
        self._samples = 0
        self._step = -1

    @property
    def run(self) -> Run | None:
        """The run being marked (None before training starts)."""
        return self._session.run

    # -- lightning hooks -----------------------------------------------------------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if int(trainer.world_size) > 1:
            self._session.job = framework_job(
                rank=trainer.global_rank,
                local_rank=trainer.local_rank,
                world_size=trainer.world_size,
                node_rank=trainer.node_rank,
                nodes=trainer.num_nodes,
            )
        max_epochs = trainer.max_epochs if (trainer.max_epochs or 0) > 0 else None
        self._session.start(total_epochs=max_epochs)
        self._measuring = True

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._measuring:
            return
        self._close_epoch(trainer)
        if self._session.stop_requested:
            trainer.should_stop = True
            return
        self._samples = 0
        self._session.begin(PhaseKind.EPOCH, int(trainer.current_epoch))

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        run = self._session.run
        if self._measuring and self.steps and run is not None:
            self._step = self._session.begin(PhaseKind.STEP, next_step(run))

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._measuring:
            return
        n = batch_size(batch)
        if n is not None:
            self._samples += n
        if self.steps and self._session.open_step == self._step:
            self._session.end(PhaseKind.STEP, self._step, samples=n)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._measuring:
            return
        self._close_epoch(trainer)
        self._measuring = False
        self._session.finish(RunStatus.COMPLETED)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not self._measuring:
            return
        self._close_epoch(trainer, together=False)
        self._measuring = False
        if isinstance(exception, KeyboardInterrupt):
            self._session.finish(RunStatus.INTERRUPTED, signal="SIGINT")
        else:
            self._session.finish(RunStatus.FAILED)

    # -- helpers -------------------------------------------------------------------------------

    def _close_epoch(self, trainer: Any, *, together: bool = True) -> None:
        index = self._session.open_epoch
        if index is None:
            return
        self._session.end(
            PhaseKind.EPOCH,
            index,
            samples=self._samples or None,
            metrics=float_metrics(dict(trainer.callback_metrics)),
            together=together,
        )
