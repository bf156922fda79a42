"""GPU power limits and locked clocks as study factors, against the NVML fake.

Each run's limit is set before it and put back after it, however it ends; a runner killed
during a run leaves the limit for the next runner to put back; what the GPU or the user's
rights refuse is refused in one line before any run.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import joulecast
from joulecast.errors import InputError
from joulecast.study.design import load_study, plan
from joulecast.study.powercap import (
    LEDGER_FOLDER,
    FileLedger,
    GpuControl,
    GpuRefused,
    GpuSettings,
    JobGpus,
)
from joulecast.study.runner import Runner, Stopped, run_capped
from joulecast.study.state import StudyState
from tests.fakes import FakeNvml, a100, gtx750ti, rtx2080

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "data" / "fake_train.py"
SET = "nvmlDeviceSetPowerManagementLimit"
LOCK = "nvmlDeviceSetGpuLockedClocks"
UNLOCK = "nvmlDeviceResetGpuLockedClocks"
A100 = a100().uuid


def capped_study(
    tmp_path: Path,
    *,
    modes: tuple[str, ...] = ("ok",),
    caps: tuple[float, ...] = (250,),
    clocks: tuple[int, ...] = (),
    timeout: str | None = None,
    command: str | None = None,
) -> Path:
    """A study of the stand-in training over power limits (and clocks) x modes, 1 repetition."""
    command = command or (
        '["{python}", "{script}", "--seed", "{seed}", "--mode", "{mode}", "--epoch-s", "0.05"]'
    )
    lines = [
        "[study]",
        'name = "capped"',
        'workload = "command"',
        f"command = {command}",
        "repetitions = 1",
        "seed = 5",
        'warmup = "0s"',
        'cooldown = "0s"',
        *([f'timeout = "{timeout}"'] if timeout else []),
        "",
        "[fixed]",
        f"python = {json.dumps(sys.executable)}",
        f"script = {json.dumps(str(FAKE))}",
        "",
        "[factors]",
        f"power_limit_w = {json.dumps(list(caps))}",
        *([f"gpu_clocks_mhz = {json.dumps(list(clocks))}"] if clocks else []),
        f"mode = {json.dumps(list(modes))}",
    ]
    path = tmp_path / "capped.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_study(file: Path, store: Path, fake: FakeNvml, lines: list[str] | None = None) -> dict:
    out = lines if lines is not None else []
    return Runner(load_study(file), store, nvml=fake, echo=out.append).run()


def left_to_put_back(store: Path) -> list[dict]:
    with joulecast.open_store(store) as s:
        return s.query("SELECT gpu_uuid, setting, original, value, run_key FROM gpu_settings")


def run_tags(store: Path) -> list[dict]:
    with joulecast.open_store(store) as s:
        return [s.run(int(i))["tags"] for i in s.runs()["id"]]


# -- set before each run, put back after it ------------------------------------------------------


def test_the_limit_is_set_for_each_run_and_put_back_when_it_completes_or_fails(tmp_path):
    file = capped_study(tmp_path, modes=("ok", "crash"))
    store = tmp_path / "s.db"
    fake = FakeNvml([a100()])
    counts = run_study(file, store, fake)
    assert (counts["completed"], counts["failed"]) == (1, 1)
    # The check sets the limit it finds (400 W), then each run: its cap, then 400 W back.
    assert fake.changes == [(SET, A100, 400_000)] + [(SET, A100, 250_000), (SET, A100, 400_000)] * 2
    assert fake.gpus[0].enforced_limit_mw == 400_000
    assert left_to_put_back(store) == []
    # The cap is a tag of the run, as the analysis reads it.
    assert {t["power_limit_w"] for t in run_tags(store)} == {"250"}


def test_the_limit_is_put_back_when_the_run_times_out(tmp_path):
    file = capped_study(tmp_path, modes=("hang",), caps=(150.5,), timeout="2s")
    store = tmp_path / "s.db"
    fake = FakeNvml([rtx2080(enforced_limit_mw=200_000)])
    assert run_study(file, store, fake)["timeout"] == 1
    uuid = rtx2080().uuid
    assert fake.changes == [(SET, uuid, 200_000), (SET, uuid, 150_500), (SET, uuid, 200_000)]
    assert left_to_put_back(store) == []


def test_locked_clocks_are_set_and_unlocked_on_every_visible_gpu(tmp_path):
    file = capped_study(tmp_path, caps=(300,), clocks=(1200,))
    store = tmp_path / "s.db"
    fake = FakeNvml([a100(), a100(uuid="GPU-a2", pci_bus_id="00000000:08:00.0")])
    lines: list[str] = []
    assert run_study(file, store, fake, lines)["completed"] == 1
    run = [c for c in fake.changes[4:] if c[1] == A100]
    # Put back in the reverse order.
    assert run == [
        (SET, A100, 300_000),
        (LOCK, A100, (1200, 1200)),
        (UNLOCK, A100, None),
        (SET, A100, 400_000),
    ]
    assert all(g.locked_clocks_mhz is None and g.enforced_limit_mw == 400_000 for g in fake.gpus)
    (tags,) = run_tags(store)
    assert (tags["power_limit_w"], tags["gpu_clocks_mhz"]) == ("300", "1200")


def test_only_the_gpus_the_run_sees_are_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    file = capped_study(tmp_path)
    fake = FakeNvml([a100(), a100(uuid="GPU-a2", pci_bus_id="00000000:08:00.0")])
    run_study(file, tmp_path / "s.db", fake)
    assert {uuid for _, uuid, _ in fake.changes} == {"GPU-a2"}


# -- the runner killed during a run ----------------------------------------------------------------

# Kills the study runner (the parent of `joulecast measure`, its own parent) the first time,
# then waits to be stopped; afterwards it ends at once.
KILL_RUNNER = """
import os, signal, sys, time
count_path = sys.argv[1]
if not os.path.exists(count_path):
    open(count_path, "w").write("1")
    with open(f"/proc/{os.getppid()}/stat") as stat:
        runner = int(stat.read().rsplit(")", 1)[1].split()[1])
    os.kill(runner, signal.SIGKILL)
    time.sleep(60)
