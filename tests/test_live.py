"""The live forecast forecasts from settled epochs: what it used is what the summary shows."""

from __future__ import annotations

import time

import pytest

import joulecast


def test_api_live_forecast_uses_the_energy_the_summary_shows(tmp_path):
    seen = []
    with joulecast.measure(store=tmp_path / "s.db", interval_s=0.02) as run:
        run.live_forecast(3, stable_epoch=1, window=2, progress=False, on_update=seen.append)
        for i in range(3):
            with run.epoch(i, samples=10):
                time.sleep(0.1)
            assert run.forecast is seen[-1]
    epochs = run.summary().epochs
    energy = epochs["energy_j"].to_numpy()
    assert len(seen) == 3
    for k, forecast in enumerate(seen):
        assert forecast.energy_so_far_j == pytest.approx(energy[: k + 1].sum(), rel=1e-9)
        assert epochs["metrics"].iloc[k]["forecast"] == forecast.to_dict()
    assert seen[-1].total_j == pytest.approx(energy.sum(), rel=1e-9)


def _stored_run(store, epochs):
    """A run of ``epochs`` 10 s epochs at 100 W after a two-epoch warm-up at 60 W."""
    import numpy as np
    import pandas as pd

    from joulecast.records import Phase, PhaseKind
    from joulecast.store import SAMPLE_COLUMNS

    t = np.arange(0.0, 10.0 * epochs + 0.5, 0.5)
    samples = pd.DataFrame({"t_s": t, "device": "gpu:0", "power_w": np.where(t < 20, 60.0, 100.0)})
    samples = samples.assign(source="replay", measured=True).reindex(columns=list(SAMPLE_COLUMNS))
    phases = [Phase(PhaseKind.EPOCH, i, 10.0 * i, 10.0 * (i + 1)) for i in range(epochs)]
    return store.import_run(samples=samples, phases=phases), phases


@pytest.mark.parametrize("found", [None, 2])
def test_auto_live_forecast_asks_fluss_for_20_epochs_and_keeps_its_last_answer(
    tmp_path, monkeypatch, found
):
    import joulecast.live
    from joulecast.forecast import LiveForecaster

    calls = []

    def fluss(store, run_id, epochs):
        calls.append(len(epochs))
        return (found, "") if found is not None else (None, "no FLUSS regime change (test)")

    monkeypatch.setattr(joulecast.live, "fluss_position", fluss)
    with joulecast.open_store(tmp_path / "s.db") as store:
        run_id, phases = _stored_run(store, 30)
        live = joulecast.live.LiveForecast(
            lambda: store, run_id, LiveForecaster(30), progress=False
        )
        results = [live.after_epoch(p) for p in phases]
    assert results[0].method == "first-epoch"
    assert all(r.method == "epoch-energy" for r in results[1:])
    # After every epoch from the second to the 20th, then no more.
    assert calls == list(range(2, 21))
    if found is None:
        assert "no FLUSS regime change in the first 20 epochs" in results[-1].notes[0]
        assert results[-1].stable_by == "energy"
    else:
        assert results[-1].stable_by == "fluss" and results[-1].stable_epoch == 2
    # 28 epochs of 1 kJ after two of 0.6 kJ (the step's trapezoid adds 10 J to epoch 2).
    assert results[-1].total_j == pytest.approx(29_210.0)
    assert results[10].low_j <= 29_210.0 <= results[10].high_j


def test_an_unmeasured_epoch_is_never_forecast_from(tmp_path):
    import joulecast.live
    from joulecast.forecast import LiveForecaster, forecast_run
    from joulecast.records import Phase, PhaseKind
    from tests.test_energy import _owner_gone, _sampler_died

    with joulecast.open_store(tmp_path / "s.db") as store:
        spans = [(k, k + 1) for k in range(8)]
        run_id = _sampler_died(store, spans)  # readings up to 5 s: epochs 5-7 unmeasured
        _owner_gone(store, run_id)
        live = joulecast.live.LiveForecast(
            lambda: store, run_id, LiveForecaster(8, stable_epoch=1), progress=False
        )
        phases = [Phase(PhaseKind.EPOCH, i, a, b, 100) for i, (a, b) in enumerate(spans)]
        results = [live.after_epoch(p) for p in phases]
        assert [r is not None for r in results] == [True] * 5 + [False] * 3
        assert results[4].energy_so_far_j == pytest.approx(500.0)
        stored = store.phases(run_id, "epoch")["metrics"]
        assert ["forecast" in m for m in stored] == [True] * 5 + [False] * 3
        # A stored run's forecast leaves them out, and says so.
        found = forecast_run(store, run_id)
        assert found.after == 5 and found.forecast.energy_so_far_j == pytest.approx(500.0)
        assert "epochs 5-7 are unmeasured" in found.forecast.notes[-1]
