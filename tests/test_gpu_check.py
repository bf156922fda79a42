"""The GPU check script's analysis, on a synthetic trace with an energy counter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joulecast.records import Phase, PhaseKind

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counter_vs_power_integral(store, tmp_path):
    t = np.arange(0, 20.001, 0.01)
    power = 200 + 100 * (t > 5)
    counter = np.concatenate([[0], np.cumsum(np.diff(t) * (power[1:] + power[:-1]) / 2)]) * 1.01
    samples = pd.DataFrame(
        {"t_s": t, "device": "gpu:0", "power_w": power, "energy_j": counter, "util_pct": None,
         "mem_used_mib": None, "temp_c": None, "source": "nvml", "measured": True}
    )
    phases = [Phase(PhaseKind.EPOCH, i, i * 5.0, (i + 1) * 5.0, 100) for i in range(4)]
    run_id = store.import_run(samples=samples, phases=phases, name="synthetic")
    gpu_check = load_gpu_check()
    result = gpu_check.analyse(store.path, run_id)
    gpu = result["gpus"]["gpu:0"]
    assert gpu["method"] == "counter"
    assert gpu["rel_diff"] == pytest.approx(1 / 1.01 - 1, rel=1e-6)
    assert gpu["sample_hz"] == pytest.approx(100.0, rel=1e-6)
    assert [e["index"] for e in gpu["epochs"]] == [0, 1, 2, 3]
    files = gpu_check.export(store.path, run_id, tmp_path, "synthetic")
    back = pd.read_csv(tmp_path / files[0])
    assert len(back) == len(t) and back["power_w"].iloc[-1] == 300
