"""Tokens and attention: the Keras parts (built layers and their weight layouts, and the Keras layers that
import as these kinds).

The attention is xconv's own layer, written in ``keras.ops``, not ``keras.layers.MultiHeadAttention``: Keras'
layer multiplies the query by ``1 / sqrt(head_dim)`` cast through float32, so a float64 model differs from
torch's by about 1e-8 of its scores whenever head_dim is not a power of 4, and it takes no additive bias (which
windowed attentions need). The layer here computes what ``F.scaled_dot_product_attention`` computes, with one
fused (E, 3E) query-key-value kernel: the canonical ``in_proj_weight`` transposed."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np

from ..._info import LayerInfo
from ...backends._tf_env import keras, tf
from ...errors import UnsupportedLayerError
from ...spec._sequential import DotProductAttention
from .._keras_names import keras_name
from . import (
    ClassToken,
    Embedding,
    PaddedPositions,
    PositionEmbedding,
    SelectToken,
    SelfAttention,
    TokenMean,
    TokenTypeEmbedding,
    ToMap,
    ToTokens,
)
from ._dot import bias_index

ops = keras.ops


@keras.saving.register_keras_serializable(package="xconv", name="ClassToken")
class ClassTokenLayer(keras.layers.Layer):
    """Puts the learned ``token`` (1, count, E) in front of the tokens (see :class:`xconv.ClassToken`)."""

    def __init__(self, count: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = int(count)

    def build(self, input_shape: Any) -> None:
        shape = (1, self.count, int(input_shape[-1]))
        self.token = self.add_weight(name="token", shape=shape, initializer="zeros")

    def call(self, x: Any) -> Any:
        token = ops.broadcast_to(ops.cast(self.token, x.dtype), (ops.shape(x)[0], self.count, ops.shape(x)[2]))
        return ops.concatenate([token, x], axis=1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        n, length, e = input_shape
        return (n, None if length is None else length + self.count, e)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count": self.count}


@keras.saving.register_keras_serializable(package="xconv", name="PositionEmbedding")
class PositionEmbeddingLayer(keras.layers.Layer):
    """Adds the learned ``embedding`` (1, rows, E) to the tokens, its first L rows to L tokens (see
    :class:`xconv.PositionEmbedding`; ``rows`` None: as many as the tokens)."""

    def __init__(self, rows: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows = None if rows is None else int(rows)

    def build(self, input_shape: Any) -> None:
        rows = int(input_shape[1]) if self.rows is None else self.rows
        self.embedding = self.add_weight(name="embedding", shape=(1, rows, int(input_shape[2])), initializer="zeros")

    def call(self, x: Any) -> Any:
        embedding = ops.cast(self.embedding, x.dtype)
        if self.rows is not None:
            embedding = embedding[:, : int(x.shape[1])]
        return x + embedding

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rows": self.rows}


@keras.saving.register_keras_serializable(package="xconv", name="TokenTypeEmbedding")
class TokenTypeEmbeddingLayer(keras.layers.Layer):
    """Adds the learned embedding of each token's type (``weight`` (types, E)) to it (see
    :class:`xconv.TokenTypeEmbedding`): ``weight[token_types]`` for the model's token types when the layer is
    called with them (None: type 0), else ``weight[token_type]``. The table's gradient is dense, as torch's
    (see :class:`TokenEmbedding`)."""

    def __init__(self, types: int, token_type: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.types, self.token_type = int(types), int(token_type)

    def build(self, x_shape: Any, token_types_shape: Any = None) -> None:
        self.weight = self.add_weight(name="weight", shape=(self.types, int(x_shape[-1])), initializer="zeros")

    def call(self, x: Any, token_types: Any = None) -> Any:
        if token_types is None:
            return x + ops.cast(self.weight[self.token_type], x.dtype)
        return x + ops.cast(_dense_lookup(self.weight, token_types, None), x.dtype)

    def compute_output_shape(self, x_shape: Any, token_types_shape: Any = None) -> Any:
        return x_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "types": self.types, "token_type": self.token_type}


@keras.saving.register_keras_serializable(package="xconv", name="PaddedPositions")
class PaddedPositionsLayer(keras.layers.Layer):
    """The positions of the tokens that are not padding, from the ids (see :class:`xconv.PaddedPositions`)."""

    def __init__(self, padding_idx: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding_idx = int(padding_idx)

    def call(self, ids: Any) -> Any:
        tokens = ops.cast(ops.not_equal(ids, self.padding_idx), "int64")
        return ops.cumsum(tokens, axis=1) * tokens + self.padding_idx

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def compute_output_spec(self, ids: Any) -> Any:
        return keras.KerasTensor(ids.shape, dtype="int64")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding_idx": self.padding_idx}


@keras.saving.register_keras_serializable(package="xconv", name="TokenEmbedding")
class TokenEmbedding(keras.layers.Embedding):
    """Keras' ``Embedding`` as torch's ``nn.Embedding`` trains it (see :class:`xconv.Embedding`): the same
    looked-up values; the row ``padding_idx`` (when given) gets no gradient; and the table's gradient is a
    dense tensor, as torch's is.

    On the TensorFlow backend Keras' own layer gives an ``IndexedSlices`` gradient, one slice per token, and
    Keras' optimizers apply element-wise operations to the slices before they are summed: Adam's second moment
    then adds the squares of each token's gradient, not the square of their sum, wherever an id appears more
    than once in a batch (a class token in every sequence). Measured: 2.3e-3 relative after 10 float64 Adam
    steps against torch. This layer sums the slices into the (V, E) gradient first, as torch does."""

    def __init__(self, input_dim: int, output_dim: int, padding_idx: int | None = None, **kwargs: Any) -> None:
        super().__init__(input_dim, output_dim, **kwargs)
        self.padding_idx = None if padding_idx is None else int(padding_idx)

    def call(self, inputs: Any) -> Any:
        return ops.cast(_dense_lookup(self.embeddings, inputs, self.padding_idx), self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding_idx": self.padding_idx}


def _dense_lookup(table: Any, ids: Any, padding_idx: int | None) -> Any:
    """``table[ids]`` whose gradient with respect to ``table`` is the dense sum of the tokens' gradients per
    row (none for ``padding_idx``), on the TensorFlow backend."""
    ids = tf.cast(ids, "int64") if ids.dtype not in (tf.int32, tf.int64) else ids

    @tf.custom_gradient  # type: ignore[untyped-decorator]  # (TensorFlow has no types)
    def lookup(weights: Any) -> Any:
        def grad(upstream: Any) -> Any:
            flat_ids = tf.reshape(ids, [-1])
            rows = tf.reshape(upstream, [-1, tf.shape(weights)[1]])
            if padding_idx is not None:
                rows = tf.where(tf.expand_dims(tf.not_equal(flat_ids, padding_idx), -1), rows, tf.zeros_like(rows))
            return tf.math.unsorted_segment_sum(rows, flat_ids, tf.shape(weights)[0])

        return tf.gather(weights, ids), grad

    return lookup(tf.convert_to_tensor(table))


@keras.saving.register_keras_serializable(package="xconv", name="SelfAttention")
class SelfAttentionLayer(keras.layers.Layer):
    """Multi-head self-attention (see :class:`xconv.SelfAttention`): ``qkv_kernel`` (E, 3E) with columns q, k,
    v (each head by head), ``qkv_bias`` (3E,), ``out_kernel`` (E, E), ``out_bias`` (E,); per head
    softmax(q k^T * head_dim ** -0.5) v, the scale in the model's dtype."""

    def __init__(
        self,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        dropout: float = 0.0,
        scale: float | None = None,
        projection: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.projection = bool(projection)
        self.num_heads, self.qkv_bias = int(num_heads), bool(qkv_bias)
        self.proj_bias = bool(proj_bias) and self.projection
        self.dropout, self.scale = float(dropout), None if scale is None else float(scale)
        self.seed_generator = keras.random.SeedGenerator() if self.dropout > 0 else None

    def build(self, input_shape: Any) -> None:
        e = int(input_shape[-1])
        self.qkv_kernel = self.add_weight(name="qkv_kernel", shape=(e, 3 * e), initializer="zeros")
        self.qkv_bias_weight = (
            self.add_weight(name="qkv_bias", shape=(3 * e,), initializer="zeros") if self.qkv_bias else None
        )
        self.out_kernel = (
            self.add_weight(name="out_kernel", shape=(e, e), initializer="zeros") if self.projection else None
        )
        self.out_bias = self.add_weight(name="out_bias", shape=(e,), initializer="zeros") if self.proj_bias else None

    def call(self, x: Any, padding_mask: Any = None, training: Any = None) -> Any:
        n, length, e = ops.shape(x)[0], ops.shape(x)[1], int(x.shape[-1])
        h = self.num_heads
        d = e // h
        qkv = ops.matmul(x, ops.cast(self.qkv_kernel, x.dtype))
        if self.qkv_bias_weight is not None:
            qkv = qkv + ops.cast(self.qkv_bias_weight, x.dtype)
        qkv = ops.transpose(ops.reshape(qkv, (n, length, 3, h, d)), (2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]
        # (the scale made in the model's dtype: a Python float cast to it would go through float32)
        scale = ops.convert_to_tensor(1.0 / math.sqrt(d) if self.scale is None else self.scale, dtype=x.dtype)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * scale
        if padding_mask is not None:  # no query attends to a padding key (0 in the mask)
            keep = ops.not_equal(padding_mask, 0)[:, None, None, :]
            scores = ops.where(keep, scores, ops.convert_to_tensor(-np.inf, dtype=scores.dtype))
        weights = ops.softmax(scores, axis=-1)
        if training and self.seed_generator is not None:
            weights = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        heads = ops.reshape(ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3)), (n, length, e))
        if self.out_kernel is None:
            return heads
        y = ops.matmul(heads, ops.cast(self.out_kernel, x.dtype))
        return y if self.out_bias is None else y + ops.cast(self.out_bias, x.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "qkv_bias": self.qkv_bias,
            "proj_bias": self.proj_bias,
            "dropout": self.dropout,
            "scale": self.scale,
            "projection": self.projection,
        }


