"""Training parity: native torch and Keras optimizers on the same batches from the same initial weights."""

from __future__ import annotations

import pytest

import xconv as xc
from xconv.demo import seed_convnet
from xconv.testing import train_parity

SPEC = seed_convnet(size=8)


def test_sgd_nesterov_float64_agrees_to_1e_9(both_backends):
    r = train_parity(SPEC, steps=20, dtype="float64")
    assert r.torch_losses.shape == r.tf_losses.shape == (20,)
    assert r.torch_losses[-1] < r.torch_losses[0]  # it trained
    assert r.max_param_diff <= 1e-9, r.param_diffs
    assert r.max_loss_diff <= 1e-9


def test_sgd_float32_agrees_to_float32_rounding(both_backends):
    r = train_parity(SPEC, steps=20, dtype="float32")
    assert r.max_param_diff <= 1e-5, r.param_diffs


def test_adam_float64_agrees_with_per_step_epsilon(both_backends):
    r = train_parity(SPEC, steps=20, dtype="float64", optimizer="adam", lr=1e-3)
    assert r.max_param_diff <= 1e-9, r.param_diffs


def test_same_seed_same_run(both_backends):
    a = train_parity(SPEC, steps=3, seed=5)
    b = train_parity(SPEC, steps=3, seed=5)
    assert (a.torch_losses == b.torch_losses).all() and (a.tf_losses == b.tf_losses).all()


def test_catches_an_optimizer_mismatch(both_backends, monkeypatch):
    """Keras without Nesterov against torch with it: the parity check must see it."""
    from xconv.backends.tf import builders as tf_backend

    real = tf_backend.keras.optimizers.SGD
    monkeypatch.setattr(tf_backend.keras.optimizers, "SGD", lambda **kw: real(**{**kw, "nesterov": False}))
    r = train_parity(SPEC, steps=20, dtype="float64")
    assert r.max_param_diff > 1e-6


def test_needs_flat_logits():
    spec = xc.Sequential(xc.Conv2d(1, 2, 3), input_shape=(1, 4, 4))
    with pytest.raises(xc.SpecError, match="output is flat"):
        train_parity(spec)
    with pytest.raises(ValueError, match="optimizer must be"):
        train_parity(SPEC, optimizer="rmsprop")
