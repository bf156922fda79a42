"""Run a command as a child process under measurement: what ``joulecast measure`` does.

:func:`measure_command` runs it to the end and returns the run's summary;
:class:`MeasuredCommand` does the same in steps, for a caller that forwards signals (the CLI
installs the handlers; the library never does). The child finds the run in its environment
(``JOULECAST_RUN_ID``, ``JOULECAST_STORE``), so ``joulecast.measure()`` and the integrations
inside it mark their epochs in this run and leave the sampling to this process.

On Linux the command gets SIGTERM when this process ends, even by SIGKILL
(:func:`joulecast.processes.spawn`); on any platform, the next process to open the store finds
this one gone and stops what is left of the command (:meth:`Store.record_command`): nothing
goes on training unmeasured for long.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joulecast.distributed import (
    current_job,
    launched_job,
    next_attempt,
    node_gpus,
    node_store,
)
from joulecast.errors import InputError, JoulecastError
from joulecast.forecast import AUTO, DEFAULT_WINDOW, LiveForecaster, Method
from joulecast.inputs import REPLAY_GPUS_ENV, RUN_ENV, STORE_ENV
from joulecast.monitor import DEFAULT_INTERVAL_S, Monitor
from joulecast.processes import spawn, started
from joulecast.records import Phase, PhaseKind, RunStatus
from joulecast.sensors import Sensor, detect, replay_trace
from joulecast.store import Store, default_store_path

if TYPE_CHECKING:
    from joulecast.energy import RunSummary
    from joulecast.live import LiveForecast
    from joulecast.prometheus import Exporter

log = logging.getLogger(__name__)

# How often the epochs the command marks are looked for, for the live forecast.
_POLL_S = 0.5


class MeasuredCommand:
    """A command run as a child process while this process samples it into a run.

    ``epochs`` (the planned number) turns on the live forecast: after each epoch the command
    marks, a forecast is made (:class:`joulecast.live.LiveForecast`), stored with the epoch
    unless the command's own live forecast stored one, and printed on stderr (``progress``).

    ``replay_gpus`` (a neutral ``power.csv``; default ``$JOULECAST_REPLAY_GPUS``, see
    :func:`joulecast.sensors.replay_trace`) samples the trace's GPUs, replayed in real time,
    instead of this machine's (:func:`joulecast.sensors.detect`); a trace that cannot be
    replayed stops :meth:`start`. The command gets it as ``$JOULECAST_REPLAY_GPUS``, so that
    a run it opens itself replays them too.

    In a distributed job this process samples its node for the ranks it launches (or runs
    beside, see :func:`pass_through`). Named by ``run_uid`` (or ``$JOULECAST_RUN_UID``), or
    spanning nodes under SLURM, the node's run goes to its node shard in ``shard_dir``
    (:func:`joulecast.distributed.node_store`); ``joulecast collect`` merges the job's shards.

    ``prometheus`` (``[ADDR:]PORT``; the address defaults to 127.0.0.1) serves the run's live
    power, energy, epoch, forecast and sampling health for Prometheus to scrape while the
    command runs; ``prometheus_textfile`` writes them to a file for node_exporter's textfile
    collector (:mod:`joulecast.prometheus`). Either is set up by :meth:`start` before the
    run opens, so that a port in use stops it with nothing measured or started.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        store: Store | str | os.PathLike[str] | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        gpus: bool = True,
        sensors: Sequence[Sensor] | None = None,
        replay_gpus: str | os.PathLike[str] | None = None,
        epochs: int | None = None,
        forecast_method: Method | str = Method.EPOCH_ENERGY,
        stable_epoch: int | str = AUTO,
        window: int = DEFAULT_WINDOW,
        progress: bool = True,
        run_uid: str | None = None,
        shard_dir: str | os.PathLike[str] | None = None,
        prometheus: str | int | None = None,
        prometheus_textfile: str | os.PathLike[str] | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        if not self.argv:
            raise InputError(
                "measure: no command given (usage: joulecast measure [options] -- CMD ...)"
            )
        if epochs is not None and epochs < 1:
            raise InputError(f"epochs: expected a whole number of at least 1, got {epochs}")
        self._store_arg = store
        self.name = name or Path(self.argv[0]).name
        self.tags = dict(tags or {})
        self.interval_s = interval_s
        self.gpus = gpus
        self.sensors = sensors
        self.replay_gpus = replay_gpus
        self.epochs = epochs
        self.forecast_method = Method(forecast_method)
        self.stable_epoch = stable_epoch
        self.window = window
        self.progress = progress
        self.run_uid = run_uid
        self.shard_dir = shard_dir
        self.prometheus = prometheus
        self.prometheus_textfile = prometheus_textfile
        self.exporter: Exporter | None = None
        self.store: Store | None = None
        self.run_id: int | None = None
        self.live: LiveForecast | None = None
        self._monitor: Monitor | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._received: list[int] = []
        self._watcher: threading.Thread | None = None
        self._stop_watching = threading.Event()

    def start(self) -> int:
        """Open the run, start sampling and the command; return the run id.

        Call it from a thread that lives until the command ends (the one that calls
        :meth:`wait`): on Linux the command gets SIGTERM when that thread ends.

        Raises:
            InputError: the command cannot be started (the run is removed again), the
                ``replay_gpus`` trace cannot be replayed, or the ``prometheus`` port cannot be
                listened on (no run is opened).
        """
        from joulecast.prometheus import open_exporter

        # The exporter first: a port in use leaves nothing behind.
        self.exporter = open_exporter(
            self.prometheus, self.prometheus_textfile, strict=True, what="--prometheus"
        )
        try:
            return self._start()
        except BaseException:
            self._close_exporter()
            raise

    def _start(self) -> int:
        # Sensors before the store: a trace that cannot be replayed leaves no store file behind.
        job = launched_job(current_job(uid=self.run_uid), self.argv)
        sensors = self.sensors
        if sensors is None:
            visible, order = node_gpus(job)
            found, reports = detect(
                pid=os.getpid(),
                include_root=False,
                interval_s=self.interval_s,
                gpus=self.gpus,
                replay_gpus=self.replay_gpus,
                strict_replay=True,
                visible_gpus=visible,
                gpu_order=order,
            )
            for rep in reports:
                if not rep.found:
                    log.info("sensor %s not used: %s", rep.name, rep.reason)
            sensors = found
        store = self._store_arg
        uid = None
        if not isinstance(store, Store):
            try:
                path, uid = node_store(
                    job, store if store is not None else default_store_path(), self.shard_dir
                )
                store = Store(path)
                if uid is not None:
                    job = next_attempt(job, store)
                    uid = job.node_run_uid()
            except JoulecastError:
                for sensor in sensors if self.sensors is None else ():
                    sensor.close()
                raise
        self.store = store
        tags = {**self.tags, **(job.tags() if uid is not None or job.distributed else {})}
        monitor = Monitor(
            sensors, store, interval_s=self.interval_s, name=self.name, tags=tags, uid=uid
        )
        run_id = monitor.start()
        self._monitor, self.run_id = monitor, run_id
        env = dict(os.environ, **{RUN_ENV: str(run_id), STORE_ENV: str(store.path.resolve())})
        # Only what this process replays reaches the command (nothing under gpus=False), as
        # an absolute path so that it is found from any folder. A pipe (a process
        # substitution) is not passed on: it was read here, and resolving its name mangles it.
        env.pop(REPLAY_GPUS_ENV, None)
        replay = replay_trace(self.replay_gpus, gpus=self.gpus)
        if replay is not None and os.path.isfile(replay[0]):
            env[REPLAY_GPUS_ENV] = os.path.abspath(replay[0])
        try:
            self._child = spawn(self.argv, env)
        except OSError as exc:
            monitor.stop(RunStatus.FAILED)
            store.delete_run(run_id)
            raise InputError(f"measure: cannot run {self.argv[0]!r}: {exc.strerror}") from exc
        if self.exporter is not None:
            self.exporter.watch(store, run_id, monitor)
        try:  # so that a process finding this one gone stops the command (on this host)
            store.record_command(run_id, started(self._child.pid))
        except JoulecastError as exc:  # the command runs: measuring it goes on regardless
            log.warning("run %d: could not record its command's process: %s", run_id, exc)
        if self.epochs is not None:
            from joulecast.live import LiveForecast

            forecaster = LiveForecaster(
                self.epochs,
                method=self.forecast_method,
                stable_epoch=self.stable_epoch,
                window=self.window,
            )
            self.live = LiveForecast(
                lambda: store,
                run_id,
                forecaster,
                progress=self.progress,
            )
            self._watcher = threading.Thread(
                target=self._watch, name="joulecast-forecast", daemon=True
            )
            self._watcher.start()
        return run_id

    def send_signal(self, signum: int) -> None:
        """Pass ``signum`` to the command; if it ends by that signal, the run is interrupted."""
        self._received.append(signum)
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signum)

    def wait(self) -> RunSummary:
        """Wait for the command, finish the run with its outcome, and return the summary.

        Exit status 0 completes the run; another fails it (``exit_code``); death by a signal
        fails it, or interrupts it when the signal was one passed on by :meth:`send_signal`
        (or a Ctrl-C, which reaches the command too).
        """
        from joulecast.energy import summarize

        child, monitor, store = self._child, self._monitor, self.store
        if child is None or monitor is None or store is None or self.run_id is None:
            raise JoulecastError("MeasuredCommand.wait() before start()")
        interrupted = False
        while True:
            try:
                rc = child.wait()
                break
            except KeyboardInterrupt:  # the command got the Ctrl-C too: let it finish
                interrupted = True
                self._received.append(signal.SIGINT)
        self._stop_watching.set()
        if self._watcher is not None:
            self._watcher.join()
            self._poll_epochs()  # epochs that ended since the last look
        if rc == 0:
            status, exit_code, sig = RunStatus.COMPLETED, 0, None
        elif rc < 0:
            sig = signal.Signals(-rc).name
            status = RunStatus.INTERRUPTED if -rc in self._received else RunStatus.FAILED
            exit_code = None
        else:
            status, exit_code, sig = RunStatus.FAILED, rc, None
        try:
            monitor.stop(status, exit_code=exit_code, signal=sig)
        finally:
            self._close_exporter()  # its last figures are the run's final ones
        summary = summarize(store, self.run_id)
        if interrupted:
            raise KeyboardInterrupt
        return summary

    def _close_exporter(self) -> None:
        if self.exporter is not None:
            self.exporter.close()

    # -- live forecast ---------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop_watching.wait(_POLL_S):
            self._poll_epochs()

    def _poll_epochs(self) -> None:
        """Forecast after each epoch the command finished since the last look, in order."""
        import pandas as pd

        live, monitor, store = self.live, self._monitor, self.store
        if live is None or monitor is None or store is None or self.run_id is None:
            return
        try:
            epochs = store.phases(self.run_id, PhaseKind.EPOCH.value).dropna(subset=["end_s"])
            for row in epochs.sort_values("index").itertuples(index=False):
                index = int(row.index)
                if live.seen(index):
                    continue
                monitor.wait_for_readings(float(row.end_s))
                metrics = dict(row.metrics)
                phase = Phase(
                    PhaseKind.EPOCH,
                    index,
                    float(row.start_s),
                    float(row.end_s),
                    None if pd.isna(row.samples) else int(row.samples),
                    metrics,
                )
                live.after_epoch(phase, overwrite=False)
        except Exception as exc:  # the forecast line must never end the measurement
            log.warning("live forecast failed: %s", exc)


