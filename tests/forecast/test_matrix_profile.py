"""The numpy matrix profile and arc curve against a naive reference and against stumpy's
recorded answers (scripts/stumpy_reference.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import joulecast._matrix_profile as mp
from joulecast._matrix_profile import corrected_arc_curve, matrix_profile

M = 10
# |a|^2 + |b|^2 - 2 a.b rounds to ~1e-12 of the squared norms where two subsequences are the
# same (a plateau), and the root makes that ~1e-6.
ATOL = 1e-5
REFERENCE = Path(__file__).parents[1] / "data" / "stumpy" / "reference.npz"


def naive_profile(
    x: np.ndarray, m: int, normalize: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest neighbour of each row of the whole distance matrix, from the subsequences'
    differences (ties to the smallest |i - j|, then to j < i): distances, indices, matrix."""
    finite = np.isfinite(x)
    w = sliding_window_view(np.where(finite, x, 0.0), m)
    usable = sliding_window_view(finite, m).all(axis=1)
    if normalize:
        constant = (np.ptp(w, axis=1) == 0) & usable
        spread = np.where(constant, 1.0, w.std(axis=1))
        w = (w - w.mean(axis=1, keepdims=True)) / spread[:, None]
        w[constant] = 0.0
    d = np.sqrt(((w[:, None, :] - w[None, :, :]) ** 2).sum(axis=-1))
    if normalize:
        d[constant[:, None] & constant[None, :]] = 0.0
        d[constant[:, None] ^ constant[None, :]] = math.sqrt(m)
    i = np.arange(len(w))
    gap = np.abs(i[:, None] - i[None, :])
    d[gap <= math.ceil(m / 4)] = np.inf
    d[~usable, :] = np.inf
    d[:, ~usable] = np.inf
    index = np.full(len(w), -1)
    for row in range(len(w)):
        if np.isfinite(d[row]).any():
            index[row] = np.lexsort((i > row, gap[row], d[row]))[0]
    return d[i, index], index, d


