"""The factorised epoch-energy model: TDP times a time model of non-negative terms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from joulecast.cli import main
from joulecast.errors import InputError
from joulecast.offline.factorised import TERMS, FactorisedEnergy
from joulecast.offline.features import RAW_FEATURES
from joulecast.offline.models import ModelSpec, OfflineEstimator, build_estimator, check_spec
from tests.offline.synthetic import configurations

COEF = np.array([0.02, 0.01, 0.0, 0.05, 0.004, 0.002])  # per term of TERMS, J per W
EXPONENT = 0.8


def energy_by_hand(row: dict[str, float]) -> float:
    """The model's formula written out for one run."""
    width = (row["gpu_cuda_cores"] / 1000) ** EXPONENT
    s_train = row["train_samples"] / row["batch_size"]
    s_val = row["val_samples"] / row["batch_size"]
    terms = [
        s_train,
        s_val,
        s_train / width,
        s_val / width,
        row["train_samples"] * row["gflops"] / width,
        row["val_samples"] * row["gflops"] / width,
    ]
    return row["gpu_tdp_w"] * float(np.dot(COEF, terms))


def table(n_configs: int = 24, repeats: int = 3, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Runs whose epoch energy follows the formula (times log-normal noise), and a power."""
    rng = np.random.default_rng(seed)
    rows = []
    for config in configurations(n_configs, rng):
        tdp = config["gpu_tdp_w"]
        for _ in range(repeats):
            rows.append(
                {
                    **config,
                    "avg_power_w": tdp * rng.uniform(0.4, 0.9),
                    "epoch_energy_j": energy_by_hand(config) * np.exp(rng.normal(0, noise)),
                }
            )
    return pd.DataFrame(rows)


def test_it_recovers_the_energy_of_runs_made_by_its_formula() -> None:
    runs = table()
    model = FactorisedEnergy().fit(runs[RAW_FEATURES], runs["epoch_energy_j"])
    assert model.exponent_ == pytest.approx(EXPONENT, abs=1e-3)
    assert (model.coef_ >= 0).all() and model.coef_.shape == (len(TERMS),)
    fresh = table(n_configs=10, repeats=1, seed=1)
    predicted = model.predict(fresh[RAW_FEATURES].to_numpy())
    expected = [energy_by_hand(r) for r in fresh.to_dict("records")]
    np.testing.assert_allclose(predicted, expected, rtol=1e-4)


# (feature, how far to move it, the sign the energy may move with: +1 never falls, -1 never rises,
# 0 does not change)
MOVES = [
    ("train_samples", 2.0, 1),
    ("val_samples", 2.0, 1),
    ("gflops", 3.0, 1),
    ("gpu_tdp_w", 1.5, 1),
    ("batch_size", 2.0, -1),
    ("gpu_cuda_cores", 4.0, -1),
    ("ram_gb", 2.0, 0),
    ("gpu_memory_gb", 2.0, 0),
    ("input_height", 2.0, 0),
]


@pytest.mark.parametrize(("feature", "factor", "sign"), MOVES, ids=[m[0] for m in MOVES])
def test_the_prediction_is_monotone_in_each_feature_even_far_outside_the_data(
    feature: str, factor: float, sign: int
) -> None:
    runs = table(noise=0.3)
    model = FactorisedEnergy().fit(runs[RAW_FEATURES], runs["epoch_energy_j"])
    rng = np.random.default_rng(2)
    # Points inside the training ranges and up to 100x beyond them.
    points = runs[RAW_FEATURES].sample(50, random_state=0).to_numpy()
    points = points * np.exp(rng.uniform(-1, np.log(100), size=points.shape))
    moved = points.copy()
    moved[:, RAW_FEATURES.index(feature)] *= factor
    change = model.predict(moved) - model.predict(points)
    scale = np.abs(model.predict(points))
    if sign == 0:
        np.testing.assert_allclose(change, 0.0, atol=1e-9 * scale.max())
    else:
        assert (sign * change >= -1e-9 * scale).all()


def test_it_follows_the_estimator_contract() -> None:
    runs = table()
    model = FactorisedEnergy()
    assert model.get_params() == {}
    with pytest.raises(NotFittedError):
        model.predict(runs[RAW_FEATURES])
    assert model.fit(runs[RAW_FEATURES], runs["epoch_energy_j"]) is model
    assert model.n_features_in_ == len(RAW_FEATURES)
    again = clone(model)
    assert not hasattr(again, "coef_")
    np.testing.assert_array_equal(
        again.fit(runs[RAW_FEATURES], runs["epoch_energy_j"]).predict(runs[RAW_FEATURES]),
        model.predict(runs[RAW_FEATURES]),
    )


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.ones((5, 3)), np.ones(5), "expected 10 columns"),
        (-np.ones((5, 10)), np.ones(5), "above 0"),
        (np.full((5, 10), np.nan), np.ones(5), "above 0"),
        (np.ones((5, 10)), -np.ones(5), "y must be"),
        (np.ones((5, 10)), np.ones(4), "y must be"),
    ],
)
def test_it_refuses_what_it_cannot_fit(X: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        FactorisedEnergy().fit(X, y)


def test_a_spec_builds_it_and_a_model_file_takes_only_raw_features_and_no_transform() -> None:
    spec = ModelSpec("factorised", "factorised")
    assert isinstance(build_estimator(spec), FactorisedEnergy)
    check_spec(spec.to_dict(), "file")
    with pytest.raises(InputError, match=r"file: spec\.features: 'log': expected one of raw"):
        check_spec({**spec.to_dict(), "features": "log"}, "file")
    with pytest.raises(InputError, match=r"spec\.target_transform: 'log': expected one of none"):
        check_spec({**spec.to_dict(), "target_transform": "log"}, "file")
    with pytest.raises(
        InputError, match=r"spec\.params\.C: 1\.0: expected a factorised hyperparameter"
    ):
        check_spec({**spec.to_dict(), "params": {"C": 1.0}}, "file")


def test_fit_offline_selects_it_the_model_file_round_trips_and_estimate_uses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = table(noise=0.02)
    data = tmp_path / "runs.csv"
    runs.to_csv(data, index=False)
    path = tmp_path / "model.json"
    assert main(["fit-offline", "--data", str(data), "-o", str(path), "--grid", "small"]) == 0
    saved = json.loads(path.read_text())
    spec = saved["models"]["epoch_energy_j"]["spec"]
    assert spec["family"] == "factorised", spec["name"]
    loaded = OfflineEstimator.load(path)
    fitted = loaded.models_["epoch_energy_j"]
    assert isinstance(fitted, FactorisedEnergy)
    pd.testing.assert_frame_equal(loaded.predict(runs), OfflineEstimator.load(path).predict(runs))
    capsys.readouterr()
    plan = {"train_samples": 12000, "val_samples": 8580, "batch_size": 64, "gflops": 2.5}
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in plan.items()]
    common = ["--gpu", "RTX 3090", "--input-size", "128", "--ram-gb", "16", "--epochs", "10"]
    assert main(["estimate", "--model", str(path), *common, *sizes, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    energy = {r["method"]: r["energy_j"] for r in rows}["offline-epoch-energy"]
    # The catalogue's RTX 3090: 10,496 CUDA cores, 24 GB, 350 W.
    gpu = {"gpu_cuda_cores": 10496, "gpu_memory_gb": 24, "gpu_tdp_w": 350}
    assert energy == pytest.approx(10 * energy_by_hand({**plan, **gpu}), rel=0.05)
