"""Canonical weights: seeded init, get/set/transfer in both frameworks, strict checks, bit-exact round trips."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.testing import max_rel_diff

from .test_shapes import seed_spec

SPEC = xc.Sequential(
    xc.Conv2d(2, 4, 3, stride=2, padding="same"),  # 4-sided in torch at this size
    xc.ReLU(),
    xc.Conv2d(4, 6, (2, 3), padding=((0, 1), (2, 0)), groups=2, padding_mode="reflect"),
    xc.Flatten(),
    xc.Linear(None, 5),
    xc.ReLU(),
    xc.Linear(None, 3, bias=False),
    input_shape=(2, 8, 7),
)
KEYS = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", "6.weight"]


def test_keys_and_shapes(backend):
    w = xc.get_weights(xc.build(seed_spec(), backend, seed=0))
    assert {k: v.shape for k, v in w.items()} == {
        "0.weight": (32, 3, 5, 5),
        "0.bias": (32,),
        "2.weight": (16, 32, 3, 3),
        "2.bias": (16,),
        "5.weight": (10, 16384),
        "5.bias": (10,),
    }
    assert list(xc.get_weights(xc.build(SPEC, backend, seed=0))) == KEYS


def test_torch_state_dict_keys_are_canonical(both_backends):
    tm = xc.build(SPEC, "torch", seed=0)
    assert list(tm.state_dict()) == KEYS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_weights_in_both_frameworks(both_backends, dtype):
    a = xc.get_weights(xc.build(SPEC, "torch", seed=3, dtype=dtype))
    b = xc.get_weights(xc.build(SPEC, "tf", seed=3, dtype=dtype))
    for k in KEYS:
        assert a[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a[k], b[k])


def test_initializer_is_kaiming_normal_with_zero_bias(backend):
    w = xc.get_weights(xc.build(seed_spec(), backend, seed=0, dtype="float64"))
    for key, fan_in in [("0.weight", 3 * 25), ("2.weight", 32 * 9), ("5.weight", 16384)]:
        std = w[key].std()
        expected = np.sqrt(2 / fan_in)
        assert abs(std / expected - 1) < 0.1, (key, std, expected)
        assert abs(w[key].mean()) < 0.2 * expected
    assert not w["0.bias"].any() and not w["5.bias"].any()


def test_seed_none_draws_fresh_weights(backend):
    a = xc.get_weights(xc.build(SPEC, backend))["0.weight"]
    b = xc.get_weights(xc.build(SPEC, backend))["0.weight"]
    assert not np.array_equal(a, b)


def test_build_does_not_touch_torch_global_rng(both_backends):
    import torch

    torch.manual_seed(0)
    expect = torch.rand(3)
    torch.manual_seed(0)
    xc.build(seed_spec(), "torch", seed=1)
    assert torch.equal(torch.rand(3), expect)


def _random_weights(spec, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape).astype(dtype) for k, v in xc.get_weights(xc.build(spec, "torch")).items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trips_are_bit_exact(both_backends, dtype):
    w = _random_weights(SPEC, dtype)
    tm = xc.build(SPEC, "torch", dtype=dtype)
    km = xc.build(SPEC, "tf", dtype=dtype)
    xc.set_weights(tm, w)
    xc.transfer_weights(tm, km)  # torch -> Keras
    tm2 = xc.build(SPEC, "torch", dtype=dtype)
    xc.transfer_weights(km, tm2)  # Keras -> torch
    back = xc.get_weights(tm2)
    for k in KEYS:
        assert back[k].dtype == w[k].dtype
        np.testing.assert_array_equal(back[k], w[k])
    km2 = xc.build(SPEC, "tf", dtype=dtype)
    xc.transfer_weights(tm2, km2)  # Keras -> torch -> Keras
    for a, b in zip(km.weights, km2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_hand_written_state_dict_loads_as_it_is(both_backends):
    import torch
    from torch import nn

    hand = nn.Sequential(
        nn.Conv2d(3, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.Conv2d(32, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )
    spec = seed_spec(8)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expect = hand(torch.from_numpy(x)).numpy()
    for backend in ("torch", "tf"):
        model = xc.build(spec, backend)
        xc.set_weights(model, hand.state_dict())
        assert max_rel_diff(expect, xc.predict(model, x)) < 1e-5, backend


def test_float64_weights_are_cast_into_a_float32_model(backend):
    model = xc.build(SPEC, backend, dtype="float32")
    w64 = _random_weights(SPEC, "float64")
    xc.set_weights(model, w64)
    got = xc.get_weights(model)
    assert got["0.weight"].dtype == np.float32
    np.testing.assert_array_equal(got["0.weight"], w64["0.weight"].astype(np.float32))


def test_set_weights_reports_every_problem_and_changes_nothing(backend):
    model = xc.build(SPEC, backend, seed=0)
    before = xc.get_weights(model)
    bad = _random_weights(SPEC)
    del bad["0.bias"]
    bad["2.weight"] = bad["2.weight"][:, :, :1]
    bad["4.bias"] = bad["4.bias"].astype(np.int64)
    bad["9.weight"] = np.zeros(3, np.float32)
    with pytest.raises(xc.WeightError) as info:
        xc.set_weights(model, bad)
    message = str(info.value)
    assert "missing '0.bias'" in message
    assert "'2.weight': shape (6, 2, 1, 3) but expected (6, 2, 2, 3)" in message
    assert "'4.bias': dtype int64 is not a float dtype" in message
    assert "unexpected key '9.weight'" in message
    after = xc.get_weights(model)
    for k in KEYS:
        np.testing.assert_array_equal(after[k], before[k])


def test_set_weights_needs_a_mapping(backend):
    with pytest.raises(xc.WeightError, match="mapping"):
        xc.set_weights(xc.build(SPEC, backend), [np.zeros(3)])


def test_transfer_between_different_specs_is_an_error(both_backends):
    other = xc.Sequential(*SPEC.layers[:-1], xc.Linear(None, 3, bias=True), input_shape=SPEC.input_shape)
    with pytest.raises(xc.WeightError, match="different specs"):
        xc.transfer_weights(xc.build(SPEC, "torch"), xc.build(other, "tf"))
    with pytest.raises(xc.WeightError, match="different specs"):
        xc.transfer_weights(xc.build(SPEC, "torch"), xc.build(SPEC, "tf", input_shape=(2, 9, 7)))


def test_models_not_built_by_xconv_are_refused(both_backends):
    from torch import nn

    with pytest.raises(xc.XconvError, match="built by xconv.build"):
        xc.get_weights(nn.Linear(2, 3))
    with pytest.raises(xc.XconvError, match="built by xconv.build"):
        xc.get_weights(object())
