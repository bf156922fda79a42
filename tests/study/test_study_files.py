"""Malformed and hostile study files: each is refused by every study verb with one line that
names the file and the field, exit status 2, no traceback, and no run left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulecast.cli import main
from joulecast.errors import InputError
from joulecast.store import Store
from joulecast.study.design import argv, load_study, plan
from joulecast.study.runner import Runner
from tests.study.test_design import TINY

VERBS = ("plan", "run", "status", "collect")

COMMAND = """
[study]
name = "h"
workload = "command"
command = ["echo", "--x={x}", "--seed", "{seed}"]
repetitions = 1
warmup = "0s"
cooldown = "0s"

[factors]
x = [1, 2]
"""


def command(item: str) -> str:
    """The command study with ``item`` as its last command item."""
    return COMMAND.replace('"{seed}"]', f"{item}]")


def refused_by_every_verb(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str | None,
    name: str,
    *fragments: str,
) -> str:
    """Write ``text`` as ``name`` (None: the file is there); every study verb refuses it with
    one line naming the file and each fragment, exit status 2, and leaves no store behind.
    Returns the line."""
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    store = tmp_path / "s.db"
    line = ""
    for verb in VERBS:
        code = main(["study", verb, str(path), "--store", str(store)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err and "\x1b" not in err
        lines = err.splitlines()
        assert len(lines) == 1, err
        line = lines[0]
        assert line.startswith(f"joulecast: error: {path}: "), line
        for fragment in fragments:
            assert fragment in line, line
    assert not store.exists()
    return line


@pytest.mark.parametrize(
    ("item", "fragments"),
    [
        ('"{seed.foo}"', ("study.command[3]", "'{seed.foo}'", ".attribute or [index]")),
        ('"{seed[0]}"', ("study.command[3]", "'{seed[0]}'", ".attribute or [index]")),
        ('"{x!z}"', ("study.command[3]", "'{x!z}'", "!conversion or :format")),
        ('"{x!r}"', ("study.command[3]", "'{x!r}'", "!conversion or :format")),
        ('"{x:d}"', ("study.command[3]", "'{x:d}'", "!conversion or :format")),
        ('"{x:>2000000000}"', ("study.command[3]", "'{x:>2000000000}'", ":format")),
        ('"{x:{seed}}"', ("study.command[3]", "'{x:{seed}}'", ":format")),
        ('"--a={x:{seed}}"', ("'--a={x:{seed}}'", "placeholder '{x:{seed}}'", ":format")),
        ('"{y}"', ("study.command[3]", "'{y}'", "not a factor", "seed, x")),
        ('"{}"', ("study.command[3]", "'{}'", "not a factor")),
        ('"{0}"', ("study.command[3]", "'{0}'", "not a factor")),
        ('"{x"', ("study.command[3]", "'{x'", "expected '}'")),
        ('"x}"', ("study.command[3]", "'x}'", "Single '}'")),
        ('"{x{y}}"', ("study.command[3]", "'{x{y}}'", "unexpected '{'")),
        ('"{\\u001b[31m}"', ("study.command[3]", "\\x1b[31m")),
        ('"{a\\nb}"', ("study.command[3]", "\\n", "not a factor")),
    ],
)
def test_a_bad_command_template_is_refused_by_every_verb(tmp_path, capsys, item, fragments):
    refused_by_every_verb(tmp_path, capsys, command(item), "h.toml", *fragments)


def test_plain_placeholders_and_literal_braces_still_render(tmp_path):
    path = tmp_path / "h.toml"
    path.write_text(command('"{{x}}={x}", "{seed}"'))
    study = load_study(path)
    run = plan(study)[0]
    x = run.factors["x"]
    assert argv(study, run) == ["echo", f"--x={x}", "--seed", f"{{x}}={x}", str(run.seed)]


def test_a_run_whose_command_cannot_be_built_goes_back_to_the_plan(tmp_path, monkeypatch):
    import joulecast.study.runner as runner_module

    def broken(*args, **kwargs):
        raise RuntimeError("cannot build the command")

    monkeypatch.setattr(runner_module, "measured_argv", broken)
    path = tmp_path / "h.toml"
    path.write_text(COMMAND)
    study = load_study(path)
    with pytest.raises(RuntimeError, match="cannot build"):
        runner_module.Runner(study, tmp_path / "s.db", echo=lambda _: None).run()
    with Store(tmp_path / "s.db") as store:
        rows = store.query("SELECT status, attempts FROM study_runs")
    assert [(r["status"], r["attempts"]) for r in rows] == [("planned", 0), ("planned", 0)]


def test_load_study_refuses_with_an_input_error(tmp_path):
    path = tmp_path / "h.toml"
    path.write_text(command('"{x!r}"'))
    with pytest.raises(InputError, match="conversion"):
        load_study(path)


def test_a_job_that_cannot_be_submitted_goes_back_to_the_plan(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    import joulecast.study.runner as runner_module

    class Refusing:
        def __init__(self, folder: Path, cluster: str) -> None:
            pass

        def update_parameters(self, **params: object) -> None:
            pass

        def submit(self, *args: object) -> None:
            raise RuntimeError("sbatch: error: invalid partition")

    monkeypatch.setattr(submitit, "AutoExecutor", Refusing)
    path = tmp_path / "h.toml"
    path.write_text(COMMAND)
    runner = runner_module.Runner(
        load_study(path), tmp_path / "s.db", executor="slurm", echo=lambda _: None
    )
    with pytest.raises(RuntimeError, match="invalid partition"):
        runner.run()
    with Store(tmp_path / "s.db") as store:
        rows = store.query("SELECT status, attempts FROM study_runs")
    assert [(r["status"], r["attempts"]) for r in rows] == [("planned", 0), ("planned", 0)]


YAML = """
study:
  name: h
  workload: command
  command: [echo, "{x}"]
  repetitions: 1
