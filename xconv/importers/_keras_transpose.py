"""Keras front-end for transposed convolutions: ``Conv2DTranspose`` (and a ``Cropping2D`` after it) as torch's
``ConvTranspose2d`` where the functions are the same, and xconv's own ``TorchConvTranspose2D``."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import layout
from ..backends._tf_env import keras
from ..errors import UnsupportedLayerError
from ..kinds.conv._keras import TorchConvTranspose2D
from ..spec import ConvTranspose2d
from ._graph import Raw, drop, readers

__all__ = ["CONV_TRANSPOSE", "conv_transpose", "fold_transpose_crops"]

CONV_TRANSPOSE = (keras.layers.Conv2DTranspose, TorchConvTranspose2D)


def conv_transpose(
    layer: Any, in_shape: tuple[int, ...], name: str, where: str
) -> tuple[ConvTranspose2d, dict[str, np.ndarray]]:
    """The ConvTranspose2d of a Keras transposed conv on an (H, W, C) input, and its Keras arrays. 'valid' and
    'same' become torch's padding (cropped from both ends) and output_padding (added bottom / right) where
    TensorFlow's crop of the full output is one of those; otherwise refused."""
    kernel = np.asarray(layer.kernel.numpy())  # (kh, kw, out // groups, in)
    weights = {"weight": kernel}
    if layer.use_bias:
        weights["bias"] = np.asarray(layer.bias.numpy())
    common = {"stride": tuple(layer.strides), "bias": layer.use_bias, "name": name}
    if type(layer) is TorchConvTranspose2D:
        spec = ConvTranspose2d(
            int(kernel.shape[3]),
            layer.filters,
            tuple(layer.kernel_size),
            groups=layer.groups,
            padding=layer.torch_padding,
            output_padding=layer.torch_output_padding,
            dilation=layer.torch_dilation,
            **common,
        )
        return spec, weights
    out_hw = tuple(layer.compute_output_shape((None, *in_shape))[1:3])  # Keras' own output length
    padding, output_padding = [], []
    for n, out, k, s, d in zip(in_shape[:2], out_hw, layer.kernel_size, layer.strides, layer.dilation_rate):
        full = (n - 1) * s + d * (k - 1) + 1
        # TensorFlow keeps [before, before + out) of the full output zero-extended, before from the forward conv's
        # padding for an input of length out ('valid': none)
        before = 0 if layer.padding == "valid" else layout.same_padding(out, k, s, d)[0]
        op = out - full + 2 * before
        if op < 0 or (op >= s and op >= d):
            raise UnsupportedLayerError(
                f"from_keras: {where}: padding={layer.padding!r} on input length {n} (kernel {k}, stride {s}, "
                f"dilation {d}) keeps positions [{before}, {before + out}) of the full output of {full}, which "
                "torch's padding (both ends) and output_padding (the end) cannot express"
            )
        padding.append(before)
        output_padding.append(op)
    spec = ConvTranspose2d(
        int(kernel.shape[3]),
        layer.filters,
        tuple(layer.kernel_size),
        padding=tuple(padding),
        output_padding=tuple(output_padding),
        dilation=tuple(layer.dilation_rate),
        **common,
    )
    return spec, weights


def fold_transpose_crops(nodes: list[Raw]) -> None:
    """A Cropping2D read right after a transposed conv (its one reader) becomes torch's padding and output_padding
    where it can: cropping (a, b) on an axis adds a to the padding and a - b to the output_padding."""
    users = readers(nodes)
    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "layer" and isinstance(node.layer, ConvTranspose2d) and len(users[i]) == 1):
            continue
        crop = users[i][0]
        if nodes[crop].op != "keras_crop":
            continue
        (cropping, _), layer = nodes[crop].payload, node.layer
        padding = tuple(p + a for p, (a, _) in zip(layer.padding, cropping))
        output_padding = tuple(op + a - b for op, (a, b) in zip(layer.output_padding, cropping))
        if any(op < 0 or (op >= s and op >= d) for op, s, d in zip(output_padding, layer.stride, layer.dilation)):
            continue  # left in place: refused by name
        node.layer = dataclasses.replace(layer, padding=padding, output_padding=output_padding)
        drop(nodes, crop)
        users = readers(nodes)
