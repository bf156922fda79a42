"""Forward-pass FLOPs (2 per multiply-accumulate) of torch and Keras 3 models.

Counting uses :class:`torch.utils.flop_counter.FlopCounterMode`, which counts matrix
multiplications, convolutions and attention at 2 FLOPs per multiply-accumulate and leaves out
element-wise operations (activations, batch normalisation, pooling, additions). On the torch
backend a Keras 3 model is a torch ``nn.Module``, so both are counted the same way: one forward
call on a zero batch of one sample.

The built-in architectures are the paper's six ``keras.applications`` bases without their
ImageNet top (``include_top=False``, ``weights=None``) plus the head the workloads train:
``GlobalAveragePooling2D`` and ``Dense(classes)``.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from joulecast.errors import InputError
from joulecast.inputs import MAX_INPUT_SIZE

log = logging.getLogger(__name__)

KERAS_EXTRA = "pip install 'joulecast[keras]'"
TORCH_EXTRA = "pip install 'joulecast[torch]'"

# Smallest input side each keras.applications base accepts without its top (keras's
# obtain_input_shape for the first five; NASNet's generic builder checks 32 as well).
ARCHITECTURES: dict[str, int] = {
    "mobilenet_v2": 32,
    "nasnet_mobile": 32,
    "resnet50": 32,
    "xception": 71,
    "vgg16": 32,
    "inception_v3": 75,
}

# The paper's Table 2 (GFLOPs at 128x128); VGG16 printed 10.53, its own log and a recompute 10.03.
TABLE2_GFLOPS: dict[str, float] = {
    "mobilenet_v2": 0.20,
    "nasnet_mobile": 0.37,
    "resnet50": 2.53,
    "xception": 2.96,
    "vgg16": 10.03,
    "inception_v3": 1.50,
}


@dataclass(frozen=True)
class FlopsResult:
    """FLOPs of one forward pass of one sample.

    Attributes:
        model: Architecture or class name.
        input_size: Input side in pixels (square images), or None for other inputs.
        gflops: Forward-pass GFLOPs (1e9 FLOPs, 2 per multiply-accumulate).
        params: Number of parameters (trainable and not).
        method: How the FLOPs were counted.
    """

    model: str
    input_size: int | None
    gflops: float
    params: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return asdict(self)


def import_keras() -> Any:
    """Import Keras 3, forcing the torch backend when ``KERAS_BACKEND`` is unset.

    Raises:
        InputError: Keras or PyTorch is not installed.
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as exc:
        raise InputError(
            f"Keras 3 with PyTorch is needed ({exc.name} is missing): {KERAS_EXTRA}"
        ) from exc
    return keras


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise InputError(f"counting FLOPs needs PyTorch: {TORCH_EXTRA}") from exc
    return torch


def _count_params(model: Any) -> int:
    count = getattr(model, "count_params", None)
    if callable(count):
        return int(count())
    return int(sum(p.numel() for p in model.parameters()))


def count_flops(model: Any, input_shape: Sequence[int], *, name: str | None = None) -> FlopsResult:
    """Count the FLOPs of one forward pass of ``model`` on one zero sample.

    Args:
        model: A torch ``nn.Module``, or a Keras 3 model on the torch backend.
        input_shape: Shape of one sample, without the batch axis (``(3, 224, 224)`` for a
            channels-first torch model, ``(128, 128, 3)`` for a Keras model).
        name: Name to report (default: the model's name or class).

    Returns:
        The FLOPs, parameter count and counting method.

    Raises:
        InputError: ``model`` is not a torch module, or the input shape is empty.
    """
    torch = _import_torch()
    from torch.utils.flop_counter import FlopCounterMode

    if not isinstance(model, torch.nn.Module):
        raise InputError(
            f"count_flops: {type(model).__name__} is not a torch nn.Module "
            "(Keras models must run on the torch backend: KERAS_BACKEND=torch)"
        )
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise InputError(f"count_flops: input_shape {shape}: expected positive sizes")
    x = torch.zeros((1, *shape))
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    flops = counter.get_total_flops()
    side = shape[0] if len(shape) == 3 and shape[0] == shape[1] else None
    if side is None and len(shape) == 3 and shape[1] == shape[2]:
        side = shape[1]
    return FlopsResult(
        model=name or str(getattr(model, "name", None) or type(model).__name__),
        input_size=side,
        gflops=flops / 1e9,
        params=_count_params(model),
        method="torch.utils.flop_counter (2 per multiply-accumulate, element-wise ops omitted)",
    )


