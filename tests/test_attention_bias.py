"""A learned attention bias per relative offset (``DotProductAttention(bias_grid=...)``, LeViT's and
EfficientFormer's ``attention_biases[:, attention_bias_idxs]``) and the per-head parts of a packed q, k and v
(``Narrow(groups=heads)``): the same function in every backend (forward, gradients), caught when a backend
indexes the table otherwise, round trips through both importers; timm's EfficientFormer and LeViT and Hugging
Face's LeViT ported.
Any other bias index, or a table that is not learned, is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xconv as xc
from xconv.errors import SpecError, UnsupportedLayerError
from xconv.testing import TOLERANCE, assert_equivalent, max_rel_diff

from .zoo_support import BIAS_ZOO, import_torchvision, port_entry


def biased_spec(
    side: tuple[int, int], heads: int, d: int, dv: int, stride: int = 1, packed: bool = True, state: bool = False
) -> xc.Sequential:
    """Attention over the tokens of an (H, W) map with a learned bias per relative offset: q, k and v one
    Linear packed head by head (or three Linears); with ``stride``, the queries from every stride-th row and
    column of the map (LeViT's subsampling attention, a strided 1x1 conv)."""
    h, w = side
    e, packed_e = heads * d, heads * (2 * d + dv)
    if packed:
        parts = [
            xc.Narrow(2, 0, d, groups=heads),
            xc.Narrow(2, d, d, groups=heads),
            xc.Narrow(2, 2 * d, dv, groups=heads),
        ]
        head: list = [xc.Linear(3, packed_e)]
    else:
        parts = [xc.Linear(3, e), xc.Linear(3, e), xc.Linear(3, heads * dv)]
        head = []
    if stride > 1:
        source = 3 if not packed else packed_e
        parts[0] = xc.Sequential(xc.ToMap(h, w), xc.Conv2d(source, e, 1, stride=stride), xc.ToTokens())
    attention = xc.DotProductAttention(*parts, num_heads=heads, bias_grid=side, bias_stride=stride, state_index=state)
    return xc.Sequential(*head, attention, xc.Linear(heads * dv, 4), input_shape=(h * w, 3))


def _built(spec, backend, weights):
    model = xc.build(spec, backend=backend, dtype="float64")
    xc.set_weights(model, weights)
    return model


@st.composite
def cases(draw, float32: bool = False):
    heads = draw(st.sampled_from([1, 2, 3]))
    d = draw(st.integers(2, 4) if float32 else st.integers(1, 3))
    side = draw(st.sampled_from([(1, 1), (2, 3), (3, 3), (4, 2)]))
    stride = draw(st.sampled_from([1, 1, 2, 3]))
    spec = biased_spec(side, heads, d, draw(st.integers(1, 3)), stride, draw(st.booleans()), draw(st.booleans()))
    from xconv.testing import strategies

    weights = draw(strategies.weights(spec))
    for key in weights:
        if key.endswith("attention_biases"):  # (drawn like any weight, and also far from zero)
            weights[key] = weights[key] + draw(st.sampled_from([-1.0, 1.0]))
    return spec, weights, draw(strategies.inputs(spec))


@settings(max_examples=12, deadline=None)
@given(case=cases())
def test_a_learned_bias_per_offset_is_the_same_function_in_every_backend_float64(both_backends, case):
    assert_equivalent(*case)


@settings(max_examples=8, deadline=None)
@given(case=cases(float32=True))
def test_a_learned_bias_per_offset_is_the_same_function_in_every_backend_float32(both_backends, case):
    assert_equivalent(*case, dtype="float32")


def test_the_reference_gradient_of_the_table_is_the_finite_difference():
    """The numpy reference's gradient of the bias table (its entries summed where the index repeats them),
    against central differences of the loss, in float64."""
    from xconv.testing import strategies

    spec = biased_spec((3, 2), 2, 2, 2, stride=2)
    weights = strategies.weights(spec).example()
    model = _built(spec, "numpy", weights)
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    upstream = np.random.default_rng(1).standard_normal(model(x).shape)
    _, grads = model.backward(x, upstream)
    key = "1.attention_biases"
    table = model.weights[key]
    numeric = np.zeros_like(table)
    for i in np.ndindex(table.shape):
        old = table[i]
        table[i] = old + 1e-6
        up = float((model(x) * upstream).sum())
        table[i] = old - 1e-6
        down = float((model(x) * upstream).sum())
        table[i] = old
        numeric[i] = (up - down) / 2e-6
    assert np.abs(grads[key] - numeric).max() <= 1e-6 * max(1.0, np.abs(numeric).max())
    assert np.abs(numeric).max() > 1e-3  # (the table matters)


def test_its_spec_is_checked():
    q = xc.Linear(3, 4)
    with pytest.raises(SpecError, match="needs bias_grid"):
        xc.DotProductAttention(q, q, q, bias_stride=2)
    with pytest.raises(SpecError, match="needs bias_grid"):
        xc.DotProductAttention(q, q, q, state_index=True)
    with pytest.raises(SpecError, match="bias_grid"):
        xc.DotProductAttention(q, q, q, bias_grid=(0, 2))
    wrong = xc.Sequential(xc.DotProductAttention(q, q, q, bias_grid=(2, 2)), input_shape=(6, 3))
    with pytest.raises(SpecError, match=r"needs 4 keys and 4 queries; it has 6 and 6"):
        xc.infer(wrong)
    with pytest.raises(SpecError, match="groups=4 does not divide"):
        xc.infer(xc.Sequential(xc.Linear(3, 6), xc.Narrow(2, 0, 1, groups=4), input_shape=(2, 3)))
    with pytest.raises(SpecError, match="exceeds the size of each of its 2 groups of 3"):
        xc.infer(xc.Sequential(xc.Linear(3, 6), xc.Narrow(2, 2, 2, groups=2), input_shape=(2, 3)))


def test_the_bias_index_is_levit_s():
    """The index is |dy| * W + |dx| between queries every stride-th row and column and all keys, as timm's
    LeViT computes it for its attention and its subsampling attention."""
    import torch

    from xconv.kinds.token._dot import bias_index

    for (h, w), stride in [((4, 4), 1), ((4, 4), 2), ((3, 5), 2), ((7, 7), 3)]:
        k_pos = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)
        q_pos = torch.stack(
            torch.meshgrid(torch.arange(0, h, stride), torch.arange(0, w, stride), indexing="ij")
        ).flatten(1)
        rel = (q_pos[..., :, None] - k_pos[..., None, :]).abs()
        assert np.array_equal(bias_index((h, w), stride), (rel[0] * w + rel[1]).numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_bias_indexed_with_rows_and_columns_swapped_is_caught_at_its_node(both_backends, monkeypatch, dtype):
    """torch's bias index made for the map transposed ((W, H) for an (H, W) map): caught at the attention."""
    from xconv.backends import torch_backend
    from xconv.kinds.token._dot import bias_index
    from xconv.testing import strategies

    spec = biased_spec((2, 3), 2, 2, 2)
    weights = strategies.weights(spec).example()
    weights["1.attention_biases"] = np.random.default_rng(0).standard_normal((2, 6))
    x = np.random.default_rng(1).standard_normal((2, 6, 3))
    assert_equivalent(spec, weights, x, backends=("numpy", "torch"), dtype=dtype)  # (right, it passes)
    monkeypatch.setattr(torch_backend, "bias_index", lambda grid, stride: bias_index(grid[::-1], stride))
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(DotProductAttention\), output"):
        assert_equivalent(spec, weights, x, backends=("numpy", "torch"), dtype=dtype)


def test_a_keras_bias_of_another_stride_is_caught_at_its_node(both_backends, monkeypatch):
    from xconv.kinds.token import _keras
    from xconv.kinds.token._dot import bias_index
    from xconv.testing import strategies

    spec = biased_spec((4, 4), 1, 2, 2, stride=2, packed=False)
    weights = strategies.weights(spec).example()
    weights["0.attention_biases"] = np.random.default_rng(0).standard_normal((1, 16))
    x = np.random.default_rng(1).standard_normal((2, 16, 3))
    assert_equivalent(spec, weights, x, backends=("numpy", "tf"))
    # (Keras' queries taken as the first points of the map, not every other row and column)
    monkeypatch.setattr(_keras, "bias_index", lambda grid, stride: bias_index(grid, 1)[: len(bias_index(grid, stride))])
    with pytest.raises(AssertionError, match=r"DotProductAttention\), output"):
        assert_equivalent(spec, weights, x, backends=("numpy", "tf"))


def test_packed_parts_taken_in_another_order_are_caught(both_backends, monkeypatch):
    """A Narrow with groups that takes each head's slice from the next head's group: caught at that layer."""
    from xconv.kinds.channel import _torch as channel_torch
    from xconv.testing import strategies

    spec = biased_spec((2, 2), 2, 2, 2)
    weights = strategies.weights(spec).example()
    x = np.random.default_rng(1).standard_normal((2, 4, 3))
    real = channel_torch.NarrowModule.forward

    def rolled(self, t):
        out = real(self, t)
        return out.roll(self.length, dims=self.dim) if self.groups > 1 else out

    monkeypatch.setattr(channel_torch.NarrowModule, "forward", rolled)
    with pytest.raises(AssertionError, match=r"\(Narrow\), output"):
        assert_equivalent(spec, weights, x, backends=("numpy", "torch"))


@pytest.mark.parametrize("stride, state", [(1, False), (2, True)])
def test_it_round_trips_through_both_importers_and_files(both_backends, tmp_path, stride, state):
    import keras
    import torch

    from xconv.testing import strategies

    spec = biased_spec((3, 3), 2, 2, 3, stride=stride, state=state)
    weights = strategies.weights(spec).example()
    x = np.random.default_rng(0).standard_normal((2, 9, 3))
    tm = _built(spec, "torch", weights)
    keys = set(tm.state_dict())
    assert ("1.attention_bias_idxs" in keys) is state and "1.attention_biases" in keys
    with torch.no_grad():
        expect = tm(torch.from_numpy(x)).numpy()
    back, back_weights = xc.from_torch(tm, (9, 3), return_weights=True)
    assert xc.infer(back)[-2].layer.bias_grid == (3, 3)
    assert max_rel_diff(expect, _built(back, "numpy", back_weights)(x)) <= 1e-12
    km = _built(spec, "tf", weights)
    km.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    again, again_weights = xc.from_keras(loaded, return_weights=True)
    assert xc.infer(again)[-2].layer.bias_stride == stride
    assert max_rel_diff(expect, _built(again, "numpy", again_weights)(x)) <= 1e-12
    assert xc.from_dict(spec.to_dict()) == spec


# ---- timm's EfficientFormer, and what is not that bias ----


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(BIAS_ZOO))
def test_models_with_a_learned_attention_bias_port_to_keras(both_backends, name, dtype):
    """Ported with verification, its own state_dict loads into the ported model, and the Keras model imports
    back with the bias."""
    output = BIAS_ZOO[name][2]
    _, km, x, y = port_entry(BIAS_ZOO[name], dtype)
    expect = (y.logits if output == "logits" else y).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= TOLERANCE[dtype]
    if dtype == "float32":
        grids = [i.layer.bias_grid for i in xc.infer(xc.from_keras(km)) if i.kind == "DotProductAttention"]
        assert grids and all(g is not None for g in grids)


