"""AmdSmiSensor against a fake amdsmi: units, API versions, counters, dies, scoping, failures."""

from __future__ import annotations

import inspect
import logging
import re
import sys

import numpy as np
import pytest

from joulecast.energy import integrate
from joulecast.errors import SensorError, SensorUnavailable
from joulecast.sensors import amd as amd_mod
from joulecast.sensors.amd import AmdId, AmdSmiSensor, load_amdsmi, select_rocm
from tests.fakes import (
    AMDSMI_STATUS_INIT_ERROR,
    AMDSMI_STATUS_NOT_SUPPORTED,
    FakeAmdSmi,
    FakeClock,
    mi250x_gcd,
    mi300x,
)

# The names the real amdsmi package exports that the sensor may use (ROCm/amdsmi
# py-interface/__init__.py and amdsmi_interface.py; the enumeration info is ROCm 6.4 and later).
AMDSMI_API = {
    "amdsmi_init", "amdsmi_shut_down", "amdsmi_get_processor_handles",
    "amdsmi_get_gpu_device_uuid", "amdsmi_get_gpu_device_bdf", "amdsmi_get_gpu_asic_info",
    "amdsmi_get_gpu_board_info", "amdsmi_get_gpu_enumeration_info", "amdsmi_get_power_info",
    "amdsmi_get_energy_count", "amdsmi_get_power_cap_info", "amdsmi_get_gpu_activity",
    "amdsmi_get_gpu_vram_usage", "amdsmi_get_temp_metric", "AmdSmiException",
    "AmdSmiLibraryException", "AmdSmiTemperatureType", "AmdSmiTemperatureMetric",
}
NO_ENV: dict[str, str] = {}


def sensor(fake: FakeAmdSmi, env: dict[str, str] | None = None, **kw: object) -> AmdSmiSensor:
    return AmdSmiSensor(amdsmi=fake, clock=fake.clock, env=NO_ENV if env is None else env, **kw)  # type: ignore[arg-type]


def by_device(readings: list) -> dict:
    return {r.device: r for r in readings}


# -- the fake is faithful to amdsmi -------------------------------------------------------------


def test_fake_implements_exactly_what_the_sensor_calls_and_amdsmi_has() -> None:
    source = inspect.getsource(amd_mod)
    used = set(re.findall(r"\bamdsmi_[a-z_]+\b|\bAmdSmi[A-Za-z]+\b", source))
    used -= {"amdsmi_index", "AmdSmiSensor"}  # a fact's name and the sensor's
    fake = FakeAmdSmi([])
    offered = {n for n in dir(fake) if re.fullmatch(r"amdsmi_[a-z_]+|AmdSmi[A-Za-z]+", n)}
    assert used == offered
    assert offered <= AMDSMI_API
    error = fake.AmdSmiLibraryException(-2)
    assert error.get_error_code() == 2 and isinstance(error, fake.AmdSmiException)
    assert "AMDSMI_STATUS_NOT_SUPPORTED" in str(error)


# -- units, API versions and counters -------------------------------------------------------------


def test_watts_and_energy_ticks_to_joules_from_the_first_read(clock: FakeClock) -> None:
    gpu = mi300x(power_w=[650.0, 655.0, 700.0], energy_j=[1_000.0, 1_065.5, 1_135.5])
    fake = FakeAmdSmi([gpu], clock=clock)
    s = sensor(fake)
    assert s.devices() == ["gpu:0"]
    got = []
    for _ in range(2):
        clock.advance(0.1)
        got.extend(s.read())
    r1, r2 = got
    # The probe read 650 W and the counter at 1,000 J; energy counts from there.
    tick = gpu.counter_resolution_uj / 1e6
    assert r1.power_w == 655.0 and r1.energy_j == pytest.approx(65.5, abs=tick)
    assert r2.power_w == 700.0 and r2.energy_j == pytest.approx(135.5, abs=tick)
    assert (r1.source, r1.measured, r1.t_s) == ("amdsmi", True, 1000.1)
    assert (r1.util_pct, r1.mem_used_mib, r1.temp_c) == (50.0, 2048.0, 45.0)
    s.close()


@pytest.mark.parametrize(
    ("api", "keys", "chosen"),
    [
        ("rocm5", ("average_socket_power",), "average_socket_power"),  # no current key at all
        ("rocm6", ("average_socket_power",), "average_socket_power"),  # MI200: current is N/A
        ("rocm6", ("current_socket_power",), "current_socket_power"),  # MI300: average is N/A
        ("rocm7", ("socket_power", "current_socket_power"), "current_socket_power"),
        ("rocm7", ("socket_power",), "socket_power"),
    ],
)
def test_power_key_of_each_amdsmi_version(
    clock: FakeClock, api: str, keys: tuple[str, ...], chosen: str
) -> None:
    s = sensor(FakeAmdSmi([mi300x(api=api, power_keys=keys, power_w=[200.0, 321.0])], clock=clock))
    assert s.describe()["gpu:0"]["power_reading"] == chosen
    assert s.read()[0].power_w == 321.0


