"""Layout arithmetic checked against the frameworks' own behaviour (a reference, not each other)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import xconv as xc
from xconv import layout

from .conftest import require_backend


def test_same_padding_matches_tensorflow():
    require_backend("tf")
    import tensorflow as tf

    for n, k, s, d in itertools.product(range(1, 10), range(1, 6), range(1, 4), range(1, 3)):
        if s > 1 and d > 1:
            continue  # TF refuses this pair
        x = np.arange(n, dtype=np.float64).reshape(1, n, 1, 1) + 1
        w = np.zeros((k, 1, 1, 1))
        w[0] = 1.0  # picks the first tap: output[i] = padded[i * s]
        out = tf.nn.conv2d(x, w, strides=[1, s, 1, 1], padding="SAME", dilations=[1, d, 1, 1]).numpy().ravel()
        before, after = layout.same_padding(n, k, s, d)
        padded = np.concatenate([np.zeros(before), np.arange(n) + 1, np.zeros(after)])
        expect = padded[: (len(padded) - (k - 1) * d - 1) // s * s + 1 : s]
        np.testing.assert_array_equal(out, expect, err_msg=f"n={n} k={k} s={s} d={d}")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad_indices_match_torch(mode):
    require_backend("torch")
    import torch
    import torch.nn.functional as F

    for size in range(1, 6):
        for before, after in itertools.product(range(5), repeat=2):
            if mode == "reflect" and max(before, after) >= size or mode == "circular" and max(before, after) > size:
                continue
            x = torch.arange(size, dtype=torch.float64).reshape(1, 1, 1, size)
            expect = F.pad(x, (before, after, 0, 0), mode=mode).numpy().ravel()
            got = layout.pad_indices(size, before, after, mode).astype(np.float64)
            np.testing.assert_array_equal(got, expect, err_msg=f"size={size} pads=({before}, {after})")


def test_flatten_permutation_matches_keras_flatten():
    require_backend("tf")
    import keras

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    keras_flat = np.asarray(keras.layers.Flatten(dtype="float64")(layout.to_nhwc(x)))
    torch_flat = x.reshape(2, -1)
    perm = layout.flatten_permutation((3, 4, 5))
    np.testing.assert_array_equal(keras_flat, torch_flat[:, perm])


def test_linear_dense_round_trip_is_exact():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((7, 3 * 4 * 5)).astype(np.float32)
    k = layout.linear_to_dense(w, (3, 4, 5))
    assert k.shape == (60, 7)
    np.testing.assert_array_equal(layout.dense_to_linear(k, (3, 4, 5)), w)
    np.testing.assert_array_equal(
        layout.hwio_to_oihw(layout.oihw_to_hwio(w.reshape(7, 3, 4, 5))), w.reshape(7, 3, 4, 5)
    )


def test_to_nhwc_and_back_for_every_tensor_kind():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    y = xc.to_nhwc(x)
    assert isinstance(y, np.ndarray) and y.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(xc.to_nchw(y), x)
    require_backend("torch")
    require_backend("tf")
    import tensorflow as tf
    import torch

    t = xc.to_nhwc(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == (2, 4, 5, 3)
    np.testing.assert_array_equal(xc.to_nchw(t).numpy(), x)
    g = xc.to_nhwc(tf.constant(x))
    assert tf.is_tensor(g) and tuple(g.shape) == (2, 4, 5, 3)
    np.testing.assert_array_equal(xc.to_nchw(g).numpy(), x)


def test_to_nhwc_rejects_other_ranks_and_types():
    with pytest.raises(xc.XconvError, match="4-D"):
        xc.to_nhwc(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="numpy array, torch tensor or TensorFlow tensor"):
        xc.to_nhwc([[1.0]])
