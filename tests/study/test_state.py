"""The study tables: owned by the study package, created on first use, upgraded from old stores."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from joulecast.errors import StoreError
from joulecast.store import SCHEMA_VERSION, Store
from joulecast.study.design import load_study, plan
from joulecast.study.state import COMPONENT, MIGRATIONS, StudyState
from tests.store_formats import old_store

TINY = Path(__file__).resolve().parents[2] / "examples" / "studies" / "tiny.toml"


def tables(store: Store) -> set[str]:
    rows = store.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r["name"] for r in rows}


def test_a_new_store_gets_the_study_tables_only_when_a_study_uses_it(tmp_path):
    with Store(tmp_path / "s.db") as store:
        assert not {"studies", "study_runs"} & tables(store)
        assert store.component_versions() == {}
        study = load_study(TINY)
        state = StudyState.open(store, study, plan(study))
        assert {"studies", "study_runs"} <= tables(store)
        assert store.component_versions() == {COMPONENT: max(MIGRATIONS)}
        assert state.counts()["planned"] == 8
        assert StudyState.find(store, "tiny") is not None


def test_a_version_2_store_keeps_its_studies(tmp_path):
    """A store from the version that kept the study tables in the core schema."""
    path = tmp_path / "v2.db"
    old_store(path, 2)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO studies (name, digest, spec, created_at) VALUES ('old', 'd', ?, 1.0)",
        (json.dumps({"name": "old"}),),
    )
    conn.executemany(
        "INSERT INTO study_runs (study_id, position, key, factors, repetition, seed, status,"
        " attempts, run_id) VALUES (1, ?, ?, ?, 0, 7, ?, ?, ?)",
        [
            (0, "c000-r00", '{"arch": "x"}', "completed", 1, 1),
            (1, "c001-r00", '{"arch": "x"}', "planned", 0, None),
        ],
    )
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        state = StudyState.find(store, "old")
        assert state is not None
        assert store.component_versions() == {COMPONENT: max(MIGRATIONS)}
        assert state.spec() == {"name": "old"}
        runs = state.runs()
        assert runs["key"].tolist() == ["c000-r00", "c001-r00"]
        assert runs["factors"].tolist() == [{"arch": "x"}, {"arch": "x"}]
        assert state.counts()["completed"] == 1 and state.counts()["remaining"] == 1
        assert state.claim(1) == 1
        state.finish(1, "oom", run_id=None)
        # The tables are the old ones, not created again: the foreign key still cascades.
        with store.transaction() as conn:
            conn.execute("DELETE FROM studies WHERE name = 'old'")
        assert store.query("SELECT COUNT(*) AS n FROM study_runs") == [{"n": 0}]
        assert store.run(1)["uid"] == "old-uid"
    with Store(path) as store:
        assert store.component_versions() == {COMPONENT: max(MIGRATIONS)}
        study = load_study(TINY)
        assert StudyState.open(store, study, plan(study)).counts()["planned"] == 8


def test_a_version_1_store_takes_a_study(tmp_path):
    path = tmp_path / "v1.db"
    old_store(path, 1)
    with Store(path) as store:
        assert StudyState.find(store, "tiny") is None
        study = load_study(TINY)
        state = StudyState.open(store, study, plan(study))
        assert state.counts()["planned"] == 8
        assert store.run(1)["uid"] == "old-uid"


def test_a_newer_study_schema_is_refused_but_runs_still_read(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        StudyState.find(store, "tiny")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_versions SET version = 99 WHERE component = ?", (COMPONENT,))
    conn.close()
    with Store(path) as store:
        with pytest.raises(StoreError, match=r"studies schema version 99 is newer.*upgrade"):
            StudyState.find(store, "tiny")
        study = load_study(TINY)
        with pytest.raises(StoreError, match="upgrade joulecast"):
            StudyState.open(store, study, plan(study))
        assert store.runs().empty
        assert store.component_versions() == {COMPONENT: 99}


def test_a_run_is_retried_after_its_runner_dies_up_to_max_attempts(tmp_path):
    with Store(tmp_path / "s.db") as store:
        study = load_study(TINY)
        state = StudyState.open(store, study, plan(study))

        def row(position):
            (found,) = store.query(
                "SELECT status, attempts, interrupted, error FROM study_runs WHERE position = ?",
                (position,),
            )
            return tuple(found.values())

        # Run 0's runner dies during each attempt; run 1 fails on its own.
        key = state.runs()["key"][0]
        assert state.claim(1) == 1
        state.finish(1, "failed", run_id=None, error="exit status 3")
        for attempt in (1, 2):
            assert state.claim(0) == attempt
            assert state.recover(3) == ([key], [])
            assert row(0) == ("planned", attempt, attempt, None)
        assert state.claim(0) == 3
        assert state.recover(3) == ([], [key])
        status, attempts, interrupted, error = row(0)
        assert (status, attempts, interrupted) == ("failed", 3, 3)
        assert error == "the runner stopped during this run 3 times (max_attempts 3)"
        assert row(1) == ("failed", 1, 0, "exit status 3")
        # Nothing changes until the limit is raised; then only the interrupted run is retried.
        assert state.recover(3) == ([], [])
        assert state.recover(4) == ([key], [])
        assert row(0) == ("planned", 3, 3, None)
        assert row(1) == ("failed", 1, 0, "exit status 3")
        assert state.claim(0) == 4
        state.finish(0, "completed", run_id=None)
        assert row(0) == ("completed", 4, 3, None)
        assert state.recover(9) == ([], [])


def test_an_older_study_table_counts_its_interrupted_attempts(tmp_path):
    """Before the count, only attempts lost to the runner's death were retried."""
    path = tmp_path / "v2.db"
    old_store(path, 2)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO studies (name, digest, spec, created_at) VALUES ('old', 'd', '{}', 1.0)"
    )
    conn.executemany(
        "INSERT INTO study_runs (study_id, position, key, factors, repetition, seed, status,"
        " attempts, error) VALUES (1, ?, ?, '{}', 0, 7, ?, ?, ?)",
        [
            (0, "a", "completed", 2, None),
            (1, "b", "failed", 2, "the runner stopped during this run 2 times"),
            (2, "c", "failed", 1, "exit status 3"),
            (3, "d", "planned", 1, None),
            (4, "e", "running", 1, None),
            (5, "f", "planned", 0, None),
        ],
    )
    conn.commit()
    conn.close()
    with Store(path) as store:
        state = StudyState.find(store, "old")
        assert state is not None
        assert state.runs()["interrupted"].tolist() == [1, 2, 0, 1, 0, 0]
        assert state.recover(3) == (["b", "e"], [])
        assert state.runs()["status"].tolist() == [
            "completed",
            "planned",
            "failed",
            "planned",
            "planned",
            "planned",
        ]
