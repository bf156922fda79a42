"""The check that a store's energy aggregates equal the raw-sample integration (the kernel)."""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd

from joulecast import ledger
from joulecast.energy import curves
from joulecast.store import connect_readonly

REL = 1e-6


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= REL * max(abs(scale), 1.0)


_SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_files(folder: Path) -> list[Path]:
    """The SQLite files under ``folder``, whatever their names."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.endswith(("-wal", "-shm")):
            try:
                with path.open("rb") as f:
                    if f.read(16) == _SQLITE_HEADER:
                        found.append(path)
            except OSError:
                continue
    return found


def mismatches(path: Path) -> list[str]:
    """What differs between ``path``'s aggregates and the kernel on its raw samples; empty
    where every run agrees (or the file is not a store with aggregates)."""
    try:
        conn = connect_readonly(path)
    except sqlite3.Error:
        return []
    with closing(conn):
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError:
            return []
        if "device_energy" not in tables:
            return []
        return [
            f"{path.name}: run {run_id}: {problem}"
            for (run_id,) in conn.execute("SELECT id FROM runs").fetchall()
            for problem in _run_mismatches(conn, int(run_id))
        ]


def _run_mismatches(conn: sqlite3.Connection, run_id: int) -> list[str]:
    samples = pd.read_sql_query(
        "SELECT t_s, device, power_w, energy_j, util_pct, source, measured FROM samples"
        " WHERE run_id = ?"
        " ORDER BY device, t_s, rowid",
        conn,
        params=(run_id,),
    )
    samples["measured"] = samples["measured"].astype(bool)
    for col in ("t_s", "power_w", "energy_j", "util_pct"):
        samples[col] = samples[col].astype(float)
    reference = curves(samples)
    states = ledger.load_states(conn, run_id)
    problems: list[str] = []
    in_sql = dict(
        conn.execute(
            f"SELECT device, {ledger.ENERGY_SQL} FROM device_energy WHERE run_id = ?", (run_id,)
        ).fetchall()
    )
    for device, state in states.items():
        sql_j = math.nan if in_sql[device] is None else float(in_sql[device])
        if sql_j != state.energy_j and not (math.isnan(sql_j) and math.isnan(state.energy_j)):
            problems.append(f"{device}: ENERGY_SQL gives {sql_j} J, DeviceState {state.energy_j}")
    with_energy = {d for d, s in states.items() if not math.isnan(s.energy_j)}
    if with_energy != set(reference):
        return [f"devices with energy {sorted(with_energy)} != kernel's {sorted(reference)}"]
    devices = set(samples["device"])
    if set(states) != devices:
        problems.append(f"devices {sorted(states)} != the samples' {sorted(devices)}")
    for device, rows in samples.groupby("device", sort=True):
        state = states.get(str(device))
        util = rows["util_pct"].dropna()
        counted = (len(rows), float(rows["t_s"].min()), float(rows["t_s"].max()), len(util))
        if state is None or (state.rows, state.t_first_s, state.t_last_s, state.util_rows) != (
            counted
        ):
            problems.append(f"{device}: rows, first/last time or utilisation rows differ")
        elif not _close(state.util_sum, float(util.sum()), float(util.abs().sum())):
            problems.append(f"{device}: utilisation sum {state.util_sum} != {util.sum()}")
    for device, curve in reference.items():
        state = states[device]
        if not _close(state.energy_j, curve.total_j, curve.total_j):
            problems.append(f"{device}: {state.energy_j} J != kernel's {curve.total_j} J")
        if (state.counter, state.samples) != (curve.method == "counter", len(curve.t_s)):
            problems.append(f"{device}: method/samples differ from the kernel's")
        if (state.source, state.measured) != (curve.source, curve.measured):
            problems.append(f"{device}: source/measured differ from the kernel's")
    bounds = conn.execute(
        "SELECT start_s, end_s FROM phases WHERE run_id = ?", (run_id,)
    ).fetchall()
    times = [float(t) for row in bounds for t in row if t is not None]
    if reference:
        lo = min(float(c.t_s[0]) for c in reference.values())
        hi = max(float(c.t_s[-1]) for c in reference.values())
        times += list(np.linspace(lo - 1.0, hi + 1.0, 7))
        # Sample instants themselves (ties among them), at most 25 of them.
        instants = np.unique(samples["t_s"].to_numpy(float))
        times += instants[:: max(1, len(instants) // 25)].tolist()
    # Both ways of reading the energy at given times, on both tracks: a device's energy, and
    # the trapezoid of its power alone.
    power = curves(samples.assign(energy_j=np.nan))
    for track, expected in (("energy", reference), ("power", power)):
        at = ledger.energy_at(conn, run_id, states, times, track=track)
        scan = ledger.energy_scan(conn, run_id, states, times, track=track, chunk_rows=64)
        for way, got in (("read", at), ("scan", scan)):
            if set(got) != set(expected):
                problems.append(f"{track} {way}: devices {sorted(got)} != {sorted(expected)}")
                continue
            for device, curve in expected.items():
                want = curve.at(np.array(times))
                for tau, a, b in zip(times, got[device], want, strict=True):
                    if not _close(float(a), float(b), curve.total_j):
                        problems.append(
                            f"{device}: {track} at {tau} s ({way}): {a} J != kernel's {b} J"
                        )
                        break
    return problems
