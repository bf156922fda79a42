from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

import joulecast
from joulecast.errors import InputError, SensorError
from joulecast.monitor import Monitor
from joulecast.records import PhaseKind, Reading, RunStatus
from joulecast.sensors.replay import ReplaySensor
from tests.conftest import sine_energy_j, sine_trace


class ConstantSensor:
    name = "const"

    def __init__(self, device="gpu:0", power_w=100.0, fail_between=None, exc=SensorError):
        self.device = device
        self.power_w = power_w
        self.fail_between = fail_between  # (start_s, end_s) of wall time since creation
        self.exc = exc
        self.t0 = time.monotonic()
        self.closed = False

    def devices(self):
        return [self.device]

    def read(self):
        now = time.monotonic()
        if self.fail_between and self.fail_between[0] <= now - self.t0 < self.fail_between[1]:
            raise self.exc("GPU is lost")
        return [Reading(now, self.device, self.power_w, "const")]

    def close(self):
        self.closed = True


def test_replayed_trace_energy_matches_analytic_integral(store):
    trace = sine_trace(60.0, 0.05, devices=2)
    # The replay starts at the first reading: the set-up before it, however slow, loses nothing.
    replay = ReplaySensor(trace, speed=30.0, start_on_read=True)
    with joulecast.measure(
        "replay", store=store, sensors=[replay], interval_s=0.01, clock=replay.clock
    ) as run:
        while not replay.finished:
            time.sleep(0.02)
    summary = run.summary()
    samples = store.samples(run.run_id)
    offset = store.run(run.run_id)["start_mono_s"] - replay.origin_s
    expected = 0.0
    for device, frame in samples.groupby("device"):
        a, b = frame["t_s"].min() + offset, frame["t_s"].max() + offset
        d = int(str(device).split(":")[1])
        expected += sine_energy_j(a, b, devices=d + 1) - sine_energy_j(a, b, devices=d)
    assert summary.energy_j == pytest.approx(expected, rel=1e-3)
    assert summary.energy_j == pytest.approx(sine_energy_j(0, 60), rel=0.02)  # nearly whole trace
    assert set(summary.devices) == {"gpu:0", "gpu:1"}
    assert all(d.method == "trapezoid" and d.measured for d in summary.devices.values())


def test_epochs_steps_and_metrics(store):
    sensor = ConstantSensor(power_w=200.0)
    with joulecast.measure("phases", store=store, sensors=[sensor], interval_s=0.01) as run:
        for epoch in range(3):
            with run.epoch(epoch, samples=64) as ep:
                for step in range(2):
                    with run.step(epoch * 2 + step, samples=32):
                        time.sleep(0.05)
                ep.metrics["loss"] = 1.0 / (epoch + 1)
    assert sensor.closed
    epochs = run.epochs
    assert list(epochs["index"]) == [0, 1, 2]
    assert list(epochs["samples"]) == [64, 64, 64]
    assert epochs["metrics"].iloc[1] == {"loss": 0.5}
    # Constant power: energy = power x duration, per epoch.
    for row in epochs.to_dict("records"):
        assert row["energy_j"] == pytest.approx(200.0 * row["duration_s"], rel=1e-3)
        assert row["mean_power_w"] == pytest.approx(200.0)
        assert row["energy_j[gpu:0]"] == pytest.approx(row["energy_j"])
    steps = store.phases(run.run_id, "step")
    assert len(steps) == 6 and steps["samples"].tolist() == [32] * 6
    assert run.summary().status == "completed"
    assert run.summary().samples_processed == 192


def test_mark_epoch_chains_epochs(store):
    with joulecast.measure(store=store, sensors=[ConstantSensor()], interval_s=0.01) as run:
        for i in range(3):
            time.sleep(0.03)
            run.mark_epoch(i, samples=10, accuracy=0.5 + i / 10)
    epochs = run.epochs
    assert epochs["start_s"].iloc[0] == 0.0
    assert (epochs["start_s"].iloc[1:].to_numpy() == epochs["end_s"].iloc[:-1].to_numpy()).all()
    assert epochs["metrics"].iloc[2] == {"accuracy": pytest.approx(0.7)}