factors:
  x: [1, 2]
"""
BOMB = "".join(
    f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 9) + "]\n" for i in range(9)
)


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        ("bomb.yaml", YAML + BOMB, ("line 10", "alias *l0", "written out")),
        ("alias.yaml", YAML.replace("  x: [1, 2]", "  x: &a [1]\n  y: *a"), ("alias *a",)),
        ("merge.yaml", YAML + "fixed: &f {a: 1}\nslurm: {<<: *f}\n", ("alias *f",)),
        ("deep.yaml", YAML.replace("[1, 2]", "[" * 20 + "]" * 20), ("line 8", "nested more")),
        ("key.yaml", YAML.replace("  x: [1, 2]", "  x: [1]\n  1: [a]"), ("factors: key 1",)),
        ("null.yaml", YAML.replace("  x: [1, 2]", "  x: [1]\n  ~: [a]"), ("key None", "a name")),
        ("int.yaml", YAML.replace("[1, 2]", f"[{'9' * 5000}]"), ("line 8", "at most 18 digits")),
        ("hex.yaml", YAML.replace("[1, 2]", f"[0x{'f' * 60}]"), ("line 8", "at most 18 digits")),
        ("big.yaml", YAML.replace("[1, 2]", "[1, 10000000000000000]"), ("factors.x[1]",)),
        ("inf.yaml", YAML.replace("[1, 2]", "[1, .inf]"), ("factors.x[1]: inf", "finite")),
        ("binary.yaml", YAML.replace("[1, 2]", "[!!binary aGk=]"), ("factors.x[0]: b'hi'",)),
        ("set.yaml", YAML.replace("[1, 2]", "[!!set {a}]"), ("factors.x[0]: {'a'}",)),
        ("date.yaml", YAML.replace("[1, 2]", "[2001-01-01]"), ("factors.x[0]: datetime.date",)),
        ("month.yaml", YAML.replace("[1, 2]", "[2001-13-45]"), ("not valid YAML", "month")),
        ("tag.yaml", YAML.replace("[1, 2]", "[!!int abc]"), ("not valid YAML", "'abc'")),
        ("python.yaml", YAML.replace("[1, 2]", "[!!python/name:os.system]"), ("not valid YAML",)),
        ("deep.toml", COMMAND.replace("[1, 2]", "[" * 3000 + "]" * 3000), ("nested more",)),
        ("deep17.toml", COMMAND.replace("[1, 2]", "[" * 16 + "]" * 16), ("factors.x[0][0]",)),
        ("dotted.toml", COMMAND + "a." * 20000 + "b = 1\n", ("line 12", "dotted key of more")),
        ("header.toml", COMMAND + "[" + "a." * 20000 + "b]\n", ("line 12", "dotted key")),
        ("inline.toml", COMMAND + "a = " + "{b = " * 40 + "1" + "}" * 40, ("a.b.b.b",)),
        ("int.toml", COMMAND.replace("[1, 2]", f"[{'9' * 5000}]"), ("line 11", "18 digits")),
        ("big.toml", COMMAND.replace("[1, 2]", "[-10000000000000001]"), ("factors.x[0]",)),
        ("nan.toml", COMMAND.replace("[1, 2]", "[1, nan]"), ("factors.x[1]: nan", "finite")),
        ("inf.toml", COMMAND.replace("[1, 2]", "[1, -inf]"), ("factors.x[1]: -inf", "finite")),
        ("date.toml", COMMAND.replace("[1, 2]", "[1979-05-27]"), ("factors.x[0]: datetime",)),
        ("time.toml", COMMAND + "[fixed]\nt = 07:32:00\n", ("fixed.t: datetime.time",)),
        ("odd key.toml", COMMAND + '[fixed]\n"a ]b" = nan\n', ("fixed['a ]b']: nan",)),
        (
            "control key.toml",
            COMMAND + '[fixed]\n"a\\u001b[2Jb" = 1\n',
            ("fixed: key 'a\\x1b[2Jb'", "without control characters"),
        ),
        (
            "control value.toml",
            TINY.replace('"nasnet_mobile"', '"\\u001b[2J"'),
            ("combination 3 (arch=\\x1b[2J, batch_size=8)", "unknown architecture '\\x1b[2J'"),
        ),
        ("latin1.toml", COMMAND.replace('"h"', '"\xe9"'), ("not UTF-8",)),
        ("large.toml", COMMAND + "#" * (1 << 20), ("larger than 1024 KiB", "at most 1024 KiB")),
    ],
)
def test_a_study_file_the_readers_refuse(tmp_path, capsys, name, text, fragments):
    pytest.importorskip("yaml")
    path = tmp_path / name
    if name.startswith("latin1"):
        path.write_bytes(text.encode("latin-1"))
        refused = refused_by_every_verb(tmp_path, capsys, None, name, *fragments)
    else:
        refused = refused_by_every_verb(tmp_path, capsys, text, name, *fragments)
    assert len(refused) < 400


def test_a_yaml_file_without_aliases_reads_as_before(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "ok.yaml"
    path.write_text(YAML.replace("  x: [1, 2]", "  x: &unused [1, 2]"))
    assert load_study(path).factors == {"x": [1, 2]}


# Within a limit the quadratic search of old (minutes) could not meet.
@pytest.mark.timeout(60)
def test_repeated_levels_are_found_in_one_pass(tmp_path):
    many = ", ".join(map(str, range(100_000)))
    path = tmp_path / "many.toml"
    path.write_text(COMMAND.replace("[1, 2]", f"[{many}]"))
    assert len(load_study(path).combinations) == 100_000
    path.write_text(COMMAND.replace("[1, 2]", f"[{many}, 1.0]"))
    with pytest.raises(InputError, match=r"factors.x: level 1.0 appears twice"):
        load_study(path)


def test_repeated_combinations_are_found_in_one_pass(tmp_path):
    path = tmp_path / "many.toml"
    design = COMMAND.split("[factors]")[0]
    listed = "".join(f"[[combinations]]\nx = [{i}]\ny = {{a = {i}}}\n" for i in range(2_000))
    path.write_text(design + listed)
    study = load_study(path)
    assert len(study.combinations) == 2_000 and len(study.factors["y"]) == 2_000
    path.write_text(design + listed + "[[combinations]]\nx = [7.0]\ny = {a = 7}\n")
    with pytest.raises(InputError, match=r"combinations\[2000\]: repeats combinations\[7\]"):
        load_study(path)


GRID = "\n".join(f"f{i} = [{', '.join(map(str, range(1000)))}]" for i in range(4))


def study(text: str, **changes: str) -> str:
    """``text`` with each ``key = ...`` line of its [study] table replaced or added."""
    lines = text.split("\n")
    for key, value in changes.items():
        lines = [ln for ln in lines if not ln.startswith(f"{key} = ")]
        lines.insert(lines.index("[study]") + 1, f"{key} = {value}")
    return "\n".join(lines)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (COMMAND.replace("x = [1, 2]", GRID), ("factors: over 100,000 combinations x 1 rep",)),
        (study(COMMAND, repetitions="1000000000000"), ("study.repetitions: 1000000000000",)),
        (study(COMMAND, repetitions="50001"), ("factors: 2 combinations x 50,001 repetition",)),
        (study(COMMAND, repetitions="100001"), ("study.repetitions: 100001", "100000")),
        (
            study(COMMAND, repetitions="50001").replace(
                "[factors]\nx = [1, 2]", "[[combinations]]\nx = 1\n[[combinations]]\nx = 2"
            ),
            ("combinations: 2 combinations x 50,001 repetition(s)", "at most 100,000 runs"),
        ),
        (study(COMMAND, cooldown='"99999999999999h"'), ("study.cooldown", "at most 315576000 s")),
        (study(COMMAND, cooldown="1e300"), ("study.cooldown: 1e+300", "0 to 315576000 s")),
        (study(COMMAND, cooldown="-1"), ("study.cooldown: -1",)),
        (study(COMMAND, cooldown="true"), ("study.cooldown: True",)),
        (study(COMMAND, warmup="315576001"), ("study.warmup: 315576001",)),
        (study(COMMAND, timeout='"3653d"'), ("study.timeout", "'3653d'")),
        (study(COMMAND, name='"' + "n" * 101 + '"'), ("study.name: 'nnnn", "at most 100")),
        (study(COMMAND, name='"a\\u001bb"'), ("study.name: 'a\\x1bb'", "control characters")),
        (study(COMMAND, seed="10000000000000000"), ("study.seed: 10000000000000000",)),
        (COMMAND + "[slurm]\ntime = '99999d'\n", ("slurm.time", "'99999d'")),
        (COMMAND + "[slurm]\ntime_min = 1e12\n", ("slurm.time_min: 1000000000000.0",)),
        (COMMAND + "[slurm]\nnodes = 1000000\n", ("slurm.nodes: 1000000", "at most 10000")),
        (COMMAND + "[slurm]\ngpus_per_node = 65\n", ("slurm.gpus_per_node: 65", "at most 64")),
        (COMMAND + "[slurm]\ncpus_per_task = 99999\n", ("slurm.cpus_per_task: 99999",)),
        (COMMAND + "[slurm]\nmem_gb = 1e12\n", ("slurm.mem_gb: 1000000000000.0",)),
        (COMMAND.replace("x = [1, 2]", "x = [1]\nnodes = [1, 20000]"), ("factors.nodes[1]",)),
        (COMMAND.replace("x = [1, 2]", "x = [1]\nram_gb = [1e9]"), ("ram_gb 1000000000.0",)),
        (TINY.replace("16, 32]", "1000000000000000]"), ("combination 1", "batch size 1000")),
        (TINY.replace("[1]", "[1, 1000000000]"), ("combination 0", "epochs (1, 1000000000)")),
        (TINY.replace("input_size = 32", "input_size = 100000"), ("input size 100000",)),
        (TINY.replace("[fixed]", "[fixed]\nsamples = 100000000"), ("samples 100000000",)),
        (TINY.replace("[fixed]", "[fixed]\nseed = -1"), ("combination 0", "seed -1")),
        (TINY.replace("[fixed]", "[fixed]\nseed = 4294967296"), ("seed 4294967296",)),
    ],
)
def test_a_number_out_of_bounds_is_refused_by_every_verb(tmp_path, capsys, text, fragments):
    refused_by_every_verb(tmp_path, capsys, text, "h.toml", *fragments)


@pytest.mark.parametrize("interval", ["nan", "inf", "0", "-1", "1e400", "²"])
def test_study_run_refuses_a_bad_interval_before_any_run(tmp_path, capsys, interval):
    path = tmp_path / "h.toml"
    path.write_text(COMMAND)
    store = tmp_path / "s.db"
    with pytest.raises(SystemExit) as info:
        main(["study", "run", str(path), "--store", str(store), f"--interval={interval}"])
    assert info.value.code == 2
    assert "--interval" in capsys.readouterr().err
    assert not store.exists()
    if interval != "²":
        with pytest.raises(InputError, match="interval_s"):
            Runner(load_study(path), store, interval_s=float(interval))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            COMMAND.replace("[1, 2]", f"[1, {'a' * 200_000!r}]"),
            ("combination 1 (x=aaa", "...)", "an argument of 200,013 bytes", "100,000"),
        ),
        (
            COMMAND.replace("[1, 2]", f"[1, {'a' * 90_000!r}]").replace(
                '"--x={x}"', ", ".join(['"{x}"'] * 11)
            ),
            ("combination 1", "a command line of 1,170,124 bytes", "at most 1,000,000"),
        ),
        (
            TINY.replace("[fixed]", f"[fixed]\nname = {'n' * 150_000!r}"),
            ("combination 0", "an argument of 150,000 bytes ('nnnn"),
        ),
    ],
)
def test_a_command_line_too_long_to_start_is_refused_by_every_verb(
    tmp_path, capsys, text, fragments
):
    refused_by_every_verb(tmp_path, capsys, text, "h.toml", *fragments)


@pytest.mark.parametrize(
    ("failure", "fragment"),
    [
        (OSError(11, "Resource temporarily unavailable"), "[Errno 11] Resource temporarily"),
        (PermissionError(13, "Permission denied", "logs"), "[Errno 13] Permission denied: 'logs'"),
    ],
)
def test_a_run_that_cannot_be_started_stops_the_study_in_one_line(
    tmp_path, capsys, monkeypatch, failure, fragment
):
    import joulecast.study.runner as runner_module

    def refuse(*args, **kwargs):
        raise failure

    monkeypatch.setattr(runner_module, "execute", refuse)
    path = tmp_path / "h.toml"
    path.write_text(COMMAND)
    store = tmp_path / "s.db"
    assert main(["study", "run", str(path), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "2 run(s) still planned" in err
    with Store(store) as opened:
        rows = opened.query("SELECT status, attempts FROM study_runs")
    assert [(r["status"], r["attempts"]) for r in rows] == [("planned", 0), ("planned", 0)]
