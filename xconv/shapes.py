"""Shape inference: one pure function per layer kind, shared by ``summary`` and every backend.

Shapes are logical, without batch: (C, H, W) for maps, (L, E) for tokens, (F,) for features. Problems are found
here, before any framework is touched, and raise :class:`SpecError` naming the layer index and kind.
"""

from __future__ import annotations

from ._info import LayerInfo, Shape
from ._normalize import as_shape
from .errors import SpecError
from .graph import build_graph
from .spec import Sequential

__all__ = ["LayerInfo", "infer", "resolve"]


#: layer class -> its shape rule
def infer(spec: Sequential, input_shape: Shape | None = None) -> list[LayerInfo]:
    """The spec's graph: one :class:`LayerInfo` per node (layer or join) in topological order, each with its
    key, inputs, shapes and parameter shapes, for ``input_shape`` (default: the spec's own). The last node's
    output is the model's output.

    >>> import xconv as xc
    >>> spec = xc.Sequential(xc.Conv2d(3, 8, 3), xc.Flatten(), xc.Linear(None, 10), input_shape=(3, 8, 8))
    >>> [(i.kind, i.output_shape) for i in infer(spec)]
    [('Conv2d', (8, 6, 6)), ('Flatten', (288,)), ('Linear', (10,))]
    """
    return build_graph(spec, _input_shape(spec, input_shape))[0]


def resolve(spec: Sequential, input_shape: Shape | None = None) -> tuple[Sequential, list[LayerInfo]]:
    """The spec with its input shape and inferred fields filled in, and its graph (see :func:`infer`)."""
    infos, resolved = build_graph(spec, _input_shape(spec, input_shape))
    return resolved, infos


def _input_shape(spec: Sequential, input_shape: Shape | None) -> Shape:
    if not isinstance(spec, Sequential):
        raise SpecError(f"expected an xconv.Sequential spec. Received: {type(spec).__name__}")
    if input_shape is not None:
        return as_shape("input_shape", tuple(input_shape))
    if spec.input_shape is None:
        raise SpecError("the spec has no input_shape: pass input_shape=(C, H, W) here or to Sequential(...)")
    return spec.input_shape
