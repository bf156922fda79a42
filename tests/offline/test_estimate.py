"""Offline estimates end to end: the API, the CLI, batch CSVs, run tables from the store."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import joulecast
from joulecast.errors import InputError
from joulecast.offline.estimate import estimate_training
from joulecast.offline.models import default_estimator
from joulecast.records import Reading

PAPER = Path(__file__).resolve().parents[2] / "src/joulecast/offline/data/paper_runs_train.csv"
PLAN = dict(
    gpu="RTX 3090",
    arch="resnet50",
    input_size=128,
    batch_size=64,
    train_samples=12000,
    val_samples=8580,
    ram_gb=16,
)


def cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "joulecast", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def test_baselines_and_offline_totals_by_hand():
    r = estimate_training(**PLAN, epochs=50, duration_s=7200, gpu_util_pct=80)
    by = {e.method: e for e in r.estimates}
    # MLCO2: 350 W x 2 h; Green Algorithms: 2 h x (350 W x 0.8 + 16 GB x 0.3725 W).
    assert by["mlco2"].energy_j == pytest.approx(350 * 7200)
    assert by["green-algorithms"].energy_j == pytest.approx(7200 * (350 * 0.8 + 16 * 0.3725))
    row = pd.DataFrame([{**r_config(), "epochs": 50}])
    predicted = default_estimator().predict(row).iloc[0]
    assert by["offline-epoch-energy"].energy_j == pytest.approx(50 * predicted["epoch_energy_j"])
    assert by["offline-power"].energy_j == pytest.approx(7200 * predicted["avg_power_w"])
    assert 100 < r.avg_power_w < 350 and not r.duration_estimated
    # ResNet50 ran on Chesslive only: its GFLOPs with Stanford Dogs' sizes is a new combination.
    assert r.warnings == [
        "gflops 2.518 and train/val samples 12000/8580 each occur in the training data,"
        " but never together"
    ]
    assert r.notes[0].startswith("GPU: GeForce RTX 3090 (10496 CUDA cores")
    assert "2.518 GFLOPs (counted at 128x128 px)" in r.notes[1]


def r_config():
    return dict(
        gpu_cuda_cores=10496,
        gpu_memory_gb=24,
        gpu_tdp_w=350,
        ram_gb=16,
        gflops=2.5182,
        train_samples=12000,
        val_samples=8580,
        batch_size=64,
        input_height=128,
        input_width=128,
    )


def test_without_duration_the_baselines_use_the_models_duration():
    r = estimate_training(**PLAN, epochs=50, intensity=300)
    by = {e.method: e for e in r.estimates}
    assert r.duration_estimated
    assert r.duration_s == pytest.approx(50 * r.epoch_energy_j / r.avg_power_w)
    assert by["offline-power"].energy_j is None and "--duration" in by["offline-power"].note
    assert by["mlco2"].energy_j == pytest.approx(350 * r.duration_s)
    assert "assumed 100%" in by["green-algorithms"].note
    epoch = by["offline-epoch-energy"]
    assert epoch.gco2e == pytest.approx(epoch.energy_j / 3.6e6 * 300)
    none = estimate_training(**PLAN)  # no epochs, no duration: nothing to total
    assert all(e.energy_j is None and e.note for e in none.estimates)


def test_the_co2e_of_an_estimate_applies_pue_once_and_says_its_source():
    from joulecast.carbon import region

    g = region("FRA").g_per_kwh
    r = estimate_training(**PLAN, epochs=50, duration_s=7200, region="fra", pue=1.2)
    by = {e.method: e for e in r.estimates}
    for method in ("offline-epoch-energy", "offline-power", "mlco2"):
        assert by[method].gco2e == pytest.approx(by[method].energy_j * 1.2 / 3.6e6 * g)
    # Green Algorithms' energy already holds the PUE: it is not applied twice.
    ga = by["green-algorithms"]
    assert ga.energy_j == pytest.approx(1.2 * 7200 * (350 + 16 * 0.3725))
    assert ga.gco2e == pytest.approx(ga.energy_j / 3.6e6 * g)
    (row, *_) = r.rows()
    assert row["intensity_g_per_kwh"] == g and row["pue"] == 1.2
    assert row["intensity_source"].startswith("region FRA (France) 2021")
    given = estimate_training(**PLAN, epochs=50, intensity=0)
    assert {e.gco2e for e in given.estimates if e.energy_j} == {0.0}
    assert given.rows()[0]["intensity_source"] == "given value (--intensity)"
    plain = estimate_training(**PLAN, epochs=50)
    assert all(e.gco2e is None for e in plain.estimates) and plain.rows()[0]["pue"] == 1.0


def test_a_planned_training_refuses_an_hourly_intensity():
    from joulecast.carbon import Intensity

    hourly = Intensity("hourly file ci.csv", series=((0.0, 3600.0, 100.0),))
    with pytest.raises(InputError, match=r"hourly file ci\.csv: an hourly intensity needs"):
        estimate_training(**PLAN, epochs=5, intensity=hourly)


def test_estimate_cli_co2e_from_the_environment_and_for_every_row(tmp_path, capsys, monkeypatch):
    from joulecast.carbon import region
    from joulecast.cli import main

    args = ["estimate", "--gpu", "RTX 3090", "--arch", "resnet50", "--input-size", "128"]
    args += ["--batch-size", "64", "--train-samples", "12000", "--val-samples", "8580"]
    args += ["--epochs", "10", "--ram-gb", "16"]
    monkeypatch.delenv("JOULECAST_INTENSITY", raising=False)
    monkeypatch.delenv("JOULECAST_REGION", raising=False)
    assert main(args) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "CO2e: none (no carbon intensity given: --intensity G_PER_KWH or --region" in text
    assert "gCO2e" not in text.split("CO2e: none")[0]
    monkeypatch.setenv("JOULECAST_REGION", "SWE")
    # A zone's hourly history has nothing to say of a planned training: passed over.
    monkeypatch.setenv("JOULECAST_ELECTRICITY_MAPS", "DE")
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    g = region("SWE").g_per_kwh
    monkeypatch.delenv("JOULECAST_REGION")
    assert main(args) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "$JOULECAST_ELECTRICITY_MAPS is hourly, passed over for a planned training" in text
    monkeypatch.setenv("JOULECAST_REGION", "SWE")
    assert {r["intensity_source"] for r in rows} == {region("SWE").source}
    assert rows[0]["gco2e"] == pytest.approx(rows[0]["energy_j"] / 3.6e6 * g)
    assert main([*args, "--pue", "1.5"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"CO2e at {g:,.1f} gCO2e/kWh (region SWE (Sweden) 2021" in text and "PUE 1.5" in text
    config = pd.read_csv(PAPER).drop(columns=["avg_power_w", "epoch_energy_j"]).iloc[[0]]
    config.assign(epochs=10).to_csv(tmp_path / "configs.csv", index=False)
    data = ["--data", str(tmp_path / "configs.csv")]
    assert main(["estimate", *data, "--intensity", "100", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["gco2e"] == pytest.approx(row["energy_j"] / 3.6e6 * 100)
    assert row["intensity_source"] == "given value (--intensity)" and row["pue"] == 1.0
    assert main(["estimate", *data, "--intensity", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.rstrip().endswith("gCO2e ┃") for line in lines)  # the last column
    assert any(line.rstrip().endswith(f" {row['gco2e']:,.1f} │") for line in lines)


def test_extrapolation_warns_and_names_the_feature():
    r = estimate_training(**{**PLAN, "arch": None}, gflops=60.0, epochs=10)
    assert any("gflops" in w for w in r.warnings)


def test_estimate_json_rows_carry_the_warnings_the_text_prints(capsys):
    from joulecast.cli import main

    args = ["estimate", "--gpu", "RTX 3090", "--gflops", "60", "--input-size", "128"]
    args += ["--batch-size", "64", "--train-samples", "12000", "--val-samples", "8580"]
    args += ["--epochs", "10", "--ram-gb", "16"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "warning: gflops 60 is outside the training range" in " ".join(text.split())
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4
    for row in rows:
        (warning,) = [w for w in row["warnings"] if w.startswith("gflops")]
        assert warning.startswith("gflops 60 is outside the training range 0.06403..10.03")


@pytest.fixture(scope="module")
def banded_file(tmp_path_factory):
    """A model file of the shipped model's specs and runs with calibrated intervals."""
    from joulecast.offline.models import OfflineEstimator

    data = shipped()
    data.pop("applicability", None)
    path = tmp_path_factory.mktemp("banded") / "banded.json"
    OfflineEstimator.from_dict(data).fit_intervals().save(path)
    return path