def _timm_attention():
    import_torchvision()
    import torch
    from timm.models.efficientformer import Attention

    torch.manual_seed(0)
    module = Attention(dim=8, key_dim=2, num_heads=2, attn_ratio=2, resolution=3)
    module.eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def test_timm_s_attention_alone_ports_both_ways(both_backends):
    module = _timm_attention()
    km = xc.port(module.double(), "tf", input_shape=(9, 8))
    spec = xc.from_keras(km)
    attention = next(i.layer for i in xc.infer(spec) if i.kind == "DotProductAttention")
    assert (attention.bias_grid, attention.state_index, attention.num_heads) == ((3, 3), True, 2)
    xc.port(km, "torch")


def test_another_bias_index_or_a_table_not_learned_is_refused(both_backends):
    import torch

    module = _timm_attention()
    with torch.no_grad():
        module.attention_bias_idxs.copy_(module.attention_bias_idxs.flip(1))  # (not |dy| * W + |dx|)
    with pytest.raises(UnsupportedLayerError, match="not the relative-offset index of a map"):
        xc.from_torch(module, (9, 8))
    module = _timm_attention()
    table = module.attention_biases.detach().clone()
    del module.attention_biases
    module.register_buffer("attention_biases", table)
    with pytest.raises(UnsupportedLayerError, match="is not learned"):
        xc.from_torch(module, (9, 8))


