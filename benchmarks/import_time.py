"""What importing joulecast costs: wall time of fresh interpreters, beside CodeCarbon's.

Each statement runs in a new ``python -c`` process, ``--repeats`` times in rounds (every
statement once per round, so drift spreads evenly), and the best time is kept: the floor is a
bare ``python -c pass``, and "import" is a statement's best time minus the floor's. "x floor"
is the wall time over the floor's; "x codecarbon" the import over ``import codecarbon``'s,
left out (with that row) when CodeCarbon is not installed.
``python -X importtime -c "import joulecast"`` says where the time goes.

    python benchmarks/import_time.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time

FLOOR = "floor: python -c pass"
STATEMENTS = {
    FLOOR: "pass",
    "import joulecast": "import joulecast",
    "from joulecast import measure": "from joulecast import measure",
    "import codecarbon": "import codecarbon",
}
TARGET_S = 0.2  # for `import joulecast`, the interpreter's start included


def wall_s(statement: str) -> float:
    """Seconds a fresh interpreter takes to run ``statement`` and exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per statement")
    args = parser.parse_args()
    statements = dict(STATEMENTS)
    if importlib.util.find_spec("codecarbon") is None:
        del statements["import codecarbon"]
    times: dict[str, list[float]] = {label: [] for label in statements}
    for _ in range(args.repeats):
        for label, statement in statements.items():
            times[label].append(wall_s(statement))
    best = {label: min(ts) for label, ts in times.items()}
    floor = best[FLOOR]
    reference = best.get("import codecarbon")
    print(
        f"best of {args.repeats} fresh processes ({sys.executable}, Python {sys.version.split()[0]})"
    )
    print(f"{'statement':<32}{'wall s':>8}{'import s':>10}{'x floor':>9}{'x codecarbon':>14}")
    for label, seconds in best.items():
        vs_cc = "-"
        if reference is not None and label != FLOOR:
            vs_cc = f"{(seconds - floor) / (reference - floor):.2f}"
        print(
            f"{label:<32}{seconds:>8.3f}{seconds - floor:>10.3f}{seconds / floor:>9.1f}{vs_cc:>14}"
        )
    if reference is None:
        print("codecarbon is not installed (the bench extra): no side-by-side figure")
    verdict = "MET" if best["import joulecast"] < TARGET_S else "MISSED"
    print(f"target: import joulecast under {TARGET_S} s (wall, start included): {verdict}")


if __name__ == "__main__":
    main()