def shipped():
    from importlib import resources

    text = resources.files("joulecast.offline").joinpath("data/default_model.json").read_text()
    return json.loads(text)


# VGG16 on Chesslive, as trained on the RTX 3090, asked of the RTX 3070.
UNSEEN = ["--gpu", "RTX 3070", "--gflops", "10.02877", "--input-size", "128", "--batch-size", "32"]
UNSEEN += ["--train-samples", "23807", "--val-samples", "10203", "--ram-gb", "32"]
UNSEEN_WARNING = (
    "the GPU (5888 CUDA cores, 8 GB, 220 W) and gflops 10.03 each occur in the training data,"
    " but never together"
)


def test_offline_estimates_carry_their_interval(banded_file):
    from joulecast.offline.models import OfflineEstimator

    estimator = OfflineEstimator.load(banded_file)
    config = {**r_config(), "epochs": 50, "duration_s": 7200}
    r = joulecast_estimate(config, estimator)
    by = {e.method: e for e in r.estimates}
    domain = r.applicability
    assert domain is not None and domain.calibrated and domain.coverage == 0.9
    power_low, power_high = domain.intervals["avg_power_w"]
    epoch_low, epoch_high = domain.intervals["epoch_energy_j"]
    assert power_low < r.avg_power_w < power_high and epoch_low < r.epoch_energy_j < epoch_high
    assert (r.avg_power_low_w, r.avg_power_high_w) == (power_low, power_high)
    assert (r.epoch_energy_low_j, r.epoch_energy_high_j) == (epoch_low, epoch_high)
    assert by["offline-power"].low_j == pytest.approx(7200 * power_low)
    assert by["offline-power"].high_j == pytest.approx(7200 * power_high)
    assert by["offline-epoch-energy"].low_j == pytest.approx(50 * epoch_low)
    assert by["offline-epoch-energy"].high_j == pytest.approx(50 * epoch_high)
    assert by["mlco2"].low_j is None and by["green-algorithms"].high_j is None
    saved = r.to_dict()
    assert saved["epoch_energy_low_j"] == epoch_low and saved["applicability"]["calibrated"]
    assert saved["estimates"][0]["low_j"] == by["offline-epoch-energy"].low_j
    assert not any("calibrated" in n for n in r.notes)


