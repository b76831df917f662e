"""Run one spec in several backends and compare every layer's output and every gradient."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import shapes
from .._api import build, get_weights, predict, set_weights, side_arrays
from .._verify import ROUNDING_FACTOR
from ..backends import canonical_name, get_backend
from ..graph import model_outputs, returns_list, token_vocabulary
from ..kinds.token._dot import bias_of as dot_bias
from ..kinds.token._dot import carried as dot_carried
from ..kinds.token._dot import head_scale
from ..shapes import LayerInfo
from ..spec import Sequential
from ..weights import init_weights
from ._compare import max_rel_diff

__all__ = ["DEFAULT_BACKENDS", "Row", "assert_equivalent", "compare_layerwise", "default_tolerance"]

DEFAULT_BACKENDS = ("numpy", "torch", "tf")

#: Default relative tolerances (applied to max |a - b| / max(1, max |a|)):
#: outputs — float32 1e-5 (the seed ConvNet reaches ~2e-6; TF's oneDNN on/off moves results ~6e-8),
#: float64 1e-10 (correct mappings reach ~1e-15);
#: gradients — float32 1e-4 (they sum over batch and positions: ~7e-6 relative measured on the seed ConvNet),
#: float64 1e-9.
_TOLERANCES = {
    ("float32", "output"): 1e-5,
    ("float64", "output"): 1e-10,
    ("float32", "grad"): 1e-4,
    ("float64", "grad"): 1e-9,
}


def default_tolerance(dtype: str, what: str = "output") -> float:
    """The default ``rtol`` for ``dtype`` and ``what`` ('output' or 'grad').

    >>> default_tolerance("float32"), default_tolerance("float64", "grad")
    (1e-05, 1e-09)
    """
    return _TOLERANCES[(dtype, what)]


@dataclass
class Row:
    """One compared tensor: a layer's output, or the gradient of a weight or of the input."""

    layer: int | None  # graph node index (the spec index for chains); None for the input gradient
    kind: str
    what: str  # "output", "grad weight", "grad bias", "grad input"; in training also "running_var" etc.
    #: backend name -> (max abs diff vs the reference backend, relative diff)
    diffs: dict[str, tuple[float, float]] = field(default_factory=dict)
    tolerance: float = 0.0
    atol: float = 0.0
    #: the node's key: its name, or its positional path ("3", "layer1.0.bn2", "1.0.1")
    key: str = ""
    #: a float32 output or gradient beyond tolerance: the reference backend's own distance from its float64 run (its
    #: rounding, measured), and each backend's distance from that float64 run; None: not measured
    rounding: float | None = None
    from_exact: dict[str, float] = field(default_factory=dict)
    #: max(1, max |float64 value|) of a measured output or gradient
    size: float = 1.0

    @property
    def ok(self) -> bool:
        return all(self._passes(name, abs_, rel) for name, (abs_, rel) in self.diffs.items()) and all(
            np.isfinite(rel) for _, rel in self.diffs.values()
        )

    def _passes(self, name: str, abs_: float, rel: float) -> bool:
        if abs_ <= self.atol or rel <= self.tolerance:
            return True
        exact = self.from_exact.get(name)
        return self.rounding is not None and exact is not None and exact <= ROUNDING_FACTOR * self.rounding


#: the largest float32 error of the reference's own layer output or gradient, relative to max(1, its size),
#: taken for rounding (the largest measured: a window attention behind a LayerNorm of a residual stream of size
#: 550, 3e-5 of its output; an attention's in-projection gradient, 2.4e-5): a reference whose float32 path is
#: wrong errs by more, and must not excuse the other backends
ROUNDING_LIMIT = 1e-3


