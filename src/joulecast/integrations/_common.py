"""What the integrations share: opening or joining a run, counting samples, device syncs.

No framework is imported here; PyTorch is used only when the training already imported it.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Union

from joulecast.distributed import Job, current_job
from joulecast.errors import JoulecastError
from joulecast.forecast import EnergyBudget
from joulecast.integrations._tracking import (
    MlflowArg,
    TensorBoardArg,
    Tracker,
    WandbArg,
    resolve_trackers,
)
from joulecast.monitor import DEFAULT_INTERVAL_S
from joulecast.records import Phase, PhaseKind, RunStatus
from joulecast.run import Run, measure
from joulecast.store import Store

log = logging.getLogger(__name__)

StoreLike = Union[Store, str, "os.PathLike[str]", None]


def batch_size(batch: Any) -> int | None:
    """Rows in a batch: the first dimension of its first tensor or array.

    Tensors and arrays (anything with a ``shape``) count directly; tuples, lists and mappings
    (``(x, y)``, ``{"input_ids": ...}``) are searched in order for their first tensor. None
    when no tensor is found.
    """
    shape = getattr(batch, "shape", None)
    if shape is not None and not isinstance(batch, type):
        try:
            return int(shape[0]) if len(shape) else None
        except (TypeError, IndexError, ValueError):
            return None
    if isinstance(batch, Mapping):
        items: Any = batch.values()
    elif isinstance(batch, (list, tuple)):
        items = batch
    else:
        return None
    for item in items:
        n = batch_size(item)
        if n is not None:
            return n
    return None


def float_metrics(values: Mapping[str, Any] | None) -> dict[str, float | None]:
    """The entries of ``values`` that are numbers (Python, NumPy or one-element tensors).

    Non-finite values (a diverged loss) are kept as None so the key still shows; strings and
    anything that does not convert to one float are left out.
    """
    out: dict[str, float | None] = {}
    for key, value in (values or {}).items():
        if isinstance(value, (str, bytes)) or value is None:
            continue
        detach = getattr(value, "detach", None)  # a tensor: no autograd warning
        if callable(detach):
            value = detach()
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
        out[str(key)] = number if math.isfinite(number) else None
    return out


# Epoch indices marked in each run by the integrations of this process (with those read back
# from the store), and the next step index of each run: phases are keyed on (kind, index)
# within a run, so a second training on a shared run must not reuse them.
_epochs_marked: weakref.WeakKeyDictionary[Run, set[int]] = weakref.WeakKeyDictionary()
_step_counters: weakref.WeakKeyDictionary[Run, itertools.count[int]] = weakref.WeakKeyDictionary()


def next_step(run: Run) -> int:
    """The next unused step index of ``run`` (steps are numbered across epochs and trainings)."""
    counter = _step_counters.get(run)
    if counter is None:
        counter = _step_counters[run] = itertools.count()
    return next(counter)


def _process_group() -> Any:
    """``torch.distributed`` where the training initialized it with two or more processes."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    try:
        if dist is None or not dist.is_available() or not dist.is_initialized():
            return None
        return dist if dist.get_world_size() > 1 else None
    except Exception:  # an odd process group state: act as a single process
        return None


def framework_job(
    *,
    rank: int,
    local_rank: int,
    world_size: int,
    node_rank: int | None = None,
    nodes: int | None = None,
) -> Job:
    """The :class:`~joulecast.distributed.Job` a framework's trainer describes, with the
    job's identity and node name (and the nodes, where not given) from the environment."""
    try:
        found = current_job()
    except JoulecastError as exc:  # an odd launcher variable: the trainer's ranks still hold
        log.warning("%s", exc)
        found = Job()
    node_rank = found.node_rank if node_rank is None else max(int(node_rank), 0)
    nodes = found.nodes if nodes is None else int(nodes)
    return replace(
        found,
        rank=max(int(rank), 0),
        local_rank=max(int(local_rank), 0),
        world_size=max(int(world_size), int(rank) + 1, 1),
        node_rank=node_rank,
        nodes=max(nodes, node_rank + 1, 1),
    )


def job_sum(values: Sequence[float]) -> list[float] | None:
    """``values`` summed over the job's processes (``torch.distributed.all_reduce``).

    Every process of the job must call it at the same point of the training, as the
    integrations do at each epoch's end. None outside a process group of two or more, or
    when the collective fails (logged; the caller keeps its own figures).
    """
    dist = _process_group()
    if dist is None:
        return None
    import torch

    try:
        # NCCL reduces only GPU tensors; every other backend takes them on the CPU.
        on_gpu = str(dist.get_backend()) == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu().tolist()]
    except Exception as exc:  # measuring must not stop the training
        log.warning("summing over the job's processes failed (%s): own figures kept", exc)
        return None


