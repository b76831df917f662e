"""torch front-end: a module's ``torch.fx`` graph -> raw DAG -> nested spec, with canonical weights keyed by
the module's own ``state_dict`` names."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from ..backends.torch_backend import F, nn, torch  # the backend is the one place that imports torch
from ..errors import UnsupportedLayerError
from ..spec import (
    ELU, GELU, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, LeakyReLU,
    Linear, MaxPool2d, ReLU, Sequential, Sigmoid, SiLU, Softmax, Tanh, ZeroPad2d, Hardsigmoid, Hardswish, Hardtanh,
    Normalization, Rescaling, StochasticDepth, ConvTranspose2d, Upsample,
)
from ._graph import Names, Raw, drop, readers, to_spec

_SUPPORTED = (
    "nn.Conv2d / F.conv2d, nn.ReLU / F.relu / torch.relu / .relu(), nn.Flatten / torch.flatten(x, 1) / "
    "x.view(N, -1) / x.reshape(N, -1), nn.Linear / F.linear, nn.ZeroPad2d (folded into the next conv where exact), "
    "nn.MaxPool2d / F.max_pool2d, nn.AvgPool2d / F.avg_pool2d, nn.AdaptiveAvgPool2d / F.adaptive_avg_pool2d, "
    "nn.BatchNorm1d / nn.BatchNorm2d, nn.Dropout, nn.LeakyReLU / F.leaky_relu, nn.Sigmoid / torch.sigmoid, "
    "nn.Tanh / torch.tanh, nn.GELU / F.gelu, nn.ELU / F.elu, nn.SiLU / F.silu, nn.Softmax / F.softmax (with dim), "
    "nn.Identity, nn.ReLU6 / F.relu6, nn.Hardtanh / F.hardtanh, nn.Hardsigmoid / F.hardsigmoid, nn.Hardswish / "
    "F.hardswish, torchvision's stochastic depth, x.mean([2, 3]) / torch.mean over H and W, nested "
    "nn.Sequential; nn.ConvTranspose2d, nn.Upsample / nn.UpsamplingNearest2d / nn.UpsamplingBilinear2d / "
    "F.interpolate (nearest, nearest-exact, bilinear; no antialias or recompute_scale_factor); x + y / torch.add / "
    "+=, x * y / torch.mul (broadcasting), torch.cat / torch.concat; any "
    "nn.Module whose forward is a fork-join graph of these"
)


def _flat_args(node: Any) -> list[Any]:
    found: list[Any] = []
    torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def _param(t: Any) -> Any:
    return t if t is None or isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)


def _get_attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _as_module(root: nn.Module, node: Any, args: list[Any], params: dict[Any, Any], batch: set[Any], where: str) -> nn.Module:
    """The nn module equivalent to one traced operation (sharing its parameters), or UnsupportedLayerError."""
    from ..errors import UnsupportedLayerError

    kwargs = dict(node.kwargs)
    if node.op == "call_module":
        m = root.get_submodule(node.target)
        if isinstance(m, nn.ConvTranspose2d) and (len(args) > 1 or kwargs):
            raise UnsupportedLayerError(f"from_torch: {where}: an output_size passed to forward is not supported "
                                        "(give the output_padding to the module instead)")
        return m
    if node.op == "call_function" and node.target is F.interpolate:
        names = ["size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias"]
        values = {**dict(zip(names, args[1:])), **kwargs}
        if values.get("antialias") or values.get("recompute_scale_factor"):
            raise UnsupportedLayerError(f"from_torch: {where}: antialias and recompute_scale_factor are not supported")
        return nn.Upsample(size=values.get("size"), scale_factor=values.get("scale_factor"),
                           mode=values.get("mode", "nearest"), align_corners=values.get("align_corners"))
    if node.op == "call_function" and node.target in (F.relu, torch.relu) or (
        node.op == "call_method" and node.target == "relu"
    ):
        return nn.ReLU()
    if node.op == "call_function" and node.target is torch.flatten or (node.op == "call_method" and node.target == "flatten"):
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        if start == 1 and end == -1:
            return nn.Flatten()
    if node.op == "call_method" and node.target in ("view", "reshape"):
        rest = args[1:]
        if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
            rest = list(rest[0])
        if len(rest) == 2 and rest[0] in batch and rest[1] == -1:
            return nn.Flatten()
    if node.op == "call_function" and node.target is F.conv2d:
        names = ["weight", "bias", "stride", "padding", "dilation", "groups"]
        values = {**dict(zip(names, args[1:])), **kwargs}
        weight, bias = params.get(values.get("weight")), params.get(values.get("bias"))
        if weight is None or ("bias" in values and values["bias"] is not None and bias is None):
            raise UnsupportedLayerError(f"from_torch: {where}: conv weights must be module parameters")
        groups = int(values.get("groups", 1))
        conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                         stride=values.get("stride", 1), padding=values.get("padding", 0),
                         dilation=values.get("dilation", 1), groups=groups, bias=bias is not None, device="meta")
        conv.weight, conv.bias = _param(weight), _param(bias)  # share, do not copy
        return conv
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


def _functional_module(node: Any, args: list[Any], kwargs: dict[str, Any]) -> nn.Module | None:
    """The module form of a parameter-free functional call (F.max_pool2d, torch.sigmoid, x.softmax(1), ...)."""

    def values(*names: str) -> dict[str, Any]:
        return {**dict(zip(names, args[1:])), **kwargs}

    target = node.target
    if node.op == "call_method":
        methods = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
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
        return nn.MaxPool2d(v["kernel_size"], v.get("stride"), v.get("padding", 0), v.get("dilation", 1),
                            ceil_mode=v.get("ceil_mode", False))
    if target is F.avg_pool2d:
        v = values("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
        return nn.AvgPool2d(v["kernel_size"], v.get("stride"), v.get("padding", 0), v.get("ceil_mode", False),
                            v.get("count_include_pad", True), v.get("divisor_override"))
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
            "torchvision.ops"):  # torchvision.ops.stochastic_depth(input, p, mode, training)
        from ..backends.torch_backend import StochasticDepthModule

        v = values("p", "mode", "training")
        module = StochasticDepthModule(v["p"], v["mode"])
        module.train(bool(v.get("training", True)))
        return module
    if target in (F.softmax, torch.softmax):
        dim = values("dim").get("dim")
        return None if dim is None else nn.Softmax(dim=dim)
    return None


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
        return AdaptiveAvgPool2d(size)
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        cls = BatchNorm2d if isinstance(m, nn.BatchNorm2d) else BatchNorm1d
        return cls(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                   track_running_stats=m.track_running_stats)
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
            raise UnsupportedLayerError(f"from_torch: {where}: Softmax needs an explicit dim (torch's implicit choice is deprecated)")
        return Softmax(m.dim)
    return {nn.Sigmoid: Sigmoid, nn.Tanh: Tanh, nn.SiLU: SiLU}[type(m)]()


_OWN = "xconv.backends.torch_backend"  # xconv's own torch modules (a model built by xconv)
_ADDS = (operator.add, operator.iadd, torch.add)
_MULS = (operator.mul, operator.imul, torch.mul)
_CATS = (torch.cat, torch.concat)


def _inplace(root: nn.Module, node: Any) -> bool:
    if node.op == "call_module":
        return bool(getattr(root.get_submodule(node.target), "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_") and not str(node.target).startswith("_")
    name = getattr(node.target, "__name__", "")
    return (bool(node.kwargs.get("inplace", False)) or node.target in (operator.iadd, operator.imul)
            or name.endswith("_") and not name.startswith("_"))


def _layer(m: nn.Module, name: str, where: str) -> tuple[Any, dict[str, Any]]:
    """The spec layer (named ``name``) of one torch module, and its state tensors keyed canonically. Only the
    exact classes map: a subclass that torch.fx keeps whole (one from torch.nn or torch.ao.nn, such as a
    quantisation-aware conv) may compute something else, and is refused."""
    from ..backends.torch_backend import PaddedConv2d

    if type(m) is PaddedConv2d:  # xconv's own: its 4-sided padding is applied inside
        left, right, top, bottom = m.pad
        mode = {"constant": "zeros"}.get(m.pad_mode, m.pad_mode)
        layer: Any = Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                            padding=((top, bottom), (left, right)), dilation=m.dilation, groups=m.groups,
                            bias=m.bias is not None, padding_mode=mode, name=name)
    elif type(m) is nn.Conv2d:
        padding: Any = m.padding
        if isinstance(padding, str):
            padding = "same" if padding == "same" else (0, 0)  # torch allows 'same' only at stride 1: TF's rule
        layer = Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=padding,
                            dilation=m.dilation, groups=m.groups, bias=m.bias is not None,
                            padding_mode=m.padding_mode, name=name)
    elif type(m) is nn.ConvTranspose2d:
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedLayerError(f"from_torch: {where}: only zero padding given as numbers is supported")
        layer = ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                                output_padding=m.output_padding, groups=m.groups, bias=m.bias is not None,
                                dilation=m.dilation, name=name)
    elif type(m) in (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d):
        layer = _upsample(m, name, where)
    elif type(m) is nn.Linear:
        layer = Linear(m.in_features, m.out_features, bias=m.bias is not None, name=name)
    elif type(m) is nn.ReLU:
        layer = ReLU(name=name)
    elif type(m) is nn.Flatten:
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayerError(f"from_torch: {where}: only Flatten(start_dim=1, end_dim=-1) is supported")
        layer = Flatten(name=name)
    elif type(m) is nn.Identity:
        layer = Identity(name=name)
    elif type(m) in (nn.Hardtanh, nn.ReLU6):
        layer = Hardtanh(float(m.min_val), float(m.max_val), name=name)
    elif type(m) is nn.Hardsigmoid or type(m).__name__ == "ExactHardsigmoid" and type(m).__module__ == _OWN:
        layer = Hardsigmoid(name=name)
    elif type(m) is nn.Hardswish:
        layer = Hardswish(name=name)
    elif type(m).__name__ == "StochasticDepthModule" and type(m).__module__ == _OWN:
        layer = StochasticDepth(m.p, m.mode, name=name)
    elif type(m).__name__ == "RescalingModule" and type(m).__module__ == _OWN:
        layer = Rescaling(m.scale, m.offset, name=name)
    elif type(m).__name__ == "NormalizationModule" and type(m).__module__ == _OWN:
        layer = Normalization(int(m.mean.numel()), name=name)
    elif type(m) is nn.ZeroPad2d:
        pad = tuple(int(v) for v in m.padding)
        if min(pad) < 0:
            raise UnsupportedLayerError(f"from_torch: {where}: negative padding (cropping) is not supported")
        layer = ZeroPad2d(pad, name=name)
    elif type(m) in (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d, nn.BatchNorm1d,
                     nn.Dropout, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.ELU, nn.SiLU, nn.Softmax):
        import dataclasses

        layer = dataclasses.replace(_module_layer(m, where), name=name)
    else:
        raise UnsupportedLayerError(f"from_torch: {where} is not supported; supported: {_SUPPORTED}")
    weighted = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)
    state = m.state_dict(keep_vars=True) if isinstance(m, weighted) or isinstance(layer, Normalization) else {}
    return layer, {f"{name}.{k}": t for k, t in state.items() if t is not None}


def _upsample(m: nn.Module, name: str, where: str) -> Upsample:
    """The spec of an nn.Upsample: torch's own arguments, checked by the spec (a mode other than nearest,
    nearest-exact or bilinear, or recompute_scale_factor, is refused)."""
    from ..errors import SpecError

    if getattr(m, "recompute_scale_factor", None):
        raise UnsupportedLayerError(f"from_torch: {where}: recompute_scale_factor=True is not supported")
    try:
        return Upsample(m.size, m.scale_factor, m.mode, m.align_corners, name=name)
    except SpecError as e:
        raise UnsupportedLayerError(f"from_torch: {where}: {e}") from None


def _fold_pads(nodes: list[Raw]) -> None:
    """A ZeroPad2d read only by a zero-padded conv (explicit padding) folds into that conv's padding."""
    import dataclasses

    users = readers(nodes)
    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "layer" and isinstance(node.layer, ZeroPad2d) and len(users[i]) == 1):
            continue
        conv = nodes[users[i][0]]
        if not (conv.op == "layer" and isinstance(conv.layer, Conv2d) and conv.layer.padding_mode == "zeros"
                and conv.layer.padding != "same" and conv.inputs == [i]):
            continue
        (t, b), (l, r) = node.layer.padding
        (ct, cb), (cl, cr) = conv.layer.padding
        conv.layer = dataclasses.replace(conv.layer, padding=((t + ct, b + cb), (l + cl, r + cr)))
        drop(nodes, i)
        users = readers(nodes)


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with xconv's own padded conv (a torch model built by xconv) kept as one layer."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from ..backends.torch_backend import (
            ExactHardsigmoid, NormalizationModule, PaddedConv2d, RescalingModule, StochasticDepthModule,
        )

        own = (PaddedConv2d, StochasticDepthModule, ExactHardsigmoid, RescalingModule, NormalizationModule)
        return type(m) in own or super().is_leaf_module(m, qualname)


