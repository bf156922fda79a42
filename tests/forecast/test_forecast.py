from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from joulecast.errors import InputError
from joulecast.forecast import Forecast, forecast_energy


def table(energy, duration=None):
    energy = list(map(float, energy))
    duration = list(map(float, duration)) if duration is not None else [10.0] * len(energy)
    return pd.DataFrame({"index": range(len(energy)), "energy_j": energy, "duration_s": duration})


def test_epoch_energy_eq2_by_hand():
    # Unstable epochs 0-1 (500, 400 J), stable from epoch 2, window of 3: 300, 310, 290 J.
    t = table([500, 400, 300, 310, 290])
    f = forecast_energy(t, 10, method="epoch-energy", stable_epoch=2, window=3)
    # E = E_w * s / w + E_u = 900 * (10 - 2) / 3 + 900
    assert f.total_j == pytest.approx(900 * 8 / 3 + 900)
    assert f.window == (2, 5) and f.epochs_used == 5 and f.stable_epoch == 2
    assert f.low_j < f.total_j < f.high_j
    assert f.energy_so_far_j == pytest.approx(1800) and f.remaining_j == pytest.approx(
        f.total_j - 1800
    )
    assert not f.notes


def test_power_eq1_by_hand():
    # Window epochs: 300 J / 10 s and 330 J / 11 s -> P_w = 630 / 21 = 30 W.
    t = table([500, 300, 330], [20, 10, 11])
    f = forecast_energy(t, 6, method="power", stable_epoch=1, window=2)
    projected_s = 41 + 10.5 * 3
    assert f.duration_s == pytest.approx(projected_s)
    assert f.total_j == pytest.approx(30.0 * projected_s)
    # With the true duration given, exactly Eq. 1.
    g = forecast_energy(t, 6, method="power", stable_epoch=1, window=2, duration_s=100.0)
    assert g.total_j == pytest.approx(3000.0)


def test_first_epoch_baseline():
    f = forecast_energy(table([500, 300, 300]), 10, method="first-epoch")
    assert f.total_j == pytest.approx(5000.0) and f.epochs_used == 1
    assert any("10% epoch-to-epoch spread" in n for n in f.notes)
    g = forecast_energy(table([500, 300, 300]), 10, method="first-epoch", first_epochs=2)
    assert g.total_j == pytest.approx(4000.0)


def test_constant_epochs_give_exact_answer_and_zero_width():
    t = table([100.0] * 8)
    for method in ("power", "epoch-energy", "first-epoch"):
        f = forecast_energy(t, 20, method=method, stable_epoch=2, window=5, first_epochs=3)
        assert f.total_j == pytest.approx(2000.0), method
        assert f.high_j - f.low_j == pytest.approx(0.0, abs=1e-6)


def test_interval_covers_noise():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        e = 100 + rng.normal(0, 5, 30)
        f = forecast_energy(table(e[:8]), 30, method="epoch-energy", stable_epoch=0, window=8)
        hits += f.low_j <= e.sum() <= f.high_j
    assert 0.8 <= hits / 200 <= 0.99  # a 90% interval


def test_few_stable_epochs_widen_and_say_so():
    t = table([500, 400, 300, 310])
    full = forecast_energy(table([500, 400, 300, 310, 305, 300, 295]), 20, stable_epoch=2, window=5)
    few = forecast_energy(t, 20, stable_epoch=2, window=5)
    assert any("only 2 stable epoch(s)" in n for n in few.notes)
    assert (few.high_j - few.low_j) > (full.high_j - full.low_j)
    assert all(math.isfinite(v) for v in (few.total_j, few.low_j, few.high_j))


def test_no_stable_epoch_yet_says_how_many_are_needed():
    with pytest.raises(InputError, match="needs at least 11 epochs"):
        forecast_energy(table([1, 2, 3]), 20)
    with pytest.raises(InputError, match="no finished epoch"):
        forecast_energy(table([]), 5)


