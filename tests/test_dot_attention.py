"""DotProductAttention, the attention of three token tensors: the same function in every backend (forward,
gradients), caught when one backend computes it otherwise, and imported from torch forwards that write
attention out (head splits, F.scaled_dot_product_attention, merges): timm's PVT v2 and Hugging Face's
SegFormer among them. What is not exactly that is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xconv as xc
from xconv.errors import SpecError, UnsupportedLayerError
from xconv.testing import TOLERANCE, assert_equivalent, max_rel_diff

from .zoo_support import REDUCTION_ZOO, port_entry


def reduction_spec(
    e: int, heads: int, ev: int, side: int, sr: int, scale: float | None = None, eps: float = 1e-5
) -> xc.Sequential:
    """Spatial-reduction attention on side*side tokens: queries from the tokens, keys and values from a
    strided conv of their map (PVT's and SegFormer's form)."""
    norm = xc.LayerNorm(e, eps=eps)
    reduced = [xc.ToMap(side, side), xc.Conv2d(e, e, sr, stride=sr), xc.ToTokens(), norm] if sr > 1 else []
    return xc.Sequential(
        xc.Linear(3, e),
        xc.DotProductAttention(
            xc.Linear(e, e),
            xc.Sequential(*reduced, xc.Linear(e, e)),
            xc.Sequential(*reduced, xc.Linear(e, ev)),
            num_heads=heads,
            scale=scale,
        ),
        xc.Linear(ev, 4),
        input_shape=(side * side, 3),
    )


@st.composite
def cases(draw, float32: bool = False):
    """Spatial-reduction attention specs, weights and batches; ``float32``: LayerNorm eps 0.1, as the toolkit's
    float32 strategies draw (a token's few features that nearly coincide divide their float32 rounding by
    sqrt(var + eps))."""
    heads = draw(st.sampled_from([1, 2, 3]))
    # (float32: heads of 2 to 4 features; a head of one feature sums its query's gradient from products whose
    # sum cancels, which the frameworks' float32 autograd rounds to ~1e-4 of it, measured, numpy to 5e-6)
    e = heads * draw(st.integers(2, 4) if float32 else st.integers(1, 3))
    ev = heads * draw(st.integers(1, 3))
    side, sr = draw(st.sampled_from([(2, 1), (4, 2), (3, 1), (4, 1)]))
    # (float32: a scale up to 1.5 times the default, as models use; larger ones saturate the softmax, whose
    # float32 gradient torch's sdpa kernel then rounds differently from a plain softmax, ~1e-4 measured)
    factor = st.floats(0.25, 1.5) if float32 else st.floats(0.05, 4.0)
    scale = draw(st.one_of(st.none(), factor.map(lambda f: f * (e // heads) ** -0.5)))
    spec = reduction_spec(e, heads, ev, side, sr, scale, eps=0.1 if float32 else 1e-5)
    from xconv.testing import strategies

    return spec, draw(strategies.weights(spec)), draw(strategies.inputs(spec))


@settings(max_examples=12, deadline=None)
@given(case=cases())
def test_attention_of_three_token_tensors_is_the_same_function_in_every_backend_float64(both_backends, case):
    assert_equivalent(*case)


@settings(max_examples=8, deadline=None)
@given(case=cases(float32=True))
def test_attention_of_three_token_tensors_is_the_same_function_in_every_backend_float32(both_backends, case):
    assert_equivalent(*case, dtype="float32")


def test_its_spec_is_checked():
    q = xc.Linear(4, 4)
    with pytest.raises(SpecError, match="exactly three branches"):
        xc.DotProductAttention(q, q)
    with pytest.raises(SpecError, match="num_heads"):
        xc.DotProductAttention(q, q, q, num_heads=0)
    with pytest.raises(SpecError, match="scale"):
        xc.DotProductAttention(q, q, q, scale=0.0)
    with pytest.raises(SpecError, match="num_heads=3 must divide"):
        xc.infer(xc.Sequential(xc.DotProductAttention(q, q, q, num_heads=3), input_shape=(5, 4)))
    with pytest.raises(SpecError, match="keys must have the queries' features"):
        xc.infer(xc.Sequential(xc.DotProductAttention(q, xc.Linear(4, 6), q), input_shape=(5, 4)))
    with pytest.raises(SpecError, match="token tensors"):
        xc.infer(xc.Sequential(xc.DotProductAttention(xc.Flatten(), xc.Flatten(), xc.Flatten()), input_shape=(4,)))
    spec = reduction_spec(4, 2, 6, 4, 2, scale=0.3)
    assert xc.from_dict(spec.to_dict()) == spec  # (num_heads and scale kept)


# ---- a backend that computes another attention is caught at the attention ----


def _heads_strided(q, k, v, num_heads, scale=None, dropout=0.0, training=False, bias=None):
    """The heads taken every h-th feature rather than as runs of consecutive features."""
    import torch.nn.functional as F

    n, length, _ = q.shape

    def heads(t):
        return t.reshape(n, t.shape[1], t.shape[2] // num_heads, num_heads).permute(0, 3, 1, 2)

    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=scale)
    return out.transpose(1, 2).reshape(n, length, v.shape[2])


def _scale_off(q, k, v, num_heads, scale=None, dropout=0.0, training=False, bias=None):
    """The scores scaled 2% too much."""
    from xconv.kinds.token._torch import dot_product_attention

    d = q.shape[-1] // num_heads
    return dot_product_attention(q, k, v, num_heads, (d**-0.5 if scale is None else scale) * 1.02)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fault", [_heads_strided, _scale_off])
def test_a_wrong_attention_is_caught_at_its_node(both_backends, monkeypatch, fault, dtype):
    from xconv.backends import torch_backend

    spec = reduction_spec(4, 2, 4, 4, 2)
    x = np.random.default_rng(0).standard_normal((2, 16, 3))
    assert_equivalent(spec, None, x, backends=("numpy", "torch"), dtype=dtype)  # (right, it passes)
    monkeypatch.setattr(torch_backend, "dot_product_attention", fault)
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(DotProductAttention\), output"):
        assert_equivalent(spec, None, x, backends=("numpy", "torch"), dtype=dtype)


def test_a_wrong_keras_attention_is_caught_at_its_node(both_backends, monkeypatch):
    from xconv.kinds.token import _keras

    spec = reduction_spec(4, 2, 4, 4, 2)
    x = np.random.default_rng(0).standard_normal((2, 16, 3))
    call = _keras.DotProductAttentionLayer.call

    def scaled_off(self, inputs):  # (the scores scaled 2% too much)
        self.scale = (int(inputs[0].shape[-1]) // self.num_heads) ** -0.5 * 1.02
        return call(self, inputs)

    monkeypatch.setattr(_keras.DotProductAttentionLayer, "call", scaled_off)
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(DotProductAttention\), output"):
        assert_equivalent(spec, None, x, backends=("numpy", "tf"))


# ---- torch forwards that write attention out ----


def _modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Separate(nn.Module):
        """q, k and v Linears, heads split by view/transpose, sdpa, merged by transpose/reshape, a projection."""

        def __init__(self, e=8, heads=2, scale=None, hf_view=False):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(e, e) for _ in range(4))
            self.heads, self.scale, self.hf_view = heads, scale, hf_view

        def forward(self, x):
            n, length, e = x.shape
            d = e // self.heads
            shape = (n, length, -1, d) if self.hf_view else (n, length, self.heads, d)
            q, k, v = (f(x).view(shape).transpose(1, 2) for f in (self.q, self.k, self.v))
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
            return self.o(out.transpose(1, 2).contiguous().reshape(n, length, e))

    class Packed(nn.Module):
        """timm's form: one qkv Linear, reshape(N, L, 3, h, d).permute(2, 0, 3, 1, 4), unbind."""

        def __init__(self, e=8, heads=2, order=(0, 1, 2)):
            super().__init__()
            self.qkv, self.proj, self.heads, self.order = nn.Linear(e, 3 * e), nn.Linear(e, e), heads, order

        def forward(self, x):
            n, length, e = x.shape
            qkv = self.qkv(x).reshape(n, length, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
            parts = qkv.unbind(0)
            q, k, v = (parts[i] for i in self.order)
            out = F.scaled_dot_product_attention(q, k, v)
            return self.proj(out.transpose(1, 2).reshape(n, length, e))

    class Reduced(nn.Module):
        """PVT's spatial reduction: keys and values from a strided conv of the tokens' map."""

        def __init__(self, e=8, heads=2, side=4):
            super().__init__()
            self.q, self.kv, self.proj = nn.Linear(e, e), nn.Linear(e, 2 * e), nn.Linear(e, e)
            self.sr, self.norm = nn.Conv2d(e, e, 2, stride=2), nn.LayerNorm(e)
            self.heads, self.side = heads, side

        def forward(self, x):
            n, length, e = x.shape
            h = self.heads
            q = self.q(x).reshape(n, length, h, e // h).permute(0, 2, 1, 3)
            m = x.permute(0, 2, 1).reshape(n, e, self.side, self.side)
            r = self.norm(self.sr(m).reshape(n, e, -1).permute(0, 2, 1))
            k, v = self.kv(r).reshape(n, -1, 2, h, e // h).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v)
            return self.proj(out.transpose(1, 2).reshape(n, length, e))

    torch.manual_seed(0)
    return Separate, Packed, Reduced


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("form", ["separate", "hf view", "scaled", "packed", "packed, k and q swapped", "reduced"])
def test_attention_written_out_ports_both_ways(both_backends, form, dtype):
    import torch

    Separate, Packed, Reduced = _modules()
    model = {
        "separate": lambda: Separate(),
        "hf view": lambda: Separate(hf_view=True),
        "scaled": lambda: Separate(scale=0.7),
        "packed": lambda: Packed(),
        "packed, k and q swapped": lambda: Packed(order=(1, 0, 2)),
        "reduced": lambda: Reduced(),
    }[form]()
    model = (model.double() if dtype == "float64" else model).eval()
    km = xc.port(model, to="tf", input_shape=(16, 8))  # (verified on random batches)
    xc.set_weights(km, model.state_dict())  # the source's own keys
    x = np.random.default_rng(1).standard_normal((2, 16, 8)).astype(dtype)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= TOLERANCE[dtype]
    spec = xc.from_keras(km)  # and back
    assert "DotProductAttention" in {i.kind for i in xc.infer(spec)}
    tm = xc.port(km, to="torch")
    assert max_rel_diff(expect, xc.predict(tm, x)) <= TOLERANCE[dtype]


def test_what_is_not_that_attention_is_refused_by_name(both_backends):
    import torch
    import torch.nn.functional as F

    Separate, _, _ = _modules()

    class Masked(Separate):
        def __init__(self):
            super().__init__()
            self.register_buffer("mask", torch.ones(6, 6, dtype=torch.bool).tril())

        def forward(self, x):
            n, length, e = x.shape
            q, k, v = (f(x).view(n, length, 2, e // 2).transpose(1, 2) for f in (self.q, self.k, self.v))
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask).transpose(1, 2).reshape(n, length, e)

    class Causal(Separate):
        def forward(self, x):
            n, length, e = x.shape
            q, k, v = (f(x).view(n, length, 2, e // 2).transpose(1, 2) for f in (self.q, self.k, self.v))
            return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, length, e)

    class Touched(Separate):
        def forward(self, x):
            n, length, e = x.shape
            q, k, v = (f(x).view(n, length, 2, e // 2).transpose(1, 2) for f in (self.q, self.k, self.v))
            return F.scaled_dot_product_attention(q + 1, k, v).transpose(1, 2).reshape(n, length, e)

    class Unmerged(Separate):  # (the heads' outputs read in another order than head by head)
        def forward(self, x):
            n, length, e = x.shape
            q, k, v = (f(x).view(n, length, 2, e // 2).transpose(1, 2) for f in (self.q, self.k, self.v))
            return F.scaled_dot_product_attention(q, k, v).permute(0, 2, 3, 1).reshape(n, length, e)

    for cls, message in [
        (Masked, "with a mask"),
        (Causal, "is_causal=True"),
        (Touched, "reads a tensor of attention heads"),
        (Unmerged, "reads a tensor of attention heads"),
    ]:
        with pytest.raises(UnsupportedLayerError, match=message):
            xc.from_torch(cls().eval(), (6, 8))


# ---- timm's PVT v2 and Hugging Face's SegFormer ----


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(REDUCTION_ZOO))
def test_spatial_reduction_attention_models_port_to_keras(both_backends, name, dtype):
    """timm's PVT v2 and Hugging Face's SegFormer (classification, and semantic segmentation with its all-MLP
    decoder: per-stage Linears, bilinear upsampling, concatenation, a fusing conv): ported with verification,
    their own state_dict loads into the ported model, and the Keras model imports back."""
    output = REDUCTION_ZOO[name][2]
    _, km, x, y = port_entry(REDUCTION_ZOO[name], dtype)
    expect = (y.logits if output == "logits" else y).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= TOLERANCE[dtype]
    if dtype == "float32":
        kinds = {i.kind for i in xc.infer(xc.from_keras(km))}
        assert "DotProductAttention" in kinds


def test_an_exported_vit_program_ports_its_attention_written_out(both_backends):
    """An exported program keeps no modules: timm's Attention is read operation by operation."""
    import torch

    from .zoo_support import import_torchvision

    import_torchvision()
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, depth=2).eval()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype("float32"))
    program = torch.export.export(model, (x,))
    km = xc.port(program, to="tf")
    assert "DotProductAttention" in {i.kind for i in xc.infer(xc.from_keras(km))}
    with torch.no_grad():
        assert max_rel_diff(model(x).numpy(), xc.predict(km, x.numpy())) <= TOLERANCE["float32"]


def _imports_exactly(model, shape=(6, 8)):
    """``from_torch`` of ``model`` built back in torch computes what the model does (float32)."""
    import torch

    spec, weights = xc.from_torch(model, shape, return_weights=True)
    tm = xc.build(spec, "torch")
    xc.set_weights(tm, weights)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert max_rel_diff(model(x).numpy(), tm(x).numpy()) <= TOLERANCE["float32"]


def test_two_packings_of_one_tensor_and_other_flattens_import_exactly_or_are_refused(both_backends):
    """The same tokens packed two ways give other parts; a flatten that is not flatten(2) is not the merge."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PackedTwice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.val = nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x):
            n, length, _ = x.shape
            t = self.lin(x)
            a = t.reshape(n, length, 4, 2, 1).permute(2, 0, 3, 1, 4)  # part 1: features 2..3
            b = t.reshape(n, length, 2, 2, 2).permute(2, 0, 3, 1, 4)  # part 1: features 4..7
            v = self.val(x).reshape(n, length, 2, 2).transpose(1, 2)
            o1 = F.scaled_dot_product_attention(a[1], a[1], a[1]).transpose(1, 2).reshape(n, length, 2)
            o2 = F.scaled_dot_product_attention(b[1], b[1], v).transpose(1, 2).reshape(n, length, 4)
            return torch.cat([o1, o2], -1)

    class FlattenedAll(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            n, length, _ = x.shape
            q = self.lin(x).reshape(n, length, 2, 4).transpose(1, 2)
            return F.scaled_dot_product_attention(q, q, q).transpose(1, 2).flatten(end_dim=2)

    torch.manual_seed(0)
    _imports_exactly(PackedTwice().eval())
    with pytest.raises(UnsupportedLayerError, match="reads a tensor of attention heads"):
        xc.from_torch(FlattenedAll().eval(), (6, 8))


def test_a_wrong_attention_deep_in_a_stack_is_caught(both_backends, monkeypatch):
    """The checker's bound is first order in its inputs' errors: three attention blocks deep, an output off by
    1e-3 still fails (float64)."""
    from xconv.backends import torch_backend
    from xconv.kinds.token._torch import dot_product_attention

    def block(i):
        core = xc.DotProductAttention(xc.Linear(8, 8), xc.Linear(8, 8), xc.Linear(8, 8), num_heads=2, name=f"a{i}")
        return xc.Add(xc.Identity(), core)

    spec = xc.Sequential(block(0), block(1), block(2), input_shape=(6, 8))
    x = np.random.default_rng(0).standard_normal((2, 6, 8))
    assert_equivalent(spec, None, x, backends=("numpy", "torch"), grads=False)
    calls = []

    def off_at_the_last(q, k, v, num_heads, scale=None, dropout=0.0, training=False, bias=None):
        calls.append(1)
        out = dot_product_attention(q, k, v, num_heads, scale)
        return out + 1e-3 if len(calls) % 3 == 0 else out

    monkeypatch.setattr(torch_backend, "dot_product_attention", off_at_the_last)
    with pytest.raises(AssertionError, match=r"DotProductAttention\), output"):
        assert_equivalent(spec, None, x, backends=("numpy", "torch"), grads=False)


def _qkv_module():
    """A module holding timm's fused qkv Linear of 8 features to 2 heads of 4 (its forward written by each test)."""
    from torch import nn

    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)

    return Fused


def _packed(qkv):
    """timm's fused qkv of (N, L, 24) as queries, keys and values of 2 heads of 4: (N, 2, L, 4) each."""
    n, length, _ = qkv.shape
    return qkv.reshape(n, length, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)


def _by_hand(mode: str):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ByHand(nn.Module):
        """timm's non-fused path and its variants: the scores, their softmax, a dropout, then @ v."""

        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)
            self.attn_drop = nn.Dropout(0.25 if mode == "weights dropped" else 0.0)

        def forward(self, x):
            n, length, e = x.shape
            q, k, v = _packed(self.qkv(x))
            if mode == "sdpa of a scaled q":
                o = F.scaled_dot_product_attention(q * 2.0, k, v)
                return self.proj(o.transpose(1, 2).reshape(n, length, e))
            if mode == "q scaled":
                scores = (q * 0.3) @ k.transpose(-2, -1)
            elif mode == "scores divided":
                scores = torch.matmul(q, k.transpose(2, 3)) / 2.0
            elif mode == "k scaled":
                scores = q @ (k * 0.5).transpose(-2, -1)
            else:
                scores = (q @ k.transpose(-2, -1)) * 0.5
            weights = scores.softmax(-1) if mode != "softmax in float32" else scores.softmax(-1, dtype=torch.float32)
            o = self.attn_drop(weights) @ v
            return self.proj(o.transpose(1, 2).reshape(n, length, e))

    torch.manual_seed(0)
    return ByHand().eval()


@pytest.mark.parametrize(
    "mode", ["q scaled", "scores scaled", "scores divided", "sdpa of a scaled q", "weights dropped"]
)
def test_attention_written_by_hand_ports(both_backends, mode):
    import torch

    model = _by_hand(mode)
    km = xc.port(model, to="tf", input_shape=(6, 8))
    x = np.random.default_rng(1).standard_normal((2, 6, 8)).astype("float32")
    with torch.no_grad():
        assert max_rel_diff(model(torch.from_numpy(x)).numpy(), xc.predict(km, x)) <= TOLERANCE["float32"]
    scale = {"q scaled": 0.3, "sdpa of a scaled q": 1.0}.get(mode)
    (attention,) = [i.layer for i in xc.infer(xc.from_keras(km)) if i.kind == "DotProductAttention"]
    assert (attention.num_heads, attention.scale) == (2, scale)
    assert attention.dropout == (0.25 if mode == "weights dropped" else 0.0)  # (an nn.Dropout of the weights)


@pytest.mark.parametrize("mode", ["k scaled", "softmax in float32"])
def test_attention_written_by_hand_otherwise_is_refused(both_backends, mode):
    with pytest.raises(UnsupportedLayerError, match="reads a tensor of attention heads"):
        xc.from_torch(_by_hand(mode), (6, 8))


def test_a_dropout_of_the_weights_in_training_is_the_attention_s(both_backends):
    """The traced call is the eval-mode one: a dropout passed only in training is seen in a training-mode run,
    and the ported attention drops as much, in training only."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.rate = nn.Linear(8, 24), 0.5

        def forward(self, x):
            n, length, e = x.shape
            q, k, v = _packed(self.qkv(x))
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=self.rate if self.training else 0.0)
            return o.transpose(1, 2).reshape(n, length, e)

    class ByHand(Fused):
        def forward(self, x):
            n, length, e = x.shape
            q, k, v = _packed(self.qkv(x))
            weights = F.dropout((q @ k.transpose(-2, -1) * 0.5).softmax(-1), self.rate, training=self.training)
            return (weights @ v).transpose(1, 2).reshape(n, length, e)

    x = np.random.default_rng(1).standard_normal((2, 6, 8)).astype("float32")
    for cls in (Fused, ByHand):
        torch.manual_seed(0)
        model = cls().eval()
        km = xc.port(model, to="tf", input_shape=(6, 8))
        (attention,) = [i.layer for i in xc.infer(xc.from_keras(km)) if i.kind == "DotProductAttention"]
        assert attention.dropout == 0.5
        tm = xc.port(km, to="torch").train()
        with torch.no_grad():
            a, b = (tm(torch.from_numpy(x)).numpy() for _ in range(2))
        assert not np.allclose(a, b)  # (it drops in training)


def test_sizes_read_by_keyword_and_slices_to_a_traced_size(both_backends):
    import torch

    class Sized(_qkv_module()):
        def forward(self, x):
            n, length, e = x.shape
            q, k, v = _packed(self.qkv(x))
            weights = (q @ k.transpose(-2, -1) / q.size(dim=-1)).softmax(-1)
            o = (weights @ v).transpose(1, 2).reshape(n, length, e)
            return o[:, : x.size(1) - 1]

    torch.manual_seed(0)
    _imports_exactly(Sized().eval())


# ---- Keras: MultiHeadAttention as cross-attention ----


def _keras_cross(dtype: str, **call: object):
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((6, 8), dtype=dtype)
    context = keras.layers.Dense(12, dtype=dtype)(x)
    keys = keras.layers.Dense(10, dtype=dtype)(x)
    y = keras.layers.MultiHeadAttention(2, 3, dtype=dtype)(x, context)  # (keys and values: the context)
    mha = keras.layers.MultiHeadAttention(3, 2, value_dim=4, dtype=dtype, **call)
    z = mha(y, context, key=keys)
    return keras.Model(x, keras.layers.Add(dtype=dtype)([x, z]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_cross_attention_ports_to_torch(both_backends, dtype):
    """Queries from one tensor, keys and values from others: the q, k, v and output projections as Linears and
    a DotProductAttention at Keras' scale (1 / sqrt(key_dim) through float32, as Keras computes it)."""
    model = _keras_cross(dtype)
    tm = xc.port(model, to="torch")  # (verified on random batches)
    x = np.random.default_rng(1).standard_normal((2, 6, 8)).astype(dtype)
    assert max_rel_diff(np.asarray(model(x)), xc.predict(tm, x)) <= TOLERANCE[dtype]
    spec = xc.from_keras(model)
    scales = [i.layer.scale for i in xc.infer(spec) if i.kind == "DotProductAttention"]
    assert scales == [float(np.float32(3**-0.5)), float(np.float32(2**-0.5))]


def test_keras_cross_attention_keeps_its_dropout_and_a_mask_is_refused(both_backends):
    import keras

    spec = xc.from_keras(_keras_cross("float32", dropout=0.1))
    assert [i.layer.dropout for i in xc.infer(spec) if i.kind == "DotProductAttention"] == [0.0, 0.1]
    x = keras.Input((6, 8))
    context = keras.layers.Dense(8)(x)
    mask = np.tril(np.ones((6, 6), dtype=bool))
    y = keras.layers.MultiHeadAttention(2, 4)(x, context, attention_mask=mask)
    with pytest.raises(UnsupportedLayerError, match="attention_mask given"):
        xc.from_keras(keras.Model(x, y))


def test_the_numpy_reference_drops_attention_weights_in_training_with_the_gradient_of_that():
    """In training, one mask per forward pass, reused by the backward pass: its gradient is the finite
    difference of the same masked function; in inference nothing is dropped."""
    spec = xc.Sequential(
        xc.Linear(3, 4),
        xc.DotProductAttention(xc.Linear(4, 4), xc.Linear(4, 4), xc.Linear(4, 4), num_heads=2, dropout=0.3),
        input_shape=(5, 3),
    )
    model = xc.build(spec, "numpy", seed=0)
    model.train()
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    g = np.random.default_rng(1).standard_normal((2, 5, 4))
    dropped = model.forward_layers(x)[-1]  # (draws the mask)
    gx, _ = model.backward(x, g)
    eps, numeric = 1e-6, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        up, down = (model.forward_layers(x + s, update=False)[-1] for s in (step, -step))
        numeric[i] = ((up - down) * g).sum() / (2 * eps)
    assert np.abs(numeric - gx).max() <= 1e-6 * max(1.0, np.abs(gx).max())
    model.eval()
    assert not np.allclose(model(x), dropped)


def test_an_attention_whose_training_forward_makes_other_attention_calls_is_refused(both_backends):
    """Written by hand in eval, sdpa with a dropout in training: the traced calls are not the training run's."""
    import torch.nn.functional as F

    class Switches(_qkv_module()):
        def forward(self, x):
            n, length, e = x.shape
            q, k, v = _packed(self.qkv(x))
            if self.training:
                o = F.scaled_dot_product_attention(q, k, v, dropout_p=0.2, scale=0.5)
            else:
                o = (q @ k.transpose(-2, -1) * 0.5).softmax(-1) @ v
            return o.transpose(1, 2).reshape(n, length, e)

    with pytest.raises(UnsupportedLayerError, match="other attention calls"):
        xc.from_torch(Switches().eval(), (6, 8))  # (on both front-ends)
