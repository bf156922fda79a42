"""What joulecast writes for its user: JSON on standard output, and files whole or not at all."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def print_json(data: Any) -> None:
    """Print ``data`` as the ``--json`` output of a command: indented, keys in their order.

    NaN and infinities print as ``null``, the mark of a missing value (a JSON parser refuses
    ``NaN``); values JSON lacks (paths, timestamps) print as their ``str``.
    """
    print(json.dumps(_finite(data), indent=2, allow_nan=False, default=str))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp)`` on a new file beside ``path``, then rename it to ``path``.

    Readers see the old file or the new one, never a part; a failed ``write`` leaves ``path``
    as it was and removes the temporary file. The temporary file is created anew (a link planted
    at its name is not followed) and the rename replaces a link at ``path`` instead of writing
    through it.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
