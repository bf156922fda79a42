from __future__ import annotations

import subprocess
import sys
from unittest import mock

import pandas as pd
import pytest

import joulecast


def test_all_is_sorted_and_complete():
    assert joulecast.__all__ == sorted(joulecast.__all__)
    public = {
        n
        for n in dir(joulecast)
        if not n.startswith("_")
        and not isinstance(getattr(joulecast, n), type(joulecast))  # submodules
        and n not in ("annotations", "logging")
    }
    # joulecast.forecast is the public forecasting module (callable for the old API).
    assert public == set(joulecast.__all__) - {"__version__", "forecast"}
    for name in joulecast.__all__:
        assert hasattr(joulecast, name), name


def test_import_touches_nothing():
    code = (
        "import logging, sys, threading\n"
        "before = set(sys.modules)\n"
        "import joulecast\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert 'pynvml' not in sys.modules, 'NVML imported at import time'\n"
        "assert 'torch' not in sys.modules\n"
        "assert 'sklearn' not in sys.modules\n"
        "root = logging.getLogger()\n"
        "assert not root.handlers, root.handlers\n"
        "assert all(isinstance(h, logging.NullHandler) for h in logging.getLogger('joulecast').handlers)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _loaded_after(statement: str, modules: set[str]) -> set[str]:
    """Which of ``modules`` a fresh interpreter holds once it has run ``statement``."""
    code = f"import sys\n{statement}\nprint(*sorted({sorted(modules)!r} & sys.modules.keys()))"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(done.stdout.split())


def test_import_loads_neither_numpy_nor_pandas():
    assert _loaded_after("import joulecast", {"numpy", "pandas", "sklearn"}) == set()


def test_measuring_api_imports_without_numpy_or_pandas():
    statement = "from joulecast import Monitor, Run, Store, measure, measure_command"
    assert _loaded_after(statement, {"numpy", "pandas"}) == set()


def test_forecast_imported_on_first_use_is_the_callable_module():
    code = (
        "import sys\n"
        "import joulecast\n"
        "assert 'joulecast.forecast' not in sys.modules\n"
        "assert joulecast.forecast is sys.modules['joulecast.forecast']\n"
        "assert callable(joulecast.forecast)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_names_match_the_imports_type_checkers_see():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(joulecast.__file__).read_text(encoding="utf-8"))
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "typing.TYPE_CHECKING"
    ]
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.unparse(node)
        for alias in node.names:
            if node.module == "joulecast":  # a submodule, itself the public name
                seen[alias.name] = (f"joulecast.{alias.name}", None)
            else:
                seen[alias.asname or alias.name] = (node.module, alias.name)
    assert seen == joulecast._LAZY
    assert set(joulecast._LAZY) == set(joulecast.__all__) - {"__version__"}


def test_version():
    from importlib.metadata import version

    assert joulecast.__version__ == version("joulecast")


def test_forecast_is_the_module_and_its_old_call_still_works():
    import joulecast.forecast

    assert joulecast.forecast.LiveForecaster is joulecast.LiveForecaster
    epochs = pd.DataFrame({"index": range(4), "duration_s": 10.0, "energy_j": 100.0})
    expected = joulecast.forecast_energy(epochs, 8, stable_epoch=1, window=2)
    with pytest.warns(DeprecationWarning, match="forecast_energy"):
        assert joulecast.forecast(epochs, 8, stable_epoch=1, window=2) == expected
    with mock.patch("joulecast.forecast.forecast_energy", return_value="patched"):
        live = joulecast.forecast.LiveForecaster(8, stable_epoch=1, window=2)
        assert live.update(epochs) == "patched"


def test_no_module_below_the_cli_imports_the_package_itself():
    from pathlib import Path

    root = Path(joulecast.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name not in ("cli.py", "__init__.py") or path.parent != root
        if "from joulecast import " in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
