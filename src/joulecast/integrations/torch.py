"""Epochs and steps for hand-written PyTorch training loops.

::

    import joulecast
    from joulecast.integrations.torch import epochs

    with joulecast.measure(name="mlp") as run:
        for epoch in epochs(run, 2):
            for x, y in epoch.steps(loader):     # a step per batch; counts the samples
                loss = train_step(x, y)
            epoch.log(loss=loss)                  # tensors become floats

:func:`epochs` marks each epoch from the moment it is handed out to the moment the loop asks
for the next one; :func:`steps` (or :meth:`Epoch.steps`) marks each batch's loop body as a step
with its batch size (the first dimension of the batch's first tensor) and adds it to the
epoch's sample count. Where CUDA is in use, each boundary waits for the GPU
(``torch.cuda.synchronize``) so queued kernels are counted in the phase that launched them;
``sync=False`` turns that off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

try:
    import torch  # noqa: F401  (the helpers serve torch loops; sync_device finds it imported)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "joulecast.integrations.torch needs PyTorch: pip install 'joulecast[torch]'"
    ) from exc

from joulecast.integrations._common import (
    Session,
    batch_size,
    float_metrics,
    next_step,
)
from joulecast.integrations._tracking import MlflowArg, TensorBoardArg, WandbArg
from joulecast.records import PhaseKind, RunStatus
from joulecast.run import Run

__all__ = ["Epoch", "batch_size", "epochs", "steps"]

log = logging.getLogger(__name__)

B = TypeVar("B")


class Epoch:
    """One epoch handed out by :func:`epochs`: its index, sample count and metrics.

    Attributes:
        index: the epoch's index in the run.
        samples: samples this epoch processes when set (``samples_per_epoch`` or by hand);
            None counts the batches passed through :meth:`steps`.
        counted_samples: samples counted from the batches so far.
        metrics: stored with the epoch when it ends (numbers as floats).
    """

    def __init__(
        self, run: Run, index: int, samples: int | None = None, *, sync: bool | None = None
    ) -> None:
        self.run = run
        self.index = index
        self.samples = samples
        self.counted_samples = 0
        self.metrics: dict[str, Any] = {}
        self._sync = sync

    @property
    def samples_processed(self) -> int | None:
        """``samples`` if set, else the count from the batches (None if nothing was counted)."""
        if self.samples is not None:
            return self.samples
        return self.counted_samples or None

    def log(self, **metrics: Any) -> None:
        """Attach metrics (numbers, 0-d tensors, text) to this epoch; later values win."""
        self.metrics.update(metrics)

    def steps(
        self,
        batches: Iterable[B],
        *,
        mark: bool = True,
        count: Callable[[Any], int | None] = batch_size,
    ) -> Iterator[B]:
        """Iterate ``batches`` as steps of this epoch (see :func:`steps`)."""
        return steps(self.run, batches, self, mark=mark, count=count, sync=self._sync)

    def __repr__(self) -> str:
        return f"<Epoch {self.index} samples={self.samples_processed}>"


def _samples(run: Run, epoch: Epoch) -> int | None:
    """What this process adds to the epoch's samples: those it counted, or ``samples`` (the
    job's, as ``samples_per_epoch``) from rank 0 alone."""
    if epoch.samples is not None and run.job.distributed and not run.job.leader:
        return None
    return epoch.samples_processed


def _epoch_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    text = {k: v for k, v in metrics.items() if isinstance(v, str)}
    return {**text, **float_metrics(metrics)}


