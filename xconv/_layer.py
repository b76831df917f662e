"""The base class of layer specs, and the table of every layer kind by name (filled as kinds are defined)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._normalize import as_keys, as_name, compact

#: kind name -> layer class, filled as classes are defined; used by ``from_dict``.
LAYER_TYPES: dict[str, type[Layer]] = {}


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class Layer:
    """Base class of layer specs. Subclasses are frozen dataclasses whose fields hold normalised values.

    >>> from xconv import Conv2d
    >>> layer = Conv2d(3, 8, 3, name="stem")
    >>> layer.kind, layer.to_dict()["kernel_size"]
    ('Conv2d', [3, 3])
    """

    #: fields printed positionally by ``repr`` (the required arguments)
    _positional: ClassVar[tuple[str, ...]] = ()
    #: field -> the field whose value it defaults to (``MaxPool2d.stride`` defaults to ``kernel_size``)
    _defaults_from: ClassVar[dict[str, str]] = {}  # read-only; a ClassVar, so no dataclass field

    #: optional name (a non-empty string without "/"; dots allowed): the layer's key in canonical weights
    #: (``"{name}.weight"``) and its Keras layer name; unnamed layers are keyed by their positional path
    name: str | None = field(default=None, kw_only=True)
    #: the source's own keys of weights that are not ``"{key}.{param}"``, as (param, key) pairs: a parameter of
    #: the model's root used through ``F.conv2d`` (``"w"``), a layer scale called ``gamma`` of shape (C,). The
    #: built models keep the canonical keys; ``set_weights`` also takes these (a shape that differs from the
    #: canonical one only by axes of length 1 too), and ``summary`` lists them. A parameter may name several
    #: keys, whose arrays are its parts, concatenated along the first axis in that order: Hugging Face's
    #: separate query, key and value weights of a fused ``in_proj_weight``
    keys: tuple[tuple[str, str | tuple[str, ...]], ...] = field(default=(), kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        LAYER_TYPES[cls.__name__] = cls

    def __post_init__(self) -> None:
        self._set("name", as_name(self.kind, self.name))
        self._set("keys", as_keys(self.kind, self.keys))
        self._validate()

    def _validate(self) -> None:
        """Normalise and check the fields (subclasses)."""

    @property
    def kind(self) -> str:
        return type(self).__name__

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"kind": ..., field: value, ...}`` with tuples as lists."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            if f.name != "keys" or self.keys:
                out[f.name] = dict(self.keys) if f.name == "keys" else _jsonable(getattr(self, f.name))
        return out

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "keys"):
                continue
            if f.name in self._positional:
                parts.append(repr(compact(value)))
            elif f.name in self._defaults_from and value == getattr(self, self._defaults_from[f.name]):
                continue
            elif value != f.default:
                parts.append(f"{f.name}={compact(value)!r}")
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        if self.keys:
            parts.append(f"keys={dict(self.keys)!r}")
        return f"{self.kind}({', '.join(parts)})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
