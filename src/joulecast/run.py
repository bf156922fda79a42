"""The measuring API: :func:`measure` (context manager, decorator, start/stop) and :class:`Run`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from joulecast.energy import RunSummary, phase_table, summarize
from joulecast.errors import JoulecastError
from joulecast.forecast import (
    DEFAULT_STABLE_EPOCH,
    DEFAULT_WINDOW,
    EnergyBudget,
    Forecast,
    LiveForecaster,
    Method,
    progress_line,
)
from joulecast.inputs import RUN_ENV, STORE_ENV
from joulecast.monitor import DEFAULT_INTERVAL_S, Monitor
from joulecast.records import Phase, PhaseKind, RunStatus
from joulecast.sensors import Sensor, detect_sensors
from joulecast.store import Store, default_store_path

log = logging.getLogger(__name__)


@dataclass
class PhaseHandle:
    """Yielded by :meth:`Run.epoch` / :meth:`Run.step`: set ``samples`` or add ``metrics``."""

    index: int
    samples: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class Run:
    """A run being measured (or joined): marks phases and reads back energy."""

    def __init__(self, monitor: Monitor, *, owns_store: bool = False) -> None:
        self._monitor = monitor
        self._owns_store = owns_store
        self._last_epoch_end: float | None = None
        # Where an epoch marked with mark_epoch() alone begins: the run's start, or the moment
        # this process joined it.
        self._began_s = monitor.now_s() if monitor.joined else 0.0
        self._forecaster: LiveForecaster | None = None
        self._budget: EnergyBudget | None = None
        self._on_update: Callable[[Forecast], None] | None = None
        self._progress = False
        self._epoch_rows: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
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

    def begin(self, kind: PhaseKind | str, index: int) -> None:
        """Open an epoch or step now (pair with :meth:`end`; for callbacks)."""
        self._monitor.begin_phase(PhaseKind(kind), index)

    def end(
        self,
        kind: PhaseKind | str,
        index: int,
        *,
        samples: int | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        """Close an epoch or step opened with :meth:`begin`."""
        phase = self._monitor.end_phase(PhaseKind(kind), index, samples=samples, metrics=metrics)
        if phase.kind is PhaseKind.EPOCH:
            self._last_epoch_end = phase.end_s
            self._after_epoch(phase)

    def mark_epoch(self, index: int, *, samples: int | None = None, **metrics: Any) -> None:
        """Record that epoch ``index`` ends now; it began where the previous epoch ended.

        The first epoch marked this way begins when the run (or this process's join) began.
        """
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
        stable_epoch: int = DEFAULT_STABLE_EPOCH,
        window: int = DEFAULT_WINDOW,
        budget: EnergyBudget | None = None,
        on_update: Callable[[Forecast], None] | None = None,
        progress: bool = True,
    ) -> None:
        """Re-forecast the total energy after every epoch of a run of ``total_epochs``.

        Each forecast is stored with its epoch (``metrics["forecast"]``), logged, printed as a
        progress line on stderr (unless ``progress`` is False) and passed to ``on_update``.
        With a ``budget``, :attr:`stop_reason` is set once it says stop; the training loop (or
        an integration's callback) decides to stop on it.
        """
        self._forecaster = LiveForecaster(
            total_epochs, method=method, stable_epoch=stable_epoch, window=window
        )
        self._budget = budget
        self._on_update = on_update
        self._progress = progress

    @property
    def forecast(self) -> Forecast | None:
        """The latest live forecast, if :meth:`live_forecast` is on and an epoch has ended."""
        return self._forecaster.last if self._forecaster is not None else None

    @property
    def should_stop(self) -> bool:
        """True once the energy budget of :meth:`live_forecast` says stop."""
        return self.stop_reason is not None

    def epoch_table(self, indices: list[int]) -> pd.DataFrame:
        """The per-epoch table (as :attr:`epochs`) for the epochs ``indices`` only.

        Reads just the samples around those epochs, so it stays cheap however long the run:
        what the per-epoch hooks (live forecast, MLflow) use.
        """
        if self._monitor.running:
            self._monitor.flush()
        phases = self.store.phases(self.run_id, "epoch")
        phases = phases[phases["index"].isin(indices)].dropna(subset=["end_s"])
        if phases.empty:
            return phase_table(self.store.samples(self.run_id, 0.0, 0.0), phases)
        # A few seconds either side, so the epochs' edges interpolate between samples.
        samples = self.store.samples(
            self.run_id, float(phases["start_s"].min()) - 5.0, float(phases["end_s"].max()) + 5.0
        )
        return phase_table(samples, phases)

    def _after_epoch(self, phase: Phase) -> None:
        if self._forecaster is None or phase.end_s is None:
            return
        try:
            row = self.epoch_table([phase.index]).iloc[0]
            self._epoch_rows.append(
                {
                    "index": phase.index,
                    "duration_s": row["duration_s"],
                    "energy_j": row["energy_j"],
                    "metrics": dict(phase.metrics),
                }
            )
            table = pd.DataFrame(self._epoch_rows)
            result = self._forecaster.update(table)
        except JoulecastError as exc:
            log.info("no forecast after epoch %d: %s", phase.index, exc)
            return
        metrics = {**phase.metrics, "forecast": result.to_dict()}
        if self._budget is not None and self.stop_reason is None:
            decision = self._budget.check(table, result)
            if decision.stop:
                self.stop_reason = decision.reason
                metrics["early_stop"] = decision.reason
                self.store.update_run(self.run_id, tags={"early_stop": decision.reason})
                log.warning(
                    "energy-aware early stop after epoch %d: %s", phase.index, decision.reason
                )
        self.store.write_phases(self.run_id, [replace(phase, metrics=metrics)])
        log.info(
            "epoch %d: forecast %.1f kJ [%.1f, %.1f], %.1f kJ to go (%s)",
            phase.index,
            result.total_j / 1e3,
            result.low_j / 1e3,
            result.high_j / 1e3,
            result.remaining_j / 1e3,
            result.method,
        )
        if self._progress:
            print(f"joulecast: {progress_line(result)}", file=sys.stderr, flush=True)
        if self._on_update is not None:
            self._on_update(result)

    # -- reading back ----------------------------------------------------------------------

    def summary(self) -> RunSummary:
        """Totals, per-device figures and the per-epoch table, as stored so far."""
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
    ) -> None:
        self.name = name
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
            run = Run(monitor, owns_store=not isinstance(self.store, Store))
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
            run = Run(monitor, owns_store=owns)
        self.run = run
        return run

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