def lipschitz(layer: Any) -> float | None:
    """For an elementwise layer (and Softmax, Upsample and the poolings: weights >= 0 that sum to 1 per output,
    or a maximum): a bound L on
    |f'(x)|, so that an input known to absolute error e gives an output within L * e plus the layer's own
    rounding. None for other layers."""
    bounds = {
        "ReLU": 1.0,
        "Identity": 1.0,
        "Dropout": 1.0,
        "Tanh": 1.0,
        "Sigmoid": 0.25,
        "Softmax": 1.0,
        "GELU": 1.13,
        "SiLU": 1.1,
        "Hardtanh": 1.0,
        "Hardsigmoid": 1 / 6,
        "Hardswish": 1.5,
        "StochasticDepth": 1.0,
        "Narrow": 1.0,
        "ChannelShuffle": 1.0,
        "PositionEmbedding2d": 1.0,  # (x plus a table: its input's error passes through)
        "Upsample": 1.0,
        "Flatten": 1.0,  # a reordering copy: it carries its input's error and adds none
        # means and maxima of their inputs (weights >= 0 that sum to at most 1): they carry their input's error
        "AdaptiveAvgPool2d": 1.0,
        "AvgPool2d": 1.0,
        "MaxPool2d": 1.0,
        "TokenMean": 1.0,
    }
    if layer.kind == "LeakyReLU":
        return max(1.0, abs(float(layer.negative_slope)))
    if layer.kind == "ELU":
        return max(1.0, abs(float(layer.alpha)))
    if layer.kind == "Rescaling":
        return float(np.abs(np.asarray(layer.scale)).max())
    return bounds.get(layer.kind)


def _term_scale(info: Any, weights: Mapping[str, Any], layer_in: np.ndarray) -> float:
    """For a conv, transposed conv, Linear or ChannelLinear: max of |W| applied to |x| (bias left out), the size of
    the terms each output sums. Rounding in a sum scales with its terms, not with its result: 220 terms of size
    ~100 that cancel to an output near 1 carry float32 errors of ~3e-5 (measured, torch and Keras alike). A layer
    scale: max |s| |x|; a map's embedding: max |x| + |p|. 0 for other layers."""
    from ..backends import numpy_backend

    name = {
        "Conv2d": "weight",
        "Linear": "weight",
        "ChannelLinear": "weight",
        "ConvTranspose2d": "weight",
        "LayerScale": "layer_scale",
        "PositionEmbedding2d": "embedding",
    }.get(info.kind)
    if name is None:
        return 0.0
    w = np.abs(np.asarray(_as_array(weights[f"{info.key}.{name}"]), dtype=np.float64))
    x = np.abs(np.asarray(layer_in, dtype=np.float64))
    forward = numpy_backend._FORWARD[type(info.layer)]
    return float(np.abs(forward(info, {name: w}, x, None)).max(initial=0.0))


def _norm_gain(info: Any, weights: Mapping[str, Any], layer_in: np.ndarray) -> float:
    """For a LayerNorm: a bound on how much it amplifies an error of its input, max |weight| / sqrt(min var +
    eps) (its Jacobian's norm is at most 1 / sqrt(var + eps) per normalised vector). A few features that nearly
    coincide have a variance near 0, and their input's rounding comes out up to 1 / sqrt(eps) larger, in every
    framework alike. 0 for other layers."""
    if info.kind != "LayerNorm":
        return 0.0
    x = np.asarray(layer_in, dtype=np.float64)
    var = x.var(axis=-1 if len(info.input_shape) == 2 else 1)
    key = f"{info.key}.weight"
    gain = float(np.abs(np.asarray(_as_array(weights[key]), dtype=np.float64)).max()) if key in weights else 1.0
    return gain / float(np.sqrt(var.min(initial=np.inf) + info.layer.eps))


def _as_array(value: Any) -> np.ndarray:
    from ..weights import as_numpy

    return as_numpy(value)


