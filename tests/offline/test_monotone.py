"""Monotone gradient boosting of the share of TDP a run draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks

from joulecast.cli import main
from joulecast.errors import InputError
from joulecast.offline.features import PHYSICS_FEATURES, RAW_FEATURES
from joulecast.offline.models import ModelSpec, OfflineEstimator, build_estimator, check_spec
from joulecast.offline.monotone import POWER_DIRECTIONS, MonotoneBoosting, power_constraints
from tests.offline.synthetic import configurations

SPEC = ModelSpec(
    "hgb_physics_ratio",
    "hgb",
    "physics",
    "tdp_ratio",
    {"learning_rate": 0.1, "max_iter": 50, "max_depth": 3, "min_samples_leaf": 5},
)


def share_by_hand(row: dict[str, float]) -> float:
    """A share of TDP that jumps from 0.35 to 0.9 once a step gives each core 0.05 GFLOPs."""
    per_core = row["batch_size"] * row["gflops"] / row["gpu_cuda_cores"]
    return 0.9 if per_core > 0.05 else 0.35


def table(n_configs: int = 30, repeats: int = 3, seed: int = 0) -> pd.DataFrame:
    """Runs whose power follows :func:`share_by_hand` x TDP, with 2% noise, and an energy."""
    rng = np.random.default_rng(seed)
    rows = []
    for config in configurations(n_configs, rng):
        tdp = config["gpu_tdp_w"]
        for _ in range(repeats):
            power = tdp * share_by_hand(config) * rng.uniform(0.98, 1.02)
            rows.append({**config, "avg_power_w": power, "epoch_energy_j": power * 30.0})
    return pd.DataFrame(rows)


@parametrize_with_checks([MonotoneBoosting(max_iter=10)])
def test_it_follows_the_estimator_contract(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


def test_the_constraints_name_the_physics_columns_of_a_step_and_nothing_else() -> None:
    constraints = power_constraints("physics")
    assert dict(zip(PHYSICS_FEATURES, constraints, strict=True)) == {
        name: POWER_DIRECTIONS.get(name, 0) for name in PHYSICS_FEATURES
    }
    assert set(POWER_DIRECTIONS) <= set(PHYSICS_FEATURES)
    with pytest.raises(InputError, match="physics features, not 'raw'"):
        power_constraints("raw")


@pytest.mark.parametrize("feature", ["gflops", "batch_size", "input_height", "input_width"])
def test_the_power_never_falls_with_more_work_per_step(feature: str) -> None:
    runs = table()
    model = build_estimator(SPEC).fit(runs[RAW_FEATURES], runs["avg_power_w"])
    rng = np.random.default_rng(1)
    # Points inside the training ranges and up to 100x beyond them, each feature moved up 1.1x
    # to 10x.
    points = runs[RAW_FEATURES].sample(60, random_state=0).to_numpy()
    points = points * np.exp(rng.uniform(-1, np.log(100), size=points.shape))
    moved = points.copy()
    moved[:, RAW_FEATURES.index(feature)] *= np.exp(rng.uniform(0.1, np.log(10), len(points)))
    assert (model.predict(moved) >= model.predict(points) - 1e-9).all()


def test_a_model_file_takes_it_with_physics_features_a_tdp_share_and_bounded_trees() -> None:
    check_spec(SPEC.to_dict(), "file")
    for field, value, message in [
        ("features", "raw", r"spec\.features: 'raw': expected one of physics"),
        ("target_transform", "log", r"spec\.target_transform: 'log': expected one of tdp_ratio"),
        ("params", {"max_iter": 10**6}, r"spec\.params\.max_iter: 1000000: expected"),
        ("params", {"min_samples_leaf": 0}, r"spec\.params\.min_samples_leaf: 0: expected"),
        ("params", {"max_depth": None}, r"spec\.params\.max_depth: None: expected"),
        ("params", {"loss": "poisson"}, r"spec\.params\.loss: 'poisson': expected a hgb"),
    ]:
        with pytest.raises(InputError, match=message):
            check_spec({**SPEC.to_dict(), field: value}, "file")


def test_fit_offline_tries_it_the_model_file_round_trips_and_estimate_uses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = table()
    data = tmp_path / "runs.csv"
    runs.to_csv(data, index=False)
    path = tmp_path / "model.json"
    assert main(["fit-offline", "--data", str(data), "-o", str(path), "--grid", "small"]) == 0
    saved = json.loads(path.read_text())
    tried = {row["model"] for row in saved["models"]["avg_power_w"]["candidates"]}
    assert {"hgb_physics_ratio", "mean_monotone"} <= tried
    # The file as it would be had the monotone model been chosen: it loads, saves and loads again
    # to the same predictions.
    saved["models"]["avg_power_w"]["spec"] = SPEC.to_dict()
    path.write_text(json.dumps(saved))
    loaded = OfflineEstimator.load(path)
    again = tmp_path / "again.json"
    loaded.save(again)
    pd.testing.assert_frame_equal(OfflineEstimator.load(again).predict(runs), loaded.predict(runs))
    capsys.readouterr()
    # An RTX 3090 (10,496 cores, 350 W): 64 x 20 GFLOPs per step is 0.12 per core, a 0.9 share.
    plan = ["--gpu", "RTX 3090", "--gflops", "20", "--batch-size", "64", "--input-size", "128"]
    plan += ["--train-samples", "12000", "--val-samples", "8580", "--ram-gb", "16"]
    assert main(["estimate", "--model", str(again), *plan, "--duration", "1h", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    energy = {r["method"]: r["energy_j"] for r in rows}["offline-power"]
    assert energy == pytest.approx(0.9 * 350 * 3600, rel=0.05)
