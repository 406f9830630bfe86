"""Shift augmentation of encoded images (model.train.shift_images)."""

import numpy as np
import pytest
import torch

from model.data import encode_thermometer
from model.train import TrainOptions, shift_images


def test_zero_shift_is_identity():
    x = torch.from_numpy(encode_thermometer(np.random.default_rng(0).random((5, 64)), 4))
    assert torch.equal(shift_images(x, 0, 4, torch.Generator().manual_seed(1)), x)


def test_shift_moves_pixels_and_blanks_the_border():
    """Every output is the input image moved by some (dy, dx) in [-1, 1]^2, border blank."""
    rng = np.random.default_rng(2)
    raw = rng.random((40, 64)).astype(np.float32)
    x = torch.from_numpy(encode_thermometer(raw, 3))
    out = shift_images(x, 1, 3, torch.Generator().manual_seed(3)).numpy()
    seen = set()
    for n in range(len(raw)):
        img = raw[n].reshape(8, 8)
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                moved = np.zeros((10, 10), np.float32)
                moved[1:9, 1:9] = img
                # output pixel (r, c) reads padded (r + dy + 1, c + dx + 1)
                cand = moved[1 + dy:9 + dy, 1 + dx:9 + dx]
                if np.array_equal(encode_thermometer(cand.reshape(1, 64), 3)[0], out[n]):
                    matches.append((dy, dx))
        assert matches, f"image {n} is not a shift of its input"
        seen.update(matches)
    assert len(seen) == 9, f"40 images drew only the shifts {sorted(seen)}"


def test_non_square_inputs_are_refused():
    with pytest.raises(ValueError, match=r"augment_shift: inputs of width 30 are not square"):
        shift_images(torch.zeros(2, 30), 1, 3, torch.Generator())


def test_training_noise_defaults_and_bounds():
    assert TrainOptions().augment_shift == 0
    assert TrainOptions().input_flip == 0.1
    assert TrainOptions(dataset="fashion-mnist").input_flip == 0.0
    with pytest.raises(ValueError, match=r"augment_shift: must be >= 0, got -1"):
        TrainOptions(augment_shift=-1)
    with pytest.raises(ValueError, match=r"input_flip: must be in \[0, 0.5\), got 0.5"):
        TrainOptions(input_flip=0.5)
