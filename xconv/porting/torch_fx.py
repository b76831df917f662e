"""torch front-end: a module's ``torch.fx`` graph -> raw DAG -> nested spec, with canonical weights keyed by
the module's own ``state_dict`` names."""

from __future__ import annotations

import dataclasses
import itertools
import operator
from typing import Any

import numpy as np

from ..backends.torch_backend import nn, torch  # the backend is the one place that imports torch
from ..errors import UnsupportedLayerError
from ..spec import (
    ELEMENTWISE,
    AdaptiveAvgPool2d,
    ChannelLinear,
    ChannelShuffle,
    Conv2d,
    Flatten,
    LayerNorm,
    LayerScale,
    Linear,
    MaxPool2d,
    Narrow,
    Rescaling,
    Sequential,
    Softmax,
    ZeroPad2d,
)
from ._graph import Names, Raw, drop, readers, to_spec
from ._torch_mutation import StateGuard, functionalize
from .torch_layers import _SUPPORTED, _as_module, _flat_args, _get_attr, _layer, nodes_in

F = torch.nn.functional

_ADDS = (operator.add, operator.iadd, torch.add)
_MULS = (operator.mul, operator.imul, torch.mul)
_CATS = (torch.cat, torch.concat)
_SUBS = (operator.sub, operator.isub, torch.sub)


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
    import dataclasses

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


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with xconv's own padded conv (a torch model built by xconv) kept as one layer."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from ..backends.torch_backend import (
            ChannelLayerNorm,
            ChannelLinearModule,
            ChannelsLastFlatten,
            ExactHardsigmoid,
            FrozenBatchNorm1d,
            FrozenBatchNorm2d,
            LayerScaleModule,
            NarrowModule,
            NormalizationModule,
            PaddedConv2d,
            RescalingModule,
            StochasticDepthModule,
        )

        own = (
            PaddedConv2d,
            ChannelsLastFlatten,
            FrozenBatchNorm1d,
            FrozenBatchNorm2d,
            StochasticDepthModule,
            ExactHardsigmoid,
            RescalingModule,
            NormalizationModule,
            ChannelLayerNorm,
            ChannelLinearModule,
            LayerScaleModule,
            NarrowModule,
        )
        return type(m) in own or super().is_leaf_module(m, qualname)


#: functional calls whose ``training`` argument is traced as a constant: (function, position of ``training``)
_MODE_CALLS = {F.dropout: 2, F.batch_norm: 5}


def _probe_batch(module: nn.Module, shape: tuple[int, ...]) -> Any:
    """Three inputs in the module's dtype: standard normal, the same times 100, and one with an all-zero border
    (what a write only large values or exact zeros reach shows on)."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    dtype = next((p.dtype for p in tensors if p.is_floating_point()), torch.float32)
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    framed = x.clone()
    if len(shape) == 3:
        k = max(1, min(shape[1:]) // 4)
        framed[:, :, :k], framed[:, :, -k:], framed[:, :, :, :k], framed[:, :, :, -k:] = 0.0, 0.0, 0.0, 0.0
    return torch.cat([x, 100 * x, framed]).to(dtype)


def _check_trace(module: nn.Module, traced: Any, x: Any, output_key: str | None) -> None:
    """The traced graph (with its in-place writes made explicit) must compute what ``module`` computes, run
    eagerly on the same batch with the same random seed: what torch.fx does not record (``out += y`` is traced
    as ``out + y``, so another name for ``out`` that eager execution updates keeps the old value in the graph;
    a write through ``.data``; Python the trace evaluated once) shows as a difference. The module is run in its
    own modes, without gradients; buffers it writes are put back, a written parameter is refused."""
    guard = StateGuard(module)
    try:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            eager = module(x.clone())
    except Exception as e:  # noqa: BLE001 - reported with the module's name
        guard.written()
        raise UnsupportedLayerError(
            f"from_torch: {type(module).__name__}.forward fails on a batch of its input shape "
            f"({type(e).__name__}: {e})"[:400]
        ) from None
    guard.refuse_parameter_writes("from_torch")
    a, b = (_pick_output(v, output_key) if isinstance(v, dict) else v for v in (eager, traced))
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return  # not one tensor: refused with its own message by the importer
    tol = 1e-12 if a.dtype == torch.float64 else 1e-6
    err = float("inf") if a.shape != b.shape else _traced_error(a.double().numpy(), b.double().numpy())
    if not err <= tol:
        raise UnsupportedLayerError(
            f"from_torch: the graph torch.fx traced from {type(module).__name__}.forward computes something else "
            f"than the forward itself ({err:.3g} relative): an in-place update under another name (out += y while "
            "another variable still holds out; a write through .data or another view), or Python code the trace "
            "does not record; write it out of place (out = out + y)"
        )


def _traced_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(1, max |a|) where the two differ; equal infinities (sinh of a large input) and NaNs in
    the same places agree."""
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    rest_a, rest_b = a[~same], b[~same]
    if not rest_a.size:
        return 0.0
    if not (np.isfinite(rest_a).all() and np.isfinite(rest_b).all()):
        return float("inf")
    finite = np.abs(a[np.isfinite(a)])
    return float(np.abs(rest_a - rest_b).max() / max(1.0, float(finite.max(initial=0.0))))