@keras.saving.register_keras_serializable(package="xconv", name="DotProductAttention")
class DotProductAttentionLayer(keras.layers.Layer):
    """The attention of three token tensors, called on [queries, keys, values] (see
    :class:`xconv.DotProductAttention`): per head of consecutive features, softmax(q k^T * scale + bias) v, the
    scale (d ** -0.5 unless given) made in the model's dtype; with ``bias_grid``, the bias is its weight
    ``attention_biases`` at the relative-offset index, a constant of the layer (else none)."""

    def __init__(
        self,
        num_heads: int = 1,
        scale: float | None = None,
        dropout: float = 0.0,
        bias_grid: Any = None,
        bias_stride: int = 1,
        state_index: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_heads, self.scale = int(num_heads), None if scale is None else float(scale)
        self.dropout = float(dropout)
        self.seed_generator = keras.random.SeedGenerator() if self.dropout > 0 else None
        self.bias_grid = None if bias_grid is None else (int(bias_grid[0]), int(bias_grid[1]))
        self.bias_stride = int(bias_stride)
        self.state_index = bool(state_index)  # (where torch keeps the index in its state_dict; Keras never does)
        self.bias_index = None if self.bias_grid is None else bias_index(self.bias_grid, self.bias_stride)

    def build(self, input_shape: Any) -> None:
        if self.bias_grid is not None:  # (the learned bias per relative offset; its index is a constant)
            size = self.bias_grid[0] * self.bias_grid[1]
            self.attention_biases = self.add_weight(
                shape=(self.num_heads, size), initializer="zeros", name="attention_biases"
            )

    def call(self, inputs: Any, training: Any = None) -> Any:
        q, k, v = inputs
        h = self.num_heads
        d, dv = int(q.shape[-1]) // h, int(v.shape[-1]) // h

        def heads(t: Any, size: int) -> Any:
            return ops.transpose(ops.reshape(t, (ops.shape(t)[0], ops.shape(t)[1], h, size)), (0, 2, 1, 3))

        scale = ops.convert_to_tensor(1.0 / math.sqrt(d) if self.scale is None else self.scale, dtype=q.dtype)
        scores = ops.matmul(heads(q, d), ops.transpose(heads(k, d), (0, 1, 3, 2))) * scale
        if self.bias_index is not None:
            scores = scores + ops.take(ops.cast(self.attention_biases, q.dtype), self.bias_index, axis=1)
        weights = ops.softmax(scores, axis=-1)
        if training and self.seed_generator is not None:
            weights = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        out = ops.matmul(weights, heads(v, dv))
        return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (ops.shape(q)[0], ops.shape(q)[1], h * dv))

    def compute_output_shape(self, input_shape: Any) -> Any:
        q, _, v = input_shape
        return (*q[:-1], v[-1])

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "num_heads": self.num_heads, "scale": self.scale, "dropout": self.dropout}
        if self.bias_grid is not None:
            config.update(bias_grid=list(self.bias_grid), bias_stride=self.bias_stride, state_index=self.state_index)
        return config


