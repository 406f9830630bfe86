"""Data sets and binary input encodings for NSM training.

Data sets give images as float32 arrays in [0, 1], shape (n, pixels), and int64 labels:

- `load_digits_split(seed)`: scikit-learn's embedded 8x8 digits, a fixed, seeded, stratified
  train/test split (the held-out test set is also what the hardware flow classifies).
- `load_idx_dataset(directory)`: MNIST or Fashion-MNIST in IDX format (files gzipped or not).
  Nothing is ever downloaded; a missing file is refused with a message saying what to put where.

Encodings turn those floats into the +-1 states the network (and the accelerator) takes:

- `encode_threshold(x)`: the paper's deterministic sign(2x - 1), with sgn(0) = +1 (eq. 1).
- `encode_thermometer(x, levels)`: `levels` thresholds t_k = (k + 1) / (levels + 1) per pixel,
  bit k of pixel q is +1 iff x_q >= t_k. Bit order: **pixel-major**, input index
  j = q * levels + k (k = 0 is the lowest threshold). With levels = 1 it equals
  `encode_threshold`. The host tool and the hardware take these vectors as their input bits
  (z = +1 is bit 1, see docs/contract.md).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from .meta import ENCODINGS, DataSpec

__all__ = ["DataError", "DIGITS_TEST_FRACTION", "load_digits_split", "load_digits_test",
           "read_idx", "load_idx_split", "load_idx_dataset", "IDX_FILES", "FASHION_MNIST_DIR",
           "encode_threshold", "encode_thermometer", "encode", "ENCODINGS", "load_dataset",
           "DATASETS", "CLASS_NAMES", "PIXELS", "data_spec", "identify_test_set"]

# Where Debian's `dataset-fashion-mnist` package puts the files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TEST_FRACTION = 0.2
DATASETS = ("digits", "mnist", "fashion-mnist")
# Class names in label order (Fashion-MNIST's from its publication, Xiao et al. 2017).
CLASS_NAMES = {
    "digits": tuple(str(d) for d in range(10)),
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}
# Pixels per image of each built-in data set.
PIXELS = {"digits": 64, "mnist": 784, "fashion-mnist": 784}
# SHA-256 of the label sequence (uint8 bytes) of the standard test sets: MNIST and Fashion-MNIST
# images have the same size, so their labels are what tells them apart.
TEST_LABEL_DIGESTS = {
    "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5": "mnist",
    "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9": "fashion-mnist",
}

# IDX file stems of the four parts of MNIST-format data sets; ".gz" variants are accepted too.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes -> NumPy big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A data set that is missing or malformed; the message says what and where."""


# -- digits (embedded) ----------------------------------------------------------------------------

