"""JSON on standard output, and files written whole or not at all."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from joulecast.outputs import print_json


def test_print_json(capsys):
    print_json({"b": 1, "a": Path("x"), "c": [math.nan, np.float64(math.inf), 2.5]})
    out = capsys.readouterr().out
    assert json.loads(out) == {"b": 1, "a": "x", "c": [None, None, 2.5]}
    assert out.index('"b"') < out.index('"a"')  # keys keep their order
    assert "NaN" not in out and "Infinity" not in out
