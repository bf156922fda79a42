"""Where a process stands in a distributed job, read from the launchers' variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulecast.distributed import Job, current_job, node_device, shard_folder
from joulecast.errors import InputError


def test_a_plain_process_is_a_job_of_one() -> None:
    job = current_job({}, node="n0")
    assert job == Job(node="n0")
    assert job.samples_node and job.leader and not job.distributed and not job.multinode
    assert job.uid is None


def test_torchrun_ranks_and_nodes() -> None:
    env = {
        "RANK": "3",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "GROUP_WORLD_SIZE": "2",
        "TORCHELASTIC_RUN_ID": "exp42",
        "TORCHELASTIC_RESTART_COUNT": "0",
    }
    job = current_job(env, node="n1")
    assert (job.rank, job.local_rank, job.world_size, job.node_rank, job.nodes) == (3, 1, 4, 1, 2)
    assert job.uid == "torchrun-exp42" and job.launcher == "torchrun"
    assert not job.samples_node and not job.leader and job.multinode
    assert job.node_run_uid() == "torchrun-exp42/node1"
    restarted = current_job({**env, "TORCHELASTIC_RESTART_COUNT": "2"}, node="n1")
    assert restarted.uid == "torchrun-exp42.r2"


def test_torchrun_default_run_id_names_no_job() -> None:
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "none"}
    assert current_job(env).uid is None
    assert current_job({**env, "JOULECAST_RUN_UID": "mine"}).uid == "mine"
    assert current_job(env, uid="given").uid == "given"


def test_slurm_tasks_and_torchrun_inside_srun() -> None:
    slurm = {
        "SLURM_JOB_ID": "981",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "8",
        "SLURM_NODEID": "1",
        "SLURM_NNODES": "2",
    }
    job = current_job(slurm, node="gpu17")
    assert (job.rank, job.local_rank, job.world_size, job.node_rank, job.nodes) == (5, 1, 8, 1, 2)
    assert job.uid == "slurm-981.0" and job.launcher == "slurm"
    # srun torchrun: the ranks are torchrun's, the job SLURM's (so every node agrees).
    inner = current_job(
        {**slurm, "RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "x"}
    )
    assert (inner.rank, inner.local_rank, inner.world_size, inner.node_rank, inner.nodes) == (
        2,
        0,
        4,
        1,
        2,
    )
    assert inner.uid == "slurm-981.0"


@pytest.mark.parametrize("value", ["-1", "²", "1e3", "x", "999999999999"])
def test_a_launcher_variable_that_is_no_rank_is_named(value: str) -> None:
    with pytest.raises(InputError, match="LOCAL_RANK"):
        current_job({"RANK": "0", "LOCAL_RANK": value})


def test_shard_paths_and_device_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOULECAST_SHARD_DIR", raising=False)
    assert shard_folder(tmp_path / "joulecast.db") == tmp_path / "joulecast.shards"
    assert shard_folder(tmp_path / "joulecast.db", tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("JOULECAST_SHARD_DIR", str(tmp_path / "env"))
    assert shard_folder(tmp_path / "joulecast.db") == tmp_path / "env"
    job = Job(rank=2, node_rank=1, nodes=2, uid="slurm-9/../x", node="a b")
    assert job.shard_path(tmp_path) == tmp_path / "slurm-9_.._x.1.a_b.db"
    assert job.shard_path(tmp_path).parent == tmp_path
    assert node_device("gpu:0", "n1") == "gpu:n1:0"
    assert node_device("ram", "n1") == "ram:n1"
