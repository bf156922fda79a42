"""matplotlib, headless, or a clear error naming the extra to install; figures saved whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from joulecast.errors import InputError
from joulecast.outputs import write_atomic


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError("plots need matplotlib: pip install 'joulecast[stability]'") from exc
    return plt


def save(fig: Any, path: str | os.PathLike[str], *, dpi: float) -> Path:
    """Save ``fig`` to ``path`` whole or not at all (:func:`~joulecast.outputs.write_atomic`),
    in the format ``path``'s suffix names (``.png``, ``.svg``, ``.pdf``...; PNG without one).

    The temporary file's name ends in random letters, so the format is passed, not guessed.

    Raises:
        InputError: the suffix names no format matplotlib writes, or as ``write_atomic``.
        OutputError: as ``write_atomic``.
    """
    target = Path(path)
    fmt = target.suffix[1:].lower() or "png"
    formats = fig.canvas.get_supported_filetypes()
    if fmt not in formats:
        raise InputError(f"{target}: a .{fmt} figure; expected one of .{', .'.join(formats)}")
    write_atomic(target, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt))
    return target
