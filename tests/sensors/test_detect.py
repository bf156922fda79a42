"""detect(): which sources are used, and why the others are not."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from joulecast.errors import InputError
from joulecast.sensors import (
    Sensor,
    SensorReport,
    detect,
    detect_sensors,
    replay_trace,
    sensor_name,
)
from tests.fakes import (
    AMDSMI_STATUS_INIT_ERROR,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    FakeAmdSmi,
    FakeClock,
    FakeNvml,
    a100,
    mi250x_gcd,
    path_with,
    smi_row,
    write_fake_nvidia_smi,
    write_rapl_tree,
)

NO_DRIVER = FakeNvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)


@pytest.fixture
def closing() -> Iterator[list[Sensor]]:
    made: list[Sensor] = []
    yield made
    for s in made:
        s.close()


@pytest.fixture(autouse=True)
def _all_gpus_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replayed trace's GPUs follow CUDA_VISIBLE_DEVICES: none set here."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture(autouse=True)
def _no_amdsmi(monkeypatch: pytest.MonkeyPatch) -> None:
    """No amdsmi package, whatever this machine has: ``import amdsmi`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "amdsmi", None)


@pytest.fixture
def no_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", path_with(tmp_path / "empty-bin"))


def reports_by_name(reports: list[SensorReport]) -> dict[str, SensorReport]:
    return {r.name: r for r in reports}


@pytest.mark.usefixtures("no_smi")
def test_no_gpu_with_rapl(tmp_path: Path, closing: list[Sensor]) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap")
    sensors, reports = detect(nvml=NO_DRIVER, rapl_root=rapl.root)
    closing += sensors
    assert [sensor_name(s) for s in sensors] == ["rapl", "host"]
    assert [r.name for r in reports] == ["nvml", "amdsmi", "nvidia-smi", "rapl", "host"]
    got = reports_by_name(reports)
    assert not got["nvml"].found
    assert "NVML Shared Library Not Found" in got["nvml"].reason
    assert "driver" in got["nvml"].fix
    assert (got["amdsmi"].found, got["amdsmi"].reason) == (False, "amdsmi is not installed")
    assert "amdsmi" in got["amdsmi"].fix
    assert not got["nvidia-smi"].found
    assert "not found on PATH" in got["nvidia-smi"].reason and got["nvidia-smi"].fix
    assert got["rapl"] == SensorReport("rapl", True, ["cpu:0", "dram:0"], True)
    # RAPL measures the CPU, so the host sensor does not model it
    assert got["host"] == SensorReport("host", True, ["process", "ram"], False)


@pytest.mark.usefixtures("no_smi")
def test_no_rapl_means_modelled_cpu(tmp_path: Path, closing: list[Sensor]) -> None:
    sensors, reports = detect(nvml=NO_DRIVER, rapl_root=tmp_path / "no-powercap")
    closing += sensors
    got = reports_by_name(reports)
    assert not got["rapl"].found
    assert "does not exist" in got["rapl"].reason and "intel_rapl" in got["rapl"].fix
    assert got["host"].devices == ["process", "ram", "cpu"]
    assert got["host"].measured is False
    assert [sensor_name(s) for s in sensors] == ["host"]


@pytest.mark.usefixtures("no_smi")
def test_unreadable_rapl_reports_the_permission_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closing: list[Sensor]
) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap")
    from joulecast.sensors import rapl as rapl_mod

    def denied(path: Path) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rapl_mod, "_read_int", denied)
    sensors, reports = detect(nvml=NO_DRIVER, rapl_root=rapl.root)
    closing += sensors
    got = reports_by_name(reports)
    assert not got["rapl"].found and "permission denied" in got["rapl"].reason
    assert "chmod" in got["rapl"].fix
    assert "cpu" in got["host"].devices


def test_fake_gpu_found_and_nvidia_smi_not_tried(
    tmp_path: Path, clock: FakeClock, closing: list[Sensor]
) -> None:
    fake = FakeNvml([a100(power_w=250.0)], clock=clock)
    sensors, reports = detect(nvml=fake, rapl_root=tmp_path / "none", clock=clock)
    closing += sensors
    assert [r.name for r in reports] == ["nvml", "rapl", "host"]
    assert reports[0] == SensorReport("nvml", True, ["gpu:0"], True)
    (reading,) = sensors[0].read()
    assert (reading.device, reading.power_w) == ("gpu:0", 250.0)


def test_amd_gpus_when_nvml_finds_none(
    tmp_path: Path, clock: FakeClock, closing: list[Sensor]
) -> None:
    amd = FakeAmdSmi([mi250x_gcd(0), mi250x_gcd(1)], clock=clock)
    sensors, reports = detect(
        nvml=NO_DRIVER, amdsmi=amd, rapl_root=tmp_path / "none", clock=clock
    )
    closing += sensors
    assert [r.name for r in reports] == ["nvml", "amdsmi", "rapl", "host"]  # no nvidia-smi
    assert reports[1] == SensorReport("amdsmi", True, ["gpu:0", "gpu:1"], True)
    got = {r.device: r.power_w for r in sensors[0].read()}
    assert got == {"gpu:0": 500.0, "gpu:1": None}  # the package once


def test_amd_sensor_not_tried_where_nvml_finds_gpus(
    tmp_path: Path, clock: FakeClock, closing: list[Sensor]
) -> None:
    amd = FakeAmdSmi([mi250x_gcd(0)], clock=clock)
    sensors, reports = detect(
        nvml=FakeNvml([a100()], clock=clock), amdsmi=amd, rapl_root=tmp_path / "none", clock=clock
    )
    closing += sensors
    assert [r.name for r in reports] == ["nvml", "rapl", "host"]
    assert amd.calls["amdsmi_init"] == 0


@pytest.mark.usefixtures("no_smi")
def test_amd_driver_missing_is_reported_with_a_fix(tmp_path: Path, closing: list[Sensor]) -> None:
    amd = FakeAmdSmi([], init_error=AMDSMI_STATUS_INIT_ERROR)
    sensors, reports = detect(nvml=NO_DRIVER, amdsmi=amd, rapl_root=tmp_path / "none")
    closing += sensors
    got = reports_by_name(reports)["amdsmi"]
    assert not got.found and "AMD SMI did not start" in got.reason and "amdgpu" in got.fix
    assert "nvidia-smi" in reports_by_name(reports)  # tried next


def test_the_node_gpus_choose_amd_gpus_too(
    tmp_path: Path, clock: FakeClock, closing: list[Sensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "0")  # one rank's; the node samples both
    amd = FakeAmdSmi([mi250x_gcd(0), mi250x_gcd(2, oam_id=1, power_w=450.0)], clock=clock)
    sensors, _ = detect(
        nvml=NO_DRIVER, amdsmi=amd, rapl_root=tmp_path / "none", clock=clock, visible_gpus="1,0"
    )
    closing += sensors
    assert {r.device: r.power_w for r in sensors[0].read()} == {"gpu:0": 450.0, "gpu:1": 500.0}


def test_nvidia_smi_fallback_when_nvml_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closing: list[Sensor]
) -> None:
    gpu = a100()
    smi = write_fake_nvidia_smi(tmp_path, [gpu], [smi_row(0, gpu, "123.4")])
    monkeypatch.setenv("PATH", path_with(smi.bin_dir))
    sensors, reports = detect(nvml=NO_DRIVER, rapl_root=tmp_path / "none", interval_s=0.05)
    closing += sensors
    got = reports_by_name(reports)
    assert not got["nvml"].found
    assert got["nvidia-smi"] == SensorReport("nvidia-smi", True, ["gpu:0"], True)
    readings: list = []
    deadline = time.monotonic() + 3.0
    while not readings and time.monotonic() < deadline:
        readings = sensors[0].read()
        time.sleep(0.01)
    assert [(r.device, r.power_w) for r in readings] == [("gpu:0", 123.4)]
    assert smi.calls()[-1][-1] == "--loop-ms=50"  # detect's interval


@pytest.mark.usefixtures("no_smi")
def test_switches(tmp_path: Path, closing: list[Sensor]) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap")
    fake = FakeNvml([a100()])
    sensors, reports = detect(nvml=fake, gpus=False, cpu=False, rapl_root=rapl.root)
    closing += sensors
    got = reports_by_name(reports)
    assert fake.calls["nvmlInit"] == 0
    assert (got["nvml"].found, got["nvml"].reason) == (False, "GPU sensing switched off")
    assert (got["rapl"].found, got["rapl"].reason) == (False, "CPU sensing switched off")
    # CPU switched off: not modelled either
    assert got["host"].devices == ["process", "ram"]
    assert [sensor_name(s) for s in sensors] == ["host"]


@pytest.mark.usefixtures("no_smi")
def test_detect_sensors_returns_the_sensors_only(tmp_path: Path, closing: list[Sensor]) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap")
    sensors = detect_sensors(nvml=NO_DRIVER, rapl_root=rapl.root)
    closing += sensors
    assert [sensor_name(s) for s in sensors] == ["rapl", "host"]
    assert all(isinstance(s, Sensor) for s in sensors)


TRACE = "t_s,gpu_index,power_w\n0,0,100\n10,0,200\n0,1,50\n10,1,50\n"


@pytest.mark.parametrize("how", ["argument", "variable"])
def test_a_replayed_trace_stands_in_for_the_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closing: list[Sensor], how: str
) -> None:
    trace = tmp_path / "power.csv"
    trace.write_text(TRACE)
    fake = FakeNvml([a100()])
    if how == "variable":
        monkeypatch.setenv("JOULECAST_REPLAY_GPUS", str(trace))
    replay = trace if how == "argument" else None
    sensors, reports = detect(nvml=fake, rapl_root=tmp_path / "none", replay_gpus=replay)
    closing += sensors
    assert fake.calls["nvmlInit"] == 0
    assert [sensor_name(s) for s in sensors] == ["replay", "host"]
    got = reports_by_name(reports)
    # Not measured: the readings are a recording, not this machine's hardware.
    assert got["replay"] == SensorReport("replay", True, ["gpu:0", "gpu:1"], False)
    assert not got["nvml"].found and got["nvml"].reason == f"GPUs replayed from {trace}"
    assert "JOULECAST_REPLAY_GPUS" in got["nvml"].fix


def test_gpus_switched_off_replay_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closing: list[Sensor]
) -> None:
    trace = tmp_path / "power.csv"
    trace.write_text(TRACE)
    monkeypatch.setenv("JOULECAST_REPLAY_GPUS", str(trace))
    sensors, reports = detect(gpus=False, rapl_root=tmp_path / "none")
    closing += sensors
    assert [sensor_name(s) for s in sensors] == ["host"]
    assert "replay" not in reports_by_name(reports)


def test_a_bad_trace_given_raises(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no-such\.csv: file not found"):
        detect(nvml=NO_DRIVER, replay_gpus=tmp_path / "no-such.csv")


def test_a_bad_trace_in_the_variable_warns_and_detects_as_usual(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    clock: FakeClock,
    closing: list[Sensor],
) -> None:
    monkeypatch.setenv("JOULECAST_REPLAY_GPUS", str(tmp_path / "no-such.csv"))
    fake = FakeNvml([a100()], clock=clock)
    with caplog.at_level(logging.WARNING, logger="joulecast"):
        sensors, reports = detect(nvml=fake, rapl_root=tmp_path / "none", clock=clock)
    closing += sensors
    assert [sensor_name(s) for s in sensors] == ["nvml", "host"]
    got = reports_by_name(reports)
    assert not got["replay"].found and "no-such.csv: file not found" in got["replay"].reason
    assert got["nvml"].found
    assert "JOULECAST_REPLAY_GPUS not used, GPUs detected as usual" in caplog.text


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("t_s,gpu_index,power_w\n0,\u00b2,100\n1,\u00b2,100\n", id="odd-digit"),
        pytest.param("fifo", id="fifo"),
        pytest.param("error", id="unexpected-error"),
    ],
)
def test_nothing_the_variable_names_stops_detection(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    clock: FakeClock,
    closing: list[Sensor],
    bad: str,
) -> None:
    trace = tmp_path / "power.csv"
    if bad == "fifo":
        os.mkfifo(trace)  # opening it to read would block until a writer comes
    elif bad == "error":
        trace.write_text(TRACE)

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("unexpected")

        monkeypatch.setattr("joulecast.sensors.replay.gpu_replay", broken)
    else:
        trace.write_text(bad)
    monkeypatch.setenv("JOULECAST_REPLAY_GPUS", str(trace))
    fake = FakeNvml([a100()], clock=clock)
    with caplog.at_level(logging.WARNING, logger="joulecast"):
        sensors, reports = detect(nvml=fake, rapl_root=tmp_path / "none", clock=clock)
    closing += sensors
    assert [sensor_name(s) for s in sensors] == ["nvml", "host"]
    assert not reports_by_name(reports)["replay"].found
    assert "JOULECAST_REPLAY_GPUS not used, GPUs detected as usual" in caplog.text


def test_a_fifo_given_is_read(tmp_path: Path, closing: list[Sensor]) -> None:
    # On the command line a pipe is the user's choice (a process substitution, say).
    fifo = tmp_path / "power.csv"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "w") as fh:
            fh.write(TRACE)

    writer = threading.Thread(target=feed)
    writer.start()
    sensors, reports = detect(nvml=NO_DRIVER, rapl_root=tmp_path / "none", replay_gpus=fifo)
    writer.join()
    closing += sensors
    assert reports_by_name(reports)["replay"].devices == ["gpu:0", "gpu:1"]


def test_the_replay_choice_is_the_argument_else_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert replay_trace() is None
    monkeypatch.setenv("JOULECAST_REPLAY_GPUS", "named.csv")
    assert replay_trace() == ("named.csv", True)
    assert replay_trace(tmp_path / "given.csv") == (str(tmp_path / "given.csv"), False)
    assert replay_trace(tmp_path / "given.csv", gpus=False) is None
    assert replay_trace(gpus=False) is None


def test_strict_replay_makes_the_variable_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOULECAST_REPLAY_GPUS", str(tmp_path / "no-such.csv"))
    with pytest.raises(InputError, match=r"no-such\.csv: file not found"):
        detect(nvml=NO_DRIVER, rapl_root=tmp_path / "none", strict_replay=True)


def test_doctor_reports_amd_gpus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from joulecast import cli

    # `joulecast doctor` imports the vendor modules itself: these stand in for them.
    monkeypatch.setitem(sys.modules, "pynvml", NO_DRIVER)
    monkeypatch.setitem(sys.modules, "amdsmi", FakeAmdSmi([mi250x_gcd(0), mi250x_gcd(1)]))
    assert cli.main(["doctor", "--json"]) == 0
    found = {d["sensor"]: d for d in json.loads(capsys.readouterr().out)}
    amd = found["amdsmi"]
    assert (amd["found"], amd["devices"], amd["measured"]) == (True, ["gpu:0", "gpu:1"], True)
    assert amd["details"]["gpu:0"]["name"] == "AMD Instinct MI250X"
    assert amd["details"]["gpu:0"]["package_shared"] is True
    assert amd["details"]["gpu:1"]["power_counted_in"] == "gpu:0"
    assert "nvidia-smi" not in found
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "amdsmi" in out and "gpu:0, gpu:1" in out and "power_counted_in=gpu:0" in out
