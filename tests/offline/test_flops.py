from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # as joulecast does; keras defaults to TensorFlow
torch = pytest.importorskip("torch")
pytest.importorskip("keras")

from joulecast.cli import main  # noqa: E402
from joulecast.errors import InputError  # noqa: E402
from joulecast.offline import (  # noqa: E402
    ARCHITECTURES,
    architecture_flops,
    count_flops,
    min_input_size,
)
from joulecast.offline.flops import TABLE2_GFLOPS  # noqa: E402

# The paper's Table 2 at 128x128 (VGG16: 10.03, the study's own logged value; 10.53 was printed).
TABLE2 = {
    "mobilenet_v2": 0.20,
    "nasnet_mobile": 0.37,
    "resnet50": 2.53,
    "xception": 2.96,
    "vgg16": 10.03,
    "inception_v3": 1.50,
}


def test_linear_flops_are_two_per_multiply_accumulate():
    result = count_flops(torch.nn.Linear(10, 20), (10,))
    assert result.gflops * 1e9 == pytest.approx(2 * 10 * 20)
    assert result.params == 10 * 20 + 20
    assert result.model == "Linear"


def test_conv_flops_by_hand():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    result = count_flops(model, (3, 16, 16), name="conv")
    macs = 8 * 16 * 16 * 3 * 3 * 3  # outputs x kernel volume
    assert result.gflops * 1e9 == pytest.approx(2 * macs)
    assert result.input_size == 16
    assert result.model == "conv"


def test_keras_model_is_counted_on_the_torch_backend():
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    result = count_flops(model, (6,))
    assert result.gflops * 1e9 == pytest.approx(2 * (6 * 4 + 4 * 2))
    assert result.params == 6 * 4 + 4 + 4 * 2 + 2


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(TABLE2))
def test_table2_within_5_percent(arch):
    result = architecture_flops(arch, 128)
    assert result.gflops == pytest.approx(TABLE2[arch], rel=0.05), result
    assert result.input_size == 128 and result.params > 1_000_000
    assert TABLE2_GFLOPS[arch] == TABLE2[arch]


def test_head_is_counted():
    small = architecture_flops("vgg16", 32, classes=2)
    large = architecture_flops("vgg16", 32, classes=1002)
    # GlobalAveragePooling2D then Dense(classes) over VGG16's 512 features.
    assert (large.gflops - small.gflops) * 1e9 == pytest.approx(2 * 512 * 1000)
    assert large.params - small.params == 512 * 1000 + 1000


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(
        InputError,
        match="unknown architecture 'vgg19': expected one of mobilenet_v2, nasnet_mobile",
    ):
        architecture_flops("vgg19")


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_input_below_the_minimum_says_the_minimum(arch):
    minimum = min_input_size(arch)
    with pytest.raises(InputError, match=f"too small for {arch}: expected at least {minimum}"):
        architecture_flops(arch, minimum - 1)


def test_minimums():
    assert {a: min_input_size(a) for a in ("mobilenet_v2", "xception", "inception_v3")} == {
        "mobilenet_v2": 32,
        "xception": 71,
        "inception_v3": 75,
    }


def test_not_a_module_and_bad_shape():
    with pytest.raises(InputError, match=r"not a torch nn\.Module"):
        count_flops(object(), (3,))
    with pytest.raises(InputError, match="expected positive sizes"):
        count_flops(torch.nn.Linear(2, 2), (0,))


def test_missing_keras_names_the_extra(monkeypatch):
    from joulecast.offline.flops import import_keras

    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(InputError, match=r"pip install 'joulecast\[keras\]'"):
        import_keras()


def test_cli_json(capsys):
    assert main(["flops", "mobilenet_v2", "--input-size", "32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "mobilenet_v2" and data["input_size"] == 32
    assert 0 < data["gflops"] < 0.1 and data["params"] > 0


def test_cli_text_and_errors(capsys):
    assert main(["flops", "resnet50", "--input-size", "32"]) == 0
    assert "resnet50 at 32x32:" in capsys.readouterr().out
    assert main(["flops", "lenet"]) == 2
    assert "unknown architecture 'lenet'" in capsys.readouterr().err
    assert main(["flops", "inception_v3", "--input-size", "74"]) == 2
    assert "expected at least 75" in capsys.readouterr().err


def test_imports_are_lazy_and_need_no_tensorflow():
    code = (
        "import sys, joulecast.offline, joulecast.study.workloads, joulecast.cli\n"
        "assert 'keras' not in sys.modules and 'torch' not in sys.modules, sys.modules.keys()\n"
        "import os; os.environ.pop('KERAS_BACKEND', None)\n"
        "from joulecast.offline.flops import import_keras\n"
        "assert import_keras().backend.backend() == 'torch'\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_known_gflops_from_the_shipped_table():
    from joulecast.offline.flops import TABLE2_GFLOPS, known_gflops

    for name, table2 in TABLE2_GFLOPS.items():
        value, how = known_gflops(name, 128)
        assert value == pytest.approx(table2, rel=0.03) and how == "counted at 128x128 px"
    between, how = known_gflops("resnet50", 140)
    assert known_gflops("resnet50", 128)[0] < between < known_gflops("resnet50", 160)[0]
    assert how.startswith("interpolated")
    big, how = known_gflops("vgg16", 598)  # twice 299: four times the area
    assert big == pytest.approx(4 * known_gflops("vgg16", 299)[0]) and how.startswith("scaled")
    with pytest.raises(InputError, match="too small for xception"):
        known_gflops("xception", 64)
    with pytest.raises(InputError, match="unknown architecture"):
        known_gflops("alexnet", 128)
