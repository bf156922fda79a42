"""Merging store shards (one store file per study job) into one store."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import joulecast
from joulecast.errors import InputError, StoreError
from joulecast.records import Gap, Phase, PhaseKind, Reading, RunStatus
from joulecast.store import SCHEMA_VERSION, STALE_HEARTBEAT_S, Store
from joulecast.study.shards import MergeResult, merge_shard, merge_shards, shard_paths
from tests.conftest import sine_trace
from tests.store_formats import old_store


class Constant:
    """A sensor reading a steady 100 W on one device."""

    name = "const"

    def devices(self):
        return ["gpu:0"]

    def read(self):
        return [Reading(time.monotonic(), "gpu:0", 100.0, "const")]

    def close(self):
        pass


def measured_run(path: Path, name: str, epochs: int = 2) -> int:
    """A run measured into the store at ``path``, with epochs, tags and metrics."""
    with joulecast.measure(
        name, store=path, sensors=[Constant()], interval_s=0.01, tags={"job": name}
    ) as run:
        for i in range(epochs):
            with run.epoch(i, samples=32, loss=1.0 / (i + 1)):
                time.sleep(0.04)
    return run.run_id


def imported_run(path: Path, name: str) -> int:
    """A recorded run imported into the store at ``path``, with a gap and quality figures."""
    with Store(path) as store:
        run_id = store.import_run(
            samples=sine_trace(10.0, 0.5).assign(
                energy_j=None,
                util_pct=50.0,
                mem_used_mib=None,
                temp_c=60.0,
                source="trace",
                measured=True,
            ),
            phases=[
                Phase(PhaseKind.EPOCH, 0, 0.0, 5.0, 100, {"acc": 0.5}),
                Phase(PhaseKind.EPOCH, 1, 5.0, 10.0, 100, {"acc": 0.7}),
            ],
            name=name,
            tags={"job": name, "lr": "0.1"},
            hardware={"gpu": "fake"},
        )
        store.write_batch(
            run_id, gaps=[Gap("gpu:1", 2.0, 3.5, "timeout")], quality={"missed_deadlines": 2}
        )
    return run_id


def run_row(store: Store, run_id: int) -> dict:
    row = store.run(run_id)
    del row["id"]
    return row


def assert_same_run(shard: Store, old_id: int, target: Store, new_id: int) -> None:
    assert run_row(target, new_id) == run_row(shard, old_id)
    pd.testing.assert_frame_equal(target.samples(new_id), shard.samples(old_id))
    pd.testing.assert_frame_equal(target.phases(new_id), shard.phases(old_id))
    pd.testing.assert_frame_equal(target.gaps(new_id), shard.gaps(old_id))
    assert joulecast.summarize(target, new_id).energy_j == pytest.approx(
        joulecast.summarize(shard, old_id).energy_j, rel=0, abs=0
    )


def count(store: Store, table: str) -> int:
    return int(store.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards: ``a.db`` with two measured runs, ``b.db`` with an imported and a measured run."""
    folder = tmp_path_factory.mktemp("shards")
    measured_run(folder / "a.db", "a0")
    measured_run(folder / "a.db", "a1", epochs=3)
    imported_run(folder / "b.db", "b0")
    measured_run(folder / "b.db", "b1")
    return folder


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Store]:
    imported_run(tmp_path / "main.db", "existing")
    store = Store(tmp_path / "main.db")
    yield store
    store.close()


def test_merges_every_run_identically(shard_dir, target):
    result = merge_shards(target, shard_paths(shard_dir))
    assert result.shards == 2 and result.skipped == 0 and result.running == 0
    a, b = str(shard_dir / "a.db"), str(shard_dir / "b.db")
    assert result.merged == [(a, 1, 2), (a, 2, 3), (b, 1, 4), (b, 2, 5)]
    assert list(target.runs()["name"]) == ["existing", "a0", "a1", "b0", "b1"]
    for path, old_id, new_id in result.merged:
        with Store(path) as shard:
            assert_same_run(shard, old_id, target, new_id)
    assert target.run(4)["quality"] == {"missed_deadlines": 2}
    assert target.run(2)["tags"] == {"job": "a0"}
    assert target.run(2)["status"] == RunStatus.COMPLETED.value
    assert len(target.phases(3, "epoch")) == 3
    assert len(target.gaps(4)) == 1


def test_merging_again_adds_nothing(shard_dir, target):
    first = merge_shards(target, shard_paths(shard_dir))
    counts = {t: count(target, t) for t in ("runs", "samples", "phases", "gaps")}
    again = merge_shards(target, shard_paths(shard_dir))
    assert again == MergeResult(merged=[], skipped=len(first.merged), shards=2, running=0)
    assert {t: count(target, t) for t in counts} == counts
    # One shard twice in one call, or one shard alone: the same.
    assert merge_shard(target, shard_dir / "a.db").skipped == 2


