"""The GPU catalogue: shipped rows, lookup rules and user override files."""

from __future__ import annotations

import csv
import io
import os
from importlib import resources

import pytest

from joulecast.errors import InputError
from joulecast.inputs import GPUS_ENV
from joulecast.offline import catalogue as cat
from joulecast.offline.catalogue import Catalogue, GpuSpec, lookup, normalise


@pytest.fixture(scope="module")
def shipped() -> Catalogue:
    return Catalogue.load()


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(GPUS_ENV, raising=False)
    cat._cached.cache_clear()
    yield
    cat._cached.cache_clear()


def _shipped_rows() -> list[dict[str, str]]:
    text = resources.files("joulecast.offline").joinpath("gpus.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


# --- the shipped table ---------------------------------------------------------------------


def test_shipped_file_is_package_data():
    assert resources.files("joulecast.offline").joinpath("gpus.csv").is_file()


def test_at_least_forty_rows(shipped):
    assert len(shipped) >= 40
    assert len(list(shipped)) == len(shipped)
    assert all(isinstance(s, GpuSpec) for s in shipped)


def test_every_row_has_a_source_and_positive_numbers():
    for row in _shipped_rows():
        assert row["source"].strip(), row["name"]
        assert int(row["cuda_cores"]) > 0
        assert float(row["memory_gb"]) > 0
        assert float(row["tdp_w"]) > 0


def test_unsourced_values_are_marked_in_notes():
    notes = {r["name"]: r["notes"] for r in _shipped_rows()}
    assert "n/s" in notes["GeForce RTX 4070"]
    assert "n/s" in notes["B200"]


def test_no_name_or_alias_maps_to_two_rows():
    owner: dict[str, str] = {}
    names = [r["name"] for r in _shipped_rows()]
    assert len(names) == len(set(names))
    for row in _shipped_rows():
        labels = [row["name"], *[a for a in row["aliases"].split(";") if a.strip()]]
        for label in labels:
            key = normalise(label)
            assert owner.setdefault(key, row["name"]) == row["name"], (label, owner[key])


@pytest.mark.parametrize(
    ("name", "arch", "cores", "memory_gb", "tdp_w"),
    [
        ("GeForce RTX 3090", "Ampere", 10496, 24, 350),
        ("GeForce RTX 3070", "Ampere", 5888, 8, 220),
        ("GeForce GTX 750 Ti", "Maxwell", 640, 2, 60),
    ],
)
def test_paper_gpus_exactly_as_the_paper_used_them(shipped, name, arch, cores, memory_gb, tdp_w):
    spec = shipped.lookup(name)
    assert spec.name == name
    assert (spec.architecture, spec.cuda_cores, spec.memory_gb, spec.tdp_w) == (
        arch,
        cores,
        memory_gb,
        tdp_w,
    )


def test_tdp_kept_per_form_factor(shipped):
    # NVIDIA: V100 PCIe 250 W, SXM2 300 W (MLCO2 swaps them).
    assert shipped.lookup("Tesla V100-PCIE-16GB").tdp_w == 250
    assert shipped.lookup("Tesla V100-SXM2-16GB").tdp_w == 300
    assert shipped.lookup("NVIDIA H100 PCIe").tdp_w == 350
    assert shipped.lookup("NVIDIA H100 80GB HBM3").tdp_w == 700
    assert shipped.lookup("NVIDIA H100 NVL").form_factor == "NVL"


def test_to_frame(shipped):
    frame = shipped.to_frame()
    assert list(frame.columns) == list(cat.COLUMNS)
    assert len(frame) == len(shipped)
    assert frame["name"].is_unique
    assert (frame["tdp_w"] > 0).all()


# --- lookup ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["NVIDIA GeForce RTX 3090", "rtx3090", "RTX 3090", "geforce rtx 3090", "3090", "RTX_3090"],
)
def test_lookup_rtx_3090_spellings(shipped, query):
    assert shipped.lookup(query).name == "GeForce RTX 3090"


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM5 80GB"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("H100", "H100 SXM5 80GB"),
        ("Tesla V100-SXM2-16GB", "Tesla V100 SXM2 16GB"),
        ("Tesla V100-PCIE-32GB", "Tesla V100 PCIe 32GB"),
        ("V100", "Tesla V100 SXM2 16GB"),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100 SXM4 40GB"),
        ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
        ("A100", "A100 SXM4 40GB"),
        ("Tesla T4", "Tesla T4"),
        ("T4", "Tesla T4"),
        ("NVIDIA RTX A6000", "RTX A6000"),
        ("Quadro RTX 8000", "Quadro RTX 8000"),
        ("TITAN X (Pascal)", "TITAN X (Pascal)"),
        ("NVIDIA GeForce GTX 750 Ti", "GeForce GTX 750 Ti"),
        ("GeForce RTX 3060 12 GB", "GeForce RTX 3060"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA B200", "B200"),
    ],
)
def test_lookup_nvml_and_short_names(shipped, query, name):
    assert shipped.lookup(query).name == name


