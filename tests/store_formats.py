"""Store files as earlier joulecast versions wrote them, built with raw sqlite3.

The SQL is a frozen copy of what those versions ran, so the upgrade tests do not depend on
today's migrations.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# Schema version 1: the core tables.
V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    name TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    host TEXT,
    pid INTEGER,
    pid_started REAL,
    hardware TEXT NOT NULL DEFAULT '{}',
    origin TEXT NOT NULL DEFAULT 'measure',
    status TEXT NOT NULL,
    exit_code INTEGER,
    signal TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    start_mono_s REAL,
    duration_s REAL,
    interval_s REAL,
    heartbeat_at REAL,
    quality TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE samples (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    t_s REAL NOT NULL,
    device TEXT NOT NULL,
    power_w REAL,
    energy_j REAL,
    util_pct REAL,
    mem_used_mib REAL,
    temp_c REAL,
    source TEXT NOT NULL,
    measured INTEGER NOT NULL
);
CREATE INDEX samples_by_run ON samples(run_id, t_s);
CREATE TABLE phases (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    idx INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL,
    samples INTEGER,
    metrics TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, kind, idx)
);
CREATE TABLE gaps (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL,
    reason TEXT NOT NULL
);
"""

# Schema version 2 added the study tables to version 1.
V2 = """
CREATE TABLE studies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE study_runs (
    study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    key TEXT NOT NULL,
    factors TEXT NOT NULL,
    repetition INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id INTEGER,
    error TEXT,
    started_at REAL,
    ended_at REAL,
    job_id TEXT,
    PRIMARY KEY (study_id, position),
    UNIQUE (study_id, key)
);
"""


def old_store(path: Path, version: int) -> None:
    """Write at ``path`` a store file at schema ``version`` (1 or 2) with one completed run.

    The run (id 1, uid ``old-uid``) has three samples of 100 W at 0, 1 and 2 s.
    """
    conn = sqlite3.connect(path)
    try:
        conn.executescript(V1 + (V2 if version >= 2 else ""))
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute(
            "INSERT INTO runs (uid, name, status, started_at, duration_s)"
            " VALUES ('old-uid', 'old', 'completed', 1.0, 2.0)"
        )
        conn.executemany(
            "INSERT INTO samples VALUES (1, ?, 'gpu:0', 100.0, NULL, NULL, NULL, NULL, 'x', 1)",
            [(0.0,), (1.0,), (2.0,)],
        )
        conn.commit()
    finally:
        conn.close()
