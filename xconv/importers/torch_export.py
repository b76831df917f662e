"""torch front-end on ``torch.export``: a module's exported program, read back as the graph the importer maps.

``torch.export.export(module, (x,), strict=False)`` runs the real forward (control flow on shapes, ``len()``,
``int()`` of a size and iteration are just Python) and records every operation as an ATen call, with the
parameter and buffer names of ``module.state_dict()`` and, for each call, the stack of modules it ran in. This
module turns that program into an fx graph of module calls and ``torch`` functions, the form the importer
maps (:func:`read`):

- the calls of one leaf module (a ``torch.nn`` layer, not a container, with no hooks and no instance forward)
  become one ``call_module`` node on that module, so it is mapped by its class, with its qualified name;
- every other ATen call becomes the ``torch`` function or tensor method that computes it (``aten.conv2d`` ->
  ``F.conv2d``, ``aten.view`` -> ``x.view``, ``aten.add_`` -> ``+=``), with its arguments in that function's
  order; a call with no such counterpart stays the ATen call and is refused by name by the importer.

The program is exported for a batch of :data:`BATCH` (a symbolic batch is about three times slower). A size
list that starts with it, given to a view, reshape or expand of a tensor whose first axis is the batch, reads
the input's batch size instead, so it stays free in the spec. Any other use of the literal batch size stays a
constant: the importer runs the graph on another batch size, and a graph that depends on it is refused.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError
from .torch_calls import WITH_INDICES, bind, overload, torch_call
from .torch_checks import called_as_built
from .torch_shapes import call_arguments, inner_shapes

F = torch.nn.functional

__all__ = ["ExportFailed", "read"]


class ExportFailed(Exception):
    """``torch.export`` could not export the module (the message says why)."""


#: the batch size programs are exported for: none of the batch sizes the importer and port check with
BATCH = 3


def export(module: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """The module's exported program (non-strict, training IR, for a batch of :data:`BATCH`), in the module's
    own modes. Raises ExportFailed."""
    from .torch_checks import probe_input
    from .torch_layers import mode_regularizer

    x = probe_input(module, input_shape, BATCH)  # (the forward's arguments)

    # a dropout or stochastic depth computes nothing in eval mode, so the program would not show it: for the
    # export only, its output goes through an alias (attributed to the module, so its call is one leaf call)
    marks = [
        m.register_forward_hook(_mark)
        for m in module.modules()
        if mode_regularizer(m) and not (m._forward_hooks or m._forward_pre_hooks) and "forward" not in vars(m)
    ]
    try:
        return torch.export.export(module, x, strict=False)
    except Exception as e:  # noqa: BLE001 - reported by the caller, which may trace instead
        raise ExportFailed(f"{type(e).__name__}: {e}"[:400]) from None
    finally:
        for handle in marks:
            handle.remove()


def _mark(module: nn.Module, args: Any, out: Any) -> Any:
    return torch.ops.aten.alias.default(out) if isinstance(out, torch.Tensor) else out


def read(module: nn.Module, program: Any, batch_size: int | None = BATCH) -> Any:
    """The exported ``program`` of ``module`` as a ``torch.fx.GraphModule`` rooted at ``module``: placeholders,
    ``get_attr`` of the module's own parameters and buffers (by qualified name), ``call_module`` for leaf
    modules and torch-level calls for the rest; the output keeps the forward's dict keys. ``batch_size``: the
    batch the program was exported for (None: a dynamic one). A program given by the user (``module`` is its
    :class:`~.torch_program.ExportedModel`) has no layers to call: every call is read as a function."""
    from .torch_checks import PADDING_MASK, TOKEN_TYPES
    from .torch_ids import drop_open_masks, padding_mask_reads
    from .torch_program import ExportedModel
    from .torch_tokens import returns_pair

    flat = program.module()
    drop_open_masks(flat.graph)
    padding = padding_mask_reads(flat.graph, batch_size or BATCH) if PADDING_MASK.get() else None
    placeholders = [n for n in flat.graph.nodes if n.op == "placeholder"]
    types = placeholders[-1] if TOKEN_TYPES.get() is not None and len(placeholders) > 1 + bool(padding) else None
    graph = torch.fx.Graph()
    env: dict[Any, Any] = {}
    leaves = _Leaves(module, none=isinstance(module, ExportedModel))
    nodes = [n for n in flat.graph.nodes if not _ignored(n)]
    groups = _groups(nodes, leaves, {padding, types} - {None})
    done: set[Any] = set()
    inside_leaves = {m for _, members, _, _ in groups.values() for m in members}
    pooled: set[Any] = set()  # max poolings that return (values, indices): read through [0] only
    inputs: list[Any] = []
    batch = None  # x.size(0), made where a size list first needs it
    derived: set[Any] = set()  # nodes of the new graph computed from parameters and buffers alone
    for n in nodes:
        if n in done:
            continue
        if n in groups:
            path, members, src, side = groups[n]
            done.update(members)
            leaf = module.get_submodule(path)
            masked = side is not None and side is padding
            mask_of = () if side is None else (env[side],)  # (attention reads the padding mask, embeddings types)
            if returns_pair(leaf):  # (output, attention weights): its output [0]; nn.MultiheadAttention as (x, x, x)
                mha = isinstance(leaf, nn.MultiheadAttention)
                if masked and not mha:  # Hugging Face's attention takes the mask as sdpa does: (N, 1, 1, L)
                    tokens = graph.call_function(operator.ne, (env[padding], 0))
                    keys = graph.call_function(operator.getitem, (tokens, (slice(None), None, None, slice(None))))
                    keys.meta["xconv_padding"] = tokens.meta["xconv_padding"] = True
                    mask_of = (keys,)
                inputs_of = (env[src],) * 3 if mha else (env[src], *mask_of, *call_arguments(leaf, members))
                call = graph.call_module(path, inputs_of, {"need_weights": False} if mha else {})
                call.meta["xconv_inner_shapes"] = inner_shapes(members)
                call.meta["xconv_inner_ops"] = [str(m.target) for m in members]
                env[members[-1]] = _shape_of(members[-1], graph.call_function(operator.getitem, (call, 0)))
            else:
                call = graph.call_module(path, (env[src], *mask_of, *call_arguments(leaf, members)))
                call.meta["xconv_inner_shapes"] = inner_shapes(members)
                call.meta["xconv_inner_ops"] = [str(m.target) for m in members]
                env[members[-1]] = _shape_of(members[-1], call)
            for m in members[:-1]:
                env[m] = env[members[-1]]  # (only the last is read outside the call)
            continue
        if n.op == "placeholder":
            env[n] = _shape_of(n, graph.placeholder(n.name))
            inputs.append(env[n])
            if n is padding:
                env[n].meta["xconv_padding"] = True
            if n is types:  # (read by an nn.Embedding, or xconv's token-type embedding, alone)
                env[n].meta["xconv_types"] = True
        elif n.op == "get_attr":
            target = str(n.target)
            if not _resolves(module, target) and n.users and all(u in inside_leaves for u in n.users):
                continue  # (a constant a leaf module makes in its forward, read inside its call alone)
            if not _resolves(module, target):
                raise UnsupportedLayerError(
                    f"from_torch: the forward uses a tensor {target!r} that is not one of the module's parameters "
                    "or buffers (a constant created in forward); register it as a buffer"
                )
            env[n] = _shape_of(n, graph.get_attr(target))
            derived.add(env[n])
        elif n.op == "output":
            leaves_out = [env[v] for v in n.args[0]]
            graph.output(_structure(program.call_spec.out_spec, iter(leaves_out)))
        elif n.op == "call_function" and n.target is operator.getitem and n.args[0] in pooled:
            if n.args[1] != 0 and n.users:
                raise UnsupportedLayerError(
                    f"from_torch: operation {n.name!r} reads the indices of a max pooling, which is not supported"
                )
            if n.args[1] == 0:
                env[n] = env[n.args[0]]
        elif n.op == "call_function" and overload(n.target) in WITH_INDICES:
            a = bind(n)
            new = graph.call_function(F.adaptive_max_pool2d, (env[a["self"]], list(a["output_size"])))
            env[n] = new
            pooled.add(n)
        elif n.op == "call_function":
            op, args, kwargs = torch_call(n, env)
            kind = "call_method" if isinstance(op, str) else "call_function"
            token = op == "expand" and args[0] in derived and _batch_first(args, batch_size, token=True)
            if op in _SIZED and _batch_first(args, batch_size) and args[0] not in derived or token:
                if batch is None:
                    batch = graph.call_method("size", (inputs[0], 0))
                args[1] = [batch, *args[1][1:]]
            env[n] = _shape_of(n, graph.create_node(kind, op, tuple(args), kwargs, name=n.name))
            if env[n].all_input_nodes and all(a in derived for a in env[n].all_input_nodes):
                derived.add(env[n])  # computed from parameters alone: its first axis is not the batch
        else:
            raise UnsupportedLayerError(f"from_torch: the exported program has a {n.op} node {n.name!r}")
    gm = torch.fx.GraphModule(module, graph)
    gm.__dict__["_xconv_source"] = module
    return gm


def _shape_of(old: Any, new: Any) -> Any:
    """``new`` (a node of the read graph), remembering the exported shape of ``old`` (for the batch size)."""
    val = old.meta.get("val")
    if isinstance(val, torch.Tensor) and all(isinstance(d, int) for d in val.shape):  # (not data-dependent)
        new.meta["xconv_val"] = tuple(val.shape)
    new.meta["nn_module_stack"] = old.meta.get("nn_module_stack")  # (an attention's module: its dropout)
    return new


def retracer(module: nn.Module, input_shape: tuple[int, ...]) -> Callable[[], Any]:
    """What tracing the module once more (in whatever mode it is in then) means for this front-end."""

    def again() -> Any:
        return read(module, export(module, input_shape)).graph

    again.quick = lambda graph: eager_calls(module, input_shape, graph)  # type: ignore[attr-defined]
    return again


def eager_calls(module: nn.Module, input_shape: tuple[int, ...], graph: Any) -> list[Any]:
    """The ``F.dropout`` and ``F.batch_norm`` calls of one eager run of the module (in whatever mode it is in
    then, without gradients, the random state put back), outside the modules the graph calls whole, as nodes
    of the graph's form (arguments in the function's order; the input as its shape). A second export costs
    about a second and a half, this run a few milliseconds; the caller checks that the calls line up one for
    one with the graph's (a batch norm by the running statistics it reads, a dropout by the module whose output
    it drops), and traces once more where they do not."""
    import inspect
    import types

    from .torch_checks import probe_input, state_keys, storage_of

    signatures = {f: inspect.signature(f) for f in (F.dropout, F.batch_norm)}
    records: list[Any] = []
    depth = [0]
    made_by: dict[int, str] = {}  # id of a module's output -> the innermost module that returned it
    keys = state_keys(module)

    class Record(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func: Any, types_: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func in signatures and depth[0] == 0:
                bound = signatures[func].bind(*args, **kwargs)
                bound.apply_defaults()
                values = list(bound.arguments.values())
                if func is F.batch_norm:  # which call: by the running statistics it reads
                    stats = values[1]
                    ident = keys.get(storage_of(stats)) if isinstance(stats, torch.Tensor) else None
                else:  # by the module whose output it drops
                    ident = made_by.get(id(values[0]))
                values[0] = types.SimpleNamespace(name=None, shape=tuple(values[0].shape), ident=ident)
                records.append(types.SimpleNamespace(target=func, args=tuple(values), kwargs={}, meta={}))
            return func(*args, **kwargs)

    def enter(*_: Any) -> None:
        depth[0] += 1

    def leave(*_: Any) -> None:
        depth[0] -= 1

    def made(path: str) -> Any:
        def hook(m: Any, args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                made_by.setdefault(id(out), path)

        return hook

    x = probe_input(module, input_shape, BATCH)
    handles = []
    try:
        for path in {str(n.target) for n in graph.nodes if n.op == "call_module"}:
            m = module.get_submodule(path)
            handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave, always_call=True)]
        for path, m in module.named_modules():
            if path:
                handles.append(m.register_forward_hook(made(path)))
        with torch.no_grad(), torch.random.fork_rng(), Record():
            module(*x)
    finally:
        for handle in handles:
            handle.remove()
    return records


def _ignored(n: Any) -> bool:
    """Nodes of an exported program that compute nothing: the input guards and shape assertions."""
    if n.op == "call_module" and str(n.target).startswith("_guards"):
        return True
    if n.op == "call_function":
        name = getattr(n.target, "__name__", str(n.target))
        return name.startswith(("_assert", "sym_constrain_range")) and not n.users
    return False


def _resolves(module: nn.Module, target: str) -> bool:
    owner, _, attr = target.rpartition(".")
    try:
        m = module.get_submodule(owner) if owner else module
    except AttributeError:
        return False
    return attr in m._parameters or attr in m._buffers


#: torch.nn modules read through, operation by operation: containers, and the transformer blocks (made of
#: layers that import one by one)
CONTAINERS = (
    nn.Sequential,
    nn.ModuleList,
    nn.ModuleDict,
    nn.Transformer,
    nn.TransformerEncoder,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoder,
    nn.TransformerDecoderLayer,
)


class _Leaves:
    """Which modules are imported by their class: torch.nn layers (as torch.fx's tracer keeps them), xconv's own
    torch layers, with no hooks and no forward replaced on the instance (their calls are then mapped one by
    one, as the program records them)."""

    def __init__(self, module: nn.Module, none: bool = False) -> None:
        from .torch_layers import own_leaf_types

        self.module = module
        self.none = none
        self.own = own_leaf_types()
        self.cache: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        if self.none:
            return False
        if path not in self.cache:
            try:
                m = self.module.get_submodule(path) if path else None
            except AttributeError:
                m = None
            self.cache[path] = m is not None and self._leaf(m)
        return self.cache[path]

    def regularizer(self, path: str) -> bool:
        from .torch_layers import mode_regularizer

        return mode_regularizer(self.module.get_submodule(path))

    def _leaf(self, m: nn.Module) -> bool:
        from .torch_layers import matched, mode_regularizer

        if m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m):
            return False
        if type(m) in self.own or mode_regularizer(m) or matched(m):
            return True
        where = type(m).__module__
        return where.startswith(("torch.nn", "torch.ao.nn")) and not isinstance(m, CONTAINERS)


def _leaf_of(n: Any, leaves: _Leaves) -> tuple[str, str] | None:
    """(stack key, module path) of the outermost leaf module the call ran in, or None."""
    for key, (path, _) in (n.meta.get("nn_module_stack") or {}).items():
        if leaves(path):
            return key, path
    return None


def _groups(nodes: list[Any], leaves: _Leaves, side: set[Any]) -> dict[Any, tuple[str, list[Any], Any, Any]]:
    """First node of each leaf module call -> (module path, its nodes, the one tensor it reads, the side input
    it reads too or None), for the calls that read one computed tensor besides the module's own tensors (and
    one of the placeholders ``side``, the padding mask and token types) and are read through their last node
    only. Other calls are left to be mapped operation by operation."""
    runs: list[tuple[str, str, list[Any]]] = []
    for n in nodes:
        leaf = _leaf_of(n, leaves) if n.op == "call_function" else None
        if leaf is None:
            continue
        if runs and runs[-1][0] == leaf[0] and runs[-1][2][-1].next is n:
            runs[-1][2].append(n)
        elif (
            runs
            and runs[-1][0] == leaf[0]
            and all(_ignored(m) or _leaf_of(m, leaves) is None for m in _between(runs[-1][2][-1], n))
        ):
            runs[-1][2].append(n)  # (only ignored nodes between: shape guards, another module's sizes)
        else:
            runs.append((leaf[0], leaf[1], [n]))
    out: dict[Any, tuple[str, list[Any], Any, Any]] = {}
    for _, path, members in runs:
        inside = set(members)
        sizes_inside = leaves.regularizer(path)
        reads: list[Any] = []
        for m in members:
            for a in m.all_input_nodes:
                if a in inside or a in reads:
                    continue
                if a.op == "get_attr" and str(a.target).startswith(f"{path}."):
                    continue
                if sizes_inside and "val" in a.meta and not isinstance(a.meta["val"], torch.Tensor):
                    continue  # the batch size (its random mask's shape): the module takes it from its input
                reads.append(a)
        called_as_built(leaves.module.get_submodule(path), path, members)
        sides = [a for a in reads if a in side]
        sided = sides[0] if len(reads) == 2 and len(sides) == 1 else None
        if sided is not None:
            reads = [a for a in reads if a is not sided]
        read_outside = [m for m in members if any(u not in inside and not _ignored(u) for u in m.users)]
        buffer_read = reads[0].op == "get_attr" if reads else False
        embedding = type(leaves.module.get_submodule(path)) is nn.Embedding  # (ids may be a buffer)
        if len(reads) != 1 or buffer_read and not embedding or read_outside not in ([], [members[-1]]):
            continue
        out[members[0]] = (path, members, reads[0], sided)
    return out


def _between(a: Any, b: Any) -> list[Any]:
    out, n = [], a.next
    while n is not b and n.op != "root":
        out.append(n)
        n = n.next
    return out


def _structure(spec: Any, leaves: Any) -> Any:
    """The forward's returned structure with graph nodes as its leaves: dicts (and Hugging Face's model outputs,
    flattened by key) as dicts, tuples and lists as tuples."""
    if spec.is_leaf():
        return next(leaves)
    kids = [_structure(spec.child(i), leaves) for i in range(spec.num_children)]
    ctx = spec.context
    if isinstance(ctx, (list, tuple)) and len(ctx) == len(kids) and all(isinstance(k, str) for k in ctx):
        return dict(zip(ctx, kids, strict=True))
    return tuple(kids)


#: the tensor methods whose second argument is a size list that may start with the batch size
_SIZED = frozenset({"view", "reshape", "expand"})


def _batch_first(args: list[Any], batch: int | None, token: bool = False) -> bool:
    """Whether ``args`` (a tensor, a size list) start the list with the literal batch size, for a tensor whose
    first axis is the batch (its exported value has ``batch`` rows); with ``token``, for a parameter's tensor
    of one row expanded over the batch (a class token's ``expand(N, -1, -1)``)."""
    if batch is None or len(args) < 2 or not isinstance(args[1], list) or not args[1] or args[1][0] != batch:
        return False
    val = getattr(args[0], "meta", {}).get("xconv_val")
    return val is not None and len(val) > 0 and val[0] == (1 if token else batch)
