"""The registry of layer kinds. A kind registers itself where its spec class is defined, with its shape rule
and its numpy reference (forward and backward). What the frameworks need sits beside it, in the family's
``_torch`` and ``_keras`` modules, found by name when a backend or importer first asks: ``import xconv`` loads
no framework."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._info import LayerInfo, Shape, _Ctx
from .._layer import Layer

__all__ = ["FAMILIES", "KINDS", "Kind", "fixed_values", "framework_table", "register"]

#: (ctx, layer, the flat input's source map or None) -> the node's LayerInfo
ShapeRule = Callable[[_Ctx, Any, "Shape | None"], LayerInfo]
#: (info, params, x, mode) -> y
Forward = Callable[..., Any]
#: (info, params, x, grad of y, mode) -> (grad of x, {param: grad})
Backward = Callable[..., Any]


@dataclass(frozen=True)
class Kind:
    """One layer kind: its spec class, shape rule and numpy reference, and the package holding the rest."""

    spec: type[Layer]
    shape: ShapeRule
    forward: Forward
    backward: Backward
    #: the package of the kind's family: ``{family}._torch`` and ``{family}._keras`` hold the framework parts
    family: str
    #: whether the kind takes a token tensor (L, E): it acts on the feature axis, the last one, in every
    #: framework (the graph builder refuses a token input for the other kinds, by name)
    tokens: bool = False
    #: whether the kind reads token ids (integers): it must read the model's input, which is then integer, and
    #: only such kinds may read it
    ids: bool = False
    #: whether the kind computes token ids from token ids (RoBERTa's positions): Embeddings may read it
    makes_ids: bool = False
    #: info -> {name: value} of the node's fixed buffers (``LayerInfo.fixed``), or None: the kind has none
    fixed: Any = None

    @property
    def name(self) -> str:
        return self.spec.__name__


#: layer class -> its kind, in registration order
KINDS: dict[type[Layer], Kind] = {}
#: the family packages, in registration order
FAMILIES: list[str] = []


def register(
    spec: type[Layer],
    shape: ShapeRule,
    forward: Forward,
    backward: Backward,
    tokens: bool = False,
    ids: bool = False,
    makes_ids: bool = False,
    fixed: Any = None,
) -> None:
    """Register a layer kind (called by the module that defines ``spec``); ``tokens``: it takes token tensors;
    ``ids``: it reads token ids, the model's integer input; ``makes_ids``: it computes ids from them."""
    family = spec.__module__
    if spec in KINDS:
        raise ValueError(f"layer kind {spec.__name__} is registered twice")
    KINDS[spec] = Kind(spec, shape, forward, backward, family, tokens, ids, makes_ids, fixed)
    if family not in FAMILIES:
        FAMILIES.append(family)


def fixed_values(info: LayerInfo) -> dict[str, Any]:
    """The values of a node's fixed buffers (``LayerInfo.fixed``): numpy arrays, computed by its kind."""
    if not info.fixed:
        return {}
    if info.is_join:  # (a DotProductAttention's bias index)
        from .token._dot import bias_index

        layer: Any = info.layer
        return {"attention_bias_idxs": bias_index(layer.bias_grid, layer.bias_stride)}
    rule = KINDS[type(info.layer)].fixed
    values: dict[str, Any] = rule(info)
    return {name: values[name] for name in info.fixed}


def framework_table(framework: str, table: str) -> dict[Any, Any]:
    """The merged table ``table`` of every family's module for ``framework`` ("torch" or "keras"): builders,
    weight layouts, import patterns. Importing it loads that framework."""
    out: dict[Any, Any] = {}
    for family in FAMILIES:
        try:
            module = importlib.import_module(f"{family}._{framework}")
        except ModuleNotFoundError as e:
            if e.name != f"{family}._{framework}":
                raise
            continue
        for key, value in getattr(module, table, {}).items():
            if key in out:
                raise ValueError(f"{framework} {table}: {key!r} is claimed by two kind families")
            out[key] = value
    return out


def framework_list(framework: str, table: str) -> list[Any]:
    """The concatenated list ``table`` of every family's module for ``framework`` (predicate matchers)."""
    out: list[Any] = []
    for family in FAMILIES:
        try:
            module = importlib.import_module(f"{family}._{framework}")
        except ModuleNotFoundError as e:
            if e.name != f"{family}._{framework}":
                raise
            continue
        out.extend(getattr(module, table, []))
    return out