"""

RUNNER = """
import sys
from pathlib import Path
from joulecast.study.design import load_study
from joulecast.study.runner import Runner
from tests.fakes import FakeNvml, a100
fake = FakeNvml([a100()], state_path=Path(sys.argv[3]))
Runner(load_study(sys.argv[1]), sys.argv[2], nvml=fake).run()
"""


@pytest.mark.slow
def test_a_runner_killed_during_a_run_leaves_the_limit_for_the_next_to_put_back(tmp_path):
    script = tmp_path / "kill_runner.py"
    script.write_text(KILL_RUNNER)
    calls = tmp_path / "calls"
    file = capped_study(
        tmp_path, command=json.dumps([sys.executable, str(script), str(calls), "{mode}"])
    )
    store, gpu_state = tmp_path / "s.db", tmp_path / "gpus.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(file), str(store), str(gpu_state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # The GPU is left capped; the store says what to put back.
    assert json.loads(gpu_state.read_text())[A100]["limit_mw"] == 250_000
    (row,) = left_to_put_back(store)
    assert (row["setting"], row["original"], row["value"]) == ("power_limit", 400_000, 250_000)
    # The next runner puts it back before anything else, then runs the run again.
    fake = FakeNvml([a100()], state_path=gpu_state)
    assert fake.gpus[0].enforced_limit_mw == 250_000
    lines: list[str] = []
    assert run_study(file, store, fake, lines)["completed"] == 1
    assert fake.changes[0] == (SET, A100, 400_000)
    assert fake.changes[-2:] == [(SET, A100, 250_000), (SET, A100, 400_000)]
    assert any("put back" in line and "400 W" in line for line in lines)
    assert left_to_put_back(store) == []
    assert json.loads(gpu_state.read_text())[A100]["limit_mw"] == 400_000


def test_a_setting_put_back_only_partly_stays_for_the_next_start(tmp_path):
    from joulecast.store import Store

    fake = FakeNvml([a100()])
    lines: list[str] = []
    with Store(tmp_path / "s.db") as store:
        control = GpuControl(store, "capped", nvml=fake, echo=lines.append)
        with control.applied(GpuSettings(power_limit_w=200), "c000-r00"):
            fake.gpus[0].fail[SET] = 999  # the put-back fails
        assert any("could not put its power limit back" in line for line in lines)
        assert fake.gpus[0].enforced_limit_mw == 200_000
        del fake.gpus[0].fail[SET]
        assert control.restore_leftovers() == [
            f"gpu:0 (NVIDIA A100-SXM4-40GB, {A100}): power limit put back to 400 W"
        ]
        assert fake.gpus[0].enforced_limit_mw == 400_000
        assert control.restore_leftovers() == []
        control.close()
    assert fake.init_count == 0


# -- refused before any run ------------------------------------------------------------------------


def refused(tmp_path: Path, fake: FakeNvml, **study: object) -> str:
    file = capped_study(tmp_path, **study)  # type: ignore[arg-type]
    store = tmp_path / "s.db"
    with pytest.raises(InputError) as err:
        run_study(file, store, fake)
    with joulecast.open_store(store) as s:
        assert s.runs().empty  # no run was started
    assert fake.changes == []
    message = str(err.value)
    assert "\n" not in message
    return message


def test_no_permission_is_refused_in_one_line_before_any_run(tmp_path):
    message = refused(tmp_path, FakeNvml([a100()], admin=False))
    assert "Insufficient Permissions" in message and "needs root" in message
    assert A100 in message


def test_a_limit_outside_the_gpus_range_is_refused_in_one_line(tmp_path):
    message = refused(tmp_path, FakeNvml([a100()]), caps=(250, 450))
    assert message.endswith(
        f"power_limit_w 450: outside the range of gpu:0 "
        f"(NVIDIA A100-SXM4-40GB, {A100}): expected 100 to 400 W"
    )
    message = refused(tmp_path, FakeNvml([a100()]), caps=(99.9,))
    assert "power_limit_w 99.9: outside the range" in message


def test_a_clock_above_the_gpus_highest_is_refused(tmp_path):
    message = refused(tmp_path, FakeNvml([a100()]), clocks=(1500,))
    assert "gpu_clocks_mhz 1500: above the highest graphics clock" in message
    assert "expected at most 1410 MHz" in message


def test_a_gpu_that_cannot_set_a_limit_is_refused(tmp_path):
    message = refused(tmp_path, FakeNvml([gtx750ti()]))
    assert "cannot read the power limit range of gpu:0" in message and "Not Supported" in message


def test_a_mig_slice_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1111")
    message = refused(tmp_path, FakeNvml([a100(mig_uuids=("MIG-1111",))]))
    assert "shared through MIG" in message


def test_no_nvidia_gpu_is_refused_by_the_cli_in_one_line(tmp_path):
    file = capped_study(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "joulecast",
            "study",
            "run",
            str(file),
            "--store",
            str(tmp_path / "s.db"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("joulecast: error: power_limit_w and gpu_clocks_mhz need an NVIDIA GPU")


def test_a_limit_another_study_left_set_is_refused(tmp_path):
    from joulecast.store import Store

    fake = FakeNvml([a100()])
    with Store(tmp_path / "s.db") as store:
        other = GpuControl(store, "other", nvml=fake)
        other._remember(other.gpus()[0], "power_limit", 400_000, 200_000, "c003-r01")
        other.close()
    message = refused(tmp_path, fake)
    assert "set by study 'other' (run c003-r01) and not yet put back" in message


# -- the study file ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("power_limit_w = [250, -5]", "factors.power_limit_w[1]: -5: expected a positive number"),
        ("power_limit_w = ['high']", "factors.power_limit_w[0]: 'high': expected a positive"),
        ("power_limit_w = [1e9]", "expected a positive number of W, at most 10000"),
        ("gpu_clocks_mhz = [1.5]", "factors.gpu_clocks_mhz[0]: 1.5: expected a whole number"),
        ("gpu_clocks_mhz = [true]", "gpu_clocks_mhz[0]: True: expected a whole number"),
    ],
)
def test_bad_values_are_refused_when_the_file_is_read(tmp_path, line, expected):
    file = tmp_path / "bad.toml"
    file.write_text("[study]\nworkload = 'command'\ncommand = ['true']\n[factors]\n" + line + "\n")
    with pytest.raises(InputError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_study(file)


def test_the_settings_are_tags_and_not_workload_parameters(tmp_path):
    file = tmp_path / "fixed.toml"
    file.write_text(
        "[study]\nname = 't'\n[fixed]\ndataset = 'shapes'\npower_limit_w = 200\n"
        "[factors]\narch = ['mobilenet_v2']\ngpu_clocks_mhz = [900, 1200]\n"
    )
    study = load_study(file)
    run = plan(study)[0]
    assert "power_limit_w" not in run.params and "gpu_clocks_mhz" not in run.params
    tags = run.tags(study)
    assert tags["power_limit_w"] == "200" and tags["gpu_clocks_mhz"] in ("900", "1200")
    assert GpuSettings.of(study, run) == GpuSettings(200.0, int(tags["gpu_clocks_mhz"]))


# -- set by the job on its node (slurm, submitit-local) ----------------------------------------------

HOST = socket.gethostname()


def job_gpus(tmp_path: Path, fake: FakeNvml, watts: float = 250) -> JobGpus:
    ledger = tmp_path / "s-capped" / LEDGER_FOLDER
    return JobGpus(GpuSettings(power_limit_w=watts), ledger, "capped", "c000-r00", "f.toml", fake)


def ledger_files(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (tmp_path / "s-capped" / LEDGER_FOLDER).glob("*")]


def a_setting(**changes: Any) -> dict[str, Any]:
    """A ledger entry (a power limit unless ``changes`` say otherwise)."""
    entry = dict(gpu_uuid="GPU-1", setting="power_limit", original=1, value=2, study="s")
    return {**entry, "run_key": "c002-r00", "set_at": 1.7e9, **changes}


def test_a_job_puts_the_limit_back_when_it_is_stopped_by_sigterm(tmp_path):
    fake = FakeNvml([a100()])
    seen: list[Any] = []

    def training() -> tuple[int, bool, str]:
        seen.append((fake.gpus[0].enforced_limit_mw, ledger_files(tmp_path)))
        os.kill(os.getpid(), signal.SIGTERM)  # scancel, SLURM's time limit
        raise AssertionError("SIGTERM did not stop the task")

    def before(signum: int, frame: Any) -> None:
        raise AssertionError("the job did not take SIGTERM over")

    previous = signal.signal(signal.SIGTERM, before)
    try:
        with pytest.raises(Stopped):
            run_capped(job_gpus(tmp_path, fake), False, training)
        assert signal.getsignal(signal.SIGTERM) is before  # taken over only during the task
    finally:
        signal.signal(signal.SIGTERM, previous)
    ((limit, (entry,)),) = seen
    assert limit == 250_000  # set during the run, its original in the ledger before that
    assert (entry["host"], entry["setting"], entry["original"]) == (HOST, "power_limit", 400_000)
    assert fake.gpus[0].enforced_limit_mw == 400_000
    assert ledger_files(tmp_path) == []


def test_a_job_refused_on_its_node_is_one_line_and_starts_nothing(tmp_path):
    fake = FakeNvml([a100()], admin=False)
    refused = run_capped(job_gpus(tmp_path, fake), False, lambda: pytest.fail("ran"))
    assert isinstance(refused, GpuRefused) and refused.host == HOST
    assert "Insufficient Permissions" in refused.message and "\n" not in refused.message
    refused = run_capped(job_gpus(tmp_path, FakeNvml([a100()]), 450), False, pytest.fail)
    assert isinstance(refused, GpuRefused)
    assert refused.message.startswith("f.toml: power_limit_w 450: outside the range of gpu:0")
    assert ledger_files(tmp_path) == []


def test_a_job_puts_back_only_what_was_left_on_the_gpus_it_sees(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    fake = FakeNvml([a100(), a100(uuid="GPU-a2", pci_bus_id="00000000:08:00.0")])
    fake.nvmlInit()
    ledger = FileLedger(tmp_path / "s-capped" / LEDGER_FOLDER)
    control = GpuControl(ledger, "capped", nvml=fake, visible="0,1")
    for gpu in control.gpus():  # left by killed jobs, on both GPUs
        control._remember(gpu, "power_limit", 300_000, 150_000, "c009-r00")
    assert run_capped(job_gpus(tmp_path, fake), False, lambda: (0, False, "")) == (0, False, "")
    # GPU 0 may be another job's now: its leftover waits for a job given it.
    assert [(e["gpu_uuid"], e["original"]) for e in ledger_files(tmp_path)] == [(A100, 300_000)]
    assert [c[1:] for c in fake.changes] == [("GPU-a2", v) for v in (300_000, 300_000, 250_000)] + [
        ("GPU-a2", 300_000)
    ]


def ledger_path(tmp_path: Path, setting: str = "power_limit") -> Path:
    return tmp_path / "s-capped" / LEDGER_FOLDER / f"{HOST}@{A100}@{setting}.json"


def planted(path: Path, kind: str) -> None:
    """A ledger file at ``path`` that cannot be read as a setting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":  # a node lost before the file's bytes reached the disk
        path.write_text("")
    elif kind == "corrupt":
        path.write_text('{"host": "x"')
    elif kind == "link":  # to a setting that reads well: still not followed
        target = path.parent.parent / "elsewhere.json"
        entry = dict(host=HOST, gpu_uuid=A100, setting="power_limit", original=1, value=2)
        target.write_text(json.dumps({**entry, "study": "capped", "run_key": "k", "set_at": 0}))
        path.symlink_to(target)
    elif kind == "dangling link":
        path.symlink_to(path.parent / "nowhere")
    elif kind == "fifo":  # read without waiting for a writer
        os.mkfifo(path)


