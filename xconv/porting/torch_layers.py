"""torch front-end, the layer half: which torch module or functional call is which spec layer. Only exact
classes and functions map; anything else is refused with the operation's name."""

from __future__ import annotations

import math
from typing import Any, cast

from ..backends.torch_backend import nn, torch  # the backend is the one place that imports torch
from ..errors import UnsupportedLayerError
from ..spec import (
    ELU,
    GELU,
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    ChannelLinear,
    ChannelShuffle,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    GroupNorm,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    LayerNorm,
    LayerScale,
    LeakyReLU,
    Linear,
    MaxPool2d,
    Narrow,
    Normalization,
    PReLU,
    ReLU,
    Rescaling,
    Sigmoid,
    SiLU,
    Softmax,
    StochasticDepth,
    Tanh,
    Upsample,
    ZeroPad2d,
)

F = torch.nn.functional

_SUPPORTED = (
    "nn.Conv2d / F.conv2d, nn.ReLU / F.relu / torch.relu / .relu(), x + c / c - x / x * c / x / c with a number, nn.Flatten / torch.flatten(x, 1) / "
    "x.view(N, -1) / x.reshape(N, -1), nn.Linear / F.linear, nn.ZeroPad2d (folded into the next conv where exact), "
    "nn.MaxPool2d / F.max_pool2d, nn.AvgPool2d / F.avg_pool2d, nn.AdaptiveAvgPool2d / F.adaptive_avg_pool2d, "
    "nn.BatchNorm1d / nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d (no running statistics), nn.PReLU, nn.Dropout, nn.LeakyReLU / F.leaky_relu, nn.Sigmoid / torch.sigmoid, "
    "nn.Tanh / torch.tanh, nn.GELU / F.gelu, nn.ELU / F.elu, nn.SiLU / F.silu, nn.Softmax / F.softmax (with dim), "
    "nn.Identity, nn.ReLU6 / F.relu6, nn.Hardtanh / F.hardtanh, nn.Hardsigmoid / F.hardsigmoid, nn.Hardswish / "
    "F.hardswish, torchvision's stochastic depth, x.mean([2, 3]) / torch.mean over H and W, nn.LayerNorm / "
    "F.layer_norm and nn.Linear over features or, between x.permute(0, 2, 3, 1) and x.permute(0, 3, 1, 2), over "
    "the channels at every pixel (with elementwise layers in between), a (C, 1, 1) parameter named layer_scale "
    "times x, x.chunk / torch.split / x.narrow / x[:, a:b], nn.ChannelShuffle and its view-transpose-view idiom, "
    "nn.ConvTranspose2d, nn.Upsample / nn.UpsamplingNearest2d / nn.UpsamplingBilinear2d / F.interpolate (nearest, "
    "nearest-exact, bilinear; no antialias or recompute_scale_factor; sizes may come from x.shape), nested "
    "nn.Sequential; x + y / torch.add / +=, x * y / torch.mul (broadcasting), torch.cat / torch.concat; any "
    "nn.Module whose forward is a fork-join graph of these"
)


def _flat_args(node: Any) -> list[Any]:
    """The graph nodes among a node's arguments, in order."""
    return nodes_in((node.args, node.kwargs))


def nodes_in(value: Any) -> list[Any]:
    """The graph nodes inside ``value`` (nested tuples, lists and dicts of arguments), in order."""
    found: list[Any] = []

    def collect(n: Any) -> Any:
        found.append(n)
        return n

    torch.fx.node.map_arg(value, collect)
    return found


def _param(t: Any) -> Any:
    return t if t is None or isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)


def _get_attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _shape(node: Any) -> tuple[int, ...] | None:
    """The shape the importer's shape propagation recorded for a traced tensor, or None."""
    return getattr(node, "meta", {}).get("xconv_shape")


