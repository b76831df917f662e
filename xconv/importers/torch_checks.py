"""Checks of a traced torch forward: the shapes of one real run of the graph, the graph against the eager
forward, the modes of functional calls traced as constants, and what makes a module compute something else than
its class's forward (hooks, a replaced forward)."""

from __future__ import annotations

import contextvars
import itertools
from typing import Any

import numpy as np

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError
from ._torch_mutation import StateGuard

F = torch.nn.functional


def propagate_shapes(gm: Any, x: tuple[Any, ...]) -> tuple[str | None, Any]:
    """Run the traced graph ``gm`` on the batch ``x`` (real tensors, without gradients, in the module's own
    modes) and record each node's output shape in ``node.meta["xconv_shape"]``. A node that fails records its
    error in ``node.meta["xconv_shape_error"]`` (and so do the nodes that read it), so that a failing line the
    output does not need leaves the others checked; the importer refuses a needed node without a shape.
    Returns (None, the graph's output), or (why it could not run at all, None). The caller puts back any
    buffer the run writes."""

    class Failed:
        def __init__(self, error: str) -> None:
            self.error = error

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            failed = [a for a in n.all_input_nodes if isinstance(self.env.get(a), Failed)]
            if failed:
                n.meta["xconv_shape_error"] = f"it reads {failed[0].name!r}, which failed"
                return Failed(n.meta["xconv_shape_error"])
            try:
                result = super().run_node(n)
            except Exception as e:  # noqa: BLE001 - recorded, and refused by the importer where it matters
                n.meta["xconv_shape_error"] = f"{type(e).__name__}: {e}"[:300]
                return Failed(n.meta["xconv_shape_error"])
            if isinstance(result, torch.Tensor):
                n.meta["xconv_shape"] = tuple(int(d) for d in result.shape)
                n.meta["xconv_integer"] = not (result.is_floating_point() or result.is_complex())
            return result

    try:
        with torch.no_grad():
            out = Recorder(gm, graph=gm.graph).run(*x)
    except Exception as e:  # noqa: BLE001 - a module that does not run on this shape is reported by the importer
        return f"{type(e).__name__}: {e}"[:300], None
    return None, out


#: functional calls whose ``training`` argument is traced as a constant: (function, position of ``training``)
_MODE_CALLS = {F.dropout: 2, F.batch_norm: 5}


def module_dtype(module: nn.Module) -> Any:
    """The dtype of a module's first floating-point parameter or buffer (float32 for none)."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


#: while a module that takes token ids is imported: the ids its probe batches are drawn below (the smallest
#: vocabulary of its ``nn.Embedding`` modules); None while a module that takes numbers is
TOKEN_IDS: contextvars.ContextVar[int | None] = contextvars.ContextVar("TOKEN_IDS", default=None)


#: while a text encoder called with a padding mask is imported: True (its forward's second argument)
PADDING_MASK: contextvars.ContextVar[bool] = contextvars.ContextVar("PADDING_MASK", default=False)

#: while a text encoder called with token types is imported (its forward's argument after the ids and the
#: padding mask): the types its probe batches are drawn below (the smallest table of its ``nn.Embedding``
#: modules, which the one that looks them up is among); None while one called without is
TOKEN_TYPES: contextvars.ContextVar[int | None] = contextvars.ContextVar("TOKEN_TYPES", default=None)


def _side_probes(batch: int, length: int) -> tuple[Any, ...]:
    """The forward's arguments after the ids: the padding mask and the token types, where it takes them."""
    from .._compare import padding_masks

    side = [torch.from_numpy(padding_masks(batch, length))] if PADDING_MASK.get() else []
    types = TOKEN_TYPES.get()
    if types is not None:
        side.append(torch.from_numpy(np.random.default_rng(1).integers(0, types, (batch, length))))
    return tuple(side)


def probe_input(module: nn.Module, shape: tuple[int, ...], batch: int) -> tuple[Any, ...]:
    """A seeded random input of ``batch`` samples, as the forward's arguments: standard-normal in the module's
    dtype, or token ids (and their padding mask and token types, where the module takes them)."""
    generator = torch.Generator().manual_seed(0)
    vocabulary = TOKEN_IDS.get()
    if vocabulary is not None:
        ids = torch.randint(0, vocabulary, (batch, *shape), generator=generator)
        return (ids, *_side_probes(batch, shape[0]))
    return (torch.randn(batch, *shape, dtype=module_dtype(module), generator=generator),)


