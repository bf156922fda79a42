"""Every reader and verb on malformed input: exit 2, one line naming the file, field or value,
no traceback, and the store untouched (its runs, their contents and its integrity).

Each case writes its crafted file under the test's folder and gives the argv of one verb;
``named`` are fragments the one line must hold (the file, the field, the value).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from joulecast.cli import main

POWER = "t_s,power_w,gpu_index\n0,100,0\n1,110,0\n2,120,0\n3,100,0\n"
PHASES = "index,start_s,end_s\n0,0,1.5\n1,1.5,3\n"
SMI = (
    "timestamp, index, power.draw [W], utilization.gpu [%]\n"
    "2024/03/01 10:00:00.000, 0, 100.00, 50\n"
    "2024/03/01 10:00:01.000, 0, 110.00, 50\n"
)


@dataclass(frozen=True)
class Case:
    """One malformed input: the files it writes and the verb it runs."""

    id: str
    files: dict[str, str | bytes]
    argv: list[str]
    named: tuple[str, ...]


def power(body: str) -> str:
    return "t_s,power_w,gpu_index\n" + body


def phases(body: str) -> str:
    return "index,start_s,end_s\n" + body


def study(extra: str, *, factors: str = 'arch = ["mobilenet_v2"]') -> str:
    """A study file of the built-in workload, with ``extra`` lines in its [study] table."""
    return (
        '[study]\nname = "s"\nworkload = "joulecast"\nrepetitions = 1\nseed = 1\n'
        f'{extra}\n[fixed]\ndataset = "shapes"\nepochs = [1]\n[factors]\n{factors}\n'
    )


def command_study(command: str) -> str:
    """A study file of a user's command."""
    return (
        f'[study]\nname = "s"\nworkload = "command"\ncommand = "{command}"\n'
        'repetitions = 1\nseed = 1\n[factors]\narch = ["a", "b"]\n'
    )


def trace_cases() -> list[Case]:
    def imp(name: str, body: str | bytes, *named: str, phase: str | None = None) -> Case:
        files: dict[str, str | bytes] = {"power.csv": body}
        argv = ["import", "trace", "--power", "{tmp}/power.csv"]
        if phase is not None:
            files["phases.csv"] = phase
            argv += ["--phases", "{tmp}/phases.csv"]
        return Case(f"trace-{name}", files, argv, named)

    long_index = "9" * 30
    return [
        imp("empty", "", "power.csv", "empty"),
        imp("header-only", "t_s,power_w,gpu_index\n", "power.csv"),
        imp("binary", b"\x00\xff\xfe\x89PNG\r\n\x1a\n" * 50, "power.csv"),
        imp("latin1", "t_s,power_w,device\n0,1,caf\xe9\n".encode("latin-1"), "power.csv"),
        imp("superscript-index", power("0,100,\u00b2\n"), "power.csv", "gpu_index", "\u00b2"),
        imp("double-minus-index", power("0,100,--5\n"), "power.csv", "gpu_index", "--5"),
        imp("30-digit-index", power(f"0,100,{long_index}\n"), "power.csv", long_index[:20]),
        imp("5000-digit-index", power(f"0,100,{'9' * 5000}\n"), "power.csv", "gpu_index"),
        imp("huge-power", power("0,1e308,0\n1,1e308,0\n"), "power.csv", "power_w", "1e308"),
        imp("inf-power", power("0,inf,0\n1,100,0\n"), "power.csv", "power_w", "inf"),
        imp("nan-time", power("nan,100,0\n"), "power.csv", "t_s", "nan"),
        imp("huge-time", power("0,100,0\n1e300,100,0\n"), "power.csv", "t_s", "1e300"),
        imp("negative-power", power("0,-5,0\n1,100,0\n"), "power.csv", "power_w", "-5"),
        imp("arabic-digits", power("\u0661,100,0\n"), "power.csv", "t_s"),
        imp("too-few-fields", power("0,100\n"), "power.csv", "line 2"),
        imp("backwards", power("5,100,0\n1,100,0\n"), "power.csv", "backwards"),
        imp("util-over-100", "t_s,power_w,gpu_index,util_pct\n0,1,0,250\n", "util_pct", "250"),
        imp(
            "phase-superscript",
            POWER,
            "phases.csv",
            "index",
            "\u00b2",
            phase=phases("\u00b2,0,1\n"),
        ),
        imp("phase-30-digits", POWER, "phases.csv", "index", phase=phases(f"{long_index},0,1\n")),
        imp("phase-end-first", POWER, "phases.csv", "before", phase=phases("0,2,1\n")),
        imp(
            "phase-overlap",
            POWER,
            "phases.csv",
            "overlap",
            phase=phases("0,0,2\n1,1,3\n"),
        ),
        imp("phase-outside", POWER, "phases.csv", "outside", phase=phases("0,100,200\n")),
        imp("phase-twice", POWER, "phases.csv", "twice", phase=phases("0,0,1\n0,1,2\n")),
        imp("phase-samples", POWER, "samples", phase="index,start_s,end_s,samples\n0,0,1,-3\n"),
        Case(
            "trace-folder",
            {"d/x": ""},
            ["import", "trace", "--power", "{tmp}/d"],
            ("d",),
        ),
        Case(
            "trace-missing",
            {},
            ["import", "trace", "--power", "{tmp}/nope.csv"],
            ("nope.csv", "not found"),
        ),
        Case(
            "smi-year-1",
            {"smi.csv": SMI.replace("2024/03/01 10:00:01", "0001/01/01 00:00:00")},
            ["import", "nvidia-smi", "{tmp}/smi.csv"],
            ("smi.csv",),
        ),
        Case(
            "smi-garbage-time",
            {"smi.csv": SMI.replace("2024/03/01 10:00:01.000", "yesterday")},
            ["import", "nvidia-smi", "{tmp}/smi.csv"],
            ("smi.csv", "yesterday"),
        ),
        Case(
            "smi-huge-power",
            {"smi.csv": SMI.replace("110.00", "1e308")},
            ["import", "nvidia-smi", "{tmp}/smi.csv"],
            ("smi.csv", "1e308"),
        ),
    ]


