"""The measuring API: :func:`measure` (context manager, decorator, start/stop) and :class:`Run`."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from joulecast.forecast import (
    AUTO,
    DEFAULT_WINDOW,
    EnergyBudget,
    Forecast,
    LiveForecaster,
    Method,
)
from joulecast.inputs import RUN_ENV, STORE_ENV
from joulecast.monitor import DEFAULT_INTERVAL_S, Monitor
from joulecast.records import Phase, PhaseKind, RunStatus
from joulecast.sensors import Sensor, detect_sensors
from joulecast.store import Store, default_store_path

if TYPE_CHECKING:
    import pandas as pd

    from joulecast.energy import RunSummary
    from joulecast.live import LiveForecast

log = logging.getLogger(__name__)


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
        self, monitor: Monitor, *, owns_store: bool = False, sync: bool | None = None
    ) -> None:
        self._monitor = monitor
        self._owns_store = owns_store
        self.sync = sync
        self._last_epoch_end: float | None = None
        # Where an epoch marked with mark_epoch() alone begins: the run's start, or the moment
        # this process joined it.
        self._began_s = monitor.now_s() if monitor.joined else 0.0
        self._live: LiveForecast | None = None
        assert monitor.run_id is not None
        self.run_id: int = monitor.run_id

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
    ) -> None:
        """Close an epoch or step opened with :meth:`begin` (after synchronizing the device)."""
        self._sync_device(sync)
        phase = self._monitor.end_phase(PhaseKind(kind), index, samples=samples, metrics=metrics)
        if phase.kind is PhaseKind.EPOCH:
            self._last_epoch_end = phase.end_s
            self._after_epoch(phase)

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
        self._after_epoch(phase)

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
    def stop_reason(self) -> str | None:
        """Why the energy budget of :meth:`live_forecast` says stop; None until it does."""
        return self._live.stop_reason if self._live is not None else None

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

    def _after_epoch(self, phase: Phase) -> None:
        if self._live is None or phase.end_s is None:
            return
        self._monitor.wait_for_readings(phase.end_s)
        self._live.after_epoch(phase)

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
        self._monitor.stop(RunStatus(status), exit_code=exit_code, signal=signal)
        if self._owns_store and not self._monitor.store.closed:
            self._monitor.store.close()

    def close(self) -> None:
        """Stop if needed and close a store opened for this run."""
        if self._monitor.running:
            self.stop()
        if self._owns_store and not self._monitor.store.closed:
            self._monitor.store.close()

    def __repr__(self) -> str:
        state = "joined" if self.joined else ("running" if self.active else "stopped")
        return f"<Run {self.run_id} {state} store={str(self._monitor.store.path)!r}>"


class measure(contextlib.ContextDecorator):
    """Measure the energy of a block, a function, or a span between ``start()`` and ``stop()``.

    ``with joulecast.measure(name="train") as run: ...`` samples every sensor found (or
    ``sensors``) every ``interval_s`` into ``store`` (a path or :class:`Store`; default
    ``$JOULECAST_STORE`` or ./joulecast.db). Under ``joulecast measure`` (``$JOULECAST_RUN_ID``
    set) it joins the run the CLI opened and only writes phase marks. An exception leaving the
    block marks the run failed and propagates.

    ``sync`` says whether to wait for queued GPU work at every phase boundary and at the end
    (:func:`sync_device`): None (the default) does when PyTorch has initialized CUDA, so work
    queued in one epoch is not charged to the next; False never waits.
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
    ) -> None:
        self.name = name
        self.sync = sync
        self.store = store
        self.interval_s = interval_s
        self.sensors = sensors
        self.tags = tags
        self.clock = clock
        self.join = join
        self.run: Run | None = None

    def _open_store(self) -> tuple[Store, bool]:
        if isinstance(self.store, Store):
            return self.store, False
        return Store(self.store), True

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
        """Begin measuring and return the :class:`Run`."""
        target = self._join_target()
        if target is not None and self.sensors is None:
            run_id, path = target
            store = self.store if isinstance(self.store, Store) else Store(path)
            monitor = Monitor([], store, run_id=run_id, clock=self.clock)
            monitor.start()
            run = Run(monitor, owns_store=not isinstance(self.store, Store), sync=self.sync)
            log.info("joined run %d in %s", run_id, path)
        else:
            store, owns = self._open_store()
            sensors = (
                list(self.sensors)
                if self.sensors is not None
                else detect_sensors(interval_s=self.interval_s, clock=self.clock)
            )
            monitor = Monitor(
                sensors,
                store,
                interval_s=self.interval_s,
                name=self.name,
                tags=self.tags,
                clock=self.clock,
            )
            monitor.start()
            run = Run(monitor, owns_store=owns, sync=self.sync)
        self.run = run
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
