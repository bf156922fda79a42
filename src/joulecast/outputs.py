"""What joulecast writes for its user: JSON on standard output, and files whole or not at all."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joulecast.errors import InputError, JoulecastError, OutputError


def print_json(data: Any) -> None:
    """Print ``data`` as the ``--json`` output of a command: indented, keys in their order.

    NaN and infinities print as ``null``, the mark of a missing value (a JSON parser refuses
    ``NaN``); values JSON lacks (paths, timestamps) print as their ``str``.
    """
    print(json.dumps(_finite(data), indent=2, allow_nan=False, default=str))


def reader_gone() -> int:
    """After a ``BrokenPipeError`` on stdout (``| head``): send what is left, and Python's own
    flush at exit, nowhere; say so on stderr. Returns the exit status, 2."""
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    print("joulecast: error: output closed before it was all written", file=sys.stderr)
    return 2


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_atomic(path: Path, write: Callable[[str], object], *, durable: bool = False) -> None:
    """Call ``write(tmp)`` on a new file beside ``path``, then rename it to ``path``.

    Readers see the old file or the new one, never a part; a failed ``write`` leaves ``path``
    as it was and removes the temporary file. The temporary file is created anew under a random
    name (a link planted there is not followed), with the permissions the umask gives a new
    file, and the rename replaces a link at ``path`` instead of writing through it.

    ``durable``: the file's bytes reach the disk before the rename, and the rename before this
    returns (``fsync`` of the file, then of its folder), so a machine that goes down after it
    finds the new file whole; without it the operating system may lose both, or leave ``path``
    empty.

    Raises:
        InputError: ``path``'s folder does not exist, or ``path`` is a folder.
        OutputError: the file could not be written (a full disk, a folder without write
            permission): an ``OSError`` raised while writing, named.
    """
    check_output(path)
    try:
        tmp = _new_file(path)
    except OSError as exc:
        raise _unwritten(path, exc) from exc
    try:
        write(str(tmp))
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, JoulecastError):
            raise _unwritten(path, exc) from exc
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unwritten(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"{path}: cannot be written: {exc.strerror or exc}")


def check_output(path: Path) -> None:
    """Refuse ``path`` as a file for :func:`write_atomic` to write: call it before the work
    that makes the file, so a mistyped output costs no fitting or report first.

    Raises:
        InputError: ``path``'s folder does not exist, or ``path`` is a folder.
    """
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected the name of the file to write")


def _new_file(path: Path) -> Path:
    # os.open with O_EXCL rather than tempfile.mkstemp: mkstemp's files are 0600 whatever the
    # umask, and a report or a model file is meant to be read by others where the umask allows.
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
