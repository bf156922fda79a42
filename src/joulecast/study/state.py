"""A study's plan and progress, kept in the run store (tables ``studies`` and ``study_runs``).

The study package owns these tables: :data:`MIGRATIONS` are their schema, applied to a store
(component :data:`COMPONENT`) the first time a study uses it.

Each planned run has a status: ``planned``, ``running`` (claimed by a runner), or an outcome:
``completed``, ``oom``, ``timeout``, ``failed``. ``attempts`` counts its claims, ``interrupted``
those its runner died during (killed, its machine lost): a run found ``running`` when a runner
starts (:meth:`StudyState.recover`). Such a run is planned again until it has had the study's
``max_attempts``, then recorded ``failed``; a run that fails on its own is never retried.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from joulecast.errors import InputError

if TYPE_CHECKING:
    from joulecast.store import Migration, Store
    from joulecast.study.design import PlannedRun, Study

COMPONENT = "studies"
MIGRATIONS: dict[int, Migration] = {
    # IF NOT EXISTS: a store made at core schema version 2 already holds these tables (the core
    # created them then), with its studies in them; they are taken over as they are.
    1: """
    CREATE TABLE IF NOT EXISTS studies (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        digest TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS study_runs (
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
    """,
    # Attempts lost to the runner's death, counted apart from the attempts. Before, only such
    # attempts were retried, so every attempt but a run's last was one, and a run recorded
    # failed for them was failed for all of its attempts.
    2: """
    ALTER TABLE study_runs ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
    UPDATE study_runs SET interrupted = CASE
        WHEN status = 'planned' THEN attempts
        WHEN status = 'failed' AND error LIKE 'the runner stopped during this run %' THEN attempts
        ELSE MAX(0, attempts - 1)
    END;
    """,
}
OUTCOMES = ("completed", "oom", "timeout", "failed")
# How recover() words a run given up after its runner died during every attempt.
_GIVEN_UP = "the runner stopped during this run {attempts} times (max_attempts {limit})"
COLUMNS = [
    "position",
    "key",
    "factors",
    "repetition",
    "seed",
    "status",
    "attempts",
    "interrupted",
    "run_id",
    "error",
    "started_at",
    "ended_at",
    "job_id",
]


class StudyState:
    """The stored plan of one study and the status of each of its runs."""

    def __init__(self, store: Store, study_id: int, name: str) -> None:
        self.store = store
        self.study_id = study_id
        self.name = name

    @classmethod
    def open(cls, store: Store, study: Study, planned: list[PlannedRun]) -> StudyState:
        """Store the plan the first time; afterwards check the study file has not changed.

        A changed file is refused once any run has been attempted (the runs would mix two
        designs); before that, the stored plan is replaced.
        """
        from joulecast.study.design import changes

        spec = json.dumps(study.to_dict(), sort_keys=True, default=str)
        digest = study.digest()
        store.ensure_schema(COMPONENT, MIGRATIONS)
        with store.transaction() as conn:
            row = conn.execute(
                "SELECT id, digest, spec FROM studies WHERE name = ?", (study.name,)
            ).fetchone()
            if row is not None and row[1] != digest:
                attempted = conn.execute(
                    "SELECT COUNT(*) FROM study_runs WHERE study_id = ? AND attempts > 0",
                    (row[0],),
                ).fetchone()[0]
                if attempted:
                    what = "; ".join(changes(json.loads(row[2]), study.to_dict())) or "details"
                    raise InputError(
                        f"{study.path}: study {study.name!r} changed after {attempted} run(s) "
                        f"were made ({what}): refusing to mix designs; restore the file, or "
                        "rename the study to start a new one"
                    )
                conn.execute("DELETE FROM studies WHERE id = ?", (row[0],))
                row = None
            if row is None:
                cur = conn.execute(
                    "INSERT INTO studies (name, digest, spec, created_at) VALUES (?, ?, ?, ?)",
                    (study.name, digest, spec, time.time()),
                )
                study_id = int(cur.lastrowid or 0)
                conn.executemany(
                    "INSERT INTO study_runs (study_id, position, key, factors, repetition, seed,"
                    " status) VALUES (?, ?, ?, ?, ?, ?, 'planned')",
                    [
                        (
                            study_id,
                            r.position,
                            r.key,
                            json.dumps(r.factors, sort_keys=True, default=str),
                            r.repetition,
                            r.seed,
                        )
                        for r in planned
                    ],
                )
            else:
                study_id = int(row[0])
        return cls(store, study_id, study.name)

    @classmethod
    def find(cls, store: Store, name: str) -> StudyState | None:
        """The stored study called ``name``, if there is one."""
        if store.read_only and COMPONENT not in store.component_versions():
            return None  # a store opened to read, in which no study was planned
        store.ensure_schema(COMPONENT, MIGRATIONS)
        rows = store.query("SELECT id FROM studies WHERE name = ?", (name,))
        return cls(store, int(rows[0]["id"]), name) if rows else None

    def runs(self) -> pd.DataFrame:
        """Every planned run in plan order, with its status."""
        rows = self.store.query(
            f"SELECT {', '.join(COLUMNS)} FROM study_runs WHERE study_id = ? ORDER BY position",
            (self.study_id,),
        )
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame["factors"] = [json.loads(f) for f in frame["factors"]]
        return frame

    def counts(self) -> dict[str, int]:
        """Planned runs in total and by status."""
        runs = self.runs()
        out = {"planned": len(runs)}
        for status in ("completed", "oom", "timeout", "failed", "running"):
            out[status] = int((runs["status"] == status).sum())
        out["remaining"] = int((runs["status"].isin(["planned", "running"])).sum())
        return out

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """Count the attempt of each run left ``running`` by a stopped runner as interrupted,
        and plan it again while it has had fewer than ``max_attempts``.

        A run recorded ``failed`` because its runner died during every attempt is planned
        again too when ``max_attempts`` has grown since. Returns the keys planned again and
        those recorded ``failed`` now.
        """
        now = time.time()
        again: list[str] = []
        given_up: list[str] = []
        with self.store.transaction() as conn:
            rows = conn.execute(
                "SELECT position, key, attempts, interrupted, status FROM study_runs"
                " WHERE study_id = ? AND (status = 'running' OR (status = 'failed'"
                " AND attempts > 0 AND interrupted >= attempts))",
                (self.study_id,),
            ).fetchall()
            for position, key, attempts, interrupted, status in rows:
                if status == "running":
                    interrupted += 1
                if attempts < max_attempts:
                    conn.execute(
                        "UPDATE study_runs SET status = 'planned', interrupted = ?, error = NULL,"
                        " ended_at = NULL WHERE study_id = ? AND position = ?",
                        (interrupted, self.study_id, position),
                    )
                    again.append(str(key))
                elif status == "running":
                    error = _GIVEN_UP.format(attempts=attempts, limit=max_attempts)
                    conn.execute(
                        "UPDATE study_runs SET status = 'failed', interrupted = ?, ended_at = ?,"
                        " error = ? WHERE study_id = ? AND position = ?",
                        (interrupted, now, error, self.study_id, position),
                    )
                    given_up.append(str(key))
        return again, given_up

    def claim(self, position: int, job_id: str | None = None) -> int:
        """Mark a planned run as running; returns its attempt number."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE study_runs SET status = 'running', attempts = attempts + 1,"
                " started_at = ?, job_id = ? WHERE study_id = ? AND position = ?",
                (time.time(), job_id, self.study_id, position),
            )
            return int(
                conn.execute(
                    "SELECT attempts FROM study_runs WHERE study_id = ? AND position = ?",
                    (self.study_id, position),
                ).fetchone()[0]
            )

    def set_job(self, position: int, job_id: str) -> None:
        """Record the cluster job that runs a planned run."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE study_runs SET job_id = ? WHERE study_id = ? AND position = ?",
                (job_id, self.study_id, position),
            )

    def finish(
        self, position: int, status: str, *, run_id: int | None, error: str | None = None
    ) -> None:
        """Record a run's outcome."""
        if status not in OUTCOMES:
            raise ValueError(f"unknown outcome {status!r}")
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE study_runs SET status = ?, run_id = ?, error = ?, ended_at = ?"
                " WHERE study_id = ? AND position = ?",
                (status, run_id, error, time.time(), self.study_id, position),
            )

    def release(self, position: int) -> None:
        """Put a claimed run back in the plan, its attempt not counted (the runner stopped)."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE study_runs SET status = 'planned', attempts = MAX(0, attempts - 1)"
                " WHERE study_id = ? AND position = ?",
                (self.study_id, position),
            )

    def spec(self) -> dict[str, Any]:
        """The stored study definition."""
        rows = self.store.query("SELECT spec FROM studies WHERE id = ?", (self.study_id,))
        return dict(json.loads(rows[0]["spec"]))