def reference_cases() -> list[Case]:
    cases = []
    for verb in ("show", "export", "forecast"):
        for ref in ("99999999999999999999999", "\u00b2", "--5", "-1", "run' OR 1=1 --"):
            cases.append(Case(f"{verb}-ref-{ref[:6]}", {}, [verb, "--", ref], (ref[:6],)))
    return cases


def study_cases() -> list[Case]:
    def plan(name: str, text: str, *named: str) -> Case:
        return Case(f"study-{name}", {"s.toml": text}, ["study", "plan", "{tmp}/s.toml"], named)

    return [
        plan("not-toml", "[study\nname=", "s.toml"),
        plan("binary", "\x00\x01\x02", "s.toml"),
        plan("cooldown-overflow", study('cooldown = "99999999999999h"'), "cooldown", "9999"),
        plan("repetitions-huge", study("").replace("repetitions = 1", "repetitions = 10**9"), "s"),
        plan(
            "repetitions-billion",
            study("").replace("repetitions = 1", "repetitions = 1000000000000"),
            "repetitions",
        ),
        plan(
            "grid-10^12",
            study(
                "",
                factors="\n".join(
                    f"f{i} = [{', '.join(str(j) for j in range(10))}]" for i in range(12)
                ),
            ),
            "runs",
        ),
        plan("template-attribute", command_study("python x.py {seed.foo}"), "{seed.foo}"),
        plan("template-index", command_study("python x.py {seed[0]}"), "{seed[0]}"),
        plan("template-conversion", command_study("python x.py {seed!z}"), "seed"),
        plan("template-format", command_study("python x.py {arch:d}"), "arch"),
        plan("template-huge-width", command_study("python x.py {arch:>2000000000}"), "arch"),
        plan("template-nested", command_study("python x.py {arch:{seed}}"), "arch"),
        plan("template-unknown", command_study("python x.py {nope}"), "nope"),
        plan("template-brace", command_study("python x.py {arch"), "{arch"),
    ]


