"""Energy aggregates kept at write time equal the kernel's integration of the raw samples."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joulecast import ledger
from joulecast.energy import curves
from joulecast.records import Phase, PhaseKind, Reading
from joulecast.store import SAMPLE_COLUMNS, SCHEMA_VERSION, Store
from tests.ledger_check import mismatches
from tests.store_formats import old_store


def _readings(rng: np.random.Generator, t: np.ndarray, device: str, counter: bool) -> list[Reading]:
    power = 100 + 50 * rng.random(len(t))
    energy = np.cumsum(power * 0.1) if counter else None
    out = []
    for i, ti in enumerate(t):
        p = None if rng.random() < 0.05 else float(power[i])
        e = None
        if energy is not None and rng.random() > 0.05:
            e = float(energy[i]) - (5000.0 if i > len(t) // 2 else 0.0)  # one reload
        out.append(Reading(float(ti), device, p, "test", True, e, util_pct=50.0))
    return out


def test_batches_in_time_order_match_the_kernel(store: Store) -> None:
    rng = np.random.default_rng(1)
    run = store.create_run()
    t = np.cumsum(0.05 + 0.1 * rng.random(400))
    rows = _readings(rng, t, "gpu:0", True) + _readings(rng, t + 0.01, "ram", False)
    rows.sort(key=lambda r: r.t_s)
    for k in range(0, len(rows), 37):
        store.write_batch(run, rows[k : k + 37])
    store.write_phases(
        run, [Phase(PhaseKind.EPOCH, 0, 3.0, 20.0), Phase(PhaseKind.EPOCH, 1, 20.0, 99.0)]
    )
    assert mismatches(store.path) == []
    states = store.device_energy(run)
    assert states["gpu:0"].counter and not states["ram"].counter
    reference = curves(store.samples(run))
    assert states["gpu:0"].energy_j == pytest.approx(reference["gpu:0"].total_j, rel=1e-12)
    listed = store.runs().set_index("id")
    assert listed.loc[run, "energy_j"] == pytest.approx(
        sum(c.total_j for c in reference.values()), rel=1e-12
    )
    at = store.energy_at(run, [0.0, 10.0, 1e9])
    assert at["ram"][1] == pytest.approx(float(reference["ram"].at(10.0)), rel=1e-12)
    assert at["ram"][2] == pytest.approx(reference["ram"].total_j, rel=1e-12)


def test_a_batch_back_in_time_settles_its_device_again(store: Store) -> None:
    run = store.create_run()
    late = [Reading(float(t), "gpu:0", 100.0 + t, "test") for t in range(10, 20)]
    early = [Reading(float(t), "gpu:0", 200.0 - t, "test") for t in range(0, 10)]
    store.write_batch(run, late)
    store.write_batch(run, early)
    store.write_batch(run, [Reading(25.0, "gpu:0", 50.0, "test")])
    assert mismatches(store.path) == []
    assert store.device_energy(run)["gpu:0"].samples == 21


def _unsorted(seed: int, n: int, devices: list[str]) -> pd.DataFrame:
    """``n`` samples of ``devices`` at random times in [0, 100) s, in no order."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "t_s": rng.random(n) * 100,
            "device": rng.choice(devices, n),
            "power_w": 100 + rng.random(n) * 100,
            "energy_j": np.nan,
            "util_pct": np.nan,
            "mem_used_mib": np.nan,
            "temp_c": np.nan,
            "source": "import",
            "measured": True,
        }
    )[list(SAMPLE_COLUMNS)]


def test_an_unsorted_import_matches_the_kernel(store: Store) -> None:
    frame = _unsorted(2, 300, ["gpu:0", "gpu:1"])
    store.import_run(samples=frame, phases=[Phase(PhaseKind.EPOCH, 0, 10.0, 55.5)])
    assert mismatches(store.path) == []


def test_an_older_store_gets_its_aggregates_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_store(path, 2)
    with Store(path) as s:
        assert s.device_energy(1)["gpu:0"].energy_j == pytest.approx(200.0)
    assert mismatches(path) == []


def test_the_check_sees_a_wrong_aggregate(store: Store) -> None:
    run = store.create_run()
    store.write_batch(run, [Reading(float(t), "gpu:0", 100.0, "test") for t in range(5)])
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE device_energy SET trap_j = 1.0")
    assert mismatches(store.path) != []
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE device_energy SET trap_j = 400.0")


