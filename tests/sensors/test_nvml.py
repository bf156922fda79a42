"""NvmlSensor against a fake pynvml: units, capabilities, GPU selection, lost GPUs, facts."""

from __future__ import annotations

import inspect
import logging
import re
import sys

import pynvml
import pytest

from joulecast.errors import SensorError, SensorUnavailable
from joulecast.sensors import nvml as nvml_mod
from joulecast.sensors.nvml import NvmlSensor, load_nvml
from joulecast.study import powercap
from tests.fakes import (
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNKNOWN,
    FakeClock,
    FakeNvml,
    a100,
    gtx750ti,
    rtx2080,
)


def sensor(fake: FakeNvml, **kw: object) -> NvmlSensor:
    return NvmlSensor(nvml=fake, clock=fake.clock, **kw)  # type: ignore[arg-type]


def by_device(readings: list) -> dict:
    return {r.device: r for r in readings}


# -- the fake is faithful to pynvml -------------------------------------------------------------


def test_fake_implements_exactly_what_joulecast_calls_and_pynvml_has() -> None:
    source = inspect.getsource(nvml_mod) + inspect.getsource(powercap)
    used = set(re.findall(r"\bnvml[A-Z]\w+", source)) - {"nvmlReturn"}
    fake = {n for n in dir(FakeNvml) if re.fullmatch(r"nvml[A-Z]\w+", n)}
    assert used == fake
    assert all(hasattr(pynvml, n) for n in fake)
    errors = ("GpuIsLost", "NotSupported", "LibraryNotFound", "NoPermission")
    for cls in (f"NVMLError_{e}" for e in errors):
        assert getattr(FakeNvml, cls)().value == getattr(pynvml, cls)().value
        assert issubclass(getattr(FakeNvml, cls), FakeNvml.NVMLError)
    assert FakeNvml.NVMLError_GpuIsLost().value == 15
    assert FakeNvml.NVMLError_NotSupported().value == 3
    assert FakeNvml.NVMLError_LibraryNotFound().value == 12
    assert FakeNvml.NVMLError_NoPermission().value == pynvml.NVML_ERROR_NO_PERMISSION == 4
    assert FakeNvml.NVML_CLOCK_GRAPHICS == pynvml.NVML_CLOCK_GRAPHICS
    assert FakeNvml.NVML_FI_DEV_POWER_INSTANT == pynvml.NVML_FI_DEV_POWER_INSTANT == 186
    assert FakeNvml.NVML_FI_DEV_ENERGY == pynvml.NVML_FI_DEV_ENERGY == 191


# -- units and capabilities ---------------------------------------------------------------------


def test_instant_power_mw_to_w_and_energy_mj_to_j_from_first_read(clock: FakeClock) -> None:
    gpu = a100(power_w=[250.5, 251.25, 300.0], energy_mj=[5_000_000, 5_000_500, 5_003_000])
    fake = FakeNvml([gpu], clock=clock)
    s = sensor(fake)
    assert s.devices() == ["gpu:0"]
    clock.advance(0.1)
    (r1,) = s.read()
    clock.advance(0.1)
    (r2,) = s.read()
    # The probe consumed the first values (250.5 W, 5,000,000 mJ); energy counts from there.
    assert (r1.power_w, r1.energy_j) == (251.25, 0.5)
    assert (r2.power_w, r2.energy_j) == (300.0, 3.0)
    assert (r1.t_s, r2.t_s) == (1000.1, pytest.approx(1000.2))
    assert r1.source == "nvml" and r1.measured
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 0  # field 186 gives the power
    s.close()


def test_power_usage_fallback_when_field_186_not_supported(clock: FakeClock) -> None:
    gpu = a100(instant_power=False, power_w=999.0, average_power_w=[210.0, 220.5])
    fake = FakeNvml([gpu], clock=clock)
    s = sensor(fake)
    # probe read 210.0 W from the 1 s average; the reading takes the next one
    (r,) = s.read()
    assert r.power_w == 220.5
    assert r.energy_j == 0.0  # the counter still works: Ampere
    assert s.describe()["gpu:0"]["power_reading"] == "1s-average"