def test_explicit_start_stop_and_decorator(store):
    run = joulecast.measure(
        "explicit", store=store, sensors=[ConstantSensor()], interval_s=0.01
    ).start()
    time.sleep(0.1)
    assert run.active and run.duration_s > 0.05
    run.stop()
    assert not run.active
    assert run.summary().status == "completed"
    assert run.energy_j == pytest.approx(
        100.0 * run.summary().devices["gpu:0"].samples * 0.01, rel=0.5
    )

    calls = []

    @joulecast.measure("decorated", store=store, sensors=[ConstantSensor()], interval_s=0.01)
    def train(n):
        calls.append(n)
        time.sleep(0.05)
        return n * 2

    assert train(3) == 6 and train(4) == 8
    names = store.runs()["name"].tolist()
    assert names.count("decorated") == 2


def test_decorated_function_measures_each_call_apart(store):
    """Recursive and concurrent calls each get a run of their own, and each completes."""

    @joulecast.measure("nested", store=store, sensors=[ConstantSensor()], interval_s=0.01)
    def nested(depth):
        time.sleep(0.03)
        return nested(depth - 1) + 1 if depth else 0

    assert nested(2) == 2

    @joulecast.measure("threaded", store=store, sensors=[ConstantSensor()], interval_s=0.01)
    def threaded():
        time.sleep(0.05)

    threads = [threading.Thread(target=threaded) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = store.runs()
    assert runs["name"].tolist().count("nested") == 3
    assert runs["name"].tolist().count("threaded") == 4
    assert set(runs["status"]) == {"completed"}


def test_exception_marks_run_failed_and_propagates(store):
    m = joulecast.measure("boom", store=store, sensors=[ConstantSensor()], interval_s=0.01)
    with pytest.raises(ZeroDivisionError), m:
        raise ZeroDivisionError
    assert store.run(m.run.run_id)["status"] == "failed"


@pytest.mark.parametrize("exc", [SensorError, RuntimeError, OSError])
def test_failing_sensor_records_gap_and_training_goes_on(store, exc):
    flaky = ConstantSensor("gpu:0", fail_between=(0.1, 0.5), exc=exc)
    steady = ConstantSensor("gpu:1", power_w=50.0)
    with joulecast.measure(store=store, sensors=[flaky, steady], interval_s=0.01) as run:
        monitor = run._monitor
        monitor._gap_after_s = 0.1
        time.sleep(0.8)
    gaps = store.gaps(run.run_id)
    assert list(gaps["device"]) == ["gpu:0"]
    gap = gaps.iloc[0]
    assert 0.05 < gap["start_s"] < 0.25 and 0.4 < gap["end_s"] < 0.7
    assert "GPU is lost" in gap["reason"]
    summary = run.summary()
    assert summary.status == "completed"
    assert any("gpu:0: 1 gap" in w for w in summary.warnings)
    # gpu:1 was sampled throughout.
    s1 = store.samples(run.run_id).query("device == 'gpu:1'")
    assert s1["t_s"].diff().max() < 0.1


def test_slow_sensor_counts_missed_deadlines(store):
    class Slow(ConstantSensor):
        def read(self):
            time.sleep(0.035)
            return super().read()

    with joulecast.measure(store=store, sensors=[Slow()], interval_s=0.01) as run:
        time.sleep(0.5)
    quality = store.run(run.run_id)["quality"]
    assert quality["missed_deadlines"] >= 10
    assert quality["ticks"] < 25
    assert any("missed" in w for w in run.summary().warnings)


def test_quality_figures_recorded(store):
    with joulecast.measure(store=store, sensors=[ConstantSensor()], interval_s=0.01) as run:
        time.sleep(0.5)
    q = store.run(run.run_id)["quality"]
    assert 30 <= q["ticks"] <= 60
    assert 0.005 < q["tick_interval_p50_s"] < 0.02
    assert q["sampler_cpu_s"] >= 0 and q["writer_cpu_s"] >= 0
    assert q["sensors"] == ["const"]


def test_interval_validated(store):
    with pytest.raises(InputError, match="interval_s"):
        Monitor([], store, interval_s=0)


def test_end_without_begin_is_an_error(store):
    monitor = Monitor([ConstantSensor()], store, interval_s=0.01)
    monitor.start()
    try:
        with pytest.raises(InputError, match="epoch 3 was not begun"):
            monitor.end_phase(PhaseKind.EPOCH, 3)
    finally:
        monitor.stop()


def test_phases_of_one_kind_may_not_overlap_steps_nest_in_epochs(store):
    monitor = Monitor([ConstantSensor()], store, interval_s=0.01)
    monitor.begin_phase(PhaseKind.EPOCH, 0, start_s=0.0)
    monitor.begin_phase(PhaseKind.STEP, 0, start_s=0.0)
    monitor.end_phase(PhaseKind.STEP, 0, end_s=1.0)
    monitor.begin_phase(PhaseKind.STEP, 1, start_s=1.0)
    with pytest.raises(InputError) as info:
        monitor.begin_phase(PhaseKind.EPOCH, 1, start_s=1.5)
    assert str(info.value) == (
        "epoch 1 (1.5 s to open) overlaps epoch 0 (0 s to open): expected phases of one kind "
        "one after another (steps may nest in epochs)"
    )
    monitor.end_phase(PhaseKind.STEP, 1, end_s=2.0)
    with pytest.raises(InputError, match=r"^step 1 \(1 s to 2 s\) overlaps step 2 \(0\.5 s to open"):
        monitor.begin_phase(PhaseKind.STEP, 2, start_s=0.5)  # before step 1 ended
    monitor.end_phase(PhaseKind.EPOCH, 0, end_s=2.0)
    with pytest.raises(InputError, match=r"^epoch 1 \(1\.9 s to 3 s\) overlaps epoch 0 \(0 s to 2 s\)"):
        monitor.end_phase(PhaseKind.EPOCH, 1, start_s=1.9, end_s=3.0)
    monitor.end_phase(PhaseKind.EPOCH, 1, start_s=2.0, end_s=3.0)  # where epoch 0 ended
    monitor.begin_phase(PhaseKind.EPOCH, 2, start_s=3.0)
    monitor.begin_phase(PhaseKind.EPOCH, 2, start_s=3.5)  # begun again: the same phase


def test_an_epoch_begun_while_another_is_open_is_refused_and_nothing_overlaps(store):
    with joulecast.measure(store=store, sensors=[ConstantSensor()], interval_s=0.01) as run:
        run.begin("epoch", 0)
        with pytest.raises(InputError, match=r"^epoch 1 \(.* overlaps epoch 0 \("):
            run.begin("epoch", 1)
        run.end("epoch", 0)
        with pytest.raises(InputError, match=r"^epoch 1 \(.* overlaps epoch 2 \("), run.epoch(1):
            run.mark_epoch(2)  # epoch 2 starts where epoch 0 ended: before epoch 1 began
    epochs = store.phases(run.run_id, "epoch")
    assert epochs["index"].tolist() == [0, 1]
    assert epochs["start_s"].iloc[1] >= epochs["end_s"].iloc[0]


def test_unended_phase_closed_at_stop(store):
    run = joulecast.measure(store=store, sensors=[ConstantSensor()], interval_s=0.01).start()
    run.begin("epoch", 0)
    time.sleep(0.05)
    run.stop(RunStatus.FAILED)
    phases = store.phases(run.run_id)
    assert phases["end_s"].iloc[0] > phases["start_s"].iloc[0]


def test_samples_flushed_within_a_second(store):
    run = joulecast.measure(store=store, sensors=[ConstantSensor()], interval_s=0.01).start()
    try:
        time.sleep(1.2)
        with joulecast.open_store(store.path) as other:
            latest = other.samples(run.run_id)["t_s"].max()
        assert latest > run.duration_s - 1.0
    finally:
        run.stop()


def test_store_write_failure_does_not_stop_sampling(store, monkeypatch):
    run = joulecast.measure(store=store, sensors=[ConstantSensor()], interval_s=0.01).start()
    real = store.write_batch
    failing = threading.Event()
    failing.set()

    def flaky(*args, **kwargs):
        if failing.is_set():
            raise joulecast.StoreError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "write_batch", flaky)
    time.sleep(0.7)
    failing.clear()
    time.sleep(0.6)
    run.stop()
    samples = store.samples(run.run_id)
    # Nothing sampled while the store failed was lost.
    assert samples["t_s"].min() < 0.05
    assert samples["t_s"].diff().max() < 0.1
    assert store.run(run.run_id)["quality"]["write_errors"] >= 1


