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
from .torch_forms import _functional_batch_norm, _functional_module, _param

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
