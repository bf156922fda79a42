"""The real-GPU check: energy from the NVML counter vs integrated power, and the sampler's rate.

Runs benchmarks/gpu_train.py under ``joulecast measure`` (100 Hz) for each configuration,
then, per GPU, compares the energy from the total-energy counter with the trapezoidal integral
of the sampled power (whole run and per epoch), reports the achieved sampling rate, and
exports each run as a gzipped neutral trace (power.csv.gz + phases.csv) for test fixtures.

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out OUTDIR [--quick] [--device cuda]

Prints one JSON line per run and writes OUTDIR/gpu_check.json. ``--ddp`` also runs a
two-process DDP job (torchrun, gloo, both ranks on the first GPU) and prints its run's GPU
energy beside the NVML total-energy counter that nvidia-smi reads before and after it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONFIGS = [
    # (label, epochs, steps, batch, size, width): the first one is the acceptance check.
    ("cnn64-b64-s128", 12, 60, 64, 128, 64),
    ("cnn32-b32-s72", 10, 80, 32, 72, 32),
    ("cnn64-b256-s224", 8, 12, 256, 224, 64),
]


def analyse(store_path: Path, run_id: int) -> dict:
    import joulecast
    from joulecast.energy import EnergyCurve

    store = joulecast.open_store(store_path)
    summary = joulecast.summarize(store, run_id)
    samples = store.samples(run_id)
    phases = store.phases(run_id, "epoch")
    out: dict = {
        "run_id": run_id,
        "status": summary.status,
        "duration_s": summary.duration_s,
        "quality": summary.quality,
        "hardware_gpus": summary.hardware.get("gpu_models"),
        "gpus": {},
    }
    for device, frame in samples.groupby("device"):
        if not str(device).startswith("gpu:"):
            continue
        counter = EnergyCurve.from_samples(str(device), frame)
        power = EnergyCurve.from_samples(str(device), frame.assign(energy_j=np.nan))
        if counter is None or power is None:
            continue
        t = frame["t_s"].to_numpy()
        per_epoch = []
        for row in phases.itertuples():
            c = counter.between(row.start_s, row.end_s)
            p = power.between(row.start_s, row.end_s)
            per_epoch.append({"index": row.index, "counter_j": c, "power_j": p,
                              "rel_diff": (p - c) / c if c else None})
        out["gpus"][device] = {
            "method": counter.method,
            "counter_j": counter.total_j if counter.method == "counter" else None,
            "power_integral_j": power.total_j,
            "rel_diff": (power.total_j - counter.total_j) / counter.total_j
            if counter.method == "counter" and counter.total_j else None,
            "samples": len(frame),
            "sample_hz": (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else None,
            "power_w_mean": float(frame["power_w"].mean()),
            "epochs": per_epoch,
        }
    return out


def export(store_path: Path, run_id: int, out: Path, label: str) -> list[str]:
    import joulecast

    store = joulecast.open_store(store_path)
    samples = store.samples(run_id)
    gpu = samples[samples["device"].str.startswith("gpu:")]
    cols = ["t_s", "device", "power_w", "energy_j", "util_pct", "mem_used_mib", "temp_c"]
    power_path = out / f"{label}-power.csv.gz"
    with gzip.open(power_path, "wt") as fh:
        gpu[cols].to_csv(fh, index=False, float_format="%.6g")
    phases = store.phases(run_id, "epoch")[["index", "start_s", "end_s", "samples"]]
    phases_path = out / f"{label}-phases.csv"
    phases.to_csv(phases_path, index=False, float_format="%.6g")
    return [power_path.name, phases_path.name]


def smi_energy_j() -> dict[str, float] | None:
    """Each GPU's total-energy counter (J) as nvidia-smi reads it; None without nvidia-smi."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,total_energy_consumption",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    counters = {}
    for line in out.strip().splitlines():
        index, _, mj = line.partition(",")
        try:
            counters[f"gpu:{int(index)}"] = float(mj) / 1e3
        except ValueError:
            continue
    return counters


def ddp_check(args: argparse.Namespace, store_path: Path) -> dict:
    """A 2-process DDP job under torchrun, measured from inside; its run beside nvidia-smi."""
    import joulecast

    epochs, steps = (3, 5) if args.quick else (6, 40)
    env = {**os.environ, "JOULECAST_STORE": str(store_path), "CUDA_VISIBLE_DEVICES":
           os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}
    before = smi_energy_j()
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(HERE / "gpu_train.py"), "--device", args.device, "--epochs", str(epochs),
         "--steps", str(steps), "--batch", "64", "--size", "128", "--width", "64"],
        capture_output=True, text=True, env=env,
    )
    wall_s = time.monotonic() - t0
    after = smi_energy_j()
    if proc.returncode != 0:
        return {"config": "ddp-2", "error": proc.stdout[-1500:] + proc.stderr[-1500:]}
    store = joulecast.open_store(store_path)
    run_id = store.resolve("last")
    summary = joulecast.summarize(store, run_id)
    gpu_j = {d: t.energy_j for d, t in summary.devices.items() if d.startswith("gpu:")}
    smi_j = ({d: after[d] - before[d] for d in after if d in before}
             if before and after else None)
    return {
        "config": "ddp-2",
        "run_id": run_id,
        "wall_s": wall_s,
        "duration_s": summary.duration_s,
        "tags": summary.tags,
        "epochs": summary.epochs[["index", "samples", "energy_j"]].to_dict("records"),
        "run_gpu_j": gpu_j,
        "nvidia_smi_counter_j": smi_j,
        "note": "nvidia-smi's delta spans the whole torchrun (start-up included), the run only"
                " its measured span",
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="only the first configuration, short")
    parser.add_argument("--interval", default="0.01")
    parser.add_argument("--ddp", action="store_true", help="also a 2-process DDP job")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store_path = args.out / "gpu_check.db"
    configs = CONFIGS[:1] if args.quick else CONFIGS
    results = []
    for label, epochs, steps, batch, size, width in configs:
        if args.quick:
            epochs, steps = 3, 5
        cmd = [sys.executable, "-m", "joulecast", "measure", "--store", str(store_path),
               "--interval", args.interval, "--name", label, "--tag", f"config={label}", "-q", "--",
               sys.executable, str(HERE / "gpu_train.py"), "--device", args.device,
               "--epochs", str(epochs), "--steps", str(steps), "--batch", str(batch),
               "--size", str(size), "--width", str(width)]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(json.dumps({"config": label, "error": proc.stderr[-2000:]}), flush=True)
            continue
        import joulecast

        run_id = joulecast.open_store(store_path).resolve("last")
        result = {"config": label, "wall_s": time.monotonic() - t0, **analyse(store_path, run_id)}
        result["files"] = export(store_path, run_id, args.out, label)
        results.append(result)
        print(json.dumps({k: result[k] for k in ("config", "wall_s", "duration_s", "gpus")},
                         default=str), flush=True)
    if args.ddp:
        result = ddp_check(args, args.out / "gpu_check_ddp.db")
        print(json.dumps(result, default=str), flush=True)
        results.append(result)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
