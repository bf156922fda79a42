"""Log joulecast runs to MLflow: per-epoch energy, run totals, and the trace as Parquet.

Two ways:

- after the fact, :func:`log_run` logs a stored run to an MLflow run;
- live, an :class:`MlflowLogger` given to an integration (``mlflow=True`` or
  ``mlflow=MlflowLogger(...)``) logs each epoch as it ends and the totals when training ends.

Metrics: ``epoch_energy_j``, ``epoch_mean_power_w``, ``epoch_j_per_sample`` and
``epoch_duration_s`` with ``step`` = the epoch index; totals ``energy_j``,
``energy_j_measured``, ``energy_j_modelled``, ``duration_s``, ``mean_power_w`` and
``j_per_sample``, and ``energy_j_replayed`` for a run with devices replayed from a recorded
trace (a dry run). Tags ``joulecast.run_id``, ``joulecast.store`` and ``joulecast.status``,
and ``joulecast.replayed`` (the replayed devices) for such a run.
Artifacts under ``joulecast/``: ``run-ID-power.parquet`` and ``run-ID-phases.parquet`` (the
neutral trace format, readable by ``joulecast import trace``).

The MLflow run is the one named, else the active one (``mlflow.start_run()``), else a new one
that is ended when logging ends. The tracking URI is MLflow's own setting
(``mlflow.set_tracking_uri`` or ``MLFLOW_TRACKING_URI``): a local folder, SQLite, or a server.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

try:
    import mlflow
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "joulecast.integrations.mlflow needs MLflow: pip install 'joulecast[mlflow]'"
    ) from exc

from joulecast.energy import RunSummary, summarize
from joulecast.records import RunStatus
from joulecast.run import Run
from joulecast.store import Store
from joulecast.traces import export_run

__all__ = ["ARTIFACT_PATH", "MlflowLogger", "log_run"]

log = logging.getLogger(__name__)

ARTIFACT_PATH = "joulecast"
# MLflow metric name → column of RunSummary.epochs.
EPOCH_METRICS = {
    "epoch_energy_j": "energy_j",
    "epoch_mean_power_w": "mean_power_w",
    "epoch_j_per_sample": "j_per_sample",
    "epoch_duration_s": "duration_s",
}
TOTAL_METRICS = (
    "energy_j",
    "energy_j_measured",
    "energy_j_modelled",
    "duration_s",
    "mean_power_w",
    "j_per_sample",
)
_MLFLOW_STATUS = {
    RunStatus.COMPLETED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.INTERRUPTED: "KILLED",
    RunStatus.RUNNING: "FINISHED",
}


def _metric(key: str, value: object, step: int = 0) -> Metric | None:
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return Metric(key, number, int(time.time() * 1000), step)


def _epoch_metrics(epochs: pd.DataFrame) -> list[Metric]:
    out: list[Metric] = []
    for row in epochs.to_dict("records"):
        for key, column in EPOCH_METRICS.items():
            metric = _metric(key, row.get(column), int(row["index"]))
            if metric is not None:
                out.append(metric)
        # A live forecast made after this epoch (Run.live_forecast), in its own metrics.
        forecast = (row.get("metrics") or {}).get("forecast") or {}
        for key in ("total_j", "low_j", "high_j", "remaining_j"):
            metric = _metric(f"forecast_{key}", forecast.get(key), int(row["index"]))
            if metric is not None:
                out.append(metric)
    return out


def _replayed(summary: RunSummary) -> list[str]:
    return [d for d, total in summary.devices.items() if total.replayed]


def _total_metrics(summary: RunSummary) -> list[Metric]:
    keys = (*TOTAL_METRICS, "energy_j_replayed") if _replayed(summary) else TOTAL_METRICS
    out = [_metric(key, getattr(summary, key)) for key in keys]
    return [m for m in out if m is not None]


def _tags(summary: RunSummary, store: Store) -> list[RunTag]:
    tags = [
        RunTag("joulecast.run_id", str(summary.run_id)),
        RunTag("joulecast.store", str(Path(store.path).resolve())),
        RunTag("joulecast.status", summary.status),
    ]
    replayed = _replayed(summary)
    if replayed:
        tags.append(RunTag("joulecast.replayed", ", ".join(replayed)))
    return tags


def _log_trace(client: MlflowClient, mlflow_run_id: str, store: Store, run_id: int) -> None:
    with tempfile.TemporaryDirectory(prefix="joulecast-mlflow-") as tmp:
        export_run(store, run_id, tmp, format="parquet")
        client.log_artifacts(mlflow_run_id, tmp, ARTIFACT_PATH)


def _open_mlflow_run(mlflow_run_id: str | None, run_name: str | None) -> tuple[str, bool]:
    """The MLflow run to log to, and whether it was started here (and is to be ended here)."""
    if mlflow_run_id is not None:
        return mlflow_run_id, False
    active = mlflow.active_run()
    if active is not None:
        return str(active.info.run_id), False
    return str(mlflow.start_run(run_name=run_name).info.run_id), True


def _end_mlflow_run(mlflow_run_id: str, status: RunStatus) -> None:
    mlflow_status = _MLFLOW_STATUS[status]
    active = mlflow.active_run()
    if active is not None and active.info.run_id == mlflow_run_id:
        mlflow.end_run(mlflow_status)
    else:
        MlflowClient().set_terminated(mlflow_run_id, mlflow_status)


def log_run(
    store: Store | str | os.PathLike[str],
    run_id: int | str,
    mlflow_run_id: str | None = None,
    *,
    artifact: bool = True,
) -> str:
    """Log a stored joulecast run to MLflow; returns the MLflow run id.

    Args:
        store: the joulecast store (a :class:`~joulecast.Store` or its path).
        run_id: the joulecast run: an id, a name, or ``"last"``.
        mlflow_run_id: the MLflow run to log to; default the active run, else a new one
            (named after the joulecast run, and ended here).
        artifact: also log the run's samples and phases as Parquet files.
    """
    opened = not isinstance(store, Store)
    st = Store(store) if not isinstance(store, Store) else store
    try:
        rid = st.resolve(run_id)
        summary = summarize(st, rid)
        target, started = _open_mlflow_run(mlflow_run_id, summary.name)
        client = MlflowClient()
        try:
            client.log_batch(
                target,
                metrics=_epoch_metrics(summary.epochs) + _total_metrics(summary),
                tags=_tags(summary, st),
            )
            if artifact:
                _log_trace(client, target, st, rid)
        except BaseException:
            if started:
                _end_mlflow_run(target, RunStatus.FAILED)
            raise
        if started:
            _end_mlflow_run(target, RunStatus(summary.status))
        log.info("logged joulecast run %d to MLflow run %s", rid, target)
        return target
    finally:
        if opened:
            st.close()


class MlflowLogger:
    """Logs a run to MLflow while it trains; give it to an integration as ``mlflow=``.

    Each epoch is logged when it ends (from the readings stored by then: at most one sampling
    interval short of its end); the totals, tags and Parquet trace when training ends. Under
    ``joulecast measure`` the totals are those at the end of training: call :func:`log_run`
    afterwards for the whole run.

    Args:
        run_id: the MLflow run to log to; default the active run, else a new one started at
            the beginning of training and ended at its end.
        artifact: log the trace as Parquet artifacts when training ends.

    Attributes:
        mlflow_run_id: the MLflow run logged to (last), once logging started.
    """

    def __init__(self, run_id: str | None = None, *, artifact: bool = True) -> None:
        self.run_id = run_id
        self.artifact = artifact
        self.mlflow_run_id: str | None = None
        self._open = False
        self._started_here = False

    def start(self, run: Run) -> str:
        """Pick (or start) the MLflow run for ``run``; returns its id."""
        if not self._open or self.mlflow_run_id is None:
            name = run.store.run(run.run_id)["name"]
            self.mlflow_run_id, self._started_here = _open_mlflow_run(self.run_id, name)
            self._open = True
            MlflowClient().log_batch(
                self.mlflow_run_id,
                tags=[
                    RunTag("joulecast.run_id", str(run.run_id)),
                    RunTag("joulecast.store", str(Path(run.store.path).resolve())),
                ],
            )
        return self.mlflow_run_id

    def log_epoch(self, run: Run, index: int) -> None:
        """Log epoch ``index`` of ``run`` (energy, mean power, J/sample, duration)."""
        target = self.start(run)
        metrics = _epoch_metrics(run.epoch_table([index]))
        if metrics:
            MlflowClient().log_batch(target, metrics=metrics)

    def finish(
        self, run: Run, *, status: RunStatus | str = RunStatus.COMPLETED, end_run: bool = True
    ) -> None:
        """Log totals, tags and the trace; end the MLflow run if it was started here.

        ``end_run`` False keeps it open (more training on the same run is to come).
        """
        target = self.start(run)
        summary = run.summary()
        client = MlflowClient()
        client.log_batch(target, metrics=_total_metrics(summary), tags=_tags(summary, run.store))
        if self.artifact:
            _log_trace(client, target, run.store, run.run_id)
        if end_run and self._started_here:
            _end_mlflow_run(target, RunStatus(status))
            self._open = False
            self._started_here = False
