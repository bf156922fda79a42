"""What merging a distributed job's node shards costs (``joulecast collect``), side by side.

Builds N node shards (each: 4 devices sampled at 10 Hz for the given hours, 3 epochs), then
times, each in a fresh process so that peak memory is its own:

- ``collect``: :func:`joulecast.jobs.merge_jobs` into an empty store (samples re-timed and
  renamed into a staging file, then copied into the store in one transaction);
- ``collect again``: the same, once merged (nothing to do: the idempotence check);
- the floor, ``study collect``'s copy: :func:`joulecast.study.shards.merge_shard` of the same
  node runs, rows copied inside SQLite as they are.

Usage: python benchmarks/job_merge.py [--nodes 2] [--hours 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEVICES = ("gpu:0", "gpu:1", "cpu:0", "ram")


def build(folder: Path, nodes: int, hours: float) -> int:
    """The node shards of one job; the sample rows of each."""
    import numpy as np
    import pandas as pd

    from joulecast.records import Phase, PhaseKind
    from joulecast.store import Store

    ticks = int(hours * 3600 * 10)
    t = np.arange(ticks) / 10.0
    folder.mkdir(parents=True, exist_ok=True)
    for node in range(nodes):
        frames = []
        for i, device in enumerate(DEVICES):
            frames.append(
                pd.DataFrame(
                    {
                        "t_s": t,
                        "device": device,
                        "power_w": 100.0 + 10 * i + 5 * np.sin(t / 30.0 + node),
                        "energy_j": np.nan,
                        "util_pct": 90.0,
                        "mem_used_mib": 1000.0,
                        "temp_c": 60.0,
                        "source": "nvml" if device.startswith("gpu") else "model",
                        "measured": device.startswith("gpu"),
                    }
                )
            )
        samples = pd.concat(frames).sort_values("t_s", kind="stable")
        third = t[-1] / 3
        phases = [Phase(PhaseKind.EPOCH, k, k * third, (k + 1) * third, 1000) for k in range(3)]
        with Store(folder / f"job.{node}.n{node}.db") as store:
            store.import_run(
                samples=[samples.iloc[i : i + 100_000] for i in range(0, len(samples), 100_000)],
                phases=phases,
                name="train",
                tags={
                    "job": "bench",
                    "job_node": f"n{node}",
                    "job_node_rank": str(node),
                    "job_nodes": str(nodes),
                    "job_rank": str(node * 4),
                },
                uid=f"bench/node{node}",
                started_at=1e9 + 0.25 * node,
            )
    return ticks * len(DEVICES)


def _child(kind: str, shards: Path, target: Path) -> None:
    from joulecast.store import Store

    start = time.perf_counter()
    with Store(target) as store:
        if kind == "floor":
            from joulecast.study.shards import merge_shard

            for shard in sorted(shards.glob("*.db")):
                merge_shard(store, shard)
        else:
            from joulecast.jobs import merge_jobs

            merge_jobs(store, [shards])
    seconds = time.perf_counter() - start
    # VmHWM, not getrusage's maxrss: the latter keeps the parent's high-water mark at exec.
    with open("/proc/self/status", encoding="ascii") as fh:
        hwm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    peak_mb = hwm_kb / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def _timed(kind: str, shards: Path, target: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(shards), str(target)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, shards, target = args.child
        _child(kind, Path(shards), Path(target))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = build(root / "shards", args.nodes, args.hours)
        print(
            f"{args.nodes} node shards, {rows:,} sample rows each ({args.hours} h at 10 Hz,"
            f" {len(DEVICES)} devices); median of {args.repeats}, peak RSS of the process"
        )
        figures: dict[str, list[dict[str, float]]] = {"collect": [], "again": [], "floor": []}
        for i in range(args.repeats):
            target = root / f"merged{i}.db"
            figures["collect"].append(_timed("collect", root / "shards", target))
            figures["again"].append(_timed("collect", root / "shards", target))
            figures["floor"].append(_timed("floor", root / "shards", root / f"floor{i}.db"))
        floor = statistics.median(f["seconds"] for f in figures["floor"])
        labels = {
            "collect": "collect (merge_jobs)",
            "again": "collect again (unchanged)",
            "floor": "floor: study shard copy",
        }
        for key, label in labels.items():
            seconds = statistics.median(f["seconds"] for f in figures[key])
            peak = statistics.median(f["peak_mb"] for f in figures[key])
            rate = args.nodes * rows / seconds / 1e6
            print(
                f"  {label:<27} {seconds:7.2f} s  {rate:6.2f} M rows/s  x{seconds / floor:5.2f}"
                f" of the floor  peak {peak:6.0f} MB"
            )


if __name__ == "__main__":
    main()
