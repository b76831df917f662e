"""Layout arithmetic between PyTorch (NCHW, OIHW, (out, in), C,H,W flatten) and Keras (NHWC, HWIO, (in, out),
H,W,C flatten), and TensorFlow's 'same' padding rule. Every layout transform in xconv lives here."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "NUMPY_OPS",
    "ArrayOps",
    "dense_to_linear",
    "flatten_permutation",
    "hwio_to_oihw",
    "linear_to_dense",
    "oihw_to_hwio",
    "same_padding",
    "source_blocks",
    "to_canonical",
    "to_keras",
    "to_nchw",
    "to_nhwc",
]


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' rule on one axis: (before, after), the odd pixel after.

    total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
    """
    extent = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def flatten_permutation(source: Any) -> np.ndarray | None:
    """For features flattened from a (C, H, W) map: ``perm[j]`` is the C,H,W (torch) flat index of the j-th
    H,W,C (Keras) flat index. ``None`` when the two orders coincide (flat input, C == 1 or H*W == 1).

    ``source`` may also be a tuple of blocks (features concatenated after flattening): each block a (C, H, W)
    map or an (F,) run of features; the permutation is then block by block."""
    if source is None:
        return None
    parts, offset, trivial = [], 0, True
    for block in source_blocks(source):
        size = math.prod(block)
        if len(block) == 3 and block[0] != 1 and block[1] * block[2] != 1:
            c, h, w = block
            parts.append(offset + np.arange(size).reshape(c, h, w).transpose(1, 2, 0).reshape(-1))
            trivial = False
        else:
            parts.append(offset + np.arange(size))
        offset += size
    return None if trivial else np.concatenate(parts)


def source_blocks(source: Any, features: int | None = None) -> tuple[tuple[int, ...], ...]:
    """A flat tensor's flatten source as a tuple of blocks, each a (C, H, W) map flattened in C,H,W order or an
    (F,) run of features already in order: a single (C, H, W) becomes one block; ``None`` (features in order)
    becomes one (``features``,) block."""
    if source is None:
        return ((int(features),),) if features is not None else ()
    if isinstance(source[0], (int, np.integer)):
        return (tuple(int(v) for v in source),)
    return tuple(tuple(int(v) for v in block) for block in source)


class ArrayOps(NamedTuple):
    """The two array operations the weight layouts need, so that one implementation serves numpy arrays and
    framework tensors alike (the TF backend passes ``tf.transpose`` / ``tf.gather`` for its compiled path)."""

    transpose: Callable[[Any, tuple[int, ...]], Any]  # a new, contiguous array
    take: Callable[[Any, np.ndarray, int], Any]  # entries idx along axis, a new array
    reshape: Callable[[Any, tuple[int, ...]], Any] = lambda x, shape: x.reshape(shape)


NUMPY_OPS = ArrayOps(
    transpose=lambda x, axes: np.ascontiguousarray(np.transpose(x, axes)),
    take=lambda x, idx, axis: np.take(x, idx, axis=axis),
)

#: conv kernels: torch (out, in/groups, kh, kw) <-> Keras (kh, kw, in/groups, out)
OIHW_TO_HWIO = (2, 3, 1, 0)
HWIO_TO_OIHW = (3, 2, 0, 1)