def test_memory_suffix_resolves_by_size_when_not_an_alias(shipped):
    # "A100 PCIe 40 GB" is no listed alias: rule 3 splits the size off and matches memory_gb.
    assert shipped.lookup("NVIDIA A100 PCIe 40 GB").name == "A100 PCIe 40GB"
    assert shipped.lookup("NVIDIA A100 SXM4 80GB HBM2e").name == "A100 SXM4 80GB"


def test_unknown_name_lists_close_matches(shipped):
    with pytest.raises(InputError, match=r"unknown GPU 'RTX 3095': closest matches: ") as info:
        shipped.lookup("RTX 3095")
    assert "GeForce RTX 3090" in str(info.value)


def test_ambiguous_short_name_lists_candidates(shipped):
    with pytest.raises(InputError, match="ambiguous GPU 'A100 PCIe'") as info:
        shipped.lookup("A100 PCIe")
    assert "A100 PCIe 40GB" in str(info.value) and "A100 PCIe 80GB" in str(info.value)
    with pytest.raises(InputError, match="ambiguous GPU 'TITAN X'"):
        shipped.lookup("TITAN X")


def test_wrong_memory_size_is_an_error_not_a_guess(shipped):
    with pytest.raises(InputError, match="no 8 GB variant; closest matches: GeForce RTX 3060"):
        shipped.lookup("GeForce RTX 3060 8GB")


def test_no_match_at_all(shipped):
    with pytest.raises(InputError, match="no close match"):
        shipped.lookup("zzzz")
    with pytest.raises(InputError, match="non-empty"):
        shipped.lookup("  ")


def test_module_lookup_uses_cached_default():
    assert lookup("rtx 3070").tdp_w == 220
    assert cat._cached.cache_info().currsize == 1
    lookup("3090")
    assert cat._cached.cache_info().hits >= 1


# --- user files -----------------------------------------------------------------------------

HEADER = "name,aliases,architecture,cuda_cores,memory_gb,tdp_w,form_factor,source\n"


def test_user_file_overrides_tdp_and_adds_a_gpu(tmp_path):
    path = tmp_path / "gpus.csv"
    path.write_text(
        HEADER
        + "RTX 3090,my3090,,,,370,,measured default limit\n"
        + "Lab Card X,LCX;NVIDIA Lab Card X,Hopper,1000,12,123,PCIe,\n"
    )
    catalogue = Catalogue.load(path)
    spec = catalogue.lookup("NVIDIA GeForce RTX 3090")
    assert spec.name == "GeForce RTX 3090"
    assert (spec.tdp_w, spec.cuda_cores, spec.memory_gb) == (370, 10496, 24)
    assert spec.source == "measured default limit"
    assert catalogue.lookup("my3090") == spec
    new = catalogue.lookup("lcx")
    assert (new.name, new.cuda_cores, new.tdp_w) == ("Lab Card X", 1000, 123)
    assert new.source.startswith("user file ") and "line 3" in new.source
    assert len(catalogue) == len(Catalogue.load()) + 1
    assert lookup("Lab Card X", extra=path).tdp_w == 123


def test_user_alias_takes_a_shipped_alias_over(tmp_path):
    path = tmp_path / "gpus.csv"
    path.write_text(HEADER + "Our A100,A100,Ampere,6912,80,300,PCIe,inventory\n")
    catalogue = Catalogue.load(path)
    assert catalogue.lookup("A100").name == "Our A100"
    assert catalogue.lookup("NVIDIA A100-SXM4-40GB").name == "A100 SXM4 40GB"


