"""NvidiaSmiSensor against a fake nvidia-smi executable on a temporary PATH."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from joulecast.errors import SensorError, SensorUnavailable
from joulecast.records import Reading
from joulecast.sensors.nvidia_smi import QUERY, NvidiaSmiSensor
from tests.fakes import FakeGpu, FakeSmi, a100, path_with, rtx2080, smi_row, write_fake_nvidia_smi

A100 = a100(pci_bus_id="00000000:41:00.0")
RTX = rtx2080()  # NVML index 0 (bus 01); CUDA fastest-first puts the A100 first


@pytest.fixture
def sensors() -> Iterator[list[NvidiaSmiSensor]]:
    made: list[NvidiaSmiSensor] = []
    yield made
    for s in made:
        s.close()


def make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: list[NvidiaSmiSensor],
    gpus: list[FakeGpu], rows: list[str], exit_code: int | None = None,
) -> tuple[NvidiaSmiSensor, FakeSmi]:
    smi = write_fake_nvidia_smi(tmp_path, gpus, rows, exit_code=exit_code)
    monkeypatch.setenv("PATH", path_with(smi.bin_dir))
    s = NvidiaSmiSensor(interval_s=0.01)
    made.append(s)
    return s, smi


def collect(s: NvidiaSmiSensor, n: int, timeout_s: float = 3.0) -> list[Reading]:
    got: list[Reading] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += s.read()
        time.sleep(0.01)
    return got


def test_rows_become_readings_in_cuda_numbering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sensors: list[NvidiaSmiSensor]
) -> None:
    rows = [
        smi_row(0, RTX, "180.50", "35", "2048", "61"),
        smi_row(1, A100, "301.25", "99", "40000", "70"),
    ]
    s, smi = make(tmp_path, monkeypatch, sensors, [RTX, A100], rows)
    assert s.devices() == ["gpu:0", "gpu:1"]
    got = {r.device: r for r in collect(s, 2)}
    assert got["gpu:1"] == Reading(
        got["gpu:1"].t_s, "gpu:1", 180.5, "nvidia-smi", True, None, 35.0, 2048.0, 61.0
    )
    assert (got["gpu:0"].power_w, got["gpu:0"].util_pct, got["gpu:0"].mem_used_mib) == (
        301.25, 99.0, 40000.0,
    )
    assert s.describe() == {
        "gpu:0": {"name": A100.name, "uuid": A100.uuid, "pci_bus_id": A100.pci_bus_id},
        "gpu:1": {"name": RTX.name, "uuid": RTX.uuid, "pci_bus_id": RTX.pci_bus_id},
    }
    listing, loop = smi.calls()
    assert listing == [
        "--query-gpu=index,uuid,pci.bus_id,name,compute_cap", "--format=csv,noheader,nounits",
    ]
    assert loop == [f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "--loop-ms=10"]


def test_read_returns_only_new_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sensors: list[NvidiaSmiSensor]
) -> None:
    rows = [smi_row(0, A100, f"{100 + i}.0") for i in range(5)]
    s, _ = make(tmp_path, monkeypatch, sensors, [A100], rows)
    got = collect(s, 5)
    assert [r.power_w for r in got] == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert [r.t_s for r in got] == sorted(r.t_s for r in got)
    assert s.read() == []


def test_not_available_values_are_none_and_bad_lines_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sensors: list[NvidiaSmiSensor]
) -> None:
    rows = [
        smi_row(0, A100, "[N/A]", "[Not Supported]", "512", "40"),
        smi_row(0, A100, "abc", "1", "1", "1"),  # unparsable: skipped
        "garbage line",
        smi_row(0, A100, "55.5 W", "7 %", "100 MiB", "41"),  # units tolerated
    ]
    s, _ = make(tmp_path, monkeypatch, sensors, [A100], rows)
    first, second = collect(s, 2)
    assert (first.power_w, first.util_pct, first.mem_used_mib, first.temp_c) == (
        None, None, 512.0, 40.0,
    )
    assert (second.power_w, second.util_pct, second.mem_used_mib) == (55.5, 7.0, 100.0)


def test_invisible_gpus_are_not_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sensors: list[NvidiaSmiSensor]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", RTX.uuid)
    rows = [smi_row(1, A100, "300.0"), smi_row(0, RTX, "150.0"), smi_row(1, A100, "301.0")]
    s, _ = make(tmp_path, monkeypatch, sensors, [RTX, A100], rows)
    assert s.devices() == ["gpu:0"]
    got = collect(s, 1)
    time.sleep(0.1)
    got += s.read()
    assert [(r.device, r.power_w) for r in got] == [("gpu:0", 150.0)]


def test_devices_in_numeric_order_past_ten_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sensors: list[NvidiaSmiSensor]
) -> None:
    gpus = [a100(uuid=f"GPU-{i:08x}-0000", pci_bus_id=f"00000000:{i + 16:02X}:00.0")
            for i in range(12)]
    s, _ = make(tmp_path, monkeypatch, sensors, gpus, [])
    assert s.devices() == [f"gpu:{i}" for i in range(12)]


def test_exited_process_is_a_sensor_error_after_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sensors: list[NvidiaSmiSensor]
) -> None:
    s, _ = make(tmp_path, monkeypatch, sensors, [A100], [smi_row(0, A100, "90.0")], exit_code=3)
    got = collect(s, 1)
    assert [r.power_w for r in got] == [90.0]
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        try:
            assert s.read() == []
        except SensorError as exc:
            assert "exited with code 3" in str(exc)
            break
        time.sleep(0.01)
    else:
        pytest.fail("no SensorError after nvidia-smi exited")


def test_close_stops_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sensors: list[NvidiaSmiSensor]
) -> None:
    s, _ = make(tmp_path, monkeypatch, sensors, [A100], [smi_row(0, A100)])
    proc = s._proc
    assert proc.poll() is None
    s.close()
    assert proc.poll() is not None


def test_not_on_path_is_unavailable_with_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path))
    with pytest.raises(SensorUnavailable) as info:
        NvidiaSmiSensor()
    assert "not found on PATH" in str(info.value)
    assert "driver" in info.value.fix


def test_failing_listing_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = write_fake_nvidia_smi(
        tmp_path, [A100], list_exit_code=9,
        list_error="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
    )
    monkeypatch.setenv("PATH", path_with(smi.bin_dir))
    with pytest.raises(SensorUnavailable, match="failed"):
        NvidiaSmiSensor()
    assert len(smi.calls()) == 1  # no streaming process started


def test_no_visible_gpu_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = write_fake_nvidia_smi(tmp_path, [A100])
    monkeypatch.setenv("PATH", path_with(smi.bin_dir))
    with pytest.raises(SensorUnavailable) as info:
        NvidiaSmiSensor(visible="")
    assert "CUDA_VISIBLE_DEVICES" in info.value.fix
    assert len(smi.calls()) == 1