def _as_module(
    root: nn.Module,
    node: Any,
    args: list[Any],
    params: dict[Any, Any],
    batch: set[Any],
    where: str,
    resolve: Any = lambda v: v,
) -> nn.Module:
    """The nn module equivalent to one traced operation (sharing its parameters), or UnsupportedLayerError.
    ``resolve`` turns size computations among the arguments (``x.shape[-2:]``) into their values."""
    from ..errors import UnsupportedLayerError

    kwargs = dict(node.kwargs)
    if node.op == "call_module":
        m = root.get_submodule(node.target)
        if isinstance(m, nn.ConvTranspose2d) and (len(args) > 1 or kwargs):
            raise UnsupportedLayerError(
                f"from_torch: {where}: an output_size passed to forward is not supported "
                "(give the output_padding to the module instead)"
            )
        return m
    if node.op == "call_function" and node.target is F.interpolate:
        names = ["size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias"]
        values = resolve({**dict(zip(names, args[1:])), **kwargs})
        if values.get("antialias") or values.get("recompute_scale_factor"):
            raise UnsupportedLayerError(f"from_torch: {where}: antialias and recompute_scale_factor are not supported")
        size = values.get("size")
        if (
            isinstance(size, (list, tuple))
            and not all(isinstance(v, int) for v in size)
            or (size is not None and not isinstance(size, (int, list, tuple)))
        ):
            raise UnsupportedLayerError(f"from_torch: {where}: the size {size!r} is not known at import")
        return nn.Upsample(
            size=tuple(size) if isinstance(size, (list, tuple)) else size,
            scale_factor=values.get("scale_factor"),
            mode=values.get("mode", "nearest"),
            align_corners=values.get("align_corners"),
        )
    if (
        node.op == "call_function"
        and node.target in (F.relu, torch.relu, torch.relu_, F.relu_)
        or (node.op == "call_method" and node.target == "relu")
    ):
        return nn.ReLU()
    if (
        node.op == "call_function"
        and node.target is torch.flatten
        or (node.op == "call_method" and node.target == "flatten")
    ):
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        rank = len(_shape(args[0]) or ())
        if start == 1 and (end == -1 or (rank > 1 and end == rank - 1)):  # flatten(1) and flatten(1, 3)
            return nn.Flatten()
    if node.op == "call_method" and node.target in ("view", "reshape"):
        rest = args[1:]
        if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
            rest = list(rest[0])
        shape = _shape(args[0])
        features = math.prod(shape[1:]) if shape else None
        if len(rest) == 2 and (rest[0] in batch and rest[1] in (-1, features) or rest[0] == -1 and rest[1] == features):
            return nn.Flatten()  # x.view(N, -1), x.reshape(x.shape[:2]) of (N, C, 1, 1), x.view(-1, C * H * W)
    if node.op == "call_function" and node.target is F.conv2d:
        names = ["weight", "bias", "stride", "padding", "dilation", "groups"]
        values = {**dict(zip(names, args[1:])), **kwargs}
        weight, bias = params.get(values.get("weight")), params.get(values.get("bias"))
        if weight is None or ("bias" in values and values["bias"] is not None and bias is None):
            raise UnsupportedLayerError(f"from_torch: {where}: conv weights must be module parameters")
        groups = int(values.get("groups", 1))
        conv = nn.Conv2d(
            weight.shape[1] * groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=values.get("stride", 1),
            padding=values.get("padding", 0),
            dilation=values.get("dilation", 1),
            groups=groups,
            bias=bias is not None,
            device="meta",
        )
        conv.weight, conv.bias = _param(weight), _param(bias)  # share, do not copy
        return conv
    if node.op == "call_function" and node.target is F.batch_norm:
        return _functional_batch_norm(root, node, args, kwargs, params, where)
    if node.op == "call_function" and node.target is F.layer_norm:
        values = {**dict(zip(["normalized_shape", "weight", "bias", "eps"], args[1:])), **kwargs}
        weight, bias = params.get(values.get("weight")), params.get(values.get("bias"))
        if (values.get("weight") is not None and weight is None) or (values.get("bias") is not None and bias is None):
            raise UnsupportedLayerError(f"from_torch: {where}: layer_norm weights must be module parameters")
        if weight is None and bias is not None:
            raise UnsupportedLayerError(f"from_torch: {where}: layer_norm with a bias but no weight is not supported")
        shape = tuple(values["normalized_shape"])
        norm = nn.LayerNorm(
            shape,
            eps=values.get("eps", 1e-5),
            elementwise_affine=weight is not None,
            bias=bias is not None,
            device="meta",
        )
        norm.weight, norm.bias = _param(weight), _param(bias)
        return norm
    if node.op == "call_function" and node.target is F.group_norm:
        values = {**dict(zip(["num_groups", "weight", "bias", "eps"], args[1:])), **kwargs}
        weight, bias = params.get(values.get("weight")), params.get(values.get("bias"))
        if values.get("weight") is None or values.get("bias") is None or weight is None or bias is None:
            raise UnsupportedLayerError(
                f"from_torch: {where}: group_norm is supported with a weight and a bias that are module parameters"
            )
        group = nn.GroupNorm(int(values["num_groups"]), weight.shape[0], eps=values.get("eps", 1e-5), device="meta")
        group.weight, group.bias = _param(weight), _param(bias)
        return group
    functional = _functional_module(node, args, kwargs)
    if functional is not None:
        return functional
    if node.op == "call_function" and node.target is F.linear:
        values = {**dict(zip(["weight", "bias"], args[1:])), **kwargs}
        weight, bias = params.get(values.get("weight")), params.get(values.get("bias"))
        if weight is None:
            raise UnsupportedLayerError(f"from_torch: {where}: linear weights must be module parameters")
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        linear.weight, linear.bias = _param(weight), _param(bias)
        return linear
    raise UnsupportedLayerError(f"from_torch: {where} is not supported; supported: {_SUPPORTED}")


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
        from ..backends.torch_backend import StochasticDepthModule

        v = values("p", "mode", "training")
        module = StochasticDepthModule(v["p"], v["mode"])
        module.train(bool(v.get("training", True)))
        return module
    if target is F.dropout:  # (how its flag follows the mode: see torch_fx)
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