def _dropout_calls(graph: Any) -> list[Any]:
    return [n for n in graph.nodes if n.op == "call_function" and n.target in _MODE_CALLS]


def _dropout_modes(module: nn.Module, graph: Any) -> None:
    """``F.dropout(x, p, training=...)`` is traced with ``training`` as a constant: ``self.training`` and a literal
    both appear as True or False. The module is traced once more in the other mode (every submodule's flag put
    back afterwards) to tell them apart: a call whose flag follows the mode is a Dropout layer
    (``node.meta["xconv_dropout"] = "mode"``), one that is always off is the identity ("never"), one that is
    always on drops in inference too ("always", refused unless p is 0). ``F.batch_norm(..., training, ...)`` (timm's
    ``BatchNormAct2d``) the same way: "mode" is a BatchNorm; "never" normalises with the running statistics
    always, "always" with the batch's (refused)."""
    calls = _dropout_calls(graph)
    if not calls:
        return
    modes = [(m, m.training) for m in module.modules()]
    guard = StateGuard(module)  # the other mode's forward may write into buffers for real (a batch counter)
    try:
        module.train(not module.training)
        other = _dropout_calls(_Tracer().trace(module))
    except Exception:  # noqa: BLE001 - a forward that does not trace in the other mode: the calls stay unknown
        other = []
    finally:
        for m, was in modes:
            m.training = was
        guard.written()  # (puts every written buffer back)

    def flag(node: Any) -> bool:
        at = _MODE_CALLS[node.target]
        value = node.args[at] if len(node.args) > at else node.kwargs.get("training", node.target is F.dropout)
        return bool(value)

    if len(other) != len(calls) or any(a.target is not b.target for a, b in zip(calls, other)):
        return  # the forward branches on the mode: not matched, refused as unsupported
    for here, there in zip(calls, other):
        same_input = getattr(here.args[0], "name", None) == getattr(there.args[0], "name", None)
        if _p_of(here) != _p_of(there) or not same_input:
            continue  # not the same call in both traces: left unknown, and refused
        now, then = flag(here), flag(there)
        here.meta["xconv_dropout"] = "mode" if now == module.training and then != now else "always" if now else "never"


def _p_of(node: Any) -> Any:
    """A dropout's p (the first float argument) or a batch norm's eps, as traced."""
    at = 1 if node.target is F.dropout else 7
    return node.args[at] if len(node.args) > at else node.kwargs.get("p" if node.target is F.dropout else "eps")


