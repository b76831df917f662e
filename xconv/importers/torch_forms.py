"""The torch importer's patterns beside the module mapping: arithmetic joins and constants, pads folded into
convs, adaptive max pooling, spatial means, DenseNet's growing concatenations, names under another layer's key,
and the module form of functional calls (F.batch_norm on a module's own tensors, F.max_pool2d, F.dropout, ...)."""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError
from ..spec import Conv2d, MaxPool2d, Narrow, Rescaling, ZeroPad2d
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


def _param(t: Any) -> Any:
    """A tensor as a parameter of a module made to share it (not copied)."""
    return t if t is None or isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)


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
    mode=...)``): ``((l, r, t, b), mode)``; a constant pad of zeros: ``((l, r, t, b), "zeros")``, of -inf (timm's
    "same" max pooling): ``((l, r, t, b), "-inf")``. None for other
    operations. Other pads are refused by name: they import only folded into the conv after them."""
    if node.op == "call_module":
        m = root.get_submodule(node.target)
        name = type(m).__name__
        if type(m) is getattr(nn, name, None) and name in _PAD_MODULES:
            return tuple(int(v) for v in m.padding), _PAD_MODULES[name]  # type: ignore[union-attr]
        if type(m) is nn.ConstantPad2d:
            if len(m.padding) != 4 or min(int(v) for v in m.padding) < 0:
                raise UnsupportedLayerError(
                    f"from_torch: module {node.target!r} (ConstantPad2d): supported with four non-negative sizes "
                    f"(left, right, top, bottom). Received: {tuple(m.padding)}"
                )
            if float(m.value) not in (0.0, -math.inf):
                raise UnsupportedLayerError(
                    f"from_torch: module {node.target!r} (ConstantPad2d): only a constant pad of zeros (or of -inf "
                    "before a max pool) is supported"
                )
            return tuple(int(v) for v in m.padding), "zeros" if float(m.value) == 0.0 else "-inf"
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
        if value not in (None, 0, 0.0, -math.inf):
            raise UnsupportedLayerError(
                f"from_torch: {where}: only a constant pad of zeros (or of -inf before a max pool) is supported"
            )
        return tuple(pad), "-inf" if value == -math.inf else "zeros"
    if mode not in ("reflect", "replicate", "circular"):
        raise UnsupportedLayerError(f"from_torch: {where}: F.pad mode {mode!r} is not supported")
    return tuple(pad), mode


def _padded_max_pool(pool: Raw, pad_index: int, pad: tuple[int, ...], hw: tuple[int, ...]) -> MaxPool2d | None:
    """A pad of -inf ``(l, r, t, b)`` read only by a ``MaxPool2d`` without padding (timm's "same" max pooling pads
    so in forward) as that pool's own padding: the MaxPool2d with padding (t, l) and ceil_mode False or True
    whose windows are the same ones (torch's max pooling pads with -inf too, and a ceil_mode window reaches
    past the bottom and right edges into more of it). None where no such pool exists."""
    layer = pool.layer
    if not (
        pool.op == "layer"
        and isinstance(layer, MaxPool2d)
        and pool.inputs == [pad_index]
        and layer.padding == (0, 0)
        and not layer.ceil_mode
        and len(hw) == 2
    ):
        return None
    from ..kinds.pool import pool_output_size

    l, r, t, b = pad
    assert layer.stride is not None  # (filled in from the kernel size)
    for ceil in (False, True):
        same = True
        for size, before, after, k, s, d in zip(hw, (t, l), (b, r), layer.kernel_size, layer.stride, layer.dilation):
            windows = pool_output_size(size + before + after, k, s, 0, d, False)
            if before > k // 2 or before > after or pool_output_size(size, k, s, before, d, ceil) != windows:
                same = False
        if same:
            return dataclasses.replace(layer, padding=(t, l), ceil_mode=ceil)
    return None


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
        if node.alive and node.op == "torch_pad" and node.payload[1] == "-inf" and len(users[i]) == 1:
            pool = nodes[users[i][0]]
            folded = _padded_max_pool(pool, i, node.payload[0], node.payload[2])
            if folded is not None:
                pool.layer = folded
                drop(nodes, i)
                users = readers(nodes)
    for i, node in enumerate(nodes):
        if node.alive and node.op == "torch_pad" and node.payload[1] != "-inf" and len(users[i]) == 1:
            conv = nodes[users[i][0]]
            (l, r, t, b), mode = node.payload[:2]
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
            if node.payload[1] == "-inf":
                raise UnsupportedLayerError(
                    f"from_torch: {node.name!r} pads with -inf; that is supported only right before a MaxPool2d "
                    "without padding whose windows it gives the padding of a MaxPool2d (at most half the kernel on "
                    "the top and left, the rest a ceil_mode window)"
                )
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


def _spatial_mean(node: Any, args: list[Any], channels_last: bool = False) -> bool | None:
    """For ``x.mean([2, 3])``, ``x.mean((-2, -1), keepdim=True)``, ``torch.mean(x, (2, 3))`` (a channels-last
    map: ``x.mean((1, 2))``): keepdim (the mean over H and W is a global average pool, then a flatten unless
    kept); None for anything else."""
    if not (
        node.op == "call_method" and node.target == "mean" or node.op == "call_function" and node.target is torch.mean
    ):
        return None
    dims = args[1] if len(args) > 1 else node.kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else node.kwargs.get("keepdim", False)
    if set(node.kwargs) - {"dim", "keepdim"} or not isinstance(dims, (list, tuple)) or not isinstance(keepdim, bool):
        return None
    if len(dims) != 2 or not all(isinstance(d, int) and -4 <= d <= 3 for d in dims):
        return None
    if sorted(d % 4 for d in dims) != ([1, 2] if channels_last else [2, 3]):
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


def _functional_batch_norm(
    root: nn.Module, node: Any, args: list[Any], kwargs: dict[str, Any], params: dict[Any, Any], where: str
) -> nn.Module:
    """``F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, training, momentum, eps)`` on the tensors
    of one BatchNorm module ``m`` (timm's ``BatchNormAct2d`` calls it in its own forward), with ``training``
    following the module's mode: that module's BatchNorm, sharing its tensors (its momentum, its counter).
    Anything else is refused."""
    from ..errors import UnsupportedLayerError

    names = ["running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"]
    values = {**dict(zip(names, args[1:])), **kwargs}
    how = node.meta.get("xconv_dropout")
    nodes: dict[str, Any] = {k: values.get(k) for k in names[:4]}
    targets = {k: str(v.target) for k, v in nodes.items() if getattr(v, "op", None) == "get_attr"}
    owners = {t.rpartition(".")[0] for t in targets.values()}
    source = root.__dict__.get("_xconv_source", root)  # the traced module itself, with every submodule
    if type(source).__name__ == "ExportedModel":
        return _program_batch_norm(source, args[0], values, nodes, targets, params, where)
    owner = source.get_submodule(owners.pop()) if len(owners) == 1 else None
    if (
        how != "mode"
        or not isinstance(owner, nn.modules.batchnorm._BatchNorm)
        or set(targets) != {k for k, v in nodes.items() if v is not None}
        or any(targets[k].rpartition(".")[2] != k for k in targets)
        or "running_mean" not in targets
        or "running_var" not in targets
        or float(values.get("eps", 1e-5)) != float(owner.eps)
    ):
        raise UnsupportedLayerError(
            f"from_torch: {where}: F.batch_norm is supported on the running statistics, weight and bias of one "
            "BatchNorm module, with training=self.training (or its `self.training or not self.track_running_stats`) "
            "and the module's own eps"
        )
    ndim = len(getattr(args[0], "meta", {}).get("xconv_shape") or (0, 0, 0, 0))
    cls = nn.BatchNorm2d if ndim == 4 else nn.BatchNorm1d
    bn = cls(
        owner.num_features,
        eps=owner.eps,
        momentum=owner.momentum,
        affine=owner.affine,
        track_running_stats=owner.track_running_stats,
        device="meta",
    )
    with torch.no_grad():  # share, do not copy
        for k in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(bn, k, getattr(owner, k))
        bn.weight, bn.bias = _param(params.get(nodes["weight"])), _param(params.get(nodes["bias"]))
    return bn


def _program_batch_norm(
    source: nn.Module,
    x: Any,
    values: dict[str, Any],
    nodes: dict[str, Any],
    targets: dict[str, str],
    params: Any,
    where: str,
) -> nn.Module:
    """A batch norm of an exported program given by the user: on running statistics (``training=False``, what
    an eval-mode export records), with the weight and bias beside them, or none. A BatchNorm sharing them (its
    counter too, where the program holds one), with the momentum the call records."""
    from ..errors import UnsupportedLayerError

    owner = {t.rpartition(".")[0] for t in targets.values()}
    own = {k: targets[k].rpartition(".")[2] == k for k in targets}
    affine = nodes["weight"] is not None and nodes["bias"] is not None
    if (
        values.get("training") is not False
        or len(owner) != 1
        or not all(own.values())
        or {"running_mean", "running_var"} - set(targets)
        or (nodes["weight"] is None) != (nodes["bias"] is None)
    ):
        raise UnsupportedLayerError(
            f"from_torch: {where}: a batch norm of an exported program is supported on the running statistics "
            "(exported in eval mode) of one BatchNorm, with its weight and bias or neither"
        )
    mean = params.get(nodes["running_mean"])
    ndim = len(getattr(x, "meta", {}).get("xconv_shape") or ())
    cls = nn.BatchNorm1d if ndim == 2 else nn.BatchNorm2d
    momentum = values.get("momentum", 0.1)
    bn = cls(
        mean.shape[0],
        eps=float(values.get("eps", 1e-5)),
        momentum=None if momentum is None else float(momentum),
        affine=affine,
        device="meta",
    )
    prefix = owner.pop()
    with torch.no_grad():  # share, do not copy
        bn.running_mean, bn.running_var = mean, params.get(nodes["running_var"])
        counter = dict(source.named_buffers()).get(f"{prefix}.num_batches_tracked" if prefix else "num_batches_tracked")
        bn.num_batches_tracked = counter if counter is not None else torch.zeros((), dtype=torch.long)
        if affine:
            bn.weight, bn.bias = _param(params.get(nodes["weight"])), _param(params.get(nodes["bias"]))
    return bn


def _is_square(node: Any, args: list[Any], kwargs: dict[str, Any]) -> bool:
    """``torch.square(x)``, ``x.square()``, ``x ** 2``, ``torch.pow(x, 2)`` and ``x.pow(2)``."""
    if kwargs:
        return False
    if (
        node.op == "call_function"
        and node.target is torch.square
        or node.op == "call_method"
        and node.target == "square"
    ):
        return len(args) == 1
    pow_call = (
        node.op == "call_function"
        and node.target in (operator.pow, torch.pow)
        or (node.op == "call_method" and node.target == "pow")
    )
    return (
        pow_call
        and len(args) == 2
        and isinstance(args[0], torch.fx.Node)
        and args[1] == 2
        and type(args[1]) in (int, float)
    )


def _functional_module(node: Any, args: list[Any], kwargs: dict[str, Any]) -> nn.Module | None:
    """The module form of a parameter-free functional call (F.max_pool2d, torch.sigmoid, x.softmax(1), ...)."""

    def values(*names: str) -> dict[str, Any]:
        return {**dict(zip(names, args[1:])), **kwargs}

    target = node.target
    clamps = (torch.clamp, torch.clip, torch.clamp_, torch.clip_)
    if node.op == "call_method" and target in ("clamp", "clamp_", "clip", "clip_") or target in clamps:
        # clamp(x, lo, hi) is hardtanh(x, lo, hi) exactly, and clamp(x, min=0) is relu; other forms stay refused
        v = values("min", "max")
        lo, hi = v.get("min"), v.get("max")
        if set(v) - {"min", "max"} or not all(isinstance(b, (int, float, type(None))) for b in (lo, hi)):
            return None
        if lo is not None and hi is not None and lo <= hi:
            return nn.Hardtanh(float(lo), float(hi))
        if hi is None and lo == 0:
            return nn.ReLU()
        return None
    if _is_square(node, args, kwargs):
        from ..kinds.activation._torch import SquareModule

        return SquareModule()
    if node.op == "call_method":
        methods = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "sigmoid_": nn.Sigmoid, "tanh_": nn.Tanh, "relu_": nn.ReLU}
        if target in methods and len(args) == 1 and not kwargs:
            return methods[target]()
        if target == "softmax":
            dim = values("dim").get("dim")
            return None if dim is None else nn.Softmax(dim=dim)
        return None
    if node.op != "call_function":
        return None
    if target is F.max_pool2d:
        v = values("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        if v.get("return_indices"):
            return None
        return nn.MaxPool2d(
            v["kernel_size"],
            v.get("stride"),
            v.get("padding", 0),
            v.get("dilation", 1),
            ceil_mode=v.get("ceil_mode", False),
        )
    if target is F.avg_pool2d:
        v = values("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
        return nn.AvgPool2d(
            v["kernel_size"],
            v.get("stride"),
            v.get("padding", 0),
            v.get("ceil_mode", False),
            v.get("count_include_pad", True),
            v.get("divisor_override"),
        )
    if target is F.adaptive_avg_pool2d:
        return nn.AdaptiveAvgPool2d(values("output_size")["output_size"])
    if target in (torch.sigmoid, F.sigmoid):
        return nn.Sigmoid()
    if target in (torch.tanh, F.tanh):
        return nn.Tanh()
    if target is F.leaky_relu:
        return nn.LeakyReLU(values("negative_slope").get("negative_slope", 0.01))
    if target is F.gelu:
        return nn.GELU(approximate=values().get("approximate", "none"))
    if target is F.elu:
        return nn.ELU(values("alpha").get("alpha", 1.0))
    if target is F.silu:
        return nn.SiLU()
    if target is F.relu6:
        return nn.ReLU6()
    if target is F.hardtanh:
        v = values("min_val", "max_val")
        return nn.Hardtanh(v.get("min_val", -1.0), v.get("max_val", 1.0))
    if target is F.hardsigmoid:
        return nn.Hardsigmoid()
    if target is F.hardswish:
        return nn.Hardswish()
    if getattr(target, "__name__", "") == "stochastic_depth" and getattr(target, "__module__", "").startswith(
        "torchvision.ops"
    ):  # torchvision.ops.stochastic_depth(input, p, mode, training)
        from ..kinds.regularize._torch import StochasticDepthModule

        v = values("p", "mode", "training")
        module = StochasticDepthModule(v["p"], v["mode"])
        module.train(bool(v.get("training", True)))
        return module
    if target is F.dropout:  # (how its flag follows the mode: see torch_checks._dropout_modes)
        v = values("p", "training", "inplace")
        p, how = float(v.get("p", 0.5)), node.meta.get("xconv_dropout")
        from ..errors import UnsupportedLayerError

        if how is None:
            raise UnsupportedLayerError(
                f"from_torch: operation {node.name!r} (F.dropout): the forward calls dropout differently in training "
                "and in eval, so xconv cannot tell which call follows the mode; use nn.Dropout"
            )
        if how == "mode":
            return nn.Dropout(p)
        if how == "never" or p == 0.0:
            return nn.Identity()
        raise UnsupportedLayerError(
            f"from_torch: operation {node.name!r} (F.dropout, p={p}) drops in inference too (training=True, its "
            "default); pass training=self.training, or use nn.Dropout"
        )
    if target in (F.softmax, torch.softmax):
        dim = values("dim").get("dim")
        return None if dim is None else nn.Softmax(dim=dim)
    return None


def _cropping_pad(gm: Any, node: Any, shape: Any, names: Names) -> list[Any]:
    """For an ``nn.ZeroPad2d`` with negative sizes (NASNet's ``ZeroPad2d((-1, 1, -1, 1))``, a shift by one
    pixel): a Narrow of H and of W for the cropped sides, then a ZeroPad2d of the padded ones, which is what
    torch computes (each side is cropped or padded by itself). Empty for anything else."""
    if node.op != "call_module" or type(gm.get_submodule(node.target)) is not nn.ZeroPad2d:
        return []
    padding = tuple(int(v) for v in gm.get_submodule(node.target).padding)
    if len(padding) != 4 or min(padding) >= 0 or shape is None or len(shape) != 4:
        return []  # (other forms: mapped, or refused, as a layer)
    left, right, top, bottom = padding
    target = str(node.target)
    out: list[Any] = []
    for dim, size, before, after in ((2, shape[2], top, bottom), (3, shape[3], left, right)):
        start, length = max(0, -before), size - max(0, -before) - max(0, -after)
        if length < 1:
            raise UnsupportedLayerError(f"from_torch: module {target!r} (ZeroPad2d) crops the whole map away")
        if length != size:
            out.append(Narrow(dim, start, length, name=names.take(f"{target}_crop{dim}")))
    pad = (max(left, 0), max(right, 0), max(top, 0), max(bottom, 0))
    if any(pad):
        out.append(ZeroPad2d(pad, name=names.take(target, own=True)))
    return out