def pass_through(argv: Sequence[str]) -> None:
    """Replace this process by the command, unmeasured: what ``joulecast measure --per-node``
    does on a job's ranks that are not their node's local rank 0 (that one samples the node).

    Raises:
        InputError: the command cannot be started.
    """
    args = [str(a) for a in argv]
    if not args:
        raise InputError(
            "measure: no command given (usage: joulecast measure [options] -- CMD ...)"
        )
    try:
        os.execvp(args[0], args)
    except OSError as exc:
        raise InputError(f"measure: cannot run {args[0]!r}: {exc.strerror}") from exc


def measure_command(argv: Sequence[str], **options: Any) -> RunSummary:
    """Run ``argv`` as a child process under measurement and return the run's summary.

    ``options`` are the keyword arguments of :class:`MeasuredCommand` (``store``, ``name``,
    ``tags``, ``interval_s``, ``gpus``, ``sensors``, ``replay_gpus``, ``epochs``,
    ``forecast_method``, ``stable_epoch``, ``window``, ``progress``, ``run_uid``,
    ``shard_dir``, ``prometheus``, ``prometheus_textfile``). The summary's
    ``status``, ``exit_code`` and ``signal`` give the command's outcome.

    Raises:
        InputError: ``argv`` is empty or cannot be started.
    """
    command = MeasuredCommand(argv, **options)
    command.start()
    return command.wait()
