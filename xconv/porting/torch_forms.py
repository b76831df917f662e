"""The torch importer's patterns beside the module mapping: arithmetic joins and constants, pads folded into
convs, adaptive max pooling, spatial means, DenseNet's growing concatenations, names under another layer's key."""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

from ..backends.torch_backend import nn, torch  # the backend is the one place that imports torch
from ..errors import UnsupportedLayerError
from ..spec import Conv2d, MaxPool2d, Rescaling, ZeroPad2d
from ._graph import Names, Raw, drop, readers

F = torch.nn.functional


_ADDS = (operator.add, operator.iadd, torch.add)
_MULS = (operator.mul, operator.imul, torch.mul)
_CATS = (torch.cat, torch.concat)
_SUBS = (operator.sub, operator.isub, torch.sub)
#: elementwise arithmetic: kind -> (functions, methods); "div" only divides by a number (a Rescaling)
_ARITHMETIC_OPS = {
    "add": (_ADDS, ("add", "add_")),
    "mul": (_MULS, ("mul", "mul_")),
    "sub": (_SUBS, ("sub", "sub_")),
    "div": ((operator.truediv, torch.div), ()),
}


def _join_kind(node: Any) -> str | None:
    """ "add", "mul", "sub" or "div" for an elementwise arithmetic call (``x + y``, ``torch.mul``, ``x.sub_``)."""
    for kind, (functions, methods) in _ARITHMETIC_OPS.items():
        if (
            node.op == "call_function"
            and node.target in functions
            or node.op == "call_method"
            and node.target in methods
        ):
            return None if kind == "div" and node.kwargs else kind
    return None


_PAD_MODULES = {"ReflectionPad2d": "reflect", "ReplicationPad2d": "replicate", "CircularPad2d": "circular"}


def _pad_of(root: nn.Module, node: Any, args: list[Any], resolve: Any, where: str) -> Any:
    """For a reflect, replicate or circular 2-D pad (``nn.ReflectionPad2d`` and its kin, ``F.pad(x, (l, r, t, b),
    mode=...)``): ``((l, r, t, b), mode)``; a constant pad of zeros: ``((l, r, t, b), "zeros")``. None for other
    operations. Other pads are refused by name: they import only folded into the conv after them."""
    if node.op == "call_module":
        m = root.get_submodule(node.target)
        name = type(m).__name__
        if type(m) is getattr(nn, name, None) and name in _PAD_MODULES:
            return tuple(int(v) for v in m.padding), _PAD_MODULES[name]  # type: ignore[union-attr]
        if type(m) is nn.ConstantPad2d:
            if float(m.value) != 0.0:
                raise UnsupportedLayerError(
                    f"from_torch: module {node.target!r} (ConstantPad2d): only a constant pad of zeros is supported"
                )
            return tuple(int(v) for v in m.padding), "zeros"
        return None
    if not (node.op == "call_function" and node.target is F.pad):
        return None
    values = resolve({**dict(zip(("pad", "mode", "value"), args[1:])), **dict(node.kwargs)})
    pad, mode, value = values.get("pad"), values.get("mode", "constant"), values.get("value")
    if not (isinstance(pad, (list, tuple)) and len(pad) == 4 and all(isinstance(v, int) and v >= 0 for v in pad)):
        raise UnsupportedLayerError(
            f"from_torch: {where}: F.pad is supported with four non-negative sizes (left, right, top, bottom) "
            f"on a map. Received: pad={pad!r}"
        )
    if mode == "constant":
        if value not in (None, 0, 0.0):
            raise UnsupportedLayerError(f"from_torch: {where}: only a constant pad of zeros is supported")
        return tuple(pad), "zeros"
    if mode not in ("reflect", "replicate", "circular"):
        raise UnsupportedLayerError(f"from_torch: {where}: F.pad mode {mode!r} is not supported")
    return tuple(pad), mode


