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
