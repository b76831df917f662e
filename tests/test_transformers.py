"""Tokens and attention: random transformer specs are the same function in numpy, torch and Keras (forward,
gradients, training); torchvision's ViT, nn.TransformerEncoder, timm's ViT and DeiT and a hand-written Keras ViT
with MultiHeadAttention port both ways, float32 and float64, weights bit-exact through a round trip; a wrong
attention, class token or patch order is caught at its node."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xconv as xc
from xconv.errors import PortError, SpecError, UnsupportedLayerError
from xconv.testing import TOLERANCE, assert_equivalent, max_rel_diff, strategies, train_parity

from .zoo_support import import_torchvision

VIT = xc.Sequential(
    xc.Conv2d(3, 8, 2, stride=2),
    xc.ToTokens(),
    xc.ClassToken(8),
    xc.PositionEmbedding(10, 8),
    xc.Add(xc.Identity(), xc.Sequential(xc.LayerNorm(8), xc.SelfAttention(8, 2))),
    xc.Add(xc.Identity(), xc.Sequential(xc.LayerNorm(8), xc.Linear(8, 12), xc.GELU(), xc.Linear(12, 8))),
    xc.LayerNorm(8),
    xc.SelectToken(0),
    xc.Linear(8, 3),
    input_shape=(3, 6, 6),
)


def _random(spec: xc.Sequential, seed: int = 0, dtype: str = "float64") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = xc.get_weights(xc.build(spec, "numpy", seed=0))
    return {k: (rng.standard_normal(v.shape) * 0.5).astype(dtype) for k, v in shapes.items()}


@st.composite
def cases(draw, batch_stats: bool = True):
    spec = draw(strategies.transformer_specs(batch_stats=batch_stats))
    return spec, draw(strategies.weights(spec)), draw(strategies.inputs(spec))


@settings(max_examples=20)
@given(case=cases())
def test_random_transformers_are_the_same_function_in_every_backend_float64(both_backends, case):
    assert_equivalent(*case)


@settings(max_examples=20)
@given(case=cases(batch_stats=False))
def test_random_transformers_are_the_same_function_in_every_backend_float32(both_backends, case):
    assert_equivalent(*case, dtype="float32")  # (the weights are cast to float32)


def test_a_transformer_is_the_same_in_training_mode(both_backends):
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6))
    assert_equivalent(VIT, _random(VIT), x, training=True)


def test_a_small_vit_trains_the_same_in_both_frameworks(both_backends):
    r = train_parity(VIT, steps=10, dtype="float64")
    assert r.torch_losses[-1] < r.torch_losses[0]  # it trained
    assert r.max_param_diff <= 1e-9, r.param_diffs
    assert r.max_loss_diff <= 1e-9


def test_heads_must_divide_the_features_and_tokens_go_only_where_they_are_taken():
    with pytest.raises(SpecError, match="not divisible by num_heads=3"):
        xc.SelfAttention(10, 3)
    with pytest.raises(SpecError, match=r"layer 2 \(GroupNorm\): its input is a token tensor \(4, 2\)"):
        xc.infer(xc.Sequential(xc.ToTokens(), xc.Linear(2, 2), xc.GroupNorm(1, 2), input_shape=(2, 2, 2)))
    with pytest.raises(SpecError, match=r"layer 1 \(Conv2d\): its input is a token tensor \(4, 2\)"):
        xc.infer(xc.Sequential(xc.ToTokens(), xc.Conv2d(2, 2, 1), input_shape=(2, 2, 2)))
    with pytest.raises(SpecError, match="length=5 but its input has 4 tokens"):
        xc.infer(xc.Sequential(xc.ToTokens(), xc.PositionEmbedding(5, 2), input_shape=(2, 2, 2)))


# ---- fault tests: a wrong mapping is caught at its node ----


def _faulty_attention(monkeypatch, call):
    """Build Keras SelfAttention layers whose call is ``call(layer, q, k, v, scale)`` -> heads (N, H, L, D)."""
    from keras import ops

    from xconv.backends.tf import builders
    from xconv.kinds.token import _keras as token_keras

    class Faulty(token_keras.SelfAttentionLayer):
        def call(self, x, training=None):
            n, length, e = ops.shape(x)[0], ops.shape(x)[1], int(x.shape[-1])
            h = self.num_heads
            qkv = ops.matmul(x, self.qkv_kernel) + self.qkv_bias_weight
            qkv = ops.transpose(ops.reshape(qkv, (n, length, 3, h, e // h)), (2, 0, 3, 1, 4))
            heads = call(self, qkv[0], qkv[1], qkv[2], (e // h) ** -0.5)
            return ops.matmul(ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (n, length, e)), self.out_kernel) + (
                self.out_bias
            )

    monkeypatch.setitem(
        builders._BUILDERS,
        xc.SelfAttention,
        lambda info, x, dtype: Faulty(info.layer.num_heads, dtype=dtype, name=builders.keras_name(info))(x),
    )


def _attend(q, k, v, scale, axis=-1):
    from keras import ops

    return ops.matmul(ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * scale, axis=axis), v)


@pytest.mark.parametrize(
    "fault",
    [
        "q and k swapped",
        "the scale applied twice",
        "softmax over the queries",
        "heads split in the other order",
    ],
)
def test_a_wrong_attention_is_caught_at_its_node(both_backends, monkeypatch, fault):
    from keras import ops

    def call(layer, q, k, v, scale):
        if fault == "q and k swapped":
            return _attend(k, q, v, scale)
        if fault == "the scale applied twice":
            return _attend(q, k, v, scale * scale)
        if fault == "softmax over the queries":
            return _attend(q, k, v, scale, axis=-2)
        # the features split into heads as (D, H), joined back as (H, D)
        n, h, length, d = (ops.shape(q)[i] for i in range(4))

        def regroup(t):
            t = ops.reshape(ops.transpose(t, (0, 2, 1, 3)), (n, length, h * d))
            return ops.transpose(ops.reshape(t, (n, length, d, h)), (0, 3, 1, 2))

        return _attend(regroup(q), regroup(k), regroup(v), scale)

    _faulty_attention(monkeypatch, call)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    with pytest.raises(AssertionError, match=r"first part at layer 4\.1\.1 \(SelfAttention\), output"):
        assert_equivalent(VIT, _random(VIT), x, backends=("numpy", "tf"), grads=False)


def test_a_class_token_appended_instead_of_prepended_is_caught(both_backends, monkeypatch):
    from keras import ops

    from xconv.backends.tf import builders
    from xconv.kinds.token import _keras as token_keras

    class Appended(token_keras.ClassTokenLayer):
        def call(self, x):
            token = ops.broadcast_to(self.token, (ops.shape(x)[0], 1, ops.shape(x)[2]))
            return ops.concatenate([x, token], axis=1)

    monkeypatch.setitem(
        builders._BUILDERS,
        xc.ClassToken,
        lambda info, x, dtype: Appended(dtype=dtype, name=builders.keras_name(info))(x),
    )
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    with pytest.raises(AssertionError, match=r"first part at layer 2 \(ClassToken\), output"):
        assert_equivalent(VIT, _random(VIT), x, backends=("numpy", "tf"), grads=False)


def test_tokens_in_another_patch_order_are_caught(both_backends, monkeypatch):
    """The map read column by column: each positional embedding row lands on another patch."""
    import keras

    from xconv.backends.tf import builders

    def column_major(info, x, dtype):
        c, h, w = info.input_shape
        x = keras.layers.Permute((2, 1, 3), dtype=dtype)(x)
        return keras.layers.Reshape((h * w, c), dtype=dtype, name=builders.keras_name(info))(x)

    monkeypatch.setitem(builders._BUILDERS, xc.ToTokens, column_major)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(ToTokens\), output"):
        assert_equivalent(VIT, _random(VIT), x, backends=("numpy", "tf"), grads=False)


def test_a_position_embedding_imported_for_another_patch_order_is_caught(both_backends, monkeypatch):
    """An importer that read timm's positional embedding rows reversed: port's verification refuses it."""
    import torch

    from xconv.importers import torch_fx

    real = torch_fx.position_embedding

    def reversed_rows(*args, **kwargs):
        out = real(*args, **kwargs)
        if out is None:
            return None
        raw, state = out
        return raw, {k: torch.flip(v, dims=(1,)) for k, v in state.items()}

    monkeypatch.setattr(torch_fx, "position_embedding", reversed_rows)
    model = _torchvision_vit()
    with pytest.raises(PortError, match="differs from the source torch model"):
        xc.port(model, to="keras", input_shape=(3, 16, 16))


# ---- real models ----


def _randomized(model, scale: float = 0.3):
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # every weight random: zero-initialised heads and tokens would hide a fault
            p.normal_(0.0, scale)
    return model.eval()


def _torchvision_vit():
    import_torchvision()
    from torchvision.models import VisionTransformer

    return _randomized(VisionTransformer(16, 4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=24, num_classes=5))


def _check_both_ways(model, input_shape, dtype: str) -> None:
    """torch -> Keras -> torch: the Keras model and the torch one built back agree with the source within the
    dtype's tolerance, and the weights come back bit for bit."""
    import torch

    model = model.to(getattr(torch, dtype))
    keras_model = xc.port(model, to="keras", input_shape=input_shape)
    back = xc.port(keras_model, to="torch")
    x = np.random.default_rng(0).standard_normal((2, *input_shape)).astype(dtype)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(want, xc.predict(keras_model, x)) <= TOLERANCE[dtype]
    assert max_rel_diff(want, xc.predict(back, x)) <= TOLERANCE[dtype]
    ported, returned = xc.get_weights(keras_model), xc.get_weights(back)
    assert ported.keys() == returned.keys()
    assert all(np.array_equal(ported[k], returned[k]) for k in ported)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torchvision_vision_transformer_ports_both_ways(both_backends, dtype):
    model = _torchvision_vit()
    _check_both_ways(model, (3, 16, 16), dtype)
    spec = xc.from_torch(model.float(), (3, 16, 16))
    kinds = [i.kind for i in xc.infer(spec)]
    assert kinds.count("SelfAttention") == 2 and {"ToTokens", "ClassToken", "PositionEmbedding"} <= set(kinds)


