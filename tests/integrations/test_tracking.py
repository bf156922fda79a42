"""The one logging interface of the trackers, through an in-memory tracker."""

from __future__ import annotations

import logging
import math
import time

import pytest

import joulecast
from joulecast.integrations._common import Session
from joulecast.integrations._tracking import Point, Tracker, epoch_points, number
from joulecast.records import PhaseKind, RunStatus

from .helpers import train


class Recorder(Tracker):
    """Keeps what it is given; ``fail_from`` makes every write from that call on raise."""

    label = "Recorder"

    def __init__(self, fail_from: int | None = None) -> None:
        super().__init__()
        self.fail_from = fail_from
        self.calls = 0
        self.points: list[Point] = []
        self.tags: dict[str, str] = {}
        self.closed: list[RunStatus] = []

    def _open_target(self, name):
        return f"rec-{name}", True

    def _log(self, points, tags):
        self.calls += 1
        if self.fail_from is not None and self.calls >= self.fail_from:
            raise ConnectionError("tracking server unreachable")
        self.points += points
        self.tags.update(tags)

    def _close(self, status):
        self.closed.append(status)


def test_number_keeps_finite_numbers_only():
    assert number(2) == 2.0 and number("3.5") == 3.5
    assert number(None) is None and number("x") is None
    assert number(math.nan) is None and number(math.inf) is None


def test_a_tracker_gets_each_epoch_and_the_totals(tmp_path):
    rec = Recorder()
    with joulecast.measure(store=tmp_path / "s.db", interval_s=0.02) as run:
        session = Session(run=run)
        session.trackers = [rec]
        train(session, 2)
    steps = {p.step for p in rec.points if p.key == "epoch_energy_j"}
    assert steps == {0, 1}
    assert {p.key for p in rec.points if p.step is None} >= {"energy_j", "duration_s"}
    assert rec.tags["joulecast.run_id"] == str(run.run_id)
    assert rec.tags["joulecast.status"] == "running"  # the totals are logged before it stops
    assert rec.closed == []  # a run passed in may have more training to come


def test_a_tracker_gets_each_epochs_final_energy(tmp_path):
    from tests.test_monitor import ConstantSensor

    rec = Recorder()
    with joulecast.measure(
        store=tmp_path / "s.db", sensors=[ConstantSensor(power_w=100.0)], interval_s=0.02
    ) as run:
        session = Session(run=run)
        session.trackers = [rec]
        session.start()
        for i in range(3):
            index = session.begin(PhaseKind.EPOCH, i)
            time.sleep(0.1)  # shorter than the sampler's flush: its readings are in the buffer
            session.end(PhaseKind.EPOCH, index, samples=10)
        session.finish()
    logged = {p.step: p.value for p in rec.points if p.key == "epoch_energy_j"}
    stored = joulecast.summarize(joulecast.open_store(tmp_path / "s.db"), run.run_id).epochs
    assert logged == pytest.approx(dict(enumerate(stored["energy_j"])), rel=1e-9)


def test_a_failing_tracker_warns_once_and_is_left_alone(tmp_path, caplog):
    """Epoch 0 fails: one warning, no more calls for epochs 1 and 2 nor for the totals."""
    rec = Recorder(fail_from=2)  # the start's tags go through, the first epoch does not
    caplog.set_level(logging.WARNING)
    with joulecast.measure(store=tmp_path / "s.db", interval_s=0.02) as run:
        session = Session(run=run)
        session.trackers = [rec]
        train(session, 3)
    warnings = [r for r in caplog.records if r.getMessage().startswith("Recorder")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "logging epoch 0 failed" in warnings[0].getMessage()
    assert "tracking server unreachable" in warnings[0].getMessage()
    assert rec.calls == 2 and session.trackers == []
    assert run.summary().status == "completed"  # the training went on


def test_log_run_closes_a_run_it_started_with_the_runs_status(tmp_path):
    path = tmp_path / "s.db"
    with joulecast.measure(name="after", store=path, interval_s=0.02) as run:
        run.mark_epoch(0, samples=5)
    rec = Recorder()
    assert rec.log_run(path, run.run_id) == "rec-after"
    assert rec.closed == [RunStatus.COMPLETED]
    assert [p.step for p in rec.points if p.key == "epoch_energy_j"] == [0]


def test_log_run_that_fails_closes_its_run_as_failed(tmp_path):
    path = tmp_path / "s.db"
    with joulecast.measure(store=path, interval_s=0.02) as run:
        run.mark_epoch(0)
    rec = Recorder(fail_from=1)
    with pytest.raises(ConnectionError):
        rec.log_run(path, run.run_id)
    assert rec.closed == [RunStatus.FAILED]


def test_a_co2e_that_fails_unexpectedly_is_a_warning_and_the_totals_are_logged(
    tmp_path, monkeypatch, caplog
):
    import joulecast.carbon

    path = tmp_path / "s.db"
    with joulecast.measure(name="co2", store=path, interval_s=0.02) as run:
        run.mark_epoch(0, samples=5)

    def broken(*args, **kwargs):
        raise RuntimeError("an intensity source failing in a way nobody foresaw")

    monkeypatch.setenv("JOULECAST_INTENSITY", "300")
    monkeypatch.setattr(joulecast.carbon, "run_emissions", broken)
    rec = Recorder()
    with caplog.at_level(logging.WARNING):
        assert rec.log_run(path, run.run_id) == "rec-co2"
    keys = {p.key for p in rec.points}
    assert "energy_j" in keys and "co2e_g" not in keys
    assert "no co2e_g logged: RuntimeError" in caplog.text


def test_epoch_points_skip_missing_values():
    import pandas as pd

    table = pd.DataFrame(
        {
            "index": [3],
            "energy_j": [10.0],
            "mean_power_w": [math.nan],
            "j_per_sample": [None],
            "duration_s": [2.0],
            "metrics": [{"forecast": {"total_j": 50.0, "low_j": None}}],
        }
    )
    assert {(p.key, p.value, p.step) for p in epoch_points(table)} == {
        ("epoch_energy_j", 10.0, 3),
        ("epoch_duration_s", 2.0, 3),
        ("forecast_total_j", 50.0, 3),
    }


@pytest.mark.parametrize("value", ["yes", 1, object()])
def test_a_tracker_argument_that_is_no_tracker_is_refused_at_once(value):
    with pytest.raises(TypeError, match=r"mlflow= takes a MlflowLogger, True or False, not "):
        Session(mlflow=value)


def test_false_and_none_log_nowhere():
    assert Session(mlflow=False).trackers == [] and Session(mlflow=None).trackers == []