def epochs(
    run: Run,
    n_epochs: int,
    *,
    start: int = 0,
    samples_per_epoch: int | None = None,
    sync: bool | None = None,
    mlflow: MlflowArg = None,
    wandb: WandbArg = None,
    tensorboard: TensorBoardArg = None,
) -> Iterator[Epoch]:
    """Hand out epochs ``start`` .. ``n_epochs - 1``, each marked as an epoch of ``run``.

    An epoch begins when it is handed out and ends when the loop asks for the next one (or
    leaves the loop, by ``break`` or an exception); its samples are ``samples_per_epoch``, else
    those counted by :meth:`Epoch.steps`, and its metrics those given to :meth:`Epoch.log`.
    A second loop over the same run whose first index the run already has is numbered after
    the run's last epoch (``Epoch.index`` says which), with a warning. When the run's energy
    budget (:meth:`joulecast.Run.live_forecast`) says stop, no more epochs are handed out.

    In a distributed job every process runs the same loop: an epoch's counted samples are
    summed over the processes at its end (docs/distributed.md); an epoch left by an exception
    or a ``break`` keeps this process's own count.

    Args:
        run: the run to mark (from :func:`joulecast.measure`).
        n_epochs: the epoch count to reach; with ``start`` (resuming), ``n_epochs - start``
            epochs are handed out, as Keras's ``epochs``/``initial_epoch``.
        start: the first epoch's index.
        samples_per_epoch: samples each epoch processes, when known in advance (in a
            distributed job, the job's: all processes together).
        sync: wait for CUDA at each boundary (None: when CUDA is in use).
        mlflow: an :class:`~joulecast.integrations.mlflow.MlflowLogger` (or True for a
            default one) that logs each epoch and, after the last, the totals so far.
        wandb: a :class:`~joulecast.integrations.wandb.WandbLogger` (or True for a
            default one) that logs each epoch to W&B and, after the last, the totals.
        tensorboard: a :class:`~joulecast.integrations.tensorboard.TensorBoardLogger` (or
            True for a default one) that logs each epoch to TensorBoard event files and,
            after the last, the totals.
    """
    if n_epochs < start:
        raise ValueError(f"n_epochs ({n_epochs}) must be at least start ({start})")
    session = Session(run=run, mlflow=mlflow, wandb=wandb, tensorboard=tensorboard, sync=sync)
    return _epochs(session, range(start, n_epochs), samples_per_epoch, sync)


def _epochs(
    session: Session, indices: range, samples_per_epoch: int | None, sync: bool | None
) -> Iterator[Epoch]:
    run = session.start()
    try:
        for index in indices:
            epoch = Epoch(run, index, samples_per_epoch, sync=sync)
            epoch.index = session.begin(PhaseKind.EPOCH, index)
            # An epoch left by an exception or a break ends on this process alone: the
            # others are elsewhere, so nothing is summed with them (it would hang or fail).
            together = False
            try:
                yield epoch
                together = True
            finally:
                session.end(
                    PhaseKind.EPOCH,
                    epoch.index,
                    samples=_samples(run, epoch),
                    metrics=_epoch_metrics(epoch.metrics),
                    together=together,
                )
            if run.should_stop:  # the energy budget of run.live_forecast() says stop
                log.warning("stopping after epoch %d: %s", epoch.index, run.stop_reason)
                return
    finally:
        if session.trackers:
            session.finish(RunStatus.COMPLETED, end_trackers=True)


def steps(
    run: Run,
    batches: Iterable[B],
    epoch: Epoch | None = None,
    *,
    mark: bool = True,
    count: Callable[[Any], int | None] = batch_size,
    sync: bool | None = None,
) -> Iterator[B]:
    """Yield each batch of ``batches``, marking the loop body for it as a step of ``run``.

    Steps are numbered across the run's epochs (0, 1, ... in the order they run); each
    carries its batch size as samples, and adds it to ``epoch``'s count when an epoch is given.

    Args:
        run: the run to mark.
        batches: a DataLoader or any iterable of batches.
        epoch: the :class:`Epoch` whose samples to count.
        mark: False counts samples without writing a phase per step (no syncs either).
        count: the batch size of a batch (default: the first dimension of its first tensor).
        sync: wait for CUDA at each step boundary (None: when CUDA is in use).
    """
    session = Session(run=run, sync=sync)
    for batch in batches:
        n = count(batch)
        if epoch is not None and n is not None:
            epoch.counted_samples += n
        if not mark:
            yield batch
            continue
        index = next_step(run)
        session.begin(PhaseKind.STEP, index)
        try:
            yield batch
        finally:
            session.end(PhaseKind.STEP, index, samples=n)
