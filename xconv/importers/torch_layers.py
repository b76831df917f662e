"""torch front-end, the layer half: which torch module or functional call is which spec layer. Only exact
classes and functions map; anything else is refused with the operation's name."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError
from ..kinds import (
    ELEMENTWISE,
    BatchNorm1d,
    BatchNorm2d,
    ChannelLinear,
    ClassToken,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Embedding,
    GlobalResponseNorm,
    GroupNorm,
    LayerNorm,
    LayerScale,
    Linear,
    Normalization,
    PatchMerging,
    PositionEmbedding,
    PositionEmbedding2d,
    PReLU,
    SelfAttention,
    Softmax,
    StarReLU,
    StochasticDepth,
    TokenTypeEmbedding,
    ToMap,
    ToTokens,
    WindowAttention,
    framework_list,
    framework_table,
)
from ._graph import Fragment, Names, Raw
from .torch_checks import storage_of as _storage
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
    "nn.Sequential; x + y / torch.add / +=, x * y / torch.mul (broadcasting), torch.cat / torch.concat; tokens "
    "(N, L, E) from maps and back (x.flatten(2).transpose(1, 2), x.transpose(1, 2).reshape(N, C, H, W)); attention "
    "written out (heads by x.reshape(N, L, h, d).transpose(1, 2), F.scaled_dot_product_attention or "
    "softmax(q @ k.transpose(-2, -1)) @ v, merged by o.transpose(1, 2).reshape(N, L, h * d)); any nn.Module whose "
    "forward is a graph of these"
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
        if weight is None or values.get("bias") is not None and bias is None:
            raise UnsupportedLayerError(
                f"from_torch: {where}: group_norm is supported with a weight (and a bias, or none) that are module "
                "parameters"
            )
        group = nn.GroupNorm(int(values["num_groups"]), weight.shape[0], eps=values.get("eps", 1e-5), device="meta")
        group.weight, group.bias = _param(weight), _param(bias)  # (no bias: timm's GroupNorm1NoBias)
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


#: the kinds whose torch modules carry their weights in their state_dict
_WEIGHTED = (
    Conv2d,
    ConvTranspose2d,
    Linear,
    ChannelLinear,
    BatchNorm2d,
    BatchNorm1d,
    Normalization,
    LayerNorm,
    LayerScale,
    GroupNorm,
    PReLU,
    StarReLU,
    GlobalResponseNorm,
    ClassToken,
    PositionEmbedding,
    PositionEmbedding2d,
    SelfAttention,
    Embedding,
    TokenTypeEmbedding,
    WindowAttention,
    PatchMerging,
)


def mode_regularizer(m: nn.Module) -> bool:
    """Whether ``m`` is a layer that computes the identity outside training (dropout, stochastic depth, timm's
    DropPath), imported by its class: an exported program of eval mode records no operation for it."""
    return type(m) in _REGULARIZERS or any(match(m) for match in _REGULARIZER_MATCHERS)


def matched(m: nn.Module) -> bool:
    """Whether ``m`` is a class of another library that imports whole, matched by its module and name."""
    return any(match(m) for match, _ in _MATCHERS)


def own_leaf_types() -> tuple[type, ...]:
    """xconv's own torch layers (a torch model built by xconv), imported whole by their class."""
    return tuple(cls for cls in _IMPORTS if cls.__module__.startswith("xconv."))


#: torch module class (exactly) -> (module, name, where) -> its spec layer; and (predicate, importer) pairs for
#: classes of other libraries matched by module and name; from each kind family's torch part
_IMPORTS: dict[type, Any] = framework_table("torch", "IMPORTS")
_MATCHERS: list[Any] = framework_list("torch", "MATCHERS")
_REGULARIZERS: dict[type, Any] = framework_table("torch", "REGULARIZERS")
_REGULARIZER_MATCHERS: list[Any] = framework_list("torch", "REGULARIZER_MATCHERS")