def test_running_run_waits_for_its_owner(tmp_path, target):
    shard = tmp_path / "live.db"
    with Store(shard) as store:
        live = store.create_run(name="live")  # owned by this (living) process
        store.write_batch(
            live, [Reading(1.0, "gpu:0", 50.0, "x"), Reading(2.0, "gpu:0", 50.0, "x")]
        )
        remote = store.create_run(name="remote")
        # Another host that wrote a moment ago: alive by the heartbeat rule.
        with store.transaction() as conn:
            conn.execute(
                "UPDATE runs SET host = ? WHERE id = ?",
                ("elsewhere-" + socket.gethostname(), remote),
            )
    result = merge_shard(target, shard)
    assert result.merged == [] and result.running == 2 and result.skipped == 0
    assert count(target, "runs") == 1
    with sqlite3.connect(shard) as conn:  # the owner dies; the remote host falls silent
        conn.execute("UPDATE runs SET pid_started = 1.0 WHERE id = ?", (live,))
        conn.execute(
            "UPDATE runs SET heartbeat_at = ? WHERE id = ?",
            (time.time() - STALE_HEARTBEAT_S - 60, remote),
        )
    conn.close()
    result = merge_shard(target, shard)
    assert [(old, new) for _, old, new in result.merged] == [(live, 2), (remote, 3)]
    assert result.running == 0
    assert target.run(2)["status"] == RunStatus.INTERRUPTED.value
    assert target.run(2)["duration_s"] == 2.0  # up to its last stored sample
    assert target.run(3)["status"] == RunStatus.INTERRUPTED.value
    assert len(target.samples(2)) == 2


def _snapshot(target: Store) -> dict[str, int]:
    return {t: count(target, t) for t in ("runs", "samples", "phases", "gaps")}


def test_unreadable_shard_stops_the_merge_before_anything_is_written(tmp_path, target):
    folder = tmp_path / "mixed"
    folder.mkdir()
    imported_run(folder / "a.db", "good")
    (folder / "x.db").write_text("not a database, just some text\n" * 200)
    before = _snapshot(target)
    with pytest.raises(StoreError, match=r"x\.db: not a joulecast store"):
        merge_shards(target, shard_paths(folder))
    with pytest.raises(StoreError, match=r"x\.db"):
        merge_shard(target, folder / "x.db")
    assert _snapshot(target) == before


def test_newer_schema_refused_and_left_alone(tmp_path, target):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = _snapshot(target)
    with pytest.raises(StoreError, match=r"future\.db: schema version .* newer"):
        merge_shard(target, path)
    assert _snapshot(target) == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


def test_other_sqlite_database_refused_and_left_alone(tmp_path, target):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE things (x)")
    conn.close()
    with pytest.raises(StoreError, match=r"other\.db: not a joulecast store"):
        merge_shard(target, path)
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert tables == {"things"}


def test_older_schema_shard_is_migrated_then_merged(tmp_path, target):
    path = tmp_path / "v1.db"
    old_store(path, 1)
    result = merge_shard(target, path)
    assert [(old, new) for _, old, new in result.merged] == [(1, 2)]
    assert target.run(2)["uid"] == "old-uid"
    assert joulecast.summarize(target, 2).energy_j == pytest.approx(200.0)
    with Store(path) as shard:
        assert shard.schema_version == SCHEMA_VERSION


def test_empty_database_is_an_empty_shard(tmp_path, target):
    (tmp_path / "empty.db").write_bytes(b"")
    assert merge_shard(target, tmp_path / "empty.db") == MergeResult(shards=1)


def test_missing_shard_and_target_itself(tmp_path, target):
    with pytest.raises(InputError, match=r"nope\.db: no such store shard"):
        merge_shard(target, tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(InputError, match="target store itself"):
        merge_shard(target, target.path)
    # In a folder that holds the target too, the target is passed over.
    measured_run(tmp_path / "s.db", "s", epochs=1)
    result = merge_shards(target, shard_paths(tmp_path))
    assert result.shards == 1 and len(result.merged) == 1


def test_shard_paths(tmp_path):
    for name in ("b.db", "a.db", "a.db-wal", "a.db-shm", "notes.txt", "c.db-journal"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.db").mkdir()
    assert shard_paths(tmp_path) == [tmp_path / "a.db", tmp_path / "b.db"]
    with pytest.raises(InputError, match="not a folder"):
        shard_paths(tmp_path / "missing")