def _adaptive_max(root: nn.Module, node: Any, args: list[Any], shape: Any, where: str) -> MaxPool2d | None:
    """``nn.AdaptiveMaxPool2d(k)`` / ``F.adaptive_max_pool2d(x, k)`` on a map whose sides k divides: its bins are
    then equal and disjoint, a ``MaxPool2d`` with kernel and stride H / k (the global max pool for k = 1).
    None for other operations; other sizes are refused."""
    size: Any
    indices: Any
    if node.op == "call_module" and type(root.get_submodule(node.target)) is nn.AdaptiveMaxPool2d:
        m = root.get_submodule(node.target)
        size, indices = m.output_size, m.return_indices
    elif node.op == "call_function" and node.target is F.adaptive_max_pool2d:
        values = {**dict(zip(("output_size", "return_indices"), args[1:])), **dict(node.kwargs)}
        size, indices = values.get("output_size"), values.get("return_indices", False)
    else:
        return None
    sizes = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (list, tuple)) else ()
    if indices or shape is None or len(shape) != 4 or len(sizes) != 2 or not all(isinstance(s, int) for s in sizes):
        raise UnsupportedLayerError(
            f"from_torch: {where}: adaptive max pooling is supported on an NCHW map, to a given size, without "
            "return_indices"
        )
    (oh, ow), (h, w) = sizes, shape[2:]
    if h % oh or w % ow:
        raise UnsupportedLayerError(
            f"from_torch: {where}: adaptive max pooling of a {h}x{w} map to {oh}x{ow}: supported where the output "
            "size divides the map (equal bins)"
        )
    return MaxPool2d((h // oh, w // ow), (h // oh, w // ow))


def _fold_pads(nodes: list[Raw]) -> None:
    """A ZeroPad2d read only by a zero-padded conv (explicit padding) folds into that conv's padding; a reflect,
    replicate or circular pad read only by a conv without padding becomes that conv's padding and padding_mode
    (what ``nn.Conv2d(padding_mode=...)`` computes: the same pad, then the conv). Other pads of those modes stay
    markers, and are refused."""

    users = readers(nodes)
    for i, node in enumerate(nodes):
        if node.alive and node.op == "torch_pad" and node.payload[1] == "zeros":
            node.op, node.layer = "layer", ZeroPad2d(node.payload[0], name=node.name)
    for i, node in enumerate(nodes):
        if node.alive and node.op == "torch_pad" and len(users[i]) == 1:
            conv = nodes[users[i][0]]
            (l, r, t, b), mode = node.payload
            if (
                conv.op == "layer"
                and isinstance(conv.layer, Conv2d)
                and conv.layer.padding_mode == "zeros"
                and conv.layer.padding == ((0, 0), (0, 0))
                and conv.inputs == [i]
            ):
                conv.layer = dataclasses.replace(conv.layer, padding=((t, b), (l, r)), padding_mode=mode)
                drop(nodes, i)
                users = readers(nodes)
    for node in nodes:
        if node.alive and node.op == "torch_pad":
            raise UnsupportedLayerError(
                f"from_torch: {node.name!r} pads in {node.payload[1]!r} mode; that is supported only right before "
                "a Conv2d without padding, where it becomes the conv's padding_mode"
            )
    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "layer" and isinstance(node.layer, ZeroPad2d) and len(users[i]) == 1):
            continue
        conv = nodes[users[i][0]]
        if not (
            conv.op == "layer"
            and isinstance(conv.layer, Conv2d)
            and conv.layer.padding_mode == "zeros"
            and not isinstance(conv.layer.padding, str)  # explicit, not 'same'
            and conv.inputs == [i]
        ):
            continue
        (t, b), (l, r) = node.layer.padding
        (ct, cb), (cl, cr) = conv.layer.padding
        conv.layer = dataclasses.replace(conv.layer, padding=((t + ct, b + cb), (l + cl, r + cr)))
        drop(nodes, i)
        users = readers(nodes)


def _rename_under_owners(nodes: list[Raw], names: Names, tensors: dict[str, Any]) -> None:
    """A module that computes its own function and calls submodules (timm's ``BatchNormAct2d``: ``F.batch_norm``
    on its tensors, then ``self.act``) gives a layer under the key of another: ``bn1`` and ``bn1.act``. A layer
    key cannot hold another layer, so the submodules without weights are renamed (``bn1_act``); keys with
    weights stay the module's own."""

    weighted = {k.rpartition(".")[0] for k in tensors if not k.endswith(".layer_scale")}
    for node in nodes:
        name = getattr(node.layer, "name", None) if node.alive and node.op == "layer" else None
        if name is None or any(f"{name}.{p}" in tensors for p in ("weight", "bias", "running_mean")):
            continue
        if any(name.startswith(f"{owner}.") for owner in weighted):
            node.layer = dataclasses.replace(node.layer, name=names.take(name.replace(".", "_")))


def _constant_arithmetic(join: str | None, args: list[Any], kwargs: Any, index: dict[Any, int]) -> Rescaling | None:
    """``x + c``, ``c + x``, ``x - c``, ``c - x``, ``x * c``, ``c * x`` and ``x / c`` with a Python number ``c``
    and a tensor computed from the input: ``Rescaling(scale, offset)`` (x * scale + offset). None otherwise."""
    if join is None or len(args) != 2 or kwargs:
        return None
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    tensors = [a for a in args if a in index]
    if len(numbers) != 1 or len(tensors) != 1:
        return None
    c, first = float(numbers[0]), args[0] in index
    if join == "add":
        return Rescaling(1.0, c)
    if join == "sub":
        return Rescaling(1.0, -c) if first else Rescaling(-1.0, c)
    if join == "mul":
        return Rescaling(c, 0.0)
    if join == "div" and first and c != 0.0:
        return Rescaling(1.0 / c, 0.0)
    return None


def _spatial_mean(node: Any, args: list[Any]) -> bool | None:
    """For ``x.mean([2, 3])``, ``x.mean((-2, -1), keepdim=True)``, ``torch.mean(x, (2, 3))``: keepdim (the mean
    over H and W is a global average pool, then a flatten unless kept); None for anything else."""
    if not (
        node.op == "call_method" and node.target == "mean" or node.op == "call_function" and node.target is torch.mean
    ):
        return None
    dims = args[1] if len(args) > 1 else node.kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else node.kwargs.get("keepdim", False)
    if set(node.kwargs) - {"dim", "keepdim"} or not isinstance(dims, (list, tuple)) or not isinstance(keepdim, bool):
        return None
    if len(dims) != 2 or not all(isinstance(d, int) and -2 <= d <= 3 and d not in (0, 1) for d in dims):
        return None
    if sorted(d % 4 for d in dims) != [2, 3]:
        return None
    return keepdim


def _existing_prefix(nodes: list[Raw], ids: list[int], dim: int) -> list[int]:
    """For cat(ids): if a live cat node of ids[:-1] (recursively resolved) exists, [that node, ids[-1]]."""
    if len(ids) <= 2:
        return ids
    head = _existing_prefix(nodes, ids[:-1], dim)
    for j, node in enumerate(nodes):
        if node.op == "cat" and node.dim == dim and node.inputs == head:
            return [j, ids[-1]]
    return ids


def _whole_map_pool(m: Any, in_shape: Any, out_shape: Any) -> Any:
    """An average or max pooling whose one window covers the whole map (Hugging Face's EfficientNet pools with a
    kernel as large as its channel count, ``ceil_mode=True``): a global pool, ``nn.AdaptiveAvgPool2d(1)`` /
    a max pool with the map's size as kernel and stride. Torch clips such a window to the map, so the average
    divides by H * W. None for any other module or shape."""
    if type(m) not in (nn.AvgPool2d, nn.MaxPool2d) or not in_shape or len(in_shape) != 4:
        return None
    pair = nn.modules.utils._pair
    if tuple(out_shape or ())[2:] != (1, 1) or pair(m.padding) != (0, 0):
        return None
    if isinstance(m, nn.AvgPool2d) and m.divisor_override is not None:
        return None
    if isinstance(m, nn.MaxPool2d) and (pair(m.dilation) != (1, 1) or m.return_indices):
        return None
    kh, kw = pair(m.kernel_size)
    if kh < in_shape[2] or kw < in_shape[3]:
        return None
    whole = (int(in_shape[2]), int(in_shape[3]))
    return nn.AdaptiveAvgPool2d(1) if isinstance(m, nn.AvgPool2d) else nn.MaxPool2d(whole, whole)
