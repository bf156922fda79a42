"""A two-node DDP job on one machine (torchrun over localhost, gloo): one sampler per node,
node shards merged into one run with every node's GPUs once and the job's samples."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joulecast.jobs import merge_jobs
from joulecast.store import Store

pytest.importorskip("torch")

SCRIPT = Path(__file__).with_name("ddp_job.py")
EPOCHS, SAMPLES = 3, 96
TRACE_T = np.arange(0.0, 900.0, 0.5)


def _trace(path: Path, scale: float) -> dict[int, np.ndarray]:
    """Two GPUs whose power varies over the run (a replayed node's GPUs)."""
    power = {
        0: scale * (150.0 + 60.0 * np.sin(TRACE_T / 4.0)),
        1: scale * (90.0 + 30.0 * np.cos(TRACE_T / 7.0)),
    }
    frames = [
        pd.DataFrame({"t_s": TRACE_T, "gpu_index": g, "power_w": p}) for g, p in power.items()
    ]
    pd.concat(frames).to_csv(path, index=False)
    return power


def _integral(power: np.ndarray, a: float, b: float) -> float:
    """The piecewise-linear trace's energy over [a, b]."""
    inside = TRACE_T[(a < TRACE_T) & (b > TRACE_T)]
    t = np.concatenate([[a], inside, [b]])
    return float(np.trapezoid(np.interp(t, TRACE_T, power), t))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_job(
    mode: str,
    store: Path | str,
    node_env: list[dict[str, str]],
    wrap: list[list[str]] | None = None,
) -> list[str]:
    """Both "nodes" of the job, each a torchrun with two processes (after the node's ``wrap``
    command, such as ``joulecast measure ... --``); their output."""
    port = _free_port()
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOULECAST_", "SLURM_", "TORCHELASTIC_"))
        and k not in ("CUDA_VISIBLE_DEVICES", "RANK", "LOCAL_RANK", "WORLD_SIZE")
    }
    base.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    procs = [
        subprocess.Popen(
            [
                *(wrap[node] if wrap else []),
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=2",
                f"--node-rank={node}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "--rdzv-id=job-a",
                str(SCRIPT),
                mode,
                str(store),
            ],
            env={**base, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node, env in enumerate(node_env)
    ]
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        outputs.append(out)
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]
    return outputs


def _check_merged(
    target: Store,
    shards: list[Path],
    traces: list[dict[int, np.ndarray]],
    job: str = "torchrun-job-a",
) -> int:
    """The job merged from ``shards`` (one per node, in node order): its run id."""
    (result,) = merge_jobs(target, shards)
    assert result.outcome == "merged" and result.nodes == 2
    assert result.job == job
    gpus = [d for d in result.devices if d.startswith("gpu:")]
    assert len(gpus) == 4 == len(set(gpus))
    expected_j = 0.0
    node_names = []
    for node, (shard, trace) in enumerate(zip(shards, traces, strict=True)):
        with Store(shard) as s:
            (row,) = s.query("SELECT id, tags FROM runs")  # one sampler on this node
            states = s.device_energy(int(row["id"]))
            node_names.append(s.run(int(row["id"]))["tags"]["job_node"])
        assert sorted(d for d in states if d.startswith("gpu:")) == ["gpu:0", "gpu:1"]
        with Store(shard) as s:
            marked = s.phases(int(row["id"]), "epoch")
        if len(marked):  # a node's run: one node's energy, so the job's samples wait aside
            assert marked["samples"].isna().all()
            assert [m["job_samples"] for m in marked["metrics"]] == [SAMPLES] * EPOCHS
        for g in (0, 1):
            state = states[f"gpu:{g}"]
            expected_j += _integral(trace[g], state.t_first_s, state.t_last_s)
        assert sum(1 for d in result.devices if d.startswith("ram:")) == 2, node
    merged = target.device_energy(result.run_id)
    gpu_j = sum(merged[d].energy_j for d in gpus)
    print(f"merged GPU energy {gpu_j:.2f} J, traces' integral {expected_j:.2f} J")
    assert gpu_j == pytest.approx(expected_j, rel=0.005)
    epochs = target.phases(result.run_id, "epoch")
    assert list(epochs["index"]) == list(range(EPOCHS))
    assert list(epochs["samples"]) == [SAMPLES] * EPOCHS
    return int(result.run_id)


def _epoch_energies(store: Store, run_id: int) -> list[float]:
    from joulecast.energy import summarize

    return [float(e) for e in summarize(store, run_id).epochs["energy_j"]]


def test_a_two_node_ddp_job_with_epochs_is_one_run(tmp_path: Path) -> None:
    traces, env = [], []
    for node in (0, 1):
        trace = tmp_path / f"node{node}.csv"
        traces.append(_trace(trace, scale=1.0 if node == 0 else 0.5))
        env.append(
            {
                "JOULECAST_REPLAY_GPUS": str(trace),
                "JOULECAST_SHARD_DIR": str(tmp_path / f"shards{node}"),
                "JOULECAST_NODE": f"node{node}",
            }
        )
    outputs = _run_job("epochs", tmp_path / "store.db", env)
    lines = "".join(outputs)
    for rank, kind in ((0, "Run"), (1, "PassiveRun"), (2, "Run"), (3, "PassiveRun")):
        assert f"rank {rank}: {kind} stop=False epochs={EPOCHS}" in lines
    assert not (tmp_path / "store.db").exists()  # every node wrote its shard only
    shards = [
        tmp_path / f"shards{node}" / f"torchrun-job-a.{node}.node{node}.db" for node in (0, 1)
    ]
    assert all(shard.is_file() for shard in shards)
    with Store(tmp_path / "job.db") as target:
        run_id = _check_merged(target, shards, traces)
        epochs = target.phases(run_id, "epoch")
        # Rank 0 forecast after every epoch from the job's energy (both nodes').
        forecasts = [m["forecast"] for m in epochs["metrics"]]
        assert len(forecasts) == EPOCHS
        job_j = target.phases(run_id, "epoch")
        seen_j = forecasts[-1]["energy_so_far_j"]
        merged_epochs_j = sum(_epoch_energies(target, run_id))
        # Node 1 draws half of node 0: rank 0's node alone would be about 2/3 of this.
        assert seen_j == pytest.approx(merged_epochs_j, rel=0.05)
        assert not job_j.empty and target.run(run_id)["tags"]["job_nodes"] == "2"


def test_rank_zero_stops_the_whole_job_on_its_energy_budget(tmp_path: Path) -> None:
    trace = tmp_path / "gpus.csv"
    _trace(trace, scale=1.0)
    env = {"JOULECAST_REPLAY_GPUS": str(trace)}
    lines = "".join(_run_job("budget", tmp_path / "store.db", [env, env]))
    for rank in range(4):
        assert f"rank {rank}: " in lines
    assert lines.count("stop=True epochs=1") == 4, lines[-3000:]
    with Store(tmp_path / "job.db") as target:
        (result,) = merge_jobs(target, [tmp_path / "store.shards"])
        epochs = target.phases(result.run_id, "epoch")
        assert list(epochs["index"]) == [0]
        assert "exceeds the budget" in epochs["metrics"][0]["early_stop"]


def test_joulecast_measure_around_torchrun_on_each_node(tmp_path: Path) -> None:
    traces, wraps, env = [], [], []
    for node in (0, 1):
        trace = tmp_path / f"node{node}.csv"
        traces.append(_trace(trace, scale=1.0 if node == 0 else 0.5))
        wraps.append(
            [
                sys.executable,
                "-m",
                "joulecast",
                "measure",
                "-q",
                "--interval",
                "0.05",
                "--replay-gpus",
                str(trace),
                "--run-uid",
                "wrapped",
                "--shard-dir",
                str(tmp_path / f"shards{node}"),
                "--store",
                str(tmp_path / "store.db"),
                "--",
            ]
        )
        env.append({"JOULECAST_NODE": f"node{node}"})
    lines = "".join(_run_job("epochs", "-", env, wraps))
    # The ranks joined their node's run: local rank 0 marks, the other is passive.
    for rank, kind in ((0, "Run"), (1, "PassiveRun"), (2, "Run"), (3, "PassiveRun")):
        assert f"rank {rank}: {kind} stop=False epochs={EPOCHS}" in lines
    shards = [tmp_path / f"shards{node}" / f"wrapped.{node}.node{node}.db" for node in (0, 1)]
    with Store(tmp_path / "job.db") as target:
        _check_merged(target, shards, traces, job="wrapped")


def test_a_rank_that_fails_mid_epoch_shows_its_own_error(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOULECAST_", "SLURM_", "TORCHELASTIC_"))
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(SCRIPT),
            "fail",
            str(tmp_path / "store.db"),
        ],
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # The training's own error, not a collective that joulecast started while unwinding.
    assert "simulated failure on rank 1" in output
    assert "mismatch" not in output
    with Store(tmp_path / "store.db") as store:
        (run,) = [store.run(int(i)) for i in store.runs()["id"]]
    assert run["status"] in ("failed", "interrupted")


def test_processes_of_torch_multiprocessing_spawn_sample_once(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOULECAST_", "SLURM_", "TORCHELASTIC_"))
        and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    }
    trace = tmp_path / "gpus.csv"
    _trace(trace, scale=1.0)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "spawn", str(tmp_path / "store.db")],
        env={
            **env,
            "OMP_NUM_THREADS": "1",
            "MASTER_PORT": str(_free_port()),
            "JOULECAST_REPLAY_GPUS": str(trace),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0: Run stop=False" in proc.stdout and "rank 1: PassiveRun" in proc.stdout
    with Store(tmp_path / "store.db") as store:
        (run_id,) = [int(i) for i in store.runs()["id"]]  # one sampler
        assert list(store.phases(run_id, "epoch")["samples"]) == [SAMPLES] * EPOCHS


def test_a_two_node_lightning_job_needs_no_hints(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    traces, env = [], []
    for node in (0, 1):
        trace = tmp_path / f"node{node}.csv"
        traces.append(_trace(trace, scale=1.0 if node == 0 else 0.5))
        env.append({"JOULECAST_REPLAY_GPUS": str(trace)})
    _run_job("lightning", tmp_path / "store.db", env)
    folder = tmp_path / "store.shards"  # the default, beside the store
    host = socket.gethostname()
    shards = [folder / f"torchrun-job-a.{node}.{host}.db" for node in (0, 1)]
    assert sorted(folder.glob("*.db")) == sorted(shards)
    with Store(tmp_path / "job.db") as target:
        _check_merged(target, shards, traces)
