"""The paper's procedure for Tables 8 and 9, checked against the package's steps done by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold, cross_validate, train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from joulecast.errors import InputError
from joulecast.offline.features import RAW_FEATURES, read_runs
from joulecast.offline.models import PAPER_KRR_PARAMS
from joulecast.offline.paper import PAPER_MODELS, paper_distributions, paper_protocol

DATA = Path(__file__).parents[2] / "src" / "joulecast" / "offline" / "data" / "paper_runs_train.csv"
KRR = {"alpha": [1e-3], "gamma": [0.05], "kernel": ["rbf"]}
SCORES = ("r2", "neg_root_mean_squared_error", "neg_mean_absolute_error")


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return read_runs(DATA)


@pytest.fixture(scope="module")
def small(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.head(120).reset_index(drop=True)


def by_hand(model, X: np.ndarray, y: np.ndarray, cv) -> dict[str, float]:
    """Fold means of the package's figures, computed with scikit-learn alone."""
    scores = cross_validate(model, X, y, cv=cv, scoring=SCORES)
    return {
        "r2": scores["test_r2"].mean(),
        "rmse": -scores["test_neg_root_mean_squared_error"].mean(),
        "mae": -scores["test_neg_mean_absolute_error"].mean(),
    }


def scaled(df: pd.DataFrame) -> np.ndarray:
    return StandardScaler().fit_transform(df[RAW_FEATURES].to_numpy(dtype=float))


def test_the_search_spaces_are_the_packages() -> None:
    def scale(dist) -> float:
        return float(dist.mean())  # expon(scale=s) has mean s

    assert paper_distributions("linear") == {}
    assert scale(paper_distributions("ridge")["alpha"]) == pytest.approx(0.1)
    krr = paper_distributions("krr")
    assert (scale(krr["alpha"]), scale(krr["gamma"]), krr["kernel"]) == (0.01, 0.01, ["rbf"])
    svr = paper_distributions("svr")
    assert [scale(svr[k]) for k in ("C", "epsilon", "gamma")] == [300, 1, 0.01]
    assert svr["kernel"] == ["rbf"]
    with pytest.raises(InputError, match="'gbr' is not one of linear, ridge, krr, svr"):
        paper_distributions("gbr")


def test_cross_validates_the_table_as_given_in_unshuffled_folds(small: pd.DataFrame) -> None:
    """holdout=0: the whole table, scaled as a whole, in KFold(5) without shuffling."""
    rows = paper_protocol(
        small, target="avg_power_w", holdout=0, n_iter=1, models=["krr"], spaces={"krr": KRR}
    )
    row = rows.iloc[0]
    params = {k: v[0] for k, v in KRR.items() if k != "kernel"}
    want = by_hand(KernelRidge(kernel="rbf", **params), scaled(small), small["avg_power_w"], 5)
    assert (row["r2"], row["rmse"], row["mae"]) == pytest.approx(
        (want["r2"], want["rmse"], want["mae"]), rel=1e-12
    )
    assert (row["n_train"], row["n_test"], row["cv"]) == (120, 0, "kfold")
    assert (row["n_iter"], row["seed"]) == (1, 2022)
    assert math.isnan(row["test_rmse"])
    assert json.loads(row["params"]) == {"alpha": 1e-3, "gamma": 0.05, "kernel": "rbf"}


def test_energy_is_fitted_in_kj_and_reported_in_j(small: pd.DataFrame) -> None:
    """SVR's epsilon is in the package's kJ; the figures come back in J."""
    space = {"C": [10.0], "epsilon": [0.5], "gamma": [0.01], "kernel": ["rbf"]}
    row = paper_protocol(
        small, target="epoch_energy_j", holdout=0, n_iter=1, models=["svr"], spaces={"svr": space}
    ).iloc[0]
    kj = small["epoch_energy_j"] / 1e3
    want = by_hand(SVR(C=10.0, epsilon=0.5, gamma=0.01), scaled(small), kj, 5)
    assert row["rmse"] == pytest.approx(want["rmse"] * 1e3, rel=1e-9)
    assert row["mae"] == pytest.approx(want["mae"] * 1e3, rel=1e-9)
    assert row["r2"] == pytest.approx(want["r2"], rel=1e-9)


