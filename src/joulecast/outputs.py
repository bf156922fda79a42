"""What joulecast writes for its user: files whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


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
