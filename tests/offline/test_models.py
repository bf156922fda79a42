from __future__ import annotations

import importlib.resources
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from joulecast.errors import InputError
from joulecast.offline.features import (
    RAW_FEATURES,
    TARGETS,
    EnergyFeatures,
    configuration_groups,
    feature_frame,
    read_runs,
)
from joulecast.offline.models import (
    FORMAT_VERSION,
    PAPER_KRR_PARAMS,
    ModelSpec,
    OfflineEstimator,
    build_estimator,
    candidates,
    cv_splitter,
    default_estimator,
    evaluate_models,
    holdout_split,
    main,
)

DATA = Path(__file__).parents[2] / "src" / "joulecast" / "offline" / "data" / "paper_runs_train.csv"

# The brief's sanity row: RTX 3090, ResNet50 at 128 px (2.52 GFLOPs), Stanford Dogs sizes.
RTX3090_RESNET50 = {
    "gpu_cuda_cores": 10496,
    "gpu_memory_gb": 24,
    "gpu_tdp_w": 350,
    "ram_gb": 16,
    "gflops": 2.52,
    "train_samples": 12000,
    "val_samples": 8580,
    "batch_size": 64,
    "input_height": 128,
    "input_width": 128,
}


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return read_runs(DATA)


@pytest.fixture(scope="module")
def fitted(runs: pd.DataFrame) -> OfflineEstimator:
    return OfflineEstimator(grid="small").fit(runs, source=DATA.name)


