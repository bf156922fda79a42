"""A distributed job's node shards merged into one run (joulecast.jobs, joulecast collect)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from joulecast.cli import main
from joulecast.energy import summarize
from joulecast.jobs import merge_jobs
from joulecast.records import Phase, PhaseKind, Reading, RunStatus
from joulecast.store import Store

JOB = "slurm-77.0"
START = 1_700_000_000.0


def node_shard(
    folder: Path,
    node: str,
    node_rank: int,
    *,
    rank: int,
    delay_s: float = 0.0,
    power_w: float = 100.0,
    seconds: int = 9,
    status: RunStatus = RunStatus.COMPLETED,
    nodes: int = 2,
    job: str = JOB,
) -> Path:
    """A node's shard: two GPUs at ``power_w`` and a modelled RAM device for ``seconds``,
    three epochs of 3 s (of 8 samples each), started ``delay_s`` after the job."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job}.{node_rank}.{node}.db"
    with Store(path) as store:
        run_id = store.create_run(
            name="train",
            uid=f"{job}/node{node_rank}",
            tags={
                "job": job,
                "job_node": node,
                "job_node_rank": str(node_rank),
                "job_nodes": str(nodes),
                "job_rank": str(rank),
                "lr": "0.1",
            },
            hardware={"hostname": node, "gpu_models": [f"GPU-{node}"]},
            started_at=START + delay_s,
        )
        readings = [
            Reading(float(t), device, watts, source, measured)
            for t in range(seconds + 1)
            for device, watts, source, measured in (
                ("gpu:0", power_w, "nvml", True),
                ("gpu:1", power_w, "nvml", True),
                ("ram", 5.0, "model", False),
            )
        ]
        phases = [
            Phase(PhaseKind.EPOCH, i, 3.0 * i, 3.0 * i + 3.0, 8, {"loss": 1.0 / (i + 1)})
            for i in range(3)
        ]
        store.write_batch(run_id, readings, phases=phases)
        if status is not RunStatus.RUNNING:
            store.finish_run(run_id, status, duration_s=float(seconds))
    return path


