"""What joulecast reads from its user: durations, the environment, values of files it checks.

Every environment variable joulecast reads or sets is named here, once:

- ``JOULECAST_STORE`` (:data:`STORE_ENV`): the run store used when none is given.
- ``JOULECAST_RUN_ID`` (:data:`RUN_ENV`): set by ``joulecast measure`` for its child, whose
  :func:`joulecast.measure` then joins that run instead of opening one.
- ``JOULECAST_GPUS`` (:data:`GPUS_ENV`): a user CSV that extends the GPU catalogue.
- ``JOULECAST_CPU_TDP_W`` (:data:`CPU_TDP_ENV`): the CPU TDP of the modelled CPU power.
- ``JOULECAST_REPLAY_GPUS`` (:data:`REPLAY_GPUS_ENV`): a neutral ``power.csv`` whose GPUs
  sensor detection replays instead of this machine's (a dry run); ``joulecast measure
  --replay-gpus`` sets it for its command.
- ``JOULECAST_RUN_UID`` (:data:`RUN_UID_ENV`): the identity a distributed job's nodes share
  (default: SLURM's or torchrun's job id).
- ``JOULECAST_SHARD_DIR`` (:data:`SHARD_DIR_ENV`): the folder of a multi-node job's node
  shards (default: ``<store>.shards`` beside the store).
- ``JOULECAST_NODE`` (:data:`NODE_ENV`): this node's name in a job (default: the host name).
- ``JOULECAST_NODE_RANK`` (:data:`NODE_RANK_ENV`) and ``JOULECAST_NODES`` (:data:`NODES_ENV`):
  this node's rank and the job's nodes, where no launcher (torchrun, SLURM) says.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any

from joulecast.errors import InputError

STORE_ENV = "JOULECAST_STORE"
RUN_ENV = "JOULECAST_RUN_ID"
GPUS_ENV = "JOULECAST_GPUS"
CPU_TDP_ENV = "JOULECAST_CPU_TDP_W"
REPLAY_GPUS_ENV = "JOULECAST_REPLAY_GPUS"
RUN_UID_ENV = "JOULECAST_RUN_UID"
SHARD_DIR_ENV = "JOULECAST_SHARD_DIR"
NODE_ENV = "JOULECAST_NODE"
NODE_RANK_ENV = "JOULECAST_NODE_RANK"
NODES_ENV = "JOULECAST_NODES"

#: The largest index, count or whole number joulecast reads (a signed 64-bit SQLite integer
#: holds 18 digits; no GPU, epoch or repetition count comes near).
MAX_WHOLE = 10**15
#: The most epochs a training, a forecast or a sweep may name.
MAX_EPOCHS = 1_000_000
#: The largest square input side, in pixels, of a built-in architecture (a forward pass at
#: larger sides allocates gigabytes).
MAX_INPUT_SIZE = 2048
#: The longest duration joulecast reads (a warm-up, cooldown, interval or planned run): 10 years.
MAX_DURATION_S = 10 * 365.25 * 86400.0
#: The longest line read from a text file, in characters: 1 MiB of ASCII, far past any CSV row.
MAX_LINE_CHARS = 1 << 20
_WHOLE = re.compile(r"[+-]?[0-9]{1,18}")
_DECIMAL = re.compile(
    r"[+-]?(?:[0-9]{1,300}(?:\.[0-9]{0,300})?|\.[0-9]{1,300})(?:[eE][+-]?[0-9]{1,4})?"
)

_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([dhms])", re.ASCII)
_PLAIN = re.compile(r"\d+(?:\.\d+)?|\.\d+", re.ASCII)


def whole(value: object, what: str, *, lo: int = 0, hi: int = MAX_WHOLE) -> int:
    """``value`` (an int, or text of ASCII digits with an optional sign) as an int in
    [``lo``, ``hi``]; ``what`` names it in the error (the file and field, or the option).

    Raises:
        InputError: not such a number, or out of range.
    """
    expected = f"expected a whole number from {lo} to {hi}"
    if isinstance(value, bool):
        raise InputError(f"{what}: {quote(value)}: {expected}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise InputError(f"{what}: {quote(value)}: {expected}")
    if not lo <= number <= hi:
        raise InputError(f"{what}: {quote(value)}: {expected}")
    return number


def finite(
    value: object, what: str, *, lo: float = -math.inf, hi: float = math.inf, above: bool = False
) -> float:
    """``value`` (an int, a float, or text of an ASCII decimal number) as a finite float in
    [``lo``, ``hi``] (above ``lo`` with ``above``); ``what`` names it in the error.

    Raises:
        InputError: not such a number, not finite, or out of range.
    """
    expected = "expected a finite number" + _range(lo, hi, above)
    number: float
    if isinstance(value, bool):
        raise InputError(f"{what}: {quote(value)}: {expected}")
    if isinstance(value, (int, float)):
        number = float(value) if isinstance(value, float) or abs(value) < 10**300 else math.inf
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        raise InputError(f"{what}: {quote(value)}: {expected}")
    if not math.isfinite(number) or number < lo or number > hi or (above and number == lo):
        raise InputError(f"{what}: {quote(value)}: {expected}")
    return number


def _range(lo: float, hi: float, above: bool) -> str:
    low = f"above {lo:g}" if above else f"from {lo:g}"
    if hi == math.inf:
        return "" if lo == -math.inf else f" {low}"
    return f" at most {hi:g}" if lo == -math.inf else f" {low} to {hi:g}"


def whole_arg(lo: int = 0, hi: int = MAX_WHOLE) -> Callable[[str], int]:
    """An argparse ``type`` reading a whole number in [``lo``, ``hi``] (see :func:`whole`)."""
    return _as_arg(lambda text: whole(text, "value", lo=lo, hi=hi))


def finite_arg(
    lo: float = -math.inf, hi: float = math.inf, *, above: bool = False
) -> Callable[[str], float]:
    """An argparse ``type`` reading a finite number in [``lo``, ``hi``] (see :func:`finite`)."""
    return _as_arg(lambda text: finite(text, "value", lo=lo, hi=hi, above=above))


def _as_arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    import argparse

    def parse_arg(text: str) -> Any:
        try:
            return parse(text)
        except InputError as exc:
            # argparse names the option; the message keeps the value and what was expected.
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ")) from None

    return parse_arg


def parse_duration(text: str, *, max_s: float = MAX_DURATION_S) -> float:
    """Seconds in a duration such as ``"2h"``, ``"90m"``, ``"1h30m"``, ``"45s"``, ``"1.5h"``.

    A plain number (``"3600"``) is seconds. Units ``d``, ``h``, ``m``, ``s`` (case-insensitive),
    each at most once and in that order; spaces between parts are allowed.

    Raises:
        InputError: The text is not such a duration, or it is longer than ``max_s``.
    """
    if not isinstance(text, str):
        raise InputError(f"duration {quote(text)}: expected a string such as '1h30m'")
    seconds = _duration_s(text)
    if not seconds <= max_s:
        raise InputError(f"duration {quote(text)}: expected at most {max_s:.0f} s")
    return seconds


def _duration_s(text: str) -> float:
    cleaned = text.strip().lower()
    expected = "expected e.g. '2h', '90m', '1h30m', '45s', '1.5h' or seconds '3600'"
    if len(cleaned) > 100:
        raise InputError(f"duration {quote(text)}: {expected}")
    if _PLAIN.fullmatch(cleaned):
        return float(cleaned)
    parts = list(_PART.finditer(cleaned))
    rebuilt = "".join(m.group(0) for m in parts)
    if not parts or re.sub(r"\s+", "", rebuilt) != re.sub(r"\s+", "", cleaned):
        raise InputError(f"duration {text!r}: {expected}")
    units = [m.group(2) for m in parts]
    order = "dhms"
    if len(set(units)) != len(units) or units != sorted(units, key=order.index):
        raise InputError(f"duration {text!r}: units must appear once each, in the order d h m s")
    return sum(float(m.group(1)) * _UNIT_S[m.group(2)] for m in parts)


def read_file(
    path: str | os.PathLike[str], what: str, *, max_bytes: int, regular: bool = False
) -> bytes:
    """The bytes of the file at ``path``, of which there may be at most ``max_bytes``.

    Reads at most one byte more than allowed, so a device or a huge file costs no more than a
    small one. ``what`` says what the file should be ("a model file"), in errors.
    ``regular``: refuse anything but a plain file, a symbolic link included (not followed),
    without waiting on a FIFO: for files in a folder others may write to.

    Raises:
        InputError: ``path`` is missing, a folder, unreadable or longer than ``max_bytes``;
            with ``regular``, not a plain file.
    """
    try:
        if regular:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        else:
            fd = os.open(path, os.O_RDONLY)
        with open(fd, "rb") as fh:
            if regular and not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputError(f"{path}: not a plain file (expected {what})")
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (expected {what})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder (expected {what})") from None
    except OSError as exc:
        if regular and exc.errno == errno.ELOOP:
            raise InputError(
                f"{path}: is a symbolic link; not followed (expected {what})"
            ) from None
        raise InputError(f"{path}: cannot be read: {exc.strerror} (expected {what})") from None
    if len(data) > max_bytes:
        raise InputError(f"{path}: more than {max_bytes:,} bytes, the most {what} may hold")
    return data


def key_values(items: Sequence[str], option: str, shape: str = "KEY=VALUE") -> dict[str, str]:
    """``KEY=VALUE`` strings given to ``option`` as a dict (later keys win).

    Raises:
        InputError: an item has no ``=`` or an empty key.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{option} {item!r}: expected {shape}")
        out[key] = value
    return out