@keras.saving.register_keras_serializable(package="xconv", name="SelectToken")
class SelectTokenLayer(keras.layers.Layer):
    """One token's features, ``x[:, index]`` (see :class:`xconv.SelectToken`)."""

    def __init__(self, index: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x: Any) -> Any:
        return x[:, self.index]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], input_shape[2])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "index": self.index}


def _to_tokens(info: LayerInfo, x: Any, dtype: str) -> Any:
    c, h, w = info.input_shape
    return keras.layers.Reshape((h * w, c), dtype=dtype, name=keras_name(info))(x)


def _to_map(info: LayerInfo, x: Any, dtype: str) -> Any:
    c, h, w = info.output_shape
    return keras.layers.Reshape((h, w, c), dtype=dtype, name=keras_name(info))(x)


def _attention(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer = cast(SelfAttention, info.layer)
    x, mask = x if isinstance(x, tuple) else (x, None)  # (tokens, the model's padding mask)
    attention = SelfAttentionLayer(
        layer.num_heads,
        layer.qkv_bias,
        layer.proj_bias,
        layer.dropout,
        layer.scale,
        layer.projection,
        dtype=dtype,
        name=keras_name(info),
    )
    return attention(x) if mask is None else attention(x, padding_mask=mask)


def _token_type_layer(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer = cast(TokenTypeEmbedding, info.layer)
    x, types = x if isinstance(x, tuple) else (x, None)  # (tokens, the model's token types)
    embedding = TokenTypeEmbeddingLayer(layer.types, layer.token_type, dtype=dtype, name=keras_name(info))
    return embedding(x) if types is None else embedding(x, token_types=types)


def _embedding(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer = cast(Embedding, info.layer)
    v, e, name = layer.num_embeddings, layer.embed_dim, keras_name(info)
    return TokenEmbedding(v, e, layer.padding_idx, dtype=dtype, name=name)(x)


BUILDERS: dict[type, Any] = {
    ToTokens: _to_tokens,
    ToMap: _to_map,
    ClassToken: lambda info, x, dtype: ClassTokenLayer(info.layer.count, dtype=dtype, name=keras_name(info))(x),
    Embedding: _embedding,
    PaddedPositions: lambda info, x, dtype: PaddedPositionsLayer(
        info.layer.padding_idx, dtype=dtype, name=keras_name(info)
    )(x),
    PositionEmbedding: lambda info, x, dtype: PositionEmbeddingLayer(
        info.layer.rows, dtype=dtype, name=keras_name(info)
    )(x),
    TokenTypeEmbedding: _token_type_layer,
    SelfAttention: _attention,
    SelectToken: lambda info, x, dtype: SelectTokenLayer(info.layer.index, dtype=dtype, name=keras_name(info))(x),
    TokenMean: lambda info, x, dtype: keras.layers.GlobalAveragePooling1D(dtype=dtype, name=keras_name(info))(x),
}


_ATTENTION_VARIABLES = {
    "in_proj_weight": "qkv_kernel",
    "in_proj_bias": "qkv_bias_weight",
    "out_proj.weight": "out_kernel",
    "out_proj.bias": "out_bias",
}


def attention_bias(layer: DotProductAttentionLayer) -> tuple[dict[str, Any], dict[str, Any]]:
    """A DotProductAttentionLayer's learned bias: its DotProductAttention fields and its arrays (the table;
    the index too where torch keeps it in its state_dict), none where it has none."""
    if layer.bias_grid is None:
        return {}, {}
    fields = {"bias_grid": layer.bias_grid, "bias_stride": layer.bias_stride, "state_index": layer.state_index}
    arrays: dict[str, Any] = {"attention_biases": np.asarray(layer.attention_biases.numpy())}
    if layer.state_index:
        arrays["attention_bias_idxs"] = bias_index(layer.bias_grid, layer.bias_stride)
    return fields, arrays


VARIABLES: dict[type, Any] = {
    ClassToken: lambda layer, info: {"token": layer.token},
    Embedding: lambda layer, info: {"weight": layer.embeddings},
    PositionEmbedding: lambda layer, info: {"embedding": layer.embedding},
    TokenTypeEmbedding: lambda layer, info: {"weight": layer.weight},
    SelfAttention: lambda layer, info: {name: getattr(layer, _ATTENTION_VARIABLES[name]) for name in info.params},
    # (its bias index is a constant of the layer, not a variable)
    DotProductAttention: lambda layer, info: (
        {"attention_biases": layer.attention_biases} if "attention_biases" in info.params else {}
    ),
}


LAYOUTS: dict[type, Any] = {
    SelfAttention: lambda info, name: "linear" if name.endswith("weight") else "same",
}


def _arrays(layer: Any, names: dict[str, str]) -> dict[str, np.ndarray]:
    return {canonical: np.asarray(getattr(layer, own).numpy()) for canonical, own in names.items()}


def _own_attention(layer: SelfAttentionLayer, where: str, current: tuple[int, ...]) -> Any:
    e = int(layer.qkv_kernel.shape[0])
    spec = SelfAttention(
        e, layer.num_heads, layer.qkv_bias, layer.proj_bias, layer.dropout, layer.scale, layer.projection
    )
    names = {k: v for k, v in _ATTENTION_VARIABLES.items() if getattr(layer, v) is not None}
    return spec, _arrays(layer, names)


#: the options of Keras' MultiHeadAttention that xconv knows; a layer with another one is refused by its name
_KNOWN_ATTENTION_CONFIG = {
    "activity_regularizer",
    "attention_axes",
    "bias_constraint",
    "bias_initializer",
    "bias_regularizer",
    "dropout",
    "dtype",
    "kernel_constraint",
    "kernel_initializer",
    "kernel_regularizer",
    "key_dim",
    "name",
    "num_heads",
    "output_shape",
    "seed",
    "sliding_window",
    "trainable",
    "use_bias",
    "use_gate",
    "value_dim",
}


def _keras_attention(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    """``keras.layers.MultiHeadAttention`` called as self-attention (query = value = key, no mask): the q, k, v
    kernels (E, heads, head_dim) side by side as the fused (E, 3E) kernel, the output kernel (heads, head_dim,
    E) as (E, E). Keras multiplies the query by 1 / sqrt(head_dim) cast through float32, so the spec takes that
    number as its ``scale`` (in a float64 model it differs from the exact scale by up to 2**-24 of the scores)."""
    h, d = int(layer.num_heads), int(layer.key_dim)
    e = int(current[-1]) if len(current) == 2 else -1
    axes = layer.attention_axes
    config = layer.get_config()
    unknown = sorted(set(config) - _KNOWN_ATTENTION_CONFIG)
    problems = [
        (bool(unknown), f"the option {unknown[0] if unknown else ''} (not known to xconv)"),
        (bool(config.get("use_gate")), "use_gate=True"),
        (config.get("sliding_window") is not None, f"sliding_window={config.get('sliding_window')}"),
        (len(current) != 2, f"its input is not a token tensor (tokens, features) but {current}"),
        (layer.value_dim not in (None, d), f"value_dim={layer.value_dim} differs from key_dim={d}"),
        (h * d != e, f"num_heads * key_dim = {h * d} differs from the {e} input features"),
        (layer._output_shape is not None, f"output_shape={layer._output_shape}"),
        (axes is not None and tuple(axes) not in ((1,), (-2,)), f"attention_axes={axes}"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(
            f"from_keras: {where}: MultiHeadAttention is supported as self-attention over the tokens with "
            f"num_heads * key_dim features in and out; here {bad[0]}"
        )
    q, k, v, o = layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense
    kernel = np.concatenate([np.asarray(t.kernel.numpy()).reshape(e, h * d) for t in (q, k, v)], axis=1)
    arrays = {"in_proj_weight": kernel, "out_proj.weight": np.asarray(o.kernel.numpy()).reshape(h * d, e)}
    if layer.use_bias:
        arrays["in_proj_bias"] = np.concatenate([np.asarray(t.bias.numpy()).reshape(-1) for t in (q, k, v)])
        arrays["out_proj.bias"] = np.asarray(o.bias.numpy()).reshape(-1)
    # Keras scales by 1 / sqrt(key_dim) cast to the model's dtype through float32: that number, exactly
    scale = float(np.float32(1.0 / math.sqrt(d)))
    spec = SelfAttention(e, h, layer.use_bias, layer.use_bias, float(layer.dropout), scale)
    return spec, arrays


def _keras_token_mean(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    if len(current) != 2 or layer.keepdims or layer.data_format != "channels_last":
        raise UnsupportedLayerError(
            f"from_keras: {where}: GlobalAveragePooling1D is supported over the tokens of a (tokens, features) "
            "input, channels_last, without keepdims"
        )
    return TokenMean(), {}


#: the options of Keras' Embedding that xconv knows; a layer with another one is refused by its name
_KNOWN_EMBEDDING_CONFIG = {
    "activity_regularizer",
    "dtype",
    "embeddings_constraint",
    "embeddings_initializer",
    "embeddings_regularizer",
    "input_dim",
    "lora_alpha",
    "lora_rank",
    "mask_zero",
    "name",
    "output_dim",
    "padding_idx",
    "quantization_config",
    "trainable",
    "weights",
}


def _keras_embedding(layer: Any, where: str, current: tuple[int, ...], reverse_only: tuple[str, ...] = ()) -> Any:
    """``keras.layers.Embedding`` looking up the model's token ids (and xconv's ``TokenEmbedding``, with its
    padding row); ``reverse_only``: options that act in no forward call."""
    config = {k: v for k, v in layer.get_config().items() if k not in reverse_only}
    unknown = sorted(set(config) - _KNOWN_EMBEDDING_CONFIG)
    problems = [
        (bool(unknown), f"the option {unknown[0] if unknown else ''} (not known to xconv)"),
        (bool(config.get("mask_zero")), "mask_zero=True (a mask that later layers read)"),
        (bool(config.get("lora_rank")), f"lora_rank={config.get('lora_rank')}"),
        (config.get("quantization_config") is not None, "a quantization config"),
        (config.get("embeddings_constraint") is not None, "an embeddings constraint (applied after each update)"),
        (len(current) != 1, f"its input is not a batch of token ids (L,) but {current}"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_keras: {where}: Embedding with {bad[0]} is not supported")
    padding = getattr(layer, "padding_idx", None)
    spec = Embedding(int(layer.input_dim), int(layer.output_dim), padding)
    return spec, {"weight": np.asarray(layer.embeddings.numpy())}


def _reversible_embedding(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    """Keras' ``ReversibleEmbedding`` (keras-hub's BERT's token embedding) called forward: an ``Embedding``.
    Its own options (``tie_weights``, ``reverse_dtype``, ``logit_soft_cap``) act only in a reverse call (ids
    from features, through the transposed table), which is refused."""
    for node in layer._inbound_nodes:
        args = list(getattr(node.arguments, "args", ()) or ())[1:]
        if any(bool(v) for v in args) or bool((node.arguments.kwargs or {}).get("reverse")):
            raise UnsupportedLayerError(f"from_keras: {where}: ReversibleEmbedding called with reverse=True")
    return _keras_embedding(layer, where, current, reverse_only=("tie_weights", "reverse_dtype", "logit_soft_cap"))


#: Keras layer class (exactly) -> (layer, where, its input's logical shape) -> (spec layer, Keras arrays)
KERAS_IMPORTS: dict[type, Any] = {
    keras.layers.ReversibleEmbedding: _reversible_embedding,
    ClassTokenLayer: lambda layer, where, current: (
        ClassToken(int(layer.token.shape[-1]), int(layer.token.shape[1])),
        {"token": np.asarray(layer.token.numpy())},
    ),
    PositionEmbeddingLayer: lambda layer, where, current: (
        PositionEmbedding(int(current[0]), int(layer.embedding.shape[2]), int(layer.embedding.shape[1])),
        {"embedding": np.asarray(layer.embedding.numpy())},
    ),
    TokenTypeEmbeddingLayer: lambda layer, where, current: (
        TokenTypeEmbedding(layer.types, int(layer.weight.shape[1]), layer.token_type),
        {"weight": np.asarray(layer.weight.numpy())},
    ),
    keras.layers.Embedding: _keras_embedding,
    TokenEmbedding: _keras_embedding,
    PaddedPositionsLayer: lambda layer, where, current: (PaddedPositions(layer.padding_idx), {}),
    SelfAttentionLayer: _own_attention,
    keras.layers.MultiHeadAttention: _keras_attention,
    SelectTokenLayer: lambda layer, where, current: (SelectToken(layer.index), {}),
    keras.layers.GlobalAveragePooling1D: _keras_token_mean,
}
