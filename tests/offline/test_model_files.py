"""Model files are checked against their schema, with bounds, before anything is refitted.

Every crafted file is made here from a real model file fitted on a few of the paper's runs:
cut short, a key dropped, a wrong type at each level, numbers out of bounds, NaN, a folder,
bytes that are not UTF-8 or not JSON. Each must end in one line naming the file and the field,
exit 2, no traceback, through ``joulecast estimate --model`` and through the API.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sklearn")

from joulecast.cli import main
from joulecast.errors import InputError
from joulecast.offline import models
from joulecast.offline.features import read_runs
from joulecast.offline.models import MAX_RUNS, OfflineEstimator

DATA = Path(__file__).parents[2] / "src" / "joulecast" / "offline" / "data" / "paper_runs_train.csv"
PLAN = [
    "--gpu", "RTX 3090", "--arch", "resnet50", "--input-size", "128", "--batch-size", "64",
    "--train-samples", "12000", "--val-samples", "8580", "--epochs", "5", "--ram-gb", "16",
]  # fmt: skip
GBR = {"name": "gbr_raw", "family": "gbr", "features": "raw", "target_transform": "none"}
POWER = "models.avg_power_w.spec"
MEMBER = f"{POWER}.params.members[0]"
APP = "applicability"
BAND = f"{APP}.bands.avg_power_w"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real model file's content: both targets fitted on two runs of 20 configurations."""
    runs = read_runs(DATA)
    few = runs.groupby(list(runs.columns[:10])).head(2).head(40)
    path = tmp_path_factory.mktemp("model") / "small.json"
    OfflineEstimator(grid="small").fit(few, source="few.csv").save(path)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _at(data: Any, path: str) -> tuple[Any, str | int]:
    """The container holding the field at a dotted path (``a.b[2].c``), and its key."""
    keys: list[str | int] = []
    for part in path.split("."):
        name, *indices = part.replace("]", "").split("[")
        keys += [name, *map(int, indices)] if name else list(map(int, indices))
    for key in keys[:-1]:
        data = data[key]
    return data, keys[-1]


