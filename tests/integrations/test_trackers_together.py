"""One training logged to MLflow, W&B and TensorBoard at once: the same keys in all three, and a
key added in one place (integrations/_tracking.py) reaches all three."""

from __future__ import annotations

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytest.importorskip("tensorboard")

from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.tracking._tracking_service import utils as tracking_utils  # noqa: E402

import joulecast  # noqa: E402
from joulecast.integrations import _tracking  # noqa: E402
from joulecast.integrations._common import Session  # noqa: E402
from joulecast.integrations.mlflow import MlflowLogger  # noqa: E402
from joulecast.integrations.tensorboard import TensorBoardLogger  # noqa: E402
from joulecast.integrations.wandb import WandbLogger  # noqa: E402

from .helpers import train  # noqa: E402
from .test_tensorboard import read, scalars, text  # noqa: E402
from .test_wandb import Logged  # noqa: E402


@pytest.mark.slow  # an MLflow database and a W&B service to start: about 20 s
@pytest.mark.usefixtures("wandb_offline")
def test_one_training_logs_the_same_keys_to_all_three(tmp_path, monkeypatch):
    # A new per-epoch key and a new total, added where every key is chosen (as co2e_g would be).
    monkeypatch.setitem(_tracking.EPOCH_METRICS, "epoch_samples", "samples")
    monkeypatch.setattr(_tracking, "TOTAL_METRICS", (*_tracking.TOTAL_METRICS, "samples_processed"))
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)  # restored after the test
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # An intensity from the shipped table, so the totals carry co2e_g and the tags its source
    # (its value against the logged energy is checked after the fact in each tracker's tests:
    # logged live, the two are read from the store a moment apart while the run goes on).
    monkeypatch.delenv("JOULECAST_INTENSITY", raising=False)
    monkeypatch.setenv("JOULECAST_REGION", "fra")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")

    path = tmp_path / "runs.db"
    mlf, wb, tb = MlflowLogger(artifact=False), WandbLogger(), TensorBoardLogger(tmp_path / "tb")
    with joulecast.measure(name="all-three", store=path, interval_s=0.02) as run:
        session = Session(run=run, mlflow=mlf, wandb=wb, tensorboard=tb)
        train(session, 2, samples=25)
        session.finish(end_trackers=True)
    epoch_keys = {*_tracking.EPOCH_METRICS}
    totals = {*_tracking.TOTAL_METRICS}
    co2e_tags = {
        "joulecast.intensity_source": (
            "region FRA (France) 2021 yearly average, Our World in Data via CodeCarbon"
        ),
        "joulecast.intensity_g_per_kwh": "67.39",
        "joulecast.pue": "1",
    }

    client = MlflowClient()
    for key in epoch_keys:
        assert [m.step for m in client.get_metric_history(mlf.mlflow_run_id, key)] == [0, 1], key
    data = client.get_run(mlf.mlflow_run_id).data
    assert data.metrics.keys() >= totals | {"co2e_g"}
    # The CO2e is of the energy logged beside it, though the store grew between the two reads.
    assert data.metrics["co2e_g"] == pytest.approx(data.metrics["energy_j"] / 3.6e6 * 67.39)
    assert {key: data.tags.get(key) for key in co2e_tags} == co2e_tags

    logged = Logged(wb.wandb_run)
    assert sorted(logged.epochs()) == [0, 1]
    for row in logged.epochs().values():
        assert row.keys() >= epoch_keys and row["epoch_samples"] == 25
    assert logged.summary.keys() >= totals and logged.summary["samples_processed"] == 50
    assert logged.summary["co2e_g"] == pytest.approx(logged.summary["energy_j"] / 3.6e6 * 67.39)
    assert {key: logged.config.get(key) for key in co2e_tags} == co2e_tags

    events = read(tmp_path / "tb")
    for key in epoch_keys:
        assert sorted(scalars(events, key)) == [0, 1], key
    assert set(events.Tags()["scalars"]) >= totals | {"co2e_g"}
    assert scalars(events, "epoch_samples") == {0: 25.0, 1: 25.0}
    assert {key: text(events, key) for key in co2e_tags} == co2e_tags
