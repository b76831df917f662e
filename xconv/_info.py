"""What shape inference knows about one node of a spec's graph (:class:`LayerInfo`), and the context a kind's
shape rule is given. Shapes are logical, without batch: (C, H, W) for maps, (L, E) for tokens (L tokens of E
features, the same layout in every framework), (F,) for features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._layer import Layer
from ._normalize import Padding
from .errors import SpecError
from .layout import source_blocks

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    """What shape inference knows about one layer of a spec.

    >>> import xconv as xc
    >>> info = xc.infer(xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8)))[0]
    >>> info.key, info.input_shape, info.output_shape, info.params
    ('0', (3, 8, 8), (8, 6, 6), {'weight': (8, 3, 3, 3), 'bias': (8,)})
    """

    index: int
    #: the layer with inferred fields filled in (``Linear.in_features``)
    layer: Layer
    input_shape: Shape
    output_shape: Shape
    #: canonical state name (without the index prefix) -> shape, in state_dict order: parameters and buffers
    params: dict[str, Shape]
    #: Conv2d: the explicit ((top, bottom), (left, right)) padding for this input size. MaxPool2d / AvgPool2d:
    #: the padding on each side plus, bottom / right, what ceil_mode's last window reaches beyond it
    padding: Padding | None = None
    #: for a flat input: the (C, H, W) map it was flattened from (through elementwise layers), else None
    input_source: Shape | None = None
    #: the same for the output
    output_source: Shape | None = None
    #: names in ``params`` that are buffers (BatchNorm running statistics), not trainable parameters
    buffers: tuple[str, ...] = ()
    #: names in ``buffers`` that hold fixed integer data the layer determines (a window attention's relative
    #: position index, where the source keeps it in its state_dict): their one value is the kind's
    #: (:func:`xconv.kinds.fixed_values`), checked where weights come in, never a Keras variable
    fixed: tuple[str, ...] = ()
    #: the prefix of this node's canonical weight keys, its torch module path and (unnamed: with the kind in
    #: front) its Keras layer name: the layer's ``name``, else its positional path ("4", "1.0.2")
    key: str = ""
    #: the positional path (index in its Sequential, branch index in a combinator, joined by dots)
    path: str = ""
    #: indices of the nodes whose outputs this node reads (-1: the model's input), in order
    inputs: tuple[int, ...] = ()
    #: the shapes of those inputs (``input_shape`` is the first)
    input_shapes: tuple[Shape, ...] = ()
    #: a spec with ``outputs``: this node's place in the list the model returns (None: not returned). A spec
    #: without them returns its last node's output alone, and no node has a place
    output: int | None = None

    @property
    def kind(self) -> str:
        return self.layer.kind

    @property
    def name(self) -> str | None:
        return self.layer.name

    @property
    def is_join(self) -> bool:
        """Whether this node joins branches (Add, Concat, Multiply) rather than applying a layer."""
        return not isinstance(self.layer, Layer)  # a Combinator

    @property
    def label(self) -> str:
        """How messages name the node: ``layer3.1.bn2 (BatchNorm2d)``, ``4 (Conv2d)``."""
        return f"{self.key} ({self.kind})"

    @property
    def param_count(self) -> int:
        """Trainable parameters (buffers not counted)."""
        return sum(math.prod(s) for n, s in self.params.items() if n not in self.buffers)

    @property
    def trainable(self) -> tuple[str, ...]:
        return tuple(n for n in self.params if n not in self.buffers)


class _Ctx:
    def __init__(self, index: int, layer: Layer, shape: Shape, key: str | None = None) -> None:
        self.index, self.layer, self.shape = index, layer, shape
        self.key = str(index) if key is None else key

    def error(self, message: str) -> SpecError:
        return SpecError(f"layer {self.key} ({self.layer.kind}): {message}")

    def need_map(self) -> tuple[int, int, int]:
        if len(self.shape) == 2:
            raise self.error(f"expects a (C, H, W) input but its input is a token tensor {self.shape}")
        if len(self.shape) != 3:
            raise self.error(
                f"expects a (C, H, W) input but its input is flat with {self.shape[0]} features; "
                f"a {self.layer.kind} cannot follow Flatten or Linear"
            )
        c, h, w = self.shape
        return c, h, w


def _describe(shape: Shape, source: Any) -> str:
    if source is None:
        return str(shape[0])
    return f"{' + '.join('*'.join(map(str, b)) for b in source_blocks(source))}={shape[0]}"


def elementwise(ctx: _Ctx, layer: Layer, source: Shape | None) -> LayerInfo:
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {}, input_source=source, output_source=source)
