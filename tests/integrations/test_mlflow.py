"""joulecast runs logged to MLflow: after the fact, live from an integration, and to a server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("pyarrow")

from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.tracking._tracking_service import utils as tracking_utils  # noqa: E402

import joulecast  # noqa: E402
from joulecast.integrations.mlflow import MlflowLogger, log_run  # noqa: E402

TOTALS = {"energy_j", "energy_j_measured", "energy_j_modelled", "duration_s", "mean_power_w"}


@pytest.fixture(scope="module")
def tracking_dir(tmp_path_factory):
    """One SQLite tracking database for the module (creating one takes seconds)."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def tracking(tracking_dir, monkeypatch):
    # Artifacts go to ./mlruns beside the working folder: keep them in the temporary one.
    monkeypatch.chdir(tracking_dir)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)  # restored after the test
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tracking_dir}/mlflow.db")
    yield MlflowClient()
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _measured_run(path: Path, epochs: int = 2) -> int:
    with joulecast.measure(name="to-mlflow", store=path, interval_s=0.02) as run:
        for i in range(epochs):
            with run.epoch(i, samples=50, loss=1.0 / (i + 1)):
                time.sleep(0.1)
    return run.run_id


def _check_logged(client: MlflowClient, mlflow_run_id: str, store: Path, run_id: int) -> None:
    history = client.get_metric_history(mlflow_run_id, "epoch_energy_j")
    assert sorted(m.step for m in history) == [0, 1]
    for key in ("epoch_mean_power_w", "epoch_j_per_sample", "epoch_duration_s"):
        assert sorted(m.step for m in client.get_metric_history(mlflow_run_id, key)) == [0, 1]
    data = client.get_run(mlflow_run_id).data
    assert TOTALS | {"j_per_sample"} <= data.metrics.keys()
    assert data.tags["joulecast.run_id"] == str(run_id)
    assert data.tags["joulecast.store"] == str(store.resolve())
    files = {a.path for a in client.list_artifacts(mlflow_run_id, "joulecast")}
    assert files == {
        f"joulecast/run-{run_id}-power.parquet",
        f"joulecast/run-{run_id}-phases.parquet",
    }


def test_log_run_after_the_fact(tmp_path, tracking):
    path = tmp_path / "runs.db"
    run_id = _measured_run(path)
    mlflow_run_id = log_run(path, run_id)
    _check_logged(tracking, mlflow_run_id, path, run_id)
    summary = joulecast.summarize(joulecast.open_store(path), run_id)
    history = tracking.get_metric_history(mlflow_run_id, "epoch_energy_j")
    by_step = {m.step: m.value for m in history}
    assert by_step == pytest.approx(dict(enumerate(summary.epochs["energy_j"])))
    assert tracking.get_run(mlflow_run_id).data.metrics["energy_j"] == pytest.approx(
        summary.energy_j
    )
    info = tracking.get_run(mlflow_run_id).info
    assert info.status == "FINISHED" and info.run_name == "to-mlflow"
    # The trace reads back as the neutral format.
    local = tracking.download_artifacts(mlflow_run_id, "joulecast", str(tmp_path / "dl"))
    phases = pd.read_parquet(Path(local) / f"run-{run_id}-phases.parquet")
    assert phases["kind"].tolist() == ["epoch", "epoch"]


def test_a_replayed_run_logs_its_replayed_energy_apart(tmp_path, tracking):
    from joulecast.sensors.replay import ReplaySensor

    path = tmp_path / "runs.db"
    trace = pd.DataFrame({"t_s": [0.0, 60.0], "device": "gpu:0", "power_w": [100.0, 100.0]})
    with joulecast.measure(store=path, sensors=[ReplaySensor(trace)], interval_s=0.02) as run:
        time.sleep(0.1)
    data = tracking.get_run(log_run(path, run.run_id)).data
    summary = joulecast.summarize(joulecast.open_store(path), run.run_id)
    assert summary.energy_j > 0
    assert data.metrics["energy_j_replayed"] == pytest.approx(summary.energy_j)
    assert data.metrics["energy_j_measured"] == 0.0
    assert data.tags["joulecast.replayed"] == "gpu:0"


def test_a_measured_run_logs_no_replayed_energy(tmp_path, tracking):
    path = tmp_path / "runs.db"
    data = tracking.get_run(log_run(path, _measured_run(path, epochs=1))).data
    assert "energy_j_replayed" not in data.metrics and "joulecast.replayed" not in data.tags


def test_log_run_into_the_active_run_leaves_it_open(tmp_path, tracking):
    path = tmp_path / "runs.db"
    run_id = _measured_run(path)
    with mlflow.start_run() as active:
        assert log_run(path, "last", artifact=False) == active.info.run_id
        assert mlflow.active_run() is not None
    data = tracking.get_run(active.info.run_id).data
    assert data.tags["joulecast.run_id"] == str(run_id)
    assert not tracking.list_artifacts(active.info.run_id)


