"""Windowed attention (Swin): random hierarchical window transformers are the same function in numpy, torch and
Keras (forward, gradients, training); a wrong shift, shift mask, bias index, window order or patch merging is
caught at its node; torchvision's Swin, Swin V2 and MaxViT, timm's Swin and Swin V2 and Hugging Face's Swin port
both ways, float32 and float64, or are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xconv as xc
from xconv.errors import SpecError, UnsupportedLayerError, WeightError
from xconv.testing import TOLERANCE, assert_equivalent, max_rel_diff, strategies, train_parity

from .zoo_support import WINDOW_ZOO, timm_swin, torchvision_swin

SWIN = xc.Sequential(
    xc.Conv2d(3, 4, 2, stride=2),
    xc.LayerNorm(4),
    xc.Add(xc.Identity(), xc.Sequential(xc.LayerNorm(4), xc.WindowAttention(4, 2, 3))),
    xc.Add(xc.Identity(), xc.Sequential(xc.LayerNorm(4), xc.WindowAttention(4, 2, 3, shift_size=1))),
    xc.PatchMerging(4),
    xc.Add(xc.Identity(), xc.Sequential(xc.LayerNorm(8), xc.ChannelLinear(8, 8), xc.GELU(), xc.ChannelLinear(8, 8))),
    xc.AdaptiveAvgPool2d(1),
    xc.Flatten(),
    xc.Linear(8, 3),
    input_shape=(3, 12, 12),
)


def _random(spec: xc.Sequential, seed: int = 0, dtype: str = "float64") -> dict[str, np.ndarray]:
    """Random weights, the relative position tables too (initialised to zero they would hide a wrong index)."""
    rng = np.random.default_rng(seed)
    weights = xc.get_weights(xc.build(spec, "numpy", seed=0))
    return {
        k: v if v.dtype.kind in "iu" else (rng.standard_normal(v.shape) * 0.5).astype(dtype) for k, v in weights.items()
    }


@st.composite
def cases(draw, batch_stats: bool = True):
    spec = draw(strategies.window_specs(batch_stats=batch_stats))
    return spec, draw(strategies.weights(spec)), draw(strategies.inputs(spec))


@settings(max_examples=15)
@given(case=cases())
def test_random_window_transformers_are_the_same_function_in_every_backend_float64(both_backends, case):
    assert_equivalent(*case)


@settings(max_examples=10)
@given(case=cases(batch_stats=False))
def test_random_window_transformers_are_the_same_function_in_every_backend_float32(both_backends, case):
    assert_equivalent(*case, dtype="float32")


def test_a_window_transformer_trains_the_same_in_both_frameworks(both_backends):
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 12))
    assert_equivalent(SWIN, _random(SWIN), x, training=True)
    r = train_parity(SWIN, steps=8, dtype="float64")
    assert r.torch_losses[-1] < r.torch_losses[0]
    assert r.max_param_diff <= 1e-9, r.param_diffs


def test_window_sizes_are_checked():
    with pytest.raises(SpecError, match=r"shift_size=\(3, 3\) must be smaller than window_size=\(3, 3\)"):
        xc.WindowAttention(4, 2, 3, shift_size=3)
    with pytest.raises(SpecError, match="not divisible by num_heads=3"):
        xc.WindowAttention(4, 3, 2)
    with pytest.raises(SpecError, match=r"embed_dim=6 but its input has 3 channels"):
        xc.infer(xc.Sequential(xc.WindowAttention(6, 2, 2), input_shape=(3, 4, 4)))
    with pytest.raises(
        SpecError,
        match=r"its input is a token tensor \(16, 3\) \(tokens, features\), which a PatchMerging does not take",
    ):
        xc.infer(xc.Sequential(xc.ToTokens(), xc.PatchMerging(3), input_shape=(3, 4, 4)))


def test_the_fixed_index_is_checked_where_weights_come_in(both_backends):
    spec = xc.Sequential(xc.WindowAttention(4, 2, 2, state_index=True, name="attn"), input_shape=(4, 4, 4))
    tm = xc.build(spec, "torch", seed=0)
    state = tm.state_dict()
    assert state["attn.relative_position_index"].dtype.is_floating_point is False
    km = xc.build(spec, "tf", seed=0)
    xc.set_weights(km, state)  # (the index is not a Keras variable: checked, then left out)
    assert "attn.relative_position_index" in xc.get_weights(km)
    state["attn.relative_position_index"] = state["attn.relative_position_index"].flip(0)
    with pytest.raises(WeightError, match="relative_position_index.*fixed data of the layer"):
        xc.set_weights(km, state)


# ---- fault tests: a wrong window attention or patch merging is caught at its node ----


@pytest.mark.parametrize(
    "fault", ["shift reversed", "mask for another shift", "bias table indexed transposed", "window tokens column-major"]
)
def test_a_wrong_window_attention_is_caught_at_its_node(both_backends, monkeypatch, fault):
    from keras import ops

    from xconv.backends.tf import builders
    from xconv.kinds.window import WindowAttention, _keras, shift_mask

    class Faulty(_keras.WindowAttentionLayer):
        def build(self, input_shape):
            super().build(input_shape)
            n = self.window_size[0] * self.window_size[1]
            if fault == "mask for another shift" and self._mask is not None:
                other = WindowAttention(int(input_shape[-1]), self.num_heads, self.window_size, (2, 2))
                self._mask = shift_mask(other, *self.size)
            if fault == "bias table indexed transposed":
                self._pick = self._pick.reshape(n, n, -1).transpose(1, 0, 2).reshape(n * n, -1)

        def _roll(self, t, sign):
            return super()._roll(t, -sign if fault == "shift reversed" else sign)

        def _partition(self, t):
            if fault != "window tokens column-major":
                return super()._partition(t)
            ph, pw, _, _ = self._geometry
            (wh, ww), c = self.window_size, int(t.shape[-1])
            t = ops.transpose(ops.reshape(t, (-1, ph // wh, wh, pw // ww, ww, c)), (0, 1, 3, 4, 2, 5))
            return ops.reshape(t, (-1, wh * ww, c))

        def _reverse(self, o):
            if fault != "window tokens column-major":
                return super()._reverse(o)
            ph, pw, _, _ = self._geometry
            (wh, ww), c = self.window_size, int(o.shape[-1])
            o = ops.transpose(ops.reshape(o, (-1, ph // wh, pw // ww, ww, wh, c)), (0, 1, 4, 2, 3, 5))
            return ops.reshape(o, (-1, ph, pw, c))

    def make(info, x, dtype):
        layer = info.layer
        return Faulty(
            layer.num_heads, layer.window_size, layer.shift_size, dtype=dtype, name=builders.keras_name(info)
        )(x)

    monkeypatch.setitem(builders._BUILDERS, xc.WindowAttention, make)
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12))
    at = r"2\.1\.1" if fault in ("bias table indexed transposed", "window tokens column-major") else r"3\.1\.1"
    with pytest.raises(AssertionError, match=rf"first part at layer {at} \(WindowAttention\), output"):
        assert_equivalent(SWIN, _random(SWIN), x, backends=("numpy", "tf"), grads=False)


@pytest.mark.parametrize("fault", ["grid read as windows", "the scale of a head"])
def test_a_wrong_grid_attention_is_caught_at_its_node(both_backends, monkeypatch, fault):
    from xconv.backends.tf import builders
    from xconv.kinds.window import _keras

    class Faulty(_keras.WindowAttentionLayer):
        def build(self, input_shape):
            super().build(input_shape)
            if fault == "grid read as windows":
                self.grid = False
            else:
                self._score_scale = (int(input_shape[-1]) // self.num_heads) ** -0.5

    def make(info, x, dtype):
        layer = info.layer
        return Faulty(layer.num_heads, layer.window_size, grid=layer.grid, scale=layer.scale, dtype=dtype,
                      name=builders.keras_name(info))(x)  # fmt: skip

    monkeypatch.setitem(builders._BUILDERS, xc.WindowAttention, make)
    spec = xc.Sequential(
        xc.Conv2d(3, 4, 1), xc.WindowAttention(4, 2, (2, 3), grid=True, scale=0.5), input_shape=(3, 4, 6)
    )
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 6))
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(WindowAttention\), output"):
        assert_equivalent(spec, _random(spec), x, backends=("numpy", "tf"), grads=False)


def test_a_roll_after_the_padding_where_timm_rolls_first_is_caught_at_its_node(both_backends, monkeypatch):
    from xconv.backends.tf import builders
    from xconv.kinds.window import _keras

    def make(info, x, dtype):  # (the layer built with torchvision's order)
        layer = info.layer
        return _keras.WindowAttentionLayer(layer.num_heads, layer.window_size, layer.shift_size, dtype=dtype,
                                           name=builders.keras_name(info))(x)  # fmt: skip

    monkeypatch.setitem(builders._BUILDERS, xc.WindowAttention, make)
    spec = xc.Sequential(
        xc.Conv2d(3, 4, 1), xc.WindowAttention(4, 2, 3, shift_size=1, roll_first=True), input_shape=(3, 7, 8)
    )
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 8))
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(WindowAttention\), output"):
        assert_equivalent(spec, _random(spec), x, backends=("numpy", "tf"), grads=False)


def test_patch_merging_slices_in_another_order_are_caught_at_its_node(both_backends, monkeypatch):
    from xconv.backends.tf import builders
    from xconv.kinds.window import _keras

    class Swapped(_keras.PatchMergingLayer):
        def _neighbourhood(self, x):
            a, b, c, d = super()._neighbourhood(x)
            return [a, c, b, d]  # (the column offset first)

    def make(info, x, dtype):
        return Swapped(info.layer.features, dtype=dtype, name=builders.keras_name(info))(x)

    monkeypatch.setitem(builders._BUILDERS, xc.PatchMerging, make)
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12))
    with pytest.raises(AssertionError, match=r"first part at layer 4 \(PatchMerging\), output"):
        assert_equivalent(SWIN, _random(SWIN), x, backends=("numpy", "tf"), grads=False)


# ---- torchvision's and timm's Swin ----


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(WINDOW_ZOO))
def test_windowed_attention_models_port_to_keras(both_backends, name, dtype):
    """torchvision's Swin, Swin V2 and MaxViT, timm's Swin and Swin V2 and Hugging Face's Swin (windows of 4; of 3
    on maps they do not divide: padded); the source's own state_dict loads into the ported model (where it holds
    every weight), and the Keras model imports back."""
    import torch

    make, shape, output, loads = WINDOW_ZOO[name]
    model = make()
    model = model.double() if dtype == "float64" else model.float()
    km = xc.port(model, to="tf", input_shape=shape, output=output)  # verify=True: a random batch through both
    if loads:
        xc.set_weights(km, model.state_dict())  # (Hugging Face's q, k and v by their own keys, fused)
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(dtype)
    with torch.no_grad():
        y = model(torch.from_numpy(x))
        expect = (y.logits if output == "logits" else y).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= TOLERANCE[dtype]
    kinds = {i.kind for i in xc.infer(xc.from_keras(km))}
    assert "WindowAttention" in kinds


def test_a_ported_swin_exports_and_its_index_is_in_torchvision_state(both_backends):
    import torch

    model = torchvision_swin(4)
    spec, weights = xc.from_torch(model, (3, 32, 32), return_weights=True)
    tm = xc.build(spec, "torch")
    xc.set_weights(tm, weights)
    tm.load_state_dict(model.state_dict())  # the same keys, the index with them
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype("float32"))
    program = torch.export.export(tm, (x,))
    with torch.no_grad():
        assert max_rel_diff(model(x).numpy(), program.module()(x).numpy()) <= TOLERANCE["float32"]


def test_swin_modules_that_are_not_the_known_ones_are_refused(both_backends):
    import torch

    model = torchvision_swin(4)
    with torch.no_grad():
        index = model.features[1][0].attn.relative_position_index
        index.copy_(index.flip(0))
    with pytest.raises(UnsupportedLayerError, match=r"ShiftedWindowAttention whose relative_position_index is not"):
        xc.from_torch(model, (3, 32, 32))
    model = timm_swin()
    model.layers[0].blocks[1].attn_mask.mul_(0.5)
    with pytest.raises(UnsupportedLayerError, match=r"attn_mask is not Swin's shift mask"):
        xc.from_torch(model, (3, 32, 32))


def test_parts_of_a_block_that_are_not_the_known_ones_are_refused(both_backends):
    import torch

    model = timm_swin()
    model.layers[0].blocks[0].mlp.act = torch.nn.Softmax(dim=-1)  # (over the channels in timm, not in a spec map)
    with pytest.raises(UnsupportedLayerError, match=r"its part 'layers\.0\.blocks\.0\.mlp\.act' is a Softmax"):
        xc.from_torch(model, (3, 32, 32))

    class LoRA(torch.nn.Linear):  # (a subclass computes more than its weight)
        def forward(self, x):
            return super().forward(x) + 0.5 * x.sum(-1, keepdim=True)

    model = timm_swin()
    old = model.layers[0].blocks[0].attn.qkv
    model.layers[0].blocks[0].attn.qkv = LoRA(old.in_features, old.out_features)
    with pytest.raises(UnsupportedLayerError, match=r"projections other than nn\.Linear"):
        xc.from_torch(model, (3, 32, 32))
    unshifted = timm_swin(img_size=40, window_size=3, depths=(1,), num_heads=(2,))  # (padded, not rolled)
    assert "WindowAttention" in {i.kind for i in xc.infer(xc.from_torch(unshifted, (3, 40, 40)))}


def test_a_built_window_attention_takes_the_map_size_it_was_built_for(both_backends):
    import torch

    tm = xc.build(xc.Sequential(xc.WindowAttention(4, 2, 3, shift_size=1), input_shape=(4, 7, 7)), "torch", seed=0)
    with pytest.raises(ValueError, match="built for 7x7 maps, given 6x6"):
        tm(torch.zeros(1, 4, 6, 6))


def test_a_reference_wrong_in_float32_alone_is_not_taken_for_rounding(both_backends, monkeypatch):
    """The float32 re-measure against float64 compares with the reference's own float32 error; a reference
    whose float32 path is wrong (Keras dropping the shift mask in float32 only) must not excuse the others."""
    from xconv.backends.tf import builders
    from xconv.kinds.window import _keras

    class Float32Wrong(_keras.WindowAttentionLayer):
        def build(self, input_shape):
            super().build(input_shape)
            if self.compute_dtype == "float32":
                self._mask = None

    def make(info, x, dtype):
        layer = info.layer
        return Float32Wrong(layer.num_heads, layer.window_size, layer.shift_size, dtype=dtype,
                            name=builders.keras_name(info))(x)  # fmt: skip

    monkeypatch.setitem(builders._BUILDERS, xc.WindowAttention, make)
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12))
    with pytest.raises(AssertionError, match=r"WindowAttention"):
        assert_equivalent(SWIN, _random(SWIN), x, backends=("tf", "numpy"), dtype="float32", grads=False)


def test_hugging_face_swin_called_otherwise_is_refused_and_left_as_it_was(both_backends):
    """Called with ``always_partition=True`` a Swin layer keeps its shift on a map of one window, where Hugging
    Face's rule clamps it: refused, and the model left as it was (the importer's runs of it clamp nothing)."""
    import torch

    from .zoo_support import hf_swin

    class Partitioned(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x, always_partition=True).last_hidden_state

    model = Partitioned(hf_swin(32, 4).swin).eval()
    with pytest.raises(UnsupportedLayerError, match=r"blocks\.1' \(SwinLayer\): its exported call rolls its 4x4 map"):
        xc.from_torch(model, (3, 32, 32))
    assert [b.shift_size for b in model.inner.encoder.layers[1].blocks] == [0, 2]


def test_a_mean_of_tokens_read_otherwise_than_flattened_is_refused(both_backends):
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool = torch.nn.Conv2d(3, 4, 2, stride=2), torch.nn.AdaptiveAvgPool1d(1)

        def forward(self, x):
            tokens = self.conv(x).flatten(2).transpose(1, 2)
            return torch.softmax(self.pool(tokens.transpose(1, 2)), -1).flatten(1)  # (over the 1, not C)

    with pytest.raises(UnsupportedLayerError, match=r"reads a mean of tokens as \(N, C, 1\)"):
        xc.from_torch(Pooled().eval(), (3, 8, 8))


def test_a_reference_gradient_wrong_in_float32_alone_is_not_taken_for_rounding(both_backends, monkeypatch):
    """The same for gradients: a Keras ReLU whose float32 gradient is doubled (its forward right) as the
    reference is caught, at the gradients behind it (the ReLU after the Flatten: after a conv Keras makes it the
    conv's own activation)."""
    import keras
    import tensorflow as tf

    from xconv.backends.tf import builders

    class Doubled(keras.layers.Layer):
        def call(self, x):
            if self.compute_dtype != "float32":
                return tf.nn.relu(x)

            @tf.custom_gradient
            def relu(t):
                return tf.nn.relu(t), lambda g: 2.0 * g * tf.cast(t > 0, t.dtype)

            return relu(x)

    monkeypatch.setitem(
        builders._BUILDERS, xc.ReLU, lambda info, x, dtype: Doubled(dtype=dtype, name=builders.keras_name(info))(x)
    )
    spec = xc.Sequential(xc.Conv2d(3, 4, 3), xc.Flatten(), xc.ReLU(), xc.Linear(None, 3), input_shape=(3, 6, 6))
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    with pytest.raises(AssertionError, match=r"first part at layer 0 \(Conv2d\), grad"):
        assert_equivalent(spec, _random(spec), x, backends=("tf", "numpy"), dtype="float32")


def test_a_pad_of_nothing_is_the_tensor_itself(both_backends):
    """Window attentions pad to whole windows and, on maps that are whole windows, pad by zeros: on any layout
    and with any number of sizes, that is the tensor itself."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PadsNothing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 4, 1), nn.LayerNorm(4)

        def forward(self, x):
            t = F.pad(self.conv(x).permute(0, 2, 3, 1), (0, 0, 0, 0, 0, 0))  # (channels-last, six sizes)
            return F.pad(self.norm(t).permute(0, 3, 1, 2), (0, 0, 0, 0))

    model = PadsNothing().eval()
    km = xc.port(model, to="tf", input_shape=(3, 6, 6))
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype("float32")
    with torch.no_grad():
        assert max_rel_diff(model(torch.from_numpy(x)).numpy(), xc.predict(km, x)) <= TOLERANCE["float32"]
