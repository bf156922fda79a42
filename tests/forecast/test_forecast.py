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
    # The epochs seen after the first show how far it is from them: the interval holds them.
    assert f.low_j <= 1100 + 300 * 7 and not f.notes
    alone = forecast_energy(table([500]), 10, method="first-epoch")
    assert any("30% epoch-to-epoch spread" in n for n in alone.notes)
    g = forecast_energy(table([500, 300, 300]), 10, method="first-epoch", first_epochs=2)
    assert g.total_j == pytest.approx(4000.0)


def test_constant_epochs_give_exact_answer_and_only_the_level_uncertainty():
    t = table([100.0] * 8)
    for method in ("power", "epoch-energy", "first-epoch"):
        f = forecast_energy(t, 20, method=method, stable_epoch=2, window=5, first_epochs=3)
        assert f.total_j == pytest.approx(2000.0), method
        # No spread, no trend: what is left is the 0.6% level uncertainty (a slow drift
        # the epochs seen cannot show) over the 12 epochs to come.
        level = 0.006 * 100 * 12
        assert f.high_j - f.total_j == pytest.approx(f.total_j - f.low_j), method
        assert level < f.high_j - f.total_j < 3 * level, method


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
        forecast_energy(table([1, 2, 3]), 20, stable_epoch=10)
    with pytest.raises(InputError, match="no finished epoch"):
        forecast_energy(table([]), 5)


def test_evaluate_eq1_with_the_true_or_the_projected_duration():
    from joulecast.forecast import evaluate

    # Epochs get shorter: the duration projected from the window is longer than the true one.
    t = table([300, 300, 300, 280, 260, 240, 220, 200], [10, 10, 10, 9, 8, 7, 6, 5])
    kw = dict(windows=[2], stable_epochs=[1], methods=("power", "epoch-energy"))
    true = evaluate({1: t}, duration="true", **kw).set_index("method")
    projected = evaluate({1: t}, **kw).set_index("method")
    assert set(true["duration"]) == {"true"} and set(projected["duration"]) == {"projected"}
    # Eq. 1 with t = 75 s: P_w (600 J / 20 s = 30 W) x 75 s = 2250 J against 2100 J.
    assert true.loc["power", "mae_j"] == pytest.approx(150.0)
    assert projected.loc["power", "mae_j"] != pytest.approx(150.0)
    assert true.loc["epoch-energy", "mae_j"] == pytest.approx(
        projected.loc["epoch-energy", "mae_j"]
    )
    with pytest.raises(InputError, match="expected 'true' or 'projected'"):
        evaluate({1: t}, duration="real", **kw)


def test_window_start_and_validation():
    t = table([500, 400, 300, 310, 200, 200, 200])
    f = forecast_energy(t, 10, stable_epoch=2, window=3, window_start=4)
    # The epochs seen count with their measured energy, the 3 to come at the window's mean.
    assert f.window == (4, 7) and f.total_j == pytest.approx(2110 + 200 * 3)
    # Without window_start, the window is the latest 3 stable epochs: the same here.
    assert forecast_energy(t, 10, stable_epoch=2, window=3).window == (4, 7)
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
        "duration",
    }


def test_evaluate_skips_runs_with_nothing_left_to_forecast():
    from joulecast.forecast import evaluate

    five = table([500, 300, 300, 300, 300])
    rows = evaluate({1: five}, windows=[5], stable_epochs=[0], methods=("epoch-energy",))
    assert rows.empty  # all 5 epochs would be used: no forecast
    rows = evaluate({1: five}, windows=[4], stable_epochs=[0], methods=("epoch-energy",))
    assert rows["runs"].tolist() == [1]


def test_stable_epoch_chosen_from_the_epochs_seen():
    from joulecast.forecast import StableBy, choose_stable_epoch

    warm = [900, 600, 520, 505, 500, 498, 502, 500, 499, 501]
    assert choose_stable_epoch(warm[:1]).position is None
    assert choose_stable_epoch(warm[:1]).by is StableBy.FIRST_EPOCH
    # Too few epochs to judge: every epoch after the first.
    few = choose_stable_epoch(warm[:4])
    assert (few.position, few.by) == (1, StableBy.FEW_EPOCHS)
    # The first epoch in line with the ones after it (505 is within 2% of their median).
    settled = choose_stable_epoch(warm)
    assert (settled.position, settled.by) == (3, StableBy.ENERGY)
    # FLUSS's epoch with epochs after it: the first settled epoch from there.
    fluss = choose_stable_epoch(warm, fluss_position=2)
    assert (fluss.position, fluss.by) == (3, StableBy.FLUSS)
    # FLUSS's change in the last epoch seen (a prefix without a change yet): the energy rule.
    edge = choose_stable_epoch(warm, fluss_position=9)
    assert (edge.position, edge.by) == (3, StableBy.ENERGY)
    assert edge.note.startswith("FLUSS puts the regime change in the last epoch seen")
    # No epoch in line with the ones after it yet: the latest epochs.
    climbing = choose_stable_epoch([1000, 500, 20, 30, 50, 100, 100.1, 100.2], window=3)
    assert (climbing.position, climbing.by) == (5, StableBy.RECENT)


