from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from joulecast.errors import InputError, JoulecastWarning, StoreError
from joulecast.records import Phase, PhaseKind, Reading, RunStatus
from joulecast.store import SCHEMA_VERSION, Store, connect_readonly, default_store_path
from tests.store_formats import old_store


def test_schema_wal_and_version(store):
    assert store.schema_version == SCHEMA_VERSION
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_default_path_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("JOULECAST_STORE", str(tmp_path / "x.db"))
    assert default_store_path() == tmp_path / "x.db"
    monkeypatch.delenv("JOULECAST_STORE")
    assert str(default_store_path()) == "joulecast.db"


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this joulecast"):
        Store(path)


def test_not_a_store(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a joulecast store"):
        Store(path)
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "missing" / "x.db")


def test_run_roundtrip(store):
    run_id = store.create_run(
        name="r", tags={"a": "1"}, hardware={"gpu_models": ["X"]}, interval_s=0.1
    )
    store.write_batch(
        run_id,
        [
            Reading(10.0, "gpu:0", 100.0, "nvml", True, 0.0),
            Reading(10.5, "gpu:0", 120.0, "nvml", True, 55.0),
        ],
        t0=10.0,
        phases=[Phase(PhaseKind.EPOCH, 0, 0.0, 0.5, 32, {"loss": 1.0})],
    )
    store.finish_run(run_id, RunStatus.COMPLETED, duration_s=0.5, exit_code=0)
    row = store.run(run_id)
    assert row["status"] == "completed" and row["tags"] == {"a": "1"} and row["exit_code"] == 0
    samples = store.samples(run_id)
    assert samples["t_s"].tolist() == [0.0, 0.5] and samples["energy_j"].tolist() == [0.0, 55.0]
    phases = store.phases(run_id)
    assert phases.iloc[0]["metrics"] == {"loss": 1.0} and phases.iloc[0]["samples"] == 32
    assert store.resolve("r") == run_id == store.resolve("last") == store.resolve(str(run_id))
    with pytest.raises(InputError, match="no run 'zzz'"):
        store.resolve("zzz")


def test_dead_owner_marks_interrupted(tmp_path):
    path = tmp_path / "s.db"
    code = (
        "import os, joulecast.store as s\n"
        f"st = s.Store({str(path)!r})\n"
        "rid = st.create_run(name='orphan')\n"
        "from joulecast.records import Reading\n"
        "st.write_batch(rid, [Reading(1.0, 'gpu:0', 5.0, 'x')])\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    store = Store(path)
    row = store.run(store.resolve("orphan"))
    assert row["status"] == "interrupted"
    assert row["duration_s"] == 1.0
    # A live owner's run is left alone.
    live = store.create_run(name="live")
    Store(path).close()
    assert store.run(live)["status"] == "running"


def _writer(path: str, n: int) -> None:
    store = Store(path)
    run_id = store.create_run(name=f"w{os.getpid()}")
    for batch in range(n):
        store.write_batch(run_id, [Reading(batch + i / 100, "gpu:0", 1.0, "x") for i in range(100)])
    store.finish_run(run_id, RunStatus.COMPLETED)


def test_many_processes_share_a_store(tmp_path):
    path = str(tmp_path / "shared.db")
    Store(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, 40)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 8 * 40 * 100
    assert conn.execute("SELECT COUNT(*) FROM runs WHERE status='completed'").fetchone()[0] == 8


def test_import_rolls_back_on_error(store):
    import pandas as pd

    bad = pd.DataFrame({"t_s": [0.0], "device": ["gpu:0"]})
    with pytest.raises(InputError, match="lacks columns"):
        store.import_run(samples=bad)
    assert store.runs().empty


def test_delete_run(store):
    run_id = store.create_run()
    store.write_batch(run_id, [Reading(0.0, "gpu:0", 1.0, "x")])
    store.delete_run(run_id)
    assert store.runs().empty and store.samples(run_id).empty
    time.sleep(0)


def test_transaction_commits_or_rolls_back(store):
    with store.transaction() as conn:
        conn.execute("CREATE TABLE notes (x INTEGER)")
        conn.execute("INSERT INTO notes VALUES (1)")
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as conn:
        conn.execute("INSERT INTO notes VALUES (2)")
        raise RuntimeError("boom")
    assert store.query("SELECT x FROM notes") == [{"x": 1}]
    with store.transaction(), pytest.raises(StoreError, match="cannot start a write"):  # noqa: SIM117
        with store.transaction():
            pass


def test_query_rows_as_dicts(store):
    run_id = store.create_run(name="q")
    assert store.query("SELECT id, name FROM runs WHERE name = ?", ("q",)) == [
        {"id": run_id, "name": "q"}
    ]
    assert store.query("SELECT name FROM runs WHERE id = :id", {"id": run_id}) == [{"name": "q"}]
    assert store.query("PRAGMA foreign_keys = ON") == []
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.query("SELECT * FROM missing_table")


def test_attached_file_is_read_then_detached(store, tmp_path):
    other_path = tmp_path / "other.db"
    with Store(other_path) as other:
        other.create_run(name="there")
    with store.attached(other_path, "other"):
        rows = store.query("SELECT name FROM other.runs")
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO main.runs (uid, name, status, started_at)"
                " SELECT uid, name, status, started_at FROM other.runs"
            )
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.query("DELETE FROM other.runs")
    assert rows == [{"name": "there"}]
    assert list(store.runs()["name"]) == ["there"]
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.query("SELECT * FROM other.runs")
    with Store(other_path) as other:
        assert len(other.runs()) == 1


