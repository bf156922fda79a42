"""The GPU catalogue: FP32 CUDA cores, memory and published board power of NVIDIA GPUs.

The shipped table (``gpus.csv``, loaded with :mod:`importlib.resources`) has one row per GPU
*and form factor* — PCIe, SXM and NVL boards of one chip differ in power by up to 2x — and names
for each row the document its values come from; values that could not be sourced are marked
``n/s`` in its ``notes`` column. A user CSV with the same columns (``source`` and ``notes``
optional) extends or corrects it: see :meth:`Catalogue.load`.

Lookup rules (also in ``docs/offline-catalogue-baselines.md``):

1. A name is normalised: lower case, the words ``NVIDIA``, ``GeForce``, ``Tesla`` and
   ``Quadro`` dropped, every character other than a letter or digit dropped. So
   ``"NVIDIA GeForce RTX 3090"``, ``"rtx3090"`` and ``"GeForce RTX 3090"`` are one key.
2. A key that equals the normalised name or an alias of exactly one row returns that row.
   No key may belong to two rows.
3. Otherwise, if the name carries a memory size as NVML prints it (``"40GB"``, with or without
   a memory type such as ``"HBM3"``), the size is split off, and the row whose name or alias,
   with its own size split off, equals the rest *and* whose ``memory_gb`` equals the size is
   returned (``"NVIDIA A100 80GB PCIe"`` -> ``A100 PCIe 80GB``).
4. Anything else is an :class:`~joulecast.errors.InputError` that lists candidates. A short name
   shared by several rows (``"A100"``, ``"V100"``) resolves only where the catalogue lists it
   as an alias of one default row; ``"A100 PCIe"`` (40 or 80 GB) is an error naming both.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import pandas as pd

from joulecast.errors import InputError
from joulecast.inputs import GPUS_ENV, finite, quote, read_file, whole
from joulecast.offline.bounds import COLUMN_MAX

SHIPPED = "gpus.csv"
COLUMNS = (
    "name",
    "aliases",
    "architecture",
    "cuda_cores",
    "memory_gb",
    "tdp_w",
    "form_factor",
    "source",
    "notes",
)
REQUIRED = ("name", "architecture", "cuda_cores", "memory_gb", "tdp_w", "form_factor")
_NUMERIC = ("cuda_cores", "memory_gb", "tdp_w")
_VENDOR_WORDS = frozenset({"nvidia", "geforce", "tesla", "quadro"})
_MEM_TYPE = re.compile(r"^(hbm\d*e?|gddr\d+x?)$")
_MEM_SIZE = re.compile(r"^(\d+)gb$")
_MAX_CANDIDATES = 6
#: The largest user catalogue file read (the shipped one of some 50 GPUs has 20 kB).
MAX_USER_BYTES = 2**20


@dataclass(frozen=True)
class GpuSpec:
    """One GPU of the catalogue.

    Attributes:
        name: Canonical name (``"GeForce RTX 3090"``, ``"H100 SXM5 80GB"``).
        architecture: NVIDIA architecture (``"Ampere"``, ``"Hopper"``).
        cuda_cores: FP32 CUDA cores.
        memory_gb: Memory in GB, as published.
        tdp_w: Board power as published (TDP/TGP/max power), in watts.
        form_factor: ``desktop``, ``PCIe``, ``SXM``, ``NVL``...
        source: Where the values come from (a URL or a named document).
        aliases: Other names that resolve to this row, NVML's among them.
    """

    name: str
    architecture: str
    cuda_cores: int
    memory_gb: float
    tdp_w: float
    form_factor: str
    source: str
    aliases: tuple[str, ...] = ()


def normalise(name: str) -> str:
    """The lookup key of a GPU name (rule 1 of the module docstring)."""
    return "".join(t for t in _tokens(name) if t not in _VENDOR_WORDS)


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def _split_memory(name: str) -> tuple[str, float | None]:
    """The key of ``name`` without its memory size and type, and the size in GB (or None)."""
    kept: list[str] = []
    size: float | None = None
    tokens = [t for t in _tokens(name) if t not in _VENDOR_WORDS]
    for i, tok in enumerate(tokens):
        match = _MEM_SIZE.match(tok)
        if match:
            size = float(match.group(1))
        elif tok.isdigit() and i + 1 < len(tokens) and tokens[i + 1] == "gb":
            size = float(tok)
        elif tok == "gb" and i > 0 and tokens[i - 1].isdigit() and size is not None:
            continue
        elif not _MEM_TYPE.match(tok):
            kept.append(tok)
    return "".join(kept), size


@dataclass(frozen=True)
class _Row:
    spec: GpuSpec
    notes: str
    origin: str  # "file, line N"


class Catalogue:
    """An immutable set of :class:`GpuSpec` rows with name lookup.

    Build it with :meth:`load`; :func:`lookup` uses a cached default one.
    """

    def __init__(self, rows: Iterable[_Row]) -> None:
        self._rows: dict[str, _Row] = {}
        for row in rows:
            self._rows[row.spec.name] = row
        self._index = self._build_index()
        self._stripped: dict[str, set[str]] = {}
        for name, row in self._rows.items():
            for label in (name, *row.spec.aliases):
                key, _ = _split_memory(label)
                if key:
                    self._stripped.setdefault(key, set()).add(name)

    def _build_index(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for name, row in self._rows.items():
            for label in (name, *row.spec.aliases):
                key = normalise(label)
                if not key:
                    raise InputError(f"{row.origin}: GPU name or alias '{label}' is empty")
                other = index.get(key)
                if other is not None and other != name:
                    raise InputError(
                        f"{row.origin}: '{label}' of GPU '{name}' is already a name or alias "
                        f"of '{other}' ({self._rows[other].origin}): expected each name to "
                        "resolve to one GPU"
                    )
                index[key] = name
        return index

    @classmethod
    def load(cls, extra: str | os.PathLike[str] | None = None) -> Catalogue:
        """The shipped catalogue, extended or corrected by a user CSV.

        The user CSV has the shipped columns; ``aliases``, ``source`` and ``notes`` may be
        missing. A row whose ``name`` resolves (by the lookup rules, exact keys only) to a shipped
        GPU overrides that GPU: its non-empty cells replace the shipped values, its aliases are
        added, and its ``source`` (default: the user file and line) replaces the shipped one.
        Any other row adds a GPU and must fill every required cell. Aliases of user rows take
        precedence over shipped aliases; no alias may be the name of another GPU.

        Args:
            extra: Path of the user CSV. When None, ``$JOULECAST_GPUS`` is used if set.

        Raises:
            InputError: The user file is missing, larger than 1 MiB or malformed, or a number
                in it is out of the bounds of :data:`~joulecast.offline.bounds.COLUMN_MAX` (the
                message names the file, line and field).
        """
        text = resources.files("joulecast.offline").joinpath(SHIPPED).read_text(encoding="utf-8")
        rows = _parse(text, f"shipped {SHIPPED}", user=False)
        if extra is None:
            env = os.environ.get(GPUS_ENV, "").strip()
            extra = env or None
        if extra is None:
            return cls(rows)
        path = Path(extra)
        data = read_file(path, "a GPU catalogue CSV", max_bytes=MAX_USER_BYTES)
        try:
            user_text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"GPU catalogue file {path}: not UTF-8 text (byte {exc.start})"
            ) from None
        return cls(_merge(cls(rows), _parse(user_text, str(path), user=True)))

    def lookup(self, name: str) -> GpuSpec:
        """The GPU called ``name`` (canonical name, alias or NVML name).

        Raises:
            InputError: No GPU or several GPUs match; the message lists the candidates.
        """
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"GPU name {name!r}: expected a non-empty string")
        key = normalise(name)
        hit = self._index.get(key)
        if hit is not None:
            return self._rows[hit].spec
        base, size = _split_memory(name)
        if size is not None and base:
            family = sorted(self._stripped.get(base, set()))
            sized = [n for n in family if self._rows[n].spec.memory_gb == size]
            if len(sized) == 1:
                return self._rows[sized[0]].spec
            if len(sized) > 1:
                raise InputError(
                    f"ambiguous GPU '{name}': candidates: {', '.join(sized)} "
                    "(name one, or add an alias in a user CSV)"
                )
            if family:
                raise InputError(
                    f"unknown GPU '{name}': no {size:g} GB variant; closest matches: "
                    f"{', '.join(family)}"
                )
        contained = sorted({n for k, n in self._index.items() if key and key in k})
        if 1 < len(contained) <= _MAX_CANDIDATES:
            raise InputError(
                f"ambiguous GPU '{name}': candidates: {', '.join(contained)} "
                "(name one, or add an alias in a user CSV)"
            )
        raise InputError(f"unknown GPU '{name}': {self._closest(key, contained)}")

    def _closest(self, key: str, first: list[str]) -> str:
        names = list(first)
        for match in difflib.get_close_matches(key, list(self._index), n=10, cutoff=0.6):
            row = self._index[match]
            if row not in names:
                names.append(row)
        if not names:
            return f"no close match; add it in a user CSV (${GPUS_ENV})"
        return "closest matches: " + ", ".join(names[:5])

    def notes(self, name: str) -> str:
        """The ``notes`` cell of a GPU (``n/s`` marks values without a source)."""
        return self._rows[self.lookup(name).name].notes

    def __iter__(self) -> Iterator[GpuSpec]:
        return (row.spec for row in self._rows.values())

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalise(name) in self._index

    def to_frame(self) -> pd.DataFrame:
        """The catalogue as a DataFrame, one row per GPU, aliases joined with ``;``."""
        records = [
            {
                "name": r.spec.name,
                "aliases": ";".join(r.spec.aliases),
                "architecture": r.spec.architecture,
                "cuda_cores": r.spec.cuda_cores,
                "memory_gb": r.spec.memory_gb,
                "tdp_w": r.spec.tdp_w,
                "form_factor": r.spec.form_factor,
                "source": r.spec.source,
                "notes": r.notes,
            }
            for r in self._rows.values()
        ]
        return pd.DataFrame.from_records(records, columns=list(COLUMNS))


def _number(raw: str, field: str, where: str, *, integer: bool) -> float:
    hi = COLUMN_MAX[f"gpu_{field}"]
    try:
        if integer:
            return float(whole(raw, field, lo=1, hi=int(hi)))
        return finite(raw, field, lo=0.0, hi=hi, above=True)
    except InputError:
        kind = f"a whole number from 1 to {hi:.0f}" if integer else f"a number above 0 to {hi:g}"
        raise InputError(f"{where}: field '{field}' is {quote(raw)}: expected {kind}") from None


def _parse(text: str, origin: str, *, user: bool) -> list[_Row]:
    """Rows of a catalogue CSV; user rows may leave cells empty (checked in :func:`_merge`)."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    required = REQUIRED if user else (*REQUIRED, "source")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            f"GPU catalogue file {origin}: missing column(s) {', '.join(missing)}: "
            f"expected {', '.join(COLUMNS)}"
        )
    reader.fieldnames = header
    rows: list[_Row] = []
    records = []
    try:
        for record in reader:
            records.append((reader.line_num, record))
    except csv.Error as exc:  # a NUL byte, a field beyond the csv module's limit
        raise InputError(f"{origin}, line {reader.line_num + 1}: {exc}") from None
    for line, record in records:
        where = f"{origin}, line {line}"
        cells = {k: (v or "").strip() for k, v in record.items() if k is not None}
        if not any(cells.values()):
            continue
        for field in required:
            if not cells.get(field) and not user:
                raise InputError(f"{where}: field '{field}' is empty: expected a value")
        if not cells.get("name"):
            raise InputError(f"{where}: field 'name' is empty: expected a GPU name")
        numbers = {
            f: _number(cells[f], f, where, integer=f == "cuda_cores") if cells.get(f) else 0.0
            for f in _NUMERIC
        }
        aliases = tuple(a.strip() for a in cells.get("aliases", "").split(";") if a.strip())
        spec = GpuSpec(
            name=cells["name"],
            architecture=cells.get("architecture", ""),
            cuda_cores=int(numbers["cuda_cores"]),
            memory_gb=numbers["memory_gb"],
            tdp_w=numbers["tdp_w"],
            form_factor=cells.get("form_factor", ""),
            source=cells.get("source", "") or (f"user file {where}" if user else ""),
            aliases=aliases,
        )
        rows.append(_Row(spec, cells.get("notes", ""), where))
    return rows