def _is_torchvision_depth(m: nn.Module) -> bool:
    return type(m).__name__ == "StochasticDepth" and type(m).__module__ == "torchvision.ops.stochastic_depth"


def _is_drop_path(m: nn.Module) -> bool:
    return type(m).__name__ == "DropPath" and type(m).__module__ == "timm.layers.drop"


def mode_regularizer(m: nn.Module) -> bool:
    """Whether ``m`` is a layer that computes the identity outside training (dropout, stochastic depth, timm's
    DropPath), imported by its class: an exported program of eval mode records no operation for it."""
    own = type(m).__name__ == "StochasticDepthModule" and type(m).__module__ == _OWN
    return type(m) is nn.Dropout or own or _is_torchvision_depth(m) or _is_drop_path(m)


def _own_types(*names: str) -> tuple[type, ...]:
    from ..backends import torch_backend

    return tuple(getattr(torch_backend, n) for n in names)


def _module_layer(m: nn.Module, where: str) -> Any:
    """The spec layer of one parameter-free (or BatchNorm) torch module, or UnsupportedLayerError."""
    from ..errors import UnsupportedLayerError

    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            raise UnsupportedLayerError(f"from_torch: {where}: return_indices=True is not supported")
        return MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    if isinstance(m, nn.AvgPool2d):
        if m.divisor_override is not None:
            raise UnsupportedLayerError(f"from_torch: {where}: divisor_override is not supported")
        return AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size
        if size is None or (isinstance(size, (tuple, list)) and None in size):
            raise UnsupportedLayerError(f"from_torch: {where}: output_size with None is not supported; give both sizes")
        return AdaptiveAvgPool2d(cast("int | tuple[int, int]", size))  # no None left
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        cls = BatchNorm2d if isinstance(m, nn.BatchNorm2d) else BatchNorm1d
        # what F.batch_norm is given: a gain and a shift each when present (a shift alone is Keras' scale=False)
        scale, center = m.weight is not None, m.bias is not None
        return cls(
            m.num_features,
            eps=m.eps,
            momentum=m.momentum,
            affine=scale or center,
            track_running_stats=m.track_running_stats,
            scale=scale,
            center=center,
            frozen=type(m).__name__ in ("FrozenBatchNorm2d", "FrozenBatchNorm1d") and type(m).__module__ == _OWN,
        )
    if isinstance(m, nn.Dropout):
        return Dropout(m.p)
    if isinstance(m, nn.LeakyReLU):
        return LeakyReLU(m.negative_slope)
    if isinstance(m, nn.GELU):
        return GELU(m.approximate)
    if isinstance(m, nn.ELU):
        return ELU(m.alpha)
    if isinstance(m, nn.Softmax):
        if m.dim is None:
            raise UnsupportedLayerError(
                f"from_torch: {where}: Softmax needs an explicit dim (torch's implicit choice is deprecated)"
            )
        return Softmax(m.dim)
    return {nn.Sigmoid: Sigmoid, nn.Tanh: Tanh, nn.SiLU: SiLU}[type(m)]()


