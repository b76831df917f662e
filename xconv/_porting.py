"""Importing hand-written models and porting them to the other framework."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._api import build_with_weights, get_weights, spec_of
from ._compare import TOLERANCE, max_rel_diff
from .backends import backend_of_model, canonical_name, get_backend
from .errors import PortError, XconvError
from .spec import Sequential
from .weights import weights_dtype

__all__ = ["from_keras", "from_torch", "port"]


def from_torch(
    model: Any, input_shape: tuple[int, ...], *, return_weights: bool = False, output: str | None = None
) -> Any:
    """The spec of a hand-written torch module, traced with ``torch.fx``: chains, residual additions, gating
    products and concatenations (a nesting of fork-join blocks), every layer named by its module's qualified
    name so that the canonical weights have exactly the keys of ``model.state_dict()``; ``nn.ZeroPad2d`` folds
    into the conv after it where exact. With ``return_weights=True``, ``(spec, canonical weights)``.
    Unsupported operations raise :class:`UnsupportedLayerError` naming the operation and what is supported.
    A model that returns a dict of tensors (torchvision's segmentation models return ``{"out": ...}``) is
    imported for its entry ``output``; without ``output`` the dict must hold exactly one entry.

    >>> spec, weights = from_torch(torchvision.models.resnet18().eval(), (3, 224, 224), return_weights=True)  # doctest: +SKIP
    """
    from .spec._normalize import as_shape

    backend = get_backend("torch")
    if not backend.owns_model(model):
        raise XconvError(f"from_torch: expected a torch.nn.Module. Received: {type(model).__name__}")
    shape = as_shape("from_torch", input_shape)
    _check_float_params(model, "from_torch")
    if output is not None and not isinstance(output, str):
        raise XconvError(f"from_torch: `output` must be the name of a dict entry. Received: {output!r}")
    spec, weights = backend.import_model(model, shape, output)
    return (spec, weights) if return_weights else spec


def _check_float_params(model: Any, who: str) -> None:
    """xconv models are float32 or float64: other precisions (float16, bfloat16) are refused, by name."""
    import itertools

    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        kind = str(t.dtype).replace("torch.", "")
        if t.is_floating_point() and kind not in ("float32", "float64"):
            raise XconvError(
                f"{who}: {name!r} is {kind}; xconv models are float32 or float64 (call model.float() "
                "or model.double() first)"
            )


def from_keras(model: Any, *, return_weights: bool = False) -> Any:
    """The spec of a Keras ``Sequential`` or functional model (input shape from the model), layers named by their
    Keras names: ``Add``, ``Multiply`` and ``Concatenate`` become combinators, a fused activation its own layer,
    ``ZeroPadding2D`` folds into the next 'valid' conv where exact. With ``return_weights=True``,
    ``(spec, canonical weights)``. Unsupported layers raise :class:`UnsupportedLayerError` naming the layer.

    >>> import keras, xconv as xc
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="conv")])
    >>> [layer.kind for layer in xc.from_keras(model).layers]
    ['Conv2d', 'ReLU']
    """
    backend = get_backend("tf")
    if not backend.owns_model(model):
        raise XconvError(f"from_keras: expected a keras.Model. Received: {type(model).__name__}")
    for v in model.weights:
        if "float" in str(v.dtype) and str(v.dtype) not in ("float32", "float64"):
            raise XconvError(f"from_keras: {v.path!r} is {v.dtype}; xconv models are float32 or float64")
    spec, weights = backend.import_model(model)
    return (spec, weights) if return_weights else spec


def _import(
    model: Any, input_shape: tuple[int, ...] | None, output: str | None = None
) -> tuple[str, Sequential, dict[str, np.ndarray]]:
    backend = backend_of_model(model)
    if backend is None:
        raise XconvError(f"port: expected a torch.nn.Module or a keras.Model. Received: {type(model).__name__}")
    if backend.spec_of(model) is not None:  # built by xconv
        return backend.NAME, spec_of(model), get_weights(model)
    if backend.NAME == "torch":
        if input_shape is None:
            raise XconvError("port: a torch model needs input_shape=(C, H, W) (torch modules do not record it)")
        spec, weights = from_torch(model, input_shape, return_weights=True, output=output)
    else:
        spec, weights = from_keras(model, return_weights=True)
    return backend.NAME, spec, weights


def port(
    model: Any,
    to: str,
    input_shape: tuple[int, ...] | None = None,
    verify: bool = True,
    *,
    seed: int = 0,
    output: str | None = None,
) -> Any:
    """Import ``model`` (torch or Keras, hand-written or built by xconv), build the same spec in framework
    ``to`` and copy the weights. With ``verify`` (the default), one random batch (standard normal, batch 2,
    drawn from ``seed``) goes through both models and a :class:`PortError` is raised when
    max |a - b| / max(1, max |a|) exceeds 1e-5 (float32) or 1e-10 (float64), or anything is NaN/Inf. A deep
    float32 network's own rounding can exceed 1e-5; beyond it, both models are compared with the spec computed in
    float64 (same weights) and each may be off by up to ten times the rounding error of an xconv float32 build
    of that spec, measured on the same batch; the error message gives the three distances.

    ``output``: for a torch model that returns a dict, the entry to port (see :func:`from_torch`).

    >>> km = port(torch_model, to="tf", input_shape=(3, 32, 32))   # doctest: +SKIP
    """
    target = canonical_name(to)
    source, spec, weights = _import(model, input_shape, output)
    if output is not None and (source != "torch" or get_backend(source).spec_of(model) is not None):
        raise XconvError("port: `output` chooses an entry of a hand-written torch model's returned dict")
    dtype = weights_dtype(weights)
    out = build_with_weights(spec, target, weights, dtype=dtype)  # no initial weights drawn and overwritten
    if verify:
        x = np.random.default_rng(seed).standard_normal((2, *spec.input_shape)).astype(dtype)  # type: ignore[misc]
        a = (
            get_backend(source).forward(model, x, output)
            if output is not None
            else get_backend(source).forward(model, x)
        )
        b = get_backend(target).forward(out, x)
        err = max_rel_diff(a, b)
        if not err <= TOLERANCE[dtype]:
            detail = _rounding_check(spec, weights, x, a, b, (source, target)) if dtype == "float32" else None
            if detail is None or not detail[0]:
                raise PortError(
                    f"port: the {target} model differs from the {source} model by {err:.3g} relative "
                    f"(tolerance {TOLERANCE[dtype]:g}, {dtype}) on a random batch"
                    + ("" if detail is None else f"; {detail[1]}")
                    + f"; spec: {_short(spec)}"
                )
    return out


#: how far from the float64 reference the two float32 models may be, in units of an xconv float32 build's own
#: rounding error. Both compute the same function with float32 sums in other orders and kernels: on twelve
#: keras.applications models with logits (64x64 inputs) the Keras model's error was 0.8 to 2.9 times the torch
#: build's, so 10 leaves room without hiding a mapping error, which is not rounding-sized.
ROUNDING_FACTOR = 10.0


def _rounding_check(
    spec: Sequential, weights: dict[str, Any], x: np.ndarray, a: np.ndarray, b: np.ndarray, names: tuple[str, str]
) -> tuple[bool, str]:
    """For a float32 port beyond the fixed tolerance: a deep network's own float32 rounding can exceed it. The
    spec is built again with the same weights in float64 (the reference) and in float32 (its rounding error,
    measured). The port passes when both the source model ``a`` and the ported model ``b`` are within
    ``ROUNDING_FACTOR`` times that rounding error of the reference (or within the fixed tolerance). A mapping
    error on either side is a distance from the reference that rounding does not explain, so it still fails."""
    where = "torch" if "torch" in names else "numpy"
    backend = get_backend(where)
    # (build_with_weights casts the weights to the model's dtype)
    exact = backend.forward(build_with_weights(spec, where, weights, dtype="float64"), x.astype(np.float64))
    rounding = max_rel_diff(exact, backend.forward(build_with_weights(spec, where, weights, dtype="float32"), x))
    bound = max(TOLERANCE["float32"], ROUNDING_FACTOR * rounding)
    off_a, off_b = max_rel_diff(exact, a), max_rel_diff(exact, b)
    return max(off_a, off_b) <= bound, (
        f"against the spec computed in float64 the {names[0]} model is {off_a:.3g} off, the ported "
        f"{names[1]} model {off_b:.3g}, and an xconv float32 build {rounding:.3g} (rounding alone; "
        f"allowed: {ROUNDING_FACTOR:g} times that)"
    )


_SHORT_LINES = 40


def _short(spec: Sequential, lines: int = _SHORT_LINES) -> str:
    """The spec's repr, its first ``lines`` lines when longer (a zoo model's runs to hundreds)."""
    text = repr(spec).splitlines()
    if len(text) <= lines:
        return "\n".join(text)
    return (
        "\n".join(text[:lines]) + f"\n    ... ({len(text) - lines} more lines: xconv.summary(spec) lists every layer)"
    )
