"""The measuring API: :func:`measure` (context manager, decorator, start/stop) and :class:`Run`."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from joulecast.distributed import Job, current_job, next_attempt, node_gpus, node_store
from joulecast.errors import JoulecastError, warn
from joulecast.forecast import (
    AUTO,
    DEFAULT_WINDOW,
    EnergyBudget,
    Forecast,
    LiveForecaster,
    Method,
)
from joulecast.inputs import RUN_ENV, RUN_UID_ENV, STORE_ENV
from joulecast.monitor import DEFAULT_INTERVAL_S, Monitor
from joulecast.records import Phase, PhaseKind, RunStatus
from joulecast.sensors import Sensor, detect_sensors
from joulecast.store import Store, default_store_path

if TYPE_CHECKING:
    import pandas as pd

    from joulecast.energy import RunSummary
    from joulecast.live import LiveForecast
    from joulecast.prometheus import Exporter

log = logging.getLogger(__name__)

# How often, at most, a run joined under joulecast measure looks whether its sampler lives.
_SAMPLER_CHECK_S = 1.0


def sync_device(enabled: bool | None = None) -> None:
    """Wait for queued CUDA work (where PyTorch is imported and has used CUDA).

    GPU kernels run asynchronously: without a sync, work queued in one phase would be
    attributed to the next. ``enabled`` False skips it; None syncs when CUDA is in use.
    """
    if enabled is False:
        return
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None:
        return
    try:
        if cuda.is_available() and cuda.is_initialized():
            for device in range(cuda.device_count()):
                cuda.synchronize(device)
    except Exception as exc:  # a failed sync must not stop the training
        log.debug("CUDA synchronize failed: %s", exc)


@dataclass
class PhaseHandle:
    """Yielded by :meth:`Run.epoch` / :meth:`Run.step`: set ``samples`` or add ``metrics``."""

    index: int
    samples: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class Run:
    """A run being measured (or joined): marks phases and reads back energy."""

    def __init__(
        self,
        monitor: Monitor,
        *,
        owns_store: bool = False,
        sync: bool | None = None,
        job: Job | None = None,
        exporter: Exporter | None = None,
    ) -> None:
        self.job = job if job is not None else Job()
        self._monitor = monitor
        self._exporter = exporter
        self._owns_store = owns_store
        self.sync = sync
        self._last_epoch_end: float | None = None
        # Where an epoch marked with mark_epoch() alone begins: the run's start, or the moment
        # this process joined it.
        self._began_s = monitor.now_s() if monitor.joined else 0.0
        self._live: LiveForecast | None = None
        self._stop_reason: str | None = None
        self._sampler_gone = False
        self._sampler_checked_s = -math.inf
        assert monitor.run_id is not None
        self.run_id: int = monitor.run_id

    @property
    def measuring(self) -> bool:
        """True where this process marks the run (False: a job's other ranks, see
        :class:`PassiveRun`)."""
        return True

    @property
    def store(self) -> Store:
        """The store this run is written to (reopened if the run closed it at stop)."""
        if self._monitor.store.closed:
            self._monitor.store = Store(self._monitor.store.path)
        return self._monitor.store

    @property
    def joined(self) -> bool:
        """True when another process (``joulecast measure``) samples this run."""
        return self._monitor.joined

    @property
    def active(self) -> bool:
        """True until :meth:`stop`."""
        return self._monitor.running

    @property
    def exporter(self) -> Exporter | None:
        """The Prometheus exporter of this run (``measure(prometheus=...)``; its ``url``),
        until the run stops; None without one."""
        return self._exporter

    # -- marking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def epoch(
        self, index: int, *, samples: int | None = None, **metrics: Any
    ) -> Iterator[PhaseHandle]:
        """Mark the enclosed block as epoch ``index`` that processes ``samples`` samples."""
        with self._phase(PhaseKind.EPOCH, index, samples, metrics) as handle:
            yield handle

    @contextlib.contextmanager
    def step(
        self, index: int, *, samples: int | None = None, **metrics: Any
    ) -> Iterator[PhaseHandle]:
        """Mark the enclosed block as step ``index``."""
        with self._phase(PhaseKind.STEP, index, samples, metrics) as handle:
            yield handle

    @contextlib.contextmanager
    def _phase(
        self, kind: PhaseKind, index: int, samples: int | None, metrics: dict[str, Any]
    ) -> Iterator[PhaseHandle]:
        handle = PhaseHandle(index, samples, dict(metrics))
        self.begin(kind, index)
        try:
            yield handle
        finally:
            self.end(kind, index, samples=handle.samples, metrics=handle.metrics)

    def _sync_device(self, sync: bool | None = None) -> None:
        sync_device(self.sync if sync is None else sync)

    def begin(self, kind: PhaseKind | str, index: int, *, sync: bool | None = None) -> None:
        """Open an epoch or step now (pair with :meth:`end`; for callbacks).

        The device is synchronized first (``sync`` overrides the run's setting for this call).
        """
        self._sync_device(sync)
        self._monitor.begin_phase(PhaseKind(kind), index)

    def end(
        self,
        kind: PhaseKind | str,
        index: int,
        *,
        samples: int | None = None,
        metrics: dict[str, Any] | None = None,
        sync: bool | None = None,
        forecast: bool = True,
    ) -> Phase | None:
        """Close an epoch or step opened with :meth:`begin` (after synchronizing the device).

        A closed epoch is forecast from (:meth:`live_forecast`) unless ``forecast`` is False
        (the caller then calls :meth:`forecast_epoch`). Returns the phase as recorded.
        """
        self._sync_device(sync)
        phase = self._monitor.end_phase(PhaseKind(kind), index, samples=samples, metrics=metrics)
        self._check_sampler()
        if phase.kind is PhaseKind.EPOCH:
            self._last_epoch_end = phase.end_s
            if forecast:
                self.forecast_epoch(phase)
        return phase

    def mark_epoch(self, index: int, *, samples: int | None = None, **metrics: Any) -> None:
        """Record that epoch ``index`` ends now; it began where the previous epoch ended.

        The first epoch marked this way begins when the run (or this process's join) began.
        """
        self._sync_device()
        start = self._last_epoch_end if self._last_epoch_end is not None else self._began_s
        phase = self._monitor.end_phase(
            PhaseKind.EPOCH, index, samples=samples, metrics=metrics, start_s=start
        )
        self._last_epoch_end = phase.end_s
        self._check_sampler()
        self.forecast_epoch(phase)

    def _check_sampler(self) -> None:
        """Joined under ``joulecast measure``: warn once when the process sampling the run
        is gone (killed). Marking goes on, so the run keeps the training's epochs and
        metrics; the epochs it did not sample have no energy (they are unmeasured, see
        :func:`joulecast.energy.unmeasured_phases`), never 0 J."""
        if not self.joined or self._sampler_gone:
            return
        now = time.monotonic()
        if now - self._sampler_checked_s < _SAMPLER_CHECK_S:
            return
        self._sampler_checked_s = now
        try:
            recording = self.store.recording(self.run_id)
        except JoulecastError as exc:  # looking must never stop the training
            log.info("run %d: cannot tell whether its sampler lives: %s", self.run_id, exc)
            return
        if not recording:
            self._sampler_gone = True
            warn(
                f"run {self.run_id}: the process sampling it (joulecast measure) is gone; the"
                " epochs marked from now on are stored without energy, as unmeasured"
            )

    # -- live forecast ---------------------------------------------------------------------

    def live_forecast(
        self,
        total_epochs: int,
        *,
        method: Method | str = Method.EPOCH_ENERGY,
        stable_epoch: int | str = AUTO,
        window: int = DEFAULT_WINDOW,
        budget: EnergyBudget | None = None,
        on_update: Callable[[Forecast], None] | None = None,
        progress: bool = True,
    ) -> None:
        """Re-forecast the total energy after every epoch of a run of ``total_epochs``.

        Each forecast is stored with its epoch (``metrics["forecast"]``), logged, printed as a
        progress line on stderr (unless ``progress`` is False) and passed to ``on_update``.
        With a ``budget``, :attr:`stop_reason` is set once it says stop; the training loop (or
        an integration's callback) decides to stop on it. Each epoch is forecast from once the
        readings after its end are stored (:meth:`joulecast.Monitor.wait_for_readings`, about
        one sampling interval), so the forecast sees the energy the run's summary will show.
        """
        from joulecast.live import LiveForecast

        forecaster = LiveForecaster(
            total_epochs, method=method, stable_epoch=stable_epoch, window=window
        )
        self._live = LiveForecast(
            lambda: self.store,
            self.run_id,
            forecaster,
            budget=budget,
            on_update=on_update,
            progress=progress,
        )

    @property
    def forecast(self) -> Forecast | None:
        """The latest live forecast, if :meth:`live_forecast` is on and an epoch has ended."""
        return self._live.last if self._live is not None else None

    @property
    def forecasting(self) -> bool:
        """True once :meth:`live_forecast` is on."""
        return self._live is not None

    @property
    def stop_reason(self) -> str | None:
        """Why the energy budget of :meth:`live_forecast` says stop (or :meth:`request_stop`
        was told); None until then."""
        if self._stop_reason is not None:
            return self._stop_reason
        return self._live.stop_reason if self._live is not None else None

    def request_stop(self, reason: str) -> None:
        """Say that training should stop (:attr:`should_stop`): a job's rank 0 decided so."""
        if self._stop_reason is None:
            self._stop_reason = reason

    @property
    def should_stop(self) -> bool:
        """True once the energy budget of :meth:`live_forecast` says stop."""
        return self.stop_reason is not None

    def epoch_table(self, indices: list[int]) -> pd.DataFrame:
        """The per-epoch table (as :attr:`epochs`) for the epochs ``indices`` only.

        Reads the store's energy aggregates, so it stays cheap however long the run: what the
        per-epoch hooks (live forecast, MLflow) use.
        """
        from joulecast.live import epoch_table

        if self._monitor.running:
            self._monitor.flush()
        return epoch_table(self.store, self.run_id, indices)

    def forecast_epoch(self, phase: Phase, *, energy_j: float | None = None) -> Forecast | None:
        """Forecast after the finished epoch ``phase`` (with :meth:`live_forecast` on).

        ``energy_j`` is the epoch's energy where it is not this run's own: a distributed
        job's, summed over its nodes. Waits for the readings up to the epoch's end first.
        """
        if self._live is None or phase.end_s is None:
            return None
        self.wait_for_phase(phase)
        return self._live.after_epoch(phase, energy_j=energy_j)

    def wait_for_phase(self, phase: Phase) -> bool:
        """Wait until the readings up to the end of the finished ``phase`` are stored, so
        that its figures read from the store are final
        (:meth:`joulecast.Monitor.wait_for_readings`); False when they did not all come in
        time or the phase has no end."""
        if phase.end_s is None:
            return False
        return self._monitor.wait_for_readings(phase.end_s)

    def epoch_energy_j(self, phase: Phase) -> float:
        """The energy of the finished epoch ``phase`` in this run (NaN when not stored),
        once the readings up to its end are stored."""
        if phase.end_s is None:
            return math.nan
        self.wait_for_phase(phase)
        table = self.epoch_table([phase.index])
        return float(table["energy_j"].iloc[0]) if not table.empty else math.nan

    # -- reading back ----------------------------------------------------------------------

    def summary(self) -> RunSummary:
        """Totals, per-device figures and the per-epoch table, as stored so far."""
        from joulecast.energy import summarize

        if self._monitor.running:
            self._monitor.flush()
        return summarize(self.store, self.run_id)

    @property
    def energy_j(self) -> float:
        """Total energy so far (measured and modelled devices; see :meth:`summary`)."""
        return self.summary().energy_j

    @property
    def duration_s(self) -> float:
        """Seconds from the run's start to its end (or to now while running)."""
        if self._monitor.running or self.joined:
            return self._monitor.now_s()
        return self.summary().duration_s

    @property
    def epochs(self) -> pd.DataFrame:
        """Per-epoch duration, energy (total and ``energy_j[DEVICE]``), mean power, J/sample."""
        return self.summary().epochs

    # -- stopping --------------------------------------------------------------------------

    def stop(
        self,
        status: RunStatus | str = RunStatus.COMPLETED,
        *,
        exit_code: int | None = None,
        signal: str | None = None,
    ) -> None:
        """Stop measuring and record the final status (joined runs: only flush the marks).

        A store the run opened itself is closed; reading the run afterwards reopens it.
        """
        if self._monitor.running:
            self._sync_device()
        try:
            self._monitor.stop(RunStatus(status), exit_code=exit_code, signal=signal)
        finally:
            self._close_exporter()  # before the store closes: its last figures are final
        if self._owns_store and not self._monitor.store.closed:
            self._monitor.store.close()

    def _close_exporter(self) -> None:
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            exporter.close()

    def close(self) -> None:
        """Stop if needed and close a store opened for this run."""
        if self._monitor.running:
            self.stop()
        self._close_exporter()
        if self._owns_store and not self._monitor.store.closed:
            self._monitor.store.close()

    def __repr__(self) -> str:
        state = "joined" if self.joined else ("running" if self.active else "stopped")
        return f"<Run {self.run_id} {state} store={str(self._monitor.store.path)!r}>"


class PassiveRun(Run):
    """The run as the other ranks of a distributed job hold it: they sample nothing (their
    node's local rank 0 does) and mark nothing (rank 0 marks the job's phases).

    Marking is accepted and ignored, so the same training code runs on every rank.
    :attr:`should_stop` follows what the job's rank 0 decided (the integrations pass it on).
    Reading the run back works where this rank joined a run (under ``joulecast measure``);
    elsewhere :attr:`energy_j` is NaN and :attr:`epochs` has no rows, and :meth:`summary`
    and :attr:`store` raise :class:`~joulecast.errors.JoulecastError` naming where the run is.
    """

    def __init__(
        self,
        job: Job,
        *,
        joined: tuple[int, Path] | None = None,
        sync: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job = job
        self.sync = sync
        self.run_id = joined[0] if joined is not None else -1
        self._joined = joined
        self._store: Store | None = None
        self._clock = clock
        self._t0 = clock()
        self._ended_s: float | None = None
        self._live = None
        self._exporter = None  # the node's local rank 0 exports
        self._wants_forecast = False
        self._stop_reason = None
        self._last_epoch_end = None

    @property
    def measuring(self) -> bool:
        """False: this rank marks nothing."""
        return False

    @property
    def store(self) -> Store:
        """The joined run's store.

        Raises:
            JoulecastError: this rank joined no run.
        """
        if self._joined is None:
            raise JoulecastError(
                f"rank {self.job.rank} measures nothing: the run is written by local rank 0 of"
                f" node {self.job.node} (and the job's by rank 0)"
            )
        if self._store is None or self._store.closed:
            self._store = Store(self._joined[1])
        return self._store

    @property
    def joined(self) -> bool:
        """True when this rank runs under ``joulecast measure`` (it can read the run)."""
        return self._joined is not None

    @property
    def active(self) -> bool:
        """True until :meth:`stop`."""
        return self._ended_s is None

    def begin(self, kind: PhaseKind | str, index: int, *, sync: bool | None = None) -> None:
        """Ignored: rank 0 marks the job's phases."""
        PhaseKind(kind)

    def end(
        self,
        kind: PhaseKind | str,
        index: int,
        *,
        samples: int | None = None,
        metrics: dict[str, Any] | None = None,
        sync: bool | None = None,
        forecast: bool = True,
    ) -> Phase | None:
        """Ignored: rank 0 marks the job's phases."""
        PhaseKind(kind)
        return None

    def mark_epoch(self, index: int, *, samples: int | None = None, **metrics: Any) -> None:
        """Ignored: rank 0 marks the job's phases."""

    def live_forecast(self, total_epochs: int, **options: Any) -> None:
        """Noted only: rank 0 forecasts the job; this rank learns its decision."""
        self._wants_forecast = True

    @property
    def forecasting(self) -> bool:
        """True once :meth:`live_forecast` was asked for (on rank 0 it runs)."""
        return self._wants_forecast

    def forecast_epoch(self, phase: Phase, *, energy_j: float | None = None) -> Forecast | None:
        """None: rank 0 forecasts."""
        return None

    def wait_for_phase(self, phase: Phase) -> bool:
        """False at once: this rank samples nothing."""
        return False

    def epoch_energy_j(self, phase: Phase) -> float:
        """NaN: this rank samples nothing."""
        return math.nan

    def epoch_table(self, indices: list[int]) -> pd.DataFrame:
        """The joined run's per-epoch table for ``indices`` (see :meth:`Run.epoch_table`)."""
        from joulecast.live import epoch_table

        return epoch_table(self.store, self.run_id, indices)

    def summary(self) -> RunSummary:
        """The joined run's summary (see :meth:`Run.summary`).

        Raises:
            JoulecastError: this rank joined no run.
        """
        from joulecast.energy import summarize

        return summarize(self.store, self.run_id)

    @property
    def energy_j(self) -> float:
        """The joined run's energy; NaN on a rank that joined none (it measures nothing)."""
        return self.summary().energy_j if self._joined is not None else math.nan

    @property
    def epochs(self) -> pd.DataFrame:
        """The joined run's epochs; on a rank that joined none, the table without rows."""
        if self._joined is not None:
            return self.summary().epochs
        from joulecast.energy import empty_phase_table

        return empty_phase_table()

    @property
    def duration_s(self) -> float:
        """Seconds since this rank started (to its stop)."""
        end = self._ended_s if self._ended_s is not None else self._clock()
        return end - self._t0

    def stop(
        self,
        status: RunStatus | str = RunStatus.COMPLETED,
        *,
        exit_code: int | None = None,
        signal: str | None = None,
    ) -> None:
        """Stop: nothing is recorded from this rank."""
        RunStatus(status)
        if self._ended_s is None:
            self._ended_s = self._clock()
        self.close()

    def close(self) -> None:
        """Close the joined run's store if it was opened here."""
        if self._ended_s is None:
            self._ended_s = self._clock()
        if self._store is not None and not self._store.closed:
            self._store.close()

    def __repr__(self) -> str:
        return f"<PassiveRun rank {self.job.rank} of {self.job.world_size} on {self.job.node}>"


class measure(contextlib.ContextDecorator):
    """Measure the energy of a block, a function, or a span between ``start()`` and ``stop()``.

    ``with joulecast.measure(name="train") as run: ...`` samples every sensor found (or
    ``sensors``) every ``interval_s`` into ``store`` (a path or :class:`Store`; default
    ``$JOULECAST_STORE`` or ./joulecast.db). Under ``joulecast measure`` (``$JOULECAST_RUN_ID``
    set) it joins the run the CLI opened and only writes phase marks; should that process be
    killed, a :class:`~joulecast.errors.JoulecastWarning` says so once and marking goes on,
    the epochs it did not sample stored as unmeasured (no energy). An exception leaving the
    block marks the run failed and propagates.

    ``sync`` says whether to wait for queued GPU work at every phase boundary and at the end
    (:func:`sync_device`): None (the default) does when PyTorch has initialized CUDA, so work
    queued in one epoch is not charged to the next; False never waits.

    In a distributed job (torchrun, SLURM; :func:`joulecast.distributed.current_job`), with
    ``per_node`` (the default) only each node's local rank 0 samples, the GPUs, CPUs and RAM
    of its node; the other ranks get a :class:`PassiveRun`. A job over several nodes writes
    each node's run to a node shard in ``shard_dir`` (default ``$JOULECAST_SHARD_DIR`` or
    ``<store>.shards``) under the job's identity (``run_uid``, default
    ``$JOULECAST_RUN_UID`` or the launcher's job id); ``joulecast collect`` merges them into
    one run. ``per_node=False`` makes every process sample on its own, as a single process.
    ``job`` gives the process's place in the job where the caller knows it better than the
    environment does (a framework's trainer).

    ``prometheus`` (``[ADDR:]PORT`` or a port; the address defaults to 127.0.0.1) serves the
    run's live power, energy, epoch, forecast and sampling health for Prometheus to scrape;
    ``prometheus_textfile`` writes them to a file for node_exporter's textfile collector
    (:mod:`joulecast.prometheus`). An exporter that cannot start (a port in use) is a
    :class:`~joulecast.errors.JoulecastWarning` and the training goes on without it; the
    ranks of a job that do not sample export nothing.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        store: Store | str | os.PathLike[str] | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        sensors: Sequence[Sensor] | None = None,
        tags: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        join: bool = True,
        sync: bool | None = None,
        per_node: bool = True,
        run_uid: str | None = None,
        shard_dir: str | os.PathLike[str] | None = None,
        job: Job | None = None,
        prometheus: str | int | None = None,
        prometheus_textfile: str | os.PathLike[str] | None = None,
    ) -> None:
        self.job = job
        self.prometheus = prometheus
        self.prometheus_textfile = prometheus_textfile
        self.per_node = per_node
        self.run_uid = run_uid
        self.shard_dir = shard_dir
        self.name = name
        self.sync = sync
        self.store = store
        self.interval_s = interval_s
        self.sensors = sensors
        self.tags = tags
        self.clock = clock
        self.join = join
        self.run: Run | None = None

    def _job(self) -> Job:
        if self.job is not None:
            return self.job
        try:
            return current_job(uid=self.run_uid)
        except JoulecastError as exc:  # an odd variable must not stop the training
            try:  # the ranks still hold without the identity: one sampler per node stays
                job = current_job({k: v for k, v in os.environ.items() if k != RUN_UID_ENV})
                warn(f"{exc}; {RUN_UID_ENV} ignored")
                return job
            except JoulecastError:
                warn(f"{exc}; measuring this process as a job of its own")
                return Job()

    def _open_store(self, job: Job) -> tuple[Store, bool, str | None, Job]:
        """The store this process samples into, whether it opened it, the run's uid (None:
        a random one) and the job (its next attempt where the shard has run it already)."""
        if isinstance(self.store, Store):
            return self.store, False, None, job
        if not (self.per_node and (job.distributed or job.uid_given)):
            return Store(self.store), True, None, job
        path, uid = node_store(
            job, self.store if self.store is not None else default_store_path(), self.shard_dir
        )
        store = Store(path)
        if uid is None:
            return store, True, None, job
        attempt = next_attempt(job, store)
        return store, True, attempt.node_run_uid(), attempt

    def _join_target(self) -> tuple[int, Path] | None:
        run_id = os.environ.get(RUN_ENV)
        if not (self.join and run_id and run_id.isdigit()):
            return None
        env_store = Path(os.environ.get(STORE_ENV) or default_store_path())
        if self.store is not None:
            mine = self.store.path if isinstance(self.store, Store) else Path(self.store)
            if mine.resolve() != env_store.resolve():
                return None
        return int(run_id), env_store

    def start(self) -> Run:
        """Begin measuring and return the :class:`Run` (a :class:`PassiveRun` on a job's ranks
        that do not sample, see the class docstring)."""
        job = self._job()
        target = self._join_target()
        if self.per_node and job.distributed and not job.samples_node:
            self.run = PassiveRun(job, joined=target, sync=self.sync, clock=self.clock)
            log.info("rank %d of %d: its node's local rank 0 measures", job.rank, job.world_size)
            return self.run
        from joulecast.prometheus import open_exporter

        exporter = open_exporter(self.prometheus, self.prometheus_textfile, strict=False)
        try:
            run = self._start_run(job, target, exporter)
        except BaseException:
            if exporter is not None:
                exporter.close()
            raise
        self.run = run
        return run

    def _start_run(
        self, job: Job, target: tuple[int, Path] | None, exporter: Exporter | None
    ) -> Run:
        """The run joined (``target``) or opened, its figures exported by ``exporter``."""
        if target is not None and self.sensors is None:
            run_id, path = target
            store = self.store if isinstance(self.store, Store) else Store(path)
            monitor = Monitor([], store, run_id=run_id, clock=self.clock)
            monitor.start()
            run = Run(
                monitor,
                owns_store=not isinstance(self.store, Store),
                sync=self.sync,
                job=job,
                exporter=exporter,
            )
            if job.distributed:  # the node's run learns which ranks and node it holds
                try:
                    store.update_run(run_id, tags=job.rank_tags())
                except JoulecastError as exc:
                    log.warning("run %d: could not tag it with the job's ranks: %s", run_id, exc)
            log.info("joined run %d in %s", run_id, path)
        else:
            store, owns, uid, job = self._open_store(job)
            visible, order = node_gpus(job)
            sensors = (
                list(self.sensors)
                if self.sensors is not None
                else detect_sensors(
                    interval_s=self.interval_s,
                    clock=self.clock,
                    visible_gpus=visible,
                    gpu_order=order,
                )
            )
            monitor = Monitor(
                sensors,
                store,
                interval_s=self.interval_s,
                name=self.name,
                tags={**(self.tags or {}), **(job.tags() if job.distributed else {})},
                clock=self.clock,
                uid=uid,
            )
            monitor.start()
            run = Run(monitor, owns_store=owns, sync=self.sync, job=job, exporter=exporter)
        if exporter is not None:
            exporter.watch(run.store, run.run_id, monitor)
        return run

    def _recreate_cm(self) -> measure:
        # ContextDecorator asks for the context manager of each call of a decorated function:
        # a fresh copy, so that recursive and concurrent calls each measure a run of their own.
        fresh = copy.copy(self)
        fresh.run = None
        return fresh

    def __enter__(self) -> Run:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run = self.run
        if run is None:
            return
        if exc_type is None:
            run.stop(RunStatus.COMPLETED)
        elif issubclass(exc_type, KeyboardInterrupt):
            run.stop(RunStatus.INTERRUPTED, signal="SIGINT")
        else:
            run.stop(RunStatus.FAILED)
