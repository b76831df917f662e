"""The Sequential spec and its JSON form."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from ..errors import SpecError
from ._layers import LAYER_TYPES, Layer
from ._normalize import as_shape

__all__ = ["Sequential", "from_dict", "FORMAT", "FORMAT_VERSION"]

FORMAT = "xconv.spec"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, init=False)
class Sequential:
    """A chain of layer specs, optionally with its logical input shape ``(C, H, W)`` (or ``(features,)``).

    Nested ``Sequential`` specs are flattened. The input shape may instead be given to ``build`` or
    ``summary``.

    >>> from xconv import Conv2d, ReLU, Flatten, Linear
    >>> spec = Sequential(Conv2d(3, 8, 3, padding=1), ReLU(), Flatten(), Linear(None, 10), input_shape=(3, 8, 8))
    >>> len(spec)
    4
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] | None

    def __init__(self, *layers: Layer | "Sequential", input_shape: Iterable[int] | None = None) -> None:
        flat: list[Layer] = []
        for position, layer in enumerate(layers):
            if isinstance(layer, Sequential):
                if layer.input_shape is not None and position > 0:
                    raise SpecError(
                        f"Sequential: a nested Sequential at position {position} has input_shape="
                        f"{layer.input_shape}; only the first one may carry an input shape"
                    )
                if layer.input_shape is not None and input_shape is None:
                    input_shape = layer.input_shape
                flat.extend(layer.layers)
            elif isinstance(layer, Layer):
                flat.append(layer)
            else:
                raise SpecError(
                    f"Sequential: position {position} must be a layer spec such as xconv.Conv2d(...). "
                    f"Received: {layer!r} of type {type(layer).__name__}"
                )
        object.__setattr__(self, "layers", tuple(flat))
        shape = None if input_shape is None else as_shape("Sequential", tuple(input_shape))
        object.__setattr__(self, "input_shape", shape)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __repr__(self) -> str:
        inner = "".join(f"\n    {layer!r}," for layer in self.layers)
        shape = f"\n    input_shape={self.input_shape!r},\n" if self.input_shape is not None else "\n"
        return f"Sequential({inner}{shape})"

    def with_input_shape(self, input_shape: Iterable[int] | None) -> "Sequential":
        """The same layers with ``input_shape`` replaced (``None`` keeps the current one)."""
        if input_shape is None:
            return self
        return Sequential(*self.layers, input_shape=tuple(input_shape))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``xconv.from_dict`` turns it back into an equal spec."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "layers": [layer.to_dict() for layer in self.layers],
        }


def from_dict(data: Mapping[str, Any]) -> Sequential:
    """Rebuild a spec from ``Sequential.to_dict()`` output (after a JSON round trip too)."""
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise SpecError(f"from_dict: expected a dict with format={FORMAT!r}. Received: {str(data)[:200]}")
    version = data.get("version")
    if version != FORMAT_VERSION:
        raise SpecError(f"from_dict: unsupported spec format version {version!r}; this xconv reads {FORMAT_VERSION}")
    layers_data = data.get("layers")
    if not isinstance(layers_data, list):
        raise SpecError(f"from_dict: `layers` must be a list. Received: {layers_data!r}")
    layers = []
    for index, item in enumerate(layers_data):
        if not isinstance(item, Mapping) or item.get("kind") not in LAYER_TYPES:
            known = ", ".join(sorted(LAYER_TYPES))
            raise SpecError(f"from_dict: layer {index} has an unknown kind; known kinds: {known}. Received: {item!r}")
        fields = {k: v for k, v in item.items() if k != "kind"}
        cls = LAYER_TYPES[item["kind"]]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise SpecError(f"from_dict: layer {index} ({item['kind']}) has unknown fields {unknown}")
        try:
            layers.append(cls(**fields))
        except SpecError as e:
            raise SpecError(f"from_dict: layer {index}: {e}") from None
    return Sequential(*layers, input_shape=data.get("input_shape"))
