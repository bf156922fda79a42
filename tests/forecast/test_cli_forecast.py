from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

JOULECAST = [sys.executable, "-m", "joulecast"]


def cli(*args, check=True):
    proc = subprocess.run(
        [*JOULECAST, *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


@pytest.fixture
def imported(tmp_path):
    """A 20-epoch run of 10 s epochs: 3 warm-up epochs ramping up, then ~200 W with a dip at
    each epoch's end (its validation pass)."""
    rng = np.random.default_rng(3)
    t = np.arange(0, 200.0, 0.5)
    p = np.where(t < 30, 120.0 + 80 * t / 30, 200.0) + rng.normal(0, 2, len(t))
    p = np.where((t >= 30) & ((t % 10) >= 8.5), p - 70, p)
    power = tmp_path / "power.csv"
    power.write_text(
        "t_s,gpu_index,power_w\n" + "".join(f"{a},0,{b:.3f}\n" for a, b in zip(t, p, strict=True))
    )
    phases = tmp_path / "phases.csv"
    phases.write_text(
        "index,start_s,end_s,samples\n"
        + "".join(f"{i},{i * 10},{i * 10 + 9.5},100\n" for i in range(20))
    )
    store = tmp_path / "s.db"
    run_id = json.loads(
        cli(
            "import", "trace", "--power", power, "--phases", phases, "--store", store, "--json"
        ).stdout
    )["run_id"]
    return store, run_id


def test_forecast_cli_on_imported_trace(imported):
    store, run_id = imported
    out = json.loads(
        cli(
            "forecast",
            run_id,
            "--store",
            store,
            "--after",
            8,
            "--stable-epoch",
            3,
            "--window",
            5,
            "--json",
        ).stdout
    )
    for key in ("method", "epochs_used", "total_j", "low_j", "high_j", "true_j"):
        assert key in out
    assert out["method"] == "epoch-energy" and out["epochs_used"] == 8 and out["total_epochs"] == 20
    assert abs(out["error_pct"]) < 2.0
    assert out["low_j"] <= out["true_j"] <= out["high_j"]
    # The same through the API.
    import joulecast

    with joulecast.open_store(store) as s:
        epochs = joulecast.summarize(s, run_id).epochs
    f = joulecast.forecast_energy(epochs.iloc[:8], 20, stable_epoch=3, window=5)
    assert f.total_j == pytest.approx(out["total_j"])
    first = json.loads(
        cli(
            "forecast", run_id, "--store", store, "--after", 1, "--method", "first-epoch", "--json"
        ).stdout
    )
    assert first["error_pct"] < -20  # the warm-up epoch misleads the baseline
    text = cli("forecast", run_id, "--store", store, "--after", 8, "--stable-epoch", 3).stdout
    assert "kJ" in text and "error" in text


def test_forecast_cli_too_few_epochs(imported):
    store, run_id = imported
    proc = cli("forecast", run_id, "--store", store, "--after", 2, check=False)
    assert proc.returncode == 2 and "needs at least 11 epochs" in proc.stderr


def test_forecast_eval_cli(imported):
    store, _ = imported
    rows = json.loads(
        cli(
            "forecast-eval",
            "--all",
            "--store",
            store,
            "--max-window",
            5,
            "--max-stable",
            5,
            "--json",
        ).stdout
    )
    best = min((r for r in rows if r["method"] == "epoch-energy"), key=lambda r: r["rmse_j"])
    assert best["stable_epoch"] >= 3 and best["runs"] == 1
    assert (
        "RMSE kJ"
        in cli(
            "forecast-eval", "--all", "--store", store, "--max-window", 3, "--max-stable", 3
        ).stdout
    )


@pytest.mark.slow
def test_stability_cli(imported, tmp_path):
    pytest.importorskip("matplotlib")
    store, run_id = imported
    png = tmp_path / "profile.png"
    out = json.loads(cli("stability", run_id, "--store", store, "--json", "--plot", png).stdout)
    # Without z-normalization the change is where the ramp nears the stable level.
    assert out["epoch"] in (1, 2, 3, 4) and 10 <= out["change_s"] <= 45
    assert png.stat().st_size > 1000


def sweep(store, window, stable, *extra):
    """forecast-eval over every run, swept up to ``window`` and ``stable``, chosen at both."""
    args = ["--max-window", window, "--max-stable", stable, "--window", window]
    return cli("forecast-eval", "--all", "--store", store, *args, "--stable-epoch", stable, *extra)


def test_forecast_eval_writes_sweep_and_figure(imported, tmp_path):
    pytest.importorskip("matplotlib")
    store, _ = imported
    csv, png = tmp_path / "sweep.csv", tmp_path / "fig10.png"
    out = sweep(store, 4, 4, "--csv", csv, "--plot", png).stdout
    assert "chosen" in out and "best" in out and "first-epoch" in out
    import pandas as pd

    table = pd.read_csv(csv)
    assert set(table["method"]) == {"power", "epoch-energy", "first-epoch"}
    assert table.query("method == 'epoch-energy'")["window"].max() == 4
    assert png.stat().st_size > 5000
    random = json.loads(sweep(store, 2, 4, "--random-start", "--json").stdout)
    assert all(r["runs"] == 1 for r in random)
    assert {r["method"] for r in random} == {"power", "epoch-energy", "first-epoch"}


def test_forecast_eval_bad_input(imported, tmp_path):
    store, _ = imported
    proc = cli("forecast-eval", "--store", store, check=False)
    assert proc.returncode == 2 and "give run ids or --all" in proc.stderr
    proc = cli(
        "forecast-eval", "--all", "--store", store, "--csv", tmp_path / "no" / "x.csv", check=False
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    out = cli("forecast-eval", "--all", "--store", store, "--stable-epoch", 30).stdout
    assert "no run has the 36 epochs" in out


@pytest.mark.slow
def test_stability_cli_over_runs(imported, tmp_path):
    pytest.importorskip("matplotlib")
    store, run_id = imported
    png = tmp_path / "fig9.png"
    out = json.loads(cli("stability", "--all", "--store", store, "--json", "--plot", png).stdout)
    assert [r["run_id"] for r in out["runs"]] == [run_id]
    share = out["share"]["all"]
    assert share[-1]["share"] == 1.0 and share[0]["share"] == 0.0
    assert png.stat().st_size > 5000
    text = cli("stability", run_id, run_id, "--store", store).stdout
    assert "share of runs stable by epoch n" in text
