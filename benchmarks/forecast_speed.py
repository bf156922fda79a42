"""CLI speed of automatic stabilization: forecast and stability beside show, cold and warm.

(a) A stored 20-epoch run (``simulate.py``: 0.5 s samples, a warm-up transient):
    ``joulecast show RUN`` and ``joulecast forecast RUN --after 10`` (its default stabilizing epoch: auto).
(b) A stored 1,000,000-sample run (``scale.py``'s trace: 4 rows per tick at 10 Hz, 200 epochs):
    ``joulecast show RUN`` and ``joulecast stability RUN``.

Both runs are written as the neutral trace and imported with ``joulecast import trace`` into a
store in a temp dir. Every command runs as ``python -m joulecast ...`` in a fresh process
(``scale.py``'s launcher: wall time from start to exit, Python start and imports included).
Cold is the first run of a command, with cache folders of its own that start empty
(``NUMBA_CACHE_DIR``, ``XDG_CACHE_HOME``, ``MPLCONFIGDIR``); warm is the median of
``--repeats`` runs after it with the same folders. Ratios are to ``show`` on the same run,
cold to cold and warm to warm; the targets are cold <= 4x and warm <= 2x.

    python benchmarks/forecast_speed.py [--rows 1000000] [--repeats 3] [--seed 0]
    python benchmarks/forecast_speed.py --smoke    # a 20,000-row (b), one repeat: checks it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from scale import parse_size, run_child, write_trace
from simulate import simulate_run

EPOCHS_A = 20
AFTER_A = 10
COLD_LIMIT = 4.0
WARM_LIMIT = 2.0
CACHE_VARIABLES = ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "MPLCONFIGDIR")


def write_simulated(folder: Path, seed: int) -> tuple[Path, Path, int]:
    """The neutral trace of a simulated run of :data:`EPOCHS_A` epochs; its sample count."""
    folder.mkdir(parents=True, exist_ok=True)
    run = simulate_run(np.random.default_rng(seed), EPOCHS_A)
    power, phases = folder / "power.csv", folder / "phases.csv"
    run.samples[["t_s", "device", "power_w"]].to_csv(power, index=False)
    run.phases.assign(kind="epoch").to_csv(phases, index=False)
    return power, phases, len(run.samples)


def import_run(store: Path, power: Path, phases: Path, name: str, env: dict[str, str]) -> str:
    """Import a trace with the CLI; returns the run id."""
    argv = [sys.executable, "-m", "joulecast", "import", "trace", "--store", str(store)]
    argv += ["--power", str(power), "--phases", str(phases), "--name", name, "--json"]
    _, _, rc, text = run_child(argv, store.parent / f"import-{name}", env)
    if rc != 0:
        raise SystemExit(f"importing {name} failed: {text}")
    return str(json.loads(text)["run_id"])


def timings(
    argv: list[str], folder: Path, env: dict[str, str], repeats: int
) -> tuple[float, float]:
    """(cold s, warm s) of one command: a first run with empty cache folders, then the median
    of ``repeats`` runs with the same folders."""
    caches = Path(tempfile.mkdtemp(prefix="caches-", dir=folder))
    env = env | {name: str(caches / name.lower()) for name in CACHE_VARIABLES}
    walls = []
    for _ in range(1 + repeats):
        wall, _, rc, text = run_child(argv, folder / "command", env)
        if rc != 0:
            raise SystemExit(f"{' '.join(argv[2:])} failed: {text}")
        walls.append(wall)
    return walls[0], statistics.median(walls[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1M", help="sample rows of run (b) (1M)")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs of each command (3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a 20k-row (b), one repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.repeats = "20k", 1
    rows = parse_size(args.rows)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULECAST_")}
    with tempfile.TemporaryDirectory(prefix="forecast-speed-") as tmp:
        work = Path(tmp)
        store = work / "runs.db"
        print(f"[a] simulating and importing a {EPOCHS_A}-epoch run", file=sys.stderr)
        power, phases, samples_a = write_simulated(work / "a", args.seed)
        run_a = import_run(store, power, phases, "a", env)
        print(f"[b] writing and importing {rows:,} rows", file=sys.stderr)
        power, phases = write_trace(work / "b", rows, args.seed)
        run_b = import_run(store, power, phases, "b", env)
        jc = [sys.executable, "-m", "joulecast"]
        where = ["--store", str(store)]
        forecast = ["forecast", "--after", str(AFTER_A)]
        plan = [
            (f"(a) {EPOCHS_A} epochs, {samples_a:,} samples", "show", ["show", *where, run_a]),
            ("", " ".join(forecast), [*forecast, *where, run_a]),
            (f"(b) {rows:,} samples", "show", ["show", *where, run_b]),
            ("", "stability", ["stability", *where, run_b]),
        ]
        figures = []
        for run, label, command in plan:
            print(f"  {label}", file=sys.stderr)
            figures.append((run, label, *timings([*jc, *command], work, env, args.repeats)))
    print(
        f"{'run':<30} {'command':<40} {'cold s':>7} {'warm s':>7} {'cold/show':>9} {'warm/show':>9}"
    )
    checks = []
    for run, label, cold, warm in figures:
        if label == "show":
            show_cold, show_warm = cold, warm
        ratios = (cold / show_cold, warm / show_warm)
        print(
            f"{run:<30} {label:<40} {cold:>7.2f} {warm:>7.2f} {ratios[0]:>8.2f}x {ratios[1]:>8.2f}x"
        )
        if label != "show":
            checks.append((label, ratios))
    for label, (cold, warm) in checks:
        verdict = "PASS" if cold <= COLD_LIMIT and warm <= WARM_LIMIT else "FAIL"
        print(
            f"target {label}: cold {cold:.2f}x <= {COLD_LIMIT:g}x and warm {warm:.2f}x <= "
            f"{WARM_LIMIT:g}x show: {verdict}"
        )
    print(
        f"cold: the first run, cache folders empty; warm: median of {args.repeats} runs after "
        f"it; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
