"""Tests of joulecast.analysis.stats: agreement with scipy and scikit-posthocs, and hand-computed
small cases (del Rey et al. 2024, section 3.7)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from joulecast.analysis import stats
from joulecast.errors import InputError

# Three groups of three values with one tie (the two 3s), used by several hand computations.
HAND = pd.DataFrame({"g": list("AAABBBCCC"), "v": [1.0, 2, 3, 3, 4, 5, 6, 7, 8]})


def _frame(groups: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        {"g": np.repeat(list(groups), [len(x) for x in groups.values()]),
         "v": np.concatenate(list(groups.values()))}
    )  # fmt: skip


@pytest.fixture
def skewed() -> dict[str, np.ndarray]:
    """Four unequal, skewed groups with ties (values rounded to 1 decimal)."""
    rng = np.random.default_rng(7)
    sizes = {"MobileNet": 12, "NASNet": 9, "ResNet": 15, "VGG": 11}
    shift = {"MobileNet": 0.0, "NASNet": 0.4, "ResNet": 0.5, "VGG": 1.5}
    return {g: np.round(rng.exponential(1.0, n) + shift[g], 1) for g, n in sizes.items()}


# --- assumption checks ------------------------------------------------------------------------


def test_shapiro_matches_scipy_per_group(skewed: dict[str, np.ndarray]) -> None:
    out = stats.shapiro_by_group(_frame(skewed), "v", "g")
    assert list(out.columns) == ["group", "n", "W", "p", "normal", "note"]
    assert list(out["group"]) == sorted(skewed)
    for row in out.itertuples():
        ref = sps.shapiro(skewed[row.group])
        assert row.n == len(skewed[row.group])
        assert (row.W, row.p) == pytest.approx((ref.statistic, ref.pvalue))
        assert row.normal == (ref.pvalue >= 0.05)
        assert row.note == ""


def test_shapiro_small_and_constant_groups_get_a_note() -> None:
    df = pd.DataFrame(
        {"g": ["a", "a", "b", "b", "b", "c", "c", "c"], "v": [1, 2, 5, 5, 5, 1, 2, 4]}
    )
    out = stats.shapiro_by_group(df, "v", "g").set_index("group")
    assert math.isnan(out.loc["a", "W"]) and math.isnan(out.loc["a", "p"])
    assert "n = 2" in out.loc["a", "note"] and "at least 3" in out.loc["a", "note"]
    assert pd.isna(out.loc["a", "normal"])
    assert "all values are equal" in out.loc["b", "note"]
    assert out.loc["c", "note"] == "" and out.loc["c", "W"] == pytest.approx(
        sps.shapiro([1, 2, 4]).statistic
    )


@pytest.mark.parametrize("center", ["median", "mean"])
def test_levene_matches_scipy(skewed: dict[str, np.ndarray], center: str) -> None:
    out = stats.levene(_frame(skewed), "v", "g", center=center)  # type: ignore[arg-type]
    ref = sps.levene(*(skewed[g] for g in sorted(skewed)), center=center)
    assert len(out) == 1
    row = out.iloc[0]
    assert row["statistic"] == pytest.approx(ref.statistic)
    assert row["p"] == pytest.approx(ref.pvalue)
    assert bool(row["equal_variances"]) == (ref.pvalue >= 0.05)
    assert (row["k"], row["n"], row["center"]) == (4, 47, center)


def test_levene_with_one_group_says_so() -> None:
    row = stats.levene(HAND[HAND.g == "A"], "v", "g").iloc[0]
    assert math.isnan(row["p"]) and "at least 2" in row["note"]


# --- omnibus tests ----------------------------------------------------------------------------


def test_kruskal_matches_scipy(skewed: dict[str, np.ndarray]) -> None:
    row = stats.kruskal(_frame(skewed), "v", "g").iloc[0]
    ref = sps.kruskal(*skewed.values())
    assert row["H"] == pytest.approx(ref.statistic)
    assert row["p"] == pytest.approx(ref.pvalue)
    assert (row["df"], row["k"], row["n"]) == (3, 4, 47)
    assert row["eta_squared"] == pytest.approx((ref.statistic - 4 + 1) / (47 - 4))


def test_kruskal_and_eta_squared_by_hand() -> None:
    # Pooled and ranked: 1→1, 2→2, 3,3→3.5, 4→5, 5→6, 6→7, 7→8, 8→9 (N = 9).
    # Rank sums: A = 1 + 2 + 3.5 = 6.5, B = 3.5 + 5 + 6 = 14.5, C = 7 + 8 + 9 = 24.
    # H_raw = 12 / (9·10) · (6.5² + 14.5² + 24²) / 3 - 3·10 = 0.1333… · 276.1667 - 30 = 6.822222
    # Tie correction C = 1 - (2³ - 2) / (9³ - 9) = 1 - 6/720 = 0.9916667, H = 6.879552.
    # eta² = (H - k + 1) / (n - k) = (6.879552 - 2) / 6 = 0.813259: large (>= 0.14).
    row = stats.kruskal(HAND, "v", "g").iloc[0]
    assert row["H"] == pytest.approx(6.879552, abs=1e-6)
    assert row["eta_squared"] == pytest.approx(0.813259, abs=1e-6)
    assert row["effect"] == "large"
    assert row["note"] == ""


@pytest.mark.parametrize(
    ("eta", "label"),
    [(-0.02, "negligible"), (0.0099, "negligible"), (0.01, "small"), (0.059, "small"),
     (0.06, "medium"), (0.139, "medium"), (0.14, "large"), (0.92, "large"), (math.nan, "")],
)  # fmt: skip
def test_eta_squared_thresholds(eta: float, label: str) -> None:
    assert stats.eta_squared_effect(eta) == label


def test_anova_matches_f_oneway_and_hand_eta_squared(skewed: dict[str, np.ndarray]) -> None:
    row = stats.one_way_anova(_frame(skewed), "v", "g").iloc[0]
    ref = sps.f_oneway(*skewed.values())
    assert row["F"] == pytest.approx(ref.statistic)
    assert row["p"] == pytest.approx(ref.pvalue)
    assert (row["df_between"], row["df_within"]) == (3, 43)
    # A = [1, 2, 3], B = [4, 5, 6]: grand mean 3.5, SS_between = 3·1.5² + 3·1.5² = 13.5,
    # SS_total = 2.5² + 1.5² + 0.5² + 0.5² + 1.5² + 2.5² = 17.5, eta² = 13.5/17.5 = 0.771429;
    # SS_within = 4, F = (13.5 / 1) / (4 / 4) = 13.5.
    df = pd.DataFrame({"g": list("AAABBB"), "v": [1.0, 2, 3, 4, 5, 6]})
    row = stats.one_way_anova(df, "v", "g").iloc[0]
    assert row["eta_squared"] == pytest.approx(13.5 / 17.5)
    assert row["F"] == pytest.approx(13.5)


def test_omnibus_tests_on_degenerate_data_say_why() -> None:
    same = pd.DataFrame({"g": list("AAABBB"), "v": [2.0] * 6})
    assert "all values are equal" in stats.kruskal(same, "v", "g").iloc[0]["note"]
    flat = pd.DataFrame({"g": list("AAABBB"), "v": [1.0] * 3 + [2.0] * 3})
    row = stats.one_way_anova(flat, "v", "g").iloc[0]
    assert math.isnan(row["F"]) and "no spread" in row["note"]
    assert "at least 2" in stats.kruskal(HAND[HAND.g == "A"], "v", "g").iloc[0]["note"]


# --- post-hoc tests ---------------------------------------------------------------------------


def test_dunn_by_hand() -> None:
    # Mean ranks (see test_kruskal_and_eta_squared_by_hand): A = 6.5/3 = 2.1667,
    # B = 14.5/3 = 4.8333, C = 24/3 = 8. One tie of size 2: sum(t³ - t) = 6.
    # sigma² = [N(N+1)/12 - 6 / (12 (N - 1))] (1/3 + 1/3) = (7.5 - 0.0625) · 2/3 = 4.958333,
    # sigma = 2.226732.
    # A-B: z = -2.6667 / 2.226732 = -1.197570, p = 2 (1 - Phi(1.197570)) = 0.231084
    # A-C: z = -5.8333 / 2.226732 = -2.619684, p = 0.008801
    # B-C: z = -3.1667 / 2.226732 = -1.422114, p = 0.154993
    # Holm, m = 3: 0.008801·3 = 0.026403; 0.154993·2 = 0.309986; max(0.231084, 0.309986).
    out = stats.dunn(HAND, "v", "g")
    assert list(zip(out["group_a"], out["group_b"], strict=True)) == [
        ("A", "B"),
        ("A", "C"),
        ("B", "C"),
    ]
    assert out["z"].tolist() == pytest.approx([-1.197570, -2.619684, -1.422114], abs=1e-6)
    assert out["p"].tolist() == pytest.approx([0.231084, 0.008801, 0.154993], abs=1e-6)
    assert out["p_adjusted"].tolist() == pytest.approx([0.309986, 0.026403, 0.309986], abs=1e-6)
    assert out["significant"].tolist() == [False, True, False]
    assert out["median_a"].tolist() == [2.0, 2.0, 4.0]
    assert out["median_b"].tolist() == [4.0, 7.0, 7.0]
    assert out["r"].tolist() == pytest.approx(out["z"] / math.sqrt(6))


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh", "none"])
def test_dunn_matches_scikit_posthocs(skewed: dict[str, np.ndarray], method: str) -> None:
    sp = pytest.importorskip("scikit_posthocs")
    df = _frame(skewed)
    ref = sp.posthoc_dunn(
        df, val_col="v", group_col="g", p_adjust=None if method == "none" else method
    )
    out = stats.dunn(df, "v", "g", p_adjust=method)  # type: ignore[arg-type]
    assert len(out) == 6
    for row in out.itertuples():
        assert row.p_adjusted == pytest.approx(ref.loc[row.group_a, row.group_b], rel=1e-9)
    if method == "none":
        assert out["p"].tolist() == pytest.approx(out["p_adjusted"].tolist())


def test_adjust_p_matches_statsmodels() -> None:
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.001, 0.04, 0.9])
    for method in ("holm", "bonferroni", "fdr_bh"):
        assert stats.adjust_p(p, method) == pytest.approx(multipletests(p, method=method)[1])
    # Holm by hand on [0.01, 0.04, 0.03]: sorted 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 → 0.06.
    assert stats.adjust_p([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    with_nan = stats.adjust_p([0.01, math.nan, 0.02], "bonferroni")
    assert with_nan[0] == pytest.approx(0.02) and math.isnan(with_nan[1])
    with pytest.raises(InputError, match="p_adjust='sidak'"):
        stats.adjust_p(p, "sidak")


def test_tukey_matches_scipy(skewed: dict[str, np.ndarray]) -> None:
    out = stats.tukey(_frame(skewed), "v", "g")
    names = sorted(skewed)
    ref = sps.tukey_hsd(*(skewed[g] for g in names))
    assert len(out) == 6
    for row in out.itertuples():
        i, j = names.index(row.group_a), names.index(row.group_b)
        assert row.mean_diff == pytest.approx(ref.statistic[i, j])
        assert row.p_adjusted == pytest.approx(ref.pvalue[i, j])


# --- correlation ------------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_spearman_matches_scipy(alternative: str) -> None:
    rng = np.random.default_rng(3)
    gflops = rng.uniform(0.3, 15.5, 40).round(1)
    energy = 0.02 * gflops + rng.normal(0, 0.05, 40)
    df = pd.DataFrame({"gflops": gflops, "energy": energy})
    df.loc[5, "energy"] = np.nan  # dropped pairwise
    row = stats.spearman(df, "gflops", "energy", alternative).iloc[0]  # type: ignore[arg-type]
    keep = df.dropna()
    ref = sps.spearmanr(keep["gflops"], keep["energy"], alternative=alternative)
    assert row["rho"] == pytest.approx(ref.statistic)
    assert row["p"] == pytest.approx(ref.pvalue)
    assert (row["n"], row["alternative"]) == (39, alternative)
    assert row["strength"] in ("strong", "very strong", "moderate")


def test_spearman_small_or_constant_input_says_why() -> None:
    two = pd.DataFrame({"x": [1.0, 2.0], "y": [1.0, 3.0]})
    assert "at least 3" in stats.spearman(two, "x", "y").iloc[0]["note"]
    flat = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1.0, 1.0, 1.0]})
    row = stats.spearman(flat, "x", "y").iloc[0]
    assert math.isnan(row["rho"]) and "'y' is constant" in row["note"]
    with pytest.raises(InputError, match="alternative='up'"):
        stats.spearman(flat, "x", "y", "up")  # type: ignore[arg-type]


# --- compare_groups and paper_table -----------------------------------------------------------


def _forty_percent_lower(noise: str) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    base = {"A": 1.0, "B": 0.6, "C": 1.0}  # B uses 40 % less energy per image
    rows = []
    for g, level in base.items():
        if noise == "skewed":
            x = level * (1 + rng.exponential(0.08, 30))
        else:
            x = rng.normal(level, 0.05, 30)
        rows += [{"architecture": g, "j_per_image": v} for v in x]
    return pd.DataFrame(rows)


def test_forty_percent_lower_group_is_found_nonparametric() -> None:
    comp = stats.compare_groups(
        _forty_percent_lower("skewed"), "j_per_image", "architecture",
        value_label="J/image", group_label="architectures",
    )  # fmt: skip
    assert comp.test == "kruskal" and comp.posthoc_test == "dunn"
    assert "not normal" in comp.reason
    assert comp.significant and comp.result.iloc[0]["effect"] == "large"
    pairs = comp.posthoc.set_index(["group_a", "group_b"])["significant"]
    assert pairs[("A", "B")] and pairs[("B", "C")] and not pairs[("A", "C")]
    summary = comp.summary()
    assert summary.startswith("J/image differs between architectures (Kruskal-Wallis H = ")
    assert "p < 0.001" in summary and "large" in summary
    assert "Dunn (Holm): 2 of 3 pairs differ, not A-C" in summary


def test_forty_percent_lower_group_is_found_parametric() -> None:
    comp = stats.compare_groups(_forty_percent_lower("normal"), "j_per_image", "architecture")
    assert comp.shapiro["normal"].all() and bool(comp.levene.iloc[0]["equal_variances"])
    assert comp.test == "anova" and comp.posthoc_test == "tukey"
    assert comp.significant and comp.result.iloc[0]["effect"] == "large"
    assert comp.summary().startswith(
        "j_per_image differs between architecture groups (ANOVA F(2, 87)"
    )


def test_single_run_group_is_too_small() -> None:
    df = pd.concat([HAND, pd.DataFrame({"g": ["D"], "v": [9.0]})], ignore_index=True)
    comp = stats.compare_groups(df, "v", "g")
    assert comp.test == "none" and not comp.tested and not comp.significant
    assert "too small" in comp.reason and "D (n = 1)" in comp.reason
    assert comp.result.empty and comp.posthoc.empty and math.isnan(comp.p)
    assert comp.summary() == (
        "v between g groups: not tested, too small: each group needs at least 3 runs; D (n = 1)."
    )
    assert stats.paper_table(comp).empty
    assert stats.paper_table(comp, "test").iloc[0]["test"] == "none"


def test_identical_values_are_not_testable() -> None:
    comp = stats.compare_groups(HAND.assign(v=1.0), "v", "g")
    assert comp.test == "none" and not comp.significant
    assert comp.summary() == (
        "v between g groups: not tested, not testable: all values are equal: "
        "Kruskal-Wallis is undefined."
    )


@pytest.mark.parametrize(
    "df", [pd.DataFrame(), pd.DataFrame({"g": [], "v": []})], ids=["bare", "columns"]
)
def test_empty_frame_is_too_small(df: pd.DataFrame) -> None:
    comp = stats.compare_groups(df, "v", "g")
    assert comp.test == "none"
    assert comp.reason == "too small: 0 groups: a comparison needs at least 2"
    assert "not tested" in comp.summary()
    assert stats.kruskal(df, "v", "g").iloc[0]["k"] == 0
    assert stats.dunn(df, "v", "g").empty
    assert stats.shapiro_by_group(df, "v", "g").empty


def test_paper_table_layouts(skewed: dict[str, np.ndarray]) -> None:
    df = _frame(skewed)
    df["gpu"] = df["v"] * 10 + np.arange(len(df)) % 3
    energy = stats.compare_groups(df, "v", "g", value_label="Energy")
    gpu = stats.compare_groups(df, "gpu", "g", value_label="GPU usage")

    groups = stats.paper_table([energy, gpu], "groups")  # Tables 3-5
    assert len(groups) == 8 and groups["variable"].tolist() == ["Energy"] * 4 + ["GPU usage"] * 4
    first = groups.iloc[0]
    assert first["shapiro_W"] == pytest.approx(sps.shapiro(skewed["MobileNet"]).statistic)
    assert first["levene_p"] == pytest.approx(energy.levene.iloc[0]["p"])

    test = stats.paper_table([energy, gpu], "test")  # Table 7
    assert test["statistic_name"].tolist() == ["H", "H"]
    assert test.iloc[0]["statistic"] == pytest.approx(energy.result.iloc[0]["H"])

    pairs = stats.paper_table(energy)  # Dunn's results, one row per pair
    assert len(pairs) == 6 and set(pairs["statistic_name"]) == {"z"}
    row = pairs.iloc[0]
    expected = 100 * (row["median_b"] - row["median_a"]) / row["median_a"]
    assert row["median_change_pct"] == pytest.approx(expected)
    assert pairs["p_adjusted"].tolist() == energy.posthoc["p_adjusted"].tolist()
    with pytest.raises(InputError, match="kind='wide'"):
        stats.paper_table(energy, "wide")  # type: ignore[arg-type]


def test_groups_follow_category_order_and_missing_rows_are_dropped() -> None:
    df = HAND.copy()
    df["g"] = pd.Categorical(df["g"], categories=["C", "B", "A", "Z"])
    df.loc[len(df)] = ["A", np.nan]
    out = stats.shapiro_by_group(df, "v", "g")
    assert out["group"].tolist() == ["C", "B", "A"] and out["n"].tolist() == [3, 3, 3]


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(InputError, match="value='energy' is not a column"):
        stats.kruskal(HAND, "energy", "g")
    with pytest.raises(InputError, match="by='arch' is not a column"):
        stats.dunn(HAND, "v", "arch")
    with pytest.raises(InputError, match="must hold numbers"):
        stats.kruskal(HAND.assign(v="x"), "v", "g")
    with pytest.raises(InputError, match="infinite"):
        stats.kruskal(HAND.assign(v=np.inf), "v", "g")
    with pytest.raises(InputError, match="p_adjust='hochberg'"):
        stats.dunn(HAND, "v", "g", p_adjust="hochberg")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"alpha=1\.5"):
        stats.compare_groups(HAND, "v", "g", alpha=1.5)
