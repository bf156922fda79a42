"""A Keras 3 ``fit()`` measured with ``JoulecastCallback``, on the PyTorch backend by default.

Run: ``python examples/keras_fit.py``, or ``joulecast measure -- python examples/keras_fit.py``.
Set ``KERAS_BACKEND`` to use another backend.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import keras
import numpy as np

from joulecast.integrations.keras import JoulecastCallback


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # 448 training samples (validation_split keeps the last 64 apart).
    callback = JoulecastCallback("keras-mlp", samples_per_epoch=448)
    model.fit(
        x, y, batch_size=64, epochs=2, validation_split=0.125, verbose=0, callbacks=[callback]
    )
    assert callback.run is not None
    print(
        callback.run.epochs[["index", "samples", "energy_j", "j_per_sample"]].to_string(index=False)
    )


if __name__ == "__main__":
    main()
