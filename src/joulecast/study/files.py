"""Reading a study file's text into its data: TOML, or YAML with the same structure."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from joulecast.errors import InputError


def read_tree(file: Path, where: str) -> Any:
    """The data of the study file ``file``: TOML, or YAML (``.yaml``/``.yml``) when PyYAML is
    installed; ``where`` names it in errors.

    Raises:
        InputError: The file cannot be read or parsed.
    """
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: cannot read the study file: {exc.strerror or exc}") from exc
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise InputError(
                f"{where}: reading YAML study files needs PyYAML: "
                "pip install 'joulecast[yaml]' (or write the study as TOML)"
            ) from exc
        try:
            return yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            detail = " ".join(str(exc).split())
            raise InputError(f"{where}: not valid YAML: {detail}") from exc
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise InputError(
                f"{where}: reading TOML on Python 3.10 needs tomli: pip install tomli"
            ) from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: not valid TOML: {exc}") from exc
