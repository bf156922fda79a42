"""A small DDP training (gloo, CPU) measured by joulecast: run by torchrun in the tests.

Usage: ddp_job.py epochs|budget|fail|spawn|lightning STORE (``-``: the default store, the one that
``joulecast measure`` passes on) (budget: an energy budget of 1 J, which
the job's first epoch exceeds; fail: rank 1 raises in its second epoch; spawn: two processes
started by torch.multiprocessing.spawn, without a launcher's variables; MASTER_PORT set)
Every rank runs the same code, as a user's script does: ``joulecast.measure()`` with
``epochs()``, or the Lightning callback; joulecast decides which process samples its node.
"""

from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import joulecast

SAMPLES = 96
BATCH = 8
EPOCHS = 3
STEP_S = 0.2


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 16, generator=generator)
    return TensorDataset(x, (x.sum(dim=1, keepdim=True) > 0).float())


def with_epochs(store: str | None, budget_j: float | None = None, fail: bool = False) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from joulecast.integrations.torch import epochs

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    model = DistributedDataParallel(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)))
    data = dataset()
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=BATCH, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    done = 0
    with joulecast.measure("ddp-epochs", store=store, interval_s=0.05) as run:
        budget = joulecast.EnergyBudget(budget_j=budget_j) if budget_j is not None else None
        run.live_forecast(EPOCHS, progress=False, budget=budget)
        for epoch in epochs(run, EPOCHS):
            sampler.set_epoch(epoch.index)
            for x, y in epoch.steps(loader):
                if fail and epoch.index == 1 and dist.get_rank() == 1:
                    raise RuntimeError("simulated failure on rank 1")
                optimizer.zero_grad()
                loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
                loss.backward()
                optimizer.step()
                time.sleep(STEP_S)  # epochs long enough for their boundaries not to matter
            epoch.log(loss=loss)
            done = epoch.index + 1
    print(
        f"rank {dist.get_rank()}: {type(run).__name__} stop={run.should_stop} epochs={done}",
        flush=True,
    )
    dist.barrier()  # no rank tears down gloo while another still talks to it
    # DDP's reducer holds the process group: released first, the group's gloo threads stop in
    # destroy_process_group, with every rank past the barrier, rather than whenever the last
    # reference goes (one rank once aborted at exit in CI: "terminate called without an
    # active exception").
    del model, optimizer
    dist.destroy_process_group()


def with_lightning(store: str | None) -> None:
    import lightning.pytorch as pl

    from joulecast.integrations.lightning import JoulecastCallback

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=int(os.environ["LOCAL_WORLD_SIZE"]),
        num_nodes=int(os.environ["GROUP_WORLD_SIZE"]),
        strategy="ddp",
        max_epochs=EPOCHS,
        callbacks=[JoulecastCallback("ddp-lightning", store=store, interval_s=0.05)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Model(), DataLoader(dataset(), batch_size=BATCH))


def exit_now() -> None:
    """End the process once the job is done, without the interpreter's finalization.

    Gloo's worker threads can outlive ``destroy_process_group`` and abort the process while
    the interpreter is torn down ("terminate called without an active exception", SIGABRT:
    pytorch/pytorch#179291), after every figure is stored and printed; a launcher reads that
    as a failed rank. It happened in 1 of about 4 runs of the suite, in any mode.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawned(rank: int, store: str | None) -> None:
    """A process of ``torch.multiprocessing.spawn``: its rank is only what it is handed."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    with_epochs(store)
    exit_now()


if __name__ == "__main__":
    store = None if sys.argv[2] == "-" else sys.argv[2]
    if sys.argv[1] == "budget":
        with_epochs(store, budget_j=1.0)
    elif sys.argv[1] == "spawn":
        torch.multiprocessing.spawn(spawned, args=(store,), nprocs=2)
    elif sys.argv[1] == "fail":
        with_epochs(store, fail=True)
    else:
        {"epochs": with_epochs, "lightning": with_lightning}[sys.argv[1]](store)
    exit_now()