def test_a_ported_vit_takes_the_source_state_dict(both_backends):
    """The class token and positional embedding are parameters of the model's root and of its encoder: the
    ported models keep their source keys beside the canonical ones."""
    model = _torchvision_vit()
    for target in ("torch", "keras"):
        ported = xc.port(model, to=target, input_shape=(3, 16, 16))
        xc.set_weights(ported, {k: v.numpy() for k, v in model.state_dict().items()})
        x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype("float32")
        import torch

        with torch.no_grad():
            assert max_rel_diff(model(torch.from_numpy(x)).numpy(), xc.predict(ported, x)) <= TOLERANCE["float32"]


def _encoder(norm_first: bool, activation: str):
    import torch
    from torch import nn

    class PatchEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 16, 4, stride=4)
            layer = nn.TransformerEncoderLayer(
                16, 2, 24, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
            )
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.patch(x).flatten(2).transpose(1, 2)
            return self.head(self.encoder(tokens).mean(1))

    return _randomized(PatchEncoder())


@pytest.mark.parametrize(("norm_first", "activation"), [(False, "relu"), (True, "gelu")])
def test_torch_transformer_encoder_ports_both_ways(both_backends, norm_first, activation):
    _check_both_ways(_encoder(norm_first, activation), (3, 8, 8), "float64")


