"""Log joulecast runs to MLflow: per-epoch energy, run totals, and the trace as Parquet.

Two ways:

- after the fact, :func:`log_run` logs a stored run to an MLflow run;
- live, an :class:`MlflowLogger` given to an integration (``mlflow=True`` or
  ``mlflow=MlflowLogger(...)``) logs each epoch as it ends and the totals when training ends.

Metrics: ``epoch_energy_j``, ``epoch_mean_power_w``, ``epoch_j_per_sample`` and
``epoch_duration_s`` with ``step`` = the epoch index; totals ``energy_j``,
``energy_j_measured``, ``energy_j_modelled``, ``duration_s``, ``mean_power_w`` and
``j_per_sample``, ``energy_j_replayed`` for a run with devices replayed from a recorded
trace (a dry run), and ``co2e_g`` where the environment names an intensity. Tags
``joulecast.run_id``, ``joulecast.store`` and ``joulecast.status``, ``joulecast.replayed``
(the replayed devices) for such a run, and with ``co2e_g`` ``joulecast.intensity_source``,
``joulecast.intensity_g_per_kwh`` and ``joulecast.pue``.
Artifacts under ``joulecast/``: ``run-ID-power.parquet`` and ``run-ID-phases.parquet`` (the
neutral trace format, readable by ``joulecast import trace``).

The MLflow run is the one named, else the active one (``mlflow.start_run()``), else a new one
that is ended when logging ends. The tracking URI is MLflow's own setting
(``mlflow.set_tracking_uri`` or ``MLFLOW_TRACKING_URI``): a local folder, SQLite, or a server.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence

try:
    import mlflow
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "joulecast.integrations.mlflow needs MLflow: pip install 'joulecast[mlflow]'"
    ) from exc

from joulecast.integrations._tracking import Point, Tracker
from joulecast.records import RunStatus
from joulecast.store import Store
from joulecast.traces import export_run

__all__ = ["ARTIFACT_PATH", "MlflowLogger", "log_run"]

ARTIFACT_PATH = "joulecast"
_MLFLOW_STATUS = {
    RunStatus.COMPLETED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.INTERRUPTED: "KILLED",
    RunStatus.RUNNING: "FINISHED",
}


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
    return MlflowLogger(mlflow_run_id, artifact=artifact).log_run(store, run_id)


class MlflowLogger(Tracker):
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

    label = "MLflow"

    def __init__(self, run_id: str | None = None, *, artifact: bool = True) -> None:
        super().__init__()
        self.run_id = run_id
        self.artifact = artifact

    @property
    def mlflow_run_id(self) -> str | None:
        """The MLflow run logged to (last), once logging started."""
        return self.target

    def _open_target(self, name: str | None) -> tuple[str, bool]:
        return _open_mlflow_run(self.run_id, name)

    def _log(self, points: Sequence[Point], tags: Mapping[str, str]) -> None:
        assert self.target is not None
        ms = int(time.time() * 1000)
        MlflowClient().log_batch(
            self.target,
            metrics=[Metric(p.key, p.value, ms, p.step or 0) for p in points],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )

    def _log_trace(self, store: Store, run_id: int) -> None:
        if not self.artifact:
            return
        assert self.target is not None
        with tempfile.TemporaryDirectory(prefix="joulecast-mlflow-") as tmp:
            export_run(store, run_id, tmp, format="parquet")
            MlflowClient().log_artifacts(self.target, tmp, ARTIFACT_PATH)

    def _close(self, status: RunStatus) -> None:
        assert self.target is not None
        _end_mlflow_run(self.target, status)
