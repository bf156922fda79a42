"""Keras 3 fit() through joulecast.integrations.keras (PyTorch backend here)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported
keras = pytest.importorskip("keras")

import joulecast  # noqa: E402
from joulecast.integrations.keras import JoulecastCallback  # noqa: E402

from .helpers import stored  # noqa: E402


def _model_and_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model, x, y


def test_fit_two_epochs_opens_and_stops_a_run(tmp_path):
    path = tmp_path / "runs.db"
    model, x, y = _model_and_data()
    cb = JoulecastCallback("keras", store=path, interval_s=0.05, batch_size=20)
    model.fit(x, y, batch_size=20, epochs=2, validation_split=0.2, verbose=0, callbacks=[cb])
    assert cb.run is not None and not cb.run.active
    row, ep, _ = stored(path, cb.run.run_id)
    assert row["status"] == "completed" and row["name"] == "keras"
    assert ep["index"].tolist() == [0, 1]
    assert ep["samples"].tolist() == [80, 80]  # 4 steps x 20
    for metrics in ep["metrics"]:
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= metrics.keys()
        assert all(isinstance(v, float) for v in metrics.values())
    assert cb.run.summary().epochs["energy_j"].notna().all()


def test_samples_unknown_without_batch_size(tmp_path):
    model, x, y = _model_and_data()
    cb = JoulecastCallback(store=tmp_path / "runs.db", interval_s=0.05)
    model.fit(x, y, batch_size=50, epochs=1, verbose=0, callbacks=[cb])
    _, ep, _ = stored(tmp_path / "runs.db", cb.run.run_id)
    assert ep["samples"].isna().all()


def test_two_fits_on_one_run_give_epochs_0_to_3(tmp_path):
    path = tmp_path / "runs.db"
    model, x, y = _model_and_data()
    with joulecast.measure(name="transfer", store=path, interval_s=0.05) as run:
        frozen = JoulecastCallback(run=run, samples_per_epoch=100)
        model.fit(x, y, batch_size=50, epochs=2, verbose=0, callbacks=[frozen])
        assert frozen.run is run and run.active  # a given run is left to its owner
        tuned = JoulecastCallback(run=run, samples_per_epoch=100)
        model.fit(x, y, batch_size=50, epochs=4, initial_epoch=2, verbose=0, callbacks=[tuned])
        # A fit() whose epochs would overwrite recorded ones is numbered after them.
        again = JoulecastCallback(run=run, samples_per_epoch=100)
        model.fit(x, y, batch_size=50, epochs=1, verbose=0, callbacks=[again])
    row, ep, _ = stored(path, run.run_id)
    assert row["status"] == "completed"
    assert ep["index"].tolist() == [0, 1, 2, 3, 4]
    assert ep["samples"].tolist() == [100] * 5
    starts, ends = ep["start_s"].tolist(), ep["end_s"].tolist()
    assert all(e <= s for e, s in zip(ends, starts[1:], strict=False))


def test_one_callback_for_two_fits_opens_two_runs(tmp_path):
    model, x, y = _model_and_data()
    cb = JoulecastCallback(store=tmp_path / "runs.db", interval_s=0.05)
    model.fit(x, y, batch_size=50, epochs=1, verbose=0, callbacks=[cb])
    first = cb.run
    model.fit(x, y, batch_size=50, epochs=1, verbose=0, callbacks=[cb])
    assert cb.run is not first and not cb.run.active
    assert stored(tmp_path / "runs.db", first.run_id)[0]["status"] == "completed"
