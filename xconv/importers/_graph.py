"""The importers' shared middle: a raw DAG of imported operations, the folding passes over it, and its
decomposition into a nested fork-join spec.

A front-end (torch.fx, Keras) turns a model into :class:`Raw` nodes in topological order (node 0 is the input);
passes fold nodes into their neighbours only where a tensor has one reader; :func:`to_spec` then finds, for
each tensor read by several nodes, the node where all its paths meet again (its immediate post-dominator) and
turns the paths in between into the branches of an ``Add``, ``Concat`` or ``Multiply``. A graph that is not
nested that way (a tensor read by several joins: HRNet's fusions, DLA's aggregations) becomes a flat chain in
topological order where every part that does not read the one before it starts from a named reference
(``Use``), as Keras' functional API writes any DAG.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .._layer import Layer
from ..errors import UnsupportedLayerError
from ..spec import Add, Concat, DotProductAttention, Identity, Multiply, Sequential, Subtract, Use

__all__ = ["Fragment", "Names", "Raw", "drop", "readers", "to_spec"]

JOINS = {"add": Add, "mul": Multiply, "cat": Concat, "sub": Subtract, "attn": DotProductAttention}


@dataclasses.dataclass
class Raw:
    """One imported operation: ``op`` is "input", "layer" (``layer`` holds the spec layer, named), a join
    ("add", "mul", "cat" with ``dim``, "attn" of queries, keys and values with ``payload`` (heads, scale,
    dropout, the fields of a learned bias)), or a
    front-end's own marker that a pass must fold away (``payload``)."""

    name: str  # the source's name for messages: fx node or Keras layer name
    op: str
    inputs: list[int]
    layer: Any = None
    dim: int = 1
    payload: Any = None
    alive: bool = True
    #: ``name`` is already a unique layer name (taken from the front-end's ``Names``)
    owned: bool = False

    def where(self) -> str:
        kind = self.layer.kind if self.layer is not None else self.op
        return f"{self.name!r} ({kind})"


@dataclasses.dataclass
class Fragment:
    """What one matched module of another library imports as when it is several spec nodes (timm's Swin
    block): ``steps``, each (a named spec layer or a join "add", the steps it reads: -1 is the module's input),
    the last one its output; ``state``: the layers' tensors by canonical key; ``check(shape)``: refuses the
    input shape (N, ...) it was called on where the mapping does not hold for it."""

    steps: list[tuple[Any, tuple[int, ...]]]
    state: dict[str, Any]
    check: Any = None
    #: the module reads and returns a channels-last (N, H, W, C) map
    channels_last: bool = True
    #: (input shape, the shapes its call computed inside, its operations' names; both None when unknown) -> the
    #: steps, for a module whose steps depend on what it is given in its call (Hugging Face's Swin layers read
    #: their map's size so)
    make: Any = None


class Names:
    """Unique layer names: the source's own where free, else with a numeric suffix."""

    def __init__(self, reserved: set[str] | None = None) -> None:
        self.used: set[str] = set()
        self.reserved = set(reserved or ())

    def take(self, base: str, own: bool = False) -> str:
        """``base`` itself when ``own`` (a module's qualified name, reserved for it) or when free."""
        base = base.replace("/", ".") or "layer"
        if base not in self.used and (own or base not in self.reserved):
            self.used.add(base)
            return base
        k = 2
        while f"{base}_{k}" in self.used or f"{base}_{k}" in self.reserved:
            k += 1
        self.used.add(f"{base}_{k}")
        return f"{base}_{k}"


def readers(nodes: list[Raw]) -> dict[int, list[int]]:
    """Node -> the live nodes reading it (repeats removed, in order)."""
    out: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for j, node in enumerate(nodes):
        if node.alive:
            for i in dict.fromkeys(node.inputs):
                out[i].append(j)
    return out


def returned_marker(nodes: list[Raw], output: int | list[int]) -> int | None:
    """Before the folds: a model with several outputs gets a marker node reading them, so that a fold that
    needs a tensor's one reader sees the model's return as a reader too (a returned pad is not folded into the
    conv after it). Its index, or None (one output)."""
    if not isinstance(output, list):
        return None
    nodes.append(Raw("returned", "returned", list(output)))
    return len(nodes) - 1


