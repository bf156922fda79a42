"""joulecast runs logged to Weights & Biases in offline mode, read back from the run's .wandb log
with wandb's own reader (``wandb leet inspect --json``). Nothing reaches the network."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

wandb = pytest.importorskip("wandb")

import joulecast  # noqa: E402
from joulecast.integrations._common import Session  # noqa: E402
from joulecast.integrations.wandb import EPOCH_AXIS, WandbLogger  # noqa: E402

from .helpers import measured_run, train  # noqa: E402

EPOCH_KEYS = {"epoch_energy_j", "epoch_mean_power_w", "epoch_j_per_sample", "epoch_duration_s"}
TOTALS = {"energy_j", "energy_j_measured", "energy_j_modelled", "duration_s", "mean_power_w"}


pytestmark = pytest.mark.usefixtures("wandb_offline")


class Logged:
    """An offline W&B run read back: its history rows, summary, config and exit code."""

    def __init__(self, run: Any) -> None:
        path = Path(run.dir).parent / f"run-{run.id}.wandb"
        done = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0 and "No such command" in done.stderr:
            pytest.skip("this wandb has no reader of .wandb logs (wandb leet inspect)")
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        self.types = [r["type"] for r in records]
        self.name = next(r["run"].get("display_name") for r in records if r["type"] == "run")
        self.history = [r["history"]["item"] for r in records if r["type"] == "history"]
        self.summary: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        for r in records:
            if r["type"] == "summary":
                self.summary.update(r["summary"].get("update", {}))
            if r["type"] == "config":
                self.config.update(r["config"].get("update", {}))
        exits = [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"]
        self.exit_code = exits[-1] if exits else None
        self.axes = {
            r["metric"]["name"]: r["metric"].get("step_metric")
            for r in records
            if r["type"] == "metric"
        }

    def epochs(self) -> dict[int, dict[str, Any]]:
        """The rows joulecast logged, by epoch."""
        return {int(row[EPOCH_AXIS]): row for row in self.history if EPOCH_AXIS in row}


def _check(logged: Logged, path: Path, run_id: int, epochs: int = 2) -> None:
    rows = logged.epochs()
    assert sorted(rows) == list(range(epochs))
    for row in rows.values():
        assert row.keys() >= EPOCH_KEYS, row.keys()
    assert {key: logged.axes.get(key) for key in EPOCH_KEYS} == dict.fromkeys(EPOCH_KEYS, "epoch")
    assert TOTALS | {"j_per_sample"} <= logged.summary.keys()
    assert logged.config["joulecast.run_id"] == str(run_id)
    assert logged.config["joulecast.store"] == str(path.resolve())
    assert logged.config["joulecast.status"] in {"completed", "running"}


def test_log_run_after_the_fact(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    run = measured_run(path, "to-wandb")
    monkeypatch.setenv("JOULECAST_INTENSITY", "400")
    logger = WandbLogger(project="joulecast-tests")
    wandb_run_id = logger.log_run(path, run.run_id)
    assert wandb_run_id == logger.wandb_run.id
    logged = Logged(logger.wandb_run)
    _check(logged, path, run.run_id)
    assert logged.name == "to-wandb" and logged.exit_code == 0
    summary = joulecast.summarize(joulecast.open_store(path), run.run_id)
    energies = {i: row["epoch_energy_j"] for i, row in logged.epochs().items()}
    assert energies == pytest.approx(dict(enumerate(summary.epochs["energy_j"])))
    assert logged.summary["energy_j"] == pytest.approx(summary.energy_j)
    assert logged.config["joulecast.status"] == "completed"
    # The CO2e of the logged energy at 400 gCO2e/kWh, and where that intensity came from.
    assert logged.summary["energy_j"] > 0
    assert logged.summary["co2e_g"] == pytest.approx(logged.summary["energy_j"] / 3.6e6 * 400)
    assert logged.config["joulecast.intensity_source"] == "given value ($JOULECAST_INTENSITY)"
    assert logged.config["joulecast.intensity_g_per_kwh"] == "400"
    assert logged.config["joulecast.pue"] == "1"


def test_live_logging_with_a_forecast_from_the_torch_helper(tmp_path):
    pytest.importorskip("torch")
    from joulecast.integrations.torch import epochs

    path = tmp_path / "runs.db"
    logger = WandbLogger(project="joulecast-tests")
    with joulecast.measure(name="live", store=path, interval_s=0.02) as run:
        run.live_forecast(3, progress=False)
        for _epoch in epochs(run, 3, samples_per_epoch=50, wandb=logger):
            time.sleep(0.1)
    assert wandb.run is None  # the run it started is finished
    logged = Logged(logger.wandb_run)
    _check(logged, path, run.run_id, epochs=3)
    assert logged.exit_code == 0 and logged.name == "live"
    with joulecast.open_store(path) as store:
        stored = store.phases(run.run_id, "epoch")["metrics"].tolist()
    forecasts = {
        i: row["forecast_total_j"]
        for i, row in logged.epochs().items()
        if "forecast_total_j" in row
    }
    assert forecasts, "no forecast logged"
    assert forecasts == pytest.approx({i: stored[i]["forecast"]["total_j"] for i in forecasts})


def test_logging_into_the_active_run_leaves_it_and_its_steps_alone(tmp_path, monkeypatch, caplog):
    # A region not in the table: the run is logged all the same, without co2e_g.
    monkeypatch.setenv("JOULECAST_REGION", "nowhere")
    path = tmp_path / "runs.db"
    active = wandb.init(project="joulecast-tests", name="mine")
    for step in range(5):
        active.log({"loss": 1.0 / (step + 1)})
    with joulecast.measure(store=path, interval_s=0.02) as run:
        session_logger = WandbLogger()
        session = Session(run=run, wandb=session_logger)
        train(session, 2)
    assert session_logger.wandb_run is active and wandb.run is active  # not finished by joulecast
    active.log({"loss": 0.1})
    active.finish()
    logged = Logged(active)
    assert sorted(logged.epochs()) == [0, 1]
    losses = [row["loss"] for row in logged.history if "loss" in row]
    assert len(losses) == 6 and losses[-1] == pytest.approx(0.1)
    assert logged.name == "mine" and logged.exit_code == 0
    assert "energy_j" in logged.summary and "co2e_g" not in logged.summary
    assert "joulecast.intensity_source" not in logged.config
    assert "no co2e_g logged: region 'nowhere'" in caplog.text


def test_a_failing_wandb_warns_once_and_training_goes_on(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    path = tmp_path / "runs.db"
    with joulecast.measure(store=path, interval_s=0.02) as run:
        session = Session(run=run, wandb=WandbLogger(mode="no-such-mode"))
        train(session, 2)
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("W&B")]
    assert len(warnings) == 1 and "starting failed" in warnings[0], warnings
    assert run.summary().status == "completed"
    assert len(run.epochs) == 2
