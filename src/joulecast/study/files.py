"""Reading a study file's text into its data: TOML, or YAML with the same structure.

The data is checked as it is read, so that what follows meets plain values only. The file is
at most :data:`MAX_FILE_BYTES`; YAML aliases are refused (a kilobyte of them expands to
gigabytes); tables and lists nest at most :data:`MAX_DEPTH` deep; keys are text without
control characters; values are text, true or false, finite numbers, whole numbers of at most 18
digits (see :func:`joulecast.inputs.whole`), lists and tables (TOML dates, YAML timestamps,
binary and sets are refused). Each refusal is one line naming the file and the field (YAML: the
line).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from joulecast.errors import InputError
from joulecast.inputs import MAX_WHOLE, finite, quote, whole

#: The largest study file read: a thousand-combination design is about 50 KB.
MAX_FILE_BYTES = 1 << 20
#: The deepest nesting of tables and lists in a study file (a design needs four or five).
MAX_DEPTH = 16

# TOML's parser spends time and memory in the square of a dotted key's parts (100,000 parts:
# minutes and gigabytes), before the depth can be checked: a chain this long is refused unread.
# Starts after a character that cannot precede a key, so each chain is scanned once.
_DOTTED_PARTS = 64
_PART = r"""(?:[\w-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DOTTED = re.compile(rf"""(?<![\w"'.\\-]){_PART}(?:[ \t]*\.[ \t]*{_PART}){{{_DOTTED_PARTS}}}""")
# Decimal digits past Python's limit for int() (sys.get_int_max_str_digits, 4300 by default).
_HUGE_INT = re.compile(r"(?<![0-9_])[0-9](?:_?[0-9]){4299,}")
# A YAML integer longer than this is out of range (and past 4300 digits, past int()).
_YAML_INT_CHARS = 40
_YAML_INT = "tag:yaml.org,2002:int"
_NESTED = (
    f"nested more than {MAX_DEPTH} levels deep: expected at most {MAX_DEPTH} levels of tables"
    " and lists"
)


def read_tree(file: Path, where: str) -> Any:
    """The data of the study file ``file``: TOML, or YAML (``.yaml``/``.yml``) when PyYAML is
    installed; ``where`` names it in errors.

    Raises:
        InputError: The file cannot be read or parsed, is larger than :data:`MAX_FILE_BYTES`,
            holds a YAML alias, nests deeper than :data:`MAX_DEPTH`, or a key or value is not
            one the module docstring lists.
    """
    try:
        with open(file, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{where}: cannot read the study file: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise InputError(
            f"{where}: larger than {MAX_FILE_BYTES >> 10} KiB: expected a study file of at most "
            f"{MAX_FILE_BYTES >> 10} KiB"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text: {exc}") from exc
    yaml = file.suffix.lower() in (".yaml", ".yml")
    data = _yaml(text, where) if yaml else _toml(text, where)
    check_tree(data, where)
    return data


def _toml(text: str, where: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise InputError(
                f"{where}: reading TOML on Python 3.10 needs tomli: pip install tomli"
            ) from exc
    chain = _DOTTED.search(text)
    if chain is not None:
        raise InputError(
            f"{where}: line {_line(text, chain.start())}: a dotted key of more than "
            f"{_DOTTED_PARTS} parts: {_NESTED}"
        )
    huge = _HUGE_INT.search(text)
    if huge is not None:
        raise InputError(
            f"{where}: line {_line(text, huge.start())}: a number of {len(huge.group())} "
            "characters: expected a whole number of at most 18 digits"
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # inline arrays or tables nested hundreds deep
        raise InputError(f"{where}: not valid TOML: {_NESTED}") from exc


def _yaml(text: str, where: str) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise InputError(
            f"{where}: reading YAML study files needs PyYAML: "
            "pip install 'joulecast[yaml]' (or write the study as TOML)"
        ) from exc
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        # The events first: aliases and depth are refused before anything is built from them.
        resolver = yaml.resolver.Resolver()
        depth = 0
        for event in yaml.parse(text, Loader=loader):
            at = f"{where}: line {event.start_mark.line + 1}"
            if isinstance(event, yaml.AliasEvent):
                raise InputError(
                    f"{at}: alias *{event.anchor}: expected the value written out (aliases are "
                    "not read: a few of them can expand a file a million times)"
                )
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise InputError(f"{at}: {_NESTED}")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.ScalarEvent) and len(event.value) > _YAML_INT_CHARS:
                tag = event.tag
                if tag in (None, "!"):
                    tag = resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
                if tag == _YAML_INT:
                    raise InputError(
                        f"{at}: {quote(event.value)}: expected a whole number of at most 18 digits"
                    )
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"{where}: not valid YAML: {detail}") from exc
    except InputError:
        raise
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # PyYAML's own constructors on a tagged or date-like scalar (2001-13-45, !!int abc).
        raise InputError(f"{where}: not valid YAML: a value it cannot read: {exc}") from exc


def check_tree(data: Any, where: str, field: str = "", depth: int = 0) -> None:
    """Check parsed study-file ``data`` the way the module docstring says; ``field`` is its
    place in the file (``factors.lr[1]``), ``depth`` the tables and lists around it.

    Raises:
        InputError: The first key or value refused, with its field.
    """
    name = field or "the top level"
    if isinstance(data, (dict, list)):
        if depth >= MAX_DEPTH:
            raise InputError(f"{where}: {name}: {_NESTED}")
        if isinstance(data, list):
            for i, item in enumerate(data):
                check_tree(item, where, f"{field}[{i}]", depth + 1)
            return
        for key, item in data.items():
            if not isinstance(key, str):
                raise InputError(f"{where}: {name}: key {quote(key)}: expected a name (text)")
            if not key.isprintable():  # names are printed in messages, run names and tags
                raise InputError(
                    f"{where}: {name}: key {quote(key)}: expected a name without control characters"
                )
            check_tree(item, where, _join(field, key), depth + 1)
    elif data is None or isinstance(data, (str, bool)):
        return
    elif isinstance(data, int):
        whole(data, f"{where}: {name}", lo=-MAX_WHOLE, hi=MAX_WHOLE)
    elif isinstance(data, float):
        finite(data, f"{where}: {name}")
    else:
        raise InputError(
            f"{where}: {name}: {quote(data)}: expected text, a number, true or false, a list or "
            "a table"
        )


def _join(field: str, key: str) -> str:
    """``field.key``, or ``field['key']`` for a key that would not read as one name."""
    if key and not set(key) & set(" .[]'\""):
        return f"{field}.{key}" if field else key
    return f"{field}[{key!r}]"


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1
