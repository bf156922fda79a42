from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from joulecast.energy import (
    J_PER_KWH,
    EnergyCurve,
    curves,
    integrate,
    j_to_kwh,
    phase_table,
    summarize,
)
from joulecast.records import Reading, RunStatus
from joulecast.store import Store
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


# -- the kernel against a slow, obviously-correct reference ---------------------------------------


def reference_energy(t: list[float], p: list[float], e: list[float]) -> dict:
    """One device's energy by the rule, in a plain loop over its samples in time order."""
    rows = sorted(range(len(t)), key=lambda i: t[i])  # stable: ties keep their order
    counter = [i for i in rows if not math.isnan(e[i])]
    power = [i for i in rows if not math.isnan(p[i])]
    if len(counter) >= 2:
        used, method, total = counter, "counter", 0.0
        for a, b in pairwise(counter):
            step = e[b] - e[a]
            if step < 0:  # the counter went backwards: this interval from power, NaN as 0 W
                pa = 0.0 if math.isnan(p[a]) else p[a]
                pb = 0.0 if math.isnan(p[b]) else p[b]
                step = (t[b] - t[a]) * (pa + pb) / 2
            total += step
    elif power:
        used, method, total = power, "trapezoid", 0.0
        for a, b in pairwise(power):
            total += (t[b] - t[a]) * (p[a] + p[b]) / 2
    else:
        return {"energy_j": math.nan, "method": None, "samples": 0}
    return {
        "energy_j": total,
        "method": method,
        "samples": len(used),
        "t_first_s": t[used[0]],
        "t_last_s": t[used[-1]],
    }


def random_samples(rng: np.random.Generator, groups: int) -> pd.DataFrame:
    """Devices of 1 to 40 samples: NaN power, counters with resets, lone readings, ties."""
    parts = []
    for g in range(groups):
        n = int(rng.choice([1, 2, 3, int(rng.integers(4, 40))]))
        t = np.round(rng.random(n) * 100, 1)  # rounding makes ties
        p = np.where(rng.random(n) < 0.2, np.nan, 50 + 200 * rng.random(n))
        kind = rng.choice(["power", "counter", "lone counter"])
        if kind == "power":
            e = np.full(n, np.nan)
        else:
            steps = rng.random(n) * 500
            resets = rng.random(n) < 0.15  # a driver reload restarts the counter near 0
            e = np.array([0.0] * n)
            for i in range(n):
                e[i] = (0.0 if i == 0 or resets[i] else e[i - 1]) + steps[i]
            e[np.argsort(np.argsort(t, kind="stable"))] = e.copy()  # rises with time
            e = np.where(rng.random(n) < 0.2, np.nan, e)
            if kind == "lone counter":
                e[1:] = np.nan
        measured = rng.random(n) < (1.0 if g % 3 else 0.9)
        frame = {"t_s": t, "device": f"dev:{g:02d}", "power_w": p, "energy_j": e}
        parts.append(pd.DataFrame({**frame, "measured": measured}))
    samples = pd.concat(parts, ignore_index=True)
    return samples.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)


@pytest.mark.parametrize("seed", range(20))
def test_integrate_matches_a_per_device_loop(seed: int) -> None:
    samples = random_samples(np.random.default_rng(seed), groups=12)
    codes, devices = pd.factorize(samples["device"], sort=True)
    got = integrate(
        samples["t_s"].to_numpy(),
        samples["power_w"].to_numpy(),
        samples["energy_j"].to_numpy(),
        codes,
        samples["measured"].to_numpy(),
    )
    assert list(got.key) == list(range(len(devices)))
    for g, device in enumerate(devices):
        part = samples[samples["device"] == device]
        want = reference_energy(list(part["t_s"]), list(part["power_w"]), list(part["energy_j"]))
        if math.isnan(want["energy_j"]):
            assert math.isnan(got.energy_j[g]) and got.samples[g] == 0, device
            assert EnergyCurve.from_samples(device, part) is None
            continue
        assert got.energy_j[g] == pytest.approx(want["energy_j"], rel=1e-12, abs=1e-9), device
        assert got.method(g) == want["method"] and got.samples[g] == want["samples"], device
        assert (got.t_first_s[g], got.t_last_s[g]) == (want["t_first_s"], want["t_last_s"])
        assert got.measured[g] == part["measured"].all()
        rows = slice(got.start[g], got.stop[g])
        assert sorted(got.order[rows]) == sorted(part.index)  # every row of the device
        assert list(got.t_s[rows]) == sorted(part["t_s"])
        # The curve of one device alone, and of all devices at once, are the same curve.
        alone = EnergyCurve.from_samples(device, part)
        together = curves(samples)[device]
        assert alone is not None and alone.total_j == got.energy_j[g] == together.total_j
        assert alone.method == want["method"] and len(alone.t_s) == want["samples"]
        np.testing.assert_array_equal(alone.cum_j, together.cum_j)