def _layer(m: nn.Module, name: str, where: str) -> tuple[Any, dict[str, Any]]:
    """The spec layer (named ``name``) of one torch module, and its state tensors keyed canonically. Only the
    exact classes map: a subclass that torch.fx keeps whole (one from torch.nn or torch.ao.nn, such as a
    quantisation-aware conv) may compute something else, and is refused."""
    importer = _IMPORTS.get(type(m))
    if importer is None:
        importer = next((fn for match, fn in _MATCHERS if match(m)), None)
    if importer is None:
        raise UnsupportedLayerError(f"from_torch: {where} is not supported; supported: {_SUPPORTED}")
    layer = importer(m, name, where)
    if isinstance(layer, Fragment):  # (several nodes: their state is keyed already)
        return layer, {k: t for k, t in layer.state.items() if t is not None}
    # the weights of the kinds that have them; a tensor a user hung on a parameter-free module is not its state
    state = m.state_dict(keep_vars=True) if isinstance(layer, _WEIGHTED) else {}
    if isinstance(layer, tuple):  # (layer, its state: canonical shapes, or weights computed from the module's)
        layer, state = layer
    return layer, {f"{layer.name}.{k}": t for k, t in state.items() if t is not None}


def _pick_output(out: Any, key: str | list[str] | None) -> Any:
    """The returned value: the entry ``key`` of a returned dict (or its one entry; a list of keys: the list of
    those entries), else the value itself. A list or tuple of tensors is returned as a list (several outputs)."""
    if isinstance(out, dict):
        if isinstance(key, (list, tuple)):
            missing = [k for k in key if k not in out]
            if missing:
                raise UnsupportedLayerError(
                    f"from_torch: output={list(key)!r} names {missing[0]!r}, which is not an entry of the returned "
                    f"dict ({sorted(out)})"
                )
            return [out[k] for k in key]
        if key is None:
            if len(out) != 1:
                raise UnsupportedLayerError(
                    f"from_torch: forward returns a dict with entries {sorted(out)}; choose one with output=... "
                    "(or several, output=[...])"
                )
            out = next(iter(out.values()))
        elif key not in out:
            raise UnsupportedLayerError(
                f"from_torch: output={key!r} is not an entry of the returned dict ({sorted(out)})"
            )
        else:
            out = out[key]
    elif key is not None:
        raise UnsupportedLayerError(f"from_torch: output={key!r} was given but forward does not return a dict")
    return list(out) if isinstance(out, (list, tuple)) else out


def _output_node(out: Any, index: dict[Any, int], nhwc: Any, shapes: Any) -> int:
    """The raw node of one returned tensor, refused by name where it is not a tensor the spec computes."""
    if not isinstance(out, torch.fx.Node) or out not in index:
        raise UnsupportedLayerError(
            f"from_torch: forward must return tensors computed from its input (one, or a list of them). Received: "
            f"{out!r}"[:300]
        )
    if out in nhwc:
        raise UnsupportedLayerError(f"from_torch: forward returns {out.name!r}, a channels-last (permuted) tensor")
    if out in shapes.pooled:
        raise UnsupportedLayerError(f"from_torch: forward returns {out.name!r}, a mean of tokens as (N, C, 1)")
    return index[out]


def _live_nodes(graph: Any, key: str | list[str] | None) -> set[Any]:
    """The nodes the (chosen) outputs depend on."""
    out_node = next(n for n in graph.nodes if n.op == "output")
    value = out_node.args[0]
    if isinstance(value, dict) and isinstance(key, (list, tuple)):
        value = [value[k] for k in key if k in value]
    elif isinstance(value, dict) and key in value:
        value = value[key]
    stack = nodes_in(value)
    live: set[Any] = set()
    while stack:
        n = stack.pop()
        if n not in live:
            live.add(n)
            stack.extend(n.all_input_nodes)
    return live