def read_returned(nodes: list[Raw], at: int) -> list[int]:
    """After the folds: the returned nodes, as the marker at ``at`` reads them now (the marker removed)."""
    nodes[at].alive = False
    return list(nodes[at].inputs)


def drop(nodes: list[Raw], i: int) -> None:
    """Remove node ``i`` (one input), rewiring its readers to its input."""
    src = nodes[i].inputs[0]
    nodes[i].alive = False
    for node in nodes:
        if node.alive:
            node.inputs = [src if k == i else k for k in node.inputs]


def to_spec(
    nodes: list[Raw], output: int | list[int], input_shape: tuple[int, ...], names: Names, who: str
) -> Sequential:
    """The nested spec computing node ``output`` from node 0; or, given a list of nodes, the spec whose model
    returns the list of their outputs (``Sequential(outputs=...)``, each named by its part's key)."""
    for node in nodes:
        if node.alive and node.op not in ("input", "layer", *JOINS):
            raise UnsupportedLayerError(f"{who}: {node.where()} could not be folded into a neighbouring layer")
    several = isinstance(output, list)
    ends = [_alive(nodes, i) for i in (output if isinstance(output, list) else [output])]
    if len(set(ends)) != len(ends):
        raise UnsupportedLayerError(f"{who}: the model returns one tensor twice; each output must be its own")
    users = readers(nodes)
    live = {i for i, n in enumerate(nodes) if n.alive}
    # keep only what the outputs depend on
    needed: set[int] = set()
    stack = list(ends)
    while stack:
        i = stack.pop()
        if i not in needed:
            needed.add(i)
            stack.extend(nodes[i].inputs)
    region = live & needed
    if 0 not in region:
        raise UnsupportedLayerError(f"{who}: the model's output does not depend on its input")
    if several and 0 in ends:
        raise UnsupportedLayerError(
            f"{who}: one of the model's outputs is its input; a spec returns its parts' outputs"
        )
    users = {i: [u for u in us if u in region] for i, us in users.items()}
    keys = [_key(nodes, i, names, who) for i in ends] if several else None
    last = max(ends)
    taken = set(names.used)
    try:
        if region - _ancestors(nodes, last, -1):
            raise _NotNested(f"{who}: the outputs branch off")
        items = _chain(nodes, users, 0, last, region, names, who)
    except _NotNested:
        names.used = taken  # (the names the nested attempt took are free again)
        items = _flat(nodes, region, last, names, who)
    if not items:  # the model returns its input
        items = [Identity(name=names.take("identity"))]
    return Sequential(*items, input_shape=input_shape, outputs=keys)


def _alive(nodes: list[Raw], i: int) -> int:
    while not nodes[i].alive:  # folded away: its input computes the same tensor now
        i = nodes[i].inputs[0]
    return i


def _key(nodes: list[Raw], i: int, names: Names, who: str) -> str:
    """The key of node ``i`` in the spec (an output's: the model returns it by that key)."""
    node = nodes[i]
    if node.op == "layer":
        if node.layer.name is None:
            raise UnsupportedLayerError(f"{who}: {node.where()} has no name to be returned by")
        return str(node.layer.name)
    if not node.owned:
        node.name, node.owned = names.take(node.name), True
    return node.name


class _NotNested(UnsupportedLayerError):
    """The graph is not a nesting of fork-join blocks (written flat, with references, instead)."""


def _flat(nodes: list[Raw], region: set[int], output: int, names: Names, who: str) -> list[Any]:
    """The DAG as one chain in topological order: a part that does not read the part before it starts with a
    ``Use`` of the part it reads (``Use()``: the input), and a join's branches are ``Use`` references."""
    ref: dict[int, str | None] = {0: None}
    items: list[Any] = []
    current = 0
    for i in sorted(region):
        node = nodes[i]
        if i == 0:
            continue
        if node.op == "layer":
            if node.inputs[0] != current:
                items.append(Use(ref[node.inputs[0]]))
            if node.layer.name is None:  # (importers name every layer; a reference needs it)
                raise UnsupportedLayerError(f"{who}: {node.where()} has no name to be referred to")
            items.append(node.layer)
            ref[i] = node.layer.name
        else:
            join = _combinator(node, [Use(ref[k]) for k in node.inputs], names)
            items.append(join)
            ref[i] = join.name
        current = i
    if current != output:
        items.append(Use(ref[output]))
    return items