@pytest.mark.parametrize("kind", ["empty", "corrupt", "link", "dangling link", "fifo"])
def test_a_power_limit_file_that_cannot_be_read_refuses_the_job(tmp_path, kind):
    path = ledger_path(tmp_path)
    planted(path, kind)
    fake = FakeNvml([a100()])
    for _ in range(2):  # and the next job too: the original stays unknown
        refused = run_capped(job_gpus(tmp_path, fake), False, lambda: pytest.fail("ran"))
        assert isinstance(refused, GpuRefused) and "\n" not in refused.message
        assert refused.message.startswith(f"{path}: a power limit left to put back that cannot")
        assert refused.message.endswith("set it back if need be, then delete the file")
        assert f"nvidia-smi -q -d POWER -i {A100}" in refused.message
    assert fake.gpus[0].enforced_limit_mw == 400_000
    assert [c for c in fake.changes if c[2] != 400_000] == []  # the check sets what it finds
    assert os.path.lexists(path)
    if kind == "link":
        assert json.loads(path.resolve().read_text())["original"] == 1  # not written through


def test_a_clocks_file_that_cannot_be_read_is_written_anew(tmp_path):
    # Clocks are put back by unlocking them: the lost file held nothing else.
    path = ledger_path(tmp_path, "locked_clocks")
    planted(path, "empty")
    fake = FakeNvml([a100()])
    job = dataclasses.replace(job_gpus(tmp_path, fake), settings=GpuSettings(gpu_clocks_mhz=1000))
    seen: list[Any] = []
    run_capped(job, False, lambda: seen.append(ledger_files(tmp_path)) or (0, False, ""))
    ((entry,),) = seen
    assert (entry["setting"], entry["value"]) == ("locked_clocks", 1000)
    assert fake.gpus[0].locked_clocks_mhz is None
    assert not os.path.lexists(path)