_OWN = "xconv.backends.torch_backend"  # xconv's own torch modules (a model built by xconv)


def _layer(m: nn.Module, name: str, where: str) -> tuple[Any, dict[str, Any]]:
    """The spec layer (named ``name``) of one torch module, and its state tensors keyed canonically. Only the
    exact classes map: a subclass that torch.fx keeps whole (one from torch.nn or torch.ao.nn, such as a
    quantisation-aware conv) may compute something else, and is refused."""
    from ..backends.torch_backend import PaddedConv2d

    own: Any = m  # a module matched by its class's name or in a tuple of classes: attributes read as plain values

    if type(m) is PaddedConv2d:  # xconv's own: its 4-sided padding is applied inside
        left, right, top, bottom = m.pad
        mode = {"constant": "zeros"}.get(m.pad_mode, m.pad_mode)
        layer: Any = Conv2d(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=((top, bottom), (left, right)),
            dilation=m.dilation,
            groups=m.groups,
            bias=m.bias is not None,
            padding_mode=mode,
            name=name,
        )
    elif type(m) is nn.Conv2d:
        padding: Any = m.padding
        if isinstance(padding, str):
            padding = "same" if padding == "same" else (0, 0)  # torch allows 'same' only at stride 1: TF's rule
        layer = Conv2d(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=padding,
            dilation=m.dilation,
            groups=m.groups,
            bias=m.bias is not None,
            padding_mode=m.padding_mode,
            name=name,
        )
    elif type(m) is nn.ConvTranspose2d:
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedLayerError(f"from_torch: {where}: only zero padding given as numbers is supported")
        layer = ConvTranspose2d(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            output_padding=m.output_padding,
            groups=m.groups,
            bias=m.bias is not None,
            dilation=m.dilation,
            name=name,
        )
    elif type(m) in (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d):
        layer = _upsample(cast(nn.Upsample, m), name, where)  # or a subclass of it, as matched
    elif type(m) is nn.Linear:
        layer = Linear(m.in_features, m.out_features, bias=m.bias is not None, name=name)
    elif type(m) is nn.ReLU:
        layer = ReLU(name=name)
    elif type(m) is nn.Flatten:
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayerError(f"from_torch: {where}: only Flatten(start_dim=1, end_dim=-1) is supported")
        layer = Flatten(name=name)
    elif type(m).__name__ == "ChannelsLastFlatten" and type(m).__module__ == _OWN:
        layer = Flatten(channels_last=True, name=name)
    elif type(m) is nn.Identity:
        layer = Identity(name=name)
    elif type(m) in (nn.Hardtanh, nn.ReLU6):
        layer = Hardtanh(float(own.min_val), float(own.max_val), name=name)
    elif type(m) is nn.Hardsigmoid or type(m).__name__ == "ExactHardsigmoid" and type(m).__module__ == _OWN:
        layer = Hardsigmoid(name=name)
    elif type(m) is nn.Hardswish:
        layer = Hardswish(name=name)
    elif type(m).__name__ == "StochasticDepthModule" and type(m).__module__ == _OWN or _is_torchvision_depth(m):
        layer = StochasticDepth(own.p, own.mode, name=name)
    elif _is_drop_path(m):  # timm's DropPath: torchvision's row-mode stochastic depth when it rescales by keep
        if not own.scale_by_keep and own.drop_prob != 0.0:
            raise UnsupportedLayerError(
                f"from_torch: {where}: DropPath(scale_by_keep=False) does not rescale what it keeps; only "
                "scale_by_keep=True (stochastic depth) is supported"
            )
        layer = StochasticDepth(float(own.drop_prob), "row", name=name)
    elif type(m).__name__ == "RescalingModule" and type(m).__module__ == _OWN:
        layer = Rescaling(own.scale, own.offset, name=name)
    elif type(m).__name__ == "NormalizationModule" and type(m).__module__ == _OWN:
        layer = Normalization(int(own.mean.numel()), name=name)
    elif type(m) is nn.LayerNorm or type(m).__name__ == "ChannelLayerNorm" and type(m).__module__ == _OWN:
        if len(own.normalized_shape) != 1:
            raise UnsupportedLayerError(
                f"from_torch: {where}: LayerNorm over {len(own.normalized_shape)} dimensions; "
                "only over one (features, or channels at every pixel) is supported"
            )
        layer = LayerNorm(
            own.normalized_shape[0],
            eps=own.eps,
            elementwise_affine=own.weight is not None,
            bias=own.bias is not None,
            name=name,
        )
    elif type(m).__name__ == "ChannelLinearModule" and type(m).__module__ == _OWN:
        layer = ChannelLinear(own.in_features, own.out_features, bias=own.bias is not None, name=name)
    elif type(m).__name__ == "LayerScaleModule" and type(m).__module__ == _OWN:
        layer = LayerScale(int(own.layer_scale.shape[0]), name=name)
    elif type(m).__name__ == "NarrowModule" and type(m).__module__ == _OWN:
        layer = Narrow(own.dim, own.start, own.length, name=name)
    elif type(m) is nn.ChannelShuffle:
        layer = ChannelShuffle(int(m.groups), name=name)
    elif type(m) is nn.ZeroPad2d:
        pad = tuple(int(v) for v in m.padding)
        if min(pad) < 0:
            raise UnsupportedLayerError(f"from_torch: {where}: negative padding (cropping) is not supported")
        layer = ZeroPad2d(pad, name=name)
    elif type(m) in (
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.BatchNorm2d,
        nn.BatchNorm1d,
        *_own_types("FrozenBatchNorm2d", "FrozenBatchNorm1d"),
        nn.Dropout,
        nn.LeakyReLU,
        nn.Sigmoid,
        nn.Tanh,
        nn.GELU,
        nn.ELU,
        nn.SiLU,
        nn.Softmax,
    ):
        import dataclasses

        layer = dataclasses.replace(_module_layer(m, where), name=name)
    elif type(m) is nn.GroupNorm:
        layer = GroupNorm(m.num_groups, m.num_channels, eps=m.eps, affine=m.affine, name=name)
    elif type(m) is nn.InstanceNorm2d:
        if m.track_running_stats:  # in eval it normalises with running statistics instead: another function
            raise UnsupportedLayerError(
                f"from_torch: {where}: InstanceNorm2d with track_running_stats=True is not supported (in eval it "
                "uses its running statistics); InstanceNorm2d without them imports as GroupNorm(C, C)"
            )
        layer = GroupNorm(m.num_features, m.num_features, eps=m.eps, affine=m.affine, name=name)
    elif type(m) is nn.PReLU:
        layer = PReLU(m.num_parameters, name=name)
    else:
        raise UnsupportedLayerError(f"from_torch: {where} is not supported; supported: {_SUPPORTED}")
    weighted = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)
    state = (
        m.state_dict(keep_vars=True)
        if isinstance(m, weighted) or (isinstance(layer, (Normalization, LayerNorm, LayerScale, GroupNorm, PReLU)))
        else {}
    )
    return layer, {f"{name}.{k}": t for k, t in state.items() if t is not None}


def _upsample(m: nn.Upsample, name: str, where: str) -> Upsample:
    """The spec of an nn.Upsample: torch's own arguments, checked by the spec (a mode other than nearest,
    nearest-exact or bilinear, or recompute_scale_factor, is refused)."""
    from ..errors import SpecError

    if getattr(m, "recompute_scale_factor", None):
        raise UnsupportedLayerError(f"from_torch: {where}: recompute_scale_factor=True is not supported")
    try:
        return Upsample(m.size, m.scale_factor, m.mode, m.align_corners, name=name)
    except SpecError as e:
        raise UnsupportedLayerError(f"from_torch: {where}: {e}") from None
