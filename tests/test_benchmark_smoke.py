"""Smoke test of benchmarks/sampler_overhead.py: its quickest run prints every figure line.

It checks that the benchmark runs end to end against the current API, not its figures: a
``--smoke`` run is far too short to mean anything. About 15 s on two cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sampler_overhead.py"


@pytest.mark.slow
@pytest.mark.torch
def test_sampler_overhead_smoke(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out_json = tmp_path / "figures.json"
    # CodeCarbon is optional (the "bench" extra); offline, it touches no network.
    with_cc = importlib.util.find_spec("codecarbon") is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULECAST_")}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--json", str(out_json)]
    if not with_cc:
        cmd.append("--no-codecarbon")
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    sampler = [ln for ln in lines if ln.startswith("SAMPLER ")]
    slowdown = [ln for ln in lines if ln.startswith("SLOWDOWN ")]
    assert [ln.split()[1] for ln in sampler] == ["100", "10"]
    assert all("% core" in ln for ln in sampler)
    labels = " ".join(slowdown)
    for label in (
        "none (baseline)",
        "none (A/A control)",
        "joulecast 100 ms",
        "joulecast 10 ms",
        "joulecast 10 ms, other proc",
    ):
        assert label in labels
    if with_cc:
        assert "codecarbon offline 1 s" in labels
        assert any(ln.strip().startswith("side by side: codecarbon") for ln in lines)
    assert any("target: sampler CPU < 1% of a core at 100 Hz" in ln for ln in lines)
    assert any("target: joulecast 100 ms slowdown" in ln for ln in lines)
    figures = json.loads(out_json.read_text())
    assert {s["target_hz"] for s in figures["sampler"]} == {100.0, 10.0}
    assert figures["sampler"][0]["ticks"] > 0
    block = figures["training"][0]
    keys = {"none", "none_aa", "jc_100ms", "jc_10ms", "jc_proc_10ms"}
    keys |= {"codecarbon"} if with_cc else set()
    assert {c["key"] for c in block["conditions"]} == keys
    assert not list(tmp_path.glob("*.db")), "the benchmark must write its stores to a temp dir"


@pytest.mark.slow
def test_forecast_and_stability_benchmarks_smoke(tmp_path: Path) -> None:
    bench = SCRIPT.parent
    proc = subprocess.run(
        [sys.executable, str(bench / "forecast_accuracy.py"), "--runs", "20", "--traces", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in (
        "(a) 20 simulated epoch tables",
        "(b) 2 simulated power traces",
        "stabilizing epoch settled (auto)",
        "stabilizing epoch fixed 10",
        "(c) default forecast (auto) on the 20 epoch tables of (a)",
        "(c) default forecast (auto) on the 2 traces of (b), stored",
        "real traces of tests/data/traces",
        "after K = accept epochs",
    ):
        assert line in proc.stdout
    # (a), (b) three ways, (c) 4 + 4 + 5 settings of K: every method in each, with coverage.
    assert proc.stdout.count("epoch-energy") == 17 and proc.stdout.count("90% covers") == 17
    proc = subprocess.run(
        [sys.executable, str(bench / "stability_speed.py"), "--traces", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(a) 1,000,000 samples at 0.1 s" in proc.stdout and "20,000 points" in proc.stdout


@pytest.mark.slow
def test_scale_benchmark_smoke(tmp_path: Path) -> None:
    out_json = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULECAST_")}
    cmd = [sys.executable, str(SCRIPT.parent / "scale.py"), "--smoke", "--json", str(out_json)]
    cmd += ["--commands", "import,show,export,forecast,stability"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "20k: 20,000 rows = 5,000 ticks x 4" in proc.stdout
    assert "80k: 80,000 rows = 20,000 ticks x 4" in proc.stdout
    rows = {ln.split("|")[0].strip(): ln for ln in lines if "|" in ln}
    for label in ("floor count(*)", "import trace", "show --json", "export", "forecast"):
        cells = rows[label].split("|")
        assert len(cells) == 4 and "error" not in rows[label], rows[label]
    assert len(rows["stability"].split("|")) == 4 and "error" not in rows["stability"]
    checks = [ln for ln in lines if ln.startswith("CHECK ")]
    assert any(ln.startswith("CHECK show --json peak at 80k: ") for ln in checks)
    assert any(ln.startswith("CHECK show --json wall 80k/20k: ") for ln in checks)
    assert sum("peak growth 80k/20k" in ln for ln in checks) == 5
    assert all(ln.endswith((": PASS", ": FAIL")) for ln in checks)
    figures = json.loads(out_json.read_text())
    assert [s["rows"] for s in figures["sizes"]] == [20_000, 80_000]
    names = {"import", "floor", "show", "export", "forecast", "stability"}
    for size in figures["sizes"]:
        assert set(size["figures"]) == names
        for figure in size["figures"].values():
            assert figure["error"] is None and figure["peak_mb"] > 0 and figure["wall_s"] > 0
    assert list(tmp_path.iterdir()) == [out_json], "inputs and stores go to a temp dir"


@pytest.mark.slow
def test_forecast_speed_smoke(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULECAST_")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "forecast_speed.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    rows = [ln for ln in lines if ln.endswith("x")]
    commands = ["show", "forecast --after 10", "show", "stability"]
    assert [ln[31:].rsplit(maxsplit=4)[0] for ln in rows] == commands
    assert rows[0].startswith("(a) 20 epochs, ") and rows[2].startswith("(b) 20,000 samples")
    assert all(ln.split()[-2:] == ["1.00x", "1.00x"] for ln in rows if " show " in ln)
    targets = [ln for ln in lines if ln.startswith("target ")]
    assert [t.split(":")[0] for t in targets] == [f"target {c}" for c in commands[1::2]]
    assert all(t.endswith((": PASS", ": FAIL")) for t in targets)
    assert not list(tmp_path.iterdir()), "runs, stores and caches go to a temp dir"


@pytest.mark.slow
def test_profile_sampler_smoke(tmp_path: Path) -> None:
    flags = ["--skip-ablation", "--seconds", "0.5", "--top", "3", "--gpus", "3"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "profile_sampler.py"), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("2. WARM MICRO-TIMINGS", "ReplaySensor.read() (3 GPUs", "3. cPROFILE at 100 Hz"):
        assert line in proc.stdout
    assert "-- sampler thread" in proc.stdout and "-- writer thread" in proc.stdout
