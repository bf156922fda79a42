"""The matrix profile of a series and FLUSS's corrected arc curve, in numpy.

:func:`matrix_profile` is the self-join of ``stumpy.stump(T, m, normalize=...)`` (``k = 1``):
for each subsequence of length ``m``, the distance to its nearest neighbour outside the
exclusion zone (``|i - j| <= ceil(m / 4)``) and that neighbour's index. Without normalization
the distance is Euclidean (``stumpy.aamp``); with it, the Euclidean distance of the
z-normalized subsequences, ``sqrt(2 m (1 - pearson))``, where two constant subsequences are at
distance 0 and a constant one is at ``sqrt(m)`` from any other (pearson 0.5). A subsequence
holding a non-finite value matches nothing: distance inf, index -1. Of neighbours at equal
computed distances the nearest in time wins, and of two as near the earlier, as in stumpy; the
rounding is not stumpy's, so copies of one subsequence, at the same exact distance, can be
told apart otherwise.

The distance matrix is formed one block of rows at a time, each row's distances to all
subsequences as one matrix product (``|a|^2 + |b|^2 - 2 a.b`` for the plain distance, the
inner product of the z-normalized subsequences for the normalized one), so memory holds a block
of at most :data:`BLOCK_BYTES` whatever the series' length; time grows with its square.

:func:`corrected_arc_curve` is stumpy's ``_cac`` (the curve of ``stumpy.fluss``) with a given
ideal arc curve.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

# stumpy's config.STUMPY_EXCL_ZONE_DENOM: the exclusion zone is ceil(m / 4) either side.
EXCL_ZONE_DENOM = 4
# stumpy's config.STUMPY_P_NORM_THRESHOLD: squared distances below it are 0.
P_NORM_THRESHOLD = 1e-14
BLOCK_BYTES = 16 * 2**20


def matrix_profile(
    series: np.ndarray, m: int, *, normalize: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each subsequence of length ``m`` to its nearest neighbour, and its index.

    Args:
        series: the values, one dimension.
        m: the subsequence length (at least 3, at most ``len(series)``).
        normalize: compare z-normalized subsequences instead of the raw ones.

    Returns:
        The distances (``len(series) - m + 1``, inf where there is no neighbour) and the
        neighbours' indices (-1 where there is none).

    Raises:
        ValueError: ``m`` is under 3 or longer than the series.
    """
    values = np.asarray(series, dtype=np.float64)
    if m < 3:
        raise ValueError(f"the subsequence length m must be at least 3, got {m}")
    if m > len(values):
        raise ValueError(f"the subsequence length m={m} exceeds the series' {len(values)} points")
    finite = np.isfinite(values)
    # Centring changes no distance and keeps the norms, and so the rounding, small.
    centre = float(values[finite].mean()) if finite.any() else 0.0
    windows = sliding_window_view(np.where(finite, values - centre, 0.0), m)
    usable = sliding_window_view(finite, m).all(axis=1)
    # Subsequences with a non-finite value: an infinite cost as a neighbour.
    barred = np.where(usable, 0.0, np.inf)[:, None]
    ones = np.ones((len(windows), 1))
    if normalize:
        constant = (np.ptp(windows, axis=1) == 0) & usable
        spread = np.where(constant, 1.0, windows.std(axis=1))
        z = (windows - windows.mean(axis=1, keepdims=True)) / spread[:, None]
        z[constant] = 0.0
        c = constant[:, None].astype(np.float64)
        # cost = -pearson, pearson = z_i.z_j / m + (c_i + c_j) / 2 (z is 0 where constant):
        # stumpy's 1 for two constant subsequences and 0.5 for one.
        rows = np.hstack([z, c, ones, ones])
        cols = np.hstack([-z / m, -0.5 * ones, -0.5 * c, barred])
    else:
        norm = np.einsum("ij,ij->i", windows, windows)[:, None]
        rows = np.hstack([windows, ones, norm])
        cols = np.hstack([-2.0 * windows, norm + barred, ones])
    # The products are too thin for BLAS threads to pay, and on a busy machine their waiting
    # for each other costs several times the work.
    with threadpool_limits(1, user_api="blas"):
        cost, index = _nearest(rows, cols, math.ceil(m / EXCL_ZONE_DENOM))
    p_norm = np.abs(2 * m * (1 + np.maximum(-1.0, cost))) if normalize else np.maximum(cost, 0.0)
    p_norm[p_norm < P_NORM_THRESHOLD] = 0.0
    none = ~usable | ~np.isfinite(cost)
    p_norm[none] = np.inf
    index[none] = -1
    return np.sqrt(p_norm), index