_ALIAS_METHODS = ("view", "reshape", "flatten", "contiguous", "view_as", "reshape_as", "squeeze", "unsqueeze")


def _aliases(root: nn.Module, node: Any) -> bool:
    """Whether ``node``'s output may share memory with its first input (a view, or a no-op module)."""
    if node.op == "call_module":
        return isinstance(root.get_submodule(node.target), (nn.Identity, nn.Dropout, nn.Flatten))
    if node.op == "call_method":
        return node.target in _ALIAS_METHODS or _inplace(root, node)
    if node.op == "call_function":
        return node.target in (torch.flatten, torch.reshape, F.dropout) or _inplace(root, node)
    return False


def _unsafe_inplace(root: nn.Module, node: Any) -> Any:
    """For an in-place operation: a node that reads the tensor it overwrites (through any view or no-op
    alias) other than on the way to it, or None. The traced graph cannot say whether that reader saw the
    old or the new values."""
    first = next((a for a in _flat_args(node) if isinstance(a, torch.fx.Node)), None)
    if first is None:
        return None
    on_path = set()  # the alias chain from the overwritten tensor to this operation
    cur = first
    while True:
        on_path.add(cur)
        if cur.op in ("call_module", "call_method", "call_function") and _aliases(root, cur) and cur.args:
            parent = cur.args[0]
            if isinstance(parent, torch.fx.Node):
                cur = parent
                continue
        break
    # every tensor sharing that memory: the chain and all aliases taken of any of it
    shared, stack = set(on_path), list(on_path)
    while stack:
        n = stack.pop()
        for user in n.users:
            if user is not node and _aliases(root, user) and user.args and user.args[0] is n and user not in shared:
                shared.add(user)
                stack.append(user)
    for n in shared:
        for user in n.users:
            if user is not node and user not in shared:
                return user
    return None