def test_integrate_does_not_depend_on_row_order() -> None:
    samples = random_samples(np.random.default_rng(99), groups=30)
    codes = pd.factorize(samples["device"], sort=True)[0]
    arrays = (samples["t_s"].to_numpy(), samples["power_w"].to_numpy(), samples["energy_j"])
    shuffled = integrate(*arrays, codes)
    order = np.lexsort((samples["t_s"].to_numpy(), codes))
    ordered = integrate(*(np.asarray(a)[order] for a in arrays), codes[order])
    np.testing.assert_array_equal(shuffled.energy_j, ordered.energy_j)
    np.testing.assert_array_equal(shuffled.cum_j, ordered.cum_j)
    np.testing.assert_array_equal(ordered.order, np.arange(len(samples)))  # sorted: kept
    np.testing.assert_array_equal(shuffled.order, order)


def test_integrate_of_nothing() -> None:
    none = integrate(np.empty(0), np.empty(0))
    assert len(none.energy_j) == len(none.start) == len(none.stop) == len(none.cum_j) == 0
    one = integrate(np.array([5.0]), np.array([100.0]))
    assert list(one.energy_j) == [0.0] and one.method(0) == "trapezoid" and one.samples[0] == 1


def rate_run(store: Store) -> int:
    """A run asked for 10 Hz: gpu:0 stored at 10 Hz for 3 s, ram every 0.4 s, cpu once."""
    run_id = store.create_run(name="rates", interval_s=0.1)
    readings = [Reading(i / 10, "gpu:0", 100.0, "nvml") for i in range(31)]
    readings += [Reading(i * 0.4, "ram", 1.0, "ram-model", False) for i in range(8)]
    readings.append(Reading(1.0, "cpu", 5.0, "tdp-model", False))
    store.write_batch(run_id, readings)
    quality = {"interval_s": 0.1, "ticks": 31, "achieved_hz": 10.0, "missed_deadlines": 0}
    store.finish_run(run_id, RunStatus.COMPLETED, duration_s=3.0, quality=quality)
    return run_id


def test_summary_has_the_rate_stored_per_device(store: Store) -> None:
    summary = summarize(store, rate_run(store))
    rates = {d: v.rate_hz for d, v in summary.devices.items()}
    assert rates == {"gpu:0": pytest.approx(10.0), "ram": pytest.approx(2.5), "cpu": None}
    devices = summary.to_dict()["devices"]
    assert {d: v["rate_hz"] for d, v in devices.items()} == rates
    assert {d: v["samples"] for d, v in devices.items()} == {"gpu:0": 31, "ram": 8, "cpu": 1}


def _stored_sine(store):
    """The sine trace of two GPUs (gpu:1 with an energy counter and every 7th power missing)."""
    from joulecast.store import SAMPLE_COLUMNS

    frame = sine_trace(duration_s=60.0, dt_s=0.25).assign(
        energy_j=np.nan, util_pct=np.nan, mem_used_mib=np.nan, temp_c=np.nan
    )
    frame = frame.assign(source="test", measured=True)
    gpu1 = (frame["device"] == "gpu:1").to_numpy()
    frame.loc[gpu1, "energy_j"] = np.cumsum(frame.loc[gpu1, "power_w"]) * 0.25
    frame.loc[gpu1 & (np.arange(len(frame)) % 7 == 0), "power_w"] = np.nan
    return store.import_run(samples=frame[list(SAMPLE_COLUMNS)])


@pytest.mark.parametrize("ways", ["reads", "scan"])
def test_stored_mean_power_matches_the_samples(store, monkeypatch, ways):
    import joulecast.store
    from joulecast.energy import mean_power, stored_mean_power, stored_power_profile

    run_id = _stored_sine(store)
    monkeypatch.setattr(joulecast.store, "_READS_PER_ROW", 0 if ways == "reads" else 10**9)
    edges = np.linspace(-1.0, 61.0, 125)  # beyond the readings at both ends
    want = mean_power(store.samples(run_id), edges)
    got = stored_mean_power(store, run_id, edges)
    assert list(got) == list(want) == ["gpu:0", "gpu:1"]
    for device in want:
        np.testing.assert_allclose(got[device], want[device], rtol=1e-9, atol=1e-9)
    # The trapezoid of power, not the counter; 0 W outside the readings.
    inside = (edges[:-1] >= 0) & (edges[1:] <= 60)
    exact = [sine_energy_j(a, b, 2) / (b - a) for a, b in pairwise(edges)]
    total = got["gpu:0"] + got["gpu:1"]
    np.testing.assert_allclose(total[inside], np.array(exact)[inside], rtol=2e-3)
    assert got["gpu:0"][0] == got["gpu:1"][-1] == 0.0  # cells wholly before or after
    profile = stored_power_profile(store, run_id, 30)
    assert profile["device"].tolist() == ["gpu:0"] * 30 + ["gpu:1"] * 30
    span = np.linspace(0.0, 60.0, 31)
    np.testing.assert_allclose(profile["t_s"][:30], (span[:-1] + span[1:]) / 2)
    cells = mean_power(store.samples(run_id), span)
    np.testing.assert_allclose(profile["power_w"][30:], cells["gpu:1"], rtol=1e-9)
    assert stored_power_profile(store, store.create_run(), 30).empty


