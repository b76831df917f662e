"""In-place operations in a traced torch forward: made explicit, or refused.

``y.clamp_(-6, 6); return y`` computes ``clamp(y)``, but the traced graph returns the node ``y`` and the
clamp is a node nobody reads: an importer that follows only what the output depends on would drop it. Here
every later reader of an overwritten tensor is rewired to read the in-place operation's result instead (what
``torch.export`` calls functionalization), so the clamp is on the output's path and is imported, or refused
by name, like any other operation. What cannot be made explicit is refused: a write whose memory is read
afterwards through another view (``y[:, :2].clamp_()`` changes ``y``; ``v = y.view(...)`` sees a later
``y.relu_()``), a write into a module's own parameter or buffer, ``out=`` arguments and item assignment. A
write into a view that nothing else reads afterwards (``nn.Dropout(inplace=True)`` after ``torch.flatten``)
is the same as an out-of-place operation.
"""

from __future__ import annotations

import operator
from typing import Any

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError

_VIEW_METHODS = frozenset(
    {
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "flatten",
        "unflatten",
        "contiguous",
        "squeeze",
        "unsqueeze",
        "permute",
        "transpose",
        "t",
        "narrow",
        "chunk",
        "split",
        "unbind",
        "expand",
        "expand_as",
        "select",
        "as_strided",
        "movedim",
        "unfold",
        "detach",
        "__getitem__",
        "view_as_real",
        "diagonal",
        "split_with_sizes",
        "tensor_split",
        "swapaxes",
        "swapdims",
        "hsplit",
        "vsplit",
        "dsplit",
        "view_as_complex",
        "adjoint",
    }
)
_VIEW_FUNCTIONS = frozenset(
    {
        torch.flatten,
        torch.reshape,
        torch.permute,
        torch.transpose,
        torch.narrow,
        torch.chunk,
        torch.split,
        torch.squeeze,
        torch.unsqueeze,
        torch.unbind,
        torch.select,
        torch.movedim,
        torch.detach,
        operator.getitem,
        torch.nn.functional.dropout,
    }
)
_VIEW_MODULES = (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten)
_VIEW_ATTRIBUTES = frozenset({"data", "T", "mT", "H", "mH", "real", "imag"})


def mutates(root: nn.Module, node: Any) -> bool:
    """Whether ``node`` writes into its first tensor argument: a method or function named with a trailing
    underscore (``clamp_``, ``torch.relu_``, ``masked_fill_``), ``inplace=True`` (a functional call or a module
    built with it), ``+=`` / ``*=`` on tensors, ``out=`` or item assignment."""
    if node.op == "call_module":
        return bool(getattr(root.get_submodule(node.target), "inplace", False))
    if node.op == "call_method":
        name = str(node.target)
        return name == "__setitem__" or (name.endswith("_") and not name.startswith("_")) or "out" in node.kwargs
    if node.op != "call_function":
        return False
    name = getattr(node.target, "__name__", "")
    return (
        bool(node.kwargs.get("inplace", False))
        or "out" in node.kwargs
        or node.target in (operator.iadd, operator.imul, operator.isub, operator.itruediv, operator.setitem)
        or (name.endswith("_") and not name.startswith("_"))
    )


def is_view(root: nn.Module, node: Any) -> bool:
    """Whether ``node``'s result may share memory with its first input without being an in-place write: a view,
    a slice, a piece of a split, or a module that returns its input (Identity, Dropout in eval, Flatten)."""
    if node.op == "call_module":
        return isinstance(root.get_submodule(node.target), _VIEW_MODULES)
    if node.op == "call_method":
        return str(node.target) in _VIEW_METHODS
    if node.op == "call_function":
        if node.target is getattr:  # x.data, x.T, x.mT, x.real: the same memory
            return len(node.args) > 1 and node.args[1] in _VIEW_ATTRIBUTES
        return node.target in _VIEW_FUNCTIONS or getattr(node.target, "__name__", "") in _VIEW_METHODS
    return False


def _aliases_of(root: nn.Module, target: Any, write: Any, order: dict[Any, int]) -> set[Any]:
    """Every traced tensor that may share ``target``'s memory when ``write`` overwrites it: up through the views
    it was taken from, then down through every view taken of any of them, except the write itself and the
    views of ``target`` taken after the write (they are rewired to read the write's result)."""
    base = target
    while is_view(root, base) and base.args and isinstance(base.args[0], torch.fx.Node):
        base = base.args[0]
    shared, stack = {base}, [base]
    while stack:
        n = stack.pop()
        for user in n.users:
            if user is write or (n is target and order[user] > order[write]):
                continue
            if is_view(root, user) and user.args and user.args[0] is n and user not in shared:
                shared.add(user)
                stack.append(user)
    return shared


def describe(node: Any) -> str:
    """How messages name a traced operation: ``operation 'sinh' (call_method sinh)``, and for a call an exported
    program kept as ATen, ``operation 'sinh' (aten.sinh)``; then the module whose forward made it, where known
    (``in 'blocks.0.attn' (Attention)``)."""
    target = node.target
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    path, cls = stack[-1] if stack and isinstance(stack[-1], tuple) and len(stack[-1]) == 2 else ("", None)
    cls = getattr(cls, "__name__", str(cls).rsplit(".", 1)[-1])
    inside = f" in {path!r} ({cls})" if path and "L[" not in str(path) else ""
    if isinstance(target, torch._ops.OpOverload):
        return f"operation {node.name!r} ({target.namespace}.{target.overloadpacket.__name__}){inside}"
    return f"operation {node.name!r} ({node.op} {getattr(target, '__name__', target)}){inside}"


