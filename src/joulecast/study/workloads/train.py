"""Train one of the paper's workloads by transfer learning, measured by joulecast.

A run is opened with :func:`joulecast.measure` (or the one ``joulecast measure`` opened is
joined); epochs are marked by the Keras callback of :mod:`joulecast.integrations.keras`, one
callback per ``fit`` step sharing the run, epoch indices running on across steps. After training,
the test split is evaluated inside a phase of kind ``test`` whose metrics hold accuracy,
precision, recall, F1 and ROC AUC; the workload's settings are the run's tags.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import joulecast
from joulecast.errors import InputError
from joulecast.offline.flops import ARCHITECTURES, check_input_size, count_flops, import_keras
from joulecast.records import PhaseKind
from joulecast.store import Store
from joulecast.study import params
from joulecast.study.params import param
from joulecast.study.workloads.architectures import ONE_STEP, build_model, preprocess
from joulecast.study.workloads.datasets import DATASETS, SPLITS, Dataset, load_dataset
from joulecast.study.workloads.metrics import classification_metrics

log = logging.getLogger(__name__)

# The largest settings taken (beyond them a run is a typo, not an experiment): images per
# batch, epochs of a step, generated images; seeds are numpy's 32 bits. The image side is
# bounded by joulecast.inputs.MAX_INPUT_SIZE, as every built architecture is.
MAX_BATCH_SIZE = 1_000_000
MAX_EPOCHS = 100_000
MAX_SAMPLES = 1_000_000
MAX_SEED = 2**32 - 1


def _epochs(values: list[int]) -> tuple[int, int]:
    if len(values) not in (1, 2):
        raise InputError(f"--epochs {values}: expected one or two numbers (FROZEN [FINE_TUNE])")
    return (values[0], values[1] if len(values) == 2 else 0)


@dataclass(frozen=True)
class TrainConfig:
    """One workload; each field is also an option of the command line and a study parameter.

    Attributes:
        arch: Architecture (``mobilenet_v2``, ``nasnet_mobile``, ``resnet50``, ``xception``,
            ``vgg16``, ``inception_v3``).
        dataset: Dataset (``shapes``, ``digits``, ``folder``, ``caltech101``, ``stanford_dogs``).
        dataset_path: The image folder, for ``folder``.
        split: ``holdout`` (validation set aside from the training images) or ``paper``
            (train on every training image, validate on the test split, as the paper did).
        input_size: Image side in pixels.
        batch_size: Images per batch.
        epochs: Epochs of the frozen step and of the fine-tuning step (InceptionV3: the first
            only); written ``FROZEN [FINE_TUNE]``, fine-tuning 0 when left out.
        learning_rates: Adam learning rates of the two steps.
        weights: ``"imagenet"`` or None (random initialisation; written ``none``).
        samples: Images generated for ``shapes``.
        seed: Seed of data, split and weights.
        name: Run name (default ``ARCH-DATASET-SIZE``).
    """

    arch: str = param("mobilenet_v2", help=", ".join(ARCHITECTURES))
    dataset: str = param("shapes", help=", ".join(DATASETS))
    dataset_path: str | None = param(
        None,
        help="image folder, one sub-folder per class",
        convert=lambda path: str(Path(path)) if path else None,
    )
    split: str = param(
        "holdout",
        choices=SPLITS,
        help="holdout: 65/15/20, or validation from a tfds train split (15%%); "
        "paper: train on every training image, validate on the test split (70/30 for "
        "the others)",
    )
    input_size: int = param(128, kind=int, help="pixels (128)")
    batch_size: int = param(32, kind=int)
    epochs: tuple[int, int] = param(
        (5, 5),
        kind=int,
        nargs="+",
        metavar="N",
        help="epochs of the frozen step and of fine-tuning (5 5)",
        convert=_epochs,
    )
    learning_rates: tuple[float, float] = param(
        (1e-3, 1e-5), kind=float, nargs=2, metavar="LR", convert=tuple
    )
    weights: str | None = param(
        "imagenet",
        choices=("imagenet", "none"),
        convert=lambda weights: None if weights == "none" else weights,
    )
    samples: int = param(400, kind=int, help="images of 'shapes' (400)")
    seed: int = param(0, kind=int)
    name: str | None = param(None, help="run name (default ARCH-DATASET-SIZE)")

    def validate(self) -> None:
        """Check names and numbers before anything heavy is imported.

        Raises:
            InputError: The first setting that is out of range, naming the valid values.
        """
        if self.arch not in ARCHITECTURES:
            raise InputError(
                f"unknown architecture {self.arch!r}: expected one of {', '.join(ARCHITECTURES)}"
            )
        if self.dataset not in DATASETS:
            raise InputError(
                f"unknown dataset {self.dataset!r}: expected one of {', '.join(DATASETS)}"
            )
        if self.split not in SPLITS:
            raise InputError(f"unknown split {self.split!r}: expected one of {', '.join(SPLITS)}")
        check_input_size(self.arch, self.input_size)
        if self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size}: expected at least 1")
        if self.batch_size > MAX_BATCH_SIZE:
            raise InputError(f"batch size {self.batch_size}: expected at most {MAX_BATCH_SIZE}")
        if len(self.epochs) != 2 or min(self.epochs) < 0 or self.epochs[0] < 1:
            raise InputError(
                f"epochs {tuple(self.epochs)}: expected FROZEN >= 1 and FINE_TUNE >= 0"
            )
        if max(self.epochs) > MAX_EPOCHS:
            raise InputError(f"epochs {tuple(self.epochs)}: expected at most {MAX_EPOCHS} each")
        if len(self.learning_rates) != 2 or not all(
            math.isfinite(lr) and lr > 0 for lr in self.learning_rates
        ):
            raise InputError(
                f"learning rates {tuple(self.learning_rates)}: expected two positive numbers"
            )
        if self.weights not in (None, "imagenet"):
            raise InputError(f"weights {self.weights!r}: expected 'imagenet' or None")
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise InputError(f"samples {self.samples}: expected 1 to {MAX_SAMPLES}")
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"seed {self.seed}: expected 0 to {MAX_SEED}")

    @property
    def steps(self) -> tuple[int, ...]:
        """Epochs per step actually trained (one step for InceptionV3)."""
        if self.arch in ONE_STEP:
            return (self.epochs[0],)
        return tuple(e for e in self.epochs if e > 0)


@dataclass
class TrainResult:
    """What a workload produced.

    Attributes:
        run_id: The joulecast run (joined or opened).
        store_path: The store holding it.
        config: The settings.
        weights: Weights the base started from (None: random).
        gflops: Forward-pass GFLOPs of the model at its input size.
        test_metrics: Scores on the test split (see :func:`classification_metrics`).
        history: Per-epoch Keras logs of every step, in order.
    """

    run_id: int
    store_path: str
    config: TrainConfig
    weights: str | None
    gflops: float
    test_metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["config"] = asdict(self.config)
        return out


def _epoch_callback(run: joulecast.Run, samples: int, batch_size: int) -> Any:
    """The integrations' Keras callback, marking epochs of ``run`` (which it never stops)."""
    from joulecast.integrations.keras import JoulecastCallback

    return JoulecastCallback(run=run, samples_per_epoch=samples, batch_size=batch_size)