def series(kind: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if kind == "random":
        return rng.normal(0.0, 1.0, n)
    if kind == "piecewise":  # two plateaus around a noisy stretch
        noisy = 180.0 + rng.normal(0.0, 3.0, n)
        return np.where(t < n // 3, 100.0, np.where(t < 2 * n // 3, noisy, 150.0))
    if kind == "warm-up":
        return np.where(t < n // 4, 120 + 100 * t / (n // 4), 250) + rng.normal(0, 5, n)
    x = rng.normal(0.0, 1.0, n)  # "gaps": a NaN and an inf
    x[[n // 5, n // 2]] = [np.nan, np.inf]
    return x


def parabola(k: int) -> np.ndarray:
    """The ideal arc curve find_change divides by."""
    i = np.arange(k, dtype=float)
    return np.maximum(2.0 * i * (k - i) / k, 1e-9)


def unique_rows(d: np.ndarray) -> np.ndarray:
    """Rows whose nearest neighbour is clearly nearer than the next one."""
    first, second = np.sort(d, axis=1)[:, :2].T
    found = np.isfinite(first)
    return found & (second - np.where(found, first, 0.0) > 1e-6 * (1 + first))


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("kind", ["random", "piecewise", "warm-up", "gaps"])
def test_profile_matches_the_naive_one(kind: str, normalize: bool) -> None:
    x = series(kind, 300)
    distance, index = matrix_profile(x, M, normalize=normalize)
    want_d, want_i, d = naive_profile(x, M, normalize)
    assert distance.shape == index.shape == (300 - M + 1,)
    np.testing.assert_allclose(distance, want_d, rtol=1e-9, atol=ATOL)
    unique = unique_rows(d)
    assert unique.sum() > 50  # not a vacuous check: a third of the piecewise rows at least
    np.testing.assert_array_equal(index[unique], want_i[unique])
    none = ~np.isfinite(want_d)
    assert (index[none] == -1).all() and (kind == "gaps") == none.any()
    # Where the neighbour is not unique, the one found is at the same distance.
    found = index >= 0
    np.testing.assert_allclose(d[found, index[found]], want_d[found], rtol=1e-9, atol=ATOL)


@pytest.mark.parametrize("normalize", [False, True])
def test_blocks_of_any_size_give_the_same_profile(monkeypatch, normalize: bool) -> None:
    x = series("warm-up", 203, seed=1)
    whole = matrix_profile(x, M, normalize=normalize)
    for rows in (1, 2, 7, 50):
        monkeypatch.setattr(mp, "BLOCK_BYTES", 8 * (203 - M + 1) * rows)
        part = matrix_profile(x, M, normalize=normalize)
        np.testing.assert_array_equal(part[1], whole[1])
        np.testing.assert_allclose(part[0], whole[0], rtol=1e-12)


def test_equal_neighbours_go_to_the_nearest_earlier_one() -> None:
    # Z-normalized, every constant subsequence is at distance 0 from every other.
    x = np.concatenate([np.full(40, 5.0), np.sin(np.arange(40.0))])
    distance, index = matrix_profile(x, M, normalize=True)
    flat = np.arange(40 - M + 1)
    assert (distance[flat] == 0).all()
    gap = math.ceil(M / 4) + 1
    assert index[:gap].tolist() == list(range(gap, 2 * gap))  # nothing on the left
    assert (index[flat[gap:]] == flat[gap:] - gap).all()


def test_no_neighbour_outside_the_exclusion_zone() -> None:
    distance, index = matrix_profile(np.array([1.0, 2.0, 4.0, 8.0]), 3)
    assert np.isinf(distance).all() and (index == -1).all()


def test_window_length_is_checked() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        matrix_profile(np.arange(10.0), 2)
    with pytest.raises(ValueError, match="exceeds"):
        matrix_profile(np.arange(10.0), 11)


def test_arc_curve_counts_the_arcs_over_each_point() -> None:
    # Arcs 0-2, 1-3 (each twice) and none from 4 (-1).
    index = np.array([2, 3, 0, 1, -1])
    cac = corrected_arc_curve(index, 1, np.full(5, 4.0), excl_factor=0)
    assert cac.tolist() == [0.5, 1.0, 0.5, 0.0, 0.0]
    capped = corrected_arc_curve(index, 1, np.array([1.0, 0.0, 8.0, 8.0, 8.0]), excl_factor=1)
    assert capped.tolist() == [1.0, 1.0, 0.25, 0.0, 1.0]


@pytest.fixture(scope="module")
def stumpy_said() -> Iterator[Any]:
    """stumpy 1.14's answers, recorded by scripts/stumpy_reference.py (which also checks them
    against the installed stumpy): its kernels take 20-40 s each to compile."""
    with np.load(REFERENCE) as recorded:
        yield {key: recorded[key] for key in recorded.files}


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("kind", ["random", "piecewise", "warm-up", "gaps"])
def test_profile_matches_stumpy(stumpy_said: Any, kind: str, normalize: bool) -> None:
    case = f"profile-{kind}-{normalize}"
    x = stumpy_said[f"{case}.x"]
    np.testing.assert_array_equal(x, series(kind, 400, seed=2))  # the cases are these
    distance, index = matrix_profile(x, M, normalize=normalize)
    np.testing.assert_allclose(distance, stumpy_said[f"{case}.distance"], rtol=1e-9, atol=ATOL)
    unique = unique_rows(naive_profile(x, M, normalize)[2])
    np.testing.assert_array_equal(index[unique], stumpy_said[f"{case}.index"][unique])


@pytest.mark.parametrize("kind", ["random", "piecewise", "gaps"])
def test_arc_curve_matches_stumpy_fluss(stumpy_said: Any, kind: str) -> None:
    _, index = matrix_profile(series(kind, 500, seed=3), M)
    np.testing.assert_array_equal(index, stumpy_said[f"fluss-{kind}.index"])
    iac = parabola(len(index))
    want = stumpy_said[f"fluss-{kind}.cac"]
    np.testing.assert_array_equal(corrected_arc_curve(index, 10, iac, excl_factor=3), want)


@pytest.mark.parametrize("normalize", [False, True])
def test_find_change_gives_what_stumpy_gave(stumpy_said: Any, normalize: bool) -> None:
    from joulecast.stability import find_change

    x = stumpy_said[f"change-{normalize}.x"]
    np.testing.assert_array_equal(x, series("warm-up", 2_000, seed=4))
    loc, cac, _ = find_change(x, normalize=normalize)
    np.testing.assert_array_equal(cac, stumpy_said[f"change-{normalize}.cac"])
    assert normalize or loc is not None