def test_a_setting_reaches_the_disk_before_its_gpu_is_changed(tmp_path, monkeypatch):
    synced: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    path = ledger_path(tmp_path)
    fake = FakeNvml([a100()])

    def training() -> tuple[int, bool, str]:
        # The file's bytes (under its temporary name), then the folder that names it.
        written, folder = synced
        assert Path(written).parent == path.parent and written.startswith(f"{path.parent}/.")
        assert folder == str(path.parent)
        return 0, False, ""

    assert run_capped(job_gpus(tmp_path, fake), False, training) == (0, False, "")
    assert len(synced) == 2


def test_a_ledger_folder_that_cannot_be_made_refuses_the_job_in_one_line(tmp_path):
    (tmp_path / "s-capped").write_text("")  # a file where the study folder should be
    fake = FakeNvml([a100()])
    refused = run_capped(job_gpus(tmp_path, fake), False, lambda: pytest.fail("ran"))
    assert isinstance(refused, GpuRefused) and "\n" not in refused.message
    assert refused.message.startswith(
        f"{tmp_path / 's-capped' / LEDGER_FOLDER}: the folder of GPU settings to put back cannot"
        " be created: "
    )
    assert fake.gpus[0].enforced_limit_mw == 400_000


class InlineExecutor:
    """submitit's executor running each job here, at once (the runner waits for it anyway)."""

    def __init__(self, folder: Path, cluster: str) -> None:
        pass

    def update_parameters(self, **params: Any) -> None:
        pass

    def submit(self, fn: Any, *args: Any) -> Any:
        class Job:
            job_id = "7"
            result = staticmethod(lambda: fn(*args))
            done = staticmethod(lambda: True)

            def cancel(self) -> None:
                pass

        return Job()