def test_multihead_attention_with_a_mask_or_weights_read_is_refused(both_backends):
    import torch
    from torch import nn

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
            self.register_buffer("mask", torch.zeros(4, 4, dtype=torch.bool))

        def forward(self, x):
            t = x.flatten(2).transpose(1, 2)
            return self.attn(t, t, t, attn_mask=self.mask)[0]

    class Weights(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

        def forward(self, x):
            t = x.flatten(2).transpose(1, 2)
            out, weights = self.attn(t, t, t)
            return out + weights.sum()

    for model in (Masked(), Weights()):
        with pytest.raises(UnsupportedLayerError):
            xc.from_torch(model.eval(), (4, 2, 2))


@pytest.mark.parametrize(
    "name",
    [
        "deit_tiny_patch16_224",
        "deit_tiny_distilled_patch16_224",  # a class and a distillation token, two heads averaged
        "deit3_small_patch16_224",  # layer scales on tokens
        "vit_medium_patch16_reg4_gap_256",  # register tokens, the mean over the patches only
        "vit_tiny_r_s16_p8_224",  # a ResNet stem (timm's hybrid)
    ],
)
def test_timm_vision_transformers_port_both_ways(both_backends, name):
    import_torchvision()
    import timm

    model = timm.create_model(name, pretrained=False, img_size=32, depth=2, num_classes=5)
    _check_both_ways(_randomized(model, 0.2), (3, 32, 32), "float32")


def _keras_vit(dtype: str, activation: str):
    import keras

    x = inputs = keras.Input((8, 8, 3), dtype=dtype)
    x = keras.layers.Conv2D(16, 2, strides=2, dtype=dtype)(x)
    x = keras.layers.Reshape((16, 16), dtype=dtype)(x)
    for _ in range(2):
        y = keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype)(x)
        y = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, dtype=dtype)(y, y)
        x = keras.layers.Add(dtype=dtype)([x, y])
        y = keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype)(x)
        y = keras.layers.Dense(24, activation=activation, dtype=dtype)(y)
        x = keras.layers.Add(dtype=dtype)([x, keras.layers.Dense(16, dtype=dtype)(y)])
    x = keras.layers.GlobalAveragePooling1D(dtype=dtype)(x)
    model = keras.Model(inputs, keras.layers.Dense(5, dtype=dtype)(x))
    rng = np.random.default_rng(1)
    for w in model.weights:
        w.assign((rng.standard_normal(w.shape) * 0.3).astype(dtype))
    return model


