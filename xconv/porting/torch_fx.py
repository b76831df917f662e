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
    Flatten,
    LayerNorm,
    LayerScale,
    Linear,
    Narrow,
    Sequential,
    Softmax,
)
from ._graph import Names, Raw, to_spec
from ._torch_mutation import StateGuard, describe, functionalize
from .torch_checks import _check_calls, _check_trace, _dropout_modes, _probe_batch, check_global_hooks, propagate_shapes
from .torch_forms import (
    _CATS,
    _adaptive_max,
    _constant_arithmetic,
    _existing_prefix,
    _fold_pads,
    _join_kind,
    _pad_of,
    _rename_under_owners,
    _spatial_mean,
    _whole_map_pool,
)
from .torch_layers import _SUPPORTED, _as_module, _flat_args, _get_attr, _layer, nodes_in

F = torch.nn.functional


def own_leaf_types() -> tuple[type, ...]:
    """xconv's own torch layers (a torch model built by xconv), imported whole by their class."""
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

    return (
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


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with xconv's own torch layers kept as one call each."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in own_leaf_types() or super().is_leaf_module(m, qualname)


def import_model(
    module: nn.Module, input_shape: tuple[int, ...], output_key: str | None = None
) -> tuple[Sequential, dict[str, np.ndarray]]:
    """A torch module -> (spec, canonical weights). The module is exported with ``torch.export`` (non-strict) and
    its program read back as module calls and torch functions (:mod:`.torch_export`); where it cannot be
    exported, or its program maps to no spec, it is traced with ``torch.fx`` instead. Every layer is named by
    its module's qualified name (so the weights have the keys of ``module.state_dict()``), residual additions,
    gating products and channel concatenations become ``Add`` / ``Multiply`` / ``Concat``, and pads fold into
    the conv after them where that is exact. Anything else raises :class:`UnsupportedLayerError` naming the
    operation (the exported program's refusal where both front-ends refuse)."""
    from .torch_export import ExportFailed, export, read, retracer

    check_global_hooks()
    guard = StateGuard(module)
    first: UnsupportedLayerError | None = None
    why = ""
    try:
        program = export(module, tuple(input_shape))
    except ExportFailed as e:
        program, why = None, str(e)
    guard.refuse_writes("from_torch")
    if program is not None:
        try:
            gm = read(module, program)
            return _import_graph(module, gm, input_shape, output_key, retracer(module, tuple(input_shape)))
        except UnsupportedLayerError as e:
            first = e
    try:
        return _import_traced(module, input_shape, output_key, why)
    except UnsupportedLayerError:
        if first is not None:
            raise first from None
        raise


def _import_traced(
    module: nn.Module, input_shape: tuple[int, ...], output_key: str | None, why: str
) -> tuple[Sequential, dict[str, np.ndarray]]:
    """The torch.fx front-end, for modules torch.export cannot export (``why``)."""
    _check_calls(module)
    guard = StateGuard(module)
    try:
        graph = _Tracer().trace(module)
        gm = torch.fx.GraphModule(module, graph)
    except Exception as e:  # noqa: BLE001 - tracing failures are reported as unsupported
        guard.written()  # (puts back a buffer written before the failure)
        export_note = f"; torch.export cannot export it either ({why})" if why else ""
        raise UnsupportedLayerError(
            f"from_torch: {type(module).__name__}.forward cannot be traced by torch.fx ({type(e).__name__}: {e})"
            f"{export_note}; supported: {_SUPPORTED}"
        ) from None
    guard.refuse_writes("from_torch")
    gm.__dict__["_xconv_source"] = module  # (the GraphModule holds only the submodules the graph calls)
    return _import_graph(module, gm, input_shape, output_key, lambda: _Tracer().trace(module))


def _import_graph(
    module: nn.Module, gm: Any, input_shape: tuple[int, ...], output_key: str | None, retrace: Any
) -> tuple[Sequential, dict[str, np.ndarray]]:
    """The traced or exported graph ``gm`` of ``module`` -> (spec, canonical weights); ``retrace()`` gives the
    graph once more, in the mode the module is in then (functional calls' training flags are told apart)."""
    _dropout_modes(module, gm.graph, retrace)
    functionalize(gm, gm.graph)  # in-place writes are read through their results, or refused
    gm.recompile()
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
        where = describe(node)
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
        join = _join_kind(node)
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
        m = _whole_map_pool(m, shapes.shape(args[0]), shapes.shape(node)) or m
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
            where = describe(node)
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