# ---- LeViT's other forms: tokens normalised as one batch, a map subsampled by slicing ----


class _TokenNorm:
    """LeViT's LinearNorm: a Linear, then BatchNorm1d of the (N * L, E) batch of its tokens' features."""

    def __new__(cls, flatten="flatten", back="reshape_as"):
        import torch

        class LinearNorm(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(3, 4)
                self.bn = torch.nn.BatchNorm1d(4)

            def forward(self, x):
                t = self.linear(x)
                flat = t.flatten(0, 1)
                y = self.bn(flat)
                out = y.reshape_as(t) if back == "reshape_as" else y.reshape(t.shape[0], -1) + 1
                return out if flatten == "flatten" else out + flat.reshape_as(t)  # (the flat batch read again)

        return LinearNorm()


def test_tokens_normalised_as_one_batch_import_as_a_batch_norm_on_tokens(both_backends):
    import torch

    from xconv.testing import strategies

    model = _TokenNorm()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    spec = xc.from_torch(model, (5, 3))
    assert [i.kind for i in xc.infer(spec)] == ["Linear", "BatchNorm1d"]
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(xc.port(model, "tf", (5, 3)), x)) <= TOLERANCE["float32"]
    # (and in training: statistics over every token of the batch, in every backend)
    case = xc.Sequential(xc.Linear(3, 4), xc.BatchNorm1d(4), input_shape=(5, 3))
    assert_equivalent(case, strategies.weights(case).example(), x.astype(np.float64), training=True)