def write(tmp_path: Path, df: pd.DataFrame, name: str = "runs.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


# -- read_runs -------------------------------------------------------------------------------


def test_read_runs_names_the_missing_column_and_the_file(
    tmp_path: Path, runs: pd.DataFrame
) -> None:
    path = write(tmp_path, runs.drop(columns=["gflops", "gpu"]).head(20))
    with pytest.raises(InputError, match=r"runs\.csv: missing column\(s\) gflops"):
        read_runs(path)


@pytest.mark.parametrize("value", [0, -3, "lots"])
def test_read_runs_rejects_a_non_positive_or_non_numeric_size(
    tmp_path: Path, runs: pd.DataFrame, value: object
) -> None:
    df = runs.head(20).astype({"batch_size": object})
    df.loc[df.index[4], "batch_size"] = value
    path = write(tmp_path, df)
    with pytest.raises(
        InputError,
        match=r"runs\.csv: line 6, column batch_size: .*expected a finite number above 0",
    ):
        read_runs(path)


def test_read_runs_checks_targets_and_ignores_extra_columns(
    tmp_path: Path, runs: pd.DataFrame
) -> None:
    df = runs.head(20).assign(comment="anything")
    assert list(feature_frame(read_runs(write(tmp_path, df))).columns) == RAW_FEATURES
    df.loc[df.index[0], "avg_power_w"] = -1.0
    with pytest.raises(InputError, match="line 2, column avg_power_w"):
        read_runs(write(tmp_path, df))


def test_read_runs_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.csv: no such file"):
        read_runs(tmp_path / "nope.csv")


@pytest.mark.skipif(
    importlib.util.find_spec("joulecast.offline.catalogue") is None, reason="no GPU catalogue yet"
)
def test_read_runs_resolves_a_gpu_column_through_the_catalogue(
    tmp_path: Path, runs: pd.DataFrame
) -> None:
    from joulecast.offline.catalogue import lookup

    df = runs.head(5).drop(columns=["gpu_cuda_cores", "gpu_memory_gb", "gpu_tdp_w"])
    got = read_runs(write(tmp_path, df))
    spec = lookup(str(df["gpu"].iloc[0]))
    assert got["gpu_cuda_cores"].iloc[0] == spec.cuda_cores
    assert got["gpu_tdp_w"].iloc[0] == spec.tdp_w
    bad = df.assign(gpu="No Such GPU 9000")
    with pytest.raises(InputError, match="line 2, column gpu"):
        read_runs(write(tmp_path, bad))


# -- features --------------------------------------------------------------------------------


@pytest.mark.parametrize("feature_set", ["raw", "log", "physics", "work"])
def test_energy_features_work_inside_a_pipeline(runs: pd.DataFrame, feature_set: str) -> None:
    X = feature_frame(runs)
    transformer = EnergyFeatures(feature_set)
    out = clone(transformer).fit(X).transform(X)
    assert out.shape == (len(X), len(transformer.get_feature_names_out()))
    assert np.isfinite(out).all()
    model = make_pipeline(EnergyFeatures(feature_set), Ridge()).fit(X, runs["avg_power_w"])
    assert model.predict(X.to_numpy()).shape == (len(X),)


def test_work_per_epoch_counts_backward_passes_for_training_samples_only() -> None:
    row = pd.DataFrame([RTX3090_RESNET50])
    names = list(EnergyFeatures("work").get_feature_names_out())
    work = EnergyFeatures("work").fit(row).transform(row)[0, names.index("work_gflop")]
    assert work == pytest.approx((3 * 12000 + 8580) * 2.52)


# -- protocols -------------------------------------------------------------------------------


def test_grouped_cv_never_puts_one_configuration_on_both_sides(runs: pd.DataFrame) -> None:
    X = feature_frame(runs)
    groups = configuration_groups(X)
    assert len(np.unique(groups)) == 32
    folds = list(cv_splitter("grouped").split(X, groups=groups))
    assert len(folds) == 5
    for train, valid in folds:
        assert not set(groups[train]) & set(groups[valid])
    seen = np.concatenate([valid for _, valid in folds])
    assert sorted(seen) == list(range(len(X)))
    train, test = holdout_split(len(X), groups, "grouped", seed=0)
    assert not set(groups[train]) & set(groups[test])
    assert len(set(groups[test])) == round(0.3 * 32)


def test_random_holdout_is_seeded(runs: pd.DataFrame) -> None:
    groups = configuration_groups(feature_frame(runs))
    a = holdout_split(len(runs), groups, "random", seed=1)
    b = holdout_split(len(runs), groups, "random", seed=1)
    assert np.array_equal(a[1], b[1])
    assert len(a[1]) == pytest.approx(0.3 * len(runs), abs=1)


def test_evaluate_models_reports_cv_and_held_out_figures(runs: pd.DataFrame) -> None:
    table = evaluate_models(
        runs, target="avg_power_w", cv="grouped", grid="small", models=["ridge", "tdp"]
    )
    assert list(table["model"]) == ["ridge", "tdp"]
    for column in [
        "target",
        "model",
        "cv",
        "r2",
        "rmse",
        "mae",
        "mape",
        "test_r2",
        "test_rmse",
        "test_mae",
        "test_mape",
        "params",
    ]:
        assert column in table.columns
    tdp = table.set_index("model").loc["tdp"]
    assert tdp["rmse"] > 50  # the GPUs here draw far below TDP


def test_build_estimator_sets_the_spec_hyperparameters() -> None:
    spec = ModelSpec(
        "krr_physics_ratio", "krr", "physics", "tdp_ratio", {"alpha": 0.5, "gamma": 0.2}
    )
    params = build_estimator(spec).get_params()
    assert params["estimator__model__alpha"] == 0.5
    assert params["estimator__model__gamma"] == 0.2


def test_krr_paper_uses_the_papers_pair_for_both_targets() -> None:
    pair = {"alpha": 0.0006644681546141923, "gamma": 0.04418856040375013}
    assert {"avg_power_w": pair, "epoch_energy_j": pair} == PAPER_KRR_PARAMS
    for target in TARGETS:
        krr = next(c for c in candidates(target) if c.spec.name == "krr_paper")
        assert krr.grid == {"alpha": [pair["alpha"]], "gamma": [pair["gamma"]]}


def test_krr_paper_pairs_are_draws_of_the_packages_search() -> None:
    """The package samples alpha and gamma with SEED 2022: each pinned pair must be a draw."""
    from scipy.stats import expon
    from sklearn.model_selection import ParameterSampler

    space = {"alpha": expon(scale=0.01), "gamma": expon(scale=0.01), "kernel": ["rbf"]}
    draws = [
        {"alpha": d["alpha"], "gamma": d["gamma"]}
        for d in ParameterSampler(space, n_iter=100, random_state=2022)
    ]
    for pair in PAPER_KRR_PARAMS.values():
        assert draws.index(pair) == 34


# -- OfflineEstimator ------------------------------------------------------------------------


def test_fit_and_predict_shapes(fitted: OfflineEstimator, runs: pd.DataFrame) -> None:
    predictions = fitted.predict(runs.head(7))
    assert list(predictions.columns) == list(TARGETS)
    assert predictions.shape == (7, 2)
    assert (predictions > 0).all().all()


def test_fit_one_target(runs: pd.DataFrame) -> None:
    est = OfflineEstimator(grid="small").fit(runs, targets=["avg_power_w"], cv="random")
    assert list(est.predict(runs.head(3)).columns) == ["avg_power_w"]


def test_fit_refuses_too_few_runs(runs: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="need at least 10"):
        OfflineEstimator(grid="small").fit(runs.head(5))
    few_configs = runs[configuration_groups(feature_frame(runs)) < 3]
    with pytest.raises(InputError, match="needs at least 5"):
        OfflineEstimator(grid="small").fit(few_configs)


def test_too_few_configurations_for_an_interval(runs: pd.DataFrame) -> None:
    few = runs[configuration_groups(feature_frame(runs)) < 4]
    est = OfflineEstimator(grid="small").fit(few, targets=["avg_power_w"], cv="random")
    assert est.bands_ is None and "applicability" not in est.to_dict()
    assert "No calibrated interval" in est.card()
    (where,) = est.applicability(few.head(1))
    assert not where.calibrated and where.intervals == {} and where.distance == 0


def test_fit_names_a_missing_target(runs: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="missing target column epoch_energy_j"):
        OfflineEstimator(grid="small").fit(runs.drop(columns=["epoch_energy_j"]))


def test_out_of_range_names_the_feature(fitted: OfflineEstimator) -> None:
    row = pd.DataFrame([{**RTX3090_RESNET50, "gflops": 12.1}])
    (warning,) = fitted.out_of_range(row)
    assert warning.startswith("gflops 12.1 is outside the training range 0.06403..10.03")
    assert fitted.out_of_range(pd.DataFrame([RTX3090_RESNET50])) == []


def test_save_load_round_trip(fitted: OfflineEstimator, runs: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    fitted.save(path)
    data = json.loads(path.read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert data["features"] == RAW_FEATURES
    assert set(data["versions"]) == {"joulecast", "scikit-learn", "numpy"}
    assert data["ranges"]["gflops"] == [runs["gflops"].min(), runs["gflops"].max()]
    assert len(data["rows"]) == len(runs)
    for model in data["models"].values():
        assert {"spec", "cv"} <= set(model)
        assert {"family", "params", "features", "target_transform"} <= set(model["spec"])
    loaded = OfflineEstimator.load(path)
    pd.testing.assert_frame_equal(loaded.predict(runs), fitted.predict(runs), check_exact=True)
    assert loaded.specs_ == fitted.specs_
    assert "Domain" in loaded.card()
    assert fitted.bands_ is not None and loaded.bands_ == fitted.bands_
    assert set(data["applicability"]["bands"]) == set(TARGETS)
    assert loaded.applicability(runs.head(3)) == fitted.applicability(runs.head(3))
    assert "| epoch_energy_j |" in loaded.card().split("Intervals:")[1]


def test_load_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not a joulecast offline model"):
        OfflineEstimator.load(path)


def test_module_entry_point_builds_a_model_file(tmp_path: Path, runs: pd.DataFrame) -> None:
    data = write(tmp_path, runs.iloc[::4])
    out = tmp_path / "m.json"
    lines: list[str] = []
    assert main(["--data", str(data), "-o", str(out), "--grid", "small"], echo=lines.append) == 0
    assert OfflineEstimator.load(out).targets == TARGETS
    assert main(["--data", str(tmp_path / "missing.csv"), "-o", str(out)], echo=lines.append) == 2
    assert "no such file" in lines[-1]


# -- the shipped model -----------------------------------------------------------------------


def test_shipped_files_are_package_resources() -> None:
    data = importlib.resources.files("joulecast.offline").joinpath("data")
    for name in ["default_model.json", "paper_runs_train.csv", "README.md", "MODEL_CARD.md"]:
        assert data.joinpath(name).is_file(), name
    assert "CC BY 4.0" in data.joinpath("README.md").read_text(encoding="utf-8")


def test_default_estimator_predicts_a_sane_power_for_an_rtx_3090() -> None:
    est = default_estimator()
    assert est is default_estimator()  # cached
    row = pd.DataFrame([RTX3090_RESNET50])
    assert est.out_of_range(row) == []
    prediction = est.predict(row).iloc[0]
    assert 100 < prediction["avg_power_w"] < 350
    assert prediction["epoch_energy_j"] > 0


def test_the_default_estimator_carries_calibrated_intervals() -> None:
    est = default_estimator()
    assert est.bands_ is not None and set(est.bands_) == set(TARGETS)
    (where,) = est.applicability(pd.DataFrame([RTX3090_RESNET50]))
    assert where.calibrated and set(where.intervals) == set(TARGETS)


def test_fit_and_evaluate_refuse_an_unknown_protocol(runs: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="cv 'loo'"):
        OfflineEstimator(grid="small").fit(runs, cv="loo")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="cv 'loo'"):
        evaluate_models(runs, target="avg_power_w", cv="loo")  # type: ignore[arg-type]
