"""A small CPU training that marks its epochs: what ``joulecast demo`` measures.

Trains a two-layer classifier on generated data (no download) with PyTorch when it is
installed, else with NumPy, and marks every epoch with the number of samples it processed.
Run alone it measures itself; under ``joulecast measure`` it joins that run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import numpy as np

import joulecast

N_TRAIN = 32768
N_FEATURES = 64
N_CLASSES = 10
BATCH = 128


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random class centres: learnable, and generated on the spot."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, N_TRAIN)
    x = centres[y] + rng.normal(0, 1.5, (N_TRAIN, N_FEATURES))
    return x.astype(np.float32), y


def _torch_epoch_fn(x: np.ndarray, y: np.ndarray, hidden: int) -> Callable[[], tuple[float, float]]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, N_CLASSES)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def epoch() -> tuple[float, float]:
        perm = torch.randperm(len(xt))
        total, correct = 0.0, 0
        for i in range(0, len(xt), BATCH):
            idx = perm[i : i + BATCH]
            out = model(xt[idx])
            loss = torch.nn.functional.cross_entropy(out, yt[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += loss.item() * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
        return total / len(xt), correct / len(xt)

    return epoch


def _numpy_epoch_fn(x: np.ndarray, y: np.ndarray, hidden: int) -> Callable[[], tuple[float, float]]:
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, (2 / N_FEATURES) ** 0.5, (N_FEATURES, hidden)).astype(np.float32)
    w2 = rng.normal(0, (2 / hidden) ** 0.5, (hidden, N_CLASSES)).astype(np.float32)
    onehot = np.eye(N_CLASSES, dtype=np.float32)[y]

    def epoch() -> tuple[float, float]:
        nonlocal w1, w2
        perm = rng.permutation(len(x))
        total, correct = 0.0, 0
        for i in range(0, len(x), BATCH):
            idx = perm[i : i + BATCH]
            h = np.maximum(x[idx] @ w1, 0)
            logits = h @ w2
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            total += float(-np.log(p[np.arange(len(idx)), y[idx]] + 1e-9).sum())
            correct += int((p.argmax(1) == y[idx]).sum())
            g = (p - onehot[idx]) / len(idx)
            gh = (g @ w2.T) * (h > 0)
            w2 -= 0.05 * h.T @ g
            w1 -= 0.05 * x[idx].T @ gh
        return total / len(x), correct / len(x)

    return epoch


def train(epochs: int = 3, hidden: int = 1024, backend: str = "auto") -> list[dict[str, float]]:
    """Train for ``epochs`` epochs inside :func:`joulecast.measure`; returns per-epoch metrics."""
    x, y = make_data()
    if backend == "auto":
        try:
            import torch  # noqa: F401

            backend = "torch"
        except ImportError:
            backend = "numpy"
    make = _torch_epoch_fn if backend == "torch" else _numpy_epoch_fn
    epoch_fn = make(x, y, hidden)
    history = []
    with joulecast.measure(name="demo") as run:
        for i in range(epochs):
            with run.epoch(i, samples=len(x)) as ep:
                loss, acc = epoch_fn()
                ep.metrics.update(loss=loss, accuracy=acc, backend=backend)
            history.append({"loss": loss, "accuracy": acc})
            print(f"epoch {i}: loss {loss:.3f} accuracy {acc:.3f} ({backend})", flush=True)
    return history


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m joulecast.demo [--epochs N] [--backend auto|torch|numpy]``."""
    parser = argparse.ArgumentParser(prog="python -m joulecast.demo")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--backend", choices=["auto", "torch", "numpy"], default="auto")
    args = parser.parse_args(argv)
    train(args.epochs, args.hidden, args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
