from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from joulecast.cli import main
from joulecast.records import RunStatus
from joulecast.store import Store

JOULECAST = [sys.executable, "-m", "joulecast"]


def cli(*args, check=True, **kwargs):
    proc = subprocess.run(
        [*JOULECAST, *map(str, args)], capture_output=True, text=True, timeout=120, **kwargs
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return path


def show(store: Path, run="last") -> dict:
    return json.loads(cli("show", run, "--store", store, "--json").stdout)


CHILD_WITH_EPOCHS = """
    import sys, time
    import joulecast
    with joulecast.measure() as run:
        assert run.joined, "expected to join the CLI's run"
        for i in range(3):
            with run.epoch(i, samples=100) as ep:
                time.sleep(0.2)
                ep.metrics["loss"] = 1.0 / (i + 1)
    print("child done", run.run_id)
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def test_measure_child_marks_epochs_into_same_run(tmp_path):
    store = tmp_path / "s.db"
    child = script(tmp_path, CHILD_WITH_EPOCHS)
    proc = cli(
        "measure",
        "--store",
        store,
        "--interval",
        "0.02",
        "--name",
        "t",
        "--tag",
        "arch=mlp",
        "--",
        sys.executable,
        child,
    )
    assert "child done 1" in proc.stdout
    assert "energy by device" in proc.stderr and "epochs" in proc.stderr
    data = show(store)
    assert data["run_id"] == 1 and data["status"] == "completed" and data["exit_code"] == 0
    assert [e["index"] for e in data["epochs"]] == [0, 1, 2]
    assert all(
        e["samples"] == 100 and 0.15 < e["end_s"] - e["start_s"] < 0.6 for e in data["epochs"]
    )
    assert data["epochs"][2]["metrics"] == {"loss": pytest.approx(1 / 3)}
    assert data["tags"] == {"arch": "mlp"}
    assert set(data["energy_j_by_device"]) >= {"ram", "cpu"}
    assert (
        data["devices"]["ram"]["measured"] is False
        and data["devices"]["cpu"]["source"] == "tdp-model"
    )
    assert data["energy_j"] == pytest.approx(sum(data["energy_j_by_device"].values()))
    assert data["energy_j"] == pytest.approx(data["energy_j_measured"] + data["energy_j_modelled"])
    assert any("modelled" in w for w in data["warnings"])
    assert len(Store(store).runs()) == 1


def test_show_json_documented_keys(tmp_path):
    store = tmp_path / "s.db"
    cli(
        "measure", "--store", store, "-q", "--", sys.executable, script(tmp_path, CHILD_WITH_EPOCHS)
    )
    data = show(store, "1")
    for key in ("run_id", "status", "duration_s", "energy_j", "energy_j_by_device", "epochs"):
        assert key in data
    for key in ("index", "start_s", "end_s", "energy_j", "mean_power_w", "samples"):
        assert key in data["epochs"][0]


def test_summary_prints_the_rate_stored_per_device_beside_the_rate_asked(tmp_path):
    from rich.console import Console

    from joulecast.cli import print_summary
    from joulecast.energy import summarize
    from tests.test_energy import rate_run

    store = Store(tmp_path / "s.db")
    out = Console(record=True, width=200)
    print_summary(summarize(store, rate_run(store)), out)
    store.close()
    assert (
        "sampling: asked 10.0 Hz, stored cpu -, gpu:0 10.0 Hz, ram 2.5 Hz; "
        "31 ticks at 10.0 Hz, 0 missed" in out.export_text()
    )


def test_summary_shows_unmeasured_epochs_as_such_never_as_0_j(tmp_path):
    from rich.console import Console

    from joulecast.cli import print_summary
    from joulecast.energy import summarize
    from tests.test_energy import _owner_gone, _sampler_died

    store = Store(tmp_path / "s.db")
    run = _sampler_died(store, [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5)])
    _owner_gone(store, run)
    out = Console(record=True, width=200)
    print_summary(summarize(store, run), out)
    store.close()
    text = out.export_text()
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("│ ")}
    assert "250.0" in rows["1"] and "2.5000" in rows["1"]  # measured: 250 J, 100 samples
    cells = [c.strip() for c in rows["2"].split("│")[1:-1]]
    assert cells == ["2", "5.00", "2.50", "unmeasured", "-", "100", "-"]
    assert "J per sample processed" not in text
    assert "warning: epoch 2 (1 of 3) ran outside the run's readings" in text


def test_measure_prints_a_live_forecast_per_epoch(tmp_path):
    store = tmp_path / "s.db"
    child = script(tmp_path, CHILD_WITH_EPOCHS)
    proc = cli(
        "measure",
        "--store",
        store,
        "--interval",
        "0.02",
        "-q",
        "--epochs",
        "10",
        "--stable-epoch",
        "1",
        "--window",
        "2",
        "--",
        sys.executable,
        child,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("joulecast: epoch")]
    assert [ln.split()[2] for ln in lines] == ["1/10", "2/10", "3/10"]
    assert "[first-epoch]" in lines[0] and "[epoch-energy]" in lines[2]
    assert all("forecast" in ln and "to go" in ln for ln in lines)


def test_measure_last_live_line_equals_the_stored_epochs(tmp_path):
    store = tmp_path / "s.db"
    child = script(tmp_path, CHILD_WITH_EPOCHS)
    proc = cli(
        "measure",
        "--store",
        store,
        "--interval",
        "0.02",
        "-q",
        "--epochs",
        "3",
        "--stable-epoch",
        "1",
        "--window",
        "2",
        "--",
        sys.executable,
        child,
    )
    last = [ln for ln in proc.stderr.splitlines() if ln.startswith("joulecast: epoch")][-1]
    found = re.search(r"\] ([\d,.]+) (J|kJ|MJ) spent, forecast ([\d,.]+) (J|kJ|MJ)", last)
    assert found, last
    spent, unit, total, total_unit = found.groups()
    scale = {"J": 1.0, "kJ": 1e3, "MJ": 1e6}
    data = show(store)
    epochs_j = sum(e["energy_j"] for e in data["epochs"])
    # The line prints one decimal: equal to that rounding.
    assert float(spent.replace(",", "")) * scale[unit] == pytest.approx(
        epochs_j, abs=0.05 * scale[unit]
    )
    assert float(total.replace(",", "")) * scale[total_unit] == pytest.approx(
        epochs_j, abs=0.05 * scale[total_unit]
    )
    stored = data["epochs"][-1]["metrics"]["forecast"]
    assert stored["energy_so_far_j"] == pytest.approx(epochs_j, rel=1e-9)
    assert stored["total_j"] == pytest.approx(epochs_j, rel=1e-9)


def test_measure_rejects_bad_epochs(tmp_path):
    proc = cli("measure", "--store", tmp_path / "s.db", "--epochs", "0", "--", "true", check=False)
    assert proc.returncode == 2 and "--epochs" in proc.stderr
    assert not (tmp_path / "s.db").exists()


def test_measure_returns_child_exit_code(tmp_path):
    store = tmp_path / "s.db"
    proc = cli(
        "measure",
        "--store",
        store,
        "-q",
        "--",
        sys.executable,
        script(tmp_path, CHILD_WITH_EPOCHS),
        "3",
        check=False,
    )
    assert proc.returncode == 3
    data = show(store)
    assert data["status"] == "failed" and data["exit_code"] == 3 and len(data["epochs"]) == 3


def test_child_killed_by_sigkill(tmp_path):
    store = tmp_path / "s.db"
    child = script(
        tmp_path,
        """
        import os, signal, time
        time.sleep(1.5)
        os.kill(os.getpid(), signal.SIGKILL)
    """,
    )
    proc = cli(
        "measure", "--store", store, "--interval", "0.05", "--", sys.executable, child, check=False
    )
    assert proc.returncode == 128 + 9
    data = show(store)
    assert data["status"] == "failed" and data["signal"] == "SIGKILL"
    samples = Store(store).samples(1)
    assert samples["t_s"].max() > 1.2  # kept up to the end (host readings every tick)


def test_measure_process_killed_leaves_interrupted_run(tmp_path):
    store = tmp_path / "s.db"
    child = script(tmp_path, "import time\ntime.sleep(30)\n")
    proc = subprocess.Popen(
        [
            *JOULECAST,
            "measure",
            "--store",
            str(store),
            "--interval",
            "0.05",
            "--",
            sys.executable,
            str(child),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # A loaded machine may take seconds to start the sampler: wait for its first flush.
    deadline = time.monotonic() + 120.0
    while not _stored_samples(store) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    killed_at = time.monotonic()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    started = Store(store).run(1)["start_mono_s"]
    data = show(store)  # opening the store notices the dead owner
    assert data["status"] == "interrupted"
    latest = Store(store).samples(1)["t_s"].max()
    # Samples reach the file within a flush interval (1 s) of being read; 5 s allows for a
    # loaded machine's scheduling.
    assert latest >= (killed_at - started) - 5.0


def _stored_samples(store: Path) -> int:
    """Samples in the store file so far (0 before it exists), read without locking it."""
    if not store.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return 0
    try:
        return int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


# Marks 0.1 s epochs; on SIGTERM (its parent-death signal) it trains on for 1 s, then leaves.
CHILD_OUTLIVING_ITS_SAMPLER = """
    import os, signal, sys, time
    import joulecast
    term = []
    signal.signal(signal.SIGTERM, lambda *_: term.append(time.monotonic()))
    print(os.getpid(), flush=True)
    with joulecast.measure() as run:
        for i in range(600):  # a minute at most, whatever happens
            with run.epoch(i, samples=10):
                time.sleep(0.1)
            if term and time.monotonic() - term[0] > 1.0:
                break
"""


def test_sigkill_of_measure_ends_its_command_and_no_epoch_after_it_shows_0_j(tmp_path):
    store = tmp_path / "s.db"
    trace = tmp_path / "trace.csv"  # a replayed GPU at 100 W: no hardware needed
    trace.write_text("t_s,gpu_index,power_w\n0,0,100\n1,0,100\n")
    child = script(tmp_path, CHILD_OUTLIVING_ITS_SAMPLER)
    measure = [*JOULECAST, "measure", "--store", str(store), "--interval", "0.05", "-q"]
    proc = subprocess.Popen(
        [*measure, "--", sys.executable, str(child)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, JOULECAST_REPLAY_GPUS=str(trace)),
    )
    command = None
    try:
        assert proc.stdout is not None
        command = int(proc.stdout.readline())
        start_s = _measured_past_epoch_0(store)
        proc.kill()  # joulecast measure alone: its command is not signalled by anyone else
        killed_s = time.monotonic() - start_s
        proc.wait(60)
        # Its parent-death signal ends it: it marks epochs for 1 s more, then leaves.
        deadline = time.monotonic() + 30
        while _alive(command):
            assert time.monotonic() < deadline, "the command outlived joulecast measure"
            time.sleep(0.05)
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if command is not None and _alive(command):
            os.kill(command, signal.SIGKILL)
        proc.kill()
        proc.wait(60)
    assert "the process sampling it (joulecast measure) is gone" in stderr
    data = show(store)  # opening the store notices the dead owner
    assert data["status"] == "interrupted"
    assert data["epochs"][0]["energy_j"] > 0 and not data["epochs"][0]["unmeasured"]
    assert not [e for e in data["epochs"] if e["energy_j"] == 0]  # never 0 J
    after = [e for e in data["epochs"] if e["start_s"] > killed_s]
    assert after, "no epoch was marked after the kill"
    for epoch in after:
        assert epoch["unmeasured"] and epoch["energy_j"] is None
        assert epoch["samples"] == 10 and epoch["j_per_sample"] is None
    assert data["j_per_sample"] is None and data["unmeasured_epochs"]
    assert any("ran outside the run's readings" in w for w in data["warnings"])


def _measured_past_epoch_0(store: Path) -> float:
    """Wait until ``store`` holds readings past the end of epoch 0 of its run; the run's start
    on the monotonic clock."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(store) as conn:
                row = conn.execute(
                    "SELECT r.start_mono_s, p.end_s, (SELECT MAX(t_s) FROM samples)"
                    " FROM runs r JOIN phases p ON p.run_id = r.id AND p.idx = 0"
                ).fetchone()
        except sqlite3.Error:
            row = None
        if row is not None and None not in row and row[2] > row[1] + 0.1:
            return float(row[0])
        time.sleep(0.05)
    raise AssertionError("epoch 0 was never measured")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigterm_is_forwarded(tmp_path):
    store = tmp_path / "s.db"
    marker = tmp_path / "got-term"
    child = script(
        tmp_path,
        f"""
        import signal, sys, time
        def on_term(signum, frame):
            open({str(marker)!r}, "w").write("yes")
            sys.exit(143)
        signal.signal(signal.SIGTERM, on_term)
        print("ready", flush=True)
        time.sleep(30)
    """,
    )
    proc = subprocess.Popen(
        [*JOULECAST, "measure", "--store", str(store), "-q", "--", sys.executable, str(child)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    assert marker.read_text() == "yes"
    assert show(store)["status"] == "failed" and show(store)["exit_code"] == 143


def test_sigint_kills_child_run_interrupted(tmp_path):
    store = tmp_path / "s.db"
    child = script(
        tmp_path,
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print("ready", flush=True)
        time.sleep(30)
    """,
    )
    proc = subprocess.Popen(
        [*JOULECAST, "measure", "--store", str(store), "-q", "--", sys.executable, str(child)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 128 + signal.SIGINT
    data = show(store)
    assert data["status"] == "interrupted" and data["signal"] == "SIGINT"


@pytest.mark.slow
def test_eight_measure_processes_one_store(tmp_path):
    store = tmp_path / "shared.db"
    child = script(
        tmp_path,
        """
        import time, joulecast
        with joulecast.measure() as run:
            for i in range(4):
                with run.epoch(i, samples=10):
                    time.sleep(0.5)
    """,
    )
    procs = [
        subprocess.Popen(
            [
                *JOULECAST,
                "measure",
                "--store",
                str(store),
                "--interval",
                "0.01",
                "--name",
                f"p{i}",
                "--",
                sys.executable,
                str(child),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8
    for _, err in outputs:
        assert "locked" not in err and "error" not in err.lower()
    s = Store(store)
    runs = s.runs()
    assert len(runs) == 8 and set(runs["status"]) == {"completed"}
    conn = sqlite3.connect(store)
    for run_id in runs["id"]:
        quality = s.run(int(run_id))["quality"]
        stored = conn.execute(
            "SELECT COUNT(*) FROM samples WHERE run_id = ?", (int(run_id),)
        ).fetchone()[0]
        assert stored == quality["readings"] > 0  # every sample kept
        assert len(s.phases(int(run_id))) == 4


def test_measure_without_command(tmp_path):
    proc = cli("measure", "--store", tmp_path / "s.db", check=False)
    assert proc.returncode == 2 and "no command given" in proc.stderr


def test_measure_missing_program_writes_no_run(tmp_path):
    store = tmp_path / "s.db"
    proc = cli("measure", "--store", store, "--", "definitely-not-a-program-xyz", check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "definitely-not-a-program-xyz" in proc.stderr
    assert Store(store).runs().empty


def test_bad_import_exit_2_one_line(tmp_path):
    store = tmp_path / "s.db"
    bad = tmp_path / "power.csv"
    bad.write_text("t_s,gpu_index,power_w\n0,0,100\n1,0,oops\n")
    proc = cli("import", "trace", "--power", bad, "--store", store, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"joulecast: error: {bad}: line 3: column 'power_w' of gpu:0: 'oops': "
        "expected a finite number from 0 to 5000"
    )
    assert Store(store).runs().empty


def test_import_show_export_runs(tmp_path):
    store = tmp_path / "s.db"
    power = tmp_path / "power.csv"
    power.write_text("t_s,gpu_index,power_w\n0,0,100\n10,0,300\n0,1,50\n10,1,50\n")
    phases = tmp_path / "phases.csv"
    phases.write_text("index,start_s,end_s,samples\n0,0,5,10\n1,5,10,10\n")
    out = json.loads(
        cli(
            "import", "trace", "--power", power, "--phases", phases, "--store", store, "--json"
        ).stdout
    )
    assert out == {"run_id": 1}
    data = show(store, "1")
    assert data["energy_j"] == pytest.approx(2000 + 500)
    assert data["energy_j_by_device"] == {"gpu:0": pytest.approx(2000), "gpu:1": pytest.approx(500)}
    assert [e["energy_j"] for e in data["epochs"]] == pytest.approx([750 + 250, 1250 + 250])
    assert data["j_per_sample"] == pytest.approx(2500 / 20)
    runs = json.loads(cli("runs", "--store", store, "--json").stdout)
    assert runs[0]["id"] == 1 and runs[0]["origin"] == "import" and runs[0]["epochs"] == 2
    assert "1" in cli("runs", "--store", store).stdout
    files = json.loads(cli("export", "1", "--store", store, "-o", tmp_path, "--json").stdout)[
        "files"
    ]
    assert [Path(f).name for f in files] == ["run-1-power.csv", "run-1-phases.csv"]
    assert "energy by device" in cli("show", "1", "--store", store).stdout


def test_import_nvidia_smi_cli(tmp_path):
    log = tmp_path / "smi.csv"
    log.write_text(
        "timestamp, index, power.draw [W]\n2024/03/01 10:00:00.000, 0, 100 W\n2024/03/01 10:00:02.000, 0, 100 W\n"
    )
    out = json.loads(
        cli("import", "nvidia-smi", log, "--store", tmp_path / "s.db", "--json").stdout
    )
    assert show(tmp_path / "s.db", str(out["run_id"]))["energy_j"] == pytest.approx(200.0)


def test_show_unknown_run(tmp_path):
    proc = cli("show", "42", "--store", tmp_path / "s.db", check=False)
    assert proc.returncode == 2 and "no run '42'" in proc.stderr


def test_doctor_explains_missing_sensors(tmp_path):
    out = cli("doctor").stdout
    assert "host" in out
    data = json.loads(cli("doctor", "--json").stdout)
    by_name = {d["sensor"]: d for d in data}
    assert by_name["host"]["found"] is True
    for name in ("nvml", "rapl"):
        if not by_name[name]["found"]:
            assert by_name[name]["reason"] and by_name[name]["fix"]


def test_bad_tag_and_interval(tmp_path, capsys):
    assert (
        main(["measure", "--store", str(tmp_path / "s.db"), "--tag", "novalue", "--", "true"]) == 2
    )
    assert "--tag 'novalue': expected KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["measure", "--interval", "0", "--", "true"])
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["forecast", "last", "--after", "-3"], "argument --after: '-3': expected a whole number"),
        (["forecast", "last", "--after", "\u00b2"], "'\u00b2': expected a whole number from 1"),
        (["forecast", "last", "--window", "--5"], "argument --window: expected one argument"),
        (["stability", "--m", "2"], "argument --m: '2': expected a whole number from 3"),
        (["flops", "vgg16", "--input-size", "100000"], "'100000': expected a whole number"),
        (["forecast-eval", "--seed", "9" * 30], "argument --seed: '999"),
        (["forecast-eval", "--stable-epoch", "9" * 5000], "argument --stable-epoch: '999"),
        (["demo", "--interval", "nan"], "'nan': expected a finite number from 0.001 to 3600"),
        (["measure", "--interval", "1e308", "--", "true"], "'1e308': expected a finite number"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_are_one_line(argv, named, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and named in err and err.rstrip().endswith("-h)")
    assert len(err) < 400


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    proc = cli("demo", "--epochs", "1", "--store", tmp_path / "d.db")
    assert "epoch 0:" in proc.stdout and "energy by device" in proc.stderr
    data = show(tmp_path / "d.db")
    assert (
        data["name"] == "demo"
        and len(data["epochs"]) == 1
        and data["epochs"][0]["samples"] == 32768
    )


# A 600 s trace: gpu:0's power rises linearly (its trapezoid integral over any readings is
# exact), gpu:1 has an energy counter at a steady 50 W. Its energy over the readings
# from trace second 0 to D: 100 D + 0.25 D^2 and 50 D.
DRY_RUN_TRACE = (
    "t_s,gpu_index,power_w,energy_j,util_pct,mem_used_mib,temp_c\n"
    "0,0,100,,10,1000,40\n600,0,400,,90,9000,80\n"
    "0,1,50,0,5,500,35\n600,1,50,30000,5,500,35\n"
)


def test_measure_replay_gpus_samples_the_traces_gpus(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # every GPU of the trace
    store = tmp_path / "s.db"
    trace = tmp_path / "trace.csv"
    trace.write_text(DRY_RUN_TRACE)
    child = "import os, time; print(os.environ['JOULECAST_REPLAY_GPUS']); time.sleep(1)"
    proc = cli(
        "measure",
        "--store",
        store,
        "--replay-gpus",
        "trace.csv",
        "--",
        sys.executable,
        "-c",
        child,
        cwd=tmp_path,
    )
    assert proc.stdout.strip() == str(trace)  # absolute: found from any folder
    assert (
        "replayed (replay, trapezoid)" in proc.stderr
        and "replayed from a recorded trace" in proc.stderr
    )
    data = show(store)
    replayed = {d: v for d, v in data["devices"].items() if v["source"] == "replay"}
    assert set(replayed) == {"gpu:0", "gpu:1"}
    assert {replayed[d]["method"] for d in replayed} == {"trapezoid", "counter"}
    assert any(
        w.startswith("gpu:0, gpu:1: replayed from a recorded trace") for w in data["warnings"]
    )
    assert data["energy_j_replayed"] == pytest.approx(
        data["energy_j_by_device"]["gpu:0"] + data["energy_j_by_device"]["gpu:1"]
    )
    # The three parts: the replayed GPUs are in neither this machine's measured energy nor
    # the modelled one.
    host = {d: v["energy_j"] for d, v in data["devices"].items() if v["source"] != "replay"}
    assert data["energy_j_measured"] + data["energy_j_modelled"] == pytest.approx(
        sum(host.values())
    )
    assert data["energy_j"] == pytest.approx(
        data["energy_j_measured"] + data["energy_j_replayed"] + data["energy_j_modelled"]
    )
    assert {"cpu", "ram"} <= set(data["devices"])  # the host stays this machine's
    samples = Store(store).samples(data["run_id"])
    for device, expected in (
        ("gpu:0", lambda span: 100 * span + 0.25 * span**2),
        ("gpu:1", lambda span: 50 * span),
    ):
        t = samples.loc[samples["device"] == device, "t_s"]
        span = t.max() - t.min()  # the trace plays from the run's first reading
        assert 0.9 < span < 60
        assert data["energy_j_by_device"][device] == pytest.approx(expected(span), rel=1e-6)
    gpu0 = samples[samples["device"] == "gpu:0"]
    assert gpu0["util_pct"].between(10, 90).all() and gpu0["temp_c"].between(40, 80).all()
    runs = json.loads(cli("runs", "--store", store, "--json").stdout)
    assert runs[0]["origin"] == "replay"
    facts = Store(store).run(data["run_id"])["hardware"]["sensors"]["replay"]
    assert facts["gpu:0"]["trace"] == str(trace)  # absolute, as the command got it


def test_measure_no_gpu_keeps_the_variable_from_the_command(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(DRY_RUN_TRACE)
    env = dict(os.environ, JOULECAST_REPLAY_GPUS=str(trace))
    child = "import os; print(os.environ.get('JOULECAST_REPLAY_GPUS'))"
    store = tmp_path / "s.db"
    proc = cli("measure", "--store", store, "--no-gpu", "--", sys.executable, "-c", child, env=env)
    assert proc.stdout.strip() == "None"
    assert "replay" not in show(store)["hardware"].get("sensors", {})


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash for a process substitution")
def test_measure_replays_a_process_substitution(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(DRY_RUN_TRACE)
    store = tmp_path / "s.db"
    child = "import os; print(os.environ.get('JOULECAST_REPLAY_GPUS'))"
    line = " ".join(
        shlex.quote(str(a)) for a in [*JOULECAST, "measure", "--store", store, "--replay-gpus"]
    )
    line += f" <(cat {shlex.quote(str(trace))}) -- "
    line += " ".join(shlex.quote(a) for a in [sys.executable, "-c", child])
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None"  # read once: a pipe is not passed on
    facts = show(store)["hardware"]["sensors"]["replay"]
    assert facts["gpu:0"]["trace"].startswith("/dev/fd/")  # its name, not the pipe's target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "file not found"),
        ("t_s,device,power_w\n0,cpu:0,30\n1,cpu:0,30\n", "no GPU power readings to replay"),
        ("t_s,gpu,power_w\n0,0,100\n", "line 1: missing column 'gpu_index' or 'device'"),
    ],
)
@pytest.mark.parametrize("how", ["option", "variable"])
def test_measure_bad_replay_trace_exit_2_one_line(
    tmp_path, monkeypatch, capsys, text, message, how
):
    trace = tmp_path / "trace.csv"
    if text is not None:
        trace.write_text(text)
    store = tmp_path / "s.db"
    args = ["measure", "--store", str(store), "--", sys.executable, "-c", "raise SystemExit(3)"]
    if how == "option":
        args[1:1] = ["--replay-gpus", str(trace)]
    else:
        monkeypatch.setenv("JOULECAST_REPLAY_GPUS", str(trace))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"joulecast: error: {trace}: ") and message in err and err.count("\n") == 1
    )
    assert not store.exists()


def test_measure_replay_gpus_and_no_gpu_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["measure", "--no-gpu", "--replay-gpus", str(tmp_path / "t.csv"), "--", "true"])
    assert info.value.code == 2


def test_doctor_reports_replayed_gpus(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # every GPU of the trace
    trace = tmp_path / "trace.csv"
    trace.write_text(DRY_RUN_TRACE)
    env = dict(os.environ, JOULECAST_REPLAY_GPUS=str(trace))
    out = cli("doctor", env=env).stdout
    assert "replay" in out and "not this machine's hardware" in out and str(trace) in out
    by_name = {d["sensor"]: d for d in json.loads(cli("doctor", "--json", env=env).stdout)}
    assert by_name["replay"]["found"] and by_name["replay"]["devices"] == ["gpu:0", "gpu:1"]
    assert by_name["replay"]["measured"] is False  # a recording, not this machine's hardware
    assert by_name["replay"]["details"]["gpu:0"] == {"replayed": True, "trace": str(trace)}
    assert not by_name["nvml"]["found"] and "replayed" in by_name["nvml"]["reason"]
    env["JOULECAST_REPLAY_GPUS"] = str(tmp_path / "missing.csv")
    by_name = {d["sensor"]: d for d in json.loads(cli("doctor", "--json", env=env).stdout)}
    assert not by_name["replay"]["found"] and "file not found" in by_name["replay"]["reason"]
    assert "nvml" in by_name and by_name["replay"]["fix"]


def test_a_reader_that_stops_early_gets_one_line_not_a_traceback(tmp_path):
    store = tmp_path / "many.db"
    with Store(store) as s:
        for i in range(3000):
            s.create_run(name=f"run {i}", tags={"note": "x" * 100}, status=RunStatus.COMPLETED)
    proc = subprocess.Popen(
        [*JOULECAST, "runs", "--json", "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.read(10)  # then the reader goes away, as `| head -c 10` does
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 2
    assert "Traceback" not in err and err.count("\n") == 1 and "output closed" in err


def test_the_slurm_executor_without_slurm_is_one_line(tmp_path, monkeypatch):
    import shutil

    from joulecast.errors import InputError
    from joulecast.study import runner

    if shutil.which("srun"):
        pytest.skip("srun is on PATH here")
    monkeypatch.setattr(runner.Runner, "__init__", lambda self: None)
    bare = runner.Runner()
    bare.executor, bare.folder = "slurm", tmp_path
    pytest.importorskip("submitit")
    with pytest.raises(InputError, match=r"no srun on PATH.*--executor local"):
        bare._executor()


@pytest.mark.parametrize(
    "name", ["[/]", "[link=file:///etc/passwd]x", "\x1b[31mred\x1b[0m", "a[bold]b"]
)
def test_a_name_prints_as_written_and_never_drives_the_terminal(tmp_path, name):
    store = str(tmp_path / "s.db")
    code = "import sys; sys.exit(3)"
    proc = subprocess.run(
        [
            *JOULECAST,
            "measure",
            "--store",
            store,
            "--no-gpu",
            "--name",
            name,
            "--",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr  # the child's exit code, whatever the name
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stderr
    listed = subprocess.run(
        [*JOULECAST, "runs", "--store", store],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert listed.returncode == 0 and "\x1b" not in listed.stdout
    assert name.replace("\x1b", "?") in listed.stdout