def test_holds_out_30_percent_after_scaling_the_whole_table(small: pd.DataFrame) -> None:
    rows = paper_protocol(
        small, target="avg_power_w", n_iter=1, models=["linear", "krr"], spaces={"krr": KRR}
    ).set_index("model")
    X, y = scaled(small), small["avg_power_w"].to_numpy()
    train, test = train_test_split(np.arange(120), test_size=0.3, random_state=2022)
    assert (rows.loc["krr", "n_train"], rows.loc["krr", "n_test"]) == (84, 36)
    # The 70% in the order the split drew it, unshuffled folds.
    krr = KernelRidge(kernel="rbf", alpha=1e-3, gamma=0.05)
    assert rows.loc["krr", "rmse"] == pytest.approx(by_hand(krr, X[train], y[train], 5)["rmse"])
    test_rmse = np.sqrt(np.mean((krr.fit(X[train], y[train]).predict(X[test]) - y[test]) ** 2))
    assert rows.loc["krr", "test_rmse"] == pytest.approx(test_rmse)
    # Linear regression: shuffled folds of the package's seed.
    folds = KFold(5, shuffle=True, random_state=2022)
    want = by_hand(LinearRegression(), X[train], y[train], folds)
    assert rows.loc["linear", "rmse"] == pytest.approx(want["rmse"])
    assert json.loads(rows.loc["linear", "params"]) == {}


def test_the_search_is_seeded(small: pd.DataFrame) -> None:
    def run(seed: int, models: list[str] | None = None) -> pd.DataFrame:
        rows = paper_protocol(small, target="avg_power_w", n_iter=2, seed=seed, models=models)
        return rows.drop(columns=["fit_s"])

    first = run(2022)
    assert list(first["model"]) == list(PAPER_MODELS)
    krr = first.set_index("model").loc["krr"]
    assert krr["r2"] > 0.9 and first["r2"].notna().all()
    pd.testing.assert_frame_equal(first, run(2022))
    assert run(7, ["krr"]).iloc[0]["params"] != krr["params"]


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"holdout": 0.95}, "holdout: 0.95: expected a finite number from 0 to 0.9"),
        ({"holdout": math.nan}, "holdout: nan: expected a finite number"),
        ({"n_iter": 0}, "n_iter: 0: expected a whole number from 1 to 10000"),
        ({"seed": -1}, "seed: -1: expected a whole number from 0 to 4294967295"),
        ({"models": ["gbr"]}, "model 'gbr' is not one of"),
        ({"target": "energy_j"}, "target 'energy_j' is not one of"),
    ],
)
def test_refuses_arguments_out_of_range(small: pd.DataFrame, kwargs, said) -> None:
    with pytest.raises(InputError, match=said.replace("(", r"\(")):
        paper_protocol(small, **{"target": "avg_power_w", **kwargs})


def test_needs_ten_rows_to_train_on(small: pd.DataFrame) -> None:
    with pytest.raises(InputError, match=r"t\.csv: 2 runs to train on after holding out 0\.9"):
        paper_protocol(small.head(20), target="avg_power_w", holdout=0.9, source="t.csv")


def test_names_a_bad_or_missing_stable_energy(small: pd.DataFrame) -> None:
    bad = small.assign(epoch_energy_stable_j=small["epoch_energy_stable_j"].astype(object))
    bad.loc[3, "epoch_energy_stable_j"] = "inf"
    with pytest.raises(InputError, match=r"t\.csv: line 5, column epoch_energy_stable_j: 'inf'"):
        paper_protocol(bad, target="epoch_energy_stable_j", source="t.csv")
    with pytest.raises(InputError, match="missing target column epoch_energy_stable_j"):
        paper_protocol(
            small.drop(columns=["epoch_energy_stable_j"]), target="epoch_energy_stable_j"
        )


@pytest.mark.slow
def test_krr_paper_under_the_papers_procedure_on_the_shipped_runs(runs: pd.DataFrame) -> None:
    """The shipped runs are a subset of the paper's 70%, so the figures are near, not equal
    to, Tables 8 and 9 (power R² 0.988, RMSE 7.50 W; epoch energy R² 0.965, RMSE 0.747 kJ).
    Measured here: power R² 0.9959, RMSE 4.408 W; epoch energy R² 0.944, RMSE 742 J."""
    figures = {}
    for target, unit_band in (("avg_power_w", (4.3, 4.5)), ("epoch_energy_j", (720, 760))):
        space = {"kernel": ["rbf"], **{k: [v] for k, v in PAPER_KRR_PARAMS[target].items()}}
        row = paper_protocol(
            runs, target=target, holdout=0, n_iter=1, models=["krr"], spaces={"krr": space}
        ).iloc[0]
        figures[target] = row
        assert unit_band[0] < row["rmse"] < unit_band[1]
    assert figures["avg_power_w"]["r2"] >= 0.98
    assert figures["epoch_energy_j"]["r2"] >= 0.93