def test_other_uses_of_tokens_flattened_with_the_batch_are_refused(both_backends):
    import torch

    with pytest.raises(UnsupportedLayerError, match="flattened with the batch"):
        xc.from_torch(_TokenNorm(flatten="read again").eval(), (4, 3))
    with pytest.raises(UnsupportedLayerError, match="normalised as one batch"):
        xc.from_torch(_TokenNorm(back="other").eval(), (5, 3))

    class ChannelNorm(torch.nn.Module):  # (torch's BatchNorm1d on (N, C, L) normalises C, not token features)
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(5)

        def forward(self, x):
            return self.bn(x)

    with pytest.raises(UnsupportedLayerError, match=r"normalises the channels C of an \(N, C, L\) tensor"):
        xc.from_torch(ChannelNorm().eval(), (5, 5))


def test_a_map_subsampled_by_slicing_imports_as_a_pool_of_one_pixel(both_backends):
    import torch

    class Subsample(torch.nn.Module):
        def __init__(self, key, channels_last=False):
            super().__init__()
            self.conv, self.key, self.channels_last = torch.nn.Conv2d(3, 4, 1), key, channels_last

        def forward(self, x):
            y = self.conv(x)
            if self.channels_last:  # (LeViT's: tokens viewed as (N, H, W, C), sliced, read back as tokens)
                t = y.flatten(2).transpose(1, 2)
                return t.view(t.shape[0], 5, 7, 4)[self.key].reshape(t.shape[0], -1, 4)
            return y[self.key]

    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    for key, last in [((slice(None), slice(None), slice(None, None, 2), slice(None, None, 3)), False),
                      ((slice(None), slice(None, None, 2), slice(None, None, 2)), True)]:  # fmt: skip
        model = Subsample(key, last).eval()
        spec = xc.from_torch(model, (3, 5, 7))
        assert any(i.kind == "MaxPool2d" and i.layer.kernel_size == (1, 1) for i in xc.infer(spec))
        with torch.no_grad():
            expect = model(torch.from_numpy(x)).numpy()
        assert max_rel_diff(expect, xc.predict(xc.port(model, "tf", (3, 5, 7)), x)) <= TOLERANCE["float32"]
    offset = Subsample((slice(None), slice(None), slice(1, None, 2))).eval()
    with pytest.raises(UnsupportedLayerError, match="step 1"):
        xc.from_torch(offset, (3, 5, 7))


