"""What ``port`` checks: both native models on batches that reach what a standard-normal batch does not."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._api import build_with_weights
from ._compare import TOLERANCE, VERIFY_BATCHES, max_rel_diff, output_shapes, padding_masks, probe_batches
from .backends import get_backend
from .errors import PortError
from .graph import side_inputs, token_type_count, token_vocabulary
from .shapes import infer
from .spec import Sequential

__all__ = ["ROUNDING_FACTOR", "verify_port"]

#: how far from the float64 reference the two float32 models may be, in units of an xconv float32 build's own
#: rounding error. Both compute the same function with float32 sums in other orders and kernels: on twelve
#: keras.applications models with logits (64x64 inputs) the Keras model's error was 0.8 to 2.9 times the torch
#: build's, so 10 leaves room without hiding a mapping error, which is not rounding-sized.
ROUNDING_FACTOR = 10.0

#: a text encoder's padding mask and token types, by name (None: neither)
Side = dict[str, np.ndarray] | None

#: kinds that draw random masks in training mode (and SelfAttention with dropout): with them, training-mode
#: outputs cannot be compared
_RANDOM_KINDS = ("Dropout", "StochasticDepth")


def _random_masks(spec: Sequential) -> bool:
    from .shapes import infer

    return any(
        i.kind in _RANDOM_KINDS
        and float(getattr(i.layer, "p", 0.0)) > 0
        or i.kind in ("SelfAttention", "DotProductAttention")
        and float(getattr(i.layer, "dropout", 0.0)) > 0
        for i in infer(spec)
    )


def _run(
    name: str, model: Any, x: np.ndarray, training: bool, output: str | list[str] | None = None, side: Side = None
) -> Any:
    """The native model's own output, in inference (``training=False``) or in training mode, with its state
    (modes, buffers, Keras moving statistics) as it was before the call. Each model gets its own copy of the
    batch: a torch model that writes into its input would otherwise change what the other model is given.
    ``side``: a text encoder's padding mask and token types (given only when not None: a model may take none)."""
    backend = get_backend(name)
    x = np.array(x, copy=True)
    extra: dict[str, Any] = {} if output is None else {"output": output}
    extra.update({k: np.array(v, copy=True) for k, v in (side or {}).items()})
    if not training:
        return backend.forward(model, x, **extra)
    return backend.forward_training(model, x, **extra)


def verify_port(
    source_model: Any,
    target_model: Any,
    spec: Sequential,
    weights: dict[str, Any],
    names: tuple[str, str],
    dtype: str,
    seed: int,
    output: str | list[str] | None = None,
    source_side: dict[str, int] | None = None,
    source_requires: frozenset[str] = frozenset(),
) -> None:
    """``port``'s check (see :func:`xconv.port`): raises :class:`PortError` naming the batch, the distance and
    which side is off. ``source_side``: what the source model takes beside its token ids, as its user said or
    its inputs show (``"padding_mask"``, and ``"token_types"`` with the number of types to draw below): it is
    given them even where the spec reads none, so a spec that lost a reader differs from it. Those it requires
    (``source_requires``) it is given where the others are left out: all ones for a mask, zeros for types."""
    source, target = names
    infos = infer(spec)
    groups = probe_batches(tuple(spec.input_shape or ()), dtype, seed, token_vocabulary(infos))
    x = np.concatenate([g for _, g in groups])
    reads = side_inputs(infos)
    taken = {**(source_side or {}), **{name: token_type_count(infos) or 0 for name in reads}}
    if taken:  # padded sequences of every length and random token types, then the same ids with neither
        side = {"padding_mask": padding_masks(len(x), x.shape[1])} if "padding_mask" in taken else {}
        if "token_types" in taken:
            side["token_types"] = np.random.default_rng(seed + 1).integers(0, max(1, taken["token_types"]), x.shape)
        read = {k: v for k, v in side.items() if k in reads}
        a, b = _run(source, source_model, x, False, output, side), _run(target, target_model, x, False, None, read)
        given = " and ".join({"padding_mask": "padding", "token_types": "token types"}[k] for k in side)
        start = 0
        for label, g in groups:
            part = slice(start, start + len(g))
            start += len(g)
            sided = {k: v[part] for k, v in read.items()}
            _compare(
                spec, weights, g, _rows(a, part), _rows(b, part), names, dtype, f"{label} with {given}", False, sided
            )
    neutral = {"padding_mask": np.ones(x.shape, dtype=np.int64), "token_types": np.zeros(x.shape, dtype=np.int64)}
    plain = {k: v for k, v in neutral.items() if k in source_requires}
    a, b = _run(source, source_model, x, False, output, plain), _run(target, target_model, x, False)
    start = 0
    for label, g in groups:
        part = slice(start, start + len(g))
        start += len(g)
        _compare(spec, weights, g, _rows(a, part), _rows(b, part), names, dtype, label, training=False)
    train = (source == "torch" and bool(source_model.training)) or source == "tf"
    if train and not _random_masks(spec):
        # BatchNorm on batch statistics (two samples): a torch source in training mode, or a Keras source, which
        # fit() calls with training=True; frozen layers must stay frozen on the other side
        g = groups[0][1]
        a = _run(source, source_model, g, True, output, {k: v[: len(g)] for k, v in plain.items()})
        b = _run(target, target_model, g, True)
        _compare(spec, weights, g, a, b, names, dtype, f"{VERIFY_BATCHES[0]} in training mode", training=True)


