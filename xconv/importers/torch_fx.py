"""torch front-end: a module's ``torch.fx`` graph -> raw DAG -> nested spec, with canonical weights keyed by
the module's own ``state_dict`` names."""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import numpy as np

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError
from ..spec import (
    AdaptiveAvgPool2d,
    Flatten,
    LayerScale,
    SelfAttention,
    Sequential,
    TokenMean,
    TokenTypeEmbedding,
)
from ._graph import Fragment, Names, Raw, read_returned, returned_marker, to_spec
from ._torch_mutation import StateGuard, describe, functionalize
from .torch_checks import (
    PADDING_MASK,
    TOKEN_IDS,
    _check_calls,
    _check_trace,
    _dropout_modes,
    _probe_batch,
    check_global_hooks,
    propagate_shapes,
    state_keys,
)
from .torch_checks import storage_of as _storage
from .torch_export import CONTAINERS
from .torch_forms import (
    _CATS,
    _adaptive_max,
    _constant_arithmetic,
    _cropping_pad,
    _existing_prefix,
    _fold_pads,
    _join_kind,
    _pad_of,
    _rename_under_owners,
    _spatial_mean,
    _whole_map_pool,
)
from .torch_heads import Heads
from .torch_ids import TokenIds, input_vocabulary
from .torch_layers import (
    _SUPPORTED,
    _as_module,
    _check_key_clashes,
    _flat_args,
    _fragment,
    _get_attr,
    _layer,
    _live_nodes,
    _output_node,
    _pick_output,
    _shape,
    _with_source_keys,
    own_leaf_types,
)
from .torch_shapes import BATCH, NOT, ShapeOps
from .torch_tokens import (
    TokenBatches,
    class_tokens,
    expanded_parameter,
    position_embedding,
    self_attention_call,
    token_mean,
)

F = torch.nn.functional


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with xconv's own torch layers kept as one call each."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, CONTAINERS):
            return False
        return type(m) in own_leaf_types() or super().is_leaf_module(m, qualname)


def import_model(
    module: nn.Module, input_shape: tuple[int, ...], output_key: str | list[str] | None = None
) -> tuple[Sequential, dict[str, np.ndarray]]:
    """See :func:`_import_model`; the Python state some modules change in their forward (Hugging Face's Swin
    layers clamp their window and shift) is put back after the importer's runs of the model."""
    from ..kinds.window._torch_sources import hold_state

    restore = hold_state(module)
    try:
        return _import_model(module, input_shape, output_key)
    finally:
        restore()