def put(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(data: dict[str, Any]) -> Any:
        holder, key = _at(data, path)
        holder[key] = value
        return data

    return change


def drop(path: str) -> Callable[[dict[str, Any]], Any]:
    def change(data: dict[str, Any]) -> Any:
        holder, key = _at(data, path)
        del holder[key]
        return data

    return change


def mean_of(*members: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    spec = {"name": "mean_x", "family": "mean", "features": "raw", "target_transform": "none"}
    return put(POWER, {**spec, "params": {"members": list(members)}})


def gbr(**params: Any) -> dict[str, Any]:
    return {**GBR, "params": {"learning_rate": 0.1, "max_depth": 2, "n_estimators": 50, **params}}


def rows_of(n: int) -> Callable[[dict[str, Any]], Any]:
    def change(data: dict[str, Any]) -> Any:
        data["rows"] = [data["rows"][i % len(data["rows"])] for i in range(n)]
        return data

    return change


# (case, change to the fitted model's content, what the one line must name)
CRAFTED: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    *[
        (f"no {key}", drop(key), key)
        for key in (
            "format",
            "format_version",
            "features",
            "targets",
            "selection_cv",
            "seed",
            "n_configurations",
            "models",
            "columns",
            "rows",
        )
    ],
    *[
        (f"no {key}", drop(f"models.avg_power_w.{key}"), key)
        for key in ("spec", "cv", "cv.rmse", "spec.name", "spec.family", "spec.features")
    ],
    ("no target transform", drop(f"{POWER}.target_transform"), "target_transform"),
    ("member without family", mean_of({"name": "a"}), "members[0].family"),
    ("a list", lambda d: [d], "JSON object"),
    ("a string", lambda d: "model", "JSON object"),
    ("null", lambda d: None, "JSON object"),
    ("a number", lambda d: 3, "JSON object"),
    ("other format", put("format", "something else"), "not a joulecast offline model"),
    ("format a number", put("format", 1), "format"),
    ("newer format", put("format_version", 2), "format_version"),
    ("format version 0", put("format_version", 0), "format_version"),
    ("format version text", put("format_version", "1"), "format_version"),
    ("format version true", put("format_version", True), "format_version"),
    ("features text", put("features", "gflops"), "features"),
    ("features reordered", lambda d: put("features", d["features"][::-1])(d), "features"),
    ("features nested", put("features", [["gpu_cuda_cores"]]), "features"),
    ("targets text", put("targets", "avg_power_w"), "targets"),
    ("targets unknown", put("targets", ["watts"]), "targets"),
    ("models a list", put("models", []), "models"),
    ("models empty", put("models", {}), "models"),
    (
        "model of an unknown target",
        lambda d: put("models.watts", d["models"]["avg_power_w"])(d),
        "watts",
    ),
    ("model a list", put("models.avg_power_w", []), "models.avg_power_w"),
    ("spec a string", put(POWER, "svr"), POWER),
    ("spec name a number", put(f"{POWER}.name", 5), "name"),
    ("spec name huge", put(f"{POWER}.name", "x" * 100_000), "name"),
    ("unknown family", put(f"{POWER}.family", "quantum"), "family"),
    ("family a list", put(f"{POWER}.family", ["svr"]), "family"),
    ("unknown feature set", put(f"{POWER}.features", "pixels"), "features"),
    ("unknown transform", put(f"{POWER}.target_transform", "sqrt"), "target_transform"),
    ("params a list", put(POWER, {**GBR, "params": [1]}), "params"),
    ("unknown parameter", put(POWER, gbr(loss="quantile")), "loss"),
    ("n_estimators 10^7", put(POWER, gbr(n_estimators=10**7)), "n_estimators"),
    ("n_estimators 0", put(POWER, gbr(n_estimators=0)), "n_estimators"),
    ("n_estimators a float", put(POWER, gbr(n_estimators=50.5)), "n_estimators"),
    ("n_estimators text", put(POWER, gbr(n_estimators="50")), "n_estimators"),
    ("n_estimators true", put(POWER, gbr(n_estimators=True)), "n_estimators"),
    ("n_estimators 301 digits", put(POWER, gbr(n_estimators=10**300)), "n_estimators"),
    ("max_depth 10^6", put(POWER, gbr(max_depth=10**6)), "max_depth"),
    ("max_depth null", put(POWER, gbr(max_depth=None)), "max_depth"),
    ("learning rate 0", put(POWER, gbr(learning_rate=0)), "learning_rate"),
    ("learning rate NaN", put(POWER, gbr(learning_rate=float("nan"))), "learning_rate"),
    ("learning rate inf", put(POWER, gbr(learning_rate=float("inf"))), "learning_rate"),
    ("svr C huge", put(POWER, {**GBR, "family": "svr", "params": {"C": 1e300}}), "C"),
    ("svr C negative", put(POWER, {**GBR, "family": "svr", "params": {"C": -1.0}}), "C"),
    ("krr gamma text", put(POWER, {**GBR, "family": "krr", "params": {"gamma": "x"}}), "gamma"),
    (
        "ridge alpha object",
        put(POWER, {**GBR, "family": "ridge", "params": {"alpha": {}}}),
        "alpha",
    ),
    (
        "linear positive 2",
        put(POWER, {**GBR, "family": "linear", "params": {"positive": 2}}),
        "positive",
    ),
    ("tdp with a parameter", put(POWER, {**GBR, "family": "tdp", "params": {"C": 1.0}}), "C"),
    (
        "hgb on raw features",
        put(POWER, {**GBR, "family": "hgb", "target_transform": "tdp_ratio"}),
        "features",
    ),
    (
        "hgb max_iter 10^6",
        put(
            POWER,
            {
                **GBR,
                "family": "hgb",
                "features": "physics",
                "target_transform": "tdp_ratio",
                "params": {"max_iter": 10**6},
            },
        ),
        "max_iter",
    ),
    (
        "factorised with a parameter",
        put(POWER, {**GBR, "family": "factorised", "params": {"C": 1.0}}),
        "C",
    ),
    (
        "factorised on log features",
        put(POWER, {**GBR, "family": "factorised", "features": "log"}),
        "features",
    ),
    (
        "factorised with a log target",
        put(POWER, {**GBR, "family": "factorised", "target_transform": "log"}),
        "target_transform",
    ),
    ("mean without members", put(POWER, {**GBR, "family": "mean", "params": {}}), "members"),
    (
        "members not a list",
        put(POWER, {**GBR, "family": "mean", "params": {"members": {}}}),
        "members",
    ),
    ("no members", mean_of(), "members"),
    ("too many members", mean_of(*[{**gbr(), "name": f"g{i}"} for i in range(50)]), "members"),
    ("member a number", mean_of(7), "members[0]"),
    (
        "member of a member",
        mean_of({**GBR, "family": "mean", "name": "inner", "params": {"members": [gbr()]}}),
        "members[0].family",
    ),
    ("members of one name", mean_of(gbr(), gbr()), "members[1].name"),
    ("member named __", mean_of({**gbr(), "name": "a__b"}), "members[0].name"),
    ("member named weights", mean_of({**gbr(), "name": "weights"}), "members[0].name"),
    (
        "member n_estimators 10^7",
        mean_of(gbr(n_estimators=10**7)),
        "members[0].params.n_estimators",
    ),
    ("cv a list", put("models.avg_power_w.cv", [1]), "cv"),
    ("cv NaN", put("models.avg_power_w.cv.rmse", float("nan")), "rmse"),
    ("cv text", put("models.avg_power_w.cv.r2", "good"), "r2"),
    ("candidates text", put("models.avg_power_w.candidates", "all"), "candidates"),
    ("candidate a list", put("models.avg_power_w.candidates", [[1]]), "candidates[0]"),
    ("selection_cv unknown", put("selection_cv", "loo"), "selection_cv"),
    ("seed negative", put("seed", -1), "seed"),
    ("seed 2^40", put("seed", 2**40), "seed"),
    ("seed a float", put("seed", 0.5), "seed"),
    ("n_configurations 0", put("n_configurations", 0), "n_configurations"),
    ("n_configurations text", put("n_configurations", "many"), "n_configurations"),
    ("columns reordered", lambda d: put("columns", d["columns"][::-1])(d), "columns"),
    ("columns text", put("columns", "all"), "columns"),
    ("rows text", put("rows", "x"), "rows"),
    ("rows of objects", put("rows", [{}] * 20), "rows[0]"),
    ("too few rows", rows_of(3), "rows"),
    ("too many rows", rows_of(MAX_RUNS + 1), "rows"),
    ("a short row", put("rows[3]", [1.0] * 11), "rows[3]"),
    ("a long row", lambda d: put("rows[3]", d["rows"][3] + [1.0])(d), "rows[3]"),
    ("a value text", put("rows[4][2]", "350"), "rows[4][2]"),
    ("a value null", put("rows[4][2]", None), "rows[4][2]"),
    ("a value true", put("rows[4][2]", True), "rows[4][2]"),
    ("a value nested", put("rows[4][2]", [350]), "rows[4][2]"),
    ("a value negative", put("rows[4][2]", -350.0), "rows[4][2]"),
    ("a value zero", put("rows[4][0]", 0), "rows[4][0]"),
    ("a value NaN", put("rows[5][4]", float("nan")), "rows[5][4]"),
    ("a value infinite", put("rows[5][4]", float("inf")), "rows[5][4]"),
    ("a value 1e300", put("rows[5][4]", 1e300), "rows[5][4]"),
    ("a target NaN", put("rows[6][10]", float("nan")), "rows[6][10]"),
    ("a target negative", put("rows[6][11]", -1.0), "rows[6][11]"),
    ("versions a list", put("versions", ["1.0"]), "versions"),
    ("source a number", put("source", 5), "source"),
    ("fit_seconds NaN", put("fit_seconds", float("nan")), "fit_seconds"),
    # The optional block of calibrated intervals.
    ("applicability a list", put(APP, []), APP),
    ("applicability null", put(APP, None), APP),
    ("no coverage", drop(f"{APP}.coverage"), "coverage"),
    ("coverage 0", put(f"{APP}.coverage", 0), "coverage"),
    ("coverage 1.5", put(f"{APP}.coverage", 1.5), "coverage"),
    ("coverage NaN", put(f"{APP}.coverage", float("nan")), "coverage"),
    ("coverage text", put(f"{APP}.coverage", "90%"), "coverage"),
    ("no bands", drop(f"{APP}.bands"), "bands"),
    ("bands a list", put(f"{APP}.bands", []), "bands"),
    ("a band missing", drop(f"{APP}.bands.epoch_energy_j"), "bands"),
    (
        "a band of an unknown target",
        lambda d: put(f"{APP}.bands.watts", d[APP]["bands"]["avg_power_w"])(d),
        "bands",
    ),
    ("a band a number", put(BAND, 3), BAND),
    ("no distance", drop(f"{BAND}.distance"), "distance"),
    ("no half-width", drop(f"{BAND}.log_halfwidth"), "log_halfwidth"),
    ("distance empty", put(f"{BAND}.distance", []), "distance"),
    ("distance text", put(f"{BAND}.distance", "near"), "distance"),
    (
        "distance of 11 points",
        put(f"{BAND}.distance", [0.1 * (i + 1) for i in range(11)]),
        "distance",
    ),
    ("a distance 0", put(f"{BAND}.distance[0]", 0.0), "distance[0]"),
    ("a distance negative", put(f"{BAND}.distance[0]", -1.0), "distance[0]"),
    ("a distance text", put(f"{BAND}.distance[0]", "near"), "distance[0]"),
    ("a distance 1e300", put(f"{BAND}.distance[0]", 1e300), "distance[0]"),
    ("a distance NaN", put(f"{BAND}.distance[0]", float("nan")), "distance[0]"),
    (
        "distances decreasing",
        put(BAND, {"distance": [1.0, 0.5], "log_halfwidth": [0.1, 0.2]}),
        "distance",
    ),
    (
        "half-widths decreasing",
        put(BAND, {"distance": [0.5, 1.0], "log_halfwidth": [0.2, 0.1]}),
        "log_halfwidth",
    ),
    (
        "fewer half-widths",
        put(BAND, {"distance": [0.5, 1.0], "log_halfwidth": [0.2]}),
        "log_halfwidth",
    ),
    ("a half-width negative", put(f"{BAND}.log_halfwidth[0]", -0.1), "log_halfwidth[0]"),
    ("a half-width 1e300", put(f"{BAND}.log_halfwidth[0]", 1e300), "log_halfwidth[0]"),
    ("a half-width infinite", put(f"{BAND}.log_halfwidth[0]", float("inf")), "log_halfwidth[0]"),
    ("a half-width true", put(f"{BAND}.log_halfwidth[0]", True), "log_halfwidth[0]"),
    ("spread limit 0.5", put(f"{BAND}.spread_limit", 0.5), "spread_limit"),
    ("spread limit text", put(f"{BAND}.spread_limit", "x2"), "spread_limit"),
    ("spread limit 1e300", put(f"{BAND}.spread_limit", 1e300), "spread_limit"),
]


def _run(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["estimate", "--model", str(path), *PLAN, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"joulecast: error: {path}: ")
    return lines[0]


@pytest.mark.parametrize(("case", "change", "field"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_model_file_is_one_line_naming_the_file_and_field(
    model: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    change: Callable[[dict[str, Any]], Any],
    field: str,
) -> None:
    path = tmp_path / "crafted.json"
    path.write_text(json.dumps(change(copy.deepcopy(model))))
    line = _run(path, capsys)
    assert field in line.removeprefix(f"joulecast: error: {path}: ")
    with pytest.raises(InputError):
        OfflineEstimator.load(path)


def test_bounds_are_stated_in_the_error(model: dict[str, Any], tmp_path: Path, capsys) -> None:
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(put(POWER, gbr(n_estimators=10**7))(copy.deepcopy(model))))
    line = _run(path, capsys)
    assert f"{POWER}.params.n_estimators: 10000000: expected a whole number from 1 to" in line


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_a_model_file_cut_short(model: dict[str, Any], tmp_path: Path, capsys, keep: float) -> None:
    text = json.dumps(model, indent=1).encode()
    path = tmp_path / "cut.json"
    path.write_bytes(text[: int(len(text) * keep)])
    assert "not a JSON model file" in _run(path, capsys)


@pytest.mark.parametrize(
    ("case", "content", "message"),
    [
        ("binary", bytes(range(256)) * 4, "not UTF-8"),
        ("latin-1", '{"source": "café"}'.encode("latin-1"), "not UTF-8"),
        ("UTF-16", '{"format": 1}'.encode("utf-16"), "not UTF-8"),
        ("a BOM", b"\xef\xbb\xbf{}", "not a JSON model file"),
        ("NaN literal", b'{"format": NaN}', "format"),
        ("deep", b"[" * 100_000 + b"]" * 100_000, "nested"),
        ("5000 digits", b'{"seed": ' + b"9" * 5000 + b"}", "not a JSON model file"),
        (
            "1e999",
            b'{"format": "joulecast-offline-estimator", "format_version": 1e999}',
            "format_version",
        ),
    ],
)
def test_bytes_that_are_no_model(tmp_path: Path, capsys, case: str, content: bytes, message: str):
    path = tmp_path / "model.json"
    path.write_bytes(content)
    assert message in _run(path, capsys)


def test_a_folder_a_device_a_missing_and_an_oversized_file(
    model: dict[str, Any], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "is a folder" in _run(tmp_path, capsys)
    assert "no such file" in _run(tmp_path / "missing.json", capsys)
    big = tmp_path / "big.json"
    big.write_text(json.dumps(model))
    monkeypatch.setattr(models, "MAX_MODEL_BYTES", 1000)
    assert "more than 1,000 bytes" in _run(big, capsys)
    if os.path.exists("/dev/zero"):
        assert "more than 1,000 bytes" in _run(Path("/dev/zero"), capsys)


def test_what_a_saved_file_may_leave_out_still_loads(model: dict[str, Any], tmp_path: Path):
    data = copy.deepcopy(model)
    for key in ("versions", "source", "fit_seconds", "ranges", "n_runs", "applicability"):
        del data[key]
    del data["models"]["avg_power_w"]["candidates"]
    data["models"]["epoch_energy_j"]["spec"] = {**gbr(n_estimators=500, max_depth=5), "name": "g"}
    path = tmp_path / "lean.json"
    path.write_text(json.dumps(data))
    lean = OfflineEstimator.load(path)
    assert lean.targets == ("avg_power_w", "epoch_energy_j")
    assert lean.bands_ is None  # as files written before intervals: estimates say so


def test_a_calibrated_block_loads_as_written(model: dict[str, Any], tmp_path: Path) -> None:
    block = model[APP]
    assert block["coverage"] == 0.9 and list(block["bands"]) == model["targets"]
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    bands = OfflineEstimator.load(path).bands_
    assert bands is not None
    assert {t: b.to_dict() for t, b in bands.items()} == block["bands"]


def test_every_grid_value_is_within_the_bounds_a_file_is_read_with() -> None:
    from joulecast.offline.features import TARGETS
    from joulecast.offline.models import candidates, check_spec

    for target in TARGETS:
        for candidate in candidates(target):
            for grid in (candidate.grid, candidate.small_grid):
                for name, values in grid.items():
                    for value in values:
                        spec = candidate.spec.to_dict() | {"params": {name: value}}
                        check_spec(spec, f"{target} {candidate.spec.name}")


def test_the_shipped_model_passes_its_schema() -> None:
    from importlib import resources

    text = resources.files("joulecast.offline").joinpath("data/default_model.json").read_text()
    models.check_model(json.loads(text), "default_model.json")


def test_fit_refuses_more_runs_than_a_model_file_holds() -> None:
    import pandas as pd

    runs = read_runs(DATA)
    many = pd.concat([runs] * (MAX_RUNS // len(runs) + 1), ignore_index=True).head(MAX_RUNS + 1)
    with pytest.raises(InputError, match=f"fit: {MAX_RUNS + 1} runs; at most {MAX_RUNS}"):
        OfflineEstimator(grid="small").fit(many)
