from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

import joulecast
from joulecast.energy import integrate
from joulecast.errors import InputError
from joulecast.sensors.replay import ReplaySensor, gpu_replay
from joulecast.store import Store
from joulecast.traces import import_trace
from tests.conftest import sine_energy_j, sine_trace


@pytest.fixture(autouse=True)
def _all_gpus_visible(monkeypatch):
    """Replayed GPUs follow CUDA_VISIBLE_DEVICES: none set unless a test sets it."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


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


def _replayed_energy_j(replay: ReplaySensor, now: list[float], until_s: float) -> dict[str, float]:
    """Per device, the energy the run's integration counts from ``replay`` read every 0.01 s
    (each read must give every device)."""
    readings = []
    for k in range(round(until_s / 0.01) + 1):
        now[0] = k * 0.01
        got = replay.read()
        assert sorted(r.device for r in got) == replay.devices()  # never silent
        readings += got
    frame = pd.DataFrame(readings)
    codes, names = pd.factorize(frame["device"], sort=True)
    energy = integrate(frame["t_s"], frame["power_w"], frame["energy_j"], codes).energy_j
    return dict(zip(names, map(float, energy), strict=True))


def test_a_looping_counter_counts_on_across_each_start_over():
    # 1 s of power from 100 W to 300 W (200 J), its counter the integral of it.
    t = np.linspace(0.0, 1.0, 11)
    power = 100.0 + 200.0 * t
    trace = pd.DataFrame(
        {"t_s": t, "device": "gpu:0", "power_w": power, "energy_j": 100.0 * t + 100.0 * t**2}
    )
    now = [0.0]
    replay = ReplaySensor(trace, loop=True, clock=lambda: now[0])
    # 3 loops and 0.4 s of a fourth: 3 x 200 J + the integral over [0, 0.4] s.
    expected = 3 * 200.0 + (100.0 * 0.4 + 100.0 * 0.4**2)
    assert _replayed_energy_j(replay, now, 3.4)["gpu:0"] == pytest.approx(expected, rel=1e-9)


def test_a_looping_device_with_a_shorter_span_loops_over_its_own():
    long = pd.DataFrame({"t_s": [0.0, 1.0], "device": "gpu:0", "power_w": 100.0})
    long["energy_j"] = 100.0 * long["t_s"]
    short = pd.DataFrame({"t_s": [0.0, 0.25, 0.5], "device": "gpu:1", "power_w": 50.0})
    short["energy_j"] = 50.0 * short["t_s"]
    now = [0.0]
    replay = ReplaySensor(pd.concat([long, short]), loop=True, clock=lambda: now[0])
    got = _replayed_energy_j(replay, now, 3.4)
    assert got == pytest.approx({"gpu:0": 340.0, "gpu:1": 170.0}, rel=1e-9)


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
        (
            pd.DataFrame({"t_s": [0.0, 1.0], "device": "gpu:0", "power_w": [1.0, 1e308]}),
            "^replay trace: gpu:0: power_w: 1e\\+308: expected a finite number from 0 to 5000$",
        ),
        (
            pd.DataFrame({"t_s": [0.0, np.inf], "device": "ram", "power_w": [1.0, 1.0]}),
            "^replay trace: ram: t_s: inf: expected a finite number from -1e\\+10 to 1e\\+10$",
        ),
        (
            pd.DataFrame({"t_s": [0.0, 1.0], "device": "cpu:0", "power_w": [1.0, -1.0]}),
            "power_w: -1.0: expected a finite number from 0 to 2000",
        ),
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
    assert original == pytest.approx(sine_energy_j(0.0, 10.0, devices=1), rel=1e-3)
    # The replay may end before the monitor's last reading (a loaded machine ticks late):
    # compare with the trace's integral over the span the run recorded, in trace seconds.
    t = store.samples(run.run_id)["t_s"] + store.run(run.run_id)["start_mono_s"]
    first, last = t.min() - replay.origin_s, t.max() - replay.origin_s
    assert 0.0 <= first < 1.0 and last > 5.0
    assert run.energy_j == pytest.approx(sine_energy_j(first, last, devices=1), rel=0.01)


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
    # This machine's own devices, one measured and one modelled, as the host sensors read them.
    host = pd.DataFrame(
        {
            "t_s": [0.0, 60.0, 0.0, 60.0],
            "device": ["cpu:0", "cpu:0", "ram", "ram"],
            "power_w": [30.0, 30.0, 3.0, 3.0],
            "measured": [True, True, False, False],
        }
    )
    rapl = ReplaySensor(host, source="rapl")
    rapl.name = "rapl"  # its hardware facts apart from the replay's
    with joulecast.measure(store=store, sensors=[replay, rapl], interval_s=0.01) as run:
        with run.epoch(0):
            time.sleep(0.1)
        time.sleep(0.05)
    row = store.run(run.run_id)
    assert row["origin"] == "replay"
    assert row["hardware"]["sensors"]["replay"] == {"gpu:0": {"replayed": True, "trace": "t.csv"}}
    summary = run.summary()
    gpu, cpu, ram = (summary.devices[d] for d in ("gpu:0", "cpu:0", "ram"))
    assert gpu.replayed and gpu.source == "replay" and gpu.origin == "replayed"
    assert (cpu.origin, ram.origin) == ("measured", "modelled")
    # Three parts, none counted twice: a replayed GPU is not this machine's measured energy.
    assert summary.energy_j_replayed == gpu.energy_j > 0
    assert summary.energy_j_measured == cpu.energy_j > 0
    assert summary.energy_j_modelled == ram.energy_j > 0
    assert summary.energy_j == pytest.approx(
        summary.energy_j_measured + summary.energy_j_replayed + summary.energy_j_modelled
    )
    data = summary.to_dict()
    assert data["energy_j_replayed"] == gpu.energy_j
    assert data["devices"]["gpu:0"]["origin"] == "replayed"
    (epoch,) = data["epochs"]
    assert epoch["energy_j_replayed"] == pytest.approx(epoch["energy_j_by_device"]["gpu:0"])
    assert epoch["energy_j_measured"] == pytest.approx(epoch["energy_j_by_device"]["cpu:0"])
    assert any(w.startswith("gpu:0: replayed from a recorded trace") for w in summary.warnings)
    assert not any(w.startswith("no measured power source") for w in summary.warnings)
    console = Console(record=True, width=200)
    print_summary(summary, console)
    text = console.export_text()
    assert "replayed (replay, trapezoid)" in text and "measured (rapl, trapezoid)" in text
    total = text.split("total")[1]
    assert (
        f"measured {cpu.energy_j:,.1f} J + replayed {gpu.energy_j:,.1f} J + modelled "
        f"{ram.energy_j:,.1f} J" in total
    )


@pytest.mark.parametrize(("source", "origin"), [("replay", "replay"), ("nvml", "measure")])
def test_the_runs_origin_and_its_devices_labels_follow_one_flag(store, source, origin):
    trace = pd.DataFrame({"t_s": [0.0, 60.0], "device": "gpu:0", "power_w": [100.0, 100.0]})
    replay = ReplaySensor(trace, source=source)  # another source: a simulation of hardware
    with joulecast.measure(store=store, sensors=[replay], interval_s=0.01) as run:
        time.sleep(0.05)
    device = run.summary().devices["gpu:0"]
    assert replay.replayed is device.replayed is (source == "replay")
    assert store.run(run.run_id)["origin"] == origin


def test_a_run_of_replayed_devices_alone_has_no_measured_energy(store):
    trace = pd.DataFrame({"t_s": [0.0, 60.0], "device": "gpu:0", "power_w": [100.0, 100.0]})
    with joulecast.measure(store=store, sensors=[ReplaySensor(trace)], interval_s=0.01) as run:
        time.sleep(0.05)
    summary = run.summary()
    assert summary.energy_j_measured == 0.0 and summary.energy_j_replayed == summary.energy_j
    assert "no measured power source: every energy figure is replayed or modelled" in (
        summary.warnings
    )


def test_gpu_replay_keeps_the_gpus_starts_at_the_first_read_and_loops(tmp_path):
    path = tmp_path / "run-1-power.csv"
    path.write_text(
        "t_s,device,power_w,energy_j,util_pct,mem_used_mib,temp_c\n"
        "0,gpu:0,100,0,10,1000,40\n0,cpu:0,30,0,,,\n0,ram,2,,,,\n"
        "10,gpu:0,200,1500,30,3000,60\n10,cpu:0,30,300,,,\n10,ram,2,,,,\n"
    )
    now = [50.0]
    replay = gpu_replay(path, clock=lambda: now[0])
    assert replay.devices() == ["gpu:0"]  # the host's own sensors measure its CPU and RAM
    now[0] = 60.0
    (first,) = replay.read()
    assert (first.t_s, first.power_w, first.source, first.measured) == (60.0, 100.0, "replay", True)
    now[0] = 75.0  # 15 s on: the trace started over 5 s ago, its counter counting on
    (r,) = replay.read()
    assert (r.power_w, r.energy_j, r.util_pct, r.mem_used_mib, r.temp_c) == (
        150.0,
        2250.0,
        20.0,
        2000.0,
        50.0,
    )
    assert not replay.finished and replay.describe()["gpu:0"]["trace"] == str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "t_s,device,power_w\n0,cpu:0,30\n1,cpu:0,30\n",
            "no GPU power readings to replay (expected rows of devices gpu:0, gpu:1, ... or a "
            "gpu_index column; found 'cpu:0')",
        ),
        ("t_s,gpu_index,power_w\n0,0,\n1,0,\n0,1,\n", "no power_w values in any row"),
        ("t_s,gpu_index,power_w\n5,0,100\n", "the GPU readings span 0 s"),
        ("t_s,gpu,power_w\n0,0,100\n", "missing column 'gpu_index' or 'device'"),
    ],
)
def test_gpu_replay_names_the_file_and_what_it_expected(tmp_path, text, message):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        gpu_replay(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


TRAINING = textwrap.dedent(
    """
    import logging, sys, time
    import joulecast
    logging.basicConfig()
    with joulecast.measure(store=sys.argv[1], interval_s=0.02) as run:
        with run.epoch(0, samples=10):
            time.sleep(0.6)
    print(run.run_id)
    """
)


def _train(tmp_path, trace):
    env = dict(os.environ, JOULECAST_REPLAY_GPUS=str(trace))
    store = tmp_path / "s.db"
    proc = subprocess.run(
        [sys.executable, "-c", TRAINING, str(store)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return Store(store), int(proc.stdout), proc.stderr


def test_the_variable_replays_the_gpus_of_a_process_measuring_itself(tmp_path):
    trace = tmp_path / "trace.csv"  # 0.25 s of 120 W: the run outlasts it, and it starts over
    trace.write_text("t_s,gpu_index,power_w,energy_j\n0,0,120,0\n0.25,0,120,30\n")
    store, run_id, _ = _train(tmp_path, trace)
    summary = joulecast.summarize(store, run_id)
    assert store.run(run_id)["origin"] == "replay"
    gpu = summary.devices["gpu:0"]
    assert gpu.replayed and gpu.measured and gpu.method == "counter"
    samples = store.samples(run_id)
    t = samples.loc[samples["device"] == "gpu:0", "t_s"]
    assert t.max() - t.min() > 0.5  # looped, never silent
    # The counter's steps back to 0 at each start-over are bridged from the power.
    assert gpu.energy_j == pytest.approx(120 * (t.max() - t.min()), rel=1e-9)
    assert not any("gap" in w for w in summary.warnings)
    assert summary.epochs["energy_j[gpu:0]"].iloc[0] > 0


def test_a_bad_trace_in_the_variable_does_not_stop_the_training(tmp_path):
    store, run_id, stderr = _train(tmp_path, tmp_path / "missing.csv")
    assert "JOULECAST_REPLAY_GPUS not used, GPUs detected as usual" in stderr
    assert "missing.csv: file not found" in stderr
    summary = joulecast.summarize(store, run_id)
    assert summary.status == "completed" and len(summary.epochs) == 1
    assert store.run(run_id)["origin"] == "measure"
    assert not any(d.replayed for d in summary.devices.values())


THREE_GPUS = "t_s,gpu_index,power_w\n" + "".join(
    f"{t},{i},{100 * (i + 1)}\n" for i in range(3) for t in (0, 10)
)


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("2,0", {"gpu:0": 300.0, "gpu:1": 100.0}),  # picked and renumbered, as CUDA does
        ("1, 1", {"gpu:0": 200.0}),
        ("1,5,0", {"gpu:0": 200.0}),  # no gpu:5: it hides itself and the rest
        ("1,GPU-8f2c,0", {"gpu:0": 200.0}),  # a trace has no UUIDs
    ],
)
def test_gpu_replay_follows_cuda_visible_devices(tmp_path, monkeypatch, visible, expected):
    path = tmp_path / "power.csv"
    path.write_text(THREE_GPUS)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    replay = gpu_replay(path, clock=lambda: 0.0)
    assert {r.device: r.power_w for r in replay.read()} == expected


@pytest.mark.parametrize("visible", ["", "-1", "GPU-8f2c"])
def test_gpu_replay_with_no_visible_gpu_says_so(tmp_path, visible):
    path = tmp_path / "power.csv"
    path.write_text(THREE_GPUS)
    with pytest.raises(InputError, match="leaves none of the trace's GPUs visible"):
        gpu_replay(path, visible=visible)
