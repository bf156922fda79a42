from __future__ import annotations

import numpy as np
import pytest

from joulecast.errors import InputError
from joulecast.study.workloads.datasets import (
    DATASETS,
    PAPER_TEST_FRACTION,
    SHAPES,
    TFDS_SIZES,
    _array_parts,
    _fractions,
    _largest_remainder,
    _tfds_parts,
    expected_sizes,
    load_dataset,
    load_image_folder,
    make_digits,
    make_shapes,
    split,
)


def test_shapes_are_deterministic_by_seed():
    x1, y1 = make_shapes(40, 24, seed=3)
    x2, y2 = make_shapes(40, 24, seed=3)
    x3, _ = make_shapes(40, 24, seed=4)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == (40, 24, 24, 3) and x1.dtype == np.uint8
    assert sorted(np.unique(y1)) == list(range(len(SHAPES)))
    assert np.bincount(y1).tolist() == [10, 10, 10, 10]


def test_shapes_any_size():
    x, _ = make_shapes(4, 200, seed=0)
    assert x.shape == (4, 200, 200, 3)
    with pytest.raises(InputError, match="expected at least 8"):
        make_shapes(4, 4)


def test_digits_upscaled_to_three_channels():
    pytest.importorskip("sklearn")
    x, y = make_digits(32)
    assert x.shape == (1797, 32, 32, 3) and x.dtype == np.uint8
    assert np.array_equal(x[..., 0], x[..., 2])
    assert sorted(np.unique(y)) == list(range(10))
    assert x.max() == 255 and x.min() == 0
    # nearest-neighbour: each 8x8 pixel becomes a 4x4 block
    assert np.all(x[:, :4, :4, 0] == x[:, :1, :1, 0])


def test_load_dataset_splits_stratified():
    data = load_dataset("shapes", 16, samples=200, seed=1)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 200
    assert len(data.y_test) == 40 and len(data.y_val) == 32
    assert np.bincount(data.y_test).tolist() == [10, 10, 10, 10]
    assert data.classes == 4 and data.input_size == 16 and data.class_names == SHAPES