def yaml_cases() -> list[Case]:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    deep = "study: " + "[" * 5000 + "]" * 5000 + "\n"
    keys = "study:\n  name: s\n  1: 2\n  [a]: b\n"
    return [
        Case(f"yaml-{name}", {"s.yaml": text}, ["study", "plan", "{tmp}/s.yaml"], ("s.yaml",))
        for name, text in (("aliases", laughs), ("deep", deep), ("keys", keys))
    ]


def runs_with_stable(value: str) -> str:
    """A run table of 12 of the paper's runs whose third holds ``value`` as stable energy."""
    from joulecast.offline.features import RAW_FEATURES

    header = [*RAW_FEATURES, "avg_power_w", "epoch_energy_j", "epoch_energy_stable_j"]
    row = "10496,24,350,16,1.5,3060,6084,{b},128,128,200,1000,{s}"
    rows = [row.format(b=8 * (1 + i % 4), s=value if i == 2 else 900) for i in range(12)]
    return "\n".join([",".join(header), *rows]) + "\n"


def paper(name: str, extra: list[str], *named: str) -> Case:
    """``evaluate-estimators --protocol paper`` with one option out of its range."""
    return Case(f"paper-{name}", {}, ["evaluate-estimators", "--protocol", "paper", *extra], named)


def offline_cases() -> list[Case]:
    def est(name: str, files: dict[str, str | bytes], extra: list[str], *named: str) -> Case:
        argv = ["estimate", "--gpu", "RTX 3090", "--arch", "resnet50", "--epochs", "10"]
        argv += ["--batch-size", "32", "--input-size", "128"]
        argv += ["--train-samples", "1000", "--val-samples", "200"]
        return Case(f"estimate-{name}", files, argv + extra, named)

    return [
        est("model-folder", {"m/x": ""}, ["--model", "{tmp}/m"], "m"),
        est("model-missing", {}, ["--model", "{tmp}/none.json"], "none.json"),
        est(
            "model-binary", {"m.json": b"\x89\x00\xff" * 100}, ["--model", "{tmp}/m.json"], "m.json"
        ),
        est("model-list", {"m.json": "[1, 2, 3]"}, ["--model", "{tmp}/m.json"], "m.json"),
        est(
            "model-truncated",
            {"m.json": '{"format": "joulecast'},
            ["--model", "{tmp}/m.json"],
            "m.json",
        ),
        est("model-empty-object", {"m.json": "{}"}, ["--model", "{tmp}/m.json"], "m.json"),
        Case(
            "fit-data-folder",
            {"d/x": ""},
            ["fit-offline", "--data", "{tmp}/d", "-o", "{tmp}/o.json"],
            ("d",),
        ),
        Case(
            "fit-data-inf",
            {"d.csv": "gpu,energy_j\nRTX 3090,inf\n"},
            ["fit-offline", "--data", "{tmp}/d.csv", "-o", "{tmp}/o.json"],
            ("d.csv",),
        ),
        Case("fit-output-folder", {"o/x": ""}, ["fit-offline", "-o", "{tmp}/o"], ("o",)),
        paper("n-iter-0", ["--n-iter", "0"], "--n-iter", "'0'", "from 1 to 10000"),
        paper("holdout-high", ["--holdout", "0.95"], "--holdout", "'0.95'", "from 0 to 0.9"),
        paper("holdout-nan", ["--holdout", "nan"], "--holdout", "'nan'"),
        paper("seed-negative", ["--paper-seed", "-1"], "--paper-seed", "'-1'"),
        Case(
            "paper-option-alone",
            {},
            ["evaluate-estimators", "--n-iter", "5"],
            ("--n-iter", "--protocol paper"),
        ),
        Case(
            "paper-stable-inf",
            {"d.csv": runs_with_stable("inf")},
            ["evaluate-estimators", "--data", "{tmp}/d.csv", "--protocol", "paper"],
            ("d.csv", "line 4", "epoch_energy_stable_j", ": inf:"),
        ),
        Case("report-output-folder", {"o/x": ""}, ["report", "-o", "{tmp}/o"], ("o",)),
    ]


