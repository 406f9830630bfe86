"""Data sets and binary input encodings (model/data.py)."""

import gzip
import struct

import numpy as np
import pytest

from model import data as datamod
from model.data import (DataError, IDX_FILES, encode, encode_thermometer, encode_threshold,
                        load_dataset, load_digits_split, load_digits_test, load_idx_dataset,
                        read_idx)


# -- digits ---------------------------------------------------------------------------------------

def test_digits_split_shapes_and_ranges():
    x_tr, y_tr, x_te, y_te = load_digits_split(seed=0)
    assert x_tr.shape == (1437, 64) and x_te.shape == (360, 64)
    assert y_tr.shape == (1437,) and y_te.shape == (360,)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    for x in (x_tr, x_te):
        assert x.min() == 0.0 and x.max() == 1.0
    # Stratified: every class is in the held-out set, in proportion (digits has 174..183 each).
    counts = np.bincount(y_te, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37


def test_digits_split_is_seeded():
    a, b, c = load_digits_split(0), load_digits_split(0), load_digits_split(1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[3], c[3])
    x_te, y_te = load_digits_test(0)
    np.testing.assert_array_equal(x_te, a[2])
    np.testing.assert_array_equal(y_te, a[3])


def test_load_dataset_digits_and_unknown():
    x_tr, _, _, _ = load_dataset("digits")
    assert x_tr.shape[1] == 64
    with pytest.raises(DataError, match=r"dataset: unknown data set 'cifar', expected one of"):
        load_dataset("cifar")


def test_mnist_without_data_dir_is_refused():
    with pytest.raises(DataError) as e:
        load_dataset("mnist")
    assert str(e.value).startswith("mnist: no --data-dir given; point it at a directory holding "
                                   "train-images-idx3-ubyte")


# -- encodings ------------------------------------------------------------------------------------

def test_threshold_is_sign_of_2x_minus_1_with_sign0_plus1():
    x = np.array([[0.0, 0.49, 0.5, 0.51, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(encode_threshold(x), [[-1, -1, 1, 1, 1]])
    assert encode_threshold(x).dtype == np.float32


def test_thermometer_bit_order_is_pixel_major():
    # levels = 3: thresholds 1/4, 2/4, 3/4; bit j = q * levels + k.
    x = np.array([[0.0, 0.3, 0.6, 0.8]], dtype=np.float32)
    got = encode_thermometer(x, 3)
    want = [[-1, -1, -1,   1, -1, -1,   1, 1, -1,   1, 1, 1]]
    np.testing.assert_array_equal(got, want)
    assert got.shape == (1, 12) and got.dtype == np.float32


def test_thermometer_exact_threshold_is_on():
    x = np.array([[0.25, 0.5, 0.75]], dtype=np.float32)
    np.testing.assert_array_equal(encode_thermometer(x, 3).reshape(3, 3),
                                  [[1, -1, -1], [1, 1, -1], [1, 1, 1]])


@pytest.mark.parametrize("levels", [1, 2, 4, 7], ids=lambda v: f"levels{v}")
def test_thermometer_is_monotone_and_binary(levels):
    rng = np.random.default_rng(levels)
    x = rng.random((20, 9)).astype(np.float32)
    code = encode_thermometer(x, levels).reshape(20, 9, levels)
    assert set(np.unique(code)) <= {-1.0, 1.0}
    # Thermometer: once a bit is off, all higher ones are off; the count of on bits is
    # floor(x * (levels + 1)) (up to float rounding at exact thresholds, absent here).
    assert np.all(np.diff(code, axis=2) <= 0)
    np.testing.assert_array_equal((code > 0).sum(axis=2),
                                  np.minimum(np.floor(x * (levels + 1)), levels))


def test_thermometer_one_level_equals_threshold():
    x = np.random.default_rng(3).random((5, 16)).astype(np.float32)
    np.testing.assert_array_equal(encode_thermometer(x, 1), encode_threshold(x))


@pytest.mark.parametrize("levels", [0, -1, 2.5], ids=["zero", "negative", "fraction"])
def test_thermometer_bad_levels(levels):
    with pytest.raises(DataError, match=rf"levels: must be an integer >= 1, got {levels!r}"):
        encode_thermometer(np.zeros((1, 2)), levels)


def test_encode_dispatch_and_errors():
    x = np.array([[0.2, 0.9]], dtype=np.float32)
    np.testing.assert_array_equal(encode(x, "threshold"), encode_threshold(x))
    np.testing.assert_array_equal(encode(x, "thermometer", 4), encode_thermometer(x, 4))
    with pytest.raises(DataError, match=r"encoding: unknown encoding 'gray', expected one of"):
        encode(x, "gray")
    with pytest.raises(DataError, match=r"inputs: shape \(2,\), expected \(n, pixels\)"):
        encode_threshold(np.zeros(2))


# -- IDX ------------------------------------------------------------------------------------------

def _idx_bytes(array: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int16: 0x0B}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_idx_set(directory, gz: bool, n_train=6, n_test=4, rows=3, cols=2, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_FILES.items():
        raw = _idx_bytes(arrays[key])
        if gz:
            with gzip.open(directory / (stem + ".gz"), "wb") as f:
                f.write(raw)
        else:
            (directory / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_dataset_round_trip(tmp_path, gz):
    arrays = _write_idx_set(tmp_path / "set", gz)
    x_tr, y_tr, x_te, y_te = load_idx_dataset(tmp_path / "set")
    assert x_tr.shape == (6, 6) and x_te.shape == (4, 6)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    np.testing.assert_array_equal(x_tr, arrays["train_images"].reshape(6, 6) / np.float32(255))
    np.testing.assert_array_equal(x_te, arrays["test_images"].reshape(4, 6) / np.float32(255))
    np.testing.assert_array_equal(y_tr, arrays["train_labels"])
    np.testing.assert_array_equal(y_te, arrays["test_labels"])
    # The same directory through load_dataset's --data-dir path.
    got = load_dataset("mnist", tmp_path / "set")
    np.testing.assert_array_equal(got[0], x_tr)


def test_read_idx_other_dtype(tmp_path):
    a = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(a))
    got = read_idx(tmp_path / "a.idx")
    assert got.shape == (3, 4)
    np.testing.assert_array_equal(got, a)


def test_missing_file_message(tmp_path):
    _write_idx_set(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        load_idx_dataset(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: missing t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz). Put the "
        "four IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte (gzipped or not) in this directory; nothing is downloaded. For "
        "Fashion-MNIST: apt-get install dataset-fashion-mnist (files in "
        "/usr/share/datasets/fashion-mnist).")


def test_missing_directory_message(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_idx_dataset(missing)
    assert str(e.value) == (
        f"{missing}: data directory does not exist. Put the four IDX files "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte (gzipped or not) there; nothing is downloaded.")


def test_bad_magic_and_truncated_body(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(DataError, match=r"bad: not an IDX file \(bad magic number\)"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((2, 3), np.uint8))[:-1])
    with pytest.raises(DataError, match=r"short: IDX body has 5 bytes, shape \(2, 3\) needs 6"):
        read_idx(tmp_path / "short")
    (tmp_path / "kind").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01a")
    with pytest.raises(DataError, match=r"kind: unknown IDX data type 0x07"):
        read_idx(tmp_path / "kind")


def test_label_count_mismatch(tmp_path):
    _write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match=r": 5 train labels for 6 images"):
        load_idx_dataset(tmp_path)


@pytest.mark.skipif(not (datamod.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_installed_fashion_mnist_test_labels():
    labels = read_idx(datamod.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
