"""Offline estimation: model complexity (forward-pass FLOPs) of torch and Keras models."""

from __future__ import annotations

from joulecast.offline.flops import (
    ARCHITECTURES,
    FlopsResult,
    architecture_flops,
    build_architecture,
    count_flops,
    min_input_size,
)

__all__ = [
    "ARCHITECTURES",
    "FlopsResult",
    "architecture_flops",
    "build_architecture",
    "count_flops",
    "min_input_size",
]
