"""Canonical weights: an ordered ``dict[str, np.ndarray]`` with the keys, shapes and layouts of the
``state_dict()`` of a ``torch.nn.Sequential`` holding the same layers ("0.weight" OIHW, "5.weight" (out, in)
with inputs in C,H,W flatten order, ...). Every backend converts to and from this form."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import WeightError
from .kinds import fixed_values
from .kinds.window import initial as window_initial
from .shapes import LayerInfo

__all__ = [
    "as_numpy",
    "check_weights",
    "expected_shapes",
    "fused_keys",
    "init_weights",
    "single_dtype",
    "source_keys",
    "weights_dtype",
]

DTYPES = ("float32", "float64")


def expected_shapes(infos: list[LayerInfo]) -> dict[str, tuple[int, ...]]:
    """Canonical key -> shape, in state_dict order."""
    return {f"{info.key}.{name}": shape for info in infos for name, shape in info.params.items()}


def init_weights(infos: list[LayerInfo], seed: int | None, dtype: str) -> dict[str, np.ndarray]:
    """xconv's framework-independent initializer (the seed notebook's ``random_weight`` / ``zero_weight``):
    conv and linear weights ~ N(0, 2 / fan_in) with fan_in = prod(shape[1:]) (Kaiming normal), biases zero;
    BatchNorm as torch: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0 (int64);
    LayerNorm and GroupNorm weight 1 (a patch merging's too); window attention's biases 0, an attention's learned
    bias table 0 (timm's), Swin V2's logit
    scale log 10 (torchvision's) and its coordinates Swin's; layer scale 1e-6 (torchvision's and Keras' ConvNeXt default); PReLU slopes
    0.25 (torch's); StarReLU scale 1.

    Drawn in float64 from ``numpy.random.default_rng(seed)`` in key order, then cast, so the same
    ``(spec, seed, dtype)`` gives the same numbers in every backend.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for info in infos:
        batchnorm = info.kind.startswith("BatchNorm") or info.kind in ("LayerNorm", "GroupNorm")
        fixed = fixed_values(info)
        for name, shape in info.params.items():
            key = f"{info.key}.{name}"
            if name in fixed:
                out[key] = fixed[name].copy()
            elif info.kind in ("WindowAttention", "PatchMerging") and (value := window_initial(info, name)) is not None:
                out[key] = value.astype(dtype)
            elif name == "num_batches_tracked":
                out[key] = np.zeros(shape, dtype=np.int64)
            elif name == "variance":  # Normalization
                out[key] = np.ones(shape, dtype=dtype)
            elif name in ("bias", "running_mean", "mean", "attention_biases"):
                out[key] = np.zeros(shape, dtype=dtype)
            elif name == "layer_scale":
                out[key] = np.full(shape, 1e-6, dtype=dtype)
            elif info.kind == "PReLU":  # torch's initial slope
                out[key] = np.full(shape, 0.25, dtype=dtype)
            elif info.kind == "StarReLU" or batchnorm:  # scale 1 (the bias is 0), timm's default
                out[key] = np.ones(shape, dtype=dtype)
            else:
                fan_in = math.prod(shape[1:])
                out[key] = (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)
    return out


def as_numpy(value: Any) -> np.ndarray:
    """A numpy view of an array-like: numpy arrays, torch tensors (CPU, any grad state), TF tensors."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        array: np.ndarray = value.detach().cpu().numpy()
        return array
    if hasattr(value, "numpy"):  # TF tensors and variables
        return np.asarray(value.numpy())
    return np.asarray(value)


def weights_dtype(weights: Mapping[str, Any]) -> str:
    """The model dtype that fits ``weights``: float64 if every float array is float64, else float32 (also when
    there is none; integer buffers such as ``num_batches_tracked`` do not count). ``check_weights`` then casts
    or refuses each array."""
    kinds = set()
    for value in weights.values():
        try:
            array = as_numpy(value)
        except Exception:  # noqa: BLE001, S112 - unreadable (bfloat16, ...): check_weights names it
            continue
        if array.dtype.kind not in "iu":
            kinds.add(array.dtype.name)
    return "float64" if kinds == {"float64"} else "float32"


def single_dtype(weights: Mapping[str, Any], fix: str) -> str:
    """The model dtype that holds every float array of ``weights`` unchanged: float64 if they are all float64,
    else float32 (float16 and bfloat16 widen to it exactly). float64 arrays mixed with arrays of another float
    dtype are a :class:`WeightError` naming the arrays of the rarer dtype and ending with ``fix`` (how the caller
    chooses a dtype): float32 would round the float64 arrays, float64 would not be the dtype of the others, and
    xconv does not pick either silently. Integer arrays (``num_batches_tracked``) do not count.

    >>> import numpy as np
    >>> single_dtype({"0.weight": np.zeros(2), "0.bias": np.zeros(2)}, "cast them first")
    'float64'
    >>> single_dtype({"0.weight": np.zeros(2), "0.bias": np.zeros(2, np.float32)}, "cast them first")
    Traceback (most recent call last):
    xconv.errors.WeightError: the weights mix float64 and float32 arrays: '0.weight' is float64, the other 1 float32; cast them first
    """
    by_dtype: dict[str, list[str]] = {}
    for key, value in weights.items():
        try:
            array = as_numpy(value)
        except Exception:  # noqa: BLE001, S112 - unreadable (bfloat16, ...): check_weights names it
            continue
        if array.dtype.kind not in "iub":
            by_dtype.setdefault(array.dtype.name, []).append(str(key))
    wide = by_dtype.pop("float64", [])
    if not wide:
        return "float32"
    if not by_dtype:
        return "float64"
    narrow = [key for keys in by_dtype.values() for key in keys]
    names = ", ".join(sorted(by_dtype))
    odd, rest, odd_name, rest_name = (
        (wide, narrow, "float64", names) if len(wide) <= len(narrow) else (narrow, wide, names, "float64")
    )
    listed = ", ".join(repr(k) for k in odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
    verb = "is" if len(odd) == 1 else "are"
    raise WeightError(
        f"the weights mix float64 and {names} arrays: {listed} {verb} {odd_name}, the other {len(rest)} "
        f"{rest_name}; {fix}"
    )


def source_keys(infos: list[LayerInfo]) -> dict[str, str]:
    """The source's own key -> canonical key, for the layers whose ``keys`` name them (one key each)."""
    return {
        key: f"{info.key}.{param}"
        for info in infos
        for param, key in getattr(info.layer, "keys", ())
        if isinstance(key, str)
    }


def fused_keys(infos: list[LayerInfo]) -> dict[str, tuple[str, ...]]:
    """Canonical key -> the source's keys of its parts (concatenated along the first axis), for the layers
    whose ``keys`` name several."""
    return {
        f"{info.key}.{param}": keys
        for info in infos
        for param, keys in getattr(info.layer, "keys", ())
        if not isinstance(keys, str)
    }


def _by_canonical_key(
    infos: list[LayerInfo], weights: Mapping[str, Any], expected: dict[str, tuple[int, ...]]
) -> Mapping[str, Any]:
    """``weights`` with each source key (a layer's ``keys``) renamed to its canonical key, and each array
    reshaped when its shape differs from the canonical one only by axes of length 1 ((C,) for (C, 1, 1) or
    (1, 1, 1, C)): the same numbers in the same order, as sources keep them (a layer scale of shape (C, 1, 1), a
    ConvNeXt V2 response-norm weight of (1, 1, 1, C)); fixed data of as many entries in any shape, read in
    order (MaxViT keeps its relative position index (N, N), Swin flat). A mapping that has both keys of one weight keeps them
    both (the canonical one is read, the other unexpected). A fused parameter missing from ``weights`` is
    the concatenation of its parts' arrays, when they are all there."""
    aliases = source_keys(infos)
    fixed = {f"{i.key}.{n}" for i in infos for n in i.fixed}
    out: dict[str, Any] = {}
    parts = {key for canonical, keys in fused_keys(infos).items() if canonical not in weights for key in keys}
    for canonical, keys in fused_keys(infos).items():
        if canonical not in weights and canonical in expected and all(k in weights for k in keys):
            try:
                out[canonical] = np.concatenate([as_numpy(weights[k]) for k in keys])
            except Exception:  # noqa: BLE001 - parts that do not concatenate: reported under their own keys
                parts -= set(keys)
        else:
            parts -= set(keys)
    for key, value in weights.items():
        if key in parts:
            continue  # (read as a part of its fused parameter)
        target = aliases.get(key, key)
        if target != key and target in weights or target not in expected:
            out[key] = value
            continue
        shape = expected[target]
        found = getattr(value, "shape", None)
        if found is None or tuple(found) == shape:
            out[target] = value
            continue
        try:
            array = as_numpy(value)
        except Exception:  # noqa: BLE001 - unreadable: check_weights names it under the canonical key
            out[target] = value
            continue
        squeeze = tuple(d for d in array.shape if d != 1) == tuple(d for d in shape if d != 1)
        # (fixed data, a relative position index kept (N, N) or flat: read flat, then checked entry by entry)
        flat = target in fixed and array.size == math.prod(shape)
        out[target] = array.reshape(shape) if squeeze or flat else array
    return out


def check_weights(
    infos: list[LayerInfo], weights: Mapping[str, Any], dtype: str, *, strict: bool = True
) -> dict[str, np.ndarray]:
    """Validate ``weights`` against the spec and return them as numpy arrays of ``dtype``, in canonical order.

    Float arrays of another precision are cast; ``num_batches_tracked`` must be an integer scalar and becomes
    int64; any other problem (missing or extra key, wrong shape, wrong dtype) is collected, and one
    :class:`WeightError` names all of them. With ``strict=False`` keys the spec does not have are left out
    (not an error); missing keys still are. A layer's ``keys`` (the source's own names of its weights) are
    taken for the canonical ones.
    """
    if not isinstance(weights, Mapping):
        raise WeightError(f"weights must be a mapping of name -> array. Received: {type(weights).__name__}")
    expected = expected_shapes(infos)
    weights = _by_canonical_key(infos, weights, expected)
    problems = []
    out: dict[str, np.ndarray] = {}
    fixed = {f"{i.key}.{n}": v for i in infos for n, v in fixed_values(i).items()}
    for key, shape in expected.items():
        if key not in weights:
            problems.append(f"missing {key!r} (expected shape {shape})")
            continue
        try:
            array = as_numpy(weights[key])
        except Exception as e:  # noqa: BLE001 - reported with the key below
            problems.append(f"{key!r}: cannot be read as an array ({type(e).__name__}: {e})")
            continue
        if key in fixed:
            value = fixed[key]
            if array.dtype.kind not in "iu" or tuple(array.shape) != value.shape or not np.array_equal(array, value):
                problems.append(
                    f"{key!r}: fixed data of the layer, which takes one value (integers of shape {value.shape}, "
                    "computed by xconv); it differs"
                )
            else:
                out[key] = value.copy()
        elif key.endswith(".num_batches_tracked"):
            if array.dtype.kind not in "iu" or array.shape != ():
                problems.append(
                    f"{key!r}: must be an integer scalar (torch stores int64). "
                    f"Received: dtype {array.dtype}, shape {tuple(array.shape)}"
                )
            elif not np.iinfo(np.int64).min <= int(array) <= np.iinfo(np.int64).max:
                problems.append(f"{key!r}: {int(array)} does not fit torch's int64 counter")
            else:
                out[key] = array.astype(np.int64)
        elif array.dtype.kind != "f":
            problems.append(f"{key!r}: dtype {array.dtype} is not a float dtype (the model is {dtype})")
        elif tuple(array.shape) != shape:
            problems.append(f"{key!r}: shape {tuple(array.shape)} but expected {shape}")
        else:
            out[key] = array.astype(dtype, copy=False)
    for key in weights:
        if key not in expected and strict:
            problems.append(f"unexpected key {key!r}")
    if problems:
        raise WeightError("weights do not fit the model:\n  " + "\n  ".join(problems))
    return out