@pytest.mark.parametrize(("dtype", "activation"), [("float32", "gelu"), ("float64", "relu")])
def test_a_keras_vit_with_multi_head_attention_ports_both_ways(both_backends, dtype, activation):
    """Keras' attention scales by 1 / sqrt(key_dim) rounded to float32, in float64 models too: the spec takes
    that number, so the float64 port is exact. (Keras' own GELU in float64 is about 5e-9 off the exact one, so
    the float64 model here uses ReLU.)"""
    model = _keras_vit(dtype, activation)
    torch_model = xc.port(model, to="torch")
    back = xc.port(torch_model, to="keras")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(dtype)
    want = np.asarray(model(xc.to_nhwc(x)))
    assert max_rel_diff(want, xc.predict(torch_model, x)) <= TOLERANCE[dtype]
    assert max_rel_diff(want, xc.predict(back, x)) <= TOLERANCE[dtype]
    kinds = {i.kind for i in xc.infer(xc.from_keras(model))}
    assert {"ToTokens", "SelfAttention", "TokenMean"} <= kinds


def test_keras_attention_over_other_tensors_whose_scores_are_read_is_refused(both_backends):
    """(Cross-attention itself imports, as a DotProductAttention: see test_dot_attention.py.)"""
    import keras

    x = inputs = keras.Input((4, 8))
    memory = keras.layers.Dense(8)(x)
    y, _ = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, memory, return_attention_scores=True)
    with pytest.raises(UnsupportedLayerError, match="has several outputs"):
        xc.from_keras(keras.Model(inputs, y))


def _hf_vit(kind: str):
    import_torchvision()
    import transformers

    small = {"image_size": 16, "patch_size": 4, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}
    config, cls = {
        "ViTForImageClassification": (transformers.ViTConfig, transformers.ViTForImageClassification),
        "ViTModel": (transformers.ViTConfig, transformers.ViTModel),
        "DeiTForImageClassificationWithTeacher": (
            transformers.DeiTConfig,
            transformers.DeiTForImageClassificationWithTeacher,
        ),
    }[kind]
    return _randomized(cls(config(**small, intermediate_size=24, num_labels=5)))


