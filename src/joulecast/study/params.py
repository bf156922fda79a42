"""A workload's parameters, declared once: the fields of a frozen dataclass.

Each field declared with :func:`param` carries a :class:`Param`: the type of its values as a
person writes them, how many, the allowed values, the help text, and the conversion to the
field's own value. From that one declaration come the workload's command line
(:func:`add_arguments`, :func:`from_values`), the checks of the values a study file gives
(:meth:`Param.check`) and the command line of a planned run (:func:`command_line`)::

    @dataclass(frozen=True)
    class Config:
        batch_size: int = param(32, kind=int)
        weights: str | None = param("imagenet", choices=("imagenet", "none"), convert=...)

    add_arguments(parser, Config)               # --batch-size N --weights {imagenet,none}
    config = from_values(Config, vars(parser.parse_args()))

Checks that involve several fields (an input size too small for the architecture) stay in the
dataclass's own ``validate()``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from joulecast.errors import InputError
from joulecast.inputs import is_number, quote

_KEY = "joulecast.param"
_NAMES: dict[type, tuple[str, str]] = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
}

T = TypeVar("T")


@dataclass(frozen=True)
class Param:
    """How one field is given on a command line and in a study file.

    Attributes:
        kind: Type of each value as written: ``int``, ``float`` or ``str``.
        nargs: None (one value), ``"+"`` (one or more) or a count; a study file gives a list.
        choices: The values allowed as written (None: any value of ``kind``).
        help: Help text of the option.
        metavar: Name of the value in the help.
        convert: From the value as written (a list where ``nargs`` is set) to the field's
            value; may raise InputError. None: taken as it is.
    """

    kind: type = str
    nargs: int | Literal["+"] | None = None
    choices: tuple[str, ...] | None = None
    help: str | None = None
    metavar: str | None = None
    convert: Callable[[Any], Any] | None = None

    def check(self, value: Any) -> None:
        """Check one value of a study file (a TOML or YAML value) the way the option parses it.

        Raises:
            InputError: ``value`` is of the wrong type or count, or not among the choices; the
                message starts with the value and says what was expected.
        """
        one, several = _NAMES[self.kind]
        items = value if self.nargs is not None and isinstance(value, list) else [value]
        if isinstance(self.nargs, int) and len(items) != self.nargs:
            raise InputError(f"{quote(value)}: expected a list of {self.nargs} {several}")
        if self.nargs is not None and not items:
            raise InputError(f"[]: expected one or more {several}")
        if self.nargs is None and isinstance(value, list):
            raise InputError(f"{quote(value)}: expected {one}")
        for item in items:
            if not _is_kind(item, self.kind):
                raise InputError(f"{quote(value)}: expected {one}")
            if self.choices is not None and item not in self.choices:
                raise InputError(f"{item!r}: expected one of {', '.join(self.choices)}")


def param(default: Any, **spec: Any) -> Any:
    """A dataclass field with ``default`` and a :class:`Param` made of ``spec``."""
    return field(default=default, metadata={_KEY: Param(**spec)})


def params(cls: type) -> dict[str, Param]:
    """The declared parameters of the dataclass ``cls`` by field name, in field order."""
    return {f.name: f.metadata[_KEY] for f in fields(cls) if _KEY in f.metadata}


def option(name: str) -> str:
    """The command-line option of parameter ``name``: ``input_size`` -> ``--input-size``."""
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add an option to ``parser`` for each parameter of ``cls``, in field order.

    Options that are not given are left out of the parsed namespace, so :func:`from_values`
    takes the field's default.
    """
    for name, p in params(cls).items():
        parser.add_argument(
            option(name),
            type=p.kind,
            nargs=p.nargs,
            choices=p.choices,
            metavar=p.metavar,
            help=p.help,
            default=argparse.SUPPRESS,
        )


def from_values(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of ``cls`` from values as written; keys that are not parameters are ignored.

    A single value of a parameter that takes several is taken as a list of one.

    Raises:
        InputError: A parameter's conversion refuses its value.
    """
    kwargs = {}
    for name, p in params(cls).items():
        if name in values:
            value = values[name]
            if p.nargs is not None and not isinstance(value, list):
                value = [value]
            kwargs[name] = p.convert(value) if p.convert else value
    return cls(**kwargs)


def command_line(cls: type, values: Mapping[str, Any]) -> list[str]:
    """The options that give ``values`` (as written), in field order; list values as several."""
    out = []
    for name in params(cls):
        if name in values:
            value = values[name]
            out.append(option(name))
            out += [str(item) for item in (value if isinstance(value, list) else [value])]
    return out


def _is_kind(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return is_number(value)
    return isinstance(value, kind)