def _import_model(
    module: nn.Module, input_shape: tuple[int, ...], output_key: str | list[str] | None = None
) -> tuple[Sequential, dict[str, np.ndarray]]:
    """A torch module -> (spec, canonical weights). The module is exported with ``torch.export`` (non-strict) and
    its program read back as module calls and torch functions (:mod:`.torch_export`); where it cannot be
    exported, or its program maps to no spec, it is traced with ``torch.fx`` instead. Every layer is named by
    its module's qualified name (so the weights have the keys of ``module.state_dict()``), residual additions,
    gating products and channel concatenations become ``Add`` / ``Multiply`` / ``Concat``, and pads fold into
    the conv after them where that is exact. Anything else raises :class:`UnsupportedLayerError` naming the
    operation (the exported program's refusal where both front-ends refuse)."""
    from .torch_export import ExportFailed, export, read, retracer
    from .torch_program import ExportedModel

    check_global_hooks()
    if isinstance(module, ExportedModel):  # a program given by the user: read as it is, nothing to trace
        if tuple(input_shape) != module.input_shape:
            raise UnsupportedLayerError(
                f"from_torch: the exported program takes inputs of shape (N, {', '.join(map(str, module.input_shape))})"
                f", not (N, {', '.join(map(str, input_shape))}); export it for that shape"
            )
        try:
            gm = read(module, module.program, module.batch)
        except UnsupportedLayerError:
            raise
        except Exception as e:  # noqa: BLE001 - a program this reader does not know: refused, by name
            raise UnsupportedLayerError(
                f"from_torch: the exported program could not be read ({type(e).__name__}: {e})"[:400]
            ) from None
        return _import_graph(module, gm, input_shape, output_key, None)
    guard = StateGuard(module, empty_caches=True)
    first: UnsupportedLayerError | None = None
    why = ""
    try:
        program = export(module, tuple(input_shape))
    except ExportFailed as e:
        program, why = None, str(e)
    guard.refuse_writes("from_torch")
    if program is not None:
        try:
            try:
                gm = read(module, program)
            except UnsupportedLayerError:
                raise
            except Exception as e:  # noqa: BLE001 - a program this reader does not know: refused, by name
                raise UnsupportedLayerError(
                    f"from_torch: the exported program of {type(module).__name__} could not be read "
                    f"({type(e).__name__}: {e})"[:400]
                ) from None
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
    module: nn.Module, input_shape: tuple[int, ...], output_key: str | list[str] | None, why: str
) -> tuple[Sequential, dict[str, np.ndarray]]:
    """The torch.fx front-end, for modules torch.export cannot export (``why``)."""
    _check_calls(module)
    guard = StateGuard(module, empty_caches=True)
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
    module: nn.Module, gm: Any, input_shape: tuple[int, ...], output_key: str | list[str] | None, retrace: Any
) -> tuple[Sequential, dict[str, np.ndarray]]:
    """The traced or exported graph ``gm`` of ``module`` -> (spec, canonical weights); ``retrace()`` gives the
    graph once more, in the mode the module is in then (functional calls' training flags are told apart)."""
    _dropout_modes(module, gm.graph, retrace)
    functionalize(gm, gm.graph)  # in-place writes are read through their results, or refused
    gm.recompile()
    vocabulary = input_vocabulary(gm) if TOKEN_IDS.get() is not None else None
    if vocabulary is not None:  # (ids below the vocabulary of the embeddings that look up the input itself)
        TOKEN_IDS.set(vocabulary)  # (put back by the caller, which set it)
    x = _probe_batch(module, tuple(input_shape))
    guard = StateGuard(module)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        failure, traced = propagate_shapes(gm, tuple(a.clone() for a in x))
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
    params: dict[Any, Any] = {}  # get_attr nodes (and views of them): their tensors
    batch: set[Any] = set()
    tensors: dict[str, Any] = {}
    source = state_keys(module)  # storage of a parameter or buffer (and its views) -> its state_dict key
    calls, owners = dict[str, int](), dict[int, str]()  # (owners: a weight's storage -> its canonical key)
    consts: dict[Any, Any] = {}  # sizes and arithmetic on them, evaluated (the batch size stays BATCH)
    nhwc: set[Any] = set()  # tensors permuted to channels-last, (N, H, W, C)
    attention_calls: set[Any] = set()  # nn.MultiheadAttention calls: their output tuple, read through [0]
    learned = {k for k, _ in module.named_parameters()}
    tokens = TokenIds(gm, params, consts, names, TOKEN_IDS.get())  # the token ids and padding mask
    shapes = ShapeOps(index, consts, nhwc)
    # attention written out, step by step; tokens normalised as one batch of N * L features (timm's LeViT)
    heads, batches = Heads(module, gm, shapes, nodes, names, x, params, source), TokenBatches(gm, shapes)
    output: int | list[int] | None = None
    live = _live_nodes(gm.graph, output_key)
    for node in gm.graph.nodes:
        if node not in live and node.op not in ("placeholder", "output"):
            continue  # computes only what the chosen output does not need (another dict entry)
        where = describe(node)
        if node.op == "call_module":
            where = f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
        args = list(node.args)
        side = tokens.side_call(node, args, where)
        if side == "":
            continue  # the padding mask as an attention module reads it, or an nn.Embedding of the token types
        if side:
            args = args[:1]
            node.args = tuple(args)  # (read as the module alone; it is marked to read the side input below)
        attention = self_attention_call(gm, node, where)
        if attention:  # mha(x, x, x): the one tensor it reads
            args = args[:1]
            attention_calls.add(node)
        if node.op == "call_function" and node.target is operator.getitem and args and args[0] in attention_calls:
            if args[1] != 0:
                raise UnsupportedLayerError(f"from_torch: {where} reads the attention weights, which is not supported")
            index[node] = index[args[0]]
            continue
        if node.op == "placeholder":
            if nodes and (tokens.is_mask(node, PADDING_MASK.get()) or tokens.is_types(node)):
                continue  # the padding mask and token types: read by attention modules and embeddings only
            if nodes:
                raise UnsupportedLayerError(f"from_torch: forward must take one input; {where} is a second one")
            index[node] = len(nodes)
            nodes.append(Raw(node.name, "input", []))
            tokens.input(node)
            continue
        if node.op == "get_attr":
            params[node] = _get_attr(gm, node.target)
            if isinstance(params[node], torch.Tensor):
                source.setdefault(_storage(params[node]), str(node.target))
                if source[_storage(params[node])] not in learned:
                    tokens.fixed.add(node)  # a buffer or constant
            continue
        if tokens.fixed_step(node, args, where):
            continue  # integers from buffers alone (BERT's position ids and token types), or an embedding of them
        if node.op == "call_method" and node.target in _PARAM_RESHAPES and args and args[0] in params:
            shape = _shape(node)  # a parameter seen in another shape (timm's gamma.reshape(1, -1, 1, 1))
            sizes = [a for a in _flat_args(node)[1:] if not isinstance(a, torch.fx.Node)]
            if shape is None or not all(isinstance(a, int) and not isinstance(a, bool) for a in sizes):
                raise UnsupportedLayerError(
                    f"from_torch: {where}: a parameter viewed other than in another shape of the same values"
                )
            params[node] = params[args[0]].reshape(shape)  # (a view: the same storage, so the same source key)
            continue
        token = expanded_parameter(node, args, params, shapes, where)
        if token is not None:  # a learned token, expanded over the batch
            params[node] = token
            continue
        if batches.step(node, args, where):  # (first: the output may read what it refuses)
            continue
        if node.op == "output":
            picked = _pick_output(args[0], output_key)
            ends = [_output_node(o, index, nhwc, shapes) for o in (picked if isinstance(picked, list) else [picked])]
            output = ends if isinstance(picked, list) else ends[0]
            continue
        if heads.step(node, args, where):
            continue
        value = shapes.size_value(node, args)
        if value is not NOT:
            consts[node] = value
            if value is BATCH:
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
        if tokens.ids_step(node, args, where, nodes, index):
            continue  # integers computed from the ids (read where an nn.Embedding looks them up), or such a lookup
        tensor_inputs = [args[0]] if attention else [a for a in _flat_args(node) if a in index]
        join = _join_kind(node)
        if (
            join == "mul"
            and len(args) == 2
            and not node.kwargs
            and sum(a in params for a in args) == 1
            and (sum(a in index for a in args) == 1)
        ):
            scale_node, x_node = (args[0], args[1]) if args[0] in params else (args[1], args[0])
            p = params[scale_node]
            key = source.get(_storage(p), str(scale_node.target))
            # (a buffer or constant is not a learned scale)
            layer, state = _layer_scale(key, p if key in learned else None, x_node, shapes, names, where)
            _own_state(state, owners, where)
            if x_node in shapes.nhwc:
                shapes.nhwc.add(node)
            tensors.update(state)
            index[node] = len(nodes)
            nodes.append(Raw(node.name, "layer", [index[x_node]], layer=layer))
            continue
        summed = (node, args, params, index, source, learned, names, where, nhwc)  # (tokens or a map plus a table)
        embedding, added = (position_embedding(*summed), tokens.added(args, index)) if join == "add" else (None, None)
        if added is not None:  # tokens plus an embedding of fixed ids
            embedding = added
        if embedding is not None:
            raw, state = embedding
            _own_state(state, owners, where)
            tensors.update(state)
            index[node] = len(nodes)
            nodes.append(raw)
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
            token_state = class_tokens(node, parts, dim, params, index, source, learned, names, nodes, where)
            if token_state is not None:
                _own_state(token_state, owners, where)
                tensors.update(token_state)
                continue
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
        tokens_mean = token_mean(node, args)
        if tokens_mean is not None and len(tensor_inputs) == 1 and args[0] is tensor_inputs[0]:
            index[node] = len(nodes)
            nodes.append(
                Raw(
                    node.name,
                    "layer",
                    [index[args[0]]],
                    layer=dataclasses.replace(tokens_mean, name=names.take(node.name)),
                )
            )
            continue
        mean = _spatial_mean(node, args, bool(args) and args[0] in shapes.nhwc)
        if mean is not None and len(tensor_inputs) == 1 and args[0] is tensor_inputs[0]:
            keepdim = mean
            pool_name = names.take(node.name)
            i = len(nodes)
            nodes.append(Raw(node.name, "layer", [index[args[0]]], layer=AdaptiveAvgPool2d(1, name=pool_name)))
            if not keepdim:
                flat = names.take(f"{node.name}_flatten")
                nodes.append(Raw(flat, "layer", [i], layer=Flatten(name=flat)))
            elif args[0] in shapes.nhwc:
                shapes.nhwc.add(node)  # (N, 1, 1, C)
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
            hw = tuple(shapes.shape(args[0]) or ())[2:]  # (a pad of -inf folds into a max pool: by the sizes)
            nodes.append(Raw(pad_name, "torch_pad", [index[args[0]]], payload=(*pad, hw)))
            continue
        pooled = shapes.token_pool(gm, node, args)
        if pooled is not None:  # (the mean over the tokens, as (N, C, 1): a flatten of it is itself)
            pool_name = names.take(str(node.target), own=True) if node.op == "call_module" else names.take(node.name)
            index[node] = len(nodes)
            nodes.append(Raw(pool_name, "layer", [index[pooled]], layer=TokenMean(name=pool_name)))
            continue
        if any(a in shapes.pooled for a in _flat_args(node)):
            raise UnsupportedLayerError(
                f"from_torch: {where} reads a mean of tokens as (N, C, 1); it is supported only flattened to (N, C)"
            )
        if any(a in shapes.transposed for a in _flat_args(node)):
            raise UnsupportedLayerError(
                f"from_torch: {where} reads tokens transposed to (N, C, L); they are supported only read back as a "
                "map, x.transpose(1, 2).reshape(N, C, H, W)"
            )
        if len(tensor_inputs) != 1 or not args or args[0] is not tensor_inputs[0]:
            raise UnsupportedLayerError(
                f"from_torch: {where} does not take exactly one tensor computed from the input; supported: {_SUPPORTED}"
            )
        if node.op == "call_module":
            where = f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
        crop = _cropping_pad(gm, node, shapes.shape(args[0]), names)
        if crop:  # nn.ZeroPad2d with negative sizes: the crops (Narrow), then the pad of the positive ones
            last = index[args[0]]
            for layer in crop:
                nodes.append(Raw(layer.name, "layer", [last], layer=layer))
                last = len(nodes) - 1
            index[node] = last
            continue
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
        if isinstance(layer, Fragment):
            index[node] = _fragment(nodes, layer, index[args[0]], node, args[0], shapes, source, names, name, where)
            state = {k: t for k, t in layer.state.items() if t is not None}  # (its steps may add to it)
            _own_state(state, owners, where)
            tensors.update(state)
            continue
        if side == "padding_mask":
            if not isinstance(layer, SelfAttention):
                raise UnsupportedLayerError(f"from_torch: {where} reads the padding mask, which only attention does")
            layer = dataclasses.replace(layer, padding_mask=True)
        elif side == "token_types":
            if not isinstance(layer, TokenTypeEmbedding) or layer.token_type:
                raise UnsupportedLayerError(
                    f"from_torch: {where} reads the token types, which only an embedding of type 0 does"
                )
            layer = dataclasses.replace(layer, token_types=True)
        layer = _with_source_keys(layer, state, source)
        layer = shapes.place(node, args[0], m, layer, where)
        _own_state(state, owners, where)
        tensors.update(state)
        index[node] = len(nodes)
        nodes.append(
            Raw(node.name if node.op != "call_module" else str(node.target), "layer", [index[args[0]]], layer=layer)
        )
    if output is None:
        raise UnsupportedLayerError("from_torch: forward returns nothing")
    at = returned_marker(nodes, output)
    _fold_pads(nodes)
    output = output if at is None else read_returned(nodes, at)
    _own_state(heads.state, owners, "an attention's bias")  # (the tables; their fixed indices may be shared)
    tensors.update({**heads.state, **heads.fixed})
    _rename_under_owners(nodes, names, tensors)
    _check_key_clashes(module, tensors)
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
    """Record which canonical key each weight tensor went to; a tensor used twice (also through a view of
    it) is refused."""
    for key, t in state.items():
        if _storage(t) in owners:
            raise UnsupportedLayerError(
                f"from_torch: {where} uses the tensor {owners[_storage(t)]!r} that another operation uses too: "
                "shared weights are not expressed by xconv specs"
            )
        owners[_storage(t)] = key


