"""Tests of joulecast.analysis.tradeoffs (Pareto front, savings statements) and
joulecast.analysis.plots (every figure, for normal and degenerate run tables)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from joulecast.analysis import plots, tradeoffs
from joulecast.analysis.tradeoffs import Savings, pareto_front, savings_statements
from joulecast.errors import InputError

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _runs(groups: dict[str, tuple[list[float], list[float]]]) -> pd.DataFrame:
    """One row per run from {architecture: (j_per_image values, f1 values)}."""
    rows = [
        {"architecture": g, "j_per_image": c, "f1": b}
        for g, (costs, benefits) in groups.items()
        for c, b in zip(costs, benefits, strict=True)
    ]
    return pd.DataFrame(rows)


# --- Pareto front -----------------------------------------------------------------------------

# Medians: A (1, .90), B (2, .95), C (3, .94), D (2, .93), E (4, .99), G (1, .90), F (0.5, -).
HAND = _runs(
    {
        "A": ([0.8, 1.0, 1.5], [0.90, 0.89, 0.91]),
        "B": ([2.0], [0.95]),
        "C": ([3.0, 3.0], [0.94, 0.94]),
        "D": ([2.0], [0.93]),
        "E": ([4.0, 3.0, 5.0], [0.99, 0.99, 0.98]),
        "G": ([1.0], [0.90]),
        "F": ([0.5, 0.5], [math.nan, math.nan]),
    }
)


def test_pareto_front_hand_built() -> None:
    front = pareto_front(HAND)
    by_group = front.set_index("architecture")
    assert list(front.columns) == [
        "architecture", "n", "j_per_image", "n_benefit", "f1", "pareto", "dominated_by", "note",
    ]  # fmt: skip
    assert by_group.loc["A", "j_per_image"] == 1.0
    assert by_group.loc["A", "f1"] == pytest.approx(0.90)
    assert by_group.loc["A", "n"] == 3
    assert by_group.loc["E", "f1"] == pytest.approx(0.99)
    on = set(front.loc[front["pareto"].fillna(False).astype(bool), "architecture"])
    assert on == {"A", "B", "E", "G"}  # A and G tie: neither dominates the other
    assert str(front["pareto"].dtype) == "boolean"
    assert not by_group.loc["C", "pareto"]
    assert by_group.loc["C", "dominated_by"] == "B"
    assert by_group.loc["D", "dominated_by"] == "B"  # same cost, lower F1
    assert pd.isna(by_group.loc["F", "pareto"])
    assert by_group.loc["F", "n_benefit"] == 0
    assert "F1 missing" in by_group.loc["F", "note"]
    assert list(front["architecture"]) == ["F", "A", "G", "B", "D", "C", "E"]  # by cost
    assert front.attrs == {"cost": "j_per_image", "benefit": "f1", "by": "architecture"}


def test_pareto_front_other_columns_and_dropped_rows() -> None:
    df = pd.DataFrame(
        {
            "environment": ["cloud", "cloud", "local", None, "local"],
            "energy_j": [10.0, 12.0, 8.0, 1.0, math.nan],
            "accuracy": [0.8, 0.9, 0.7, 0.99, 0.99],
        }
    )
    front = pareto_front(df, cost="energy_j", benefit="accuracy", by="environment")
    assert list(front["environment"]) == ["local", "cloud"]
    assert list(front["n"]) == [1, 2]
    assert front["pareto"].tolist() == [True, True]


def test_pareto_front_bad_input() -> None:
    with pytest.raises(InputError, match="benefit='f2'"):
        pareto_front(HAND, benefit="f2")
    with pytest.raises(InputError, match="numbers"):
        pareto_front(HAND.assign(f1="high"))
    with pytest.raises(InputError, match="infinite"):
        pareto_front(HAND.assign(j_per_image=np.inf))
    with pytest.raises(InputError, match="must be 3 columns"):
        savings_statements(HAND, benefit="j_per_image")


# --- savings statements -----------------------------------------------------------------------

PAPERLIKE = _runs(
    {
        "VGG16": ([10.0, 9.0, 11.0], [0.990, 0.991, 0.989]),
        "Xception": ([6.18, 6.18], [0.977, 0.977]),
        "ResNet50": ([8.0], [0.960]),
        "MobileNetV2": ([5.0, 5.0], [math.nan, math.nan]),
    }
)


def _find(statements: list[Savings], alternative: str, reference: str) -> Savings:
    (found,) = [s for s in statements if (s.alternative, s.reference) == (alternative, reference)]
    return found


def test_savings_numbers_and_text() -> None:
    statements = savings_statements(PAPERLIKE)
    s = _find(statements, "Xception", "VGG16")
    assert s.saving_pct == pytest.approx(38.2)
    assert s.loss_points == pytest.approx(1.3)
    assert (s.reference_cost, s.alternative_cost) == (10.0, 6.18)
    assert (
        s.text()
        == "Xception uses 38.2% less energy per image than VGG16 for at most 1.3 points of F1"
    )


def test_savings_alternative_also_better() -> None:
    s = _find(savings_statements(PAPERLIKE), "Xception", "ResNet50")
    assert s.saving_pct == pytest.approx((8 - 6.18) / 8 * 100)
    assert s.loss_points == pytest.approx(-1.7)
    assert (
        s.text() == "Xception uses 22.8% less energy per image than ResNet50 and 1.7 points more F1"
    )


def test_savings_every_cheaper_pair_sorted() -> None:
    statements = savings_statements(PAPERLIKE)
    pairs = {(s.alternative, s.reference) for s in statements}
    # 4 groups with distinct costs: each unordered pair once, cheaper one as the alternative.
    assert len(statements) == 6
    assert ("VGG16", "Xception") not in pairs
    savings = [s.saving_pct for s in statements]
    assert savings == sorted(savings, reverse=True)
    assert statements[0].alternative == "MobileNetV2" and statements[0].reference == "VGG16"
    assert all(s.alternative_cost < s.reference_cost for s in statements)


def test_savings_missing_f1() -> None:
    statements = savings_statements(PAPERLIKE)
    s = _find(statements, "MobileNetV2", "VGG16")
    assert s.saving_pct == pytest.approx(50.0)
    assert s.loss_points is None and s.alternative_benefit is None
    assert (
        s.text()
        == "MobileNetV2 uses 50.0% less energy per image than VGG16 (F1 is missing for MobileNetV2)"
    )
    nothing = savings_statements(PAPERLIKE.assign(f1=math.nan))
    assert len(nothing) == 6 and all(s.loss_points is None for s in nothing)
    assert "(F1 is missing for Xception and VGG16)" in _find(nothing, "Xception", "VGG16").text()


def test_savings_max_loss_filter() -> None:
    kept = savings_statements(PAPERLIKE, max_loss_points=1.5)
    assert {(s.alternative, s.reference) for s in kept} == {
        ("Xception", "VGG16"),
        ("Xception", "ResNet50"),
    }  # the 3.0-point loss and the statements with unknown F1 are left out
    gains = savings_statements(PAPERLIKE, max_loss_points=0)
    assert [(s.alternative, s.reference) for s in gains] == [("Xception", "ResNet50")]
    with pytest.raises(InputError, match="max_loss_points"):
        savings_statements(PAPERLIKE, max_loss_points=math.nan)


def test_savings_text_small_and_equal_losses_and_other_columns() -> None:
    df = pd.DataFrame(
        {
            "environment": ["cloud", "local_n", "local_ml"],
            "s_per_image": [2.0, 1.0, 1.5],
            "accuracy": [90.0, 90.0, 89.97],  # in percent: differences are already points
        }
    )
    statements = savings_statements(df, cost="s_per_image", benefit="accuracy", by="environment")
    texts = {(s.alternative, s.reference): s.text() for s in statements}
    assert texts[("local_n", "cloud")] == (
        "local_n uses 50.0% less time per image than cloud with the same accuracy"
    )
    assert texts[("local_ml", "cloud")].endswith("for less than 0.1 points of accuracy")
    assert texts[("local_n", "local_ml")].endswith("and less than 0.1 points more accuracy")
    assert _find(statements, "local_ml", "cloud").loss_points == pytest.approx(0.03)


def test_savings_zero_reference_cost_and_single_group() -> None:
    df = _runs({"A": ([0.0], [0.9]), "B": ([-1.0], [0.8])})
    assert savings_statements(df) == []  # no percentage of a zero cost
    assert savings_statements(_runs({"A": ([1.0], [0.9])})) == []
    empty = pd.DataFrame(columns=["architecture", "j_per_image", "f1"])
    assert savings_statements(empty) == []
    assert pareto_front(empty).empty


def test_public_names() -> None:
    assert sorted(tradeoffs.__all__) == tradeoffs.__all__
    assert sorted(plots.__all__) == plots.__all__
    assert all(hasattr(tradeoffs, n) for n in tradeoffs.__all__)
    assert all(hasattr(plots, n) for n in plots.__all__)


# --- plots ------------------------------------------------------------------------------------


def _table(rng: np.random.Generator) -> pd.DataFrame:
    """A run table of 4 architectures x 2 environments x 3 repetitions, with a few NaNs."""
    rows = []
    gflops = {"MobileNetV2": 0.3, "NASNetMobile": 0.6, "ResNet50": 4.1, "VGG16": 15.5}
    for arch, gf in gflops.items():
        for env, tdp in (("cloud", 250.0), ("local_ml", 170.0)):
            for rep in range(3):
                usage = float(rng.uniform(20, 95))
                rows.append(
                    {
                        "architecture": arch,
                        "environment": env,
                        "repetition": rep,
                        "gflops": gf,
                        "batch_size": [16, 32, 64][rep],
                        "input_size": [128, 224, 224][rep],
                        "gpu_util_pct": usage,
                        "gpu_tdp_w": tdp,
                        "avg_power_w": tdp * usage / 100 * rng.uniform(0.7, 1.3),
                        "j_per_image": 0.05 * gf + rng.uniform(0, 0.1),
                        "f1": 0.9 + 0.02 * math.log(gf + 1) + rng.normal(0, 0.005),
                    }
                )
    df = pd.DataFrame(rows)
    df.loc[0, "f1"] = math.nan
    df.loc[5, "j_per_image"] = math.nan
    df.loc[7, "gpu_util_pct"] = math.nan
    return df


def _degenerate() -> pd.DataFrame:
    """One run per group (or two), NaNs everywhere a column allows, a group with no F1."""
    return pd.DataFrame(
        {
            "architecture": ["VGG16", "Xception", "ResNet50", "ResNet50", None],
            "environment": ["cloud", "cloud", "local_ml", np.nan, "cloud"],
            "gflops": [15.5, 8.4, math.nan, 4.1, 1.0],
            "batch_size": [32.0, 32.0, math.nan, 64.0, 16.0],
            "input_size": [224, 224, 224, 224, 224],
            "gpu_util_pct": [90.0, math.nan, 70.0, 70.0, math.nan],
            "gpu_tdp_w": [250.0, 250.0, math.nan, math.nan, 250.0],
            "avg_power_w": [200.0, 150.0, math.nan, 120.0, math.nan],
            "j_per_image": [0.4, 0.2, math.nan, 0.3, 0.1],
            "f1": [0.99, math.nan, 0.96, math.nan, math.nan],
        }
    )


def _samples(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    t = np.arange(0, 120, 0.5)
    power = np.where(t < 30, 80 + 40 * rng.random(t.size), 150 + 5 * rng.random(t.size))
    samples = pd.concat(
        [
            pd.DataFrame({"t_s": t, "device": "gpu:0", "power_w": power}),
            pd.DataFrame({"t_s": t, "device": "gpu:1", "power_w": power * 0.9}),
        ]
    )
    samples.loc[samples.index[10:14], "power_w"] = math.nan  # a gap
    epochs = pd.DataFrame({"index": range(6), "start_s": np.arange(0, 120, 20.0)})
    epochs["end_s"] = epochs["start_s"] + 20
    return samples, epochs


Draw = Callable[[pd.DataFrame, Path], Path]


def _front(df: pd.DataFrame) -> pd.DataFrame:
    return pareto_front(df.dropna(subset=["architecture"]))


DRAWINGS: dict[str, Draw] = {
    "box": lambda df, p: plots.box_by_group(df, "j_per_image", "architecture", p, label="J/image"),
    "box_ram": lambda df, p: plots.box_by_group(df, "j_per_image", "batch_size", p),
    "qq": lambda df, p: plots.qq_by_group(df, "j_per_image", "architecture", p),
    "scatter": lambda df, p: plots.scatter_fit(df, "gflops", "j_per_image", p),
    "scatter_hue_log": lambda df, p: plots.scatter_fit(
        df, "gflops", "gpu_util_pct", p, hue="environment", logx=True
    ),
    "power_vs_usage": lambda df, p: plots.power_vs_usage(df, p),
    "effect": lambda df, p: plots.effect_lines(df, "batch_size", "j_per_image", p),
    "effect_hue": lambda df, p: plots.effect_lines(
        df, "input_size", "j_per_image", p, hue="environment"
    ),
    "tradeoff": lambda df, p: plots.tradeoff(df, _front(df), p),
    "predicted": lambda df, p: plots.predicted_vs_true(
        df["j_per_image"], df["j_per_image"] * 1.1, p, label="energy per image (J)"
    ),
}


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(autouse=True)
def _no_warnings_no_open_figures() -> Any:
    plt = pytest.importorskip("matplotlib.pyplot")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
    assert plt.get_fignums() == []


@pytest.mark.parametrize("name", sorted(DRAWINGS))
@pytest.mark.parametrize("kind", ["normal", "degenerate", "empty"])
def test_plot_writes_png(name: str, kind: str, tmp_path: Path) -> None:
    if kind == "normal":
        df = _table(np.random.default_rng(3))
    elif kind == "degenerate":
        df = _degenerate()
    else:
        df = _degenerate().iloc[0:0]
    out = DRAWINGS[name](df, tmp_path / "sub" / f"{name}.png")
    assert out == tmp_path / "sub" / f"{name}.png"
    _assert_png(out)


@pytest.mark.parametrize("kind", ["normal", "two_points", "one_point", "all_nan"])
def test_predicted_vs_true_small(kind: str, tmp_path: Path) -> None:
    true, predicted = {
        "normal": ([1.0, 2.0, 3.0, 4.0], [1.1, 2.3, 2.8, 4.4]),
        "two_points": ([1.0, 2.0], [1.0, 2.0]),
        "one_point": ([5.0, math.nan], [6.0, 1.0]),
        "all_nan": ([math.nan], [math.nan]),
    }[kind]
    _assert_png(plots.predicted_vs_true(true, predicted, tmp_path / "pvt.png", label="kJ"))


def test_predicted_vs_true_lengths_differ(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="same length"):
        plots.predicted_vs_true([1.0, 2.0], [1.0], tmp_path / "x.png", label="J")


@pytest.mark.parametrize("change_s", [30.0, None, math.nan])
def test_power_profile(change_s: float | None, tmp_path: Path) -> None:
    samples, epochs = _samples(np.random.default_rng(1))
    _assert_png(plots.power_profile(samples, epochs, change_s, tmp_path / "profile.png"))


def test_power_profile_degenerate(tmp_path: Path) -> None:
    one = pd.DataFrame({"t_s": [0.0], "device": ["gpu:0"], "power_w": [math.nan]})
    _assert_png(plots.power_profile(one, None, None, tmp_path / "a.png"))
    two = pd.DataFrame({"t_s": [0.0, 1.0], "device": ["gpu:0"] * 2, "power_w": [100.0, 101.0]})
    no_epochs = pd.DataFrame(columns=["start_s", "end_s"])
    _assert_png(plots.power_profile(two, no_epochs, 0.5, tmp_path / "b.png"))
    half_epoch = pd.DataFrame({"start_s": [0.0], "end_s": [math.nan]})
    _assert_png(plots.power_profile(two, half_epoch, None, tmp_path / "c.png"))
    empty = pd.DataFrame(columns=["t_s", "device", "power_w"])
    _assert_png(plots.power_profile(empty, None, None, tmp_path / "d.png"))


def test_qq_constant_group_and_many_groups(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "g": list("AAABBCDEFGG"),
            "v": [1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.5],
        }
    )
    _assert_png(plots.qq_by_group(df, "v", "g", tmp_path / "qq.png"))


def test_tradeoff_with_explicit_columns(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"environment": ["a", "b", "c"], "energy_j": [1.0, 2.0, 3.0], "accuracy": [70, 80, 75]}
    )
    front = pareto_front(df, cost="energy_j", benefit="accuracy", by="environment")
    _assert_png(plots.tradeoff(df, front, tmp_path / "t.png"))  # columns from front.attrs
    plain = pd.DataFrame(front.drop(columns=["pareto"]))
    plain.attrs = {}
    _assert_png(
        plots.tradeoff(
            df.iloc[0:0], plain, tmp_path / "u.png", cost="energy_j", benefit="accuracy",
            by="environment",
        )
    )  # fmt: skip


def test_plots_report_bad_columns(tmp_path: Path) -> None:
    df = _table(np.random.default_rng(0))
    with pytest.raises(InputError, match="value='nope'"):
        plots.box_by_group(df, "nope", "architecture", tmp_path / "x.png")
    with pytest.raises(InputError, match="hue='nope'"):
        plots.scatter_fit(df, "gflops", "j_per_image", tmp_path / "x.png", hue="nope")
    with pytest.raises(InputError, match="numbers"):
        plots.effect_lines(df, "batch_size", "architecture", tmp_path / "x.png")
    with pytest.raises(InputError, match="avg_power_w"):
        plots.power_vs_usage(df.drop(columns=["avg_power_w"]), tmp_path / "x.png")
    with pytest.raises(InputError, match="start_s"):
        samples, _ = _samples(np.random.default_rng(0))
        plots.power_profile(samples, pd.DataFrame({"begin": [0.0]}), None, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_style_is_shared(tmp_path: Path) -> None:
    from PIL import Image

    assert plots.STYLE["dpi"] == 110 and plots.STYLE["grid_alpha"] == 0.3
    out = plots.scatter_fit(
        _table(np.random.default_rng(2)), "gflops", "j_per_image", tmp_path / "s.png"
    )
    with Image.open(out) as image:
        width, height = image.size
    fig_w, fig_h = plots.STYLE["figsize"]
    assert (width, height) == (round(fig_w * 110), round(fig_h * 110))