def test_pre_volta_has_no_energy_counter_and_reads_power_usage(clock: FakeClock) -> None:
    fake = FakeNvml([gtx750ti(average_power_w=[30.0, 41.5, 42.0])], clock=clock)
    s = sensor(fake)
    (r1,) = s.read()
    clock.advance(1.0)
    (r2,) = s.read()
    assert (r1.power_w, r1.energy_j) == (41.5, None)
    assert (r2.power_w, r2.energy_j) == (42.0, None)
    # Neither field is supported, so field values are not asked again after the probe.
    assert fake.calls["nvmlDeviceGetFieldValues"] == 1
    info = s.describe()["gpu:0"]
    assert info["energy_counter"] is False
    assert info["architecture"] == "maxwell"
    assert info["power_reading"] == "1s-average"


def test_each_field_return_code_is_checked_before_its_value(clock: FakeClock) -> None:
    gpu = a100(power_w=120.0, energy_mj=[1000, 3000, 6000])
    fake = FakeNvml([gpu], clock=clock)
    s = sensor(fake)
    gpu.field_returns[191] = NVML_ERROR_UNKNOWN  # the call succeeds, field 191 does not
    (r,) = s.read()
    assert r.power_w == 120.0
    assert r.energy_j is None  # not the garbage in the value union
    gpu.field_returns.clear()
    gpu.field_returns[186] = NVML_ERROR_UNKNOWN
    (r,) = s.read()
    assert r.power_w is None
    assert r.energy_j == 2.0  # counter read 3000 mJ, 2000 mJ after the probe's 1000


def test_old_driver_without_field_values_falls_back_to_power_usage(clock: FakeClock) -> None:
    gpu = a100(
        average_power_w=77.0, fail={"nvmlDeviceGetFieldValues": 13},  # FUNCTION_NOT_FOUND
    )
    s = sensor(FakeNvml([gpu], clock=clock))
    (r,) = s.read()
    assert (r.power_w, r.energy_j) == (77.0, None)
    assert s.describe()["gpu:0"]["power_reading"] == "1s-average"


def test_utilization_memory_temperature_every_aux_interval(clock: FakeClock) -> None:
    gpu = a100(util_pct=87, memory_used_bytes=1536 * 2**20, temperature_c=66)
    s = sensor(FakeNvml([gpu], clock=clock), aux_interval_s=0.5)
    (r,) = s.read()
    assert (r.util_pct, r.mem_used_mib, r.temp_c) == (87.0, 1536.0, 66.0)
    clock.advance(0.2)
    (r,) = s.read()
    assert (r.util_pct, r.mem_used_mib, r.temp_c) == (None, None, None)
    assert r.power_w == 100.0
    clock.advance(0.4)
    (r,) = s.read()
    assert r.util_pct == 87.0


def test_unsupported_aux_values_are_none_not_errors(clock: FakeClock) -> None:
    gpu = a100(fail={
        "nvmlDeviceGetUtilizationRates": NVML_ERROR_NOT_SUPPORTED,  # as on MIG
        "nvmlDeviceGetTemperature": NVML_ERROR_NOT_SUPPORTED,
    })
    (r,) = sensor(FakeNvml([gpu], clock=clock)).read()
    assert (r.power_w, r.util_pct, r.temp_c) == (100.0, None, None)
    assert r.mem_used_mib == 3 * 1024.0


# -- describe -----------------------------------------------------------------------------------


def test_describe_static_facts_in_watts(clock: FakeClock) -> None:
    gpu = rtx2080(memory_total_bytes=8 * 2**30)
    s = sensor(FakeNvml([gpu], clock=clock))
    assert s.describe() == {
        "gpu:0": {
            "name": "NVIDIA GeForce RTX 2080",
            "uuid": "GPU-b2b2b2b2-0000-0000-0000-000000000000",
            "pci_bus_id": "00000000:01:00.0",
            "nvml_index": 0,
            "architecture": "turing",
            "compute_capability": "7.5",
            "power_limit_w": 215.0,
            "default_power_limit_w": 215.0,
            "max_power_limit_w": 240.0,
            "memory_total_mib": 8192.0,
            "power_reading": "instant",
            "energy_counter": True,
            "mig_shared": False,
        }
    }
    # describe hands out copies
    s.describe()["gpu:0"]["name"] = "changed"
    assert s.describe()["gpu:0"]["name"] == "NVIDIA GeForce RTX 2080"


