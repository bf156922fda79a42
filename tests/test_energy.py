from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from joulecast.energy import J_PER_KWH, EnergyCurve, curves, j_to_kwh, phase_table
from tests.conftest import sine_energy_j, sine_trace


def _frame(t, p, e=None, device="gpu:0", measured=True):
    return pd.DataFrame(
        {
            "t_s": t,
            "device": device,
            "power_w": p,
            "energy_j": e if e is not None else [None] * len(t),
            "source": "test",
            "measured": measured,
        }
    )


def test_kwh_is_exact():
    assert J_PER_KWH == 3.6e6
    assert j_to_kwh(3.6e6) == 1.0


def test_trapezoid_of_linear_power_is_exact():
    t = np.array([0.0, 1.0, 3.0, 4.0])
    p = np.array([100.0, 200.0, 200.0, 0.0])
    curve = EnergyCurve.from_samples("gpu:0", _frame(t, p))
    assert curve.method == "trapezoid"
    assert curve.total_j == pytest.approx(150 + 400 + 100)
    # A window inside one interval integrates the interpolated line exactly.
    assert curve.between(0.0, 0.5) == pytest.approx(0.5 * (100 + 150) / 2)
    assert curve.between(3.5, 4.0) == pytest.approx(0.5 * 100 / 2)
    # Windows beyond the samples are clamped, not extrapolated.
    assert curve.between(-5, 10) == pytest.approx(curve.total_j)


def test_counter_preferred_over_power():
    t = np.array([0.0, 1.0, 2.0])
    curve = EnergyCurve.from_samples("gpu:0", _frame(t, [10.0, 10.0, 10.0], [0.0, 250.0, 500.0]))
    assert curve.method == "counter"
    assert curve.total_j == pytest.approx(500.0)
    assert curve.between(0.5, 1.5) == pytest.approx(250.0)


def test_counter_reset_is_filled_from_power():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    e = [0.0, 100.0, 5.0, 105.0]  # the counter restarted between 1 s and 2 s
    curve = EnergyCurve.from_samples("gpu:0", _frame(t, [100.0] * 4, e))
    assert curve.total_j == pytest.approx(100 + 100 + 100)


def test_phases_add_up_to_total():
    trace = sine_trace(60, 0.1)
    trace["energy_j"] = None
    trace["source"] = "test"
    trace["measured"] = True
    edges = np.linspace(0, 60, 7)
    phases = pd.DataFrame(
        {
            "kind": "epoch",
            "index": range(6),
            "start_s": edges[:-1],
            "end_s": edges[1:],
            "samples": 100,
        }
    )
    table = phase_table(trace, phases)
    total = sum(c.total_j for c in curves(trace).values())
    assert table["energy_j"].sum() == pytest.approx(total, rel=1e-12)
    assert table["energy_j"].sum() == pytest.approx(sine_energy_j(0, 60), rel=1e-4)
    assert set(table.columns) >= {
        "energy_j[gpu:0]",
        "energy_j[gpu:1]",
        "mean_power_w",
        "j_per_sample",
    }
    assert table["j_per_sample"].iloc[0] == pytest.approx(table["energy_j"].iloc[0] / 100)


def test_modelled_devices_kept_apart():
    t = np.array([0.0, 10.0])
    samples = pd.concat(
        [_frame(t, [100.0, 100.0]), _frame(t, [3.0, 3.0], device="ram", measured=False)]
    )
    phases = pd.DataFrame(
        {"kind": ["epoch"], "index": [0], "start_s": [0.0], "end_s": [10.0], "samples": [None]}
    )
    row = phase_table(samples, phases).iloc[0]
    assert row["energy_j"] == pytest.approx(1030.0)
    assert row["energy_j_measured"] == pytest.approx(1000.0)
    assert np.isnan(row["j_per_sample"])


def test_open_phase_has_no_energy():
    t = np.array([0.0, 10.0])
    phases = pd.DataFrame(
        {"kind": ["epoch"], "index": [0], "start_s": [1.0], "end_s": [np.nan], "samples": [None]}
    )
    assert np.isnan(phase_table(_frame(t, [1.0, 1.0]), phases)["energy_j"].iloc[0])
