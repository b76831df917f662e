"""Keras front-end, the graph passes: each folds what a builder (xconv's own, or a hand-written model) put
around a layer back into it (a conv's padding, crop, subsampling or fused activation; an average pool's
padding; a hard sigmoid written as arithmetic; a reshape of a 1x1 map), only where the tensor in between has
one reader."""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import layout
from ..errors import UnsupportedLayerError
from ..kinds import (
    AvgPool2d,
    Conv2d,
    Flatten,
    Hardsigmoid,
    Hardtanh,
    Linear,
    Narrow,
    Rescaling,
    ToMap,
    ToTokens,
    ZeroPad2d,
)
from ._graph import Names, Raw, drop, readers


def _fold_convs(nodes: list[Raw]) -> None:
    """Fold into each Keras conv what sits around it: before it a subsampling (a strided 1x1 conv), a
    bottom/right crop (a one-position axis computed at stride 1), an explicit padding; after it (past a fused
    activation, which commutes with subsampling) a subsampling (stride with dilation). Each only where the
    tensor in between has no other reader."""
    import dataclasses

    users = readers(nodes)
    for c, node in enumerate(nodes):
        if not (node.alive and node.op == "layer" and isinstance(node.layer, Conv2d) and node.payload is not None):
            continue
        keras_layer, conv = node.payload, node.layer
        where = f"layer {node.name!r} ({type(keras_layer).__name__})"
        strides = list(conv.stride)
        p = node.inputs[0]
        pre = crop = pad = None
        drop_pre = drop_crop = drop_pad = None
        mode = "zeros"
        if nodes[p].op == "keras_subsample_before" and len(users[p]) == 1:
            if tuple(conv.kernel_size) != (1, 1) or tuple(conv.stride) != (1, 1):
                raise UnsupportedLayerError(f"from_keras: {where}: subsampling folds only into a 1x1 stride-1 conv")
            pre, drop_pre = nodes[p].payload, p
            p = nodes[p].inputs[0]
        if nodes[p].op == "keras_crop" and len(users[p]) == 1:
            ((ct, cb), (cl, cr)), size = nodes[p].payload
            if ct or cl or conv.padding != ((0, 0), (0, 0)):
                raise UnsupportedLayerError(
                    f"from_keras: {where}: only a bottom/right crop before a 'valid' conv folds"
                )
            for cut, n, k, d in zip((cb, cr), size, conv.kernel_size, conv.dilation):
                # exact only where the cropped axis holds exactly the kernel's extent (one output position)
                if cut and n - cut != (k - 1) * d + 1:
                    raise UnsupportedLayerError(
                        f"from_keras: {where}: a crop before a conv folds only where the cropped input is exactly the "
                        "kernel's extent (one output position)"
                    )
            crop, drop_crop = (cb, cr), p
            p = nodes[p].inputs[0]
        if (
            conv.padding == ((0, 0), (0, 0))
            and len(users[p]) == 1
            and (nodes[p].op == "keras_pad" or nodes[p].op == "layer" and isinstance(nodes[p].layer, ZeroPad2d))
        ):
            if nodes[p].op == "keras_pad":
                pad, mode = nodes[p].payload
            else:
                pad = nodes[p].layer.padding
            drop_pad = p
        if pre is not None:
            strides = list(pre)
        if crop is not None:
            for axis, cut in enumerate(crop):
                if cut:  # one output position: any stride above the crop gives the same single output
                    if strides[axis] != 1:
                        raise UnsupportedLayerError(f"from_keras: {where}: a crop before a strided conv does not fold")
                    strides[axis] = cut + 1
        # a subsampling after the conv (past its fused activation)
        after = users[c][0] if len(users[c]) == 1 else None
        if after is not None and nodes[after].payload == "fused" and len(users[after]) == 1:
            after = users[after][0]
        if after is not None and nodes[after].op == "keras_subsample_after":
            sub = nodes[after].payload
            if conv.padding == "same":  # 'same' at stride 1, then every s-th pixel, is not 'same' at stride s
                raise UnsupportedLayerError(f"from_keras: {where}: a subsampling after a 'same' conv does not fold")
            if any(a > 1 and b > 1 for a, b in zip(strides, sub)):
                raise UnsupportedLayerError(f"from_keras: {where}: subsampling after a strided conv does not fold")
            strides = [a * b for a, b in zip(strides, sub)]
            drop(nodes, after)
        node.layer = dataclasses.replace(
            conv, stride=(strides[0], strides[1]), padding=pad if pad is not None else conv.padding, padding_mode=mode
        )
        for i in (drop_pad, drop_crop, drop_pre):
            if i is not None:
                drop(nodes, i)
        users = readers(nodes)