def test_default_forecast_answers_from_the_second_epoch():
    t = table([1000, 500, 510, 495, 505, 500, 498, 502])
    one = forecast_energy(t.iloc[:1], 20)
    assert one.method == "first-epoch" and one.stable_by == "first-epoch"
    assert one.notes[0] == "one epoch seen: the first-epoch extrapolation"
    assert one.total_j == pytest.approx(20_000)
    two = forecast_energy(t.iloc[:2], 20)
    assert two.method == "epoch-energy" and (two.stable_epoch, two.stable_by) == (1, "few-epochs")
    assert two.total_j == pytest.approx(1500 + 500 * 18)
    # With few epochs the interval is wide and says why; it narrows as epochs come.
    widths = [
        (f.high_j - f.low_j) / f.total_j
        for f in (forecast_energy(t.iloc[:k], 20) for k in (2, 4, 8))
    ]
    assert widths[0] > widths[1] > widths[2]
    assert any("one epoch gives no spread" in n for n in two.notes)
    later = forecast_energy(t, 20)
    assert later.stable_by == "energy" and later.to_dict()["stable_epoch_by"] == "energy"
    assert later.low_j <= 1000 + 500 * 19 <= later.high_j


def _warmup_run(rng, n):
    """Epoch energies: a warm-up of random depth and length, noise, a slow drift."""
    k = np.arange(n)
    level = rng.uniform(100, 1000)
    warm = 1 + rng.uniform(-0.3, 0.8) * np.exp(-k / rng.uniform(0.5, 3.0))
    drift = 1 + rng.uniform(-0.03, 0.03) * k / n
    return level * warm * drift * (1 + rng.normal(0, rng.uniform(0.005, 0.03), n))


@pytest.mark.parametrize("after", [2, 4, 6, "half"])
def test_intervals_are_honest_early_and_late(after):
    rng = np.random.default_rng(7)
    for method in ("epoch-energy", "power", "first-epoch"):
        hits = runs = 0
        for _ in range(300):
            n = int(rng.integers(12, 60))
            e = _warmup_run(rng, n)
            k = n // 2 if after == "half" else after
            f = forecast_energy(table(e[:k]), n, method=method)
            hits += f.low_j <= e.sum() <= f.high_j
            runs += 1
        # The first-epoch baseline errs by how far the first epoch is from the rest, which
        # the epochs seen after it show: its interval covers that whole, so more than 90%.
        top = 1.0 if method == "first-epoch" else 0.99
        assert 0.8 <= hits / runs <= top, (method, after, hits / runs)


def test_live_forecaster_auto_answers_from_the_second_epoch():
    from joulecast.forecast import LiveForecaster, StableBy, StableEpoch

    live = LiveForecaster(20)
    assert live.update(table([900])).method == "first-epoch"
    assert live.update(table([900, 500])).method == "epoch-energy"
    given = StableEpoch(2, StableBy.FLUSS, "from FLUSS")
    f = live.update(table([900, 700, 500, 500, 500]), stable=given)
    assert f.stable_epoch == 2 and f.stable_by == "fluss" and "from FLUSS" in f.notes
    # A fixed stabilizing epoch ignores what FLUSS says.
    fixed = LiveForecaster(20, stable_epoch=1).update(table([900, 700, 500]), stable=given)
    assert fixed.stable_epoch == 1 and fixed.stable_by == "fixed"
    with pytest.raises(InputError, match="expected an epoch number or 'auto'"):
        LiveForecaster(20, stable_epoch="soon")


def test_a_costly_first_epoch_is_no_trend():
    # The first epoch's one-off cost does not widen the interval of the epochs after it.
    for energy in ([200, 100], [200, 100, 100], [200, 100, 100, 100]):
        f = forecast_energy(table(energy), 40)
        assert f.stable_epoch == 1
        assert 0.5 * f.total_j < f.low_j < f.total_j < f.high_j < 1.5 * f.total_j, energy


def test_bad_epoch_tables_are_refused():
    with pytest.raises(InputError, match=r"epoch 1: energy_j -5\.0: expected a finite value >= 0"):
        forecast_energy(table([100, -5, 100]), 10)
    with pytest.raises(InputError, match="epoch 2: duration_s inf"):
        forecast_energy(table([100, 100, 100], [10, 10, math.inf]), 10)