def _check_calls(module: nn.Module) -> None:
    """Refuse what makes a module compute something else than its class's forward: forward hooks (its own,
    its submodules', or the global ones) and a ``forward`` replaced on an instance (``m.forward = ...``)."""
    module_mod = torch.nn.modules.module

    hooks = [
        getattr(module_mod, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_forward_hooks_always_called")
    ]
    if any(h for h in hooks[:2]):
        raise UnsupportedLayerError(
            "from_torch: global forward hooks are registered (torch.nn.modules.module."
            "register_module_forward_hook), which change every module's output; remove them before importing"
        )
    for name, m in module.named_modules():
        label = f"module {name!r} ({type(m).__name__})" if name else f"the module ({type(m).__name__})"
        if m._forward_hooks or m._forward_pre_hooks:
            raise UnsupportedLayerError(
                f"from_torch: {label} has forward hooks, which change its output; remove them before importing"
            )
        if "forward" in vars(m):
            raise UnsupportedLayerError(
                f"from_torch: {label} has its forward replaced on the instance (m.forward = ...); xconv imports a "
                "module by its class, so restore the class's forward or define a subclass"
            )


def import_model(
    module: nn.Module, input_shape: tuple[int, ...], output_key: str | None = None
) -> tuple[Sequential, dict[str, np.ndarray]]:
    """A hand-written torch module -> (spec, canonical weights). The module is traced with ``torch.fx``; every
    layer is named by its module's qualified name (so the weights have the keys of ``module.state_dict()``),
    residual additions, gating products and channel concatenations become ``Add`` / ``Multiply`` /
    ``Concat``, and ``nn.ZeroPad2d`` folds into the conv after it where that is exact. Anything else raises
    :class:`UnsupportedLayerError` naming the operation."""
    _check_calls(module)
    guard = StateGuard(module)
    try:
        graph = _Tracer().trace(module)
        gm = torch.fx.GraphModule(module, graph)
    except Exception as e:  # noqa: BLE001 - tracing failures are reported as unsupported
        guard.written()  # (puts back a buffer written before the failure)
        raise UnsupportedLayerError(
            f"from_torch: {type(module).__name__}.forward cannot be traced by torch.fx ({type(e).__name__}: {e}); "
            f"supported: {_SUPPORTED}"
        ) from None
    guard.refuse_writes("from_torch")
    gm.__dict__["_xconv_source"] = module  # (the GraphModule holds only the submodules the graph calls)
    _dropout_modes(module, gm.graph)
    functionalize(gm, gm.graph)  # in-place writes are read through their results, or refused
    gm.recompile()
    from ..backends.torch_backend import propagate_shapes

    x = _probe_batch(module, tuple(input_shape))
    guard = StateGuard(module)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        failure, traced = propagate_shapes(gm, x.clone())
    guard.refuse_parameter_writes("from_torch")
    if failure is not None:
        raise UnsupportedLayerError(
            f"from_torch: {type(module).__name__}.forward does not run on an input of shape (N, "
            f"{', '.join(map(str, input_shape))}) ({failure}); xconv checks every layer against its input's shape, "
            "so check input_shape"
        )
    reserved = {name for name, _ in module.named_modules() if name}
    names = Names(reserved)
    nodes: list[Raw] = []
    index: dict[Any, int] = {}
    params: dict[Any, Any] = {}
    batch: set[Any] = set()
    tensors: dict[str, Any] = {}
    calls: dict[str, int] = {}
    owners: dict[int, str] = {}  # id of a weight tensor -> the canonical key it was imported under
    consts: dict[Any, Any] = {}  # sizes and arithmetic on them, evaluated (the batch size stays _BATCH)
    nhwc: set[Any] = set()  # tensors permuted to channels-last, (N, H, W, C)
    shapes = _ShapeOps(index, consts, nhwc)
    output = None
    live = _live_nodes(gm.graph, output_key)
    for node in gm.graph.nodes:
        if node not in live and node.op not in ("placeholder", "output"):
            continue  # computes only what the chosen output does not need (another dict entry)
        where = f"operation {node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)})"
        if node.op == "call_module":
            where = f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
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
            out = _pick_output(args[0], output_key)
            if out not in index:
                raise UnsupportedLayerError(
                    f"from_torch: forward must return one tensor computed from its input. Received: {out!r}"[:300]
                )
            if out in nhwc:
                raise UnsupportedLayerError(
                    f"from_torch: forward returns {out.name!r}, a channels-last (permuted) tensor"
                )
            output = index[out]
            continue
        value = shapes.size_value(node, args)
        if value is not _NOT:
            consts[node] = value
            if value is _BATCH:
                batch.add(node)
            continue
        step = shapes.reshuffle(node, args, where)
        if step is not None:  # permutes, views and slices: aliases, Narrow and ChannelShuffle nodes
            if step != "pending":
                alias, layer = step
                if layer is None:
                    index[node] = index[alias]
                else:
                    layer = dataclasses.replace(layer, name=names.take(node.name))
                    index[node] = len(nodes)
                    nodes.append(Raw(node.name, "layer", [index[alias]], layer=layer))
            continue
        tensor_inputs = [a for a in _flat_args(node) if a in index]
        join = None
        if (
            node.op == "call_function"
            and node.target in _ADDS
            or node.op == "call_method"
            and node.target in ("add", "add_")
        ):
            join = "add"
        elif (
            node.op == "call_function"
            and node.target in _MULS
            or node.op == "call_method"
            and node.target in ("mul", "mul_")
        ):
            join = "mul"
        elif (
            node.op == "call_function"
            and node.target in _SUBS
            or node.op == "call_method"
            and node.target in ("sub", "sub_")
        ):
            join = "sub"
        if (
            join == "mul"
            and len(args) == 2
            and not node.kwargs
            and sum(a in params for a in args) == 1
            and (sum(a in index for a in args) == 1)
        ):
            scale_node, x_node = (args[0], args[1]) if args[0] in params else (args[1], args[0])
            layer, state = _layer_scale(scale_node, params[scale_node], x_node, shapes, names, where)
            _own_state(state, owners, where)
            tensors.update(state)
            index[node] = len(nodes)
            nodes.append(Raw(node.name, "layer", [index[x_node]], layer=layer))
            continue
        if node.op == "call_function" and node.target in (operator.truediv, torch.div) and not node.kwargs:
            join = "div"
        constant = _constant_arithmetic(join, args, node.kwargs, index)
        if constant is not None:  # x + c, c - x, x * c, x / c: an elementwise Rescaling
            shapes.refuse_nhwc(args, where)
            src = args[0] if args[0] in index else args[1]
            index[node] = len(nodes)
            nodes.append(
                Raw(node.name, "layer", [index[src]], layer=dataclasses.replace(constant, name=names.take(node.name)))
            )
            continue
        if join == "div":
            raise UnsupportedLayerError(f"from_torch: {where}: only a division by a number is supported")
        if join is not None:
            if (
                len(args) != 2
                or not all(a in index for a in args)
                or node.kwargs.get("alpha", 1) != 1
                or (set(node.kwargs) - {"alpha"})
            ):
                raise UnsupportedLayerError(
                    f"from_torch: {where}: only a sum, difference or product of two tensors computed from the input "
                    "is supported (no constants or parameters)"
                )
            if (args[0] in nhwc) != (args[1] in nhwc):
                raise UnsupportedLayerError(f"from_torch: {where} joins a channels-last tensor with an NCHW one")
            if args[0] in nhwc:
                nhwc.add(node)
            index[node] = len(nodes)
            nodes.append(Raw(node.name, join, [index[a] for a in args]))
            continue
        if node.op == "call_function" and node.target in _CATS:
            parts = args[0] if args else node.kwargs.get("tensors")
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim", node.kwargs.get("axis", 0))
            if not isinstance(parts, (list, tuple)) or not parts or not all(p in index for p in parts):
                raise UnsupportedLayerError(
                    f"from_torch: {where}: only a concatenation of tensors computed from the input"
                )
            shapes.refuse_nhwc(parts, where)
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
            shapes.refuse_nhwc(args[:1], where)
            keepdim = mean
            pool_name = names.take(node.name)
            i = len(nodes)
            nodes.append(Raw(node.name, "layer", [index[args[0]]], layer=AdaptiveAvgPool2d(1, name=pool_name)))
            if not keepdim:
                flat = names.take(f"{node.name}_flatten")
                nodes.append(Raw(flat, "layer", [i], layer=Flatten(name=flat)))
            index[node] = len(nodes) - 1
            continue
        pool = _adaptive_max(gm, node, args, shapes.shape(args[0]) if args else None, where)
        if pool is not None and len(tensor_inputs) == 1 and args[0] is tensor_inputs[0]:
            shapes.refuse_nhwc(args[:1], where)
            pool_name = names.take(str(node.target), own=True) if node.op == "call_module" else names.take(node.name)
            index[node] = len(nodes)
            nodes.append(Raw(node.name, "layer", [index[args[0]]], layer=dataclasses.replace(pool, name=pool_name)))
            continue
        pad = _pad_of(gm, node, args, shapes.resolve, where)
        if pad is not None and len(tensor_inputs) == 1 and args[0] is tensor_inputs[0]:
            shapes.refuse_nhwc(args[:1], where)
            if len(shapes.shape(args[0]) or ()) != 4:
                raise UnsupportedLayerError(f"from_torch: {where}: a 2-D pad is supported on an NCHW map only")
            pad_name = names.take(str(node.target), own=True) if node.op == "call_module" else names.take(node.name)
            index[node] = len(nodes)
            nodes.append(Raw(pad_name, "torch_pad", [index[args[0]]], payload=pad))
            continue
        if len(tensor_inputs) != 1 or not args or args[0] is not tensor_inputs[0]:
            raise UnsupportedLayerError(
                f"from_torch: {where} does not take exactly one tensor computed from the input; supported: {_SUPPORTED}"
            )
        if node.op == "call_module":
            where = f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
        m = _as_module(gm, node, args, params, batch, where, shapes.resolve)
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
            owner = _parameter_owner(node, args, names)
            name = names.take(node.name) if owner is None else names.take(owner, own=True)
        layer, state = _layer(m, name, where)
        layer = shapes.place(node, args[0], m, layer, where)
        _own_state(state, owners, where)
        tensors.update(state)
        index[node] = len(nodes)
        nodes.append(
            Raw(node.name if node.op != "call_module" else str(node.target), "layer", [index[args[0]]], layer=layer)
        )
    if output is None:
        raise UnsupportedLayerError("from_torch: forward returns nothing")
    _fold_pads(nodes)
    _rename_under_owners(nodes, names, tensors)
    from ..errors import SpecError
    from ..shapes import infer

    try:
        spec = to_spec(nodes, output, tuple(input_shape), names, "from_torch")
        keys = [f"{i.key}.{n}" for i in infer(spec) for n in i.params]
    except SpecError as e:
        raise UnsupportedLayerError(f"from_torch: the traced graph does not make a valid spec: {e}") from None
    for node in gm.graph.nodes:  # (last: an operation or spec refused by name is named first)
        if node in live and "xconv_shape_error" in node.meta:
            where = f"operation {node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)})"
            raise UnsupportedLayerError(
                f"from_torch: {where} fails on a batch of input shape {tuple(input_shape)} "
                f"({node.meta['xconv_shape_error']}); xconv checks every layer against its input's shape and "
                "imports nothing unchecked"
            )
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise UnsupportedLayerError(
            f"from_torch: no tensor for {missing[0]!r}; its parameters are not module parameters"
        )
    _check_trace(module, traced, x, output_key)  # last: what the graph does not record
    return spec, {k: tensors[k].detach().cpu().numpy().copy() for k in keys}


def _rename_under_owners(nodes: list[Raw], names: Names, tensors: dict[str, Any]) -> None:
    """A module that computes its own function and calls submodules (timm's ``BatchNormAct2d``: ``F.batch_norm``
    on its tensors, then ``self.act``) gives a layer under the key of another: ``bn1`` and ``bn1.act``. A layer
    key cannot hold another layer, so the submodules without weights are renamed (``bn1_act``); keys with
    weights stay the module's own."""
    import dataclasses

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


def _own_state(state: dict[str, Any], owners: dict[int, str], where: str) -> None:
    """Record which canonical key each weight tensor went to; a tensor used twice is refused."""
    for key, t in state.items():
        if id(t) in owners:
            raise UnsupportedLayerError(
                f"from_torch: {where} uses the tensor {owners[id(t)]!r} that another operation uses too: shared "
                "weights are not expressed by xconv specs"
            )
        owners[id(t)] = key


def _parameter_owner(node: Any, args: list[Any], names: Names) -> str | None:
    """For a functional call on parameters ``m.weight`` (and ``m.bias``) of a module ``m`` that is not called
    itself (torchvision's LayerNorm2d calls F.layer_norm in its forward): ``m``'s qualified name, so the weights
    keep their state_dict keys. None otherwise."""
    if node.op != "call_function":
        return None
    found = [a.target for a in _flat_args(node) if getattr(a, "op", None) == "get_attr"]
    owners = {str(t).rpartition(".")[0] for t in found}
    own = ("weight", "bias", "running_mean", "running_var") if node.target is F.batch_norm else ("weight", "bias")
    if len(owners) != 1 or not all(str(t).rpartition(".")[2] in own for t in found):
        return None
    owner = owners.pop()
    return owner if owner and owner in names.reserved and owner not in names.used else None


def _layer_scale(
    scale_node: Any, p: Any, x_node: Any, shapes: _ShapeOps, names: Names, where: str
) -> tuple[Any, dict[str, Any]]:
    """``layer_scale * x`` with a parameter of shape (C, 1, 1) named ``layer_scale`` (torchvision's CNBlock)."""
    shape = shapes.shape(x_node)
    target = str(scale_node.target)
    owner, _, attr = target.rpartition(".")
    if not (
        isinstance(p, nn.Parameter)
        and shape is not None
        and len(shape) == 4
        and x_node not in shapes.nhwc
        and tuple(p.shape) == (shape[1], 1, 1)
        and attr == "layer_scale"
        and owner
    ):
        raise UnsupportedLayerError(
            f"from_torch: {where}: a product with a parameter or constant is supported only as a layer scale: a "
            f"parameter named layer_scale of shape (C, 1, 1) on a module, times an NCHW map (got {target!r}, shape "
            f"{tuple(getattr(p, 'shape', ()))})"
        )
    if owner in names.used:
        raise UnsupportedLayerError(
            f"from_torch: {where}: the layer scale's module {owner!r} is also called as a layer"
        )
    name = names.take(owner, own=True)
    return LayerScale(shape[1], name=name), {f"{name}.layer_scale": p}


_BATCH = object()  # the batch size, symbolic: it stays free in the spec
_NOT = object()  # not a size computation
_ARITHMETIC = {
    operator.floordiv: operator.floordiv,
    operator.mul: operator.mul,
    operator.add: operator.add,
    operator.sub: operator.sub,
}


class _ShapeOps:
    """Shape-level operations of a traced forward, with the shapes torch.fx's shape propagation recorded:
    size arithmetic, permutes to and from channels-last, views, slices and channel shuffles."""

    def __init__(self, index: dict[Any, int], consts: dict[Any, Any], nhwc: set[Any]) -> None:
        self.index, self.consts, self.nhwc = index, consts, nhwc
        self.grouped: dict[Any, tuple[Any, int]] = {}  # x.view(N, g, C // g, H, W)
        self.swapped: dict[Any, tuple[Any, int]] = {}  # ... .transpose(1, 2)
        self.pieces: dict[Any, tuple[Any, int, list[tuple[int, int]]]] = {}  # x.chunk / x.split: (src, dim, parts)

    def shape(self, node: Any) -> tuple[int, ...] | None:
        return getattr(node, "meta", {}).get("xconv_shape")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.resolve(v) for v in value)
        return self.consts.get(value, value) if isinstance(value, torch.fx.Node) else value

    def size_value(self, node: Any, args: list[Any]) -> Any:
        """The value of a size computation (x.size(), x.shape[1], c // 2), or _NOT."""
        if node.op == "call_method" and node.target == "size" and args and args[0] in self.index:
            dims = self._sizes(args[0])
            if dims is None:
                return _BATCH if args[1:] == [0] else _NOT
            return dims if len(args) == 1 else dims[self.resolve(args[1])]
        if (
            node.op == "call_function"
            and node.target is getattr
            and len(args) == 2
            and args[1] == "shape"
            and (args[0] in self.index)
        ):
            dims = self._sizes(args[0])
            return dims if dims is not None else (_BATCH,)
        if node.op == "call_function" and node.target is operator.getitem and args[0] in self.consts:
            value, i = self.consts[args[0]], self.resolve(args[1])
            if isinstance(value, tuple) and isinstance(i, int) and -len(value) <= i < len(value):
                return value[i]
            if isinstance(value, tuple) and isinstance(i, slice):  # x.shape[-2:]
                return value[i]
            return _NOT
        if (
            node.op == "call_function"
            and node.target in _ARITHMETIC
            and len(args) == 2
            and any(a in self.consts for a in args)
        ):
            a, b = self.resolve(args[0]), self.resolve(args[1])
            if isinstance(a, int) and isinstance(b, int):
                return _ARITHMETIC[node.target](a, b)
        return _NOT

    def _sizes(self, node: Any) -> tuple[Any, ...] | None:
        shape = self.shape(node)
        return None if shape is None or node in self.nhwc else (_BATCH, *shape[1:])

    def refuse_nhwc(self, tensors: Any, where: str) -> None:
        if any(t in self.nhwc for t in tensors):
            raise UnsupportedLayerError(f"from_torch: {where} on a channels-last (permuted) tensor is not supported")

    def place(self, node: Any, src: Any, m: Any, layer: Any, where: str) -> Any:
        """Check a layer against its input's layout: on a channels-last tensor only per-pixel layers (LayerNorm,
        Linear -> ChannelLinear, elementwise); nn.LayerNorm and nn.Linear on an NCHW map act on W and are refused."""
        shape = self.shape(src)
        if src in self.nhwc:
            if isinstance(layer, Linear):
                assert layer.in_features is not None  # torch's Linear knows its input size
                layer = ChannelLinear(layer.in_features, layer.out_features, bias=layer.bias, name=layer.name)
            elif not (
                isinstance(layer, LayerNorm) or isinstance(layer, ELEMENTWISE) and not isinstance(layer, Softmax)
            ):
                raise UnsupportedLayerError(
                    f"from_torch: {where} on a channels-last (permuted) tensor is not supported; "
                    "between permutes only LayerNorm, Linear and elementwise layers"
                )
            self.nhwc.add(node)
            return layer
        own_map_norm = type(m).__name__ == "ChannelLayerNorm"
        if isinstance(layer, (LayerNorm, Linear)) and not own_map_norm and (shape is None or len(shape) != 2):
            raise UnsupportedLayerError(
                f"from_torch: {where} acts on the last axis of a tensor of shape {shape}; supported over the features "
                "of a flat input, or over channels between x.permute(0, 2, 3, 1) and x.permute(0, 3, 1, 2)"
            )
        return layer

    def reshuffle(self, node: Any, args: list[Any], where: str) -> Any:
        """For permutes, contiguous, views/reshapes of the shuffle idiom, chunk/split/narrow/slicing: None if
        not one of them; "pending" for an intermediate step; else (the tensor it reads, a layer or None for
        an alias)."""
        op, target = node.op, node.target
        src = args[0] if args else None
        method = target if op == "call_method" else getattr(target, "__name__", "") if op == "call_function" else ""
        is_torch = (
            op == "call_method"
            or op == "call_function"
            and target
            in (torch.permute, torch.transpose, torch.narrow, torch.chunk, torch.split, operator.getitem, torch.reshape)
        )
        if not is_torch:
            return None
        if method == "getitem" and src in self.pieces:
            base, dim, parts = self.pieces[src]
            start, length = parts[self.resolve(args[1])]
            return base, Narrow(dim, start, length)
        if src in self.swapped and method == "contiguous":
            self.swapped[node] = self.swapped[src]
            return "pending"
        if src in self.swapped and method in ("view", "reshape"):
            base, groups = self.swapped[src]
            c, h, w = self.shape(base)[1:]  # type: ignore[index]
            dims = self._dims(args)
            if dims in ((_BATCH, -1, h, w), (_BATCH, c, h, w)):
                return base, ChannelShuffle(groups)
            raise UnsupportedLayerError(
                f"from_torch: {where}: a view after a grouped transpose that is not a channel shuffle"
            )
        if src in self.grouped and method == "transpose" and sorted(self.resolve(args[1:3])) == [1, 2]:
            self.swapped[node] = self.grouped[src]
            return "pending"
        if src not in self.index:
            return None
        shape = self.shape(src)
        if method == "contiguous" and len(args) == 1:
            if src in self.nhwc:
                self.nhwc.add(node)
            return src, None
        if method == "permute":
            perm = tuple(self._dims(args))
            if perm == (0, 2, 3, 1) and src not in self.nhwc and shape is not None and len(shape) == 4:
                self.nhwc.add(node)
                return src, None
            if perm == (0, 3, 1, 2) and src in self.nhwc:
                return src, None
            raise UnsupportedLayerError(
                f"from_torch: {where}: permute{perm} is supported only as x.permute(0, 2, 3, 1) "
                "of an NCHW map and back (x.permute(0, 3, 1, 2))"
            )
        if src in self.nhwc or shape is None:
            return None
        rank = len(shape)
        if method in ("view", "reshape") and rank == 4:
            dims = self._dims(args)
            c, h, w = shape[1:]
            if (
                len(dims) == 5
                and dims[0] is _BATCH
                and dims[3:] == (h, w)
                and isinstance(dims[1], int)
                and (isinstance(dims[2], int) and dims[1] * dims[2] == c and dims[1] > 0)
            ):
                self.grouped[node] = (src, dims[1])
                return "pending"
            return None
        if method in ("chunk", "split"):
            names = ("chunks", "dim") if method == "chunk" else ("split_size_or_sections", "dim")
            values = {**dict(zip(names, self.resolve(args[1:]))), **self.resolve(dict(node.kwargs))}
            dim = values.get("dim", 0)
            dim = dim % rank if isinstance(dim, int) and -rank <= dim < rank else 0
            if dim == 0:
                raise UnsupportedLayerError(f"from_torch: {where}: a split along the batch axis")
            size = shape[dim]
            if method == "chunk":
                step = -(-size // int(values["chunks"]))
                parts = [(a, min(step, size - a)) for a in range(0, size, step)]
            elif isinstance(values["split_size_or_sections"], int):
                step = values["split_size_or_sections"]
                parts = [(a, min(step, size - a)) for a in range(0, size, step)]
            else:
                starts = np.cumsum([0, *values["split_size_or_sections"]])
                parts = [(int(a), int(b - a)) for a, b in itertools.pairwise(starts)]
            self.pieces[node] = (src, dim, parts)
            return "pending"
        if method == "narrow":
            values = {
                **dict(zip(("dim", "start", "length"), self.resolve(args[1:]))),
                **self.resolve(dict(node.kwargs)),
            }
            dim, start = values["dim"] % rank, values["start"] % shape[values["dim"] % rank]
            if dim == 0:
                raise UnsupportedLayerError(f"from_torch: {where}: a narrow along the batch axis")
            return src, Narrow(dim, start, values["length"])
        if method == "getitem":
            return self._slice(src, shape, self.resolve(args[1]), where)
        return None

    def _dims(self, args: list[Any]) -> tuple[Any, ...]:
        rest = list(args[1:])
        if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
            rest = list(rest[0])
        return tuple(self.resolve(rest))

    def _slice(self, src: Any, shape: tuple[int, ...], key: Any, where: str) -> Any:
        """x[:, a:b] (one sliced axis, step 1) as a Narrow; x[:] an alias."""
        key = key if isinstance(key, tuple) else (key,)
        if not all(isinstance(k, slice) for k in key) or len(key) > len(shape):
            raise UnsupportedLayerError(f"from_torch: {where}: only slices (x[:, a:b]) are supported as indexing")
        cut = [(d, k) for d, k in enumerate(key) if k != slice(None)]
        if not cut:
            return src, None
        if len(cut) > 1 or cut[0][0] == 0 or cut[0][1].step not in (None, 1):
            raise UnsupportedLayerError(f"from_torch: {where}: only one sliced non-batch axis with step 1 is supported")
        dim, k = cut[0]
        start, stop, _ = k.indices(shape[dim])
        if stop <= start:
            raise UnsupportedLayerError(f"from_torch: {where}: an empty slice")
        return src, Narrow(dim, start, stop - start)


def _pick_output(out: Any, key: str | None) -> Any:
    """The returned tensor: the entry ``key`` of a returned dict (or its one entry), else the value itself."""
    if isinstance(out, dict):
        if key is None:
            if len(out) != 1:
                raise UnsupportedLayerError(
                    f"from_torch: forward returns a dict with entries {sorted(out)}; choose one with output=..."
                )
            return next(iter(out.values()))
        if key not in out:
            raise UnsupportedLayerError(
                f"from_torch: output={key!r} is not an entry of the returned dict ({sorted(out)})"
            )
        return out[key]
    if key is not None:
        raise UnsupportedLayerError(f"from_torch: output={key!r} was given but forward does not return a dict")
    return out


def _live_nodes(graph: Any, key: str | None) -> set[Any]:
    """The nodes the (chosen) output depends on."""
    out_node = next(n for n in graph.nodes if n.op == "output")
    value = out_node.args[0]
    if isinstance(value, dict) and key in value:
        value = value[key]
    stack = nodes_in(value)
    live: set[Any] = set()
    while stack:
        n = stack.pop()
        if n not in live:
            live.add(n)
            stack.extend(n.all_input_nodes)
    return live
