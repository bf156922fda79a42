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

import math
import re
from collections.abc import Sequence

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

_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([dhms])")
_PLAIN = re.compile(r"\d+(?:\.\d+)?|\.\d+")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"2h"``, ``"90m"``, ``"1h30m"``, ``"45s"``, ``"1.5h"``.

    A plain number (``"3600"``) is seconds. Units ``d``, ``h``, ``m``, ``s`` (case-insensitive),
    each at most once and in that order; spaces between parts are allowed.

    Raises:
        InputError: The text is not such a duration.
    """
    if not isinstance(text, str):
        raise InputError(f"duration {text!r}: expected a string such as '1h30m'")
    cleaned = text.strip().lower()
    expected = "expected e.g. '2h', '90m', '1h30m', '45s', '1.5h' or seconds '3600'"
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


def is_number(value: object, *, positive: bool = False) -> bool:
    """Whether ``value`` (read from a file) is a finite int or float, not a bool; > 0 if asked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > 0 or not positive


def quote(value: object, limit: int = 60) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
