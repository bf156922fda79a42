from __future__ import annotations

import sys
from pathlib import Path

import pytest

from joulecast.errors import InputError
from joulecast.study.design import (
    BUILTIN,
    LABEL_FACTORS,
    PlannedRun,
    Study,
    argv,
    changes,
    load_study,
    plan,
    workload_parameters,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "studies"

TINY = """
[study]
name = "t"
repetitions = 3
seed = 7
warmup = "0s"
cooldown = 0

[fixed]
dataset = "shapes"
input_size = 32
epochs = [1]
weights = "none"

[factors]
arch = ["mobilenet_v2", "nasnet_mobile"]
batch_size = [8, 16, 32]
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def study_from(tmp_path: Path, text: str, name: str = "s.toml") -> Study:
    return load_study(write(tmp_path, text, name))


def refused(tmp_path: Path, text: str, *fragments: str, name: str = "s.toml") -> str:
    """Load ``text``: it must fail with one line naming the file and every fragment."""
    path = write(tmp_path, text, name)
    with pytest.raises(InputError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- the shipped examples ------------------------------------------------------------------------


def test_tiny_example():
    study = load_study(EXAMPLES / "tiny.toml")
    runs = plan(study)
    assert study.name == "tiny"
    assert study.workload == BUILTIN
    assert len(study.combinations) == 4
    assert len(runs) == 8
    assert study.warmup_s == 0 and study.cooldown_s == 0
    assert study.timeout_s == 600
    assert study.fixed["dataset"] == "shapes"
    assert study.fixed["epochs"] == [1]
    assert study.fixed["weights"] == "none"


@pytest.mark.parametrize(
    ("name", "combinations", "runs"),
    [("paper_block1", 15, 450), ("paper_block2", 39, 1170)],
)
def test_paper_blocks(name, combinations, runs):
    study = load_study(EXAMPLES / f"{name}.toml")
    planned = plan(study)
    assert len(study.combinations) == combinations
    assert len(planned) == runs
    assert study.repetitions == 30
    assert study.warmup_s == 600
    assert study.cooldown_s == 300
    assert study.order == "random"
    assert set(LABEL_FACTORS) <= set(study.factors)
    # the paper fixes the seeds: every run trains with the same one
    assert {run.seed for run in planned} == {study.fixed["seed"]}
    # no validation part set aside: train on the training split, validate on the test split
    assert study.fixed["split"] == "paper"
    assert all(argv(study, run).count("paper") == 1 for run in planned)
    assert all(not set(LABEL_FACTORS) & set(run.params) for run in planned)


def test_the_power_cap_example_sets_the_limit_and_never_passes_it_to_the_workload():
    study = load_study(EXAMPLES / "power_cap.toml")
    planned = plan(study)
    assert len(planned) == 9
    assert sorted({run.factors["power_limit_w"] for run in planned}) == [250, 400, 550]
    assert all("power_limit_w" not in " ".join(argv(study, run)) for run in planned)


def test_paper_block2_levels():
    study = load_study(EXAMPLES / "paper_block2.toml")
    assert study.factors["batch_size"] == [32, 64, 256]
    assert study.factors["input_size"] == [75, 128, 224]
    assert study.factors["ram_gb"] == [32, 16, 8, 24]
    assert sorted(study.factors["environment"]) == ["cloud", "local_ml"]
    assert study.fixed["arch"] == "inception_v3"


def test_paper_block1_levels():
    study = load_study(EXAMPLES / "paper_block1.toml")
    assert study.factors["arch"] == [
        "mobilenet_v2",
        "nasnet_mobile",
        "resnet50",
        "xception",
        "vgg16",
    ]
    assert study.factors["environment"] == ["local_n", "local_ml", "cloud"]
    cloud = [c for c in study.combinations if c["environment"] == "cloud"]
    assert {c["ram_gb"] for c in cloud} == {16}


# -- design and plan -------------------------------------------------------------------------------


def test_full_factorial(tmp_path):
    study = study_from(tmp_path, TINY)
    assert study.factors == {"arch": ["mobilenet_v2", "nasnet_mobile"], "batch_size": [8, 16, 32]}
    assert study.combinations[:4] == [
        {"arch": "mobilenet_v2", "batch_size": 8},
        {"arch": "mobilenet_v2", "batch_size": 16},
        {"arch": "mobilenet_v2", "batch_size": 32},
        {"arch": "nasnet_mobile", "batch_size": 8},
    ]
    runs = plan(study)
    assert len(runs) == 2 * 3 * 3
    assert [run.position for run in runs] == list(range(18))


def test_defaults(tmp_path):
    study = study_from(tmp_path, "[factors]\narch = ['resnet50']\n", name="plain.toml")
    assert study.name == "plain"
    assert study.workload == BUILTIN
    assert study.command == ()
    assert study.repetitions == 30
    assert study.seed == 0
    assert study.warmup_s == 600
    assert study.cooldown_s == 300
    assert study.timeout_s is None
    assert study.order == "random"
    assert study.slurm["gpus_per_node"] == 1
    assert study.slurm["mem_gb"] is None


def test_explicit_combinations(tmp_path):
    study = study_from(
        tmp_path,
        """
[study]
repetitions = 2

[fixed]
epochs = [1, 2]

[[combinations]]
arch = "resnet50"
batch_size = 32
environment = "cloud"
ram_gb = 16

[[combinations]]
batch_size = 64
arch = "vgg16"
environment = "local_ml"
ram_gb = 32
""",
    )
    assert study.combinations == [
        {"arch": "resnet50", "batch_size": 32, "environment": "cloud", "ram_gb": 16},
        {"arch": "vgg16", "batch_size": 64, "environment": "local_ml", "ram_gb": 32},
    ]
    assert study.factors["arch"] == ["resnet50", "vgg16"]
    runs = plan(study)
    assert len(runs) == 4
    run = next(r for r in runs if r.combination == 1)
    assert run.factors == study.combinations[1]
    assert run.params == {"epochs": [1, 2], "batch_size": 64, "arch": "vgg16"}
    assert run.tags(study)["ram_gb"] == "32"
    assert run.tags(study)["environment"] == "local_ml"


def test_order_fixed_by_seed(tmp_path):
    first = plan(study_from(tmp_path, TINY))
    again = plan(study_from(tmp_path, TINY))
    other = plan(study_from(tmp_path, TINY.replace("seed = 7", "seed = 8")))
    keys = [run.key for run in first]
    assert keys == [run.key for run in again]
    assert keys != [run.key for run in other]
    assert sorted(keys) == sorted(run.key for run in other)
    assert keys != sorted(keys)  # shuffled


def test_sequential_order(tmp_path):
    study = study_from(tmp_path, TINY.replace("seed = 7", "seed = 7\norder = 'sequential'"))
    runs = plan(study)
    assert [(r.combination, r.repetition) for r in runs] == [
        (c, r) for c in range(6) for r in range(3)
    ]


def test_keys_stable_and_unique(tmp_path):
    study = study_from(tmp_path, TINY)
    runs = plan(study)
    keys = [run.key for run in runs]
    assert len(set(keys)) == len(keys)
    for run in runs:
        assert run.key == f"c{run.combination:03d}-r{run.repetition:02d}"
    # a new seed reorders the runs but keeps each run's key, combination and factors
    other = {r.key: r for r in plan(study_from(tmp_path, TINY.replace("seed = 7", "seed = 1")))}
    for run in runs:
        assert other[run.key].factors == run.factors


def test_seeds_distinct_and_stable(tmp_path):
    runs = plan(study_from(tmp_path, TINY))
    seeds = [run.seed for run in runs]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds)
    again = {run.key: run.seed for run in plan(study_from(tmp_path, TINY))}
    assert {run.key: run.seed for run in runs} == again
    # the order does not change a run's seed; the study's seed does
    sequential = plan(
        study_from(tmp_path, TINY.replace("seed = 7", "seed = 7\norder='sequential'"))
    )
    assert {r.key: r.seed for r in sequential} == again
    reseeded = plan(study_from(tmp_path, TINY.replace("seed = 7", "seed = 8")))
    assert {r.key: r.seed for r in reseeded} != again


def test_fixed_seed_overrides_derived_seeds(tmp_path):
    study = study_from(tmp_path, TINY.replace('weights = "none"', 'weights = "none"\nseed = 5'))
    runs = plan(study)
    assert {run.seed for run in runs} == {5}
    assert argv(study, runs[0]).count("--seed") == 1


def test_name_and_tags(tmp_path):
    study = study_from(tmp_path, TINY)
    run = next(r for r in plan(study) if r.key == "c001-r00")
    assert run.name(study) == "t/c001-r00 arch=mobilenet_v2 batch_size=16"
    tags = run.tags(study)
    assert tags == {
        "study": "t",
        "study_key": "c001-r00",
        "study_position": str(run.position),
        "repetition": "0",
        "seed": str(run.seed),
        "arch": "mobilenet_v2",
        "batch_size": "16",
    }


def test_argv_builtin(tmp_path):
    study = study_from(tmp_path, TINY)
    run = next(r for r in plan(study) if r.key == "c004-r02")
    assert argv(study, run) == [
        sys.executable,
        "-m",
        "joulecast.study.workloads",
        "--arch",
        "nasnet_mobile",
        "--dataset",
        "shapes",
        "--input-size",
        "32",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--weights",
        "none",
        "--seed",
        str(run.seed),
    ]


def test_split_is_a_study_parameter(tmp_path):
    study = study_from(
        tmp_path, TINY.replace("[factors]", '[factors]\nsplit = ["holdout", "paper"]')
    )
    runs = plan(study)
    assert {run.params["split"] for run in runs} == {"holdout", "paper"}
    run = next(r for r in runs if r.params["split"] == "paper")
    line = argv(study, run)
    assert line[line.index("--dataset") : line.index("--input-size")] == [
        "--dataset",
        "shapes",
        "--split",
        "paper",
    ]
    assert run.tags(study)["split"] == "paper"


def test_argv_parses_back_to_the_run(tmp_path):
    """The workload's own parser reads argv back to the run's settings."""
    import argparse

    from joulecast.study.workloads.train import add_arguments, config_from_args

    study = load_study(EXAMPLES / "paper_block1.toml")
    run = plan(study)[0]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(argv(study, run)[3:]))
    assert config.arch == run.params["arch"]
    assert config.epochs == (10, 190)
    assert config.dataset_path == "data/chesslive"
    assert config.split == "paper"
    assert config.seed == run.seed


def test_argv_command(tmp_path):
    study = study_from(
        tmp_path,
        """
[study]
workload = "command"
command = ["python", "train.py", "--lr", "{lr}", "--seed", "{seed}", "--env={environment}"]
repetitions = 1

[fixed]
epochs = 3

[factors]
lr = [0.1, 0.01]
environment = ["cloud"]
""",
    )
    runs = plan(study)
    run = next(r for r in runs if r.combination == 1)
    assert run.params == {"epochs": 3, "lr": 0.01}
    assert argv(study, run) == [
        "python",
        "train.py",
        "--lr",
        "0.01",
        "--seed",
        str(run.seed),
        "--env=cloud",
    ]


def test_to_dict_and_digest(tmp_path):
    study = study_from(tmp_path, TINY)
    data = study.to_dict()
    assert "path" not in data
    assert data["repetitions"] == 3
    assert data["factors"]["batch_size"] == [8, 16, 32]
    assert study.digest() == study_from(tmp_path, TINY, name="other.toml").digest()
    assert study.digest() != study_from(tmp_path, TINY.replace("= 3", "= 4")).digest()


def test_changes(tmp_path):
    old = study_from(tmp_path, TINY).to_dict()
    new = study_from(
        tmp_path,
        TINY.replace("[8, 16, 32]", "[8, 16, 64]").replace("repetitions = 3", "repetitions = 10"),
    ).to_dict()
    assert changes(old, old) == []
    lines = changes(old, new)
    assert "factors.batch_size: [8, 16, 32] -> [8, 16, 64]" in lines
    assert "repetitions: 3 -> 10" in lines
    assert "combinations[2].batch_size: 32 -> 64" in lines
    assert changes({"a": 1}, {"b": "x"}) == ['b: added "x"', "a: removed (was 1)"]


def test_yaml(tmp_path):
    pytest.importorskip("yaml")
    study = study_from(
        tmp_path,
        """
study:
  repetitions: 2
  warmup: 1m
fixed:
  epochs: [1]
factors:
  arch: [mobilenet_v2, resnet50]
""",
        name="s.yaml",
    )
    assert len(plan(study)) == 4
    assert study.warmup_s == 60


def test_yaml_without_pyyaml(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    refused(tmp_path, "study: {}\n", "pip install 'joulecast[yaml]'", name="s.yml")


def test_workload_parameters():
    names = workload_parameters()
    for name in ("arch", "dataset", "input_size", "batch_size", "epochs", "weights", "seed"):
        assert name in names
    assert names[-2:] == LABEL_FACTORS


def test_planned_run_is_frozen(tmp_path):
    run = plan(study_from(tmp_path, TINY))[0]
    assert isinstance(run, PlannedRun)
    with pytest.raises(AttributeError):
        run.seed = 1  # type: ignore[misc]


# -- validation ------------------------------------------------------------------------------------


def test_unknown_table(tmp_path):
    refused(tmp_path, TINY + "\n[extras]\nx = 1\n", "unknown table 'extras'", "study, fixed")


def test_unknown_study_key(tmp_path):
    refused(tmp_path, TINY.replace("seed = 7", "seed = 7\nrepeats = 3"), "study.repeats")


def test_unknown_slurm_key(tmp_path):
    refused(tmp_path, TINY + "\n[slurm]\nqueue = 'gpu'\n", "slurm.queue", "partition")


def test_not_toml(tmp_path):
    refused(tmp_path, "[study\n", "not valid TOML")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_study(tmp_path / "absent.toml")


def test_empty_factor(tmp_path):
    refused(tmp_path, TINY.replace("[8, 16, 32]", "[]"), "factors.batch_size", "empty")


def test_repeated_level(tmp_path):
    refused(tmp_path, TINY.replace("[8, 16, 32]", "[8, 8]"), "factors.batch_size", "twice")


def test_factor_also_fixed(tmp_path):
    refused(tmp_path, TINY.replace("input_size = 32", "batch_size = 4"), "factors.batch_size")


def test_factors_and_combinations(tmp_path):
    text = TINY + "\n[[combinations]]\narch = 'vgg16'\n"
    refused(tmp_path, text, "factors/combinations", "both")


def test_neither_factors_nor_combinations(tmp_path):
    refused(tmp_path, "[study]\nrepetitions = 1\n", "factors/combinations", "neither")


def test_combinations_with_differing_keys(tmp_path):
    text = (
        "[[combinations]]\narch = 'vgg16'\nbatch_size = 8\n\n[[combinations]]\narch = 'resnet50'\n"
    )
    refused(tmp_path, text, "combinations[1]", "missing batch_size")


def test_repeated_combination(tmp_path):
    text = "[[combinations]]\narch = 'vgg16'\n\n[[combinations]]\narch = 'vgg16'\n"
    refused(tmp_path, text, "combinations[1]", "repeats combinations[0]")


def test_combination_key_also_fixed(tmp_path):
    text = "[fixed]\narch = 'vgg16'\n\n[[combinations]]\narch = 'resnet50'\n"
    refused(tmp_path, text, "combinations[0].arch", "also in [fixed]")


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "'3'"])
def test_repetitions(tmp_path, value):
    refused(
        tmp_path, TINY.replace("repetitions = 3", f"repetitions = {value}"), "study.repetitions"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [("warmup", "-5"), ("cooldown", "'-5m'"), ("cooldown", "'soon'"), ("timeout", "0")],
)
def test_bad_durations(tmp_path, key, value):
    text = TINY.replace("seed = 7", f"seed = 7\n{key} = {value}").replace(f'{key} = "0s"\n', "")
    text = text.replace("cooldown = 0\n", "") if key == "cooldown" else text
    refused(tmp_path, text, f"study.{key}")


def test_durations(tmp_path):
    text = TINY.replace('warmup = "0s"', 'warmup = "1h30m"').replace(
        "cooldown = 0", "cooldown = 90\ntimeout = '2h'"
    )
    study = study_from(tmp_path, text)
    assert (study.warmup_s, study.cooldown_s, study.timeout_s) == (5400, 90, 7200)


def test_bad_order_and_workload(tmp_path):
    refused(tmp_path, TINY.replace("seed = 7", "seed = 7\norder = 'shuffled'"), "study.order")
    refused(tmp_path, TINY.replace("seed = 7", "seed = 7\nworkload = 'x'"), "study.workload")


def test_unknown_parameter(tmp_path):
    message = refused(
        tmp_path, TINY.replace("[factors]", "[factors]\nlr = [0.1]"), "factors.lr", "unknown"
    )
    for name in ("arch", "batch_size", "epochs", "environment", "ram_gb"):
        assert name in message


def test_unknown_fixed_parameter(tmp_path):
    refused(tmp_path, TINY.replace("[fixed]", "[fixed]\noptimizer = 'sgd'"), "fixed.optimizer")


@pytest.mark.parametrize(
    ("before", "after", "field"),
    [
        ("input_size = 32", "input_size = '32'", "fixed.input_size"),
        ("[8, 16, 32]", "[8, 16.5]", "factors.batch_size[1]"),
        ('weights = "none"', 'weights = "random"', "fixed.weights"),
        ('weights = "none"', 'weights = "none"\nsplit = "Paper"', "fixed.split"),
        ('weights = "none"', 'weights = "none"\nsplit = ["paper"]', "fixed.split"),
        ("epochs = [1]", "epochs = ['one']", "fixed.epochs"),
    ],
)
def test_bad_value_types(tmp_path, before, after, field):
    refused(tmp_path, TINY.replace(before, after), field)


def test_unknown_architecture(tmp_path):
    message = refused(
        tmp_path,
        TINY.replace('"nasnet_mobile"]', '"alexnet"]'),
        "combination 3 (arch=alexnet, batch_size=8)",
        "unknown architecture 'alexnet'",
    )
    assert "mobilenet_v2" in message


def test_unknown_dataset(tmp_path):
    refused(
        tmp_path,
        TINY.replace('dataset = "shapes"', 'dataset = "cifar"'),
        "combination 0 (arch=mobilenet_v2, batch_size=8)",
        "unknown dataset 'cifar'",
        "stanford_dogs",
    )


def test_input_size_too_small(tmp_path):
    text = TINY.replace("input_size = 32\n", "").replace(
        "[factors]", "[factors]\ninput_size = [32, 128]"
    )
    text = text.replace('"nasnet_mobile"]', '"xception"]')
    refused(
        tmp_path,
        text,
        "combination 3 (input_size=32, arch=xception, batch_size=8)",
        "input size 32 is too small for xception: expected at least 71",
        name="tiny.toml",
    )


def test_non_positive_batch_size(tmp_path):
    refused(
        tmp_path,
        TINY.replace("[8, 16, 32]", "[8, 0]"),
        "combination 1 (arch=mobilenet_v2, batch_size=0)",
        "batch size 0",
    )


@pytest.mark.parametrize("epochs", ["[0]", "[1, -1]", "[1, 2, 3]"])
def test_bad_epochs(tmp_path, epochs):
    refused(tmp_path, TINY.replace("epochs = [1]", f"epochs = {epochs}"), "combination 0", "epochs")


def test_folder_needs_a_path(tmp_path):
    refused(
        tmp_path, TINY.replace('dataset = "shapes"', 'dataset = "folder"'), "combination 0", "path"
    )


def test_bad_ram(tmp_path):
    text = TINY.replace("[factors]", "[factors]\nram_gb = [16, -8]")
    refused(tmp_path, text, "ram_gb -8")


def test_command_placeholders(tmp_path):
    text = """
[study]
workload = "command"
command = ["python", "train.py", "--lr", "{lr}", "--wd", "{wd}"]

[factors]
lr = [0.1]
"""
    refused(tmp_path, text, "study.command[5]", "{wd}", "lr, seed")


def test_command_needs_a_list(tmp_path):
    text = '[study]\nworkload = "command"\ncommand = "python train.py"\n\n[factors]\nx = [1]\n'
    refused(tmp_path, text, "study.command", "list of strings")


def test_command_for_builtin(tmp_path):
    refused(tmp_path, TINY.replace("seed = 7", "seed = 7\ncommand = ['x']"), "study.command")


def test_command_any_names(tmp_path):
    text = """
[study]
workload = "command"
command = ["run", "{anything}", "{seed}"]
repetitions = 1

[factors]
anything = ["a", "b"]
"""
    study = study_from(tmp_path, text)
    assert [argv(study, r)[1] for r in plan(study) if r.combination == 0] == ["a"]


def test_slurm(tmp_path):
    study = study_from(
        tmp_path,
        TINY.replace("[fixed]", "[fixed]\nram_gb = 16")
        + "\n[slurm]\npartition = 'gpu'\ntime = '2h'\ncpus_per_task = 4\nextra = { qos = 'x' }\n",
    )
    assert study.slurm == {
        "partition": "gpu",
        "account": None,
        "time_min": 120.0,
        "gpus_per_node": 1,
        "cpus_per_task": 4,
        "mem_gb": 16,
        "extra": {"qos": "x"},
    }
    run = plan(study)[0]
    assert "ram_gb" not in run.params
    assert "--ram-gb" not in argv(study, run)
    refused(tmp_path, TINY + "\n[slurm]\ntime = '1h'\ntime_min = 60\n", "slurm.time")


def test_job_size_fixed_in_slurm_or_fixed_and_overridden_by_a_factor(tmp_path):
    study = study_from(
        tmp_path,
        TINY.replace("[factors]", "[factors]\nnodes = [1, 2]")
        + "\n[slurm]\nnodes = 3\ngpus_per_node = 4\n",
    )
    assert study.slurm["nodes"] == 3 and study.slurm["gpus_per_node"] == 4
    sizes = {run.factors["nodes"]: run.job_size(study) for run in plan(study)}
    assert sizes == {1: (1, 4), 2: (2, 4)}
    run = plan(study)[0]
    assert "nodes" not in run.params
    assert "--nodes" not in argv(study, run)
    # a run's gpus_per_node factor overrides [slurm]; [fixed] gives the job's size too
    study = study_from(
        tmp_path,
        TINY.replace("[factors]", "[factors]\ngpus_per_node = [0, 2]").replace(
            "[fixed]", "[fixed]\nnodes = 2"
        ),
    )
    assert {run.job_size(study) for run in plan(study)} == {(2, 0), (2, 2)}
    # without any: one node, one GPU, and no nodes key in [slurm] (an unchanged study digest)
    study = study_from(tmp_path, TINY)
    assert "nodes" not in study.slurm
    assert {run.job_size(study) for run in plan(study)} == {(1, 1)}


@pytest.mark.parametrize(
    ("where", "text", "fragments"),
    [
        ("factor", "[factors]\nnodes = [1, 0]", ("factors.nodes[1]: 0", "integer >= 1")),
        ("factor", "[factors]\nnodes = [1.5]", ("factors.nodes[0]: 1.5", "integer >= 1")),
        ("factor", "[factors]\ngpus_per_node = [-1]", ("factors.gpus_per_node[0]: -1", ">= 0")),
        ("fixed", "[fixed]\nnodes = true", ("fixed.nodes: True", "integer >= 1")),
        ("slurm", "[slurm]\nnodes = '2'", ("slurm.nodes: '2'", "integer >= 1")),
        ("slurm", "[slurm]\nnodes = 0", ("slurm.nodes: 0", "integer >= 1")),
        ("both", "[slurm]\nnodes = 2", ("slurm.nodes: also in [fixed]",)),
    ],
)
def test_job_size_refused(tmp_path, where, text, fragments):
    if where == "slurm":
        body = TINY + "\n" + text + "\n"
    elif where == "both":
        body = TINY.replace("[fixed]", "[fixed]\nnodes = 2") + "\n" + text + "\n"
    else:
        body = TINY.replace(text.split("\n")[0], text)
    refused(tmp_path, body, *fragments)


def test_job_size_in_explicit_combinations(tmp_path):
    text = """
[study]
workload = "command"
command = ["torchrun", "--nnodes", "{nodes}", "train.py"]

[[combinations]]
nodes = 2

[[combinations]]
nodes = "two"
"""
    refused(tmp_path, text, "combinations[1].nodes: 'two'", "integer >= 1")
    study = study_from(tmp_path, text.replace('"two"', "1"))
    assert [argv(study, r)[2] for r in plan(study) if r.repetition == 0] == ["2", "1"]


def test_environment_is_a_name(tmp_path):
    refused(tmp_path, TINY.replace("[factors]", "[factors]\nenvironment = [1]"), "environment 1")


def test_max_attempts_is_read_but_no_part_of_the_plan(tmp_path):
    default = study_from(tmp_path, TINY)
    assert default.max_attempts == 3
    five = study_from(tmp_path, TINY.replace("seed = 7", "seed = 7\nmax_attempts = 5"))
    assert five.max_attempts == 5
    assert "max_attempts" not in five.to_dict() and five.digest() == default.digest()
    for value in ("0", "101", "'3'", "true"):
        text = TINY.replace("seed = 7", f"seed = 7\nmax_attempts = {value}")
        refused(tmp_path, text, "study.max_attempts", "integer >= 1, at most 100")
