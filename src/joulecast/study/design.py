"""Study files: a controlled experiment over training runs, and its plan.

A study file (TOML, or YAML with the same structure) names the workload, the factors and their
levels (a full factorial, or an explicit list of combinations), the fixed parameters, the
repetitions and the pauses; :func:`plan` turns it into runs in a random order fixed by the
study's seed, as del Rey et al. (2024) scheduled theirs::

    [study]
    name = "tiny"
    workload = "joulecast"        # or "command", with command = ["python", "train.py", "{lr}"]
    repetitions = 2               # default 30
    seed = 7                      # default 0: fixes the order and every run's seed
    order = "random"              # or "sequential" (file order)
    warmup = "0s"                 # default "10m"; durations: seconds, or "10m", "1h30m"
    cooldown = "0s"               # default "5m"
    timeout = "10m"               # per run; default none
    max_attempts = 3              # default 3: tries of a run whose runner dies during it

    [fixed]                       # parameters of every run
    dataset = "shapes"

    [factors]                     # levels; every combination (itertools.product, file order)
    arch = ["mobilenet_v2", "nasnet_mobile"]
    batch_size = [8, 16]

    # or, instead of [factors]:  [[combinations]]  arch = "resnet50"  batch_size = 32

    [slurm]                       # partition, account, time (or time_min), nodes,
    partition = "gpu"             # gpus_per_node, cpus_per_task, mem_gb, extra = { ... }

The factors ``environment`` and ``ram_gb`` (:data:`LABEL_FACTORS`) are never passed to the
workload: the first labels where a run belongs, the second is the RAM to allocate. Nor are
``nodes`` and ``gpus_per_node`` (:data:`JOB_FACTORS`), the size of a run's job, given once in
``[slurm]`` (or ``[fixed]``) or as factors (a ``command`` workload's placeholders, like any).
Nor are ``power_limit_w`` and ``gpu_clocks_mhz``
(:data:`~joulecast.study.powercap.GPU_FACTORS`): the runner sets them on the run's GPUs
through NVML and puts the GPUs back afterwards (:mod:`joulecast.study.powercap`); given in
``[fixed]``, they are tags of every run.
A ``seed`` among the fixed parameters or factors gives every run that seed (the paper's fixed
seeds); otherwise each run gets its own, derived from the study's seed, its combination and
repetition.

What a file may hold at all (size, YAML aliases, nesting, keys, values) is checked as it is
read (:mod:`joulecast.study.files`). Nothing here imports Keras or PyTorch: the built-in
workload's settings are checked by the same code the workload runs before it imports them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from joulecast.errors import InputError
from joulecast.inputs import MAX_DURATION_S, MAX_WHOLE, finite, is_number, parse_duration, quote
from joulecast.study.files import read_tree
from joulecast.study.params import Param, command_line, from_values, params
from joulecast.study.powercap import GPU_FACTORS, check_values

log = logging.getLogger(__name__)

BUILTIN = "joulecast"
"""``workload = "joulecast"``: ``python -m joulecast.study.workloads``."""

LABEL_FACTORS: tuple[str, ...] = ("environment", "ram_gb")
"""Factors not passed to the workload: a label, and the RAM allocation (SLURM ``--mem``, tag)."""

JOB_FACTORS: tuple[str, ...] = ("nodes", "gpus_per_node")
"""Factors that size a run's job (SLURM ``--nodes``, ``--gpus-per-node``); not passed to the
built-in workload. :meth:`PlannedRun.job_size` resolves them."""

# The fewest of each: a job runs on a node; a job on CPUs only asks for no GPU.
_JOB_MINIMUM = {"nodes": 1, "gpus_per_node": 0}
# The most of each: beyond the largest machines (about 10,000 nodes of at most 16 GPUs).
_JOB_MAXIMUM = {"nodes": 10_000, "gpus_per_node": 64, "cpus_per_task": 4096}

MAX_RUNS = 100_000
"""The most runs a study plans (combinations x repetitions): more is refused before anything
is allocated; split such a design into several studies."""
MAX_ATTEMPTS = 3
"""Default of :attr:`Study.max_attempts`: a run's attempts when its runner dies during them."""
MAX_ATTEMPTS_LIMIT = 100
"""The largest ``max_attempts`` taken."""
MAX_ARG_BYTES = 100_000
"""The longest argument of a run's command line (Linux refuses one over 128 KiB)."""
MAX_COMMAND_BYTES = 1_000_000
"""The most bytes of a run's name, tags and command together (Linux refuses a command line
and environment over about 2 MB)."""
MAX_NAME_CHARS = 100
"""The longest study name (it names the study's lock file and folder)."""
MAX_MEM_GB = 100_000.0
"""The largest ``ram_gb`` or ``[slurm] mem_gb``, in GB (100 TB)."""