def test_split_checks_fractions():
    x, y = np.zeros((10, 1)), np.arange(10) % 2
    with pytest.raises(InputError, match="expected below 1"):
        split(x, y, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(InputError, match=r"test_fraction 1\.5"):
        split(x, y, test_fraction=1.5)


@pytest.mark.parametrize(
    ("counts", "fraction", "shares"),
    [
        ([17_005, 17_005], 0.3, [5_102, 5_101]),  # 10,203 in all, as the paper's Chesslive
        ([1, 2, 7], 0.3, [0, 1, 2]),  # 3 in all; the largest remainder (0.6) takes the third
        ([3, 3, 3], 0.5, [2, 1, 1]),  # equal remainders: the lower label first
        ([5, 8], 0.0, [0, 0]),
        ([40, 60], 0.25, [10, 15]),  # exact shares are kept
    ],
)
def test_largest_remainder_rounds_the_total_first(counts, fraction, shares):
    got = _largest_remainder(np.array(counts), fraction)
    assert got.tolist() == shares
    assert got.sum() == round(sum(counts) * fraction)


def test_tfds_parts_keep_the_test_split_and_hold_out_validation():
    y_train = np.arange(3_060) % 102
    y_test = np.arange(6_084) % 102
    x_train, x_test = np.arange(3_060), np.arange(3_060, 9_144)
    parts = _tfds_parts(x_train, y_train, x_test, y_test, paper=False, val_fraction=0.15, seed=0)
    x_tr, y_tr, x_val, y_val, x_te, y_te = parts
    # 30 images per class: round(30 x 0.15) = 4 for validation, class by class
    assert (len(x_tr), len(x_val), len(x_te)) == (2_652, 408, 6_084)
    assert x_te is x_test and y_te is y_test
    assert sorted(np.concatenate([x_tr, x_val]).tolist()) == x_train.tolist()
    assert np.array_equal(y_tr, y_train[x_tr]) and np.array_equal(y_val, y_train[x_val])


# -- the paper's split: sizes of section 3.4, from arrays (nothing downloaded) ----------------------


@pytest.mark.parametrize(
    ("train", "test"),
    [(3_060, 6_084), (12_000, 8_580)],  # Caltech101 (section 3.4.1), Stanford Dogs (3.4.2)
    ids=["caltech101", "stanford_dogs"],
)
def test_paper_split_of_a_tfds_dataset_trains_on_all_and_validates_on_test(train, test):
    x_train, x_test = np.arange(train), np.arange(train, train + test)
    y_train, y_test = x_train % 102, x_test % 102
    val, _ = _fractions("paper", None, None)
    parts = _tfds_parts(x_train, y_train, x_test, y_test, paper=True, val_fraction=val, seed=0)
    x_tr, y_tr, x_val, y_val, x_te, y_te = parts
    assert (len(x_tr), len(x_val), len(x_te)) == (train, test, test)
    assert x_tr is x_train and y_tr is y_train
    assert x_val is x_test and y_val is y_test and x_te is x_test and y_te is y_test


def test_paper_split_of_chesslive_is_23807_and_10203():
    # section 3.4.3: 34,010 images, half of each class, 70/30 into 23,807 and 10,203
    y = np.repeat(np.array([0, 1], dtype=np.int64), 17_005)
    x = np.arange(len(y))
    val, test = _fractions("paper", None, None)
    assert (val, test) == (0.0, PAPER_TEST_FRACTION)
    parts = _array_parts(x, y, paper=True, val_fraction=val, test_fraction=test, seed=0)
    x_tr, y_tr, x_val, y_val, x_te, y_te = parts
    assert (len(x_tr), len(x_val), len(x_te)) == (23_807, 10_203, 10_203)
    assert x_val is x_te and y_val is y_te
    assert sorted(np.concatenate([x_tr, x_te]).tolist()) == x.tolist()
    assert np.array_equal(y_tr, y[x_tr]) and np.array_equal(y_te, y[x_te])
    assert sorted(np.bincount(y_te).tolist()) == [5_101, 5_102]
    # rounding each class on its own (the holdout split) would give 2 x 5,102 = 10,204
    assert len(split(x, y, val_fraction=0.0, test_fraction=0.3)[5]) == 10_204


def test_load_dataset_paper_split():
    data = load_dataset("shapes", 16, samples=200, seed=1, split="paper")
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (140, 60, 60)
    assert data.x_val is data.x_test and data.y_val is data.y_test
    assert np.bincount(data.y_test).tolist() == [15, 15, 15, 15]
    same = load_dataset("shapes", 16, samples=200, seed=1, split="paper")
    assert np.array_equal(same.x_train, data.x_train)
    other = load_dataset("shapes", 16, samples=200, seed=1, split="paper", test_fraction=0.25)
    assert (len(other.y_train), len(other.y_test)) == (150, 50)


def test_load_dataset_holdout_is_the_default():
    default = load_dataset("shapes", 16, samples=200, seed=1)
    holdout = load_dataset("shapes", 16, samples=200, seed=1, split="holdout")
    for a, b in zip(
        (default.x_train, default.x_val, default.x_test),
        (holdout.x_train, holdout.x_val, holdout.x_test),
        strict=True,
    ):
        assert np.array_equal(a, b)
    assert default.x_val is not default.x_test


@pytest.mark.parametrize(
    ("kwargs", "message", "early"),
    [
        ({"split": "Paper"}, "unknown split 'Paper': expected one of holdout, paper", True),
        (
            {"split": "paper", "val_fraction": 0.1},
            "val_fraction 0.1: the paper split validates on the test split",
            True,
        ),
        ({"split": "paper", "test_fraction": 1.5}, r"test_fraction 1\.5: expected a fract", False),
        ({"split": "holdout", "val_fraction": -0.1}, r"val_fraction -0\.1: expected a fra", False),
    ],
)
def test_load_dataset_refuses_bad_splits(kwargs, message, early):
    with pytest.raises(InputError, match=message):
        load_dataset("shapes", 16, samples=20, **kwargs)
    if early:  # refused before tensorflow-datasets is looked for or anything downloaded
        with pytest.raises(InputError, match=message):
            load_dataset("caltech101", 16, **kwargs)


@pytest.mark.parametrize("split_name", ["holdout", "paper"])
@pytest.mark.parametrize("samples", [1, 7, 80, 201, 400])
def test_expected_sizes_are_those_of_the_loaded_shapes(split_name, samples):
    data = load_dataset("shapes", 8, samples=samples, split=split_name)
    sizes = expected_sizes("shapes", split=split_name, samples=samples)
    assert sizes == (len(data.y_train), len(data.y_val))


def test_expected_sizes_of_digits_without_scikit_learn():
    pytest.importorskip("sklearn")
    for split_name in ("holdout", "paper"):
        data = load_dataset("digits", 8, split=split_name)
        assert expected_sizes("digits", split=split_name) == (len(data.y_train), len(data.y_val))
    assert expected_sizes("digits") == (1_169, 269)


def test_expected_sizes_of_tfds_and_folders():
    assert TFDS_SIZES == {"caltech101": (3_060, 6_084), "stanford_dogs": (12_000, 8_580)}
    assert expected_sizes("caltech101", split="paper") == (3_060, 6_084)
    assert expected_sizes("stanford_dogs", split="paper") == (12_000, 8_580)
    assert expected_sizes("caltech101") == (2_601, 459)  # 15% of the train split, rounded once
    assert expected_sizes("stanford_dogs") == (10_200, 1_800)
    assert expected_sizes("folder", split="paper") is None
    assert expected_sizes(None) is None
    with pytest.raises(InputError, match="unknown split 'test'"):
        expected_sizes("shapes", split="test")


def _write_pngs(root, counts):
    Image = pytest.importorskip("PIL.Image")

    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_image_folder(tmp_path):
    _write_pngs(tmp_path, {"cats": 3, "dogs": 5})
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    x, y, names = load_image_folder(tmp_path, 20)
    assert names == ("cats", "dogs")
    assert x.shape == (8, 20, 20, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [3, 5]
    data = load_dataset("folder", 20, path=tmp_path, val_fraction=0.0, test_fraction=0.4)
    assert len(data.y_train) + len(data.y_test) == 8 and data.classes == 2
    # 30% of 8 = 2.4 -> 2 test images: cats 0.9 and dogs 1.5 -> one each (largest remainder)
    paper = load_dataset("folder", 20, path=tmp_path, split="paper")
    assert (len(paper.y_train), len(paper.y_test)) == (6, 2) and paper.x_val is paper.x_test
    assert np.bincount(paper.y_test).tolist() == [1, 1]


def test_empty_image_folder_says_so(tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(InputError, match=f"image folder '{tmp_path}': no images found"):
        load_image_folder(tmp_path, 32)
    with pytest.raises(InputError, match="does not exist"):
        load_image_folder(tmp_path / "missing", 32)
    with pytest.raises(InputError, match="needs a path"):
        load_dataset("folder", 32)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(
        InputError, match="unknown dataset 'mnist': expected one of " + ", ".join(DATASETS)
    ):
        load_dataset("mnist", 32)


def test_tfds_datasets_name_the_package():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorflow-datasets is installed")
    for name in ("caltech101", "stanford_dogs"):
        with pytest.raises(InputError, match="needs the tensorflow-datasets package"):
            load_dataset(name, 32)
