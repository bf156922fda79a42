"""matplotlib, headless, or a clear error naming the extra to install."""

from __future__ import annotations

from typing import Any

from joulecast.errors import InputError


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError("plots need matplotlib: pip install 'joulecast[stability]'") from exc
    return plt
