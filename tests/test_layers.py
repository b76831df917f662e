"""Pooling, BatchNorm, Dropout and activations are exact in both frameworks and both modes, and the mappings
that look right but are not (each measured on this stack: wrong numbers with the right shapes) are caught at
the right layer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xconv as xc
from xconv.testing import assert_equivalent, strategies, train_parity

NO_DROPOUT = tuple(k for k in strategies.ALL_KINDS if k not in ("Dropout", "StochasticDepth"))


@given(data=st.data())
def test_three_backends_agree_in_training_mode(both_backends, data):
    """torch train() / Keras training=True / numpy: batch statistics, outputs, gradients and the running
    statistics after the call (unbiased variance, num_batches_tracked, momentum=None). float64: in float32 the
    backward pass through batch statistics of a nearly constant channel (e.g. after ReLU) amplifies rounding
    by up to gamma / sqrt(eps) (measured 1.4e-4 relative, torch and Keras alike, against the float32
    reference), which says nothing about the mapping; float32 training is checked on fixed specs below."""
    spec = data.draw(strategies.specs(max_layers=5, kinds=NO_DROPOUT))
    x = data.draw(strategies.inputs(spec, training=True))
    assert_equivalent(spec, data.draw(strategies.weights(spec)), x, dtype="float64", training=True)


def test_float32_training_mode_on_a_fixed_spec(both_backends):
    spec = xc.Sequential(
        xc.Conv2d(3, 4, 3, padding=1),
        xc.BatchNorm2d(4),
        xc.ReLU(),
        xc.MaxPool2d(2),
        xc.Flatten(),
        xc.BatchNorm1d(36, momentum=None),
        xc.Linear(None, 5),
        input_shape=(3, 6, 6),
    )
    x = np.random.default_rng(0).standard_normal((4, 3, 6, 6))
    rows = assert_equivalent(spec, x=x, dtype="float32", training=True)
    assert {r.what for r in rows} >= {"running_mean", "running_var", "num_batches_tracked", "grad weight"}


POOLS = xc.Sequential(
    xc.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    xc.AvgPool2d(2, stride=2, padding=1, ceil_mode=True),  # count_include_pad with ceil_mode: the divisor case
    xc.MaxPool2d(2, stride=1, dilation=2, padding=1),
    xc.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    xc.AdaptiveAvgPool2d((2, 3)),
    input_shape=(2, 8, 8),
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pools_on_negative_inputs_and_even_sizes(both_backends, dtype):
    x = -np.abs(np.random.default_rng(0).standard_normal((2, 2, 8, 8))) - 1.0  # pads must never win a max
    assert_equivalent(POOLS, x=x, dtype=dtype)


def _fails_at(spec, layer, what, x=None, weights=None, training=False, dtype="float64"):
    with pytest.raises(AssertionError, match=rf"first part at layer {layer} \(\w+\), {what}"):
        assert_equivalent(spec, weights, x, backends=("torch", "tf"), dtype=dtype, grads=False, training=training)


def test_maxpool_zero_padding_is_caught(both_backends, monkeypatch):
    import keras

    from xconv.backends.tf import builders as tf_backend

    spec = xc.Sequential(xc.Conv2d(1, 2, 1), xc.MaxPool2d(3, stride=2, padding=1), input_shape=(1, 6, 6))
    x = -np.ones((1, 1, 6, 6))
    w = {"0.weight": np.ones((2, 1, 1, 1)), "0.bias": np.zeros(2)}
    assert_equivalent(spec, w, x, backends=("torch", "tf"), grads=False)

    def zero_padded(info, h, dtype):  # ZeroPadding2D + MaxPooling2D: a pad beats negative inputs
        h = keras.layers.ZeroPadding2D(info.padding, dtype=dtype, name=f"maxpool_{info.index}_pad")(h)
        return keras.layers.MaxPooling2D(3, 2, dtype=dtype, name=f"maxpool_{info.index}")(h)

    monkeypatch.setitem(tf_backend._BUILDERS, xc.MaxPool2d, zero_padded)
    _fails_at(spec, 1, "output", x, w)


def test_avgpool_keras_same_is_caught(both_backends, monkeypatch):
    import keras

    from xconv.backends.tf import builders as tf_backend

    spec = xc.Sequential(xc.AvgPool2d(3, stride=1, padding=1), input_shape=(1, 5, 5))  # count_include_pad=True
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5)) + 3.0
    assert_equivalent(spec, x=x, backends=("torch", "tf"), grads=False)
    monkeypatch.setitem(
        tf_backend._BUILDERS,
        xc.AvgPool2d,
        lambda info, h, dtype: keras.layers.AveragePooling2D(
            3, 1, padding="same", dtype=dtype, name=f"avgpool_{info.index}"
        )(h),
    )  # Keras 'same' excludes the pads
    _fails_at(spec, 0, "output", x)


BN_SPEC = xc.Sequential(xc.Conv2d(2, 3, 3), xc.BatchNorm2d(3), xc.ReLU(), input_shape=(2, 6, 6))


def _bn_weights(var):
    w = xc.get_weights(xc.build(BN_SPEC, "numpy", seed=1))
    w["1.running_var"] = np.full(3, var)
    w["1.running_mean"] = np.array([0.1, -0.2, 0.3])
    return w


def test_batchnorm_eps_left_at_keras_default_is_caught(both_backends, monkeypatch):
    from xconv.backends.tf import builders as tf_backend
    from xconv.kinds.norm import _keras as norm_keras

    w = _bn_weights(1e-3)  # small running variances: eps 1e-3 vs 1e-5 changes the scale by ~40%
    assert_equivalent(BN_SPEC, w, backends=("torch", "tf"), grads=False)
    original = norm_keras._batchnorm

    def keras_eps(info, h, dtype):
        import dataclasses

        return original(dataclasses.replace(info, layer=dataclasses.replace(info.layer, eps=1e-3)), h, dtype)

    monkeypatch.setitem(tf_backend._BUILDERS, xc.BatchNorm2d, keras_eps)
    _fails_at(BN_SPEC, 1, "output", weights=w)


def test_batchnorm_momentum_and_biased_variance_are_caught(both_backends, monkeypatch):
    """Keras' native BatchNormalization with eps and momentum mapped still differs from torch in training:
    its moving variance is biased. Passing torch's momentum as Keras' momentum is wrong too."""
    import keras

    from xconv.backends.tf import builders as tf_backend

    w = _bn_weights(0.5)
    x = np.random.default_rng(2).standard_normal((2, 2, 6, 6))
    assert_equivalent(BN_SPEC, w, x, backends=("torch", "tf"), grads=False, training=True)

    class NativeBN(keras.layers.BatchNormalization):  # Keras' own training rule, plus a counter to read
        def build(self, input_shape):
            super().build(input_shape)
            self.num_batches_tracked = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False)

    def native(momentum):
        return lambda info, h, dtype: NativeBN(
            epsilon=1e-5, momentum=momentum, dtype=dtype, name=f"batchnorm_{info.index}"
        )(h)

    monkeypatch.setitem(tf_backend._BUILDERS, xc.BatchNorm2d, native(0.9))  # right momentum, biased variance
    _fails_at(BN_SPEC, 1, "running_var", x, w, training=True)
    monkeypatch.setitem(tf_backend._BUILDERS, xc.BatchNorm2d, native(0.1))  # torch's number in Keras' convention
    _fails_at(BN_SPEC, 1, "running_mean", x, w, training=True)


@pytest.mark.parametrize("backend_name", ["torch", "tf"])
def test_dropout_in_training_zeroes_a_fraction_p_and_scales_by_1_over_1_minus_p(both_backends, backend_name):
    import torch

    p, n = 0.3, 200_000
    spec = xc.Sequential(xc.Dropout(p), input_shape=(n,))
    model = xc.build(spec, backend_name, dtype="float32")
    x = np.ones((1, n), dtype="float32")
    if backend_name == "torch":
        model.train()
        y = model(torch.from_numpy(x)).numpy()
    else:
        y = np.asarray(model(x, training=True))
    zeroed = float(np.mean(y == 0))
    # binomial: std sqrt(p(1-p)/n) = 0.001; 6 standard deviations
    assert abs(zeroed - p) < 6 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)
    np.testing.assert_array_equal(xc.predict(model, x), x)  # inference: identity


def test_training_parity_with_batchnorm_and_pools(both_backends):
    # convs before BatchNorm without bias, as usual: a bias there gets no gradient, only rounding noise, and
    # max |a - b| / max |a| of a tensor that stays at noise level measures nothing
    spec = xc.Sequential(
        xc.Conv2d(1, 4, 3, padding=1, bias=False),
        xc.BatchNorm2d(4),
        xc.ReLU(),
        xc.MaxPool2d(2),
        xc.Conv2d(4, 4, 3, padding=1, bias=False),
        xc.BatchNorm2d(4, momentum=None),
        xc.GELU(),
        xc.AvgPool2d(2, ceil_mode=True),
        xc.Flatten(),
        xc.BatchNorm1d(16),
        xc.Dropout(0.0),
        xc.Linear(None, 5),
        input_shape=(1, 8, 8),
    )
    r = train_parity(spec, steps=10, batch=8, dtype="float64")
    assert r.max_param_diff <= 1e-9, r.param_diffs
    assert r.param_diffs["1.running_var"] <= 1e-9 and r.param_diffs["9.running_mean"] <= 1e-9
    r32 = train_parity(spec, steps=10, batch=8, dtype="float32")
    assert r32.max_param_diff <= 1e-4, r32.param_diffs
    with pytest.raises(ValueError, match="dropout masks differ"):
        train_parity(xc.Sequential(xc.Flatten(), xc.Dropout(0.5), xc.Linear(None, 2), input_shape=(1, 2, 2)))


def test_batchnorm1d_after_flatten_is_permuted_like_a_linear(both_backends):
    spec = xc.Sequential(
        xc.Conv2d(2, 3, 1),
        xc.Flatten(),
        xc.Tanh(),
        xc.BatchNorm1d(27),
        xc.Dropout(0.2),
        xc.Linear(None, 4),
        input_shape=(2, 3, 3),
    )
    tm = xc.build(spec, "torch", seed=0)
    w = xc.get_weights(tm)
    rng = np.random.default_rng(0)
    for k in ("3.weight", "3.bias", "3.running_mean"):
        w[k] = rng.standard_normal(27)
    w["3.running_var"] = rng.uniform(0.1, 2, 27)
    xc.set_weights(tm, w)
    km = xc.build(spec, "tf")
    xc.transfer_weights(tm, km)
    back = xc.get_weights(km)
    for k, v in xc.get_weights(tm).items():
        np.testing.assert_array_equal(back[k], v)  # bit-exact round trip, int64 counter included
    assert back["3.num_batches_tracked"].dtype == np.int64
    x = rng.standard_normal((4, 2, 3, 3)).astype("float32")
    assert xc.testing.max_rel_diff(xc.predict(tm, x), xc.predict(km, x)) <= 1e-5


def test_torch_models_are_built_in_eval_mode_and_predict_restores_the_mode(both_backends):
    spec = xc.Sequential(xc.Flatten(), xc.BatchNorm1d(4), input_shape=(1, 2, 2))
    tm = xc.build(spec, "torch")
    assert not tm.training
    tm.train()
    xc.predict(tm, np.ones((3, 1, 2, 2), dtype="float32"))
    assert tm.training and int(xc.get_weights(tm)["1.num_batches_tracked"]) == 0


HAND_KERAS_LAYERS = [
    ("MaxPooling2D same, odd size", lambda k: k.layers.MaxPooling2D(2, 2, padding="same")),
    ("AveragePooling2D same", lambda k: k.layers.AveragePooling2D(3, 2, padding="same")),
    ("AveragePooling2D valid", lambda k: k.layers.AveragePooling2D(2)),
    ("BatchNormalization", lambda k: k.layers.BatchNormalization(momentum=0.8, epsilon=1e-4)),
    ("LeakyReLU", lambda k: k.layers.LeakyReLU(0.1)),
    ("ELU", lambda k: k.layers.ELU(0.5)),
    ("Softmax over H", lambda k: k.layers.Softmax(axis=1)),
    ("Activation gelu", lambda k: k.layers.Activation("gelu")),
    ("Activation sigmoid", lambda k: k.layers.Activation("sigmoid")),
    ("Conv2D tanh", lambda k: k.layers.Conv2D(3, 3, padding="same", activation="tanh")),
    ("Conv2D swish", lambda k: k.layers.Conv2D(3, 1, activation="swish")),
    ("Dropout", lambda k: k.layers.Dropout(0.4)),
    ("Identity", lambda k: k.layers.Identity()),
]


@pytest.mark.parametrize("name", [n for n, _ in HAND_KERAS_LAYERS])
def test_hand_written_keras_layers_port_to_torch(both_backends, name):
    import keras

    make = dict(HAND_KERAS_LAYERS)[name]
    model = keras.Sequential(
        [
            keras.Input((7, 7, 3)),
            make(keras),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    for v in model.non_trainable_variables:  # moving statistics as after training
        v.assign(np.random.default_rng(0).uniform(0.2, 2.0, v.shape).astype("float32"))
    tm = xc.port(model, to="torch")  # verified: raises beyond float32 tolerance
    x = np.random.default_rng(1).standard_normal((3, 3, 7, 7)).astype("float32")
    expected = xc.to_nchw(np.asarray(model(xc.to_nhwc(x)))) if False else np.asarray(model(xc.to_nhwc(x)))
    assert xc.testing.max_rel_diff(expected, xc.predict(tm, x)) <= 1e-5


def test_hand_written_torch_modules_port_to_keras(both_backends):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 2 * 2, 5)

        def forward(self, x):
            x = F.max_pool2d(F.leaky_relu(self.bn(self.conv(x)), 0.1), 2, ceil_mode=True)
            x = F.adaptive_avg_pool2d(torch.sigmoid(x), 2)
            return F.softmax(self.fc(torch.flatten(x, 1)), dim=1)

    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    km = xc.port(net, to="tf", input_shape=(3, 7, 7))
    spec = xc.spec_of(km)
    assert [l.kind for l in spec.layers] == [
        "Conv2d",
        "BatchNorm2d",
        "LeakyReLU",
        "MaxPool2d",
        "Sigmoid",
        "AdaptiveAvgPool2d",
        "Flatten",
        "Linear",
        "Softmax",
    ]


def test_keras_file_with_composed_layers_reloads_and_imports(both_backends, tmp_path):
    import keras

    spec = xc.Sequential(
        *POOLS.layers,
        xc.BatchNorm2d(2, momentum=None),
        xc.LeakyReLU(-0.5),
        xc.GELU("tanh"),
        input_shape=POOLS.input_shape,
    )
    km = xc.build(spec, "tf", seed=0, dtype="float64")
    path = str(tmp_path / "m.keras")
    km.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 2))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(km(x)))
    imported, weights = xc.from_keras(loaded, return_weights=True)
    assert [l.kind for l in imported.layers] == [l.kind for l in spec.layers]
    tm = xc.build(imported, "torch", dtype="float64")
    xc.set_weights(tm, weights)
    assert xc.testing.max_rel_diff(xc.to_nchw(np.asarray(km(x))), xc.predict(tm, xc.to_nchw(x))) <= 1e-10


def test_layer_specs_validate_and_round_trip():
    with pytest.raises(xc.SpecError, match="at most half of the kernel"):
        xc.MaxPool2d(2, padding=2)
    with pytest.raises(xc.SpecError, match="`p` must be >= 0 and <= 1"):
        xc.Dropout(1.5)
    with pytest.raises(xc.SpecError, match="`eps` must be > 0"):
        xc.BatchNorm2d(3, eps=0)
    with pytest.raises(xc.SpecError, match="batch axis"):
        xc.Softmax(0)
    with pytest.raises(xc.SpecError, match=r"layer 1 \(BatchNorm2d\): num_features=4 but its input has 3 channels"):
        xc.infer(xc.Sequential(xc.Conv2d(1, 3, 1), xc.BatchNorm2d(4), input_shape=(1, 2, 2)))
    with pytest.raises(xc.SpecError, match=r"layer 0 \(BatchNorm1d\): BatchNorm1d needs a flat input"):
        xc.infer(xc.Sequential(xc.BatchNorm1d(1), input_shape=(1, 2, 2)))
    with pytest.raises(xc.SpecError, match=r"layer 1 \(Softmax\): dim=3 is not a non-batch axis"):
        xc.infer(xc.Sequential(xc.Flatten(), xc.Softmax(3), input_shape=(1, 2, 2)))
    with pytest.raises(xc.SpecError, match=r"layer 0 \(MaxPool2d\): kernel height 3"):
        xc.infer(xc.Sequential(xc.MaxPool2d(3), input_shape=(1, 2, 2)))
    assert xc.MaxPool2d(2) == xc.MaxPool2d(2, stride=2) and repr(xc.MaxPool2d(3, 1)) == "MaxPool2d(3, stride=1)"
    # torch's output sizes, ceil_mode included
    for size, k, s, p, d, ceil in [
        (8, 2, 2, 0, 1, True),
        (7, 3, 2, 1, 1, True),
        (5, 2, 2, 1, 1, True),
        (6, 3, 3, 1, 2, False),
    ]:
        import torch

        got = xc.infer(xc.Sequential(xc.MaxPool2d(k, s, p, d, ceil), input_shape=(1, size, size)))[0].output_shape
        want = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, d, ceil_mode=ceil).shape[1:]
        assert got == tuple(want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_copy_transfer_path_is_bit_exact(both_backends, monkeypatch, tmp_path, dtype):
    """transfer_weights between torch and Keras goes through DLPack and one compiled TF function for large
    models; force it on a small spec with every layout change (conv kernels, a Dense after Flatten, BatchNorm1d
    vectors after Flatten, int64 counters) and check both directions against the numpy path."""
    from xconv import _api

    spec = xc.Sequential(
        xc.Conv2d(2, 3, 3, padding=1),
        xc.BatchNorm2d(3),
        xc.Flatten(),
        xc.BatchNorm1d(48),
        xc.Linear(None, 4),
        input_shape=(2, 4, 4),
    )
    rng = np.random.default_rng(0)
    tm = xc.build(spec, "torch", dtype=dtype)
    w = {
        k: (rng.standard_normal(v.shape).astype(dtype) if v.dtype.kind == "f" else np.asarray(rng.integers(1, 99)))
        for k, v in xc.get_weights(tm).items()
    }
    for k in ("1.running_var", "3.running_var"):
        w[k] = np.abs(w[k]) + 0.1
    xc.set_weights(tm, w)
    monkeypatch.setattr(_api, "FAST_TRANSFER_BYTES", 0)
    km = xc.build(spec, "tf", dtype=dtype)
    xc.transfer_weights(tm, km)
    back = xc.build(spec, "torch", dtype=dtype)
    xc.transfer_weights(km, back)
    for got in (xc.get_weights(km), xc.get_weights(back)):  # the numpy path reads both models
        for k, v in w.items():
            np.testing.assert_array_equal(got[k], v)
    x = rng.standard_normal((3, 2, 4, 4)).astype(dtype)
    assert xc.testing.max_rel_diff(xc.predict(tm, x), xc.predict(km, x)) <= xc.testing.TOLERANCE[dtype]
    km.save(str(tmp_path / "after_transfer.keras"))  # the cached transfer function does not get in the way


def test_checkpoints_keep_batchnorm_buffers(both_backends, tmp_path):
    spec = xc.Sequential(
        xc.Conv2d(1, 3, 3),
        xc.BatchNorm2d(3),
        xc.Flatten(),
        xc.BatchNorm1d(12),
        xc.Linear(None, 2),
        input_shape=(1, 4, 4),
    )
    tm = xc.build(spec, "torch", seed=0)
    w = xc.get_weights(tm)
    w["1.num_batches_tracked"] = np.asarray(5)
    w["1.running_var"] = np.full(3, 0.3, "float32")
    xc.set_weights(tm, w)
    xc.save(tmp_path / "m.safetensors", tm)
    loaded_spec, loaded = xc.load(tmp_path / "m.safetensors")
    assert loaded_spec == xc.spec_of(tm)
    assert loaded["1.num_batches_tracked"].shape == () and loaded["1.num_batches_tracked"].dtype == np.int64
    km = xc.load_model(tmp_path / "m.safetensors", backend="tf")
    assert int(xc.get_weights(km)["1.num_batches_tracked"]) == 5
    np.testing.assert_array_equal(xc.get_weights(km)["1.running_var"], w["1.running_var"])
    with pytest.raises(xc.WeightError, match="num_batches_tracked'.*must be an integer scalar"):
        xc.set_weights(km, {**w, "1.num_batches_tracked": np.asarray(5.0)})


def test_keras_fit_trains_batchnorm_with_torchs_rule(both_backends, tmp_path):
    """model.fit calls the model with training=True: batch statistics, the unbiased running variance and the
    batch counter, as in torch; a reloaded .keras file keeps the counter."""
    import keras

    spec = xc.Sequential(xc.Flatten(), xc.BatchNorm1d(4, momentum=None), xc.Linear(None, 2), input_shape=(1, 2, 2))
    km = xc.build(spec, "tf", seed=0)  # float32: fit's data adapter casts numpy inputs to floatx anyway
    x = np.random.default_rng(0).standard_normal((6, 2, 2, 1)).astype("float32").astype("float64")
    km.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    km.fit(x, np.zeros(6, dtype=np.int64), batch_size=6, epochs=3, shuffle=False, verbose=0)
    w = xc.get_weights(km)
    assert int(w["1.num_batches_tracked"]) == 3
    flat = x.reshape(6, -1)  # H,W,C order equals C,H,W order for one channel
    np.testing.assert_allclose(w["1.running_mean"], flat.mean(0), rtol=1e-5)  # cumulative average of 3 equal batches
    np.testing.assert_allclose(w["1.running_var"], flat.var(0, ddof=1), rtol=1e-5)  # unbiased (biased: 17% off)
    km.save(str(tmp_path / "fit.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "fit.keras"))
    assert int(reloaded.get_layer("batchnorm_1").num_batches_tracked.numpy()) == 3


@pytest.mark.parametrize("fault", ["keras LeakyReLU default slope", "keras gelu tanh approximation"])
def test_activation_mappings_that_look_right_are_caught(both_backends, monkeypatch, fault):
    """Elementwise rows are scaled by their input's size too (see compare_layerwise); a wrong activation still
    shows: Keras' LeakyReLU defaults to slope 0.3 (torch 0.01), keras.ops.gelu to the tanh form."""
    import keras

    from xconv.backends.tf import builders as tf_backend

    act = xc.LeakyReLU() if "LeakyReLU" in fault else xc.GELU()
    spec = xc.Sequential(xc.Conv2d(2, 3, 3, padding=1), act, input_shape=(2, 6, 6))
    x = 2 * np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    assert_equivalent(spec, x=x, backends=("torch", "tf"), dtype="float32", grads=False)
    if "LeakyReLU" in fault:
        wrong = lambda info, h, dtype: keras.layers.LeakyReLU(dtype=dtype, name=f"leakyrelu_{info.index}")(h)
    else:
        wrong = lambda info, h, dtype: keras.layers.Activation(
            lambda v: keras.ops.gelu(v, approximate=True), dtype=dtype, name=f"gelu_{info.index}"
        )(h)
    monkeypatch.setitem(tf_backend._BUILDERS, type(act), wrong)
    _fails_at(spec, 1, "output", x, dtype="float32")
