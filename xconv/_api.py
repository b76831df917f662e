"""Public functions: build, summary, weights in and out of native models."""

from __future__ import annotations

import enum
import functools
import hashlib
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import shapes
from .backends import backend_of_model, canonical_name, get_backend
from .errors import SpecError, WeightError, XconvError
from .graph import takes_padding_mask, token_type_count, token_vocabulary
from .spec import Sequential
from .weights import DTYPES, as_numpy, check_weights, fused_keys, init_weights, source_keys

if TYPE_CHECKING:
    from .backends._protocol import Backend

__all__ = ["build", "get_weights", "predict", "set_weights", "spec_of", "summary", "transfer_weights"]


def _dtype_name(dtype: Any) -> str:
    try:
        name: str = np.dtype(dtype).name  # "float32", np.float32 (the class), np.dtype("float64")
    except TypeError:
        name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise XconvError(f"dtype must be one of {', '.join(DTYPES)}. Received: dtype={dtype!r}")
    return name


def build(
    spec: Sequential,
    backend: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    seed: int | None = None,
    dtype: Any = None,
) -> Any:
    """Compile ``spec`` to a native model.

    ``backend="torch"`` (or ``"pytorch"``) returns a ``torch.nn.Sequential`` taking NCHW input
    ``(N, C, H, W)``; its ``state_dict()`` keys are the canonical ``"{index}.weight"`` / ``"{index}.bias"``.
    ``backend="tf"`` (or ``"tensorflow"``, ``"keras"``) returns a functional ``keras.Model`` (Keras 3,
    TensorFlow backend) taking NHWC input ``(N, H, W, C)``, with layers named by spec index
    (``conv2d_0``, ``linear_5``).

    Weights come from xconv's own initializer (Kaiming normal on fan-in, zero biases) drawn from ``seed``,
    so the same ``(spec, seed, dtype)`` gives the same function in every backend; ``seed=None`` draws fresh
    randomness. ``dtype`` is ``"float32"`` or ``"float64"``; the default is float32, float64 for the numpy
    reference backend (``backend="numpy"``: a pure-numpy callable on NCHW arrays, the testing oracle).

    >>> tm = build(spec, "torch", seed=0)            # doctest: +SKIP
    >>> km = build(spec, "tf", seed=0)               # doctest: +SKIP
    """
    return build_with_weights(spec, backend, None, input_shape=input_shape, seed=seed, dtype=dtype)


def build_with_weights(
    spec: Sequential,
    backend: str,
    weights: Mapping[str, Any] | None,
    *,
    input_shape: tuple[int, ...] | None = None,
    seed: int | None = None,
    dtype: Any = None,
) -> Any:
    """:func:`build` with canonical ``weights`` checked (as :func:`set_weights` does) and loaded while the model
    is built, without drawing initial weights first (``None``: xconv's initializer from ``seed``). ``port``
    uses it.

    >>> import numpy as np, xconv as xc
    >>> spec = xc.Sequential(xc.Conv2d(1, 1, 1), input_shape=(1, 2, 2))
    >>> model = build_with_weights(spec, "numpy", {"0.weight": np.full((1, 1, 1, 1), 2.0), "0.bias": np.zeros(1)})
    >>> float(xc.predict(model, np.ones((1, 1, 2, 2))).max())
    2.0
    """
    name = canonical_name(backend)  # unknown names fail first
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise XconvError(f"build: `seed` must be a non-negative integer or None. Received: {seed!r}")
    resolved, infos = shapes.resolve(spec, input_shape)  # shape errors come before any framework import
    if not infos:
        raise SpecError("the spec has no layers")
    if dtype is None:
        dtype = "float64" if name == "numpy" else "float32"
    dtype_name = _dtype_name(dtype)
    arrays = init_weights(infos, seed, dtype_name) if weights is None else check_weights(infos, weights, dtype_name)
    backend_module = get_backend(name)
    model = backend_module.build(resolved, infos, arrays, dtype_name)
    seal = getattr(backend_module, "seal", None)
    if seal is not None:  # the frameworks' models can be edited in place: their structure is recorded
        seal(model)
    return model


#: an edited model's re-imported spec is checked on a random batch of this size against the model itself
EDIT_CHECK_BATCH = 2