def test_window_start_and_validation():
    t = table([500, 400, 300, 310, 200, 200, 200])
    f = forecast_energy(t, 10, stable_epoch=2, window=3, window_start=4)
    assert f.window == (4, 7) and f.total_j == pytest.approx(600 * 8 / 3 + 900)
    with pytest.raises(InputError, match="less than the 7 epochs"):
        forecast_energy(t, 5)
    with pytest.raises(InputError, match="window must be at least 1"):
        forecast_energy(t, 10, window=0, stable_epoch=1)


def test_open_epochs_are_ignored_and_to_dict():
    t = table([100, 100, 100])
    t.loc[2, "energy_j"] = np.nan
    f = forecast_energy(t, 10, stable_epoch=0, window=5)
    assert f.epochs_used == 2 and isinstance(f, Forecast)
    d = f.to_dict()
    assert {"method", "epochs_used", "total_j", "low_j", "high_j"} <= set(d)


def test_live_forecaster_answers_from_the_first_epoch():
    from joulecast.forecast import LiveForecaster

    live = LiveForecaster(20, stable_epoch=2, window=3)
    first = live.update(table([500]))
    assert first.method == "first-epoch" and first.total_j == pytest.approx(10000)
    assert "before the stabilizing epoch 2" in first.notes[0]
    later = live.update(table([500, 400, 300, 300, 300]))
    assert later.method == "epoch-energy" and later.total_j == pytest.approx(900 * 18 / 3 + 900)
    assert live.last is later


def test_energy_budget_and_gain_per_kj():
    from joulecast.forecast import EnergyBudget

    t = table([1000] * 6)
    t["metrics"] = [{"val_loss": v} for v in (1.0, 0.8, 0.7, 0.69, 0.689, 0.6889)]
    f = forecast_energy(t, 100, stable_epoch=0, window=5)
    assert EnergyBudget(budget_j=50e3).check(t, f).stop  # 100 kJ forecast
    assert not EnergyBudget(budget_j=200e3).check(t, f).stop
    # Over the last 3 epochs (3 kJ) val_loss improved 0.0111: 0.0037 per kJ.
    slow = EnergyBudget(min_gain_per_kj=0.01, patience=3).check(t, None)
    assert slow.stop and "val_loss improved by 0.0111" in slow.reason
    assert not EnergyBudget(min_gain_per_kj=0.001, patience=3).check(t, None).stop
    with pytest.raises(InputError, match="mode"):
        EnergyBudget(mode="up")


def test_evaluate_sweeps_window_and_stable_epoch():
    from joulecast.forecast import evaluate

    runs = {i: table([400, 300] + [100.0 + i] * 18) for i in range(3)}
    result = evaluate(runs, windows=[1, 5], stable_epochs=[0, 2])
    ee = result[result.method == "epoch-energy"].set_index(["window", "stable_epoch"])
    # Stable from epoch 2 the epochs are constant: exact.
    assert ee.loc[(5, 2), "rmse_j"] == pytest.approx(0.0, abs=1e-9)
    assert ee.loc[(5, 0), "rmse_j"] > 0  # a window over the warm-up misleads
    first = result[result.method == "first-epoch"]
    assert len(first) == 1 and first["runs"].iloc[0] == 3
    assert set(result.columns) == {
        "method",
        "window",
        "stable_epoch",
        "runs",
        "rmse_j",
        "mae_j",
        "mape_pct",
    }


def test_evaluate_skips_runs_with_nothing_left_to_forecast():
    from joulecast.forecast import evaluate

    five = table([500, 300, 300, 300, 300])
    rows = evaluate({1: five}, windows=[5], stable_epochs=[0], methods=("epoch-energy",))
    assert rows.empty  # all 5 epochs would be used: no forecast
    rows = evaluate({1: five}, windows=[4], stable_epochs=[0], methods=("epoch-energy",))
    assert rows["runs"].tolist() == [1]