def capped_lines(fh: IO[str], what: str, *, max_chars: int | None = None) -> Iterator[str]:
    """The lines of the text file ``fh``, line ends kept, none read past ``max_chars``
    characters (default :data:`MAX_LINE_CHARS`): a file of one endless line (``/dev/zero``, a
    FIFO) is refused once that much is read, never held whole; ``what`` names the file.

    Raises:
        InputError: a line is longer than ``max_chars``.
    """
    limit = MAX_LINE_CHARS if max_chars is None else max_chars
    number = 0
    while line := fh.readline(limit + 2):  # the line and a "\r\n" at most
        number += 1
        if len(line.rstrip("\r\n")) > limit:
            raise InputError(
                f"{what}: line {number}: longer than the limit of {limit} characters "
                f"({limit / 2**20:g} MiB of ASCII)"
            )
        yield line


# Python 3.10's fromisoformat takes neither a 'Z' nor a fraction of other than 3 or 6 digits.
_ISO_FRACTION = re.compile(r"(T?\d{2}:\d{2}:\d{2})[.,](\d+)")


def iso_time(value: object) -> datetime | None:
    """``value`` as an ISO 8601 date and time (a ``Z`` suffix is UTC, a fraction of any length
    is read to the microsecond, on every supported Python); None where it is not one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    text = _ISO_FRACTION.sub(lambda m: f"{m[1]}.{(m[2] + '000000')[:6]}", text, count=1)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def is_number(value: object, *, positive: bool = False) -> bool:
    """Whether ``value`` (read from a file) is a finite int or float, not a bool; > 0 if asked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > 0 or not positive


def quote(value: object, limit: int = 60) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
