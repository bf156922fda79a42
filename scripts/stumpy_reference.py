"""Record stumpy's matrix profiles and arc curves that tests/forecast/test_matrix_profile.py
compares joulecast's own numpy implementation with (stumpy compiles its numba kernels on first
use, some 20-40 s per kernel: the tests read the recorded answers instead).

Usage: python scripts/stumpy_reference.py [--check]

Writes tests/data/stumpy/reference.npz: for each case its input ``x`` and stumpy's answer
(``stump`` columns 0-1, ``fluss``'s corrected arc curve). ``--check`` recomputes them with
the installed stumpy and exits 1 where they differ from the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "tests" / "data" / "stumpy" / "reference.npz"


def cases() -> dict[str, np.ndarray]:
    """Every recorded array by name: ``{case}.x`` (the input), ``{case}.distance`` and
    ``{case}.index`` (stump's), ``{case}.cac`` (fluss's, of ``{case}.index`` for the fluss
    cases: joulecast's own profile's nearest neighbours)."""
    import stumpy

    sys.path.insert(0, str(ROOT))
    from joulecast._matrix_profile import matrix_profile
    from joulecast.stability import EXCL_FACTOR
    from tests.forecast.test_matrix_profile import M, parabola, series

    out: dict[str, np.ndarray] = {"stumpy_version": np.array(stumpy.__version__)}
    for kind in ("random", "piecewise", "warm-up", "gaps"):
        x = series(kind, 400, seed=2)
        for normalize in (False, True):
            answer = stumpy.stump(x, M, normalize=normalize)
            name = f"profile-{kind}-{normalize}"
            out[f"{name}.x"] = x
            out[f"{name}.distance"] = answer[:, 0].astype(float)
            out[f"{name}.index"] = answer[:, 1].astype(np.int64)
    for kind in ("random", "piecewise", "gaps"):
        _, index = matrix_profile(series(kind, 500, seed=3), M)
        cac, _ = stumpy.fluss(index, 10, 2, excl_factor=3, custom_iac=parabola(len(index)))
        out[f"fluss-{kind}.index"] = index
        out[f"fluss-{kind}.cac"] = cac
    for normalize in (False, True):
        x = series("warm-up", 2_000, seed=4)
        index = stumpy.stump(x, M, normalize=normalize)[:, 1].astype(np.int64)
        cac, _ = stumpy.fluss(
            index, 10, 2, excl_factor=EXCL_FACTOR, custom_iac=parabola(len(index))
        )
        out[f"change-{normalize}.x"] = x
        out[f"change-{normalize}.cac"] = cac
    return out


def main() -> int:
    fresh = cases()
    if "--check" not in sys.argv[1:]:
        FILE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(FILE, **fresh)
        print(f"wrote {FILE.relative_to(ROOT)}: {len(fresh)} arrays")
        return 0
    with np.load(FILE) as kept:
        differ = [
            k
            for k in fresh
            if k != "stumpy_version" and not np.array_equal(fresh[k], kept[k], equal_nan=True)
        ]
    print("differ: " + ", ".join(differ) if differ else "the recorded answers are stumpy's")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