# ---- attention over the pixels of a map, heads of its channels (Visformer) ----


def _map_attention(form: str = "packed"):
    import torch
    import torch.nn.functional as F

    class MapAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Conv2d(4, 12, 1)
            self.proj = torch.nn.Conv2d(4, 4, 1)

        def forward(self, x):
            b, _, h, w = x.shape
            if form == "packed":  # (Visformer's)
                q, k, v = self.qkv(x).reshape(b, 3, 2, 2, -1).permute(1, 0, 2, 4, 3).unbind(0)
            elif form == "heads interleaved":  # (another packing: refused)
                q, k, v = self.qkv(x).reshape(b, 3, 2, 2, -1).permute(1, 0, 3, 4, 2).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v)
            return self.proj(out.permute(0, 1, 3, 2).reshape(b, -1, h, w))

    return MapAttention().eval()


def test_attention_over_a_map_s_pixels_ports(both_backends):
    import torch

    model = _map_attention()
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 2)).astype(np.float32)
    km = xc.port(model, "tf", (4, 3, 2))
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= TOLERANCE["float32"]
    kinds = [i.kind for i in xc.infer(xc.from_torch(model, (4, 3, 2)))]
    assert "DotProductAttention" in kinds and "ToTokens" in kinds and "ToMap" in kinds
    with pytest.raises(UnsupportedLayerError, match="reads a tensor of attention heads"):
        xc.from_torch(_map_attention("heads interleaved"), (4, 3, 2))


def test_a_batch_of_flattened_tokens_returned_is_refused(both_backends):
    import torch

    class Returned(torch.nn.Module):
        def __init__(self, normed: bool):
            super().__init__()
            self.linear, self.bn, self.normed = torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), normed

        def forward(self, x):
            flat = self.linear(x).flatten(0, 1)
            return self.bn(flat) if self.normed else flat

    for normed, message in [(False, "flattened with the batch"), (True, "normalised as one batch")]:
        with pytest.raises(UnsupportedLayerError, match=message):
            xc.from_torch(Returned(normed).eval(), (5, 3))


def test_one_index_for_two_attentions_ports_and_a_larger_table_or_misused_bias_is_refused(both_backends):
    import torch
    import torch.nn.functional as F

    from xconv.kinds.token._dot import bias_index

    class Biased(torch.nn.Module):
        def __init__(self, extra: int = 0, use: str = "mask"):
            super().__init__()
            self.qkv_a, self.qkv_b = torch.nn.Linear(4, 12), torch.nn.Linear(4, 12)
            self.a = torch.nn.Parameter(torch.randn(2, 4 + extra))
            self.b = torch.nn.Parameter(torch.randn(2, 4 + extra))
            self.register_buffer("idx", torch.from_numpy(bias_index((2, 2))))
            self.use = use

        def attend(self, x, qkv, table):
            q, k, v = qkv(x).reshape(x.shape[0], 4, 3, 2, 2).permute(2, 0, 3, 1, 4).unbind(0)
            bias = table[:, self.idx]
            if self.use == "twice":
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias * 2).transpose(1, 2).reshape(x.shape)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(x.shape)

        def forward(self, x):
            return self.attend(self.attend(x, self.qkv_a, self.a), self.qkv_b, self.b)

    x = np.random.default_rng(0).standard_normal((2, 4, 4)).astype(np.float32)
    model = Biased().eval()
    km = xc.port(model, "tf", (4, 4))  # (the one index buffer read by both)
    with torch.no_grad():
        assert max_rel_diff(model(torch.from_numpy(x)).numpy(), xc.predict(km, x)) <= TOLERANCE["float32"]
    with pytest.raises(UnsupportedLayerError, match="has 7 entries per head"):
        xc.from_torch(Biased(extra=3).eval(), (4, 4))
    with pytest.raises(UnsupportedLayerError, match="reads an attention bias"):
        xc.from_torch(Biased(use="twice").eval(), (4, 4))


