"""Time of the report over a large store: 2,000 runs of 10,000 samples each.

Builds a synthetic study (joulecast.analysis.data.synthetic_store) once, then times, in one
process: the run table, the cleaning, and the whole report (figures, statistics, FLUSS on a
sample of runs, forecasts, offline estimates) written as HTML.

    python benchmarks/report_speed.py [--runs-per-group 334] [--samples 10000] [--keep PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import joulecast
from joulecast.analysis.clean import clean
from joulecast.analysis.data import run_table, synthetic_store
from joulecast.analysis.report import build, write_html


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs-per-group", type=int, default=334, help="6 groups: 2,004 runs")
    parser.add_argument("--samples", type=int, default=10_000, help="samples per run")
    parser.add_argument("--keep", help="keep the store at this path (reused if it exists)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="joulecast-report-speed-"))
    path = Path(args.keep) if args.keep else folder / "big.db"
    if not path.exists():
        t0 = time.perf_counter()
        synthetic_store(
            path, runs_per_group=args.runs_per_group, samples_per_run=args.samples
        ).close()
        print(f"synthetic store: {time.perf_counter() - t0:.1f} s to make")
    with joulecast.open_store(path) as store:
        n_runs = len(store.runs())
        t0 = time.perf_counter()
        table = run_table(store)
        t1 = time.perf_counter()
        _, log = clean(table)
        t2 = time.perf_counter()
        report = build(store, figures_dir=folder / "figures")
        out = write_html(report, folder / "report.html")
        t3 = time.perf_counter()
    print(f"{n_runs:,} runs x {args.samples:,} samples ({path.stat().st_size / 1e6:,.0f} MB)")
    print(f"run table {t1 - t0:.1f} s; cleaning {t2 - t1:.2f} s ({log})")
    print(
        f"whole report (run table included) {t3 - t2:.1f} s -> {out} "
        f"({out.stat().st_size / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    main()