def min_input_size(name: str) -> int:
    """Smallest input side in pixels that architecture ``name`` accepts.

    Raises:
        InputError: ``name`` is not a built-in architecture.
    """
    if name not in ARCHITECTURES:
        raise InputError(
            f"unknown architecture {name!r}: expected one of {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name]


def check_input_size(name: str, input_size: int, *, built: bool = True) -> None:
    """Raise :class:`InputError` when ``input_size`` is below the architecture's minimum or,
    where the model is ``built``, above :data:`~joulecast.inputs.MAX_INPUT_SIZE`."""
    minimum = min_input_size(name)
    if input_size < minimum:
        raise InputError(
            f"input size {input_size} is too small for {name}: expected at least {minimum}"
        )
    if built and input_size > MAX_INPUT_SIZE:
        raise InputError(
            f"input size {input_size} is too large for {name}: expected at most {MAX_INPUT_SIZE}"
        )


def _nasnet_mobile(**kwargs: Any) -> Any:
    # keras.applications.NASNetMobile refuses the torch backend; the generic builder with the
    # mobile configuration does not.
    from keras.src.applications.nasnet import NASNet

    return NASNet(
        penultimate_filters=1056,
        num_blocks=4,
        stem_block_filters=32,
        skip_reduction=False,
        filter_multiplier=2,
        **kwargs,
    )


def _bases(keras: Any) -> dict[str, Callable[..., Any]]:
    apps = keras.applications
    return {
        "mobilenet_v2": apps.MobileNetV2,
        "nasnet_mobile": _nasnet_mobile,
        "resnet50": apps.ResNet50,
        "xception": apps.Xception,
        "vgg16": apps.VGG16,
        "inception_v3": apps.InceptionV3,
    }


def build_base(name: str, input_size: int, weights: str | None = None) -> Any:
    """The Keras base of architecture ``name`` without its top.

    Args:
        name: A built-in architecture (see :data:`ARCHITECTURES`).
        input_size: Input side in pixels.
        weights: ``"imagenet"`` or None.

    Raises:
        InputError: Unknown name, input too small, or Keras missing.
    """
    check_input_size(name, input_size)
    keras = import_keras()
    return _bases(keras)[name](
        include_top=False, weights=weights, input_shape=(input_size, input_size, 3)
    )


def add_head(base: Any, classes: int, name: str | None = None) -> Any:
    """``base`` + ``GlobalAveragePooling2D`` + ``Dense(classes, softmax)``, as one model.

    The base runs in inference mode (batch normalisation keeps its statistics) even while
    fine-tuning, as Keras advises for transfer learning.
    """
    keras = import_keras()
    inputs = keras.Input(shape=base.input_shape[1:])
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head_dense")(x)
    return keras.Model(inputs, outputs, name=name or base.name)


def build_architecture(
    name: str, input_size: int = 128, classes: int = 10, weights: str | None = None
) -> Any:
    """A built-in architecture with the workloads' head, as a Keras model.

    Args:
        name: A built-in architecture (see :data:`ARCHITECTURES`).
        input_size: Input side in pixels.
        classes: Outputs of the head's Dense layer.
        weights: ``"imagenet"`` or None for the base.

    Raises:
        InputError: Unknown name, input too small, classes < 1, or Keras missing.
    """
    if classes < 1:
        raise InputError(f"classes {classes}: expected at least 1")
    return add_head(build_base(name, input_size, weights), classes, name=name)


def architecture_flops(name: str, input_size: int = 128, classes: int = 10) -> FlopsResult:
    """Forward-pass FLOPs of a built-in architecture (base without top + head).

    Args:
        name: One of ``mobilenet_v2``, ``nasnet_mobile``, ``resnet50``, ``xception``,
            ``vgg16``, ``inception_v3``.
        input_size: Input side in pixels (square RGB images).
        classes: Outputs of the head's Dense layer (it adds 2 x features x classes FLOPs).

    Raises:
        InputError: Unknown name, input too small, or Keras/PyTorch missing.
    """
    check_input_size(name, input_size)
    keras = import_keras()
    if keras.backend.backend() != "torch":
        raise InputError(
            f"counting FLOPs needs the torch backend of Keras, not {keras.backend.backend()!r}: "
            "set KERAS_BACKEND=torch"
        )
    model = build_architecture(name, input_size, classes)
    result = count_flops(model, (input_size, input_size, 3), name=name)
    log.debug("%s at %d px: %.4f GFLOPs", name, input_size, result.gflops)
    if not math.isfinite(result.gflops):  # pragma: no cover - defensive
        raise InputError(f"{name}: FLOP count is not finite")
    return result


@functools.cache
def _gflops_table() -> dict[str, list[tuple[int, float]]]:
    text = (importlib.resources.files("joulecast.offline") / "architectures.csv").read_text(
        encoding="utf-8"
    )
    table: dict[str, list[tuple[int, float]]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        table.setdefault(row["architecture"], []).append(
            (int(row["input_size"]), float(row["gflops"]))
        )
    return {name: sorted(rows) for name, rows in table.items()}


def known_gflops(name: str, height: int, width: int | None = None) -> tuple[float, str]:
    """GFLOPs of a built-in architecture without building it, and how the figure was had.

    ``offline/architectures.csv`` holds :func:`architecture_flops` counts (10 classes) at square
    inputs of 75 to 299 px. A listed size is returned as counted; between listed sizes the
    count is interpolated on a log-log scale of the input area; beyond them it is scaled by
    the input area from the nearest listed size (convolutions scale with the area).

    Raises:
        InputError: unknown architecture, or an input below its minimum.
    """
    width = height if width is None else width
    check_input_size(name, min(height, width), built=False)
    rows = _gflops_table()[name]
    area = float(height * width)
    sizes = np.array([s * s for s, _ in rows], dtype=float)
    gflops = np.array([g for _, g in rows], dtype=float)
    exact = [g for s, g in rows if s == height == width]
    if exact:
        return exact[0], f"counted at {height}x{width} px"
    if sizes[0] <= area <= sizes[-1]:
        value = float(np.exp(np.interp(np.log(area), np.log(sizes), np.log(gflops))))
        return value, f"interpolated from counts at {rows[0][0]}..{rows[-1][0]} px"
    nearest = 0 if area < sizes[0] else len(rows) - 1
    value = float(gflops[nearest] * area / sizes[nearest])
    side = rows[nearest][0]
    return value, f"scaled by input area from the count at {side}x{side} px"