def test_join_writes_phases_into_existing_run(store, monkeypatch):
    owner = joulecast.measure(
        "owner", store=store, sensors=[ConstantSensor()], interval_s=0.01
    ).start()
    monkeypatch.setenv("JOULECAST_RUN_ID", str(owner.run_id))
    monkeypatch.setenv("JOULECAST_STORE", str(store.path))
    with joulecast.measure("child") as child:
        assert child.joined and child.run_id == owner.run_id
        with child.epoch(0, samples=5):
            time.sleep(0.05)
    assert store.run(owner.run_id)["status"] == "running"  # the owner decides the end
    owner.stop()
    phases = store.phases(owner.run_id)
    assert phases["samples"].tolist() == [5]
    assert len(store.runs()) == 1
    assert isinstance(owner.epochs, pd.DataFrame) and owner.epochs["energy_j"].iloc[0] > 0


def test_a_joined_run_whose_sampler_is_gone_warns_once_and_marks_on(store, monkeypatch):
    import warnings

    from joulecast.errors import JoulecastWarning

    run_id = store.create_run(name="owner", start_mono_s=time.monotonic(), interval_s=1.0)
    store.write_batch(run_id, [Reading(0.0, "gpu:0", 100.0, "test")])
    # joulecast measure, the run's owner, was killed: no store opened since has marked it.
    store.query("UPDATE runs SET pid_started = 1.0 WHERE id = ?", (run_id,))
    monkeypatch.setenv("JOULECAST_RUN_ID", str(run_id))
    monkeypatch.setenv("JOULECAST_STORE", str(store.path))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with joulecast.measure(store=store) as child:
            assert child.joined
            child.live_forecast(3, progress=False)
            for i in range(3):
                with child.epoch(i, samples=10):
                    time.sleep(0.01)
                assert child.forecast is None  # never from an epoch without energy
            # No reading will come: not waited for.
            assert child._monitor.wait_for_readings(child._monitor.now_s(), timeout_s=0.5)
    gone = [w for w in seen if issubclass(w.category, JoulecastWarning)]
    assert len(gone) == 1 and "the process sampling it (joulecast measure) is gone" in str(
        gone[0].message
    )
    epochs = store.phases(run_id, "epoch")
    assert epochs["index"].tolist() == [0, 1, 2] and epochs["samples"].tolist() == [10] * 3
    assert joulecast.summarize(store, run_id).unmeasured_epochs == [0, 1, 2]


