from __future__ import annotations

import time

import pandas as pd
import pytest

import joulecast
from joulecast.errors import InputError
from joulecast.sensors.replay import ReplaySensor
from joulecast.traces import import_trace
from tests.conftest import sine_trace


def test_interpolates_at_position():
    trace = pd.DataFrame({"t_s": [0.0, 10.0], "device": "gpu:0", "power_w": [100.0, 200.0],
                          "energy_j": [0.0, 1500.0]})
    now = [0.0]
    replay = ReplaySensor(trace, speed=2.0, clock=lambda: now[0])
    now[0] = 2.5  # 5 s into the trace
    (reading,) = replay.read()
    assert reading.power_w == pytest.approx(150.0)
    assert reading.energy_j == pytest.approx(750.0)
    assert reading.t_s == pytest.approx(5.0) and replay.position_s == pytest.approx(5.0)
    now[0] = 6.0
    assert replay.finished and replay.read() == []


def test_devices_on_their_own_instants_and_columns():
    trace = pd.DataFrame(
        {
            "t_s": [0.0, 10.0, 0.0, 5.0, 10.0, 0.0, 10.0],
            "device": ["gpu:0", "gpu:0", "gpu:1", "gpu:1", "gpu:1", "gpu:2", "gpu:2"],
            "power_w": [100.0, 200.0, 0.0, 50.0, 60.0, 10.0, 20.0],
            "util_pct": [0.0, 100.0, 10.0, 20.0, 30.0, 1.0, 2.0],
            "energy_j": [0.0, 1500.0, 0.0, 125.0, 400.0, 0.0, None],
        }
    )
    now = [0.0]
    replay = ReplaySensor(trace, clock=lambda: now[0])
    assert replay.devices() == ["gpu:0", "gpu:2", "gpu:1"]  # gpu:0 and gpu:2 share instants
    now[0] = 2.5
    got = {r.device: r for r in replay.read()}
    assert (got["gpu:0"].power_w, got["gpu:0"].energy_j) == (125.0, 375.0)
    assert (got["gpu:1"].power_w, got["gpu:1"].util_pct) == (25.0, 15.0)
    assert (got["gpu:2"].power_w, got["gpu:2"].energy_j) == (12.5, None)  # a gap: no counter
    assert got["gpu:0"].mem_used_mib is None and got["gpu:1"].temp_c is None
    now[0] = 10.0  # the last instant: the last row
    assert [r.power_w for r in replay.read()] == [200.0, 20.0, 60.0]


def test_loop_wraps():
    trace = pd.DataFrame({"t_s": [0.0, 10.0], "device": "gpu:0", "power_w": [0.0, 100.0]})
    now = [0.0]
    replay = ReplaySensor(trace, loop=True, clock=lambda: now[0])
    now[0] = 12.5
    assert not replay.finished
    assert replay.read()[0].power_w == pytest.approx(25.0)


def test_a_device_recorded_as_modelled_replays_as_modelled():
    trace = pd.DataFrame(
        {
            "t_s": [0.0, 10.0, 0.0, 10.0],
            "device": ["gpu:0", "gpu:0", "ram", "ram"],
            "power_w": [100.0, 200.0, 3.0, 3.0],
            "measured": [True, True, False, False],
        }
    )
    now = [0.0]
    replay = ReplaySensor(trace, clock=lambda: now[0])
    now[0] = 5.0
    assert {r.device: r.measured for r in replay.read()} == {"gpu:0": True, "ram": False}


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"t_s": [0.0], "power_w": [1.0]}), "missing column 'device'"),
        (pd.DataFrame({"t_s": [], "device": [], "power_w": []}), "no samples"),
    ],
)
def test_bad_trace(frame, message):
    with pytest.raises(InputError, match=message):
        ReplaySensor(frame)


def test_speed_must_be_positive():
    with pytest.raises(InputError, match="speed"):
        ReplaySensor(sine_trace(1.0), speed=0)


def test_from_csv_and_store_replay_an_imported_run(store, tmp_path):
    path = tmp_path / "power.csv"
    sine_trace(10.0, 0.1, devices=1).to_csv(path, index=False)
    assert ReplaySensor.from_csv(path).devices() == ["gpu:0"]
    run_id = import_trace(store, path)
    replay = ReplaySensor.from_store(store, run_id, speed=5.0)
    with joulecast.measure(store=store, sensors=[replay], interval_s=0.01, clock=replay.clock) as run:
        while not replay.finished:
            time.sleep(0.01)
    original = joulecast.summarize(store, run_id).energy_j
    assert run.energy_j == pytest.approx(original, rel=0.01)


def test_start_on_read_puts_position_0_at_the_first_read():
    trace = pd.DataFrame({"t_s": [0.0, 10.0], "device": "gpu:0", "power_w": [100.0, 200.0]})
    now = [100.0]
    replay = ReplaySensor(trace, start_on_read=True, clock=lambda: now[0], trace_name="t.csv")
    now[0] = 107.0  # creation is not the start
    assert replay.origin_s is None and replay.position_s == 0.0 and not replay.finished
    assert replay.clock() == 107.0
    (first,) = replay.read()
    assert (first.t_s, first.power_w, replay.origin_s) == (107.0, 100.0, 107.0)
    now[0] = 112.0
    assert replay.read()[0].power_w == pytest.approx(150.0)
    assert replay.describe() == {"gpu:0": {"replayed": True, "trace": "t.csv"}}


def test_a_replayed_run_is_labelled_as_such(store):
    from rich.console import Console

    from joulecast.cli import print_summary

    trace = pd.DataFrame({"t_s": [0.0, 60.0], "device": "gpu:0", "power_w": [100.0, 100.0]})
    replay = ReplaySensor(trace, trace_name="t.csv")
    with joulecast.measure(store=store, sensors=[replay], interval_s=0.01) as run:
        time.sleep(0.1)
    row = store.run(run.run_id)
    assert row["origin"] == "replay"
    assert row["hardware"]["sensors"]["replay"] == {"gpu:0": {"replayed": True, "trace": "t.csv"}}
    summary = run.summary()
    assert summary.devices["gpu:0"].replayed and summary.devices["gpu:0"].source == "replay"
    assert summary.energy_j_replayed == summary.energy_j > 0
    assert summary.to_dict()["energy_j_replayed"] == summary.energy_j
    assert any(w.startswith("gpu:0: replayed from a recorded trace") for w in summary.warnings)
    console = Console(record=True, width=200)
    print_summary(summary, console)
    text = console.export_text()
    assert "replayed (replay, trapezoid)" in text and "replayed" in text.split("total")[1]
