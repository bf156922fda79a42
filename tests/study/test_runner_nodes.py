"""Studies whose runs span several nodes: one run per job, with every node's energy."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import joulecast
from joulecast.errors import InputError
from joulecast.store import Store
from joulecast.study.design import load_study, plan
from joulecast.study.powercap import GpuRefused
from joulecast.study.runner import Runner, _worst
from joulecast.study.state import StudyState
from tests.study.test_runner import FAKE, cli, status
from tests.test_jobs import node_shard

# The node of rank {fail_rank} exits 3 before training; the others train (2 epochs of 0.1 s).
COMMAND = [
    "sh",
    "-c",
    'if [ "$JOULECAST_NODE_RANK" = {fail_rank} ]; then echo boom; exit 3; fi; exec "$0" "$@"',
    "{python}",
    "{script}",
    "--seed",
    "{seed}",
    "--epoch-s",
    "0.1",
]


def nodes_study(tmp_path: Path, combinations: list[tuple[int, int]], design: str = "") -> Path:
    """A study of the stand-in training with one combination per ``(nodes, fail_rank)``, or
    the ``design`` given (TOML after [fixed])."""
    lines = [
        "[study]",
        'name = "nodes"',
        'workload = "command"',
        f"command = {json.dumps(COMMAND)}",
        "repetitions = 1",
        'order = "sequential"',
        'warmup = "0s"',
        'cooldown = "0s"',
        'timeout = "2m"',
        "",
        "[fixed]",
        f"python = {json.dumps(sys.executable)}",
        f"script = {json.dumps(str(FAKE))}",
    ]
    for nodes, fail_rank in combinations:
        lines += ["", "[[combinations]]", f"nodes = {nodes}", f"fail_rank = {fail_rank}"]
    lines.append(design)
    path = tmp_path / "nodes.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_submitit_local_study_with_two_simulated_nodes_has_one_run_per_job(tmp_path):
    pytest.importorskip("submitit")
    file = nodes_study(tmp_path, [(1, -1), (2, -1), (2, 1)])
    store = tmp_path / "s.db"
    counts = Runner(load_study(file), store, executor="submitit-local", echo=lambda _: None).run()
    assert counts["completed"] == 2 and counts["failed"] == 1
    data = status(file, store)
    one, two, broken = data["runs"]
    assert (one["status"], two["status"], broken["status"]) == ("completed",) * 2 + ("failed",)
    assert "exit status 3" in broken["error"] and "(node 1 of 2)" in broken["error"]
    with joulecast.open_store(store) as s:
        runs = s.runs().set_index("id")
        # One run per planned run: the nodes' runs are not in the store, only their merge.
        assert sorted(runs.index) == sorted(r["run_id"] for r in data["runs"])
        assert runs.loc[one["run_id"], "tags"].get("job") is None
        node = f"{socket.gethostname()}-node"
        for planned, state in ((two, "completed"), (broken, "failed")):
            run = s.run(planned["run_id"])
            assert run["status"] == state
            assert run["tags"]["job_nodes"] == "2" and run["tags"]["study_key"] == planned["key"]
            devices = sorted(s.device_energy(planned["run_id"]))
            assert [d for d in devices if d.startswith("ram:")] == [f"ram:{node}0", f"ram:{node}1"]
        merged = s.run(two["run_id"])
        assert runs.loc[two["run_id"], "epochs"] == 2  # node 0's epochs, once
    # The job's energy is its nodes' energy, summed.
    folder = tmp_path / "s-nodes" / "shards" / merged["uid"].split("/")[-1]
    shards = sorted(folder.glob("*.db"))
    assert len(shards) == 2
    energy_j = 0.0
    for path in shards:
        with Store(path) as shard:
            energy_j += float(shard.runs()["energy_j"].sum())
    assert runs.loc[two["run_id"], "energy_j"] == pytest.approx(energy_j, rel=1e-9)
    # Each node's output goes to its own log.
    log = tmp_path / "s-nodes" / "logs" / f"{two['key']}-a1.node1.log"
    assert f"trained with seed {two['seed']}" in log.read_text()
    # Collecting again adds nothing: the one-node shard is there, the jobs merged already.
    out = json.loads(cli("study", "collect", file, "--store", store, "--json").stdout)
    assert (out["merged"], out["skipped"], out["jobs_merged"], out["jobs_left"]) == (0, 1, 0, 0)


def test_the_local_executor_refuses_a_run_over_several_nodes(tmp_path):
    study = load_study(nodes_study(tmp_path, [(1, -1), (2, -1)]))
    with pytest.raises(joulecast.InputError) as info:
        Runner(study, tmp_path / "s.db", executor="local")
    message = str(info.value)
    assert "\n" not in message
    assert "run c001-r00 asks for nodes = 2" in message and "--executor slurm" in message
    # The runs it would run are one node each: nothing to refuse.
    Runner(study, tmp_path / "s.db", executor="local", only={"nodes": "1"})


def test_the_worst_node_end_is_the_jobs():
    assert _worst([(0, False, "a"), (0, False, "b")]) == (0, False, "a")
    assert _worst([(-15, True, "t"), (3, False, "x")]) == (3, False, "x\n(node 1 of 2)")
    assert _worst([(0, False, "a"), (-15, True, "t")]) == (-15, True, "t\n(node 1 of 2)")


def test_a_node_without_a_shard_is_named_and_the_rest_merged(tmp_path):
    study = load_study(nodes_study(tmp_path, [(2, -1)]))
    runner = Runner(study, tmp_path / "s.db", executor="submitit-local")
    folder = tmp_path / "job"
    with Store(tmp_path / "s.db") as store:
        assert runner._merge_job(store, folder, "nodes-j", 2) == (
            f"no node of the job left a shard in {folder}"
        )
        node_shard(folder, "n0", 0, rank=0, job="nodes-j")
        note = runner._merge_job(store, folder, "nodes-j", 2)
        assert note == "node(s) 1 of 2 left no shard: the run holds the other nodes' energy only"
        runs = store.runs()
        assert len(runs) == 1
        assert runs["tags"][0]["job_nodes_found"] == "1"
        # The run is recorded as failed, with the note first.
        (planned,) = plan(study)
        state = StudyState.open(store, study, [planned])
        state.claim(planned.position)
        outcome = runner._record(store, state, planned, 0, False, "", time.monotonic(), note)
        assert outcome.status == "failed" and outcome.error.startswith(note)


def test_study_collect_merges_each_job_folder_into_one_run(tmp_path):
    file = nodes_study(tmp_path, [(2, -1)])
    store = tmp_path / "s.db"
    shards = tmp_path / "s-nodes" / "shards"
    node_shard(shards / "c000-r00-a1-x", "n0", 0, rank=0, job="j1")
    node_shard(shards / "c000-r00-a1-x", "n1", 1, rank=1, job="j1")
    node_shard(shards / "c000-r00-a2-y", "n0", 0, rank=0, job="j2")
    out = json.loads(cli("study", "collect", file, "--store", store, "--json").stdout)
    assert (out["shards"], out["jobs_merged"], out["jobs_left"]) == (0, 1, 1)
    with Store(store) as s:
        (run,) = s.runs().itertuples()
        assert run.tags["job"] == "j1" and run.tags["job_nodes_found"] == "2"
    text = cli("study", "collect", file, "--store", store).stdout
    assert "0 multi-node job(s) merged, 1 left" in text


class FakeExecutor:
    """submitit's executor as the runner uses it: records each job's parameters and command."""

    def __init__(self, folder: Path, cluster: str) -> None:
        assert cluster == "slurm"
        self.parameters: dict[str, Any] = {}
        self.jobs: list[tuple[dict[str, Any], str, list[str]]] = []
        EXECUTORS.append(self)

    def update_parameters(self, **params: Any) -> None:
        self.parameters.update(params)

    def submit(self, fn: Any, cmd: list[str], *args: Any) -> FakeJob:
        self.jobs.append((dict(self.parameters), fn.__name__, cmd))
        return FakeJob(self.parameters.get("nodes", 1))


EXECUTORS: list[FakeExecutor] = []


class FakeJob:
    """A submitted job that ran nothing and ended well on every task."""

    job_id = "42"

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks

    def done(self) -> bool:
        return True

    def result(self) -> tuple[int, bool, str]:
        return 0, False, ""

    def task(self, k: int) -> FakeJob:
        assert 0 <= k < self.tasks
        return FakeJob(1)


def test_on_slurm_each_run_asks_for_its_own_nodes_and_gpus(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    design = "[factors]\nnodes = [1, 2]\ngpus_per_node = [4, 0]\n\n[slurm]\ngpus_per_node = 4\n"
    file = nodes_study(tmp_path, [], design)
    file.write_text(file.read_text().replace("[fixed]", "[fixed]\nfail_rank = -1"))
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    monkeypatch.setattr(Runner, "_warm_up", lambda self: None)
    Runner(load_study(file), tmp_path / "s.db", executor="slurm", echo=lambda _: None).run()
    jobs = EXECUTORS.pop().jobs
    sizes = [
        (p.get("nodes", 1), p.get("tasks_per_node", 1), p["gpus_per_node"]) for p, _, _ in jobs
    ]
    # nodes x gpus_per_node in file order; the first is what [slurm] asks for.
    assert sizes == [(1, 1, 4), (1, 1, 0), (2, 1, 4), (2, 1, 0)]
    assert "nodes" not in jobs[0][0]  # a run of one node asks as before
    assert [fn for _, fn, _ in jobs] == ["execute", "execute", "run_node", "run_node"]
    assert all("--run-uid" not in cmd for _, _, cmd in jobs[:2])
    cmd = jobs[2][2]
    uid = cmd[cmd.index("--run-uid") + 1]
    shard_dir = Path(cmd[cmd.index("--shard-dir") + 1])
    assert uid.startswith("nodes/c002-r00-a1-") and shard_dir.name == uid.split("/")[-1]
    assert shard_dir.parent == tmp_path / "s-nodes" / "shards"


class Task:
    """One task of a job: ``ending`` is None while it runs."""

    def __init__(self, ending: Any = None) -> None:
        self.ending = ending

    def done(self) -> bool:
        return self.ending is not None

    def result(self) -> Any:
        if self.ending is None:  # submitit would wait: here, up to the study's timeout
            pytest.fail("waited on a task that has not ended")
        return self.ending


class TwoNodeJob:
    """Node 0 trains (waiting for node 1, up to the study's timeout); node 1 refused."""

    job_id = "43"

    def __init__(self) -> None:
        self.tasks = [Task(), Task(GpuRefused("gpu-node-2", "cannot set the power limit"))]
        self.cancelled = 0

    def task(self, k: int) -> Task:
        return self.tasks[k]

    def cancel(self) -> None:
        self.cancelled += 1


def test_a_refusal_on_a_later_node_cancels_the_job_at_once(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    design = "[factors]\npower_limit_w = [250]\n"
    file = nodes_study(tmp_path, [], design)
    file.write_text(file.read_text().replace("[fixed]", "[fixed]\nfail_rank = -1\nnodes = 2"))
    job = TwoNodeJob()

    class Executor(FakeExecutor):
        def submit(self, fn: Any, *args: Any) -> TwoNodeJob:
            return job

    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    monkeypatch.setattr(Runner, "_warm_up", lambda self: None)
    store = tmp_path / "s.db"
    with pytest.raises(InputError) as err:
        Runner(load_study(file), store, executor="slurm", echo=lambda _: None).run()
    EXECUTORS.pop()
    assert str(err.value) == (
        "run c000-r00 refused on gpu-node-2, back in the plan; study stopped: cannot set the"
        " power limit"
    )
    assert job.cancelled == 1
    with joulecast.open_store(store) as s:
        state = StudyState.find(s, "nodes")
        assert state is not None and list(state.runs()["status"]) == ["planned"]
