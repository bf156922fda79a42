"""Live forecasts and energy-aware early stopping through the PyTorch and Keras integrations."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import joulecast
from joulecast.records import Reading

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported


class Constant:
    """A sensor reading a steady 100 W, so an epoch's energy is 100 W x its duration."""

    name = "const"

    def devices(self):
        return ["gpu:0"]

    def read(self):
        return [Reading(time.monotonic(), "gpu:0", 100.0, "const")]

    def close(self):
        pass


def test_torch_epochs_stop_on_budget(tmp_path, capsys):
    pytest.importorskip("torch")
    from joulecast.integrations.torch import epochs

    store = joulecast.open_store(tmp_path / "s.db")
    with joulecast.measure(store=store, sensors=[Constant()], interval_s=0.01) as run:
        # ~5 J per epoch x 50 epochs = ~250 J forecast, over a 100 J budget.
        run.live_forecast(50, stable_epoch=0, window=2, budget=joulecast.EnergyBudget(budget_j=100))
        done = []
        for epoch in epochs(run, 50):
            time.sleep(0.05)
            epoch.log(loss=1.0)
            done.append(epoch.index)
    assert 1 <= len(done) < 5
    assert "exceeds the budget" in run.stop_reason
    phases = store.phases(run.run_id, "epoch")
    assert "forecast" in phases["metrics"].iloc[0]
    assert phases["metrics"].iloc[-1]["early_stop"] == run.stop_reason
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("joulecast: epoch")]
    assert len(lines) == len(done)
    assert lines[0].startswith("joulecast: epoch 1/50 [") and " J to go" in lines[0]


def test_keras_fit_stops_on_budget_and_forecasts(tmp_path, capsys):
    keras = pytest.importorskip("keras")
    from joulecast.integrations.keras import JoulecastCallback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    store = joulecast.open_store(tmp_path / "s.db")

    class Slow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.05)

    run = joulecast.measure(store=store, sensors=[Constant()], interval_s=0.01).start()
    cb = JoulecastCallback(
        run=run,
        batch_size=16,
        forecast={"stable_epoch": 0, "window": 2},
        budget=joulecast.EnergyBudget(budget_j=50),
    )
    history = model.fit(x, y, batch_size=16, epochs=200, verbose=0, callbacks=[Slow(), cb])
    run.stop()
    assert len(history.history["loss"]) < 20
    assert run.should_stop and "exceeds the budget" in run.stop_reason
    assert store.run(run.run_id)["tags"]["early_stop"] == run.stop_reason
    f = store.phases(run.run_id, "epoch")["metrics"].iloc[-1]["forecast"]
    assert f["total_epochs"] == 200 and f["total_j"] > 50
    assert f"epoch {len(history.history['loss'])}/200 [" in capsys.readouterr().err


def test_keras_forecast_without_budget_runs_to_the_end(tmp_path):
    keras = pytest.importorskip("keras")
    from joulecast.integrations.keras import JoulecastCallback

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 2), "float32")
    cb = JoulecastCallback(store=tmp_path / "s.db", forecast=True, batch_size=8)
    model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[cb])
    with joulecast.open_store(tmp_path / "s.db") as s:
        metrics = s.phases(cb.run.run_id, "epoch")["metrics"].tolist()
    assert len(metrics) == 3 and all("forecast" in m for m in metrics)
    # One epoch: the first-epoch extrapolation; from the second on, the stable epochs.
    assert metrics[0]["forecast"]["method"] == "first-epoch"
    assert metrics[-1]["forecast"]["method"] == "epoch-energy"
    # Chosen in the run: FLUSS's change, or every epoch after the first (too few to judge).
    assert metrics[-1]["forecast"]["stable_epoch_by"] in ("fluss", "few-epochs")


def test_lightning_stops_on_budget(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    from joulecast.integrations.lightning import JoulecastCallback

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 2)

        def training_step(self, batch, i):
            time.sleep(0.02)
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x = torch.randn(32, 4)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)
    store = joulecast.open_store(tmp_path / "s.db")
    run = joulecast.measure(store=store, sensors=[Constant()], interval_s=0.01).start()
    cb = JoulecastCallback(
        run=run,
        forecast={"stable_epoch": 0, "window": 2},
        budget=joulecast.EnergyBudget(budget_j=30),
    )
    trainer = pl.Trainer(
        max_epochs=100,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), loader)
    run.stop()
    epochs = store.phases(run.run_id, "epoch")
    assert run.should_stop and 1 <= len(epochs) < 10
    assert trainer.current_epoch < 20


def test_huggingface_stops_on_budget(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    from joulecast.integrations.huggingface import JoulecastTrainerCallback

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return {"input_ids": torch.arange(8) % 64, "labels": torch.tensor(i % 2)}

    class SlowStep(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(0.05)

    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    store = joulecast.open_store(tmp_path / "s.db")
    run = joulecast.measure(store=store, sensors=[Constant()], interval_s=0.01).start()
    cb = JoulecastTrainerCallback(
        run=run,
        forecast={"stable_epoch": 0, "window": 2},
        budget=joulecast.EnergyBudget(budget_j=30),
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=100,
        per_device_train_batch_size=16,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=args,
        train_dataset=Tokens(),
        callbacks=[SlowStep(), cb],
    )
    trainer.train()
    run.stop()
    assert run.should_stop
    assert trainer.state.epoch < 20
    assert 1 <= len(store.phases(run.run_id, "epoch")) < 10