def _inputs(spec: Sequential, infos: list[LayerInfo], x: Any, dtype: str) -> np.ndarray:
    """The batch: ``x`` (default: a standard-normal pair) in ``dtype``; for a model that takes token ids, int64
    ids (default: drawn below the vocabulary)."""
    vocabulary = token_vocabulary(infos)
    shape = tuple(spec.input_shape or ())
    if vocabulary is not None:
        ids = np.random.default_rng(0).integers(0, vocabulary, (2, *shape)) if x is None else np.asarray(x)
        if ids.dtype.kind not in "iu" or ids.size and not (0 <= ids.min() and ids.max() < vocabulary):
            raise ValueError(
                f"compare_layerwise: the model takes token ids, integers in [0, {vocabulary}). Received: "
                f"{ids.dtype} values" + (f" from {ids.min()} to {ids.max()}" if ids.size else "")
            )
        return ids.astype(np.int64)
    if x is None:
        x = np.random.default_rng(0).standard_normal((2, *shape))
    return np.asarray(x).astype(dtype)


def compare_layerwise(
    spec: Sequential,
    weights: Mapping[str, Any] | None = None,
    x: Any = None,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    dtype: str = "float64",
    grads: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    training: bool = False,
    padding_mask: Any = None,
    token_types: Any = None,
) -> list[Row]:
    """Run ``spec`` in every backend with the same ``weights`` (default: xconv's init from ``seed``) on ``x``
    (default: a standard-normal batch of 2) and compare, against the first backend, every layer's output and,
    with ``grads``, the gradients of the scalar loss ``L = sum(y * R)`` (``y`` the model output, ``R`` a fixed
    standard-normal array drawn from ``seed``) with respect to every trainable weight and to the input, all in
    canonical layout (a text encoder whose attention reads a padding mask is given ``padding_mask``, or none:
    every token counts; one whose token-type embedding reads them, ``token_types``, or none: type 0). In inference, each backend's model called as a whole is also compared with its own last
    layer's output (``"model call"``: the layers are traced one by one along the spec, so this is what shows a
    model wired otherwise). Returns one :class:`Row` per compared tensor, layers in order, then the model
    call, then the input gradient.

    ``training=False`` runs inference (torch ``eval()``, Keras ``training=False``, numpy ``eval()``);
    ``training=True`` runs one training-mode call (torch ``train()``, Keras ``training=True``): BatchNorm
    normalises with batch statistics, and its running statistics after the call are compared too. Dropout
    masks cannot match across frameworks, so a spec with Dropout(p > 0) is refused in training mode.

    >>> import xconv as xc
    >>> from xconv.testing import compare_layerwise
    >>> rows = compare_layerwise(xc.Sequential(xc.Conv2d(2, 4, 3), input_shape=(2, 6, 6)), backends=("numpy", "torch"))
    >>> [(row.kind, row.what, row.ok) for row in rows]
    [('Conv2d', 'output', True), ('Conv2d', 'grad weight', True), ('Conv2d', 'grad bias', True), ('Conv2d', 'model call', True), ('input', 'grad input', True)]
    """
    resolved, infos = shapes.resolve(spec)
    if training:
        drop = [i for i in infos if getattr(i.layer, "p", 0) > 0 or getattr(i.layer, "dropout", 0) > 0]
        if drop:
            raise ValueError(
                f"compare_layerwise(training=True): layer {drop[0].key} is {drop[0].layer!r}; dropout masks "
                "differ between frameworks, so training-mode outputs cannot be compared (use training=False, or "
                "Dropout(0))"
            )
    names = [canonical_name(b) for b in backends]
    if len(names) < 2:
        raise ValueError(f"compare_layerwise needs at least two backends. Received: {list(backends)}")
    xs = _inputs(resolved, infos, x, dtype)
    side = side_arrays(padding_mask, token_types, xs, infos, "compare_layerwise")
    w = init_weights(infos, seed, dtype) if weights is None else weights
    draw = np.random.default_rng(seed + 1)
    returned = model_outputs(infos)
    ups = [draw.standard_normal((xs.shape[0], *info.output_shape)).astype(dtype) for info in returned]
    upstream: Any = ups if returns_list(infos) else ups[0]
    runs = {}
    forwards = {}
    for name in names:
        model = build(resolved, name, dtype=dtype)
        set_weights(model, w)
        runs[name] = get_backend(name).trace(model, xs, upstream, training, **side)  # per-layer values and grads
        if training:
            runs[name] = (*runs[name], get_weights(model))
        else:  # the model's own call, as users run it (the trace runs its layers one by one, along the spec)
            forwards[name] = predict(model, xs, **side)
    ref = names[0]
    out_tol = default_tolerance(dtype, "output") if rtol is None else rtol
    grad_tol = default_tolerance(dtype, "grad") if rtol is None else rtol
    rows: list[Row] = []
    carried_of: dict[int, float] = {}  # node -> the magnitude its output's errors scale with
    for info in infos:
        row = Row(info.index, info.kind, "output", tolerance=out_tol, atol=atol or 0.0, key=info.key)
        # An elementwise layer carries its input's error: an input of magnitude m known to rtol * m comes out
        # within L * rtol * m whatever the output's own magnitude (tanh of values near 1e3 is of order 1).
        # A conv or Linear rounds at the size of the terms it sums, |W| |x|, even where they cancel. A LayerNorm
        # amplifies its input's error by up to its gain over sqrt(var + eps). A join carries its inputs' errors (a
        # product scaled by the other factors' size). Each passes on what its input carries: x - mean(x) of a
        # constant map is near 0 but known only to the rounding of values of the constant's size, and a conv
        # after it sums that error times |W|.
        bound = lipschitz(info.layer)
        ins = [xs if i < 0 else runs[ref][0][i] for i in info.inputs]
        layer_in = ins[0]
        size = [
            max(float(np.abs(np.asarray(a, dtype=np.float64)).max(initial=0.0)), carried_of.get(i, 0.0))
            for a, i in zip(ins, info.inputs)
        ]
        carried = 0.0 if bound is None else bound * size[0]
        if info.kind == "DotProductAttention":  # (its scores rounded at the size of their terms, see dot.carried)
            q, k, v = ins
            heads = info.layer.num_heads  # type: ignore[attr-defined]
            scale = head_scale(info.layer, info.input_shapes[0][-1])
            errors = tuple(carried_of.get(i, 0.0) for i in info.inputs)
            bias = dot_bias(info.layer, {n: np.asarray(_as_array(w[f"{info.key}.{n}"])) for n in info.params})
            carried = dot_carried(q, k, v, heads, scale, (errors[0], errors[1], errors[2]), bias)
        elif info.is_join:
            carried = sum(size) if info.kind != "Multiply" else float(np.prod([max(1.0, v) for v in size])) * len(size)
        else:
            inherited = np.full(np.shape(layer_in), size[0])  # inputs as large as the errors they carry
            carried = max(
                carried,
                _term_scale(info, w, layer_in),
                _term_scale(info, w, inherited),
                _norm_gain(info, w, layer_in) * size[0],
            )
        carried_of[info.index] = carried
        for n in names[1:]:
            row.diffs[n] = _diff(runs[ref][0][info.index], runs[n][0][info.index], carried)
        rows.append(row)
        if training:
            for bname in info.buffers:
                key = f"{info.key}.{bname}"
                brow = Row(info.index, info.kind, bname, tolerance=out_tol, atol=atol or 0.0, key=info.key)
                for n in names[1:]:
                    brow.diffs[n] = _diff(runs[ref][3][key], runs[n][3][key])
                rows.append(brow)
        if grads:
            for pname in info.trainable:
                key = f"{info.key}.{pname}"
                grow = Row(info.index, info.kind, f"grad {pname}", tolerance=grad_tol, atol=atol or 0.0, key=info.key)
                for n in names[1:]:
                    grow.diffs[n] = _diff(runs[ref][2][key], runs[n][2][key])
                rows.append(grow)
    if forwards:
        # each backend's model called as a whole must compute what its layers compute one by one: a builder
        # that wires a join to the wrong tensor shows here (the per-layer trace follows the spec's wiring);
        # a model with several outputs, each of them
        for place, out in enumerate(returned):
            row = Row(out.index, out.kind, "model call", tolerance=out_tol, atol=atol or 0.0, key=out.key)
            for n in names:
                called = forwards[n][place] if returns_list(infos) else forwards[n]
                row.diffs[n] = _diff(runs[n][0][out.index], called, carried_of[out.index])
            rows.append(row)
    if grads and runs[ref][1] is not None:  # (token ids have no gradient)
        row = Row(None, "input", "grad input", tolerance=grad_tol, atol=atol or 0.0)
        for n in names[1:]:
            row.diffs[n] = _diff(runs[ref][1], runs[n][1])
        rows.append(row)
    failing = [
        r for r in rows if (r.what.startswith("grad ") or r.what == "output" and r.layer is not None) and not r.ok
    ]
    if dtype == "float32" and rtol is None and failing:
        _measure_rounding(failing, resolved, w, xs, upstream, training, side, runs, names)
    return rows


