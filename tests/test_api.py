from __future__ import annotations

import subprocess
import sys

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
    assert public == set(joulecast.__all__) - {"__version__"}
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


def test_version():
    from importlib.metadata import version

    assert joulecast.__version__ == version("joulecast")
