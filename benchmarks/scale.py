"""Scale: wall time and peak memory of the CLI on runs of 1 M, 4 M and 16 M sample rows.

Each size is one synthetic run at 10 Hz with 200 epochs. Every tick writes four rows:
``gpu:0`` and ``gpu:1`` (as NVML: power, cumulative energy counter, utilisation, memory,
temperature), ``cpu:0`` (as RAPL: power and counter) and ``ram`` (modelled power only), so
1 M rows are 250,000 ticks, 25,000 s. The run is written as the neutral trace
(``power.csv``, ``phases.csv``) with numpy, in chunks, and imported with
``joulecast import trace`` into a store of its own, which the other commands then read.

Every command runs as the real CLI (``python -m joulecast ...``) in a fresh child process,
started by a bare launcher process: wall time is taken around the child (Python start and
``import joulecast`` included), peak memory is the child's own maximum resident set
(``ru_maxrss`` from ``os.wait4``), so each figure belongs to one command alone. The floor is ``SELECT count(*) FROM samples WHERE
run_id = ?`` in a fresh Python with only sqlite3: what touching the run costs at all.

The growth ratio of a figure is its value at one size over its value at the previous size
(sizes four times apart: about 4 means it grows with the run, about 1 that it does not). The
acceptance checks of the issue are printed as ``CHECK`` lines: ``show --json`` peak <= 400 MB
at every size and wall <= 1.5 x the previous size's, and every command's peak growth <=
``--growth-limit`` between consecutive sizes.

A size whose figures, projected from the smaller sizes' growth, would take longer than
``--max-minutes`` or need more than ``--max-peak-mb`` is skipped, with the reason in the table.

    python benchmarks/scale.py                       # 1M, 4M, 16M; all commands
    python benchmarks/scale.py --sizes 1M,4M --json figures.json
    python benchmarks/scale.py --commands show,export --workdir /tmp/scale --keep
    python benchmarks/scale.py --smoke               # 20k and 80k rows, for the test suite

Progress goes to stderr, figures to stdout. With ``--workdir`` and ``--keep``, a size's input
files are reused by the next run (the store is always imported afresh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

HZ = 10.0
EPOCHS = 200
DEVICES = ("gpu:0", "gpu:1", "cpu:0", "ram")
SHAPE = (
    "4 rows per tick at 10 Hz, 200 epochs: gpu:0, gpu:1 (power, energy counter, util, memory, "
    "temperature), cpu:0 (power, energy counter), ram (modelled power only)"
)
HEADER = "t_s,device,power_w,energy_j,util_pct,mem_used_mib,temp_c,source,measured\n"
CHUNK_TICKS = 50_000  # 200,000 rows, ~20 MB of arrays and strings at a time
COMMANDS = ("import", "show", "export", "forecast", "stability")
LABELS = {
    "floor": "floor count(*)",
    "import": "import trace",
    "show": "show --json",
    "export": "export",
    "forecast": "forecast",
    "stability": "stability",
}
SHOW_PEAK_LIMIT_MB = 400.0
SHOW_WALL_GROWTH_LIMIT = 1.5
# Starts one command and reports its wall time and its own ru_maxrss. A child's ru_maxrss
# includes the resident set of the process that spawned it (counted until exec), so the
# benchmark, which holds numpy and the trace chunks, never spawns a measured command itself:
# this launcher, a bare Python of ~10 MB, does.
LAUNCHER = (
    "import os, sys, time\n"
    "out, err, *argv = sys.argv[1:]\n"
    "flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC\n"
    "actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),\n"
    "           (os.POSIX_SPAWN_OPEN, 1, out, flags, 0o644),\n"
    "           (os.POSIX_SPAWN_OPEN, 2, err, flags, 0o644)]\n"
    "t0 = time.perf_counter()\n"
    "pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "wall_s = time.perf_counter() - t0\n"
    "print(wall_s, usage.ru_maxrss, os.waitstatus_to_exitcode(status))\n"
)
FLOOR_SCRIPT = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1])\n"
    "query = 'SELECT count(*) FROM samples WHERE run_id = ?'\n"
    "print(conn.execute(query, (int(sys.argv[2]),)).fetchone()[0])\n"
)


# -- input -----------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``1M`` -> 1,000,000; ``20k`` -> 20,000; rounded down to whole ticks."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    rows = int(float(number) * scale)
    rows -= rows % len(DEVICES)
    if rows < len(DEVICES) * EPOCHS:
        raise ValueError(f"{text!r} is under {len(DEVICES) * EPOCHS} rows")
    return rows


def size_label(rows: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if rows >= scale and rows % (scale // 100) == 0:
            return f"{rows / scale:g}{unit}"
    return str(rows)


def _lines(fmt: str, *columns: np.ndarray) -> list[str]:
    return [fmt % row for row in zip(*(c.tolist() for c in columns), strict=True)]


def write_trace(folder: Path, rows: int, seed: int) -> tuple[Path, Path]:
    """Write ``power.csv`` and ``phases.csv`` for one run of ``rows`` rows, chunk by chunk."""
    folder.mkdir(parents=True, exist_ok=True)
    power, phases = folder / "power.csv", folder / "phases.csv"
    ticks = rows // len(DEVICES)
    epoch_s = ticks / HZ / EPOCHS
    rng = np.random.default_rng(seed)
    base_w = np.array([280.0, 265.0, 95.0])  # gpu:0, gpu:1, cpu:0 at full load
    last_t = last_p = None
    energy_j = np.zeros(3)
    part = power.with_suffix(".part")
    with open(part, "w", encoding="utf-8") as fh:
        fh.write(HEADER)
        for start in range(0, ticks, CHUNK_TICKS):
            i = np.arange(start, min(start + CHUNK_TICKS, ticks))
            t = i / HZ + rng.uniform(0.0, 0.002, len(i))  # tick jitter, still increasing
            in_val = (t / epoch_s) % 1.0 > 0.9  # validation at the end of every epoch
            load = np.where(in_val, 0.45, 1.0) * (1 - 0.2 * np.exp(-t / (3 * epoch_s)))
            p = base_w * load[:, None] * (1 + rng.normal(0, 0.03, (len(i), 3)))
            # Cumulative trapezoid per device, carried over from the previous chunk.
            tt = t if last_t is None else np.concatenate(([last_t], t))
            pp = p if last_p is None else np.vstack((last_p, p))
            steps = 0.5 * (pp[1:] + pp[:-1]) * np.diff(tt)[:, None]
            e = energy_j + np.vstack((np.zeros((1, 3)), np.cumsum(steps, axis=0)))
            e = e if last_t is None else e[1:]
            energy_j, last_t, last_p = e[-1], t[-1], p[-1]
            util = np.clip(load * 97 + rng.normal(0, 2, len(i)), 0, 100)
            mem = 31_000 + 500 * load
            temp = 45 + 25 * load
            ram_w = 3.0 + 0.2 * load
            block: list[str] = [""] * (len(i) * len(DEVICES))
            for d in (0, 1):
                fmt = f"%.3f,gpu:{d},%.2f,%.3f,%.0f,%.0f,%.1f,nvml,true"
                block[d :: len(DEVICES)] = _lines(fmt, t, p[:, d], e[:, d], util, mem, temp)
            block[2 :: len(DEVICES)] = _lines(
                "%.3f,cpu:0,%.2f,%.3f,,,,rapl,true", t, p[:, 2], e[:, 2]
            )
            block[3 :: len(DEVICES)] = _lines("%.3f,ram,%.3f,,,,,ram-model,false", t, ram_w)
            fh.write("\n".join(block))
            fh.write("\n")
    part.replace(power)
    end_s = float(last_t) if last_t is not None else 0.0
    with open(phases, "w", encoding="utf-8") as fh:
        fh.write("index,start_s,end_s,kind,samples\n")
        bounds = np.linspace(0.0, end_s, EPOCHS + 1)
        for k in range(EPOCHS):
            fh.write(f"{k},{bounds[k]:.3f},{bounds[k + 1]:.3f},epoch,50000\n")
    return power, phases


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Figure:
    """One command at one size: median wall time and the largest peak over its repeats."""

    walls_s: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    error: str | None = None

    @property
    def wall_s(self) -> float:
        return statistics.median(self.walls_s) if self.walls_s else math.nan


def run_child(argv: list[str], log: Path, env: dict[str, str]) -> tuple[float, float, int, str]:
    """Run ``argv`` under the launcher; returns (wall s, peak RSS MB, exit status, stdout)."""
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    launched = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(out), str(err), *argv],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    wall_s, maxrss_kib, rc = launched.stdout.split()
    text = out.read_text()
    if int(rc) != 0:
        last = (err.read_text().strip().splitlines() or [f"exit {rc}"])[-1]
        text = last[:120]
    return float(wall_s), int(maxrss_kib) * 1024 / 1e6, int(rc), text


def measure(argv: list[str], log: Path, env: dict[str, str], repeats: int) -> tuple[Figure, str]:
    figure, text = Figure(), ""
    for _ in range(repeats):
        wall, peak, rc, text = run_child(argv, log, env)
        if rc != 0:
            figure.error = text
            return figure, text
        figure.walls_s.append(wall)
        figure.peak_mb = max(figure.peak_mb, peak)
    return figure, text


@dataclass
class Size:
    """One run size: its input, store and figures."""

    rows: int
    label: str
    figures: dict[str, Figure] = field(default_factory=dict)
    skipped: str | None = None
    generate_s: float = math.nan
    csv_mb: float = math.nan
    store_mb: float = math.nan


def project(sizes: list[Size], rows: int, command: str) -> tuple[float, float]:
    """(wall s, peak MB) of ``command`` at ``rows``, from the growth seen over the last sizes.

    With two measured sizes the last power law is followed; with one, growth in proportion
    to the rows (the safe guess when nothing is known).
    """
    done = [s for s in sizes if s.skipped is None and command in s.figures]
    done = [s for s in done if s.figures[command].error is None]
    if not done:
        return 0.0, 0.0
    last = done[-1].figures[command]
    if len(done) < 2:
        scale = rows / done[-1].rows
        return last.wall_s * scale, last.peak_mb * scale
    prev = done[-2].figures[command]
    steps = math.log(rows / done[-1].rows) / math.log(done[-1].rows / done[-2].rows)
    return (
        last.wall_s * max(1.0, last.wall_s / prev.wall_s) ** steps,
        last.peak_mb * max(1.0, last.peak_mb / prev.peak_mb) ** steps,
    )


def too_big(sizes: list[Size], size: Size, args: argparse.Namespace) -> str | None:
    """Why ``size`` would break the time or memory limit, or None."""
    wall_s, peak_mb = 0.0, 0.0
    reads = [c for c in args.commands if c != "import"]
    for command in ("import", "floor", *reads):
        w, p = project(sizes, size.rows, command)
        repeats = 1 if command == "import" else args.repeats
        wall_s, peak_mb = wall_s + w * repeats, max(peak_mb, p)
    done = [s for s in sizes if s.skipped is None and not math.isnan(s.generate_s)]
    if done:
        wall_s += done[-1].generate_s * size.rows / done[-1].rows
    reasons = []
    if args.max_minutes and wall_s > 60 * args.max_minutes:
        reasons.append(f"{wall_s / 60:.0f} min > --max-minutes {args.max_minutes:g}")
    if args.max_peak_mb and peak_mb > args.max_peak_mb:
        reasons.append(f"peak {peak_mb:,.0f} MB > --max-peak-mb {args.max_peak_mb:,.0f}")
    return "projected " + ", ".join(reasons) if reasons else None


def run_size(size: Size, args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> None:
    folder = workdir / size.label
    power, phases = folder / "power.csv", folder / "phases.csv"
    if power.exists() and phases.exists():
        print(f"[{size.label}] reusing {power}", file=sys.stderr)
        size.generate_s = math.nan
    else:
        print(f"[{size.label}] writing {size.rows:,} rows to {power}", file=sys.stderr)
        t0 = time.perf_counter()
        write_trace(folder, size.rows, args.seed)
        size.generate_s = time.perf_counter() - t0
    size.csv_mb = power.stat().st_size / 1e6
    store = folder / "scale.db"
    for stale in folder.glob("scale.db*"):
        stale.unlink()
    jc = [sys.executable, "-m", "joulecast"]
    print(f"[{size.label}] import trace", file=sys.stderr)
    importing = ["import", "trace", "--store", str(store), "--power", str(power)]
    importing += ["--phases", str(phases), "--name", f"scale-{size.label}", "--json"]
    figure, text = measure([*jc, *importing], folder / "import", env, 1)
    size.figures["import"] = figure
    if figure.error is not None:
        return
    run = str(json.loads(text)["run_id"])
    size.store_mb = store.stat().st_size / 1e6
    print(f"[{size.label}] floor", file=sys.stderr)
    floor, counted = measure(
        [sys.executable, "-c", FLOOR_SCRIPT, str(store), run], folder / "floor", env, args.repeats
    )
    if floor.error is None and int(counted) != size.rows:
        floor.error = f"count(*) is {int(counted):,}, expected {size.rows:,}"
    size.figures["floor"] = floor
    exported = folder / "export"
    argvs = {
        "show": ["show", "--store", str(store), "--json", run],
        "export": ["export", "--store", str(store), "-o", str(exported), run],
        "forecast": ["forecast", "--store", str(store), run],
        "stability": ["stability", "--store", str(store), run],
    }
    for command in args.commands:
        if command == "import":
            continue
        print(f"[{size.label}] {command}", file=sys.stderr)
        exported.mkdir(exist_ok=True)
        size.figures[command], _ = measure(
            [*jc, *argvs[command]], folder / command, env, args.repeats
        )
        shutil.rmtree(exported, ignore_errors=True)  # the export is as large as the input


# -- report ------------------------------------------------------------------------------------


def ratio(a: Figure | None, b: Figure | None, attr: str) -> float | None:
    if a is None or b is None or a.error or b.error:
        return None
    low, high = getattr(a, attr), getattr(b, attr)
    return high / low if low > 0 else None


def print_table(sizes: list[Size], commands: list[str]) -> None:
    measured = [s for s in sizes if s.skipped is None]
    pairs = list(pairwise(measured))
    head = f"{'command':<15}"
    for s in sizes:
        head += f" | {s.label + ' wall s':>11} {'peak MB':>8}"
    for a, b in pairs:
        head += f" | {b.label + '/' + a.label + ' wall':>12} {'peak':>5}"
    print(head)
    print("-" * len(head))
    for command in ["floor", *commands]:
        line = f"{LABELS[command]:<15}"
        notes = []
        for s in sizes:
            fig = s.figures.get(command)
            if s.skipped is not None or fig is None:
                line += f" | {'-':>11} {'-':>8}"
            elif fig.error is not None:
                line += f" | {'error':>11} {'-':>8}"
                notes.append(f"  {LABELS[command]} at {s.label}: {fig.error}")
            else:
                line += f" | {fig.wall_s:>11.2f} {fig.peak_mb:>8,.0f}"
        for a, b in pairs:
            w = ratio(a.figures.get(command), b.figures.get(command), "wall_s")
            m = ratio(a.figures.get(command), b.figures.get(command), "peak_mb")
            cells = [f"{x:.2f}" if x is not None else "-" for x in (w, m)]
            line += f" | {cells[0]:>12} {cells[1]:>5}"
        print(line)
        for note in notes:
            print(note)
    for s in sizes:
        if s.skipped is not None:
            print(f"{s.label}: skipped: {s.skipped}")


def checks(sizes: list[Size], commands: list[str], growth_limit: float) -> list[dict[str, Any]]:
    """The issue's acceptance checks over the measured sizes."""
    measured = [s for s in sizes if s.skipped is None]
    found: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, text: str) -> None:
        passed = value is not None and value <= limit
        found.append({"check": name, "value": value, "limit": limit, "passed": passed})
        verdict = "PASS" if passed else ("FAIL" if value is not None else "NO FIGURE")
        print(f"CHECK {name}: {text}: {verdict}")

    if "show" in commands:
        for s in measured:
            fig = s.figures.get("show")
            peak = fig.peak_mb if fig and fig.error is None else None
            shown = f"{peak:,.0f} MB" if peak is not None else "-"
            add(
                f"show --json peak at {s.label}",
                peak,
                SHOW_PEAK_LIMIT_MB,
                f"{shown} <= {SHOW_PEAK_LIMIT_MB:.0f} MB",
            )
        for a, b in pairwise(measured):
            r = ratio(a.figures.get("show"), b.figures.get("show"), "wall_s")
            shown = f"{r:.2f}x" if r is not None else "-"
            add(
                f"show --json wall {b.label}/{a.label}",
                r,
                SHOW_WALL_GROWTH_LIMIT,
                f"{shown} <= {SHOW_WALL_GROWTH_LIMIT:g}x",
            )
    for command in commands:
        for a, b in pairwise(measured):
            r = ratio(a.figures.get(command), b.figures.get(command), "peak_mb")
            shown = f"{r:.2f}x" if r is not None else "-"
            add(
                f"{LABELS[command]} peak growth {b.label}/{a.label}",
                r,
                growth_limit,
                f"{shown} <= {growth_limit:g}x",
            )
    return found