def test_environment_variable_is_read(tmp_path, monkeypatch):
    path = tmp_path / "env.csv"
    path.write_text(HEADER + "Env GPU,,Ampere,10,1,5,PCIe,\n")
    monkeypatch.setenv(GPUS_ENV, str(path))
    assert Catalogue.load().lookup("env gpu").tdp_w == 5
    assert lookup("Env GPU").cuda_cores == 10


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "name,architecture,cuda_cores,memory_gb,form_factor\nX,Ampere,1,1,PCIe\n",
            r"missing column\(s\) tdp_w",
        ),
        (HEADER + "X,,Ampere,many,8,100,PCIe,\n", r"line 2: field 'cuda_cores' is 'many'"),
        (HEADER + "X,,Ampere,100,8,-5,PCIe,\n", r"line 2: field 'tdp_w' is '-5'"),
        (HEADER + "X,,Ampere,100,0,50,PCIe,\n", r"line 2: field 'memory_gb' is '0'"),
        (HEADER + "X,,Ampere,10.5,8,50,PCIe,\n", r"field 'cuda_cores' is '10.5'"),
        (HEADER + "X,,Ampere,100,8,nan,PCIe,\n", r"field 'tdp_w' is 'nan'"),
        (HEADER + "New GPU,,Ampere,100,8,,PCIe,\n", r"line 2: field 'tdp_w' is empty"),
        (
            HEADER + "X,,Ampere,100,8,1e300,PCIe,\n",
            r"line 2: field 'tdp_w' is '1e300': expected a number above 0 to 5000",
        ),
        (
            HEADER + "X,,Ampere,99999999999999999999,8,100,PCIe,\n",
            r"field 'cuda_cores' is '9+': expected a whole number from 1 to 1000000",
        ),
        (HEADER + "X,,Ampere,100,8,inf,PCIe,\n", r"line 2: field 'tdp_w' is 'inf'"),
        (HEADER + "X,,Ampere,²,8,100,PCIe,\n", r"line 2: field 'cuda_cores' is '²'"),
        (HEADER + "X,,Ampere,1e3,8,100,PCIe,\n", r"line 2: field 'cuda_cores' is '1e3'"),
        (
            HEADER + 'X,,Ampere,100,8,"' + "9" * 200_000 + '",PCIe,\n',
            r"line 2: field larger than field limit",
        ),
        (HEADER + ",,Ampere,100,8,50,PCIe,\n", r"line 2: field 'name' is empty"),
        (
            HEADER + "A,dup,Ampere,1,1,1,PCIe,\nB,dup,Ampere,1,1,1,PCIe,\n",
            r"line 3: 'dup' is already a name or alias of 'A'",
        ),
        (
            HEADER + "Mine,GeForce RTX 3090,Ampere,1,1,1,PCIe,\n",
            r"alias 'GeForce RTX 3090' is the name of the GPU",
        ),
    ],
)
def test_bad_user_file(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(InputError, match=message) as info:
        Catalogue.load(path)
    assert str(path) in str(info.value)


def test_missing_user_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.csv: no such file \(expected a GPU catalogue"):
        Catalogue.load(tmp_path / "nope.csv")


def test_a_user_file_that_is_no_text_file_is_one_line(tmp_path, monkeypatch, capsys):
    from joulecast.cli import main

    def estimate(path):
        argv = ["estimate", "--gpus", str(path), "--gpu", "RTX 3090", "--gflops", "2.5"]
        argv += ["--input-size", "128", "--batch-size", "64", "--train-samples", "1000"]
        assert main([*argv, "--val-samples", "100", "--epochs", "5", "--json"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and str(path) in err
        return err

    assert "is a folder" in estimate(tmp_path)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + b"Caf\xe9,,Ampere,1,1,1,PCIe,\n")
    assert f"not UTF-8 text (byte {len(HEADER) + 3})" in estimate(latin)
    monkeypatch.setattr(cat, "MAX_USER_BYTES", 100)
    big = tmp_path / "big.csv"
    big.write_text(HEADER + "X,,Ampere,1,1,1,PCIe,\n" * 10)
    assert "more than 100 bytes" in estimate(big)
    if os.path.exists("/dev/zero"):
        assert "more than 100 bytes" in estimate("/dev/zero")