# -- epochs outside the readings (a sampler that died) -------------------------------------------


def _sampler_died(store: Store, epochs: list[tuple[float, float]]) -> int:
    """A run sampled at 10 Hz (100 W) from 0 to 5 s whose command marked ``epochs`` (start,
    end) of 100 samples each: as after joulecast measure was killed at 5 s."""
    from joulecast.records import Phase, PhaseKind

    run = store.create_run(name="killed", interval_s=0.1)
    readings = [Reading(k / 10, "gpu:0", 100.0, "test") for k in range(51)]
    phases = [Phase(PhaseKind.EPOCH, i, a, b, 100) for i, (a, b) in enumerate(epochs)]
    store.write_batch(run, readings, phases=phases)
    return run


def _owner_gone(store: Store, run: int) -> None:
    store.query("UPDATE runs SET pid_started = 1.0 WHERE id = ?", (run,))  # not this process


def test_epochs_after_the_readings_are_unmeasured_never_0_j(store: Store) -> None:
    run = _sampler_died(store, [(k, k + 1) for k in range(10)])
    # Being recorded (its owner, this process, lives): the readings are on their way.
    assert summarize(store, run).unmeasured_epochs == []
    _owner_gone(store, run)
    summary = summarize(store, run)
    assert summary.unmeasured_epochs == [5, 6, 7, 8, 9]
    epochs = summary.epochs
    assert epochs["energy_j"].iloc[:5].tolist() == pytest.approx([100.0] * 5)
    for col in ("energy_j", "energy_j[gpu:0]", "energy_j_measured", "mean_power_w"):
        assert epochs[col].iloc[5:].isna().all(), col
    assert epochs["j_per_sample"].iloc[5:].isna().all()
    # The run's energy is what was measured; its samples are not all covered: no J/sample.
    assert summary.energy_j == pytest.approx(500.0)
    assert summary.samples_processed == 1000 and summary.j_per_sample is None
    assert any("epochs 5-9 (5 of 10) ran outside the run's readings" in w for w in summary.warnings)
    data = summary.to_dict()
    assert data["unmeasured_epochs"] == [5, 6, 7, 8, 9] and data["j_per_sample"] is None
    assert [e["unmeasured"] for e in data["epochs"]] == [False] * 5 + [True] * 5
    assert all(
        e["energy_j"] is None and e["energy_j_by_device"] == {"gpu:0": None}
        for e in data["epochs"][5:]
    )
    # Marked interrupted since: the same.
    store.finish_run(run, RunStatus.INTERRUPTED)
    assert summarize(store, run).unmeasured_epochs == [5, 6, 7, 8, 9]


def test_an_epoch_the_sampler_died_in_is_unmeasured_and_a_spacing_is_tolerated(
    store: Store,
) -> None:
    # Within a reading's spacing (0.1 s) of the readings: measured; further out: not.
    run = _sampler_died(store, [(0.0, 5.05), (4.5, 5.5), (-0.05, 1.0), (-0.2, 1.0)])
    _owner_gone(store, run)
    assert summarize(store, run).unmeasured_epochs == [1, 3]
    table = phase_table(store.samples(run), store.phases(run, "epoch"))  # the same rule
    assert table["unmeasured"].tolist() == [False, True, False, True]
    assert table["energy_j"].iloc[0] == pytest.approx(500.0)


def test_a_run_without_readings_has_every_ended_epoch_unmeasured(store: Store) -> None:
    from joulecast.records import Phase, PhaseKind

    run = store.create_run()
    store.write_phases(
        run, [Phase(PhaseKind.EPOCH, 0, 0.0, 1.0, 10), Phase(PhaseKind.EPOCH, 1, 1.0)]
    )
    store.finish_run(run, RunStatus.COMPLETED)
    summary = summarize(store, run)
    assert summary.unmeasured_epochs == [0] and summary.j_per_sample is None
    assert summary.warnings == ["no power readings were recorded"]
