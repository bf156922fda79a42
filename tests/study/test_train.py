from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from joulecast.cli import main
from joulecast.errors import InputError
from joulecast.store import Store
from joulecast.study.workloads.__main__ import main as workloads_main
from joulecast.study.workloads.train import TrainConfig, _load, add_arguments, config_from_args


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            TrainConfig(arch="alexnet"),
            "unknown architecture 'alexnet': expected one of mobilenet_v2",
        ),
        (TrainConfig(dataset="cifar"), "unknown dataset 'cifar': expected one of shapes, digits"),
        (
            TrainConfig(arch="xception", input_size=64),
            "too small for xception: expected at least 71",
        ),
        (TrainConfig(batch_size=0), "batch size 0: expected at least 1"),
        (TrainConfig(epochs=(0, 1)), "expected FROZEN >= 1"),
        (TrainConfig(learning_rates=(1e-3, -1.0)), "expected two positive numbers"),
        (TrainConfig(weights="random"), "expected 'imagenet' or None"),
        (TrainConfig(split="Paper"), "unknown split 'Paper': expected one of holdout, paper"),
    ],
)
def test_bad_settings(config, message):
    with pytest.raises(InputError, match=message):
        config.validate()


def test_steps():
    assert TrainConfig(epochs=(2, 3)).steps == (2, 3)
    assert TrainConfig(epochs=(2, 0)).steps == (2,)
    assert TrainConfig(arch="inception_v3", epochs=(2, 3)).steps == (2,)


def test_split_option_reaches_the_dataset():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])).split == "holdout"
    config = config_from_args(parser.parse_args(["--split", "paper", "--samples", "80"]))
    assert config.split == "paper"
    data = _load(TrainConfig(split="paper", samples=80, input_size=16))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (56, 24, 24)
    assert data.x_val is data.x_test
    data = _load(TrainConfig(samples=80, input_size=16))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (52, 12, 16)


def test_entry_points_exit_2_on_bad_input(capsys):
    assert workloads_main(["--arch", "lenet", "--weights", "none"]) == 2
    assert "unknown architecture 'lenet'" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar", "--weights", "none"]) == 2
    assert "unknown dataset 'cifar'" in capsys.readouterr().err
    assert main(["train", "--arch", "inception_v3", "--input-size", "64"]) == 2
    assert "expected at least 75" in capsys.readouterr().err
    assert main(["train", "--epochs", "1", "2", "3"]) == 2
    assert "expected one or two numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["train", "--split", "Paper"])
    assert exited.value.code == 2
    assert "argument --split: invalid choice: 'Paper'" in capsys.readouterr().err


@pytest.mark.slow
def test_trains_end_to_end_under_joulecast_measure(tmp_path):
    pytest.importorskip("torch")
    # The paper's split of 80 images: train, validation, test. The default split reaches the
    # dataset as this one does (test_split_option_reaches_the_dataset); the tiny study uses it.
    split, sizes = "paper", (56, 24, 24)
    env = {k: v for k, v in os.environ.items() if k not in ("JOULECAST_RUN_ID", "KERAS_BACKEND")}
    db = tmp_path / "runs.db"
    command = [
        sys.executable, "-m", "joulecast", "measure", "--store", str(db), "--quiet", "--",
        sys.executable, "-m", "joulecast.study.workloads", "--arch", "mobilenet_v2",
        "--dataset", "shapes", "--samples", "80", "--input-size", "32", "--epochs", "1", "1",
        "--batch-size", "16", "--weights", "none", "--split", split,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    with Store(db) as store:
        runs = store.runs()
        assert len(runs) == 1 and printed["run_id"] == int(runs["id"][0])
        run = store.run(printed["run_id"])
        assert run["status"] == "completed"
        assert run["tags"]["arch"] == "mobilenet_v2" and run["tags"]["epochs"] == "1,1"
        assert float(run["tags"]["gflops"]) > 0
        assert run["tags"]["split"] == split
        tagged = tuple(int(run["tags"][f"{part}_samples"]) for part in ("train", "val", "test"))
        assert tagged == sizes
        epochs = store.phases(run["id"], kind="epoch")
        assert epochs["index"].tolist() == [0, 1]
        assert epochs["samples"].tolist() == [int(run["tags"]["train_samples"])] * 2
        for metrics in epochs["metrics"]:
            assert {"loss", "accuracy", "val_loss"} <= set(metrics)
        test = store.phases(run["id"], kind="test")
        assert len(test) == 1 and test["samples"].iloc[0] == int(run["tags"]["test_samples"])
        scores = test["metrics"].iloc[0]
        assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(scores)
        assert scores["average"] == "macro" and 0.0 <= scores["f1"] <= 1.0
        assert scores["f1"] == pytest.approx(printed["f1"])