def test_nodes_merge_into_one_run_with_every_device_once(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    node_shard(shards, "n0", 0, rank=0, power_w=100.0)
    node_shard(shards, "n1", 1, rank=2, power_w=50.0, delay_s=0.5)
    with Store(tmp_path / "job.db") as target:
        (result,) = merge_jobs(target, [shards])
        assert result.outcome == "merged" and result.nodes == 2 == result.nodes_expected
        assert result.devices == [
            "gpu:n0:0",
            "gpu:n0:1",
            "gpu:n1:0",
            "gpu:n1:1",
            "ram:n0",
            "ram:n1",
        ]
        run = target.run(result.run_id)
        assert run["uid"] == JOB and run["status"] == "completed"
        assert run["tags"]["lr"] == "0.1" and run["tags"]["job_nodes"] == "2"
        assert "job_rank" not in run["tags"]
        assert run["hardware"]["gpu_models"] == ["GPU-n0", "GPU-n1"]
        summary = summarize(target, result.run_id)
        # Each node's energy, summed: 2 GPUs x 9 s x (100 W + 50 W) + 2 RAM x 9 s x 5 W.
        assert summary.energy_j == pytest.approx(2 * 9 * 150.0 + 2 * 9 * 5.0)
        assert summary.duration_s == pytest.approx(9.5)
        # Rank 0's epochs (node n0, the first to start), 3 s each, all nodes' energy in them.
        epochs = summary.epochs
        assert list(epochs["index"]) == [0, 1, 2]
        assert list(epochs["samples"]) == [8, 8, 8]
        first = epochs.iloc[0]
        # n1 started 0.5 s later: in [0, 3] s of the job it ran 2.5 s.
        assert first["energy_j"] == pytest.approx(3 * 205.0 + 2.5 * 105.0)


def test_merging_again_changes_nothing_and_a_changed_shard_is_merged_again(
    tmp_path: Path,
) -> None:
    shards = tmp_path / "shards"
    node_shard(shards, "n0", 0, rank=0)
    node_shard(shards, "n1", 1, rank=2, status=RunStatus.RUNNING)
    with Store(tmp_path / "job.db") as target:
        (running,) = merge_jobs(target, [shards])
        assert running.outcome == "running" and running.run_id is None
        assert len(target.runs()) == 0
        with Store(shards / f"{JOB}.1.n1.db") as shard:
            shard.finish_run(1, RunStatus.FAILED, duration_s=9.0)
        (first,) = merge_jobs(target, [shards])
        assert first.outcome == "merged" and first.status == "failed"
        (again,) = merge_jobs(target, [shards])
        assert again.outcome == "unchanged" and again.run_id == first.run_id
        with Store(shards / f"{JOB}.1.n1.db") as shard:
            shard.write_batch(1, [Reading(9.5, "gpu:0", 100.0, "nvml")])
        (updated,) = merge_jobs(target, [shards])
        assert updated.outcome == "updated"
        assert [r["uid"] for r in target.query("SELECT uid FROM runs")] == [JOB]


def test_a_job_missing_a_node_waits_unless_partial(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    node_shard(shards, "n0", 0, rank=0, nodes=3)
    node_shard(shards, "n1", 1, rank=2, nodes=3)
    with Store(tmp_path / "job.db") as target:
        (waiting,) = merge_jobs(target, [shards])
        assert (waiting.outcome, waiting.nodes, waiting.nodes_expected) == ("incomplete", 2, 3)
        (merged,) = merge_jobs(target, [shards], partial=True)
        assert merged.outcome == "merged"
        assert target.run(merged.run_id)["tags"]["job_nodes_found"] == "2"
        # Two nodes' energy over the job's samples would be too low a J/sample: none is given.
        summary = summarize(target, merged.run_id)
        assert summary.samples_processed is None
        assert summary.epochs["j_per_sample"].isna().all()
        assert any("merged from 2 of the job's 3 nodes" in w for w in summary.warnings)


def test_nodes_sharing_a_name_stay_apart(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    node_shard(shards, "localhost", 0, rank=0)
    node_shard(shards, "localhost", 1, rank=2)
    with Store(tmp_path / "job.db") as target:
        (result,) = merge_jobs(target, [shards])
        assert [d for d in result.devices if d.startswith("gpu:")] == [
            "gpu:localhost.0:0",
            "gpu:localhost.0:1",
            "gpu:localhost.1:0",
            "gpu:localhost.1:1",
        ]


def test_collect_merges_the_shards_beside_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOULECAST_SHARD_DIR", raising=False)
    node_shard(tmp_path / "runs.shards", "n0", 0, rank=0)
    node_shard(tmp_path / "runs.shards", "n1", 1, rank=1)
    store = str(tmp_path / "runs.db")
    assert main(["collect", "--store", store]) == 0
    assert f"job {JOB}: merged" in capsys.readouterr().out
    assert main(["collect", "--store", store, "--json"]) == 0
    (data,) = json.loads(capsys.readouterr().out)
    assert data["outcome"] == "unchanged" and len(data["devices"]) == 6
    assert main(["collect", str(tmp_path / "nowhere"), "--store", store]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "nowhere")


def test_show_names_the_nodes_of_a_merged_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_shard(tmp_path / "shards", "n0", 0, rank=0)
    node_shard(tmp_path / "shards", "n1", 1, rank=1)
    store = str(tmp_path / "runs.db")
    assert main(["collect", str(tmp_path / "shards"), "--store", store]) == 0
    capsys.readouterr()
    assert main(["show", "last", "--store", store]) == 0
    out = capsys.readouterr().out
    assert f"job {JOB}: 2 node(s) (n0, n1)" in out and "gpu:n1:1" in out


def test_files_that_are_no_node_shards_are_passed_over_untouched(tmp_path: Path) -> None:
    import sqlite3

    shards = tmp_path / "shards"
    node_shard(shards, "n0", 0, rank=0)
    node_shard(shards, "n1", 1, rank=1)
    foreign = shards / "users.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    (shards / "garbage.db").write_bytes(b"not a database at all" * 100)
    before = foreign.read_bytes()
    # A store that already holds the merged job, lying among the shards.
    with Store(shards / "merged.db") as merged:
        (first,) = merge_jobs(merged, [shards])
    assert first.outcome == "merged"
    with Store(tmp_path / "other.db") as target:
        (result,) = merge_jobs(target, [shards])
        assert (result.outcome, result.nodes) == ("merged", 2)
        assert len(result.devices) == 6
    assert foreign.read_bytes() == before


def test_a_node_found_twice_is_a_conflict_not_a_double_count(tmp_path: Path) -> None:
    node_shard(tmp_path / "day1", "n0", 0, rank=0)
    node_shard(tmp_path / "day1", "n1", 1, rank=1)
    node_shard(tmp_path / "day2", "n0", 0, rank=0)
    with Store(tmp_path / "job.db") as target:
        (result,) = merge_jobs(target, [tmp_path / "day1", tmp_path / "day2"])
        assert result.outcome == "conflict" and result.run_id is None
        assert len(target.runs()) == 0


def test_node_runs_that_do_not_overlap_in_time_are_no_one_job(tmp_path: Path) -> None:
    node_shard(tmp_path / "a", "n0", 0, rank=0)
    node_shard(tmp_path / "b", "n1", 1, rank=1, delay_s=120.0)  # another attempt's node
    with Store(tmp_path / "job.db") as target:
        (result,) = merge_jobs(target, [tmp_path / "a", tmp_path / "b"])
        assert result.outcome == "conflict"


def test_a_node_run_says_it_holds_one_node(tmp_path: Path) -> None:
    path = node_shard(tmp_path / "shards", "n1", 1, rank=1)
    with Store(path) as shard:
        summary = summarize(shard, 1)
    assert any("one node's run of a job over 2 nodes" in w for w in summary.warnings)


def test_two_jobs_under_one_identity_are_a_conflict(tmp_path: Path) -> None:
    # Two concurrent two-node jobs started with the same identity on four hosts.
    for node, name in enumerate(("a", "b")):
        node_shard(tmp_path / "shards", name, node, rank=2 * node)
    for node, name in enumerate(("c", "d")):
        node_shard(tmp_path / "shards", name, node, rank=2 * node, delay_s=0.5)
    with Store(tmp_path / "job.db") as target:
        (result,) = merge_jobs(target, [tmp_path / "shards"])
        assert result.outcome == "conflict"


def test_a_merged_job_of_another_time_is_never_replaced(tmp_path: Path) -> None:
    node_shard(tmp_path / "day1", "n0", 0, rank=0)
    node_shard(tmp_path / "day1", "n1", 1, rank=1)
    node_shard(tmp_path / "day2", "n0", 0, rank=0, delay_s=86400.0, power_w=300.0)
    node_shard(tmp_path / "day2", "n1", 1, rank=1, delay_s=86400.0, power_w=300.0)
    with Store(tmp_path / "job.db") as target:
        (first,) = merge_jobs(target, [tmp_path / "day1"])
        energy_j = summarize(target, first.run_id).energy_j
        (second,) = merge_jobs(target, [tmp_path / "day2"])
        assert second.outcome == "conflict"
        assert summarize(target, first.run_id).energy_j == energy_j


def test_a_damaged_shard_fails_its_job_only(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    node_shard(shards, "n0", 0, rank=0, job="good")
    node_shard(shards, "n1", 1, rank=1, job="good")
    bad = node_shard(shards, "n0", 0, rank=0, job="bad", seconds=3000)
    node_shard(shards, "n1", 1, rank=1, job="bad")
    with open(bad, "r+b") as fh:  # pages of samples overwritten
        fh.seek(200_000)
        fh.write(b"\xff" * 200_000)
    with Store(tmp_path / "job.db") as target:
        results = {r.job: r.outcome for r in merge_jobs(target, [shards, shards / bad.name])}
    assert results["good"] == "merged"
    assert results["bad"] == "failed"
    bad.unlink()  # damaged on purpose: not a store for the aggregate check that ends a test