def test_live_logging_from_the_torch_helper(tmp_path, tracking):
    pytest.importorskip("torch")
    from joulecast.integrations.torch import epochs

    path = tmp_path / "runs.db"
    logger = MlflowLogger()
    with joulecast.measure(name="live", store=path, interval_s=0.02) as run:
        for _epoch in epochs(run, 2, samples_per_epoch=50, mlflow=logger):
            time.sleep(0.1)
    assert logger.mlflow_run_id is not None
    _check_logged(tracking, logger.mlflow_run_id, path, run.run_id)
    assert tracking.get_run(logger.mlflow_run_id).info.status == "FINISHED"
    assert mlflow.active_run() is None


def test_live_logging_from_the_keras_callback(tmp_path, tracking):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    import numpy as np

    from joulecast.integrations.keras import JoulecastCallback

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = tmp_path / "runs.db"
    logger = MlflowLogger()
    cb = JoulecastCallback("keras-live", store=path, batch_size=32, mlflow=logger)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    _check_logged(tracking, logger.mlflow_run_id, path, cb.run.run_id)
    info = tracking.get_run(logger.mlflow_run_id).info
    assert info.status == "FINISHED" and info.run_name == "keras-live"


def test_mlflow_failures_do_not_stop_training(tmp_path, tracking, caplog):
    pytest.importorskip("torch")
    from joulecast.integrations.torch import epochs

    path = tmp_path / "runs.db"
    with joulecast.measure(store=path, interval_s=0.02) as run:
        done = [e.index for e in epochs(run, 2, mlflow=MlflowLogger("no-such-run"))]
    assert done == [0, 1]
    assert "MLflow" in caplog.text
    assert run.summary().status == "completed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_tracking_server(tmp_path, monkeypatch):
    """A real ``mlflow server`` on the loopback, reached through MLFLOW_TRACKING_URI."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.skip(f"mlflow server exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.skip("mlflow server did not answer within 60 s")
            time.sleep(0.5)
        monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        path = tmp_path / "runs.db"
        run_id = _measured_run(path)
        mlflow_run_id = log_run(path, run_id)
        client = MlflowClient()
        assert client._tracking_client.tracking_uri == url
        _check_logged(client, mlflow_run_id, path, run_id)
        stored = list((tmp_path / "artifacts").rglob(f"run-{run_id}-power.parquet"))
        assert len(stored) == 1  # uploaded through the server to its artifact store
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_live_forecast_is_logged(tmp_path, tracking):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    import numpy as np

    from joulecast.integrations.keras import JoulecastCallback

    x = np.zeros((32, 2), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    logger = MlflowLogger()
    cb = JoulecastCallback(
        "forecast", store=tmp_path / "runs.db", batch_size=16, mlflow=logger, forecast=True
    )
    model.fit(x, x[:, :1], batch_size=16, epochs=3, verbose=0, callbacks=[cb])
    history = tracking.get_metric_history(logger.mlflow_run_id, "forecast_total_j")
    assert [m.step for m in history] == [0, 1, 2]
    with joulecast.open_store(tmp_path / "runs.db") as s:
        stored = s.phases(cb.run.run_id, "epoch")["metrics"].iloc[-1]["forecast"]["total_j"]
    assert history[-1].value == pytest.approx(stored)


def test_the_co2e_is_logged_where_the_environment_names_an_intensity(
    tmp_path, tracking, monkeypatch, caplog
):
    from joulecast.sensors.replay import ReplaySensor

    path = tmp_path / "runs.db"
    trace = pd.DataFrame({"t_s": [0.0, 60.0], "device": "gpu:0", "power_w": [100.0, 100.0]})
    with joulecast.measure(store=path, sensors=[ReplaySensor(trace)], interval_s=0.02) as run:
        time.sleep(0.1)
    energy_j = joulecast.summarize(joulecast.open_store(path), run.run_id).energy_j
    monkeypatch.setenv("JOULECAST_INTENSITY", "400")
    data = tracking.get_run(log_run(path, run.run_id)).data
    assert data.metrics["co2e_g"] == pytest.approx(energy_j / 3.6e6 * 400)
    assert data.tags["joulecast.intensity_source"] == "given value ($JOULECAST_INTENSITY)"
    assert data.tags["joulecast.pue"] == "1"
    monkeypatch.delenv("JOULECAST_INTENSITY")
    monkeypatch.setenv("JOULECAST_REGION", "nowhere")
    data = tracking.get_run(log_run(path, run.run_id)).data
    assert "co2e_g" not in data.metrics and "energy_j" in data.metrics
    assert "no co2e_g logged: region 'nowhere'" in caplog.text