def test_describe_missing_limits_and_capability_are_none(clock: FakeClock) -> None:
    gpu = gtx750ti(fail={"nvmlDeviceGetCudaComputeCapability": NVML_ERROR_NOT_SUPPORTED})
    info = sensor(FakeNvml([gpu], clock=clock)).describe()["gpu:0"]
    assert info["power_limit_w"] is None
    assert info["default_power_limit_w"] is None
    assert info["max_power_limit_w"] is None
    assert info["compute_capability"] is None
    assert info["memory_total_mib"] == 2048.0


# -- which GPUs ---------------------------------------------------------------------------------


def mixed(clock: FakeClock) -> FakeNvml:
    # NVML (PCI) order: RTX 2080 at bus 01, A100 at bus 41. CUDA fastest-first: A100, RTX.
    return FakeNvml(
        [rtx2080(power_w=180.0), a100(pci_bus_id="00000000:41:00.0", power_w=300.0)],
        clock=clock,
    )


def test_cuda_fastest_first_numbering_with_mixed_gpus(clock: FakeClock) -> None:
    s = sensor(mixed(clock))
    got = by_device(s.read())
    assert (got["gpu:0"].power_w, got["gpu:1"].power_w) == (300.0, 180.0)
    assert s.describe()["gpu:0"]["nvml_index"] == 1


