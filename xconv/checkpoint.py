"""xconv checkpoints: one ``.safetensors`` file holding canonical weights, with the spec (JSON) and a format
version in its metadata. Nothing in a file is ever executed: safetensors holds raw tensors and JSON text."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping

import numpy as np

from . import shapes
from .errors import XconvError
from .spec import Sequential, from_dict
from .weights import check_weights, weights_dtype

__all__ = ["save", "load", "load_model", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "xconv.checkpoint"
CHECKPOINT_VERSION = "1"


def _safetensors() -> Any:
    try:
        import safetensors.numpy
    except ImportError as e:  # pragma: no cover - a dependency of xconv
        raise XconvError("xconv checkpoints need the safetensors package: pip install safetensors") from e
    return safetensors


def save(path: str | os.PathLike[str], model_or_spec: Any, weights: Mapping[str, Any] | None = None) -> None:
    """Write ``path`` (a ``.safetensors`` file): canonical weights, plus the spec and format version in its
    metadata. ``save(path, model)`` takes a model built by xconv (either framework);
    ``save(path, spec, weights)`` takes a spec with its input shape and canonical weights.

    Written to a temporary file in the same folder and renamed into place, so an interrupted save never
    leaves a half-written file where the old one was. The file also loads with
    ``safetensors.numpy.load_file`` and, for torch users, straight into the built model's ``load_state_dict``.
    """
    from ._api import get_weights, spec_of

    if isinstance(model_or_spec, Sequential):
        if weights is None:
            raise XconvError("save(path, spec, weights): weights are required when saving a spec")
        spec, infos = shapes.resolve(model_or_spec)
        arrays = check_weights(infos, weights, weights_dtype(weights))
    else:
        if weights is not None:
            raise XconvError("save(path, model): pass weights only together with a spec")
        spec = spec_of(model_or_spec)
        arrays = get_weights(model_or_spec)
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "spec": json.dumps(spec.to_dict()),
    }
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".xconv-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        _safetensors().numpy.save_file({k: np.require(v, requirements="C") for k, v in arrays.items()}, tmp, metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike[str]) -> tuple[Sequential, dict[str, np.ndarray]]:
    """Read an xconv checkpoint: ``(spec, weights)``. A missing, truncated, corrupted, non-xconv or
    inconsistent file raises :class:`XconvError` saying why."""
    target = os.fspath(path)
    st = _safetensors()
    try:
        with st.safe_open(target, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise XconvError(f"no such checkpoint: {target}") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for bad files
        raise XconvError(f"{target} is not a readable .safetensors file ({e})") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise XconvError(f"{target} is a .safetensors file but not an xconv checkpoint (no xconv metadata)")
    if metadata.get("format_version") != CHECKPOINT_VERSION:
        raise XconvError(
            f"{target}: checkpoint format version {metadata.get('format_version')!r}; this xconv reads "
            f"{CHECKPOINT_VERSION!r}"
        )
    try:
        spec = from_dict(json.loads(metadata.get("spec", "")))
        infos = shapes.infer(spec)
    except (ValueError, TypeError) as e:
        raise XconvError(f"{target}: the spec in the checkpoint is invalid: {e}") from None
    try:
        weights = check_weights(infos, tensors, weights_dtype(tensors))
    except XconvError as e:
        raise XconvError(f"{target}: {e}") from None
    return spec, weights


def load_model(path: str | os.PathLike[str], backend: str, *, dtype: Any = None) -> Any:
    """Build a native model for ``backend`` from a checkpoint and fill in its weights (``dtype`` defaults to
    the checkpoint's)."""
    from ._api import build, set_weights

    spec, weights = load(path)
    model = build(spec, backend, dtype=dtype or weights_dtype(weights))
    set_weights(model, weights)
    return model