def _fragment(
    nodes: list[Raw],
    fragment: Fragment,
    src: int,
    node: Any,
    arg: Any,
    shapes: Any,
    source: Any,
    names: Names,
    taken: str,
    where: str,
) -> int:
    """Appends the nodes of a module imported as several (a :class:`Fragment`) reading node ``src``; returns
    the index of its output. ``taken``: the module's own name, taken already (a step may carry it)."""
    if fragment.channels_last != (arg in shapes.nhwc):
        layout = "a channels-last" if arg in shapes.nhwc else "an NCHW"
        raise UnsupportedLayerError(f"from_torch: {where} is written for another layout than its input, {layout} map")
    if fragment.check is not None:
        fragment.check(shapes.shape(arg))
    if fragment.make is not None:
        inner = node.meta.get("xconv_inner_shapes"), node.meta.get("xconv_inner_ops")
        fragment.steps = fragment.make(shapes.shape(arg), *inner)
    at: dict[int, int] = {-1: src}
    allowed = (*_PER_FEATURE, *(k for k in ELEMENTWISE if k is not Softmax))
    for step, _ in fragment.steps:  # (what each part of the module is, per pixel or token)
        if not isinstance(step, str) and not isinstance(step, allowed):
            raise UnsupportedLayerError(
                f"from_torch: {where}: its part {step.name!r} is a {step.kind}; a module imported as several layers "
                "takes norms, linear layers and elementwise ones over the features only"
            )
    for k, (step, reads) in enumerate(fragment.steps):
        inputs = [at[r] for r in reads]
        if isinstance(step, str):
            nodes.append(Raw(f"{node.name}.{step}_{k}", step, inputs))
        else:
            if step.name != taken and names.take(step.name, own=True) != step.name:
                raise UnsupportedLayerError(f"from_torch: {where}: its layer name {step.name!r} is taken")
            own = {key: t for key, t in fragment.state.items() if key.startswith(f"{step.name}.") and t is not None}
            nodes.append(Raw(step.name, "layer", inputs, layer=_with_source_keys(step, own, source), owned=True))
        at[k] = len(nodes) - 1
    if fragment.channels_last:
        shapes.nhwc.add(node)
    return at[len(fragment.steps) - 1]


#: the layers a Fragment's steps may be besides elementwise ones: they act on each pixel's or token's
#: features, or are the windowed kinds themselves
_PER_FEATURE = (
    LayerNorm,
    Linear,
    ChannelLinear,
    Dropout,
    StochasticDepth,
    WindowAttention,
    PatchMerging,
    ToMap,
    ToTokens,
)


def _with_source_keys(layer: Any, state: dict[str, Any], source: dict[int, str]) -> Any:
    """``layer`` with ``keys`` naming the state_dict keys of its tensors that differ from their canonical keys
    (a parameter of the model's root used through ``F.conv2d``); a tensor fused from parts (Hugging Face's
    query, key and value) by their keys, in order."""
    name = layer.name
    keys: dict[str, Any] = {}
    for canonical, t in state.items():
        own: Any = source.get(_storage(t))
        parts = getattr(t, "xconv_parts", None)
        if own is None and parts is not None:
            own = tuple(source.get(_storage(p)) for p in parts)
            own = None if None in own else own
        if own is not None and own != canonical:
            keys[canonical[len(name) + 1 :]] = own
    return dataclasses.replace(layer, keys=tuple(sorted(keys.items()))) if keys else layer


def _check_key_clashes(module: nn.Module, tensors: dict[str, Any]) -> None:
    """A canonical key that is the source's key of another tensor (a layer scale ``blk.gamma`` keyed
    ``blk.layer_scale`` beside an unused ``blk.layer_scale``) would make ``set_weights(ported,
    model.state_dict())`` load the wrong tensor: refused."""
    state = module.state_dict(keep_vars=True)
    for key, t in tensors.items():
        if key in state and isinstance(state[key], torch.Tensor) and _storage(state[key]) != _storage(t):
            raise UnsupportedLayerError(
                f"from_torch: the weight imported as {key!r} is not the model's own {key!r}, which is another "
                "tensor: its state_dict could not be loaded into the port unambiguously"
            )
