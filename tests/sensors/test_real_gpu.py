"""Real NVIDIA hardware through the real pynvml. Run with ``pytest -m gpu``; skips without NVML."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from joulecast.sensors.nvidia_smi import NvidiaSmiSensor
from joulecast.sensors.nvml import NvmlSensor

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def real_nvml() -> Iterator[Any]:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"NVML cannot start here: {exc}")
    yield pynvml
    pynvml.nvmlShutdown()


@pytest.fixture
def sensor(real_nvml: Any) -> Iterator[NvmlSensor]:
    s = NvmlSensor(aux_interval_s=0.0)
    yield s
    s.close()


def test_every_gpu_reads_plausible_power_and_load(real_nvml: Any, sensor: NvmlSensor) -> None:
    assert len(sensor.devices()) == real_nvml.nvmlDeviceGetCount()
    readings = sensor.read()
    assert [r.device for r in readings] == sensor.devices()
    for r in readings:
        assert r.power_w is not None and 1.0 < r.power_w < 2000.0, r
        assert r.util_pct is not None and 0.0 <= r.util_pct <= 100.0
        assert r.mem_used_mib is not None and r.mem_used_mib > 0.0
        assert r.temp_c is not None and 5.0 < r.temp_c < 110.0


def test_energy_counter_starts_near_zero_and_grows(sensor: NvmlSensor) -> None:
    facts = sensor.describe()
    first = {r.device: r for r in sensor.read()}
    time.sleep(0.3)
    second = {r.device: r for r in sensor.read()}
    for device, info in facts.items():
        if not info["energy_counter"]:
            assert second[device].energy_j is None
            continue
        e1, e2 = first[device].energy_j, second[device].energy_j
        assert e1 is not None and e2 is not None
        assert 0.0 <= e1 < 100.0  # relative to the probe moments ago, not since driver load
        assert e2 >= e1
        # at most the power limit for the time that passed (plus counter granularity)
        limit_w = info["max_power_limit_w"] or 2000.0
        assert e2 - e1 <= limit_w * 0.6


def test_describe_reports_watts_and_identity(real_nvml: Any, sensor: NvmlSensor) -> None:
    for info in sensor.describe().values():
        assert str(info["uuid"]).startswith("GPU-")
        assert info["name"]
        handle = real_nvml.nvmlDeviceGetHandleByIndex(info["nvml_index"])
        assert real_nvml.nvmlDeviceGetUUID(handle) == info["uuid"]
        for key in ("power_limit_w", "default_power_limit_w", "max_power_limit_w"):
            if info[key] is not None:
                assert 10.0 <= info[key] <= 2000.0, (key, info[key])  # W, not mW
        if info["architecture"] in ("volta", "turing", "ampere", "ada", "hopper", "blackwell"):
            assert info["energy_counter"] is True
        assert info["memory_total_mib"] > 1000.0


def test_nvidia_smi_sees_the_same_gpus(sensor: NvmlSensor) -> None:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi not on PATH")
    smi = NvidiaSmiSensor(interval_s=0.1)
    try:
        assert smi.devices() == sensor.devices()
        nvml_facts = sensor.describe()
        for device, info in smi.describe().items():
            assert info["uuid"] == nvml_facts[device]["uuid"]
        deadline = time.monotonic() + 3.0
        got: list = []
        while not got and time.monotonic() < deadline:
            got = smi.read()
            time.sleep(0.05)
        assert got and all(r.power_w is None or r.power_w > 1.0 for r in got)
    finally:
        smi.close()