WORKLOADS: tuple[str, ...] = (BUILTIN, "command")
ORDERS: tuple[str, ...] = ("random", "sequential")

_MODULE = "joulecast.study.workloads"
_TABLES: dict[str, str] = {
    "study": (
        "name, workload, command, repetitions, seed, order, warmup, cooldown, timeout, max_attempts"
    ),
    "fixed": "the workload's parameters",
    "factors": "factor = [levels]",
    "combinations": "a list of tables of factor values",
    "slurm": (
        "partition, account, time, time_min, nodes, gpus_per_node, cpus_per_task, mem_gb, extra"
    ),
}


@dataclass(frozen=True)
class Study:
    """One study file, checked.

    Attributes:
        name: Study name (default: the file's stem).
        path: The file it was read from.
        workload: ``"joulecast"`` (the built-in workload) or ``"command"``.
        command: For ``"command"``: the argv template with plain ``{name}`` placeholders
            (factors, fixed parameters, ``{seed}``); ``()`` for the built-in workload.
        factors: Levels of each factor, in file order (for explicit combinations: the values
            each factor takes, in order of first appearance).
        fixed: Parameters every run shares.
        combinations: Factor values of each combination: the full factorial in file order, or
            the file's explicit list.
        repetitions: Runs of each combination.
        seed: Seed of the order and of the runs' derived seeds.
        order: ``"random"`` (shuffled by ``seed``) or ``"sequential"`` (file order).
        warmup_s: Warm-up before the first run, in seconds.
        cooldown_s: Pause between runs, in seconds.
        timeout_s: Limit of each run in seconds; None: none.
        max_attempts: Attempts of a run whose runner dies during them (killed, its machine
            lost) before the run is recorded ``failed``; a run that fails on its own is not
            tried again. How often to retry is no part of the design: not in :meth:`to_dict`.
        slurm: ``partition``, ``account``, ``time_min``, ``gpus_per_node``, ``cpus_per_task``,
            ``mem_gb`` (None: take each run's ``ram_gb``), ``extra`` (further sbatch options),
            and ``nodes`` where the file gives it.
    """

    name: str
    path: Path
    workload: str
    command: tuple[str, ...]
    factors: dict[str, list[Any]]
    fixed: dict[str, Any]
    combinations: list[dict[str, Any]]
    repetitions: int = 30
    seed: int = 0
    order: Literal["random", "sequential"] = "random"
    warmup_s: float = 600.0
    cooldown_s: float = 300.0
    timeout_s: float | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    max_attempts: int = MAX_ATTEMPTS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of everything that defines the plan (not the path, nor
        ``max_attempts``: a study's stored plan and digest do not change with it)."""
        out = asdict(self)
        del out["path"], out["max_attempts"]
        out["command"] = list(self.command)
        return out

    def digest(self) -> str:
        """SHA-256 of :meth:`to_dict` as sorted JSON: equal digests, equal plans."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PlannedRun:
    """One run of a plan.

    Attributes:
        position: 0-based place in the execution order.
        key: ``c{combination:03d}-r{repetition:02d}``, the same whenever the file is re-planned.
        combination: Index into :attr:`Study.combinations`.
        repetition: 0-based repetition of that combination.
        seed: Seed passed to the workload.
        factors: This run's factor values, label factors included.
        params: The workload's parameters: fixed ones and factors, without label factors.
    """

    position: int
    key: str
    combination: int
    repetition: int
    seed: int
    factors: dict[str, Any]
    params: dict[str, Any]

    def name(self, study: Study) -> str:
        """``study/key`` and the factors: ``tiny/c001-r00 arch=mobilenet_v2 batch_size=16``."""
        values = " ".join(f"{k}={_text(v)}" for k, v in self.factors.items())
        return f"{study.name}/{self.key} {values}".rstrip()

    def tags(self, study: Study) -> dict[str, str]:
        """Tags of the measured run: the study, the key, position, repetition, seed, factors."""
        tags = {
            "study": study.name,
            "study_key": self.key,
            "study_position": str(self.position),
            "repetition": str(self.repetition),
            "seed": str(self.seed),
        }
        tags.update({k: _text(study.fixed[k]) for k in GPU_FACTORS if k in study.fixed})
        tags.update({k: _text(v) for k, v in self.factors.items()})
        return tags

    def job_size(self, study: Study) -> tuple[int, int]:
        """The nodes of this run's job and the GPUs it asks for on each.

        A factor overrides the study's fixed value (``[slurm]`` or ``[fixed]``); without
        either, one node and ``[slurm]``'s default of one GPU.
        """
        values = {**study.slurm, **study.fixed, **self.factors}
        return int(values.get("nodes", 1)), int(values.get("gpus_per_node", 1))


# -- loading -----------------------------------------------------------------------------------


def load_study(path: str | os.PathLike[str]) -> Study:
    """Read and check a study file: TOML, or YAML (``.yaml``/``.yml``) when PyYAML is installed.

    Raises:
        InputError: The file cannot be read or parsed, or a table, key or value is not what is
            expected; the message names the file and the field.
    """
    file = Path(path)
    where = str(file)
    data = read_tree(file, where)
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a table with [study] and [factors] at the top")
    for key in data:
        if key not in _TABLES:
            raise InputError(f"{where}: unknown table {key!r}: expected {', '.join(_TABLES)}")
    study = _table(data, "study", where)
    _known_keys(study, "study", where)

    name = study.get("name", file.stem)
    if (
        not isinstance(name, str)
        or not name.strip()
        or "/" in name
        or len(name) > MAX_NAME_CHARS
        or not name.isprintable()
    ):
        raise InputError(
            f"{where}: study.name: {quote(name)}: expected a non-empty name without '/' or "
            f"control characters, at most {MAX_NAME_CHARS} characters"
        )
    workload = study.get("workload", BUILTIN)
    if workload not in WORKLOADS:
        raise InputError(
            f"{where}: study.workload: {workload!r}: expected one of {', '.join(WORKLOADS)}"
        )
    command = _command(study, workload, where)
    repetitions = _int(
        study.get("repetitions", 30), "study.repetitions", where, minimum=1, maximum=MAX_RUNS
    )
    seed = _int(study.get("seed", 0), "study.seed", where, minimum=0)
    order = study.get("order", "random")
    if order not in ORDERS:
        raise InputError(f"{where}: study.order: {order!r}: expected one of {', '.join(ORDERS)}")
    max_attempts = _int(
        study.get("max_attempts", MAX_ATTEMPTS),
        "study.max_attempts",
        where,
        minimum=1,
        maximum=MAX_ATTEMPTS_LIMIT,
    )
    warmup_s = _duration(study.get("warmup", 600.0), "study.warmup", where)
    cooldown_s = _duration(study.get("cooldown", 300.0), "study.cooldown", where)
    timeout_s = None
    if "timeout" in study:
        timeout_s = _duration(study["timeout"], "study.timeout", where)
        if timeout_s == 0:
            raise InputError(f"{where}: study.timeout: 0: expected a positive duration")

    fixed = dict(_table(data, "fixed", where))
    factors, combinations = _design(data, fixed, repetitions, where)
    slurm = _slurm(_table(data, "slurm", where), fixed, where)

    values = _field_values(fixed, factors, combinations, "combinations" in data)
    _check_job_sizes(values, where)
    check_values(values, where)
    names = set(fixed) | set(factors)
    if workload == BUILTIN:
        _check_builtin_names(fixed, factors, combinations, "combinations" in data, where)
    else:
        _check_placeholders(command, names, where)
    for i, combo in enumerate(combinations):
        labels = {k: combo.get(k, fixed.get(k)) for k in LABEL_FACTORS}
        if labels["environment"] is not None and not isinstance(labels["environment"], str):
            raise InputError(
                f"{where}: combination {i} ({_describe(combo)}): environment "
                f"{labels['environment']!r}: expected a name"
            )
        ram_gb = labels["ram_gb"]
        if ram_gb is not None and (not is_number(ram_gb, positive=True) or ram_gb > MAX_MEM_GB):
            raise InputError(
                f"{where}: combination {i} ({_describe(combo)}): ram_gb {ram_gb!r}: "
                f"expected a positive number of GB, at most {MAX_MEM_GB:g}"
            )
    result = Study(
        name=name,
        path=file,
        workload=workload,
        command=command,
        factors=factors,
        fixed=fixed,
        combinations=combinations,
        repetitions=repetitions,
        seed=seed,
        warmup_s=warmup_s,
        cooldown_s=cooldown_s,
        timeout_s=timeout_s,
        slurm=slurm,
        order=order,
        max_attempts=max_attempts,
    )
    check_combinations(result)
    check_command_lines(result)
    return result


def _known_keys(table: Mapping[str, Any], name: str, where: str) -> None:
    """Refuse a key of [study] or [slurm] that is not among those :data:`_TABLES` lists."""
    keys = _TABLES[name].split(", ")
    for key in table:
        if key not in keys:
            raise InputError(
                f"{where}: {name}.{key}: unknown key: expected one of {', '.join(keys)}"
            )


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: {key}: {quote(value)}: expected a table")
    return dict(value)


def _command(study: Mapping[str, Any], workload: str, where: str) -> tuple[str, ...]:
    command = study.get("command")
    if workload == BUILTIN:
        if command is not None:
            raise InputError(
                f"{where}: study.command: given for workload {BUILTIN!r}: "
                "expected workload = 'command' with it, or no command"
            )
        return ()
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(part, str) for part in command)
    ):
        raise InputError(
            f"{where}: study.command: {quote(command)}: expected a non-empty list of strings "
            "such as ['python', 'train.py', '--lr', '{lr}']"
        )
    return tuple(command)


def _design(
    data: Mapping[str, Any], fixed: dict[str, Any], repetitions: int, where: str
) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """The factors' levels and the combinations, from [factors] or [[combinations]]; at most
    :data:`MAX_RUNS` runs of them, counted before any combination is made."""
    has_factors = "factors" in data
    has_combinations = "combinations" in data
    if has_factors == has_combinations:
        raise InputError(
            f"{where}: factors/combinations: "
            + ("both given" if has_factors else "neither given")
            + ": expected either [factors] (levels of each factor) or [[combinations]]"
        )
    if has_factors:
        table = _table(data, "factors", where)
        if not table:
            raise InputError(f"{where}: factors: empty: expected at least one factor")
        factors: dict[str, list[Any]] = {}
        for name, levels in table.items():
            field_name = f"factors.{name}"
            if name in fixed:
                raise InputError(
                    f"{where}: {field_name}: also in [fixed]: expected each name in one of them"
                )
            if not isinstance(levels, list):
                raise InputError(
                    f"{where}: {field_name}: {quote(levels)}: expected a list of levels"
                )
            if not levels:
                raise InputError(f"{where}: {field_name}: empty: expected at least one level")
            seen: set[Any] = set()
            for level in levels:
                if _key(level) in seen:
                    raise InputError(
                        f"{where}: {field_name}: level {quote(level)} appears twice: "
                        "expected distinct levels"
                    )
                seen.add(_key(level))
            factors[name] = list(levels)
        count = 1
        for levels in factors.values():
            count = min(count * len(levels), MAX_RUNS + 1)  # no huge product to print
        _check_runs(count, repetitions, "factors", where)
        combinations = [
            dict(zip(factors, values, strict=True))
            for values in itertools.product(*factors.values())
        ]
        return factors, combinations

    listed = data["combinations"]
    if not isinstance(listed, list) or not listed:
        raise InputError(
            f"{where}: combinations: {quote(listed)}: expected a non-empty list of tables"
        )
    _check_runs(len(listed), repetitions, "combinations", where)
    combinations = []
    first: dict[Any, int] = {}
    keys: list[str] | None = None
    for i, combo in enumerate(listed):
        field_name = f"combinations[{i}]"
        if not isinstance(combo, Mapping) or not combo:
            raise InputError(
                f"{where}: {field_name}: {quote(combo)}: expected a table of factor values"
            )
        if keys is None:
            keys = list(combo)
        elif set(combo) != set(keys):
            missing = sorted(set(keys) - set(combo))
            extra = sorted(set(combo) - set(keys))
            detail = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"extra {', '.join(extra)}" if extra else "",
                )
                if part
            )
            raise InputError(
                f"{where}: {field_name}: keys differ from combinations[0] ({detail}): "
                f"expected the same keys in every combination ({', '.join(keys)})"
            )
        for name in combo:
            if name in fixed:
                raise InputError(
                    f"{where}: {field_name}.{name}: also in [fixed]: "
                    "expected each name in one of them"
                )
        ordered = {k: combo[k] for k in keys}
        if _key(ordered) in first:
            raise InputError(
                f"{where}: {field_name}: repeats combinations[{first[_key(ordered)]}] "
                f"({_describe(ordered)}): expected distinct combinations (use repetitions for "
                "more runs)"
            )
        first[_key(ordered)] = len(combinations)
        combinations.append(ordered)
    assert keys is not None
    factors = {k: [] for k in keys}
    values: dict[str, set[Any]] = {k: set() for k in keys}
    for combo in combinations:
        for k, v in combo.items():
            if _key(v) not in values[k]:
                values[k].add(_key(v))
                factors[k].append(v)
    return factors, combinations


def _slurm(table: Mapping[str, Any], fixed: Mapping[str, Any], where: str) -> dict[str, Any]:
    _known_keys(table, "slurm", where)
    out: dict[str, Any] = {
        "partition": None,
        "account": None,
        "time_min": None,
        "gpus_per_node": 1,
        "cpus_per_task": None,
        "mem_gb": None,
        "extra": {},
    }
    for key in ("partition", "account"):
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise InputError(f"{where}: slurm.{key}: {quote(table[key])}: expected a name")
            out[key] = table[key]
    if "time" in table and "time_min" in table:
        raise InputError(f"{where}: slurm.time: given with slurm.time_min: expected one of them")
    if "time" in table:
        seconds = _duration(table["time"], "slurm.time", where)
        if seconds == 0:
            raise InputError(f"{where}: slurm.time: 0: expected a positive duration")
        out["time_min"] = seconds / 60.0
    if "time_min" in table:
        most = MAX_DURATION_S / 60
        if not is_number(table["time_min"], positive=True) or table["time_min"] > most:
            raise InputError(
                f"{where}: slurm.time_min: {quote(table['time_min'])}: "
                f"expected a positive number of minutes, at most {most:.0f}"
            )
        out["time_min"] = float(table["time_min"])
    for key in JOB_FACTORS:
        if key in table and key in fixed:
            raise InputError(
                f"{where}: slurm.{key}: also in [fixed]: expected the job's size in one of them"
            )
    for key in ("nodes", "gpus_per_node", "cpus_per_task"):
        if key in table:
            out[key] = _int(
                table[key],
                f"slurm.{key}",
                where,
                minimum=_JOB_MINIMUM.get(key, 1),
                maximum=_JOB_MAXIMUM[key],
            )
    if "mem_gb" in table:
        if not is_number(table["mem_gb"], positive=True) or table["mem_gb"] > MAX_MEM_GB:
            raise InputError(
                f"{where}: slurm.mem_gb: {quote(table['mem_gb'])}: expected a positive number, "
                f"at most {MAX_MEM_GB:g}"
            )
        out["mem_gb"] = table["mem_gb"]
    elif "ram_gb" in fixed:
        out["mem_gb"] = fixed["ram_gb"]
    if "extra" in table:
        extra = table["extra"]
        if not isinstance(extra, Mapping):
            raise InputError(
                f"{where}: slurm.extra: {quote(extra)}: expected a table of sbatch options"
            )
        out["extra"] = dict(extra)
    return out


# -- checks --------------------------------------------------------------------------------------


def _builtin() -> dict[str, Param]:
    """The built-in workload's parameters (imported here: the workload module is heavier)."""
    from joulecast.study.workloads.train import TrainConfig

    return params(TrainConfig)


def workload_parameters() -> tuple[str, ...]:
    """Names a built-in study may use: the workload's parameters, then :data:`JOB_FACTORS`,
    :data:`~joulecast.study.powercap.GPU_FACTORS` and :data:`LABEL_FACTORS`."""
    return (*_builtin(), *JOB_FACTORS, *GPU_FACTORS, *LABEL_FACTORS)


def _check_builtin_names(
    fixed: Mapping[str, Any],
    factors: Mapping[str, list[Any]],
    combinations: Sequence[Mapping[str, Any]],
    explicit: bool,
    where: str,
) -> None:
    declared = _builtin()
    valid = workload_parameters()
    sources = [("fixed", fixed), ("combinations[0]" if explicit else "factors", factors)]
    for table, names in sources:
        for name in names:
            if name not in valid:
                raise InputError(
                    f"{where}: {table}.{name}: unknown parameter of the {BUILTIN} workload: "
                    f"expected one of {', '.join(valid)}"
                )
    for field_name, name, value in _field_values(fixed, factors, combinations, explicit):
        if name in declared:
            try:
                declared[name].check(value)
            except InputError as exc:
                raise InputError(f"{where}: {field_name}: {exc}") from exc


def _field_values(
    fixed: Mapping[str, Any],
    factors: Mapping[str, list[Any]],
    combinations: Sequence[Mapping[str, Any]],
    explicit: bool,
) -> list[tuple[str, str, Any]]:
    """Every value the file gives, as ``(field, name, value)``: ``fixed.lr``, then each level
    (``factors.lr[1]``) or, for explicit combinations, each one's (``combinations[2].lr``)."""
    values = [(f"fixed.{name}", name, value) for name, value in fixed.items()]
    if explicit:
        values += [
            (f"combinations[{i}].{name}", name, value)
            for i, combo in enumerate(combinations)
            for name, value in combo.items()
        ]
    else:
        values += [
            (f"factors.{name}[{j}]", name, level)
            for name, levels in factors.items()
            for j, level in enumerate(levels)
        ]
    return values


def _check_job_sizes(values: Sequence[tuple[str, str, Any]], where: str) -> None:
    """Refuse a ``nodes`` or ``gpus_per_node`` among ``values`` (:func:`_field_values`) that is
    not a whole number from :data:`_JOB_MINIMUM` to :data:`_JOB_MAXIMUM`."""
    for field_name, name, value in values:
        if name in JOB_FACTORS:
            _int(value, field_name, where, minimum=_JOB_MINIMUM[name], maximum=_JOB_MAXIMUM[name])


def _check_placeholders(command: Sequence[str], names: set[str], where: str) -> None:
    allowed = names | {"seed"}
    for i, part in enumerate(command):
        try:
            pieces = list(string.Formatter().parse(part))
        except ValueError as exc:
            raise InputError(
                f"{where}: study.command[{i}]: {quote(part)}: {exc}: expected {{name}} "
                "placeholders (write {{ and }} for literal braces)"
            ) from exc
        for _, name, spec, conversion in pieces:
            if name is None:
                continue
            written = "{" + name + (f"!{conversion}" if conversion else "")
            written += (f":{spec}" if spec else "") + "}"
            # The command's item, then the placeholder where the item holds more than it.
            field = f"{where}: study.command[{i}]: {quote(part)}"
            if written != part:
                field += f": placeholder {quote(written)}"
            if conversion is not None or spec:
                raise InputError(
                    f"{field}: expected a plain {{name}}, without !conversion or :format"
                )
            if name in allowed:
                continue
            if "." in name or "[" in name:
                raise InputError(
                    f"{field}: expected a plain {{name}}, without .attribute or [index]"
                )
            raise InputError(
                f"{field}: not a factor, a fixed parameter or seed: "
                f"expected one of {', '.join(sorted(allowed))}"
            )


def _render(template: str, values: Mapping[str, Any]) -> str:
    """``template`` with each ``{name}`` replaced by ``str(values[name])`` and ``{{``, ``}}``
    by a brace: the placeholders a study file's command may hold (no ``str.format`` conversions,
    format specs, attributes or indices, which load_study refuses)."""
    return "".join(
        literal + ("" if name is None else str(values[name]))
        for literal, name, _, _ in string.Formatter().parse(template)
    )


def check_combinations(study: Study) -> None:
    """Check every combination of a built-in study the way the workload checks its settings.

    Unknown architecture or dataset, an input size below the architecture's minimum,
    non-positive batch sizes or epochs, a ``folder`` dataset without ``dataset_path``: each
    reported with the combination's index and values. Keras and PyTorch are not imported.

    Raises:
        InputError: The first combination the workload would refuse.
    """
    if study.workload != BUILTIN:
        return
    from joulecast.study.workloads.train import TrainConfig

    for i, combo in enumerate(study.combinations):
        try:
            config = from_values(TrainConfig, _params(study.fixed, combo))
            config.validate()
            if config.dataset == "folder" and not config.dataset_path:
                raise InputError("dataset 'folder' without dataset_path: expected the image folder")
        except InputError as exc:
            raise InputError(f"{study.path}: combination {i} ({_describe(combo)}): {exc}") from exc


def check_command_lines(study: Study) -> None:
    """Check that each combination's run can be started: its name, tags and command (every
    value in them) within :data:`MAX_ARG_BYTES` an argument and :data:`MAX_COMMAND_BYTES` in
    all, the longest seed assumed.

    Raises:
        InputError: The first combination whose command line is too long to start.
    """
    for c, combo in enumerate(study.combinations):
        run = PlannedRun(
            position=0,
            key=f"c{c:03d}-r00",
            combination=c,
            repetition=0,
            seed=2**32 - 1,
            factors=dict(combo),
            params=_params(study.fixed, combo),
        )
        parts = [
            run.name(study),
            *(f"{k}={v}" for k, v in run.tags(study).items()),
            *argv(study, run),
        ]
        sizes = [len(part.encode("utf-8", "surrogatepass")) + 1 for part in parts]
        described = _describe(combo)
        described = described if len(described) <= 80 else described[:77] + "..."
        where = f"{study.path}: combination {c} ({described})"
        longest = max(range(len(parts)), key=sizes.__getitem__)
        if sizes[longest] > MAX_ARG_BYTES:
            raise InputError(
                f"{where}: an argument of {sizes[longest] - 1:,} bytes ({quote(parts[longest])}):"
                f" expected at most {MAX_ARG_BYTES:,} (a value or command item too long)"
            )
        if sum(sizes) > MAX_COMMAND_BYTES:
            raise InputError(
                f"{where}: a command line of {sum(sizes):,} bytes with the run's name and tags: "
                f"expected at most {MAX_COMMAND_BYTES:,} (values or command items too long)"
            )


# -- planning ------------------------------------------------------------------------------------


def run_seed(study_seed: int, combination: int, repetition: int) -> int:
    """The derived seed of one run: 31 bits of SHA-256 of the three numbers."""
    text = f"joulecast-study:{study_seed}:{combination}:{repetition}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def plan(study: Study) -> list[PlannedRun]:
    """Every combination x repetition, in random order fixed by ``study.seed``.

    The order is ``random.Random(study.seed).shuffle`` of the runs listed combination by
    combination; ``order = "sequential"`` keeps that listing. Keys and seeds depend on the
    combination and repetition only, so re-planning an unchanged file gives the same runs.

    Raises:
        InputError: A combination the built-in workload would refuse.
    """
    check_combinations(study)
    slots = [(c, r) for c in range(len(study.combinations)) for r in range(study.repetitions)]
    if study.order == "random":
        random.Random(study.seed).shuffle(slots)
    runs = []
    for position, (c, r) in enumerate(slots):
        combo = study.combinations[c]
        params = _params(study.fixed, combo)
        seed = params.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            seed = run_seed(study.seed, c, r)
        runs.append(
            PlannedRun(
                position=position,
                key=f"c{c:03d}-r{r:02d}",
                combination=c,
                repetition=r,
                seed=seed,
                factors=dict(combo),
                params=params,
            )
        )
    return runs


def argv(study: Study, run: PlannedRun) -> list[str]:
    """The workload's command line for ``run``, without any measuring wrapper.

    Built-in: ``[sys.executable, "-m", "joulecast.study.workloads", "--arch", ...,
    "--seed", str(run.seed)]``, options in the workload's order, list values (``epochs``,
    ``learning_rates``) as several arguments. ``command``: the template formatted with the
    factors, fixed parameters and ``seed``.
    """
    if study.workload != BUILTIN:
        values = {**study.fixed, **run.factors, "seed": run.seed}
        return [_render(part, values) for part in study.command]
    from joulecast.study.workloads.train import TrainConfig

    values = {**run.params, "seed": run.seed}
    return [sys.executable, "-m", _MODULE, *command_line(TrainConfig, values)]


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two :meth:`Study.to_dict` forms, one line per field.

    E.g. ``["factors.batch_size: [16, 32] -> [16, 64]", "repetitions: 30 -> 10"]``; tables
    are compared key by key, lists of tables item by item.
    """
    out: list[str] = []
    _diff(old, new, "", out)
    return out


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in new:
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub}: added {_json(new[key])}")
            else:
                _diff(old[key], new[key], sub, out)
        for key in old:
            if key not in new:
                sub = f"{path}.{key}" if path else str(key)
                out.append(f"{sub}: removed (was {_json(old[key])})")
        return
    tables = isinstance(old, list) and isinstance(new, list)
    if tables and any(isinstance(x, Mapping) for x in [*old, *new]):
        for i in range(min(len(old), len(new))):
            _diff(old[i], new[i], f"{path}[{i}]", out)
        for i in range(len(old), len(new)):
            out.append(f"{path}[{i}]: added {_json(new[i])}")
        for i in range(len(new), len(old)):
            out.append(f"{path}[{i}]: removed (was {_json(old[i])})")
        return
    if old != new:
        out.append(f"{path}: {_json(old)} -> {_json(new)}")


# -- helpers -------------------------------------------------------------------------------------


def _params(fixed: Mapping[str, Any], combo: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**fixed, **combo}
    return {
        k: v for k, v in merged.items() if k not in (*LABEL_FACTORS, *JOB_FACTORS, *GPU_FACTORS)
    }


def _int(value: Any, field_name: str, where: str, *, minimum: int, maximum: int = MAX_WHOLE) -> int:
    """``value``, written as a whole number (not text, not true or false), in range."""
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise InputError(
            f"{where}: {field_name}: {quote(value)}: expected an integer >= {minimum}, "
            f"at most {maximum}"
        )
    return value


def _duration(value: Any, field_name: str, where: str) -> float:
    """Seconds of a duration written as text (:func:`~joulecast.inputs.parse_duration`) or as
    a number of seconds, from 0 to :data:`~joulecast.inputs.MAX_DURATION_S`."""
    what = f"{where}: {field_name}"
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except InputError as exc:
            raise InputError(f"{what}: {exc}") from exc
    try:
        return finite(value, what, lo=0.0, hi=MAX_DURATION_S)
    except InputError as exc:
        raise InputError(
            f"{what}: {quote(value)}: expected a duration from 0 to {MAX_DURATION_S:.0f} s "
            "(seconds, or e.g. '10m', '1h30m')"
        ) from exc


def _check_runs(combinations: int, repetitions: int, field_name: str, where: str) -> None:
    """Refuse more than :data:`MAX_RUNS` runs; ``combinations`` above it means "more"."""
    if combinations * repetitions > MAX_RUNS:
        many = f"{combinations:,}" if combinations <= MAX_RUNS else f"over {MAX_RUNS:,}"
        raise InputError(
            f"{where}: {field_name}: {many} combinations x {repetitions:,} repetition(s): "
            f"expected at most {MAX_RUNS:,} runs in a study (split the design into several "
            "studies)"
        )


def _key(value: Any) -> Any:
    """A hashable stand-in for a study file's value, equal where the values are equal (lists
    and tables compared item by item, ``1 == 1.0``), so repeats are found in one pass."""
    if isinstance(value, list):
        return ("list", tuple(_key(v) for v in value))
    if isinstance(value, Mapping):
        return ("table", frozenset((k, _key(v)) for k, v in value.items()))
    return value


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def _describe(combo: Mapping[str, Any]) -> str:
    """``k=v, ...`` for a message: one line, control characters escaped."""
    text = ", ".join(f"{k}={_text(v)}" for k, v in combo.items())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
