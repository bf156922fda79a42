"""Configurations of synthetic run tables for the offline estimators' tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

GPUS = [(640, 2, 60), (5888, 8, 220), (10496, 24, 350)]  # cores, memory GB, TDP W


def configurations(n: int, rng: np.random.Generator) -> Iterator[dict[str, float]]:
    """``n`` configurations (the ten raw features) in the ranges of the paper's study."""
    for _ in range(n):
        cores, memory, tdp = GPUS[rng.integers(len(GPUS))]
        side = float(rng.choice([75, 128, 224]))
        yield {
            "gpu_cuda_cores": cores,
            "gpu_memory_gb": memory,
            "gpu_tdp_w": tdp,
            "ram_gb": float(rng.choice([16, 32])),
            "gflops": float(np.exp(rng.uniform(np.log(0.05), np.log(10)))),
            "train_samples": float(rng.choice([3060, 12000, 23807])),
            "val_samples": float(rng.choice([6084, 8580, 10203])),
            "batch_size": float(rng.choice([32, 64, 256])),
            "input_height": side,
            "input_width": side,
        }
