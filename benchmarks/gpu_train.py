"""A configurable PyTorch training on random images that marks its epochs with joulecast.

Used by gpu_check.py to record real GPU traces; runs on the CPU too (``--device cpu``). Data
is generated on the device, so no download and no input pipeline in the way.

    python benchmarks/gpu_train.py --device cuda --epochs 10 --batch 64 --size 128 --width 64

Under torchrun (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel over gloo (several
ranks may then share one GPU) and marks epochs with :func:`joulecast.integrations.torch.epochs`,
so each epoch's samples are the job's.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import joulecast


def block(c_in: int, c_out: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def make_model(width: int, classes: int) -> nn.Module:
    """A small VGG/ResNet-like CNN: four stages, each halving the resolution."""
    return nn.Sequential(
        block(3, width, 1),
        block(width, 2 * width, 2),
        block(2 * width, 4 * width, 2),
        block(4 * width, 8 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8 * width, classes),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="batches per epoch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="input height and width, px")
    parser.add_argument("--width", type=int, default=64, help="channels of the first stage")
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = make_model(args.width, args.classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        ddp(model, opt, x, y, args)
        return
    with joulecast.measure(name="gpu_train") as run:
        for epoch in range(args.epochs):
            t0 = time.perf_counter()
            with run.epoch(epoch, samples=args.batch * args.steps) as ep:
                for _ in range(args.steps):
                    loss = nn.functional.cross_entropy(model(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                    opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                ep.metrics.update(loss=loss.item(), batch=args.batch, size=args.size,
                                  width=args.width)
            print(f"epoch {epoch}: {time.perf_counter() - t0:.2f} s loss {loss.item():.3f}",
                  flush=True)


def ddp(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
        args: argparse.Namespace) -> None:
    """The same training on every rank of a torchrun job, measured once per node."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from joulecast.integrations.torch import epochs

    dist.init_process_group("gloo")  # NCCL refuses two ranks on one GPU
    net = DistributedDataParallel(model)
    with joulecast.measure(name="gpu_train_ddp") as run:
        for epoch in epochs(run, args.epochs):
            for _ in epoch.steps(range(args.steps), count=lambda _: args.batch):
                loss = nn.functional.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
            epoch.log(loss=loss.item())
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