def to_keras(kind: str, x: Any, source: tuple[int, ...] | int | None, ops: ArrayOps = NUMPY_OPS) -> Any:
    """One canonical (torch) array in Keras layout. ``kind``: "conv" (OIHW -> HWIO), "conv_transpose" (torch's
    (in, out/groups, kh, kw) -> Conv2DTranspose's (kh, kw, out/groups, in): the same axis permutation, and no
    spatial flip, since both frameworks define the transposed conv as the input gradient of the same
    cross-correlation; checked against both frameworks in float64), "linear" ((out, in) with
    inputs in C,H,W order -> (in, out) in H,W,C order), "vector" (features along the last axis, C,H,W ->
    H,W,C order: BatchNorm1d vectors after Flatten, flat activations), "scale" ((C, 1, 1) -> (C,)), "map" ((1, C, H, W) -> (1, H, W, C)), "depthwise"
    ((C*m, 1, kh, kw) -> (kh, kw, C, m)), anything else unchanged. ``source`` is the (C, H, W) map the features
    were flattened from, or None (for "depthwise": the conv's input channels C)."""
    if kind == "depthwise":  # (C*m, 1, kh, kw) -> DepthwiseConv2D's (kh, kw, C, m): output channel c*m + j
        assert isinstance(source, int), "a depthwise kernel's source is the conv's input channels"
        hwio = ops.transpose(x, OIHW_TO_HWIO)
        kh, kw, _, cm = (int(d) for d in hwio.shape)
        return ops.reshape(hwio, (kh, kw, source, cm // source))
    if kind == "scale":  # layer scale: (C, 1, 1) -> (C,)
        return ops.reshape(x, (int(x.shape[0]),))
    if kind == "map_slope":  # PReLU slopes shared over the pixels: (C,) -> (1, 1, C)
        return ops.reshape(x, (1, 1, int(x.shape[0])))
    if kind == "map":  # a learned map: (1, C, H, W) -> (1, H, W, C)
        return ops.transpose(x, (0, 2, 3, 1))
    perm = flatten_permutation(source)
    if kind in ("conv", "conv_transpose"):
        return ops.transpose(x, OIHW_TO_HWIO)
    if kind == "linear":
        return ops.transpose(x if perm is None else ops.take(x, perm, 1), (1, 0))
    if kind == "vector" and perm is not None:
        return ops.take(x, perm, -1)
    return x


def to_canonical(kind: str, x: Any, source: tuple[int, ...] | int | None, ops: ArrayOps = NUMPY_OPS) -> Any:
    """Inverse of :func:`to_keras`."""
    if kind == "depthwise":  # (kh, kw, C, m) -> (C*m, 1, kh, kw)
        kh, kw, c, m = (int(d) for d in x.shape)
        return ops.transpose(ops.reshape(x, (kh, kw, 1, c * m)), HWIO_TO_OIHW)
    if kind == "scale":  # (C,) -> (C, 1, 1)
        return ops.reshape(x, (int(x.shape[0]), 1, 1))
    if kind == "map_slope":  # (1, 1, C) -> (C,)
        return ops.reshape(x, (int(x.shape[-1]),))
    if kind == "map":  # (1, H, W, C) -> (1, C, H, W)
        return ops.transpose(x, (0, 3, 1, 2))
    perm = flatten_permutation(source)
    inverse = None if perm is None else np.argsort(perm)
    if kind in ("conv", "conv_transpose"):
        return ops.transpose(x, HWIO_TO_OIHW)
    if kind == "linear":
        w = ops.transpose(x, (1, 0))
        return w if inverse is None else ops.take(w, inverse, 1)
    if kind == "vector" and inverse is not None:
        return ops.take(x, inverse, -1)
    return x


def oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """Torch conv kernel (out, in/groups, kh, kw) -> Keras kernel (kh, kw, in/groups, out)."""
    return to_keras("conv", w, None)  # type: ignore[no-any-return]


def hwio_to_oihw(w: np.ndarray) -> np.ndarray:
    """Keras conv kernel (kh, kw, in/groups, out) -> torch kernel (out, in/groups, kh, kw)."""
    return to_canonical("conv", w, None)  # type: ignore[no-any-return]


def linear_to_dense(w: np.ndarray, source: tuple[int, ...] | None) -> np.ndarray:
    """Torch Linear weight (out, in) in C,H,W input order -> Keras Dense kernel (in, out) in H,W,C order."""
    return to_keras("linear", w, source)  # type: ignore[no-any-return]


def dense_to_linear(kernel: np.ndarray, source: tuple[int, ...] | None) -> np.ndarray:
    """Inverse of :func:`linear_to_dense`."""
    return to_canonical("linear", kernel, source)  # type: ignore[no-any-return]


_TO_NHWC = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)


def _permute(x: Any, perm: tuple[int, ...], what: str) -> Any:
    if isinstance(x, np.ndarray):
        _check_4d(x.ndim, what)
        return np.ascontiguousarray(x.transpose(perm))
    from .backends import backend_of_tensor  # lazy: no framework import unless a tensor is passed

    backend = backend_of_tensor(x)
    if backend is None:
        raise TypeError(f"{what}: expected a numpy array, torch tensor or TensorFlow tensor. Received: {type(x)!r}")
    _check_4d(len(x.shape), what)
    return backend.permute(x, perm)


def _check_4d(ndim: int, what: str) -> None:
    if ndim != 4:
        from .errors import XconvError

        raise XconvError(f"{what}: expected a 4-D batch (N, ., ., .). Received: an array with {ndim} dimensions")


def to_nhwc(x: Any) -> Any:
    """NCHW -> NHWC for a numpy array, torch tensor or TF tensor; returns the same kind.

    >>> import numpy as np
    >>> to_nhwc(np.zeros((2, 3, 8, 5))).shape
    (2, 8, 5, 3)
    """
    return _permute(x, _TO_NHWC, "to_nhwc")


def to_nchw(x: Any) -> Any:
    """NHWC -> NCHW for a numpy array, torch tensor or TF tensor; returns the same kind.

    >>> import numpy as np
    >>> to_nchw(np.zeros((2, 8, 5, 3))).shape
    (2, 3, 8, 5)
    """
    return _permute(x, _TO_NCHW, "to_nchw")


def pad_indices(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of each position of an axis of ``size`` padded by (before, after) in a torch padding mode
    other than zeros: 'reflect' (mirror without the edge), 'replicate' (repeat the edge), 'circular' (wrap).
    Gathering these indices pads exactly as ``torch.nn.functional.pad`` does."""
    i = np.arange(-before, size + after)
    if mode == "replicate":
        return np.clip(i, 0, size - 1)
    if mode == "circular":
        return np.mod(i, size)
    if mode == "reflect":
        period = 2 * (size - 1) if size > 1 else 1
        i = np.mod(i, period)
        return np.where(i < size, i, period - i)
    raise ValueError(f"pad_indices: unknown mode {mode!r}")


def keras_axis(axis: int, rank: int) -> int:
    """The NHWC axis (as a negative index) holding NCHW ``axis`` (1..rank-1) of a rank-``rank`` tensor; flat
    (N, F) tensors are the same in both."""
    if rank != 4:
        return axis - rank
    return {1: -1, 2: -3, 3: -2}[axis]


def canonical_axis(axis: int, rank: int) -> int:
    """Inverse of :func:`keras_axis`: the NCHW axis (1..rank-1) of Keras ``axis`` (any sign)."""
    return next(a for a in range(1, rank) if keras_axis(a, rank) == axis % rank - rank)


def features_to_chw_order(y: np.ndarray, source: tuple[int, ...] | None) -> np.ndarray:
    """Keras features (N, F) flattened in H,W,C order from a (C, H, W) map -> the same features in C,H,W order."""
    return to_canonical("vector", y, source)  # type: ignore[no-any-return]