def _job_samples(run: Run, samples: int | None, metrics: dict[str, Any]) -> int | None:
    """The samples a phase of ``run`` stores for the job's ``samples``: all of them, except in
    a node's run of a multi-node job, which holds one node's energy: there they wait in
    ``metrics["job_samples"]`` for the merge (``joulecast collect``), so that no J/sample mixes
    one node's energy with the job's samples."""
    if run.job.multinode and samples is not None:
        metrics["job_samples"] = samples
        return None
    return samples


class Session:
    """One training measured by an integration: the run, who owns it, the open epoch.

    ``run`` given: it is used as is and never stopped here (its owner stops it). Otherwise
    :meth:`start` opens one with :func:`joulecast.measure`, which joins the run of
    ``joulecast measure`` when there is one, and :meth:`finish` stops it.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        store: StoreLike = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        run: Run | None = None,
        mlflow: MlflowArg = None,
        wandb: WandbArg = None,
        tensorboard: TensorBoardArg = None,
        sync: bool | None = None,
        forecast: bool | Mapping[str, Any] = False,
        budget: EnergyBudget | None = None,
        job: Job | None = None,
    ) -> None:
        self.job = job
        self.name = name
        self.forecast = forecast
        self.budget = budget
        self.store = store
        self.interval_s = interval_s
        self.run: Run | None = run
        self.owns_run = False
        self.trackers = resolve_trackers(mlflow=mlflow, wandb=wandb, tensorboard=tensorboard)
        self.sync = sync
        self.open_epoch: int | None = None
        self.open_step: int | None = None
        self._used: set[int] = set()
        self._offset: int | None = None

    def start(self, total_epochs: int | None = None) -> Run:
        """Open (or join) the run unless one was given or is still open; start the trackers.

        With ``forecast`` (True, or keyword arguments for :meth:`Run.live_forecast`) or a
        ``budget``, and ``total_epochs`` known, the run forecasts its energy after every epoch.
        """
        if self.run is None or (self.owns_run and not self.run.active):
            self.run = measure(
                self.name,
                store=self.store,
                interval_s=self.interval_s,
                sync=self.sync,
                job=self.job,
            ).start()
            self.owns_run = True
            if self.run.measuring:
                log.info("measuring %r as run %d", self.name, self.run.run_id)
        self._used = _epochs_marked.setdefault(self.run, set())
        # Only a process that marks reads back the run's epochs: a job's other ranks would
        # read those their leader has marked meanwhile and number their own epochs after them.
        if self.run.measuring:
            try:
                self._used.update(
                    int(i) for i in self.run.store.phases(self.run.run_id, "epoch")["index"]
                )
            except Exception as exc:  # reading back is a nicety; the marks go in regardless
                log.debug("could not read the epochs of run %d: %s", self.run.run_id, exc)
        self._offset = None
        if (self.forecast or self.budget is not None) and total_epochs:
            options = dict(self.forecast) if isinstance(self.forecast, Mapping) else {}
            self.run.live_forecast(int(total_epochs), budget=self.budget, **options)
        if not (self.run.measuring and self.run.job.leader):
            self.trackers = []  # the job's rank 0 logs the job
        run = self.run
        self._to_trackers("starting", lambda tracker: tracker.start(run))
        return run

    def _to_trackers(self, what: str, call: Callable[[Tracker], object]) -> None:
        """``call`` each tracker. One that fails is warned about once and not called again by
        this session: experiment tracking must neither stop the training nor slow it down
        with a failing call (a tracking server's retries) after every epoch."""
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as exc:
                log.warning(
                    "%s: %s failed (%s); not logging to %s any more in this training",
                    tracker.label,
                    what,
                    exc,
                    tracker.label,
                )
                self.trackers.remove(tracker)

    def epoch_index(self, index: int) -> int:
        """The run's index for the framework's epoch ``index``.

        The framework's own, unless the first epoch since :meth:`start` is one the run already
        has (a second training on a shared run that starts again at 0): that training's
        epochs are then numbered after the run's last one, with a warning.
        """
        if self._offset is None:
            self._offset = 0
            if index in self._used:
                self._offset = max(self._used) + 1 - index
                log.warning(
                    "run %s already has epoch %d: numbering this training's epochs from %d"
                    " (start at a later epoch, e.g. Keras's initial_epoch, to choose)",
                    self.run.run_id if self.run is not None else "?",
                    index,
                    index + self._offset,
                )
        return index + self._offset

    def begin(self, kind: PhaseKind, index: int) -> int:
        """Open an epoch or step now (after syncing the device); returns the index used.

        An epoch's index goes through :meth:`epoch_index`.
        """
        assert self.run is not None
        if kind is PhaseKind.EPOCH:
            index = self.epoch_index(index)
            self.run.begin(kind, index, sync=self.sync)
            self.open_epoch = index
            self._used.add(index)
        else:
            self.run.begin(kind, index, sync=self.sync)
            self.open_step = index
        return index

    def end(
        self,
        kind: PhaseKind,
        index: int,
        *,
        samples: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        together: bool = True,
    ) -> None:
        """Close an epoch or step (after syncing the device); log a closed epoch to the trackers.

        In a distributed job every process calls it at the same point (``together``; False
        where one process alone ends it, on an exception: nothing is summed then). An
        epoch's samples are then summed over the job's processes; a step's are its batch
        times the job's processes (the global batch, for batches of one size). With a live
        forecast, rank 0 forecasts from the job's energy (summed over its nodes) and every
        process learns whether to stop.
        """
        assert self.run is not None
        run = self.run
        stored = dict(metrics or {})
        if kind is not PhaseKind.EPOCH:
            if samples is not None and run.job.distributed:
                samples *= run.job.world_size
                samples = _job_samples(run, samples, stored)
            run.end(kind, index, samples=samples, metrics=stored, sync=self.sync)
            self.open_step = None
            return
        summed = None
        if run.job.distributed and together:
            summed = job_sum([samples or 0, samples is not None, run.forecasting])
        if summed is not None:
            samples = _job_samples(run, int(summed[0]) if summed[1] else None, stored)
        elif run.job.distributed and samples is not None:
            # Ended on this process alone (an exception, a break): its own count is not the
            # job's, so no J/sample is made of it.
            stored["rank_samples"], samples = samples, None
        phase = run.end(
            kind,
            index,
            samples=samples,
            metrics=stored,
            sync=self.sync,
            forecast=summed is None,
        )
        self.open_epoch = None
        if summed is not None and summed[2]:
            self._forecast_job(phase)
        if self.trackers and phase is not None and run.measuring:
            # The readings up to the epoch's end may still be in the sampler's buffer: the
            # trackers would get a part of the epoch's energy.
            run.wait_for_phase(phase)
        self._to_trackers(f"logging epoch {index}", lambda tracker: tracker.log_epoch(run, index))

    def _forecast_job(self, phase: Phase | None) -> None:
        """Rank 0 forecasts after ``phase`` from the job's energy; every process learns
        whether to stop. Every process of the job calls it."""
        assert self.run is not None
        run, job = self.run, self.run.job
        energy_j: float | None = None
        if job.multinode:
            try:
                mine = run.epoch_energy_j(phase) if phase is not None and run.measuring else 0.0
            except Exception as exc:  # every process must still reach the same collectives
                log.warning("epoch energy of this node not read: %s", exc)
                mine = math.nan
            missing = 1.0 if math.isnan(mine) else 0.0
            nodes = job_sum([0.0 if missing else mine, missing])
            if nodes is not None and not nodes[1]:
                energy_j = nodes[0]
            elif nodes is not None:
                log.warning("a node's epoch energy is missing: the forecast uses rank 0's node")
        if job.leader and phase is not None:
            try:
                run.forecast_epoch(phase, energy_j=energy_j)
            except Exception as exc:  # as above: the stop decision below is awaited
                log.warning("no forecast after epoch %d: %s", phase.index, exc)
        stop = job_sum([1.0 if job.leader and run.should_stop else 0.0])
        if stop is not None and stop[0] > 0 and not run.should_stop:
            run.request_stop("rank 0 of the job stopped on its energy budget")

    @property
    def stop_requested(self) -> bool:
        """True once the run's energy budget says training should stop."""
        return self.run is not None and self.run.should_stop

    def finish(
        self,
        status: RunStatus = RunStatus.COMPLETED,
        *,
        signal: str | None = None,
        end_trackers: bool | None = None,
    ) -> None:
        """Stop the run if this session opened it, then log the totals to the trackers.

        A tracker's run is ended (if the tracker started it) with a run this session opened,
        or when ``end_trackers`` says so: a run passed in may have more training to come.
        """
        run = self.run
        if run is None:
            return
        if self.open_step is not None:
            self.end(PhaseKind.STEP, self.open_step)
        if self.owns_run and run.active:
            run.stop(status, signal=signal)
        end_run = self.owns_run if end_trackers is None else end_trackers
        self._to_trackers(
            "logging the run's totals",
            lambda tracker: tracker.finish(run, status=status, end_run=end_run),
        )