def load_digits_split(seed: int = 0):
    """scikit-learn digits, stratified split with DIGITS_TEST_FRACTION held out.

    Returns (x_train, y_train, x_test, y_test): float32 in [0, 1] of shape (n, 64) (pixel values
    0..16 divided by 16), int64 labels 0..9. The split depends on `seed` only.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=DIGITS_TEST_FRACTION,
                                              random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def load_digits_test(seed: int = 0):
    """The held-out digits test set (x_test floats in [0, 1], y_test) of `load_digits_split`."""
    _, _, x_te, y_te = load_digits_split(seed)
    return x_te, y_te


# -- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------------

def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in .gz) into a NumPy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX body has {len(raw) - header} bytes, shape {shape} needs "
                        f"{expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DataError(
        f"{directory}: missing {stem} (or {stem}.gz). Put the four IDX files "
        f"{', '.join(IDX_FILES.values())} (gzipped or not) in this directory; "
        f"nothing is downloaded. For Fashion-MNIST: apt-get install dataset-fashion-mnist "
        f"(files in {FASHION_MNIST_DIR}).")


def _idx_directory(directory) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: data directory does not exist. Put the four IDX files "
                        f"{', '.join(IDX_FILES.values())} (gzipped or not) there; nothing is "
                        f"downloaded.")
    return directory


def load_idx_split(directory, split: str):
    """One split ("train" or "test") of the MNIST-format data set in `directory`:
    (images float32 in [0, 1] (bytes / 255) of shape (n, rows * cols), labels int64, path of
    the image file)."""
    directory = _idx_directory(directory)
    image_path = _find_idx(directory, IDX_FILES[f"{split}_images"])
    images = read_idx(image_path)
    labels = read_idx(_find_idx(directory, IDX_FILES[f"{split}_labels"]))
    if images.ndim != 3:
        raise DataError(f"{directory}: {split} images have {images.ndim} dimensions, "
                        f"expected 3 (n, rows, cols)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{directory}: {labels.shape[0]} {split} labels for "
                        f"{images.shape[0]} images")
    return (images.reshape(images.shape[0], -1).astype(np.float32) / 255.0,
            labels.astype(np.int64), image_path)


def load_idx_dataset(directory):
    """MNIST-format data set in `directory`: (x_train, y_train, x_test, y_test).

    Images become float32 in [0, 1] (bytes / 255) of shape (n, rows * cols); labels int64.
    """
    directory = _idx_directory(directory)
    for stem in IDX_FILES.values():     # every file missing is said before any is read
        _find_idx(directory, stem)
    out = []
    for split in ("train", "test"):
        x, y, _ = load_idx_split(directory, split)
        out += [x, y]
    return tuple(out)


def load_dataset(name: str, data_dir=None, seed: int = 0):
    """(x_train, y_train, x_test, y_test) floats in [0, 1] for a data set named in DATASETS."""
    if name == "digits":
        return load_digits_split(seed)
    if name in ("mnist", "fashion-mnist"):
        if data_dir is None:
            if name == "mnist":
                raise DataError("mnist: no --data-dir given; point it at a directory holding "
                                f"{', '.join(IDX_FILES.values())} (gzipped or not)")
            data_dir = FASHION_MNIST_DIR
        return load_idx_dataset(data_dir)
    raise DataError(f"dataset: unknown data set {name!r}, expected one of {DATASETS}")


# -- encodings ------------------------------------------------------------------------------------

def _check_unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"inputs: shape {x.shape}, expected (n, pixels)")
    return x


def encode_threshold(x) -> np.ndarray:
    """+-1 (float32) of sign(2x - 1) with sgn(0) = +1: +1 iff x >= 0.5."""
    x = _check_unit(x)
    return np.where(x >= 0.5, 1.0, -1.0).astype(np.float32)


def encode_thermometer(x, levels: int) -> np.ndarray:
    """+-1 (float32) thermometer code, shape (n, pixels * levels), pixel-major bit order.

    Bit j = q * levels + k is +1 iff x_q >= (k + 1) / (levels + 1).
    """
    if int(levels) != levels or levels < 1:
        raise DataError(f"levels: must be an integer >= 1, got {levels!r}")
    levels = int(levels)
    x = _check_unit(x)
    thresholds = (np.arange(1, levels + 1, dtype=np.float64) / (levels + 1)).astype(np.float32)
    bits = x[:, :, None] >= thresholds[None, None, :]
    return np.where(bits, 1.0, -1.0).astype(np.float32).reshape(x.shape[0], -1)


def encode(x, encoding: str, levels: int = 1) -> np.ndarray:
    """Dispatch on the encoding's name (one of ENCODINGS)."""
    if encoding == "threshold":
        return encode_threshold(x)
    if encoding == "thermometer":
        return encode_thermometer(x, levels)
    raise DataError(f"encoding: unknown encoding {encoding!r}, expected one of {ENCODINGS}")


def data_spec(dataset: str, encoding: str, levels: int = 1) -> DataSpec:
    """The `DataSpec` of a built-in data set under an encoding (threshold has 1 level)."""
    if dataset not in DATASETS:
        raise DataError(f"dataset: must be one of {DATASETS}, got {dataset!r}")
    return DataSpec(dataset=dataset, encoding=encoding,
                    levels=1 if encoding == "threshold" else int(levels),
                    pixels=PIXELS[dataset], class_names=CLASS_NAMES[dataset])


def identify_test_set(labels) -> str | None:
    """The built-in data set whose full test set has exactly these labels, or None (a subset,
    or another data set)."""
    import hashlib
    y = np.asarray(labels)
    if y.size == 0 or y.min() < 0 or y.max() > 255:
        return None
    return TEST_LABEL_DIGESTS.get(hashlib.sha256(y.astype(np.uint8).tobytes()).hexdigest())
