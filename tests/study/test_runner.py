"""Running studies: outcomes, resume after SIGKILL, changed files, the submitit executor."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import joulecast
from joulecast.study.design import load_study, plan
from joulecast.study.runner import Runner, classify

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "data" / "fake_train.py"
TINY = ROOT / "examples" / "studies" / "tiny.toml"


def clean_env() -> dict[str, str]:
    """This environment without a joulecast run to join."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JOULECAST_")}


def light_study(
    tmp_path: Path,
    *,
    name: str = "light",
    modes: tuple[str, ...] = ("ok",),
    epoch_s: float = 0.1,
    timeout: str | None = None,
    repetitions: int = 2,
) -> Path:
    """A 2 (batch sizes) x len(modes) x repetitions study of the stand-in training."""
    lines = [
        "[study]",
        f'name = "{name}"',
        'workload = "command"',
        'command = ["{python}", "{script}", "--seed", "{seed}", "--mode", "{mode}",'
        ' "--batch-size", "{batch_size}", "--epoch-s", "{epoch_s}"]',
        f"repetitions = {repetitions}",
        "seed = 11",
        'warmup = "0s"',
        'cooldown = "0s"',
    ]
    if timeout:
        lines.append(f'timeout = "{timeout}"')
    lines += [
        "",
        "[fixed]",
        f'python = "{sys.executable}"',
        f'script = "{FAKE}"',
        f"epoch_s = {epoch_s}",
        "",
        "[factors]",
        "batch_size = [8, 16]",
        f"mode = {json.dumps(list(modes))}",
    ]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args, check=True, timeout=600):
    proc = subprocess.run(
        [sys.executable, "-m", "joulecast", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def status(file: Path, store: Path) -> dict:
    return json.loads(cli("study", "status", file, "--store", store, "--json").stdout)


def completed_runs(store: Path) -> list[dict]:
    with joulecast.open_store(store) as s:
        runs = s.runs()
        return [s.run(int(i)) for i in runs.loc[runs["status"] == "completed", "id"]]


def test_classify_outcomes():
    assert classify(0, "", False) == ("completed", None)
    assert classify(1, "torch.OutOfMemoryError: CUDA out of memory.", False)[0] == "oom"
    assert classify(1, "MemoryError", False)[0] == "oom"
    assert classify(137, "", False)[0] == "oom"
    status, error = classify(3, "ValueError: bad\n", False)
    assert status == "failed" and "exit status 3" in error and "ValueError" in error
    assert classify(-15, "", True)[0] == "timeout"
    # A memory warning early in the output of a run that failed for another reason is no OOM.
    noisy = "W Allocator (GPU_0_bfc) ran out of memory trying to allocate 2.1GiB\n" + "step\n" * 20
    assert classify(1, noisy + "FileNotFoundError: data/x.csv\n", False)[0] == "failed"


def test_study_runs_in_plan_order_and_records_oom(tmp_path):
    file = light_study(tmp_path, modes=("ok", "oom"), repetitions=1)
    store = tmp_path / "s.db"
    proc = cli("study", "run", file, "--store", store)
    assert "2 completed, 2 out of memory" in proc.stdout
    assert "done" in proc.stderr and "ETA" in proc.stderr and "kJ measured so far" in proc.stderr
    data = status(file, store)
    assert data["planned"] == 4 and data["completed"] == 2 and data["oom"] == 2
    assert data["remaining"] == 0
    expected = [r.key for r in plan(load_study(file))]
    assert [r["key"] for r in data["runs"]] == expected
    for r in data["runs"]:
        assert r["status"] == ("completed" if r["mode"] == "ok" else "oom")
        if r["mode"] == "oom":
            assert "CUDA out of memory" in r["error"]
    done = completed_runs(store)
    assert len(done) == 2
    assert all(r["tags"]["study"] == "light" and r["tags"]["mode"] == "ok" for r in done)
    # Completed runs were made in plan order.
    positions = [int(r["tags"]["study_position"]) for r in done]
    assert positions == sorted(positions)
    # Running it again has nothing to do.
    again = cli("study", "run", file, "--store", store)
    assert "0 to do" in again.stdout and len(completed_runs(store)) == 2


@pytest.mark.slow
def test_sigkill_mid_study_then_resume_runs_each_once(tmp_path):
    file = light_study(tmp_path, epoch_s=1.0)
    store = tmp_path / "s.db"
    runner = subprocess.Popen(
        [sys.executable, "-m", "joulecast", "study", "run", str(file), "--store", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    # Kill the runner while a run is in flight, after at least two have completed.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if store.exists():
            try:
                data = status(file, store)
            except AssertionError:
                continue
            if data["completed"] >= 2 and data["running"] == 1:
                break
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert status(file, store)["running"] == 1
    # The machine goes down with it: the run in flight dies too, so it must run again.
    with joulecast.open_store(store) as s:
        (row,) = s.query("SELECT job_id FROM study_runs WHERE status = 'running'")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(row["job_id"].split(":")[1]), signal.SIGKILL)
    cli("study", "run", file, "--store", store)
    data = status(file, store)
    assert data["planned"] == 4 and data["completed"] == 4 and data["remaining"] == 0
    assert len({r["run_id"] for r in data["runs"]}) == 4
    done = completed_runs(store)
    assert len(done) == 4
    assert sorted(r["tags"]["study_key"] for r in done) == sorted(r["key"] for r in data["runs"])
    assert [r["attempts"] for r in data["runs"]].count(2) == 1


def test_timeout_and_changed_file(tmp_path):
    file = light_study(tmp_path, modes=("hang",), repetitions=1, timeout="2s")
    store = tmp_path / "s.db"
    start = time.monotonic()
    cli("study", "run", file, "--store", store)
    assert time.monotonic() - start < 60
    data = status(file, store)
    assert data["timeout"] == 2 and all(r["status"] == "timeout" for r in data["runs"])
    # Changing the design after runs were made is refused, naming what changed.
    file.write_text(file.read_text().replace("batch_size = [8, 16]", "batch_size = [8, 32]"))
    proc = cli("study", "run", file, "--store", store, check=False)
    assert proc.returncode == 2 and "refusing to mix" in proc.stderr and "batch_size" in proc.stderr


def test_plan_cli_prints_counts_and_stores_the_plan(tmp_path):
    file = light_study(tmp_path)
    store = tmp_path / "s.db"
    data = json.loads(cli("study", "plan", file, "--store", store, "--json").stdout)
    assert data["planned"] == 4 and data["combinations"] == 2 and data["remaining"] == 4
    assert [r["key"] for r in data["runs"]] == [r.key for r in plan(load_study(file))]
    text = cli("study", "plan", file, "--store", store).stdout
    assert "2 combinations x 2 repetitions = 4 runs" in text
    assert status(file, store)["planned"] == 4


@pytest.mark.slow
def test_submitit_local_executor_gives_the_same_runs(tmp_path):
    pytest.importorskip("submitit")
    file = light_study(tmp_path)
    store = tmp_path / "s.db"
    cli("study", "run", file, "--store", store, "--executor", "submitit-local")
    data = status(file, store)
    assert [r["status"] for r in data["runs"]] == ["completed"] * 4
    assert [r["key"] for r in data["runs"]] == [r.key for r in plan(load_study(file))]
    done = completed_runs(store)
    order = [r["tags"]["study_key"] for r in sorted(done, key=lambda r: r["id"])]
    assert order == [r["key"] for r in data["runs"]]
    assert len(list((tmp_path / "s-light" / "shards").glob("*.db"))) == 4
    # Collecting the shards again adds nothing.
    out = json.loads(cli("study", "collect", file, "--store", store, "--json").stdout)
    assert out["merged"] == 0 and out["skipped"] == 4


@pytest.mark.slow
@pytest.mark.timeout(900)  # eight Keras runs, made once per session
def test_tiny_example_study_runs_to_completion(tiny_study_store):
    file = TINY
    store = tiny_study_store
    data = status(file, store)
    assert data["planned"] == 8 and data["completed"] == 8
    done = completed_runs(store)
    assert len(done) == 8
    assert {r["tags"]["split"] for r in done} == {"holdout"}  # the default
    order = [r["tags"]["study_key"] for r in sorted(done, key=lambda r: r["id"])]
    assert order == [r["key"] for r in data["runs"]]
    for r in data["runs"]:
        assert {"run_id", "status"} <= set(r) and r["status"] == "completed"


def test_runner_rejects_an_unknown_executor(tmp_path):
    study = load_study(light_study(tmp_path))
    with pytest.raises(joulecast.InputError, match="executor 'pbs'"):
        Runner(study, tmp_path / "s.db", executor="pbs")


def test_no_gpu_skips_the_warm_up_with_a_notice(tmp_path, monkeypatch):
    import joulecast.study.runner as runner_module

    monkeypatch.setattr(runner_module, "gpu_present", lambda: False)
    file = light_study(tmp_path, repetitions=1)
    file.write_text(file.read_text().replace('warmup = "0s"', 'warmup = "10m"'))
    lines: list[str] = []
    counts = Runner(load_study(file), tmp_path / "s.db", echo=lines.append).run()
    assert counts["completed"] == 2
    assert "no GPU here: the 600 s warm-up is skipped" in lines


def test_a_full_disk_stops_the_study_with_the_plan_intact(tmp_path, monkeypatch):
    import errno

    import joulecast.study.runner as runner_module

    calls = []

    def full(self, state, run, cmd, log_path):
        calls.append(run.key)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, state, run, cmd, log_path)

    original = runner_module.Runner._execute_local
    monkeypatch.setattr(runner_module.Runner, "_execute_local", full)
    file = light_study(tmp_path)
    store = tmp_path / "s.db"
    with pytest.raises(joulecast.InputError, match=r"disk is full.*3 run\(s\) still planned"):
        Runner(load_study(file), store, echo=lambda _: None).run()
    data = status(file, store)
    assert data["completed"] == 1 and data["remaining"] == 3 and data["running"] == 0
    assert all(r["attempts"] == 0 for r in data["runs"] if r["status"] == "planned")
    monkeypatch.setattr(runner_module.Runner, "_execute_local", original)
    assert Runner(load_study(file), store, echo=lambda _: None).run()["completed"] == 4


def test_only_runs_the_selected_factor_level(tmp_path):
    file = light_study(tmp_path, repetitions=1)
    store = tmp_path / "s.db"
    cli("study", "run", file, "--store", store, "--only", "batch_size=16")
    data = status(file, store)
    assert data["completed"] == 1 and data["remaining"] == 1
    assert [r["batch_size"] for r in data["runs"] if r["status"] == "completed"] == [16]
    bad = cli("study", "run", file, "--store", store, "--only", "lr=1", check=False)
    assert bad.returncode == 2 and "not a factor" in bad.stderr


def test_plan_uses_the_offline_estimator_on_a_known_gpu(tmp_path):
    import pandas as pd

    from joulecast.study.commands import offline_expectation

    study = load_study(ROOT / "examples" / "studies" / "paper_block2.toml")
    planned = plan(study)
    todo = pd.DataFrame({"position": [r.position for r in planned], "status": "planned"})
    result = offline_expectation(study, todo, "RTX 3090")
    assert result is not None and result["energy_j"] > 0 and result["duration_s"] > 0
    assert "offline estimate on RTX 3090 for the 1170 runs to do" in result["note"]
    # The paper's split gives the dataset sizes the shipped model was trained on.
    assert result["note"].endswith("(modelled)")
    # With 15% of the training split held out for validation, Caltech101's sizes are outside
    # the training ranges: the caveat names those features, not the other warnings'.
    text = (ROOT / "examples" / "studies" / "paper_block2.toml").read_text()
    assert text.count('\nsplit = "paper"\n') == 1
    holdout = tmp_path / "holdout.toml"
    holdout.write_text(text.replace('\nsplit = "paper"\n', '\nsplit = "holdout"\n'))
    caltech = [r.position for r in planned if r.params.get("dataset") == "caltech101"][:5]
    assert caltech
    some = pd.DataFrame({"position": caltech, "status": "planned"})
    noted = offline_expectation(load_study(holdout), some, "RTX 3090")
    assert noted is not None
    assert noted["note"].endswith(
        "; outside the model's training ranges: train_samples, val_samples"
    )
    half = todo.assign(status=["completed" if i % 2 else "planned" for i in range(len(todo))])
    assert offline_expectation(study, half, "RTX 3090")["energy_j"] < result["energy_j"]
    assert offline_expectation(study, todo, None) is None  # no GPU here: no estimate


def test_plan_estimate_takes_each_runs_split(tmp_path, monkeypatch):
    import pandas as pd

    from joulecast.offline import estimate
    from joulecast.study.commands import offline_expectation

    file = tmp_path / "split.toml"
    file.write_text(
        '[study]\nname = "s"\nrepetitions = 1\n'
        '[fixed]\narch = "inception_v3"\ndataset = "caltech101"\nepochs = [2]\n'
        '[factors]\nsplit = ["holdout", "paper"]\n'
    )
    study = load_study(file)
    todo = pd.DataFrame({"position": [r.position for r in plan(study)], "status": "planned"})
    seen = []
    real = estimate.estimate_training

    def spy(**kwargs):
        seen.append((kwargs["train_samples"], kwargs["val_samples"]))
        return real(**kwargs)

    monkeypatch.setattr(estimate, "estimate_training", spy)
    assert offline_expectation(study, todo, "RTX 3090") is not None
    # holdout: 15% of the tfds train split validates; paper: the tfds test split (section 3.4.1)
    assert sorted(seen) == [(2_601, 459), (3_060, 6_084)]


def test_sigterm_stops_the_run_and_puts_it_back_in_the_plan(tmp_path):
    import psutil

    file = light_study(tmp_path, modes=("hang",), repetitions=1)
    store = tmp_path / "s.db"
    runner = subprocess.Popen(
        [sys.executable, "-m", "joulecast", "study", "run", str(file), "--store", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    data = None
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            data = status(file, store)
        except AssertionError:
            continue
        if data["running"] == 1:
            break
    assert data is not None and data["running"] == 1
    time.sleep(1.0)  # the run's processes are up
    job = next(r for r in data["runs"] if r["status"] == "running")
    runner.send_signal(signal.SIGTERM)
    runner.wait(timeout=60)
    with joulecast.open_store(store) as s:
        rows = s.query("SELECT job_id FROM study_runs WHERE key = ?", (job["key"],))
    pgid = int(rows[0]["job_id"].split(":")[1])
    assert not psutil.pid_exists(pgid) or psutil.Process(pgid).status() == psutil.STATUS_ZOMBIE
    after = status(file, store)
    assert after["running"] == 0 and after["remaining"] == 2
    assert all(r["attempts"] == 0 for r in after["runs"])


# Kills the study runner (its parent, `joulecast measure`, runs under it) on its first DEATHS
# calls, then waits to be stopped; afterwards it ends at once.
KILL_RUNNER = """
import os, signal, sys, time
count_path, deaths = sys.argv[1], int(sys.argv[2])
calls = int(open(count_path).read()) if os.path.exists(count_path) else 0
open(count_path, "w").write(str(calls + 1))
if calls < deaths:
    with open(f"/proc/{os.getppid()}/stat") as stat:
        runner = int(stat.read().rsplit(")", 1)[1].split()[1])
    os.kill(runner, signal.SIGKILL)
    time.sleep(60)
"""


@pytest.mark.slow
def test_a_run_whose_runner_dies_is_retried_up_to_max_attempts(tmp_path):
    script = tmp_path / "kill_runner.py"
    script.write_text(KILL_RUNNER)
    file = tmp_path / "dies.toml"
    file.write_text(
        "[study]\nname = 'dies'\nworkload = 'command'\n"
        "command = ['{python}', '{script}', '{count}', '2', '{x}']\n"
        "repetitions = 1\nseed = 3\nwarmup = '0s'\ncooldown = '0s'\n\n"
        f"[fixed]\npython = '{sys.executable}'\nscript = '{script}'\n"
        f"count = '{tmp_path / 'calls'}'\n\n[factors]\nx = [1, 2]\n"
    )
    store = tmp_path / "s.db"
    first = plan(load_study(file))[0].key

    def runner(*extra):
        return cli("study", "run", file, "--store", store, *extra, check=False)

    def row(key):
        return next(r for r in status(file, store)["runs"] if r["key"] == key)

    assert runner().returncode == -signal.SIGKILL
    assert row(first)["status"] == "running"
    assert runner().returncode == -signal.SIGKILL
    assert (row(first)["attempts"], row(first)["interrupted"]) == (2, 1)
    # At most two attempts: the run is given up, the other one runs.
    done = runner("--max-attempts", "2")
    assert done.returncode == 0 and "recorded failed" in done.stderr
    data = status(file, store)
    assert (data["completed"], data["failed"]) == (1, 1)
    failed = row(first)
    assert (failed["status"], failed["attempts"], failed["interrupted"]) == ("failed", 2, 2)
    assert failed["error"] == "the runner stopped during this run 2 times (max_attempts 2)"
    # The default of 3 tries it again: the study ends with every run completed.
    assert runner().returncode == 0
    data = status(file, store)
    assert (data["completed"], data["failed"], data["running"]) == (2, 0, 0)
    assert (row(first)["attempts"], row(first)["interrupted"]) == (3, 2)
    text = cli("study", "status", file, "--store", store).stdout
    assert f"{first}: completed (attempt 3, 2 interrupted)" in text