def import_model(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[Sequential, dict[str, np.ndarray]]:
    """A hand-written torch module -> (spec, canonical weights). The module is traced with ``torch.fx``; every
    layer is named by its module's qualified name (so the weights have the keys of ``module.state_dict()``),
    residual additions, gating products and channel concatenations become ``Add`` / ``Multiply`` /
    ``Concat``, and ``nn.ZeroPad2d`` folds into the conv after it where that is exact. Anything else raises
    :class:`UnsupportedLayerError` naming the operation."""
    if module._forward_hooks or module._forward_pre_hooks or any(
        m._forward_hooks or m._forward_pre_hooks for m in module.modules()
    ):
        raise UnsupportedLayerError("from_torch: the module or a submodule has forward hooks, which change its "
                                    "output; remove them before importing")
    try:
        graph = _Tracer().trace(module)
        gm = torch.fx.GraphModule(module, graph)
    except Exception as e:  # noqa: BLE001 - tracing failures are reported as unsupported
        raise UnsupportedLayerError(
            f"from_torch: {type(module).__name__}.forward cannot be traced by torch.fx ({type(e).__name__}: {e}); "
            f"supported: {_SUPPORTED}"
        ) from None
    reserved = {name for name, _ in module.named_modules() if name}
    names = Names(reserved)
    nodes: list[Raw] = []
    index: dict[Any, int] = {}
    params: dict[Any, Any] = {}
    batch: set[Any] = set()
    tensors: dict[str, Any] = {}
    calls: dict[str, int] = {}
    owners: dict[int, str] = {}  # id of a weight tensor -> the canonical key it was imported under
    output = None
    for node in gm.graph.nodes:
        where = f"operation {node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)})"
        args = list(node.args)
        if node.op == "placeholder":
            if nodes:
                raise UnsupportedLayerError(f"from_torch: forward must take one input; {where} is a second one")
            index[node] = len(nodes)
            nodes.append(Raw(node.name, "input", []))
            continue
        if node.op == "get_attr":
            params[node] = _get_attr(gm, node.target)
            continue
        if node.op == "output":
            out = args[0]
            if out not in index:
                raise UnsupportedLayerError(
                    f"from_torch: forward must return one tensor computed from its input. Received: {out!r}"[:300])
            output = index[out]
            continue
        if node.op == "call_function" and node.target is getattr and len(args) == 2 and args[1] == "shape" and args[0] in index:
            batch.add(node)
            continue
        if node.op == "call_function" and node.target is operator.getitem and args[0] in batch and args[1] == 0:
            batch.add(node)
            continue
        if node.op == "call_method" and node.target == "size" and args[:1] and args[0] in index and args[1:] == [0]:
            batch.add(node)
            continue
        tensor_inputs = [a for a in _flat_args(node) if a in index]
        if _inplace(gm, node):
            other = _unsafe_inplace(gm, node)
            if other is not None:
                raise UnsupportedLayerError(
                    f"from_torch: {where} works in place on a tensor that {other.name!r} also reads (directly or "
                    "through a view); the traced graph cannot say which values that operation sees"
                )
        join = None
        if node.op == "call_function" and node.target in _ADDS or node.op == "call_method" and node.target in ("add", "add_"):
            join = "add"
        elif node.op == "call_function" and node.target in _MULS or node.op == "call_method" and node.target in ("mul", "mul_"):
            join = "mul"
        if join is not None:
            if len(args) != 2 or not all(a in index for a in args) or node.kwargs.get("alpha", 1) != 1 or (
                    set(node.kwargs) - {"alpha"}):
                raise UnsupportedLayerError(
                    f"from_torch: {where}: only a sum or product of two tensors computed from the input is supported "
                    "(no constants or parameters)"
                )
            index[node] = len(nodes)
            nodes.append(Raw(node.name, join, [index[a] for a in args]))
            continue
        if node.op == "call_function" and node.target in _CATS:
            parts = args[0] if args else node.kwargs.get("tensors")
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim", node.kwargs.get("axis", 0))
            if not isinstance(parts, (list, tuple)) or not parts or not all(p in index for p in parts):
                raise UnsupportedLayerError(f"from_torch: {where}: only a concatenation of tensors computed from the input")
            if not isinstance(dim, int) or dim in (0, -4):
                raise UnsupportedLayerError(f"from_torch: {where}: concatenation along dim={dim!r} (the batch axis)")
            if len(parts) == 1:
                index[node] = index[parts[0]]
                continue
            # cat([x0, x1, x2]) where cat([x0, x1]) exists already (DenseNet's growing feature lists) reads it
            ids = [index[p] for p in parts]
            prefix = _existing_prefix(nodes, ids, dim)
            index[node] = len(nodes)
            nodes.append(Raw(node.name, "cat", prefix, dim=dim))
            continue
        mean = _spatial_mean(node, args)
        if mean is not None and len(tensor_inputs) == 1 and args[0] is tensor_inputs[0]:
            keepdim = mean
            pool_name = names.take(node.name)
            i = len(nodes)
            nodes.append(Raw(node.name, "layer", [index[args[0]]], layer=AdaptiveAvgPool2d(1, name=pool_name)))
            if not keepdim:
                flat = names.take(f"{node.name}_flatten")
                nodes.append(Raw(flat, "layer", [i], layer=Flatten(name=flat)))
            index[node] = len(nodes) - 1
            continue
        if len(tensor_inputs) != 1 or not args or args[0] is not tensor_inputs[0]:
            raise UnsupportedLayerError(
                f"from_torch: {where} does not take exactly one tensor computed from the input; supported: {_SUPPORTED}"
            )
        if node.op == "call_module":
            where = f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
        m = _as_module(gm, node, args, params, batch, where)
        if node.op == "call_module":
            target = str(node.target)
            calls[target] = calls.get(target, 0) + 1
            shared = any(True for _ in m.parameters()) or any(True for _ in m.buffers())
            if calls[target] > 1 and shared:
                raise UnsupportedLayerError(
                    f"from_torch: module {target!r} ({type(m).__name__}) is called more than once: its weights are "
                    "shared between calls, which xconv specs do not express"
                )
            name = names.take(target, own=calls[target] == 1)
        else:
            name = names.take(node.name)
        layer, state = _layer(m, name, where)
        for key, t in state.items():
            if id(t) in owners:
                raise UnsupportedLayerError(
                    f"from_torch: {where} uses the tensor {owners[id(t)]!r} that another operation uses too: shared "
                    "weights are not expressed by xconv specs"
                )
            owners[id(t)] = key
        tensors.update(state)
        index[node] = len(nodes)
        nodes.append(Raw(node.name if node.op != "call_module" else str(node.target), "layer", [index[args[0]]],
                         layer=layer))
    if output is None:
        raise UnsupportedLayerError("from_torch: forward returns nothing")
    _fold_pads(nodes)
    from ..errors import SpecError
    from ..shapes import infer

    try:
        spec = to_spec(nodes, output, tuple(input_shape), names, "from_torch")
        keys = [f"{i.key}.{n}" for i in infer(spec) for n in i.params]
    except SpecError as e:
        raise UnsupportedLayerError(f"from_torch: the traced graph does not make a valid spec: {e}") from None
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise UnsupportedLayerError(f"from_torch: no tensor for {missing[0]!r}; its parameters are not module parameters")
    return spec, {k: tensors[k].detach().cpu().numpy().copy() for k in keys}


def _spatial_mean(node: Any, args: list[Any]) -> bool | None:
    """For ``x.mean([2, 3])``, ``x.mean((-2, -1), keepdim=True)``, ``torch.mean(x, (2, 3))``: keepdim (the mean
    over H and W is a global average pool, then a flatten unless kept); None for anything else."""
    if not (node.op == "call_method" and node.target == "mean" or node.op == "call_function" and node.target is torch.mean):
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