def _probe_batch(module: nn.Module, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """``port``'s verification batches in one, in the module's dtype (what a write only large values or exact
    zeros reach shows on), as the forward's arguments; token ids (and a padding mask and token types) for a
    module that takes them."""
    from .._compare import probe_batches

    vocabulary = TOKEN_IDS.get()
    if vocabulary is not None:
        ids = np.concatenate([g for _, g in probe_batches(shape, "int64", 0, vocabulary)])
        return (torch.from_numpy(ids), *_side_probes(len(ids), shape[0]))
    dtype = module_dtype(module)
    x = np.concatenate([g for _, g in probe_batches(shape, "float64", 0)])
    return (torch.from_numpy(x).to(dtype),)


def _check_trace(module: nn.Module, traced: Any, x: tuple[Any, ...], output_key: str | list[str] | None) -> None:
    """The traced graph (with its in-place writes made explicit) must compute what ``module`` computes, run
    eagerly on the same batch with the same random seed: what torch.fx does not record (``out += y`` is traced
    as ``out + y``, so another name for ``out`` that eager execution updates keeps the old value in the graph;
    a write through ``.data``; Python the trace evaluated once) shows as a difference. The module is run in its
    own modes, without gradients; buffers it writes are put back, a written parameter is refused."""
    guard = StateGuard(module)
    try:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            eager = module(*(a.clone() for a in x))
    except Exception as e:  # noqa: BLE001 - reported with the module's name
        guard.written()
        raise UnsupportedLayerError(
            f"from_torch: {type(module).__name__}.forward fails on a batch of its input shape "
            f"({type(e).__name__}: {e})"[:400]
        ) from None
    guard.refuse_parameter_writes("from_torch")
    from .torch_layers import _pick_output

    a, b = (_pick_output(v, output_key) if isinstance(v, (dict, list, tuple)) else v for v in (eager, traced))
    pairs = list(zip(a, b)) if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) else [(a, b)]
    err, tol = 0.0, 1e-6
    for a, b in pairs:
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return  # not tensors: refused with its own message by the importer
        tol = 1e-12 if a.dtype == torch.float64 else 1e-6
        err = float("inf") if a.shape != b.shape else _traced_error(a.double().numpy(), b.double().numpy())
        if not err <= tol:
            break
    if not err <= tol:
        raise UnsupportedLayerError(
            f"from_torch: the graph traced from {type(module).__name__}.forward computes something else "
            f"than the forward itself ({err:.3g} relative): an in-place update under another name (out += y while "
            "another variable still holds out; a write through .data or another view), Python code the trace "
            "does not record, or a cache of the module's (a *_cache dict, emptied for the trace) that its "
            "parameters do not give; write it out of place (out = out + y)"
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


def _dropout_modes(module: nn.Module, graph: Any, retrace: Any) -> None:
    """``F.dropout(x, p, training=...)`` is traced with ``training`` as a constant: ``self.training`` and a literal
    both appear as True or False. The module is traced once more in the other mode (every submodule's flag put
    back afterwards) to tell them apart: a call whose flag follows the mode is a Dropout layer
    (``node.meta["xconv_dropout"] = "mode"``), one that is always off is the identity ("never"), one that is
    always on drops in inference too ("always", refused unless p is 0). ``F.batch_norm(..., training, ...)`` (timm's
    ``BatchNormAct2d``) the same way: "mode" is a BatchNorm; "never" normalises with the running statistics
    always, "always" with the batch's (refused). ``retrace`` None: the graph is an exported program's, which
    has no other mode; a call that is off is what the layer does in eval mode ("mode")."""
    calls = _dropout_calls(graph)
    if not calls:
        return
    if retrace is None:  # an exported program given by the user: its calls record its eval-mode function
        for here in calls:  # (off: the layer the eval-mode export went through, which drops in training)
            here.meta["xconv_dropout"] = "always" if _flag(here) else "mode"
        return
    modes = [(m, m.training) for m in module.modules()]
    guard = StateGuard(module)  # the other mode's forward may write into buffers for real (a batch counter)
    quick = getattr(retrace, "quick", None)  # the calls recorded from one eager run, where the front-end can
    try:
        module.train(not module.training)
        other = quick(graph) if quick is not None else None
        if other is None or not _aligned(calls, other):
            other = _dropout_calls(retrace())  # (what one eager run could not match: traced once more)
    except Exception:  # noqa: BLE001 - a forward that does not trace in the other mode: the calls stay unknown
        other = []
    finally:
        for m, was in modes:
            m.training = was
        guard.written()  # (puts every written buffer back)

    if len(other) != len(calls) or any(a.target is not b.target for a, b in zip(calls, other)):
        return  # the forward branches on the mode: not matched, refused as unsupported
    for here, there in zip(calls, other):
        if _p_of(here) != _p_of(there) or not _same_input(here, there):
            continue  # not the same call in both traces: left unknown, and refused
        now, then = _flag(here), _flag(there)
        here.meta["xconv_dropout"] = "mode" if now == module.training and then != now else "always" if now else "never"


def _same_input(here: Any, there: Any) -> bool:
    """Whether two calls read the same tensor: by name between two traces; for a call recorded eagerly, by
    shape (at the export's batch size) and by what it reads (a batch norm's running statistics, the module whose
    output a dropout drops: where the graph does not show that module, not the same, so traced once more)."""
    if getattr(there.args[0], "name", None) is None and hasattr(there.args[0], "shape"):
        if getattr(here.args[0], "meta", {}).get("xconv_val") != there.args[0].shape:
            return False
        if here.target is F.batch_norm:  # the same module's statistics
            stats: Any = here.args[1] if len(here.args) > 1 else None
            return getattr(stats, "op", None) == "get_attr" and str(stats.target) == there.args[0].ident
        source = here.args[0]  # a dropout of the same module's output
        return getattr(source, "op", None) == "call_module" and str(source.target) == there.args[0].ident
    return bool(getattr(here.args[0], "name", None) == getattr(there.args[0], "name", None))


def _aligned(calls: list[Any], other: list[Any]) -> bool:
    """Whether the other mode's calls are these calls one for one: the same functions, p or eps and inputs."""
    return len(other) == len(calls) and all(
        a.target is b.target and _p_of(a) == _p_of(b) and _same_input(a, b) for a, b in zip(calls, other)
    )


def _flag(node: Any) -> bool:
    """The training flag a dropout or batch norm call was traced with."""
    at = _MODE_CALLS[node.target]
    value = node.args[at] if len(node.args) > at else node.kwargs.get("training", node.target is F.dropout)
    return bool(value)


def _p_of(node: Any) -> Any:
    """A dropout's p (the first float argument) or a batch norm's eps, as traced."""
    at = 1 if node.target is F.dropout else 7
    return node.args[at] if len(node.args) > at else node.kwargs.get("p" if node.target is F.dropout else "eps")


def storage_of(t: Any) -> int:
    """What identifies a tensor's values: its storage (a view or a reshape of a parameter is the parameter);
    an empty tensor, which has none, by itself."""
    return int(t.untyped_storage().data_ptr()) if t.numel() > 0 else id(t)


def state_keys(module: nn.Module) -> dict[int, str]:
    """The storage of each of the module's parameters and buffers -> its state_dict key (the first, if tied)."""
    out: dict[int, str] = {}
    for key, t in module.state_dict(keep_vars=True).items():
        if isinstance(t, torch.Tensor):
            out.setdefault(storage_of(t), key)
    return out


def check_global_hooks() -> None:
    """Refuse global forward hooks (``register_module_forward_hook``): they change every module's output."""
    module_mod = torch.nn.modules.module
    if any(getattr(module_mod, n, None) for n in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        raise UnsupportedLayerError(
            "from_torch: global forward hooks are registered (torch.nn.modules.module."
            "register_module_forward_hook), which change every module's output; remove them before importing"
        )


def _check_calls(module: nn.Module) -> None:
    """Refuse what makes a module compute something else than its class's forward: forward hooks (its own,
    its submodules', or the global ones) and a ``forward`` replaced on an instance (``m.forward = ...``)."""
    check_global_hooks()
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


def called_as_built(m: nn.Module, path: str, members: list[Any]) -> None:
    """A leaf is mapped by its class, so it must have been called with its input alone: a transposed conv
    given an ``output_size`` in forward records another output padding than the module's own (refused)."""
    from .torch_calls import bind as _bind
    from .torch_calls import overload as _overload

    for n in members:  # an attention module called with a causal flag computes another function
        if _overload(n.target) == "scaled_dot_product_attention.default" and _bind(n).get("is_causal"):
            raise UnsupportedLayerError(f"from_torch: module {path!r} ({type(m).__name__}) computes causal attention")
    if not isinstance(m, nn.ConvTranspose2d):
        return
    for n in members:
        op = _overload(n.target)
        if op == "conv_transpose2d.input" and tuple(_bind(n)["output_padding"]) != tuple(m.output_padding):
            raise UnsupportedLayerError(
                f"from_torch: module {path!r} (ConvTranspose2d) is called with an output_size in forward; "
                "give the output_padding to the module instead"
            )
