"""The paper's six architectures for transfer learning: Keras bases without their top + a head.

The first five train in two steps (the head with the base frozen, then the whole network
fine-tuned at a lower learning rate); InceptionV3 in one frozen step, as in the paper.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from joulecast.offline.flops import (
    ARCHITECTURES,
    add_head,
    build_base,
    check_input_size,
    import_keras,
    min_input_size,
)

log = logging.getLogger(__name__)

__all__ = [
    "ARCHITECTURES",
    "ONE_STEP",
    "build_model",
    "check_input_size",
    "min_input_size",
    "preprocess",
]

# Architectures trained in one frozen step (no fine-tuning).
ONE_STEP: frozenset[str] = frozenset({"inception_v3"})

# keras.applications module whose preprocess_input each architecture uses.
_PREPROCESS_MODULE: dict[str, str] = {
    "mobilenet_v2": "mobilenet_v2",
    "nasnet_mobile": "nasnet",
    "resnet50": "resnet50",
    "xception": "xception",
    "vgg16": "vgg16",
    "inception_v3": "inception_v3",
}

_announced_no_weights = False


def preprocess(name: str, images: np.ndarray) -> np.ndarray:
    """``uint8`` RGB images to the float input architecture ``name`` expects."""
    min_input_size(name)
    keras = import_keras()
    module = getattr(keras.applications, _PREPROCESS_MODULE[name])
    return np.asarray(module.preprocess_input(images.astype(np.float32)), dtype=np.float32)


def build_model(
    name: str, input_size: int, classes: int, weights: str | None = "imagenet"
) -> tuple[Any, Any, str | None]:
    """The base of ``name`` (without its top) and a model with the new head.

    With ``weights="imagenet"`` Keras downloads the ImageNet weights once (or reads its cache);
    when they cannot be had the base starts from random weights, announced by one warning per
    process.

    Returns:
        ``(model, base, weights_used)``.

    Raises:
        InputError: Unknown name, input size below the minimum, or Keras missing.
    """
    global _announced_no_weights
    check_input_size(name, input_size)
    used = weights
    if weights is not None:
        try:
            base = build_base(name, input_size, weights)
        except Exception as exc:  # no network, no cache, a corrupt file: train from scratch
            if not _announced_no_weights:
                log.warning(
                    "ImageNet weights for %s unavailable (%s): training from random weights",
                    name,
                    exc,
                )
                _announced_no_weights = True
            used = None
            base = build_base(name, input_size, None)
    else:
        base = build_base(name, input_size, None)
    base.trainable = False
    return add_head(base, classes, name=name), base, used