def other_cases() -> list[Case]:
    gpus = "name,aliases,architecture,cuda_cores,memory_gb,tdp_w,form_factor,source,notes\n"
    estimate = ["estimate", "--gpu", "X1", "--arch", "resnet50", "--epochs", "1"]
    estimate += ["--batch-size", "8", "--input-size", "64", "--train-samples", "10"]
    estimate += ["--val-samples", "5", "--gpus", "{tmp}/g.csv"]
    return [
        Case("export-output-file", {"o": "x"}, ["export", "1", "-o", "{tmp}/o"], ("o",)),
        Case("measure-run-uid", {}, ["measure", "--run-uid", "a\x01b", "--", "true"], ("uid",)),
        Case("measure-tag", {}, ["measure", "--tag", "novalue", "--", "true"], ("novalue",)),
        Case("study-status-missing", {}, ["study", "status", "{tmp}/no.toml"], ("no.toml",)),
        Case("study-run-missing", {}, ["study", "run", "{tmp}/no.toml"], ("no.toml",)),
        Case("gpus-huge-tdp", {"g.csv": gpus + "X1,,A,10,8,1e308,PCIe,,\n"}, estimate, ("tdp_w",)),
        Case("gpus-dev-zero", {}, [*estimate[:-1], "/dev/zero"], ("/dev/zero",)),
    ]


def carbon_cases() -> list[Case]:
    csv = "{tmp}/ci.csv"
    show = ["show", "1", "--intensity-csv", csv]
    head = "datetime,g_per_kwh\n"
    return [
        Case("co2-csv-missing", {}, show, ("ci.csv", "no such file")),
        Case("co2-csv-column", {"ci.csv": "time,g\n"}, show, ("ci.csv", "datetime")),
        Case("co2-csv-when", {"ci.csv": head + "noon,1\n"}, show, ("line 2", "'noon'")),
        Case("co2-csv-value", {"ci.csv": head + "2026-01-01T00:00Z,1e9\n"}, show, ("line 2",)),
        Case("co2-csv-binary", {"ci.csv": b"\xff\xfe\x00"}, show, ("ci.csv", "UTF-8")),
        Case("co2-csv-dev-zero", {}, ["show", "1", "--intensity-csv", "/dev/zero"], ("/dev/zero",)),
        Case("co2-region", {}, ["runs", "--region", "ATLANTIS"], ("ATLANTIS", "alpha-3")),
        Case("co2-intensity", {}, ["show", "1", "--intensity", "-5"], ("-5",)),
        Case("co2-pue", {}, ["show", "1", "--region", "FRA", "--pue", "0.5"], ("0.5",)),
        Case(
            "co2-measure-csv",
            {"ci.csv": "x\n"},
            ["measure", "--no-gpu", "--intensity-csv", csv, "--", "true"],
            ("ci.csv",),
        ),
    ]


CASES = (
    trace_cases()
    + reference_cases()
    + study_cases()
    + yaml_cases()
    + offline_cases()
    + other_cases()
    + carbon_cases()
)


def fingerprint(path: Path) -> tuple[str, str]:
    """The store's integrity check and a digest of every table's rows."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        digest = hashlib.sha256()
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in sorted(tables):
            for row in db.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
                digest.update(repr(row).encode())
    db.close()
    return check, digest.hexdigest()


@pytest.fixture(scope="module")
def held_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one imported run, copied for each case."""
    folder = tmp_path_factory.mktemp("held")
    (folder / "power.csv").write_text(POWER)
    (folder / "phases.csv").write_text(PHASES)
    path = folder / "runs.db"
    argv = ["import", "trace", "--power", str(folder / "power.csv")]
    assert main([*argv, "--phases", str(folder / "phases.csv"), "--store", str(path)]) == 0
    return path


def run_verb(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_one_line_and_leaves_the_store(
    case: Case, held_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    store.write_bytes(held_store.read_bytes())
    before = fingerprint(store)
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    head, sep, rest = argv, [], []
    if "--" in argv:
        at = argv.index("--")
        head, sep, rest = argv[:at], ["--"], argv[at + 1 :]
    code, err = run_verb([*head, "--store", str(store), *sep, *rest], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert len(lines[0]) < 500
    for fragment in case.named:
        assert fragment in lines[0], (fragment, lines[0])
    assert fingerprint(store) == before
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert not leftovers
