"""GPU warm-up before a study: dense matrix products on every visible GPU for N seconds.

A cold GPU draws less power and runs at other clocks than one that has been busy for minutes;
del Rey et al. warmed theirs up for 10 minutes before each block of runs.

    python -m joulecast.study.warmup --seconds 600
"""

from __future__ import annotations

import argparse
import sys
import time


def warm_up(seconds: float, size: int = 4096) -> int:
    """Keep every visible CUDA device busy for ``seconds``; returns how many were warmed."""
    import torch

    if not torch.cuda.is_available():
        return 0
    devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    mats = [torch.randn(size, size, device=d) for d in devices]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for m in mats:
            m.copy_(torch.tanh(m @ m) * 0.5)
        for d in devices:
            torch.cuda.synchronize(d)
    return len(devices)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m joulecast.study.warmup")
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    try:
        warmed = warm_up(args.seconds)
    except ImportError:
        print("warm-up needs PyTorch: pip install 'joulecast[torch]'", file=sys.stderr)
        return 2
    if not warmed:
        print("no CUDA device: nothing to warm up", file=sys.stderr)
        return 1
    print(f"warmed {warmed} GPU(s) for {args.seconds:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