def test_unstopped_run_is_stopped_at_exit(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "s.db"
    code = (
        "import time, joulecast\n"
        f"run = joulecast.measure('forgot', store={str(path)!r}, interval_s=0.01).start()\n"
        "run.mark_epoch(0, samples=1)\n"
        "time.sleep(0.2)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    with joulecast.open_store(path) as s:
        row = s.run(1)
        assert row["status"] == "interrupted" and row["duration_s"] > 0.2
        assert len(s.phases(1)) == 1


def test_live_forecast_and_energy_budget(store):
    seen = []
    with joulecast.measure(store=store, sensors=[ConstantSensor(power_w=100.0)], interval_s=0.01) as run:
        run.live_forecast(10, stable_epoch=1, window=2, on_update=seen.append,
                          budget=joulecast.EnergyBudget(budget_j=60.0))
        for i in range(10):
            with run.epoch(i, samples=8, val_loss=1.0 / (i + 1)):
                time.sleep(0.05)
            if run.should_stop:
                break
    assert [f.method for f in seen[:2]] == ["first-epoch", "epoch-energy"]
    # About 5 J per epoch over 10 epochs: the forecast stays near 50 J.
    final = run.forecast
    assert final is not None and final.low_j <= final.total_j <= final.high_j
    phases = store.phases(run.run_id, "epoch")
    assert "forecast" in phases["metrics"].iloc[-1]
    assert phases["metrics"].iloc[-1]["forecast"]["total_j"] == pytest.approx(final.total_j)
    with joulecast.measure(store=store, sensors=[ConstantSensor(power_w=100.0)], interval_s=0.01) as run2:
        run2.live_forecast(100, stable_epoch=0, window=2, budget=joulecast.EnergyBudget(budget_j=100.0))
        for i in range(100):
            time.sleep(0.05)
            run2.mark_epoch(i, samples=1)
            if run2.should_stop:
                break
    assert run2.should_stop and "exceeds the budget" in run2.stop_reason
    assert store.run(run2.run_id)["tags"]["early_stop"] == run2.stop_reason
    assert len(store.phases(run2.run_id, "epoch")) < 5


def test_wait_for_readings_waits_again_after_a_device_was_slow(store):
    """A timeout is for one call: a device silent once is waited for at the next phase end."""
    sensor = ConstantSensor(fail_between=(0.1, 0.6))
    monitor = Monitor([sensor], store, interval_s=0.02, gap_after_s=5.0)
    run_id = monitor.start()
    try:
        time.sleep(0.15)  # the sensor is failing now
        assert not monitor.wait_for_readings(monitor.now_s(), timeout_s=0.1)
        time.sleep(0.5)  # it reads again
        mark = monitor.now_s()
        assert monitor.wait_for_readings(mark)
        assert store.samples(run_id)["t_s"].max() >= mark
    finally:
        monitor.stop()