def _scalar_op(layer: Any, out: Any) -> tuple[str, float] | None:
    """("add" | "mul" | "sub" | "div", c) for a Keras operation node computing x + c, x * c, x - c or x / c."""
    kinds = {"Add": "add", "Multiply": "mul", "Subtract": "sub", "Divide": "div", "TrueDivide": "div"}
    if not type(layer).__module__.startswith("keras.src.ops") or type(layer).__name__ not in kinds:
        return None
    args = layer._inbound_nodes[out._keras_history.node_index].arguments.args
    if len(args) != 2 or not isinstance(args[1], (int, float)) or isinstance(args[1], bool):
        return None
    return kinds[type(layer).__name__], float(args[1])


def _tensor_op(layer: Any, ids: list[int]) -> str | None:
    """ "add" / "sub" / "mul" for a Keras operation node adding, subtracting or multiplying two tensors of the
    graph, else None."""
    kinds = {"Add": "add", "Multiply": "mul", "Subtract": "sub"}
    if not type(layer).__module__.startswith("keras.src.ops") or type(layer).__name__ not in kinds or len(ids) != 2:
        return None
    return kinds[type(layer).__name__]


def _scalars_as_rescaling(nodes: list[Raw]) -> None:
    """The operation nodes x + c, x - c, x * c and x / c that no pattern folded: Rescaling(scale, offset)."""
    for node in nodes:
        if node.alive and node.op == "keras_scalar":
            op, c = node.payload
            if op == "div" and c == 0.0:
                continue  # refused as it is
            scale, offset = {"add": (1.0, c), "sub": (1.0, -c), "mul": (c, 0.0), "div": (1.0 / c if c else 0.0, 0.0)}[
                op
            ]
            node.op, node.layer, node.payload = "layer", Rescaling(scale, offset, name=node.name), None


def _fold_hard_sigmoids(nodes: list[Raw]) -> None:
    """x + 3, then ReLU(max_value=6), then * (1/6) (or / 6), each read only by the next: torch's hard sigmoid
    (Keras applications write it with operation nodes, MobileNetV3)."""
    users = readers(nodes)
    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "keras_scalar" and node.payload == ("add", 3.0) and len(users[i]) == 1):
            continue
        relu = users[i][0]
        if not (
            nodes[relu].op == "layer"
            and nodes[relu].layer == Hardtanh(0.0, 6.0, name=nodes[relu].layer.name)
            and len(users[relu]) == 1
        ):
            continue
        scale = users[relu][0]
        if not (nodes[scale].op == "keras_scalar" and nodes[scale].payload in (("mul", 1.0 / 6.0), ("div", 6.0))):
            continue
        name = nodes[scale].name
        drop(nodes, scale)
        drop(nodes, relu)
        node.op, node.layer, node.payload, node.name = "layer", Hardsigmoid(name=name), None, name
        users = readers(nodes)


def _fold_reshapes(nodes: list[Raw]) -> None:
    """A Reshape of a 1x1 map (1, 1, C) to (C,) is a Flatten; a Reshape of (C,) to (1, 1, C) right after a
    Flatten of a 1x1 map (squeeze-excitation after a global pooling) undoes it. Others stay, and are refused."""
    users = readers(nodes)
    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "keras_reshape"):
            continue
        src, target = node.payload
        if len(src) == 3 and src[:2] == (1, 1) and target == (src[2],):
            node.op, node.layer, node.payload = "layer", Flatten(name=node.name), None
        elif len(src) == 3 and target in ((src[0] * src[1], src[2]), (-1, src[2])):  # an NHWC map as tokens
            node.op, node.layer, node.payload = "layer", ToTokens(name=node.name), None
        elif len(src) == 2 and len(target) == 3 and target[2] in (src[1], -1) and _grid(src[0], target[:2]) is not None:
            h, w = _grid(src[0], target[:2])  # type: ignore[misc]  # tokens read back as an NHWC map
            node.op, node.layer, node.payload = "layer", ToMap(h, w, name=node.name), None
        elif len(src) == 1 and target == (1, 1, src[0]):
            flat = node.inputs[0]
            if (
                nodes[flat].op == "layer"
                and isinstance(nodes[flat].layer, Flatten)
                and len(users[flat]) == 1
                and nodes[flat].payload == ("from", (1, 1, src[0]))
            ):
                drop(nodes, i)
                drop(nodes, flat)
        users = readers(nodes)


def _fold_avgpool_pads(nodes: list[Raw]) -> None:
    """A symmetric ZeroPad2d of at most half the kernel read only by a 'valid' AveragePooling2D is torch's
    AvgPool2d padding (zeros counted in the divisor)."""
    import dataclasses

    users = readers(nodes)
    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "layer" and isinstance(node.layer, ZeroPad2d) and len(users[i]) == 1):
            continue
        pool = nodes[users[i][0]]
        if not (
            pool.op == "layer"
            and isinstance(pool.layer, AvgPool2d)
            and pool.layer.padding == (0, 0)
            and pool.layer.count_include_pad is False
            and not pool.layer.ceil_mode
        ):
            continue
        (t, b), (l, r) = node.layer.padding
        k = pool.layer.kernel_size
        if t != b or l != r or t > k[0] // 2 or l > k[1] // 2:
            continue
        pool.layer = dataclasses.replace(pool.layer, padding=(t, l), count_include_pad=True)
        drop(nodes, i)
        users = readers(nodes)


