"""PyTorch Lightning training through joulecast.integrations.lightning."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

import joulecast  # noqa: E402
from joulecast.integrations.lightning import JoulecastCallback  # noqa: E402

from .helpers import stored  # noqa: E402


class Tiny(pl.LightningModule):
    def __init__(self, fail_at_epoch: int | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Linear(8, 2)
        self.fail_at_epoch = fail_at_epoch

    def training_step(self, batch, i):
        if self.current_epoch == self.fail_at_epoch:
            raise RuntimeError("boom")
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

    def on_train_epoch_end(self):
        self.log("epoch_marker", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loaders():
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=32), DataLoader(
        TensorDataset(x[:20], y[:20]), batch_size=20
    )


def _trainer(cb, epochs=2):
    return pl.Trainer(
        max_epochs=epochs,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )


def test_fit_two_epochs_with_steps(tmp_path):
    path = tmp_path / "runs.db"
    cb = JoulecastCallback("lit", store=path, interval_s=0.05, steps=True)
    _trainer(cb).fit(Tiny(), *_loaders())
    assert cb.run is not None and not cb.run.active
    row, ep, st = stored(path, cb.run.run_id)
    assert row["status"] == "completed" and row["name"] == "lit"
    assert ep["index"].tolist() == [0, 1]
    assert ep["samples"].tolist() == [100, 100]
    for i, metrics in enumerate(ep["metrics"]):
        assert {"train_loss", "val_loss"} <= metrics.keys()
        # Logged in LightningModule.on_train_epoch_end, after the callbacks' hook: still seen.
        assert metrics["epoch_marker"] == float(i)
    assert st["samples"].tolist() == [32, 32, 32, 4] * 2
    assert cb.run.summary().epochs["energy_j"].notna().all()


def test_exception_marks_the_run_failed(tmp_path):
    path = tmp_path / "runs.db"
    cb = JoulecastCallback(store=path, interval_s=0.05)
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(cb).fit(Tiny(fail_at_epoch=1), *_loaders())
    row, ep, _ = stored(path, cb.run.run_id)
    assert row["status"] == "failed"
    assert ep["index"].tolist() == [0, 1]
    assert ep["end_s"].notna().all()


def test_given_run_is_not_stopped(tmp_path):
    path = tmp_path / "runs.db"
    with joulecast.measure(store=path, interval_s=0.05) as run:
        _trainer(JoulecastCallback(run=run), epochs=1).fit(Tiny(), _loaders()[0])
        assert run.active
    row, ep, _ = stored(path, run.run_id)
    assert row["status"] == "completed"
    assert ep["samples"].tolist() == [100]
