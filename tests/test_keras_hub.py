"""keras-hub's ViT, DeiT and BERT backbones, with every weight random, port to torch and back: their own layers
are read as the Keras layers they call. What xconv does not know of keras-hub is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.errors import PortError, UnsupportedLayerError, XconvError
from xconv.testing import TOLERANCE, max_rel_diff


def _randomized(model, scale: float = 0.3):
    rng = np.random.default_rng(0)
    for v in model.weights:  # class and distillation tokens and position tables too: zeros would hide a fault
        v.assign(rng.standard_normal(v.shape) * scale)
    return model


def _ported_to_torch(model, x):
    """``model`` ported to torch with verification: (the torch model, the Keras model's output on the NHWC
    batch ``x``, the torch model's on it as NCHW)."""
    import torch

    torch_model = xc.port(model, to="torch")
    with torch.no_grad():
        got = torch_model(torch.from_numpy(xc.to_nchw(x))).numpy()
    return torch_model, np.asarray(model(x)), got


def _backbone(kind: str, dtype: str = "float32", **options):
    import keras_hub

    small = {"image_shape": (16, 16, 3), "patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 16}
    if kind == "ViTBackbone":
        return _randomized(keras_hub.models.ViTBackbone(**small, mlp_dim=24, dtype=dtype, **options))
    return _randomized(keras_hub.models.DeiTBackbone(**small, intermediate_dim=24, dtype=dtype, **options))


@pytest.mark.parametrize(
    ("kind", "options"),
    [("ViTBackbone", {}), ("ViTBackbone", {"use_class_token": False}), ("DeiTBackbone", {})],
)
def test_keras_hub_vision_transformers_port_both_ways(both_backends, kind, options):

    model = _backbone(kind, **options)
    x = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype("float32")
    torch_model, want, got = _ported_to_torch(model, x)
    assert max_rel_diff(want, got) <= TOLERANCE["float32"]
    back = xc.port(torch_model, to="keras")
    assert max_rel_diff(want, np.asarray(back(x))) <= TOLERANCE["float32"]
    kinds = [i.kind for i in xc.infer(xc.spec_of(back))]
    assert kinds[:2] == ["Conv2d", "ToTokens"] and kinds.count("SelfAttention") == 2
    assert ("ClassToken" in kinds) == options.get("use_class_token", True)
    # every keras-hub number is in the port, bit for bit, and nothing else (kernels transposed, q/k/v fused)
    ported = np.sort(np.concatenate([w.ravel() for w in xc.get_weights(back).values()]))
    source = np.sort(np.concatenate([np.ravel(v.numpy()) for v in model.weights]))
    assert np.array_equal(ported, source)


def test_keras_hub_vit_in_float64_is_refused_for_keras_gelu(both_backends):
    """keras-hub's MLP uses Keras' GELU activation, which on TensorFlow is 5e-9 off the exact GELU in float64:
    the ported model computes the exact one, and port's verification refuses the difference."""
    with pytest.raises(PortError, match="The tf model computes something its imported spec does not"):
        xc.port(_backbone("ViTBackbone", "float64"), to="torch")


def test_keras_hub_tokens_in_another_order_are_caught(both_backends, monkeypatch):
    """An importer that put DeiT's distillation token before its class token: port's verification refuses it."""
    from xconv.importers import _keras_hub

    real = _keras_hub._weighted

    def swapped(layer, shape, values):
        if "token" in values and values["token"].shape[1] == 2:
            values = {"token": values["token"][:, ::-1]}
        return real(layer, shape, values)

    monkeypatch.setattr(_keras_hub, "_weighted", swapped)
    with pytest.raises(PortError):
        xc.port(_backbone("DeiTBackbone"), to="torch")


def test_keras_hub_layers_xconv_does_not_know_are_refused_by_name(both_backends):
    import keras
    import keras_hub

    inputs = keras.Input((6, 16))
    y = keras_hub.layers.SinePositionEncoding()(inputs)
    with pytest.raises(UnsupportedLayerError, match="keras-hub SinePositionEncoding"):
        xc.from_keras(keras.Model(inputs, y))
    bert = _bert()
    with pytest.raises(XconvError, match="give output= "):  # a dict of two outputs
        xc.from_keras(bert, input_shape=(6,))
    with pytest.raises(UnsupportedLayerError, match=r"give input_shape=\(L,\)"):  # any sequence length
        xc.from_keras(bert, output="sequence_output")
    mask = keras.Input((6, 6), dtype="int32")
    y = keras_hub.layers.TransformerEncoder(intermediate_dim=24, num_heads=2)(inputs, attention_mask=mask)
    with pytest.raises(XconvError, match="takes 2 input"):  # (an attention mask is not a padding mask)
        xc.from_keras(keras.Model([inputs, mask], y))


def _bert(dtype: str = "float32", **options):
    import keras_hub

    small = {"vocabulary_size": 30, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 24}
    return _randomized(keras_hub.models.BertBackbone(**small, max_sequence_length=10, dtype=dtype, **options))


def _text(n: int = 3, length: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    mask = np.ones((n, length), dtype=np.int64)
    mask[0, 3:] = 0  # (a padded sequence)
    return rng.integers(0, 30, (n, length)), mask, rng.integers(0, 2, (n, length))


@pytest.mark.parametrize("output", ["sequence_output", "pooled_output"])
def test_keras_hub_bert_ports_both_ways(both_backends, output):
    """BertBackbone at a sequence length of 6: its dict inputs (token ids, segment ids, padding mask) are the
    ids, token types and padding mask, its ReversibleEmbedding an Embedding, its position table added whole
    (the first 6 of 10 rows), its TransformerEncoders post-norm blocks reading the mask's keys, its pooler the
    first token through a Dense and tanh. Checked by port with random segments and padding, and here."""
    import torch

    model = _bert()
    torch_model = xc.port(model, to="torch", input_shape=(6,), output=output)
    ids, mask, segments = _text()
    want = np.asarray(model({"token_ids": ids, "segment_ids": segments, "padding_mask": mask})[output])
    with torch.no_grad():
        got = torch_model(*(torch.from_numpy(a) for a in (ids, mask, segments))).numpy()
    assert max_rel_diff(want, got) <= TOLERANCE["float32"]
    unpadded = np.asarray(model({"token_ids": ids, "segment_ids": segments, "padding_mask": 1 + 0 * mask})[output])
    assert max_rel_diff(want, unpadded) > 1e-3  # (the mask matters)
    back = xc.port(torch_model, to="keras")
    assert max_rel_diff(want, np.asarray(back([ids, mask, segments]))) <= TOLERANCE["float32"]
    kinds = [i.kind for i in xc.infer(xc.spec_of(back))]
    assert kinds[:3] == ["Embedding", "PositionEmbedding", "TokenTypeEmbedding"] and kinds.count("SelfAttention") == 2
    assert ("SelectToken" in kinds) == (output == "pooled_output")
    # every keras-hub number the output reads is in the port, bit for bit (the pooler only for its output)
    ported = np.sort(np.concatenate([w.ravel() for w in xc.get_weights(back).values()]))
    read = [v for v in model.weights if output == "pooled_output" or "pooled_dense" not in v.path]
    assert np.array_equal(ported, np.sort(np.concatenate([np.ravel(v.numpy()) for v in read])))


@pytest.mark.parametrize("normalize_first", [False, True])
def test_keras_hub_transformer_encoder_on_tokens_ports(both_backends, normalize_first):
    import keras
    import keras_hub
    import torch

    inputs = keras.Input((6, 16))
    y = keras_hub.layers.TransformerEncoder(
        intermediate_dim=24, num_heads=2, normalize_first=normalize_first, activation="gelu"
    )(inputs)
    model = _randomized(keras.Model(inputs, y))
    torch_model = xc.port(model, to="torch")
    x = np.random.default_rng(3).standard_normal((2, 6, 16)).astype("float32")
    with torch.no_grad():
        got = torch_model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(np.asarray(model(x)), got) <= TOLERANCE["float32"]


def test_keras_hub_bert_positions_read_from_another_row_are_caught(both_backends, monkeypatch):
    """An importer that read BertBackbone's position table from its second row on: port refuses it."""
    from xconv.importers import _keras_hub

    real = _keras_hub._weighted

    def shifted(layer, shape, values):
        if "embedding" in values:
            values = {"embedding": np.roll(values["embedding"], -1, axis=1)}
        return real(layer, shape, values)

    monkeypatch.setattr(_keras_hub, "_weighted", shifted)
    with pytest.raises(PortError):
        xc.port(_bert(), to="torch", input_shape=(6,), output="sequence_output")


def _mit(dtype: str = "float32"):
    """keras-hub's MiT (SegFormer's backbone), two stages: spatial reduction 2 then 1, drop paths 0 and 0.1."""
    import keras_hub

    return _randomized(
        keras_hub.models.MiTBackbone(
            layerwise_depths=[1, 1],
            num_layers=2,
            layerwise_num_heads=[1, 2],
            layerwise_sr_ratios=[2, 1],
            max_drop_path_rate=0.1,
            layerwise_patch_sizes=[7, 3],
            layerwise_strides=[4, 2],
            image_shape=(32, 32, 3),
            hidden_dims=[16, 32],
            dtype=dtype,
        )
    )


def test_keras_hub_mit_ports_both_ways(both_backends):
    """Its overlapping patch embedding, spatial-reduction attention (xconv's DotProductAttention, with the
    weights' dropout of 0.1), Mix-FFN (depthwise conv on the square map, tanh GELU) and drop paths; its pyramid
    of stage maps as several outputs. (float32: keras-hub builds MiT's inner layers in float32 whatever the
    backbone's dtype.)"""
    import keras

    dtype = "float32"
    model = _mit(dtype)
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(dtype)
    torch_model, want, got = _ported_to_torch(model, x)
    assert max_rel_diff(xc.to_nchw(want), got) <= TOLERANCE[dtype]
    infos = xc.infer(xc.spec_of(torch_model))
    attention = [i for i in infos if i.kind == "DotProductAttention"]
    assert [a.layer.dropout for a in attention] == [pytest.approx(0.1)] * 2
    assert [i.layer.p for i in infos if i.kind == "StochasticDepth"] == [pytest.approx(0.1)] * 2
    back = xc.port(torch_model, to="keras")
    assert max_rel_diff(want, np.asarray(back(x))) <= TOLERANCE[dtype]
    ported = np.sort(np.concatenate([w.ravel() for w in xc.get_weights(back).values()]))
    source = np.sort(np.concatenate([np.ravel(v.numpy()) for v in model.weights]))
    assert np.array_equal(ported, source)
    pyramid = keras.Model(model.inputs, model.pyramid_outputs)
    levels = xc.port(pyramid, to="torch", output=["P1", "P2"])
    want = [xc.to_nchw(np.asarray(t)) for t in pyramid(x).values()]
    assert max_rel_diff(want, xc.predict(levels, xc.to_nchw(x))) <= TOLERANCE[dtype]


def test_keras_hub_mit_keys_and_values_swapped_are_caught(both_backends, monkeypatch):
    """An importer that gave the attention its values as keys and its keys as values: port refuses it."""
    from xconv.importers import _keras_hub_mit

    real = _keras_hub_mit._attention

    def swapped(layer, x, prefix, names):
        calls, out = real(layer, x, prefix, names)
        return [(f, [ins[0], ins[2], ins[1]] if len(ins) == 3 else ins, o) for f, ins, o in calls], out

    monkeypatch.setattr(_keras_hub_mit, "_attention", swapped)
    with pytest.raises(PortError):
        xc.port(_mit(), to="torch")


def _swin(image: int = 32, window: int = 4):
    """keras-hub's Swin, two stages of two blocks (the second of each shifted where the map allows), drop paths."""
    return _swin_with(image=image, window=window)


def _swin_with(image: int = 32, window: int = 4, depths=(2, 2)):
    import keras_hub

    return _randomized(
        keras_hub.models.SwinTransformerBackbone(
            image_shape=(image, image, 3),
            patch_size=4,
            embed_dim=16,
            depths=list(depths),
            num_heads=[1, 2],
            window_size=window,
            drop_path=0.1,
        )
    )


def test_keras_hub_swin_ports_both_ways(both_backends):
    """Its patch embedding, blocks (xconv's WindowAttention holding keras-hub's qkv, projection and relative
    position table, shifted in every second block), patch merging and drop paths; every keras-hub number in the
    port and back. (float32: its MLP uses Keras' GELU.)"""

    model = _swin()
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype("float32")
    torch_model, want, got = _ported_to_torch(model, x)
    assert max_rel_diff(want, got) <= TOLERANCE["float32"]
    windows = [i.layer for i in xc.infer(xc.spec_of(torch_model)) if i.kind == "WindowAttention"]
    assert [w.shift_size for w in windows] == [(0, 0), (2, 2), (0, 0), (0, 0)]  # (the 4x4 stage: one window)
    back = xc.port(torch_model, to="keras")
    assert max_rel_diff(want, np.asarray(back(x))) <= TOLERANCE["float32"]
    ported = np.sort(np.concatenate([w.ravel() for w in xc.get_weights(back).values() if w.dtype.kind == "f"]))
    source = np.sort(np.concatenate([np.ravel(v.numpy()) for v in model.weights]))
    assert np.array_equal(ported, source)


def test_keras_hub_swin_refusals_and_a_lost_shift(both_backends, monkeypatch):
    """keras-hub builds a shifted block's mask before the padding: on a map its windows do not divide it is
    refused. An importer that dropped the shift is caught by port's verification."""
    from xconv.kinds.window import _keras as window_keras

    with pytest.raises(UnsupportedLayerError, match="a shift on a 6x6 map its windows of 4 do not divide"):
        xc.from_keras(_swin(image=48))
    xc.port(_swin_with(depths=[2, 0]), to="torch")  # (an empty last stage is its input; verified)
    real = window_keras.WindowAttentionLayer

    def unshifted(heads, window, shift, **options):
        return real(heads, window, (0, 0), **options)

    monkeypatch.setattr(window_keras, "WindowAttentionLayer", unshifted)
    with pytest.raises(PortError):
        xc.port(_swin(), to="torch")


def test_keras_hub_mit_options_it_cannot_read_are_refused(both_backends):
    """Another dropout of the attention weights (whole rows, or Gaussian) and drop-path rates outside [0, 1)
    are refused by name rather than ported as the plain forms."""
    model = _mit()
    model.get_layer("hierarchical_encoder_0_0").attn.dropout.noise_shape = (None, 1, 1, 1)
    with pytest.raises(UnsupportedLayerError, match="the weights' dropout"):
        xc.from_keras(model)
    model = _mit()
    model.get_layer("hierarchical_encoder_1_0").drop_path.rate = 1.0
    with pytest.raises(UnsupportedLayerError, match="rate=1.0"):
        xc.from_keras(model)


def test_keras_hub_segformer_backbone_ports(both_backends):
    """SegFormer's backbone: the MiT's pyramid read through the nested model that returns it (each of its
    outputs tied to the outer graph), a Dense per level, bilinear resizing to the first level's size, the
    concatenation and the fusing conv, BatchNorm and ReLU."""
    import keras_hub
    import torch

    from xconv.backends.tf.run import forward

    model = _randomized(keras_hub.models.SegFormerBackbone(image_encoder=_mit(), projection_filters=8))
    for v in model.weights:  # (running variances must be positive)
        if "variance" in v.path:
            v.assign(np.abs(v.numpy()) + 0.5)
    torch_model = xc.port(model, to="torch")
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype("float32")
    want = forward(model, x)  # (training=False; called without it, this model gave other outputs, measured)
    with torch.no_grad():
        got = torch_model(torch.from_numpy(x)).numpy()
    assert want.shape == (2, 8, 8, 8)
    assert max_rel_diff(want, got) <= TOLERANCE["float32"]
    kinds = {i.kind for i in xc.infer(xc.spec_of(torch_model))}
    assert {"DotProductAttention", "Upsample", "Concat", "BatchNorm2d"} <= kinds
