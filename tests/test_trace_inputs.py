"""Hostile trace, phase and nvidia-smi files, each through the ``joulecast import`` command:
exit 2, one line naming the file, line, column and value, and no run written; phases that
reach past their trace clipped with a warning."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from joulecast.cli import main
from joulecast.inputs import quote
from joulecast.store import Store

GOOD_POWER = "t_s,gpu_index,power_w\n0,0,100\n10,0,100\n"
DIGITS_30 = "9" * 30
DIGITS_5000 = "9" * 5000

# (header, cell, column): a power.csv of one data line, ``cell`` in ``column``.
BAD_POWER_CELLS = (
    [
        ("t_s,gpu_index,power_w", "0,{},100", "gpu_index", value)
        for value in ("\u00b2", "--5", DIGITS_30, DIGITS_5000, "-1", "1024", "1.0", "\u0663", "0x1")
    ]
    + [
        ("t_s,gpu_index,power_w", "0,0,{}", "power_w", value)
        for value in ("1e308", "1e400", "inf", "nan", "-5", "5001", "1_000", "0x10", "1e3000")
    ]
    + [
        ("t_s,device,power_w", "0,cpu:0,{}", "power_w", "2001"),
        ("t_s,device,power_w", "0,ram,{}", "power_w", "2001"),
        ("t_s,device,power_w", "0,node,{}", "power_w", "1e6"),
        ("t_s,gpu_index,power_w", "{},0,100", "t_s", "1e300"),
        ("t_s,gpu_index,power_w", "{},0,100", "t_s", "-1e11"),
        ("t_s,gpu_index,power_w", "{},0,100", "t_s", "nan"),
        ("t_s,gpu_index,power_w,util_pct", "0,0,100,{}", "util_pct", "101"),
        ("t_s,gpu_index,power_w,util_pct", "0,0,100,{}", "util_pct", "-1"),
        ("t_s,gpu_index,power_w,mem_used_mib", "0,0,100,{}", "mem_used_mib", "1e20"),
        ("t_s,gpu_index,power_w,temp_c", "0,0,100,{}", "temp_c", "1000"),
        ("t_s,gpu_index,power_w,energy_j", "0,0,100,{}", "energy_j", "-1"),
        ("t_s,gpu_index,power_w,energy_j", "0,0,100,{}", "energy_j", "1e19"),
    ]
)

BAD_PHASE_CELLS = [
    ("index,start_s,end_s", "{},0,1", "index", value)
    for value in ("\u00b2", "--5", DIGITS_30, DIGITS_5000, "1e3")
] + [
    ("index,start_s,end_s", "0,{},1", "start_s", "1e300"),
    ("index,start_s,end_s", "0,0,{}", "end_s", "nan"),
    ("index,start_s,end_s,samples", "0,0,1,{}", "samples", "-1"),
    ("index,start_s,end_s,samples", "0,0,1,{}", "samples", DIGITS_30),
]

SMI_HEADER = "timestamp, index, power.draw [W]"
SMI_FIRST = "2024/03/01 10:00:00.000, 0, 100 W"
BAD_SMI_CELLS = [
    (SMI_HEADER, "2024/03/01 10:00:00.000, {}, 100 W", "index", value)
    for value in ("\u00b2", DIGITS_30, DIGITS_5000, "-1")
] + [
    (SMI_HEADER, "2024/03/01 10:00:00.000, 0, {} W", "power.draw", "1e308"),
    (SMI_HEADER, "2024/03/01 10:00:00.000, 0, {} W", "power.draw", "nan"),
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store holding one good run."""
    path = tmp_path / "s.db"
    good = tmp_path / "good.csv"
    good.write_text(GOOD_POWER)
    assert main(["import", "trace", "--power", str(good), "--store", str(path)]) == 0
    return path


