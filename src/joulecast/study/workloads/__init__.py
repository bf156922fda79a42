"""The paper's workloads: six Keras architectures trained by transfer learning.

``train(TrainConfig(arch="mobilenet_v2", dataset="shapes", input_size=32, weights=None))``
trains under a joulecast run and stores the test-split scores in a ``test`` phase. Keras is
imported when a workload is built, with the torch backend unless ``KERAS_BACKEND`` says
otherwise.
"""

from __future__ import annotations

from joulecast.study.workloads.datasets import DATASETS, Dataset, load_dataset
from joulecast.study.workloads.metrics import classification_metrics
from joulecast.study.workloads.train import TrainConfig, TrainResult, train

__all__ = [
    "DATASETS",
    "Dataset",
    "TrainConfig",
    "TrainResult",
    "classification_metrics",
    "load_dataset",
    "train",
]