def _nearest(rows: np.ndarray, cols: np.ndarray, excl: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row i of ``rows @ cols.T``, the lowest value at ``|i - j| > excl`` and its column j.

    Ties go to the smallest ``|i - j|``, and to ``j < i`` at equal ``|i - j|``: the columns
    left of the diagonal are scanned from the diagonal outwards (a product with the columns
    reversed), those right of it likewise, and ``argmin`` keeps the first of equal values.
    """
    n = len(rows)
    right_t = np.ascontiguousarray(cols.T)
    left_t = np.ascontiguousarray(right_t[:, ::-1])
    block = max(1, min(n, BLOCK_BYTES // (8 * n)))
    # below[a, c]: column c is within the exclusion zone of the block's row a (right side).
    below = np.tri(block, block, -1, dtype=bool)
    # One buffer for every tile: a fresh allocation of this size costs its page faults anew.
    buffer = np.empty(block * n)
    best = np.full(n, np.inf)
    index = np.full(n, -1, dtype=np.int64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        size = stop - start
        i = np.arange(start, stop)
        # Right of the diagonal: columns start + excl + 1 .. n - 1, in order.
        right_v, right_j = np.full(size, np.inf), np.full(size, n, dtype=np.int64)
        first = start + excl + 1
        if first < n:
            tile = _product(rows[start:stop], right_t[:, first:], buffer)
            width = min(size, tile.shape[1])
            tile[:, :width][below[:size, :width]] = np.inf
            pos = tile.argmin(axis=1)
            right_v, right_j = tile[np.arange(size), pos], pos + first
        # Left of the diagonal: columns stop - excl - 2 down to 0.
        left_v, left_j = np.full(size, np.inf), np.full(size, -n, dtype=np.int64)
        last = stop - excl - 2
        if last >= 0:
            tile = _product(rows[start:stop], left_t[:, n - 1 - last :], buffer)
            width = min(size, tile.shape[1])
            tile[:, :width][below[:size, :size][::-1, :width]] = np.inf
            pos = tile.argmin(axis=1)
            left_v, left_j = tile[np.arange(size), pos], last - pos
        left = (left_v < right_v) | ((left_v == right_v) & (i - left_j <= right_j - i))
        best[start:stop] = np.where(left, left_v, right_v)
        index[start:stop] = np.where(left, left_j, right_j)
    index[~np.isfinite(best)] = -1
    return best, index


def _product(a: np.ndarray, b: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """``a @ b``, written into the start of ``buffer``."""
    out = buffer[: a.shape[0] * b.shape[1]].reshape(a.shape[0], b.shape[1])
    return np.matmul(a, b, out=out)


def corrected_arc_curve(
    index: np.ndarray, L: int, iac: np.ndarray, *, excl_factor: int
) -> np.ndarray:
    """FLUSS's corrected arc curve of the matrix profile indices ``index``.

    The count of nearest-neighbour arcs (i to ``index[i]``; none where it is negative) that
    pass over each point, over the ideal arc curve ``iac`` (0 read as 1e-10), capped at 1, and
    1 over the first and last ``excl_factor * L`` points.
    """
    k = len(index)
    own = np.arange(k, dtype=np.int64)
    target = np.asarray(index, dtype=np.int64)
    target = np.where(target < 0, own, target)
    arcs = np.bincount(np.minimum(own, target), minlength=k)
    arcs -= np.bincount(np.maximum(own, target), minlength=k)
    ideal = np.asarray(iac, dtype=np.float64)
    cac = np.cumsum(arcs) / np.where(ideal == 0.0, 1e-10, ideal)
    cac[cac > 1.0] = 1.0
    if excl_factor > 0:
        cac[: L * excl_factor] = 1.0
        cac[-L * excl_factor :] = 1.0
    return cac