def test_a_node_that_refuses_stops_the_study_with_the_run_back_in_the_plan(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit, "AutoExecutor", InlineExecutor)
    file, store = capped_study(tmp_path, modes=("ok", "crash")), tmp_path / "s.db"
    fake = FakeNvml([a100()], admin=False)
    with pytest.raises(InputError) as err:
        Runner(load_study(file), store, executor="slurm", nvml=fake, echo=print).run()
    message = str(err.value)
    assert (
        message.startswith("run c00") and f"refused on {HOST}, back in the plan; study" in message
    )
    assert "needs root" in message and "\n" not in message
    assert fake.changes == []
    with joulecast.open_store(store) as s:
        assert s.runs().empty
        state = StudyState.find(s, "capped")
        assert state is not None and state.counts()["planned"] == 2


def test_settings_jobs_left_set_are_told_as_the_study_starts_and_by_its_status(
    tmp_path, monkeypatch
):
    from joulecast.study.commands import status_data

    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit, "AutoExecutor", InlineExecutor)
    ledger = FileLedger(tmp_path / "s-capped" / LEDGER_FOLDER)
    power = a_setting(gpu_uuid=A100, original=400_000, value=250_500, study="capped")
    clocks = {**power, "setting": "locked_clocks", "original": None, "value": 1000}
    ledger.add("gpu-node-7", power)  # jobs killed outright on two nodes
    ledger.add("gpu-node-7", clocks)
    ledger.add("gpu-node-9", {**power, "set_at": 1e300})  # hand-written, say
    (ledger.folder / f"gpu-node-8@{A100}@power_limit.json").write_text("")
    file, store = capped_study(tmp_path), tmp_path / "s.db"
    lines: list[str] = []
    study = load_study(file)
    Runner(study, store, executor="slurm", echo=lines.append, only={"mode": "none"}).run()
    since = datetime.datetime.fromtimestamp(1.7e9).astimezone().isoformat(" ", "seconds")
    files = sorted(str(p) for p in ledger.folder.iterdir())
    assert lines == [
        "GPU settings left set by jobs of the study killed outright (SIGKILL, a lost node); the "
        "study's next job on that host and GPU puts each back, or put it back by hand as root on "
        "that host with the command given, then delete its file:",
        f"  gpu-node-7 {A100}: clocks locked at 1000 MHz since {since} (run c002-r00): "
        f"nvidia-smi -i {A100} -rgc; {files[0]}",
        f"  gpu-node-7 {A100}: power limit 250.5 W since {since} (run c002-r00), was 400 W: "
        f"nvidia-smi -i {A100} -pl 400; {files[1]}",
        f"  gpu-node-9 {A100}: power limit 250.5 W at an unknown time (run c002-r00), was 400 W:"
        f" nvidia-smi -i {A100} -pl 400; {files[3]}",
        f"  gpu-node-8 {A100}: power_limit, in a file that cannot be read (empty): what to put "
        f"back is unknown; {files[2]}",
    ]
    left = status_data(store, study)["gpu_settings_left"]
    assert [(e["host"], e["setting"], e["value"], e["error"]) for e in left] == [
        ("gpu-node-7", "locked_clocks", 1000, None),
        ("gpu-node-7", "power_limit", 250_500, None),
        ("gpu-node-9", "power_limit", 250_500, None),
        ("gpu-node-8", "power_limit", None, "empty"),
    ]
    assert [e["file"] for e in left] == [*files[:2], files[3], files[2]]