def _load(config: TrainConfig) -> Dataset:
    return load_dataset(
        config.dataset,
        config.input_size,
        path=config.dataset_path,
        samples=config.samples,
        split=config.split,
        seed=config.seed,
    )


def train(
    config: TrainConfig,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    interval_s: float = 0.1,
) -> TrainResult:
    """Train ``config``'s workload under a joulecast run and score it on the test split.

    Args:
        config: The workload.
        store: Run store (default ``$JOULECAST_STORE`` or ./joulecast.db); under
            ``joulecast measure`` the run it opened is joined.
        interval_s: Sampling interval when this call opens its own run.

    Returns:
        The run id, the test metrics and the training history.

    Raises:
        InputError: Bad settings, dataset or missing packages.
    """
    config.validate()
    if config.arch in ONE_STEP and config.epochs[1] > 0:
        log.warning(
            "%s trains in one frozen step: ignoring %d fine-tuning epochs",
            config.arch,
            config.epochs[1],
        )
    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    data = _load(config)
    if len(data.y_train) == 0 or len(data.y_test) == 0:
        raise InputError(
            f"dataset {config.dataset!r}: {len(data.y_train)} train and {len(data.y_test)} test "
            "images: expected at least one of each (more images, or other fractions)"
        )
    x_train = preprocess(config.arch, data.x_train)
    x_test = preprocess(config.arch, data.x_test)
    # the paper split validates on the test split: one float copy of it, not two
    x_val = x_test if data.x_val is data.x_test else preprocess(config.arch, data.x_val)
    model, base, weights = build_model(config.arch, config.input_size, data.classes, config.weights)
    if weights is None and config.weights is None:
        log.info("%s starts from random weights (weights=None)", config.arch)
    flops = count_flops(model, (config.input_size,) * 2 + (3,), name=config.arch)
    name = config.name or f"{config.arch}-{config.dataset}-{config.input_size}"
    tags = {
        "workload": "joulecast.study",
        "arch": config.arch,
        "dataset": config.dataset,
        "input_size": str(config.input_size),
        "batch_size": str(config.batch_size),
        "epochs": ",".join(str(e) for e in config.steps),
        "weights": str(weights).lower(),
        "split": config.split,
        "gflops": f"{flops.gflops:.6g}",
        "train_samples": str(len(x_train)),
        "val_samples": str(len(x_val)),
        "test_samples": str(len(x_test)),
    }
    history: list[dict[str, float]] = []
    validation = (x_val, data.y_val) if len(x_val) else None
    with joulecast.measure(name=name, store=store, tags=tags, interval_s=interval_s) as run:
        run.store.update_run(run.run_id, tags=tags)  # a joined run has the parent's tags only
        epoch = 0
        for step, epochs in enumerate(config.steps):
            if step == 1:
                base.trainable = True
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate=config.learning_rates[step]),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            t0 = time.monotonic()
            fitted = model.fit(
                x_train,
                data.y_train,
                batch_size=config.batch_size,
                epochs=epoch + epochs,
                initial_epoch=epoch,
                validation_data=validation,
                callbacks=[_epoch_callback(run, len(x_train), config.batch_size)],
                verbose=0,
            )
            log.info(
                "step %d (%s): %d epochs in %.1f s",
                step + 1,
                "frozen base" if step == 0 else "fine-tuning",
                epochs,
                time.monotonic() - t0,
            )
            n = len(next(iter(fitted.history.values()), []))
            history += [{k: float(v[i]) for k, v in fitted.history.items()} for i in range(n)]
            epoch += epochs
        run.begin(PhaseKind.TEST, 0)
        y_prob = model.predict(x_test, batch_size=config.batch_size, verbose=0)
        test_metrics = classification_metrics(data.y_test, np.asarray(y_prob))
        run.end(PhaseKind.TEST, 0, samples=len(x_test), metrics=test_metrics)
    store_path = str(run.store.path)
    return TrainResult(run.run_id, store_path, config, weights, flops.gflops, test_metrics, history)


# -- command line (python -m joulecast.study.workloads, joulecast train) ------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the workload's options to ``parser`` (shared by ``joulecast train``)."""
    params.add_arguments(parser, TrainConfig)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed :func:`add_arguments` options.

    Raises:
        InputError: ``--epochs`` has more than two numbers.
    """
    return params.from_values(TrainConfig, vars(args))
