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


def test_forecast_cli_answers_from_the_second_epoch(imported):
    store, run_id = imported
    # The default stabilizing epoch is found in the run: after 2 epochs it forecasts from the
    # second, says how it chose it, and its interval holds the truth.
    two = json.loads(cli("forecast", run_id, "--store", store, "--after", 2, "--json").stdout)
    assert two["method"] == "epoch-energy" and two["epochs_used"] == 2
    assert two["stable_epoch"] == 1 and two["stable_epoch_by"] == "few-epochs"
    assert any("too few to see where energy settles" in n for n in two["notes"])
    assert two["low_j"] <= two["true_j"] <= two["high_j"]
    # After one epoch, the first-epoch extrapolation, labelled.
    one = cli("forecast", run_id, "--store", store, "--after", 1).stdout
    assert "first-epoch forecast after 1 of 20 epochs" in one
    assert "note: one epoch seen: the first-epoch extrapolation" in one
    # A fixed stabilizing epoch (the paper's 10) still waits for it.
    proc = cli(
        "forecast", run_id, "--store", store, "--after", 2, "--stable-epoch", 10, check=False
    )
    assert proc.returncode == 2 and "needs at least 11 epochs" in proc.stderr
    odd = cli("forecast", run_id, "--store", store, "--stable-epoch", "²", check=False)
    assert odd.returncode == 2 and "'²': expected an epoch number or 'auto'" in odd.stderr


def test_forecast_cli_power_with_the_true_duration(imported):
    store, run_id = imported
    args = ["forecast", run_id, "--store", store, "--after", 8, "--stable-epoch", 3]
    true = json.loads(cli(*args, "--method", "power", "--duration", "true", "--json").stdout)
    # The run's 20 epochs of 9.5 s: Eq. 1 with t = 190 s.
    assert true["duration_s"] == pytest.approx(190.0)
    assert true["total_j"] == pytest.approx(190.0 * true["total_j"] / true["duration_s"])
    late = cli(*args, "--total-epochs", 30, "--duration", "true", check=False)
    assert late.returncode == 2 and "only for a completed run" in late.stderr
    other = json.loads(cli(*args, "--duration", "true", "--json").stdout)
    assert "the true duration is used by the power method only, not epoch-energy" in other["notes"]
    none = cli(*args, "--total-epochs", 0, check=False)
    assert none.returncode == 2 and "--total-epochs: '0': expected a whole number from 1" in none.stderr


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
    # Eq. 1 in the paper's form (the true duration) changes the power method only.
    true = json.loads(sweep(store, 2, 4, "--duration", "true", "--json").stdout)
    assert {r["duration"] for r in true} == {"true"}
    assert "true training duration" in sweep(store, 2, 4, "--duration", "true").stdout


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