def test_the_local_runner_puts_back_what_a_job_left_on_its_host(tmp_path):
    gpu_state = tmp_path / "gpus.json"
    left = FakeNvml([a100()], state_path=gpu_state)
    left.nvmlInit()
    control = GpuControl(FileLedger(tmp_path / "s-capped" / LEDGER_FOLDER), "capped", nvml=left)
    control._remember(control.gpus()[0], "power_limit", 300_000, 150_000, "c000-r00")
    left.nvmlDeviceSetPowerManagementLimit(control.gpus()[0].handle, 150_000)  # then killed
    fake = FakeNvml([a100()], state_path=gpu_state)
    lines: list[str] = []
    assert run_study(capped_study(tmp_path), tmp_path / "s.db", fake, lines)["completed"] == 1
    assert fake.changes[0] == (SET, A100, 300_000)
    assert (
        f"left set by a job of the study, put back: gpu:0 (NVIDIA A100-SXM4-40GB, {A100}):"
        " power limit put back to 300 W" in lines
    )
    assert fake.gpus[0].enforced_limit_mw == 300_000
    assert ledger_files(tmp_path) == []


def test_a_ledger_file_not_understood_is_left_alone(tmp_path, caplog):
    ledger = FileLedger(tmp_path)
    (tmp_path / "x.json").write_text('{"host": "h", "setting": "power_limit", "original": null}')
    (tmp_path / "y.json").write_text("{")
    entry = a_setting(run_key="k", set_at=0.0)
    ledger.add("h/../..", entry)
    ledger.add("h/../..", {**entry, "original": 5})  # the first original stays
    assert [e["original"] for e in ledger.entries("h/../..", "s")] == [1]
    assert len(list(tmp_path.iterdir())) == 3  # in the folder, whatever the host's name
    assert sum("not a GPU setting to put back" in r.message for r in caplog.records) == 2
    ledger.remove("h/../..", "GPU-1", "power_limit")
    assert ledger.entries("h/../..", "s") == []