def functionalize(root: nn.Module, graph: Any) -> None:
    """Rewire ``graph`` (in place) so that every in-place write is read through its own result: the readers of
    the overwritten tensor that come after the write read the write's node. Refuses (naming the operation) what
    cannot be made explicit exactly; the readers that came before the write keep the old value, as in eager
    execution (the importer refuses those it cannot order)."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        if not mutates(root, node):
            continue
        where = describe(node)
        if "out" in node.kwargs:
            raise UnsupportedLayerError(
                f"from_torch: {where} writes its result into an out= tensor; assign the result instead "
                "(y = torch.add(a, b))"
            )
        if node.op == "call_function" and node.target is operator.setitem or node.target == "__setitem__":
            raise UnsupportedLayerError(
                f"from_torch: {where} assigns into part of a tensor (x[...] = v), which xconv does not import"
            )
        target = next((a for a in node.args if isinstance(a, torch.fx.Node)), None)
        if target is None:
            continue
        base = target
        while is_view(root, base) and base.args and isinstance(base.args[0], torch.fx.Node):
            base = base.args[0]  # (x.data, a slice, a view: the same memory)
        if base.op == "get_attr":
            target = base
            raise UnsupportedLayerError(
                f"from_torch: {where} writes into the module's own tensor {target.target!r}: forward changes the "
                "module's state, which a ported model would not do"
            )
        shared = _aliases_of(root, target, node, order)
        seen = [
            u
            for n in shared
            if n is not target
            for u in n.users
            if u is not node and u not in shared and order[u] > order[node]
        ]
        if seen:
            raise UnsupportedLayerError(
                f"from_torch: {where} writes in place into {target.name!r}, whose memory {seen[0].name!r} reads "
                "afterwards through another view (a slice, a reshape, the tensor it was taken from); write out of "
                "place (y = y.clamp(...)) instead"
            )
        later = [u for u in target.users if u is not node and order[u] > order[node]]
        for user in later:
            user.replace_input_with(target, node)


def _checksum(t: Any) -> tuple[float, float]:
    """The sum and the norm, accumulated in float64 (no copy of a float tensor; an integer one is converted)."""
    with torch.no_grad():
        t = t if t.is_floating_point() or t.is_complex() else t.double()
        return float(t.sum(dtype=torch.float64)), float(torch.linalg.vector_norm(t, dtype=torch.float64))


class KeptCaches:
    """The modules' own caches, attributes named ``*_cache`` that are plain dicts (timm's and Hugging Face's
    ``attention_bias_cache`` of tensors computed from parameters, which their ``train()`` empties and an
    eval-mode forward fills): saved, and put back by :meth:`restore`, the same objects with the same contents,
    so that the module computes what it computed before. With ``empty``, emptied until then: a trace or
    export then computes from the parameters (an export would read a cached tensor as a constant); the check
    of the trace against the module runs with the module's own caches."""

    def __init__(self, module: nn.Module, empty: bool = False) -> None:
        self.saved = [
            (m, name, value, dict(value))
            for m in module.modules()
            for name, value in vars(m).items()
            if name.endswith("_cache") and type(value) is dict
        ]
        for _, _, value, _ in self.saved if empty else ():
            value.clear()

    def restore(self) -> None:
        for m, name, value, contents in self.saved:
            setattr(m, name, value)
            value.clear()
            value.update(contents)


class StateGuard:
    """Sees whether running ``module`` (torch.fx tracing runs its forward, and operations on its own tensors
    run for real) wrote into its parameters or buffers: each tensor's version counter moves with every
    in-place write. Buffers are copied first and put back when written; a written parameter cannot be put
    back without a copy of all of them, so it is only named."""

    def __init__(self, module: nn.Module, empty_caches: bool = False) -> None:
        """``empty_caches``: the modules' caches are empty while the guard runs (see :class:`KeptCaches`)."""
        self.tensors = {
            **{f"parameter {n!r}": t for n, t in module.named_parameters()},
            **{f"buffer {n!r}": t for n, t in module.named_buffers()},
        }
        self.versions = {n: t._version for n, t in self.tensors.items()}
        self.saved = {n: t.detach().clone() for n, t in self.tensors.items() if n.startswith("buffer")}
        # a write through .data does not move the version counter: parameters are also summed (one pass, no copy)
        self.sums = {n: _checksum(t) for n, t in self.tensors.items() if n.startswith("parameter")}
        self.caches = KeptCaches(module, empty=empty_caches)

    def written(self) -> list[str]:
        """The tensors written since the guard was made; buffers and the modules' caches are restored."""
        self.caches.restore()
        changed = [
            n
            for n, t in self.tensors.items()
            if t._version != self.versions[n]
            or (n in self.saved and not torch.equal(t, self.saved[n]))
            or (n in self.sums and _checksum(t) != self.sums[n])
        ]
        with torch.no_grad():
            for n in changed:
                if n in self.saved:
                    t = self.tensors[n]
                    if t.shape != self.saved[n].shape:  # (an observer's statistics start empty)
                        t.resize_(self.saved[n].shape)
                    t.copy_(self.saved[n])
        return changed

    def refuse_parameter_writes(self, who: str) -> None:
        """After running the module for real: buffers it wrote (BatchNorm's statistics in training) are put back;
        a written parameter is refused (it cannot be put back)."""
        changed = [n for n in self.written() if n not in self.saved]
        if changed:
            raise UnsupportedLayerError(
                f"{who}: forward writes into the module's own {changed[0]} (in place, as every call of the model "
                "does), so the module's weights change with every call, which a ported model would not do"
            )

    def refuse_writes(self, who: str) -> None:
        changed = self.written()
        if changed:
            raise UnsupportedLayerError(
                f"{who}: forward writes into the module's own {changed[0]} (in place), so the module's state "
                "changes with every call, which a ported model would not do"
                + (" (the buffer was restored)" if changed[0] in self.saved else "")
            )