def _float64(upstream: Any) -> Any:
    if isinstance(upstream, list):
        return [np.asarray(u, dtype=np.float64) for u in upstream]
    return np.asarray(upstream, dtype=np.float64)


def _measure_rounding(
    rows: list[Row],
    spec: Sequential,
    weights: Mapping[str, Any],
    xs: np.ndarray,
    upstream: Any,
    training: bool,
    side: dict[str, np.ndarray],
    runs: dict[str, Any],
    names: list[str],
) -> None:
    """Float32 gradients and layer outputs beyond the fixed tolerance: a gradient sums terms through every layer
    after its own, and its rounding grows with their size and count, not with its own magnitude (an attention's
    in-projection behind a LayerNorm and a one-feature bottleneck: torch's float32 kernels 1.0e-4 from float64,
    numpy's 2.4e-5, measured); an output carries the rounding of every layer before it, amplified by each
    LayerNorm of features that nearly coincide and by the attention after it (a window attention behind a
    LayerNorm of a residual stream of size 550: 3e-5 of its output in every backend, measured). The reference
    backend runs once more in float64 with the same weights and batch; each such row passes when every backend
    is within ``ROUNDING_FACTOR`` times the reference's own float32 error of that float64 run. A mapping error
    is a distance of the value's own size, which rounding does not explain; a reference error beyond
    ``ROUNDING_LIMIT`` of the value's size is no rounding either, and excuses nothing."""
    model = build(spec, names[0], dtype="float64")
    floats = {k: np.asarray(v) for k, v in weights.items()}  # (a BatchNorm's count stays an integer)
    set_weights(model, {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in floats.items()})
    batch = xs if xs.dtype.kind in "iu" else xs.astype(np.float64)
    values, gx, grads = get_backend(names[0]).trace(model, batch, _float64(upstream), training, **side)[:3]
    for row in rows:
        if row.what == "output":
            exact, got = values[row.layer], {n: runs[n][0][row.layer] for n in names}
        else:
            key = None if row.layer is None else f"{row.key}.{row.what[len('grad ') :]}"
            exact = gx if key is None else grads[key]
            got = {n: runs[n][1] if key is None else runs[n][2][key] for n in names}
        row.size = max(1.0, float(np.abs(np.asarray(exact, dtype=np.float64)).max(initial=0.0)))
        rounding = _distance(exact, got[names[0]])
        row.rounding = rounding if rounding <= ROUNDING_LIMIT * row.size else None
        row.from_exact = {n: _distance(exact, got[n]) for n in names[1:]} if row.rounding is not None else {}


