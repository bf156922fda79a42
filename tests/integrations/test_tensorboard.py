"""joulecast runs logged to TensorBoard event files, read back with TensorBoard's own reader."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)

import joulecast
from joulecast.integrations._common import Session
from joulecast.integrations.tensorboard import TensorBoardLogger

from .helpers import measured_run, train

EPOCH_KEYS = {"epoch_energy_j", "epoch_mean_power_w", "epoch_j_per_sample", "epoch_duration_s"}
TOTALS = {"energy_j", "energy_j_measured", "energy_j_modelled", "duration_s", "mean_power_w"}
TAGS = {"joulecast.run_id", "joulecast.store", "joulecast.status"}


def read(folder: str | Path) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def scalars(events: EventAccumulator, key: str) -> dict[int, float]:
    return {e.step: e.value for e in events.Scalars(key)}


def text(events: EventAccumulator, key: str) -> str:
    """The last value of a text summary (tags are logged at the start and again at the end)."""
    return events.Tensors(key)[-1].tensor_proto.string_val[0].decode()


def _check(events: EventAccumulator, path: Path, run_id: int, epochs: int = 2) -> None:
    tags = events.Tags()
    assert set(tags["scalars"]) >= EPOCH_KEYS | TOTALS | {"j_per_sample"}
    for key in EPOCH_KEYS:
        assert sorted(scalars(events, key)) == list(range(epochs)), key
    assert set(tags["tensors"]) >= TAGS
    assert text(events, "joulecast.run_id") == str(run_id)
    assert text(events, "joulecast.store") == str(path.resolve())


def test_log_run_after_the_fact(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    run = measured_run(path, "to-tensorboard")
    monkeypatch.setenv("JOULECAST_INTENSITY", "400")
    folder = tmp_path / "tb"
    assert TensorBoardLogger(folder).log_run(path, run.run_id) == str(folder)
    events = read(folder)
    _check(events, path, run.run_id)
    summary = joulecast.summarize(joulecast.open_store(path), run.run_id)
    energies = scalars(events, "epoch_energy_j")
    # TensorBoard keeps scalars as 32-bit floats.
    assert energies == pytest.approx(dict(enumerate(summary.epochs["energy_j"])), rel=1e-6)
    assert scalars(events, "energy_j") == pytest.approx({0: summary.energy_j}, rel=1e-6)
    assert text(events, "joulecast.status") == "completed"
    # The CO2e of the logged energy at 400 gCO2e/kWh, and where that intensity came from.
    energy_j = scalars(events, "energy_j")[0]
    assert energy_j > 0
    assert scalars(events, "co2e_g") == pytest.approx({0: energy_j / 3.6e6 * 400}, rel=1e-6)
    assert text(events, "joulecast.intensity_source") == "given value ($JOULECAST_INTENSITY)"
    assert text(events, "joulecast.intensity_g_per_kwh") == "400"
    assert text(events, "joulecast.pue") == "1"


def test_live_logging_with_a_forecast_from_the_torch_helper(tmp_path):
    pytest.importorskip("torch")
    from joulecast.integrations.torch import epochs

    path = tmp_path / "runs.db"
    logger = TensorBoardLogger(tmp_path / "tb")
    with joulecast.measure(name="live", store=path, interval_s=0.02) as run:
        run.live_forecast(3, progress=False)
        for epoch in epochs(run, 3, samples_per_epoch=50, tensorboard=logger):
            time.sleep(0.1)
            if epoch.index == 1:  # each epoch is on disk as soon as it is logged
                assert sorted(scalars(read(tmp_path / "tb"), "epoch_energy_j")) == [0]
    events = read(tmp_path / "tb")
    _check(events, path, run.run_id, epochs=3)
    with joulecast.open_store(path) as store:
        stored = store.phases(run.run_id, "epoch")["metrics"].tolist()
    forecasts = scalars(events, "forecast_total_j")
    assert forecasts, "no forecast logged"
    expected = {i: stored[i]["forecast"]["total_j"] for i in forecasts}
    assert forecasts == pytest.approx(expected, rel=1e-6)


def test_the_default_folder_is_one_plain_name_under_runs(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    # A region not in the table: the run is logged all the same, without co2e_g.
    monkeypatch.setenv("JOULECAST_REGION", "nowhere")
    with joulecast.measure(name="../../outside/a b", store=tmp_path / "runs.db") as run:
        run.mark_epoch(0)
    logger = TensorBoardLogger()
    folder = Path(logger.log_run(tmp_path / "runs.db", run.run_id))
    assert folder.parent == Path("runs")
    assert folder.name.startswith("joulecast-outside-a-b-")
    assert not (tmp_path.parent / "outside").exists()
    tags = read(tmp_path / folder).Tags()
    assert "energy_j" in tags["scalars"] and "co2e_g" not in tags["scalars"]
    assert "joulecast.intensity_source" not in tags["tensors"]
    assert "no co2e_g logged: region 'nowhere'" in caplog.text


def test_a_folder_that_cannot_be_written_warns_once_and_training_goes_on(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with joulecast.measure(store=tmp_path / "runs.db", interval_s=0.02) as run:
        session = Session(run=run, tensorboard=TensorBoardLogger(blocker / "tb"))
        train(session, 2)
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("TensorBoard")]
    assert len(warnings) == 1 and "starting failed" in warnings[0], warnings
    assert run.summary().status == "completed" and len(run.epochs) == 2
