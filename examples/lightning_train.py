"""A PyTorch Lightning training measured with ``JoulecastCallback``.

Run: ``python examples/lightning_train.py``, or
``joulecast measure -- python examples/lightning_train.py``.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from joulecast.integrations.lightning import JoulecastCallback


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
        x, y = batch
        out = self.net(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(out, y))
        self.log("val_accuracy", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    y = (x[:, 0] > 0).long()
    train = DataLoader(TensorDataset(x[:448], y[:448]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(x[448:], y[448:]), batch_size=64)
    callback = JoulecastCallback("lightning-mlp")
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Classifier(), train, val)
    assert callback.run is not None
    print(
        callback.run.epochs[["index", "samples", "energy_j", "j_per_sample"]].to_string(index=False)
    )


if __name__ == "__main__":
    main()