# The workload copies the fake GPU's state as it is during the run.
SEE = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"


@pytest.mark.slow
def test_submitit_jobs_set_the_limit_and_put_back_what_a_killed_job_left(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    # The job process unpickles the NVML fake: it imports tests.fakes.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    gpu_state, seen = tmp_path / "gpus.json", tmp_path / "seen.json"
    command = json.dumps([sys.executable, "-c", SEE, str(gpu_state), str(seen), "{mode}"])
    file, store = capped_study(tmp_path, command=command), tmp_path / "s.db"
    # A job killed outright left the GPU at 150 W with its clocks locked, and in the ledger
    # its original 300 W and the lock.
    left = FakeNvml([a100()], state_path=gpu_state)
    left.nvmlInit()
    control = GpuControl(FileLedger(tmp_path / "s-capped" / LEDGER_FOLDER), "capped", nvml=left)
    (gpu,) = control.gpus()
    control._remember(gpu, "power_limit", 300_000, 150_000, "c009-r00")
    control._remember(gpu, "locked_clocks", None, 1000, "c009-r00")
    left.nvmlDeviceSetPowerManagementLimit(gpu.handle, 150_000)
    left.nvmlDeviceSetGpuLockedClocks(gpu.handle, 1000, 1000)
    fake = FakeNvml([a100()], state_path=gpu_state)
    runner = Runner(load_study(file), store, executor="submitit-local", nvml=fake, echo=print)
    counts = runner.run()
    assert counts["completed"] == 1, counts
    # The job put the leftovers back before the run, which runs with its own setting only.
    during = json.loads(seen.read_text())[A100]
    assert (during["limit_mw"], during["locked_clocks_mhz"]) == (250_000, None)
    after = json.loads(gpu_state.read_text())[A100]
    assert (after["limit_mw"], after["locked_clocks_mhz"]) == (300_000, None)
    assert ledger_files(tmp_path) == []
    assert {t["power_limit_w"] for t in run_tags(store)} == {"250"}