@pytest.mark.parametrize(
    ("kind", "output"),
    [
        ("ViTForImageClassification", "logits"),
        ("ViTModel", "pooler_output"),
        ("DeiTForImageClassificationWithTeacher", "logits"),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hugging_face_vision_transformers_port(both_backends, kind, output, dtype):
    """Exported without a mask, Hugging Face's attention gets one that lets every token attend to every other,
    built from arange: read as no mask. q_proj, k_proj and v_proj become the fused in_proj_weight."""
    import torch

    model = _hf_vit(kind).to(getattr(torch, dtype))
    keras_model = xc.port(model, to="keras", input_shape=(3, 16, 16), output=output)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(dtype)
    with torch.no_grad():
        want = model(torch.from_numpy(x))[output].numpy()
    assert max_rel_diff(want, xc.predict(keras_model, x)) <= TOLERANCE[dtype]


def test_hugging_face_attention_with_a_padding_mask_is_refused(both_backends):
    import torch

    model = _hf_vit("ViTModel")

    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = model
            self.register_buffer("mask", torch.rand(1, 1, 17, 17) > 0.5)

        def forward(self, x):
            h = self.vit.embeddings(x)
            return self.vit.layers[0].attention(h, self.mask)[0]

    with pytest.raises(UnsupportedLayerError):
        xc.from_torch(Masked().eval(), (3, 16, 16))


def test_a_layer_norm_with_another_eps_is_caught_despite_its_error_bound(both_backends, monkeypatch):
    """The checker lets a LayerNorm amplify its input's rounding by max |weight| / sqrt(min var + eps): an eps
    100 times too large in Keras still shows, at that LayerNorm."""
    import keras

    from xconv.backends.tf import builders

    monkeypatch.setitem(
        builders._BUILDERS,
        xc.LayerNorm,
        lambda info, x, dtype: keras.layers.LayerNormalization(
            epsilon=info.layer.eps * 100, dtype=dtype, name=builders.keras_name(info)
        )(x),
    )
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    with pytest.raises(AssertionError, match=r"first part at layer 4\.1\.0 \(LayerNorm\), output"):
        assert_equivalent(VIT, _random(VIT), x, backends=("numpy", "tf"), grads=False)
    with pytest.raises(AssertionError, match=r"first part at layer 4\.1\.0 \(LayerNorm\), output"):
        assert_equivalent(VIT, _random(VIT), x, backends=("numpy", "tf"), grads=False, dtype="float32")


@pytest.mark.parametrize("variant", ["attention_mask", "query_mask", "use_gate", "sliding_window"])
def test_keras_attention_with_a_constant_mask_or_another_option_is_refused(both_backends, variant):
    """A constant mask is no tensor of the graph, and the gate and the sliding window are options of the layer:
    each is read from the call or the config, and refused by name."""
    import keras

    x = inputs = keras.Input((4, 8))
    options = {"use_gate": {"use_gate": True}, "sliding_window": {"sliding_window": 2}}.get(variant, {})
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, **options)
    mask = np.tril(np.ones((1, 4, 4), dtype=bool)) if variant == "attention_mask" else np.array([[1, 1, 0, 1]], bool)
    given = {variant: mask} if variant in ("attention_mask", "query_mask") else {}
    model = keras.Model(inputs, layer(x, x, **given))
    with pytest.raises(UnsupportedLayerError, match=variant):
        xc.from_keras(model)


def test_attention_dropout_skips_the_training_mode_comparison(both_backends):
    """Attention dropout draws random masks: port compares the models in inference only, as for Dropout."""
    import torch

    model = _encoder(norm_first=True, activation="gelu")
    for layer in model.encoder.layers:
        layer.self_attn.dropout = 0.1
    ported = xc.port(model.train(), to="keras", input_shape=(3, 8, 8))
    assert model.training  # (the source keeps its mode)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype("float32")
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    assert max_rel_diff(want, xc.predict(ported, x)) <= TOLERANCE["float32"]


def test_a_buffer_read_as_a_token_or_an_embedding_is_refused(both_backends):
    """A fixed (sinusoidal) embedding or token is not learned: importing it as a parameter would train it."""
    import torch
    from torch import nn

    class Fixed(nn.Module):
        def __init__(self, token: bool):
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 4, stride=4)
            self.token = token
            self.register_buffer("fixed", torch.randn(1, 1, 8) if token else torch.randn(1, 4, 8))

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            if self.token:
                return torch.cat([self.fixed.expand(x.shape[0], -1, -1), t], dim=1)
            return t + self.fixed

    for token in (True, False):
        with pytest.raises(UnsupportedLayerError, match="'fixed' is imported as a learned .* not a parameter"):
            xc.from_torch(Fixed(token).eval(), (3, 8, 8))