_SCALARS = frozenset({type(None), bool, int, float, str, bytes, complex})
#: types that plain_value describes by their name alone (initializers, dtype policies, ...), as it finds them
_OPAQUE: dict[type, str] = {}


@functools.lru_cache(maxsize=4096)
def _code_digest(code: types.CodeType) -> str:
    """A digest of a function's code that another process computes alike (``marshal`` output may not be)."""
    consts = [_code_digest(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    text = repr((code.co_name, code.co_names, code.co_varnames, consts)).encode()
    return hashlib.sha256(code.co_code + text).hexdigest()[:16]


def plain_value(value: Any, depth: int = 0) -> Any:
    """A printable stand-in for a module or layer attribute, equal for equal values (the backends' ``structure``
    uses it): numbers, strings and containers as they are, tensors, arrays and variables by type, shape and
    dtype only (their values are weights or state), functions by name and code (built-in ones by name), classes
    by name, framework dtypes and devices by their repr, any other object by its type."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    opaque = _OPAQUE.get(kind)
    if opaque is not None:
        return opaque
    if depth > 8:
        return f"<{kind.__qualname__}>"
    if isinstance(value, (tuple, list)):
        if all(type(v) in _SCALARS for v in value):  # (3, 3), ["weight", "bias"]: the common case, fast
            return (kind.__name__, *value)
        return (kind.__name__, *(plain_value(v, depth + 1) for v in value))
    if isinstance(value, dict):
        return ("dict", *sorted((repr(k), repr(plain_value(v, depth + 1))) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return ("set", *sorted(repr(plain_value(v, depth + 1)) for v in value))
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, (enum.Enum, np.dtype, np.generic)):
        return repr(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a tensor, an array, a variable
        return (kind.__name__, tuple(value.shape), str(value.dtype))
    if kind.__module__ == "torch":  # torch.dtype, torch.device, torch.memory_format
        return repr(value)
    func = getattr(value, "__func__", value)  # a bound method: its function
    code = getattr(func, "__code__", None)
    if isinstance(code, types.CodeType):
        return ("function", getattr(func, "__qualname__", ""), _code_digest(code))
    if isinstance(value, types.BuiltinFunctionType):  # torch.tanh, len
        return ("builtin", getattr(value, "__module__", None), getattr(value, "__qualname__", None))
    opaque = _OPAQUE[kind] = f"<{kind.__module__}.{kind.__qualname__}>"  # (the checks above depend on the type)
    return opaque


def _changes(sealed: tuple[tuple[str, str, Any], ...], now: tuple[tuple[str, str, Any], ...]) -> str:
    """What differs between two structure records of a model ((name, type, attributes) rows), the first three."""
    before = {name: (kind, state) for name, kind, state in sealed}
    after = {name: (kind, state) for name, kind, state in now}
    out = []
    for name, (kind, state) in after.items():
        label = repr(name) if name else "the model itself"
        if name not in before:
            out.append(f"{label} ({kind}) added")
        elif before[name][0] != kind:
            out.append(f"{label} replaced: {before[name][0]} -> {kind}")
        elif before[name][1] != state:
            out.append(f"{label} ({kind}) changed")
    out += [f"{name!r} ({kind}) removed" for name, (kind, _) in before.items() if name not in after]
    return "; ".join(out[:3]) + (f"; {len(out) - 3} more" if len(out) > 3 else "")


def current_spec(backend: Any, model: Any) -> Sequential | None:
    """A framework model's spec (each backend's ``spec_of``): None for a model xconv did not build; the spec it
    was built from while its recorded structure (``backend.structure``) is unchanged; else :func:`edited_spec`."""
    spec = getattr(model, "xconv_spec", None)
    if not isinstance(spec, Sequential):
        return None
    sealed = getattr(model, "xconv_structure", None)
    if not isinstance(sealed, tuple):  # not made by xconv.build: nothing recorded to compare with
        return spec
    now = backend.structure(model)
    if now == sealed:
        return spec
    return edited_spec(backend, model, spec, sealed, now)


def edited_spec(
    backend: Any,
    model: Any,
    stored: Sequential,
    sealed: tuple[tuple[str, str, Any], ...],
    now: tuple[tuple[str, str, Any], ...],
) -> Sequential:
    """The spec of a model built by xconv and changed afterwards (a module replaced, an attribute set): the
    recorded build spec no longer describes it. The model is imported again as it is now (``from_torch`` with
    the input shape it was built for, or ``from_keras``), the import built with the model's current weights,
    and both run on a random batch: the spec is returned only if they agree within ``TOLERANCE``, otherwise
    an :class:`XconvError` says what changed and what to do. The result is kept on the model for as long as
    its structure stays ``now`` (a backend's ``spec_of`` calls this; weights and train/eval are no edit)."""
    from ._compare import TOLERANCE, max_rel_diff, output_shapes

    cached = getattr(model, "xconv_edited", None)
    if isinstance(cached, tuple) and len(cached) == 2 and cached[0] == now:
        return cast(Sequential, cached[1])
    what = _changes(sealed, now) or "its structure changed"
    todo = (
        "describe the change in the spec and build that (xconv.build), copying the weights with "
        "xconv.set_weights, or import the model yourself (xconv.from_torch / xconv.from_keras)"
    )
    shape = tuple(stored.input_shape or ())
    try:
        from ._port import from_keras, from_torch

        if backend.NAME == "torch":
            spec = from_torch(model, shape, return_weights=True)[0]
        else:
            spec = from_keras(model, return_weights=True)[0]
        spec, infos = shapes.resolve(spec)
        dtype = backend.dtype_of(model)
        rebuilt = build_with_weights(spec, backend.NAME, backend.get_weights(model, infos), dtype=dtype)
        vocabulary = token_vocabulary(infos)
        if vocabulary is None:
            x = np.random.default_rng(0).standard_normal((EDIT_CHECK_BATCH, *shape)).astype(dtype)
        else:
            x = np.random.default_rng(0).integers(0, vocabulary, (EDIT_CHECK_BATCH, *shape))
        a, b = backend.forward(model, x), backend.forward(rebuilt, x)
    except Exception as e:  # noqa: BLE001 - whatever fails, the edited model cannot be described by a spec
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise XconvError(
            f"the model was edited after xconv.build ({what}) and xconv cannot import it as it is now, with "
            f"the input shape it was built for {shape}: {detail}; {todo}"
        ) from None
    same = output_shapes(a) == output_shapes(b)
    differs = (
        f"output shape {output_shapes(b)} instead of {output_shapes(a)}"
        if not same
        else f"{max_rel_diff(a, b):.3g} relative on a random batch"
    )
    if not same or not max_rel_diff(a, b) <= TOLERANCE[dtype]:
        raise XconvError(
            f"the model was edited after xconv.build ({what}) in a way xconv's importer does not see: imported "
            f"again it computes something else ({differs}); {todo}"
        )
    model.xconv_edited = (now, spec)
    return spec


def _model_backend(model: Any, what: str) -> tuple[Backend, Sequential, list[shapes.LayerInfo]]:
    backend = backend_of_model(model)
    spec = None if backend is None else backend.spec_of(model)
    if spec is None:
        raise XconvError(
            f"{what}: expected a model built by xconv.build (torch.nn.Module or keras.Model). "
            f"Received: {type(model).__name__}"
        )
    return cast("Backend", backend), spec, shapes.infer(spec)  # a backend module satisfies the protocol


def spec_of(model: Any) -> Sequential:
    """The spec (with its input shape and inferred fields filled in) that ``model`` was built from.

    A torch or Keras model changed after its build (a module replaced, appended or deleted, an attribute such as
    ``stride`` or ``padding_mode`` set; not its weights, train/eval mode, hooks or freezing) is described as it
    is now: imported again (:func:`from_torch` with the input shape it was built for, or :func:`from_keras`),
    with layers named by their module paths, and checked on a random batch against the model itself. So
    :func:`save`, :func:`port` and the weight functions follow the edited model; an edit the importer cannot
    read, or does not see exactly, raises :class:`XconvError` saying what changed and what to do.

    >>> import xconv as xc
    >>> model = xc.build(xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8)), "numpy")
    >>> xc.spec_of(model).layers
    (Conv2d(3, 8, kernel_size=3),)
    """
    return _model_backend(model, "spec_of")[1]


def get_weights(model: Any) -> dict[str, np.ndarray]:
    """Canonical weights of a built model: ``{"0.weight": OIHW array, "0.bias": ..., "5.weight": (out, in)}``,
    the layout of a torch ``state_dict``, as fresh numpy arrays (not views into the model).

    >>> import xconv as xc
    >>> model = xc.build(xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8)), "numpy", seed=0)
    >>> {key: value.shape for key, value in xc.get_weights(model).items()}
    {'0.weight': (8, 3, 3, 3), '0.bias': (8,)}
    """
    backend, _, infos = _model_backend(model, "get_weights")
    return backend.get_weights(model, infos)


def set_weights(model: Any, weights: Mapping[str, Any], *, strict: bool = True) -> list[str]:
    """Load canonical weights (numpy arrays or torch tensors, e.g. a hand-written ``nn.Sequential``'s
    ``state_dict()``) into a built model of either framework.

    Every key, shape and dtype is checked first; float arrays of another precision are cast to the model's
    dtype. On any problem a :class:`WeightError` names all of them and the model is left untouched.

    ``strict=False`` (as in torch's ``load_state_dict``) skips keys the model does not have: the weights of
    what the ported function does not use, such as GoogLeNet's and Inception's auxiliary heads, which run only
    in training. Missing keys are still an error. Returns the keys skipped, sorted (empty when ``strict``).

    >>> import numpy as np, xconv as xc
    >>> model = xc.build(xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8)), "numpy")
    >>> xc.set_weights(model, {"0.weight": np.ones((8, 3, 3, 3)), "0.bias": np.zeros(8)})
    []
    >>> float(xc.predict(model, np.ones((1, 3, 8, 8))).max())
    27.0
    >>> xc.set_weights(model, {"0.weight": np.ones((8, 3, 3, 3)), "0.bias": np.zeros(8), "aux.weight": 0}, strict=False)
    ['aux.weight']
    """
    backend, _, infos = _model_backend(model, "set_weights")
    if not isinstance(strict, bool):
        raise XconvError(f"set_weights: `strict` must be True or False. Received: {strict!r}")
    arrays = check_weights(infos, weights, backend.dtype_of(model), strict=strict)
    backend.set_weights(model, infos, arrays)
    aliases = source_keys(infos)  # a layer's own source keys, read for canonical keys the mapping lacks
    taken = {*arrays, *(key for key, canonical in aliases.items() if canonical in arrays and canonical not in weights)}
    taken |= {key for canonical, keys in fused_keys(infos).items() if canonical not in weights for key in keys}
    return sorted(k for k in weights if k not in taken)


#: float bytes from which transfer_weights between torch and Keras takes the zero-copy path (see below)
FAST_TRANSFER_BYTES = 8 * 2**20


def transfer_weights(src: Any, dst: Any) -> None:
    """Copy the weights of ``src`` into ``dst`` (models built by xconv from equal specs, either framework).
    torch -> Keras -> torch is bit-exact.

    Between torch and Keras models of the same dtype with at least ``FAST_TRANSFER_BYTES`` of weights, the
    arrays go through DLPack without numpy copies, and the Keras side transposes and assigns them in one
    compiled TensorFlow function per model and direction (traced on first use, about 0.4 s for a
    ResNet-50-sized spec; later transfers then take about 3x a plain memory copy, see benchmarks/port_speed.py).

    >>> import xconv as xc
    >>> spec = xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8))
    >>> a, b = xc.build(spec, "numpy", seed=0), xc.build(spec, "numpy", seed=1)
    >>> xc.transfer_weights(a, b)
    >>> all((xc.get_weights(a)[k] == v).all() for k, v in xc.get_weights(b).items())
    True
    """
    src_backend, src_spec, infos = _model_backend(src, "transfer_weights (src)")
    dst_backend, dst_spec, _ = _model_backend(dst, "transfer_weights (dst)")
    if src_spec != dst_spec:
        raise WeightError(
            f"transfer_weights: the models come from different specs:\n  src: {src_spec!r}\n  dst: {dst_spec!r}"
        )
    from .backends._protocol import FastTransfer

    if (
        isinstance(src_backend, FastTransfer)
        and isinstance(dst_backend, FastTransfer)
        and src_backend is not dst_backend
        and src_backend.dtype_of(src) == dst_backend.dtype_of(dst)
        and src_backend.float_bytes(src, infos) >= FAST_TRANSFER_BYTES
    ):
        dst_backend.import_tensors(dst, infos, src_backend.export_tensors(src, infos))
        return
    set_weights(dst, get_weights(src))


def predict(model: Any, x: Any, padding_mask: Any = None, token_types: Any = None) -> Any:
    """Run a built model of either framework on a batch in xconv's logical layout (NCHW, or (N, F)) and
    return numpy in the same layout: Keras models get NHWC and their 4-D output comes back as NCHW. The batch
    is cast to the model's dtype (as Keras does) and its shape checked against the spec's input shape. A text
    encoder takes token ids, and (when its attention reads one) a ``padding_mask`` of the same shape, 1 for a
    token and 0 for padding; left out, every token counts. One whose token-type embedding reads them takes
    ``token_types`` of that shape too (each token's type); left out, every token is of type 0. A model whose
    spec has ``outputs`` returns the list of them, each in that layout.

    >>> import numpy as np, xconv as xc
    >>> model = xc.build(xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8)), "numpy", seed=0)
    >>> xc.predict(model, np.zeros((2, 3, 8, 8))).shape  # NCHW in, NCHW out, whatever the framework
    (2, 8, 6, 6)
    """
    backend, spec, _ = _model_backend(model, "predict")
    array = as_numpy(x)
    expected = tuple(spec.input_shape or ())
    if array.ndim != len(expected) + 1 or tuple(array.shape[1:]) != expected:
        layout_name = "(N, C, H, W)" if len(expected) == 3 else "(N, F)"
        raise XconvError(
            f"predict: the model takes a batch of shape (N, {', '.join(map(str, expected))}) in "
            f"{layout_name} layout. Received: an array of shape {tuple(array.shape)}"
        )
    if array.dtype.kind not in "fiub":
        raise XconvError(f"predict: the batch must hold numbers. Received: dtype {array.dtype}")
    infos = shapes.infer(spec)
    vocabulary = token_vocabulary(infos)
    side = side_arrays(padding_mask, token_types, array, infos, "predict")
    if vocabulary is None:
        return backend.forward(model, array.astype(backend.dtype_of(model), copy=False))
    if array.dtype.kind not in "iu" or array.size and not (0 <= array.min() and array.max() < vocabulary):
        found = f"{array.dtype} values" + (f" from {array.min()} to {array.max()}" if array.size else "")
        raise XconvError(f"predict: the model takes token ids, integers in [0, {vocabulary}). Received: {found}")
    ids = array.astype(np.int64, copy=False)
    return backend.forward(model, ids, **side)


def side_arrays(padding_mask: Any, token_types: Any, ids: np.ndarray, infos: Any, who: str) -> dict[str, np.ndarray]:
    """A text encoder's padding mask and token types, checked against its token ids and the layers that read
    them: the ones given, by name."""
    side = {"padding_mask": _padding_mask(padding_mask, ids, takes_padding_mask(infos), who)}
    side["token_types"] = _checked_token_types(token_types, ids, token_type_count(infos), who)
    return {k: v for k, v in side.items() if v is not None}


def _checked_token_types(types: Any, ids: np.ndarray, count: int | None, who: str) -> np.ndarray | None:
    """Token types checked against their token ids: (N, L) integers below ``count``, the types the model's
    token-type embeddings hold; None when none."""
    if types is None:
        return None
    if count is None:
        raise XconvError(f"{who}: token_types were given, but no layer of the model reads them")
    array = as_numpy(types)
    integers = array.dtype.kind in "iu"
    if array.shape != ids.shape or not integers or array.size and not (0 <= array.min() and array.max() < count):
        values = f", from {array.min()} to {array.max()}" if array.size and integers else ""
        found = f"{array.dtype} of shape {array.shape}{values}"
        raise XconvError(
            f"{who}: token_types must be integers in [0, {count}) in the shape of the ids {ids.shape}. Received: {found}"
        )
    return array.astype(np.int64)


def _padding_mask(mask: Any, ids: np.ndarray, taken: bool, who: str) -> np.ndarray | None:
    """A padding mask checked against its token ids: (N, L) of 0 and 1, a token in every row; None when none."""
    if mask is None:
        return None
    if not taken:
        raise XconvError(f"{who}: a padding_mask was given, but the model's attention reads none")
    array = as_numpy(mask)
    if array.shape != ids.shape or array.dtype.kind not in "iub" or not np.isin(array, (0, 1)).all():
        raise XconvError(
            f"{who}: padding_mask must be 0 (padding) and 1 (a token) in the shape of the ids {ids.shape}. "
            f"Received: {array.dtype} of shape {array.shape}"
        )
    if array.size and not array.any(axis=1).all():
        raise XconvError(f"{who}: every sequence needs a token its padding_mask keeps (a row of zeros attends nothing)")
    return array.astype(np.int64)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


def summary(
    spec: Sequential, input_shape: tuple[int, ...] | None = None, print_fn: Callable[[str], Any] | None = print
) -> str:
    """Print (and return) the spec as an indented tree: per layer, combinator and named Sequential its
    positional path, name, kind (with arguments), output shape (C, H, W) and parameter count; then the totals.
    Branches of a combinator are indented under it. Imports no framework.

    >>> import xconv as xc
    >>> _ = xc.summary(xc.Sequential(xc.Conv2d(3, 8, 3), xc.ReLU(), input_shape=(3, 8, 8)))  # doctest: +ELLIPSIS
    path  name  layer ...
    ...
    """
    import dataclasses

    from .spec._sequential import Combinator, Use

    resolved, infos = shapes.resolve(spec, input_shape)
    by_path = {info.path: info for info in infos}
    rows = [("path", "name", "layer", "output (C, H, W)", "params")]
    rows.append(("", "", "input", _fmt_shape(resolved.input_shape or ()), ""))

    def walk(item: Any, path: str, depth: int, shape: tuple[int, ...]) -> tuple[int, ...]:
        pad = "  " * depth
        name = item.name or ""
        if isinstance(item, Sequential):
            rows.append((pad + path, name, "Sequential", "", ""))
            for i, child in enumerate(item.layers):
                shape = walk(child, f"{path}.{i}", depth + 1, shape)
            return shape
        if isinstance(item, Use):  # computes nothing: the chain goes on from the named part
            rows.append((pad + path, "", f"Use({item.source or 'input'})", "", ""))
            return shape
        info = by_path[path]
        if isinstance(item, Combinator):
            extra = f"(dim={item.dim})" if item.kind == "Concat" else ""  # type: ignore[attr-defined]
            rows.append((pad + path, name, item.kind + extra, _fmt_shape(info.output_shape), ""))
            for i, branch in enumerate(item.branches):
                walk(branch, f"{path}.{i}", depth + 1, shape)
            return info.output_shape
        plain = repr(dataclasses.replace(item, name=None)) if item.name is not None else repr(item)
        rows.append((pad + path, name, plain, _fmt_shape(info.output_shape), f"{info.param_count:,}"))
        return info.output_shape

    shape: tuple[int, ...] = resolved.input_shape or ()
    for i, item in enumerate(resolved.layers):
        shape = walk(item, str(i), 0, shape)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    rule = "-" * (sum(widths) + 8)

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(
            [
                f"{r[0]:<{widths[0]}}",
                f"{r[1]:<{widths[1]}}",
                f"{r[2]:<{widths[2]}}",
                f"{r[3]:<{widths[3]}}",
                f"{r[4]:>{widths[4]}}",
            ]
        )

    total = sum(i.param_count for i in infos)
    layers = sum(1 for i in infos if not i.is_join)
    joins = len(infos) - layers
    tail = f"total parameters: {total:,}  ({layers} layers" + (f", {joins} joins)" if joins else ")")
    if resolved.outputs is not None:  # (the model returns a list)
        tail += f"\noutputs: {', '.join(resolved.outputs)}"
    text = "\n".join([line(rows[0]), rule, *map(line, rows[1:]), rule, tail])
    if print_fn is not None:
        print_fn(text)
    return text
