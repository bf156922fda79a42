"""Where a process stands in a distributed job, read from the launchers' variables."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from joulecast.distributed import Job, current_job, node_device, node_gpus, shard_folder
from joulecast.errors import InputError, JoulecastWarning
from joulecast.store import Store


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


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOULECAST_"))}
    return subprocess.run(
        [sys.executable, "-m", "joulecast", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_measure_per_node_runs_other_ranks_unmeasured(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    slurm = {"SLURM_JOB_ID": "5", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NTASKS": "2"}
    code = "import os, sys; print(os.environ.get('JOULECAST_RUN_ID')); sys.exit(3)"
    proc = _cli(
        [
            "measure",
            "--per-node",
            "--store",
            str(store),
            "--no-gpu",
            "--",
            sys.executable,
            "-c",
            code,
        ],
        slurm,
    )
    assert proc.returncode == 3 and proc.stdout.strip() == "None"
    assert not store.exists() and not (tmp_path / "s.shards").exists()
    # Local rank 0 samples: with a job id and one node, into the store, tagged with the job.
    proc = _cli(
        [
            "measure",
            "--per-node",
            "--store",
            str(store),
            "--no-gpu",
            "-q",
            "--",
            sys.executable,
            "-c",
            code,
        ],
        {**slurm, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"},
    )
    assert proc.returncode == 3, proc.stderr
    with Store(store) as s:
        (run,) = [s.run(int(i)) for i in s.runs()["id"]]
    assert run["tags"]["job"] == "slurm-5" and run["tags"]["job_rank"] == "0"


def test_measure_with_a_run_uid_writes_a_node_shard_that_collect_merges(tmp_path: Path) -> None:
    store, shards = tmp_path / "s.db", tmp_path / "shards"
    proc = _cli(
        [
            "measure",
            "--store",
            str(store),
            "--run-uid",
            "exp 1",
            "--shard-dir",
            str(shards),
            "--no-gpu",
            "-q",
            "--",
            sys.executable,
            "-c",
            "import os; print(os.environ['JOULECAST_STORE'])",
        ],
        {"JOULECAST_NODE": "nodeA"},
    )
    assert proc.returncode == 0, proc.stderr
    shard = shards / "exp_1.0.nodeA.db"
    assert proc.stdout.strip() == str(shard.resolve())
    with Store(shard) as s:
        assert [r["uid"] for r in s.query("SELECT uid FROM runs")] == ["exp 1/node0"]
    proc = _cli(["collect", str(shards), "--store", str(store), "--json"], {})
    assert proc.returncode == 0, proc.stderr
    (merged,) = json.loads(proc.stdout)
    assert merged["job"] == "exp 1" and merged["outcome"] == "merged"
    assert {d.split(":")[1] for d in merged["devices"]} == {"nodeA"}


def test_a_node_without_a_launcher_is_told_its_rank() -> None:
    job = current_job(
        {"JOULECAST_NODE_RANK": "1", "JOULECAST_NODES": "2", "JOULECAST_RUN_UID": "j"}
    )
    assert (job.node_rank, job.nodes, job.uid, job.uid_given) == (1, 2, "j", True)
    assert job.multinode and job.samples_node and job.node_run_uid() == "j/node1"
    with pytest.raises(InputError, match="JOULECAST_NODES"):
        current_job({"JOULECAST_NODES": "two"})
    with pytest.raises(InputError, match="below the node count"):
        current_job({"JOULECAST_NODE_RANK": "5", "JOULECAST_NODES": "2"})


def test_a_slurm_node_sampler_reads_every_gpu_of_its_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joulecast

    trace = tmp_path / "gpus.csv"
    pd.DataFrame(
        [{"t_s": t, "gpu_index": g, "power_w": 100.0 + g} for t in (0.0, 60.0) for g in range(4)]
    ).to_csv(trace, index=False)
    for name in list(os.environ):
        if name.startswith(("SLURM_", "JOULECAST_")) or name in ("RANK", "LOCAL_RANK"):
            monkeypatch.delenv(name)
    # Task 0 of two on this node sees only its own GPU; SLURM gave the step GPUs 1 and 3.
    slurm = {"SLURM_JOB_ID": "8", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "2"}
    for name, value in {
        **slurm,
        "SLURM_STEP_GPUS": "1,3",
        "CUDA_VISIBLE_DEVICES": "1",
        "JOULECAST_REPLAY_GPUS": str(trace),
    }.items():
        monkeypatch.setenv(name, value)
    with joulecast.measure("task0", store=tmp_path / "s.db", interval_s=0.05) as run:
        pass
    devices = run.summary().devices
    assert sorted(d for d in devices if d.startswith("gpu:")) == ["gpu:0", "gpu:1"]
    assert devices["gpu:0"].mean_power_w == pytest.approx(101.0)
    assert devices["gpu:1"].mean_power_w == pytest.approx(103.0)
    assert node_gpus(current_job(slurm), {"SLURM_JOB_GPUS": "0,x"}) == (None, None)
    assert node_gpus(current_job({}), {"SLURM_STEP_GPUS": "0,1"}) == (None, None)


def test_a_wrapping_process_holds_no_rank_and_a_joining_rank_keeps_the_job() -> None:
    wrapper = current_job({}, uid="exp", node="n0")
    assert "job_rank" not in wrapper.tags() and wrapper.tags()["job"] == "exp"
    rank = current_job(
        {"RANK": "2", "LOCAL_RANK": "0", "GROUP_RANK": "1", "TORCHELASTIC_RUN_ID": "x"}
    )
    assert rank.rank_tags()["job_rank"] == "2" and rank.rank_tags()["job_node_rank"] == "1"
    assert "job" not in rank.rank_tags() and "job_node" not in rank.rank_tags()


def test_a_store_error_in_the_job_forecast_never_skips_a_collective(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import joulecast
    import joulecast.live
    from joulecast.errors import StoreError
    from joulecast.integrations import _common
    from joulecast.records import PhaseKind

    calls: list[list[float]] = []

    def four_processes(values: list[float]) -> list[float]:  # all_reduce over 4 processes
        calls.append(list(values))
        return [v * 4 for v in values]

    def locked(*args: object, **kwargs: object) -> None:
        raise StoreError("j.db: database is locked")

    monkeypatch.setattr(_common, "job_sum", four_processes)
    for leader in (False, True):
        calls.clear()
        job = Job(
            rank=0 if leader else 2,
            world_size=4,
            node_rank=0 if leader else 1,
            nodes=2,
            uid=f"fx{leader}",
            node="n1",
        )
        with joulecast.measure(
            "x", store=tmp_path / "j.db", shard_dir=tmp_path / "sh", job=job, interval_s=0.05
        ) as run:
            run.live_forecast(3, progress=False)
            session = _common.Session(run=run)
            session.start()
            session.begin(PhaseKind.EPOCH, 0)
            time.sleep(0.1)
            with monkeypatch.context() as patch:
                patch.setattr(joulecast.live, "epoch_table", locked)
                session.end(PhaseKind.EPOCH, 0, samples=8)
        # Samples, the nodes' energy, the stop decision: the same three on every process.
        assert len(calls) == 3


def test_a_job_run_again_under_its_identity_is_its_next_attempt(tmp_path: Path) -> None:
    import joulecast

    job = Job(rank=0, world_size=4, node_rank=0, nodes=2, uid="fixed", node="n0")
    uids = []
    for attempt in range(3):  # e.g. a training block, then an evaluation block, in one script
        with (
            (
                pytest.warns(JoulecastWarning, match=f"attempt {attempt + 1}")
                if attempt
                else contextlib.nullcontext()
            ),
            joulecast.measure(
                "x", store=tmp_path / "s.db", shard_dir=tmp_path / "sh", job=job, sensors=[]
            ) as run,
        ):
            uids.append(run.store.run(run.run_id)["uid"])
            tags = run.store.run(run.run_id)["tags"]
    assert uids == ["fixed/node0", "fixed@2/node0", "fixed@3/node0"]
    assert tags["job"] == "fixed@3"
    for _ in range(2):
        proc = _cli(
            [
                "measure",
                "--run-uid",
                "cli",
                "--shard-dir",
                str(tmp_path / "cli"),
                "--no-gpu",
                "-q",
                "--store",
                str(tmp_path / "s.db"),
                "--",
                sys.executable,
                "-c",
                "pass",
            ],
            {"JOULECAST_NODE": "n0"},
        )
        assert proc.returncode == 0, proc.stderr
    assert "attempt 2, job cli@2" in proc.stderr
    proc = _cli(["collect", str(tmp_path / "cli"), "--store", str(tmp_path / "m.db"), "--json"], {})
    assert sorted(r["job"] for r in json.loads(proc.stdout)) == ["cli", "cli@2"]


def test_a_passive_rank_reads_nothing_but_never_fails_a_summary_line() -> None:
    from joulecast.errors import JoulecastError
    from joulecast.run import PassiveRun

    run = PassiveRun(Job(rank=1, local_rank=1, world_size=2, node="n0"))
    run.begin("epoch", 0)
    assert run.end("epoch", 0, samples=8) is None
    assert math.isnan(run.energy_j) and run.epochs.empty and "j_per_sample" in run.epochs
    with pytest.raises(JoulecastError, match="local rank 0 of node n0"):
        run.summary()
    run.stop()
    assert not run.active


def test_an_odd_job_identity_is_refused_but_never_costs_the_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joulecast
    from joulecast.run import PassiveRun

    with pytest.raises(InputError, match="at most 200"):
        current_job({}, uid="x" * 201)
    with pytest.raises(InputError, match="printable"):
        current_job({"JOULECAST_RUN_UID": "a\nb"})
    with pytest.raises(InputError, match="kept for a job's attempts"):
        current_job({}, uid="exp@2")
    with pytest.raises(InputError, match="empty"):
        current_job({}, uid=" ")
    with pytest.raises(InputError, match="rank 5 of a job of 2"):
        current_job({"RANK": "5", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    long_name = Job(uid="u" * 200, node="n" * 300).shard_path(tmp_path).name
    assert len(long_name) < 200 and long_name.endswith(".db")
    assert Job(uid="u" * 200).shard_path(tmp_path) != Job(uid="u" * 199 + "v").shard_path(tmp_path)
    monkeypatch.setenv("JOULECAST_RUN_UID", "a\nb")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with (
        pytest.warns(JoulecastWarning, match="JOULECAST_RUN_UID ignored"),
        joulecast.measure("x", store=tmp_path / "s.db") as run,
    ):
        assert isinstance(run, PassiveRun)  # still one sampler per node
    proc = _cli(["measure", "--run-uid", "y" * 300, "--", sys.executable, "-c", "pass"], {})
    assert proc.returncode == 2 and "at most 200" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_launchers_that_say_less_still_give_the_node() -> None:
    # DeepSpeed's launcher: CROSS_RANK / CROSS_SIZE for the node, LOCAL_SIZE per node.
    deepspeed = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_SIZE": "4"}
    job = current_job(deepspeed)
    assert (job.node_rank, job.nodes, job.multinode) == (1, 2, True)
    job = current_job({**deepspeed, "CROSS_RANK": "0", "CROSS_SIZE": "3"})
    assert (job.node_rank, job.nodes) == (0, 3)
    # Only the processes per node.
    job = current_job({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    assert (job.node_rank, job.nodes, job.samples_node) == (1, 2, True)


def test_a_wrapper_reads_the_node_from_the_torchrun_it_launches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from joulecast.distributed import launched_job

    monkeypatch.delenv("JOULECAST_NODE_RANK", raising=False)
    wrapper = current_job({}, uid="exp", node="n1")
    line = ["torchrun", "--nnodes=2", "--nproc-per-node", "4", "--node-rank", "1", "train.py"]
    job = launched_job(wrapper, line)
    assert (job.node_rank, job.nodes, job.node_run_uid()) == (1, 2, "exp/node1")
    module = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "3", "--node_rank=2"]
    assert launched_job(wrapper, module).node_rank == 2
    # Elastic node counts and a rank torchrun assigns itself: nothing to read.
    with pytest.warns(JoulecastWarning, match="elastic"):
        assert launched_job(wrapper, ["torchrun", "--nnodes=1:4", "t.py"]) == wrapper
    # The script's own options are not torchrun's; launchers before torchrun are skipped.
    script = ["torchrun", "--nnodes", "2", "--node-rank=1", "train.py", "--node-rank", "0"]
    assert launched_job(wrapper, script).node_rank == 1
    uv = ["uv", "run", "torchrun", "--standalone", "--nnodes=2", "--node_rank", "1", "t.py"]
    assert launched_job(wrapper, uv).node_rank == 1
    unbuffered = ["python", "-u", "-m", "torch.distributed.run", "--nnodes=2", "--node-rank=1"]
    assert launched_job(wrapper, unbuffered).node_rank == 1
    with pytest.warns(JoulecastWarning, match="JOULECAST_NODE_RANK"):
        assert launched_job(wrapper, ["torchrun", "--nnodes=2", "t.py"]).node_rank == 0
    assert launched_job(wrapper, ["python", "train.py", "--nnodes=2"]) == wrapper


def test_no_j_per_sample_mixes_one_process_or_node_with_the_job(tmp_path: Path) -> None:
    import joulecast
    from joulecast.integrations._common import Session
    from joulecast.records import PhaseKind

    job = Job(rank=0, world_size=4, node_rank=0, nodes=2, uid="mix", node="n0")
    with joulecast.measure(
        "x", store=tmp_path / "s.db", shard_dir=tmp_path / "sh", job=job, sensors=[]
    ) as run:
        session = Session(run=run)
        session.start()
        session.begin(PhaseKind.EPOCH, 0)
        session.begin(PhaseKind.STEP, 0)
        session.end(PhaseKind.STEP, 0, samples=8)  # the global batch, one node's energy
        session.end(PhaseKind.EPOCH, 0, samples=24, together=False)  # left by a break
    phases = run.store.phases(run.run_id)
    step = phases[phases["kind"] == "step"].iloc[0]
    epoch = phases[phases["kind"] == "epoch"].iloc[0]
    assert pd.isna(step["samples"]) and step["metrics"]["job_samples"] == 32
    assert pd.isna(epoch["samples"]) and epoch["metrics"]["rank_samples"] == 24