def _rows(y: Any, part: slice) -> Any:
    """The samples ``part`` of a model's output (of each output, for a model with several)."""
    return [_rows(t, part) for t in y] if isinstance(y, (list, tuple)) else y[part]


def _compare(
    spec: Sequential,
    weights: dict[str, Any],
    x: np.ndarray,
    a: Any,
    b: Any,
    names: tuple[str, str],
    dtype: str,
    label: str,
    training: bool,
    side: Side = None,
) -> None:
    source, target = names
    if output_shapes(a) != output_shapes(b) or isinstance(a, (list, tuple)) != isinstance(b, (list, tuple)):
        raise PortError(
            f"port: the ported {target} model returns {_shown(b)} where the source {source} model returns "
            f"{_shown(a)}, on {label}"
        )
    err = max_rel_diff(a, b)
    if err <= TOLERANCE[dtype]:
        return
    ok, detail, blame = _rounding_check(spec, weights, x, a, b, names, training=training, dtype=dtype, side=side)
    if ok and dtype == "float32":
        return
    raise PortError(
        f"port: the ported {target} model differs from the source {source} model by {err:.3g} relative "
        f"(tolerance {TOLERANCE[dtype]:g}, {dtype}) on {label}; {detail}{blame}; spec: {_short(spec)}"
    )


def _parts(y: Any) -> list[Any]:
    """A model's outputs as a list (one output: a list of it)."""
    return list(y) if isinstance(y, (list, tuple)) else [y]


def _shown(y: Any) -> str:
    """A model output's shape for messages: one tensor's, or the list of several's."""
    if isinstance(y, (list, tuple)):
        return f"a list of {len(y)} outputs of shapes {[tuple(np.shape(t)) for t in y]}"
    return f"shape {tuple(np.shape(y))}"


def _reference(
    spec: Sequential,
    weights: dict[str, Any],
    x: np.ndarray,
    where: str,
    dtype: str,
    training: bool,
    side: Side = None,
) -> Any:
    model = build_with_weights(spec, where, weights, dtype=dtype)  # (casts the weights to the model's dtype)
    batch = x if x.dtype.kind in "iu" else x.astype(dtype)  # (token ids stay ints)
    return _run(where, model, batch, training, None, side)


def _rounding_check(
    spec: Sequential,
    weights: dict[str, Any],
    x: np.ndarray,
    a: Any,
    b: Any,
    names: tuple[str, str],
    *,
    training: bool = False,
    dtype: str = "float32",
    side: Side = None,
) -> tuple[bool, str, str]:
    """For a port beyond the fixed tolerance: a deep float32 network's own rounding can exceed it. The spec is
    built again with the same weights in float64 (the reference) and, in float32, in the same framework (its
    rounding error, measured). A float32 port passes when both the source model ``a`` and the ported model
    ``b`` are within ``ROUNDING_FACTOR`` times that rounding error of the reference (or within the fixed
    tolerance). A mapping error on either side is a distance from the reference that rounding does not
    explain, so it still fails. Returns (passes, the distances, which side is off)."""
    where = "torch" if "torch" in names else "numpy"
    exact = _parts(_reference(spec, weights, x, where, "float64", training, side))
    own = _parts(_reference(spec, weights, x, where, "float32", training, side)) if dtype == "float32" else exact
    # each output against its own rounding: a shallow feature map may not borrow a deep one's allowance
    per = [
        (max_rel_diff(e, r) if dtype == "float32" else 0.0, max_rel_diff(e, pa), max_rel_diff(e, pb))
        for e, r, pa, pb in zip(exact, own, _parts(a), _parts(b))
    ]
    worst = max(per, key=lambda t: max(t[1], t[2]) / max(TOLERANCE[dtype], ROUNDING_FACTOR * t[0]))
    rounding, off_a, off_b = worst
    bound = max(TOLERANCE[dtype], ROUNDING_FACTOR * rounding)
    which = f" (output {per.index(worst)} of {len(per)})" if len(per) > 1 else ""
    detail = (
        f"against the spec computed in float64{which} the {names[0]} model is {off_a:.3g} off, the ported "
        f"{names[1]} model {off_b:.3g}"
    )
    if dtype == "float32":
        detail += (
            f", and an xconv float32 build {rounding:.3g} (rounding alone; allowed: {ROUNDING_FACTOR:g} times that)"
        )
    blame = ""
    if off_a > bound >= off_b:
        blame = (
            f". The {names[0]} model computes something its imported spec does not: an operation the importer "
            "could not see (Python code outside the traced graph, state the forward reads, a mode of a submodule) "
            "or one it mapped wrong; the ported model is what the spec says"
        )
    elif off_b > bound >= off_a:
        blame = f". The ported {names[1]} model does not compute its own spec: a backend error"
    return max(off_a, off_b) <= bound, detail, blame


_SHORT_LINES = 40


def _short(spec: Sequential, lines: int = _SHORT_LINES) -> str:
    """The spec's repr, its first ``lines`` lines when longer (a zoo model's runs to hundreds)."""
    text = repr(spec).splitlines()
    if len(text) <= lines:
        return "\n".join(text)
    return (
        "\n".join(text[:lines]) + f"\n    ... ({len(text) - lines} more lines: xconv.summary(spec) lists every layer)"
    )
