"""Datasets for the workloads: image folders, tensorflow-datasets, and two that need no download.

Every loader returns a :class:`Dataset` of RGB ``uint8`` images of ``input_size`` x
``input_size`` pixels (``(n, size, size, 3)``), integer labels, and train/validation/test splits.
Two ways to split (:data:`SPLITS`): ``holdout`` sets validation images aside from the training
ones; ``paper`` trains on all of them and validates on the test split, as del Rey et al. did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from joulecast.errors import InputError

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("shapes", "digits", "folder", "caltech101", "stanford_dogs")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SPLITS: tuple[str, ...] = ("holdout", "paper")
# The paper's Chesslive split (section 3.4.3): 70% train, 30% test, no validation part.
PAPER_TEST_FRACTION = 0.3
# Images of the train and test splits of the tensorflow-datasets ones, as the paper gives them
# (section 3.4); another version may differ by an image (Caltech101 3,059/6,085 in some runs).
TFDS_SIZES: dict[str, tuple[int, int]] = {
    "caltech101": (3_060, 6_084),
    "stanford_dogs": (12_000, 8_580),
}
# Images per class of scikit-learn's bundled digits, so sizes are known without importing it.
_DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Dataset:
    """Images and labels split three ways.

    Attributes:
        name: Dataset name.
        class_names: One name per label, in label order.
        x_train, x_val, x_test: ``uint8`` images ``(n, size, size, 3)``; under the
            ``paper`` split ``x_val`` is ``x_test`` (the same array).
        y_train, y_val, y_test: ``int64`` labels ``(n,)``.
    """

    name: str
    class_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def input_size(self) -> int:
        """Image side in pixels."""
        return int(self.x_train.shape[1])


def split(
    x: np.ndarray,
    y: np.ndarray,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle and split into train, validation and test, class by class (stratified).

    Each class's share of each part is rounded on its own, so the parts' totals can differ by
    a few images from the fractions of the whole.

    Returns:
        ``x_train, y_train, x_val, y_val, x_test, y_test``.
    """
    return _array_parts(
        x, y, paper=False, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise InputError(f"{label} {value}: expected a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction}: expected below 1"
        )


def _class_counts(
    counts: np.ndarray, *, paper: bool, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Validation and test images per class, from the images per class ``counts``.

    Holdout: each class's share rounded on its own. ``paper``: no validation part, and the
    test total rounded first (:func:`_largest_remainder`).

    Returns:
        ``int64`` validation and test counts, one per class.
    """
    if paper:
        n_test = _largest_remainder(counts, test_fraction)
        return np.zeros_like(n_test), n_test
    n_val = np.array([round(int(n) * val_fraction) for n in counts], dtype=np.int64)
    n_test = np.array([round(int(n) * test_fraction) for n in counts], dtype=np.int64)
    return n_val, n_test


def _largest_remainder(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Per-class shares of ``fraction`` of all images, the total rounded first.

    ``round(sum(counts) * fraction)`` images are shared out by largest remainder (ties to the
    lower label), so the parts add up to the rounded total; rounding each class on its own can
    overshoot it (two classes of 17,005 at 30%: 2 x round(5,101.5) = 10,204, not 10,203).

    Returns:
        ``int64`` count per class.
    """
    exact = np.asarray(counts, dtype=np.float64) * fraction
    shares = np.floor(exact).astype(np.int64)
    total = round(int(np.sum(counts)) * fraction)
    # float error can put the rounded total a hair outside [sum of floors, + one per class]
    extra = int(np.clip(total - int(shares.sum()), 0, len(shares)))
    order = np.argsort(-(exact - shares), kind="stable")
    shares[order[:extra]] += 1
    return shares


def _stratified(
    x: np.ndarray,
    y: np.ndarray,
    labels: np.ndarray,
    n_val: np.ndarray,
    n_test: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle each class and cut it into test, validation and training images.

    Class ``labels[i]`` gives its first ``n_test[i]`` images to the test part and the next
    ``n_val[i]`` to validation; the rest train. Each part is shuffled again, so classes mix.

    Returns:
        ``x_train, y_train, x_val, y_val, x_test, y_test``.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label, t, v in zip(labels, n_test, n_val, strict=True):
        idx = rng.permutation(np.flatnonzero(y == label))
        parts["test"].append(idx[:t])
        parts["val"].append(idx[t : t + v])
        parts["train"].append(idx[t + v :])
    out: list[np.ndarray] = []
    for key in ("train", "val", "test"):
        idx = rng.permutation(np.concatenate(parts[key]).astype(np.int64))
        out += [x[idx], y[idx]]
    return out[0], out[1], out[2], out[3], out[4], out[5]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="xy")


def make_shapes(
    samples: int = 400, input_size: int = 32, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generated images of a circle, a square, a triangle or a cross (labels in that order).

    Each image has a random background and shape colour, position and size; the same seed
    gives the same images.

    Returns:
        ``uint8`` images ``(samples, input_size, input_size, 3)`` and ``int64`` labels.
    """
    if samples < 1:
        raise InputError(f"samples {samples}: expected at least 1")
    if input_size < 8:
        raise InputError(f"input size {input_size}: expected at least 8 for shapes")
    rng = np.random.default_rng(seed)
    xs, ys = _grid(input_size)
    images = np.empty((samples, input_size, input_size, 3), dtype=np.uint8)
    labels = np.arange(samples, dtype=np.int64) % len(SHAPES)
    labels = rng.permutation(labels)
    for i, label in enumerate(labels):
        r = rng.uniform(0.18, 0.32)
        cx, cy = rng.uniform(r + 0.02, 1 - r - 0.02, size=2)
        dx, dy = xs - cx, ys - cy
        if label == 0:
            mask = dx**2 + dy**2 <= r**2
        elif label == 1:
            mask = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
        elif label == 2:
            # apex up: inside when below the two slanted edges and above the base
            mask = (dy <= r * 0.8) & (dy >= -r + 2 * np.abs(dx) * 1.0)
        else:
            arm = r * 0.3
            mask = ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | (
                (np.abs(dy) <= arm) & (np.abs(dx) <= r)
            )
        background = rng.integers(0, 100, size=3)
        colour = rng.integers(140, 256, size=3)
        img = np.broadcast_to(background, (input_size, input_size, 3)).copy()
        img[mask] = colour
        noise = rng.integers(-12, 13, size=img.shape)
        images[i] = np.clip(img + noise, 0, 255).astype(np.uint8)
    return images, labels


def make_digits(input_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 images), upscaled to ``input_size``, 3 channels.

    Raises:
        InputError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise InputError(
            "the digits dataset needs scikit-learn: pip install 'joulecast[ml]'"
        ) from exc
    digits = load_digits()
    small = np.asarray(digits.images, dtype=np.float64) * (255.0 / 16.0)
    idx = (np.arange(input_size) * 8) // input_size  # nearest-neighbour upscaling
    big = small[:, idx][:, :, idx]
    images = np.repeat(np.clip(np.round(big), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    return images, np.asarray(digits.target, dtype=np.int64)


def load_image_folder(
    path: str | Path, input_size: int
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images of a folder with one sub-folder per class, resized to ``input_size``.

    Returns:
        ``uint8`` RGB images, ``int64`` labels, and the class names (sorted sub-folder names).

    Raises:
        InputError: The folder does not exist or holds no images in class sub-folders.
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise InputError("the image-folder loader needs Pillow: pip install pillow") from exc
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"image folder {str(root)!r} does not exist or is not a folder")
    files: list[tuple[Path, str]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(sub.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                files.append((file, sub.name))
    if not files:
        raise InputError(
            f"image folder {str(root)!r}: no images found "
            f"(expected one sub-folder per class holding {', '.join(sorted(IMAGE_SUFFIXES))} files)"
        )
    class_names = tuple(sorted({c for _, c in files}))
    lookup = {c: i for i, c in enumerate(class_names)}
    images = np.empty((len(files), input_size, input_size, 3), dtype=np.uint8)
    for i, (file, _) in enumerate(files):
        try:
            with Image.open(file) as img:
                rgb = img.convert("RGB").resize((input_size, input_size), Image.Resampling.BILINEAR)
                images[i] = np.asarray(rgb, dtype=np.uint8)
        except OSError as exc:
            raise InputError(f"image {str(file)!r} cannot be read: {exc}") from exc
    labels = np.array([lookup[c] for _, c in files], dtype=np.int64)
    return images, labels, class_names


def _tfds_parts(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    paper: bool,
    val_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test parts of a dataset that comes with train and test splits.

    The test split is kept as it is. Holdout: validation is ``val_fraction`` of the train
    split; ``paper``: training takes the whole train split and validation is the test split.

    Returns:
        ``x_train, y_train, x_val, y_val, x_test, y_test``.
    """
    if paper:
        return x_train, y_train, x_test, y_test, x_test, y_test
    x_tr, y_tr, x_val, y_val, _, _ = split(
        x_train, y_train, val_fraction=val_fraction, test_fraction=0.0, seed=seed
    )
    return x_tr, y_tr, x_val, y_val, x_test, y_test


def _array_parts(
    x: np.ndarray,
    y: np.ndarray,
    *,
    paper: bool,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test parts of one set of images, stratified.

    Holdout: ``val_fraction`` and ``test_fraction`` of each class, each rounded on its own.
    ``paper``: ``test_fraction`` of all images for testing, the total rounded first
    (:func:`_largest_remainder`), the rest for training, and validation is the test part.

    Returns:
        ``x_train, y_train, x_val, y_val, x_test, y_test``.
    """
    _check_fractions(val_fraction, test_fraction)
    labels, counts = np.unique(y, return_counts=True)
    n_val, n_test = _class_counts(
        counts, paper=paper, val_fraction=val_fraction, test_fraction=test_fraction
    )
    parts = _stratified(x, y, labels, n_val, n_test, seed)
    if paper:
        x_tr, y_tr, _, _, x_te, y_te = parts
        return x_tr, y_tr, x_te, y_te, x_te, y_te
    return parts


def _fractions(
    split: str, val_fraction: float | None, test_fraction: float | None
) -> tuple[float, float]:
    """The validation and test fractions of ``split``, where the caller left them unset."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if split == "holdout":
        return (
            0.15 if val_fraction is None else val_fraction,
            0.2 if test_fraction is None else test_fraction,
        )
    if val_fraction is not None:
        raise InputError(
            f"val_fraction {val_fraction}: the paper split validates on the test split "
            "(leave val_fraction unset)"
        )
    return 0.0, PAPER_TEST_FRACTION if test_fraction is None else test_fraction


def _load_tfds(
    name: str, input_size: int, paper: bool, val_fraction: float, seed: int
) -> Dataset:  # pragma: no cover - needs tensorflow-datasets and a download
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise InputError(
            f"dataset {name!r} needs the tensorflow-datasets package: "
            "pip install tensorflow-datasets"
        ) from exc
    from PIL import Image

    builder: Any = tfds.builder(name)
    builder.download_and_prepare()
    class_names = tuple(builder.info.features["label"].names)

    def take(split_name: str) -> tuple[np.ndarray, np.ndarray]:
        data = tfds.as_numpy(builder.as_dataset(split=split_name, as_supervised=True))
        xs, ys = [], []
        for image, label in data:
            img = Image.fromarray(np.asarray(image)).convert("RGB")
            xs.append(np.asarray(img.resize((input_size, input_size), Image.Resampling.BILINEAR)))
            ys.append(int(label))
        return np.stack(xs).astype(np.uint8), np.asarray(ys, dtype=np.int64)

    x_train, y_train = take("train")
    x_test, y_test = take("test")
    parts = _tfds_parts(
        x_train, y_train, x_test, y_test, paper=paper, val_fraction=val_fraction, seed=seed
    )
    return Dataset(name, class_names, *parts)


def expected_sizes(
    name: str | None, *, split: str = "holdout", samples: int = 400
) -> tuple[int, int] | None:
    """Training and validation images of dataset ``name`` under ``split``, without loading it.

    Exact for ``shapes`` and ``digits``, and for the tensorflow-datasets ones under ``paper``
    (their train and test splits, :data:`TFDS_SIZES`). Under ``holdout`` their validation
    part is 15% of the train split rounded once: the split rounds class by class, and the
    classes are known only once downloaded.

    Returns:
        ``(train, validation)``, or None where the images must be seen first (``folder``).

    Raises:
        InputError: Unknown split.
    """
    val_fraction, test_fraction = _fractions(split, None, None)
    paper = split == "paper"
    if name in TFDS_SIZES:
        train, test = TFDS_SIZES[name]
        if paper:
            return train, test
        val = round(train * val_fraction)
        return train - val, val
    if name == "shapes":
        counts = np.bincount(np.arange(samples) % len(SHAPES))  # as make_shapes labels them
    elif name == "digits":
        counts = np.array(_DIGITS_PER_CLASS)
    else:
        return None
    n_val, n_test = _class_counts(
        counts, paper=paper, val_fraction=val_fraction, test_fraction=test_fraction
    )
    total, val, test = int(counts.sum()), int(n_val.sum()), int(n_test.sum())
    return total - val - test, test if paper else val


def load_dataset(
    name: str,
    input_size: int,
    *,
    path: str | Path | None = None,
    samples: int = 400,
    split: str = "holdout",
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
) -> Dataset:
    """Load dataset ``name`` at ``input_size`` pixels, split into train/validation/test.

    Args:
        name: ``shapes`` (generated, ``samples`` images), ``digits`` (scikit-learn's bundled
            digits), ``folder`` (an image folder at ``path``), ``caltech101`` or
            ``stanford_dogs`` (through tensorflow-datasets, with its own test split).
        input_size: Image side in pixels.
        path: The image folder, for ``folder``.
        samples: Number of images of ``shapes``.
        split: ``holdout``: validation is set aside from the training images (from the train
            split of the tensorflow-datasets ones). ``paper``: training takes every training
            image and validation is the test split (``x_val is x_test``); the others are
            split 70/30 into train and test, the total rounded first.
        val_fraction: Share of the images for validation (holdout only; default 0.15).
        test_fraction: Share of the images for testing, not for the tensorflow-datasets ones
            (default 0.2 holdout, 0.3 paper).
        seed: Seed of the generation and of the split.

    Raises:
        InputError: Unknown name or split, a fraction out of range or set where it does not
            apply, missing folder or package, or no images.
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    if input_size < 1:
        raise InputError(f"input size {input_size}: expected a positive number of pixels")
    val, test = _fractions(split, val_fraction, test_fraction)
    paper = split == "paper"
    if name in ("caltech101", "stanford_dogs"):
        return _load_tfds(name, input_size, paper, val, seed)
    if name == "shapes":
        x, y = make_shapes(samples, input_size, seed=seed)
        class_names: tuple[str, ...] = SHAPES
    elif name == "digits":
        x, y = make_digits(input_size)
        class_names = tuple(str(d) for d in range(10))
    else:
        if path is None:
            raise InputError("dataset 'folder' needs a path (--dataset-path DIR)")
        x, y, class_names = load_image_folder(path, input_size)
    parts = _array_parts(x, y, paper=paper, val_fraction=val, test_fraction=test, seed=seed)
    log.info(
        "dataset %s (%s split): %d train, %d validation, %d test images of %d px",
        name,
        split,
        len(parts[1]),
        len(parts[3]),
        len(parts[5]),
        input_size,
    )
    return Dataset(name, class_names, *parts)