def test_importing_leaves_a_module_s_bias_cache_as_it_was(both_backends):
    """timm's attention caches its bias in eval mode and empties the cache in train(); the import's runs in the
    other mode put it back, so the module computes what it computed before."""
    import torch

    module = _timm_attention()
    x = torch.randn(2, 9, 8)
    with torch.no_grad():
        module(x)
        module.attention_biases.add_(1.0)  # (the cache is now the module's own, stale, state)
        before = module(x)
    spec, weights = xc.from_torch(module, (9, 8), return_weights=True)  # (from the parameters, not the cache)
    with torch.no_grad():
        assert torch.equal(module(x), before)
        module.attention_bias_cache.clear()
        fresh = module(x).numpy()
    ported = xc.build(spec, backend="torch")
    xc.set_weights(ported, weights)
    with torch.no_grad():
        assert max_rel_diff(fresh, ported(x).numpy()) <= TOLERANCE["float32"]


def test_a_cache_its_parameters_do_not_give_is_refused_and_no_cache_is_changed(both_backends):
    """A module reading a ``*_cache`` dict that is not a pure cache (or a stale one) computes otherwise than its
    trace, which runs with the caches empty: refused. Its dicts stay the same objects with the same contents;
    dicts of other types are not touched."""
    import collections

    import torch

    class Scaled(torch.nn.Module):
        def __init__(self, cache):
            super().__init__()
            self.conv, self.scale_cache = torch.nn.Conv2d(3, 2, 1), cache
            self.scale_cache["scale"] = 2.0

        def forward(self, x):
            return self.conv(x) * self.scale_cache.get("scale", 1.0)

    plain = Scaled({}).eval()
    cache = plain.scale_cache
    with pytest.raises(UnsupportedLayerError, match="a cache of the module's"):
        xc.from_torch(plain, (3, 4, 4))
    assert plain.scale_cache is cache and cache == {"scale": 2.0}
    other = Scaled(collections.defaultdict(float)).eval()  # (not a plain dict: read as it is, a constant)
    assert [i.kind for i in xc.infer(xc.from_torch(other, (3, 4, 4)))] == ["Conv2d", "Rescaling"]
    assert type(other.scale_cache) is collections.defaultdict and dict(other.scale_cache) == {"scale": 2.0}
    stale = _timm_attention()
    x = torch.randn(2, 9, 8)
    with torch.no_grad():
        stale(x)
        stale.attention_biases.mul_(-3.0)  # (its cache now computes otherwise than its parameters)
        before = stale(x)
    with pytest.raises(UnsupportedLayerError, match="a cache of the module's"):
        xc.port(stale, "tf", (9, 8))
    with torch.no_grad():
        assert torch.equal(stale(x), before)  # (port's own runs in eval mode left its cache as it was too)


def test_a_view_of_a_map_of_one_row_is_not_read_as_heads(both_backends):
    """On a map of one row H*W is W: ShuffleNet's view (N, g, C / g, H, W) is a channel shuffle there too."""
    import torch

    class Shuffle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            n, c, h, w = y.shape
            return y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)

    spec = xc.from_torch(Shuffle().eval(), (3, 1, 5))
    assert [i.kind for i in xc.infer(spec)] == ["Conv2d", "ChannelShuffle"]


def test_a_model_run_before_its_import_ports(both_backends):
    """Hugging Face's LeViT caches its biases at its first eval-mode call; an export would read the cached tensor
    as a constant of the forward. The import traces it with its caches empty."""
    import torch

    from .zoo_support import hf_levit

    model = hf_levit().eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).logits.numpy()
    km = xc.port(model, "tf", (3, 64, 64), output="logits")
    assert max_rel_diff(expect, xc.predict(km, x)) <= TOLERANCE["float32"]
