"""Training-framework integrations, one module per framework.

Each module imports its framework when it is imported, so import only the one you use:

- :mod:`joulecast.integrations.torch`: ``epochs()`` / ``steps()`` for hand-written PyTorch loops;
- :mod:`joulecast.integrations.lightning`: ``JoulecastCallback`` for PyTorch Lightning;
- :mod:`joulecast.integrations.huggingface`: ``JoulecastTrainerCallback`` for transformers;
- :mod:`joulecast.integrations.keras`: ``JoulecastCallback`` for Keras 3 (any backend);
- :mod:`joulecast.integrations.mlflow`: ``log_run()`` and ``MlflowLogger`` for MLflow;
- :mod:`joulecast.integrations.wandb`: ``WandbLogger`` for Weights & Biases;
- :mod:`joulecast.integrations.tensorboard`: ``TensorBoardLogger`` for TensorBoard event files.

A missing framework raises ``ImportError`` naming the extra to install
(``pip install 'joulecast[lightning]'``). This package itself imports nothing.
"""

from __future__ import annotations

__all__: list[str] = []