def _distance(a: Any, b: Any) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max(initial=0.0))


def _diff(a: np.ndarray, b: np.ndarray, carried: float = 0.0) -> tuple[float, float]:
    """(max |a - b|, that over max(1, max |a|, carried)); inf for NaN/Inf or a shape mismatch."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf"), float("inf")
    abs_ = float(np.abs(a - b).max()) if a.size else 0.0
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf"), float("inf")
    rel = max_rel_diff(a, b)
    return abs_, rel if carried <= 1.0 else min(rel, abs_ / max(1.0, float(np.abs(a).max(initial=0.0)), carried))


def format_table(rows: list[Row], reference: str) -> str:
    """A fixed-width table of rows, marking the rows beyond tolerance.

    >>> import xconv as xc
    >>> rows = compare_layerwise(xc.Sequential(xc.ReLU(), input_shape=(2, 3, 3)), backends=("numpy", "torch"))
    >>> print(format_table(rows, "numpy").splitlines()[0].split())
    ['layer', 'kind', 'compared', 'max|torch-numpy|', 'relative', 'tolerance']
    """
    backends = list(rows[0].diffs) if rows else []
    head = (
        f"{'layer':>5}  {'kind':<17}  {'compared':<19}"
        + "".join(f"  {('max|' + b + '-' + reference + '|'):>22}  {'relative':>10}" for b in backends)
        + f"  {'tolerance':>9}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = "".join(f"  {row.diffs[b][0]:>22.3e}  {row.diffs[b][1]:>10.3e}" for b in backends)
        layer = "" if row.layer is None else (row.key or str(row.layer))
        measured = "" if row.rounding is None else f"  (float32 rounding of the reference: {row.rounding:.3e})"
        lines.append(
            f"{layer:>5}  {row.kind:<17}  {row.what:<19}{cells}  {row.tolerance:>9.0e}"
            + ("" if row.ok else "  <-- FAIL")
            + measured
        )
    return "\n".join(lines)


def assert_equivalent(
    spec: Sequential,
    weights: Mapping[str, Any] | None = None,
    x: Any = None,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    dtype: str = "float64",
    grads: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    training: bool = False,
    padding_mask: Any = None,
    token_types: Any = None,
) -> list[Row]:
    """Assert that every backend computes the same function as the first one (see :func:`compare_layerwise`
    for what is compared and the loss behind the gradients). A difference d passes when
    ``d_abs <= atol`` or ``d_abs / max(1, max |reference|) <= rtol``; NaN or Inf never passes. Defaults:
    :func:`default_tolerance`. With the defaults, a float32 layer output or gradient beyond them also passes
    when every backend is within ``ROUNDING_FACTOR`` (10) times the reference backend's own float32 error of
    its float64 run (an error of at most ``ROUNDING_LIMIT``, 1e-3, of the value's size), measured on the same
    weights and batch (the table then shows that rounding). On failure
    raises ``AssertionError`` with the per-layer table and the first
    layer where the backends part. Returns the rows when all pass. ``training``: see :func:`compare_layerwise`.

    >>> import xconv as xc
    >>> from xconv.testing import assert_equivalent
    >>> rows = assert_equivalent(xc.Sequential(xc.Conv2d(2, 4, 3), xc.ReLU(), input_shape=(2, 6, 6)),
    ...                          backends=("numpy", "torch"))  # raises AssertionError, with the table, on a mismatch
    >>> len(rows)  # every layer's output and every gradient, compared, and each model called whole
    6
    """
    rows = compare_layerwise(
        spec, weights, x, backends, dtype, grads, rtol, atol, seed, training, padding_mask, token_types
    )
    bad = [r for r in rows if not r.ok]
    if bad:
        # Forward: the first output that differs. Backward only: gradients flow from the last layer down, so
        # the deepest differing gradient is where the backward passes part (the input gradient comes last).
        outputs = [r for r in bad if r.what == "output"]
        first = outputs[0] if outputs else max(bad, key=lambda r: -1 if r.layer is None else r.layer)
        where = (
            "the input gradient"
            if first.layer is None
            else f"layer {first.key or first.layer} ({first.kind}), {first.what}"
        )
        raise AssertionError(
            f"backends differ beyond tolerance ({dtype}); first part at {where}\n"
            f"{format_table(rows, canonical_name(backends[0]))}\nspec: {spec!r}"
        )
    return rows
