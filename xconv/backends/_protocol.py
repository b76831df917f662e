"""What a backend provides, as typing Protocols (checked by the backend tests against every backend module)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..shapes import LayerInfo
from ..spec import Sequential

__all__ = ["Backend", "FastTransfer", "Importer", "Trainable"]

Graph = list[LayerInfo]


@runtime_checkable
class Backend(Protocol):
    """A framework (or the numpy reference): native models from a spec's graph, weights in canonical form.

    Models take the logical layout the framework uses natively; ``forward`` and ``trace`` take and return
    xconv's logical layout (NCHW, or (N, F) with features in C,H,W order)."""

    NAME: str

    def owns_model(self, obj: Any) -> bool: ...

    def owns_tensor(self, obj: Any) -> bool: ...

    def build(self, spec: Sequential, infos: Graph, weights: dict[str, np.ndarray], dtype: str) -> Any: ...

    def get_weights(self, model: Any, infos: Graph) -> dict[str, np.ndarray]: ...

    def set_weights(self, model: Any, infos: Graph, weights: dict[str, np.ndarray]) -> None: ...

    def spec_of(self, model: Any) -> Sequential | None: ...

    def dtype_of(self, model: Any) -> str: ...

    def permute(self, x: Any, perm: tuple[int, ...]) -> Any: ...

    def forward(self, model: Any, x: np.ndarray, **side: np.ndarray | None) -> np.ndarray:
        """Inference; ``side``: a text encoder's ``padding_mask`` and ``token_types`` (None: left out)."""
        ...

    def trace(
        self,
        model: Any,
        x: np.ndarray,
        upstream: np.ndarray,
        training: bool = False,
        **side: np.ndarray | None,
    ) -> tuple[list[np.ndarray], np.ndarray | None, dict[str, np.ndarray]]:
        """Every graph node's output, d loss / d input and d loss / d weights for loss = sum(output * upstream)."""
        ...


@runtime_checkable
class Trainable(Protocol):
    """A backend whose models train with the framework's native optimizer (torch, Keras)."""

    def train(
        self,
        model: Any,
        batches: Iterable[tuple[Any, ...]],
        optimizer: dict[str, Any],
        on_step: Callable[[int, float], None] | None = None,
    ) -> np.ndarray: ...


@runtime_checkable
class FastTransfer(Protocol):
    """A backend that hands canonical weights over as framework tensors (DLPack), for ``transfer_weights``."""

    def float_bytes(self, model: Any, infos: Graph) -> int: ...

    def export_tensors(self, model: Any, infos: Graph) -> dict[str, Any]: ...

    def import_tensors(self, model: Any, infos: Graph, arrays: dict[str, Any]) -> None: ...


@runtime_checkable
class Importer(Protocol):
    """A backend that imports hand-written models of its framework (through a front-end in xconv.importers)."""

    def import_model(self, model: Any, *args: Any) -> tuple[Sequential, dict[str, np.ndarray]]: ...
