"""How each kind's canonical (torch-layout) weights are laid out in Keras, from each kind family's Keras part:
the Keras backend's weight transfers and the Keras front-end both convert through here."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import layout
from .._info import LayerInfo
from ._registry import framework_table

#: layer class -> (Keras layer, info) -> {canonical state name: Keras variable}; kinds not listed keep a kernel and
#: a bias. And layer class -> (info, state name) -> its layout in Keras (see ``layout.to_keras``); unlisted: "same"
_VARIABLES: dict[type, Any] = framework_table("keras", "VARIABLES")


_LAYOUTS: dict[type, Any] = framework_table("keras", "LAYOUTS")


def layout_kind(info: LayerInfo, name: str) -> str:
    """How canonical state ``name`` of a layer is laid out in Keras (see ``layout.to_keras``)."""
    rule = _LAYOUTS.get(type(info.layer))
    return "same" if rule is None else rule(info, name)


def layout_source(info: LayerInfo, name: str) -> Any:
    """What ``layout`` needs besides the kind: the flatten source, or a depthwise conv's input channels."""
    return info.layer.in_channels if layout_kind(info, name) == "depthwise" else info.input_source  # type: ignore[attr-defined]


def to_canonical(info: LayerInfo, name: str, value: np.ndarray) -> np.ndarray:
    return layout.to_canonical(layout_kind(info, name), value, layout_source(info, name))  # type: ignore[no-any-return]


def from_canonical(info: LayerInfo, name: str, value: np.ndarray) -> np.ndarray:
    return layout.to_keras(layout_kind(info, name), value, layout_source(info, name))  # type: ignore[no-any-return]