def test_attached_refuses_bad_alias_and_file(store, tmp_path):
    with pytest.raises(ValueError, match="plain identifier"):  # noqa: SIM117
        with store.attached(tmp_path / "x.db", "main"):
            pass
    with pytest.raises(ValueError, match="plain identifier"):  # noqa: SIM117
        with store.attached(tmp_path / "x.db", "x; DROP TABLE runs"):
            pass
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db: cannot attach"):  # noqa: SIM117
        with store.attached(junk, "junk"):
            pass


def test_connect_readonly_only_reads(store):
    run_id = store.create_run(name="r")
    conn = connect_readonly(store.path)
    try:
        assert conn.execute("SELECT name FROM runs").fetchall() == [("r",)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM runs")
    finally:
        conn.close()
    assert store.run(run_id)["name"] == "r"


def test_version_1_file_is_upgraded_with_its_runs(tmp_path):
    path = tmp_path / "v1.db"
    old_store(path, 1)
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.component_versions() == {}
        assert store.run(1)["uid"] == "old-uid"
        assert store.samples(1)["t_s"].tolist() == [0.0, 1.0, 2.0]
        run_id = store.create_run(name="new")
    with Store(path) as store:
        assert list(store.runs()["id"]) == [1, run_id]


NOTES_V1 = """
CREATE TABLE notes (x TEXT);
CREATE TABLE note_count (n INTEGER);
INSERT INTO note_count VALUES (0);
CREATE TRIGGER count_notes AFTER INSERT ON notes BEGIN
    UPDATE note_count SET n = n + 1;
END;
INSERT INTO notes VALUES ('a;b');
"""


def _add_tags(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE notes ADD COLUMN tag TEXT")
    conn.execute("UPDATE notes SET tag = upper(x)")


def test_component_schema_created_then_upgraded(store):
    assert store.ensure_schema("notes", {1: NOTES_V1}) == 1
    assert store.component_versions() == {"notes": 1}
    assert store.query("SELECT x FROM notes") == [{"x": "a;b"}]
    assert store.query("SELECT n FROM note_count") == [{"n": 1}]
    assert store.ensure_schema("notes", {1: NOTES_V1}) == 1  # up to date: nothing runs again
    assert store.query("SELECT n FROM note_count") == [{"n": 1}]
    assert store.ensure_schema("notes", {1: NOTES_V1, 2: _add_tags}) == 2
    assert store.query("SELECT x, tag FROM notes") == [{"x": "a;b", "tag": "A;B"}]
    assert store.component_versions() == {"notes": 2}
    assert store.schema_version == SCHEMA_VERSION  # the core's version is its own
    with Store(store.path) as again:
        assert again.component_versions() == {"notes": 2}


def test_component_newer_than_the_code_is_refused(store):
    store.ensure_schema("notes", {1: NOTES_V1, 2: _add_tags})
    with pytest.raises(StoreError, match=r"notes schema version 2 is newer .*upgrade joulecast"):
        store.ensure_schema("notes", {1: NOTES_V1})
    assert store.component_versions() == {"notes": 2}


def test_failed_component_step_changes_nothing(store):
    with pytest.raises(StoreError, match="notes schema: upgrade from version 0 failed"):
        store.ensure_schema("notes", {1: NOTES_V1, 2: "CREATE TABLE broken ("})
    assert store.component_versions() == {}
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.query("SELECT * FROM notes")


def test_component_migrations_numbered_from_one(store):
    for migrations in ({}, {2: NOTES_V1}, {1: NOTES_V1, 3: NOTES_V1}):
        with pytest.raises(ValueError, match="expected 1, 2"):
            store.ensure_schema("notes", migrations)
    with pytest.raises(ValueError, match="expected a name"):
        store.ensure_schema("", {1: NOTES_V1})


# -- bulk reads ---------------------------------------------------------------------------------


def _import_runs(store, n_runs=7):
    """Runs of 0 to 30 samples on three devices: NaN power, counters on gpu:1, util on gpus."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(5)
    ids = []
    for r in range(n_runs):
        n = 0 if r == 2 else int(rng.integers(1, 30))
        device = rng.choice(["gpu:0", "gpu:1", "ram"], n)
        samples = pd.DataFrame(
            {
                "t_s": np.round(rng.random(n) * 50, 3) + 1 / 3,  # 1/3: more digits than 15
                "device": device,
                "power_w": np.where(rng.random(n) < 0.2, np.nan, 100 * rng.random(n)),
                "energy_j": np.where(device == "gpu:1", np.cumsum(rng.random(n)) * 1e4, np.nan),
                "util_pct": np.where(device == "ram", np.nan, 100 * rng.random(n)),
                "mem_used_mib": np.nan,
                "temp_c": np.nan,
                "source": "test",
                "measured": device != "ram",
            }
        )
        phases = [Phase(PhaseKind.EPOCH, i, 10.0 * i, 10.0 * (i + 1), 4) for i in range(r % 3)]
        if r % 2:
            phases.append(Phase(PhaseKind.TEST, 0, 30.0, None, metrics={"f1": 0.5}))
        ids.append(store.import_run(samples=samples, phases=phases))
    return ids


def test_phases_of_runs_match_phases(store):
    import pandas as pd

    ids = _import_runs(store)
    some = [ids[4], ids[1], ids[3]]
    frame = store.phases_of_runs(some)
    parts = [store.phases(i).assign(run_id=i) for i in sorted(some)]
    want = pd.concat(parts, ignore_index=True)[list(frame.columns)]
    pd.testing.assert_frame_equal(frame, want, check_dtype=False)
    assert frame["run_id"].dtype == "int64" and frame["samples"].dtype == "Int64"
    tests = store.phases_of_runs(ids, kinds=["test"])
    assert set(tests["kind"]) == {"test"} and tests["metrics"].iloc[0] == {"f1": 0.5}
    assert store.phases_of_runs([]).empty


def _trace_0_10():
    from joulecast.store import sample_frame

    return sample_frame([(t, "gpu:0", 100.0, None, None, None, None, "x", True) for t in range(11)])


def test_import_run_clips_phases_reaching_past_the_samples_with_a_warning(store):
    phases = [Phase(PhaseKind.EPOCH, 0, -5.0, 5.0), Phase(PhaseKind.EPOCH, 1, 5.0, 20.0)]
    with pytest.warns(JoulecastWarning, match=r"^phases: epoch 0 \(-5 s to 5 s\), epoch 1 "):
        run_id = store.import_run(samples=_trace_0_10(), phases=phases)
    stored = store.phases(run_id)
    assert stored["start_s"].tolist() == [0.0, 5.0] and stored["end_s"].tolist() == [5.0, 10.0]
    assert store.run(run_id)["duration_s"] == 10.0


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        (
            [Phase(PhaseKind.EPOCH, 0, 0.0, 5.0), Phase(PhaseKind.EPOCH, 1, 20.0, 30.0)],
            r"^p\.csv: epoch 1 \(20 s to 30 s\) lies outside the readings \(0 s to 10 s\)",
        ),
        (
            [Phase(PhaseKind.EPOCH, 0, 0.0, 6.0), Phase(PhaseKind.EPOCH, 1, 5.0, 10.0)],
            r"^p\.csv: epoch 1 \(5 s to 10 s\) overlaps epoch 0 \(0 s to 6 s\)",
        ),
    ],
)
def test_import_run_refuses_phases_outside_the_samples_or_overlapping(store, phases, message):
    with pytest.raises(InputError, match=message):
        store.import_run(samples=_trace_0_10(), phases=phases, phases_from="p.csv")
    assert store.runs().empty


def test_import_run_without_samples_checks_phases_against_each_other(store):
    """A run whose samples come later (the synthetic study writes them with SQL)."""
    apart = [Phase(PhaseKind.EPOCH, 0, 0.0, 5.0), Phase(PhaseKind.EPOCH, 1, 20.0, 30.0)]
    run_id = store.import_run(samples=_trace_0_10().iloc[:0], phases=apart)
    assert store.phases(run_id)["end_s"].tolist() == [5.0, 30.0]
    overlapping = [Phase(PhaseKind.STEP, 0, 0.0, 5.0), Phase(PhaseKind.STEP, 1, 4.0, 30.0)]
    with pytest.raises(InputError, match=r"^phases: step 1 \(4 s to 30 s\) overlaps step 0"):
        store.import_run(samples=_trace_0_10().iloc[:0], phases=overlapping)
    assert len(store.runs()) == 1


def test_write_phases_checks_them_against_the_runs_phases_and_samples(store):
    run_id = store.import_run(samples=_trace_0_10(), phases=[Phase(PhaseKind.EPOCH, 0, 0.0, 5.0)])
    with pytest.raises(InputError, match=r"^run \d+: epoch 1 \(4 s to 8 s\) overlaps epoch 0 \("):
        store.write_phases(run_id, [Phase(PhaseKind.EPOCH, 1, 4.0, 8.0)])
    with pytest.raises(InputError, match=r"^run \d+: test 0 \(20 s to 30 s\) lies outside"):
        store.write_phases(run_id, [Phase(PhaseKind.TEST, 0, 20.0, 30.0)])
    with pytest.warns(JoulecastWarning, match=r"^run \d+: test 0 \(8 s to 30 s\) reaches past"):
        store.write_phases(run_id, [Phase(PhaseKind.TEST, 0, 8.0, 30.0)])
    store.write_phases(run_id, [Phase(PhaseKind.EPOCH, 0, 1.0, 6.0, 3)])  # replaces epoch 0
    store.write_phases(run_id, [Phase(PhaseKind.STEP, 0, 4.0, 8.0)])  # steps nest in epochs
    phases = store.phases(run_id)
    assert phases[["kind", "index", "start_s", "end_s"]].values.tolist() == [
        ["epoch", 0, 1.0, 6.0],
        ["step", 0, 4.0, 8.0],
        ["test", 0, 8.0, 10.0],
    ]
    running = store.create_run()  # its samples are still to come: only overlaps are checked
    store.write_phases(running, [Phase(PhaseKind.EPOCH, 0, 0.0, 60.0)])
    assert store.phases(running)["end_s"].tolist() == [60.0]


def test_add_phase_metrics_keeps_what_others_wrote(store):
    run_id = store.create_run(name="m")
    store.write_phases(run_id, [Phase(PhaseKind.EPOCH, 0, 0.0, 1.0, 10, {"loss": 0.5})])
    assert store.add_phase_metrics(run_id, "epoch", 0, {"forecast": {"total_j": 1.0}})
    assert store.add_phase_metrics(
        run_id, "epoch", 0, {"forecast": {"total_j": 2.0}, "note": "x"}, overwrite=False
    )
    assert store.phases(run_id)["metrics"].iloc[0] == {
        "loss": 0.5,
        "forecast": {"total_j": 1.0},
        "note": "x",
    }
    assert not store.add_phase_metrics(run_id, "epoch", 7, {"forecast": {}})


def test_iter_samples_in_chunks_match_samples(store):
    import pandas as pd

    ids = _import_runs(store)
    run_id = max(ids, key=lambda i: len(store.samples(i)))
    want = store.samples(run_id)
    chunks = list(store.iter_samples(run_id, chunk_rows=4))
    assert len(chunks) == -(-len(want) // 4) and all(len(c) <= 4 for c in chunks)
    got = pd.concat(chunks, ignore_index=True)
    assert got["t_s"].is_monotonic_increasing
    pd.testing.assert_frame_equal(got, pd.concat(store.iter_samples(run_id), ignore_index=True))
    by_device = got.sort_values("device", kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(by_device, want)
    start, end = want["t_s"].quantile([0.25, 0.75])
    span = pd.concat(store.iter_samples(run_id, start_s=start, end_s=end, chunk_rows=3))
    assert sorted(span["t_s"]) == sorted(store.samples(run_id, start, end)["t_s"])
    assert list(store.iter_samples(ids[2])) == []  # a run without samples
    with pytest.raises(InputError, match="chunk_rows: got 0"):
        store.iter_samples(run_id, chunk_rows=0)


_MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export/home /home nfs4 rw,relatime 0 0
/dev/sdb1 /home/local\\040disk xfs rw 0 0
lustre@o2ib:/scratch /scratch lustre rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "network"),
    [
        ("/tmp/joulecast.db", False),
        ("/home/ana/joulecast.db", True),
        ("/home/local disk/joulecast.db", False),
        ("/scratch/job/shards/a.db", True),
        ("/homework/joulecast.db", False),
    ],
)
def test_network_file_system_follows_the_longest_mount_point(path: str, network: bool) -> None:
    from joulecast.store import network_file_system

    assert network_file_system(path, _MOUNTS) is network


def test_a_store_on_a_network_file_system_uses_the_rollback_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joulecast.store as store_module

    monkeypatch.setattr(store_module, "network_file_system", lambda path: True)
    with Store(tmp_path / "nfs.db") as store:
        assert store.query("PRAGMA journal_mode")[0]["journal_mode"] == "delete"
    monkeypatch.setattr(store_module, "network_file_system", lambda path: False)
    with Store(tmp_path / "local.db") as store:
        assert store.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"


def test_a_run_can_be_given_its_uid_once(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        run_id = store.create_run(name="node", uid="job-7/node1")
        assert store.run(run_id)["uid"] == "job-7/node1"
        with pytest.raises(StoreError, match="job-7/node1"):
            store.create_run(name="again", uid="job-7/node1")
        assert len(store.runs()) == 1


@pytest.mark.parametrize("ref", ["9" * 23, "9" * 5000, "²", "٣", "-1", "1e3"])
def test_a_run_reference_that_is_no_id_is_named_in_one_line(tmp_path: Path, ref: str) -> None:
    with Store(tmp_path / "s.db") as store:
        store.create_run(name="a")
        with pytest.raises(InputError, match="no run"):
            store.resolve(ref)