def closing_note(args: argparse.Namespace) -> str:
    text = (
        "Reading the table: wall s is one child process from start to exit (Python start and "
        "`import joulecast` included), the median of --repeats; peak MB is that child's maximum "
        "resident set (10^6 bytes). The floor is a fresh Python counting the run's rows with "
        "sqlite3 alone. "
        "A ratio column divides a size's figure by the previous size's: sizes four times apart "
        "give ~4 for a figure that grows with the run, ~1 for one that does not. CHECK lines: "
        f"show --json peak <= {SHOW_PEAK_LIMIT_MB:.0f} MB and wall <= "
        f"{SHOW_WALL_GROWTH_LIMIT:g}x the previous size's (the issue's 4M against 1M); every "
        f"command's peak growth <= {args.growth_limit:g}x (memory a constant beyond the run's "
        "length; import and export included, whose memory must be bounded too)."
    )
    return textwrap.fill(text, width=92)


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,4M,16M", help="rows per run, comma-separated")
    parser.add_argument(
        "--commands", default=",".join(COMMANDS), help="subset of " + ",".join(COMMANDS)
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each reading command")
    parser.add_argument("--json", help="save every figure to this file")
    parser.add_argument("--workdir", help="folder for inputs and stores (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep inputs and stores")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=20.0,
        help="skip a size projected to take longer (0: no limit)",
    )
    parser.add_argument(
        "--max-peak-mb",
        type=float,
        default=14_000.0,
        help="skip a size projected to need more memory (0: no limit)",
    )
    parser.add_argument(
        "--growth-limit",
        type=float,
        default=1.25,
        help="largest peak-memory ratio between sizes that passes",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="20k and 80k rows: checks it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes = "20k,80k"
    try:
        rows = sorted({parse_size(x) for x in args.sizes.split(",") if x.strip()})
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"--sizes: {exc}")
    sizes = [Size(n, size_label(n)) for n in rows]
    args.commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = sorted(set(args.commands) - set(COMMANDS))
    if unknown:
        parser.error(
            f"--commands: unknown {', '.join(unknown)} (choose from {', '.join(COMMANDS)})"
        )
    args.commands = [c for c in COMMANDS if c in args.commands]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULECAST_")}
    workdir = (
        Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="joulecast-scale-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for size in sizes:
            size.skipped = too_big(sizes, size, args)
            if size.skipped is None:
                run_size(size, args, workdir, env)
            else:
                print(f"[{size.label}] skipped: {size.skipped}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"scale benchmark: {SHAPE}")
    for s in sizes:
        ticks = s.rows // len(DEVICES)
        line = (
            f"  {s.label}: {s.rows:,} rows = {ticks:,} ticks x {len(DEVICES)}, "
            f"{ticks / HZ / 3600:.1f} h, epochs of {ticks / HZ / EPOCHS:.0f} s"
        )
        if s.skipped is None:
            made = f"written in {s.generate_s:.0f} s" if not math.isnan(s.generate_s) else "reused"
            line += f"; power.csv {s.csv_mb:,.0f} MB ({made}), store {s.store_mb:,.0f} MB"
        print(line)
    print()
    print_table(sizes, args.commands)
    print()
    found = checks(sizes, args.commands, args.growth_limit)
    print()
    print(closing_note(args))
    if args.json:
        figures = {
            "shape": SHAPE,
            "sizes": [
                {
                    "label": s.label,
                    "rows": s.rows,
                    "skipped": s.skipped,
                    "generate_s": None if math.isnan(s.generate_s) else s.generate_s,
                    "csv_mb": None if math.isnan(s.csv_mb) else s.csv_mb,
                    "store_mb": None if math.isnan(s.store_mb) else s.store_mb,
                    "figures": {
                        c: {
                            "wall_s": f.wall_s if f.walls_s else None,
                            "walls_s": f.walls_s,
                            "peak_mb": f.peak_mb,
                            "error": f.error,
                        }
                        for c, f in s.figures.items()
                    },
                }
                for s in sizes
            ],
            "checks": found,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
