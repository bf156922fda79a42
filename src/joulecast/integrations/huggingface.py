"""A Hugging Face ``transformers`` TrainerCallback that measures ``Trainer.train()``.

::

    from joulecast.integrations.huggingface import JoulecastTrainerCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[JoulecastTrainerCallback("bert-tiny")])
    trainer.train()

The callback opens a run when training begins (or joins the one ``joulecast measure``
opened, or marks the ``run=`` it is given and then leaves stopping it to its owner), and stops
it when training ends. An epoch ends where the next one begins (or training ends), so it
includes the evaluation, logging and checkpoint the Trainer runs after it; its metrics are the
last value of each number the Trainer logged during it (``loss``, ``learning_rate``,
``grad_norm``, ``eval_*``...).

Samples per epoch: ``samples_per_epoch`` when given; else optimizer steps x batch size x
processes x gradient accumulation, capped at the training set's length when it has one (the
job's figure, from the main process). In multi-process training the callback runs on every
process: each node's local rank 0 samples its node, the main process marks the epochs, and the
live forecast and energy budget use the job's energy (see docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sized
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "joulecast.integrations.huggingface needs transformers:"
        " pip install 'joulecast[huggingface]'"
    ) from exc

from joulecast.forecast import EnergyBudget
from joulecast.integrations._common import (
    Session,
    StoreLike,
    float_metrics,
    framework_job,
)
from joulecast.integrations._tracking import MlflowArg, TensorBoardArg, WandbArg
from joulecast.monitor import DEFAULT_INTERVAL_S
from joulecast.records import PhaseKind, RunStatus
from joulecast.run import Run

__all__ = ["JoulecastTrainerCallback"]

log = logging.getLogger(__name__)

# Keys of the Trainer's closing summary log: about the whole training, not an epoch.
_SUMMARY_KEYS = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second"})


class JoulecastTrainerCallback(TrainerCallback):
    """Measure the energy of ``Trainer.train()``, epoch by epoch.

    Args:
        name: the run's name (when the callback opens the run).
        store: the store (a :class:`~joulecast.Store` or a path); default
            ``$JOULECAST_STORE`` or ``./joulecast.db``.
        interval_s: sampling interval of a run the callback opens.
        run: a run to mark instead of opening one; the callback never stops it.
        samples_per_epoch: samples each epoch processes, when known.
        sync: wait for CUDA at each epoch boundary (None: when CUDA is in use).
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
        samples_per_epoch: int | None = None,
        sync: bool | None = None,
        mlflow: MlflowArg = None,
        wandb: WandbArg = None,
        tensorboard: TensorBoardArg = None,
        forecast: bool | dict[str, Any] = False,
        budget: EnergyBudget | None = None,
    ) -> None:
        self.name = name
        self.samples_per_epoch = samples_per_epoch
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
        self._steps = 0
        self._metrics: dict[str, float | None] = {}

    @property
    def run(self) -> Run | None:
        """The run being marked (None before training begins)."""
        return self._session.run

    # -- trainer events ------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if int(args.world_size) > 1:
            self._session.job = framework_job(
                rank=args.process_index,
                local_rank=args.local_process_index,
                world_size=args.world_size,
            )
        self._session.start(total_epochs=math.ceil(args.num_train_epochs or 0) or None)
        self._measuring = True

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._measuring:
            return
        self._close_epoch(args, state, kwargs)
        if self._session.stop_requested:
            control.should_training_stop = True
            return
        self._steps = 0
        self._metrics = {}
        # state.epoch is fractional (epoch + step / steps_in_epoch) and exact at boundaries.
        index = math.floor((state.epoch or 0.0) + 1e-6)
        self._session.begin(PhaseKind.EPOCH, index)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._steps += 1

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._measuring or self._session.open_epoch is None or not logs:
            return
        if _SUMMARY_KEYS & logs.keys():
            return
        self._metrics.update(float_metrics(logs))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._measuring:
            return
        self._close_epoch(args, state, kwargs)
        self._measuring = False
        self._session.finish(RunStatus.COMPLETED)

    # -- helpers -------------------------------------------------------------------------------

    def _close_epoch(self, args: Any, state: Any, kwargs: dict[str, Any]) -> None:
        index = self._session.open_epoch
        if index is None:
            return
        self._session.end(
            PhaseKind.EPOCH,
            index,
            samples=self._samples(args, state, kwargs.get("train_dataloader")),
            metrics=self._metrics,
        )

    def _samples(self, args: Any, state: Any, loader: Any) -> int | None:
        # The job's samples (the global batch per step), given by rank 0 alone: summed over
        # the processes at the epoch's end, the others' count nothing.
        if not state.is_world_process_zero:
            return None
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        if not self._steps:
            return None
        per_step = state.train_batch_size or args.train_batch_size
        samples = (
            self._steps
            * int(per_step)
            * max(int(args.world_size), 1)
            * max(int(args.gradient_accumulation_steps), 1)
        )
        dataset = getattr(loader, "dataset", None)
        if isinstance(dataset, Sized):
            with contextlib.suppress(TypeError):  # an iterable dataset without a length
                samples = min(samples, len(dataset))
        return samples