def refused(capsys: pytest.CaptureFixture[str], db: Path, argv: list[str]) -> str:
    """The one line ``joulecast`` prints refusing ``argv`` (exit 2, no run written)."""
    capsys.readouterr()
    assert main([*argv, "--store", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("joulecast: error: ")
    assert "Traceback" not in err
    with Store(db) as store:
        assert len(store.runs()) == 1
    return err


def test_bad_power_cells(capsys, tmp_path, db):
    for header, line, column, value in BAD_POWER_CELLS:
        path = tmp_path / "power.csv"
        path.write_text(f"{header}\n{line.format(value)}\n")
        err = refused(capsys, db, ["import", "trace", "--power", str(path)])
        assert f"{path}: line 2: column {column!r}" in err, (value, err)
        assert quote(value) in err, (value, err)


def test_bad_phase_cells(capsys, tmp_path, db):
    power = tmp_path / "power.csv"
    power.write_text(GOOD_POWER)
    for header, line, column, value in BAD_PHASE_CELLS:
        path = tmp_path / "phases.csv"
        path.write_text(f"{header}\n{line.format(value)}\n")
        err = refused(capsys, db, ["import", "trace", "--power", str(power), "--phases", str(path)])
        assert f"{path}: line 2: column {column!r}: {quote(value)}: expected" in err, err


def test_bad_nvidia_smi_cells(capsys, tmp_path, db):
    for header, line, column, value in BAD_SMI_CELLS:
        path = tmp_path / "smi.csv"
        path.write_text(f"{header}\n{SMI_FIRST}\n{line.format(value)}\n")
        err = refused(capsys, db, ["import", "nvidia-smi", str(path)])
        assert f"{path}: line 3: column {column!r}" in err, (value, err)
        assert quote(value) in err, (value, err)


def test_a_log_spanning_more_than_the_time_bound(capsys, tmp_path, db):
    path = tmp_path / "smi.csv"
    path.write_text(f"{SMI_HEADER}\n{SMI_FIRST}\n9999/03/01 10:00:00.000, 0, 100 W\n")
    err = refused(capsys, db, ["import", "nvidia-smi", str(path)])
    assert f"{path}: line 3: column 'timestamp': '9999/03/01 10:00:00.000' is " in err


def test_values_at_the_bounds_import(tmp_path, db):
    path = tmp_path / "power.csv"
    path.write_text(
        "t_s,device,power_w,util_pct,energy_j,temp_c\n"
        "-1e10,gpu:0,0,0,0,-100\n1e10,gpu:0,5000,100,1e18,250\n"
        "0,cpu:0,2000,409600,,\n1,cpu:0,0,,,\n"
    )
    assert main(["import", "trace", "--power", str(path), "--store", str(db)]) == 0


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_a_log_from_year_1(capsys, monkeypatch, tmp_path, db, tz):
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        path = tmp_path / "smi.csv"
        path.write_text(f"{SMI_HEADER}\n0001/01/01 00:00:00.000, 0, 100 W\n")
        err = refused(capsys, db, ["import", "nvidia-smi", str(path)])
        assert f"{path}: line 2: '0001/01/01 00:00:00.000' is before 1970" in err
        log = tmp_path / "log.csv"
        log.write_text(f"{SMI_HEADER}\n{SMI_FIRST}\n2024/03/01 10:00:01.000, 0, 100 W\n")
        phases = tmp_path / "phases.csv"
        phases.write_text("index,start_time,end_time\n0,0001/01/01 00:00:00,2024/03/01 10:00:01\n")
        err = refused(capsys, db, ["import", "nvidia-smi", str(log), "--phases", str(phases)])
        assert f"{phases}: line 2: '0001/01/01 00:00:00' is before 1970" in err
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("kind", ["trace", "phases", "nvidia-smi"])
def test_a_line_past_the_cap_is_refused_before_it_is_read_whole(
    capsys, monkeypatch, tmp_path, db, kind
):
    monkeypatch.setattr("joulecast.inputs.MAX_LINE_CHARS", 1000)
    path = tmp_path / "long.csv"
    with path.open("w") as fh:
        header = {"trace": "t_s,gpu_index,power_w", "phases": "index,start_s,end_s"}
        fh.write(header.get(kind, SMI_HEADER) + "\n")
        fh.write("0," + "1" * 3_000_000 + "\n")
    good = tmp_path / "power.csv"
    good.write_text(GOOD_POWER)
    argv = {
        "trace": ["import", "trace", "--power", str(path)],
        "phases": ["import", "trace", "--power", str(good), "--phases", str(path)],
        "nvidia-smi": ["import", "nvidia-smi", str(path)],
    }[kind]
    err = refused(capsys, db, argv)
    assert f"{path}: line 2: longer than the limit of 1000 characters" in err


def test_dev_zero_is_refused_at_the_cap(tmp_path, db):
    proc = subprocess.run(
        [sys.executable, "-m", "joulecast", "import", "trace", "--power", "/dev/zero"],
        env={**os.environ, "JOULECAST_STORE": str(db)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "joulecast: error: /dev/zero: line 1: longer than the limit of 1048576 characters "
        "(1 MiB of ASCII)\n"
    )
    with Store(db) as store:
        assert len(store.runs()) == 1


def test_a_fifo_of_one_endless_line_is_refused_at_the_cap(capsys, monkeypatch, tmp_path, db):
    monkeypatch.setattr("joulecast.inputs.MAX_LINE_CHARS", 1000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def endless() -> None:
        try:
            with fifo.open("w") as fh:
                while True:
                    fh.write("1" * 4096)
        except BrokenPipeError:
            pass  # the reader stopped: what is expected

    writer = threading.Thread(target=endless, daemon=True)
    writer.start()
    err = refused(capsys, db, ["import", "trace", "--power", str(fifo)])
    assert f"{fifo}: line 1: longer than the limit of 1000 characters" in err
    writer.join(timeout=10)
    assert not writer.is_alive()


# -- phases against the trace and each other -------------------------------------------------

TRACE_0_100 = "t_s,gpu_index,power_w\n" + "".join(f"{t},0,{100 + t % 2}\n" for t in range(101))


def import_with_phases(tmp_path: Path, db: Path, phases: str) -> tuple[int, Path]:
    power, path = tmp_path / "power.csv", tmp_path / "phases.csv"
    power.write_text(TRACE_0_100)
    path.write_text(phases)
    argv = ["import", "trace", "--power", str(power), "--phases", str(path), "--store", str(db)]
    return main(argv), path


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        (
            "index,start_s,end_s\n0,0,50\n1,50,100\n2,100,200\n",
            "epoch 2 (100 s to 200 s) lies outside the readings (0 s to 100 s): "
            "expected a phase that overlaps them",
        ),
        (
            "index,start_s,end_s\n0,-50,-1\n",
            "epoch 0 (-50 s to -1 s) lies outside the readings (0 s to 100 s)",
        ),
        (
            "index,start_s,end_s\n0,0,60\n1,50,100\n",
            "line 3: epoch 1 (50 s to 100 s) overlaps epoch 0 (0 s to 60 s) on line 2: "
            "expected phases of one kind one after another (steps may nest in epochs)",
        ),
        (
            "index,start_s,end_s,kind\n0,0,100,epoch\n0,0,10,step\n1,5,20,step\n",
            "line 4: step 1 (5 s to 20 s) overlaps step 0 (0 s to 10 s) on line 3",
        ),
    ],
)
def test_phases_outside_the_trace_or_overlapping_are_refused(capsys, tmp_path, db, phases, message):
    capsys.readouterr()
    code, path = import_with_phases(tmp_path, db, phases)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and err.startswith(f"joulecast: error: {path}: ")
    with Store(db) as store:
        assert len(store.runs()) == 1


def test_phases_reaching_past_the_trace_are_clipped_with_a_warning(capsys, tmp_path, db):
    capsys.readouterr()
    code, path = import_with_phases(tmp_path, db, "index,start_s,end_s\n0,-20,50\n1,50,200\n")
    out, err = capsys.readouterr()
    assert code == 0
    assert err == (
        f"joulecast: WARNING: {path}: epoch 0 (-20 s to 50 s), epoch 1 (50 s to 200 s) reach "
        "past the readings (0 s to 100 s): clipped to them\n"
    )
    with Store(db) as store:
        run_id = int(out)
        assert store.run(run_id)["duration_s"] == 100.0  # not stretched to 200 s
        from joulecast.energy import summarize

        summary = summarize(store, run_id)
    epochs = summary.epochs
    assert epochs["start_s"].tolist() == [0.0, 50.0] and epochs["end_s"].tolist() == [50.0, 100.0]
    # The mean power of an epoch is the device's, not diluted by time without readings.
    assert epochs["mean_power_w"].tolist() == pytest.approx([100.5, 100.5], abs=0.02)
    assert epochs["energy_j"].sum() == pytest.approx(summary.energy_j)


def test_steps_nest_in_epochs(capsys, tmp_path, db):
    capsys.readouterr()
    code, _ = import_with_phases(
        tmp_path,
        db,
        "index,start_s,end_s,kind\n0,0,50,epoch\n1,50,100,epoch\n"
        "0,0,10,step\n1,10,60,step\n0,100,100,test\n",
    )
    assert code == 0 and capsys.readouterr().err == ""