def test_cuda_device_order_pci_bus_id(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    s = sensor(mixed(clock))
    got = by_device(s.read())
    assert (got["gpu:0"].power_w, got["gpu:1"].power_w) == (180.0, 300.0)


def test_visible_index_is_a_cuda_index(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    s = sensor(mixed(clock))
    assert s.devices() == ["gpu:0"]
    assert s.describe()["gpu:0"]["name"] == "NVIDIA GeForce RTX 2080"
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert sensor(mixed(clock)).describe()["gpu:0"]["name"] == "NVIDIA A100-SXM4-40GB"


def test_visible_by_uuid_prefix(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-b2b2,GPU-a1a1a1a1")
    s = sensor(mixed(clock))
    assert [s.describe()[d]["name"] for d in s.devices()] == [
        "NVIDIA GeForce RTX 2080", "NVIDIA A100-SXM4-40GB",
    ]
    assert by_device(s.read())["gpu:0"].power_w == 180.0


def test_invalid_entry_hides_the_rest(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = sensor(mixed(clock), visible="1,7,0")
    assert s.devices() == ["gpu:0"]
    assert s.describe()["gpu:0"]["name"] == "NVIDIA GeForce RTX 2080"
    assert "'7'" in caplog.text


@pytest.mark.parametrize("visible", ["", "-1", "GPU-ffff"])
def test_nothing_visible_is_unavailable_and_shuts_nvml_down(
    clock: FakeClock, visible: str
) -> None:
    fake = mixed(clock)
    with pytest.raises(SensorUnavailable) as info:
        sensor(fake, visible=visible)
    assert "no visible NVIDIA GPU" in str(info.value)
    assert "CUDA_VISIBLE_DEVICES" in info.value.fix
    assert fake.init_count == 0


def test_empty_env_string_means_no_gpus(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SensorUnavailable, match="no visible"):
        sensor(mixed(clock))


MIG = "MIG-5c3a1b2e-0000-0000-0000-000000000000"


@pytest.mark.parametrize("from_env", [True, False])
def test_mig_entry_is_its_parent_gpu_flagged_shared(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, from_env: bool
) -> None:
    fake = FakeNvml(
        [rtx2080(), a100(pci_bus_id="00000000:41:00.0", power_w=95.0, mig_uuids=(MIG,))],
        clock=clock,
    )
    if from_env:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG)
        s = sensor(fake)
    else:
        s = sensor(fake, visible=MIG)
    assert s.devices() == ["gpu:0"]
    info = s.describe()["gpu:0"]
    assert info["mig_shared"] is True
    assert info["uuid"] == "GPU-a1a1a1a1-0000-0000-0000-000000000000"
    (r,) = s.read()
    assert r.power_w == 95.0  # the whole GPU's power


def test_unknown_mig_entry_hides_everything(clock: FakeClock) -> None:
    with pytest.raises(SensorUnavailable, match="no visible"):
        sensor(mixed(clock), visible="MIG-00000000-dead-beef-0000-000000000000,0")


# -- failures -----------------------------------------------------------------------------------


def test_lost_gpu_is_dropped_and_the_others_continue(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeNvml(
        [rtx2080(power_w=180.0, lost_after=3), a100(pci_bus_id="00000000:41:00.0")],
        clock=clock,
    )
    s = sensor(fake)  # fastest first: gpu:0 = A100, gpu:1 = RTX (lost after 3 power reads)
    assert set(by_device(s.read())) == {"gpu:0", "gpu:1"}  # probe + 1 read
    assert set(by_device(s.read())) == {"gpu:0", "gpu:1"}  # 3 reads
    with caplog.at_level(logging.WARNING):
        assert [r.device for r in s.read()] == ["gpu:0"]
    assert "gpu:1" in caplog.text and "lost" in caplog.text
    calls = fake.calls["nvmlDeviceGetFieldValues"]
    assert [r.device for r in s.read()] == ["gpu:0"]
    assert fake.calls["nvmlDeviceGetFieldValues"] == calls + 1  # the lost GPU is not asked
    assert s.devices() == ["gpu:0", "gpu:1"]  # still known: its silence becomes a gap


def test_all_gpus_lost_is_a_sensor_error_every_time(clock: FakeClock) -> None:
    fake = FakeNvml([a100()], clock=clock)
    s = sensor(fake)
    assert len(s.read()) == 1
    fake.lose(0)
    with pytest.raises(SensorError, match="GPU is lost"):
        s.read()
    with pytest.raises(SensorError, match="lost"):
        s.read()


def test_other_errors_skip_one_read_only(clock: FakeClock) -> None:
    gpu = rtx2080(power_w=180.0)
    fake = FakeNvml([gpu, a100(pci_bus_id="00000000:41:00.0")], clock=clock)
    s = sensor(fake)
    gpu.fail["nvmlDeviceGetFieldValues"] = NVML_ERROR_UNKNOWN
    assert [r.device for r in s.read()] == ["gpu:0"]
    del gpu.fail["nvmlDeviceGetFieldValues"]
    assert by_device(s.read())["gpu:1"].power_w == 180.0


def test_single_gpu_error_raises_sensor_error(clock: FakeClock) -> None:
    gpu = a100()
    s = sensor(FakeNvml([gpu], clock=clock))
    gpu.fail["nvmlDeviceGetFieldValues"] = NVML_ERROR_UNKNOWN
    with pytest.raises(SensorError, match="gpu:0: Unknown Error"):
        s.read()
    del gpu.fail["nvmlDeviceGetFieldValues"]
    assert s.read()[0].power_w == 100.0


def test_gpu_lost_during_discovery_is_unavailable(clock: FakeClock) -> None:
    fake = FakeNvml([a100(fail={"nvmlDeviceGetUUID": NVML_ERROR_GPU_IS_LOST})], clock=clock)
    with pytest.raises(SensorUnavailable, match="could not list GPUs: GPU is lost"):
        sensor(fake)
    assert fake.init_count == 0


def test_nvml_library_not_found_is_unavailable_with_a_fix() -> None:
    fake = FakeNvml([a100()], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(SensorUnavailable) as info:
        NvmlSensor(nvml=fake)
    assert "NVML Shared Library Not Found" in str(info.value)
    assert "driver" in info.value.fix


def test_nvidia_ml_py_missing_is_unavailable_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(SensorUnavailable) as info:
        load_nvml()
    assert info.value.fix == "pip install nvidia-ml-py"


def test_close_shuts_nvml_down_once_and_tolerates_repeats(clock: FakeClock) -> None:
    fake = FakeNvml([a100()], clock=clock)
    s = sensor(fake)
    assert fake.init_count == 1
    s.close()
    assert fake.init_count == 0
    s.close()  # NVML says Uninitialized; close swallows it
    assert fake.calls["nvmlShutdown"] == 2