def _merge(shipped: Catalogue, user_rows: list[_Row]) -> list[_Row]:
    """Shipped rows overridden or extended by user rows (see :meth:`Catalogue.load`)."""
    merged = dict(shipped._rows)
    claimed: dict[str, str] = {}  # alias key -> row name, for user rows
    for row in user_rows:
        key = normalise(row.spec.name)
        target = shipped._index.get(key)
        if key in claimed:
            target = claimed[key]
        spec = row.spec
        if target is not None:
            base = merged[target].spec
            spec = replace(
                base,
                architecture=spec.architecture or base.architecture,
                cuda_cores=spec.cuda_cores or base.cuda_cores,
                memory_gb=spec.memory_gb or base.memory_gb,
                tdp_w=spec.tdp_w or base.tdp_w,
                form_factor=spec.form_factor or base.form_factor,
                source=spec.source,
                aliases=base.aliases + tuple(a for a in spec.aliases if a not in base.aliases),
            )
            notes = row.notes or merged[target].notes
        else:
            for field in REQUIRED:
                if not getattr(spec, field):
                    raise InputError(
                        f"{row.origin}: field '{field}' is empty: expected a value for the "
                        f"new GPU '{spec.name}'"
                    )
            notes = row.notes
        name = spec.name
        for label in (name, *spec.aliases):
            alias_key = normalise(label)
            owner = claimed.get(alias_key)
            if owner is not None and owner != name:
                raise InputError(
                    f"{row.origin}: '{label}' is already a name or alias of '{owner}' in the "
                    "same file: expected each name to resolve to one GPU"
                )
            shipped_owner = shipped._index.get(alias_key)
            if shipped_owner is not None and shipped_owner != name:
                if normalise(shipped_owner) == alias_key:
                    raise InputError(
                        f"{row.origin}: alias '{label}' is the name of the GPU "
                        f"'{shipped_owner}': expected an alias that names no other GPU"
                    )
                # A user alias takes a shipped alias over: drop it from the shipped row.
                other = merged[shipped_owner]
                kept = tuple(a for a in other.spec.aliases if normalise(a) != alias_key)
                merged[shipped_owner] = replace(other, spec=replace(other.spec, aliases=kept))
            claimed[alias_key] = name
        merged[name] = _Row(spec, notes, row.origin)
    return list(merged.values())


@functools.lru_cache(maxsize=8)
def _cached(extra: str | None, env: str | None) -> Catalogue:
    return Catalogue.load(extra if extra is not None else env)


def lookup(name: str, extra: str | os.PathLike[str] | None = None) -> GpuSpec:
    """Look ``name`` up in the default catalogue (shipped, plus ``extra`` or ``$JOULECAST_GPUS``).

    The catalogue is loaded once per (``extra``, ``$JOULECAST_GPUS``) pair and cached; edit a
    user file and call :meth:`Catalogue.load` to see the change.

    Raises:
        InputError: As :meth:`Catalogue.lookup`, or the user file is malformed.
    """
    path = os.fspath(extra) if extra is not None else None
    env = os.environ.get(GPUS_ENV, "").strip() or None
    return _cached(path, env).lookup(name)