def crops_as_narrows(
    nodes: list[Raw], raw: dict[int, Any], outputs: list[int], names: Names
) -> tuple[list[Raw], dict[int, Any], list[int]]:
    """Each Cropping2D the folds left (none of its neighbours absorbs it) as exact slices: a Narrow over the
    height, then one over the width (a side that crops nothing gets none). Returns the new nodes, the raw weights
    and the output nodes, renumbered."""
    out: list[Raw] = []
    remap: dict[int, int] = {}
    for i, node in enumerate(nodes):
        node.inputs = [remap[k] for k in node.inputs]
        if not (node.alive and node.op == "keras_crop"):
            out.append(node)
            remap[i] = len(out) - 1
            continue
        ((top, bottom), (left, right)), (h, w) = node.payload
        last = node.inputs[0]
        for axis, before, after, size in ((2, top, bottom, h), (3, left, right, w)):
            if before or after:
                name = names.take(node.name if last == node.inputs[0] else f"{node.name}_width")
                out.append(Raw(name, "layer", [last], layer=Narrow(axis, before, size - before - after, name=name)))
                last = len(out) - 1
        remap[i] = last
    return out, {remap[k]: v for k, v in raw.items()}, [remap[i] for i in outputs]


def _grid(length: int, sizes: tuple[int, ...]) -> tuple[int, int] | None:
    """The (H, W) of a Reshape of ``length`` tokens to (H, W, C) (one of them may be -1); None if it is none."""
    h, w = sizes
    if h == -1 and w > 0 and length % w == 0:
        h = length // w
    elif w == -1 and h > 0 and length % h == 0:
        w = length // h
    return (int(h), int(w)) if h > 0 and w > 0 and h * w == length else None


def returned_tensors(model: Any, entry: str | list[str] | None) -> tuple[list[Any], bool]:
    """The tensors a Keras model returns (``entry``: of a dict, that entry, or a list of them), and whether it
    returns them as a list (several outputs; a model built by xconv with a list of one too, as its spec says: a
    functional Keras model returns a list of one as the tensor itself)."""
    struct: Any = getattr(model, "_outputs_struct", None)
    if entry is None:
        spec = getattr(model, "xconv_spec", None)
        one = spec is not None and spec.outputs is not None
        return list(model.outputs), isinstance(struct, (list, tuple)) and (len(model.outputs) > 1 or one)
    if isinstance(entry, str):
        return [struct[entry]], False
    return [struct[k] for k in entry], True


def flat_outputs(
    nodes: list[Raw], outputs: list[int], every: bool = False
) -> tuple[list[int], list[tuple[int, ...] | None]]:
    """:func:`flat_output` for each of the model's outputs: (the output nodes, each one's FeatureOrder)."""
    pairs = [flat_output(nodes, i, every) for i in outputs]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def flat_output(nodes: list[Raw], output: int, every: bool = False) -> tuple[int, tuple[int, ...] | None]:
    """Make the model's output vector the Keras model's own. A Keras Flatten orders features H,W,C; a Dense after
    it absorbs that in its weights, but when the flattened features reach the output, the spec's Flatten must
    be channels-last too (the torch model then permutes before flattening), else the ported torch model returns
    the same values in another order. An xconv-built model ends in a ``FeatureOrder`` that restores C,H,W order:
    that is a plain Flatten's output, so the layer folds away (``_finish`` checks it has the order it must).
    Returns the output node and that layer's order (None without one). With ``every``, every Flatten of a map
    is made channels-last, wherever its features go."""
    if every:
        for node in nodes:
            map_flattened = node.payload and len(node.payload[1]) == 3  # (tokens flatten in one order in both)
            if node.alive and node.op == "layer" and isinstance(node.layer, Flatten) and map_flattened:
                h, w, c = node.payload[1]
                if layout.flatten_permutation((c, h, w)) is not None:
                    node.layer = dataclasses.replace(node.layer, channels_last=True)

    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "keras_feature_order"):
            continue
        if i != output:
            continue  # (another output's, or read inside: refused once every output is done)
        node.alive = False
        return node.inputs[0], node.payload
    stack, seen = [output], set()
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        node = nodes[i]
        if node.op == "layer" and isinstance(node.layer, Linear):
            continue  # a Dense absorbs the order in its weights
        if node.op == "layer" and isinstance(node.layer, Flatten):
            h, w, c = node.payload[1] if node.payload and len(node.payload[1]) == 3 else (1, 1, 1)
            if layout.flatten_permutation((c, h, w)) is not None:
                node.layer = dataclasses.replace(node.layer, channels_last=True)
            continue
        stack.extend(node.inputs)
    return output, None