def test_causal_attention_is_refused_by_name(both_backends):
    import_torchvision()
    import torch
    from timm.layers.attention import Attention

    class Causal(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = Attention(8, 2, qkv_bias=True)

        def forward(self, x):
            return self.attn(x.flatten(2).transpose(1, 2), is_causal=True)

    with pytest.raises(UnsupportedLayerError, match="'attn' .* causal attention"):
        xc.from_torch(Causal().eval(), (8, 2, 2))


def _hybrid():
    """A conv stage, its map as tokens through an attention block, and the tokens read back as a map for the
    next conv stage (CAFormer's and the other hybrids' shape), written as torch code."""
    import torch

    class Hybrid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.norm = torch.nn.LayerNorm(8)
            self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = torch.nn.Conv2d(8, 4, 3)

        def forward(self, x):
            x = self.stem(x)
            n, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            u = self.norm(t)
            t = t + self.attention(u, u, u, need_weights=False)[0]
            return self.head(t.transpose(1, 2).reshape(n, c, h, w)).flatten(1)

    return Hybrid().eval()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tokens_read_back_as_a_map_port_both_ways(both_backends, dtype):
    """``t.transpose(1, 2).reshape(N, C, H, W)`` of tokens is ToMap: a Keras Reshape((H, W, C)), no transpose;
    the map (4 by 6: rows and columns are told apart) ports to Keras and back."""
    import torch

    model = _hybrid().to(getattr(torch, dtype))
    keras_model = xc.port(model, to="keras", input_shape=(3, 8, 12))
    (to_map,) = [i.layer for i in xc.infer(xc.spec_of(keras_model)) if i.kind == "ToMap"]
    assert (to_map.height, to_map.width) == (4, 6)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 12)).astype(dtype)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(want, xc.predict(keras_model, x)) <= TOLERANCE[dtype]
    back = xc.port(keras_model, to="torch")
    assert max_rel_diff(want, xc.predict(back, x)) <= TOLERANCE[dtype]


def test_a_map_read_back_in_the_other_order_is_caught(both_backends, monkeypatch):
    """A Keras ToMap that fills the map column by column: caught at its node."""
    import keras

    from xconv.backends.tf import builders

    def column_major(info, x, dtype):
        c, h, w = info.output_shape
        x = keras.layers.Reshape((w, h, c), dtype=dtype)(x)
        return keras.layers.Permute((2, 1, 3), dtype=dtype, name=builders.keras_name(info))(x)

    monkeypatch.setitem(builders._BUILDERS, xc.ToMap, column_major)
    spec = xc.Sequential(xc.ToTokens(), xc.LayerNorm(3), xc.ToMap(2, 3), xc.Conv2d(3, 2, 2), input_shape=(3, 2, 3))
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 3))
    with pytest.raises(AssertionError, match=r"layer 2 \(ToMap\), output"):
        assert_equivalent(spec, x=x, backends=("numpy", "tf"), grads=False)


def test_transposed_tokens_used_otherwise_are_refused(both_backends):
    import torch

    class TokenMixing(torch.nn.Module):  # MLP-Mixer's: a Linear across the tokens
        def __init__(self):
            super().__init__()
            self.mix = torch.nn.Linear(16, 16)

        def forward(self, x):
            t = x.flatten(2).transpose(1, 2)
            return self.mix(t.transpose(1, 2)).flatten(1)

    with pytest.raises(UnsupportedLayerError, match=r"'mix' \(Linear\) reads tokens transposed to \(N, C, L\)"):
        xc.from_torch(TokenMixing().eval(), (3, 4, 4))