def joulecast_estimate(config, estimator):
    from joulecast.offline.estimate import estimate

    return estimate(config, estimator)


def test_both_json_forms_carry_the_warnings_and_the_interval(banded_file, tmp_path, capsys):
    from joulecast.cli import main

    args = ["estimate", "--model", str(banded_file), *UNSEEN, "--epochs", "20"]
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(row["warnings"] == [UNSEEN_WARNING] for row in rows)
    epoch = rows[0]
    assert epoch["method"] == "offline-epoch-energy"
    assert epoch["low_j"] < epoch["energy_j"] < epoch["high_j"]
    assert main(args) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"warning: {UNSEEN_WARNING}: an extrapolation, trust it less" in text
    assert "90% interval" in text and "distance to the nearest training configuration" in text

    table = pd.read_csv(PAPER).drop(columns=["avg_power_w", "epoch_energy_j"]).iloc[[0]]
    vgg16_3070 = table.assign(
        gpu="RTX 3070", gpu_cuda_cores=5888, gpu_memory_gb=8, gpu_tdp_w=220, ram_gb=32
    )
    data = tmp_path / "configs.csv"
    pd.concat([table, vgg16_3070]).assign(epochs=10).to_csv(data, index=False)
    assert main(["estimate", "--model", str(banded_file), "--data", str(data), "--json"]) == 0
    seen, unseen = json.loads(capsys.readouterr().out)
    assert seen["distance"] == 0.0 and seen["unseen"] == [] and seen["warnings"] == []
    assert unseen["unseen"] == [["gpu", "gflops"]] and unseen["warnings"] == [UNSEEN_WARNING]
    for row in (seen, unseen):
        assert row["band_calibrated"] and row["energy_method"] == "offline-epoch-energy"
        assert row["low_j"] < row["energy_j"] < row["high_j"]
        assert row["low_j"] == pytest.approx(10 * row["epoch_energy_low_j"])
        assert row["avg_power_low_w"] < row["avg_power_w"] < row["avg_power_high_w"]
    assert main(["estimate", "--model", str(banded_file), "--data", str(data)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"row 2: warning: {UNSEEN_WARNING}" in text
    assert "row 1: total" in text and "kJ (interval), distance 0.00 to the nearest" in text


def test_an_older_model_file_says_its_band_is_uncalibrated(tmp_path, capsys):
    from joulecast.cli import main

    data = shipped()
    data.pop("applicability", None)  # as files written before intervals
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    args = ["estimate", "--model", str(old), *UNSEEN, "--epochs", "20"]
    assert main(args) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "no calibrated interval: the model file predates intervals" in text
    assert f"warning: {UNSEEN_WARNING}" in text  # the other measures need no calibration
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(row["low_j"] is None and row["high_j"] is None for row in rows)
    assert rows[0]["warnings"] == [UNSEEN_WARNING]


def test_unknown_gpu_lists_close_matches():
    with pytest.raises(InputError, match="closest matches: GeForce RTX 3090"):
        estimate_training(**{**PLAN, "gpu": "RTX 3095"}, epochs=5)


def test_bad_values_are_named():
    with pytest.raises(InputError, match="ram_gb: -4: expected a finite number above 0"):
        estimate_training(**{**PLAN, "ram_gb": -4}, epochs=5)
    with pytest.raises(InputError, match="missing arch or gflops"):
        estimate_training(**{**PLAN, "arch": None}, epochs=5)
    with pytest.raises(InputError, match="too small for xception"):
        estimate_training(**{**PLAN, "arch": "xception", "input_size": 32}, epochs=5)


def test_estimate_cli_json_and_text():
    args = ["--gpu", "RTX 3090", "--arch", "resnet50", "--input-size", 128, "--batch-size", 64]
    args += ["--train-samples", 12000, "--val-samples", 8580, "--epochs", 50, "--ram-gb", 16]
    rows = json.loads(cli("estimate", *args, "--duration", "2h", "--json").stdout)
    assert [r["method"] for r in rows] == [
        "offline-epoch-energy",
        "offline-power",
        "mlco2",
        "green-algorithms",
    ]
    assert rows[2]["energy_j"] == pytest.approx(2.52e6) and rows[2]["source"] == "modelled"
    text = cli("estimate", *args, "--intensity", "250").stdout
    assert "kWh" in text and "gCO2e" in text and "offline-epoch-energy" in text
    assert "duration:" in text  # estimated from the models, and said so
    bad = cli("estimate", *args, "--gpu", "RTX 3095", check=False)
    assert bad.returncode == 2 and "closest matches" in bad.stderr
    bad = cli("estimate", *args, "--batch-size", 0, check=False)
    assert bad.returncode == 2 and "--batch-size" in bad.stderr


def test_estimate_cli_batch_csv(tmp_path):
    rows = pd.read_csv(PAPER).drop(columns=["avg_power_w", "epoch_energy_j"]).iloc[[0, 100, 300]]
    rows = rows.assign(epochs=[10, 20, np.nan], duration_s=[np.nan, 3600.0, np.nan])
    data = tmp_path / "configs.csv"
    rows.to_csv(data, index=False)
    out = json.loads(cli("estimate", "--data", data, "--json").stdout)
    assert [o["row"] for o in out] == [1, 2, 3]
    assert all(o["avg_power_w"] > 0 and o["epoch_energy_j"] > 0 for o in out)
    assert out[0]["energy_method"] == "offline-epoch-energy"
    assert out[0]["energy_j"] == pytest.approx(10 * out[0]["epoch_energy_j"])
    assert out[1]["energy_method"] == "offline-power"
    assert out[1]["energy_j"] == pytest.approx(3600 * out[1]["avg_power_w"])
    assert "energy_j" not in out[2]
    broken = tmp_path / "broken.csv"
    rows.drop(columns=["gflops"]).to_csv(broken, index=False)
    proc = cli("estimate", "--data", broken, "--json", check=False)
    assert proc.returncode == 2 and "missing column(s) gflops" in proc.stderr


def paper_with_totals() -> pd.DataFrame:
    """The paper's runs with totals for the Table 10 comparison: 20 epochs each, at the run's
    own power and epoch energy, at 80% GPU usage."""
    paper = pd.read_csv(PAPER)
    return paper.assign(
        epochs=20,
        duration_s=20 * paper["epoch_energy_j"] / paper["avg_power_w"],
        energy_j=20 * paper["epoch_energy_j"],
        gpu_util_pct=80.0,
    )


@pytest.mark.slow
def test_fit_offline_and_evaluate_estimators(tmp_path):
    runs = paper_with_totals()
    data = tmp_path / "runs.csv"
    runs.to_csv(data, index=False)
    model = tmp_path / "model.json"
    cli("fit-offline", "--data", data, "-o", model, "--grid", "small")
    saved = json.loads(model.read_text())
    assert set(saved["models"]) == {"avg_power_w", "epoch_energy_j"}
    png = tmp_path / "fig11.png"
    # The figure needs matplotlib (the stability extra); the tables do not.
    plot = ["--plot", png] if importlib.util.find_spec("matplotlib") else []
    rows = json.loads(
        cli(
            "evaluate-estimators",
            "--data",
            data,
            "--grid",
            "small",
            "--cv",
            "grouped",
            *plot,
            "--json",
        ).stdout
    )
    cv = [r for r in rows if r["cv"] == "grouped"]
    assert {r["target"] for r in cv} == {"avg_power_w", "epoch_energy_j"}
    for key in ("model", "r2", "rmse", "mae", "mape"):
        assert all(key in r for r in cv)
    totals = {r["model"]: r for r in rows if r["cv"] == "holdout"}
    assert set(totals) == {"offline-power", "offline-epoch-energy", "mlco2", "green-algorithms"}
    assert all(t["rmse_j"] > 0 and t["runs"] == totals["mlco2"]["runs"] for t in totals.values())
    assert not plot or png.stat().st_size > 10_000
    # The saved model estimates like the shipped one does.
    out = json.loads(
        cli(
            "estimate",
            "--model",
            model,
            "--gpu",
            "RTX 3090",
            "--gflops",
            2.52,
            "--input-size",
            128,
            "--batch-size",
            64,
            "--train-samples",
            12000,
            "--val-samples",
            8580,
            "--epochs",
            50,
            "--ram-gb",
            16,
            "--json",
        ).stdout
    )
    assert out[0]["energy_j"] > 0
    few = tmp_path / "few.csv"
    runs.head(6).to_csv(few, index=False)
    proc = cli("fit-offline", "--data", few, "-o", tmp_path / "m2.json", check=False)
    assert proc.returncode == 2 and "at least" in proc.stderr
    assert not (tmp_path / "m2.json").exists()


@pytest.mark.slow
def test_evaluate_estimators_prints_the_papers_protocol_beside_joulecasts():
    rows = json.loads(
        cli(
            "evaluate-estimators",
            "--data",
            PAPER,
            "--protocol",
            "paper",
            "--n-iter",
            3,
            "--grid",
            "small",
            "--json",
        ).stdout
    )
    paper = [r for r in rows if r["protocol"] == "paper"]
    ours = [r for r in rows if r["protocol"] == "joulecast"]
    assert len(paper) + len(ours) == len(rows)
    targets = ("avg_power_w", "epoch_energy_j", "epoch_energy_stable_j")
    for target in targets:
        models = [r["model"] for r in paper if r["target"] == target]
        assert models == ["linear", "ridge", "krr", "svr"]
    assert {(r["n_train"], r["n_test"], r["n_iter"], r["seed"]) for r in paper} == {
        (389, 167, 3, 2022)
    }
    # Energy in J, as every other row: the shipped runs' epochs take 0.1 to 20 kJ.
    krr = next(r for r in paper if r["target"] == "epoch_energy_j" and r["model"] == "krr")
    assert 100 < krr["rmse"] < 5000 and krr["r2"] > 0.8
    assert {r["cv"] for r in ours} == {"grouped"}
    assert {r["target"] for r in ours} == set(targets[:2])


class Gpu:
    """A GPU sensor reading a constant power, so runs have GPU energy."""

    name = "fake-gpu"

    def __init__(self, watts):
        self.watts = watts

    def devices(self):
        return ["gpu:0", "ram"]

    def read(self):
        now = time.monotonic()
        return [Reading(now, "gpu:0", self.watts, "fake"), Reading(now, "ram", 6.0, "fake")]

    def close(self):
        pass


def test_run_table_from_the_store(tmp_path):
    from joulecast.offline.store_table import runs_table

    store = joulecast.open_store(tmp_path / "s.db")
    tags = {
        "gpu": "RTX 3090",
        "gflops": "2.52",
        "train_samples": "1000",
        "val_samples": "200",
        "batch_size": "32",
        "input_size": "128",
        "ram_gb": "16",
    }
    with joulecast.measure(store=store, sensors=[Gpu(200.0)], interval_s=0.01, tags=tags) as run:
        for i in range(3):
            with run.epoch(i):
                time.sleep(0.1)
    with joulecast.measure(store=store, sensors=[Gpu(100.0)], interval_s=0.01):
        time.sleep(0.05)  # no tags: left out, and counted
    table, skipped = runs_table(store)
    assert len(table) == 1 and sum(skipped.values()) == 1
    row = table.iloc[0]
    assert row["gpu"] == "RTX 3090" and row["input_height"] == 128 and row["epochs"] == 3
    assert row["gpu_tdp_w"] == 350 and row["ram_gb"] == 16
    # The GPU's energy over the run's duration: 200 W over the span of its readings (a loaded
    # machine may take a while to read the first).
    gpu_t_s = store.samples(int(row["run_id"])).query("device == 'gpu:0'")["t_s"]
    covered_s = float(gpu_t_s.max() - gpu_t_s.min())
    assert row["avg_power_w"] == pytest.approx(200.0 * covered_s / row["duration_s"], rel=0.01)
    assert covered_s > 0.5 * row["duration_s"]
    assert row["epoch_energy_j"] == pytest.approx(206.0 * 0.1, rel=0.2)  # GPU + RAM
    assert row["energy_j"] > 3 * row["epoch_energy_j"] * 0.9
    empty = joulecast.open_store(tmp_path / "e.db")
    with pytest.raises(InputError, match="no run usable"):
        runs_table(empty)


def test_holdout_totals_match_hand_computed_baselines():
    from joulecast.offline.evaluation import holdout
    from joulecast.offline.features import configuration_groups, feature_frame
    from joulecast.offline.models import holdout_split

    runs = paper_with_totals()
    result = holdout(runs, cv="grouped", seed=1, grid="small")
    _, test = holdout_split(len(runs), configuration_groups(feature_frame(runs)), "grouped", 1)
    held = runs.iloc[test]
    assert result.test_runs == len(test) and result.train_runs == len(runs) - len(test)
    totals = result.totals.set_index("method")
    mlco2 = held["gpu_tdp_w"] * held["duration_s"]
    ga = held["duration_s"] * (held["gpu_tdp_w"] * 0.8 + held["ram_gb"] * 0.3725)
    for method, values in (("mlco2", mlco2), ("green-algorithms", ga)):
        err = values - held["energy_j"]
        assert totals.loc[method, "rmse_j"] == pytest.approx(np.sqrt(np.mean(err**2)))
        assert totals.loc[method, "mae_j"] == pytest.approx(np.mean(np.abs(err)))
    predicted = result.predictions.query("target == 'energy_j:offline-epoch-energy'")
    assert len(predicted) == len(test)


def test_fit_offline_from_the_store(tmp_path):
    path = tmp_path / "s.db"
    store = joulecast.open_store(path)
    for i in range(10):
        batch = 16 * (1 + i % 5)  # five configurations, two runs each
        tags = {
            "gpu": "RTX 3070",
            "gflops": "0.37",
            "train_samples": "3000",
            "val_samples": "600",
            "batch_size": str(batch),
            "input_size": "128",
        }
        sensor = Gpu(150.0 + batch)
        with joulecast.measure(store=store, sensors=[sensor], interval_s=0.01, tags=tags) as run:
            for e in range(2):
                with run.epoch(e):
                    time.sleep(0.03)
    model = tmp_path / "mine.json"
    proc = cli("fit-offline", "--store", path, "--from-store", "-o", model, "--grid", "small")
    assert "saved:" in proc.stdout
    saved = json.loads(model.read_text())
    assert len(saved["rows"]) == 10 and saved["source"] == str(path)
    proc = cli("fit-offline", "--store", path, "-o", model, check=False)
    assert proc.returncode == 2 and "--data CSV or --from-store" in proc.stderr


def test_estimate_batch_csv_with_a_user_gpu_file_leaves_the_environment_alone(
    tmp_path, monkeypatch, capsys
):
    from joulecast.cli import main
    from joulecast.inputs import GPUS_ENV

    monkeypatch.delenv(GPUS_ENV, raising=False)
    gpus = tmp_path / "gpus.csv"
    gpus.write_text(
        "name,aliases,architecture,cuda_cores,memory_gb,tdp_w,form_factor\n"
        "Lab Card X,,Ampere,10496,24,350,PCIe\n"
    )
    rows = pd.read_csv(PAPER).iloc[[0]]
    rows = rows.drop(columns=["avg_power_w", "epoch_energy_j", "gpu_cuda_cores"])
    rows = rows.drop(columns=["gpu_memory_gb", "gpu_tdp_w"]).assign(gpu="Lab Card X")
    data = tmp_path / "configs.csv"
    rows.to_csv(data, index=False)
    before = dict(os.environ)
    assert main(["estimate", "--data", str(data), "--gpus", str(gpus), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["avg_power_w"] > 0
    assert dict(os.environ) == before


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["estimate", "--batch-size", "0"], "'0': expected a whole number from 1 to 1000000000"),
        (["estimate", "--batch-size", "²"], "'²': expected a whole number"),
        (["estimate", "--epochs", "1e3"], "'1e3': expected a whole number from 1 to"),
        (["estimate", "--train-samples", "9" * 30], "expected a whole number from 1 to 1000000"),
        (["estimate", "--gflops", "inf"], "'inf': expected a finite number above 0 to 1e+09"),
        (["estimate", "--gflops", "nan"], "'nan': expected a finite number above 0"),
        (["estimate", "--ram-gb", "1e300"], "'1e300': expected a finite number above 0 to 1e+07"),
        (["estimate", "--gpu-util", "150"], "'150': expected a finite number above 0 to 100"),
        (["estimate", "--pue", "1e308"], "'1e308': expected a finite number from 1 to 10"),
        (["estimate", "--pue", "0.5"], "'0.5': expected a finite number from 1 to 10"),
        (["estimate", "--intensity", "-5"], "expected a finite number from 0 to 5000"),
        (["estimate", "--intensity-csv", "ci.csv"], "a planned training has none: give"),
        (["estimate", "--electricity-maps", "DE"], "needs a run's times"),
        (["fit-offline", "-o", "m.json", "--seed", "4294967296"], "from 0 to 4294967295"),
        (["evaluate-estimators", "--seed", "-1"], "'-1': expected a whole number from 0 to"),
    ],
)
def test_offline_options_are_read_within_their_bounds(capsys, argv, said):
    from joulecast.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert argv[-2] in err and said in err and "Traceback" not in err