def test_an_older_store_being_recorded_is_not_migrated_under_its_writer(tmp_path: Path) -> None:
    import os
    import socket

    import psutil

    from joulecast.errors import StoreError

    path = tmp_path / "old.db"
    old_store(path, 2)
    with sqlite3.connect(path) as conn:  # this process plays the older joulecast recording it
        conn.execute(
            "UPDATE runs SET status = 'running', host = ?, pid = ?, pid_started = ?",
            (socket.gethostname(), os.getpid(), psutil.Process().create_time()),
        )
    with pytest.raises(StoreError, match=r"schema version 4: run 1 is still being recorded"):
        Store(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2  # left as it was
        conn.execute("UPDATE runs SET status = 'completed'")
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION


def test_an_import_in_frames_back_in_time_settles_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 240
    frame = _unsorted(3, n, ["gpu:0", "gpu:1", "ram"])
    # gpu:0 and gpu:1 go back in time from frame to frame; ram is in time order throughout.
    ram = frame["device"] == "ram"
    frame.loc[ram, "t_s"] = np.sort(frame.loc[ram, "t_s"])
    settled: list[list[str] | None] = []
    settle = ledger.settle

    def counted(conn: sqlite3.Connection, run_id: int, devices: list[str] | None = None) -> None:
        settled.append(devices)
        settle(conn, run_id, devices)

    monkeypatch.setattr(ledger, "settle", counted)
    chunked = store.import_run(samples=[frame.iloc[k : k + 16] for k in range(0, n, 16)])
    assert settled == [["gpu:0", "gpu:1"]]
    whole = store.import_run(samples=frame)
    assert mismatches(store.path) == []
    a, b = store.device_energy(whole), store.device_energy(chunked)
    assert {d: s.energy_j for d, s in b.items()} == pytest.approx(
        {d: s.energy_j for d, s in a.items()}, rel=1e-12
    )
    assert store.run(chunked)["duration_s"] == store.run(whole)["duration_s"] == frame["t_s"].max()


def test_counter_steps_at_the_first_instant_count_from_it(store: Store) -> None:
    run = store.create_run()
    store.write_batch(
        run,
        [
            Reading(0.0, "gpu:0", 100.0, "test", True, 0.0),
            Reading(0.0, "gpu:0", 100.0, "test", True, 5.0),  # the same instant, 5 J on
            Reading(1.0, "gpu:0", 100.0, "test", True, 105.0),
        ],
    )
    kernel = curves(store.samples(run))["gpu:0"]
    times = [-1.0, 0.0, 0.5, 2.0]
    assert store.energy_at(run, times)["gpu:0"].tolist() == kernel.at(times).tolist()
    assert kernel.at(times).tolist() == [5.0, 5.0, 55.0, 105.0]
    assert mismatches(store.path) == []


@pytest.mark.parametrize(("chunk_rows", "around"), [(1, 1), (2, 7), (5, 400), (1000, 3)])
def test_a_scan_in_chunks_gives_what_the_reads_give(
    store: Store, monkeypatch: pytest.MonkeyPatch, chunk_rows: int, around: int
) -> None:
    # The reads look up `around` times per statement.
    monkeypatch.setattr(ledger, "_AROUND_CHUNK", around)
    rng = np.random.default_rng(4)
    run = store.create_run()
    t = np.repeat(np.arange(0.0, 30.0, 0.5), 2)  # every time twice: ties across chunks
    rows = _readings(rng, t, "gpu:0", True) + _readings(rng, t[::3] + 0.1, "ram", False)
    rows.sort(key=lambda r: r.t_s)
    store.write_batch(run, rows)
    times = np.r_[-1.0, np.nan, rng.random(40) * 31, t[::7], 40.0]
    with sqlite3.connect(store.path) as conn:
        states = ledger.load_states(conn, run)
        for track in ("energy", "power"):
            reads = ledger.energy_at(conn, run, states, times, track=track)
            scan = ledger.energy_scan(conn, run, states, times, track=track, chunk_rows=chunk_rows)
            assert list(scan) == list(reads) == ["gpu:0", "ram"]
            for device, energy in reads.items():
                np.testing.assert_allclose(scan[device], energy, rtol=1e-12)
                assert np.isnan(scan[device][1])


def test_an_infinite_reading_is_stored_as_missing(store: Store) -> None:
    run = store.create_run()
    inf = float("inf")
    store.write_batch(run, [Reading(0.0, "gpu:0", 100.0, "test", True, 0.0, util_pct=inf)])
    store.write_batch(run, [Reading(1.0, "gpu:0", inf, "test", True, -inf, temp_c=-inf)])
    store.write_batch(
        run, [Reading(1.0, "gpu:0", -inf, "test"), Reading(2.0, "gpu:0", 100.0, "test")]
    )
    samples = store.samples(run)
    missing = samples[["power_w", "energy_j", "util_pct", "temp_c"]].isna().sum()
    assert missing.tolist() == [2, 3, 4, 4]
    assert store.device_energy(run)["gpu:0"].energy_j == pytest.approx(200.0)
    assert mismatches(store.path) == []
