from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from joulecast.errors import InputError
from joulecast.stability import (
    choose_resolution,
    resample,
    stabilizing_epoch,
    stable_share,
    total_power,
)


def warmup_run(n_epochs=30, epoch_s=20.0, dt=0.5, ramp_s=80.0, seed=0):
    """Power ramps up for ramp_s, then holds with noise and a dip at each epoch's end."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, n_epochs * epoch_s, dt)
    p = np.where(t < ramp_s, 120 + 100 * t / ramp_s, 250) + rng.normal(0, 5, len(t))
    p = np.where((t % epoch_s) > epoch_s - 2, p - 80, p)
    samples = pd.DataFrame({"t_s": t, "device": "gpu:0", "power_w": p})
    epochs = pd.DataFrame(
        {
            "index": range(n_epochs),
            "start_s": np.arange(n_epochs) * epoch_s,
            "end_s": (np.arange(n_epochs) + 1) * epoch_s,
        }
    )
    return samples, epochs


def test_total_power_sums_devices_on_common_grid():
    samples = pd.DataFrame(
        {
            "t_s": [0.0, 1.0, 0.5, 1.0],
            "device": ["gpu:0", "gpu:0", "gpu:1", "gpu:1"],
            "power_w": [100.0, 200.0, 50.0, 50.0],
        }
    )
    t, p = total_power(samples)
    assert t.tolist() == [0.0, 0.5, 1.0]
    assert p.tolist() == [150.0, 200.0, 250.0]


def test_resample_means_per_bin():
    t = np.array([0.0, 0.1, 0.6, 0.7, 1.6])
    p = np.array([10.0, 20.0, 30.0, 50.0, 70.0])
    centres, values = resample(t, p, 0.5)
    assert centres.tolist() == [0.25, 0.75, 1.25, 1.75]
    assert values.tolist() == [15.0, 40.0, 55.0, 70.0]  # the empty bin is interpolated


def test_resample_refuses_times_that_overflow_the_grid():
    for t in ([-1.7e308, 1.7e308], [0.0, 1e300], [0.0, np.inf]):
        with pytest.raises(InputError, match=r"expected finite times that a grid of 0\.5 s"):
            resample(np.array(t), np.array([1.0, 2.0]), 0.5)


def _refuse(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


@pytest.mark.parametrize("t_s", [[-1.7e308, 0.0, 1.7e308], [0.0, 1.0, np.inf], [0.0, 1.0, 1e308]])
def test_stored_times_that_overflow_give_an_answer(tmp_path, capsys, t_s):
    """A run stored before times and power were bounded: stability and show --json answer."""
    import json

    from joulecast.cli import main
    from joulecast.store import Store, sample_frame

    db = str(tmp_path / "s.db")
    with Store(db) as store:
        powers = [1.0, 1e308, 2.0]
        rows = [
            (t, "gpu:0", p, None, None, None, None, "x", True)
            for t, p in zip(t_s, powers, strict=True)
        ]
        run_id = str(store.import_run(samples=sample_frame(rows)))
    try:
        capsys.readouterr()
        assert main(["stability", run_id, "--store", db, "--json"]) == 0
        result = json.loads(capsys.readouterr().out, parse_constant=_refuse)
        if not np.isfinite(t_s[-1] - t_s[0]):
            assert result["change_s"] is None
            assert "expected finite times that a grid" in result["reason"]
        assert main(["stability", run_id, "--store", db]) == 0
        capsys.readouterr()
        assert main(["show", run_id, "--store", db, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out, parse_constant=_refuse)
        assert shown["run_id"] == int(run_id)
    finally:
        # Its aggregates are inf and NaN, which the check of every test's stores cannot compare.
        for path in tmp_path.glob("s.db*"):
            path.unlink()


def test_resolution_is_adaptive():
    assert choose_resolution(600.0) == 0.5
    assert choose_resolution(600.0, np.array([2.0, 2.0])) == 0.25  # 8 points per epoch
    assert choose_resolution(3_600_000.0, max_points=20_000) == 180.0


def test_stable_share_cumulative():
    share = stable_share([2, 4, None, 4], max_epoch=5)
    assert share["runs_stable"].tolist() == [0, 0, 1, 1, 3, 3]
    assert share["share"].iloc[-1] == pytest.approx(0.75)


@pytest.mark.slow
def test_fluss_finds_the_end_of_warmup():
    samples, epochs = warmup_run()
    result = stabilizing_epoch(samples, epochs)
    assert result.change_s is not None and 70 <= result.change_s <= 110
    assert result.epoch in (3, 4, 5)
    # The same answer from a trace 50x denser, resampled to the same grid.
    dense = samples.loc[samples.index.repeat(50)].copy()
    dense["t_s"] = dense["t_s"] + np.tile(np.arange(50) * 0.01, len(samples))
    again = stabilizing_epoch(dense.sort_values("t_s"), epochs, resolution_s=0.5)
    assert abs(again.epoch - result.epoch) <= 1
    # A flat trace has nothing to segment.
    flat = samples.assign(power_w=200.0)
    none = stabilizing_epoch(flat, epochs)
    assert none.epoch is None and "constant" in none.reason


def test_no_power_is_an_error():
    with pytest.raises(InputError, match="no power readings"):
        total_power(pd.DataFrame({"t_s": [0.0], "device": ["x"], "power_w": [np.nan]}))


def test_settled_epoch_moves_past_a_slow_warmup():
    from joulecast.stability import settled_epoch

    energy = np.array([900.0, 700.0, 560.0, 505.0, 500.0, 498.0, 503.0, 501.0, 499.0, 502.0])
    assert settled_epoch(energy, 0) == 3  # 505 is within 2% of the later epochs' median
    assert settled_epoch(energy, 5) == 5  # already settled where FLUSS said
    assert settled_epoch(energy[:5], 0) == 0  # too few epochs after to judge: FLUSS's answer
    noisy = np.array([800.0, 500.0, 560.0, 440.0, 520.0, 480.0, 530.0, 470.0])
    assert settled_epoch(noisy, 0) == 1  # within 3 robust deviations of a noisy regime


def _stored_warmup(store):
    """:func:`warmup_run` on two GPUs (gpu:1 a third lower, its readings 0.2 s later, every
    9th without power, with an energy counter), imported with its epochs."""
    from joulecast.records import Phase, PhaseKind
    from joulecast.store import SAMPLE_COLUMNS

    samples, epochs = warmup_run()
    gpu1 = samples.assign(
        device="gpu:1", t_s=samples["t_s"] + 0.2, power_w=samples["power_w"] * 2 / 3
    )
    gpu1["energy_j"] = np.cumsum(gpu1["power_w"]) * 0.5
    gpu1.loc[gpu1.index % 9 == 0, "power_w"] = np.nan
    frame = pd.concat([samples, gpu1], ignore_index=True)
    for column in ("energy_j", "util_pct", "mem_used_mib", "temp_c"):
        frame[column] = frame.get(column, np.nan)
    frame = frame.assign(source="test", measured=True)[list(SAMPLE_COLUMNS)]
    phases = [Phase(PhaseKind.EPOCH, int(e.index), e.start_s, e.end_s) for e in epochs.itertuples()]
    return store.import_run(samples=frame, phases=phases), epochs


@pytest.mark.slow
@pytest.mark.parametrize("ways", ["reads", "scan in chunks"])
def test_a_stored_run_gives_what_its_samples_give(store, monkeypatch, ways):
    import functools

    import joulecast.store
    from joulecast import ledger
    from joulecast.forecast import StableBy, auto_stable_epoch, finished_epochs
    from joulecast.stability import stored_stabilizing_epoch

    run_id, epochs = _stored_warmup(store)
    if ways == "reads":
        monkeypatch.setattr(joulecast.store, "_READS_PER_ROW", 0)
    else:
        monkeypatch.setattr(joulecast.store, "_READS_PER_ROW", 10**9)
        scan = functools.partial(ledger.energy_scan, chunk_rows=7)
        monkeypatch.setattr(ledger, "energy_scan", scan)
    stored = stored_stabilizing_epoch(store, run_id, epochs)
    loaded = stabilizing_epoch(store.samples(run_id), epochs)
    assert stored.epoch in (3, 4, 5) and stored.settled_epoch is not None
    assert stored.to_dict() == loaded.to_dict()
    np.testing.assert_allclose(stored.power_w, loaded.power_w, rtol=1e-9)
    # What a forecast after 12 epochs sees: the run up to the end of epoch 11.
    seen = epochs.iloc[:12]
    end = float(seen["end_s"].max())
    early = stored_stabilizing_epoch(store, run_id, seen, end_s=end)
    assert early.to_dict() == stabilizing_epoch(store.samples(run_id, None, end), seen).to_dict()
    table = finished_epochs(store, run_id).iloc[:12]
    chosen = auto_stable_epoch(store, run_id, table)
    assert chosen.position == early.settled_epoch and chosen.by is StableBy.FLUSS


def test_fluss_segments_the_measured_power_where_there_is_some(store):
    from joulecast.records import Phase, PhaseKind
    from joulecast.stability import fluss_devices, stored_stabilizing_epoch
    from joulecast.store import SAMPLE_COLUMNS

    assert fluss_devices({"gpu:0": True, "ram": False, "cpu:0": True}) == ["cpu:0", "gpu:0"]
    assert fluss_devices({"ram": False, "cpu:0": False}) == ["cpu:0", "ram"]
    samples, epochs = warmup_run()
    # A modelled device with a step of its own, early, ten times the GPU's size.
    ram = samples.assign(device="ram", power_w=np.where(samples["t_s"] < 8, 0.0, 2000.0))
    frame = pd.concat(
        [samples.assign(measured=True), ram.assign(measured=False)], ignore_index=True
    )
    for column in SAMPLE_COLUMNS:
        frame[column] = frame.get(column, np.nan)
    frame = frame.assign(source="test")[list(SAMPLE_COLUMNS)]
    phases = [Phase(PhaseKind.EPOCH, int(e.index), e.start_s, e.end_s) for e in epochs.itertuples()]
    run_id = store.import_run(samples=frame, phases=phases)
    alone = stabilizing_epoch(samples, epochs)
    mixed = stabilizing_epoch(frame, epochs)
    stored = stored_stabilizing_epoch(store, run_id, epochs)
    # The change and its epoch are the GPU's; the settled epoch weighs every device's energy.
    assert mixed.to_dict() == stored.to_dict()
    assert (mixed.change_s, mixed.epoch) == (alone.change_s, alone.epoch)
    np.testing.assert_allclose(stored.power_w, alone.power_w, rtol=1e-9)