#: methods that give a parameter another shape, read at import (a layer scale reshaped in forward)
_PARAM_RESHAPES = frozenset({"view", "reshape", "unsqueeze"})


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
    key: str, p: Any, x_node: Any, shapes: ShapeOps, names: Names, where: str
) -> tuple[Any, dict[str, Any]]:
    """``scale * x`` with a parameter ``scale`` that multiplies each channel of the map ``x`` by its own number: of
    shape (C, 1, 1) or (1, C, 1, 1) on an NCHW map (torchvision's ``layer_scale``, timm's
    ``gamma.reshape(1, -1, 1, 1)``), or (C,) on a channels-last one (Hugging Face's ConvNeXt). A
    :class:`LayerScale` under the key of the parameter's module, with the parameter's own key in its ``keys``
    when that is not ``{module}.layer_scale``."""
    shape = shapes.shape(x_node)
    owner = key.rpartition(".")[0]
    tokens = shape is not None and len(shape) == 3  # (N, L, E): one multiplier per feature
    channels = None
    if shape is not None and len(shape) in (3, 4):
        channels = shape[2] if tokens else shape[3] if x_node in shapes.nhwc else shape[1]
    fits = (
        ((channels,), (1, 1, channels))
        if tokens
        else ((channels,),)
        if x_node in shapes.nhwc
        else ((channels, 1, 1), (1, channels, 1, 1))
    )
    if not (isinstance(p, torch.Tensor) and p.is_floating_point() and channels and tuple(p.shape) in fits):
        # (p None: not one of the module's parameters)
        raise UnsupportedLayerError(
            f"from_torch: {where}: a product with a parameter or constant is supported only as a layer scale: a "
            f"parameter of shape (C, 1, 1) times an NCHW map, or (C,) times a channels-last one (got {key!r}"
            f"{', not a parameter' if p is None else ''}, shape {tuple(getattr(p, 'shape', ()))}, times a tensor of "
            f"shape {shape})"
        )
    name = names.take(owner, own=True) if owner and owner not in names.used else names.take(key.replace(".", "_"))
    keys = () if key == f"{name}.layer_scale" else (("layer_scale", key),)
    canonical = p.reshape(channels) if tokens else p.reshape(channels, 1, 1)
    return LayerScale(channels, name=name, keys=keys), {f"{name}.layer_scale": canonical}