@pytest.mark.parametrize("key", ["energy_accumulator", "power"])
def test_energy_key_before_and_after_amdsmi_6_2_1(clock: FakeClock, key: str) -> None:
    s = sensor(FakeAmdSmi([mi300x(energy_key=key, energy_j=[10.0, 40.0])], clock=clock))
    assert s.read()[0].energy_j == pytest.approx(30.0, abs=1e-4)


def test_a_32_bit_counter_is_unwrapped(clock: FakeClock) -> None:
    wrap_j = 2**32 * 15.259 / 1e6  # 65,536.6 J
    gpu = mi300x(counter_bits=32, energy_j=[wrap_j - 50.0, wrap_j - 10.0, wrap_j + 40.0, wrap_j + 90.0])
    s = sensor(FakeAmdSmi([gpu], clock=clock))
    got = []
    for _ in range(3):
        clock.advance(1.0)
        got.append(s.read()[0].energy_j)
    assert got == pytest.approx([40.0, 90.0, 140.0], abs=1e-4)


def test_a_reset_counter_is_counted_from_power(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A 64-bit counter that goes back (a driver reload) did not wrap: the interval counts
    # power x time instead of a jump of 2**64 ticks.
    gpu = mi300x(power_w=300.0, energy_j=[5_000_000.0, 5_000_300.0, 12.0, 312.0])
    s = sensor(FakeAmdSmi([gpu], clock=clock))
    got = []
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            clock.advance(1.0)
            got.append(s.read()[0].energy_j)
    assert got == pytest.approx([300.0, 600.0, 900.0], abs=1e-3)
    assert "energy counter went back" in caplog.text


def test_a_gpu_without_counter_reports_power_only(clock: FakeClock) -> None:
    s = sensor(FakeAmdSmi([mi300x(energy_j=None)], clock=clock))
    (r,) = s.read()
    assert (r.power_w, r.energy_j) == (300.0, None)
    assert s.describe()["gpu:0"]["energy_counter"] is False


def test_energy_is_the_counters_not_the_integrated_power(clock: FakeClock) -> None:
    # Power sampled at 1 Hz misses a 10 s burst between samples; the counter does not.
    gpu = mi300x(power_w=100.0, energy_j=lambda t: 100.0 * (t - 1000.0) + (1000.0 if t > 1005 else 0.0))
    s = sensor(FakeAmdSmi([gpu], clock=clock))
    readings = []
    for _ in range(10):
        clock.advance(1.0)
        readings.extend(s.read())
    t = np.array([r.t_s for r in readings])
    p = np.array([r.power_w for r in readings])
    e = np.array([r.energy_j for r in readings])
    total = integrate(t, p, e).energy_j[0]
    assert total == pytest.approx(100.0 * 9 + 1000.0, abs=1e-3)


def test_a_counter_far_from_power_is_warned_about(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    gpu = mi300x(power_w=300.0, energy_j=lambda t: 30_000.0 * (t - 1000.0))  # 100x the power
    s = sensor(FakeAmdSmi([gpu], clock=clock))
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            clock.advance(1.0)
            s.read()
    assert caplog.text.count("its energy may be wrong") == 1


def test_describe_static_facts(clock: FakeClock) -> None:
    s = sensor(FakeAmdSmi([mi300x(hip_id=0)], clock=clock))
    assert s.describe() == {
        "gpu:0": {
            "name": "AMD Instinct MI300X",
            "uuid": "a1ff74a1-0000-1000-80ad-000000000000",
            "pci_bus_id": "0000:0c:00.0",
            "amdsmi_index": 0,
            "hip_id": 0,
            "oam_id": None,
            "power_limit_w": 750.0,
            "memory_total_mib": 196_592.0,
            "power_reading": "current_socket_power",
            "energy_counter": True,
            "counter_resolution_uj": 15.259,
            "package_shared": False,
            "power_counted_in": None,
        }
    }
    s.describe()["gpu:0"]["name"] = "changed"
    assert s.describe()["gpu:0"]["name"] == "AMD Instinct MI300X"


def test_na_values_are_none_not_errors(clock: FakeClock) -> None:
    gpu = mi300x(gfx_activity="N/A", vram_used_mib=0xFFFFFFFF, power_cap_uw=None,
                 fail={"amdsmi_get_temp_metric": AMDSMI_STATUS_NOT_SUPPORTED})
    s = sensor(FakeAmdSmi([gpu], clock=clock))
    (r,) = s.read()
    assert (r.power_w, r.util_pct, r.mem_used_mib, r.temp_c) == (300.0, None, None, None)
    assert s.describe()["gpu:0"]["power_limit_w"] is None


# -- dies of one package: MI250X ------------------------------------------------------------------


@pytest.mark.parametrize("odd_power", [None, 0.0], ids=["n/a", "zero"])
def test_two_mi250x_gcds_count_their_package_once(clock: FakeClock, odd_power: float | None) -> None:
    fake = FakeAmdSmi(
        [mi250x_gcd(0, energy_j=[0.0, 500.0]), mi250x_gcd(1, power_w=odd_power, vram_used_mib=7)],
        clock=clock,
    )
    s = sensor(fake)
    assert s.devices() == ["gpu:0", "gpu:1"]
    clock.advance(1.0)
    got = by_device(s.read())
    assert (got["gpu:0"].power_w, got["gpu:0"].energy_j) == (500.0, pytest.approx(500.0, abs=1e-4))
    assert (got["gpu:1"].power_w, got["gpu:1"].energy_j) == (None, None)
    assert got["gpu:1"].mem_used_mib == 7.0  # its own memory and load all the same
    facts = s.describe()
    assert facts["gpu:0"]["package_shared"] is True and facts["gpu:0"]["power_counted_in"] is None
    assert facts["gpu:1"]["package_shared"] is False
    assert facts["gpu:1"]["power_counted_in"] == "gpu:0"
    assert facts["gpu:1"]["power_reading"] is None and facts["gpu:1"]["energy_counter"] is False


def test_the_odd_gcd_alone_reports_its_package(clock: FakeClock) -> None:
    fake = FakeAmdSmi(
        [mi250x_gcd(0, energy_j=[0.0, 480.0]), mi250x_gcd(1, vram_used_mib=7)], clock=clock
    )
    s = sensor(fake, {"HIP_VISIBLE_DEVICES": "1"})
    assert s.devices() == ["gpu:0"]
    clock.advance(1.0)
    (r,) = s.read()
    assert (r.power_w, r.energy_j, r.mem_used_mib) == (500.0, pytest.approx(480.0, abs=1e-4), 7.0)
    facts = s.describe()["gpu:0"]
    assert facts["package_shared"] is True and facts["amdsmi_index"] == 1
    assert facts["power_reading"] == "average_socket_power"


def test_two_packages_each_once(clock: FakeClock) -> None:
    gcds = [mi250x_gcd(i, power_w=(400.0 if i < 2 else 550.0) if i % 2 == 0 else None)
            for i in range(4)]
    s = sensor(FakeAmdSmi(gcds, clock=clock), {"HIP_VISIBLE_DEVICES": "1,3,2"})
    got = by_device(s.read())
    assert [got[d].power_w for d in ("gpu:0", "gpu:1", "gpu:2")] == [400.0, None, 550.0]
    assert s.describe()["gpu:1"]["power_counted_in"] == "gpu:2"


# -- which GPUs -----------------------------------------------------------------------------------


def four(clock: FakeClock, **kw: object) -> FakeAmdSmi:
    return FakeAmdSmi(
        [mi300x(power_w=100.0 * (i + 1), uuid=f"{i}{i}ff74a1-0000-1000-80ad-000000000000",
                hip_uuid=f"GPU-{i}{i}a1a1a1a1a1a1a1", bdf=f"0000:{i + 1:02x}:00.0")
         for i in range(4)],
        clock=clock, **kw,
    )


def powers(s: AmdSmiSensor) -> list[float | None]:
    got = by_device(s.read())
    return [got[d].power_w for d in s.devices()]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [100.0, 200.0, 300.0, 400.0]),
        ({"HIP_VISIBLE_DEVICES": "2,0"}, [300.0, 100.0]),
        ({"CUDA_VISIBLE_DEVICES": "3"}, [400.0]),  # HIP reads it where its own is unset
        ({"HIP_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "3"}, [200.0]),
        ({"ROCR_VISIBLE_DEVICES": "2,3"}, [300.0, 400.0]),
        ({"ROCR_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "1"}, [400.0]),  # HIP counts within ROCR
        ({"ROCR_VISIBLE_DEVICES": "GPU-33a1,GPU-11"}, [400.0, 200.0]),  # UUID prefixes
        ({"HIP_VISIBLE_DEVICES": "1,9,0"}, [200.0]),  # 9 is no GPU: it hides the rest
    ],
)
def test_visible_devices(clock: FakeClock, env: dict[str, str], expected: list[float]) -> None:
    assert powers(sensor(four(clock), env)) == expected


def test_the_os_environment_is_read_by_default(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "3")
    assert powers(AmdSmiSensor(amdsmi=four(clock), clock=clock)) == [400.0]


def test_visible_argument_names_the_machines_gpus(clock: FakeClock) -> None:
    env = {"HIP_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "0"}
    assert powers(sensor(four(clock), env, visible="1,3")) == [200.0, 400.0]


def test_hip_ids_number_the_gpus_where_amdsmi_gives_them(clock: FakeClock) -> None:
    fake = four(clock)
    for gpu, hip in zip(fake.gpus, [3, 2, 1, 0], strict=True):
        gpu.hip_id = hip
    assert powers(sensor(fake)) == [400.0, 300.0, 200.0, 100.0]
    old = four(clock, enumeration=False)  # amdsmi before 6.4: AMD SMI's own order
    assert powers(sensor(old)) == [100.0, 200.0, 300.0, 400.0]


@pytest.mark.parametrize("env", [{"HIP_VISIBLE_DEVICES": ""}, {"ROCR_VISIBLE_DEVICES": "-1"},
                                 {"HIP_VISIBLE_DEVICES": "GPU-ffff"}])
def test_nothing_visible_is_unavailable_and_shuts_amdsmi_down(
    clock: FakeClock, env: dict[str, str]
) -> None:
    fake = four(clock)
    with pytest.raises(SensorUnavailable) as info:
        sensor(fake, env)
    assert "no visible AMD GPU" in str(info.value) and "HIP_VISIBLE_DEVICES" in info.value.fix
    assert fake.init_count == 0


def test_select_rocm_alone() -> None:
    gpus = [AmdId(i, f"u{i}", f"0000:0{i}:00.0", hip_id=None) for i in range(3)]
    assert select_rocm(gpus, env={"ROCR_VISIBLE_DEVICES": "2,1,2"}) == [gpus[2], gpus[1]]


# -- failures -------------------------------------------------------------------------------------


def test_an_api_raising_mid_run_skips_that_gpu_once(clock: FakeClock) -> None:
    fake = four(clock)
    s = sensor(fake, {"HIP_VISIBLE_DEVICES": "0,1"})
    fake.gpus[1].fail["amdsmi_get_power_info"] = 31  # AMDSMI_STATUS_NOT_FOUND
    assert [r.device for r in s.read()] == ["gpu:0"]
    fake.gpus[0].fail["amdsmi_get_energy_count"] = 31
    with pytest.raises(SensorError, match=r"gpu:0: An error occured with code: 31") as info:
        s.read()
    assert "gpu:1" in str(info.value) and not isinstance(info.value, SensorUnavailable)
    fake.gpus[0].fail.clear()
    fake.gpus[1].fail.clear()
    assert powers(s) == [100.0, 200.0]


def test_answers_of_the_wrong_shape_are_sensor_errors(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeAmdSmi([mi300x()], clock=clock)
    s = sensor(fake)
    monkeypatch.setattr(fake, "amdsmi_get_power_info", lambda handle, sensor_ind=0: None)
    with pytest.raises(SensorError):
        s.read()
    monkeypatch.undo()
    assert s.read()[0].power_w == 300.0


def test_listing_failure_is_unavailable(clock: FakeClock) -> None:
    fake = FakeAmdSmi([mi300x(fail={"amdsmi_get_gpu_device_uuid": 31})], clock=clock)
    with pytest.raises(SensorUnavailable, match="could not list GPUs"):
        sensor(fake)
    assert fake.init_count == 0


def test_no_driver_is_unavailable_with_a_fix() -> None:
    fake = FakeAmdSmi([mi300x()], init_error=AMDSMI_STATUS_INIT_ERROR)
    with pytest.raises(SensorUnavailable) as info:
        AmdSmiSensor(amdsmi=fake)
    assert "AMD SMI did not start" in str(info.value) and "driver" in info.value.fix


def test_amdsmi_missing_is_unavailable_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # import amdsmi -> ImportError
    with pytest.raises(SensorUnavailable) as info:
        load_amdsmi()
    assert str(info.value) == "amdsmi is not installed" and "amdsmi" in info.value.fix


def test_amdsmi_without_its_library_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def import_module(name: str) -> object:
        print("libamd_smi.so: cannot open shared object file")  # what amdsmi prints
        raise OSError("libamd_smi.so: cannot open shared object file")

    monkeypatch.setattr(amd_mod.importlib, "import_module", import_module)
    with pytest.raises(SensorUnavailable, match="amdsmi could not be imported: libamd_smi"):
        load_amdsmi()


def test_close_shuts_down_once(clock: FakeClock) -> None:
    fake = FakeAmdSmi([mi300x()], clock=clock)
    s = sensor(fake)
    assert fake.init_count == 1
    s.close()
    s.close()
    assert fake.init_count == 0 and fake.calls["amdsmi_shut_down"] == 1
