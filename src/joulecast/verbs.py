"""How verbs join the ``joulecast`` command: one registry, for cli.py and every subsystem.

Each subsystem's ``commands.py`` has a ``register(verbs)`` that adds its verbs with
:meth:`Verbs.add`, or a family of sub-verbs under one name with :meth:`Verbs.group`. A verb's
handler takes the parsed arguments and returns the exit status: it parses, calls the library
and prints (a rich table through :func:`console`, or JSON through
:func:`joulecast.outputs.print_json`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any, NoReturn

from joulecast.store import Store

Handler = Callable[[argparse.Namespace], int]

STORE_HELP = "run store file (default: $JOULECAST_STORE or ./joulecast.db)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose error is one line naming the argument, the value and where to
    read the usage (argparse's own prints the usage block first); exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_CONTROL.sub('?', message)} (see {self.prog} -h)\n")


class Verbs:
    """Adds verbs (subcommands) to one level of the ``joulecast`` parser."""

    def __init__(self, subparsers: argparse._SubParsersAction[Parser]) -> None:
        self._subparsers = subparsers

    def add(
        self,
        name: str,
        handler: Handler,
        help_text: str,
        *,
        json: bool = True,
        store: bool = True,
    ) -> argparse.ArgumentParser:
        """Add verb ``name`` run by ``handler``; it takes ``--store`` and ``--json`` unless told
        not to. Returns its parser, for the verb's own arguments."""
        parser = self._subparsers.add_parser(name, help=help_text, description=help_text)
        if store:
            parser.add_argument("--store", default=None, help=STORE_HELP)
        if json:
            parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(fn=handler)
        return parser

    def group(self, name: str, help_text: str, *, dest: str) -> Verbs:
        """Add ``name`` as a family of sub-verbs (``joulecast NAME VERB``); ``dest`` holds the
        sub-verb chosen."""
        parser = self._subparsers.add_parser(name, help=help_text, description=help_text)
        return Verbs(parser.add_subparsers(dest=dest, required=True, metavar="VERB"))


# C0 and C1 control characters and DEL: a terminal would act on them (escape sequences).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(value: object) -> str:
    """Text from a user (a name, a tag, a factor value, a path) as a console prints it:
    control characters as ``?``, rich markup escaped so that it prints as written."""
    from rich.markup import escape

    return escape(_CONTROL.sub("?", str(value)))


def console(stderr: bool = False) -> Any:
    """A rich console for a verb's tables and lines (stderr for what is not the result)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def store_of(args: argparse.Namespace, *, read_only: bool = False) -> Store:
    """The store named by a verb's ``--store`` (default: ``$JOULECAST_STORE`` or
    ./joulecast.db); ``read_only`` for a verb that only reads it."""
    return Store(args.store, read_only=read_only)


def add_carbon_options(parser: argparse.ArgumentParser, *, hourly: bool = True) -> None:
    """``--intensity``, ``--intensity-csv``, ``--electricity-maps``, ``--region`` and ``--pue``
    (docs/carbon.md); without ``hourly``, neither hourly source (for figures with no time of
    day)."""
    from joulecast.carbon import INTENSITY_ENV, MAX_G_PER_KWH, MAX_PUE, REGION_ENV, ZONE_ENV
    from joulecast.electricitymaps import API_KEY_ENV
    from joulecast.inputs import finite_arg

    group = parser.add_argument_group("CO2e (docs/carbon.md)")
    group.add_argument(
        "--intensity",
        type=finite_arg(lo=0.0, hi=MAX_G_PER_KWH),
        metavar="G_PER_KWH",
        help=f"carbon intensity of the electricity, gCO2e/kWh (default ${INTENSITY_ENV})",
    )
    if hourly:
        group.add_argument(
            "--intensity-csv",
            metavar="FILE",
            help="hourly intensity file (columns datetime, g_per_kwh), weighted by the run's"
            " energy in each hour",
        )
        group.add_argument(
            "--electricity-maps",
            metavar="ZONE",
            help="Electricity Maps zone (DE, FR, US-CAL-CISO): its hourly history over each"
            f" run, fetched with the API key in ${API_KEY_ENV} (default ${ZONE_ENV})",
        )
    else:
        for option in ("--intensity-csv", "--electricity-maps"):
            group.add_argument(option, type=_no_hours, help=argparse.SUPPRESS)
    group.add_argument(
        "--region",
        metavar="CODE",
        help=f"country of the shipped yearly table, ISO alpha-3 (FRA) (default ${REGION_ENV})",
    )
    group.add_argument(
        "--pue",
        type=finite_arg(lo=1.0, hi=MAX_PUE),
        default=1.0,
        help="power usage effectiveness of the data centre (1.0: none added)",
    )


def _no_hours(text: str) -> str:
    raise argparse.ArgumentTypeError(
        "an hourly source needs a run's times, and a planned training has none: give"
        " --intensity G_PER_KWH or --region CODE"
    )


def carbon_of(args: argparse.Namespace, *, hourly: bool = True) -> Any:
    """The :class:`joulecast.carbon.Intensity` the options and environment name, or None
    (a verb called with a namespace of its own, as ``demo`` calls ``measure``, may lack them);
    ``hourly`` as for :func:`add_carbon_options`."""
    from joulecast.carbon import resolve_intensity

    return resolve_intensity(
        getattr(args, "intensity", None),
        getattr(args, "intensity_csv", None),
        getattr(args, "region", None),
        electricity_maps=getattr(args, "electricity_maps", None),
        hourly=hourly,
    )