def _ancestors(nodes: list[Raw], end: int, floor: int) -> set[int]:
    out: set[int] = set()
    stack = [end]
    while stack:
        i = stack.pop()
        if i in out or i <= floor:
            continue
        out.add(i)
        stack.extend(nodes[i].inputs)
    return out


def _find_join(users: dict[int, list[int]], cur: int, region: set[int]) -> int | None:
    """The first node after ``cur`` that every path from ``cur`` passes through: scanning in topological
    order, the first node that no edge from an earlier node (from ``cur`` on) jumps over."""
    reach = max((u for u in users[cur] if u in region), default=None)
    if reach is None:
        return None
    for k in sorted(i for i in region if i > cur):
        if k == reach:
            return k
        reach = max([reach, *(u for u in users[k] if u in region)])
    return None


def _chain(
    nodes: list[Raw], users: dict[int, list[int]], start: int, end: int, region: set[int], names: Names, who: str
) -> list[Any]:
    items: list[Any] = []
    cur = start
    while cur != end:
        nxt = [u for u in users[cur] if u in region]
        if not nxt:
            raise UnsupportedLayerError(f"{who}: {nodes[cur].where()} does not lead to the model's output")
        if len(nxt) == 1 and all(i == cur for i in nodes[nxt[0]].inputs):
            node = nodes[nxt[0]]
            if node.op == "layer":
                items.append(node.layer)
            else:  # a join of one tensor with itself: x + x, x * x, cat([x, x])
                items.append(_combinator(node, [_identity(node, k, names) for k in range(len(node.inputs))], names))
            cur = nxt[0]
            continue
        join = _find_join(users, cur, region)
        if join is None or nodes[join].op not in JOINS:
            where = nodes[cur].where() if join is None else nodes[join].where()
            raise _NotNested(
                f"{who}: the paths leaving {nodes[cur].where()} do not meet again in an add, multiply or concatenation "
                f"(at {where}); this graph is not a nesting of fork-join blocks"
            )
        branches: list[Any] = []
        taken: dict[int, int] = {}  # node -> the join input whose branch holds it
        for k, src in enumerate(nodes[join].inputs):
            if src == cur:
                branches.append(_identity(nodes[join], k, names))
                continue
            if src in nodes[join].inputs[:k]:
                raise _NotNested(
                    f"{who}: {nodes[join].where()} reads {nodes[src].where()} twice; a fork-join spec would have to "
                    "compute it twice with shared weights"
                )
            members = _ancestors(nodes, src, cur) & region
            for m in members:
                if m in taken and taken[m] != src:
                    raise _NotNested(
                        f"{who}: {nodes[m].where()} feeds two branches that meet at {nodes[join].where()}; a tensor "
                        "shared between branches of one join is not supported"
                    )
                taken[m] = src
            sub = _chain(nodes, users, cur, src, members | {cur}, names, who)
            branches.append(sub[0] if len(sub) == 1 and not isinstance(sub[0], Sequential) else Sequential(*sub))
        items.append(_combinator(nodes[join], branches, names))
        cur = join
    return items


def _identity(join: Raw, k: int, names: Names) -> Layer:
    return Identity(name=names.take(f"{join.name}.skip{k}"))


def _combinator(node: Raw, branches: list[Any], names: Names) -> Any:
    cls = JOINS[node.op]
    name = node.name if node.owned else names.take(node.name)
    if cls is Concat:
        return Concat(*branches, dim=node.dim, name=name)
    if cls is DotProductAttention:
        heads, scale, *rest = node.payload  # (heads, scale[, dropout[, its learned bias's fields]])
        dropout, fields = (rest + [0.0, {}][len(rest) :])[:2]
        return DotProductAttention(*branches, num_heads=heads, scale=scale, dropout=dropout, name=name, **fields)
    return cls(*branches, name=name)
